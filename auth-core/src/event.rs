//! Audit events (ASVS 16.3.1): every authentication success and failure,
//! throttle, logout, password change and revocation is emitted through
//! `tracing` (target `auth_core::audit`) and an optional [`AuthEventHook`].
//! Events carry the user id, client IP, factor and outcome, never a secret.

use std::fmt;
use std::net::IpAddr;

use crate::clock::Timestamp;
use crate::session::Factor;

/// What happened.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthEventKind {
    /// An account was created.
    Registered,
    /// A registration was refused (policy, name taken).
    RegistrationRefused,
    /// A login completed (all factors).
    LoginSucceeded,
    /// The first factor succeeded; a second is required.
    LoginMfaRequired,
    /// A login attempt failed.
    LoginFailed,
    /// An attempt was refused by the throttle.
    Throttled,
    /// A session was ended by its user.
    LoggedOut,
    /// The password was changed.
    PasswordChanged,
    /// A password-change attempt failed.
    PasswordChangeFailed,
    /// All other sessions of a user were ended.
    SignedOutEverywhere,
    /// One session was revoked from the session list.
    SessionRevoked,
    /// The user proved their password again (step-up).
    Reauthenticated,
    /// A stored hash was upgraded after a successful login.
    PasswordRehashed,
    /// A TOTP enrolment began (a pending secret was stored).
    TotpEnrollmentStarted,
    /// A first valid code confirmed a TOTP enrolment: TOTP is on.
    TotpEnabled,
    /// A TOTP enrolment was refused: a wrong confirmation code, or a wrong
    /// password or code proving the account owner when it began.
    TotpEnableFailed,
    /// TOTP (and the recovery codes) were removed.
    TotpDisabled,
    /// An attempt to remove TOTP failed (wrong password or code).
    TotpDisableFailed,
    /// A new set of recovery codes replaced the old one.
    RecoveryCodesRegenerated,
    /// A request for new recovery codes was refused (wrong password or
    /// code).
    RecoveryCodesRegenerationFailed,
    /// A password reset was asked for; `success` when a link was mailed
    /// (the requester always gets the same answer).
    PasswordResetRequested,
    /// A password was set through a reset link.
    PasswordReset,
    /// A reset link was refused (unknown, expired, used or stale token).
    PasswordResetFailed,
    /// A verification link was mailed to a new address.
    EmailVerificationSent,
    /// An address was verified through its link.
    EmailVerified,
    /// A verification link was refused.
    EmailVerificationFailed,
    /// A change of address was refused (wrong password or code).
    EmailChangeFailed,
    /// The old address was told of a change of address.
    EmailChangeNotified,
    /// The account's verified address was told of a change to how it
    /// signs in (a new password, a second factor or passkey added or
    /// removed, new recovery codes); `success` when mailed.
    SecurityNoticeSent,
    /// A sign-in link was asked for; `success` when one was mailed (the
    /// requester always gets the same answer).
    MagicLinkRequested,
    /// A token sign-in completed: a refresh-token family began.
    TokensIssued,
    /// A refresh token was exchanged for new tokens.
    TokensRefreshed,
    /// A spent refresh token was presented again: its whole family was
    /// revoked (a stolen token, or a client that lost an answer).
    RefreshTokenReused,
    /// A refresh-token family was revoked by its client (RFC 7009).
    TokensRevoked,
    /// A passkey was added to an account.
    PasskeyAdded,
    /// Adding a passkey was refused (wrong proof, or a bad answer).
    PasskeyAddFailed,
    /// A passkey was removed.
    PasskeyRemoved,
    /// Removing a passkey was refused (wrong proof).
    PasskeyRemoveFailed,
    /// A passkey's signature counter went backwards: the assertion was
    /// refused; the authenticator may have been cloned.
    PasskeyCounterRegressed,
}

/// Why a failure happened. Kept for the audit trail only: callers always
/// get the same "invalid credentials" answer.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// No such login name.
    UnknownUser,
    /// The password was wrong.
    WrongPassword,
    /// The account is disabled.
    Disabled,
    /// The client IP's budget is spent.
    IpThrottled,
    /// The account is locked after consecutive failures.
    AccountLocked,
    /// The new password broke the policy.
    Policy,
    /// The login name is taken.
    LoginTaken,
    /// The login name is malformed.
    InvalidLogin,
    /// A spent refresh token was presented again.
    TokenReused,
    /// A passkey answer did not verify (origin, challenge, signature,
    /// user handle, malformed).
    PasskeyInvalid,
    /// A passkey answer named a credential that is not registered (or not
    /// the user's).
    UnknownCredential,
    /// A passkey's signature counter went backwards.
    CounterRegressed,
    /// A TOTP or recovery code was wrong.
    InvalidCode,
    /// A TOTP code of an already used step, or a used recovery code.
    CodeReused,
    /// The MFA-pending state expired before the second factor.
    MfaExpired,
    /// The user has no such second factor.
    NoSecondFactor,
    /// A link's token was unknown, expired, used or stale.
    InvalidToken,
    /// No address to send the mail to (none, or not verified).
    NoAddress,
    /// The mail could not be sent.
    MailFailed,
    /// A sign-in link of one account was opened in a browser signed in
    /// (or signing in) to another; refused.
    SignedInAsAnother,
}

/// One audit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthEvent {
    /// What happened.
    pub kind: AuthEventKind,
    /// Success or failure.
    pub success: bool,
    /// The user, when known.
    pub user_id: Option<String>,
    /// The client IP, when known.
    pub ip: Option<IpAddr>,
    /// The factor involved.
    pub factor: Option<Factor>,
    /// Why it failed (internal).
    pub reason: Option<FailureReason>,
    /// When.
    pub at: Timestamp,
}

/// Receives every [`AuthEvent`] (to notify a user, feed a SIEM...). Called
/// inline: do expensive work elsewhere (spawn or queue).
pub trait AuthEventHook: Send + Sync + fmt::Debug + 'static {
    /// One event.
    fn on_event(&self, event: &AuthEvent);
}

/// Logs an event through `tracing`.
pub(crate) fn trace(event: &AuthEvent) {
    let user = event.user_id.as_deref().unwrap_or("-");
    let ip = event.ip.map(|ip| ip.to_string());
    let ip = ip.as_deref().unwrap_or("-");
    if event.success {
        tracing::info!(
            target: "auth_core::audit",
            kind = ?event.kind,
            user_id = user,
            ip,
            factor = ?event.factor,
            "auth event"
        );
    } else {
        tracing::warn!(
            target: "auth_core::audit",
            kind = ?event.kind,
            user_id = user,
            ip,
            factor = ?event.factor,
            reason = ?event.reason,
            "auth event"
        );
    }
}
