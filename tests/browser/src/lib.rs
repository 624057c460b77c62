//! The demo apps in a real browser: Debian's `chromium`, headless, driven
//! over the DevTools protocol (`chromiumoxide`), with a virtual WebAuthn
//! authenticator standing in for the platform's passkey store.
//!
//! Each demo's `tests/browser.rs` calls [`passkey_and_totp_walk`] with its
//! binary (`env!("CARGO_BIN_EXE_example-...")`: Cargo builds that binary
//! before the test and hands its exact path to the demo's own tests, so no
//! guessing about target directories or profiles). The walk starts the
//! binary on a free port with a fresh SQLite file, opens it at
//! `http://localhost:PORT` (a secure context, so WebAuthn and the `Secure`
//! `__Host-` cookies work without TLS), and goes through the pages as a
//! person would: see [`passkey_and_totp_walk`].
//!
//! Chromium comes from `CHROMIUM` (a path) or `chromium` on `PATH`
//! (`apt-get install chromium`; `.ci/run` installs it). Without it the walk
//! prints `SKIPPED (service): chromium is not installed` and passes, except
//! under `CI=true`, where it fails (`scripts/test` also fails a CI run that
//! printed such a line).
//!
//! # Example
//!
//! Not run here (it needs Chromium and a built demo): a demo's
//! `tests/browser.rs` passes `env!("CARGO_BIN_EXE_example-axum")`, which
//! only that demo's own tests have.
//!
//! ```no_run
//! let binary = std::env::var("DEMO_BINARY").expect("the path of a demo binary");
//! auth_browser_tests::passkey_and_totp_walk(&binary);
//! ```

mod browser;
mod demo;
mod walk;

pub use walk::passkey_and_totp_walk;
