//! The actix-specific traps (seen in actix-identity's tracker): extractors
//! and guards without the middleware, and middleware order.

use actix_web::middleware::from_fn;
use actix_web::{App, HttpResponse, test, web};
use auth_actix::{Auth, MemoryUserStore, User};
use auth_actix::{AuthMiddleware, AuthSession, CurrentUser, OptionalUser, require_login};
use auth_core::password::{PasswordHasher, PasswordService};

fn auth() -> Auth {
    let hasher = PasswordHasher::insecure_for_tests().expect("test hasher");
    let passwords = PasswordService::builder()
        .hasher(hasher)
        .build()
        .expect("password service");
    Auth::builder(MemoryUserStore::new())
        .passwords(passwords)
        .build()
        .expect("auth")
}

fn peer() -> std::net::SocketAddr {
    "192.0.2.1:40000".parse().expect("address")
}

async fn who(CurrentUser(user): CurrentUser<User>) -> String {
    user.display_name.clone()
}

async fn maybe(OptionalUser(user): OptionalUser<User>) -> String {
    user.map_or("nobody".to_owned(), |u| u.display_name.clone())
}

async fn session(auth: AuthSession) -> HttpResponse {
    match auth.session().await {
        Ok(_) => HttpResponse::Ok().finish(),
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}

#[actix_web::test]
async fn extractors_without_the_middleware_answer_500_and_never_panic() {
    let app = test::init_service(
        App::new()
            .route("/who", web::get().to(who))
            .route("/maybe", web::get().to(maybe))
            .route("/session", web::get().to(session)),
    )
    .await;
    for path in ["/who", "/maybe", "/session"] {
        let request = test::TestRequest::get()
            .uri(path)
            .peer_addr(peer())
            .to_request();
        let response = test::call_service(&app, request).await;
        assert_eq!(response.status(), 500, "{path}");
    }
}

#[actix_web::test]
async fn a_guard_outside_the_middleware_refuses_instead_of_passing() {
    // Wrong order: the guard is registered last, so it runs first.
    let app = test::init_service(
        App::new()
            .route("/secret", web::get().to(|| async { "secret" }))
            .wrap(AuthMiddleware::new(auth()))
            .wrap(from_fn(require_login)),
    )
    .await;
    let request = test::TestRequest::get()
        .uri("/secret")
        .peer_addr(peer())
        .to_request();
    let response = test::call_service(&app, request).await;
    assert_eq!(response.status(), 500);
    let body = test::read_body(response).await;
    assert!(!body.starts_with(b"secret"));
}

#[actix_web::test]
async fn a_guard_inside_the_middleware_works_at_app_level_too() {
    let app = test::init_service(
        App::new()
            .route("/secret", web::get().to(|| async { "secret" }))
            .route("/maybe", web::get().to(maybe))
            .wrap(from_fn(require_login))
            .wrap(AuthMiddleware::new(auth())),
    )
    .await;
    let request = test::TestRequest::get()
        .uri("/secret")
        .peer_addr(peer())
        .to_request();
    let response = test::call_service(&app, request).await;
    assert_eq!(response.status(), 401);
}

#[actix_web::test]
async fn no_peer_address_is_a_500_not_a_shared_bucket() {
    let app = test::init_service(
        App::new()
            .route("/maybe", web::get().to(maybe))
            .wrap(AuthMiddleware::new(auth())),
    )
    .await;
    let response =
        test::call_service(&app, test::TestRequest::get().uri("/maybe").to_request()).await;
    assert_eq!(response.status(), 500);
    let request = test::TestRequest::get()
        .uri("/maybe")
        .peer_addr(peer())
        .to_request();
    let response = test::call_service(&app, request).await;
    assert_eq!(response.status(), 200);
    assert_eq!(test::read_body(response).await, "nobody");
}

/// An app middleware inside `AuthMiddleware` that answers with an `Err`:
/// the error's response is finished like any other (the security headers
/// are on it).
#[actix_web::test]
async fn an_error_from_inside_is_finished_like_any_response() {
    let app = test::init_service(
        App::new()
            .route("/who", web::get().to(who))
            .wrap(from_fn(
                |_request: actix_web::dev::ServiceRequest,
                 _next: actix_web::middleware::Next<actix_web::body::BoxBody>| async {
                    Err::<actix_web::dev::ServiceResponse, _>(actix_web::error::ErrorForbidden(
                        "no",
                    ))
                },
            ))
            .wrap(AuthMiddleware::new(auth())),
    )
    .await;
    let request = test::TestRequest::get()
        .uri("/who")
        .peer_addr(peer())
        .to_request();
    // The error goes on outward (as actix's own would); the response the
    // server sends for it is the one it carries.
    let error = test::try_call_service(&app, request)
        .await
        .expect_err("the error goes on");
    let response = error.error_response();
    assert_eq!(response.status(), 403);
    let headers = response.headers();
    assert_eq!(
        headers
            .get("x-content-type-options")
            .and_then(|v| v.to_str().ok()),
        Some("nosniff")
    );
    assert!(headers.contains_key("content-security-policy"));
    assert!(headers.contains_key("referrer-policy"));
}

/// A `Reply` an app builds itself, with a header name in capitals and an
/// invalid one: the first is sent, the second left out, never a panic.
#[actix_web::test]
async fn an_app_built_reply_with_odd_header_names_never_panics() {
    let response = auth_actix::reply(auth_core::web::Reply {
        status: 200,
        headers: vec![("X-App", "1".into()), ("bad name", "x".into())],
        body: String::new(),
    });
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("x-app")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
}

/// `CurrentUser` alone protects a route, as the guard does: a browser is
/// sent to the login page with the whole path (scope included), an API
/// client gets JSON 401; the middleware still finishes the answer.
#[actix_web::test]
async fn current_user_alone_refuses_as_the_login_guard() {
    let app = test::init_service(
        App::new()
            .service(web::scope("/admin").route("/users", web::get().to(who)))
            .wrap(AuthMiddleware::new(auth())),
    )
    .await;
    let request = test::TestRequest::get()
        .uri("/admin/users")
        .insert_header(("accept", "text/html"))
        .peer_addr(peer())
        .to_request();
    let response = test::call_service(&app, request).await;
    assert_eq!(response.status(), 303);
    assert_eq!(
        response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok()),
        Some("/login?next=/admin/users")
    );
    assert!(response.headers().contains_key("x-content-type-options"));
    let request = test::TestRequest::get()
        .uri("/admin/users")
        .insert_header(("accept", "application/json"))
        .peer_addr(peer())
        .to_request();
    let response = test::call_service(&app, request).await;
    assert_eq!(response.status(), 401);
    let body = test::read_body(response).await;
    assert!(body.starts_with(b"{\"error\":"), "{body:?}");
}

/// A rejection's `Debug` (what frameworks and apps log) shows only what
/// the client sees: an internal error's source, which may be a driver's
/// text with a connection string in it, stays out.
#[actix_web::test]
async fn rejections_do_not_debug_print_internal_sources() {
    for error in [
        auth_core::flow::AuthError::Internal("postgres://user:hunter2@db failed".into()),
        auth_core::flow::AuthError::Unavailable("redis://:hunter2@cache refused".into()),
    ] {
        let status = error.status().to_string();
        let debug = format!("{:?}", auth_actix::AuthRejection(error));
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains(&status), "{debug}");
    }
}

/// The recent-login guard refuses a login older than the window (10
/// minutes) with 403, and passes a fresh one: it is wired to its own check,
/// not the plain login's.
#[actix_web::test]
async fn the_recent_login_guard_refuses_a_stale_login() {
    use auth_core::clock::ManualClock;
    let clock = ManualClock::starting_now();
    let hasher = PasswordHasher::insecure_for_tests().expect("test hasher");
    let auth = Auth::builder(MemoryUserStore::new())
        .clock(std::sync::Arc::new(clock.clone()))
        .passwords(
            PasswordService::builder()
                .hasher(hasher)
                .build()
                .expect("passwords"),
        )
        .build()
        .expect("auth");
    let password = auth_core::password::Password::from("correct horse battery staple");
    auth.authenticator()
        .register(
            "alice",
            &password,
            &auth_core::flow::Client::new(peer().ip()),
        )
        .await
        .expect("register");
    let app = test::init_service(
        App::new()
            .route(
                "/login",
                web::post().to(|auth: AuthSession| async move {
                    let password =
                        auth_core::password::Password::from("correct horse battery staple");
                    match auth.login("alice", &password).await {
                        Ok(_) => HttpResponse::Ok().finish(),
                        Err(_) => HttpResponse::Unauthorized().finish(),
                    }
                }),
            )
            .service(
                web::resource("/recent")
                    .wrap(from_fn(auth_actix::require_recent_login))
                    .route(web::get().to(|| async { "recent" })),
            )
            .wrap(AuthMiddleware::new(auth)),
    )
    .await;
    let login = test::call_service(
        &app,
        test::TestRequest::post()
            .uri("/login")
            .peer_addr(peer())
            .to_request(),
    )
    .await;
    assert_eq!(login.status(), 200);
    let cookie = login
        .headers()
        .get_all("set-cookie")
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("__Host-session="))
        .and_then(|v| v.split(';').next())
        .expect("a session cookie")
        .to_owned();
    let recent = || {
        test::TestRequest::get()
            .uri("/recent")
            .peer_addr(peer())
            .insert_header(("cookie", cookie.clone()))
            .to_request()
    };
    assert_eq!(test::call_service(&app, recent()).await.status(), 200);
    clock.advance(std::time::Duration::from_secs(11 * 60));
    assert_eq!(test::call_service(&app, recent()).await.status(), 403);
}
