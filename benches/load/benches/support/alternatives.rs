//! The same `GET /api/me` behind the libraries users would pick instead of
//! ours: axum-login 0.18 + tower-sessions 0.14 (memory store) on axum, and
//! actix-identity 0.9 + actix-session 0.11 (Redis store) on actix-web.
//! Shared by the load bench and `tests/smoke.rs` (`#[path]`), since the
//! comparison crates are dev-dependencies only.
//!
//! Both log in with the same Argon2id hash (default parameters) over
//! `POST /api/login` and answer `GET /api/me` with 200 and the benchmark
//! body when logged in, 401 otherwise.

use std::net::SocketAddr;
use std::sync::Arc;

use auth_core::password::{HashedPassword, Password, PasswordHasher, Verification};
use auth_load_bench::client::{BoxError, Credential};
use auth_load_bench::servers::{AxumHost, Framework, Server, spawn_actix};
use auth_load_bench::{ME_BODY, PASSWORD, USERNAME};

/// Login body of both alternatives.
#[derive(Debug, serde::Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

/// The benchmark user's stored hash and the hasher that checks it.
#[derive(Debug, Clone)]
struct PasswordCheck {
    hasher: PasswordHasher,
    stored: Arc<HashedPassword>,
}

impl PasswordCheck {
    fn new() -> Result<Self, BoxError> {
        let hasher = PasswordHasher::default();
        let stored = Arc::new(hasher.hash(&Password::from(PASSWORD))?);
        Ok(Self { hasher, stored })
    }

    /// Blocking: one Argon2id verification.
    fn matches(&self, credentials: &Credentials) -> bool {
        credentials.username == USERNAME
            && matches!(
                self.hasher
                    .verify(&Password::from(credentials.password.as_str()), &self.stored),
                Ok(Verification::Match { .. })
            )
    }
}

mod axum_login_app {
    use axum::Json;
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use axum::routing::{get, post};
    use axum_login::{AuthManagerLayerBuilder, AuthUser, AuthnBackend, login_required};
    use tower_sessions::{MemoryStore, SessionManagerLayer};

    use super::{Credentials, ME_BODY, PasswordCheck, USERNAME};

    #[derive(Clone)]
    pub(super) struct User {
        id: i64,
        name: String,
        /// What axum-login compares on every request (normally derived
        /// from the password hash).
        auth_hash: Vec<u8>,
    }

    impl std::fmt::Debug for User {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("User").field("id", &self.id).finish()
        }
    }

    impl AuthUser for User {
        type Id = i64;

        fn id(&self) -> i64 {
            self.id
        }

        fn session_auth_hash(&self) -> &[u8] {
            &self.auth_hash
        }
    }

    #[derive(Debug, Clone)]
    pub(super) struct Backend {
        user: User,
        check: PasswordCheck,
    }

    impl Backend {
        pub(super) fn new(check: PasswordCheck) -> Self {
            let auth_hash = check.stored.as_str().as_bytes().to_vec();
            Self {
                user: User {
                    id: 1,
                    name: USERNAME.to_owned(),
                    auth_hash,
                },
                check,
            }
        }
    }

    impl AuthnBackend for Backend {
        type User = User;
        type Credentials = Credentials;
        type Error = std::io::Error;

        async fn authenticate(
            &self,
            credentials: Credentials,
        ) -> Result<Option<User>, Self::Error> {
            let check = self.check.clone();
            let ok = tokio::task::spawn_blocking(move || check.matches(&credentials))
                .await
                .map_err(std::io::Error::other)?;
            Ok(ok.then(|| self.user.clone()))
        }

        async fn get_user(&self, id: &i64) -> Result<Option<User>, Self::Error> {
            Ok((*id == self.user.id).then(|| self.user.clone()))
        }
    }

    type AuthSession = axum_login::AuthSession<Backend>;

    async fn login(mut auth: AuthSession, Json(credentials): Json<Credentials>) -> StatusCode {
        match auth.authenticate(credentials).await {
            Ok(Some(user)) if auth.login(&user).await.is_ok() => StatusCode::OK,
            Ok(_) => StatusCode::UNAUTHORIZED,
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    async fn me(auth: AuthSession) -> Response {
        match auth.user {
            Some(user) => {
                let body = serde_json::to_string(&example_shared::Me {
                    username: user.name,
                    mfa_enabled: false,
                })
                .unwrap_or_default();
                debug_assert_eq!(body, ME_BODY);
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    body,
                )
                    .into_response()
            }
            None => StatusCode::UNAUTHORIZED.into_response(),
        }
    }

    pub(super) fn router(check: PasswordCheck) -> axum::Router {
        let sessions = SessionManagerLayer::new(MemoryStore::default()).with_secure(false);
        let auth = AuthManagerLayerBuilder::new(Backend::new(check), sessions).build();
        axum::Router::new()
            .route("/api/me", get(me))
            .route_layer(login_required!(Backend))
            .route("/api/login", post(login))
            .layer(auth)
    }
}

mod actix_identity_app {
    use actix_identity::{Identity, IdentityMiddleware};
    use actix_session::SessionMiddleware;
    use actix_session::storage::RedisSessionStore;
    use actix_web::cookie::Key;
    use actix_web::{App, HttpMessage, HttpRequest, HttpResponse, HttpServer, web};

    use super::{Credentials, PasswordCheck};

    async fn login(
        request: HttpRequest,
        check: web::Data<PasswordCheck>,
        credentials: web::Json<Credentials>,
    ) -> HttpResponse {
        let check = check.get_ref().clone();
        let credentials = credentials.into_inner();
        let name = credentials.username.clone();
        match web::block(move || check.matches(&credentials)).await {
            Ok(true) => match Identity::login(&request.extensions(), name) {
                Ok(_) => HttpResponse::Ok().finish(),
                Err(_) => HttpResponse::InternalServerError().finish(),
            },
            Ok(false) => HttpResponse::Unauthorized().finish(),
            Err(_) => HttpResponse::InternalServerError().finish(),
        }
    }

    async fn me(user: Option<Identity>) -> HttpResponse {
        match user.map(|u| u.id()) {
            Some(Ok(name)) => HttpResponse::Ok().content_type("application/json").body(
                serde_json::to_string(&example_shared::Me {
                    username: name,
                    mfa_enabled: false,
                })
                .unwrap_or_default(),
            ),
            _ => HttpResponse::Unauthorized().finish(),
        }
    }

    pub(super) async fn server(
        redis_url: String,
        check: PasswordCheck,
    ) -> std::io::Result<(actix_web::dev::Server, std::net::SocketAddr)> {
        let store = RedisSessionStore::new(redis_url)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let key = Key::generate();
        let check = web::Data::new(check);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(check.clone())
                // Registered first, runs second: the session must exist
                // before the identity middleware reads it.
                .wrap(IdentityMiddleware::default())
                .wrap(
                    SessionMiddleware::builder(store.clone(), key.clone())
                        .cookie_secure(false)
                        .build(),
                )
                .route("/api/login", web::post().to(login))
                .route("/api/me", web::get().to(me))
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")?;
        let addr = server.addrs()[0];
        Ok((server.run(), addr))
    }
}

/// axum-login 0.18 + tower-sessions 0.14 (memory store) on `host`, logged
/// in.
pub(crate) async fn axum_login_server(host: &AxumHost) -> Result<Server, BoxError> {
    let router = axum_login_app::router(PasswordCheck::new()?);
    let addr: SocketAddr = host.serve(router)?;
    let cookie = auth_load_bench::client::register_and_login(addr, None, "/api/login").await?;
    Ok(Server {
        framework: Framework::Axum,
        label: "axum-login".to_owned(),
        addr,
        credential: Some(Credential::Cookie(cookie)),
        temp: None,
    })
}

/// actix-identity 0.9 + actix-session 0.11 (Redis store at `redis_url`),
/// one worker, logged in.
pub(crate) async fn actix_identity_server(redis_url: &str) -> Result<Server, BoxError> {
    let check = PasswordCheck::new()?;
    let url = redis_url.to_owned();
    let addr = spawn_actix(move || actix_identity_app::server(url, check))?;
    let cookie = auth_load_bench::client::register_and_login(addr, None, "/api/login").await?;
    Ok(Server {
        framework: Framework::Actix,
        label: "actix-identity (redis)".to_owned(),
        addr,
        credential: Some(Credential::Cookie(cookie)),
        temp: None,
    })
}
