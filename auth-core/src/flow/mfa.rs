//! Second factors: TOTP enrolment and removal, recovery codes and the
//! second login step. Every code attempt is throttled like a password
//! attempt (client IP, and the user's second-factor account); no code,
//! secret or hash reaches an error, event or log line.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{AuthError, Authenticator, Client, mfa_account};
use crate::clock::Timestamp;
use crate::event::{AuthEventKind, FailureReason};
use crate::mfa::{
    Enrollment, MfaError, MfaKeys, RecoveryCodes, TotpSecret, hash_recovery_code,
    normalize_recovery_code, otpauth_uri, qr_svg,
};
use crate::password::Password;
use crate::session::{AuthState, Factor, Session, SessionRecord};
use crate::user::AnyUser;

/// The proof of the account owner that a change of second factors needs
/// (ASVS 5.0 7.5.1), given with the request itself: the current password
/// and, when the account already has a second factor, a current TOTP code
/// or an unused recovery code. A recent login is not enough. It is a full
/// re-authentication: checked like a login (the password against the
/// account's password throttle, the code against its second-factor
/// throttle, both also per client IP; every failure audited), a recovery
/// code given as proof is used up, and on success the session gets a new
/// ID and a fresh authentication time.
///
/// Taken by [`Authenticator::begin_totp_enrollment`],
/// [`Authenticator::disable_totp`] and
/// [`Authenticator::regenerate_recovery_codes`] (and their
/// [`RequestAuth`](crate::web::RequestAuth) wrappers). `Debug` shows
/// neither secret.
///
/// ```
/// use auth_core::Password;
/// use auth_core::flow::FactorProof;
///
/// // No second factor yet (starting a TOTP enrolment): the password.
/// let proof = FactorProof::password(Password::from("correct horse battery staple"));
/// assert!(!proof.has_code());
/// // TOTP on (turning it off, new recovery codes): the password and a code.
/// let proof = FactorProof::password(Password::from("correct horse battery staple"))
///     .with_code("123456");
/// assert!(proof.has_code());
/// // From a form whose code field may be left empty: blank is no code.
/// let proof = FactorProof::new(Password::from("correct horse battery staple"), Some(" ".into()));
/// assert!(!proof.has_code());
/// assert!(!format!("{proof:?}").contains("horse"));
/// ```
pub struct FactorProof {
    password: Password,
    code: Option<SecretString>,
}

impl FactorProof {
    /// The current password and an optional TOTP or recovery code, as a
    /// form or JSON body has them: an empty or blank code counts as none.
    pub fn new(password: Password, code: Option<String>) -> Self {
        let proof = Self::password(password);
        match code {
            Some(code) => proof.with_code(code),
            None => proof,
        }
    }

    /// The current password alone: enough while the account has no second
    /// factor.
    pub fn password(password: Password) -> Self {
        Self {
            password,
            code: None,
        }
    }

    /// Adds a current TOTP code or an unused recovery code (told apart by
    /// their shape); an empty or blank `code` counts as none.
    #[must_use]
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        let code = code.into();
        self.code = (!code.trim().is_empty()).then(|| SecretString::from(code));
        self
    }

    /// Whether a code is part of the proof.
    pub fn has_code(&self) -> bool {
        self.code.is_some()
    }

    fn code(&self) -> Option<&str> {
        self.code.as_ref().map(|code| code.expose_secret())
    }
}

impl fmt::Debug for FactorProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FactorProof")
            .field("password", &self.password)
            .field("code", &self.code.as_ref().map(|_| "[REDACTED]"))
            .finish()
    }
}

/// A token sign-in's pending session is completed only through
/// [`Authenticator::token_mfa`], never as a cookie's session.
pub(super) fn refuse_token_login(session: &Session) -> Result<(), AuthError> {
    #[cfg(feature = "jwt")]
    if super::tokens::is_token_login(session) {
        return Err(AuthError::NotAuthenticated);
    }
    let _ = session;
    Ok(())
}

/// A fresh authentication time for an authenticated session record.
fn refresh_time(record: &mut SessionRecord, now: Timestamp) {
    if let AuthState::Authenticated { at, .. } = &mut record.auth {
        *at = now;
    }
}

/// Which second factor a code is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CodeKind {
    Totp,
    Recovery,
}

impl CodeKind {
    /// A recovery code has 24 base32 characters (16 in earlier sets); a
    /// TOTP code 6 to 8 digits.
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

/// The session key of a TOTP enrolment begun in the session.
const TOTP_ENROLMENT: &str = "auth.totp.enrolment";

/// How long a TOTP enrolment may be confirmed after it began, in the
/// session that began it.
pub const TOTP_ENROLMENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// A TOTP enrolment begun in a session: the digest of the pending secret
/// it stored (sealed), and when it lapses.
#[derive(Serialize, Deserialize)]
struct BegunEnrolment {
    secret: String,
    until: Timestamp,
}

/// The hex SHA-256 of a sealed secret.
fn enrolment_digest(sealed: &str) -> String {
    crate::session::hex_digest(&Sha256::digest(sealed.as_bytes()).into())
}

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
        let accounts = &self.inner.accounts;
        let stored = match accounts.totp(user_id).await? {
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
        if !accounts.record_totp_step(user_id, step).await? {
            return Ok(Err(FailureReason::CodeReused));
        }
        // A secret sealed under an older MFA key moves to the current one,
        // so the old key can leave the ring once every user has been seen
        // (or `reseal_totp_secret` has run for them). Best effort.
        if let Err(error) = self.reseal(user_id, &stored.sealed_secret, &secret).await {
            tracing::warn!(%error, "auth: a TOTP secret stays under its older MFA key");
        }
        Ok(Ok(()))
    }

    /// Seals `secret` (stored as `sealed`) under the current MFA key if
    /// `sealed` is under an older one; whether it was re-sealed.
    async fn reseal(
        &self,
        user_id: &str,
        sealed: &str,
        secret: &TotpSecret,
    ) -> Result<bool, AuthError> {
        let keys = self.keys()?;
        if !keys.is_stale(sealed) {
            return Ok(false);
        }
        let resealed = keys.seal(user_id, secret)?;
        Ok(self
            .inner
            .accounts
            .reseal_totp(user_id, sealed, &resealed)
            .await?)
    }

    /// Moves user `user_id`'s confirmed TOTP secret to the current MFA key
    /// when an older key of the ring sealed it (a login with a code does
    /// this on its own): run it over every user after a key rotation, and
    /// the old key can leave the ring (until then, removing it fails those
    /// users' logins closed). Returns whether it re-sealed; `false` for a
    /// user without confirmed TOTP, one already under the current key, or
    /// one whose secret changed meanwhile (removed, enrolled again).
    ///
    /// Errors: [`AuthError::MfaUnavailable`] without [`MfaKeys`]; an
    /// internal error when the secret cannot be opened (its key is not in
    /// the ring), or when the account store cannot re-seal (one without
    /// [`AccountStore::reseal_totp`](crate::account::AccountStore::reseal_totp)):
    /// a run over every user without an error leaves no secret under an
    /// older key.
    pub async fn reseal_totp_secret(&self, user_id: &str) -> Result<bool, AuthError> {
        self.keys()?;
        let Some(stored) = self.inner.accounts.totp(user_id).await? else {
            return Ok(false);
        };
        if !stored.confirmed || !self.keys()?.is_stale(&stored.sealed_secret) {
            return Ok(false);
        }
        let secret = self.open_secret(user_id, &stored.sealed_secret)?;
        self.reseal(user_id, &stored.sealed_secret, &secret).await
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
            .accounts
            .consume_recovery_code(user_id, &hash)
            .await?
        {
            Ok(Ok(()))
        } else {
            Ok(Err(FailureReason::InvalidCode))
        }
    }

    /// The one sequence every code goes through: throttle (client IP and
    /// the user's second-factor account), check (only when `allowed`: the
    /// user has that factor), a failure event and [`AuthError::InvalidCode`]
    /// on refusal, the account's count cleared on success.
    async fn prove_code(
        &self,
        user_id: &str,
        kind: CodeKind,
        code: &str,
        allowed: bool,
        client: &Client,
        failure: AuthEventKind,
    ) -> Result<(), AuthError> {
        let account = mfa_account(user_id);
        self.throttle(&account, client, Some(user_id), kind.factor())
            .await?;
        let outcome = match (allowed, kind) {
            (false, _) => Err(FailureReason::NoSecondFactor),
            (true, CodeKind::Totp) => self.check_totp(user_id, code).await?,
            (true, CodeKind::Recovery) => self.check_recovery(user_id, code).await?,
        };
        if let Err(reason) = outcome {
            self.failure(failure, Some(user_id), client, Some(kind.factor()), reason);
            return Err(AuthError::InvalidCode);
        }
        self.throttle_success(&account, client).await?;
        Ok(())
    }

    /// Checks a [`FactorProof`] of `user`: without a code while the
    /// account has a second factor, [`AuthError::CodeRequired`] (nothing
    /// checked or counted); then the password (throttled like a login),
    /// then the code through [`prove_code`](Self::prove_code) (a recovery
    /// code is used up). A failure emits `failure`. Returns the user's
    /// stored hash after the check (a re-hash may have changed it).
    pub(super) async fn check_proof(
        &self,
        user: &AnyUser,
        proof: &FactorProof,
        client: &Client,
        failure: AuthEventKind,
    ) -> Result<String, AuthError> {
        let factors = self.second_factors(user.id()).await?;
        let code = match proof.code() {
            _ if factors.is_empty() => None,
            Some(code) => Some(code),
            None => return Err(AuthError::CodeRequired),
        };
        let hash = self
            .verify_current_password(user, &proof.password, client, failure)
            .await?;
        if let Some(code) = code {
            let kind = CodeKind::of(code);
            let allowed = match kind {
                CodeKind::Totp => factors.contains(&Factor::Totp),
                CodeKind::Recovery => true,
            };
            self.prove_code(user.id(), kind, code, allowed, client, failure)
                .await?;
        }
        Ok(hash)
    }

    /// After a proof that changes no factor: a new session ID, a fresh
    /// authentication time and the stamp of `hash`.
    pub(super) async fn renew_after_proof(
        &self,
        session: &mut Session,
        user: &AnyUser,
        hash: &str,
    ) -> Result<(), AuthError> {
        let stamp = self
            .inner
            .stamps
            .of(user, hash)
            .await
            .map_err(AuthError::internal)?;
        let now = self.now();
        self.inner
            .sessions
            .rotate_with(session, |record| {
                record.security_stamp = Some(stamp.to_string());
                refresh_time(record, now);
            })
            .await?;
        Ok(())
    }

    /// The user of an MFA-pending, unexpired session. An expired one is
    /// ended.
    pub(super) async fn pending_user(
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
                client,
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
        refuse_token_login(session)?;
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
        refuse_token_login(session)?;
        self.second_step(session, code, CodeKind::Recovery, client)
            .await
    }

    /// The second step of a token sign-in's pending session (see
    /// [`token_mfa`](Self::token_mfa)): a TOTP or a recovery code, told
    /// apart by its shape.
    #[cfg(feature = "jwt")]
    pub(super) async fn token_second_step(
        &self,
        session: &mut Session,
        code: &str,
        client: &Client,
    ) -> Result<(), AuthError> {
        self.second_step(session, code, CodeKind::of(code), client)
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
        match self.inner.users.find_by_id(&user_id).await? {
            Some(user) if !user.is_disabled() => {}
            _ => return Err(AuthError::NotAuthenticated),
        }
        let factors = self.second_factors(&user_id).await?;
        let allowed = match kind {
            CodeKind::Totp => factors.contains(&Factor::Totp),
            CodeKind::Recovery => !factors.is_empty(),
        };
        self.prove_code(
            &user_id,
            kind,
            code,
            allowed,
            client,
            AuthEventKind::LoginFailed,
        )
        .await?;
        let now = self.now();
        let first = match session.auth_state() {
            AuthState::MfaPending { first, .. } => *first,
            _ => Factor::Password,
        };
        self.inner
            .sessions
            .rotate_with(session, |record| {
                record.auth = AuthState::Authenticated {
                    factors: vec![first, factor],
                    at: now,
                };
            })
            .await?;
        // Complete: the device earns standing for the first factor too.
        if let Some(account) = super::first_factor_account(first, &user_id) {
            self.remember_device(&account, client).await;
        }
        self.success(
            AuthEventKind::LoginSucceeded,
            Some(&user_id),
            Some(client.ip),
            Some(factor),
        );
        Ok(())
    }

    /// Whether `user` has TOTP confirmed.
    async fn totp_confirmed(&self, user: &AnyUser) -> Result<bool, AuthError> {
        Ok(self
            .inner
            .accounts
            .totp(user.id())
            .await?
            .is_some_and(|t| t.confirmed))
    }

    /// Starts a TOTP enrolment, given the account owner's [`FactorProof`]
    /// (the password, and a code when the account already has a second
    /// factor; a recent login is not enough): a new 160-bit secret is
    /// stored encrypted as *pending*; it is not a second factor, and logins
    /// do not ask for it, until [`confirm_totp`](Self::confirm_totp).
    /// Starting again replaces a pending secret. Show the result once. The
    /// proof is a re-authentication: the session gets a new ID and a fresh
    /// authentication time.
    ///
    /// Errors: [`AuthError::NotAuthenticated`],
    /// [`AuthError::TotpAlreadyEnabled`] and [`AuthError::MfaUnavailable`]
    /// (no [`MfaKeys`]) before the proof is looked at;
    /// [`AuthError::CodeRequired`], [`AuthError::InvalidCredentials`] (wrong
    /// password), [`AuthError::InvalidCode`], [`AuthError::Throttled`],
    /// [`AuthError::Busy`].
    pub async fn begin_totp_enrollment(
        &self,
        session: &mut Session,
        proof: &FactorProof,
        client: &Client,
    ) -> Result<Enrollment, AuthError> {
        let user = self.changing_user(session).await?;
        let keys = self.keys()?;
        if self.totp_confirmed(&user).await? {
            return Err(AuthError::TotpAlreadyEnabled);
        }
        let hash = self
            .check_proof(&user, proof, client, AuthEventKind::TotpEnableFailed)
            .await?;
        self.renew_after_proof(session, &user, &hash).await?;
        let secret = TotpSecret::generate()?;
        let sealed = keys.seal(user.id(), &secret)?;
        if !self
            .inner
            .accounts
            .set_pending_totp(user.id(), &sealed)
            .await?
        {
            return Err(AuthError::TotpAlreadyEnabled);
        }
        // Only this session may confirm it, and only for a while: a secret
        // left on a shared screen is no way in from another session later.
        let begun = BegunEnrolment {
            secret: enrolment_digest(&sealed),
            until: self.now().saturating_add(TOTP_ENROLMENT_TIMEOUT),
        };
        self.inner
            .sessions
            .insert(session, TOTP_ENROLMENT, &begun)
            .await?;
        let uri = otpauth_uri(
            &secret,
            self.inner.app_name.as_deref(),
            user.display_name(),
            &self.inner.totp,
        );
        let qr = qr_svg(uri.expose_secret())?;
        self.success(
            AuthEventKind::TotpEnrollmentStarted,
            Some(user.id()),
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
    /// ends, and this one gets a new ID and the `Totp` factor. The other
    /// sessions end before the factor is stored too: a confirmation that
    /// fails after the code was checked (a store error, or one confirmed
    /// or replaced concurrently) has still ended them.
    ///
    /// Only the session that began the enrolment confirms it, within
    /// [`TOTP_ENROLMENT_TIMEOUT`] (15 minutes) of its start: a secret left
    /// behind on a shared screen is no way in from another session, nor
    /// later.
    ///
    /// Errors: [`AuthError::NotAuthenticated`], [`AuthError::Throttled`],
    /// [`AuthError::InvalidCode`], [`AuthError::TotpNotEnabled`] (nothing
    /// pending, or not begun in this session, or begun too long ago: begin
    /// again), [`AuthError::TotpAlreadyEnabled`].
    pub async fn confirm_totp(
        &self,
        session: &mut Session,
        code: &str,
        client: &Client,
    ) -> Result<RecoveryCodes, AuthError> {
        let user = self.changing_user(session).await?;
        self.keys()?;
        let account = mfa_account(user.id());
        self.throttle(&account, client, Some(user.id()), Factor::Totp)
            .await?;
        let accounts = &self.inner.accounts;
        let stored = match accounts.totp(user.id()).await? {
            Some(stored) if !stored.confirmed => stored,
            Some(_) => return Err(AuthError::TotpAlreadyEnabled),
            None => return Err(AuthError::TotpNotEnabled),
        };
        // Begun in this session, less than `TOTP_ENROLMENT_TIMEOUT` ago,
        // for the secret pending now.
        let begun_here = session
            .get::<BegunEnrolment>(TOTP_ENROLMENT)
            .ok()
            .flatten()
            .is_some_and(|begun| {
                begun.until > self.now()
                    && bool::from(
                        begun
                            .secret
                            .as_bytes()
                            .ct_eq(enrolment_digest(&stored.sealed_secret).as_bytes()),
                    )
            });
        if !begun_here {
            return Err(AuthError::TotpNotEnabled);
        }
        let secret = match self.keys()?.open(user.id(), &stored.sealed_secret) {
            Ok(secret) => secret,
            // Begun under a key that has left the ring since: begin again.
            Err(MfaError::UnknownKeyId) => return Err(AuthError::TotpNotEnabled),
            Err(_) => self.open_secret(user.id(), &stored.sealed_secret)?,
        };
        let step = self
            .inner
            .totp
            .verify(&secret, code, self.now().as_unix_secs())
            .and_then(|step| i64::try_from(step).ok());
        let Some(step) = step else {
            self.failure(
                AuthEventKind::TotpEnableFailed,
                Some(user.id()),
                client,
                Some(Factor::Totp),
                FailureReason::InvalidCode,
            );
            return Err(AuthError::InvalidCode);
        };
        let codes = RecoveryCodes::generate(user.id())?;
        // The user's other sessions (and token sign-ins) end before the
        // factor is stored, and again after: a store failing half-way then
        // never leaves a password-only session beside a second factor (a
        // failure here stores nothing; one after leaves only a session
        // made, with the password, in between).
        let stamp = self.raise_epoch(&user).await?;
        self.end_other_sessions(session, user.id(), stamp, |_| {})
            .await?;
        if !accounts
            .confirm_totp(user.id(), &stored.sealed_secret, step, codes.hashes())
            .await?
        {
            // Confirmed or replaced concurrently.
            return Err(match accounts.totp(user.id()).await? {
                Some(stored) if stored.confirmed => AuthError::TotpAlreadyEnabled,
                Some(_) => AuthError::InvalidCode,
                None => AuthError::TotpNotEnabled,
            });
        }
        // The code was right: its failures before it no longer count.
        self.throttle_success(&account, client).await?;
        let stamp = self.raise_epoch(&user).await?;
        self.end_other_sessions(session, user.id(), stamp, |record| {
            record.data.remove(TOTP_ENROLMENT);
            if let AuthState::Authenticated { factors, .. } = &mut record.auth
                && !factors.contains(&Factor::Totp)
            {
                factors.push(Factor::Totp);
            }
        })
        .await?;
        self.success(
            AuthEventKind::TotpEnabled,
            Some(user.id()),
            Some(client.ip),
            Some(Factor::Totp),
        );
        Ok(codes)
    }

    /// Turns TOTP off, given the account owner's [`FactorProof`]: the
    /// password and a current TOTP or recovery code (a recent login is not
    /// enough). The secret and the factor are removed, and the recovery
    /// codes too unless a passkey remains (it needs them as the proof of the
    /// next factor change); every other session of the user ends, and this
    /// one gets a new ID and a fresh authentication time.
    ///
    /// Errors: [`AuthError::NotAuthenticated`] and
    /// [`AuthError::TotpNotEnabled`] before the proof is looked at;
    /// [`AuthError::CodeRequired`], [`AuthError::InvalidCredentials`] (wrong
    /// password), [`AuthError::InvalidCode`], [`AuthError::Throttled`],
    /// [`AuthError::Busy`].
    pub async fn disable_totp(
        &self,
        session: &mut Session,
        proof: &FactorProof,
        client: &Client,
    ) -> Result<(), AuthError> {
        let user = self.changing_user(session).await?;
        if !self.totp_confirmed(&user).await? {
            return Err(AuthError::TotpNotEnabled);
        }
        let hash = self
            .check_proof(&user, proof, client, AuthEventKind::TotpDisableFailed)
            .await?;
        let accounts = &self.inner.accounts;
        accounts.remove_totp(user.id()).await?;
        // The recovery codes go with the last second factor only: an
        // account that keeps a passkey keeps its codes (the proof of its
        // next factor change).
        if self.second_factors(user.id()).await?.is_empty() {
            accounts.replace_recovery_codes(user.id(), &[]).await?;
        }
        let stamp = self.raise_epoch_with(&user, &hash).await?;
        let now = self.now();
        self.end_other_sessions(session, user.id(), stamp, |record| {
            refresh_time(record, now);
        })
        .await?;
        self.success(
            AuthEventKind::TotpDisabled,
            Some(user.id()),
            Some(client.ip),
            Some(Factor::Totp),
        );
        Ok(())
    }

    /// Replaces the user's recovery codes with 10 new ones (returned once,
    /// stored hashed), given the account owner's [`FactorProof`]: the
    /// password and a current TOTP or recovery code (a recent login is not
    /// enough). The old codes stop working, every other session of the
    /// user ends, and this one gets a new ID and a fresh authentication
    /// time.
    ///
    /// Errors: [`AuthError::NotAuthenticated`] and
    /// [`AuthError::TotpNotEnabled`] before the proof is looked at;
    /// [`AuthError::CodeRequired`], [`AuthError::InvalidCredentials`] (wrong
    /// password), [`AuthError::InvalidCode`], [`AuthError::Throttled`],
    /// [`AuthError::Busy`].
    pub async fn regenerate_recovery_codes(
        &self,
        session: &mut Session,
        proof: &FactorProof,
        client: &Client,
    ) -> Result<RecoveryCodes, AuthError> {
        let user = self.changing_user(session).await?;
        // Recovery codes back a second factor: TOTP or a passkey.
        if self.second_factors(user.id()).await?.is_empty() {
            return Err(AuthError::TotpNotEnabled);
        }
        let hash = self
            .check_proof(
                &user,
                proof,
                client,
                AuthEventKind::RecoveryCodesRegenerationFailed,
            )
            .await?;
        let codes = RecoveryCodes::generate(user.id())?;
        self.inner
            .accounts
            .replace_recovery_codes(user.id(), codes.hashes())
            .await?;
        let stamp = self.raise_epoch_with(&user, &hash).await?;
        let now = self.now();
        self.end_other_sessions(session, user.id(), stamp, |record| {
            refresh_time(record, now);
        })
        .await?;
        self.success(
            AuthEventKind::RecoveryCodesRegenerated,
            Some(user.id()),
            Some(client.ip),
            Some(Factor::RecoveryCode),
        );
        Ok(codes)
    }

    /// How many unused recovery codes the session's user has.
    pub async fn recovery_codes_left(&self, session: &Session) -> Result<u64, AuthError> {
        let user = self.current_user(session).await?;
        Ok(self.inner.accounts.recovery_codes_left(user.id()).await?)
    }

    /// Whether the session's user has TOTP enabled (confirmed).
    pub async fn totp_enabled(&self, session: &Session) -> Result<bool, AuthError> {
        let user = self.current_user(session).await?;
        self.totp_confirmed(&user).await
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
        let user = self.changing_user(session).await?;
        if self.second_factors(user.id()).await?.is_empty() {
            return self.reauthenticate(session, password, client).await;
        }
        let hash = self
            .verify_current_password(&user, password, client, AuthEventKind::LoginFailed)
            .await?;
        let kind = CodeKind::of(code);
        self.prove_code(
            user.id(),
            kind,
            code,
            true,
            client,
            AuthEventKind::LoginFailed,
        )
        .await?;
        self.refresh_authentication(session, &user, &hash, client, kind.factor())
            .await
    }
}
