//! The per-request half of the pipeline: [`RequestAuth`] holds one
//! request's client, cookies and (lazily loaded) session, runs every flow
//! that changes the session, and tells the adapter at the end which
//! `Set-Cookie` and `Cache-Control` the response needs. Every adapter's
//! `AuthSession` extractor is this type behind its framework's plumbing, so
//! the operations, their names and their effects are the same everywhere.

use std::borrow::Cow;
use std::net::IpAddr;

use futures_util::lock::{Mutex, MutexGuard};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Auth, Reply, SecurityHeaders};
use crate::flow::{AuthError, Authenticator, Client, LoginOutcome};
use crate::mfa::{Enrollment, RecoveryCodes};
use crate::password::Password;
use crate::session::{Factor, Session, SessionHandle, SessionId, SessionInfo};
use crate::user::{AnyUser, AuthUser};
use std::sync::Arc;

/// What the response must do with the cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CookieAction {
    None,
    Set,
    Remove,
}

#[derive(Debug)]
struct Slot {
    loaded: bool,
    session: Option<Session>,
    /// The session's user as read with it; dropped whenever the session
    /// changes in this request.
    user: Option<AnyUser>,
    action: CookieAction,
    /// A visitor cookie to set (a form token was issued to a visitor
    /// without one).
    new_visitor: Option<SessionId>,
    /// A form token was issued: the response must not be cached.
    token_issued: bool,
    /// A device cookie to set (a login succeeded on a browser without one).
    new_device: Option<SessionId>,
    /// The claims of the request's bearer token, once verified.
    #[cfg(feature = "jwt")]
    claims: Option<Arc<crate::token::jwt::AccessClaims>>,
}

impl Slot {
    fn set(&mut self, session: Option<Session>) {
        self.session = session;
        self.user = None;
    }
}

/// The challenge of a bearer request whose token was refused (RFC 6750
/// 3.1).
const BEARER_REFUSED: &str = r#"Bearer error="invalid_token""#;

/// A route protection, checked by [`RequestAuth::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// An authenticated session ([`Authenticator::require_login`]).
    Login,
    /// A login within the recent-authentication window
    /// ([`Authenticator::require_recent`]).
    RecentLogin,
    /// A completed second factor ([`Authenticator::require_mfa`]).
    Mfa,
}

/// A framework's response headers, as [`Finish::apply`] writes them: the
/// adapter implements the mechanics, `apply` decides what is replaced,
/// appended or left to the handler. Names come in lower case.
pub trait ResponseHeaders {
    /// Whether the response has a header `name`.
    fn contains(&self, name: &str) -> bool;

    /// Which of the `security` headers the response has already: bit `i`
    /// for the `i`-th in [`iter`](super::SecurityHeaders::iter) order (the
    /// first 64). By default one [`contains`](Self::contains) each; an
    /// adapter whose lookups cost more than one scan of the response's few
    /// headers makes it a scan, and one that converted the names once
    /// looks them up by index.
    fn present(&self, security: &super::SecurityHeaders) -> u64 {
        security
            .iter()
            .take(64)
            .enumerate()
            .filter(|(_, (name, _))| self.contains(name))
            .fold(0, |bits, (i, _)| bits | 1 << i)
    }

    /// Sets `name` to `value`, replacing any value the handler set.
    fn set(&mut self, name: &'static str, value: Cow<'static, str>);

    /// Adds a `name: value` line, after any the response has.
    fn append(&mut self, name: &'static str, value: String);

    /// Sets the `index`-th of the pipeline's
    /// [`SecurityHeaders`](super::SecurityHeaders) (in their
    /// [`iter`](super::SecurityHeaders::iter) order), `name`, to `value`.
    /// By default [`set`](Self::set); an adapter that converted those
    /// values once uses its own. (A `Cow` by reference: a fixed value is
    /// cloned as a pointer, and an adapter with its own values clones
    /// nothing.)
    #[allow(clippy::ptr_arg)]
    fn set_security(&mut self, index: usize, name: &'static str, value: &Cow<'static, str>) {
        let _ = index;
        self.set(name, value.clone());
    }

    /// The response's status code, if the adapter knows it: a bearer
    /// request's 401 gets its `WWW-Authenticate` challenge from it. By
    /// default `None` (no challenge is added).
    fn status(&self) -> Option<u16> {
        None
    }
}

/// The headers the response needs once the handler has run.
/// `Debug` never shows the cookie (it holds the session ID). Made by
/// [`RequestAuth::finish`] only (`non_exhaustive`: a field may be added).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Finish {
    /// A `Set-Cookie` value (new session ID, or removal).
    pub set_cookie: Option<String>,
    /// A second `Set-Cookie` value: a new visitor cookie (the binding of a
    /// form token shown to a visitor without a session).
    pub visitor_cookie: Option<String>,
    /// A third `Set-Cookie` value: a new device cookie (a login succeeded
    /// on a browser without one; see [`rate_limit`](crate::rate_limit)).
    pub device_cookie: Option<String>,
    /// Whether to add `Cache-Control: no-store`.
    pub no_store: bool,
    /// Browser security headers to add where the response does not set
    /// them itself.
    pub security: SecurityHeaders,
    /// For a bearer request: the `WWW-Authenticate` value a 401 answer
    /// must carry (RFC 6750, RFC 9110 15.5.2), added when the handler set
    /// none: `Bearer error="invalid_token"` when the request's token was
    /// checked and refused, else `Bearer`.
    pub bearer_challenge: Option<&'static str>,
}

impl Finish {
    /// Writes what the response needs into `headers`:
    /// `Cache-Control: no-store` when due, replacing the handler's value (a
    /// personal answer must not be cached); each `Set-Cookie`, after any the
    /// handler set; and each security header the handler did not set
    /// itself (the handler's own value wins); and on a bearer request's
    /// 401, the [`bearer_challenge`](Self::bearer_challenge) unless the
    /// handler set one. Every adapter ends a request with this, so the
    /// policy is written once.
    pub fn apply(mut self, headers: &mut impl ResponseHeaders) {
        if self.no_store {
            headers.set("cache-control", Cow::Borrowed("no-store"));
        }
        if let Some(challenge) = self.bearer_challenge
            && headers.status() == Some(401)
            && !headers.contains("www-authenticate")
        {
            headers.set("www-authenticate", Cow::Borrowed(challenge));
        }
        for cookie in self.take_cookies() {
            headers.append("set-cookie", cookie);
        }
        let present = headers.present(&self.security);
        for (i, (name, value)) in self.security.entries().iter().enumerate() {
            let set = if i < 64 {
                present & 1 << i != 0
            } else {
                headers.contains(name)
            };
            if !set {
                headers.set_security(i, name, value);
            }
        }
    }

    /// Takes every `Set-Cookie` value the response needs, in order.
    pub fn take_cookies(&mut self) -> impl Iterator<Item = String> + use<> {
        [
            self.set_cookie.take(),
            self.visitor_cookie.take(),
            self.device_cookie.take(),
        ]
        .into_iter()
        .flatten()
    }
}

impl std::fmt::Debug for Finish {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Finish")
            .field(
                "set_cookie",
                &self.set_cookie.as_ref().map(|_| "[REDACTED]"),
            )
            .field(
                "visitor_cookie",
                &self.visitor_cookie.as_ref().map(|_| "[REDACTED]"),
            )
            .field(
                "device_cookie",
                &self.device_cookie.as_ref().map(|_| "[REDACTED]"),
            )
            .field("no_store", &self.no_store)
            .field("security", &self.security)
            .field("bearer_challenge", &self.bearer_challenge)
            .finish()
    }
}

/// One request's auth state: built by the adapter's middleware
/// ([`Auth::begin`]), shared with the handler's extractors, and read back
/// by the middleware with [`RequestAuth::finish`].
///
/// The session is loaded on first use (one store read), so routes that
/// never ask for auth cost nothing. Operations on one request are
/// serialised by an async lock; it is never held across the handler.
pub struct RequestAuth {
    auth: Auth,
    /// The client without its device cookie (see [`RequestAuth::client`]).
    client: Client,
    /// The client with its device cookie, decoded when a flow first asks.
    full_client: std::sync::OnceLock<Client>,
    /// The raw `Cookie` header values: they hold the session ID, so
    /// `Debug` never prints them. Empty for a bearer request.
    cookies: Vec<String>,
    /// The bearer token of an `Authorization: Bearer` request (see
    /// [`Auth::begin`]); never printed.
    bearer: Option<Box<str>>,
    slot: Mutex<Slot>,
    /// The SQLite version probe of this request's latest step.
    probe: RequestProbe,
    /// Set by [`RequestAuth::remember_me`].
    remember: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for RequestAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestAuth")
            .field("client", self.client())
            .field(
                "cookies",
                &format_args!("[{} REDACTED]", self.cookies.len()),
            )
            .field("bearer", &self.bearer.as_ref().map(|_| "[REDACTED]"))
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Step 1 and 2 for one request: the cross-origin check, then the
    /// client. `headers` are the request's header lines as text (a
    /// malformed value must be passed on lossily, never dropped; HTTP/2
    /// adapters add the `:authority` as `host`: [`begin_raw`](Self::begin_raw)
    /// does both for adapters with byte values). `peer` is the socket
    /// address; without it the request is refused with a 500, rather than
    /// throttling every client as one.
    ///
    /// A request with an `Authorization: Bearer` header is a *bearer
    /// request*, whatever else it carries: the token alone decides who it
    /// is (an invalid token is no login, never a fall-back to a cookie), its
    /// cookies are not read, no cross-site check applies (a browser never
    /// adds that header to a cross-site request on its own), and its
    /// response sets no cookie.
    ///
    /// `Err` is the complete refusal to send.
    pub fn begin<'a>(
        &self,
        method: &'a str,
        headers: impl IntoIterator<Item = (&'a str, &'a str)> + Clone,
        peer: Option<IpAddr>,
    ) -> Result<RequestAuth, Reply> {
        if !self.host_allowed(headers.clone()) {
            let refusal = Reply::json(400, r#"{"error":"unknown host"}"#.to_owned());
            return Err(self.with_security_headers(refusal));
        }
        let bearer = bearer_token(headers.clone());
        if bearer.is_none()
            && let Err(rejection) = self.check_csrf(method, headers.clone())
        {
            let refusal = Reply::json(403, super::csrf_error_body(&rejection));
            return Err(self.with_security_headers(refusal));
        }
        let Some(peer) = peer else {
            tracing::error!(
                "auth: the framework gave no client address; see the adapter's docs \
                 on serving with connection info"
            );
            let refusal = Reply::error(&AuthError::Internal("no client address".into()));
            return Err(self.with_security_headers(refusal));
        };
        let client = self.base_client(peer, headers.clone());
        let cookies = if bearer.is_some() {
            Vec::new()
        } else {
            headers
                .into_iter()
                .filter(|(name, _)| name.eq_ignore_ascii_case("cookie"))
                .map(|(_, value)| value.to_owned())
                .collect()
        };
        Ok(RequestAuth {
            auth: self.clone(),
            client,
            full_client: std::sync::OnceLock::new(),
            cookies,
            bearer,
            slot: Mutex::new(Slot {
                loaded: false,
                session: None,
                user: None,
                action: CookieAction::None,
                new_visitor: None,
                token_issued: false,
                new_device: None,
                #[cfg(feature = "jwt")]
                claims: None,
            }),
            probe: RequestProbe::default(),
            remember: std::sync::atomic::AtomicBool::new(false),
        })
    }
}

/// Deletes a bearer request's stored stand-in session if the flow running
/// on it never finished (its future was dropped).
#[cfg(feature = "jwt")]
struct BearerSessionGuard {
    authenticator: Authenticator,
    session: Option<Session>,
}

#[cfg(feature = "jwt")]
impl Drop for BearerSessionGuard {
    fn drop(&mut self) {
        if let Some(session) = self.session.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let authenticator = self.authenticator.clone();
            runtime.spawn(async move {
                let _ = authenticator.end_bearer_session(session).await;
            });
        }
    }
}

/// The token of the first `Authorization` header with the `Bearer` scheme
/// (case-insensitive, RFC 9110), if any; other schemes are ignored.
fn bearer_token<'a>(headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<Box<str>> {
    headers
        .into_iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("authorization"))
        .find_map(|(_, value)| {
            let value = value.trim();
            let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| Box::from(token.trim()))
        })
}

impl Auth {
    /// Whether the request's `Host` is on the allow-list (if there is one).
    /// A request with two `Host` lines is not (RFC 9112 3.2: 400).
    fn host_allowed<'a>(&self, headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> bool {
        let hosts = &self.parts.hosts;
        if hosts.is_any() {
            return true;
        }
        let mut found = headers
            .into_iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("host"))
            .map(|(_, value)| value);
        let host = found.next();
        found.next().is_none() && hosts.allows(host)
    }

    /// `reply` with the security headers it does not set itself.
    fn with_security_headers(&self, mut reply: Reply) -> Reply {
        for (name, value) in self.security_headers().iter_static() {
            if !reply.headers.iter().any(|(n, _)| *n == name) {
                reply.headers.push((name, value));
            }
        }
        reply
    }

    /// [`begin`](Self::begin) for adapters whose header values are bytes.
    /// `headers` yields the request's header lines; it may be called more
    /// than once and must yield the same lines each time. When every value
    /// is UTF-8 they are borrowed as they are (checked once, kept on the
    /// stack for the pipeline's passes);
    /// otherwise every value is decoded lossily (bad bytes become U+FFFD),
    /// so the core sees, and refuses, a malformed entry rather than a
    /// missing header. `authority` is the request URI's authority: HTTP/2
    /// carries the host there, so it stands in for a missing `Host` header.
    pub fn begin_raw<'a, F, I>(
        &self,
        method: &'a str,
        headers: F,
        authority: Option<&'a str>,
        peer: Option<IpAddr>,
    ) -> Result<RequestAuth, Reply>
    where
        F: Fn() -> I,
        I: Iterator<Item = (&'a str, &'a [u8])>,
    {
        let mut text: HeaderLines<'a> = HeaderLines::new();
        let mut has_host = false;
        for (name, value) in headers() {
            let Ok(value) = std::str::from_utf8(value) else {
                return self.begin_lossy(method, headers(), authority, peer);
            };
            has_host |= name.eq_ignore_ascii_case("host");
            text.push((name, value));
        }
        if !has_host && let Some(authority) = authority {
            text.push(("host", authority));
        }
        self.begin(method, text.iter().copied(), peer)
    }

    /// [`begin_raw`](Self::begin_raw) when a value is not UTF-8.
    fn begin_lossy<'a>(
        &self,
        method: &'a str,
        headers: impl Iterator<Item = (&'a str, &'a [u8])>,
        authority: Option<&'a str>,
        peer: Option<IpAddr>,
    ) -> Result<RequestAuth, Reply> {
        let lossy: Vec<(&str, Cow<'_, str>)> = headers
            .map(|(name, value)| (name, String::from_utf8_lossy(value)))
            .collect();
        let host = if lossy
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("host"))
        {
            None
        } else {
            authority.map(|authority| ("host", authority))
        };
        let pairs = lossy
            .iter()
            .map(|(name, value)| (*name, value.as_ref()))
            .chain(host);
        self.begin(method, pairs, peer)
    }
}

/// A request's header lines as text: on the stack up to a typical
/// request's count, so the pipeline's passes over them neither allocate
/// nor decode again.
pub(crate) type HeaderLines<'a> = smallvec::SmallVec<[(&'a str, &'a str); 20]>;

/// The reads of one step of a request (the session and its user; a user's
/// second factors) run in [`RequestProbe::step`]: on a SQLite file, one
/// probe of its version for all of them, and none for a later step within
/// 100 ms while no statement of this process's stores has finished since
/// (see `sqlite_inline`).
#[cfg(feature = "sqlite")]
use crate::sqlite_inline::RequestProbe;

/// Without SQLite there is nothing to probe (a field, so that it is made
/// with `default()` like the real one).
#[cfg(not(feature = "sqlite"))]
#[derive(Debug, Default)]
struct RequestProbe(());

#[cfg(not(feature = "sqlite"))]
impl RequestProbe {
    /// The reads as they are.
    fn step<F: std::future::Future>(&self, reads: F) -> F {
        reads
    }
}

/// Refuses the app-data keys the toolkit keeps its own state under
/// (`auth.`): an app could otherwise overwrite a ceremony's state or a
/// TOTP enrolment's marker, by mistake or with a key a client chose.
fn reserved(key: &str) -> Result<(), AuthError> {
    if key.starts_with("auth.") {
        tracing::error!(
            key,
            "auth: session app-data keys starting with `auth.` are the toolkit's own"
        );
        return Err(AuthError::internal("reserved session key"));
    }
    Ok(())
}

impl RequestAuth {
    /// The pipeline this request runs through.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// The framework-free API under this handle (for what one request's
    /// handle does not do: an administrator signing a user out, say).
    pub fn authenticator(&self) -> &Authenticator {
        self.auth.authenticator()
    }

    /// The client (IP through trusted proxies, user agent, device cookie;
    /// the cookie is decoded on the first call, so requests that run no
    /// flow never pay for it).
    pub fn client(&self) -> &Client {
        self.full_client.get_or_init(|| {
            let cookies = self.auth.authenticator().cookies();
            Client {
                device: cookies.device_id(self.cookies.iter().map(String::as_str)),
                ..self.client.clone()
            }
        })
    }

    async fn slot(&self) -> Result<MutexGuard<'_, Slot>, AuthError> {
        let mut slot = self.slot.lock().await;
        if !slot.loaded {
            // Boxed, once per request: the loads are by far the largest
            // futures here, and inline they would make every method that
            // reads the state (each guard, each handler call) as large, to
            // be moved and boxed again by the frameworks. One box per kind,
            // each the size of its own load (a bearer request's is small).
            if self.bearer.is_some() {
                Box::pin(self.probe.step(self.load_bearer(&mut slot))).await?;
            } else {
                Box::pin(self.probe.step(self.load_cookie(&mut slot))).await?;
            }
            slot.loaded = true;
        }
        Ok(slot)
    }

    /// Loads the session named by the request's cookies, and its user.
    async fn load_cookie(&self, slot: &mut Slot) -> Result<(), AuthError> {
        let loaded = self
            .auth
            .load_session(self.cookies.iter().map(String::as_str))
            .await?;
        (slot.session, slot.user) = match loaded {
            Some((session, user)) => (Some(session), user),
            None => (None, None),
        };
        Ok(())
    }

    /// A bearer request's token: a session that stands for it (never
    /// stored) and its user when it is valid, else none.
    #[cfg(feature = "jwt")]
    async fn load_bearer(&self, slot: &mut Slot) -> Result<(), AuthError> {
        let token = self.bearer.as_deref().unwrap_or_default();
        match self.authenticator().verify_bearer(token).await {
            Ok((claims, session, user)) => {
                slot.session = Some(session);
                slot.user = Some(user);
                slot.claims = Some(claims);
                Ok(())
            }
            Err(AuthError::NotAuthenticated) => Ok(()),
            Err(other) => Err(other),
        }
    }

    /// Without the `jwt` feature no bearer token is valid.
    #[cfg(not(feature = "jwt"))]
    async fn load_bearer(&self, _slot: &mut Slot) -> Result<(), AuthError> {
        Ok(())
    }

    /// Signs in with a password for tokens (see
    /// [`Authenticator::token_login`]); no cookie is set.
    #[cfg(feature = "jwt")]
    pub async fn token_login(
        &self,
        login: &str,
        password: &Password,
    ) -> Result<crate::flow::TokenOutcome, AuthError> {
        self.authenticator()
            .token_login(login, password, self.client())
            .await
    }

    /// Completes a token sign-in with a TOTP or recovery code (see
    /// [`Authenticator::token_mfa`]).
    #[cfg(feature = "jwt")]
    pub async fn token_mfa(
        &self,
        mfa_token: &str,
        code: &str,
    ) -> Result<crate::flow::TokenPair, AuthError> {
        self.authenticator()
            .token_mfa(mfa_token, code, self.client())
            .await
    }

    /// Exchanges a refresh token (see [`Authenticator::refresh_tokens`]).
    #[cfg(feature = "jwt")]
    pub async fn refresh_tokens(
        &self,
        refresh_token: &str,
    ) -> Result<crate::flow::TokenPair, AuthError> {
        self.authenticator()
            .refresh_tokens(refresh_token, self.client())
            .await
    }

    /// Revokes a refresh token's family; `Ok` whether or not it was known
    /// (see [`Authenticator::revoke_refresh_token`]).
    #[cfg(feature = "jwt")]
    pub async fn revoke_refresh_token(&self, refresh_token: &str) -> Result<(), AuthError> {
        self.authenticator()
            .revoke_refresh_token(refresh_token, self.client())
            .await
    }

    /// The claims of the request's bearer token, when it is a valid one.
    #[cfg(feature = "jwt")]
    pub async fn bearer_claims(
        &self,
    ) -> Result<Option<Arc<crate::token::jwt::AccessClaims>>, AuthError> {
        Ok(self.slot().await?.claims.clone())
    }

    /// [`AuthError::SessionRequired`] for a bearer request: what would make
    /// or renew a cookie session (a login, a step-up, an anonymous session)
    /// has nowhere to go, since its answer sets no cookie.
    fn refuse_bearer(&self) -> Result<(), AuthError> {
        if self.is_bearer() {
            Err(AuthError::SessionRequired)
        } else {
            Ok(())
        }
    }

    /// Whether this is a bearer request (see [`Auth::begin`]).
    pub fn is_bearer(&self) -> bool {
        self.bearer.is_some()
    }

    /// The current session, if the request has a live one (authenticated,
    /// MFA-pending or anonymous).
    pub async fn session(&self) -> Result<Option<Session>, AuthError> {
        Ok(self.slot().await?.session.clone())
    }

    /// The authenticated user, as the toolkit holds it (shared; see
    /// [`current_user`](Self::current_user) for the app's own type).
    pub async fn user(&self) -> Result<AnyUser, AuthError> {
        let slot = self.slot().await?;
        let session = slot.session.as_ref().ok_or(AuthError::NotAuthenticated)?;
        let id = session
            .authenticated_user()
            .ok_or(AuthError::NotAuthenticated)?;
        // Read with the session (and checked against its stamp) already.
        if let Some(user) = slot.user.as_ref().filter(|u| u.id() == id) {
            return Ok(user.clone());
        }
        let session = session.clone();
        drop(slot);
        self.authenticator().current_user(&session).await
    }

    /// The authenticated user as the app's own type `U` (the
    /// [`UserStore`](crate::UserStore)'s `User`), shared with no copy
    /// ([`AuthError::NotAuthenticated`] otherwise, also for an MFA-pending
    /// session). Asking for another type than the store's is a programming
    /// error: [`AuthError::Internal`] (500), logged with both type names.
    pub async fn current_user<U: AuthUser>(&self) -> Result<Arc<U>, AuthError> {
        let wrong_type = |user: &AnyUser| {
            AuthError::internal(format!(
                "CurrentUser<{}> asked for, but the user store yields {}",
                std::any::type_name::<U>(),
                user.type_name()
            ))
        };
        {
            // The user read with the session: shared, not copied.
            let slot = self.slot().await?;
            let session = slot.session.as_ref().ok_or(AuthError::NotAuthenticated)?;
            let id = session
                .authenticated_user()
                .ok_or(AuthError::NotAuthenticated)?;
            if let Some(user) = slot.user.as_ref().filter(|u| u.id() == id) {
                return user.downcast::<U>().ok_or_else(|| wrong_type(user));
            }
        }
        let user = self.user().await?;
        user.downcast::<U>().ok_or_else(|| wrong_type(&user))
    }

    /// The authenticated user as `U`, or `None` when there is none. Store
    /// failures are still errors.
    pub async fn optional_user<U: AuthUser>(&self) -> Result<Option<Arc<U>>, AuthError> {
        match self.current_user::<U>().await {
            Ok(user) => Ok(Some(user)),
            Err(AuthError::NotAuthenticated) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// Creates an account (the policy's reason on refusal); does not log
    /// in. Needs a store with [`UserStore::create`](crate::UserStore::create).
    pub async fn register(&self, login: &str, password: &Password) -> Result<AnyUser, AuthError> {
        self.authenticator()
            .register(login, password, self.client())
            .await
    }

    /// Stores `address` as `user`'s email address, unverified, and mails a
    /// verification link to it (for a registration that takes an address;
    /// see [`Authenticator::set_email`]).
    pub async fn set_email(&self, user: &AnyUser, address: &str) -> Result<(), AuthError> {
        self.authenticator()
            .set_email(user, address, self.client())
            .await
    }

    /// Changes the user's address, given the owner's proof (see
    /// [`Authenticator::change_email`]); the session gets a new ID.
    pub async fn change_email(
        &self,
        address: &str,
        proof: &crate::flow::FactorProof,
    ) -> Result<(), AuthError> {
        self.with_session(|mut session| async move {
            let result = self
                .authenticator()
                .change_email(&mut session, proof, address, self.client())
                .await;
            (session, result)
        })
        .await
    }

    /// Confirms an address with the token from its verification link.
    pub async fn verify_email(&self, token: &str) -> Result<(), AuthError> {
        self.authenticator()
            .verify_email(token, self.client())
            .await
    }

    /// Asks for a password reset for a login name or verified address:
    /// `Ok` whether or not the account exists (the mail goes out of band;
    /// see [`Authenticator::request_password_reset`]).
    pub async fn request_password_reset(&self, login: &str) -> Result<(), AuthError> {
        self.authenticator()
            .request_password_reset(login, self.client())
            .await
    }

    /// Asks for a sign-in link for a login name or verified address: `Ok`
    /// whether or not the account exists (see
    /// [`Authenticator::request_magic_link`]).
    pub async fn request_magic_link(&self, login: &str) -> Result<(), AuthError> {
        self.authenticator()
            .request_magic_link(login, self.client())
            .await
    }

    /// The login name of the account an email verification link would give
    /// its address to, without using it, as
    /// [`Authenticator::verification_account`].
    pub async fn verification_account(&self, token: &str) -> Result<Option<String>, AuthError> {
        self.authenticator().verification_account(token).await
    }

    /// The login name of the account a magic link signs in to, without
    /// using it, as [`Authenticator::magic_link_account`].
    pub async fn magic_link_account(&self, token: &str) -> Result<Option<String>, AuthError> {
        self.authenticator().magic_link_account(token).await
    }

    /// Signs in with the token from a magic link, as
    /// [`login`](Self::login) does with a password (new session and cookie;
    /// a second factor, if the account has one, is still asked for).
    pub async fn finish_magic_link(&self, token: &str) -> Result<LoginOutcome, AuthError> {
        self.refuse_bearer()?;
        let mut slot = self.slot().await?;
        let (client, new_device) = self.sign_in_client()?;
        let outcome = self
            .authenticator()
            .finish_magic_link(token, &client, slot.session.as_ref())
            .await?;
        slot.set(Some(outcome.session().clone()));
        slot.action = CookieAction::Set;
        slot.new_device = new_device;
        Ok(outcome)
    }

    /// Sets a new password with the token from a reset link; every session
    /// of the account ends (see [`Authenticator::reset_password`]).
    pub async fn reset_password(
        &self,
        token: &str,
        new_password: &Password,
    ) -> Result<(), AuthError> {
        self.authenticator()
            .reset_password(token, new_password, self.client())
            .await
    }

    /// The authenticated user's id, from the session loaded (and checked)
    /// for this request: no store read.
    async fn user_id(&self) -> Result<String, AuthError> {
        let slot = self.slot().await?;
        slot.session
            .as_ref()
            .and_then(Session::authenticated_user)
            .map(str::to_owned)
            .ok_or(AuthError::NotAuthenticated)
    }

    /// Whether the user has a second factor: TOTP on, or (with passkeys
    /// configured) a passkey. On SQLite stores the reads check the file's
    /// version once between them, not once each (and not at all when the
    /// request's load just did, and nothing was written since).
    pub async fn has_second_factor(&self) -> Result<bool, AuthError> {
        self.probe
            .step(async {
                if self.totp_enabled().await? {
                    return Ok(true);
                }
                #[cfg(feature = "passkeys")]
                match self.list_passkeys().await {
                    Ok(passkeys) => return Ok(!passkeys.is_empty()),
                    Err(AuthError::PasskeysUnavailable) => {}
                    Err(error) => return Err(error),
                }
                Ok(false)
            })
            .await
    }

    /// Whether the user has TOTP on (one read of the account store).
    pub async fn totp_enabled(&self) -> Result<bool, AuthError> {
        // The request's state stays locked for the read, so the user id is
        // borrowed, not copied (a hot read: `/api/me`-style handlers).
        let slot = self.slot().await?;
        let id = slot
            .session
            .as_ref()
            .and_then(Session::authenticated_user)
            .ok_or(AuthError::NotAuthenticated)?;
        let accounts = self.authenticator().accounts();
        Ok(accounts.second_factors(id).await?.contains(&Factor::Totp))
    }

    /// The user's address as the toolkit keeps it (one read of the account
    /// store).
    pub async fn email(&self) -> Result<Option<crate::account::StoredEmail>, AuthError> {
        let id = self.user_id().await?;
        Ok(self.authenticator().accounts().email(&id).await?)
    }

    /// How many unused recovery codes the user has.
    pub async fn recovery_codes_left(&self) -> Result<u64, AuthError> {
        let id = self.user_id().await?;
        Ok(self
            .authenticator()
            .accounts()
            .recovery_codes_left(&id)
            .await?)
    }

    /// Runs a route protection against this request's session.
    pub async fn check(&self, guard: Guard) -> Result<(), AuthError> {
        let slot = self.slot().await?;
        let session = slot.session.as_ref();
        let authenticator = self.authenticator();
        match guard {
            Guard::Login => authenticator.require_login(session),
            Guard::Mfa => authenticator.require_mfa(session),
            Guard::RecentLogin => match session {
                Some(session) => authenticator.require_recent(session),
                None => Err(AuthError::NotAuthenticated),
            },
        }
    }

    /// Logs in with a password; the response carries the new cookie. On
    /// failure the request's session (if any) is kept.
    ///
    /// A browser without a device cookie gets one with a successful login:
    /// its later attempts on the account are not held by a lock that
    /// others' failures put on the account (see
    /// [`rate_limit`](crate::rate_limit)).
    pub async fn login(&self, login: &str, password: &Password) -> Result<LoginOutcome, AuthError> {
        self.refuse_bearer()?;
        let mut slot = self.slot().await?;
        let (client, new_device) = self.sign_in_client()?;
        let outcome = self
            .authenticator()
            .login(login, password, &client, slot.session.as_ref())
            .await?;
        slot.set(Some(outcome.session().clone()));
        slot.action = CookieAction::Set;
        slot.new_device = new_device;
        Ok(outcome)
    }

    /// "Remember me": a sign-in later in this request ([`login`](Self::login),
    /// [`finish_passkey_sign_in`](Self::finish_passkey_sign_in),
    /// [`finish_magic_link`](Self::finish_magic_link)) makes a persistent
    /// session ([`Client::remember`]): its cookie carries a `Max-Age` once
    /// the sign-in is complete (after the second factor, when one is
    /// needed), and it idles out after 7 days instead of 30 minutes. Off
    /// unless called; pass the user's choice, e.g. a checkbox. It counts
    /// at the first step: a second step (TOTP, a recovery code, a passkey
    /// completing a password login) keeps what the first step chose.
    ///
    /// ```no_run
    /// # async fn f(auth: &auth_core::web::RequestAuth, remember: bool) -> Result<(), auth_core::AuthError> {
    /// auth.remember_me(remember);
    /// let outcome = auth.login("alice", &auth_core::Password::from("correct horse battery staple")).await?;
    /// # Ok(()) }
    /// ```
    pub fn remember_me(&self, remember: bool) {
        self.remember
            .store(remember, std::sync::atomic::Ordering::Relaxed);
    }

    /// The client of a sign-in: a browser without a device cookie gets a
    /// new one (set with the response if the sign-in succeeds), and the
    /// choice of [`remember_me`](Self::remember_me) is carried.
    fn sign_in_client(&self) -> Result<(Cow<'_, Client>, Option<SessionId>), AuthError> {
        let remember = self.remember.load(std::sync::atomic::Ordering::Relaxed);
        if self.client().device.is_some() {
            if !remember {
                return Ok((Cow::Borrowed(self.client()), None));
            }
            let client = Client {
                remember,
                ..self.client().clone()
            };
            return Ok((Cow::Owned(client), None));
        }
        let device = SessionId::generate().map_err(AuthError::internal)?;
        let client = Client {
            device: Some(device.clone()),
            remember,
            ..self.client().clone()
        };
        Ok((Cow::Owned(client), Some(device)))
    }

    /// Ends the session server-side and removes the cookie. The cookie
    /// goes even when the store fails, reading the session included (the
    /// error is answered, 503): on a shared browser the session is then out
    /// of reach at once, and it ends server-side at its idle timeout. A
    /// bearer request ends its token's sign-in; one whose token is not
    /// valid has nothing to end (its cookies are not read), and gets
    /// [`AuthError::NotAuthenticated`].
    pub async fn logout(&self) -> Result<(), AuthError> {
        let mut slot = match self.slot().await {
            Ok(slot) => slot,
            Err(error) => {
                // Not even read (a store down): the cookie goes all the same.
                self.slot.lock().await.action = CookieAction::Remove;
                return Err(error);
            }
        };
        #[cfg(feature = "jwt")]
        if let Some(claims) = slot.claims.take() {
            // A bearer request: its sign-in's family ends.
            slot.set(None);
            return self
                .authenticator()
                .logout_bearer(&claims, self.client())
                .await;
        }
        if self.is_bearer() {
            return Err(AuthError::NotAuthenticated);
        }
        // The cookie goes whatever happens next.
        slot.action = CookieAction::Remove;
        let session = slot.session.take();
        slot.set(None);
        if let Some(session) = session {
            self.authenticator().logout(session, self.client()).await?;
        }
        Ok(())
    }

    /// Runs `f` on the current session (taken out of the slot and put
    /// back), setting the cookie when its ID changed.
    async fn with_session<T, F, Fut>(&self, f: F) -> Result<T, AuthError>
    where
        F: FnOnce(Session) -> Fut,
        Fut: Future<Output = (Session, Result<T, AuthError>)>,
    {
        let mut slot = self.slot().await?;
        #[cfg(feature = "jwt")]
        if let Some(claims) = slot.claims.clone() {
            // A bearer request: the flow runs on a stored session made from
            // the token for it, deleted afterwards.
            let authenticator = self.authenticator();
            let session = authenticator.bearer_session(&claims, self.client()).await?;
            // Deleted even if this future is dropped half-way (a client that
            // went away during the password hash).
            let mut guard = BearerSessionGuard {
                authenticator: authenticator.clone(),
                session: Some(session.clone()),
            };
            let (session, result) = f(session).await;
            guard.session = None;
            match authenticator.end_bearer_session(session).await {
                Ok(()) | Err(AuthError::NotAuthenticated) => {}
                // The flow's own answer stands; the stored stand-in ends by
                // its short expiry.
                Err(error) => {
                    tracing::warn!(%error, "auth: a bearer request's stand-in session was not deleted");
                }
            }
            // The user may have changed (password, factors).
            slot.user = None;
            return result;
        }
        let session = slot.session.take().ok_or(AuthError::NotAuthenticated)?;
        let (session, result) = f(session).await;
        if session.id_changed() {
            slot.action = CookieAction::Set;
        }
        // The operation may have changed the user (password, factors).
        slot.set(Some(session));
        result
    }

    /// Changes the password (current one required); other sessions end and
    /// this one gets a new ID.
    pub async fn change_password(
        &self,
        current: &Password,
        new: &Password,
    ) -> Result<(), AuthError> {
        self.with_session(|mut session| async move {
            let result = self
                .authenticator()
                .change_password(&mut session, current, new, self.client())
                .await;
            (session, result)
        })
        .await
    }

    /// Gives the session a new ID (after a privilege change); the old ID
    /// dies.
    pub async fn rotate(&self) -> Result<(), AuthError> {
        self.with_session(|mut session| async move {
            let result = self.authenticator().rotate(&mut session).await;
            (session, result)
        })
        .await
    }

    /// Ends every other session of the user; returns how many ended.
    pub async fn sign_out_everywhere(&self) -> Result<u64, AuthError> {
        self.with_session(|mut session| async move {
            let result = self
                .authenticator()
                .sign_out_everywhere(&mut session, self.client())
                .await;
            (session, result)
        })
        .await
    }

    /// The user's live sessions, the current one marked.
    pub async fn list_sessions(&self) -> Result<Vec<SessionInfo>, AuthError> {
        let session = self.session().await?.ok_or(AuthError::NotAuthenticated)?;
        self.authenticator().list_sessions(&session).await
    }

    /// Ends one of the user's sessions by handle; returns whether it
    /// existed. Revoking the current session also removes its cookie.
    pub async fn revoke(&self, handle: &SessionHandle) -> Result<bool, AuthError> {
        let mut slot = self.slot().await?;
        let session = slot.session.clone().ok_or(AuthError::NotAuthenticated)?;
        let found = self
            .authenticator()
            .revoke_session(&session, handle, self.client())
            .await?;
        if found && session.handle() == *handle {
            slot.set(None);
            slot.action = CookieAction::Remove;
        }
        Ok(found)
    }

    /// Step-up: proves the password again (and, for users with a second
    /// factor, a TOTP or recovery code), refreshing the authentication time
    /// that enrolment and other sensitive actions need; the session gets a
    /// new ID.
    pub async fn reauthenticate(
        &self,
        password: &Password,
        code: Option<&str>,
    ) -> Result<(), AuthError> {
        // A step-up renews a cookie session's authentication time; a bearer
        // token's is its sign-in's.
        self.refuse_bearer()?;
        self.with_session(|mut session| async move {
            let authenticator = self.authenticator();
            let result = match code {
                Some(code) => {
                    authenticator
                        .reauthenticate_with_code(&mut session, password, code, self.client())
                        .await
                }
                None => {
                    authenticator
                        .reauthenticate(&mut session, password, self.client())
                        .await
                }
            };
            (session, result)
        })
        .await
    }

    /// The second login step with a TOTP code, on the MFA-pending session
    /// the password step left; on success the session gets a new ID (and
    /// cookie) and is authenticated with both factors.
    pub async fn login_totp(&self, code: &str) -> Result<(), AuthError> {
        self.with_session(|mut session| async move {
            let result = self
                .authenticator()
                .login_totp(&mut session, code, self.client())
                .await;
            (session, result)
        })
        .await
    }

    /// The second login step with a recovery code (each works once); as
    /// [`login_totp`](Self::login_totp).
    pub async fn login_recovery(&self, code: &str) -> Result<(), AuthError> {
        self.with_session(|mut session| async move {
            let result = self
                .authenticator()
                .login_recovery(&mut session, code, self.client())
                .await;
            (session, result)
        })
        .await
    }

    /// Starts TOTP enrolment, given the account owner's
    /// [`FactorProof`](crate::flow::FactorProof) (the password, and a code
    /// when the account already has a second factor; a recent login is not
    /// enough): the secret, its `otpauth://` URI and QR code. Not active
    /// until confirmed. The session gets a new ID (and cookie). Needs a
    /// session (a bearer request gets [`AuthError::SessionRequired`]): the
    /// enrolment is confirmed in the session that began it.
    pub async fn begin_totp_enrollment(
        &self,
        proof: &crate::flow::FactorProof,
    ) -> Result<Enrollment, AuthError> {
        self.refuse_bearer()?;
        self.with_session(|mut session| async move {
            let result = self
                .authenticator()
                .begin_totp_enrollment(&mut session, proof, self.client())
                .await;
            (session, result)
        })
        .await
    }

    /// Confirms the pending enrolment with a first valid code: TOTP becomes
    /// active, the session gets a new ID, and the recovery codes are
    /// returned (show them once). In the session that began the enrolment,
    /// within 15 minutes; a bearer request gets
    /// [`AuthError::SessionRequired`].
    pub async fn confirm_totp(&self, code: &str) -> Result<RecoveryCodes, AuthError> {
        self.refuse_bearer()?;
        self.with_session(|mut session| async move {
            let result = self
                .authenticator()
                .confirm_totp(&mut session, code, self.client())
                .await;
            (session, result)
        })
        .await
    }

    /// Removes TOTP and the recovery codes, given the account owner's
    /// [`FactorProof`](crate::flow::FactorProof): the password and a
    /// current TOTP or recovery code. The user's other sessions end; this
    /// one gets a new ID (and cookie).
    pub async fn disable_totp(&self, proof: &crate::flow::FactorProof) -> Result<(), AuthError> {
        self.with_session(|mut session| async move {
            let result = self
                .authenticator()
                .disable_totp(&mut session, proof, self.client())
                .await;
            (session, result)
        })
        .await
    }

    /// Starts adding a passkey, given the owner's
    /// [`FactorProof`](crate::flow::FactorProof): the `{"publicKey": ...}`
    /// options for `navigator.credentials.create` (see
    /// [`Authenticator::begin_passkey_registration`]). The session gets a
    /// new ID (and cookie).
    #[cfg(feature = "passkeys")]
    pub async fn begin_passkey_registration(
        &self,
        proof: &crate::flow::FactorProof,
    ) -> Result<serde_json::Value, AuthError> {
        self.refuse_bearer()?;
        self.with_session(|mut session| async move {
            let result = self
                .authenticator()
                .begin_passkey_registration(&mut session, proof, self.client())
                .await;
            (session, result)
        })
        .await
    }

    /// Finishes adding a passkey with the browser's answer (see
    /// [`Authenticator::finish_passkey_registration`]): the user's other
    /// sessions end; this one gets a new ID (and cookie).
    #[cfg(feature = "passkeys")]
    pub async fn finish_passkey_registration(
        &self,
        name: &str,
        credential: &serde_json::Value,
    ) -> Result<crate::flow::PasskeyAdded, AuthError> {
        self.refuse_bearer()?;
        self.with_session(|mut session| async move {
            let result = self
                .authenticator()
                .finish_passkey_registration(&mut session, name, credential, self.client())
                .await;
            (session, result)
        })
        .await
    }

    /// The user's passkeys, oldest first.
    #[cfg(feature = "passkeys")]
    pub async fn list_passkeys(&self) -> Result<Vec<crate::passkey::StoredPasskey>, AuthError> {
        // Read under the request's lock: the session is borrowed, not copied.
        let slot = self.slot().await?;
        let session = slot.session.as_ref().ok_or(AuthError::NotAuthenticated)?;
        self.authenticator().list_passkeys(session).await
    }

    /// Renames one of the user's passkeys; `false` when there is none.
    #[cfg(feature = "passkeys")]
    pub async fn rename_passkey(&self, id: &str, name: &str) -> Result<bool, AuthError> {
        let session = self.session().await?.ok_or(AuthError::NotAuthenticated)?;
        self.authenticator()
            .rename_passkey(&session, id, name)
            .await
    }

    /// Removes one of the user's passkeys, given the owner's
    /// [`FactorProof`](crate::flow::FactorProof); `false` when there is
    /// none. The user's other sessions end; this one gets a new ID.
    #[cfg(feature = "passkeys")]
    pub async fn remove_passkey(
        &self,
        id: &str,
        proof: &crate::flow::FactorProof,
    ) -> Result<bool, AuthError> {
        self.with_session(|mut session| async move {
            let result = self
                .authenticator()
                .remove_passkey(&mut session, id, proof, self.client())
                .await;
            (session, result)
        })
        .await
    }

    /// Starts a passkey sign-in: on an MFA-pending session, its second
    /// step; otherwise passwordless (a visitor gets an anonymous session,
    /// and its cookie, to hold the challenge; paid from the IP's budget).
    /// The `{"publicKey": ...}` options for `navigator.credentials.get`.
    #[cfg(feature = "passkeys")]
    pub async fn begin_passkey_sign_in(&self) -> Result<serde_json::Value, AuthError> {
        // Without passkeys: the 501 before any session (or IP budget) is
        // spent on holding a challenge.
        self.authenticator().passkeys()?;
        let mut slot = self.slot().await?;
        // A signed-in session may hold the challenge too: the sign-in
        // replaces it with a new session.
        self.ensure_session(&mut slot).await?;
        let Some(session) = slot.session.as_mut() else {
            return Err(AuthError::NotAuthenticated);
        };
        // Compared as IDs: in constant time, and no copy of one as text.
        let id_before = session.id().clone();
        let options = self
            .authenticator()
            .begin_passkey_sign_in(session, self.client())
            .await?;
        if session.id_changed() || *session.id() != id_before {
            slot.action = CookieAction::Set;
        }
        Ok(options)
    }

    /// Finishes a passkey sign-in with the browser's assertion (see
    /// [`Authenticator::finish_passkey_sign_in`]): the response carries the
    /// new session's cookie, as a completed login.
    #[cfg(feature = "passkeys")]
    pub async fn finish_passkey_sign_in(
        &self,
        credential: &serde_json::Value,
    ) -> Result<LoginOutcome, AuthError> {
        self.refuse_bearer()?;
        let mut slot = self.slot().await?;
        let Some(mut session) = slot.session.take() else {
            return Err(AuthError::PasskeyCeremony);
        };
        let (client, new_device) = self.sign_in_client()?;
        let result = self
            .authenticator()
            .finish_passkey_sign_in(&mut session, credential, &client)
            .await;
        match result {
            Ok(outcome) => {
                slot.set(Some(outcome.session().clone()));
                slot.action = CookieAction::Set;
                slot.new_device = new_device;
                Ok(outcome)
            }
            Err(error) => {
                // The ceremony was taken out of the session: keep the
                // (unchanged otherwise) session for a new attempt.
                slot.set(Some(session));
                Err(error)
            }
        }
    }

    /// Replaces the recovery codes with a new set (show it once), given the
    /// account owner's [`FactorProof`](crate::flow::FactorProof): the
    /// password and a current TOTP or recovery code. The user's other
    /// sessions end; this one gets a new ID (and cookie).
    pub async fn regenerate_recovery_codes(
        &self,
        proof: &crate::flow::FactorProof,
    ) -> Result<RecoveryCodes, AuthError> {
        self.with_session(|mut session| async move {
            let result = self
                .authenticator()
                .regenerate_recovery_codes(&mut session, proof, self.client())
                .await;
            (session, result)
        })
        .await
    }

    /// A CSRF token for an HTML form: bound to this request's session, or,
    /// for a visitor without one, to a random visitor cookie (set with the
    /// response when the request has none). Showing a form stores nothing
    /// on the server, so page views cannot fill the session store. `None`
    /// when form tokens are not configured, and for a bearer request (it
    /// has no session to bind a form to, and needs no CSRF token; checking
    /// one there fails).
    pub async fn form_token(&self) -> Result<Option<String>, AuthError> {
        let Some(tokens) = &self.auth.parts.tokens else {
            return Ok(None);
        };
        if self.is_bearer() {
            return Ok(None);
        }
        let mut slot = self.slot().await?;
        slot.token_issued = true;
        if let Some(session) = &slot.session {
            return Ok(Some(tokens.issue(session.key())));
        }
        let visitor = match (self.visitor(), slot.new_visitor.clone()) {
            (Some(visitor), _) | (None, Some(visitor)) => visitor,
            (None, None) => {
                let visitor = SessionId::generate().map_err(AuthError::internal)?;
                slot.new_visitor = Some(visitor.clone());
                visitor
            }
        };
        Ok(Some(tokens.issue_for_visitor(&visitor.key())))
    }

    /// The visitor cookie of the request, if any.
    fn visitor(&self) -> Option<SessionId> {
        let cookies = self.auth.authenticator().cookies();
        cookies.visitor_id(self.cookies.iter().map(String::as_str))
    }

    /// Creates an anonymous session (and sets its cookie) when the request
    /// has none.
    async fn ensure_session(&self, slot: &mut Slot) -> Result<(), AuthError> {
        self.refuse_bearer()?;
        if slot.session.is_none() {
            let session = self
                .authenticator()
                .anonymous_session(self.client())
                .await?;
            slot.set(Some(session));
            slot.action = CookieAction::Set;
        }
        Ok(())
    }

    /// Checks a submitted form token ([`AuthError::CsrfToken`] when it is
    /// missing, or bound to neither this request's session nor its visitor
    /// cookie). Without form tokens configured
    /// ([`AuthBuilder::form_tokens`](crate::AuthBuilder::form_tokens)) it
    /// fails closed: an internal error (500, logged), never a pass. A
    /// bearer request gets [`AuthError::SessionRequired`] (no form token is
    /// bound to it).
    pub async fn verify_form_token(&self, token: Option<&str>) -> Result<(), AuthError> {
        let Some(tokens) = &self.auth.parts.tokens else {
            tracing::error!(
                "auth: verify_form_token without form tokens: configure AuthBuilder::form_tokens"
            );
            return Err(AuthError::internal("form tokens are not configured"));
        };
        self.refuse_bearer()?;
        let token = token.ok_or(AuthError::CsrfToken)?;
        let slot = self.slot().await?;
        let for_session = slot
            .session
            .as_ref()
            .is_some_and(|session| tokens.verify(session.key(), token));
        // A visitor's token counts only while no one is logged in, nor
        // half-way (a password given, the second factor awaited): on a
        // shared browser, a form from before a login does not act for the
        // user who logged in.
        let logged_in = slot
            .session
            .as_ref()
            .is_some_and(|session| session.user_id().is_some());
        let for_visitor = || {
            !logged_in
                && self
                    .visitor()
                    .is_some_and(|visitor| tokens.verify_for_visitor(&visitor.key(), token))
        };
        if for_session || for_visitor() {
            Ok(())
        } else {
            Err(AuthError::CsrfToken)
        }
    }

    /// A typed value from the session's app data.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, AuthError> {
        reserved(key)?;
        match self.session().await? {
            Some(session) => Ok(session.get(key)?),
            None => Ok(None),
        }
    }

    /// Stores a value in the session's app data, creating an anonymous
    /// session (and its cookie) when there is none. Keys starting with
    /// `auth.` are the toolkit's own (ceremony state, a TOTP enrolment):
    /// an internal error (500, logged), here and in [`get`](Self::get).
    pub async fn insert<T: Serialize + Sync>(&self, key: &str, value: &T) -> Result<(), AuthError> {
        reserved(key)?;
        if self.is_bearer() {
            // A bearer token carries no session data.
            return Err(AuthError::SessionRequired);
        }
        let mut slot = self.slot().await?;
        self.ensure_session(&mut slot).await?;
        let sessions = self.authenticator().sessions();
        let Some(session) = slot.session.as_mut() else {
            return Err(AuthError::NotAuthenticated);
        };
        Ok(sessions.insert(session, key, value).await?)
    }

    /// Step 4: what the response needs after the handler ran.
    ///
    /// Waits for an operation still running on this request (e.g. in a
    /// task the handler spawned); [`try_finish`](Self::try_finish) is the
    /// same without waiting.
    pub async fn finish(&self) -> Finish {
        self.finish_with(&*self.slot.lock().await)
    }

    /// [`finish`](Self::finish) without waiting: `None` while an operation
    /// on this request still holds its state (then await `finish`). After
    /// the handler has returned this is the normal case, and lets an
    /// adapter complete the response without another allocation.
    pub fn try_finish(&self) -> Option<Finish> {
        Some(self.finish_with(&*self.slot.try_lock()?))
    }

    fn finish_with(&self, slot: &Slot) -> Finish {
        if self.is_bearer() {
            // A bearer request's response sets no cookie and is never cached.
            return Finish {
                set_cookie: None,
                visitor_cookie: None,
                device_cookie: None,
                no_store: true,
                security: self.auth.security_headers().clone(),
                bearer_challenge: Some(if slot.loaded && slot.session.is_none() {
                    BEARER_REFUSED
                } else {
                    "Bearer"
                }),
            };
        }
        let set_cookie = match (slot.action, &slot.session) {
            (CookieAction::Set, Some(session)) => Some(self.auth.set_cookie(session)),
            (CookieAction::Remove, _) | (CookieAction::Set, None) => {
                Some(self.auth.removal_cookie())
            }
            (CookieAction::None, _) => None,
        };
        let cookies = self.auth.authenticator().cookies();
        Finish {
            no_store: Auth::no_store(slot.session.is_some(), set_cookie.is_some())
                || slot.token_issued,
            set_cookie,
            visitor_cookie: slot.new_visitor.as_ref().map(|v| cookies.visitor_cookie(v)),
            device_cookie: slot
                .new_device
                .as_ref()
                .map(|d| cookies.device_cookie(d, self.authenticator().device_trust())),
            security: self.auth.security_headers().clone(),
            bearer_challenge: None,
        }
    }

    /// The refusal of a route protection: a redirect to the login page
    /// for a browser that is not logged in, else the error.
    pub fn refusal(&self, error: &AuthError, accept: Option<&str>, path_and_query: &str) -> Reply {
        if self.is_bearer() {
            return self.bearer_refusal(error);
        }
        match self.auth.redirect_for(error, accept, path_and_query) {
            Some(location) => Reply::redirect(location),
            None => Reply::error(error),
        }
    }

    /// The refusal of a bearer request: never a redirect; a 401 carries
    /// `WWW-Authenticate: Bearer` (RFC 6750).
    fn bearer_refusal(&self, error: &AuthError) -> Reply {
        let mut reply = Reply::error(error);
        if reply.status == 401 {
            reply.headers.push((
                "www-authenticate",
                std::borrow::Cow::Borrowed(BEARER_REFUSED),
            ));
        }
        reply
    }
}
