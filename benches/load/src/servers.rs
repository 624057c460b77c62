//! The servers under test, each on 127.0.0.1 and a free port: bare routes
//! and the demo apps behind our auth on each store. A demo app is measured
//! twice: with its login cookie (`auth <store>`) and with a bearer token
//! (`bearer <store>`, the same server: see [`bearer`]).
//!
//! axum servers share one tokio runtime with a single worker thread; each
//! actix server runs in its own `System` thread with one worker. The load
//! generator runs on a third thread, so on a 2-core machine server and
//! client each get about one core.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;

use auth_core::clock::SystemClock;
use auth_core::password::PasswordHasher;
use auth_core::rate_limit::TrustedProxies;
use auth_core::web::Auth;
use example_shared::{Settings, build_auth, build_auth_in_memory, throttle_config};

use crate::client::{BoxError, Call, Credential};

/// Which web framework a variant runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Framework {
    /// axum 0.8 on hyper.
    Axum,
    /// actix-web 4.
    Actix,
    /// Rocket 0.5.
    Rocket,
}

impl Framework {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Axum => "axum",
            Self::Actix => "actix",
            Self::Rocket => "rocket",
        }
    }
}

/// Where sessions (and users) of an auth variant live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Store {
    /// Users, sessions and throttles in memory.
    Memory,
    /// As [`Store::Memory`], with at most this many concurrent password
    /// hashes (`PasswordService::max_concurrent`; the default is the number
    /// of cores less one).
    MemoryHashSlots(usize),
    /// Users and sessions in a SQLite file.
    Sqlite,
    /// Sessions and throttles in Redis at this URL (users in SQLite).
    Redis(String),
}

impl Store {
    /// Short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Memory | Self::MemoryHashSlots(_) => "memory",
            Self::Sqlite => "sqlite",
            Self::Redis(_) => "redis",
        }
    }
}

/// A temporary directory removed on drop (SQLite files).
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh directory under the system temp dir.
    pub fn new(label: &str) -> std::io::Result<Self> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "auth-load-bench-{}-{label}-{n}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }

    /// The directory.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    /// Framework.
    pub framework: Framework,
    /// Route label in reports: `bare`, `auth memory`, `axum-login`, ...
    pub label: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// What shows the requests of authenticated variants to be logged in:
    /// the login cookie, or a bearer token.
    pub credential: Option<Credential>,
    /// Files to remove when the server is dropped.
    pub temp: Option<TempDir>,
}

impl Server {
    /// `GET /api/me` with the variant's credential (if any).
    pub fn me(&self) -> Call {
        Call::get_as("/api/me", self.credential.as_ref())
    }

    /// Whether requests carry a bearer token.
    pub fn is_bearer(&self) -> bool {
        matches!(self.credential, Some(Credential::Bearer(_)))
    }
}

/// The runtime every axum server of one process runs on.
#[derive(Debug)]
pub struct AxumHost {
    runtime: tokio::runtime::Runtime,
}

impl AxumHost {
    /// A multi-thread runtime with `workers` worker threads.
    pub fn new(workers: usize) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("axum-server")
            .enable_all()
            .build()?;
        Ok(Self { runtime })
    }

    /// Runs `future` to completion on the server runtime.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Serves `router` on a free port (with `ConnectInfo`, as the auth
    /// layer needs).
    pub fn serve(&self, router: axum::Router) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let _guard = self.runtime.enter();
        let listener = tokio::net::TcpListener::from_std(listener)?;
        self.runtime.spawn(async move {
            let service = router.into_make_service_with_connect_info::<SocketAddr>();
            if let Err(error) = axum::serve(listener, service).await {
                eprintln!("axum server on {addr} stopped: {error}");
            }
        });
        Ok(addr)
    }
}

/// Starts an actix-web server in its own thread: `start` runs inside a new
/// actix `System` and returns the (not yet awaited) server and its address.
/// Build the `HttpServer` with `.workers(1)` and `.disable_signals()`.
pub fn spawn_actix<F, Fut>(start: F) -> Result<SocketAddr, BoxError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = std::io::Result<(actix_web::dev::Server, SocketAddr)>> + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("actix-system".to_owned())
        .spawn(move || {
            let system = actix_web::rt::System::new();
            system.block_on(async move {
                match start().await {
                    Ok((server, addr)) => {
                        let _ = tx.send(Ok(addr));
                        let _ = server.await;
                    }
                    Err(error) => {
                        let _ = tx.send(Err(error.to_string()));
                    }
                }
            });
        })?;
    Ok(rx.recv()??)
}

/// The `GET /api/me` answer of the bare routes: the same JSON as the demo's
/// handler gives for the benchmark user.
fn bare_body() -> String {
    serde_json::to_string(&example_shared::Me {
        username: crate::USERNAME.to_owned(),
        mfa_enabled: false,
    })
    .unwrap_or_default()
}

/// The bare axum route.
pub fn axum_bare(host: &AxumHost) -> Result<Server, BoxError> {
    use axum::response::IntoResponse;
    let router = axum::Router::new().route(
        "/api/me",
        axum::routing::get(|| async {
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                bare_body(),
            )
                .into_response()
        }),
    );
    Ok(Server {
        framework: Framework::Axum,
        label: "bare".to_owned(),
        addr: host.serve(router)?,
        credential: None,
        temp: None,
    })
}

/// The bare actix route.
pub fn actix_bare() -> Result<Server, BoxError> {
    use actix_web::{App, HttpResponse, HttpServer, web};
    let addr = spawn_actix(|| async {
        let server = HttpServer::new(|| {
            App::new().route(
                "/api/me",
                web::get().to(|| async {
                    HttpResponse::Ok()
                        .content_type("application/json")
                        .body(bare_body())
                }),
            )
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")?;
        let addr = server.addrs()[0];
        Ok((server.run(), addr))
    })?;
    Ok(Server {
        framework: Framework::Actix,
        label: "bare".to_owned(),
        addr,
        credential: None,
        temp: None,
    })
}

/// Builds the demo's `Auth` on `store` (default Argon2 parameters, the
/// demo's throttle), with `proxies` trusted for `X-Forwarded-For`. Must run
/// on the runtime that will serve it (store connections spawn tasks).
pub async fn build(
    store: &Store,
    proxies: TrustedProxies,
) -> Result<(Auth, Option<TempDir>), BoxError> {
    if *store == Store::Memory {
        let auth = build_auth_in_memory(
            Arc::new(SystemClock),
            throttle_config(),
            PasswordHasher::default(),
            proxies,
            Arc::new(auth_core::mail::InsecureLogMailer::new()),
        );
        return Ok((auth, None));
    }
    if let Store::MemoryHashSlots(slots) = store {
        return Ok((memory_auth_with_slots(*slots, proxies)?, None));
    }
    let temp = TempDir::new(store.name())?;
    // The demo's settings (so fields added later keep their defaults),
    // with the store and proxies of this variant.
    let mut settings = Settings::from_env().map_err(|e| e.to_string())?;
    settings.addr = "127.0.0.1:0".parse()?;
    settings.database_url = format!("sqlite://{}", temp.path().join("bench.db").display());
    settings.redis_url = match store {
        Store::Redis(url) => Some(url.clone()),
        _ => None,
    };
    settings.trusted_proxies = proxies;
    settings.csrf_key = None;
    let auth = build_auth(&settings).await.map_err(|e| e.to_string())?;
    Ok((auth, Some(temp)))
}

/// `example_shared::build_auth_in_memory` with a bounded number of
/// concurrent hashes (the same wiring, one setting changed).
fn memory_auth_with_slots(slots: usize, proxies: TrustedProxies) -> Result<Auth, BoxError> {
    use auth_core::MemoryUserStore;
    use auth_core::csrf::CsrfTokens;
    use auth_core::password::PasswordService;
    use auth_core::session::SessionId;
    let key = SessionId::generate()?.encode().into_bytes();
    Ok(Auth::builder(MemoryUserStore::new())
        .passwords(PasswordService::builder().max_concurrent(slots).build()?)
        .throttle_config(throttle_config())
        .clock(Arc::new(SystemClock))
        .app_name(example_shared::APP_NAME)
        .trusted_proxies(proxies)
        .form_tokens(CsrfTokens::new(key)?)
        .build()?)
}

/// The label of an auth variant.
fn auth_label(store: &Store) -> String {
    format!("auth {}", store.name())
}

/// `example_axum::app` on `store` (not yet logged in: see [`login`]).
pub fn axum_auth(
    host: &AxumHost,
    store: &Store,
    proxies: TrustedProxies,
) -> Result<Server, BoxError> {
    let (auth, temp) = host.block_on(build(store, proxies))?;
    Ok(Server {
        framework: Framework::Axum,
        label: auth_label(store),
        addr: host.serve(example_axum::app(auth))?,
        credential: None,
        temp,
    })
}

/// `example_actix::app` on `store`, one worker (not yet logged in).
pub fn actix_auth(store: &Store, proxies: TrustedProxies) -> Result<Server, BoxError> {
    use actix_web::HttpServer;
    let (tx, rx) = std::sync::mpsc::channel();
    let store_owned = store.clone();
    let addr = spawn_actix(move || async move {
        let (auth, temp) = build(&store_owned, proxies)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let _ = tx.send(temp);
        let server = HttpServer::new(move || example_actix::app(auth.clone()))
            .workers(1)
            .disable_signals()
            .bind("127.0.0.1:0")?;
        let addr = server.addrs()[0];
        Ok((server.run(), addr))
    })?;
    Ok(Server {
        framework: Framework::Actix,
        label: auth_label(store),
        addr,
        credential: None,
        temp: rx.recv().ok().flatten(),
    })
}

/// Starts a rocket on 127.0.0.1:0 in its own thread (a tokio runtime with
/// one worker, like the other servers) and returns the bound address.
fn spawn_rocket<F, Fut>(build: F) -> Result<SocketAddr, BoxError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<rocket::Rocket<rocket::Build>, BoxError>>,
{
    let (tx, rx) = std::sync::mpsc::channel::<Result<SocketAddr, String>>();
    std::thread::Builder::new()
        .name("rocket".to_owned())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    let _ = tx.send(Err(error.to_string()));
                    return;
                }
            };
            runtime.block_on(async move {
                let rocket = match build().await {
                    Ok(rocket) => rocket,
                    Err(error) => {
                        let _ = tx.send(Err(error.to_string()));
                        return;
                    }
                };
                let bound = tx.clone();
                let announce = rocket::fairing::AdHoc::on_liftoff("bound", move |rocket| {
                    Box::pin(async move {
                        let config = rocket.config();
                        let _ = bound.send(Ok(SocketAddr::new(config.address, config.port)));
                    })
                });
                // Rocket installs a global `log` logger that would also
                // print every auth event (tracing forwards to `log`) of the
                // other servers in this process: keep it silent.
                let config = rocket::Config {
                    address: std::net::Ipv4Addr::LOCALHOST.into(),
                    port: 0,
                    workers: 1,
                    log_level: rocket::config::LogLevel::Off,
                    ..example_rocket::config()
                };
                if let Err(error) = rocket.configure(config).attach(announce).launch().await {
                    let _ = tx.send(Err(error.pretty_print().to_string()));
                }
            });
        })?;
    Ok(rx.recv()??)
}

/// The bare Rocket route.
pub fn rocket_bare() -> Result<Server, BoxError> {
    #[rocket::get("/api/me")]
    fn me() -> (rocket::http::ContentType, String) {
        (rocket::http::ContentType::JSON, bare_body())
    }
    let addr = spawn_rocket(|| async {
        Ok(rocket::custom(example_rocket::config()).mount("/", rocket::routes![me]))
    })?;
    Ok(Server {
        framework: Framework::Rocket,
        label: "bare".to_owned(),
        addr,
        credential: None,
        temp: None,
    })
}

/// `example_rocket::app` on `store` (not yet logged in).
pub fn rocket_auth(store: &Store, proxies: TrustedProxies) -> Result<Server, BoxError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let store_owned = store.clone();
    let addr = spawn_rocket(move || async move {
        let (auth, temp) = build(&store_owned, proxies).await?;
        let _ = tx.send(temp);
        Ok(example_rocket::app(auth))
    })?;
    Ok(Server {
        framework: Framework::Rocket,
        label: auth_label(store),
        addr,
        credential: None,
        temp: rx.recv().ok().flatten(),
    })
}

/// Registers and logs in the benchmark user on a demo app (`/api/register`,
/// `/api/login`) and keeps the cookie.
pub async fn login(server: &mut Server) -> Result<(), BoxError> {
    let cookie =
        crate::client::register_and_login(server.addr, Some("/api/register"), "/api/login").await?;
    server.credential = Some(Credential::Cookie(cookie));
    Ok(())
}

/// The bearer variant of a demo app on `store` whose user is registered
/// (see [`login`]): the same server (`addr`), its requests with
/// `Authorization: Bearer` and the access token of one `POST /api/token`.
pub async fn bearer(
    framework: Framework,
    addr: SocketAddr,
    store: &Store,
) -> Result<Server, BoxError> {
    let token = crate::client::token_login(addr, "/api/token").await?;
    Ok(Server {
        framework,
        label: format!("bearer {}", store.name()),
        addr,
        credential: Some(Credential::Bearer(token)),
        temp: None,
    })
}

/// A new access token for a bearer variant (`POST /api/token` again), so
/// that long runs never send an expired one; no-op for other variants.
pub async fn renew_bearer(server: &mut Server) -> Result<(), BoxError> {
    if server.is_bearer() {
        let token = crate::client::token_login(server.addr, "/api/token").await?;
        server.credential = Some(Credential::Bearer(token));
    }
    Ok(())
}
