//! Token flows (feature `jwt`): a sign-in that answers tokens instead of a
//! cookie, the second step of such a sign-in, refresh, revocation, and
//! the check of a bearer access token.
//!
//! A token sign-in runs the cookie login unchanged (the same throttles,
//! the same answers for unknown users and wrong passwords, the same
//! second-factor rule). With a second factor, the MFA-pending session it
//! makes is not given to a cookie: its ID is the `mfa_token`, which only
//! [`Authenticator::token_mfa`] completes (the cookie login's second step
//! refuses it), once (a successful second step rotates it away) and within
//! the pending timeout (5 minutes). A
//! completed sign-in becomes a refresh-token family (see
//! [`token::refresh`](crate::token::refresh)) and its server-side session
//! is deleted.

use std::sync::Arc;

use subtle::ConstantTimeEq;

use super::{AuthError, Authenticator, Client, LoginOutcome};
use crate::event::{AuthEventKind, FailureReason};
use crate::password::Password;
use crate::session::{AuthState, Factor, NewSession, Session, SessionId, SessionRecord};
use crate::token::TokenService;
use crate::token::jwt::AccessClaims;
use crate::token::refresh::{Family, RefreshToken, Rotation};
use crate::token::service::{open_successor, seal_successor};
use crate::user::AnyUser;

/// The session-data key that marks an MFA-pending session of a token
/// sign-in: only [`Authenticator::token_mfa`] completes it.
const TOKEN_LOGIN: &str = "auth.token_login";

/// Whether `session` is the pending session of a token sign-in.
pub(super) fn is_token_login(session: &Session) -> bool {
    session.record().data.get(TOKEN_LOGIN) == Some(&serde_json::Value::Bool(true))
}

/// The tokens of a completed sign-in or refresh. `Debug` is redacted.
#[derive(Clone)]
pub struct TokenPair {
    /// The signed access token (`Authorization: Bearer ...`).
    pub access_token: String,
    /// Seconds the access token lives.
    pub expires_in: u64,
    /// The refresh token: single use, its successor comes with each
    /// refresh.
    pub refresh_token: String,
}

impl std::fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenPair")
            .field("access_token", &"[REDACTED]")
            .field("expires_in", &self.expires_in)
            .field("refresh_token", &"[REDACTED]")
            .finish()
    }
}

/// The answer to a token sign-in.
pub enum TokenOutcome {
    /// Signed in.
    Issued(TokenPair),
    /// The password was right and a second factor must follow: pass
    /// `mfa_token` with the code to [`Authenticator::token_mfa`].
    MfaRequired {
        /// Single use, 5 minutes.
        mfa_token: String,
        /// The second factors the user has.
        methods: Vec<Factor>,
    },
}

impl std::fmt::Debug for TokenOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Issued(pair) => f.debug_tuple("Issued").field(pair).finish(),
            Self::MfaRequired { methods, .. } => f
                .debug_struct("MfaRequired")
                .field("mfa_token", &"[REDACTED]")
                .field("methods", methods)
                .finish(),
        }
    }
}

/// The `amr` value of a factor: RFC 8176's where it has one (`pwd`,
/// `otp`), else the factor's own code.
pub fn amr(factor: Factor) -> &'static str {
    match factor {
        Factor::Password => "pwd",
        Factor::Totp => "otp",
        other => other.as_str(),
    }
}

/// The factor an `amr` value names, if it is one of ours.
fn factor_of(amr: &str) -> Option<Factor> {
    [
        Factor::Password,
        Factor::Totp,
        Factor::RecoveryCode,
        Factor::Passkey,
        Factor::EmailLink,
    ]
    .into_iter()
    .find(|f| self::amr(*f) == amr)
}

impl Authenticator {
    /// The token service ([`AuthError::TokensUnavailable`] without one).
    pub fn token_service(&self) -> Result<&Arc<TokenService>, AuthError> {
        self.inner
            .token_service
            .as_ref()
            .ok_or(AuthError::TokensUnavailable)
    }

    /// Signs in with a password for tokens: as [`login`](Self::login)
    /// (throttles, one answer for unknown users and wrong passwords), but
    /// the answer is a [`TokenPair`], or an `mfa_token` when the account
    /// has a second factor.
    pub async fn token_login(
        &self,
        login: &str,
        password: &Password,
        client: &Client,
    ) -> Result<TokenOutcome, AuthError> {
        self.token_service()?;
        match self.login(login, password, client, None).await? {
            LoginOutcome::LoggedIn(session) => Ok(TokenOutcome::Issued(
                self.issue_family(session, client).await?,
            )),
            LoginOutcome::MfaRequired {
                mut session,
                methods,
            } => {
                let sessions = &self.inner.sessions;
                if let Err(error) = sessions.insert(&mut session, TOKEN_LOGIN, &true).await {
                    // Not left for its 5 minutes: nobody has its token.
                    let _ = sessions.destroy(session).await;
                    return Err(error.into());
                }
                Ok(TokenOutcome::MfaRequired {
                    mfa_token: session.id().encode(),
                    methods,
                })
            }
        }
    }

    /// The second step of a token sign-in: `code` is a TOTP code (all
    /// digits, of the configured length) or a recovery code, checked and
    /// throttled as at a cookie login. A wrong code leaves the `mfa_token`
    /// usable until it expires; a right one uses it up.
    ///
    /// Errors: [`AuthError::NotAuthenticated`] for an unknown, used,
    /// expired or cookie-login token, and the errors of
    /// [`login_totp`](Self::login_totp).
    pub async fn token_mfa(
        &self,
        mfa_token: &str,
        code: &str,
        client: &Client,
    ) -> Result<TokenPair, AuthError> {
        self.token_service()?;
        let id = SessionId::parse(mfa_token).ok_or(AuthError::NotAuthenticated)?;
        let mut session = self
            .inner
            .sessions
            .load_id(id)
            .await?
            .ok_or(AuthError::NotAuthenticated)?;
        if !is_token_login(&session)
            || !matches!(session.auth_state(), AuthState::MfaPending { .. })
        {
            return Err(AuthError::NotAuthenticated);
        }
        self.token_second_step(&mut session, code, client).await?;
        self.issue_family(session, client).await
    }

    /// Turns the authenticated `session` of a token sign-in into a new
    /// refresh-token family and deletes the session.
    async fn issue_family(
        &self,
        session: Session,
        client: &Client,
    ) -> Result<TokenPair, AuthError> {
        let service = self.token_service()?;
        let (user_id, factors) = match (session.user_id(), session.auth_state()) {
            (Some(user), AuthState::Authenticated { factors, .. }) => {
                (user.to_owned(), factors.clone())
            }
            _ => return Err(AuthError::NotAuthenticated),
        };
        // The stamp the sign-in's session recorded (its password hash when
        // it began), with the account's epoch now: see `family_stamp`.
        let made = async {
            let session_stamp = session
                .record()
                .security_stamp
                .as_deref()
                .ok_or(AuthError::NotAuthenticated)?;
            let epoch = self.inner.accounts.epoch(&user_id).await?;
            let stamp = family_stamp(session_stamp, epoch);
            let amr = factors.iter().map(|f| amr(*f).to_owned()).collect();
            let (family, refresh) = service
                .new_family(&user_id, amr, stamp, self.now())
                .map_err(AuthError::internal)?;
            service
                .store()
                .create(&family, refresh.key())
                .await
                .map_err(AuthError::internal)?;
            // A sign out everywhere, a factor change or a password change
            // that ran while this sign-in was made may have listed the
            // user's families before this one existed. It ended the
            // sign-in's session (or changed the stamp that session
            // recorded), or raised the epoch after it was read: the family
            // ends now, rather than leaving its access tokens alive until
            // they expire. (On an error here the family stays, but nobody
            // holds its refresh token.)
            let still_live = self.load_session(session.id().clone()).await?.is_some();
            let moved = self.inner.accounts.epoch(&user_id).await? != epoch;
            Ok::<_, AuthError>((family, refresh, still_live && !moved))
        }
        .await;
        // The sign-in's session goes whatever happened: it was only the
        // carrier of the sign-in.
        let destroyed = self.inner.sessions.destroy(session).await;
        let (family, refresh, alive) = made?;
        destroyed?;
        if !alive {
            service
                .store()
                .revoke_family(&family.id)
                .await
                .map_err(AuthError::internal)?;
            return Err(AuthError::Busy);
        }
        let pair = self.pair(service, &family, &refresh)?;
        self.success(
            AuthEventKind::TokensIssued,
            Some(&user_id),
            Some(client.ip),
            factors.last().copied(),
        );
        Ok(pair)
    }

    fn pair(
        &self,
        service: &TokenService,
        family: &Family,
        refresh: &RefreshToken,
    ) -> Result<TokenPair, AuthError> {
        let (access_token, expires_in) = service
            .issue_access(family, self.now())
            .map_err(AuthError::internal)?;
        Ok(TokenPair {
            access_token,
            expires_in,
            refresh_token: refresh.encode(),
        })
    }

    /// Exchanges a refresh token for a new access token and a new refresh
    /// token; the presented one is spent. Presenting a spent token again
    /// revokes its whole family (an audit event,
    /// [`AuthEventKind::RefreshTokenReused`]), except, with a
    /// [reuse grace](crate::token::TokenConfigBuilder::reuse_grace), the
    /// one just replaced, which gets the same successor again.
    ///
    /// Errors: [`AuthError::InvalidGrant`] for a malformed, unknown,
    /// spent, revoked or expired token, or a user who is gone or disabled.
    pub async fn refresh_tokens(
        &self,
        refresh_token: &str,
        client: &Client,
    ) -> Result<TokenPair, AuthError> {
        let service = self.token_service()?;
        let presented = RefreshToken::parse(refresh_token).ok_or(AuthError::InvalidGrant)?;
        let next = presented.successor().map_err(AuthError::internal)?;
        // The successor is kept sealed only for a reuse grace: without one
        // nothing stored opens to a live token.
        let grace = service.config().reuse_grace();
        let sealed = match grace {
            Some(_) => seal_successor(&presented, &next),
            None => Vec::new(),
        };
        let now = self.now();
        let rotation = match service
            .store()
            .rotate(presented.key(), next.key(), &sealed, now, grace)
            .await
        {
            Ok(rotation) => rotation,
            Err(error) => {
                // The store may have rotated before it failed (a reply
                // lost to a timeout, a commit whose answer never came):
                // the client never gets the successor, so its retry must
                // not read as theft either. A call that never reached the
                // store (refused, no connection to be had) changed
                // nothing: the client's retry rotates as usual.
                if super::error::may_have_applied(&error) {
                    self.after_a_lost_successor(service, &presented.key().family_id(), grace)
                        .await;
                }
                return Err(AuthError::internal(error));
            }
        };
        let (family, successor) = match rotation {
            Rotation::Rotated(family) => (family, next),
            Rotation::Grace {
                family,
                sealed_successor,
            } => {
                let successor =
                    open_successor(&presented, &sealed_successor).ok_or(AuthError::InvalidGrant)?;
                (family, successor)
            }
            Rotation::Reused { family_id, user_id } => {
                service.forget_family(&family_id);
                self.failure(
                    AuthEventKind::RefreshTokenReused,
                    Some(&user_id),
                    client,
                    None,
                    FailureReason::TokenReused,
                );
                return Err(AuthError::InvalidGrant);
            }
            Rotation::Invalid => return Err(AuthError::InvalidGrant),
        };
        // The user must still be there, enabled, with the stamp the sign-in
        // recorded: a password change through any path (the app's own
        // included) ends the family at its next refresh, and so does a
        // raised epoch (sign out everywhere, a factor change,
        // `sign_out_user`) whose revocation missed the family.
        let current = async {
            Ok::<_, AuthError>(match self.live_user(&family.user_id).await? {
                Some(user) => Some(self.current_family_stamp(&user, &family.stamp).await?),
                None => None,
            })
        }
        .await;
        let current = match current {
            Ok(current) => current,
            Err(error) => {
                self.after_a_lost_successor(service, &family.id, grace)
                    .await;
                return Err(error);
            }
        };
        // In constant time, as the session stamp's check.
        let stamp_holds = current
            .as_deref()
            .is_some_and(|current| bool::from(current.as_bytes().ct_eq(family.stamp.as_bytes())));
        if !stamp_holds {
            if current.is_none() {
                // Gone or disabled: every family of the user ends, not
                // only this one.
                self.revoke_families(&family.user_id).await?;
            } else {
                service
                    .store()
                    .revoke_family(&family.id)
                    .await
                    .map_err(AuthError::internal)?;
            }
            service.forget_family(&family.id);
            return Err(AuthError::InvalidGrant);
        }
        let pair = match self.pair(service, &family, &successor) {
            Ok(pair) => pair,
            Err(error) => {
                self.after_a_lost_successor(service, &family.id, grace)
                    .await;
                return Err(error);
            }
        };
        self.success(
            AuthEventKind::TokensRefreshed,
            Some(&family.user_id),
            Some(client.ip),
            None,
        );
        Ok(pair)
    }

    /// A refresh failed after its rotation was, or may have been, stored:
    /// the client never gets the successor. Without a reuse grace its
    /// retry with the spent token would read as theft (a false
    /// `RefreshTokenReused`, the family revoked as stolen): the family
    /// ends here instead, plainly, and the retry is an unknown token.
    /// With a grace, the retry gets the same successor, so the family
    /// stays. Best effort: the store may be what failed. (`family_id` is
    /// the presented token's: only a holder of one of the family's tokens
    /// can name it.)
    async fn after_a_lost_successor(
        &self,
        service: &TokenService,
        family_id: &str,
        grace: Option<std::time::Duration>,
    ) {
        if grace.is_some() {
            return;
        }
        if let Err(error) = service.store().revoke_family(family_id).await {
            tracing::warn!(%error, "refresh: a family whose successor was lost stays until its retry reads as reuse");
        }
        service.forget_family(family_id);
    }

    /// Revokes the family of a refresh token (RFC 7009: `Ok` whether or
    /// not the token was known, so the answer tells nothing). An access
    /// token of ours (signature, issuer, audience and expiry checked) is
    /// taken too, as RFC 7009 allows: its sign-in ends the same way, so a
    /// client that sends the wrong one of its two tokens is not left
    /// signed in.
    pub async fn revoke_refresh_token(
        &self,
        refresh_token: &str,
        client: &Client,
    ) -> Result<(), AuthError> {
        let service = self.token_service()?;
        let revoked = match RefreshToken::parse(refresh_token) {
            Some(token) => service
                .store()
                .revoke_by_token(token.key())
                .await
                .map_err(AuthError::internal)?,
            None => match service.verify(refresh_token, self.now()) {
                Ok(verified) => {
                    let claims = &verified.claims;
                    service
                        .store()
                        .revoke_family(&claims.sid)
                        .await
                        .map_err(AuthError::internal)?
                        .then(|| (claims.sid.clone(), claims.sub.clone()))
                }
                Err(_) => None,
            },
        };
        if let Some((family_id, user_id)) = revoked {
            service.forget_family(&family_id);
            self.success(
                AuthEventKind::TokensRevoked,
                Some(&user_id),
                Some(client.ip),
                None,
            );
        }
        Ok(())
    }

    /// Ends the sign-in behind a bearer request: its family is revoked,
    /// so its refresh token and (with revocation checks) its access tokens
    /// stop working.
    pub async fn logout_bearer(
        &self,
        claims: &AccessClaims,
        client: &Client,
    ) -> Result<(), AuthError> {
        let service = self.token_service()?;
        service
            .store()
            .revoke_family(&claims.sid)
            .await
            .map_err(AuthError::internal)?;
        service.forget_family(&claims.sid);
        self.success(
            AuthEventKind::LoggedOut,
            Some(&claims.sub),
            Some(client.ip),
            None,
        );
        Ok(())
    }

    /// Checks a bearer access token: signature and claims (cached per
    /// token), the family when revocation checks are on, and the user (gone
    /// or disabled: refused), on every call. Answers the claims, the user,
    /// and a session for the guards that is never stored: it holds only
    /// what the claims say, so it is made once per token and shared by
    /// the token's requests (its `last_seen_at` is the first of them).
    pub async fn verify_bearer(
        &self,
        token: &str,
    ) -> Result<(Arc<AccessClaims>, Session, AnyUser), AuthError> {
        let service = self
            .inner
            .token_service
            .as_ref()
            .ok_or(AuthError::NotAuthenticated)?;
        let now = self.now();
        let verified = service
            .verify(token, now)
            .map_err(|_| AuthError::NotAuthenticated)?;
        let claims = &verified.claims;
        // The store reads, bounded (503 when a store stops answering).
        let user = super::bounded(super::READ_DEADLINE, async {
            if service.config().checks_revocation()
                && !service
                    .store()
                    .is_live(&claims.sid, now)
                    .await
                    .map_err(AuthError::internal)?
            {
                return Err(AuthError::NotAuthenticated);
            }
            self.live_user(&claims.sub)
                .await?
                .ok_or(AuthError::NotAuthenticated)
        })
        .await?;
        let session = verified
            .session
            .get_or_init(|| Session::detached(self.bearer_record(claims, None, now)))
            .clone();
        Ok((Arc::clone(claims), session, user))
    }

    /// The record of a session standing for a bearer token, seen at `now`.
    fn bearer_record(
        &self,
        claims: &AccessClaims,
        stamp: Option<String>,
        now: crate::clock::Timestamp,
    ) -> SessionRecord {
        let at = crate::clock::Timestamp::from_unix_millis(
            i64::try_from(claims.auth_time.saturating_mul(1000)).unwrap_or(i64::MAX),
        );
        let expires = crate::clock::Timestamp::from_unix_millis(
            i64::try_from(claims.exp.saturating_mul(1000)).unwrap_or(i64::MAX),
        );
        SessionRecord {
            user_id: Some(claims.sub.clone()),
            auth: AuthState::Authenticated {
                factors: claims.amr.iter().filter_map(|a| factor_of(a)).collect(),
                at,
            },
            created_at: at,
            last_seen_at: now,
            idle_expires_at: expires,
            absolute_expires_at: expires,
            persistent: false,
            ip: None,
            user_agent: None,
            security_stamp: stamp,
            data: std::collections::BTreeMap::new(),
            version: 0,
        }
    }

    /// A stored session for a bearer request whose flow changes the
    /// session (a password change, say): made from the token's claims with
    /// the user's current stamp; the caller deletes it when the flow is
    /// done. With a refresh store that reads families
    /// ([`RefreshStore::reads_families`](crate::token::refresh::RefreshStore::reads_families)),
    /// the token's family must first be live, its claims' user's, and hold
    /// the stamp the user has now: else [`AuthError::NotAuthenticated`].
    pub async fn bearer_session(
        &self,
        claims: &AccessClaims,
        client: &Client,
    ) -> Result<Session, AuthError> {
        // The token's sign-in must still be its user's, with the stamp it
        // recorded: a password changed through any path (or a raised epoch
        // whose revocation missed the family) stops the token changing the
        // account at once, not at its next refresh.
        let store = self.token_service()?.store();
        if store.reads_families() {
            let family = store
                .family(&claims.sid)
                .await
                .map_err(AuthError::internal)?
                .filter(|family| family.user_id == claims.sub && family.is_live_at(self.now()))
                .ok_or(AuthError::NotAuthenticated)?;
            let user = self
                .live_user(&claims.sub)
                .await?
                .ok_or(AuthError::NotAuthenticated)?;
            let current = self.current_family_stamp(&user, &family.stamp).await?;
            if !bool::from(current.as_bytes().ct_eq(family.stamp.as_bytes())) {
                return Err(AuthError::NotAuthenticated);
            }
        }
        let stamp = self
            .inner
            .stamps
            .load(&claims.sub)
            .await
            .map_err(AuthError::internal)?
            .map(|(stamp, _)| stamp.to_string())
            .ok_or(AuthError::NotAuthenticated)?;
        let template = self.bearer_record(claims, Some(stamp), self.now());
        Ok(self
            .inner
            .sessions
            .create_as(
                NewSession {
                    client: client.info(),
                    persistent: false,
                },
                move |record| {
                    record.user_id = template.user_id;
                    record.security_stamp = template.security_stamp;
                    record.auth = template.auth;
                },
            )
            .await?)
    }

    /// The stamp `user` would record now, in the form of a family's
    /// `recorded` stamp: the session stamp with the account's epoch, or
    /// without it for a family from before stamps carried the epoch (no
    /// `.`: session stamps are base64url), which keeps its password check
    /// until it ends rather than every client being signed out at the
    /// upgrade.
    async fn current_family_stamp(
        &self,
        user: &AnyUser,
        recorded: &str,
    ) -> Result<String, AuthError> {
        let stamp = self
            .inner
            .stamps
            .of(user, user.password_hash())
            .await
            .map_err(AuthError::internal)?;
        Ok(if recorded.contains('.') {
            let epoch = self.inner.accounts.epoch(user.id()).await?;
            family_stamp(&stamp, epoch)
        } else {
            stamp.to_string()
        })
    }

    /// Deletes a session made by [`bearer_session`](Self::bearer_session).
    pub async fn end_bearer_session(&self, session: Session) -> Result<(), AuthError> {
        Ok(self.inner.sessions.destroy(session).await?)
    }

    /// The user `id`, if it exists and is not disabled.
    async fn live_user(&self, id: &str) -> Result<Option<AnyUser>, AuthError> {
        Ok(self
            .inner
            .users
            .find_by_id(id)
            .await?
            .filter(|u| !u.is_disabled()))
    }

    /// Revokes every refresh-token family of `user_id` (with the sessions,
    /// at a password change, sign out everywhere, a factor change, a
    /// disabled user).
    pub(super) async fn revoke_families(&self, user_id: &str) -> Result<(), AuthError> {
        if let Some(service) = &self.inner.token_service {
            service
                .store()
                .revoke_user(user_id)
                .await
                .map_err(AuthError::internal)?;
            service.forget_user(user_id);
        }
        Ok(())
    }
}

/// A family's stamp: the session stamp of the password hash, and the
/// account's epoch. Every event that ends a user's families also raises
/// the epoch (or changes the hash) before it revokes them, so a family its
/// revocation missed (a store error halfway through) still ends at its
/// next refresh; one created while the revocation ran is caught when it is
/// made (`issue_family` checks after the create that the sign-in's session
/// still loads, stamp included, and that the epoch has not moved).
fn family_stamp(session_stamp: &str, epoch: u64) -> String {
    format!("{session_stamp}.{epoch}")
}
