//! Helpers shared by the integration tests that need real services.

/// The URL of a required service from the environment variable `var`, or
/// `None` (with a printed reason) when it is not set locally. Under
/// `CI=true` its absence fails the test: CI must run the service tests.
pub(crate) fn service_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{var} is not set, but CI=true requires the service tests to run")
        }
        _ => {
            // Written to the real stderr, past the test harness's capture.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED (service): {var} is not set; run .ci/run or export it"
            );
            None
        }
    }
}
