//! Session flows: load a request's session with its user, log out, list
//! and revoke sessions, sign out everywhere, the route guards.

use std::sync::Arc;

use super::{AuthError, Authenticator, Client};
use crate::event::AuthEventKind;
use crate::session::{
    AuthState, Factor, NewSession, Session, SessionError, SessionHandle, SessionId, SessionInfo,
    SessionRecord, StoreError,
};
use crate::user::AnyUser;

impl Authenticator {
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
    /// user once for both the stamp check and the caller (the user is
    /// `None` for an anonymous session). A session whose user is gone,
    /// disabled or has another stamp is ended. What the web pipeline runs
    /// once per request.
    pub async fn load_session(
        &self,
        id: SessionId,
    ) -> Result<Option<(Session, Option<AnyUser>)>, AuthError> {
        let stamps = &self.inner.stamps;
        let fetch = |user_id: String| async move { stamps.load(&user_id).await };
        Ok(self.inner.sessions.load_id_with(id, fetch).await?)
    }

    /// The user of an authenticated session, as the store holds it now.
    /// The session must still carry the user's current stamp: a password
    /// changed (by any path) or an epoch raised since the session was
    /// loaded refuses it here too ([`AuthError::NotAuthenticated`]), so a
    /// flow that needs no password (sign out everywhere, confirming TOTP,
    /// adding a passkey) never re-stamps a session that had just ended. A
    /// bearer token's stand-in (from `verify_bearer`) records no stamp and
    /// is taken as it is: its token's family is its check; the flows that
    /// change an account refuse it.
    pub async fn current_user(&self, session: &Session) -> Result<AnyUser, AuthError> {
        let id = session
            .authenticated_user()
            .ok_or(AuthError::NotAuthenticated)?;
        let user = match self.inner.users.find_by_id(id).await? {
            Some(user) if !user.is_disabled() => user,
            _ => return Err(AuthError::NotAuthenticated),
        };
        // A bearer token's stand-in records no stamp: its token's family
        // is what ends it (checked with the token), and it never changes.
        if session.is_detached() {
            return Ok(user);
        }
        let current = self
            .inner
            .stamps
            .of(&user, user.password_hash())
            .await
            .map_err(AuthError::internal)?;
        let recorded = session.record().security_stamp.as_deref().unwrap_or("");
        if !constant_time_eq::constant_time_eq(current.as_bytes(), recorded.as_bytes()) {
            return Err(AuthError::NotAuthenticated);
        }
        Ok(user)
    }

    /// The user of a session a flow is about to change (its factors, its
    /// password, its other sessions): as [`current_user`](Self::current_user),
    /// and never a bearer token's stand-in that was not stored for the flow
    /// ([`AuthError::SessionRequired`], before anything changes).
    pub(super) async fn changing_user(&self, session: &Session) -> Result<AnyUser, AuthError> {
        if session.is_detached() {
            return Err(AuthError::SessionRequired);
        }
        self.current_user(session).await
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
                if factors.iter().any(Factor::is_strong) =>
            {
                Ok(())
            }
            _ => Err(AuthError::SecondFactorRequired),
        }
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

    /// A new anonymous session (e.g. to bind a form's CSRF token to), paid
    /// from the client IP's throttle budget so that page views cannot flood
    /// the store.
    pub async fn anonymous_session(&self, client: &Client) -> Result<Session, AuthError> {
        self.throttle_ip(client).await?;
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
    pub async fn list_sessions(&self, session: &Session) -> Result<Vec<SessionInfo>, AuthError> {
        let user = session
            .authenticated_user()
            .ok_or(AuthError::NotAuthenticated)?;
        Ok(self
            .inner
            .sessions
            .list_for_user(user, Some(session))
            .await?)
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

    /// Ends every other session of the session's user ("sign out
    /// everywhere else") and rotates the current one. Returns how many
    /// ended (0 on stores that cannot count them; those end through the
    /// account's epoch).
    pub async fn sign_out_everywhere(
        &self,
        session: &mut Session,
        client: &Client,
    ) -> Result<u64, AuthError> {
        let user = self.changing_user(session).await?;
        let stamp = self.raise_epoch(&user).await?;
        let ended = self
            .end_other_sessions(session, user.id(), stamp, |_| {})
            .await?;
        // Other devices lose their throttle standing too; this one keeps
        // its.
        self.forget_devices(user.id(), Some(client)).await;
        self.success(
            AuthEventKind::SignedOutEverywhere,
            Some(user.id()),
            Some(client.ip),
            None,
        );
        Ok(ended)
    }

    /// Ends every session of the user `user_id` (an administrator's "sign
    /// this user out"; also after disabling a user, whose sessions would
    /// otherwise end at their next request). Returns how many ended.
    pub async fn sign_out_user(&self, user_id: &str) -> Result<u64, AuthError> {
        self.inner.accounts.raise_epoch(user_id).await?;
        let ended = self
            .inner
            .sessions
            .destroy_all_for_user(user_id, None)
            .await;
        self.forget_devices(user_id, None).await;
        #[cfg(feature = "jwt")]
        self.revoke_families(user_id).await?;
        self.revoked(ended)
    }

    /// Raises the user's epoch and answers their new stamp: sessions that
    /// recorded the old one end even on stores that cannot revoke by user.
    pub(super) async fn raise_epoch(&self, user: &AnyUser) -> Result<Arc<str>, AuthError> {
        self.raise_epoch_with(user, user.password_hash()).await
    }

    /// As [`raise_epoch`](Self::raise_epoch), with the stamp of
    /// `password_hash`: the user's hash after a password check, which a
    /// re-hash during the check may have changed.
    pub(super) async fn raise_epoch_with(
        &self,
        user: &AnyUser,
        password_hash: &str,
    ) -> Result<Arc<str>, AuthError> {
        self.inner.accounts.raise_epoch(user.id()).await?;
        self.inner
            .stamps
            .of(user, password_hash)
            .await
            .map_err(AuthError::internal)
    }

    /// Ends every other session of `user_id`, and rotates `session` with
    /// the user's new `stamp` and `change` applied in the same write.
    pub(super) async fn end_other_sessions<F>(
        &self,
        session: &mut Session,
        user_id: &str,
        stamp: Arc<str>,
        mut change: F,
    ) -> Result<u64, AuthError>
    where
        F: FnMut(&mut SessionRecord) + Send,
    {
        let sessions = &self.inner.sessions;
        sessions
            .rotate_with(session, |record| {
                record.security_stamp = Some(stamp.to_string());
                change(record);
            })
            .await?;
        let ended = sessions.destroy_all_for_user(user_id, Some(session)).await;
        #[cfg(feature = "jwt")]
        self.revoke_families(user_id).await?;
        self.revoked(ended)
    }

    /// The outcome of a revocation by user. A store that cannot revoke by
    /// user relies on the epoch in the stamp, which the stamp holds only
    /// when the store says so (`SessionStore::revokes_by_user`): one that
    /// answers `Unsupported` without saying so would end nothing, so that
    /// is an error, never a silent success.
    fn revoked(&self, ended: Result<u64, SessionError>) -> Result<u64, AuthError> {
        match ended {
            Ok(ended) => Ok(ended),
            Err(SessionError::Store(StoreError::Unsupported)) if self.inner.stamps.with_epoch => {
                Ok(0)
            }
            Err(SessionError::Store(StoreError::Unsupported)) => Err(AuthError::internal(
                "the session store cannot revoke by user but its revokes_by_user() says it can: \
                 override it to return false",
            )),
            Err(other) => Err(other.into()),
        }
    }
}
