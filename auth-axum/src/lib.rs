//! # auth-axum
//!
//! The axum adapter of the auth toolkit. It only translates: every decision
//! is `auth-core`'s (see [`auth_core::web`] for the pipeline it runs).
//!
//! * [`AuthLayer`]: a tower layer. It refuses cross-origin unsafe requests
//!   (403), works out the client IP through the configured trusted proxies,
//!   loads the session lazily (a route that never asks for auth pays no
//!   store read) and writes `Set-Cookie` when the session got a new ID or
//!   ended. It needs the client's socket address: serve with
//!   `into_make_service_with_connect_info::<SocketAddr>()` (tests can use
//!   `MockConnectInfo`); without one it answers 500 rather than throttle
//!   every client as one.
//! * Extractors: [`AuthSession`] (login, logout, change password, sign out
//!   everywhere, sessions, app data), [`CurrentUser`] (401 unless
//!   authenticated) and [`OptionalUser`].
//! * Route protection: [`require_login`], [`require_recent_login`] and
//!   [`require_mfa`], for `axum::middleware::from_fn`. API requests get JSON
//!   401/403; browsers asking for HTML are redirected to the login page with
//!   a safe `next`.
//!
//! ```
//! use std::sync::Arc;
//! use auth_axum::{AuthLayer, AuthSession, CurrentUser, require_login};
//! use auth_core::flow::Authenticator;
//! use auth_core::password::{Argon2Params, Password, PasswordHasher, PasswordService};
//! use auth_core::rate_limit::{MemoryThrottle, ThrottleConfig};
//! use auth_core::session::{MemoryStore, SessionConfig, SessionManager};
//! use auth_core::user::MemoryUserStore;
//! use auth_core::web::Auth;
//! use axum::{Json, Router, middleware::from_fn, routing::{get, post}};
//! use axum::extract::connect_info::MockConnectInfo;
//! use std::net::SocketAddr;
//! use tower::ServiceExt;
//!
//! async fn me(CurrentUser(user): CurrentUser) -> String {
//!     user.display_name
//! }
//!
//! async fn login(auth: AuthSession, Json(body): Json<serde_json::Value>) -> Result<&'static str, auth_axum::AuthRejection> {
//!     let name = body["username"].as_str().unwrap_or_default();
//!     let password = Password::from(body["password"].as_str().unwrap_or_default());
//!     auth.login(name, &password).await?;
//!     Ok("welcome")
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let users = Arc::new(MemoryUserStore::new());
//! let sessions = SessionManager::new(Arc::new(MemoryStore::new()), SessionConfig::default());
//! let throttle = Arc::new(MemoryThrottle::new(ThrottleConfig::default(), sessions.clock().clone()));
//! let authenticator = Authenticator::builder(PasswordService::builder().build().unwrap(), sessions, users, throttle).build();
//! let app = Router::new()
//!     .route("/me", get(me).route_layer(from_fn(require_login)))
//!     .route("/login", post(login))
//!     .layer(AuthLayer::new(Auth::new(authenticator)))
//!     // In a server: `axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())`.
//!     .layer(MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
//!
//! let response = app
//!     .oneshot(http::Request::get("/me").body(axum::body::Body::empty()).unwrap())
//!     .await
//!     .unwrap();
//! assert_eq!(response.status(), 401);
//! # }
//! ```
#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use auth_core::flow::{AuthError, Client, LoginOutcome};
use auth_core::password::Password;
use auth_core::session::{Session, SessionHandle, SessionInfo};
use auth_core::user::User;
use auth_core::web::{self, Auth};
use axum::extract::connect_info::MockConnectInfo;
use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;
use tower::{Layer, Service};

/// Installs the auth pipeline on a router: `router.layer(AuthLayer::new(auth))`.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    auth: Auth,
}

impl AuthLayer {
    /// The layer for `auth`.
    pub fn new(auth: Auth) -> Self {
        Self { auth }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            auth: self.auth.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around a router.
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Auth,
}

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
    action: CookieAction,
}

/// Per-request state, shared by the layer and the extractors.
#[derive(Debug)]
struct RequestAuth {
    auth: Auth,
    client: Client,
    cookies: Vec<String>,
    slot: Mutex<Slot>,
}

/// Header pairs as text, borrowed (no copy for UTF-8 values). Bytes that
/// are not UTF-8 become U+FFFD instead of dropping the header, so the core
/// sees (and refuses) a malformed entry rather than a missing header.
fn header_pairs(headers: &HeaderMap) -> Vec<(&str, Cow<'_, str>)> {
    headers
        .iter()
        .map(|(name, value)| (name.as_str(), String::from_utf8_lossy(value.as_bytes())))
        .collect()
}

impl<S> Service<Request> for AuthService<S>
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

    fn call(&mut self, mut request: Request) -> Self::Future {
        let auth = self.auth.clone();
        // The clone that was made ready is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let mut pairs = header_pairs(request.headers());
            // HTTP/2 carries the host in the URI, not in a Host header.
            if !pairs.iter().any(|(n, _)| *n == "host")
                && let Some(authority) = request.uri().authority()
            {
                pairs.push(("host", Cow::Borrowed(authority.as_str())));
            }
            let pairs_ref = || pairs.iter().map(|(n, v)| (*n, v.as_ref()));
            if let Err(rejection) = auth.check_csrf(request.method().as_str(), pairs_ref()) {
                return Ok(json_response(
                    StatusCode::FORBIDDEN,
                    web::csrf_error_body(&rejection),
                ));
            }
            // Without the socket address every client would share one
            // throttle bucket: refuse to run like that.
            let peer = request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| info.0)
                .or_else(|| {
                    request
                        .extensions()
                        .get::<MockConnectInfo<SocketAddr>>()
                        .map(|mock| mock.0)
                });
            let Some(peer) = peer else {
                tracing::error!(
                    "auth: no client address; serve with \
                     into_make_service_with_connect_info::<SocketAddr>()"
                );
                return Ok(json_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    web::error_body(&AuthError::Internal("no client address".into())),
                ));
            };
            let client = auth.client(peer.ip(), pairs_ref());
            let cookies = pairs
                .iter()
                .filter(|(n, _)| *n == "cookie")
                .map(|(_, v)| v.clone().into_owned())
                .collect();
            let state = Arc::new(RequestAuth {
                auth: auth.clone(),
                client,
                cookies,
                slot: Mutex::new(Slot {
                    loaded: false,
                    session: None,
                    action: CookieAction::None,
                }),
            });
            request.extensions_mut().insert(Arc::clone(&state));
            let mut response = inner.call(request).await?;
            let slot = state.slot.lock().await;
            let cookie = match (slot.action, &slot.session) {
                (CookieAction::Set, Some(session)) => Some(auth.set_cookie(session)),
                (CookieAction::Remove, _) | (CookieAction::Set, None) => {
                    Some(auth.removal_cookie())
                }
                (CookieAction::None, _) => None,
            };
            let headers = response.headers_mut();
            if Auth::no_store(slot.session.is_some(), cookie.is_some()) {
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            }
            if let Some(cookie) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
                headers.append(header::SET_COOKIE, cookie);
            }
            Ok(response)
        })
    }
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A core error as an axum response: the status, `Retry-After` and JSON
/// body all come from `auth-core`.
#[derive(Debug)]
pub struct AuthRejection(pub AuthError);

impl From<AuthError> for AuthRejection {
    fn from(error: AuthError) -> Self {
        Self(error)
    }
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        if let AuthError::Internal(source) = &self.0 {
            tracing::error!(error = %source, "auth: internal error");
        }
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = json_response(status, web::error_body(&self.0));
        if let Some(secs) = self.0.retry_after_secs() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

fn missing_layer() -> AuthRejection {
    AuthRejection(AuthError::Internal(
        "AuthLayer is not installed on this router".into(),
    ))
}

/// The auth handle of one request: the session (loaded on first use) and
/// every flow that changes it.
#[derive(Debug, Clone)]
pub struct AuthSession {
    state: Arc<RequestAuth>,
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

impl AuthSession {
    fn auth(&self) -> &Auth {
        &self.state.auth
    }

    /// The flows, for operations this handle does not wrap (registration).
    pub fn authenticator(&self) -> &auth_core::flow::Authenticator {
        self.auth().authenticator()
    }

    /// The client (IP through trusted proxies, user agent).
    pub fn client(&self) -> &Client {
        &self.state.client
    }

    async fn slot(&self) -> Result<tokio::sync::MutexGuard<'_, Slot>, AuthRejection> {
        let mut slot = self.state.slot.lock().await;
        if !slot.loaded {
            slot.session = self
                .auth()
                .load_session(self.state.cookies.iter().map(String::as_str))
                .await?;
            slot.loaded = true;
        }
        Ok(slot)
    }

    /// The current session, if the request has a live one.
    pub async fn session(&self) -> Result<Option<Session>, AuthRejection> {
        Ok(self.slot().await?.session.clone())
    }

    /// The authenticated user.
    pub async fn current_user(&self) -> Result<User, AuthRejection> {
        let session = self
            .session()
            .await?
            .ok_or(AuthRejection(AuthError::NotAuthenticated))?;
        Ok(self.auth().authenticator().current_user(&session).await?)
    }

    /// Logs in with a password; the response carries the new cookie. On
    /// failure the request's session (if any) is kept.
    pub async fn login(
        &self,
        login: &str,
        password: &Password,
    ) -> Result<LoginOutcome, AuthRejection> {
        let mut slot = self.slot().await?;
        let outcome = self
            .auth()
            .authenticator()
            .login(login, password, self.client(), slot.session.as_ref())
            .await?;
        slot.session = Some(outcome.session().clone());
        slot.action = CookieAction::Set;
        Ok(outcome)
    }

    /// Ends the session server-side and removes the cookie.
    pub async fn logout(&self) -> Result<(), AuthRejection> {
        let mut slot = self.slot().await?;
        // The cookie goes whatever happens next.
        slot.action = CookieAction::Remove;
        if let Some(session) = slot.session.take() {
            self.auth()
                .authenticator()
                .logout(session, self.client())
                .await?;
        }
        Ok(())
    }

    async fn with_session<T, F, Fut>(&self, f: F) -> Result<T, AuthRejection>
    where
        F: FnOnce(Session) -> Fut,
        Fut: Future<Output = (Session, Result<T, AuthError>)>,
    {
        let mut slot = self.slot().await?;
        let session = slot
            .session
            .take()
            .ok_or(AuthRejection(AuthError::NotAuthenticated))?;
        let (session, result) = f(session).await;
        if session.id_changed() {
            slot.action = CookieAction::Set;
        }
        slot.session = Some(session);
        Ok(result?)
    }

    /// Changes the password (current one required); other sessions end and
    /// this one gets a new ID.
    pub async fn change_password(
        &self,
        current: &Password,
        new: &Password,
    ) -> Result<(), AuthRejection> {
        let authenticator = self.auth().authenticator().clone();
        let client = self.client().clone();
        self.with_session(|mut session| async move {
            let result = authenticator
                .change_password(&mut session, current, new, &client)
                .await;
            (session, result)
        })
        .await
    }

    /// Gives the session a new ID (after a privilege change); the old ID dies.
    pub async fn rotate(&self) -> Result<(), AuthRejection> {
        let authenticator = self.auth().authenticator().clone();
        self.with_session(|mut session| async move {
            let result = authenticator.rotate(&mut session).await;
            (session, result)
        })
        .await
    }

    /// Ends every other session of the user.
    pub async fn sign_out_everywhere(&self) -> Result<u64, AuthRejection> {
        let authenticator = self.auth().authenticator().clone();
        let client = self.client().clone();
        self.with_session(|mut session| async move {
            let result = authenticator
                .sign_out_everywhere(&mut session, &client)
                .await;
            (session, result)
        })
        .await
    }

    /// The user's live sessions, the current one marked.
    pub async fn list_sessions(&self) -> Result<Vec<SessionInfo>, AuthRejection> {
        let session = self
            .session()
            .await?
            .ok_or(AuthRejection(AuthError::NotAuthenticated))?;
        Ok(self.auth().authenticator().list_sessions(&session).await?)
    }

    /// Ends one of the user's sessions by handle. Returns whether it existed.
    /// Revoking the current session also removes its cookie.
    pub async fn revoke(&self, handle: &SessionHandle) -> Result<bool, AuthRejection> {
        let mut slot = self.slot().await?;
        let session = slot
            .session
            .clone()
            .ok_or(AuthRejection(AuthError::NotAuthenticated))?;
        let found = self
            .auth()
            .authenticator()
            .revoke_session(&session, handle, self.client())
            .await?;
        if found && session.handle() == *handle {
            slot.session = None;
            slot.action = CookieAction::Remove;
        }
        Ok(found)
    }

    /// A CSRF token for an HTML form, bound to this request's session (an
    /// anonymous session, and its cookie, are created when there is none;
    /// that creation is paid from the client's throttle budget).
    /// `None` when form tokens are not configured.
    pub async fn form_token(&self) -> Result<Option<String>, AuthRejection> {
        let mut slot = self.slot().await?;
        self.ensure_session(&mut slot).await?;
        Ok(slot
            .session
            .as_ref()
            .and_then(|s| self.auth().issue_form_token(s)))
    }

    /// Creates an anonymous session (and sets its cookie) when the request
    /// has none.
    async fn ensure_session(&self, slot: &mut Slot) -> Result<(), AuthRejection> {
        if slot.session.is_none() {
            let session = self
                .auth()
                .authenticator()
                .anonymous_session(self.client())
                .await?;
            slot.session = Some(session);
            slot.action = CookieAction::Set;
        }
        Ok(())
    }

    /// Checks a submitted form token (403 when it is missing or foreign).
    pub async fn verify_form_token(&self, token: Option<&str>) -> Result<(), AuthRejection> {
        let slot = self.slot().await?;
        Ok(self
            .auth()
            .verify_form_token(slot.session.as_ref(), token)?)
    }

    /// A typed value from the session's app data.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, AuthRejection> {
        match self.session().await? {
            Some(session) => session
                .get(key)
                .map_err(|e| AuthRejection(AuthError::from(e))),
            None => Ok(None),
        }
    }

    /// Stores a value in the session's app data, creating an anonymous
    /// session (and its cookie) when there is none.
    pub async fn insert<T: Serialize + Sync>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<(), AuthRejection> {
        let mut slot = self.slot().await?;
        self.ensure_session(&mut slot).await?;
        let sessions = self.auth().authenticator().sessions();
        let Some(session) = slot.session.as_mut() else {
            return Err(AuthRejection(AuthError::NotAuthenticated));
        };
        sessions
            .insert(session, key, value)
            .await
            .map_err(|e| AuthRejection(AuthError::from(e)))
    }
}

/// The authenticated user; rejects with 401 otherwise. `U` is the core
/// [`User`] by default, or any app type built from it (`U: From<User>`).
#[derive(Debug, Clone)]
pub struct CurrentUser<U = User>(pub U);

impl<S, U> FromRequestParts<S> for CurrentUser<U>
where
    S: Send + Sync,
    U: From<User> + Send,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let auth = AuthSession::from_request_parts(parts, state).await?;
        Ok(Self(U::from(auth.current_user().await?)))
    }
}

/// The authenticated user, if any; never rejects for lack of one.
#[derive(Debug, Clone)]
pub struct OptionalUser(pub Option<User>);

impl<S: Send + Sync> FromRequestParts<S> for OptionalUser {
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let auth = AuthSession::from_request_parts(parts, state).await?;
        match auth.current_user().await {
            Ok(user) => Ok(Self(Some(user))),
            Err(AuthRejection(AuthError::NotAuthenticated)) => Ok(Self(None)),
            Err(other) => Err(other),
        }
    }
}

/// The refusal of a guard: the core decides between the error and a
/// redirect to the login page.
fn reject(request: &Request, error: AuthError, auth: &AuthSession) -> Response {
    let accept = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let path = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    if let Some(location) = auth.auth().redirect_for(&error, accept, path)
        && let Ok(location) = HeaderValue::from_str(&location)
    {
        let mut response = StatusCode::SEE_OTHER.into_response();
        response.headers_mut().insert(header::LOCATION, location);
        return response;
    }
    AuthRejection(error).into_response()
}

type Check = fn(&auth_core::flow::Authenticator, Option<&Session>) -> Result<(), AuthError>;

async fn guard(request: Request, next: Next, check: Check) -> Response {
    let Some(state) = request.extensions().get::<Arc<RequestAuth>>() else {
        return missing_layer().into_response();
    };
    let auth = AuthSession {
        state: Arc::clone(state),
    };
    let session = match auth.session().await {
        Ok(session) => session,
        Err(rejection) => return rejection.into_response(),
    };
    match check(auth.auth().authenticator(), session.as_ref()) {
        Ok(()) => next.run(request).await,
        Err(error) => reject(&request, error, &auth),
    }
}

/// Route protection: an authenticated session is required. Use with
/// `route_layer(axum::middleware::from_fn(require_login))`.
pub async fn require_login(request: Request, next: Next) -> Response {
    guard(request, next, |auth, session| auth.require_login(session)).await
}

/// Route protection: a login within the configured recent-authentication
/// window (default 10 min) is required; otherwise 403.
pub async fn require_recent_login(request: Request, next: Next) -> Response {
    guard(request, next, |auth, session| match session {
        Some(session) => auth.require_recent(session),
        None => Err(AuthError::NotAuthenticated),
    })
    .await
}

/// Route protection: the session must have completed a second factor;
/// otherwise 403.
pub async fn require_mfa(request: Request, next: Next) -> Response {
    guard(request, next, |auth, session| auth.require_mfa(session)).await
}
