//! # auth-actix
//!
//! The actix-web adapter of the auth toolkit. It only translates: every
//! decision is `auth-core`'s (see [`auth_core::web`] for the pipeline it
//! runs). It offers the same names and operations as `auth-axum` and
//! `auth-rocket`.
//!
//! * [`AuthMiddleware`]: an actix `Transform`. It refuses a Host outside
//!   the allow-list (400) and cross-origin unsafe requests (403), works out the client IP from the socket peer
//!   through the configured trusted proxies (never from actix's
//!   `realip_remote_addr`, which believes any `Forwarded` header), loads the
//!   session lazily (a route that never asks for auth pays no store read)
//!   and writes `Set-Cookie` when the session got a new ID or ended.
//! * Extractors: [`AuthSession`] (login, logout, change password, sign out
//!   everywhere, sessions, app data; it dereferences to the core's
//!   [`RequestAuth`]), [`CurrentUser`] (refuses as the login guard does without a login) and
//!   [`OptionalUser`].
//! * Route protection: [`require_login`], [`require_recent_login`] and
//!   [`require_mfa`], for `actix_web::middleware::from_fn`. API requests get
//!   JSON 401/403; browsers asking for HTML are redirected to the login page
//!   with a safe `next`.
//! * Errors: [`AuthRejection`] implements `ResponseError`; status,
//!   `Retry-After` and body come from the core.
//!
//! ## Middleware order
//!
//! Register [`AuthMiddleware`] with the **last** `App::wrap` call, so that it
//! is the outermost middleware, and put the guards on routes
//! (`web::get().to(handler).wrap(from_fn(require_login))`): on a resource
//! or scope they also wrap its default service, so a wrong method or an
//! unknown path answers 401 where a 405 or 404 was due. Actix runs the last-registered middleware
//! first; a guard or extractor that runs where the middleware has not run
//! answers a 500 naming the problem (it never panics and never lets the
//! request through).
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
//! use actix_web::{App, HttpResponse, middleware::from_fn, test, web};
//! use auth_actix::{Auth, AuthMiddleware, AuthRejection, AuthSession, CurrentUser, MemoryUserStore, Password, User, require_login};
//!
//! // `CurrentUser<MyUser>` gives your own user type; `User` is the ready one.
//! async fn me(CurrentUser(user): CurrentUser<User>) -> String {
//!     user.display_name.clone()
//! }
//!
//! #[derive(serde::Deserialize)]
//! struct Credentials { username: String, password: String }
//!
//! async fn login(auth: AuthSession, body: web::Json<Credentials>) -> Result<HttpResponse, AuthRejection> {
//!     let body = body.into_inner();
//!     auth.login(&body.username, &Password::from(body.password)).await?;
//!     Ok(HttpResponse::Ok().body("welcome"))
//! }
//!
//! # #[actix_web::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let auth = Auth::builder(MemoryUserStore::new()).build()?;
//! let app = test::init_service(
//!     App::new()
//!         .route("/me", web::get().to(me).wrap(from_fn(require_login)))
//!         .route("/login", web::post().to(login))
//!         // Last `wrap`: the outermost middleware.
//!         .wrap(AuthMiddleware::new(auth)),
//! )
//! .await;
//! // In a server: `HttpServer::new(move || App::new()...wrap(AuthMiddleware::new(auth.clone())))`.
//! let request = test::TestRequest::get()
//!     .uri("/me")
//!     .peer_addr("127.0.0.1:40000".parse()?)
//!     .to_request();
//! let response = test::call_service(&app, request).await;
//! assert_eq!(response.status(), 401);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::future::{Ready, ready};
use std::ops::Deref;
use std::rc::Rc;
use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::error::InternalError;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};
pub use auth_core;
use auth_core::web::{ResponseHeaders, SecurityHeaders};
pub use auth_core::{
    Auth, AuthError, AuthUser, Guard, LoginName, LoginOutcome, MemoryUserStore, NewUser, Password,
    Reply, RequestAuth, User, UserStore, UserStoreError,
};

type LocalBoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T>>>;

/// Installs the auth pipeline on an app:
/// `App::new()...wrap(AuthMiddleware::new(auth))` (as the last `wrap`, so
/// the outermost middleware). An error an inner service answers with goes
/// on outward as an [`InternalError`] that carries its response, finished
/// (security headers, `no-store`, cookies) like any other: a middleware
/// wrapped outside this one sees that error, not the original type.
#[derive(Debug, Clone)]
pub struct AuthMiddleware {
    auth: Auth,
    security: SecurityHeaderValues,
}

/// The core's security headers, converted to header values once (not per
/// response).
type SecurityHeaderValues = Arc<[(HeaderName, HeaderValue)]>;

impl AuthMiddleware {
    /// The middleware for `auth`.
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

impl<S, B> Transform<S, ServiceRequest> for AuthMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = AuthMiddlewareService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(AuthMiddlewareService {
            service: Rc::new(service),
            auth: self.auth.clone(),
            security: Arc::clone(&self.security),
        }))
    }
}

/// The service [`AuthMiddleware`] wraps around an app.
#[derive(Debug)]
pub struct AuthMiddlewareService<S> {
    service: Rc<S>,
    auth: Auth,
    security: SecurityHeaderValues,
}

/// A core [`Reply`] as an actix response.
pub fn reply(reply: Reply) -> HttpResponse {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(status);
    for (name, value) in reply.headers {
        // An app may build a `Reply` too: a name in capitals is taken, an
        // invalid one is logged and left out (never a panic).
        match (HeaderName::from_bytes(name.as_bytes()), header_value(value)) {
            (Ok(name), Ok(value)) => {
                response.insert_header((name, value));
            }
            _ => tracing::error!(
                name,
                "auth-actix: a reply header that cannot be sent, left out"
            ),
        }
    }
    response.body(reply.body)
}

impl<S, B> Service<ServiceRequest> for AuthMiddlewareService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, request: ServiceRequest) -> Self::Future {
        let service = Rc::clone(&self.service);
        let security = Arc::clone(&self.security);
        let headers = request.headers();
        let begun = self.auth.begin_raw(
            request.method().as_str(),
            || headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())),
            request.uri().authority().map(|a| a.as_str()),
            request.peer_addr().map(|peer| peer.ip()),
        );
        let state = match begun {
            Ok(state) => Arc::new(state),
            Err(refusal) => {
                let response = request.into_response(reply(refusal));
                return Box::pin(async move { Ok(response.map_into_right_body()) });
            }
        };
        request.extensions_mut().insert(Arc::clone(&state));
        Box::pin(async move {
            let mut response = match service.call(request).await {
                Ok(response) => response,
                // An error from inside (an app middleware's `Err`) stays
                // an error for the middlewares further out, carrying its
                // response finished like any other.
                Err(error) => {
                    let mut response = error.error_response();
                    state.finish().await.apply(&mut Headers {
                        status: response.status().as_u16(),
                        map: response.headers_mut(),
                        security: &security,
                    });
                    return Err(InternalError::from_response(error, response).into());
                }
            };
            // The headers the core asks for (the security headers'
            // values converted once by the middleware).
            state.finish().await.apply(&mut Headers {
                status: response.status().as_u16(),
                map: response.headers_mut(),
                security: &security,
            });
            Ok(response.map_into_left_body())
        })
    }
}

/// A response's headers as the core writes them
/// ([`Finish::apply`](auth_core::web::Finish::apply)), with the security
/// headers' values converted once by the middleware.
struct Headers<'a> {
    status: u16,
    map: &'a mut header::HeaderMap,
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

/// A header value from the core: a fixed one without a copy.
fn header_value(
    value: Cow<'static, str>,
) -> Result<HeaderValue, actix_web::http::header::InvalidHeaderValue> {
    match value {
        Cow::Borrowed(text) => HeaderValue::from_maybe_shared(Bytes::from_static(text.as_bytes())),
        Cow::Owned(text) => HeaderValue::from_str(&text),
    }
}

/// A core error as an actix error response: the status, `Retry-After`
/// and JSON body all come from `auth-core`.
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

impl std::fmt::Display for AuthRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ResponseError for AuthRejection {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        reply(Reply::error(&self.0))
    }
}

fn missing_middleware() -> AuthRejection {
    tracing::error!(
        "auth-actix: AuthMiddleware has not run for this request; register it with the \
         last App::wrap call, outside every guard"
    );
    AuthRejection(AuthError::Internal(
        "AuthMiddleware is not installed outside this route".into(),
    ))
}

fn request_auth(request: &HttpRequest) -> Option<Arc<RequestAuth>> {
    request.extensions().get::<Arc<RequestAuth>>().cloned()
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

impl FromRequest for AuthSession {
    type Error = AuthRejection;
    type Future = Ready<Result<Self, AuthRejection>>;

    fn from_request(request: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        ready(
            request_auth(request)
                .map(|state| Self { state })
                .ok_or_else(missing_middleware),
        )
    }
}

/// The authenticated user as the app's own type `U` (the user store's
/// [`AuthUser`] type, always named: `CurrentUser<MyUser>`, or
/// `CurrentUser<User>` for the toolkit's ready [`User`]; no default, so
/// forgetting it is a compile error, not a 500), read once
/// per request with the session and shared without a copy. Without one it
/// rejects as [`require_login`] does (a browser asking for HTML is
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

impl<U: AuthUser> FromRequest for CurrentUser<U> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<Result<Self, actix_web::Error>>;

    fn from_request(request: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let state = request_auth(request);
        let request = request.clone();
        Box::pin(async move {
            let state = state.ok_or_else(missing_middleware)?;
            match state.current_user::<U>().await {
                Ok(user) => Ok(Self(user)),
                Err(error) => {
                    let response = refuse(&state, &error, &request);
                    Err(InternalError::from_response(AuthRejection(error), response).into())
                }
            }
        })
    }
}

/// The answer to a request a route protection (or [`CurrentUser`])
/// refused.
fn refuse(state: &RequestAuth, error: &AuthError, request: &HttpRequest) -> HttpResponse {
    let accept = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let path = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    reply(state.refusal(error, accept, path))
}

/// The authenticated user as `U`, if any; never rejects for lack of one.
#[derive(Debug)]
pub struct OptionalUser<U>(pub Option<Arc<U>>);

impl<U: AuthUser> FromRequest for OptionalUser<U> {
    type Error = AuthRejection;
    type Future = LocalBoxFuture<Result<Self, AuthRejection>>;

    fn from_request(request: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let state = request_auth(request);
        Box::pin(async move {
            let state = state.ok_or_else(missing_middleware)?;
            Ok(Self(state.optional_user::<U>().await?))
        })
    }
}

async fn guard<B: MessageBody + 'static>(
    request: ServiceRequest,
    next: Next<B>,
    guard: Guard,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let Some(state) = request_auth(request.request()) else {
        let response = missing_middleware().error_response();
        return Ok(request.into_response(response).map_into_right_body());
    };
    match state.check(guard).await {
        Ok(()) => Ok(next.call(request).await?.map_into_left_body()),
        Err(error) => {
            let response = refuse(&state, &error, request.request());
            Ok(request.into_response(response).map_into_right_body())
        }
    }
}

/// Route protection: an authenticated session is required. Use with
/// `.wrap(actix_web::middleware::from_fn(require_login))` on a route.
pub async fn require_login<B: MessageBody + 'static>(
    request: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    guard(request, next, Guard::Login).await
}

/// Route protection: a login within the configured recent-authentication
/// window (default 10 min) is required; otherwise 403.
pub async fn require_recent_login<B: MessageBody + 'static>(
    request: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    guard(request, next, Guard::RecentLogin).await
}

/// Route protection: the session must have completed a second factor;
/// otherwise 403.
pub async fn require_mfa<B: MessageBody + 'static>(
    request: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    guard(request, next, Guard::Mfa).await
}
