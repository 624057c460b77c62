//! Fault behaviour: the axum demo (in-process, through
//! `tower::ServiceExt::oneshot`, built by `example_shared::build_auth`)
//! while its stores fail, and after they come back, without a restart.
//!
//! * Redis: a `redis-server` of this test (sessions, link tokens, refresh
//!   tokens and the throttle in it; users in a SQLite file), stopped with
//!   `SIGSTOP` (a hang) and continued, then shut down and started again on
//!   the same port.
//! * PostgreSQL: the CI's server (`AUTH_TEST_POSTGRES_URL`, shared with
//!   other tests, so never stopped) behind a TCP proxy of this test that
//!   stalls (accepts, and forwards nothing), then drops every connection
//!   and refuses new ones; then heals. Last it stops one connection in the
//!   middle of one statement (after the pool's ping passed), which only
//!   the stores' per-statement deadline answers.
//!
//! While a store is down, an authenticated request (cookie or bearer)
//! answers 503 with `Retry-After`, never a hang, and a login answers 503
//! with `Retry-After`. The one 200 allowed is a session the Redis store's
//! client-side cache holds, for at most 5 s after Redis last answered (a
//! stopped Redis takes no write, so no revocation is missed). Every request is wrapped in a
//! [`HANG`] timeout: a hang detector, not a performance threshold.
//!
//! Without `redis-server` (or without `AUTH_TEST_POSTGRES_URL`) a test
//! prints `SKIPPED (service)` and passes (the CI script fails on that
//! line).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use auth_core::rate_limit::TrustedProxies;
use auth_core::web::AllowedHosts;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use example_shared::Settings;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt;

/// Says why a test did not run, on the real stderr (past the test
/// harness's capture), where the test script looks for it; under
/// `CI=true` a skip is a failure.
fn skipped(reason: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{reason}, but CI=true requires the service tests to run"
    );
    let _ = writeln!(std::io::stderr(), "SKIPPED (service): {reason}");
}

/// The longest any one request may take: a hang detector.
const HANG: Duration = Duration::from_secs(10);
/// How long a store may take to be usable again after it is back.
const RECOVERY: Duration = Duration::from_secs(30);
const PASSWORD: &str = "correct horse battery staple";

/// One answer of the demo.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `__Host-session=...` pair this answer sets.
    fn session_cookie(&self) -> String {
        self.headers
            .iter()
            .find(|(n, v)| n == "set-cookie" && v.starts_with("__Host-session="))
            .map(|(_, v)| v.split(';').next().unwrap_or_default().to_owned())
            .unwrap_or_else(|| panic!("no session cookie: {self:?}"))
    }

    /// 503 with a positive `Retry-After` and no detail of the failure.
    fn assert_unavailable(&self, what: &str) {
        assert_eq!(self.status, 503, "{what}: {self:?}");
        let retry: u64 = self
            .header("retry-after")
            .unwrap_or_else(|| panic!("{what}: no Retry-After: {self:?}"))
            .parse()
            .expect("Retry-After in seconds");
        assert!(retry >= 1, "{what}: {self:?}");
        assert_eq!(
            self.body, r#"{"error":"service temporarily unavailable, try again later"}"#,
            "{what}"
        );
    }
}

/// A demo, and how to reach it as a client on 127.0.0.1.
struct Demo {
    app: Router,
}

/// Who asks: a session cookie, a bearer token, or nobody.
#[derive(Clone, Copy)]
enum As<'a> {
    Nobody,
    Cookie(&'a str),
    Bearer(&'a str),
}

impl Demo {
    async fn start(database_url: String, redis_url: Option<String>) -> Self {
        let settings = Settings {
            addr: SocketAddr::from(([127, 0, 0, 1], 3000)),
            database_url,
            redis_url,
            trusted_proxies: TrustedProxies::parse("").expect("no proxies"),
            csrf_key: None,
            allowed_hosts: AllowedHosts::parse("localhost").expect("a host list"),
            mfa_key: None,
            public_url: "http://localhost".to_owned(),
            smtp_url: None,
            insecure_log_mail: false,
            mail_from: "Demo <noreply@localhost>".to_owned(),
            jwt_key: None,
        };
        let auth = example_shared::build_auth(&settings)
            .await
            .unwrap_or_else(|e| panic!("the demo starts: {e}"));
        Self {
            app: example_axum::app(auth),
        }
    }

    async fn send(&self, method: &str, path: &str, who: As<'_>, body: Option<String>) -> Answer {
        let mut builder = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        match who {
            As::Nobody => {}
            As::Cookie(cookie) => builder = builder.header("cookie", cookie),
            As::Bearer(token) => {
                builder = builder.header("authorization", format!("Bearer {token}"));
            }
        }
        if body.is_some() {
            builder = builder.header("content-type", "application/json");
        }
        let mut request = builder
            .body(Body::from(body.unwrap_or_default()))
            .expect("a valid request");
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
        let answer = async {
            let response = self.app.clone().oneshot(request).await.expect("infallible");
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_owned(),
                        v.to_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            let body = response.into_body().collect().await.expect("a body");
            Answer {
                status,
                headers,
                body: String::from_utf8_lossy(&body.to_bytes()).into_owned(),
            }
        };
        let start = Instant::now();
        let answer = tokio::time::timeout(HANG, answer)
            .await
            .unwrap_or_else(|_| panic!("{method} {path} hung for more than {HANG:?}"));
        if answer.status == 503 {
            eprintln!("{method} {path}: 503 after {:?}", start.elapsed());
        }
        answer
    }

    fn credentials(name: &str) -> String {
        serde_json::json!({"username": name, "password": PASSWORD}).to_string()
    }

    /// Posts `name`'s credentials to `path`, as a client without a session.
    async fn post_credentials(&self, path: &str, name: &str) -> Answer {
        self.send("POST", path, As::Nobody, Some(Self::credentials(name)))
            .await
    }

    async fn register(&self, name: &str) {
        let answer = self.post_credentials("/api/register", name).await;
        assert_eq!(answer.status, 201, "register: {answer:?}");
    }

    async fn login(&self, name: &str) -> Answer {
        self.post_credentials("/api/login", name).await
    }

    /// Signs in for API tokens: the access token.
    async fn access_token(&self, name: &str) -> String {
        self.tokens(name).await.0
    }

    /// Signs in for API tokens: the access and the refresh token.
    async fn tokens(&self, name: &str) -> (String, String) {
        let answer = self.post_credentials("/api/token", name).await;
        assert_eq!(answer.status, 200, "tokens: {answer:?}");
        let tokens: serde_json::Value = serde_json::from_str(&answer.body).expect("JSON");
        let token = |field: &str| {
            tokens[field]
                .as_str()
                .unwrap_or_else(|| panic!("no {field}: {answer:?}"))
                .to_owned()
        };
        (token("access_token"), token("refresh_token"))
    }

    /// Posts a JSON body as a client without a session.
    async fn post_json(&self, path: &str, body: serde_json::Value) -> Answer {
        self.send("POST", path, As::Nobody, Some(body.to_string()))
            .await
    }

    async fn me(&self, who: As<'_>) -> Answer {
        self.send("GET", "/api/me", who, None).await
    }

    /// Asks `/api/me` until it answers `want`, for at most [`RECOVERY`];
    /// meanwhile only 503 is acceptable (never 200 for a session the
    /// store could not check, never a 500 or 401 for an outage).
    /// `GET /api/me` until it answers 503 (checked as
    /// [`Answer::assert_unavailable`]): before that, only a 200 from the
    /// Redis store's client-side cache is allowed, which serves a session
    /// it holds for at most 5 s after Redis last answered (no write can
    /// reach a stopped Redis, so no revocation is missed meanwhile).
    async fn me_until_unavailable(&self, who: As<'_>, what: &str) {
        self.poll(who, 503, 200, HANG, what)
            .await
            .assert_unavailable(what);
    }

    /// `GET /api/me` until it answers `want`; meanwhile 503 (checked as
    /// [`Answer::assert_unavailable`]).
    async fn me_until(&self, who: As<'_>, want: u16, what: &str) {
        self.poll(who, want, 503, RECOVERY, what).await;
    }

    /// `GET /api/me` every 200 ms until it answers `want` (that answer),
    /// for at most `limit`; every answer before it is `meanwhile`.
    async fn poll(
        &self,
        who: As<'_>,
        want: u16,
        meanwhile: u16,
        limit: Duration,
        what: &str,
    ) -> Answer {
        let start = Instant::now();
        loop {
            let answer = self.me(who).await;
            if answer.status == want {
                return answer;
            }
            if meanwhile == 503 {
                answer.assert_unavailable(what);
            } else {
                assert_eq!(answer.status, meanwhile, "{what}: {answer:?}");
            }
            assert!(
                start.elapsed() < limit,
                "{what}: still {answer:?} after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A login name no other test (or earlier run) uses.
fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// A folder of this test, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(unique_name(name));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// --- Redis ------------------------------------------------------------------

/// A `redis-server` of this test on `port` (no persistence); killed when
/// dropped, also when the test fails.
struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    fn start(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let server = Self {
            port,
            child: Some(child),
        };
        let start = Instant::now();
        while !server.answers() {
            assert!(start.elapsed() < HANG, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// Whether it answers `PING`.
    fn answers(&self) -> bool {
        let Ok(mut stream) = StdStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal}");
    }

    /// Shuts it down (`SIGTERM`) and waits for it to exit.
    fn stop(&mut self) {
        self.signal("-TERM");
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A free port below the kernel's ephemeral range (32768 and up): the
/// server is started on it later, and restarted on it, and a port up
/// there could meanwhile become the local end of an outgoing connection.
fn free_port() -> u16 {
    use std::hash::BuildHasher;
    for attempt in 0u32..1000 {
        let random = std::collections::hash_map::RandomState::new().hash_one(attempt);
        let port = 20_000 + u16::try_from(random % 12_000).expect("below 12000");
        if StdListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000..32000")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_or_gone_answers_503_and_recovers() {
    if Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        skipped("redis-server is not installed");
        return;
    }
    let port = free_port();
    let mut redis = RedisServer::start(port);
    let dir = TempDir::new("auth-faults-redis");
    let database = format!("sqlite://{}", dir.0.join("demo.db").display());
    let demo = Demo::start(database, Some(format!("redis://127.0.0.1:{port}/"))).await;

    let name = unique_name("redis");
    demo.register(&name).await;
    let login = demo.login(&name).await;
    assert_eq!(login.status, 200, "{login:?}");
    let cookie = login.session_cookie();
    let token = demo.access_token(&name).await;
    assert_eq!(demo.me(As::Cookie(&cookie)).await.status, 200);
    assert_eq!(demo.me(As::Bearer(&token)).await.status, 200);

    // (a) Redis hangs. (The session and the bearer's family may be
    // answered from the client-side cache for up to 5 s first.)
    redis.signal("-STOP");
    demo.me_until_unavailable(As::Cookie(&cookie), "cookie, Redis stopped")
        .await;
    demo.me_until_unavailable(As::Bearer(&token), "bearer, Redis stopped")
        .await;
    demo.login(&name)
        .await
        .assert_unavailable("login, Redis stopped");
    redis.signal("-CONT");
    demo.me_until(As::Cookie(&cookie), 200, "cookie, Redis continued")
        .await;
    demo.me_until(As::Bearer(&token), 200, "bearer, Redis continued")
        .await;

    // (b) Redis is gone.
    redis.stop();
    demo.me_until_unavailable(As::Cookie(&cookie), "cookie, Redis shut down")
        .await;
    demo.me(As::Bearer(&token))
        .await
        .assert_unavailable("bearer, Redis shut down");
    demo.login(&name)
        .await
        .assert_unavailable("login, Redis shut down");
    // Back on the same port, empty: the old session and token family are
    // gone (401, never 200), and logins work again.
    let _redis = RedisServer::start(port);
    demo.me_until(As::Cookie(&cookie), 401, "cookie, Redis restarted")
        .await;
    demo.me_until(As::Bearer(&token), 401, "bearer, Redis restarted")
        .await;
    let login = demo.login(&name).await;
    assert_eq!(login.status, 200, "login, Redis restarted: {login:?}");
    let fresh = login.session_cookie();
    assert_eq!(demo.me(As::Cookie(&fresh)).await.status, 200);
}

// --- PostgreSQL -------------------------------------------------------------

/// What the proxy does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forwards both ways.
    Forward,
    /// Accepts connections and reads, but forwards nothing (a hang).
    Stall,
    /// Drops every connection and refuses new ones (its port is closed).
    Refuse,
    /// Forwards, except that a connection stops (forwards nothing more)
    /// at the first chunk to the server that contains this text: a
    /// network that fails in the middle of one statement, after the pool
    /// handed out a connection that answered its ping.
    StallOn(&'static str),
}

/// A TCP proxy of this test in front of `upstream`.
struct Proxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a proxy port");
        let addr = listener.local_addr().expect("its address");
        let (mode, watching) = watch::channel(Mode::Forward);
        tokio::spawn(Self::serve(listener, upstream, watching));
        Self { addr, mode }
    }

    fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    async fn serve(listener: TcpListener, upstream: String, mut mode: watch::Receiver<Mode>) {
        let addr = listener.local_addr().expect("its address");
        let mut listener = Some(listener);
        loop {
            let current = *mode.borrow_and_update();
            match (current, &listener) {
                // Closing the port: new connections are refused.
                (Mode::Refuse, Some(_)) => listener = None,
                (Mode::Refuse, None) => {
                    if mode.changed().await.is_err() {
                        return;
                    }
                }
                (_, None) => {
                    let start = Instant::now();
                    loop {
                        match TcpListener::bind(addr).await {
                            Ok(bound) => {
                                listener = Some(bound);
                                break;
                            }
                            Err(error) => {
                                assert!(start.elapsed() < HANG, "proxy rebind: {error}");
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                }
                (_, Some(open)) => {
                    tokio::select! {
                        accepted = open.accept() => {
                            if let Ok((client, _)) = accepted {
                                tokio::spawn(Self::pipe(client, upstream.clone(), mode.clone()));
                            }
                        }
                        changed = mode.changed() => {
                            if changed.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Whether to go on forwarding `chunk`: waits out a stall; `false`
    /// once connections are to be dropped.
    async fn forwarding(mode: &mut watch::Receiver<Mode>, chunk: &[u8]) -> bool {
        loop {
            match *mode.borrow_and_update() {
                Mode::Forward => return true,
                Mode::Refuse => return false,
                Mode::StallOn(text)
                    if !chunk
                        .windows(text.len())
                        .any(|window| window == text.as_bytes()) =>
                {
                    return true;
                }
                Mode::Stall | Mode::StallOn(_) => {}
            }
            if mode.changed().await.is_err() {
                return false;
            }
        }
    }

    async fn pipe(client: TcpStream, upstream: String, mut mode: watch::Receiver<Mode>) {
        if !Self::forwarding(&mut mode, &[]).await {
            return;
        }
        let Ok(server) = TcpStream::connect(&upstream).await else {
            return;
        };
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        // Either direction ending (or the proxy dropping connections) ends
        // both: the sockets close.
        tokio::select! {
            () = Self::pump(client_read, server_write, mode.clone()) => {}
            () = Self::pump(server_read, client_write, mode.clone()) => {}
        }
    }

    async fn pump(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        mut mode: watch::Receiver<Mode>,
    ) {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            tokio::select! {
                read = from.read(&mut buf) => {
                    let n = match read {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if !Self::forwarding(&mut mode, &buf[..n]).await || to.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
                changed = mode.changed() => {
                    if changed.is_err() || *mode.borrow() == Mode::Refuse {
                        return;
                    }
                }
            }
        }
    }
}

/// `url` with its host and port replaced by `proxy`, and the `host:port`
/// it named.
fn through(url: &str, proxy: SocketAddr) -> (String, String) {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (user, rest) = match rest.rsplit_once('@') {
        Some((user, rest)) => (format!("{user}@"), rest),
        None => (String::new(), rest),
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (host, tail) = rest.split_at(end);
    let upstream = if host
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host.to_owned()
    } else {
        format!("{host}:5432")
    };
    (format!("{scheme}://{user}{proxy}{tail}"), upstream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stalled_or_cut_off_answers_503_and_recovers() {
    let Some(url) = std::env::var("AUTH_TEST_POSTGRES_URL")
        .ok()
        .filter(|v| !v.trim().is_empty())
    else {
        skipped("AUTH_TEST_POSTGRES_URL is not set; run .ci/run or export it");
        return;
    };
    // The proxy's address is known before it runs: bind, then point.
    let placeholder = SocketAddr::from(([127, 0, 0, 1], 0));
    let (_, upstream) = through(&url, placeholder);
    let proxy = Proxy::start(upstream).await;
    let (proxied, _) = through(&url, proxy.addr);
    let demo = Demo::start(proxied, None).await;

    let name = unique_name("pg");
    demo.register(&name).await;
    let login = demo.login(&name).await;
    assert_eq!(login.status, 200, "{login:?}");
    let cookie = login.session_cookie();
    let (token, refresh) = demo.tokens(&name).await;
    assert_eq!(demo.me(As::Cookie(&cookie)).await.status, 200);
    assert_eq!(demo.me(As::Bearer(&token)).await.status, 200);

    for (mode, what) in [(Mode::Stall, "stalled"), (Mode::Refuse, "cut off")] {
        proxy.set(mode);
        demo.me(As::Cookie(&cookie))
            .await
            .assert_unavailable(&format!("cookie, PostgreSQL {what}"));
        demo.me(As::Bearer(&token))
            .await
            .assert_unavailable(&format!("bearer, PostgreSQL {what}"));
        demo.login(&name)
            .await
            .assert_unavailable(&format!("login, PostgreSQL {what}"));
        // Flows that start with no session to load.
        let refresh_body = serde_json::json!({ "refresh_token": refresh });
        demo.post_json("/api/token/refresh", refresh_body.clone())
            .await
            .assert_unavailable(&format!("token refresh, PostgreSQL {what}"));
        demo.post_json("/api/token/revoke", refresh_body)
            .await
            .assert_unavailable(&format!("token revocation, PostgreSQL {what}"));
        demo.post_credentials("/api/register", &unique_name("pg-new"))
            .await
            .assert_unavailable(&format!("registration, PostgreSQL {what}"));
        proxy.set(Mode::Forward);
        // PostgreSQL kept the session and the token family.
        demo.me_until(As::Cookie(&cookie), 200, &format!("cookie, after {what}"))
            .await;
        demo.me_until(As::Bearer(&token), 200, &format!("bearer, after {what}"))
            .await;
    }

    // The network stops in the middle of one statement, on a connection
    // the pool had just checked: the statement's own deadline answers
    // (the pool's acquire timeout does not apply any more). An
    // authenticated change (the new address is in the stalled statement)
    // and a registration (the new name is).
    let address: &'static str = format!("{}@example.test", unique_name("pg-mail")).leak();
    proxy.set(Mode::StallOn(address));
    let change = serde_json::json!({ "email": address, "password": PASSWORD });
    demo.send(
        "POST",
        "/api/email",
        As::Bearer(&token),
        Some(change.to_string()),
    )
    .await
    .assert_unavailable("email change, PostgreSQL stalled in a statement");
    let new_name: &'static str = unique_name("pg-mid").leak();
    proxy.set(Mode::StallOn(new_name));
    demo.post_credentials("/api/register", new_name)
        .await
        .assert_unavailable("registration, PostgreSQL stalled in a statement");
    // Drop the stalled connections, so the held statements never reach
    // the server (had the proxy missed this, they would just run late),
    // then heal.
    proxy.set(Mode::Refuse);
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.set(Mode::Forward);
    demo.me_until(As::Bearer(&token), 200, "bearer, after a stalled statement")
        .await;

    let login = demo.login(&name).await;
    assert_eq!(login.status, 200, "login after the faults: {login:?}");
    // The refresh token was never used: it still works.
    let refreshed = demo
        .post_json(
            "/api/token/refresh",
            serde_json::json!({ "refresh_token": refresh }),
        )
        .await;
    assert_eq!(
        refreshed.status, 200,
        "refresh after the faults: {refreshed:?}"
    );
}
