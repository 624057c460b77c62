//! # auth-rocket
//!
//! The Rocket 0.5 adapter of the auth toolkit. It only translates: every
//! decision is `auth-core`'s (see [`auth_core::web`] for the pipeline it
//! runs).
//!
//! * [`AuthFairing`]: attach it to the rocket. On every request it runs the
//!   core's cross-origin check and works out the client IP (from the socket
//!   peer, [`Request::remote`]; forwarding headers only from the core's
//!   trusted proxies, never Rocket's `ip_header`). A refused request (400
//!   for a Host outside the allow-list, 403 cross-origin, 500 without a
//!   peer address) never reaches a handler: the
//!   fairing reroutes it to an internal route that answers the refusal.
//!   After the handler it appends `Set-Cookie` when the session got a new ID
//!   or ended, and `Cache-Control: no-store` on personal responses. The
//!   session cookie is written as a raw `Set-Cookie` header; Rocket's
//!   `CookieJar` never sees it.
//! * Request guards: [`AuthSession`] (login, logout, change password, sign
//!   out everywhere, sessions, app data), [`CurrentUser`] (refuses as the login
//!   guard does without a login) and [`OptionalUser`].
//! * Route protection: the guards [`RequireLogin`], [`RequireRecentLogin`]
//!   and [`RequireMfa`]. API requests get JSON 401/403; browsers asking for
//!   HTML are redirected (303) to the login page with a safe `next`.
//! * Responses: [`AuthRejection`] (a core error) and [`ReplyResponder`] (any
//!   core [`Reply`], see [`reply`]) implement [`Responder`].
//!
//! ## How guard refusals become the core's exact response
//!
//! Rocket 0.5 catchers cannot see a guard's error value, so a failing guard
//! of this crate keeps the core's [`Reply`] in the request-local cache and
//! fails with its status; whatever catcher answers, [`AuthFairing`]'s
//! response hook then replaces that response with the stored reply (status,
//! JSON body, `Retry-After`, `Location`). No catcher has to be registered.
//!
//! ## Rocket specifics worth knowing
//!
//! * Rocket 0.5 drops request header values that are not UTF-8 before any
//!   fairing runs, so the core cannot see them (other adapters pass them
//!   on with U+FFFD). A forwarding header with such bytes therefore counts
//!   as absent: the client is the proxy itself. So does a `Cookie` line:
//!   a cookie with such a byte (planted by a sibling subdomain, say) hides
//!   every cookie sent on that line, and the browser looks signed out
//!   until it is removed; on axum and actix-web only that cookie is
//!   garbled.
//! * Rocket turns a form `POST` whose first field is `_method` into that
//!   method before fairings run. The cross-origin check is made for the
//!   method on the wire (`POST`), so `_method=get` cannot slip a
//!   cross-site form past it.
//! * Rocket's own log is not ours to redact: at its `normal` level it logs
//!   every request's path and query (the one-time token of a reset or
//!   magic link, `?token=...`), at `debug` every header (cookies and
//!   bearer tokens). Run with `log_level = "critical"` (or `off`) wherever
//!   such logs are kept, as the demo does.
//! * Even at `critical`, Rocket logs a failed data guard's error with
//!   `{:?}` (a `warn`), and the error of Rocket's own `Json` holds the raw
//!   body: a login form with a stray comma would log its password. Read
//!   secrets with this crate's [`Json`], which fails with the same status
//!   and an error that holds no part of the body. (Rocket's `Form` errors
//!   hold field values too: take forms with secrets as `Json`, or as a
//!   `String` you parse yourself.)
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
//! use auth_rocket::{Auth, AuthFairing, AuthSession, AuthRejection, CurrentUser, MemoryUserStore, Password, RequireLogin, User};
//! use rocket::local::asynchronous::Client;
//!
//! // `CurrentUser<MyUser>` gives your own user type; `User` is the ready one.
//! #[rocket::get("/me")]
//! fn me(_login: RequireLogin, user: CurrentUser<User>) -> String {
//!     user.display_name.clone()
//! }
//!
//! #[rocket::post("/login", data = "<password>")]
//! async fn login(auth: AuthSession, password: String) -> Result<&'static str, AuthRejection> {
//!     auth.login("alice", &Password::from(password)).await?;
//!     Ok("welcome")
//! }
//!
//! # #[rocket::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let auth = Auth::builder(MemoryUserStore::new()).build()?;
//! let config = rocket::Config { log_level: rocket::config::LogLevel::Off, ..rocket::Config::default() };
//! let rocket = rocket::custom(config)
//!     .mount("/", rocket::routes![me, login])
//!     .attach(AuthFairing::new(auth));
//!
//! let client = Client::untracked(rocket).await?;
//! // A real server knows the peer; the local client is told it.
//! let response = client
//!     .get("/me")
//!     .remote(SocketAddr::from(([127, 0, 0, 1], 40000)))
//!     .dispatch()
//!     .await;
//! assert_eq!(response.status().code, 401);
//! assert_eq!(
//!     response.into_string().await.as_deref(),
//!     Some(r#"{"error":"authentication required"}"#)
//! );
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::fmt;
use std::io::Cursor;
use std::ops::Deref;
use std::sync::{Arc, Mutex, PoisonError};

pub use auth_core;
use auth_core::web::{ResponseHeaders, SecurityHeaders};
pub use auth_core::{
    Auth, AuthError, AuthUser, Guard, LoginName, LoginOutcome, MemoryUserStore, NewUser, Password,
    Reply, RequestAuth, User, UserStore, UserStoreError,
};
use rocket::fairing::{self, Fairing, Info, Kind};
use rocket::http::{Method, Status};
use rocket::request::{FromRequest, Outcome};
use rocket::response::{self, Responder};
use rocket::route::{self, Handler, Route};
use rocket::{Build, Data, Request, Response, Rocket};

/// The internal route a refused request is rerouted to (the same literal
/// is in `on_request`'s `uri!`, checked at compile time).
const REFUSED_PATH: &str = "/__auth-rocket/refused";
/// Its rank: ahead of every default rank (-12..=-1) and of any sane
/// explicit one, so no app route answers a refused request first.
const REFUSED_RANK: isize = -1_000_000;
/// The method a refused request is given (a `HEAD` stays a `HEAD`): one
/// that apps practically never route, so the internal route costs the
/// requests they serve nothing.
const REFUSED_METHOD: Method = Method::Trace;

/// Installs the auth pipeline: `rocket.attach(AuthFairing::new(auth))`.
///
/// It needs the client's socket address ([`Request::remote`]): a Rocket
/// server always has it; with the local test client set it per request
/// (`.remote(addr)`). Without one every request is refused with a 500,
/// rather than throttling every client as one.
#[derive(Debug, Clone)]
pub struct AuthFairing {
    auth: Auth,
}

impl AuthFairing {
    /// The fairing for `auth`.
    pub fn new(auth: Auth) -> Self {
        Self { auth }
    }
}

/// What the fairing left for a request (request-local cache).
enum Begun {
    /// The fairing did not run (not attached).
    Missing,
    /// Admitted: the per-request auth state.
    Ready(Admitted),
    /// Refused by the core: the complete answer.
    Refused(Reply),
}

/// An admitted request: its auth state, and a guard's refusal waiting for
/// the fairing's response hook (the status the guard failed with and the
/// core's reply). One request-local entry for both.
struct Admitted {
    state: Arc<RequestAuth>,
    failure: Mutex<Option<(u16, Reply)>>,
}

fn begun<'a>(request: &'a Request<'_>) -> &'a Begun {
    request.local_cache(|| Begun::Missing)
}

/// The method the client sent. Rocket rewrites a form `POST` whose first
/// field is `_method` before fairings run; this undoes that for the
/// cross-origin check, so the check sees `POST`. The rule is Rocket's own
/// (0.5, `preprocess_request`): the first non-empty field of the first 14
/// bytes, so `&_method=get` counts too.
async fn wire_method(request: &Request<'_>, data: &mut Data<'_>) -> Method {
    let method = request.method();
    let is_form = request.content_type().is_some_and(|ct| ct.is_form());
    if method == Method::Post || !is_form {
        return method;
    }
    let (min_len, max_len) = ("_method=get".len(), "_method=delete".len());
    let peeked = data.peek(max_len).await;
    let overridden = peeked.len() >= min_len
        && std::str::from_utf8(peeked)
            .ok()
            .and_then(|raw| rocket::form::Form::values(raw).next())
            .filter(|field| field.name == "_method")
            .and_then(|field| field.value.parse::<Method>().ok())
            .is_some_and(|rewritten| rewritten == method);
    if overridden { Method::Post } else { method }
}

#[rocket::async_trait]
impl Fairing for AuthFairing {
    fn info(&self) -> Info {
        Info {
            name: "auth-rocket",
            kind: Kind::Ignite | Kind::Request | Kind::Response,
        }
    }

    async fn on_ignite(&self, rocket: Rocket<Build>) -> fairing::Result {
        // Under `TRACE` (and `HEAD`, whose answer Rocket sends without a
        // body): Rocket matches a request against every route of its method
        // in rank order, so a `GET` route here would be one more match for
        // every `GET` the app serves.
        let refused = |method| Route::ranked(REFUSED_RANK, method, REFUSED_PATH, RefusedHandler);
        Ok(rocket.mount("/", vec![refused(REFUSED_METHOD), refused(Method::Head)]))
    }

    async fn on_request(&self, request: &mut Request<'_>, data: &mut Data<'_>) {
        let method = wire_method(request, data).await;
        let begun = {
            // Rocket has already decoded the header values (and dropped the
            // ones that are not UTF-8). Borrowed, on the stack.
            let mut pairs: smallvec::SmallVec<[(Cow<'_, str>, Cow<'_, str>); 20]> =
                smallvec::SmallVec::new();
            pairs.extend(
                request
                    .headers()
                    .iter()
                    .map(|h| (h.name.into_cow(), h.value)),
            );
            // HTTP/2 carries the host in `:authority`, not in a Host header.
            if !pairs.iter().any(|(n, _)| n.eq_ignore_ascii_case("host"))
                && let Some(host) = request.host()
            {
                pairs.push((Cow::Borrowed("host"), Cow::Owned(host.to_string())));
            }
            self.auth.begin(
                method.as_str(),
                pairs.iter().map(|(n, v)| (n.as_ref(), v.as_ref())),
                request.remote().map(|peer| peer.ip()),
            )
        };
        match begun {
            Ok(state) => {
                request.local_cache(|| {
                    Begun::Ready(Admitted {
                        state: Arc::new(state),
                        failure: Mutex::new(None),
                    })
                });
            }
            Err(refusal) => {
                // A fairing cannot answer; reroute to the internal route that
                // answers the refusal, so no app handler runs.
                request.local_cache(|| Begun::Refused(refusal));
                if request.method() != Method::Head {
                    request.set_method(REFUSED_METHOD);
                }
                request.set_uri(rocket::uri!("/__auth-rocket/refused"));
            }
        }
    }

    async fn on_response<'r>(&self, request: &'r Request<'_>, response: &mut Response<'r>) {
        match begun(request) {
            Begun::Missing => {}
            // Answered by the internal route already; enforced here too, in
            // case an app route was ranked ahead of it.
            Begun::Refused(refusal) => overwrite(response, refusal.clone()),
            Begun::Ready(Admitted { state, failure }) => {
                let pending = failure
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
                // Only when the response is the catcher's answer to that
                // failure (a guard wrapped in `Option` lets the handler run).
                if let Some((status, refusal)) = pending
                    && response.status().code == status
                {
                    overwrite(response, refusal);
                }
                // The handler is done: the state is free (no wait, no
                // future), unless something still holds it.
                let finish = match state.try_finish() {
                    Some(finish) => finish,
                    None => state.finish().await,
                };
                finish.apply(&mut Headers(response));
            }
        }
    }
}

/// A response's headers as the core writes them
/// ([`Finish::apply`](auth_core::web::Finish::apply)).
struct Headers<'a, 'r>(&'a mut Response<'r>);

impl ResponseHeaders for Headers<'_, '_> {
    fn contains(&self, name: &str) -> bool {
        self.0.headers().contains(name)
    }

    /// One scan of the few headers a response has: Rocket's header map
    /// hashes a name byte by byte, which costs more than the scan.
    fn present(&self, security: &SecurityHeaders) -> u64 {
        let mut bits = 0;
        for header in self.0.headers().iter() {
            let name = header.name().as_str();
            for (i, (wanted, _)) in security.iter().take(64).enumerate() {
                if name.eq_ignore_ascii_case(wanted) {
                    bits |= 1 << i;
                }
            }
        }
        bits
    }

    fn set(&mut self, name: &'static str, value: Cow<'static, str>) {
        self.0.set_raw_header(name, value);
    }

    fn append(&mut self, name: &'static str, value: String) {
        self.0.adjoin_raw_header(name, value);
    }

    fn status(&self) -> Option<u16> {
        Some(self.0.status().code)
    }
}

/// Answers a request the fairing refused with the core's reply.
#[derive(Debug, Clone, Copy)]
struct RefusedHandler;

#[rocket::async_trait]
impl Handler for RefusedHandler {
    async fn handle<'r>(&self, request: &'r Request<'_>, data: Data<'r>) -> route::Outcome<'r> {
        match begun(request) {
            Begun::Refused(refusal) => route::Outcome::from(request, reply(refusal.clone())),
            // Requested directly: there is no such page.
            _ => route::Outcome::forward(data, Status::NotFound),
        }
    }
}

fn status(code: u16) -> Status {
    Status::from_code(code).unwrap_or(Status::InternalServerError)
}

/// Makes `response` exactly `reply`: status, headers, body.
fn overwrite(response: &mut Response<'_>, reply: Reply) {
    for name in ["Content-Type", "Location", "Retry-After"] {
        response.remove_header(name);
    }
    fill(response, reply);
}

/// Writes `reply`'s status, headers and body into `response`. An app may
/// build a `Reply` too: a header Rocket could not write (its name not an
/// HTTP token, its value with a control character) is logged and left
/// out, as in the other adapters; written, it would cost the whole
/// response (Rocket refuses it when it sends).
fn fill(response: &mut Response<'_>, reply: Reply) {
    response.set_status(status(reply.status));
    for (name, value) in reply.headers {
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        let text = |b: u8| b == b'\t' || (b >= 0x20 && b != 0x7f);
        if name.is_empty() || !name.bytes().all(token) || !value.bytes().all(text) {
            tracing::error!(
                header = %name.escape_debug(),
                "auth-rocket: a reply header that is not valid HTTP was left out"
            );
            continue;
        }
        response.set_raw_header(name, value);
    }
    let body = reply.body.into_bytes();
    response.set_sized_body(body.len(), Cursor::new(body));
}

/// A core [`Reply`] as a Rocket response (status, headers and body as the
/// core decided them). Build it with [`reply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyResponder(pub Reply);

/// A core [`Reply`] as a Rocket [`Responder`].
pub fn reply(reply: Reply) -> ReplyResponder {
    ReplyResponder(reply)
}

impl<'r> Responder<'r, 'static> for ReplyResponder {
    fn respond_to(self, _request: &'r Request<'_>) -> response::Result<'static> {
        // A new response has no header to remove.
        let mut response = Response::new();
        fill(&mut response, self.0);
        Ok(response)
    }
}

/// A core error as a Rocket response: the status, `Retry-After` and JSON
/// body all come from `auth-core`. It is also the error of every guard of
/// this crate.
pub struct AuthRejection(pub AuthError);

/// Only what the client may see (Rocket logs guard errors with `Debug`;
/// an internal error's source stays out of it).
impl fmt::Debug for AuthRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

impl<'r> Responder<'r, 'static> for AuthRejection {
    fn respond_to(self, request: &'r Request<'_>) -> response::Result<'static> {
        reply(Reply::error(&self.0)).respond_to(request)
    }
}

/// Fails a guard with `error`, leaving `refusal` for the fairing to answer.
fn fail<S>(request: &Request<'_>, error: AuthError, refusal: Reply) -> Outcome<S, AuthRejection> {
    let code = error.status();
    // Without an admitted request the fairing's response hook has nothing
    // to finish: the catcher answers (the guard's state lookup has already
    // logged why).
    if let Begun::Ready(Admitted { failure, .. }) = begun(request) {
        *failure.lock().unwrap_or_else(PoisonError::into_inner) = Some((code, refusal));
    }
    Outcome::Error((status(code), AuthRejection(error)))
}

fn fail_with<S>(request: &Request<'_>, error: AuthError) -> Outcome<S, AuthRejection> {
    let refusal = Reply::error(&error);
    fail(request, error, refusal)
}

/// The request's auth state, or a clear 500 when the fairing is missing.
fn state(request: &Request<'_>) -> Result<Arc<RequestAuth>, AuthError> {
    match begun(request) {
        Begun::Ready(Admitted { state, .. }) => Ok(Arc::clone(state)),
        Begun::Missing | Begun::Refused(_) => {
            tracing::error!("auth-rocket: attach AuthFairing to the rocket to use its guards");
            Err(AuthError::Internal("AuthFairing is not attached".into()))
        }
    }
}

/// The auth handle of one request: the session (loaded on first use) and
/// every flow that changes it. It dereferences to the core's
/// [`RequestAuth`], whose methods (`login`, `logout`, `current_user`,
/// `change_password`, `rotate`, `sign_out_everywhere`, `list_sessions`,
/// `revoke`, `form_token`, `verify_form_token`, `get`, `insert`) return
/// [`AuthError`]; `?` turns that into an [`AuthRejection`].
#[derive(Clone)]
pub struct AuthSession {
    state: Arc<RequestAuth>,
}

/// Redacted: the request's cookies stay out of logs.
impl fmt::Debug for AuthSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthSession").finish_non_exhaustive()
    }
}

impl Deref for AuthSession {
    type Target = RequestAuth;

    fn deref(&self) -> &RequestAuth {
        &self.state
    }
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for AuthSession {
    type Error = AuthRejection;

    async fn from_request(request: &'r Request<'_>) -> Outcome<Self, AuthRejection> {
        match state(request) {
            Ok(state) => Outcome::Success(Self { state }),
            Err(error) => fail_with(request, error),
        }
    }
}

/// The authenticated user as the app's own type `U` (the user store's
/// [`AuthUser`] type, always named: `CurrentUser<MyUser>`, or
/// `CurrentUser<User>` for the toolkit's ready [`User`]; no default, so
/// forgetting it is a compile error, not a 500), read once
/// per request with the session and shared without a copy. Without one it
/// fails as [`RequireLogin`] does (a browser asking for HTML is redirected
/// to the login page, an API client gets JSON 401, a bearer request's 401
/// carries `WWW-Authenticate`), so it protects a route by itself.
/// Dereferences to `U`. For a route open to visitors take [`OptionalUser`],
/// not `Option<CurrentUser>`: a refused guard's answer replaces any
/// response of its status (the fairing cannot tell a catcher's 401 from
/// the handler's own).
#[derive(Debug)]
pub struct CurrentUser<U>(pub Arc<U>);

impl<U> Deref for CurrentUser<U> {
    type Target = U;

    fn deref(&self) -> &U {
        &self.0
    }
}

#[rocket::async_trait]
impl<'r, U: AuthUser> FromRequest<'r> for CurrentUser<U> {
    type Error = AuthRejection;

    async fn from_request(request: &'r Request<'_>) -> Outcome<Self, AuthRejection> {
        let state = match state(request) {
            Ok(state) => state,
            Err(error) => return fail_with(request, error),
        };
        match state.current_user::<U>().await {
            Ok(user) => Outcome::Success(Self(user)),
            Err(error) => refuse(request, &state, error),
        }
    }
}

/// The authenticated user as `U`, if any; never fails for lack of one
/// (store failures still answer 500).
#[derive(Debug)]
pub struct OptionalUser<U>(pub Option<Arc<U>>);

#[rocket::async_trait]
impl<'r, U: AuthUser> FromRequest<'r> for OptionalUser<U> {
    type Error = AuthRejection;

    async fn from_request(request: &'r Request<'_>) -> Outcome<Self, AuthRejection> {
        let state = match state(request) {
            Ok(state) => state,
            Err(error) => return fail_with(request, error),
        };
        match state.optional_user::<U>().await {
            Ok(user) => Outcome::Success(Self(user)),
            Err(error) => fail_with(request, error),
        }
    }
}

/// Runs a route protection; on refusal, the core's answer for this request
/// (a redirect to the login page for browsers, else the JSON error).
async fn protect<S>(request: &Request<'_>, guard: Guard, ok: S) -> Outcome<S, AuthRejection> {
    let state = match state(request) {
        Ok(state) => state,
        Err(error) => return fail_with(request, error),
    };
    match state.check(guard).await {
        Ok(()) => Outcome::Success(ok),
        Err(error) => refuse(request, &state, error),
    }
}

/// Fails a request a route protection (or [`CurrentUser`]) refused, with
/// the core's answer for it.
fn refuse<S>(
    request: &Request<'_>,
    state: &RequestAuth,
    error: AuthError,
) -> Outcome<S, AuthRejection> {
    let accept = request.headers().get_one("Accept");
    let path = request.uri().to_string();
    let refusal = state.refusal(&error, accept, &path);
    fail(request, error, refusal)
}

/// Route protection: an authenticated session is required. Put it first
/// among a handler's guards: `fn account(_: RequireLogin, ...)`.
#[derive(Debug, Clone, Copy)]
pub struct RequireLogin;

#[rocket::async_trait]
impl<'r> FromRequest<'r> for RequireLogin {
    type Error = AuthRejection;

    async fn from_request(request: &'r Request<'_>) -> Outcome<Self, AuthRejection> {
        protect(request, Guard::Login, Self).await
    }
}

/// Route protection: a login within the configured recent-authentication
/// window (default 10 min) is required; otherwise 403.
#[derive(Debug, Clone, Copy)]
pub struct RequireRecentLogin;

#[rocket::async_trait]
impl<'r> FromRequest<'r> for RequireRecentLogin {
    type Error = AuthRejection;

    async fn from_request(request: &'r Request<'_>) -> Outcome<Self, AuthRejection> {
        protect(request, Guard::RecentLogin, Self).await
    }
}

/// Route protection: the session must have completed a second factor;
/// otherwise 403.
#[derive(Debug, Clone, Copy)]
pub struct RequireMfa;

#[rocket::async_trait]
impl<'r> FromRequest<'r> for RequireMfa {
    type Error = AuthRejection;

    async fn from_request(request: &'r Request<'_>) -> Outcome<Self, AuthRejection> {
        protect(request, Guard::Mfa, Self).await
    }
}

/// A JSON request body: Rocket's `rocket::serde::json::Json`, whose error
/// never holds the body.
///
/// Rocket logs a failed data guard's error with `{:?}` at `warn`, which
/// its `critical` level still prints, and the error of Rocket's `Json`
/// holds the raw body (a malformed login form would log its password).
/// This guard reads the body the same way (the `json` limit, 400 for
/// malformed JSON, 422 for JSON of the wrong shape) and fails with a
/// [`BodyRefused`], which says only the status. `Debug` shows no field.
pub struct Json<T>(pub T);

impl<T> Json<T> {
    /// The body.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Json<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Json<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Json(..)")
    }
}

/// Why [`Json`] refused a body: its status only (never a byte of the
/// body, which Rocket would log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyRefused(pub Status);

impl fmt::Display for BodyRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request body refused ({})", self.0)
    }
}

impl std::error::Error for BodyRefused {}

#[rocket::async_trait]
impl<'r, T: rocket::serde::Deserialize<'r>> rocket::data::FromData<'r> for Json<T> {
    type Error = BodyRefused;

    async fn from_data(
        request: &'r Request<'_>,
        data: Data<'r>,
    ) -> rocket::data::Outcome<'r, Self> {
        use rocket::outcome::Outcome as Of;
        match rocket::serde::json::Json::<T>::from_data(request, data).await {
            Of::Success(body) => Of::Success(Self(body.into_inner())),
            // Rocket's error (it holds the body) is dropped here.
            Of::Error((status, _)) => Of::Error((status, BodyRefused(status))),
            Of::Forward(forward) => Of::Forward(forward),
        }
    }
}
