//! Instructions per authenticated request, without the network: drives the
//! axum demo (`example_axum::app`) and a bare axum route in-process with
//! `tower::ServiceExt::oneshot`, so `valgrind --tool=callgrind` (which
//! counts instructions, immune to the machine's noise) can attribute the
//! cost of the auth layer. Variants (first argument):
//!
//! * `bare`: the bare route;
//! * `auth` / `sqlite`: the demo on memory stores / the demo's SQLite file,
//!   `GET /api/me` with the login's cookies;
//! * `redis`: the same with the sessions on Redis (`AUTH_TEST_REDIS_URL`)
//!   and the rest in the SQLite file;
//! * `rocket-bare` / `rocket-auth` / `rocket-bearer`: the same on Rocket
//!   (its in-process client; memory stores);
//! * `bearer` / `bearer-sqlite`: the same demos, `GET /api/me` with
//!   `Authorization: Bearer` and the access token of one `POST /api/token`
//!   (so every request after the first is served from the verified-token
//!   cache, as a client that reuses its token is).
//!
//! ```sh
//! cargo build --profile bench -p auth-load-bench --example per_request
//! for v in bare auth bearer; do for n in 1000 11000; do
//!   valgrind --tool=callgrind --callgrind-out-file=cg.$v.$n \
//!     target/release/examples/per_request $v $n; done; done
//! # (Ir at 11000 - Ir at 1000) / 10000 = instructions per request
//! ```

#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::sync::Arc;

use auth_core::clock::SystemClock;
use auth_core::password::PasswordHasher;
use auth_core::rate_limit::TrustedProxies;
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::Request;
use http_body_util::BodyExt;
use tower::ServiceExt;

fn main() {
    let mut args = std::env::args().skip(1);
    let variant = args.next().unwrap_or_else(|| "auth".to_owned());
    let count: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Some(rocket_variant) = variant.strip_prefix("rocket-") {
        runtime.block_on(rocket(rocket_variant, count));
        return;
    }
    runtime.block_on(async move {
        let peer = MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000)));
        let (router, header) = match variant.as_str() {
            "bare" => (bare().layer(peer).with_state(()), None),
            "sqlite" => {
                let (router, cookie) = logged_in(example_axum::app(sqlite().await)).await;
                (router.layer(peer).with_state(()), Some(("cookie", cookie)))
            }
            "redis" => {
                let (router, cookie) = logged_in(example_axum::app(redis().await)).await;
                (router.layer(peer).with_state(()), Some(("cookie", cookie)))
            }
            "bearer" => {
                let (router, token) = with_token(example_axum::app(memory())).await;
                (
                    router.layer(peer).with_state(()),
                    Some(("authorization", token)),
                )
            }
            "bearer-sqlite" => {
                let (router, token) = with_token(example_axum::app(sqlite().await)).await;
                (
                    router.layer(peer).with_state(()),
                    Some(("authorization", token)),
                )
            }
            _ => {
                let (router, cookie) = logged_in(example_axum::app(memory())).await;
                (router.layer(peer).with_state(()), Some(("cookie", cookie)))
            }
        };
        let mut bytes = 0;
        for _ in 0..count {
            let mut request = Request::get("/api/me").header("host", "localhost");
            if let Some((name, value)) = &header {
                request = request.header(*name, value);
            }
            let response = router
                .clone()
                .oneshot(request.body(Body::empty()).expect("request"))
                .await
                .expect("infallible");
            assert_eq!(response.status(), 200);
            bytes += response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes()
                .len();
        }
        println!("{variant}: {count} requests, {bytes} body bytes");
        let _ = std::fs::remove_dir_all(scratch());
    });
}

/// The Rocket variants (`rocket-bare`, `rocket-auth`, `rocket-bearer`):
/// the same requests through Rocket's in-process client, which runs the
/// fairings, guards and handler as a server does (without the network).
async fn rocket(variant: &str, count: usize) {
    use rocket::http::Header;
    use rocket::local::asynchronous::Client;
    let peer = SocketAddr::from(([127, 0, 0, 1], 40000));
    let app = match variant {
        "bare" => {
            #[rocket::get("/api/me")]
            fn me() -> (rocket::http::ContentType, String) {
                (
                    rocket::http::ContentType::JSON,
                    serde_json::to_string(&example_shared::Me {
                        username: "alice".to_owned(),
                        mfa_enabled: false,
                    })
                    .unwrap_or_default(),
                )
            }
            rocket::custom(example_rocket::config()).mount("/", rocket::routes![me])
        }
        _ => example_rocket::app(memory()),
    };
    let client = Client::untracked(app).await.expect("rocket");
    let mut header = None;
    if variant != "bare" {
        let login = if variant == "bearer" {
            "/api/token"
        } else {
            "/api/login"
        };
        for path in ["/api/register", login] {
            let response = client
                .post(path)
                .remote(peer)
                .header(Header::new("host", "localhost"))
                .header(rocket::http::ContentType::JSON)
                .body(CREDENTIALS)
                .dispatch()
                .await;
            assert!(
                response.status().code < 300,
                "{path}: {}",
                response.status()
            );
            if path == "/api/register" {
                continue;
            }
            header = Some(if variant == "bearer" {
                let answer: serde_json::Value =
                    serde_json::from_str(&response.into_string().await.expect("body"))
                        .expect("token answer");
                let token = answer["access_token"].as_str().expect("an access token");
                ("authorization", format!("Bearer {token}"))
            } else {
                let pairs: Vec<String> = response
                    .headers()
                    .get("set-cookie")
                    .filter_map(|v| Some(v.split(';').next()?.to_owned()))
                    .collect();
                ("cookie", pairs.join("; "))
            });
        }
    }
    let mut bytes = 0;
    for _ in 0..count {
        let mut request = client
            .get("/api/me")
            .remote(peer)
            .header(Header::new("host", "localhost"));
        if let Some((name, value)) = &header {
            request = request.header(Header::new(*name, value.clone()));
        }
        let response = request.dispatch().await;
        assert_eq!(response.status().code, 200);
        bytes += response.into_bytes().await.map_or(0, |b| b.len());
    }
    println!("rocket-{variant}: {count} requests, {bytes} body bytes");
}

/// The bare route of the load benchmark.
fn bare() -> axum::Router {
    use axum::response::IntoResponse;
    axum::Router::new().route(
        "/api/me",
        axum::routing::get(|| async {
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                serde_json::to_string(&example_shared::Me {
                    username: "alice".to_owned(),
                    mfa_enabled: false,
                })
                .unwrap_or_default(),
            )
                .into_response()
        }),
    )
}

/// The demo's pipeline on memory stores (cheap hasher).
fn memory() -> auth_core::web::Auth {
    // Cheap parameters: the login is set-up, not what is measured.
    let hasher = PasswordHasher::insecure_for_tests().expect("hasher");
    example_shared::build_auth_in_memory(
        Arc::new(SystemClock),
        example_shared::throttle_config(),
        hasher,
        TrustedProxies::none(),
        Arc::new(auth_core::mail::InsecureLogMailer::new()),
    )
}

/// The demo's pipeline on its SQLite file (in [`scratch`]), with its
/// sessions on Redis at `redis_url` when given (as the load benchmark's
/// Redis variant: the rest stays in the file).
async fn on_file(redis_url: Option<String>) -> auth_core::web::Auth {
    let dir = scratch();
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut settings = example_shared::Settings::from_env().expect("settings");
    settings.database_url = format!("sqlite://{}", dir.join("bench.db").display());
    settings.redis_url = redis_url;
    settings.csrf_key = None;
    settings.jwt_key = None;
    example_shared::build_auth(&settings).await.expect("auth")
}

/// [`on_file`] without Redis.
async fn sqlite() -> auth_core::web::Auth {
    on_file(None).await
}

/// [`on_file`] with the sessions on Redis (`AUTH_TEST_REDIS_URL`).
async fn redis() -> auth_core::web::Auth {
    let url =
        std::env::var("AUTH_TEST_REDIS_URL").expect("the redis variant needs AUTH_TEST_REDIS_URL");
    on_file(Some(url)).await
}

const CREDENTIALS: &str = r#"{"username":"alice","password":"correct horse battery staple"}"#;

/// `POST path` with the benchmark user's credentials; the response.
async fn post_credentials(router: &axum::Router, path: &str) -> axum::response::Response {
    let peer = MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000)));
    let response = router
        .clone()
        .layer(peer)
        .oneshot(
            Request::post(path)
                .header("host", "localhost")
                .header("content-type", "application/json")
                .body(Body::from(CREDENTIALS))
                .expect("request"),
        )
        .await
        .expect("infallible");
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response
}

/// `router` with a registered, logged-in user, and the session cookie.
async fn logged_in(router: axum::Router) -> (axum::Router, String) {
    let mut cookie = None;
    for path in ["/api/register", "/api/login"] {
        let response = post_credentials(&router, path).await;
        // What a browser sends back: every cookie the login set (the
        // session's and the device cookie).
        let pairs: Vec<&str> = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok()?.split(';').next())
            .collect();
        cookie = (!pairs.is_empty()).then(|| pairs.join("; "));
    }
    (router, cookie.expect("login sets a cookie"))
}

/// `router` with a registered user signed in for tokens (`POST
/// /api/token`), and the `Authorization` value of its access token.
async fn with_token(router: axum::Router) -> (axum::Router, String) {
    post_credentials(&router, "/api/register").await;
    let body = post_credentials(&router, "/api/token")
        .await
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let answer: serde_json::Value = serde_json::from_slice(&body).expect("token answer");
    let token = answer["access_token"].as_str().expect("an access token");
    (router, format!("Bearer {token}"))
}

/// The SQLite variant's folder (removed at the end).
fn scratch() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("per-request-{}", std::process::id()))
}
