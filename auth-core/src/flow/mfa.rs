//! Second factors: TOTP enrolment and removal, recovery codes and the
//! second login step. Every code attempt is throttled like a password
//! attempt (client IP, and the user's second-factor account); no code,
//! secret or hash reaches an error, event or log line.

use super::{AuthError, Authenticator, Client, mfa_account};
use crate::event::{AuthEventKind, FailureReason};
use crate::mfa::{
    Enrollment, MfaKeys, RecoveryCodes, TotpSecret, hash_recovery_code, normalize_recovery_code,
    otpauth_uri, qr_svg,
};
use crate::password::Password;
use crate::session::{AuthState, Factor, Session};
use crate::user::AnyUser;

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
        if accounts.record_totp_step(user_id, step).await? {
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
        self.inner.throttle.record_success(&account).await?;
        Ok(())
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
        match self.inner.users.find_by_id(&user_id).await? {
            Some(user) if !user.is_disabled() => {}
            _ => return Err(AuthError::NotAuthenticated),
        }
        let factors = self.inner.accounts.second_factors(&user_id).await?;
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
        if self.totp_confirmed(&user).await? {
            return Err(AuthError::TotpAlreadyEnabled);
        }
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
        let uri = otpauth_uri(
            &secret,
            self.inner.app_name.as_deref(),
            user.display_name(),
            &self.inner.totp,
        );
        let qr = qr_svg(secrecy::ExposeSecret::expose_secret(&uri))?;
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
        let account = mfa_account(user.id());
        self.throttle(&account, client, Some(user.id()), Factor::Totp)
            .await?;
        let accounts = &self.inner.accounts;
        let stored = match accounts.totp(user.id()).await? {
            Some(stored) if !stored.confirmed => stored,
            Some(_) => return Err(AuthError::TotpAlreadyEnabled),
            None => return Err(AuthError::TotpNotEnabled),
        };
        let secret = self.open_secret(user.id(), &stored.sealed_secret)?;
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
        self.inner.throttle.record_success(&account).await?;
        let stamp = self.raise_epoch(&user).await?;
        self.end_other_sessions(session, user.id(), stamp, |record| {
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
        if !self.totp_confirmed(&user).await? {
            return Err(AuthError::TotpNotEnabled);
        }
        let kind = CodeKind::of(code);
        self.prove_code(
            user.id(),
            kind,
            code,
            true,
            client,
            AuthEventKind::TotpDisableFailed,
        )
        .await?;
        self.inner.accounts.remove_totp(user.id()).await?;
        let stamp = self.raise_epoch(&user).await?;
        self.end_other_sessions(session, user.id(), stamp, |_| {})
            .await?;
        self.success(
            AuthEventKind::TotpDisabled,
            Some(user.id()),
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
        if !self.totp_confirmed(&user).await? {
            return Err(AuthError::TotpNotEnabled);
        }
        let codes = RecoveryCodes::generate(user.id())?;
        self.inner
            .accounts
            .replace_recovery_codes(user.id(), codes.hashes())
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
        let user = self.current_user(session).await?;
        if self
            .inner
            .accounts
            .second_factors(user.id())
            .await?
            .is_empty()
        {
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
