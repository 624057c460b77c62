//! # auth-axum
//!
//! The axum adapter of the auth toolkit. It only translates: every decision
//! is `auth-core`'s (see [`auth_core::web`] for the pipeline it runs).
//!
//! * [`AuthLayer`]: a tower layer. It refuses a Host outside the
//!   allow-list (400) and cross-origin unsafe requests (403), works out the client IP through the configured trusted proxies,
//!   loads the session lazily (a route that never asks for auth pays no
//!   store read) and writes `Set-Cookie` when the session got a new ID or
//!   ended. It needs the client's socket address: serve with
//!   `into_make_service_with_connect_info::<SocketAddr>()` (tests can use
//!   `MockConnectInfo`); without one it answers 500 rather than throttle
//!   every client as one.
//! * Extractors: [`AuthSession`] (login, logout, change password, sign out
//!   everywhere, sessions, app data), [`CurrentUser`] (refuses as the login
//!   guard does without a login) and [`OptionalUser`].
//! * Route protection: [`RequireLayer`] (`login`, `recent_login`, `mfa`) for
//!   `route_layer`, or [`require_login`], [`require_recent_login`] and
//!   [`require_mfa`], for `axum::middleware::from_fn`. API requests get JSON
//!   401/403; browsers asking for HTML are redirected to the login page with
//!   a safe `next`.
//!
//! A request with `Authorization: Bearer <access token>` is a bearer
//! request, whatever the configuration: the same extractors and guards
//! decide it by its token alone (its cookies are not read, no cross-site
//! check applies, its answer sets no cookie; a guard or `CurrentUser`
//! refuses it with JSON, never a redirect, and a 401 adds
//! `WWW-Authenticate: Bearer`). With the `jwt` feature and tokens
//! configured (`AuthBuilder::tokens`) a valid access token signs it in;
//! otherwise it is not signed in.
//!
//! This crate re-exports [`auth_core`] and its common names, and forwards
//! its features (`sqlite`, `postgres`, `redis`, `jwt`, ...): one dependency
//! line.
//!
//! ```
//! use std::net::SocketAddr;
//! use auth_axum::{Auth, AuthLayer, AuthRejection, AuthSession, CurrentUser, MemoryUserStore, Password, RequireLayer, User};
//! use axum::{Json, Router, routing::{get, post}};
//! use axum::extract::connect_info::MockConnectInfo;
//! use tower::ServiceExt;
//!
//! // `CurrentUser<MyUser>` gives your own user type; `User` is the ready one.
//! async fn me(CurrentUser(user): CurrentUser<User>) -> String {
//!     user.display_name.clone()
//! }
//!
//! #[derive(serde::Deserialize)]
//! struct Credentials { username: String, password: String }
//!
//! async fn login(auth: AuthSession, Json(body): Json<Credentials>) -> Result<&'static str, AuthRejection> {
//!     auth.login(&body.username, &Password::from(body.password)).await?;
//!     Ok("welcome")
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let auth = Auth::builder(MemoryUserStore::new()).build()?;
//! let app = Router::new()
//!     .route("/me", get(me).route_layer(RequireLayer::login()))
//!     .route("/login", post(login))
//!     .layer(AuthLayer::new(auth))
//!     // In a server: `axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())`.
//!     .layer(MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
//!
//! let response = app
//!     .oneshot(http::Request::get("/me").body(axum::body::Body::empty())?)
//!     .await?;
//! assert_eq!(response.status(), 401);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use auth_core::web::{Finish, ResponseHeaders, SecurityHeaders};

pub use auth_core;
pub use auth_core::{
    Auth, AuthError, AuthUser, Guard, LoginName, LoginOutcome, MemoryUserStore, NewUser, Password,
    Reply, RequestAuth, User, UserStore, UserStoreError,
};
use axum::body::Bytes;
use axum::extract::connect_info::MockConnectInfo;
use axum::extract::{ConnectInfo, FromRequestParts, OriginalUri, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::InvalidHeaderValue;
use http::request::Parts;
use http::{Extensions, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

/// Installs the auth pipeline on a router: `router.layer(AuthLayer::new(auth))`.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    auth: Auth,
    security: SecurityHeaderValues,
}

/// The core's security headers, converted to header values once (not per
/// response).
type SecurityHeaderValues = Arc<[(HeaderName, HeaderValue)]>;

impl AuthLayer {
    /// The layer for `auth`.
    pub fn new(auth: Auth) -> Self {
        let security = auth
            .security_headers()
            .iter()
            // In the core's order (the response hook looks them up by
            // index); the core refuses a value that is no header value, so
            // none stops this early.
            .map_while(|(name, value)| {
                Some((
                    HeaderName::from_static(name),
                    HeaderValue::from_str(value).ok()?,
                ))
            })
            .collect();
        Self { auth, security }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            auth: self.auth.clone(),
            security: Arc::clone(&self.security),
        }
    }
}

/// The service [`AuthLayer`] wraps around a router.
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Auth,
    security: SecurityHeaderValues,
}

/// A core [`Reply`] as an axum response.
pub fn reply(reply: Reply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    // The body as bytes: a `String` would add `Content-Type: text/plain`
    // to a redirect or a 204 (the reply's own headers say the type).
    let mut response = (status, axum::body::Body::from(reply.body)).into_response();
    let headers = response.headers_mut();
    for (name, value) in reply.headers {
        // An app may build a `Reply` too: a name in capitals is taken, an
        // invalid one is logged and left out (never a panic).
        match (HeaderName::from_bytes(name.as_bytes()), header_value(value)) {
            (Ok(name), Ok(value)) => {
                headers.insert(name, value);
            }
            _ => tracing::error!(
                name,
                "auth-axum: a reply header that cannot be sent, left out"
            ),
        }
    }
    response
}

/// A header value from the core: a fixed one without a copy.
fn header_value(value: Cow<'static, str>) -> Result<HeaderValue, InvalidHeaderValue> {
    match value {
        Cow::Borrowed(text) => HeaderValue::from_maybe_shared(Bytes::from_static(text.as_bytes())),
        Cow::Owned(text) => HeaderValue::from_str(&text),
    }
}

/// The client's socket address, from `ConnectInfo` or `MockConnectInfo`.
fn peer(request: &Request) -> Option<SocketAddr> {
    let extensions = request.extensions();
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0)
        .or_else(|| {
            extensions
                .get::<MockConnectInfo<SocketAddr>>()
                .map(|mock| mock.0)
        });
    if peer.is_none() {
        tracing::error!(
            "auth-axum: serve with into_make_service_with_connect_info::<SocketAddr>()"
        );
    }
    peer
}

/// The end of the pipeline: the headers the core asked for
/// ([`Finish::apply`]; `security` is `finish.security`, converted once by
/// the layer).
fn finish(response: &mut Response, finish: Finish, security: &[(HeaderName, HeaderValue)]) {
    finish.apply(&mut Headers {
        status: response.status().as_u16(),
        map: response.headers_mut(),
        security,
    });
}

/// A response's headers as the core writes them, with the security
/// headers' values converted once by the layer.
struct Headers<'a> {
    status: u16,
    map: &'a mut http::HeaderMap,
    security: &'a [(HeaderName, HeaderValue)],
}

impl ResponseHeaders for Headers<'_> {
    fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    fn status(&self) -> Option<u16> {
        Some(self.status)
    }

    fn present(&self, security: &SecurityHeaders) -> u64 {
        security
            .iter()
            .take(64)
            .enumerate()
            .filter(|&(i, (name, _))| match self.security.get(i) {
                Some((converted, _)) => self.map.contains_key(converted),
                None => self.map.contains_key(name),
            })
            .fold(0, |bits, (i, _)| bits | 1 << i)
    }

    fn set(&mut self, name: &'static str, value: Cow<'static, str>) {
        if let Ok(value) = header_value(value) {
            self.map.insert(header_name(name), value);
        }
    }

    fn append(&mut self, name: &'static str, value: String) {
        if let Ok(value) = HeaderValue::from_str(&value) {
            self.map.append(header_name(name), value);
        }
    }

    fn set_security(&mut self, index: usize, name: &'static str, value: &Cow<'static, str>) {
        match self.security.get(index) {
            Some((name, value)) => {
                let (name, value) = (name.clone(), value.clone());
                self.map.insert(name, value);
            }
            None => self.set(name, value.clone()),
        }
    }
}

/// One of the core's (fixed, lower-case) header names.
fn header_name(name: &'static str) -> HeaderName {
    match name {
        "cache-control" => header::CACHE_CONTROL,
        "set-cookie" => header::SET_COOKIE,
        _ => HeaderName::from_static(name),
    }
}

impl<S> Service<Request> for AuthService<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = AuthFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        // Everything before the handler is synchronous: the inner service
        // made ready by `poll_ready` is called at once (no clone of it).
        let headers = request.headers();
        let begun = self.auth.begin_raw(
            request.method().as_str(),
            || headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())),
            request.uri().authority().map(|a| a.as_str()),
            peer(&request).map(|p| p.ip()),
        );
        let state = match begun {
            Ok(state) => Arc::new(state),
            Err(refusal) => {
                return AuthFuture {
                    state: FutureState::Refused {
                        response: Some(reply(refusal)),
                    },
                };
            }
        };
        request.extensions_mut().insert(Arc::clone(&state));
        AuthFuture {
            state: FutureState::Inner {
                future: self.inner.call(request),
                auth: state,
                security: Arc::clone(&self.security),
            },
        }
    }
}

pin_project! {
    /// The response future of [`AuthService`]: the inner service's, then
    /// the cookie and cache headers.
    #[must_use = "futures do nothing unless polled"]
    pub struct AuthFuture<F> {
        #[pin]
        state: FutureState<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum FutureState<F> {
        Refused { response: Option<Response> },
        Inner { #[pin] future: F, auth: Arc<RequestAuth>, security: SecurityHeaderValues },
        // Only when a task the handler spawned still holds the request's
        // auth state: wait for it.
        Finishing { future: Pin<Box<dyn Future<Output = Response> + Send>> },
        Done,
    }
}

impl<F> AuthFuture<F> {
    fn polled_after_completion() -> Response {
        reply(Reply::error(&AuthError::Internal(
            "AuthFuture polled after completion".into(),
        )))
    }
}

impl<F> Future for AuthFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Refused { response } => {
                    let response = response
                        .take()
                        .unwrap_or_else(Self::polled_after_completion);
                    this.state.set(FutureState::Done);
                    return Poll::Ready(Ok(response));
                }
                StateProj::Inner {
                    future,
                    auth,
                    security,
                } => {
                    let Ok(mut response) = std::task::ready!(future.poll(cx));
                    if let Some(done) = auth.try_finish() {
                        finish(&mut response, done, security);
                        this.state.set(FutureState::Done);
                        return Poll::Ready(Ok(response));
                    }
                    let auth = Arc::clone(auth);
                    let security = Arc::clone(security);
                    this.state.set(FutureState::Finishing {
                        future: Box::pin(async move {
                            let done = auth.finish().await;
                            finish(&mut response, done, &security);
                            response
                        }),
                    });
                }
                StateProj::Finishing { future } => {
                    let response = std::task::ready!(future.as_mut().poll(cx));
                    this.state.set(FutureState::Done);
                    return Poll::Ready(Ok(response));
                }
                StateProj::Done => return Poll::Ready(Ok(Self::polled_after_completion())),
            }
        }
    }
}

/// A core error as an axum response: the status, `Retry-After` and JSON
/// body all come from `auth-core`.
pub struct AuthRejection(pub AuthError);

/// Only what the client may see: an internal error's source stays out
/// (frameworks and apps log rejections with `Debug`).
impl std::fmt::Debug for AuthRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AuthRejection")
            .field(&auth_core::web::PublicError(&self.0))
            .finish()
    }
}

impl From<AuthError> for AuthRejection {
    fn from(error: AuthError) -> Self {
        Self(error)
    }
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        reply(Reply::error(&self.0))
    }
}

fn missing_layer() -> AuthRejection {
    AuthRejection(AuthError::Internal(
        "AuthLayer is not installed on this router".into(),
    ))
}

/// The auth handle of one request: the session (loaded on first use) and
/// every flow that changes it. It dereferences to the core's
/// [`RequestAuth`], whose methods (`login`, `logout`, `current_user`,
/// `change_password`, `rotate`, `sign_out_everywhere`, `list_sessions`,
/// `revoke`, `form_token`, `verify_form_token`, `get`, `insert`) return
/// [`AuthError`]; `?` turns that into an [`AuthRejection`].
#[derive(Debug, Clone)]
pub struct AuthSession {
    state: Arc<RequestAuth>,
}

impl Deref for AuthSession {
    type Target = RequestAuth;

    fn deref(&self) -> &RequestAuth {
        &self.state
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AuthSession {
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Arc<RequestAuth>>()
            .map(|state| Self {
                state: Arc::clone(state),
            })
            .ok_or_else(missing_layer)
    }
}

/// The authenticated user as the app's own type `U` (the user store's
/// [`AuthUser`] type, always named: `CurrentUser<MyUser>`, or
/// `CurrentUser<User>` for the toolkit's ready [`User`]; no default, so
/// forgetting it is a compile error, not a 500), read once
/// per request with the session and shared without a copy. Without one it
/// rejects as [`RequireLayer::login`] does (a browser asking for HTML is
/// redirected to the login page, an API client gets JSON 401, a bearer
/// request's 401 carries `WWW-Authenticate`), so it protects a route by
/// itself. Dereferences to `U`.
#[derive(Debug)]
pub struct CurrentUser<U>(pub Arc<U>);

impl<U> Deref for CurrentUser<U> {
    type Target = U;

    fn deref(&self) -> &U {
        &self.0
    }
}

impl<S, U> FromRequestParts<S> for CurrentUser<U>
where
    S: Send + Sync,
    U: AuthUser,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let auth = AuthSession::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        match auth.current_user::<U>().await {
            Ok(user) => Ok(Self(user)),
            Err(error) => Err(refuse(
                &auth.state,
                &error,
                &parts.headers,
                &parts.uri,
                &parts.extensions,
            )),
        }
    }
}

/// The authenticated user as `U`, if any; never rejects for lack of one.
#[derive(Debug)]
pub struct OptionalUser<U>(pub Option<Arc<U>>);

impl<S, U> FromRequestParts<S> for OptionalUser<U>
where
    S: Send + Sync,
    U: AuthUser,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let auth = AuthSession::from_request_parts(parts, state).await?;
        Ok(Self(auth.optional_user::<U>().await?))
    }
}

/// The answer to a request a route protection (or [`CurrentUser`])
/// refused.
fn refuse(
    state: &RequestAuth,
    error: &AuthError,
    headers: &HeaderMap,
    uri: &Uri,
    extensions: &Extensions,
) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    // The path the browser asked for: under `Router::nest` the request's
    // own URI has lost the prefix.
    let uri = extensions
        .get::<OriginalUri>()
        .map_or(uri, |original| &original.0);
    let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
    reply(state.refusal(error, accept, path))
}

async fn guard(request: Request, next: Next, guard: Guard) -> Response {
    let Some(state) = request.extensions().get::<Arc<RequestAuth>>().cloned() else {
        return missing_layer().into_response();
    };
    match state.check(guard).await {
        Ok(()) => next.run(request).await,
        Err(error) => refuse(
            &state,
            &error,
            request.headers(),
            request.uri(),
            request.extensions(),
        ),
    }
}

/// Route protection: an authenticated session is required. Use with
/// `route_layer(axum::middleware::from_fn(require_login))`, or use
/// [`RequireLayer::login`], which does the same with less work per request.
pub async fn require_login(request: Request, next: Next) -> Response {
    guard(request, next, Guard::Login).await
}

/// Route protection: a login within the configured recent-authentication
/// window (default 10 min) is required; otherwise 403. As a layer:
/// [`RequireLayer::recent_login`].
pub async fn require_recent_login(request: Request, next: Next) -> Response {
    guard(request, next, Guard::RecentLogin).await
}

/// Route protection: the session must have completed a second factor;
/// otherwise 403. As a layer: [`RequireLayer::mfa`].
pub async fn require_mfa(request: Request, next: Next) -> Response {
    guard(request, next, Guard::Mfa).await
}

/// Route protection as a tower layer:
/// `route_layer(RequireLayer::login())`. The same checks and answers as
/// [`require_login`] and its siblings with `from_fn`, with less work per
/// request: one boxed future and one clone of the inner service, where
/// `from_fn` boxes twice and builds a `Next`.
#[derive(Debug, Clone, Copy)]
pub struct RequireLayer {
    guard: Guard,
}

impl RequireLayer {
    /// Any core [`Guard`].
    #[must_use]
    pub fn new(guard: Guard) -> Self {
        Self { guard }
    }

    /// An authenticated session is required.
    #[must_use]
    pub fn login() -> Self {
        Self::new(Guard::Login)
    }

    /// A login within the recent-authentication window is required.
    #[must_use]
    pub fn recent_login() -> Self {
        Self::new(Guard::RecentLogin)
    }

    /// A completed second factor is required.
    #[must_use]
    pub fn mfa() -> Self {
        Self::new(Guard::Mfa)
    }
}

impl<S> Layer<S> for RequireLayer {
    type Service = RequireService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireService {
            inner,
            guard: self.guard,
        }
    }
}

/// The service [`RequireLayer`] wraps around a route.
#[derive(Debug, Clone)]
pub struct RequireService<S> {
    inner: S,
    guard: Guard,
}

impl<S> Service<Request> for RequireService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let Some(state) = request.extensions().get::<Arc<RequestAuth>>().cloned() else {
            return Box::pin(std::future::ready(Ok(missing_layer().into_response())));
        };
        let guard = self.guard;
        // The clone that was made ready is the one to call (after the
        // check, which may read the store).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            match state.check(guard).await {
                Ok(()) => inner.call(request).await,
                Err(error) => Ok(refuse(
                    &state,
                    &error,
                    request.headers(),
                    request.uri(),
                    request.extensions(),
                )),
            }
        })
    }
}
