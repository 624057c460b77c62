//! The axum-specific plumbing: `RequireLayer` and the `from_fn` guards
//! answer alike, nothing passes without the `AuthLayer`, and a response
//! waits for an operation a handler left running on the request's auth
//! state (the rare path of `AuthFuture`).

use std::net::SocketAddr;
use std::sync::Arc;

use auth_axum::{
    Auth, AuthLayer, AuthSession, AuthUser, CurrentUser, LoginName, MemoryUserStore, NewUser,
    Password, RequireLayer, User, UserStore, UserStoreError, require_login,
};
use auth_core::flow::Client;
use auth_core::password::{PasswordHasher, PasswordService};
use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::middleware::from_fn;
use axum::routing::{get, post};
use http::{Request, StatusCode, header};
use tokio::sync::{Mutex, mpsc};
use tower::ServiceExt;

const PASSWORD: &str = "correct horse battery staple";

/// The memory user store; reads by login name wait while `gate` is held.
#[derive(Debug)]
struct GatedUsers {
    inner: MemoryUserStore,
    gate: Mutex<()>,
}

impl UserStore for GatedUsers {
    type User = User;

    async fn find_by_login(&self, login: &LoginName) -> Result<Option<User>, UserStoreError> {
        drop(self.gate.lock().await);
        self.inner.find_by_login(login).await
    }
    async fn find_by_id(&self, id: &String) -> Result<Option<User>, UserStoreError> {
        self.inner.find_by_id(id).await
    }
    async fn create(&self, user: NewUser) -> Result<User, UserStoreError> {
        self.inner.create(user).await
    }
    async fn set_password_hash(
        &self,
        id: &String,
        current: &str,
        new: &str,
    ) -> Result<bool, UserStoreError> {
        self.inner.set_password_hash(id, current, new).await
    }
}

/// An `Auth` on memory stores with a cheap hasher, and its user store.
async fn auth() -> (Auth, Arc<GatedUsers>) {
    auth_on(Arc::new(auth_core::clock::SystemClock)).await
}

/// [`auth`] on `clock`.
async fn auth_on(clock: Arc<dyn auth_core::clock::Clock>) -> (Auth, Arc<GatedUsers>) {
    let hasher = PasswordHasher::insecure_for_tests().expect("test hasher");
    let passwords = PasswordService::builder()
        .hasher(hasher)
        .build()
        .expect("password service");
    let users = Arc::new(GatedUsers {
        inner: MemoryUserStore::new(),
        gate: Mutex::new(()),
    });
    let auth = Auth::builder(users.clone())
        .clock(clock)
        .passwords(passwords)
        .build()
        .expect("auth");
    auth.authenticator()
        .register(
            "alice",
            &Password::from(PASSWORD),
            &Client::new([192, 0, 2, 1].into()),
        )
        .await
        .expect("register");
    (auth, users)
}

fn peer() -> MockConnectInfo<SocketAddr> {
    MockConnectInfo(SocketAddr::from(([192, 0, 2, 1], 40000)))
}

async fn who(CurrentUser(user): CurrentUser<User>) -> String {
    user.display_name.clone()
}

async fn login(auth: AuthSession) -> StatusCode {
    match auth.login("alice", &Password::from(PASSWORD)).await {
        Ok(_) => StatusCode::OK,
        Err(_) => StatusCode::UNAUTHORIZED,
    }
}

fn get_request(path: &str, accept: &str, cookie: Option<&str>) -> Request<Body> {
    let mut request = Request::get(path).header(header::ACCEPT, accept);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    request.body(Body::empty()).expect("request")
}

/// `(status, Location, body)` of one request.
async fn send(app: &Router, request: Request<Body>) -> (StatusCode, Option<String>, Vec<u8>) {
    use http_body_util::BodyExt;
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let location = response
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.into_body().collect().await.expect("body");
    (status, location, body.to_bytes().to_vec())
}

#[tokio::test]
async fn the_layer_and_the_from_fn_guard_answer_alike() {
    let (auth, _) = auth().await;
    let app = Router::new()
        .route("/layer", get(who).route_layer(RequireLayer::login()))
        .route("/from-fn", get(who).route_layer(from_fn(require_login)))
        .route("/login", post(login))
        .layer(AuthLayer::new(auth))
        .layer(peer());
    let login = Request::post("/login")
        .header(header::HOST, "example.test")
        .header("sec-fetch-site", "same-origin")
        .body(Body::empty())
        .expect("request");
    let response = app.clone().oneshot(login).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = response
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("login sets the cookie")
        .to_owned();
    for cookie in [None, Some("__Host-session=forged"), Some(cookie.as_str())] {
        for accept in ["application/json", "text/html"] {
            let layer = send(&app, get_request("/layer?x=1", accept, cookie)).await;
            let mut from_fn = send(&app, get_request("/from-fn?x=1", accept, cookie)).await;
            // The same `next`, but for the path.
            from_fn.1 = from_fn.1.map(|l| l.replace("from-fn", "layer"));
            assert_eq!(layer, from_fn, "{cookie:?} {accept}");
            let expected = match (cookie, accept) {
                (Some(c), _) if !c.ends_with("forged") => StatusCode::OK,
                (_, "text/html") => StatusCode::SEE_OTHER,
                _ => StatusCode::UNAUTHORIZED,
            };
            assert_eq!(layer.0, expected, "{cookie:?} {accept}");
        }
    }
}

#[tokio::test]
async fn a_guard_without_the_auth_layer_refuses_and_never_runs_the_handler() {
    let app = Router::new()
        .route(
            "/",
            get(|| async { "handler ran" }).route_layer(RequireLayer::login()),
        )
        .layer(peer());
    let (status, _, body) = send(&app, get_request("/", "application/json", None)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!String::from_utf8_lossy(&body).contains("handler ran"));
}

/// A type that is not the user store's.
struct NotTheStoresUser;

impl AuthUser for NotTheStoresUser {
    type Id = u64;
    fn id(&self) -> u64 {
        0
    }
    fn login(&self) -> &str {
        ""
    }
    fn password_hash(&self) -> &str {
        ""
    }
}

/// `CurrentUser<U>` for another type than the store yields is a
/// programming error: 500, the handler never runs; the right type passes.
#[tokio::test]
async fn current_user_of_another_type_than_the_store_answers_500() {
    let (auth, _) = auth().await;
    let app = Router::new()
        .route(
            "/wrong",
            get(|_user: CurrentUser<NotTheStoresUser>| async { "handler ran" }),
        )
        .route("/right", get(who))
        .route("/login", post(login))
        .layer(AuthLayer::new(auth))
        .layer(peer());
    let login = Request::post("/login")
        .body(Body::empty())
        .expect("request");
    let response = app.clone().oneshot(login).await.expect("infallible");
    let cookie = response
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("login sets the cookie")
        .to_owned();
    let (status, _, body) = send(&app, get_request("/wrong", "*/*", Some(&cookie))).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let body = String::from_utf8_lossy(&body);
    assert!(!body.contains("handler ran"));
    assert!(
        !body.contains("NotTheStoresUser"),
        "type names stay in the log"
    );
    let (status, _, body) = send(&app, get_request("/right", "*/*", Some(&cookie))).await;
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::OK, b"alice".as_slice())
    );
}

#[tokio::test]
async fn without_a_client_address_the_layer_answers_500() {
    let (auth, _) = auth().await;
    let app = Router::new()
        .route("/", get(|| async { "handler ran" }))
        .layer(AuthLayer::new(auth));
    let (status, _, body) = send(&app, get_request("/", "application/json", None)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!String::from_utf8_lossy(&body).contains("handler ran"));
}

/// A handler returns while a login it spawned is still running on the
/// request's auth state: the response waits for it, and carries its
/// cookie, instead of being sent without one.
#[tokio::test]
async fn the_response_waits_for_an_operation_the_handler_left_running() {
    let (auth, users) = auth().await;
    let (returned_tx, mut returned_rx) = mpsc::unbounded_channel::<()>();
    let handler = move |auth: AuthSession| {
        let returned = returned_tx.clone();
        async move {
            let running = auth.clone();
            tokio::spawn(async move {
                let _ = running.login("alice", &Password::from(PASSWORD)).await;
            });
            // Until the spawned login holds the state (it waits on the
            // gated user store).
            let mut yields = 0;
            while auth.try_finish().is_some() {
                yields += 1;
                assert!(yields < 100_000, "the spawned login never took the state");
                tokio::task::yield_now().await;
            }
            let _ = returned.send(());
            "returned"
        }
    };
    let app = Router::new()
        .route("/spawn", post(handler))
        .layer(AuthLayer::new(auth))
        .layer(peer());
    let gate = users.gate.lock().await;
    let request = Request::post("/spawn")
        .header(header::HOST, "example.test")
        .header("sec-fetch-site", "same-origin")
        .body(Body::empty())
        .expect("request");
    let release = async move {
        returned_rx.recv().await.expect("the handler returned");
        // The response is now waiting on the login; let it finish.
        drop(gate);
    };
    let (response, ()) = tokio::join!(app.oneshot(request), release);
    let response = response.expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = response
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        cookie.starts_with("__Host-"),
        "the login's cookie: {cookie:?}"
    );
    assert_eq!(
        response
            .headers()
            .get(header::CACHE_CONTROL)
            .map(|v| v.as_bytes()),
        Some(b"no-store".as_slice())
    );
}

/// A `Reply` an app builds itself, with a header name in capitals and an
/// invalid one: the first is sent, the second left out, never a panic.
#[test]
fn an_app_built_reply_with_odd_header_names_never_panics() {
    let response = auth_axum::reply(auth_core::web::Reply {
        status: 200,
        headers: vec![("X-App", "1".into()), ("bad name", "x".into())],
        body: String::new(),
    });
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response
            .headers()
            .get("x-app")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert!(response.headers().keys().all(|name| name != "bad name"));
}

/// A reply's type is the one its headers say: a redirect or an empty
/// answer gets no `Content-Type` (axum's `String` body would add
/// `text/plain`), JSON keeps `application/json`.
#[test]
fn a_reply_without_a_type_gets_none() {
    let redirect = auth_axum::reply(auth_core::web::Reply::redirect("/login".to_owned()));
    assert_eq!(redirect.status(), StatusCode::SEE_OTHER);
    assert_eq!(redirect.headers().get(header::CONTENT_TYPE), None);
    let empty = auth_axum::reply(auth_core::web::Reply {
        status: 204,
        headers: Vec::new(),
        body: String::new(),
    });
    assert_eq!(empty.headers().get(header::CONTENT_TYPE), None);
    let json = auth_axum::reply(auth_core::web::Reply::json(200, "{}".to_owned()));
    assert_eq!(
        json.headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.as_bytes()),
        Some(&b"application/json"[..])
    );
}

/// Under `Router::nest`, a refused browser is sent to the login page with
/// the whole path it asked for, prefix included.
#[tokio::test]
async fn a_nested_route_sends_the_whole_path_as_next() {
    let app = nested(get(who).route_layer(RequireLayer::login())).await;
    let (status, location, _) = send(&app, get_request("/admin/users", "text/html", None)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location.as_deref(), Some("/login?next=/admin/users"));
}

/// An app whose `route` is `/users` under `Router::nest("/admin", ..)`.
async fn nested(route: axum::routing::MethodRouter) -> Router {
    let (auth, _) = auth().await;
    Router::new()
        .nest("/admin", Router::new().route("/users", route))
        .layer(AuthLayer::new(auth))
        .layer(peer())
}

/// `CurrentUser` alone protects a route, as the guard does: a browser is
/// sent to the login page with the whole path (under `nest` too), an API
/// client gets JSON 401.
#[tokio::test]
async fn current_user_alone_refuses_as_the_login_guard() {
    let app = nested(get(who)).await;
    let (status, location, _) = send(&app, get_request("/admin/users", "text/html", None)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location.as_deref(), Some("/login?next=/admin/users"));
    let (status, location, body) =
        send(&app, get_request("/admin/users", "application/json", None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(location, None);
    let body = String::from_utf8_lossy(&body);
    assert!(body.starts_with("{\"error\":"), "{body}");
}

/// A rejection's `Debug` (what frameworks and apps log) shows only what
/// the client sees: an internal error's source, which may be a driver's
/// text with a connection string in it, stays out.
#[test]
fn rejections_do_not_debug_print_internal_sources() {
    for error in [
        auth_core::flow::AuthError::Internal("postgres://user:hunter2@db failed".into()),
        auth_core::flow::AuthError::Unavailable("redis://:hunter2@cache refused".into()),
    ] {
        let status = error.status().to_string();
        let debug = format!("{:?}", auth_axum::AuthRejection(error));
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains(&status), "{debug}");
    }
}

/// The recent-login guard, as a layer and as a `from_fn` guard, refuses a
/// login older than the window (10 minutes) with 403 and passes a fresh
/// one: it is wired to its own check, not the plain login's.
#[tokio::test]
async fn the_recent_login_guard_refuses_a_stale_login() {
    use auth_core::clock::ManualClock;
    let clock = ManualClock::starting_now();
    let (auth, _) = auth_on(Arc::new(clock.clone())).await;
    let app = Router::new()
        .route("/layer", get(who).route_layer(RequireLayer::recent_login()))
        .route(
            "/from-fn",
            get(who).route_layer(from_fn(auth_axum::require_recent_login)),
        )
        .route("/login", post(login))
        .layer(AuthLayer::new(auth))
        .layer(peer());
    let response = app
        .clone()
        .oneshot(
            Request::post("/login")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("__Host-session="))
        .and_then(|v| v.split(';').next())
        .expect("a session cookie")
        .to_owned();
    for path in ["/layer", "/from-fn"] {
        let (status, _, _) = send(&app, get_request(path, "application/json", Some(&cookie))).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    clock.advance(std::time::Duration::from_secs(11 * 60));
    for path in ["/layer", "/from-fn"] {
        let (status, _, _) = send(&app, get_request(path, "application/json", Some(&cookie))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
    }
}
