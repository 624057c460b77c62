//! The adapter's own promises, beyond the conformance suite: refused
//! requests never reach a handler, guard refusals are the core's exact
//! reply, Rocket's cookie jar leaves the session cookie alone, and a
//! missing fairing is a clear 500, not a panic.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use auth_core::clock::ManualClock;
use auth_core::password::{PasswordHasher, PasswordService};
use auth_rocket::{Auth, MemoryUserStore, Password, User};
use auth_rocket::{
    AuthFairing, AuthRejection, AuthSession, CurrentUser, OptionalUser, RequireLogin, RequireMfa,
    RequireRecentLogin,
};
use rocket::http::{ContentType, Cookie, CookieJar, Header, Method, Status};
use rocket::local::asynchronous::{Client, LocalRequest, LocalResponse};
use rocket::{Build, Rocket, State, get, post, routes};

const PASSWORD: &str = "correct horse battery staple";

/// How many times a state-changing handler ran.
#[derive(Default)]
struct Calls(AtomicUsize);

fn auth() -> Auth {
    let hasher = PasswordHasher::insecure_for_tests().unwrap();
    Auth::builder(MemoryUserStore::new())
        .clock(Arc::new(ManualClock::starting_now()))
        .passwords(PasswordService::builder().hasher(hasher).build().unwrap())
        .build()
        .unwrap()
}

#[post("/register")]
async fn register(auth: AuthSession) -> Result<&'static str, AuthRejection> {
    auth.register("alice", &Password::from(PASSWORD)).await?;
    Ok("registered")
}

#[post("/login", data = "<password>")]
async fn login(
    auth: AuthSession,
    calls: &State<Calls>,
    password: String,
) -> Result<&'static str, AuthRejection> {
    calls.0.fetch_add(1, Ordering::SeqCst);
    auth.login("alice", &Password::from(password)).await?;
    Ok("welcome")
}

/// Logs in and also sets an app cookie through Rocket's jar.
#[post("/login-with-jar")]
async fn login_with_jar(
    auth: AuthSession,
    jar: &CookieJar<'_>,
) -> Result<&'static str, AuthRejection> {
    jar.add(Cookie::new("theme", "dark"));
    auth.login("alice", &Password::from(PASSWORD)).await?;
    Ok("welcome")
}

#[get("/touch-jar")]
fn touch_jar(_user: CurrentUser<User>, jar: &CookieJar<'_>) -> String {
    // Reading the jar (Rocket parsed our cookie into it) must not make
    // Rocket send anything back.
    jar.get("__Host-session")
        .map(|_| "seen")
        .unwrap_or("none")
        .to_owned()
}

#[get("/me")]
fn me(_login: RequireLogin, user: CurrentUser<User>) -> String {
    user.display_name.clone()
}

#[get("/mfa")]
fn mfa(_mfa: RequireMfa) -> &'static str {
    "secret"
}

#[get("/recent")]
fn recent(_recent: RequireRecentLogin) -> &'static str {
    "fresh"
}

#[get("/maybe")]
fn maybe(user: OptionalUser<User>) -> String {
    user.0
        .map_or("anonymous".to_owned(), |u| u.display_name.clone())
}

/// A guard wrapped in `Option` lets the handler answer.
#[get("/optional-guard")]
fn optional_guard(user: Option<CurrentUser<User>>) -> (Status, &'static str) {
    match user {
        Some(_) => (Status::Ok, "user"),
        None => (Status::Ok, "handler answered"),
    }
}

#[get("/state")]
fn read_only(calls: &State<Calls>) -> String {
    calls.0.load(Ordering::SeqCst).to_string()
}

/// Catch-all routes of the app, counted as handler calls: a refused
/// request must not reach them either (the `TRACE` one, mounted in
/// [`rocket`], is ranked just behind the fairing's internal route; the
/// `GET` and `POST` ones answer what no other route does).
#[derive(Clone)]
struct AnyTrace;

#[rocket::async_trait]
impl rocket::route::Handler for AnyTrace {
    async fn handle<'r>(
        &self,
        request: &'r rocket::Request<'_>,
        _data: rocket::Data<'r>,
    ) -> rocket::route::Outcome<'r> {
        if let Some(calls) = request.rocket().state::<Calls>() {
            calls.0.fetch_add(1, Ordering::SeqCst);
        }
        rocket::route::Outcome::from(request, "app")
    }
}

#[get("/<_..>", rank = 100)]
fn any_get(calls: &State<Calls>) -> &'static str {
    calls.0.fetch_add(1, Ordering::SeqCst);
    "app"
}

#[post("/<_..>", rank = 100)]
fn any_post(calls: &State<Calls>) -> &'static str {
    calls.0.fetch_add(1, Ordering::SeqCst);
    "app"
}

fn rocket() -> Rocket<Build> {
    rocket_on(auth())
}

/// The test routes with `auth`'s fairing.
fn rocket_on(auth: Auth) -> Rocket<Build> {
    let config = rocket::Config {
        log_level: rocket::config::LogLevel::Off,
        ..rocket::Config::default()
    };
    rocket::custom(config)
        .manage(Calls::default())
        .mount(
            "/",
            routes![
                register,
                login,
                login_with_jar,
                touch_jar,
                me,
                mfa,
                recent,
                maybe,
                optional_guard,
                read_only,
                any_get,
                any_post
            ],
        )
        // (Rocket's route attribute takes no `TRACE`.)
        .mount(
            "/",
            vec![rocket::Route::ranked(
                -999_999,
                Method::Trace,
                "/<_..>",
                AnyTrace,
            )],
        )
        .attach(AuthFairing::new(auth))
}

async fn client() -> Client {
    Client::untracked(rocket()).await.unwrap()
}

fn peer() -> SocketAddr {
    SocketAddr::from(([198, 51, 100, 7], 40000))
}

fn from_peer(request: LocalRequest<'_>) -> LocalRequest<'_> {
    request
        .remote(peer())
        .header(Header::new("Host", "demo.test"))
}

fn set_cookies(response: &LocalResponse<'_>) -> Vec<String> {
    response
        .headers()
        .get("Set-Cookie")
        .map(str::to_owned)
        .collect()
}

async fn logged_in(client: &Client) -> String {
    let r = from_peer(client.post("/register")).dispatch().await;
    assert_eq!(r.status(), Status::Ok);
    let r = from_peer(client.post("/login"))
        .body(PASSWORD)
        .dispatch()
        .await;
    assert_eq!(r.status(), Status::Ok);
    let cookie = set_cookies(&r)
        .into_iter()
        .find(|c| c.starts_with("__Host-session="))
        .expect("a session cookie");
    cookie.split(';').next().unwrap().to_owned()
}

fn calls(client: &Client) -> usize {
    client
        .rocket()
        .state::<Calls>()
        .unwrap()
        .0
        .load(Ordering::SeqCst)
}

#[rocket::async_test]
async fn a_cross_site_post_never_reaches_the_handler() {
    let client = client().await;
    from_peer(client.post("/register")).dispatch().await;
    let r = from_peer(client.post("/login"))
        .header(Header::new("Sec-Fetch-Site", "cross-site"))
        .body(PASSWORD)
        .dispatch()
        .await;
    assert_eq!(r.status(), Status::Forbidden);
    assert_eq!(r.content_type(), Some(ContentType::JSON));
    assert!(set_cookies(&r).is_empty());
    assert!(r.into_string().await.unwrap().contains("\"error\""));
    assert_eq!(calls(&client), 0, "the login handler ran");
}

#[rocket::async_test]
async fn a_method_override_does_not_hide_a_cross_site_post() {
    let client = client().await;
    // Rocket turns these POSTs into GETs before fairings run (the first
    // non-empty field counts); the check is made for the POST that was
    // sent.
    for body in ["_method=get", "&_method=get", "&&_method=GET"] {
        let r = from_peer(client.post("/state"))
            .header(ContentType::Form)
            .header(Header::new("Sec-Fetch-Site", "cross-site"))
            .body(body)
            .dispatch()
            .await;
        assert_eq!(r.status(), Status::Forbidden, "{body}");
    }
    // Same-origin, the override works as Rocket documents it.
    let r = from_peer(client.post("/state"))
        .header(ContentType::Form)
        .header(Header::new("Sec-Fetch-Site", "same-origin"))
        .body("_method=get")
        .dispatch()
        .await;
    assert_eq!(r.status(), Status::Ok);
}

#[rocket::async_test]
async fn without_a_peer_address_nothing_runs() {
    let client = client().await;
    let r = client
        .post("/login")
        .header(Header::new("Host", "demo.test"))
        .body(PASSWORD)
        .dispatch()
        .await;
    assert_eq!(r.status(), Status::InternalServerError);
    assert_eq!(
        r.into_string().await.unwrap(),
        r#"{"error":"internal error"}"#
    );
    assert_eq!(calls(&client), 0);
    // A HEAD is refused the same way, without a body.
    let r = client.head("/me").dispatch().await;
    assert_eq!(r.status(), Status::InternalServerError);
    assert_eq!(r.into_string().await.unwrap_or_default(), "");
    assert_eq!(calls(&client), 0);
}

#[rocket::async_test]
async fn the_internal_route_is_not_a_page() {
    let client = client().await;
    // Asked for directly, it passes the request on to the app's routes
    // (here its catch-alls).
    for method in [Method::Trace, Method::Get, Method::Head] {
        let r = from_peer(client.req(method, "/__auth-rocket/refused"))
            .dispatch()
            .await;
        assert_eq!(r.status(), Status::Ok, "{method}");
        let body = if method == Method::Head { "" } else { "app" };
        assert_eq!(r.into_string().await.unwrap_or_default(), body, "{method}");
    }
    // Without the app's catch-alls, nothing answers it.
    let bare = rocket::custom(rocket::Config {
        log_level: rocket::config::LogLevel::Off,
        ..rocket::Config::default()
    })
    .attach(AuthFairing::new(auth()));
    let client = Client::untracked(bare).await.unwrap();
    for method in [Method::Trace, Method::Get, Method::Head] {
        let r = from_peer(client.req(method, "/__auth-rocket/refused"))
            .dispatch()
            .await;
        assert_eq!(r.status(), Status::NotFound, "{method}");
    }
}

#[rocket::async_test]
async fn guard_refusals_are_the_cores_reply() {
    let client = client().await;
    let r = from_peer(client.get("/me")).dispatch().await;
    assert_eq!(r.status(), Status::Unauthorized);
    assert_eq!(r.content_type(), Some(ContentType::JSON));
    assert_eq!(
        r.into_string().await.unwrap(),
        r#"{"error":"authentication required"}"#
    );

    let r = from_peer(client.get("/me?tab=1"))
        .header(Header::new("Accept", "text/html"))
        .dispatch()
        .await;
    assert_eq!(r.status(), Status::SeeOther);
    assert_eq!(
        r.headers().get_one("Location"),
        Some("/login?next=/me%3Ftab%3D1")
    );
    assert_eq!(r.content_type(), None);
    assert_eq!(r.into_string().await.unwrap_or_default(), "");

    let cookie = logged_in(&client).await;
    let r = from_peer(client.get("/mfa"))
        .header(Header::new("Cookie", cookie.clone()))
        .dispatch()
        .await;
    assert_eq!(r.status(), Status::Forbidden);
    assert_eq!(r.headers().get_one("Cache-Control"), Some("no-store"));
    assert!(r.into_string().await.unwrap().contains("second factor"));
    let r = from_peer(client.get("/recent"))
        .header(Header::new("Cookie", cookie.clone()))
        .dispatch()
        .await;
    assert_eq!(r.status(), Status::Ok);
    let r = from_peer(client.get("/maybe"))
        .header(Header::new("Cookie", cookie))
        .dispatch()
        .await;
    assert_eq!(r.into_string().await.unwrap(), "alice");
}

#[rocket::async_test]
async fn an_optional_guard_lets_the_handler_answer() {
    let client = client().await;
    let r = from_peer(client.get("/optional-guard")).dispatch().await;
    assert_eq!(r.status(), Status::Ok);
    assert_eq!(r.into_string().await.unwrap(), "handler answered");
    let r = from_peer(client.get("/maybe")).dispatch().await;
    assert_eq!(r.into_string().await.unwrap(), "anonymous");
}

#[rocket::async_test]
async fn errors_carry_retry_after() {
    let client = client().await;
    from_peer(client.post("/register")).dispatch().await;
    for _ in 0..5 {
        let r = from_peer(client.post("/login"))
            .body("wrong guess!")
            .dispatch()
            .await;
        assert_eq!(r.status(), Status::Unauthorized);
    }
    let r = from_peer(client.post("/login"))
        .body(PASSWORD)
        .dispatch()
        .await;
    assert_eq!(r.status(), Status::TooManyRequests);
    let retry: u64 = r.headers().get_one("Retry-After").unwrap().parse().unwrap();
    assert!(retry >= 1);
    assert!(set_cookies(&r).is_empty());
}

#[rocket::async_test]
async fn rockets_cookie_jar_leaves_the_session_cookie_alone() {
    let client = client().await;
    from_peer(client.post("/register")).dispatch().await;
    let r = from_peer(client.post("/login-with-jar")).dispatch().await;
    assert_eq!(r.status(), Status::Ok);
    let cookies = set_cookies(&r);
    // The app's, the session's and the new device cookie.
    assert_eq!(cookies.len(), 3, "{cookies:?}");
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("__Host-session-device="))
    );
    let session = cookies
        .iter()
        .find(|c| c.starts_with("__Host-session="))
        .expect("our cookie");
    let attributes: Vec<String> = session
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect();
    for expected in ["secure", "httponly", "samesite=lax", "path=/"] {
        assert!(attributes.iter().any(|a| a == expected), "{session}");
    }
    assert!(!attributes.iter().any(|a| a.starts_with("domain")));
    assert!(cookies.iter().any(|c| c.starts_with("theme=dark")));

    // Rocket parses the request's cookies into its jar; reading them there
    // sends nothing back.
    // (Rocket's server fills the jar from the Cookie header; its local
    // client needs both.)
    let cookie = session.split(';').next().unwrap().to_owned();
    let (name, value) = cookie.split_once('=').unwrap();
    let r = from_peer(client.get("/touch-jar"))
        .header(Header::new("Cookie", cookie.clone()))
        .cookie(Cookie::new(name.to_owned(), value.to_owned()))
        .dispatch()
        .await;
    assert_eq!(r.status(), Status::Ok);
    assert!(set_cookies(&r).is_empty());
    assert_eq!(r.into_string().await.unwrap(), "seen");
}

#[rocket::async_test]
async fn guards_without_the_fairing_answer_500() {
    let config = rocket::Config {
        log_level: rocket::config::LogLevel::Off,
        ..rocket::Config::default()
    };
    let rocket = rocket::custom(config)
        .manage(Calls::default())
        .mount("/", routes![me, maybe, login]);
    let client = Client::untracked(rocket).await.unwrap();
    for path in ["/me", "/maybe"] {
        let r = from_peer(client.get(path)).dispatch().await;
        assert_eq!(r.status(), Status::InternalServerError, "{path}");
    }
    let r = from_peer(client.post("/login"))
        .body(PASSWORD)
        .dispatch()
        .await;
    assert_eq!(r.status(), Status::InternalServerError);
    assert_eq!(calls(&client), 0);
}

#[test]
fn rejections_do_not_debug_print_internal_sources() {
    let rejection = AuthRejection(auth_core::flow::AuthError::Internal(
        "postgres://user:hunter2@db failed".into(),
    ));
    let debug = format!("{rejection:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("500"));
}

#[derive(rocket::serde::Deserialize)]
#[serde(crate = "rocket::serde")]
struct Credentials {
    password: String,
}

/// What `auth_rocket::Json` gave: the password's length, or its error as
/// Rocket would log it (`{:?}`).
#[post("/json", data = "<body>")]
fn json_body(body: Result<auth_rocket::Json<Credentials>, auth_rocket::BodyRefused>) -> String {
    match body {
        Ok(body) => format!("{} characters", body.password.len()),
        Err(refused) => format!("{refused:?}"),
    }
}

/// A refused JSON body's error (which Rocket logs with `{:?}`) holds no
/// byte of the body: malformed JSON and JSON of the wrong shape say only
/// their status (400, 422), as Rocket's own `Json` answers.
#[rocket::async_test]
async fn a_refused_json_body_holds_no_secret() {
    let config = rocket::Config {
        log_level: rocket::config::LogLevel::Off,
        ..rocket::Config::default()
    };
    let client = Client::untracked(rocket::custom(config).mount("/", routes![json_body]))
        .await
        .unwrap();
    let post = |body: &'static str| {
        let client = &client;
        async move {
            client
                .post("/json")
                .header(ContentType::JSON)
                .body(body)
                .dispatch()
                .await
                .into_string()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        post(r#"{"password":"hunter2-secret"}"#).await,
        "14 characters"
    );
    for (malformed, status) in [
        (r#"{"password":"hunter2-secret",}"#, 400),
        (r#"{"password":"hunter2-secret""#, 400),
        (r#"{"password":["hunter2-secret"]}"#, 422),
    ] {
        let said = post(malformed).await;
        assert_eq!(said, format!("BodyRefused(Status {{ code: {status} }})"));
        assert!(!said.contains("hunter2"));
    }
}

/// What an app's own `Reply` held, odd headers included.
#[get("/odd")]
fn odd_reply() -> auth_rocket::ReplyResponder {
    auth_rocket::reply(auth_core::web::Reply {
        status: 200,
        headers: vec![
            ("X-App", "1".into()),
            ("bad name", "x".into()),
            ("x-split", "a\r\nx-injected: 1".into()),
        ],
        body: "answered".to_owned(),
    })
}

/// An app-built reply with a header Rocket cannot write still answers:
/// the odd headers are left out (as in axum and actix), never the whole
/// response.
#[rocket::async_test]
async fn an_app_built_reply_with_odd_headers_still_answers() {
    let config = rocket::Config {
        log_level: rocket::config::LogLevel::Off,
        ..rocket::Config::default()
    };
    let client = Client::untracked(rocket::custom(config).mount("/", routes![odd_reply]))
        .await
        .unwrap();
    let r = client.get("/odd").dispatch().await;
    assert_eq!(r.status(), Status::Ok);
    assert_eq!(r.headers().get_one("x-app"), Some("1"));
    assert_eq!(r.headers().get_one("x-split"), None);
    assert_eq!(r.headers().get_one("x-injected"), None);
    assert!(r.headers().iter().all(|h| h.name() != "bad name"));
    assert_eq!(r.into_string().await.as_deref(), Some("answered"));
}

/// `RequireRecentLogin` refuses a login older than the window (10
/// minutes) with 403 and passes a fresh one: it is wired to its own
/// check, not the plain login's.
#[rocket::async_test]
async fn the_recent_login_guard_refuses_a_stale_login() {
    let clock = ManualClock::starting_now();
    let hasher = PasswordHasher::insecure_for_tests().unwrap();
    let auth = Auth::builder(MemoryUserStore::new())
        .clock(Arc::new(clock.clone()))
        .passwords(PasswordService::builder().hasher(hasher).build().unwrap())
        .build()
        .unwrap();
    let client = Client::untracked(rocket_on(auth)).await.unwrap();
    let cookie = logged_in(&client).await;
    let recent = || {
        from_peer(client.get("/recent"))
            .header(Header::new("Cookie", cookie.clone()))
            .dispatch()
    };
    assert_eq!(recent().await.status(), Status::Ok);
    clock.advance(std::time::Duration::from_secs(11 * 60));
    assert_eq!(recent().await.status(), Status::Forbidden);
}
