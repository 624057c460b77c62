//! The demo binary over real HTTP, on a free port.

#[test]
fn the_demo_serves_the_api_and_keeps_sessions_across_a_restart() {
    auth_conformance::http::demo_serves_the_api_and_keeps_sessions_across_a_restart(env!(
        "CARGO_BIN_EXE_example-rocket"
    ));
}
