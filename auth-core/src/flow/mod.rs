//! The framework-free API: the [`Authenticator`] runs every flow on an
//! explicit [`Session`] and [`Client`] (register, log in, log out, change
//! password, sign out everywhere, step-up, the second factor). Web apps use
//! it through their adapter's `AuthSession` (the core's
//! [`RequestAuth`](crate::web::RequestAuth)), which keeps the session and
//! cookie of one request; this API is for other front ends and tests.
//!
//! Login: find the user -> reserve a hashing slot (busy: 503, nothing
//! counted) -> throttle check (IP, and the account the name found, or the
//! name when it found none) -> verify the password (the dummy hash when
//! the user is unknown or disabled, so every path costs one hash) -> on
//! success, re-hash if flagged (compare-and-set on the old hash) -> an
//! MFA-pending session if the user has a second factor, else a fresh,
//! rotated, authenticated session. Unknown user, wrong password and
//! disabled user give the caller the same error. (With an app store that
//! finds one account under several names, a locked account answers 429
//! under each of them, which tells that those names share an account.)
//!
//! Second step ([`Authenticator::login_totp`], [`Authenticator::login_recovery`]):
//! the session must be MFA-pending and not expired -> throttle (client IP,
//! and the user's second-factor account, see below) -> verify the code
//! (TOTP: steps T-1..T+1, then an atomic "only a later step" write; recovery
//! code: an atomic delete) -> the session gets a new ID and becomes
//! authenticated with `[Password, Totp]` or `[Password, RecoveryCode]`.
//!
//! Changing a second factor ([`Authenticator::begin_totp_enrollment`],
//! [`Authenticator::disable_totp`],
//! [`Authenticator::regenerate_recovery_codes`]) needs a [`FactorProof`]
//! with the request, not a recent login: the password, and a current TOTP
//! or recovery code when the account has a second factor, each checked and
//! throttled as at login. Confirming an enrolment is proved by the new
//! authenticator's first code. Every change of factors raises the
//! account's epoch, ends the user's other sessions and gives this one a
//! new ID.
//!
//! Second-factor attempts are counted against their own throttle account,
//! `"\u{1}mfa:" + user id` (no login name can contain a control
//! character, so it never collides with one). With the login name's
//! account, every correct password would clear the count, and whoever knows
//! the password would get fresh code guesses after every lock.
//!
//! Sessions stay valid while their user's stamp is the one they recorded:
//! a SHA-256 fingerprint of the user's password hash (so a password change
//! through any path, the app's own included, ends them) and, on session
//! stores that cannot revoke by user, the account's revocation epoch.
//! One consequence: a re-hash after a login with outdated parameters ends
//! the user's other sessions once, and (bound to the hash as well) the
//! reset, sign-in and address-verification links mailed before it.
//!
//! The code is split by concern: `error` ([`AuthError`]), `builder`
//! ([`AuthBuilder`]), `password` (register, log in, step-up, change),
//! `session` (load, log out, list, revoke, sign out everywhere), `mfa`
//! (TOTP and recovery codes) and `events` (audit).

mod builder;
mod error;
mod events;
mod mfa;
#[cfg(feature = "passkeys")]
mod passkeys;
mod password;
mod recovery;
mod session;
#[cfg(feature = "jwt")]
mod tokens;

pub use builder::{AuthBuilder, BuildError};
pub use error::AuthError;
pub use mfa::{FactorProof, TOTP_ENROLMENT_TIMEOUT};
#[cfg(feature = "passkeys")]
pub use passkeys::{MAX_PASSKEY_NAME, MAX_PASSKEYS, PasskeyAdded};
pub use recovery::{InvalidUrl, MailLinks};
#[cfg(feature = "jwt")]
pub use tokens::{TokenOutcome, TokenPair, amr};

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64ct::{Base64UrlUnpadded, Encoding};
use hashbrown::HashMap;
use sha2::{Digest, Sha256};

use crate::account::AccountStore;
use crate::clock::Timestamp;
use crate::cookie::CookieConfig;
use crate::event::{AuthEventHook, AuthEventKind, FailureReason};
use crate::mfa::{MfaKeys, TotpParams};
use crate::password::{PasswordService, PolicyContext};
use crate::rate_limit::{Attempt, Decision, LimitScope, ThrottleBackend};
use crate::secret_key::{Lookup, SecretKey};
use crate::session::{
    ClientInfo, Factor, Session, SessionId, SessionManager, StampSource, StoreError,
};
use crate::user::{AnyUser, DynUsers};

/// The client behind a request, as the adapter determined it (client IP via
/// [`TrustedProxies`](crate::rate_limit::TrustedProxies)).
///
/// Non-exhaustive (a field may be added): make one with [`Client::new`] and
/// the `with_` methods, or set the public fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Client {
    /// Client IP.
    pub ip: IpAddr,
    /// `User-Agent`.
    pub user_agent: Option<String>,
    /// The browser's device cookie, if it sent one: attempts from a device
    /// that completed a login to the account count against a budget of
    /// their own (see [`rate_limit`](crate::rate_limit)).
    pub device: Option<SessionId>,
    /// The client asked to stay signed in on this device ("remember me"):
    /// a sign-in then makes a persistent session, whose cookie outlives the
    /// browser session and which idles out after
    /// [`SessionConfig::persistent_idle_timeout`](crate::session::SessionConfig::persistent_idle_timeout)
    /// (7 days) instead of 30 minutes. The flag carries through the second
    /// factor; a step-up keeps it.
    pub remember: bool,
}

impl Client {
    /// A client at `ip`, with no user agent and no device cookie, not
    /// asking to be remembered.
    pub fn new(ip: IpAddr) -> Self {
        Self {
            ip,
            user_agent: None,
            device: None,
            remember: false,
        }
    }

    /// With the `User-Agent` (kept with the sessions it makes).
    #[must_use]
    pub fn with_user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = Some(user_agent.into());
        self
    }

    /// Asking to be remembered, or not ([`Client::remember`]).
    #[must_use]
    pub fn remembering(mut self, remember: bool) -> Self {
        self.remember = remember;
        self
    }

    fn info(&self) -> ClientInfo {
        ClientInfo {
            ip: Some(self.ip.to_string()),
            user_agent: self.user_agent.clone(),
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

/// The login state machine; cheap to clone. Built by [`AuthBuilder`]
/// (`Auth::builder(users)...build()?.authenticator()`).
#[derive(Debug, Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    passwords: PasswordService,
    sessions: SessionManager,
    users: Arc<dyn DynUsers>,
    accounts: Arc<dyn AccountStore>,
    stamps: Stamps,
    throttle: Arc<dyn ThrottleBackend>,
    cookies: CookieConfig,
    hook: Option<Arc<dyn AuthEventHook>>,
    recent_auth: Duration,
    app_name: Option<String>,
    mfa_keys: Option<Arc<MfaKeys>>,
    totp: TotpParams,
    tokens: Arc<dyn crate::single_use::TokenStore>,
    mail: Option<recovery::MailSetup>,
    require_verified_email: bool,
    #[cfg(feature = "jwt")]
    token_service: Option<Arc<crate::token::TokenService>>,
    #[cfg(feature = "passkeys")]
    passkeys: Option<Arc<crate::passkey::Passkeys>>,
}

/// A user's session stamp (see the module docs): what sessions record at
/// login and are checked against at every load.
#[derive(Debug, Clone)]
pub(crate) struct Stamps {
    users: Arc<dyn DynUsers>,
    accounts: Arc<dyn AccountStore>,
    /// Whether the account epoch is part of the stamp: only for session
    /// stores that cannot revoke by user.
    with_epoch: bool,
    fingerprints: Arc<Fingerprints>,
}

/// Fingerprints of the password hashes seen lately, keyed by the exact
/// hash string (with the epoch they were made for): the per-request check
/// then hashes nothing. A changed hash is another key and a changed epoch
/// is recomputed, so an entry is never stale;
/// the map holds hashes the app's store returned (never request input),
/// compares them in constant time ([`SecretKey`]) and is emptied when it
/// reaches [`Fingerprints::MAX`].
#[derive(Default)]
struct Fingerprints(Mutex<FingerprintMap>);

/// Under a seeded fast hash: the keys are the store's hashes, which no
/// client chooses.
type FingerprintMap = HashMap<SecretKey, Fingerprint, foldhash::fast::RandomState>;

/// The keys are password hashes: `Debug` shows how many, nothing else.
impl std::fmt::Debug for Fingerprints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let len = self.0.lock().map_or(0, |map| map.len());
        write!(f, "Fingerprints({len} cached, [REDACTED])")
    }
}

/// The epoch a fingerprint was made for, and the fingerprint.
type Fingerprint = (u64, Arc<str>);

impl Fingerprints {
    const MAX: usize = 16_384;

    fn get(&self, password_hash: &str, epoch: u64) -> Arc<str> {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((seen, fingerprint)) = map.get(&Lookup(password_hash))
            && *seen == epoch
        {
            return Arc::clone(fingerprint);
        }
        let fingerprint: Arc<str> = Self::compute(password_hash, epoch).into();
        if map.len() >= Self::MAX {
            map.clear();
        }
        map.insert(
            SecretKey::new(password_hash),
            (epoch, Arc::clone(&fingerprint)),
        );
        fingerprint
    }

    fn compute(password_hash: &str, epoch: u64) -> String {
        let mut digest = Sha256::new();
        digest.update(b"auth-core session stamp v1\0");
        digest.update(password_hash.as_bytes());
        digest.update(b"\0");
        digest.update(epoch.to_be_bytes());
        Base64UrlUnpadded::encode_string(&digest.finalize())
    }
}

impl Stamps {
    pub(crate) fn new(
        users: Arc<dyn DynUsers>,
        accounts: Arc<dyn AccountStore>,
        with_epoch: bool,
    ) -> Self {
        Self {
            users,
            accounts,
            with_epoch,
            fingerprints: Arc::default(),
        }
    }

    /// The stamp of `user` with `password_hash` (the hash after a check,
    /// which a re-hash may have replaced).
    async fn of(&self, user: &AnyUser, password_hash: &str) -> Result<Arc<str>, StoreError> {
        let epoch = if self.with_epoch {
            self.accounts
                .epoch(user.id())
                .await
                .map_err(|e| StoreError::Backend(Box::new(e)))?
        } else {
            0
        };
        Ok(self.fingerprints.get(password_hash, epoch))
    }

    /// The user `id` names with its current stamp; `None` when the user is
    /// gone or disabled (their sessions end).
    async fn load(&self, id: &str) -> Result<Option<(Arc<str>, AnyUser)>, StoreError> {
        let user = self
            .users
            .find_by_id(id)
            .await
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        match user.filter(|u| !u.is_disabled()) {
            Some(user) => Ok(Some((self.of(&user, user.password_hash()).await?, user))),
            None => Ok(None),
        }
    }
}

#[async_trait]
impl StampSource for Stamps {
    async fn current_stamp(&self, user_id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .load(user_id)
            .await?
            .map(|(stamp, _)| stamp.to_string()))
    }
}

impl Authenticator {
    /// The session manager.
    pub fn sessions(&self) -> &SessionManager {
        &self.inner.sessions
    }

    /// The account store (second factors, recovery codes, epochs).
    pub fn accounts(&self) -> &Arc<dyn AccountStore> {
        &self.inner.accounts
    }

    /// The single-use token store (reset and verification links).
    pub fn tokens(&self) -> &Arc<dyn crate::single_use::TokenStore> {
        &self.inner.tokens
    }

    /// Deletes what has expired: sessions, reset / verification /
    /// magic-link tokens, and with API tokens on, dead refresh-token
    /// families. The SQL stores (SQLite,
    /// PostgreSQL) keep them until this runs; the memory stores drop them
    /// here too (otherwise only when full); Redis expires keys itself, and
    /// a tower-sessions store's own expiry applies (it answers 0). Run it
    /// now and then (every few minutes, from a timer of the app's); the
    /// stores stay correct without it (an expired record is never
    /// accepted), only larger. Every store is swept even when one fails;
    /// the first error is answered, else how many records went.
    pub async fn delete_expired(&self) -> Result<u64, AuthError> {
        let now = self.now();
        let mut deleted = 0;
        let mut first_error = None;
        let mut count = |result: Result<u64, AuthError>| match result {
            Ok(n) => deleted += n,
            Err(error) => {
                first_error.get_or_insert(error);
            }
        };
        count(
            self.inner
                .sessions
                .delete_expired()
                .await
                .map_err(Into::into),
        );
        count(
            self.inner
                .tokens
                .delete_expired(now)
                .await
                .map_err(Into::into),
        );
        #[cfg(feature = "jwt")]
        if let Some(service) = &self.inner.token_service {
            count(
                service
                    .store()
                    .purge(now)
                    .await
                    .map_err(AuthError::internal),
            );
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(deleted),
        }
    }

    /// The password service.
    pub fn passwords(&self) -> &PasswordService {
        &self.inner.passwords
    }

    /// The cookie settings.
    pub fn cookies(&self) -> &CookieConfig {
        &self.inner.cookies
    }

    /// The `Set-Cookie` value for `session`: a signed-in persistent session
    /// gets a `Max-Age` up to its absolute deadline; any other (one still
    /// waiting for its second factor included) a browser-session cookie.
    pub fn session_cookie(&self, session: &Session) -> String {
        let record = session.record();
        let persistent = record.persistent && record.authenticated_user().is_some();
        let max_age = persistent.then(|| {
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

    /// The time for the throttle, as its backend wants it read.
    fn throttle_now(&self) -> Timestamp {
        self.inner
            .throttle
            .now(self.inner.sessions.clock().as_ref())
    }

    fn policy_context(&self, login: &str) -> PolicyContext {
        let context = PolicyContext::new().with_word(login);
        match &self.inner.app_name {
            Some(app) => context.with_word(app),
            None => context,
        }
    }

    /// The per-IP budget alone (registration, anonymous sessions).
    async fn throttle_ip(&self, client: &Client) -> Result<(), AuthError> {
        if let Decision::Limited { retry_after, .. } = self
            .inner
            .throttle
            .check_ip(client.ip, self.throttle_now())
            .await?
        {
            self.failure(
                AuthEventKind::Throttled,
                None,
                client,
                None,
                FailureReason::IpThrottled,
            );
            return Err(AuthError::Throttled { retry_after });
        }
        Ok(())
    }

    /// Checks the throttle for an attempt on `account` from `client`.
    async fn throttle(
        &self,
        account: &str,
        client: &Client,
        user_id: Option<&str>,
        factor: Factor,
    ) -> Result<(), AuthError> {
        let device = client.device.as_ref().map(SessionId::key);
        let decision = self
            .inner
            .throttle
            .check(
                &Attempt {
                    ip: client.ip,
                    account,
                    device: device.as_ref(),
                },
                self.throttle_now(),
            )
            .await?;
        match decision {
            Decision::Allowed => Ok(()),
            Decision::Limited { retry_after, scope } => {
                let reason = match scope {
                    LimitScope::Ip => FailureReason::IpThrottled,
                    LimitScope::Account => FailureReason::AccountLocked,
                };
                self.failure(
                    AuthEventKind::Throttled,
                    user_id,
                    client,
                    Some(factor),
                    reason,
                );
                Err(AuthError::Throttled { retry_after })
            }
        }
    }
}

impl Authenticator {
    /// Clears `account`'s count after a success from `client`, whose
    /// device becomes known for it.
    async fn throttle_success(&self, account: &str, client: &Client) -> Result<(), AuthError> {
        self.inner
            .throttle
            .record_success(
                account,
                client.device.as_ref().map(SessionId::key).as_ref(),
                self.throttle_now(),
            )
            .await?;
        Ok(())
    }

    /// Clears `account`'s count after a success that does not complete a
    /// sign-in ([`ThrottleBackend::record_partial_success`]: a second
    /// factor may still be asked for): the client's device earns no
    /// standing from it.
    ///
    /// [`ThrottleBackend::record_partial_success`]: crate::rate_limit::ThrottleBackend::record_partial_success
    async fn throttle_partial_success(
        &self,
        account: &str,
        client: &Client,
    ) -> Result<(), AuthError> {
        self.inner
            .throttle
            .record_partial_success(
                account,
                client.device.as_ref().map(SessionId::key).as_ref(),
                self.throttle_now(),
            )
            .await?;
        Ok(())
    }

    /// After a complete sign-in whose first factor was counted against
    /// `account`: the client's device becomes known for it. Best effort:
    /// the sign-in stands when the throttle's store fails here (logged).
    async fn remember_device(&self, account: &str, client: &Client) {
        if client.device.is_none() {
            return;
        }
        if let Err(error) = self.throttle_success(account, client).await {
            tracing::warn!(%error, "auth: a device could not be made known after a sign-in");
        }
    }

    /// Ends the throttle standing of every device known for the user's
    /// password, second factor and sign-in links but the device of `keep`
    /// (the client that made the change; `None` for none)
    /// ([`ThrottleBackend::forget_devices`]). Best effort: the change that
    /// asked for it has been made (a failure is logged; the standing then
    /// ends with its trust).
    ///
    /// [`ThrottleBackend::forget_devices`]: crate::rate_limit::ThrottleBackend::forget_devices
    pub(super) async fn forget_devices(&self, user_id: &str, keep: Option<&Client>) {
        let keep = keep.and_then(|client| client.device.as_ref().map(SessionId::key));
        let accounts = [
            password_account_of(user_id),
            mfa_account(user_id),
            recovery::link_account(user_id, crate::single_use::Purpose::MagicLink),
        ];
        for account in &accounts {
            if let Err(error) = self
                .inner
                .throttle
                .forget_devices(account, keep.as_ref())
                .await
            {
                tracing::warn!(%error, "auth: known devices could not be forgotten");
            }
        }
    }

    /// How long a device cookie lasts (the throttle's device standing).
    pub fn device_trust(&self) -> Duration {
        self.inner.throttle.config().device_trust()
    }

    /// The user's second factors: the account store's (TOTP), and
    /// `Passkey` when the user has one.
    pub(crate) async fn second_factors(&self, user_id: &str) -> Result<Vec<Factor>, AuthError> {
        #[allow(unused_mut)]
        let mut factors = self.inner.accounts.second_factors(user_id).await?;
        #[cfg(feature = "passkeys")]
        if self.has_passkey(user_id).await? {
            factors.push(Factor::Passkey);
        }
        Ok(factors)
    }

    /// Lifts the login locks of user `id` (password and second factor):
    /// for an administrator. A completed password reset lifts only the
    /// password lock (whoever holds the mailbox gets no fresh code guesses
    /// from it). Attempts from the owner's known devices are never held by
    /// these locks in the first place.
    pub async fn unlock_account(&self, id: &str) -> Result<(), AuthError> {
        self.unlock_password(id).await?;
        self.inner.throttle.unlock(&mfa_account(id)).await?;
        Ok(())
    }

    /// Lifts the password lock of user `id`, leaving the second factor's.
    pub(crate) async fn unlock_password(&self, id: &str) -> Result<(), AuthError> {
        self.inner.throttle.unlock(&format!("\u{1}id:{id}")).await?;
        Ok(())
    }
}

/// How long a login may take, store operations included, before it answers
/// [`AuthError::Unavailable`] (503, `Retry-After`): a store that stops
/// answering in the middle of a query (a stalled network, where the
/// driver itself has no timeout) never hangs the request. Generous: the
/// password hash takes tens of milliseconds, and the hashing queue answers
/// busy (503) on its own within a second.
pub(crate) const LOGIN_DEADLINE: Duration = Duration::from_secs(10);

/// How long the store reads of an authenticated request (the session and
/// its user, or a bearer token's family and user) may take before the
/// request answers 503; see [`LOGIN_DEADLINE`]. (The session's are
/// bounded by the session manager itself.)
#[cfg(feature = "jwt")]
pub(crate) const READ_DEADLINE: Duration = Duration::from_secs(5);

/// Runs `flow`, or answers [`AuthError::Unavailable`] (503) when it has
/// waited `deadline` (the flow is dropped: every store write is atomic on
/// its own, and nothing half-done is left live). A flow that answers at
/// its first poll makes no timer (see `crate::deadline`).
pub(crate) async fn bounded<T>(
    deadline: Duration,
    flow: impl Future<Output = Result<T, AuthError>>,
) -> Result<T, AuthError> {
    crate::deadline::within(Some(deadline), flow)
        .await
        .map_err(AuthError::internal)?
}

/// The throttle account of a user's password: the user's id (no login
/// name contains a control character, so it never collides with the name
/// of an unknown account), whatever name the attempt used.
fn password_account(user: &AnyUser) -> String {
    password_account_of(user.id())
}

/// [`password_account`] by the user's id.
fn password_account_of(user_id: &str) -> String {
    format!("\u{1}id:{user_id}")
}

/// The throttle account that counted a pending sign-in's first factor
/// (its device earns standing there once the second factor is done).
fn first_factor_account(first: Factor, user_id: &str) -> Option<String> {
    match first {
        Factor::Password => Some(password_account_of(user_id)),
        Factor::EmailLink => Some(recovery::link_account(
            user_id,
            crate::single_use::Purpose::MagicLink,
        )),
        _ => None,
    }
}

/// The throttle account of a user's second factor (see the module docs).
fn mfa_account(user_id: &str) -> String {
    format!("\u{1}mfa:{user_id}")
}

#[cfg(test)]
mod tests {
    use super::Fingerprints;

    /// The cache answers what the hash would, for any hash and epoch, and
    /// across its clearing: a changed hash or epoch never gets an old
    /// fingerprint.
    #[test]
    fn cached_fingerprints_are_the_computed_ones() {
        let cache = Fingerprints::default();
        let a = cache.get("$argon2id$a", 0);
        assert_eq!(*a, Fingerprints::compute("$argon2id$a", 0));
        assert_eq!(cache.get("$argon2id$a", 0), a, "a hit");
        assert_ne!(cache.get("$argon2id$b", 0), a, "another hash");
        assert_ne!(cache.get("$argon2id$a", 1), a, "another epoch");
        assert_eq!(
            *cache.get("$argon2id$a", 1),
            Fingerprints::compute("$argon2id$a", 1)
        );
        for i in 0..Fingerprints::MAX + 10 {
            let hash = format!("$argon2id${i}");
            assert_eq!(*cache.get(&hash, 3), Fingerprints::compute(&hash, 3));
        }
        assert!(
            cache.0.lock().unwrap().len() <= Fingerprints::MAX,
            "bounded"
        );
        assert_eq!(
            *cache.get("$argon2id$a", 0),
            Fingerprints::compute("$argon2id$a", 0)
        );
    }
}
