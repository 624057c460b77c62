//! The example over real HTTP, on a free port.

#[test]
fn the_example_registers_logs_in_and_out() {
    auth_conformance::http::minimal_app_registers_logs_in_and_out(env!(
        "CARGO_BIN_EXE_minimal-rocket"
    ));
}
