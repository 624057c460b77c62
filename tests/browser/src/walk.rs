//! The walk through a demo's pages.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use auth_core::mfa::{TotpParams, TotpSecret};

use crate::browser::{Chromium, Tab, chromium, js_string};
use crate::demo::Demo;

/// The whole walk may take this long (it takes a few seconds).
const WALK_LIMIT: Duration = Duration::from_secs(90);

const USER: &str = "alice";
const PASSWORD: &str = "correct horse battery staple";

/// Walks the demo at `binary` in headless Chromium, as a person with a
/// password, a passkey and an authenticator app would:
///
/// 1. registers on `/register` and logs in on `/login` (the `__Host-`
///    session cookie is `Secure` and `HttpOnly` on `http://localhost`);
/// 2. adds a passkey on `/account` (a name and the password; the demo's
///    script runs the ceremony, the virtual authenticator makes a
///    discoverable credential for `localhost`), keeps the recovery codes it
///    shows, sees the passkey listed, logs out;
/// 3. signs in with "Sign in with a passkey" on `/login`, no user name and
///    no password; logs out; opens `/login` with passkey autofill on and is
///    signed in by it;
/// 4. sets up TOTP on `/account` (the password and one of the recovery
///    codes as proof; the key read from the page, the code computed from
///    it), logs out;
/// 5. logs in with the password and, on `/login/mfa`, a TOTP code; logs
///    out; logs in with the password and "Use a passkey" on `/login/mfa`.
///
/// Every wait is bounded (10 s), the whole walk too (90 s; it takes under
/// 10). Each demo gets its own port, SQLite file and browser profile, so
/// walks never share state. Without Chromium it is skipped (see the
/// crate's documentation); any failure panics with the step, the page's
/// address and text, what the page logged, and the demo's log.
pub fn passkey_and_totp_walk(binary: &str) {
    let Some(executable) = chromium() else {
        return;
    };
    let name = Path::new(binary)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("demo");
    let dir = std::env::temp_dir().join(format!("auth-browser-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("profile")).expect("a temporary directory");
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let outcome = runtime.block_on(run(&executable, binary, &dir));
    drop(runtime);
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(report) = outcome {
        panic!("the browser walk through {name} failed: {report}");
    }
    let _ = writeln!(
        std::io::stderr(),
        "browser walk through {name}: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

async fn run(executable: &Path, binary: &str, dir: &Path) -> Result<(), String> {
    let demo = Demo::start(binary, &dir.join("demo.db"))?;
    let browser = Chromium::launch(executable, &dir.join("profile")).await?;
    let outcome = match browser.tab(&demo.base_url()).await {
        Ok(tab) => {
            let walked = tokio::time::timeout(WALK_LIMIT, walk(&tab))
                .await
                .unwrap_or_else(|_| Err(format!("the walk took longer than {WALK_LIMIT:?}")));
            match walked {
                Ok(()) => Ok(()),
                Err(error) => Err(format!(
                    "{error}\n{}\n--- demo log ---\n{}",
                    tab.snapshot().await,
                    demo.log_tail()
                )),
            }
        }
        Err(error) => Err(format!("{error}\n--- demo log ---\n{}", demo.log_tail())),
    };
    browser.close().await;
    outcome
}

/// Runs one step, naming it in its error and timing it.
async fn step(name: &str, work: impl Future<Output = Result<(), String>>) -> Result<(), String> {
    let started = Instant::now();
    work.await.map_err(|e| format!("step \"{name}\": {e}"))?;
    // Captured by the test harness: shown with --nocapture or on failure.
    eprintln!("  {name}: {} ms", started.elapsed().as_millis());
    Ok(())
}

async fn walk(tab: &Tab) -> Result<(), String> {
    // A browser without passkey autofill until the autofill step (see
    // `Tab::passkey_autofill`).
    tab.passkey_autofill(false).await?;
    step("register with a password", register(tab)).await?;
    step("log in with the password", password_login(tab)).await?;
    let mut recovery_codes = Vec::new();
    step("add a passkey on /account", async {
        recovery_codes = add_passkey(tab).await?;
        Ok(())
    })
    .await?;
    step("log out", log_out(tab)).await?;
    step(
        "sign in with \"Sign in with a passkey\" on /login",
        passkey_button_sign_in(tab),
    )
    .await?;
    step("log out", log_out(tab)).await?;
    step(
        "sign in with the passkey from the /login autofill",
        passkey_autofill_sign_in(tab),
    )
    .await?;
    let mut totp = None;
    step("set up TOTP on /account", async {
        totp = Some(enroll_totp(tab, recovery_codes.first().map(String::as_str)).await?);
        Ok(())
    })
    .await?;
    let (secret, confirmed_step) = totp.ok_or("no TOTP secret")?;
    step("log out", log_out(tab)).await?;
    step("log in with the password and a TOTP code", async {
        send_login_form(tab, "/login/mfa").await?;
        totp_login(tab, &secret, confirmed_step).await
    })
    .await?;
    step("log out", log_out(tab)).await?;
    step(
        "log in with the password and \"Use a passkey\" on /login/mfa",
        async {
            send_login_form(tab, "/login/mfa").await?;
            tab.mark_document().await?;
            tab.click("#passkey-mfa").await?;
            tab.wait_navigated("/account").await?;
            tab.wait_text(&format!("Logged in as {USER}")).await
        },
    )
    .await
}

async fn register(tab: &Tab) -> Result<(), String> {
    tab.open("/register").await?;
    tab.fill(r#"form[action="/register"] input[name="username"]"#, USER)
        .await?;
    tab.fill(
        r#"form[action="/register"] input[name="password"]"#,
        PASSWORD,
    )
    .await?;
    tab.click_to(r#"form[action="/register"] button"#, "/login")
        .await
}

/// Fills and sends the `/login` form; the page after it is `to`.
async fn send_login_form(tab: &Tab, to: &str) -> Result<(), String> {
    tab.open("/login").await?;
    tab.fill(r#"form[action="/login"] input[name="username"]"#, USER)
        .await?;
    tab.fill(r#"form[action="/login"] input[name="password"]"#, PASSWORD)
        .await?;
    tab.click_to(r#"form[action="/login"] button"#, to).await
}

async fn password_login(tab: &Tab) -> Result<(), String> {
    send_login_form(tab, "/account").await?;
    tab.wait_text(&format!("Logged in as {USER}")).await?;
    let cookies = tab.cookies().await?;
    let session = cookies
        .iter()
        .find(|c| c.name == "__Host-session")
        .ok_or_else(|| {
            let names: Vec<&str> = cookies.iter().map(|c| c.name.as_str()).collect();
            format!("no __Host-session cookie after the login; the browser has {names:?}")
        })?;
    if !(session.secure && session.http_only && session.path == "/") {
        return Err(format!(
            "the session cookie is not Secure, HttpOnly, Path=/: {session:?}"
        ));
    }
    Ok(())
}

/// The name the passkey gets.
const PASSKEY_NAME: &str = "Laptop (virtual authenticator)";

/// Adds a passkey on `/account` (name and password; the script runs the
/// ceremony, the virtual authenticator answers), sees it in the
/// authenticator and in the page's list; returns the recovery codes shown
/// when it is the account's first second factor.
async fn add_passkey(tab: &Tab) -> Result<Vec<String>, String> {
    tab.open("/account").await?;
    tab.fill("#passkey-name", PASSKEY_NAME).await?;
    tab.fill("#passkey-password", PASSWORD).await?;
    tab.mark_document().await?;
    tab.click("#passkey-add-button").await?;
    // The script shows the recovery codes (first second factor) or opens
    // /account again; or it writes its error line.
    let outcome = tab
        .wait_for(
            "the passkey to be added (recovery codes, or /account again)",
            "(() => {
                const error = document.getElementById('passkey-error');
                if (error && !error.hidden && error.innerText.trim()) {
                    return { error: error.innerText };
                }
                const recovery = document.getElementById('passkey-recovery');
                const codes = recovery && !recovery.hidden
                    ? [...recovery.querySelectorAll('li code')].map(c => c.innerText.trim())
                    : [];
                if (codes.length > 0) { return { codes }; }
                if (!window.__browserWalkOld && location.pathname === '/account'
                    && document.readyState === 'complete') {
                    return { codes: [] };
                }
                return null;
            })()",
        )
        .await?;
    if let Some(error) = outcome.get("error") {
        return Err(format!("the page says: {error}"));
    }
    let codes: Vec<String> = outcome
        .get("codes")
        .and_then(|c| c.as_array())
        .map(|codes| {
            codes
                .iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let credentials = tab.credentials().await?;
    match credentials.as_slice() {
        [credential]
            if credential.is_resident_credential
                && credential.rp_id.as_deref() == Some("localhost") => {}
        _ => {
            return Err(format!(
                "the authenticator should hold one discoverable credential for \
                 localhost, it holds {credentials:?}"
            ));
        }
    }
    tab.open("/account").await?;
    tab.wait_for(
        "the passkey in the list on /account",
        &format!(
            "[...document.querySelectorAll('#passkeys tr[data-passkey-id]')]\
             .some(row => row.innerText.includes({}))",
            js_string(PASSKEY_NAME)
        ),
    )
    .await?;
    Ok(codes)
}

/// On `/login`, "Sign in with a passkey": no user name, no password.
async fn passkey_button_sign_in(tab: &Tab) -> Result<(), String> {
    tab.open("/login").await?;
    tab.mark_document().await?;
    tab.click("#passkey-signin").await?;
    tab.wait_navigated("/account").await?;
    tab.wait_text(&format!("Logged in as {USER}")).await
}

/// `/login` with passkey autofill: the page asks for a passkey as it
/// loads, the authenticator answers (the person picked it from the
/// suggestions), and the script signs in: `/account`, no click.
async fn passkey_autofill_sign_in(tab: &Tab) -> Result<(), String> {
    tab.passkey_autofill(true).await?;
    let signed_in = async {
        tab.open("/login").await?;
        tab.wait_for(
            "/account, opened by the script after the autofill",
            "location.pathname === '/account' && document.readyState === 'complete'",
        )
        .await?;
        tab.wait_text(&format!("Logged in as {USER}")).await
    }
    .await;
    tab.passkey_autofill(false).await?;
    signed_in
}

/// Sets up TOTP from `/account` (with the password, and a recovery code
/// when the account has a second factor already); returns the secret and
/// the time step of the code that confirmed it.
async fn enroll_totp(tab: &Tab, recovery_code: Option<&str>) -> Result<(TotpSecret, u64), String> {
    tab.open("/account").await?;
    tab.fill(
        r#"form[action="/account/mfa/enroll"] input[name="password"]"#,
        PASSWORD,
    )
    .await?;
    let code_field = r#"form[action="/account/mfa/enroll"] input[name="code"]"#;
    if tab.exists(code_field).await? {
        let code =
            recovery_code.ok_or("the set-up asks for a code, and no recovery code was shown")?;
        tab.fill(code_field, code).await?;
    }
    tab.click_to(
        r#"form[action="/account/mfa/enroll"] button"#,
        "/account/mfa/enroll",
    )
    .await?;
    // The key for manual entry, as a person would copy it.
    let key = tab
        .wait_for(
            "the TOTP key on the page",
            "[...document.querySelectorAll('p')].find(p => p.innerText.includes('by hand'))\
             ?.querySelector('code')?.innerText",
        )
        .await?;
    let key = key.as_str().unwrap_or_default().trim().to_owned();
    let secret =
        TotpSecret::from_base32(&key).map_err(|e| format!("the page's key {key:?}: {e}"))?;
    let now_step = unix_now() / TotpParams::default().step_secs();
    let code = totp_code(&secret, now_step)?;
    tab.fill(
        r#"form[action="/account/mfa/confirm"] input[name="code"]"#,
        &code,
    )
    .await?;
    tab.click_to(
        r#"form[action="/account/mfa/confirm"] button"#,
        "/account/mfa/confirm",
    )
    .await?;
    let codes = tab
        .wait_for(
            "the recovery codes",
            "document.querySelectorAll('li code').length",
        )
        .await?;
    if codes.as_u64().unwrap_or(0) == 0 {
        return Err("no recovery codes shown".to_owned());
    }
    tab.open("/account").await?;
    tab.wait_text("Two-factor authentication is on").await?;
    Ok((secret, now_step))
}

async fn log_out(tab: &Tab) -> Result<(), String> {
    tab.open("/account").await?;
    tab.click_to(r#"form[action="/logout"] button"#, "/")
        .await?;
    tab.wait_text("Not logged in").await
}

/// On `/login/mfa`: a code from the app. The step that confirmed the
/// enrolment cannot be used again (replay), so the code is that of the
/// current step or, within the same 30 s, of the next one (accepted: one
/// step of tolerance), never a sleep until the next step.
async fn totp_login(tab: &Tab, secret: &TotpSecret, confirmed_step: u64) -> Result<(), String> {
    let step = (unix_now() / TotpParams::default().step_secs()).max(confirmed_step + 1);
    let code = totp_code(secret, step)?;
    tab.fill(r#"form[action="/login/mfa"] input[name="code"]"#, &code)
        .await?;
    tab.click_to(r#"form[action="/login/mfa"] button"#, "/account")
        .await?;
    tab.wait_text(&format!("Logged in as {USER}")).await
}

fn totp_code(secret: &TotpSecret, step: u64) -> Result<String, String> {
    let params = TotpParams::default();
    params
        .code_at(secret, step * params.step_secs())
        .map(|code| code.to_string())
        .map_err(|e| format!("a TOTP code: {e}"))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
