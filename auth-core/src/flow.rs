//! The flows an app calls: register, log in, log out, change password,
//! sign out everywhere, re-authenticate. Every security decision of a login
//! is made here, so no adapter and no app has to make one.
//!
//! Login: throttle check (IP and account) -> find the user -> verify the
//! password (the dummy hash when the user is unknown or disabled, so every
//! path costs one hash) -> on success, re-hash if flagged (compare-and-swap
//! on the old hash) -> an MFA-pending session if the user has a second
//! factor, else a fresh, rotated, authenticated session. Unknown user, wrong
//! password and disabled user give the caller the same error.
//!
//! Second step ([`Authenticator::login_totp`], [`Authenticator::login_recovery`]):
//! the session must be MFA-pending and not expired -> throttle (client IP,
//! and the user's second-factor account, see below) -> verify the code
//! (TOTP: steps T-1..T+1, then an atomic "only a later step" write; recovery
//! code: an atomic delete) -> the session gets a new ID and becomes
//! authenticated with `[Password, Totp]` or `[Password, RecoveryCode]`.
//!
//! Second-factor attempts are counted against their own throttle account,
//! `"\u{1}mfa:" + user id` (no login name can contain a control
//! character, so it never collides with one). With the login name's
//! account, every correct password would clear the count, and whoever knows
//! the password would get fresh code guesses after every lock.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Timestamp;
use crate::cookie::CookieConfig;
use crate::event::{AuthEvent, AuthEventHook, AuthEventKind, FailureReason};
use crate::mfa::{
    Enrollment, MfaError, MfaKeys, RecoveryCodes, TotpParams, TotpSecret, hash_recovery_code,
    normalize_recovery_code, otpauth_uri, qr_svg,
};
use crate::password::{
    HashedPassword, Password, PasswordError, PasswordService, PolicyContext, PolicyViolation,
    Verification,
};
use crate::rate_limit::{Decision, IpBucket, ThrottleBackend, ThrottleError};
use crate::session::{
    AuthState, ClientInfo, Factor, NewSession, Session, SessionError, SessionHandle, SessionId,
    SessionManager, SessionRecord, StoreError,
};
use crate::user::{
    NewUser, User, UserStamps, UserStore, UserStoreError, new_security_stamp, normalize_login,
};

/// The client behind a request, as the adapter determined it (client IP via
/// [`TrustedProxies`](crate::rate_limit::TrustedProxies)).
#[derive(Debug, Clone)]
pub struct Client {
    /// Client IP.
    pub ip: IpAddr,
    /// `User-Agent`.
    pub user_agent: Option<String>,
}

impl Client {
    fn info(&self) -> ClientInfo {
        ClientInfo {
            ip: Some(self.ip.to_string()),
            user_agent: self.user_agent.clone(),
        }
    }
}

/// What a flow can answer instead of success. [`status`](Self::status) and
/// [`retry_after_secs`](Self::retry_after_secs) are what an adapter puts on
/// the response; `Display` is safe to show.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Unknown user, wrong password or disabled user: one answer for all.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// Too many attempts.
    #[error("too many attempts, try again later")]
    Throttled {
        /// When to try again.
        retry_after: Duration,
    },
    /// Hashing capacity or the shared throttle is unavailable; try again.
    #[error("service busy, try again later")]
    Busy,
    /// The new password breaks the policy.
    #[error("{0}")]
    Policy(PolicyViolation),
    /// The login name is malformed.
    #[error("invalid login name")]
    InvalidLogin,
    /// The login name is taken.
    #[error("login name already taken")]
    LoginTaken,
    /// No authenticated session.
    #[error("authentication required")]
    NotAuthenticated,
    /// The operation needs a recent login.
    #[error("please confirm your password")]
    ReauthenticationRequired,
    /// The route needs a completed second factor.
    #[error("a second factor is required")]
    SecondFactorRequired,
    /// A form's CSRF token is missing or does not belong to this session.
    #[error("invalid or missing form token, reload the page")]
    CsrfToken,
    /// A TOTP or recovery code is wrong, expired or already used (401).
    #[error("invalid or expired code")]
    InvalidCode,
    /// TOTP is already on for this user (409); disable it first.
    #[error("two-factor authentication is already enabled")]
    TotpAlreadyEnabled,
    /// The user has no (pending, for a confirmation) TOTP enrolment (409).
    #[error("two-factor authentication is not set up")]
    TotpNotEnabled,
    /// The server has no MFA encryption key configured (501): TOTP cannot
    /// be used.
    #[error("two-factor authentication is not available on this server")]
    MfaUnavailable,
    /// Storage or another internal failure (details in the source, never
    /// shown).
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl AuthError {
    /// The HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            Self::InvalidCredentials | Self::NotAuthenticated | Self::InvalidCode => 401,
            Self::TotpAlreadyEnabled | Self::TotpNotEnabled => 409,
            Self::MfaUnavailable => 501,
            Self::ReauthenticationRequired | Self::CsrfToken | Self::SecondFactorRequired => 403,
            Self::Throttled { .. } => 429,
            Self::Busy => 503,
            Self::Policy(_) | Self::InvalidLogin => 400,
            Self::LoginTaken => 409,
            Self::Internal(_) => 500,
        }
    }

    /// `Retry-After` in whole seconds, when the client should retry.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Self::Throttled { retry_after } => {
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                Some(secs.max(1))
            }
            Self::Busy => Some(1),
            _ => None,
        }
    }

    /// A stable machine-readable reason where one helps the client (the
    /// policy rule that failed).
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            Self::Policy(violation) => Some(violation.code()),
            _ => None,
        }
    }

    fn internal(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(error))
    }
}

impl From<SessionError> for AuthError {
    fn from(error: SessionError) -> Self {
        match error {
            SessionError::Gone => Self::NotAuthenticated,
            other => Self::internal(other),
        }
    }
}

impl From<UserStoreError> for AuthError {
    fn from(error: UserStoreError) -> Self {
        match error {
            UserStoreError::LoginTaken => Self::LoginTaken,
            other => Self::internal(other),
        }
    }
}

impl From<ThrottleError> for AuthError {
    fn from(error: ThrottleError) -> Self {
        match error {
            ThrottleError::Unavailable(_) => Self::Busy,
            other => Self::internal(other),
        }
    }
}

impl From<MfaError> for AuthError {
    fn from(error: MfaError) -> Self {
        match error {
            MfaError::NoKey => Self::MfaUnavailable,
            other => Self::internal(other),
        }
    }
}

impl From<PasswordError> for AuthError {
    fn from(error: PasswordError) -> Self {
        match error {
            PasswordError::Busy => Self::Busy,
            PasswordError::Policy(violation) => Self::Policy(violation),
            // Oversized input: the same answer as a wrong password.
            PasswordError::TooLong => Self::InvalidCredentials,
            other => Self::internal(other),
        }
    }
}

/// The result of a successful first factor.
#[derive(Debug)]
pub enum LoginOutcome {
    /// Fully logged in; set the session cookie.
    LoggedIn(Session),
    /// The password was right; the session is MFA-pending (set its cookie)
    /// and one of `methods` must follow.
    MfaRequired {
        /// The pending session.
        session: Session,
        /// The second factors the user has.
        methods: Vec<Factor>,
    },
}

impl LoginOutcome {
    /// The session whose cookie the response must carry.
    pub fn session(&self) -> &Session {
        match self {
            Self::LoggedIn(session) | Self::MfaRequired { session, .. } => session,
        }
    }
}

/// Builds an [`Authenticator`].
#[derive(Debug)]
#[must_use]
pub struct AuthenticatorBuilder {
    passwords: PasswordService,
    sessions: SessionManager,
    users: Arc<dyn UserStore>,
    throttle: Arc<dyn ThrottleBackend>,
    cookies: CookieConfig,
    hook: Option<Arc<dyn AuthEventHook>>,
    recent_auth: Duration,
    app_name: Option<String>,
    mfa_keys: Option<Arc<MfaKeys>>,
    totp: TotpParams,
}

impl AuthenticatorBuilder {
    /// The session cookie settings (default: [`CookieConfig::default`]).
    pub fn cookies(mut self, cookies: CookieConfig) -> Self {
        self.cookies = cookies;
        self
    }

    /// Receives every audit event.
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
    /// enrolment and TOTP logins fail with [`AuthError::MfaUnavailable`]:
    /// secrets are never stored in plain text.
    pub fn mfa_keys(mut self, keys: MfaKeys) -> Self {
        self.mfa_keys = Some(Arc::new(keys));
        self
    }

    /// TOTP parameters for new enrolments and verification (default: SHA-1,
    /// 6 digits, 30 s, what every authenticator app supports).
    pub fn totp_params(mut self, params: TotpParams) -> Self {
        self.totp = params;
        self
    }

    /// Builds the authenticator. If the session manager has no stamp
    /// source, the user store becomes it, so password changes, "sign out
    /// everywhere" and disabling end sessions on every store (including
    /// those that cannot revoke by user).
    pub fn build(mut self) -> Authenticator {
        if !self.sessions.has_stamp_source() {
            self.sessions = self
                .sessions
                .clone()
                .with_stamp_source(Arc::new(UserStamps(Arc::clone(&self.users))));
        }
        Authenticator {
            inner: Arc::new(self),
        }
    }
}

/// The login state machine; cheap to clone.
#[derive(Debug, Clone)]
pub struct Authenticator {
    inner: Arc<AuthenticatorBuilder>,
}

impl Authenticator {
    /// A builder. The session manager should check security stamps against
    /// the same user store (`SessionManager::with_stamp_source(Arc::new(
    /// UserStamps(users.clone())))`) so password changes and disabling end
    /// every session.
    pub fn builder(
        passwords: PasswordService,
        sessions: SessionManager,
        users: Arc<dyn UserStore>,
        throttle: Arc<dyn ThrottleBackend>,
    ) -> AuthenticatorBuilder {
        AuthenticatorBuilder {
            passwords,
            sessions,
            users,
            throttle,
            cookies: CookieConfig::default(),
            hook: None,
            recent_auth: Duration::from_secs(10 * 60),
            app_name: None,
            mfa_keys: None,
            totp: TotpParams::default(),
        }
    }

    /// The session manager.
    pub fn sessions(&self) -> &SessionManager {
        &self.inner.sessions
    }

    /// The user store.
    pub fn users(&self) -> &Arc<dyn UserStore> {
        &self.inner.users
    }

    /// The password service.
    pub fn passwords(&self) -> &PasswordService {
        &self.inner.passwords
    }

    /// The cookie settings.
    pub fn cookies(&self) -> &CookieConfig {
        &self.inner.cookies
    }

    /// The `Set-Cookie` value for `session` (persistent sessions get a
    /// `Max-Age` up to their absolute deadline).
    pub fn session_cookie(&self, session: &Session) -> String {
        let max_age = session.record().persistent.then(|| {
            session
                .record()
                .absolute_expires_at
                .duration_since(self.now())
        });
        self.inner.cookies.session_cookie(session.id(), max_age)
    }

    /// The `Set-Cookie` value that removes the session cookie.
    pub fn removal_cookie(&self) -> String {
        self.inner.cookies.removal_cookie()
    }

    fn now(&self) -> Timestamp {
        self.inner.sessions.clock().now()
    }

    fn emit(&self, event: AuthEvent) {
        crate::event::trace(&event);
        if let Some(hook) = &self.inner.hook {
            hook.on_event(&event);
        }
    }

    /// Emits a success event.
    fn success(
        &self,
        kind: AuthEventKind,
        user_id: Option<&str>,
        ip: Option<IpAddr>,
        factor: Option<Factor>,
    ) {
        self.emit(AuthEvent {
            kind,
            success: true,
            user_id: user_id.map(str::to_owned),
            ip,
            factor,
            reason: None,
            at: self.now(),
        });
    }

    /// Emits a failure event with its (internal) reason.
    fn failure(
        &self,
        kind: AuthEventKind,
        user_id: Option<&str>,
        ip: Option<IpAddr>,
        factor: Option<Factor>,
        reason: FailureReason,
    ) {
        self.emit(AuthEvent {
            kind,
            success: false,
            user_id: user_id.map(str::to_owned),
            ip,
            factor,
            reason: Some(reason),
            at: self.now(),
        });
    }

    fn policy_context(&self, login: &str) -> PolicyContext {
        let context = PolicyContext::new().with_word(login);
        match &self.inner.app_name {
            Some(app) => context.with_word(app),
            None => context,
        }
    }

    /// Creates an account: policy check (with the reason on refusal), hash,
    /// create. Does not log in.
    pub async fn register(
        &self,
        login: &str,
        password: &Password,
        client: &Client,
    ) -> Result<User, AuthError> {
        let refuse = |reason| {
            self.failure(
                AuthEventKind::RegistrationRefused,
                None,
                Some(client.ip),
                Some(Factor::Password),
                reason,
            );
        };
        if let Decision::Limited { retry_after, .. } = self
            .inner
            .throttle
            .check_ip(IpBucket::of(client.ip), self.now())
            .await?
        {
            self.failure(
                AuthEventKind::Throttled,
                None,
                Some(client.ip),
                None,
                FailureReason::IpThrottled,
            );
            return Err(AuthError::Throttled { retry_after });
        }
        let Ok(normalized) = normalize_login(login) else {
            refuse(FailureReason::InvalidLogin);
            return Err(AuthError::InvalidLogin);
        };
        let hash = match self
            .inner
            .passwords
            .hash_new_password(password, &self.policy_context(&normalized))
            .await
        {
            Ok(hash) => hash,
            Err(PasswordError::Policy(violation)) => {
                refuse(FailureReason::Policy);
                return Err(AuthError::Policy(violation));
            }
            Err(other) => return Err(other.into()),
        };
        let user = match self
            .inner
            .users
            .create(NewUser {
                login: normalized,
                display_name: login.trim().to_owned(),
                password_hash: hash,
                security_stamp: new_security_stamp()?,
            })
            .await
        {
            Ok(user) => user,
            Err(UserStoreError::LoginTaken) => {
                refuse(FailureReason::LoginTaken);
                return Err(AuthError::LoginTaken);
            }
            Err(other) => return Err(other.into()),
        };
        self.success(
            AuthEventKind::Registered,
            Some(&user.id),
            Some(client.ip),
            Some(Factor::Password),
        );
        Ok(user)
    }

    /// Checks the throttle for an attempt on `account` from `client`.
    async fn throttle(
        &self,
        account: &str,
        client: &Client,
        user_id: Option<&str>,
        factor: Factor,
    ) -> Result<(), AuthError> {
        let decision = self
            .inner
            .throttle
            .check(IpBucket::of(client.ip), account, self.now())
            .await?;
        match decision {
            Decision::Allowed => Ok(()),
            Decision::Limited { retry_after, scope } => {
                let reason = match scope {
                    crate::rate_limit::LimitScope::Ip => FailureReason::IpThrottled,
                    crate::rate_limit::LimitScope::Account => FailureReason::AccountLocked,
                };
                self.failure(
                    AuthEventKind::Throttled,
                    user_id,
                    Some(client.ip),
                    Some(factor),
                    reason,
                );
                Err(AuthError::Throttled { retry_after })
            }
        }
    }

    /// Verifies `password` for `user` (or the dummy when `None`, so every
    /// path costs one hash); re-hashes on success when flagged. Returns the
    /// user's stored hash after this check (the re-hash, if written) when the
    /// password matched.
    async fn check_password(
        &self,
        user: Option<&User>,
        password: &Password,
    ) -> Result<Option<HashedPassword>, AuthError> {
        let passwords = &self.inner.passwords;
        let Some(user) = user else {
            return match passwords.verify_dummy(password).await {
                // Oversized input: refused before hashing on every path.
                Ok(_) | Err(PasswordError::TooLong) => Ok(None),
                Err(other) => Err(other.into()),
            };
        };
        let verification = match passwords.verify(password, &user.password_hash).await {
            Ok(verification) => verification,
            Err(PasswordError::TooLong) => Verification::Mismatch,
            Err(
                PasswordError::MalformedHash
                | PasswordError::UnsupportedAlgorithm
                | PasswordError::UnknownPepperKey,
            ) => {
                tracing::error!(
                    target: "auth_core::audit",
                    user_id = %user.id,
                    "stored password hash cannot be verified (malformed, unsupported or unknown pepper)"
                );
                Verification::Mismatch
            }
            Err(other) => return Err(other.into()),
        };
        match verification {
            Verification::Mismatch => Ok(None),
            Verification::Match { upgrade } => {
                if upgrade.is_none() {
                    return Ok(Some(user.password_hash.clone()));
                }
                let new = passwords.hash(password).await?;
                // Only if the hash is still the one just verified: a
                // concurrent password change wins.
                let replaced = self
                    .inner
                    .users
                    .replace_password_hash(&user.id, &user.password_hash, &new)
                    .await?;
                if replaced {
                    self.success(
                        AuthEventKind::PasswordRehashed,
                        Some(&user.id),
                        None,
                        Some(Factor::Password),
                    );
                    Ok(Some(new))
                } else {
                    Ok(Some(user.password_hash.clone()))
                }
            }
        }
    }

    /// Logs in with a password. `current` is the session the request came
    /// with, if any: on success it is ended and a fresh session takes its
    /// place, so a planted or pre-login ID never becomes an authenticated
    /// one; on failure it is left alone.
    pub async fn login(
        &self,
        login: &str,
        password: &Password,
        client: &Client,
        current: Option<&Session>,
    ) -> Result<LoginOutcome, AuthError> {
        // A malformed name is throttled and hashed like an unknown one.
        let normalized = normalize_login(login).ok();
        let account = normalized.as_deref().unwrap_or("");
        self.throttle(account, client, None, Factor::Password)
            .await?;
        let user = match &normalized {
            Some(name) => self.inner.users.find_by_login(name).await?,
            None => None,
        };
        let usable = user.as_ref().filter(|u| !u.disabled);
        let matched = self.check_password(usable, password).await?.is_some();
        if !matched {
            let reason = match (&normalized, &user) {
                (None, _) => FailureReason::InvalidLogin,
                (Some(_), None) => FailureReason::UnknownUser,
                (Some(_), Some(u)) if u.disabled => FailureReason::Disabled,
                _ => FailureReason::WrongPassword,
            };

            self.failure(
                AuthEventKind::LoginFailed,
                user.as_ref().map(|u| u.id.as_str()),
                Some(client.ip),
                Some(Factor::Password),
                reason,
            );
            return Err(AuthError::InvalidCredentials);
        }
        let Some(user) = usable else {
            return Err(AuthError::InvalidCredentials);
        };
        self.inner.throttle.record_success(account).await?;
        let now = self.now();
        let mfa = !user.second_factors.is_empty();
        let methods = user.second_factors.clone();
        let pending_until = now.saturating_add(self.inner.sessions.config().mfa_pending_timeout());
        let (user_id, stamp) = (user.id.clone(), user.security_stamp.clone());
        let session = self
            .enter(current, client, move |record| {
                record.user_id = Some(user_id.clone());
                record.security_stamp = Some(stamp.clone());
                record.auth = if mfa {
                    AuthState::MfaPending {
                        methods: methods.clone(),
                        expires_at: pending_until,
                    }
                } else {
                    AuthState::Authenticated {
                        factors: vec![Factor::Password],
                        at: now,
                    }
                };
            })
            .await?;
        if mfa {
            self.success(
                AuthEventKind::LoginMfaRequired,
                Some(&user.id),
                Some(client.ip),
                Some(Factor::Password),
            );
            Ok(LoginOutcome::MfaRequired {
                session,
                methods: user.second_factors.clone(),
            })
        } else {
            self.success(
                AuthEventKind::LoginSucceeded,
                Some(&user.id),
                Some(client.ip),
                Some(Factor::Password),
            );
            Ok(LoginOutcome::LoggedIn(session))
        }
    }

    /// A fresh session in the new state. The request's session, if any, is
    /// ended: nothing of a possibly planted pre-login session (its data, its
    /// "remember me" flag, its creation time) carries into the login.
    async fn enter<F>(
        &self,
        current: Option<&Session>,
        client: &Client,
        change: F,
    ) -> Result<Session, AuthError>
    where
        F: FnMut(&mut crate::session::SessionRecord) + Send,
    {
        let sessions = &self.inner.sessions;
        if let Some(old) = current {
            sessions.destroy(old.clone()).await?;
        }
        let mut session = sessions
            .create(NewSession {
                client: client.info(),
                persistent: false,
            })
            .await?;
        sessions.update(&mut session, change).await?;
        Ok(session)
    }

    /// Ends the session server-side.
    pub async fn logout(&self, session: Session, client: &Client) -> Result<(), AuthError> {
        let user = session.user_id().map(str::to_owned);
        self.inner.sessions.destroy(session).await?;
        self.success(
            AuthEventKind::LoggedOut,
            user.as_deref(),
            Some(client.ip),
            None,
        );
        Ok(())
    }

    /// Loads the session `id` names together with its user, reading the
    /// user once for both the security-stamp check and the caller (the
    /// user is `None` for an anonymous session, or a gone or disabled
    /// user). What the web pipeline runs once per request.
    pub async fn load_session(
        &self,
        id: SessionId,
    ) -> Result<Option<(Session, Option<User>)>, AuthError> {
        let users = Arc::clone(&self.inner.users);
        let fetch = move |user_id: String| async move {
            let user = users
                .find_by_id(&user_id)
                .await
                .map_err(|e| StoreError::Backend(Box::new(e)))?;
            Ok(user
                .filter(|u| !u.disabled)
                .map(|u| (u.security_stamp.clone(), u)))
        };
        Ok(self.inner.sessions.load_id_with(id, fetch).await?)
    }

    /// The user of an authenticated session.
    pub async fn current_user(&self, session: &Session) -> Result<User, AuthError> {
        let id = session
            .authenticated_user()
            .ok_or(AuthError::NotAuthenticated)?;
        match self.inner.users.find_by_id(id).await? {
            Some(user) if !user.disabled => Ok(user),
            _ => Err(AuthError::NotAuthenticated),
        }
    }

    /// Fails with [`AuthError::NotAuthenticated`] unless `session` is fully
    /// authenticated (MFA-pending is not).
    pub fn require_login(&self, session: Option<&Session>) -> Result<(), AuthError> {
        match session {
            Some(session) if session.authenticated_user().is_some() => Ok(()),
            _ => Err(AuthError::NotAuthenticated),
        }
    }

    /// Fails unless `session` completed a second factor
    /// ([`AuthError::SecondFactorRequired`]).
    pub fn require_mfa(&self, session: Option<&Session>) -> Result<(), AuthError> {
        self.require_login(session)?;
        match session.map(Session::auth_state) {
            Some(AuthState::Authenticated { factors, .. })
                if factors.iter().any(|f| *f != Factor::Password) =>
            {
                Ok(())
            }
            _ => Err(AuthError::SecondFactorRequired),
        }
    }

    /// A new anonymous session (e.g. to bind a form's CSRF token to), paid
    /// from the client IP's throttle budget so that page views cannot flood
    /// the store.
    pub async fn anonymous_session(&self, client: &Client) -> Result<Session, AuthError> {
        if let Decision::Limited { retry_after, .. } = self
            .inner
            .throttle
            .check_ip(IpBucket::of(client.ip), self.now())
            .await?
        {
            return Err(AuthError::Throttled { retry_after });
        }
        Ok(self
            .inner
            .sessions
            .create(NewSession {
                client: client.info(),
                persistent: false,
            })
            .await?)
    }

    /// Gives the session a new ID (after a privilege change).
    pub async fn rotate(&self, session: &mut Session) -> Result<(), AuthError> {
        Ok(self.inner.sessions.rotate(session).await?)
    }

    /// The live sessions of the session's user, the current one marked.
    pub async fn list_sessions(
        &self,
        session: &Session,
    ) -> Result<Vec<crate::session::SessionInfo>, AuthError> {
        let user = session
            .authenticated_user()
            .ok_or(AuthError::NotAuthenticated)?;
        Ok(self
            .inner
            .sessions
            .list_for_user(user, Some(session))
            .await?)
    }

    /// Fails with [`AuthError::ReauthenticationRequired`] unless the session
    /// authenticated within the configured window (default 10 min).
    pub fn require_recent(&self, session: &Session) -> Result<(), AuthError> {
        if session.authenticated_user().is_none() {
            return Err(AuthError::NotAuthenticated);
        }
        if session.authenticated_within(self.now(), self.inner.recent_auth) {
            Ok(())
        } else {
            Err(AuthError::ReauthenticationRequired)
        }
    }

    /// Proves the password again (step-up): throttled like a login; on
    /// success the session gets a new ID and a fresh authentication time.
    /// Users with a second factor get [`AuthError::ReauthenticationRequired`]:
    /// their step-up is [`reauthenticate_with_code`](Self::reauthenticate_with_code).
    pub async fn reauthenticate(
        &self,
        session: &mut Session,
        password: &Password,
        client: &Client,
    ) -> Result<(), AuthError> {
        let user = self.current_user(session).await?;
        if !user.second_factors.is_empty() {
            // A password alone must not refresh a multi-factor login.
            return Err(AuthError::ReauthenticationRequired);
        }
        self.verify_current_password(&user, password, client, AuthEventKind::LoginFailed)
            .await?;
        let now = self.now();
        self.inner
            .sessions
            .rotate_with(session, |record| {
                if let AuthState::Authenticated { at, .. } = &mut record.auth {
                    *at = now;
                }
            })
            .await?;
        self.success(
            AuthEventKind::Reauthenticated,
            Some(&user.id),
            Some(client.ip),
            Some(Factor::Password),
        );
        Ok(())
    }

    /// Checks the current password of `user` (throttled like a login);
    /// returns the stored hash it matched.
    async fn verify_current_password(
        &self,
        user: &User,
        password: &Password,
        client: &Client,
        failure: AuthEventKind,
    ) -> Result<HashedPassword, AuthError> {
        self.throttle(&user.login, client, Some(&user.id), Factor::Password)
            .await?;
        match self.check_password(Some(user), password).await? {
            Some(hash) => {
                self.inner.throttle.record_success(&user.login).await?;
                Ok(hash)
            }
            None => {
                self.failure(
                    failure,
                    Some(&user.id),
                    Some(client.ip),
                    Some(Factor::Password),
                    FailureReason::WrongPassword,
                );
                Err(AuthError::InvalidCredentials)
            }
        }
    }

    /// Changes the password: requires the current one (throttled), applies
    /// the policy, bumps the security stamp (ending every other session) and
    /// rotates the current session.
    pub async fn change_password(
        &self,
        session: &mut Session,
        current_password: &Password,
        new_password: &Password,
        client: &Client,
    ) -> Result<(), AuthError> {
        let user = self.current_user(session).await?;
        // The compare-and-swap below is against the hash this password was
        // just checked against: if the password changed meanwhile, the old
        // one cannot overwrite the new.
        let verified = self
            .verify_current_password(
                &user,
                current_password,
                client,
                AuthEventKind::PasswordChangeFailed,
            )
            .await?;
        let new_hash = self
            .inner
            .passwords
            .hash_new_password(new_password, &self.policy_context(&user.login))
            .await?;
        let stamp = new_security_stamp()?;
        let changed = self
            .inner
            .users
            .change_password(&user.id, &verified, &new_hash, &stamp)
            .await?;
        if !changed {
            // The password changed concurrently; let the user retry.
            return Err(AuthError::InvalidCredentials);
        }
        self.end_other_sessions(session, &user.id, stamp).await?;
        self.success(
            AuthEventKind::PasswordChanged,
            Some(&user.id),
            Some(client.ip),
            Some(Factor::Password),
        );
        Ok(())
    }

    /// Ends every other session of the session's user ("sign out
    /// everywhere else"), through a new security stamp, and rotates the
    /// current one.
    pub async fn sign_out_everywhere(
        &self,
        session: &mut Session,
        client: &Client,
    ) -> Result<u64, AuthError> {
        let user = self.current_user(session).await?;
        let stamp = new_security_stamp()?;
        self.inner
            .users
            .set_security_stamp(&user.id, &stamp)
            .await?;
        let ended = self.end_other_sessions(session, &user.id, stamp).await?;
        self.success(
            AuthEventKind::SignedOutEverywhere,
            Some(&user.id),
            Some(client.ip),
            None,
        );
        Ok(ended)
    }

    async fn end_other_sessions(
        &self,
        session: &mut Session,
        user_id: &str,
        stamp: String,
    ) -> Result<u64, AuthError> {
        self.end_other_sessions_with(session, user_id, stamp, |_| {})
            .await
    }

    /// [`end_other_sessions`](Self::end_other_sessions), applying `change`
    /// to the current session in the same rotation.
    async fn end_other_sessions_with<F>(
        &self,
        session: &mut Session,
        user_id: &str,
        stamp: String,
        mut change: F,
    ) -> Result<u64, AuthError>
    where
        F: FnMut(&mut SessionRecord) + Send,
    {
        let sessions = &self.inner.sessions;
        sessions
            .rotate_with(session, |record| {
                record.security_stamp = Some(stamp.clone());
                change(record);
            })
            .await?;
        // Stores that cannot revoke by user rely on the stamp alone.
        match sessions.destroy_all_for_user(user_id, Some(session)).await {
            Ok(ended) => Ok(ended),
            Err(SessionError::Store(StoreError::Unsupported)) => Ok(0),
            Err(other) => Err(other.into()),
        }
    }

    /// Ends one of the user's own sessions by its handle. Returns whether it
    /// existed.
    pub async fn revoke_session(
        &self,
        session: &Session,
        handle: &SessionHandle,
        client: &Client,
    ) -> Result<bool, AuthError> {
        let user = session
            .authenticated_user()
            .ok_or(AuthError::NotAuthenticated)?
            .to_owned();
        let found = self.inner.sessions.destroy_by_handle(&user, handle).await?;
        if found {
            self.success(
                AuthEventKind::SessionRevoked,
                Some(&user),
                Some(client.ip),
                None,
            );
        }
        Ok(found)
    }
}

/// The throttle account of a user's second factor (see the module docs).
fn mfa_account(user_id: &str) -> String {
    format!("\u{1}mfa:{user_id}")
}

/// Which second factor a code is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CodeKind {
    Totp,
    Recovery,
}

impl CodeKind {
    /// A recovery code has 16 base32 characters; a TOTP code 6 to 8 digits.
    fn of(code: &str) -> Self {
        if normalize_recovery_code(code).is_some() {
            Self::Recovery
        } else {
            Self::Totp
        }
    }

    fn factor(self) -> Factor {
        match self {
            Self::Totp => Factor::Totp,
            Self::Recovery => Factor::RecoveryCode,
        }
    }
}

/// Second factors: TOTP enrolment and removal, recovery codes and the
/// second login step. Every code attempt is throttled like a password
/// attempt (client IP, and the user's second-factor account); no code,
/// secret or hash reaches an error, event or log line.
impl Authenticator {
    fn keys(&self) -> Result<&MfaKeys, AuthError> {
        self.inner
            .mfa_keys
            .as_deref()
            .ok_or(AuthError::MfaUnavailable)
    }

    /// Decrypts a stored secret; a failure is logged (without the record)
    /// and is an internal error.
    fn open_secret(&self, user_id: &str, sealed: &str) -> Result<TotpSecret, AuthError> {
        let keys = self.keys()?;
        keys.open(user_id, sealed).map_err(|error| {
            tracing::error!(
                target: "auth_core::audit",
                user_id = %user_id,
                %error,
                "stored TOTP secret cannot be decrypted (wrong or missing key, or corrupt record)"
            );
            AuthError::from(error)
        })
    }

    /// Checks a TOTP code of `user` and records its step atomically, so it
    /// works once. `Ok(Err(reason))` for a wrong or replayed code.
    async fn check_totp(
        &self,
        user_id: &str,
        code: &str,
    ) -> Result<Result<(), FailureReason>, AuthError> {
        let stored = match self.inner.users.totp(user_id).await? {
            Some(stored) if stored.confirmed => stored,
            _ => return Ok(Err(FailureReason::NoSecondFactor)),
        };
        let secret = self.open_secret(user_id, &stored.sealed_secret)?;
        let Some(step) = self
            .inner
            .totp
            .verify(&secret, code, self.now().as_unix_secs())
        else {
            return Ok(Err(FailureReason::InvalidCode));
        };
        let step = i64::try_from(step).map_err(|_| AuthError::InvalidCode)?;
        // The store decides atomically: of two requests with one code,
        // exactly one records its step.
        if self.inner.users.record_totp_step(user_id, step).await? {
            Ok(Ok(()))
        } else {
            Ok(Err(FailureReason::CodeReused))
        }
    }

    /// Consumes a recovery code of `user` (atomically).
    async fn check_recovery(
        &self,
        user_id: &str,
        code: &str,
    ) -> Result<Result<(), FailureReason>, AuthError> {
        let Some(hash) = hash_recovery_code(user_id, code) else {
            return Ok(Err(FailureReason::InvalidCode));
        };
        if self
            .inner
            .users
            .consume_recovery_code(user_id, &hash)
            .await?
        {
            Ok(Ok(()))
        } else {
            Ok(Err(FailureReason::InvalidCode))
        }
    }

    async fn check_code(
        &self,
        user_id: &str,
        kind: CodeKind,
        code: &str,
    ) -> Result<Result<(), FailureReason>, AuthError> {
        match kind {
            CodeKind::Totp => self.check_totp(user_id, code).await,
            CodeKind::Recovery => self.check_recovery(user_id, code).await,
        }
    }

    /// The user of an MFA-pending, unexpired session. An expired one is
    /// ended.
    async fn pending_user(
        &self,
        session: &Session,
        factor: Factor,
        client: &Client,
    ) -> Result<String, AuthError> {
        let (AuthState::MfaPending { expires_at, .. }, Some(user_id)) =
            (session.auth_state(), session.user_id())
        else {
            return Err(AuthError::NotAuthenticated);
        };
        let user_id = user_id.to_owned();
        if *expires_at <= self.now() {
            self.failure(
                AuthEventKind::LoginFailed,
                Some(&user_id),
                Some(client.ip),
                Some(factor),
                FailureReason::MfaExpired,
            );
            // Best effort: the store forgets it on the next load anyway.
            let _ = self.inner.sessions.destroy(session.clone()).await;
            return Err(AuthError::NotAuthenticated);
        }
        Ok(user_id)
    }

    /// Completes an MFA-pending login with a TOTP code: on success the
    /// session gets a new ID (the pending one is dead) and is authenticated
    /// with `[Password, Totp]`.
    ///
    /// Errors: [`AuthError::NotAuthenticated`] when the session is not
    /// MFA-pending or the pending state expired (start over with the
    /// password), [`AuthError::Throttled`], [`AuthError::InvalidCode`] for a
    /// wrong or already used code, [`AuthError::MfaUnavailable`] without
    /// [`MfaKeys`].
    pub async fn login_totp(
        &self,
        session: &mut Session,
        code: &str,
        client: &Client,
    ) -> Result<(), AuthError> {
        self.second_step(session, code, CodeKind::Totp, client)
            .await
    }

    /// Completes an MFA-pending login with a recovery code, which is used
    /// up. As [`login_totp`](Self::login_totp), with `[Password,
    /// RecoveryCode]`.
    pub async fn login_recovery(
        &self,
        session: &mut Session,
        code: &str,
        client: &Client,
    ) -> Result<(), AuthError> {
        self.second_step(session, code, CodeKind::Recovery, client)
            .await
    }

    async fn second_step(
        &self,
        session: &mut Session,
        code: &str,
        kind: CodeKind,
        client: &Client,
    ) -> Result<(), AuthError> {
        let factor = kind.factor();
        let user_id = self.pending_user(session, factor, client).await?;
        let account = mfa_account(&user_id);
        self.throttle(&account, client, Some(&user_id), factor)
            .await?;
        let user = match self.inner.users.find_by_id(&user_id).await? {
            Some(user) if !user.disabled => user,
            _ => return Err(AuthError::NotAuthenticated),
        };
        let allowed = match kind {
            CodeKind::Totp => user.second_factors.contains(&Factor::Totp),
            CodeKind::Recovery => !user.second_factors.is_empty(),
        };
        let outcome = if allowed {
            self.check_code(&user.id, kind, code).await?
        } else {
            Err(FailureReason::NoSecondFactor)
        };
        if let Err(reason) = outcome {
            self.failure(
                AuthEventKind::LoginFailed,
                Some(&user.id),
                Some(client.ip),
                Some(factor),
                reason,
            );
            return Err(AuthError::InvalidCode);
        }
        self.inner.throttle.record_success(&account).await?;
        let now = self.now();
        self.inner
            .sessions
            .rotate_with(session, |record| {
                record.auth = AuthState::Authenticated {
                    factors: vec![Factor::Password, factor],
                    at: now,
                };
            })
            .await?;
        self.success(
            AuthEventKind::LoginSucceeded,
            Some(&user.id),
            Some(client.ip),
            Some(factor),
        );
        Ok(())
    }

    /// Starts a TOTP enrolment (needs a recent login): a new 160-bit secret
    /// is stored encrypted as *pending*; it is not a second factor, and
    /// logins do not ask for it, until [`confirm_totp`](Self::confirm_totp).
    /// Starting again replaces a pending secret. Show the result once.
    ///
    /// Errors: [`AuthError::ReauthenticationRequired`],
    /// [`AuthError::TotpAlreadyEnabled`], [`AuthError::MfaUnavailable`]
    /// (no [`MfaKeys`]).
    pub async fn begin_totp_enrollment(
        &self,
        session: &Session,
        client: &Client,
    ) -> Result<Enrollment, AuthError> {
        self.require_recent(session)?;
        let user = self.current_user(session).await?;
        let keys = self.keys()?;
        let users = &self.inner.users;
        if users.totp(&user.id).await?.is_some_and(|t| t.confirmed) {
            return Err(AuthError::TotpAlreadyEnabled);
        }
        let secret = TotpSecret::generate()?;
        let sealed = keys.seal(&user.id, &secret)?;
        if !users.set_pending_totp(&user.id, &sealed).await? {
            return Err(AuthError::TotpAlreadyEnabled);
        }
        let account = if user.display_name.is_empty() {
            &user.login
        } else {
            &user.display_name
        };
        let uri = otpauth_uri(
            &secret,
            self.inner.app_name.as_deref(),
            account,
            &self.inner.totp,
        );
        let qr = qr_svg(secrecy::ExposeSecret::expose_secret(&uri))?;
        self.success(
            AuthEventKind::TotpEnrollmentStarted,
            Some(&user.id),
            Some(client.ip),
            Some(Factor::Totp),
        );
        Ok(Enrollment {
            secret: secret.to_base32(),
            otpauth_uri: uri,
            qr_svg: qr,
        })
    }

    /// Confirms the pending TOTP enrolment with a first valid code: TOTP
    /// becomes a second factor, 10 recovery codes replace any earlier ones
    /// (returned once, stored hashed), every other session of the user
    /// ends, and this one gets a new ID and the `Totp` factor.
    ///
    /// Errors: [`AuthError::NotAuthenticated`], [`AuthError::Throttled`],
    /// [`AuthError::InvalidCode`], [`AuthError::TotpNotEnabled`] (nothing
    /// pending), [`AuthError::TotpAlreadyEnabled`].
    pub async fn confirm_totp(
        &self,
        session: &mut Session,
        code: &str,
        client: &Client,
    ) -> Result<RecoveryCodes, AuthError> {
        let user = self.current_user(session).await?;
        self.keys()?;
        let account = mfa_account(&user.id);
        self.throttle(&account, client, Some(&user.id), Factor::Totp)
            .await?;
        let users = &self.inner.users;
        let stored = match users.totp(&user.id).await? {
            Some(stored) if !stored.confirmed => stored,
            Some(_) => return Err(AuthError::TotpAlreadyEnabled),
            None => return Err(AuthError::TotpNotEnabled),
        };
        let secret = self.open_secret(&user.id, &stored.sealed_secret)?;
        let step = self
            .inner
            .totp
            .verify(&secret, code, self.now().as_unix_secs())
            .and_then(|step| i64::try_from(step).ok());
        let Some(step) = step else {
            self.failure(
                AuthEventKind::TotpEnableFailed,
                Some(&user.id),
                Some(client.ip),
                Some(Factor::Totp),
                FailureReason::InvalidCode,
            );
            return Err(AuthError::InvalidCode);
        };
        let codes = RecoveryCodes::generate(&user.id)?;
        if !users
            .confirm_totp(&user.id, &stored.sealed_secret, step, codes.hashes())
            .await?
        {
            // Confirmed or replaced concurrently.
            return Err(match users.totp(&user.id).await? {
                Some(stored) if stored.confirmed => AuthError::TotpAlreadyEnabled,
                Some(_) => AuthError::InvalidCode,
                None => AuthError::TotpNotEnabled,
            });
        }
        self.inner.throttle.record_success(&account).await?;
        let stamp = new_security_stamp()?;
        users.set_security_stamp(&user.id, &stamp).await?;
        self.end_other_sessions_with(session, &user.id, stamp, |record| {
            if let AuthState::Authenticated { factors, .. } = &mut record.auth
                && !factors.contains(&Factor::Totp)
            {
                factors.push(Factor::Totp);
            }
        })
        .await?;
        self.success(
            AuthEventKind::TotpEnabled,
            Some(&user.id),
            Some(client.ip),
            Some(Factor::Totp),
        );
        Ok(codes)
    }

    /// Turns TOTP off (needs a recent login and a valid TOTP or recovery
    /// code): the secret, the recovery codes and the factor are removed,
    /// every other session of the user ends and this one gets a new ID.
    ///
    /// Errors: [`AuthError::ReauthenticationRequired`],
    /// [`AuthError::Throttled`], [`AuthError::InvalidCode`],
    /// [`AuthError::TotpNotEnabled`].
    pub async fn disable_totp(
        &self,
        session: &mut Session,
        code: &str,
        client: &Client,
    ) -> Result<(), AuthError> {
        self.require_recent(session)?;
        let user = self.current_user(session).await?;
        let kind = CodeKind::of(code);
        let account = mfa_account(&user.id);
        self.throttle(&account, client, Some(&user.id), kind.factor())
            .await?;
        let users = &self.inner.users;
        if !users.totp(&user.id).await?.is_some_and(|t| t.confirmed) {
            return Err(AuthError::TotpNotEnabled);
        }
        if let Err(reason) = self.check_code(&user.id, kind, code).await? {
            self.failure(
                AuthEventKind::TotpDisableFailed,
                Some(&user.id),
                Some(client.ip),
                Some(kind.factor()),
                reason,
            );
            return Err(AuthError::InvalidCode);
        }
        users.remove_totp(&user.id).await?;
        self.inner.throttle.record_success(&account).await?;
        let stamp = new_security_stamp()?;
        users.set_security_stamp(&user.id, &stamp).await?;
        self.end_other_sessions(session, &user.id, stamp).await?;
        self.success(
            AuthEventKind::TotpDisabled,
            Some(&user.id),
            Some(client.ip),
            Some(Factor::Totp),
        );
        Ok(())
    }

    /// Replaces the user's recovery codes with 10 new ones (needs a recent
    /// login and TOTP enabled); the old ones stop working.
    pub async fn regenerate_recovery_codes(
        &self,
        session: &Session,
        client: &Client,
    ) -> Result<RecoveryCodes, AuthError> {
        self.require_recent(session)?;
        let user = self.current_user(session).await?;
        let users = &self.inner.users;
        if !users.totp(&user.id).await?.is_some_and(|t| t.confirmed) {
            return Err(AuthError::TotpNotEnabled);
        }
        let codes = RecoveryCodes::generate(&user.id)?;
        users
            .replace_recovery_codes(&user.id, codes.hashes())
            .await?;
        self.success(
            AuthEventKind::RecoveryCodesRegenerated,
            Some(&user.id),
            Some(client.ip),
            Some(Factor::RecoveryCode),
        );
        Ok(codes)
    }

    /// How many unused recovery codes the session's user has.
    pub async fn recovery_codes_left(&self, session: &Session) -> Result<u64, AuthError> {
        let user = self.current_user(session).await?;
        Ok(self.inner.users.recovery_codes_left(&user.id).await?)
    }

    /// Whether the session's user has TOTP enabled (confirmed).
    pub async fn totp_enabled(&self, session: &Session) -> Result<bool, AuthError> {
        let user = self.current_user(session).await?;
        Ok(user.second_factors.contains(&Factor::Totp))
    }

    /// Step-up for users with a second factor: the password and a TOTP or
    /// recovery code (both throttled). On success the session gets a new ID
    /// and a fresh authentication time. Users without a second factor can
    /// use [`reauthenticate`](Self::reauthenticate) (this also works for
    /// them, ignoring `code`).
    pub async fn reauthenticate_with_code(
        &self,
        session: &mut Session,
        password: &Password,
        code: &str,
        client: &Client,
    ) -> Result<(), AuthError> {
        let user = self.current_user(session).await?;
        if user.second_factors.is_empty() {
            return self.reauthenticate(session, password, client).await;
        }
        self.verify_current_password(&user, password, client, AuthEventKind::LoginFailed)
            .await?;
        let kind = CodeKind::of(code);
        let account = mfa_account(&user.id);
        self.throttle(&account, client, Some(&user.id), kind.factor())
            .await?;
        if let Err(reason) = self.check_code(&user.id, kind, code).await? {
            self.failure(
                AuthEventKind::LoginFailed,
                Some(&user.id),
                Some(client.ip),
                Some(kind.factor()),
                reason,
            );
            return Err(AuthError::InvalidCode);
        }
        self.inner.throttle.record_success(&account).await?;
        let now = self.now();
        self.inner
            .sessions
            .rotate_with(session, |record| {
                if let AuthState::Authenticated { at, .. } = &mut record.auth {
                    *at = now;
                }
            })
            .await?;
        self.success(
            AuthEventKind::Reauthenticated,
            Some(&user.id),
            Some(client.ip),
            Some(kind.factor()),
        );
        Ok(())
    }
}
