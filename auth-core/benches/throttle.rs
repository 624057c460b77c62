//! The in-memory login throttle (`MemoryThrottle`): one check with a single
//! key and among 1,000,000 keys, and memory under a 1,000,000-key spray
//! (RSS from `/proc/self/statm` before and after the spray, and after the
//! clean-up once the keys are stale). Reports only; nothing is asserted.
//!
//! Run with `cargo bench -p auth-core --bench throttle`. The spray report is
//! printed first (on stderr), before criterion's groups.

#![allow(missing_docs)]

use std::future::Future;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use auth_core::clock::{Clock, ManualClock, SystemClock};
use auth_core::rate_limit::{Attempt, MemoryThrottle, ThrottleBackend, ThrottleConfig};
use criterion::{Criterion, criterion_group};

/// `MemoryThrottle`'s futures never wait: poll once, with no runtime in the
/// measurement.
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => unreachable!("MemoryThrottle never waits"),
    }
}

fn ip(n: u32) -> IpAddr {
    Ipv4Addr::from(0x0a00_0000u32.wrapping_add(n)).into()
}

/// An attempt on `account` (an existing account's key, as the flows make
/// it) from `ip`, without a device cookie.
fn attempt(ip: IpAddr, account: &str) -> Attempt<'_> {
    Attempt {
        ip,
        account,
        device: None,
    }
}

/// A budget that never runs out, so the timed path is "allowed".
fn unlimited() -> ThrottleConfig {
    ThrottleConfig::builder()
        .per_ip(1_000_000_000, Duration::from_nanos(1))
        .build()
        .unwrap()
}

const KEYS: u32 = 1_000_000;

/// An existing account's throttle key.
const ALICE: &str = "\u{1}id:alice";

fn throttle_benches(c: &mut Criterion) {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut group = c.benchmark_group("throttle");

    // The full clock, and the coarse one the throttle takes (part of every
    // check below: the caller reads the time once per call, as the
    // authenticator does, through `ThrottleBackend::now`).
    group.bench_function("clock_now", |b| b.iter(|| black_box(clock.now())));
    group.bench_function("clock_now_coarse", |b| {
        b.iter(|| black_box(clock.now_coarse()));
    });
    let one = MemoryThrottle::new(unlimited(), Arc::clone(&clock));
    let now = || one.now(clock.as_ref());
    let key = ip(1);
    group.bench_function("check_ip/1_key", |b| {
        b.iter(|| ready(one.check_ip(black_box(key), now())).unwrap());
    });
    // The full login check (IP budget, then the account count) followed by
    // the success that clears the count: a legitimate user's path.
    group.bench_function("check+success/1_key", |b| {
        b.iter(|| {
            let _ = black_box(
                ready(one.check(&attempt(black_box(key), black_box(ALICE)), now())).unwrap(),
            );
            ready(one.record_success(ALICE, None, now())).unwrap();
        });
    });

    let many = MemoryThrottle::new(unlimited(), Arc::clone(&clock));
    let now = || many.now(clock.as_ref());
    for n in 0..KEYS {
        let _ = ready(many.check_ip(ip(n), now()));
    }
    let mut n = 0u32;
    group.bench_function("check_ip/1M_keys", |b| {
        b.iter(|| {
            n = (n + 7919) % KEYS;
            ready(many.check_ip(black_box(ip(n)), now())).unwrap()
        });
    });
    let accounts: Vec<String> = (0..KEYS).map(|n| format!("\u{1}id:{n}")).collect();
    for (n, account) in (0..KEYS).zip(&accounts) {
        let _ = ready(many.check(&attempt(ip(n), account), now()));
        let _ = ready(many.record_success(account, None, now()));
    }
    group.bench_function("check+success/1M_keys", |b| {
        b.iter(|| {
            n = (n + 7919) % KEYS;
            let account = &accounts[n as usize];
            let _ =
                black_box(ready(many.check(&attempt(black_box(ip(n)), account), now())).unwrap());
            ready(many.record_success(account, None, now())).unwrap();
        });
    });
    group.finish();
}

/// Resident set size in MiB, from `/proc/self/statm` (pages of 4 KiB).
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(f64::NAN, |pages| (pages * 4096) as f64 / (1024.0 * 1024.0))
}

/// 1,000,000 distinct IPs (and, with `accounts`, as many login names that
/// find no account: they share the throttle's buckets) each make one
/// attempt; then the keys go stale (the clock moves past the
/// failure memory) and the throttle cleans up.
fn spray(accounts: bool) {
    let clock = Arc::new(ManualClock::starting_now());
    let throttle = MemoryThrottle::new(ThrottleConfig::default(), clock.clone());
    let before = rss_mib();
    let start = Instant::now();
    let mut name = String::new();
    for n in 0..KEYS {
        if accounts {
            name.clear();
            name.push_str("spray");
            name.push_str(&n.to_string());
            let _ = ready(throttle.check(&attempt(ip(n), &name), clock.now()));
        } else {
            let _ = ready(throttle.check_ip(ip(n), clock.now()));
        }
    }
    let took = start.elapsed();
    let sprayed = rss_mib();
    let tracked = throttle.tracked();
    // Past the IP refill and the 24 h failure memory: every key is stale.
    clock.advance(Duration::from_secs(25 * 60 * 60));
    let clean_start = Instant::now();
    throttle.housekeeping();
    let clean_took = clean_start.elapsed();
    let cleaned = rss_mib();
    let after = throttle.tracked();
    eprintln!(
        "spray {} : RSS {before:.1} MiB -> {sprayed:.1} MiB after 1M keys \
         ({:.0} ns/check, tracked ips/accounts {:?}) -> {cleaned:.1} MiB after clean-up \
         ({:.0} ms, tracked {:?})",
        if accounts {
            "1M IPs + 1M unknown names (check)"
        } else {
            "1M IPs (check_ip)"
        },
        took.as_nanos() as f64 / f64::from(KEYS),
        tracked,
        clean_took.as_secs_f64() * 1e3,
        after,
    );
    drop(throttle);
    eprintln!("  after drop: RSS {:.1} MiB", rss_mib());
}

criterion_group!(benches, throttle_benches);

fn main() {
    // The spray is slow in `cargo test --benches` mode; run it only in a
    // real benchmark run.
    if std::env::args().any(|a| a == "--bench") {
        spray(false);
        spray(true);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
