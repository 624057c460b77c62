//! Session create and load on the memory and SQLite stores, and on
//! PostgreSQL and Redis when `AUTH_TEST_POSTGRES_URL` / `AUTH_TEST_REDIS_URL`
//! are set (the hot path of every request is one `load`). Reports only;
//! nothing is asserted.
//!
//! Run with `cargo bench -p auth-core --all-features --bench session`.

#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;

use auth_core::session::{MemoryStore, SessionConfig, SessionManager, SessionStore};
use criterion::{Criterion, criterion_group, criterion_main};

fn bench_store(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    store: Arc<dyn SessionStore>,
) {
    let manager = SessionManager::new(store, SessionConfig::default());
    let session = rt.block_on(manager.create(Default::default())).unwrap();
    let cookie = session.id().encode();
    let mut group = c.benchmark_group(format!("session_{name}"));
    group.bench_function("create", |b| {
        b.iter(|| rt.block_on(manager.create(Default::default())).unwrap());
    });
    group.bench_function("load", |b| {
        b.iter(|| rt.block_on(manager.load(black_box(&cookie))).unwrap());
    });
    group.bench_function("load_unknown", |b| {
        let unknown = auth_core::session::SessionId::generate().unwrap().encode();
        b.iter(|| rt.block_on(manager.load(black_box(&unknown))).unwrap());
    });
    group.finish();
}

fn session_benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    bench_store(
        c,
        &rt,
        "memory",
        Arc::new(MemoryStore::new().capacity(10_000_000)),
    );
    #[cfg(feature = "sqlite")]
    {
        let dir = std::env::temp_dir().join(format!("auth-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("bench.db").display());
        let store = rt
            .block_on(auth_core::session::SqliteStore::connect(&url))
            .unwrap();
        bench_store(c, &rt, "sqlite", Arc::new(store));
        let _ = std::fs::remove_dir_all(dir);
    }
    #[cfg(feature = "postgres")]
    match service_url("AUTH_TEST_POSTGRES_URL") {
        Some(url) => {
            let store = rt
                .block_on(auth_core::session::PostgresStore::connect(&url))
                .unwrap();
            bench_store(c, &rt, "postgres", Arc::new(store));
        }
        None => skip("session_postgres", "AUTH_TEST_POSTGRES_URL"),
    }
    #[cfg(not(feature = "postgres"))]
    skip(
        "session_postgres",
        "the `postgres` feature (use --all-features)",
    );
    #[cfg(feature = "redis")]
    match service_url("AUTH_TEST_REDIS_URL") {
        Some(url) => {
            let store = rt
                .block_on(auth_core::session::RedisStore::connect(&url))
                .unwrap();
            bench_store(c, &rt, "redis", Arc::new(store));
        }
        None => skip("session_redis", "AUTH_TEST_REDIS_URL"),
    }
    #[cfg(not(feature = "redis"))]
    skip("session_redis", "the `redis` feature (use --all-features)");
}

/// The URL in `var`, if set and not empty.
#[cfg(any(feature = "postgres", feature = "redis"))]
fn service_url(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|url| !url.trim().is_empty())
}

/// Says why a group did not run (on stderr, past criterion's output).
fn skip(group: &str, missing: &str) {
    eprintln!("{group}: skipped, needs {missing}");
}

criterion_group!(benches, session_benches);
criterion_main!(benches);
