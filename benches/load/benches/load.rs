//! The load benchmark: `cargo bench -p auth-load-bench`.
//!
//! 1. Argon2id at the default parameters, ours against the C reference
//!    (`ARGON2_REF_BIN`, else `argon2` on `PATH`).
//! 2. `GET /api/me` on every variant (bare, our auth per store with the
//!    login cookie and with a bearer token, the alternatives), round-robin,
//!    several rounds; medians and ratios to each framework's bare route; the
//!    table on stdout, the plot in `docs/performance-ratios.svg`.
//! 3. The login flood: `GET /api/me` throughput and latency with and
//!    without 200 connections posting wrong passwords.
//!
//! Settings (environment): `LOAD_SECS` (2), `LOAD_ROUNDS` (5),
//! `LOAD_CONNECTIONS` (32), `FLOOD_CONNECTIONS` (200), `FLOOD_ROUNDS` (3),
//! `AUTH_TEST_REDIS_URL` or `REDIS_URL` for the Redis variants,
//! `LOAD_PLOT` (the SVG path; default `docs/performance-ratios.svg`, or
//! cargo's scratch folder with `LOAD_ONLY`), `LOAD_ONLY` (comma-separated substrings of
//! "framework route": run only those variants, e.g. `axum bare,axum auth
//! memory,axum bearer memory`).

#![allow(missing_docs, clippy::print_stdout)]

#[path = "support/alternatives.rs"]
mod alternatives;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use auth_core::password::{Password, PasswordHasher};
use auth_core::rate_limit::TrustedProxies;
use auth_load_bench::client::{self, BoxError, Call, CallFn, Credential, LoadResult, XorShift};
use auth_load_bench::report::{self, Summary, median};
use auth_load_bench::servers::{self, AxumHost, Server, Store};
use auth_load_bench::{ME_BODY, USERNAME, redis_url};

struct Config {
    secs: Duration,
    rounds: usize,
    connections: usize,
    flood_connections: usize,
    flood_rounds: usize,
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), BoxError> {
    // `cargo test --benches` / `cargo bench` without a filter: only a real
    // `cargo bench` run passes `--bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("auth-load-bench: run with `cargo bench -p auth-load-bench`");
        return Ok(());
    }
    let config = Config {
        secs: Duration::from_millis(env_num("LOAD_SECS", 2) * 1000),
        rounds: usize::try_from(env_num("LOAD_ROUNDS", 5)).unwrap_or(5),
        connections: usize::try_from(env_num("LOAD_CONNECTIONS", 32)).unwrap_or(32),
        flood_connections: usize::try_from(env_num("FLOOD_CONNECTIONS", 200)).unwrap_or(200),
        flood_rounds: usize::try_from(env_num("FLOOD_ROUNDS", 3)).unwrap_or(3),
    };
    machine();
    argon2_reference();
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let host = AxumHost::new(1)?;
    comparison(&config, &client_rt, &host)?;
    login_flood(&config, &client_rt, &host)?;
    Ok(())
}

fn machine() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    println!("## Machine\n\ncores (nproc): {cores}; CPU: {cpu}; kernel: {kernel}\n");
}

/// Our Argon2id hash time against the C reference CLI, same parameters.
fn argon2_reference() {
    const RUNS: usize = 10;
    let hasher = PasswordHasher::default();
    let password = Password::from("correct horse battery staple");
    let mut ours = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let start = Instant::now();
        let _ = hasher.hash(&password);
        ours.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let ours = median(&ours);
    println!("## Argon2id, m=19456 KiB, t=2, p=1 (median of {RUNS})\n");
    println!("ours (argon2 crate 0.6): {ours:.1} ms per hash");
    let bin = std::env::var("ARGON2_REF_BIN").unwrap_or_else(|_| "argon2".to_owned());
    let mut reference = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        match reference_run(&bin) {
            Ok(ms) => reference.push(ms),
            Err(error) => {
                println!(
                    "C reference: skipped ({bin}: {error}); set ARGON2_REF_BIN to a phc-winner-argon2 `argon2` CLI \
                     (Debian: apt-get install argon2; or `make OPTTARGET=native` in its sources)\n"
                );
                return;
            }
        }
    }
    let reference = median(&reference);
    println!(
        "C reference ({bin}): {reference:.1} ms per hash; ours / C = {:.2}\n",
        ours / reference
    );
}

/// One run of the reference CLI; it prints its own timing ("0.057 seconds").
fn reference_run(bin: &str) -> Result<f64, BoxError> {
    use std::io::Write;
    let mut child = std::process::Command::new(bin)
        .args([
            "saltsaltsaltsalt",
            "-id",
            "-t",
            "2",
            "-k",
            "19456",
            "-p",
            "1",
            "-l",
            "32",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(b"correct horse battery staple")?;
    let output = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let secs: f64 = text
        .lines()
        .find_map(|l| l.strip_suffix(" seconds"))
        .ok_or("no timing in the output")?
        .trim()
        .parse()?;
    Ok(secs * 1e3)
}

/// `GET /api/me` with the server's credential, for every request.
fn me_calls(server: &Server) -> CallFn {
    let call = server.me();
    Arc::new(move |_| call.clone())
}

/// 200 with the benchmark body with the cookie or token, 401 without: so
/// the benchmark never measures refusals.
fn verify(rt: &tokio::runtime::Runtime, server: &Server) -> Result<(), BoxError> {
    let with = rt.block_on(client::once(server.addr, &server.me()))?;
    if with.status != 200 || with.body != ME_BODY {
        return Err(format!(
            "{} {}: expected 200 {ME_BODY}, got {} {}",
            server.framework.name(),
            server.label,
            with.status,
            with.body
        )
        .into());
    }
    if server.credential.is_some() {
        let without = rt.block_on(client::once(server.addr, &Call::get("/api/me", None)))?;
        if without.status != 401 {
            return Err(format!(
                "{} {}: expected 401 without the cookie or token, got {}",
                server.framework.name(),
                server.label,
                without.status
            )
            .into());
        }
    }
    Ok(())
}

fn start_servers(rt: &tokio::runtime::Runtime, host: &AxumHost) -> Result<Vec<Server>, BoxError> {
    let redis = redis_url();
    let mut stores = vec![Store::Memory, Store::Sqlite];
    match &redis {
        Some(url) => stores.push(Store::Redis(url.clone())),
        None => println!(
            "Redis variants SKIPPED: neither AUTH_TEST_REDIS_URL nor REDIS_URL is set \
             (start one: redis-server --port 6390 --save '' --daemonize yes)\n"
        ),
    }
    let none = TrustedProxies::none();
    // Each demo app twice: its login cookie, then (the same server) a
    // bearer token.
    let logged_in = |mut server: Server, store: &Store| -> Result<[Server; 2], BoxError> {
        rt.block_on(servers::login(&mut server))?;
        let bearer = rt.block_on(servers::bearer(server.framework, server.addr, store))?;
        Ok([server, bearer])
    };
    let mut servers = vec![servers::axum_bare(host)?];
    for store in &stores {
        servers.extend(logged_in(
            servers::axum_auth(host, store, none.clone())?,
            store,
        )?);
    }
    servers.push(rt.block_on(alternatives::axum_login_server(host))?);
    servers.push(servers::actix_bare()?);
    for store in &stores {
        servers.extend(logged_in(servers::actix_auth(store, none.clone())?, store)?);
    }
    if let Some(url) = &redis {
        servers.push(rt.block_on(alternatives::actix_identity_server(url))?);
    }
    // Rocket: no maintained auth library to compare with.
    servers.push(servers::rocket_bare()?);
    for store in &stores {
        servers.extend(logged_in(
            servers::rocket_auth(store, none.clone())?,
            store,
        )?);
    }
    for server in &servers {
        verify(rt, server)?;
    }
    // `LOAD_ONLY=<a>,<b>`: only variants whose "framework label" contains
    // one of them (for profiling one route).
    if let Ok(only) = std::env::var("LOAD_ONLY") {
        servers.retain(|s| {
            let name = format!("{} {}", s.framework.name(), s.label);
            only.split(',').any(|part| name.contains(part))
        });
    }
    Ok(servers)
}

fn target(summary: &Summary) -> Option<f64> {
    match summary.label.as_str() {
        "auth memory" => Some(0.90),
        "auth sqlite" => Some(0.75),
        "auth redis" => Some(0.65),
        "bearer memory" => Some(0.80),
        _ => None,
    }
}

fn comparison(
    config: &Config,
    rt: &tokio::runtime::Runtime,
    host: &AxumHost,
) -> Result<(), BoxError> {
    if config.rounds == 0 {
        return Ok(());
    }
    let mut servers = start_servers(rt, host)?;
    println!(
        "## GET /api/me: {} variants, {} rounds x {:?} each, {} keep-alive connections\n",
        servers.len(),
        config.rounds,
        config.secs,
        config.connections
    );
    // Warm-up: connections, caches, the SQLite page cache, JIT-free but
    // allocator-warm.
    for server in &servers {
        let _ = rt.block_on(client::load(
            server.addr,
            config.connections,
            Duration::from_millis(500),
            me_calls(server),
            None,
        ));
    }
    let mut summaries: Vec<Summary> = servers
        .iter()
        .map(|s| Summary::new(s.framework, &s.label))
        .collect();
    // A round takes about this long: a bearer token that would expire
    // within it is renewed before it starts (outside every measurement).
    let round_time = config.secs * u32::try_from(servers.len()).unwrap_or(u32::MAX);
    for round in 0..config.rounds {
        for server in &mut servers {
            if let Some(Credential::Bearer(token)) = &server.credential
                && token.expires_at <= Instant::now() + round_time + Duration::from_secs(60)
            {
                rt.block_on(servers::renew_bearer(server))?;
            }
        }
        let mut order: Vec<usize> = (0..servers.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        let mut this_round: BTreeMap<usize, f64> = BTreeMap::new();
        for i in order {
            let server = &servers[i];
            let result = rt.block_on(client::load(
                server.addr,
                config.connections,
                config.secs,
                me_calls(server),
                None,
            ));
            this_round.insert(i, result.ok_per_sec());
            summaries[i].rounds.push(result);
        }
        for (i, server) in servers.iter().enumerate() {
            if server.label == "bare" {
                continue;
            }
            let bare = servers
                .iter()
                .position(|s| s.framework == server.framework && s.label == "bare")
                .and_then(|b| this_round.get(&b).copied())
                .unwrap_or(f64::NAN);
            summaries[i].ratios.push(this_round[&i] / bare);
        }
        eprintln!("round {} of {} done", round + 1, config.rounds);
    }
    println!("{}", report::table(&summaries, target));
    let flagged: Vec<String> = summaries
        .iter()
        .filter(|s| s.failures() > 0)
        .map(|s| format!("{} {}", s.framework.name(), s.label))
        .collect();
    if flagged.is_empty() {
        println!("every answer was 2xx.\n");
    } else {
        println!(
            "FLAGGED (non-2xx answers or errors): {}\n",
            flagged.join(", ")
        );
    }
    // The docs' plot only from a full run: a partial one (`LOAD_ONLY`)
    // goes to cargo's scratch folder unless `LOAD_PLOT` says otherwise.
    let plot = std::env::var("LOAD_PLOT").map_or_else(
        |_| {
            if std::env::var_os("LOAD_ONLY").is_some() {
                PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("performance-ratios.svg")
            } else {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/performance-ratios.svg")
            }
        },
        PathBuf::from,
    );
    match report::plot(&summaries, &plot) {
        Ok(()) => println!("plot: {}\n", plot.display()),
        Err(error) => println!("plot failed: {error}\n"),
    }
    Ok(())
}

/// Wrong-password logins: 1 in 10 for the real user (whose account soon
/// locks: 429), the rest for random unknown names (dummy hash: full Argon2
/// cost), each from a random `X-Forwarded-For` address (the per-IP budget
/// never trips, as with a botnet).
fn flood_calls(seed: u64) -> CallFn {
    Arc::new(move |i| {
        let mut rng = XorShift::new(seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let r = rng.next_u64();
        let ip = format!(
            "10.{}.{}.{}",
            (r >> 8) & 0xff,
            (r >> 16) & 0xff,
            (r >> 24) & 0xff
        );
        let username = if r.is_multiple_of(10) {
            USERNAME.to_owned()
        } else {
            format!("user{:016x}", rng.next_u64())
        };
        Call::post_json(
            "/api/login",
            &serde_json::json!({ "username": username, "password": "not the right password" }),
        )
        .with_header("x-forwarded-for", &ip)
    })
}

struct FloodRound {
    unloaded: LoadResult,
    loaded: LoadResult,
    logins: LoadResult,
}

fn flood_round(
    config: &Config,
    rt: &tokio::runtime::Runtime,
    server: &Server,
    seed: u64,
) -> Result<FloodRound, BoxError> {
    let addr = server.addr;
    let unloaded = rt.block_on(client::load(
        addr,
        config.connections,
        config.secs,
        me_calls(server),
        None,
    ));
    // The attackers run on their own thread and runtime, as another
    // machine would; bounded by time and by the stop flag.
    let stop = Arc::new(AtomicBool::new(false));
    let flood_stop = Arc::clone(&stop);
    let connections = config.flood_connections;
    let bound = config.secs + Duration::from_secs(5);
    let attackers = std::thread::spawn(move || -> Result<LoadResult, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(rt.block_on(client::load(
            addr,
            connections,
            bound,
            flood_calls(seed),
            Some(flood_stop),
        )))
    });
    // Let the queue fill (the queue timeout is 1 s) before measuring.
    std::thread::sleep(Duration::from_millis(1500));
    let loaded = rt.block_on(client::load(
        addr,
        config.connections,
        config.secs,
        me_calls(server),
        None,
    ));
    stop.store(true, Ordering::Relaxed);
    let logins = attackers
        .join()
        .map_err(|_| "the flood thread panicked")??;
    // Let the server drain what the attackers left (logins waiting for a
    // hash slot give up after the 1 s queue timeout), so the next
    // "unloaded" measurement, of this server or the next, starts quiet.
    std::thread::sleep(Duration::from_millis(2500));
    Ok(FloodRound {
        unloaded,
        loaded,
        logins,
    })
}

fn login_flood(
    config: &Config,
    rt: &tokio::runtime::Runtime,
    host: &AxumHost,
) -> Result<(), BoxError> {
    println!(
        "## Login flood: {} connections POST /api/login (wrong passwords, random X-Forwarded-For through a trusted proxy), {} rounds\n",
        config.flood_connections, config.flood_rounds
    );
    let proxies = TrustedProxies::parse("127.0.0.1")?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut variants = Vec::new();
    if config.flood_rounds == 0 {
        return Ok(());
    }
    // The default leaves a core free of hashing; "all cores" is what the
    // default used to be.
    let default_slots = cores.saturating_sub(1).max(1);
    for slots in [None, Some(cores)] {
        let store = slots.map_or(Store::Memory, Store::MemoryHashSlots);
        let label = match slots {
            None => format!("default ({default_slots} = cores - 1)"),
            Some(n) => format!("{n} = all cores"),
        };
        let mut axum = servers::axum_auth(host, &store, proxies.clone())?;
        rt.block_on(servers::login(&mut axum))?;
        verify(rt, &axum)?;
        let mut actix = servers::actix_auth(&store, proxies.clone())?;
        rt.block_on(servers::login(&mut actix))?;
        verify(rt, &actix)?;
        let mut rocket = servers::rocket_auth(&store, proxies.clone())?;
        rt.block_on(servers::login(&mut rocket))?;
        verify(rt, &rocket)?;
        variants.push((label.clone(), axum));
        variants.push((label.clone(), actix));
        variants.push((label, rocket));
    }
    println!(
        "| framework | hash slots | me req/s unloaded | me req/s in flood | ratio (median) | target | p50 ms unloaded / flood | p99 ms unloaded / flood | me non-2xx | logins/s | login statuses | 429/503 without Retry-After | login p50 / p99 / max ms |"
    );
    println!("|---|---|---:|---:|---:|---|---|---|---:|---:|---|---:|---|");
    for (label, server) in &variants {
        let mut rounds = Vec::new();
        for round in 0..config.flood_rounds {
            rounds.push(flood_round(config, rt, server, 0x5EED + round as u64)?);
        }
        let ratios: Vec<f64> = rounds
            .iter()
            .map(|r| r.loaded.ok_per_sec() / r.unloaded.ok_per_sec())
            .collect();
        let med =
            |f: &dyn Fn(&FloodRound) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>());
        let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
        let mut logins = 0;
        let mut missing = 0;
        let mut max_login = 0.0f64;
        let mut login_secs = 0.0;
        let mut me_failures = 0;
        for r in &rounds {
            for (status, n) in &r.logins.statuses {
                *statuses.entry(*status).or_default() += n;
            }
            logins += r.logins.answers();
            login_secs += r.logins.elapsed.as_secs_f64();
            missing += r.logins.missing_retry_after;
            max_login = max_login.max(r.logins.latency_us(1.0));
            me_failures +=
                r.unloaded.non_2xx() + r.unloaded.errors + r.loaded.non_2xx() + r.loaded.errors;
        }
        let ratio = median(&ratios);
        let mix = statuses
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.3} | >= 0.50 {} | {:.2} / {:.2} | {:.2} / {:.2} | {} | {:.0} | {} | {} | {:.0} / {:.0} / {:.0} |",
            server.framework.name(),
            label,
            med(&|r| r.unloaded.ok_per_sec()),
            med(&|r| r.loaded.ok_per_sec()),
            ratio,
            if ratio >= 0.5 { "met" } else { "**MISSED**" },
            med(&|r| r.unloaded.latency_us(0.5)) / 1e3,
            med(&|r| r.loaded.latency_us(0.5)) / 1e3,
            med(&|r| r.unloaded.latency_us(0.99)) / 1e3,
            med(&|r| r.loaded.latency_us(0.99)) / 1e3,
            if me_failures == 0 {
                "0".to_owned()
            } else {
                format!("**{me_failures} FLAGGED**")
            },
            logins as f64 / login_secs.max(1e-9),
            mix,
            missing,
            med(&|r| r.logins.latency_us(0.5)) / 1e3,
            med(&|r| r.logins.latency_us(0.99)) / 1e3,
            max_login / 1e3,
        );
    }
    println!(
        "\nPasswordService: queue_timeout 1 s (default); a login's latency above 1 s + one hash means unbounded queueing.\n"
    );
    Ok(())
}
