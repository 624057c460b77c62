//! Password flows: register, log in, step-up, change the password.

use super::{AuthError, Authenticator, Client, LoginOutcome, password_account};
use crate::event::{AuthEventKind, FailureReason};
use crate::password::{HashSlot, HashedPassword, Password, PasswordError, Verification};
use crate::session::{AuthState, Factor, NewSession, Session, SessionRecord};
use crate::user::{AnyUser, LoginName, NewUser, UserStoreError};

/// Attempts to make a login's session while the account's epoch moves.
const MAX_ENTER_ATTEMPTS: usize = 3;

impl Authenticator {
    /// Creates an account: policy check (with the reason on refusal), hash,
    /// [`UserStore::create`](crate::UserStore::create). Does not log in.
    pub async fn register(
        &self,
        login: &str,
        password: &Password,
        client: &Client,
    ) -> Result<AnyUser, AuthError> {
        let refuse = |reason| {
            self.failure(
                AuthEventKind::RegistrationRefused,
                None,
                client,
                Some(Factor::Password),
                reason,
            );
        };
        self.throttle_ip(client).await?;
        let Ok(login) = LoginName::parse(login) else {
            refuse(FailureReason::InvalidLogin);
            return Err(AuthError::InvalidLogin);
        };
        let context = self.policy_context(login.normalized());
        let password_hash = match self
            .inner
            .passwords
            .hash_new_password(password, &context)
            .await
        {
            Ok(hash) => hash,
            Err(PasswordError::Policy(violation)) => {
                refuse(FailureReason::Policy);
                return Err(AuthError::Policy(violation));
            }
            Err(other) => return Err(other.into()),
        };
        let new = NewUser {
            login,
            password_hash,
        };
        let user = match self.inner.users.create(new).await {
            Ok(user) => user,
            Err(UserStoreError::LoginTaken) => {
                refuse(FailureReason::LoginTaken);
                return Err(AuthError::LoginTaken);
            }
            Err(other) => return Err(other.into()),
        };
        self.success(
            AuthEventKind::Registered,
            Some(user.id()),
            Some(client.ip),
            Some(Factor::Password),
        );
        Ok(user)
    }

    /// Verifies `password` for `user` (or the dummy when `None`, so every
    /// path costs one hash); re-hashes on success when flagged. Returns the
    /// user's stored hash after this check (the re-hash, if written) when
    /// the password matched and was still the user's when the re-hash was
    /// written.
    async fn check_password(
        &self,
        slot: HashSlot,
        user: Option<&AnyUser>,
        password: &Password,
    ) -> Result<Option<String>, AuthError> {
        let passwords = &self.inner.passwords;
        let Some(user) = user else {
            return match slot.verify_dummy(password).await {
                // Oversized input: refused before hashing on every path.
                Ok(_) | Err(PasswordError::TooLong) => Ok(None),
                Err(other) => Err(other.into()),
            };
        };
        if user.password_hash().is_empty() {
            // A user without a password (`AuthUser::password_hash` is ""):
            // a wrong password like any other, at the same cost, and no
            // error log for every attempt.
            return match slot.verify_dummy(password).await {
                Ok(_) | Err(PasswordError::TooLong) => Ok(None),
                Err(other) => Err(other.into()),
            };
        }
        let stored = HashedPassword::new(user.password_hash());
        let verification = match slot.verify(password, &stored).await {
            Ok(verification) => verification,
            Err(PasswordError::TooLong) => Verification::Mismatch,
            Err(
                PasswordError::MalformedHash
                | PasswordError::UnsupportedAlgorithm
                | PasswordError::UnknownPepperKey,
            ) => {
                tracing::error!(
                    target: "auth_core::audit",
                    user_id = %user.id(),
                    "stored password hash cannot be verified (malformed, unsupported or unknown pepper)"
                );
                Verification::Mismatch
            }
            Err(other) => return Err(other.into()),
        };
        let Verification::Match { upgrade } = verification else {
            return Ok(None);
        };
        if upgrade.is_none() {
            return Ok(Some(stored.as_str().to_owned()));
        }
        let new = match passwords.hash(password).await {
            Ok(new) => new,
            // No slot for the upgrade now: a later login makes it.
            Err(PasswordError::Busy) => return Ok(Some(stored.as_str().to_owned())),
            Err(other) => return Err(other.into()),
        };
        // Only if the hash is still the one just verified: a concurrent
        // password change wins.
        let replaced = self
            .inner
            .users
            .set_password_hash(user.id(), stored.as_str(), new.as_str())
            .await?;
        if !replaced {
            // The hash changed while this one was checked: a password
            // change (then this password is no longer the user's), or a
            // concurrent login's re-hash of this same password. One more
            // derivation against the hash the store holds now tells which.
            let current = self.inner.users.find_by_id(user.id()).await?;
            let Some(current) = current.filter(|u| !u.is_disabled()) else {
                return Ok(None);
            };
            let now = HashedPassword::new(current.password_hash());
            return match passwords.verify(password, &now).await {
                Ok(Verification::Match { .. }) => Ok(Some(now.as_str().to_owned())),
                Ok(Verification::Mismatch) | Err(PasswordError::TooLong) => Ok(None),
                Err(PasswordError::Busy) => Err(AuthError::Busy),
                Err(other) => Err(other.into()),
            };
        }
        self.success(
            AuthEventKind::PasswordRehashed,
            Some(user.id()),
            None,
            Some(Factor::Password),
        );
        Ok(Some(new.as_str().to_owned()))
    }

    /// Logs in with a password. `current` is the session the request came
    /// with, if any: on success it is ended and a fresh session takes its
    /// place, so a planted or pre-login ID never becomes an authenticated
    /// one; on failure it is left alone.
    ///
    /// Bounded: a login that has not finished in 10 s (a store that stopped
    /// answering mid-query) answers [`AuthError::Unavailable`] (503).
    pub async fn login(
        &self,
        login: &str,
        password: &Password,
        client: &Client,
        current: Option<&Session>,
    ) -> Result<LoginOutcome, AuthError> {
        super::bounded(
            super::LOGIN_DEADLINE,
            self.login_unbounded(login, password, client, current),
        )
        .await
    }

    async fn login_unbounded(
        &self,
        login: &str,
        password: &Password,
        client: &Client,
        current: Option<&Session>,
    ) -> Result<LoginOutcome, AuthError> {
        // A malformed name is throttled and hashed like an unknown one.
        let name = LoginName::parse(login).ok();
        let user = match &name {
            Some(name) => self.inner.users.find_by_login(name).await?,
            None => None,
        };
        // The account found, whatever name found it (an alias, a looser
        // collation in the app's store): one budget per account. A name
        // that finds none is its own account.
        let account = match &user {
            Some(user) => password_account(user),
            None => name.as_ref().map_or("", LoginName::normalized).to_owned(),
        };
        // The hashing slot before the throttle counts: a login refused as
        // busy (503) has not counted against the account.
        let slot = self.inner.passwords.reserve().await?;
        self.throttle(&account, client, None, Factor::Password)
            .await?;
        let usable = user.as_ref().filter(|u| !u.is_disabled());
        let checked = self.check_password(slot, usable, password).await?;
        let (Some(user), Some(hash)) = (usable, checked) else {
            let reason = match (&name, &user) {
                (None, _) => FailureReason::InvalidLogin,
                (Some(_), None) => FailureReason::UnknownUser,
                (Some(_), Some(u)) if u.is_disabled() => FailureReason::Disabled,
                _ => FailureReason::WrongPassword,
            };
            self.failure(
                AuthEventKind::LoginFailed,
                user.as_ref().map(AnyUser::id),
                client,
                Some(Factor::Password),
                reason,
            );
            return Err(AuthError::InvalidCredentials);
        };
        // The password was right: the failures before it no longer count.
        // The device earns standing only from a complete sign-in (a second
        // factor may still be due, or the address be unverified), so the
        // password alone cannot take the account's device slots.
        self.throttle_partial_success(&account, client).await?;
        let outcome = self
            .sign_in(user, &hash, Factor::Password, current, client)
            .await?;
        if matches!(outcome, LoginOutcome::LoggedIn(_)) {
            self.remember_device(&account, client).await;
        }
        Ok(outcome)
    }

    /// A sign-in whose first factor (`first`) succeeded: the optional
    /// verified-address rule, then a fresh session (MFA-pending when the
    /// user has second factors), audited.
    pub(super) async fn sign_in(
        &self,
        user: &AnyUser,
        hash: &str,
        first: Factor,
        current: Option<&Session>,
        client: &Client,
    ) -> Result<LoginOutcome, AuthError> {
        self.check_verified(user, client).await?;
        let (session, methods) = self.enter_as(user, hash, first, current, client).await?;
        let kind = if methods.is_empty() {
            AuthEventKind::LoginSucceeded
        } else {
            AuthEventKind::LoginMfaRequired
        };
        self.success(kind, Some(user.id()), Some(client.ip), Some(first));
        Ok(if methods.is_empty() {
            LoginOutcome::LoggedIn(session)
        } else {
            LoginOutcome::MfaRequired { session, methods }
        })
    }

    /// The session of a login that proved the password: MFA-pending when
    /// the user has second factors, else authenticated.
    ///
    /// Sign out everywhere and factor changes raise the account's epoch
    /// *before* they end sessions. A session made while one of them ran,
    /// after its deletions, with factors read before it, is caught by the
    /// epoch having moved: it is ended and made again, so a login racing
    /// the confirmation of a second factor never keeps a password-only
    /// session.
    pub(super) async fn enter_as(
        &self,
        user: &AnyUser,
        hash: &str,
        first: Factor,
        mut current: Option<&Session>,
        client: &Client,
    ) -> Result<(Session, Vec<Factor>), AuthError> {
        let accounts = &self.inner.accounts;
        for _ in 0..MAX_ENTER_ATTEMPTS {
            let epoch = accounts.epoch(user.id()).await?;
            let methods = self.second_factors(user.id()).await?;
            let stamp = self
                .inner
                .stamps
                .of(user, hash)
                .await
                .map_err(AuthError::internal)?;
            let now = self.now();
            let pending_until =
                now.saturating_add(self.inner.sessions.config().mfa_pending_timeout());
            let user_id = user.id().to_owned();
            let pending = methods.clone();
            let session = self
                .enter(current.take(), client, move |record| {
                    record.user_id = Some(user_id.clone());
                    record.security_stamp = Some(stamp.to_string());
                    record.auth = if pending.is_empty() {
                        AuthState::Authenticated {
                            factors: vec![first],
                            at: now,
                        }
                    } else {
                        AuthState::MfaPending {
                            methods: pending.clone(),
                            first,
                            expires_at: pending_until,
                        }
                    };
                })
                .await?;
            if accounts.epoch(user.id()).await? == epoch {
                return Ok((session, methods));
            }
            self.inner.sessions.destroy(session).await?;
        }
        // The account changed under every attempt: let the client retry.
        Err(AuthError::Busy)
    }

    /// A fresh session in the new state. The request's session, if any, is
    /// ended: nothing of a possibly planted pre-login session (its data, its
    /// "remember me" flag, its creation time) carries into the login; the
    /// new one is persistent when the client asks ([`Client::remember`]).
    pub(super) async fn enter<F>(
        &self,
        current: Option<&Session>,
        client: &Client,
        change: F,
    ) -> Result<Session, AuthError>
    where
        F: FnOnce(&mut SessionRecord) + Send,
    {
        let sessions = &self.inner.sessions;
        if let Some(old) = current {
            sessions.destroy(old.clone()).await?;
        }
        // Stored in its final state from the first write: the store never
        // holds a login's session as anonymous.
        Ok(sessions
            .create_as(
                NewSession {
                    client: client.info(),
                    persistent: client.remember,
                },
                change,
            )
            .await?)
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
        let user = self.changing_user(session).await?;
        if !self.second_factors(user.id()).await?.is_empty() {
            // A password alone must not refresh a multi-factor login.
            return Err(AuthError::ReauthenticationRequired);
        }
        let hash = self
            .verify_current_password(&user, password, client, AuthEventKind::LoginFailed)
            .await?;
        self.refresh_authentication(session, &user, &hash, client, Factor::Password)
            .await
    }

    /// After a step-up: a new session ID, a fresh authentication time, and
    /// the stamp of `hash` (a re-hash during the check changed it).
    pub(super) async fn refresh_authentication(
        &self,
        session: &mut Session,
        user: &AnyUser,
        hash: &str,
        client: &Client,
        factor: Factor,
    ) -> Result<(), AuthError> {
        self.renew_after_proof(session, user, hash).await?;
        self.success(
            AuthEventKind::Reauthenticated,
            Some(user.id()),
            Some(client.ip),
            Some(factor),
        );
        Ok(())
    }

    /// Checks the current password of `user` (throttled like a login);
    /// returns the stored hash after the check.
    pub(super) async fn verify_current_password(
        &self,
        user: &AnyUser,
        password: &Password,
        client: &Client,
        failure: AuthEventKind,
    ) -> Result<String, AuthError> {
        let account = password_account(user);
        let slot = self.inner.passwords.reserve().await?;
        self.throttle(&account, client, Some(user.id()), Factor::Password)
            .await?;
        match self.check_password(slot, Some(user), password).await? {
            Some(hash) => {
                self.throttle_success(&account, client).await?;
                Ok(hash)
            }
            None => {
                self.failure(
                    failure,
                    Some(user.id()),
                    client,
                    Some(Factor::Password),
                    FailureReason::WrongPassword,
                );
                Err(AuthError::InvalidCredentials)
            }
        }
    }

    /// Changes the password: requires the current one (throttled), applies
    /// the policy, ends every other session of the user (the stamp follows
    /// the hash) and rotates the current session.
    pub async fn change_password(
        &self,
        session: &mut Session,
        current_password: &Password,
        new_password: &Password,
        client: &Client,
    ) -> Result<(), AuthError> {
        let user = self.changing_user(session).await?;
        // The compare-and-set below is against the hash this password was
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
            .hash_new_password(new_password, &self.policy_context(user.login()))
            .await?;
        let changed = self
            .inner
            .users
            .set_password_hash(user.id(), &verified, new_hash.as_str())
            .await?;
        if !changed {
            // The password changed concurrently; let the user retry.
            return Err(AuthError::InvalidCredentials);
        }
        let stamp = self
            .inner
            .stamps
            .of(&user, new_hash.as_str())
            .await
            .map_err(AuthError::internal)?;
        self.end_other_sessions(session, user.id(), stamp, |_| {})
            .await?;
        // Devices made known by whoever signed in with the old password
        // lose their standing; this one, which just proved it, keeps its.
        self.forget_devices(user.id(), Some(client)).await;
        self.success(
            AuthEventKind::PasswordChanged,
            Some(user.id()),
            Some(client.ip),
            Some(Factor::Password),
        );
        Ok(())
    }
}
