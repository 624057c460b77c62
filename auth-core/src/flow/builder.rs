//! [`AuthBuilder`]: the one place an app configures the toolkit. Every
//! part has a secure default and can be swapped.

use std::sync::Arc;
use std::time::Duration;

use super::{Authenticator, Inner, Stamps};
use crate::account::{AccountStore, MemoryAccountStore};
use crate::clock::{Clock, SystemClock};
use crate::cookie::CookieConfig;
use crate::csrf::{CsrfGuard, CsrfTokens};
use crate::event::AuthEventHook;
use crate::mail::Mailer;
use crate::mfa::{MfaKeys, TotpParams};
use crate::password::{PasswordError, PasswordService};
use crate::rate_limit::{MemoryThrottle, ThrottleBackend, ThrottleConfig, TrustedProxies};
use crate::session::{MemoryStore, SessionConfig, SessionManager, SessionStore};
use crate::single_use::{MemoryTokenStore, TokenStore};
use crate::user::{DynUsers, UserStore, erase};
use crate::web::{AllowedHosts, Auth, SecurityHeaders};

use super::recovery::{MailLinks, MailSetup};

/// A configuration [`AuthBuilder::build`] refuses.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The default password service could not be built.
    #[error("password service: {0}")]
    Passwords(#[from] PasswordError),
    /// No account store was given where what it keeps must persist: with
    /// MFA keys (second factors in process memory would vanish at a
    /// restart, silently turning two-factor logins off), with passkeys (the
    /// recovery codes issued with the first passkey would vanish, and
    /// with them the way back in for whoever loses the device), with mail
    /// (the users' addresses must survive a restart), or with a session
    /// store that cannot revoke by user (its sessions end through the
    /// account's revocation epoch, which must survive a restart and be
    /// shared by every instance).
    #[error(
        "this configuration needs a persistent account store (second factors, passkeys' \
         recovery codes, email addresses, or revocation on a session store that cannot \
         revoke by user): call \
         .accounts(...) \
         (MemoryAccountStore::new() only for tests)"
    )]
    AccountStoreRequired,
    /// A security header's value cannot be sent as a header (a control
    /// character such as a line break, or text beyond visible ASCII): the
    /// adapters could only drop it, and the response would go out without
    /// that protection.
    #[error("security header {0}: its value is not a valid header value")]
    InvalidSecurityHeader(&'static str),
}

/// Builds an [`Auth`]: `Auth::builder(users)`, then whatever differs from
/// the defaults, then [`build`](Self::build).
///
/// Defaults: sessions in memory (12 h absolute, 30 min idle; a login makes
/// a browser-session cookie unless the user asks to be remembered: 30 days
/// absolute, 7 days idle), the memory
/// throttle (per account 5 failures then a growing back-off; per IP a
/// burst of 30, one back every 2 s), Argon2id at OWASP's parameters on
/// threads of its own, the `__Host-` session cookie, the system clock (one
/// clock for every part), no trusted proxy, `/login` as the login page, no
/// form tokens and no second factor (TOTP needs [`mfa_keys`](Self::mfa_keys)
/// and [`accounts`](Self::accounts)).
///
/// ```
/// use auth_core::{Auth, MemoryUserStore};
///
/// let auth = Auth::builder(MemoryUserStore::new())
///     .app_name("Example")
///     .build()?;
/// # let _ = auth;
/// # Ok::<(), auth_core::BuildError>(())
/// ```
#[must_use]
pub struct AuthBuilder {
    users: Arc<dyn DynUsers>,
    accounts: Option<Arc<dyn AccountStore>>,
    sessions: Option<Arc<dyn SessionStore>>,
    session_config: SessionConfig,
    throttle: Option<Arc<dyn ThrottleBackend>>,
    throttle_config: ThrottleConfig,
    passwords: Option<PasswordService>,
    clock: Arc<dyn Clock>,
    cookies: CookieConfig,
    hook: Option<Arc<dyn AuthEventHook>>,
    recent_auth: Duration,
    app_name: Option<String>,
    mfa_keys: Option<Arc<MfaKeys>>,
    totp: TotpParams,
    proxies: TrustedProxies,
    csrf: CsrfGuard,
    tokens: Option<CsrfTokens>,
    login_page: String,
    security: SecurityHeaders,
    hosts: AllowedHosts,
    link_tokens: Option<Arc<dyn TokenStore>>,
    mail: Option<MailSetup>,
    require_verified_email: bool,
    #[cfg(feature = "jwt")]
    token_service: Option<Arc<crate::token::TokenService>>,
    #[cfg(feature = "passkeys")]
    passkeys: Option<Arc<crate::passkey::Passkeys>>,
}

impl std::fmt::Debug for AuthBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthBuilder")
            .field("users", &self.users)
            .field("app_name", &self.app_name)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// A builder over the app's user store (see [`AuthBuilder`]).
    pub fn builder<S: UserStore>(users: S) -> AuthBuilder {
        AuthBuilder {
            users: erase(users),
            accounts: None,
            sessions: None,
            session_config: SessionConfig::default(),
            throttle: None,
            throttle_config: ThrottleConfig::default(),
            passwords: None,
            clock: Arc::new(SystemClock),
            cookies: CookieConfig::default(),
            hook: None,
            recent_auth: Duration::from_secs(10 * 60),
            app_name: None,
            mfa_keys: None,
            totp: TotpParams::default(),
            proxies: TrustedProxies::none(),
            csrf: CsrfGuard::default(),
            tokens: None,
            login_page: "/login".to_owned(),
            security: SecurityHeaders::default(),
            hosts: AllowedHosts::insecure_any(),
            link_tokens: None,
            mail: None,
            require_verified_email: false,
            #[cfg(feature = "jwt")]
            token_service: None,
            #[cfg(feature = "passkeys")]
            passkeys: None,
        }
    }
}

impl AuthBuilder {
    /// Where sessions live (default: process memory). SQLite, PostgreSQL
    /// and Redis stores come with the features of those names:
    /// `.sessions(Arc::new(store))`.
    pub fn sessions(mut self, store: Arc<dyn SessionStore>) -> Self {
        self.sessions = Some(store);
        self
    }

    /// Session lifetimes (default: [`SessionConfig::default`]).
    pub fn session_config(mut self, config: SessionConfig) -> Self {
        self.session_config = config;
        self
    }

    /// Where the toolkit keeps second factors, recovery codes, verified
    /// addresses and epochs (default: process memory; required with
    /// [`mfa_keys`](Self::mfa_keys), with [`mail`](Self::mail), and with a
    /// session store that cannot revoke by user).
    pub fn accounts(mut self, store: Arc<dyn AccountStore>) -> Self {
        self.accounts = Some(store);
        self
    }

    /// The login throttle's backend (default: [`MemoryThrottle`] with
    /// [`throttle_config`](Self::throttle_config)); Redis shares one budget
    /// between instances.
    pub fn throttle(mut self, backend: Arc<dyn ThrottleBackend>) -> Self {
        self.throttle = Some(backend);
        self
    }

    /// The memory throttle's limits (default: [`ThrottleConfig::default`]).
    pub fn throttle_config(mut self, config: ThrottleConfig) -> Self {
        self.throttle_config = config;
        self
    }

    /// The password service (default: Argon2id, m=19456 KiB, t=2, p=1,
    /// the policy's defaults).
    pub fn passwords(mut self, passwords: PasswordService) -> Self {
        self.passwords = Some(passwords);
        self
    }

    /// The clock of every deadline (default: the system clock); tests pass
    /// a [`ManualClock`](crate::clock::ManualClock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The session cookie settings (default: [`CookieConfig::default`]).
    pub fn cookies(mut self, cookies: CookieConfig) -> Self {
        self.cookies = cookies;
        self
    }

    /// Receives every audit event (they also go to `tracing`, target
    /// `auth_core::audit`).
    pub fn event_hook(mut self, hook: Arc<dyn AuthEventHook>) -> Self {
        self.hook = Some(hook);
        self
    }

    /// How recent a login must be for sensitive operations (default 10 min).
    pub fn recent_auth(mut self, within: Duration) -> Self {
        self.recent_auth = within;
        self
    }

    /// The application's name, refused inside passwords and shown as the
    /// issuer in authenticator apps.
    pub fn app_name(mut self, name: impl Into<String>) -> Self {
        self.app_name = Some(name.into());
        self
    }

    /// The keys that encrypt TOTP secrets at rest. Without them TOTP
    /// enrolment and TOTP logins fail with
    /// [`AuthError::MfaUnavailable`](crate::AuthError::MfaUnavailable):
    /// secrets are never stored in plain text.
    pub fn mfa_keys(mut self, keys: MfaKeys) -> Self {
        self.mfa_keys = Some(Arc::new(keys));
        self
    }

    /// TOTP parameters for enrolment and verification (default: SHA-1,
    /// 6 digits, 30 s, what every authenticator app supports). One set for
    /// every enrolment: an enrolment does not record its own, so changing
    /// them later makes every existing authenticator's codes fail (its
    /// users then need their recovery codes). Choose them before the first
    /// enrolment.
    pub fn totp_params(mut self, params: TotpParams) -> Self {
        self.totp = params;
        self
    }

    /// Believe forwarding headers from these proxies (default: none; the
    /// client is the socket peer).
    pub fn trusted_proxies(mut self, proxies: TrustedProxies) -> Self {
        self.proxies = proxies;
        self
    }

    /// The cross-origin guard (e.g. with trusted origins).
    pub fn csrf_guard(mut self, guard: CsrfGuard) -> Self {
        self.csrf = guard;
        self
    }

    /// Session-bound tokens for HTML forms, for browsers that send neither
    /// `Sec-Fetch-Site` nor `Origin`.
    pub fn form_tokens(mut self, tokens: CsrfTokens) -> Self {
        self.tokens = Some(tokens);
        self
    }

    /// Where HTML routes send unauthenticated users (default `/login`).
    pub fn login_page(mut self, path: impl Into<String>) -> Self {
        self.login_page = path.into();
        self
    }

    /// Where the single-use tokens of reset and verification links live
    /// (default: process memory; several instances need a shared store:
    /// SQLite, PostgreSQL or Redis).
    pub fn link_tokens(mut self, store: Arc<dyn TokenStore>) -> Self {
        self.link_tokens = Some(store);
        self
    }

    /// Account-recovery mail (password reset, email verification): the
    /// mailer and where the links point. Without it those flows answer
    /// [`AuthError::MailUnavailable`](super::AuthError::MailUnavailable).
    /// Needs an explicit [`accounts`](Self::accounts) store (addresses
    /// must survive a restart).
    pub fn mail(mut self, mailer: Arc<dyn Mailer>, links: MailLinks) -> Self {
        self.mail = Some(MailSetup { mailer, links });
        self
    }

    /// Refuse sign-in (password or magic link) until the account has a
    /// verified email address (default: off): the right credentials then
    /// answer [`AuthError::EmailNotVerified`](super::AuthError::EmailNotVerified).
    /// Needs [`mail`](Self::mail) (or addresses from the app's user type).
    pub fn require_verified_email(mut self, required: bool) -> Self {
        self.require_verified_email = required;
        self
    }

    /// Passkeys (feature `passkeys`): add them to accounts, a passkey as
    /// the second step, passwordless sign-in (see
    /// [`passkey`](crate::passkey)). Needs an explicit
    /// [`accounts`](Self::accounts) store (the recovery codes issued with
    /// the first passkey must survive a restart).
    #[cfg(feature = "passkeys")]
    pub fn passkeys(mut self, passkeys: crate::passkey::Passkeys) -> Self {
        self.passkeys = Some(Arc::new(passkeys));
        self
    }

    /// Access and refresh tokens for API and mobile clients (feature
    /// `jwt`): sign-in for tokens, refresh, revocation, and
    /// `Authorization: Bearer` on every route (see
    /// [`token`](crate::token)).
    #[cfg(feature = "jwt")]
    pub fn tokens(mut self, service: crate::token::TokenService) -> Self {
        self.token_service = Some(Arc::new(service));
        self
    }

    /// The `Host` names the app answers to (default: any, and
    /// [`build`](Self::build) logs a warning). Requests for another host get
    /// 400 before anything else runs: a defence against DNS rebinding, which
    /// matters most for servers on 127.0.0.1.
    pub fn allowed_hosts(mut self, hosts: AllowedHosts) -> Self {
        self.hosts = hosts;
        self
    }

    /// The browser security headers of every response (default:
    /// [`SecurityHeaders::default`]: no sniffing, no referrer, no framing).
    pub fn security_headers(mut self, headers: SecurityHeaders) -> Self {
        self.security = headers;
        self
    }

    /// Whether passkeys are on (their recovery codes live in the account
    /// store).
    fn keeps_passkeys(&self) -> bool {
        #[cfg(feature = "passkeys")]
        return self.passkeys.is_some();
        #[cfg(not(feature = "passkeys"))]
        false
    }

    /// Builds the pipeline; cheap to clone afterwards.
    pub fn build(self) -> Result<Auth, BuildError> {
        if let Some(name) = self.security.first_invalid() {
            return Err(BuildError::InvalidSecurityHeader(name));
        }
        if !self.security.forbids_framing() {
            tracing::warn!(
                "auth: the Content-Security-Policy has no frame-ancestors directive that limits \
                 who frames the app's pages (none, or one with * or a bare scheme): other sites \
                 may frame them (clickjacking)"
            );
        }
        if self.hosts.is_any() {
            tracing::warn!(
                "auth: no Host allow-list (allowed_hosts): requests for any Host name are \
                 served, which leaves a server on a private address open to DNS rebinding"
            );
        }
        let keeps_passkeys = self.keeps_passkeys();
        let clock = self.clock;
        let store = self
            .sessions
            .unwrap_or_else(|| Arc::new(MemoryStore::with_clock(Arc::clone(&clock))));
        let accounts = match self.accounts {
            Some(accounts) => accounts,
            None if self.mfa_keys.is_some()
                || self.mail.is_some()
                || keeps_passkeys
                || !store.revokes_by_user() =>
            {
                return Err(BuildError::AccountStoreRequired);
            }
            None => Arc::new(MemoryAccountStore::new()),
        };
        let stamps = Stamps::new(
            Arc::clone(&self.users),
            Arc::clone(&accounts),
            !store.revokes_by_user(),
        );
        let sessions = SessionManager::new(store, self.session_config)
            .with_clock(Arc::clone(&clock))
            .with_stamp_source(Arc::new(stamps.clone()));
        let throttle = self.throttle.unwrap_or_else(|| {
            Arc::new(MemoryThrottle::new(
                self.throttle_config,
                Arc::clone(&clock),
            ))
        });
        let passwords = match self.passwords {
            Some(passwords) => passwords,
            None => PasswordService::builder().build()?,
        };
        // An app whose cookies are `Secure` is served over HTTPS: a plain
        // `http://` Origin is no same-origin request of it.
        let secure_cookies = self.cookies.is_secure();
        let authenticator = Authenticator {
            inner: Arc::new(Inner {
                passwords,
                sessions,
                users: self.users,
                accounts,
                stamps,
                throttle,
                cookies: self.cookies,
                hook: self.hook,
                recent_auth: self.recent_auth,
                app_name: self.app_name,
                mfa_keys: self.mfa_keys,
                totp: self.totp,
                tokens: self
                    .link_tokens
                    .unwrap_or_else(|| Arc::new(MemoryTokenStore::new())),
                mail: self.mail,
                require_verified_email: self.require_verified_email,
                #[cfg(feature = "jwt")]
                token_service: self.token_service,
                #[cfg(feature = "passkeys")]
                passkeys: self.passkeys,
            }),
        };
        Ok(Auth::from_parts(
            authenticator,
            self.security,
            self.hosts,
            self.proxies,
            self.csrf.https_origins_by_default(secure_cookies),
            self.tokens,
            self.login_page,
        ))
    }
}
