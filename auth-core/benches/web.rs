//! The per-request helpers around the session: the cross-origin check
//! (`CsrfGuard::check`), form tokens (`CsrfTokens` issue and verify), and
//! the session cookie (`CookieConfig` parse and render). Reports only;
//! nothing is asserted.
//!
//! Run with `cargo bench -p auth-core --bench web`.

#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use auth_core::cookie::CookieConfig;
use auth_core::csrf::{CsrfGuard, CsrfTokens, RequestMeta};
use auth_core::session::SessionId;
use criterion::{Criterion, criterion_group, criterion_main};

fn csrf_benches(c: &mut Criterion) {
    let guard = CsrfGuard::default();
    let mut group = c.benchmark_group("csrf_guard");
    let cases = [
        (
            "get",
            RequestMeta {
                method: "GET",
                host: Some("app.example"),
                sec_fetch_site: Some("cross-site"),
                origin: None,
            },
        ),
        (
            "post_same_origin",
            RequestMeta {
                method: "POST",
                host: Some("app.example"),
                sec_fetch_site: Some("same-origin"),
                origin: Some("https://app.example"),
            },
        ),
        (
            "post_origin_matches_host",
            RequestMeta {
                method: "POST",
                host: Some("app.example"),
                sec_fetch_site: None,
                origin: Some("https://app.example"),
            },
        ),
        (
            "post_cross_site_refused",
            RequestMeta {
                method: "POST",
                host: Some("app.example"),
                sec_fetch_site: Some("cross-site"),
                origin: Some("https://evil.example"),
            },
        ),
    ];
    for (name, meta) in cases {
        group.bench_function(name, |b| {
            b.iter(|| {
                let _ = black_box(guard.check(black_box(&meta)));
            });
        });
    }
    group.finish();

    let tokens = CsrfTokens::new(vec![7u8; 32]).unwrap();
    let session = SessionId::generate().unwrap().key();
    let token = tokens.issue(&session);
    let mut group = c.benchmark_group("csrf_tokens");
    group.bench_function("issue", |b| b.iter(|| tokens.issue(black_box(&session))));
    group.bench_function("verify", |b| {
        b.iter(|| tokens.verify(black_box(&session), black_box(&token)));
    });
    group.bench_function("verify_forged", |b| {
        let forged = tokens.issue(&SessionId::generate().unwrap().key());
        b.iter(|| tokens.verify(black_box(&session), black_box(&forged)));
    });
    group.finish();
}

fn cookie_benches(c: &mut Criterion) {
    let config = CookieConfig::default();
    let id = SessionId::generate().unwrap();
    let alone = format!("__Host-session={}", id.encode());
    let crowded = format!(
        "_ga=GA1.2.1234567890.1234567890; theme=dark; lang=en-GB; __Host-session={}; _gid=GA1.2.987654321.1234567890",
        id.encode()
    );
    let mut group = c.benchmark_group("cookie");
    group.bench_function("parse/alone", |b| {
        b.iter(|| config.session_id([black_box(alone.as_str())]));
    });
    group.bench_function("parse/among_4_others", |b| {
        b.iter(|| config.session_id([black_box(crowded.as_str())]));
    });
    group.bench_function("parse/absent", |b| {
        b.iter(|| config.session_id([black_box("theme=dark; lang=en-GB")]));
    });
    group.bench_function("render/session", |b| {
        b.iter(|| config.session_cookie(black_box(&id), None));
    });
    group.bench_function("render/persistent", |b| {
        b.iter(|| config.session_cookie(black_box(&id), Some(Duration::from_secs(30 * 86_400))));
    });
    group.bench_function("render/removal", |b| b.iter(|| config.removal_cookie()));
    group.finish();
}

criterion_group!(benches, csrf_benches, cookie_benches);
criterion_main!(benches);
