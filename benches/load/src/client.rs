//! The HTTP side: one-shot requests over a fresh connection, and the load
//! loop (hyper 1 `client::conn::http1`, one keep-alive TCP connection per
//! task), which counts answers by status and measures each latency.

use std::collections::BTreeMap;
use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A boxed error for the benchmark's plumbing.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// One answer: status, headers (lower-case names) and body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Header pairs, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The body as text (lossy).
    pub body: String,
}

impl Answer {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `name=value` of the first `Set-Cookie`, ready for a `Cookie` header.
    pub fn cookie(&self) -> Option<String> {
        let set_cookie = self.header("set-cookie")?;
        Some(set_cookie.split(';').next()?.trim().to_owned())
    }
}

/// A request to send: method, path, extra headers and body.
#[derive(Debug, Clone)]
pub struct Call {
    /// Method.
    pub method: Method,
    /// Path and query.
    pub path: String,
    /// Extra headers (besides `host`).
    pub headers: Vec<(String, String)>,
    /// Body (empty for none).
    pub body: Bytes,
}

impl Call {
    /// `GET path`, with `cookie` when given.
    pub fn get(path: &str, cookie: Option<&str>) -> Self {
        let headers = cookie
            .map(|c| vec![("cookie".to_owned(), c.to_owned())])
            .unwrap_or_default();
        Self {
            method: Method::GET,
            path: path.to_owned(),
            headers,
            body: Bytes::new(),
        }
    }

    /// `GET path` with `credential` (a cookie or a bearer token), or with
    /// none.
    pub fn get_as(path: &str, credential: Option<&Credential>) -> Self {
        let call = Self::get(path, None);
        match credential {
            Some(credential) => {
                let (name, value) = credential.header();
                call.with_header(name, &value)
            }
            None => call,
        }
    }

    /// `POST path` with a JSON body.
    pub fn post_json(path: &str, json: &serde_json::Value) -> Self {
        Self {
            method: Method::POST,
            path: path.to_owned(),
            headers: vec![("content-type".to_owned(), "application/json".to_owned())],
            body: Bytes::from(json.to_string()),
        }
    }

    /// The same call with one more header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn request(&self, addr: SocketAddr) -> Result<Request<Full<Bytes>>, BoxError> {
        let mut builder = Request::builder()
            .method(self.method.clone())
            .uri(self.path.as_str())
            .header("host", addr.to_string());
        for (name, value) in &self.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        Ok(builder.body(Full::new(self.body.clone()))?)
    }
}

/// Opens one HTTP/1.1 connection to `addr`; its driver runs as a task.
pub async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, BoxError> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // Ends when the server or the sender closes the connection.
        let _ = connection.await;
    });
    Ok(sender)
}

async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    call: &Call,
) -> Result<Answer, BoxError> {
    sender.ready().await?;
    let response = sender.send_request(call.request(addr)?).await?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Sends one request over a fresh connection (needs a tokio runtime).
pub async fn once(addr: SocketAddr, call: &Call) -> Result<Answer, BoxError> {
    let mut sender = connect(addr).await?;
    send(&mut sender, addr, call).await
}

/// Registers (ignoring "already taken") and logs in with JSON
/// `{"username", "password"}` bodies; returns the cookie for `Cookie`.
pub async fn register_and_login(
    addr: SocketAddr,
    register_path: Option<&str>,
    login_path: &str,
) -> Result<String, BoxError> {
    let credentials = serde_json::json!({
        "username": crate::USERNAME,
        "password": crate::PASSWORD,
    });
    if let Some(path) = register_path {
        let answer = once(addr, &Call::post_json(path, &credentials)).await?;
        if !(200..300).contains(&answer.status) && answer.status != 409 {
            return Err(format!("register: {} {}", answer.status, answer.body).into());
        }
    }
    let answer = once(addr, &Call::post_json(login_path, &credentials)).await?;
    if !(200..300).contains(&answer.status) {
        return Err(format!("login: {} {}", answer.status, answer.body).into());
    }
    answer
        .cookie()
        .ok_or_else(|| "login answered no Set-Cookie".into())
}

/// What a request shows to be logged in.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A login cookie, `name=value` (the `Cookie` header).
    Cookie(String),
    /// An access token of `POST /api/token`, sent as `Authorization:
    /// Bearer`.
    Bearer(BearerToken),
}

impl Credential {
    /// The request header that carries it: name and value.
    pub fn header(&self) -> (&'static str, String) {
        match self {
            Self::Cookie(cookie) => ("cookie", cookie.clone()),
            Self::Bearer(token) => ("authorization", format!("Bearer {}", token.access_token)),
        }
    }
}

/// An access token and when it expires (by the answer's `expires_in`,
/// counted from when the answer arrived).
#[derive(Debug, Clone)]
pub struct BearerToken {
    /// The signed access token.
    pub access_token: String,
    /// When the server stops taking it.
    pub expires_at: Instant,
}

/// Signs the benchmark user in for tokens: `POST path` with the JSON
/// credentials (the user must exist); the answer must be `200
/// {"access_token", "token_type": "Bearer", "expires_in", ...}`.
pub async fn token_login(addr: SocketAddr, path: &str) -> Result<BearerToken, BoxError> {
    let credentials = serde_json::json!({
        "username": crate::USERNAME,
        "password": crate::PASSWORD,
    });
    let answer = once(addr, &Call::post_json(path, &credentials)).await?;
    let arrived = Instant::now();
    if answer.status != 200 {
        return Err(format!("token login: {} {}", answer.status, answer.body).into());
    }
    let json: serde_json::Value = serde_json::from_str(&answer.body)?;
    let token = json["access_token"].as_str().filter(|t| !t.is_empty());
    match (
        token,
        json["token_type"].as_str(),
        json["expires_in"].as_u64(),
    ) {
        (Some(token), Some("Bearer"), Some(secs)) => Ok(BearerToken {
            access_token: token.to_owned(),
            expires_at: arrived + Duration::from_secs(secs),
        }),
        _ => Err(format!("token login: unexpected answer {}", answer.body).into()),
    }
}

/// What one load run measured.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    /// Answers received, by status.
    pub statuses: BTreeMap<u16, u64>,
    /// 429/503 answers without `Retry-After`.
    pub missing_retry_after: u64,
    /// Transport errors (connect, reset, parse).
    pub errors: u64,
    /// The measured window.
    pub elapsed: Duration,
    /// Every answer's latency, microseconds.
    pub latencies_us: Vec<u32>,
    /// Process CPU time (user + system, all threads) over the window.
    pub cpu: Duration,
    /// CPU time of the load generator's thread over the window.
    pub client_cpu: Duration,
    /// CPU time of other processes over the window (the machine's busy
    /// time less this process's; includes Redis for the Redis variants).
    pub foreign_cpu: Duration,
}

impl LoadResult {
    /// All answers received.
    pub fn answers(&self) -> u64 {
        self.statuses.values().sum()
    }

    /// Answers outside 2xx.
    pub fn non_2xx(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| !(200..300).contains(*s))
            .map(|(_, n)| n)
            .sum()
    }

    /// 2xx answers per second.
    pub fn ok_per_sec(&self) -> f64 {
        let ok = self.answers() - self.non_2xx();
        ok as f64 / self.elapsed.as_secs_f64()
    }

    /// The `q` quantile (0..=1) of the latencies, in microseconds.
    pub fn latency_us(&self, q: f64) -> f64 {
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        quantile(&sorted, q)
    }

    /// Process CPU microseconds per answer (client and server together).
    pub fn cpu_us_per_answer(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.answers().max(1) as f64
    }

    /// Server-side CPU microseconds per answer: the process's CPU less the
    /// load generator's thread (so: the server's threads, including store
    /// worker threads, but not an external Redis).
    pub fn server_cpu_us_per_answer(&self) -> f64 {
        self.cpu.saturating_sub(self.client_cpu).as_secs_f64() * 1e6 / self.answers().max(1) as f64
    }

    /// Other processes' average CPU use over the window, in cores.
    pub fn foreign_cores(&self) -> f64 {
        self.foreign_cpu.as_secs_f64() / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn merge(&mut self, other: Self) {
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        self.missing_retry_after += other.missing_retry_after;
        self.errors += other.errors;
        self.latencies_us.extend(other.latencies_us);
    }
}

/// The `q` quantile of sorted values (nearest rank), 0 when empty.
pub fn quantile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() - 1) as f64 * q).round() as usize;
    f64::from(sorted[rank.min(sorted.len() - 1)])
}

/// Process CPU time so far (user + system, all threads) from
/// `/proc/self/stat`, or zero where that file does not exist.
pub fn process_cpu() -> Duration {
    cpu_of("/proc/self/stat")
}

/// CPU time so far of the calling thread (`/proc/thread-self/stat`).
pub fn thread_cpu() -> Duration {
    cpu_of("/proc/thread-self/stat")
}

/// Busy time of the whole machine so far (every CPU, every process), from
/// `/proc/stat`: to tell how much CPU other processes took during a run.
pub fn machine_busy() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return Duration::ZERO;
    };
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: all but idle and
    // iowait are busy.
    let busy: u64 = ticks
        .iter()
        .enumerate()
        .filter(|(i, _)| !matches!(i, 3 | 4) && *i < 8)
        .map(|(_, t)| t)
        .sum();
    Duration::from_millis(busy * 10)
}

fn cpu_of(path: &str) -> Duration {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return Duration::ZERO;
    };
    // Fields after the command name (which is in parentheses): utime is the
    // 14th field of the line, stime the 15th, in clock ticks (100 Hz on
    // Linux).
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => Duration::from_millis((user + system) * 10),
        _ => Duration::ZERO,
    }
}

/// A request generator for each load connection: called with a counter, it
/// gives the next call.
pub type CallFn = Arc<dyn Fn(u64) -> Call + Send + Sync>;

/// Drives `addr` with `connections` keep-alive connections, each sending
/// `make(i)` requests back to back, until `stop` is set or `duration`
/// passes. Requests in flight when the time is up are awaited (so a slow
/// answer is counted, never lost) but a connection sends nothing new.
pub async fn load(
    addr: SocketAddr,
    connections: usize,
    duration: Duration,
    make: CallFn,
    stop: Option<Arc<AtomicBool>>,
) -> LoadResult {
    let start = Instant::now();
    let cpu_before = process_cpu();
    let client_before = thread_cpu();
    let busy_before = machine_busy();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(connections);
    for conn in 0..connections {
        let make = Arc::clone(&make);
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut result = LoadResult::default();
            let mut sender = None;
            let mut counter = conn as u64;
            while Instant::now() < deadline
                && !stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed))
            {
                let sender_ref = match &mut sender {
                    Some(s) => s,
                    None => match connect(addr).await {
                        Ok(s) => sender.insert(s),
                        Err(_) => {
                            result.errors += 1;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    },
                };
                let call = make(counter);
                counter = counter.wrapping_add(connections as u64);
                let sent = Instant::now();
                match send(sender_ref, addr, &call).await {
                    Ok(answer) => {
                        let micros = u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX);
                        result.latencies_us.push(micros);
                        *result.statuses.entry(answer.status).or_default() += 1;
                        if matches!(answer.status, 429 | 503)
                            && answer.header("retry-after").is_none()
                        {
                            result.missing_retry_after += 1;
                        }
                        if answer.header("connection") == Some("close") {
                            sender = None;
                        }
                    }
                    Err(_) => {
                        result.errors += 1;
                        sender = None;
                    }
                }
            }
            result
        }));
    }
    let mut total = LoadResult::default();
    for task in tasks {
        if let Ok(result) = task.await {
            total.merge(result);
        } else {
            total.errors += 1;
        }
    }
    total.elapsed = start.elapsed();
    total.cpu = process_cpu().saturating_sub(cpu_before);
    total.client_cpu = thread_cpu().saturating_sub(client_before);
    total.foreign_cpu = machine_busy()
        .saturating_sub(busy_before)
        .saturating_sub(total.cpu);
    total
}

/// A small xorshift generator: random names and IPs for the login flood
/// need no cryptographic quality.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// Seeded from `seed` (zero is replaced).
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}
