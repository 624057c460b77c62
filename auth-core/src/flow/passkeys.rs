//! Passkey flows (feature `passkeys`): add one to an account (behind the
//! same [`FactorProof`] as every factor change), list, rename and remove
//! them, a passkey as the second step after the password, and passwordless
//! sign-in with a discoverable credential.
//!
//! Every ceremony's state (its challenge) lives in the request's
//! server-side session: it is answered once (the answering step deletes it
//! first), within 5 minutes, and only from that session. Registration asks
//! for a discoverable credential with user verification; a passwordless
//! sign-in requires user verification (so it is multi-factor and
//! phishing-resistant: it satisfies `require_mfa`); the second step's
//! options only prefer it, but a passkey registered with it (every passkey
//! added here) must verify again (webauthn-rs holds a credential to its
//! registration's policy). Every use updates the stored signature counter and backup flags
//! (compare-and-set); a counter that goes backwards is refused and
//! audited. Failed assertions are throttled per client IP and per account,
//! like passwords.

use serde_json::Value;
use webauthn_rs::prelude::{
    Passkey, PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential, SecurityKey,
    SecurityKeyAuthentication, WebauthnError,
};

use super::{AuthError, Authenticator, Client, FactorProof, LoginOutcome, mfa_account};
use crate::event::{AuthEventKind, FailureReason};
use crate::mfa::RecoveryCodes;
use crate::passkey::service::{CEREMONY_TIMEOUT, Ceremony, user_handle};
use crate::passkey::{PasskeyStoreError, Passkeys, StoredPasskey};
use crate::session::{AuthState, Factor, Session};
use crate::user::AnyUser;

/// Session-data key of a registration in progress.
const REGISTRATION: &str = "auth.passkey.registration";
/// Session-data key of a sign-in (or second step) in progress.
const SIGN_IN: &str = "auth.passkey.sign_in";

/// The longest passkey name, in characters.
pub const MAX_PASSKEY_NAME: usize = 64;

/// The most passkeys one account keeps: each adds a row, an entry to
/// every registration's exclude list and a second step's allow list (kept
/// in the session while it runs), so their number is bounded. Checked when
/// a registration begins and again at its finish, not atomically with the
/// insert: ceremonies begun below the cap and finished side by side may
/// each pass, a few over it, each having cost its own proof.
pub const MAX_PASSKEYS: u64 = 25;

/// What a sign-in ceremony was started for. No `Debug`: the state holds
/// the challenge.
#[derive(serde::Serialize, serde::Deserialize)]
enum SignIn {
    /// Passwordless, with a discoverable credential.
    Discoverable(webauthn_rs::prelude::DiscoverableAuthentication),
    /// The second step of an MFA-pending session.
    SecondFactor(SecurityKeyAuthentication),
}

/// A passkey just added, and the account's recovery codes when this
/// passkey is its first second factor (show them once).
#[derive(Debug)]
pub struct PasskeyAdded {
    /// The stored passkey.
    pub passkey: StoredPasskey,
    /// New recovery codes, when the account had none.
    pub recovery_codes: Option<RecoveryCodes>,
}

impl From<PasskeyStoreError> for AuthError {
    fn from(error: PasskeyStoreError) -> Self {
        match error {
            PasskeyStoreError::CredentialTaken => AuthError::PasskeyTaken,
            other => AuthError::internal(other),
        }
    }
}

/// The credential of a stored passkey.
fn parse_passkey(stored: &StoredPasskey) -> Result<Passkey, AuthError> {
    serde_json::from_str(&stored.credential).map_err(AuthError::internal)
}

/// A passkey as a security key (the same credential; its ceremony's
/// options prefer user verification instead of requiring it, which the
/// credential's registration policy still requires).
fn as_security_key(passkey: &Passkey) -> Result<SecurityKey, AuthError> {
    serde_json::to_value(passkey)
        .and_then(serde_json::from_value)
        .map_err(AuthError::internal)
}

/// The backup flags of a credential (`backup_eligible`, `backup_state`).
fn backup_flags(passkey: &Passkey) -> (bool, bool) {
    let value = serde_json::to_value(passkey).unwrap_or(Value::Null);
    let flag = |name: &str| value["cred"][name].as_bool().unwrap_or(false);
    (flag("backup_eligible"), flag("backup_state"))
}

/// A name for a passkey: trimmed, 1 to 64 characters, no control
/// characters; blank gives "Passkey".
fn passkey_name(name: &str) -> Result<String, AuthError> {
    let name = name.trim();
    if name.is_empty() {
        return Ok("Passkey".to_owned());
    }
    if name.chars().count() > MAX_PASSKEY_NAME || name.chars().any(char::is_control) {
        return Err(AuthError::InvalidPasskeyName);
    }
    Ok(name.to_owned())
}

impl Authenticator {
    /// The passkey service ([`AuthError::PasskeysUnavailable`] without
    /// one).
    pub fn passkeys(&self) -> Result<&Passkeys, AuthError> {
        self.inner
            .passkeys
            .as_deref()
            .ok_or(AuthError::PasskeysUnavailable)
    }

    /// Whether the user has a passkey (false without a passkey service).
    pub(super) async fn has_passkey(&self, user_id: &str) -> Result<bool, AuthError> {
        match &self.inner.passkeys {
            Some(passkeys) => Ok(passkeys.store().count(user_id).await? > 0),
            None => Ok(false),
        }
    }

    /// Takes the ceremony stored under `key` out of the session (so it is
    /// answered once); `None` when there is none or it expired.
    ///
    /// What is taken is what the store's record held, not the caller's
    /// copy: the removal is a compare-and-set, re-applied to the fresh
    /// record on a conflict, so of two requests that loaded the session
    /// before either answered, only one gets the ceremony.
    async fn take_ceremony<T: serde::de::DeserializeOwned>(
        &self,
        session: &mut Session,
        key: &str,
    ) -> Result<Option<T>, AuthError> {
        if !session.record().data.contains_key(key) {
            return Ok(None);
        }
        let mut taken = None;
        self.inner
            .sessions
            .update(session, |record| taken = record.data.remove(key))
            .await?;
        Ok(taken
            .and_then(|value| serde_json::from_value::<Ceremony<T>>(value).ok())
            .filter(|c| c.expires_at > self.now())
            .map(|c| c.state))
    }

    async fn put_ceremony<T: serde::Serialize + Sync>(
        &self,
        session: &mut Session,
        key: &str,
        state: T,
    ) -> Result<(), AuthError> {
        let ceremony = Ceremony {
            state,
            expires_at: self.now().saturating_add(CEREMONY_TIMEOUT),
        };
        Ok(self.inner.sessions.insert(session, key, &ceremony).await?)
    }

    /// Starts adding a passkey, given the account owner's [`FactorProof`]
    /// (as every factor change): answers the `{"publicKey": ...}` options
    /// for `navigator.credentials.create` (a discoverable credential with
    /// user verification; the user's passkeys excluded). The proof is a
    /// re-authentication: the session gets a new ID.
    pub async fn begin_passkey_registration(
        &self,
        session: &mut Session,
        proof: &FactorProof,
        client: &Client,
    ) -> Result<Value, AuthError> {
        let passkeys = self.passkeys()?;
        let user = self.changing_user(session).await?;
        // Before the proof, so a refused request spends no recovery code.
        if passkeys.store().count(user.id()).await? >= MAX_PASSKEYS {
            return Err(AuthError::TooManyPasskeys);
        }
        let hash = self
            .check_proof(&user, proof, client, AuthEventKind::PasskeyAddFailed)
            .await?;
        self.renew_after_proof(session, &user, &hash).await?;
        let exclude = passkeys
            .store()
            .list(user.id())
            .await?
            .into_iter()
            .map(|p| p.credential_id)
            .collect();
        let (options, state) = passkeys
            .webauthn()
            .start_passkey_registration(
                user_handle(user.id()),
                user.login(),
                user.login(),
                Some(exclude),
            )
            .map_err(AuthError::internal)?;
        self.put_ceremony(session, REGISTRATION, state).await?;
        let mut options = serde_json::to_value(options).map_err(AuthError::internal)?;
        // webauthn-rs asks for a non-discoverable credential by default:
        // passwordless sign-in needs a discoverable one.
        options["publicKey"]["authenticatorSelection"]["residentKey"] = "required".into();
        options["publicKey"]["authenticatorSelection"]["requireResidentKey"] = true.into();
        Ok(options)
    }

    /// Finishes adding a passkey with the browser's answer (`credential`,
    /// the `PublicKeyCredential` as JSON) and the user's `name` for it. A
    /// factor change: every other session of the user ends and this one
    /// gets a new ID (the others end before the passkey is stored too, so a
    /// registration that fails after the answer was checked has still
    /// ended them). The first second factor of an account also gets
    /// recovery codes.
    pub async fn finish_passkey_registration(
        &self,
        session: &mut Session,
        name: &str,
        credential: &Value,
        client: &Client,
    ) -> Result<PasskeyAdded, AuthError> {
        let passkeys = self.passkeys()?;
        let user = self.changing_user(session).await?;
        let name = passkey_name(name)?;
        let Some(state) = self
            .take_ceremony::<PasskeyRegistration>(session, REGISTRATION)
            .await?
        else {
            return Err(AuthError::PasskeyCeremony);
        };
        let refuse = |reason| {
            self.failure(
                AuthEventKind::PasskeyAddFailed,
                Some(user.id()),
                client,
                Some(Factor::Passkey),
                reason,
            );
            AuthError::PasskeyRefused
        };
        let Ok(answer) = serde_json::from_value::<RegisterPublicKeyCredential>(credential.clone())
        else {
            return Err(refuse(FailureReason::PasskeyInvalid));
        };
        let passkey = passkeys
            .webauthn()
            .finish_passkey_registration(&answer, &state)
            .map_err(|_| refuse(FailureReason::PasskeyInvalid))?;
        // webauthn-rs takes ids of up to 4096 bytes; WebAuthn allows 1023,
        // and a passkey's handle (`StoredPasskey::id`) only names ids that
        // long: a longer one could be stored but never renamed or removed.
        if passkey.cred_id().len() > crate::passkey::MAX_CREDENTIAL_ID_BYTES {
            return Err(refuse(FailureReason::PasskeyInvalid));
        }
        let (backup_eligible, backed_up) = backup_flags(&passkey);
        let stored = StoredPasskey {
            credential_id: passkey.cred_id().to_vec(),
            user_id: user.id().to_owned(),
            name,
            credential: serde_json::to_string(&passkey).map_err(AuthError::internal)?,
            created_at: self.now(),
            last_used_at: None,
            backup_eligible,
            backed_up,
        };
        // Again at the end: ceremonies begun side by side each passed the
        // first check.
        if passkeys.store().count(user.id()).await? >= MAX_PASSKEYS {
            return Err(AuthError::TooManyPasskeys);
        }
        // The user's other sessions (and token sign-ins) end before the
        // passkey is stored, and again after, as when TOTP is confirmed: a
        // store failing half-way never leaves a session without the new
        // factor's proof beside it.
        let stamp = self.raise_epoch(&user).await?;
        self.end_other_sessions(session, user.id(), stamp, |_| {})
            .await?;
        passkeys.store().insert(&stored).await?;
        // Decided after the insert, on the codes themselves: an account left
        // without codes (its last factor was turned off meanwhile, taking
        // them) gets a set with this passkey. (A turn-off whose clearing
        // lands between this read and its own can still leave none: it is
        // two store calls, not one.)
        let recovery_codes = if self.inner.accounts.recovery_codes_left(user.id()).await? > 0 {
            None
        } else {
            let codes = RecoveryCodes::generate(user.id())?;
            self.inner
                .accounts
                .replace_recovery_codes(user.id(), codes.hashes())
                .await?;
            Some(codes)
        };
        let stamp = self.raise_epoch(&user).await?;
        // The registration proved the new passkey (with user
        // verification), as a first code confirms TOTP.
        self.end_other_sessions(session, user.id(), stamp, |record| {
            if let AuthState::Authenticated { factors, .. } = &mut record.auth
                && !factors.contains(&Factor::Passkey)
            {
                factors.push(Factor::Passkey);
            }
        })
        .await?;
        self.success(
            AuthEventKind::PasskeyAdded,
            Some(user.id()),
            Some(client.ip),
            Some(Factor::Passkey),
        );
        Ok(PasskeyAdded {
            passkey: stored,
            recovery_codes,
        })
    }

    /// The passkeys of the session's user, oldest first.
    pub async fn list_passkeys(&self, session: &Session) -> Result<Vec<StoredPasskey>, AuthError> {
        let user = session
            .authenticated_user()
            .ok_or(AuthError::NotAuthenticated)?;
        Ok(self.passkeys()?.store().list(user).await?)
    }

    /// Renames one of the user's passkeys (by its [`StoredPasskey::id`]);
    /// `false` when the user has no such passkey.
    pub async fn rename_passkey(
        &self,
        session: &Session,
        id: &str,
        name: &str,
    ) -> Result<bool, AuthError> {
        let passkeys = self.passkeys()?;
        let user = session
            .authenticated_user()
            .ok_or(AuthError::NotAuthenticated)?;
        let name = passkey_name(name)?;
        let Some(credential_id) = crate::passkey::parse_id(id) else {
            return Ok(false);
        };
        Ok(passkeys.store().rename(user, &credential_id, &name).await?)
    }

    /// Removes one of the user's passkeys, given the owner's
    /// [`FactorProof`] (a factor change): it no longer signs in, every
    /// other session of the user ends and this one gets a new ID. When no
    /// second factor is left, the recovery codes go too. `false` when the
    /// user has no such passkey, before the proof is checked (so no
    /// recovery code is spent on it).
    pub async fn remove_passkey(
        &self,
        session: &mut Session,
        id: &str,
        proof: &FactorProof,
        client: &Client,
    ) -> Result<bool, AuthError> {
        let passkeys = self.passkeys()?;
        let user = self.changing_user(session).await?;
        // The id first: a request for no passkey of this user spends no
        // proof (a recovery code, for an account whose only factor is
        // passkeys).
        let Some(credential_id) = crate::passkey::parse_id(id) else {
            return Ok(false);
        };
        match passkeys.store().find(&credential_id).await? {
            Some(stored) if stored.user_id == user.id() => {}
            _ => return Ok(false),
        }
        let hash = self
            .check_proof(&user, proof, client, AuthEventKind::PasskeyRemoveFailed)
            .await?;
        if !passkeys.store().delete(user.id(), &credential_id).await? {
            // Removed meanwhile (another request of the owner's).
            self.renew_after_proof(session, &user, &hash).await?;
            return Ok(false);
        }
        if self.second_factors(user.id()).await?.is_empty() {
            self.inner
                .accounts
                .replace_recovery_codes(user.id(), &[])
                .await?;
        }
        let stamp = self.raise_epoch_with(&user, &hash).await?;
        let now = self.now();
        self.end_other_sessions(session, user.id(), stamp, |record| {
            if let AuthState::Authenticated { at, .. } = &mut record.auth {
                *at = now;
            }
        })
        .await?;
        self.success(
            AuthEventKind::PasskeyRemoved,
            Some(user.id()),
            Some(client.ip),
            Some(Factor::Passkey),
        );
        Ok(true)
    }

    /// Starts a passkey sign-in on `session` (the request's session: an
    /// anonymous one for a passwordless sign-in, which the caller makes).
    /// Answers the `{"publicKey": ...}` options for
    /// `navigator.credentials.get`. On an MFA-pending session it
    /// challenges that user's passkeys (the second step); otherwise any
    /// discoverable credential of this site (the browser's passkey list or
    /// autofill). A `username` is accepted and not used: the answer is the
    /// same for every name, so it tells nobody whether an account exists.
    pub async fn begin_passkey_sign_in(
        &self,
        session: &mut Session,
        client: &Client,
    ) -> Result<Value, AuthError> {
        let passkeys = self.passkeys()?;
        let webauthn = passkeys.webauthn();
        super::mfa::refuse_token_login(session)?;
        let (options, state) = if matches!(session.auth_state(), AuthState::MfaPending { .. }) {
            let user_id = self.pending_user(session, Factor::Passkey, client).await?;
            let keys = passkeys
                .store()
                .list(&user_id)
                .await?
                .iter()
                .map(|stored| parse_passkey(stored).and_then(|p| as_security_key(&p)))
                .collect::<Result<Vec<_>, _>>()?;
            if keys.is_empty() {
                return Err(AuthError::NoPasskey);
            }
            let (options, state) = webauthn
                .start_securitykey_authentication(&keys)
                .map_err(AuthError::internal)?;
            let mut options = serde_json::to_value(options).map_err(AuthError::internal)?;
            // The security-key hint would steer browsers away from phones
            // and password managers.
            if let Some(public_key) = options["publicKey"].as_object_mut() {
                public_key.remove("hints");
            }
            (options, SignIn::SecondFactor(state))
        } else {
            let (options, state) = webauthn
                .start_discoverable_authentication()
                .map_err(AuthError::internal)?;
            let mut options = serde_json::to_value(options).map_err(AuthError::internal)?;
            // webauthn-rs always asks for conditional mediation (autofill);
            // the page decides: autofill on load, or a dialog for a button.
            if let Some(options) = options.as_object_mut() {
                options.remove("mediation");
            }
            (options, SignIn::Discoverable(state))
        };
        self.put_ceremony(session, SIGN_IN, state).await?;
        Ok(options)
    }

    /// Finishes a passkey sign-in started on `session` with the browser's
    /// assertion (`credential`, the `PublicKeyCredential` as JSON).
    ///
    /// * The second step: `session` becomes authenticated with its first
    ///   factor and `Passkey`, with a new ID.
    /// * Passwordless: a fresh session (the request's is ended), fully
    ///   authenticated with `Passkey` (user verification was required);
    ///   answers [`LoginOutcome::LoggedIn`].
    ///
    /// Errors: [`AuthError::PasskeyCeremony`] (nothing started, used,
    /// expired), [`AuthError::PasskeyRefused`] (unknown or removed
    /// credential, another user's, wrong origin or challenge, bad
    /// signature, counter gone backwards), [`AuthError::Throttled`].
    pub async fn finish_passkey_sign_in(
        &self,
        session: &mut Session,
        credential: &Value,
        client: &Client,
    ) -> Result<LoginOutcome, AuthError> {
        let passkeys = self.passkeys()?;
        let Some(ceremony) = self.take_ceremony::<SignIn>(session, SIGN_IN).await? else {
            return Err(AuthError::PasskeyCeremony);
        };
        let answer = serde_json::from_value::<PublicKeyCredential>(credential.clone()).ok();
        match ceremony {
            SignIn::SecondFactor(state) => {
                let user_id = self.pending_user(session, Factor::Passkey, client).await?;
                // As the TOTP step: a user disabled (or deleted) since the
                // password step does not complete it.
                if self.live_passkey_user(&user_id).await?.is_none() {
                    return Err(AuthError::NotAuthenticated);
                }
                self.throttle(
                    &mfa_account(&user_id),
                    client,
                    Some(&user_id),
                    Factor::Passkey,
                )
                .await?;
                let answer = answer.ok_or_else(|| {
                    self.passkey_failure(Some(&user_id), client, FailureReason::PasskeyInvalid)
                })?;
                let stored = self
                    .owned_credential(passkeys, answer.get_credential_id(), &user_id, client)
                    .await?;
                let mut passkey = parse_passkey(&stored)?;
                let result = passkeys
                    .webauthn()
                    .finish_securitykey_authentication(&answer, &state)
                    .map_err(|e| self.assertion_failure(&user_id, client, &e))?;
                // webauthn-rs checked the counter against the copy taken
                // when the ceremony began; the stored one may have moved on
                // since (the real authenticator used meanwhile), and a
                // clone must not pass in that window.
                let current = stored_counter(&passkey)?;
                if (result.counter() != 0 || current != 0) && result.counter() <= current {
                    return Err(self.assertion_failure(
                        &user_id,
                        client,
                        &WebauthnError::CredentialPossibleCompromise,
                    ));
                }
                passkey.update_credential(&result);
                self.record_passkey_use(passkeys, &stored, &passkey, result.backup_state())
                    .await?;
                self.throttle_success(&mfa_account(&user_id), client)
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
                            factors: vec![first, Factor::Passkey],
                            at: now,
                        };
                    })
                    .await?;
                // Complete: the device earns standing for the first factor
                // too.
                if let Some(account) = super::first_factor_account(first, &user_id) {
                    self.remember_device(&account, client).await;
                }
                self.success(
                    AuthEventKind::LoginSucceeded,
                    Some(&user_id),
                    Some(client.ip),
                    Some(Factor::Passkey),
                );
                Ok(LoginOutcome::LoggedIn(session.clone()))
            }
            SignIn::Discoverable(state) => {
                let Some(answer) = answer else {
                    self.throttle_ip(client).await?;
                    return Err(self.passkey_failure(None, client, FailureReason::PasskeyInvalid));
                };
                let credential_id = answer.get_credential_id().to_vec();
                let Some(stored) = passkeys.store().find(&credential_id).await? else {
                    self.throttle_ip(client).await?;
                    return Err(self.passkey_failure(
                        None,
                        client,
                        FailureReason::UnknownCredential,
                    ));
                };
                let user_id = stored.user_id.clone();
                self.throttle(
                    &mfa_account(&user_id),
                    client,
                    Some(&user_id),
                    Factor::Passkey,
                )
                .await?;
                // The handle the authenticator answers must be the stored
                // owner's: a credential belongs to one user only.
                let handle = passkeys
                    .webauthn()
                    .identify_discoverable_authentication(&answer)
                    .map(|(handle, _)| handle)
                    .ok();
                if handle != Some(user_handle(&user_id)) {
                    return Err(self.passkey_failure(
                        Some(&user_id),
                        client,
                        FailureReason::PasskeyInvalid,
                    ));
                }
                // The account's epoch before this passkey's use is recorded:
                // a removal of the passkey (or a sign out everywhere) that
                // lands after the record raises it before it ends sessions,
                // so the check after the session is made sees it, however
                // late in this sign-in the removal finished. (A removal
                // before the record fails the record.)
                let epoch = self.inner.accounts.epoch(&user_id).await?;
                let mut passkey = parse_passkey(&stored)?;
                let result = passkeys
                    .webauthn()
                    .finish_discoverable_authentication_v2(&answer, state, &passkey)
                    .map_err(|e| self.assertion_failure(&user_id, client, &e))?;
                passkey.update_credential(&result);
                self.record_passkey_use(passkeys, &stored, &passkey, result.backup_state())
                    .await?;
                // The device earns standing only once the sign-in is made
                // (not for a disabled user, an unverified address, a busy
                // answer).
                let account = mfa_account(&user_id);
                self.throttle_partial_success(&account, client).await?;
                let Some(user) = self.live_passkey_user(&user_id).await? else {
                    return Err(self.passkey_failure(
                        Some(&user_id),
                        client,
                        FailureReason::Disabled,
                    ));
                };
                let outcome = self
                    .sign_in_with_passkey(&user, session, client, epoch)
                    .await?;
                self.remember_device(&account, client).await;
                Ok(outcome)
            }
        }
    }

    /// The stored passkey `credential_id` when it is `user_id`'s; a
    /// refusal (audited) otherwise.
    async fn owned_credential(
        &self,
        passkeys: &Passkeys,
        credential_id: &[u8],
        user_id: &str,
        client: &Client,
    ) -> Result<StoredPasskey, AuthError> {
        match passkeys.store().find(credential_id).await? {
            Some(stored) if stored.user_id == user_id => Ok(stored),
            Some(_) | None => {
                Err(self.passkey_failure(Some(user_id), client, FailureReason::UnknownCredential))
            }
        }
    }

    /// Writes the credential's new counter and flags, compare-and-set on
    /// what this verification read: of two concurrent uses of one
    /// assertion, one wins.
    async fn record_passkey_use(
        &self,
        passkeys: &Passkeys,
        stored: &StoredPasskey,
        passkey: &Passkey,
        backed_up: bool,
    ) -> Result<(), AuthError> {
        let credential = serde_json::to_string(passkey).map_err(AuthError::internal)?;
        let recorded = passkeys
            .store()
            .record_use(
                &stored.credential_id,
                &stored.credential,
                &credential,
                backed_up,
                self.now(),
            )
            .await?;
        if recorded {
            Ok(())
        } else {
            Err(AuthError::PasskeyRefused)
        }
    }

    /// Audits a refused assertion; a counter that went backwards (a cloned
    /// authenticator?) gets an event of its own.
    fn assertion_failure(
        &self,
        user_id: &str,
        client: &Client,
        error: &WebauthnError,
    ) -> AuthError {
        let reason = match error {
            WebauthnError::CredentialPossibleCompromise => {
                self.failure(
                    AuthEventKind::PasskeyCounterRegressed,
                    Some(user_id),
                    client,
                    Some(Factor::Passkey),
                    FailureReason::CounterRegressed,
                );
                FailureReason::CounterRegressed
            }
            _ => FailureReason::PasskeyInvalid,
        };
        self.passkey_failure(Some(user_id), client, reason)
    }

    fn passkey_failure(
        &self,
        user_id: Option<&str>,
        client: &Client,
        reason: FailureReason,
    ) -> AuthError {
        self.failure(
            AuthEventKind::LoginFailed,
            user_id,
            client,
            Some(Factor::Passkey),
            reason,
        );
        AuthError::PasskeyRefused
    }

    async fn live_passkey_user(&self, user_id: &str) -> Result<Option<AnyUser>, AuthError> {
        Ok(self
            .inner
            .users
            .find_by_id(user_id)
            .await?
            .filter(|u| !u.is_disabled()))
    }

    /// A passwordless sign-in: a fresh session, authenticated with
    /// `Passkey`; the request's session ends.
    async fn sign_in_with_passkey(
        &self,
        user: &AnyUser,
        current: &Session,
        client: &Client,
        epoch: u64,
    ) -> Result<LoginOutcome, AuthError> {
        self.check_verified(user, client).await?;
        let stamp = self
            .inner
            .stamps
            .of(user, user.password_hash())
            .await
            .map_err(AuthError::internal)?;
        let now = self.now();
        let user_id = user.id().to_owned();
        // As `enter_as`: a sign out everywhere or a factor change (this
        // passkey's removal, say) raises the epoch before it ends sessions;
        // one that ran since `epoch` was read (before the passkey's use was
        // recorded) may have missed this session.
        let accounts = &self.inner.accounts;
        let session = self
            .enter(Some(current), client, move |record| {
                record.user_id = Some(user_id);
                record.security_stamp = Some(stamp.to_string());
                record.auth = AuthState::Authenticated {
                    factors: vec![Factor::Passkey],
                    at: now,
                };
            })
            .await?;
        if accounts.epoch(user.id()).await? != epoch {
            self.inner.sessions.destroy(session).await?;
            return Err(AuthError::Busy);
        }
        self.success(
            AuthEventKind::LoginSucceeded,
            Some(user.id()),
            Some(client.ip),
            Some(Factor::Passkey),
        );
        Ok(LoginOutcome::LoggedIn(session))
    }
}

/// The signature counter of a stored passkey (webauthn-rs keeps it private
/// and stores it as `cred.counter`); a record without one is an error, so
/// the check that uses it fails closed.
fn stored_counter(passkey: &Passkey) -> Result<u32, AuthError> {
    let value = serde_json::to_value(passkey).map_err(AuthError::internal)?;
    value["cred"]["counter"]
        .as_u64()
        .and_then(|counter| u32::try_from(counter).ok())
        .ok_or_else(|| AuthError::internal("a stored passkey without a signature counter"))
}
