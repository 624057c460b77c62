//! The demo in headless Chromium: password, passkey and TOTP, through the
//! pages (tests/browser; skipped without `chromium` unless CI=true).

#[test]
fn a_browser_registers_and_signs_in_with_a_password_a_passkey_and_totp() {
    auth_browser_tests::passkey_and_totp_walk(env!("CARGO_BIN_EXE_example-axum"));
}
