//! The error model of every flow: one [`AuthError`], whose status,
//! `Retry-After` and reason every adapter uses as they are.

use std::time::Duration;

use crate::mfa::MfaError;
use crate::password::{PasswordError, PolicyViolation};
use crate::rate_limit::ThrottleError;
use crate::session::SessionError;
use crate::user::UserStoreError;

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
    /// Hashing capacity is saturated; try again (503, `Retry-After: 1`).
    #[error("service busy, try again later")]
    Busy,
    /// A store (the database, Redis, the shared throttle) could not be
    /// reached or did not answer in time: nothing was decided, try again
    /// (503, `Retry-After: 1`). The cause is in the source (logged once at
    /// warn level, by kind only, when the error is made; never shown). See
    /// [`AuthError::store_unavailable`] for what counts.
    #[error("service temporarily unavailable, try again later")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
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
    /// A change of second factors came without a code although the account
    /// has a second factor: its [`FactorProof`](super::FactorProof) needs
    /// the password *and* a current TOTP or recovery code (403, like the
    /// other "authenticate more" answers). Nothing was checked or counted.
    #[error("a code from your authenticator app or a recovery code is required")]
    CodeRequired,
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
    /// A link's token is malformed, unknown, expired, used, or no longer
    /// matches what it was issued against (400; one answer for all).
    #[error("invalid or expired link")]
    InvalidToken,
    /// The app requires a verified email address to sign in, and the
    /// account has none yet (403; the credentials were right).
    #[error("please confirm your email address first")]
    EmailNotVerified,
    /// An email address the toolkit does not take (400).
    #[error("invalid email address")]
    InvalidEmail,
    /// No mailer is configured (501): account-recovery mail cannot be sent.
    #[error("email is not available on this server")]
    MailUnavailable,
    /// The app's store does not offer this operation (501), e.g.
    /// registration with a [`UserStore`](crate::UserStore) without
    /// `create`.
    #[error("not supported by this server")]
    Unsupported,
    /// A refresh token is malformed, unknown, spent, revoked or expired,
    /// or its user is gone or disabled (401; one answer for all).
    #[error("invalid or expired token")]
    InvalidGrant,
    /// No token service is configured (501): API tokens cannot be issued.
    #[error("API tokens are not available on this server")]
    TokensUnavailable,
    /// The operation spans several requests and needs a browser session;
    /// a bearer token cannot carry its state (400).
    #[error("this needs a browser session")]
    SessionRequired,
    /// No passkey service is configured (501).
    #[error("passkeys are not available on this server")]
    PasskeysUnavailable,
    /// The passkey is already registered (409).
    #[error("this passkey is already registered")]
    PasskeyTaken,
    /// A sign-in link of one account opened in a browser signed in to
    /// another, or half-way through signing in to another (409): log out
    /// first. The link stays usable. (A link
    /// someone else sent must not swap the owner's session for theirs.)
    #[error("signed in to another account: log out first")]
    SignedInAsAnother,
    /// The account has a verified email address: it changes only with the
    /// owner's proof ([`Authenticator::change_email`](super::Authenticator::change_email)),
    /// never through `set_email` (409).
    #[error("this account has a verified email address: change it with proof")]
    EmailAlreadyVerified,
    /// The account has as many passkeys as one may have
    /// ([`MAX_PASSKEYS`](crate::flow::MAX_PASSKEYS)); remove one first (409).
    #[error("this account has the most passkeys it may have")]
    TooManyPasskeys,
    /// No passkey ceremony is in progress on this session, or it expired
    /// (5 minutes) or was answered already (400): start again.
    #[error("no passkey request in progress, start again")]
    PasskeyCeremony,
    /// The passkey answer was refused (401): unknown or removed credential,
    /// another user's, wrong origin or challenge, bad signature, or a
    /// signature counter that went backwards.
    #[error("passkey not accepted")]
    PasskeyRefused,
    /// The user has no passkey for a passkey second step (409).
    #[error("no passkey is registered for this account")]
    NoPasskey,
    /// A passkey name that is too long (over 64 characters) or has control
    /// characters (400).
    #[error("invalid passkey name")]
    InvalidPasskeyName,
    /// Storage or another internal failure (details in the source, never
    /// shown).
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl AuthError {
    /// The HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            Self::InvalidCredentials
            | Self::NotAuthenticated
            | Self::InvalidCode
            | Self::InvalidGrant
            | Self::PasskeyRefused => 401,
            Self::TotpAlreadyEnabled
            | Self::TotpNotEnabled
            | Self::LoginTaken
            | Self::PasskeyTaken
            | Self::TooManyPasskeys
            | Self::EmailAlreadyVerified
            | Self::SignedInAsAnother
            | Self::NoPasskey => 409,
            Self::MfaUnavailable
            | Self::Unsupported
            | Self::MailUnavailable
            | Self::TokensUnavailable
            | Self::PasskeysUnavailable => 501,
            Self::ReauthenticationRequired
            | Self::CsrfToken
            | Self::SecondFactorRequired
            | Self::CodeRequired
            | Self::EmailNotVerified => 403,
            Self::Throttled { .. } => 429,
            Self::Busy | Self::Unavailable(_) => 503,
            Self::Policy(_)
            | Self::InvalidLogin
            | Self::InvalidToken
            | Self::InvalidEmail
            | Self::SessionRequired
            | Self::PasskeyCeremony
            | Self::InvalidPasskeyName => 400,
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
            Self::Busy | Self::Unavailable(_) => Some(1),
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

    /// An internal error with its cause (logged by
    /// [`Reply::error`](crate::web::Reply::error), never shown), or
    /// [`AuthError::Unavailable`] when the cause says a store could not be
    /// reached in time (see [`store_unavailable`](Self::store_unavailable)):
    /// every store error of the flows comes through here.
    pub fn internal(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        let error = error.into();
        match Self::store_unavailable(error.as_ref()) {
            Some(kind) => Self::unavailable_because(kind, error),
            None => Self::Internal(error),
        }
    }

    /// Whether `error`, or an error in its [`source`](std::error::Error::source)
    /// chain, says that a store could not be reached or did not answer in
    /// time, and which kind of failure it is: what becomes
    /// [`AuthError::Unavailable`] (503) instead of [`AuthError::Internal`]
    /// (500).
    ///
    /// * sqlx (`sqlite` / `postgres` features): `Io`, `Tls`, `PoolTimedOut`,
    ///   `PoolClosed`, and a database's "connection exception" (SQLSTATE class
    ///   `08`), "shutting down" or "cannot connect now" (`57P01`-`57P03`) and
    ///   "too many connections" (`53300`).
    /// * Redis (`redis` feature): I/O errors (refused, dropped, timed out) and
    ///   the server's "loading", "try again", "cluster down", "master down".
    /// * A bare [`std::io::Error`], or a [`tokio::time::error::Elapsed`]
    ///   (a store's own timeout).
    ///
    /// Anything else (a corrupt record, a constraint, a bug) is `None`: a real
    /// internal error.
    pub fn store_unavailable(error: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
        let mut next = Some(error);
        while let Some(error) = next {
            #[cfg(any(feature = "sqlite", feature = "postgres"))]
            if let Some(error) = error.downcast_ref::<sqlx::Error>() {
                return sqlx_unavailable(error);
            }
            #[cfg(feature = "redis")]
            if let Some(error) = error.downcast_ref::<redis::RedisError>() {
                return redis_unavailable(error);
            }
            if error.is::<std::io::Error>() {
                return Some("I/O error");
            }
            if error.is::<tokio::time::error::Elapsed>()
                || error.is::<crate::deadline::DeadlinePassed>()
            {
                return Some("timed out");
            }
            next = error.source();
        }
        None
    }

    /// [`AuthError::Unavailable`] for `error`, logged once by `kind`.
    fn unavailable_because(
        kind: &'static str,
        error: Box<dyn std::error::Error + Send + Sync>,
    ) -> Self {
        // The kind only: a driver's message may name a host or a query.
        tracing::warn!(cause = kind, "auth: a store is unavailable; answering 503");
        Self::Unavailable(error)
    }
}

/// Whether a store call that failed with `error` may still have been
/// applied: its answer was lost, not its request (a timeout, a connection
/// that dropped once the request was out, a database connection lost
/// during the statement). A refused connection, a pool that gave none, a
/// database's own refusal (a constraint, `SQLITE_BUSY`): not applied.
#[cfg(feature = "jwt")]
pub(crate) fn may_have_applied(error: &(dyn std::error::Error + 'static)) -> bool {
    let lost = |io: &std::io::Error| {
        !matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionRefused
                | std::io::ErrorKind::NotFound
                | std::io::ErrorKind::PermissionDenied
                | std::io::ErrorKind::AddrNotAvailable
        )
    };
    let mut next = Some(error);
    while let Some(error) = next {
        #[cfg(any(feature = "sqlite", feature = "postgres"))]
        if let Some(error) = error.downcast_ref::<sqlx::Error>() {
            return match error {
                sqlx::Error::Io(io) => lost(io),
                sqlx::Error::Database(db) => db.code().is_some_and(|code| code.starts_with("08")),
                _ => false,
            };
        }
        #[cfg(feature = "redis")]
        if let Some(error) = error.downcast_ref::<redis::RedisError>() {
            return !error.is_connection_refusal()
                && (error.is_timeout() || error.is_connection_dropped() || error.is_io_error());
        }
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            return lost(io);
        }
        if error.is::<tokio::time::error::Elapsed>()
            || error.is::<crate::deadline::DeadlinePassed>()
        {
            return true;
        }
        next = error.source();
    }
    false
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn sqlx_unavailable(error: &sqlx::Error) -> Option<&'static str> {
    match error {
        sqlx::Error::Io(_) => Some("database I/O error"),
        sqlx::Error::Tls(_) => Some("database TLS error"),
        sqlx::Error::PoolTimedOut => Some("database pool timed out"),
        sqlx::Error::PoolClosed => Some("database pool closed"),
        sqlx::Error::Database(db) => {
            let code = db.code()?;
            (code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300"))
                .then_some("database unavailable")
        }
        _ => None,
    }
}

#[cfg(feature = "redis")]
fn redis_unavailable(error: &redis::RedisError) -> Option<&'static str> {
    use redis::{ErrorKind, ServerErrorKind};
    if error.is_timeout() {
        Some("redis timed out")
    } else if error.is_connection_refusal() {
        Some("redis refused the connection")
    } else if error.is_connection_dropped() || error.is_io_error() {
        Some("redis connection lost")
    } else if matches!(
        error.kind(),
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
        )
    ) {
        Some("redis not ready")
    } else {
        None
    }
}

impl From<crate::single_use::TokenStoreError> for AuthError {
    fn from(error: crate::single_use::TokenStoreError) -> Self {
        Self::internal(error)
    }
}

impl From<SessionError> for AuthError {
    fn from(error: SessionError) -> Self {
        match error {
            SessionError::Gone => Self::NotAuthenticated,
            // Listing or revoking by user on a store that cannot.
            SessionError::Store(crate::session::StoreError::Unsupported) => Self::Unsupported,
            other => Self::internal(other),
        }
    }
}

impl From<UserStoreError> for AuthError {
    fn from(error: UserStoreError) -> Self {
        match error {
            UserStoreError::LoginTaken => Self::LoginTaken,
            UserStoreError::Unsupported => Self::Unsupported,
            other => Self::internal(other),
        }
    }
}

impl From<ThrottleError> for AuthError {
    fn from(error: ThrottleError) -> Self {
        match error {
            // The shared throttle fails closed.
            ThrottleError::Unavailable(source) => {
                Self::unavailable_because("login throttle unavailable", source)
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: std::io::ErrorKind) -> std::io::Error {
        std::io::Error::from(kind)
    }

    /// 503 with `Retry-After`, and a message with no detail of the cause.
    fn assert_unavailable(error: &AuthError) {
        assert!(matches!(error, AuthError::Unavailable(_)), "{error:?}");
        assert_eq!(error.status(), 503);
        assert_eq!(error.retry_after_secs(), Some(1));
        assert_eq!(
            error.to_string(),
            "service temporarily unavailable, try again later"
        );
    }

    fn assert_internal(error: &AuthError) {
        assert!(matches!(error, AuthError::Internal(_)), "{error:?}");
        assert_eq!(error.status(), 500);
        assert_eq!(error.retry_after_secs(), None);
    }

    #[test]
    fn unreachable_stores_answer_503_and_real_failures_500() {
        assert_unavailable(&AuthError::internal(io(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert_unavailable(&AuthError::from(ThrottleError::Unavailable(
            "redis down".into(),
        )));
        // Wrapped in a store's error type, boxed: the chain is searched.
        assert_unavailable(&AuthError::from(
            crate::single_use::TokenStoreError::backend(io(std::io::ErrorKind::TimedOut)),
        ));
        assert_unavailable(&AuthError::from(UserStoreError::backend(io(
            std::io::ErrorKind::ConnectionReset,
        ))));
        assert_internal(&AuthError::from(
            crate::single_use::TokenStoreError::Corrupt,
        ));
        assert_internal(&AuthError::from(SessionError::Contended));
        assert_internal(&AuthError::internal("a bug"));
        assert!(matches!(
            AuthError::from(SessionError::Gone),
            AuthError::NotAuthenticated
        ));
    }

    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    #[test]
    fn sqlx_errors_are_classified_by_kind() {
        use crate::session::StoreError;
        let session = |e: sqlx::Error| AuthError::from(SessionError::Store(StoreError::Sql(e)));
        assert_unavailable(&session(sqlx::Error::PoolTimedOut));
        assert_unavailable(&session(sqlx::Error::PoolClosed));
        assert_unavailable(&session(sqlx::Error::Io(io(
            std::io::ErrorKind::ConnectionRefused,
        ))));
        assert_unavailable(&AuthError::from(UserStoreError::from(
            sqlx::Error::PoolTimedOut,
        )));
        #[cfg(feature = "jwt")]
        assert_unavailable(&AuthError::internal(
            crate::token::refresh::RefreshStoreError::from(sqlx::Error::PoolTimedOut),
        ));
        assert_internal(&session(sqlx::Error::RowNotFound));
        assert_internal(&session(sqlx::Error::Protocol("garbled".into())));
        assert_internal(&AuthError::from(UserStoreError::from(
            sqlx::Error::ColumnNotFound("x".into()),
        )));
    }

    #[cfg(feature = "redis")]
    #[test]
    fn redis_errors_are_classified_by_kind() {
        use crate::session::StoreError;
        let session =
            |e: redis::RedisError| AuthError::from(SessionError::Store(StoreError::Redis(e)));
        assert_unavailable(&session(io(std::io::ErrorKind::TimedOut).into()));
        assert_unavailable(&session(io(std::io::ErrorKind::ConnectionRefused).into()));
        assert_unavailable(&session(io(std::io::ErrorKind::BrokenPipe).into()));
        assert_internal(&session(redis::RedisError::from((
            redis::ErrorKind::Parse,
            "not a session",
        ))));
    }
}
