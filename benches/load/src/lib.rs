//! Load benchmark of the auth toolkit: small HTTP servers on 127.0.0.1
//! answering the same `GET /api/me`, bare and behind authentication, driven
//! by an in-process HTTP/1.1 keep-alive load generator.
//!
//! * [`servers`]: the bare routes and the demo apps (`example_axum::app`,
//!   `example_actix::app`, `example_rocket::app`) on each session store,
//!   each driven with its login cookie and with a bearer token.
//! * [`client`]: one-shot requests (register, log in, sign in for tokens)
//!   and the load loop, which counts every non-2xx answer.
//! * [`report`]: medians, the Markdown table and the SVG plot.
//!
//! The comparison libraries (axum-login, actix-identity) are dev-only
//! dependencies: their servers live in `benches/support/alternatives.rs`, shared by
//! the bench and `tests/smoke.rs`. Run everything with
//! `cargo bench -p auth-load-bench` (see `docs/performance.md`).
//!
//! # Example
//!
//! Every table cell is a median over rounds; a ratio is the median of the
//! per-round ratios, so drift between rounds hits both sides alike:
//!
//! ```
//! use auth_load_bench::report::median;
//!
//! let bare = [100_000.0, 90_000.0, 110_000.0];
//! let auth = [80_000.0, 72_000.0, 99_000.0];
//! let ratios: Vec<f64> = bare.iter().zip(&auth).map(|(b, a)| a / b).collect();
//! assert_eq!(median(&ratios), 0.8);
//! assert_eq!(median(&[]), 0.0);
//! ```

pub mod client;
pub mod report;
pub mod servers;

/// The body every `GET /api/me` variant answers for the benchmark user.
pub const ME_BODY: &str = r#"{"username":"alice","mfa_enabled":false}"#;

/// The benchmark user's name.
pub const USERNAME: &str = "alice";

/// The benchmark user's password (passes the demo's policy).
pub const PASSWORD: &str = "correct horse battery staple";

/// The Redis URL from `AUTH_TEST_REDIS_URL` or `REDIS_URL`, if set.
pub fn redis_url() -> Option<String> {
    ["AUTH_TEST_REDIS_URL", "REDIS_URL"]
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .find(|v| !v.trim().is_empty())
}
