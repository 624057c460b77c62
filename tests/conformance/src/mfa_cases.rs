//! The second-factor cases: TOTP enrolment, the second login step, replay,
//! recovery codes, throttling and expiry of the pending step, and the
//! proof every change of factors takes with the request (the password, and
//! a current code once a factor is on; ASVS 5.0 7.5.1).

use std::time::Duration;

use serde_json::{Value, json};

use crate::{HarnessFactory, PASSWORD, TestApp, TestOptions, TestResponse, form_token_of};

fn app<F: HarnessFactory>() -> TestApp {
    TestApp::start::<F>(TestOptions::default())
}

/// A TOTP step: codes are re-usable only after this much time.
const STEP: Duration = Duration::from_secs(30);

/// An enrolled user: its secret, recovery codes, and the session that
/// enrolled (logged in with both factors).
pub(crate) struct Enrolled {
    pub(crate) secret: String,
    pub(crate) recovery_codes: Vec<String>,
    pub(crate) cookie: String,
}

/// The proof a user without a second factor gives: the password.
fn password_only() -> Value {
    json!({ "password": PASSWORD })
}

/// The proof a user with a second factor gives: the password and `code`.
fn proof(code: &str) -> Value {
    json!({ "password": PASSWORD, "code": code })
}

/// A code that is not `right`.
fn wrong_code(right: &str) -> &'static str {
    if right == "000000" {
        "111111"
    } else {
        "000000"
    }
}

/// The new session cookie `r` set: a factor change, and the proof it
/// takes, give the session a new ID.
fn renewed(r: &TestResponse, old: &str) -> String {
    let new = r.session_cookie().expect("a new session cookie").0;
    assert_ne!(new, old, "the session ID changes");
    new
}

/// The `/account` page of the session `cookie`, as HTML.
async fn account_html(app: &TestApp, cookie: &str) -> String {
    let r = app
        .send(
            TestApp::req("GET", "/account")
                .header("cookie", cookie)
                .header("accept", "text/html"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

/// The recovery codes of an answer.
fn codes_of(r: &TestResponse) -> Vec<String> {
    r.json()["recovery_codes"]
        .as_array()
        .expect("recovery codes")
        .iter()
        .filter_map(|c| c.as_str().map(str::to_owned))
        .collect()
}

/// `DELETE /api/mfa/totp` with `body`.
async fn disable(app: &TestApp, body: Value, cookie: &str) -> TestResponse {
    app.send(
        TestApp::req("DELETE", "/api/mfa/totp")
            .json(body)
            .header("cookie", cookie),
    )
    .await
}

/// Starts and confirms TOTP on the logged-in session `cookie` (a user
/// without a second factor); returns the secret, the recovery codes and the
/// session's cookie after both steps renewed it.
async fn enrol(app: &TestApp, cookie: &str) -> Enrolled {
    let r = app
        .post_json("/api/mfa/totp/enroll", password_only(), Some(cookie))
        .await;
    assert_eq!(r.status, 200, "enroll: {}", r.text());
    let cookie = renewed(&r, cookie);
    let secret = r.json()["secret"].as_str().expect("a secret").to_owned();
    let code = app.totp(&secret);
    let r = app
        .post_json(
            "/api/mfa/totp/confirm",
            json!({ "code": code }),
            Some(&cookie),
        )
        .await;
    assert_eq!(r.status, 200, "confirm: {}", r.text());
    let cookie = renewed(&r, &cookie);
    let recovery_codes = codes_of(&r);
    // The confirming code's step is now used up.
    app.advance(STEP);
    Enrolled {
        secret,
        recovery_codes,
        cookie,
    }
}

/// Registers, logs in, enrols and confirms TOTP for `name`.
pub(crate) async fn enrolled(app: &TestApp, name: &str) -> Enrolled {
    app.register(name).await;
    let cookie = app.login(name).await;
    enrol(app, &cookie).await
}

/// A full login of `name` with the password and the current TOTP code of
/// `secret`; the clock then moves a step on, so that code is spent.
async fn full_login(app: &TestApp, name: &str, secret: &str) -> String {
    let pending = pending_login(app, name).await;
    let r = app
        .post_json(
            "/api/login/totp",
            json!({ "code": app.totp(secret) }),
            Some(&pending),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    app.advance(STEP);
    r.session_cookie().expect("a new session cookie").0
}

/// "Remember me" at a password login that needs a second factor: the
/// pending session's cookie ends with the browser session; the one of the
/// completed login persists (30 days) and outlives 30 idle minutes.
pub async fn remember_me_carries_through_the_second_factor<F: HarnessFactory>() {
    let app = app::<F>();
    let e = enrolled(&app, "alice").await;
    let r = app
        .post_json(
            "/api/login",
            json!({"username": "alice", "password": PASSWORD, "remember": true}),
            None,
        )
        .await;
    assert_eq!(r.json()["mfa_required"], true, "{}", r.text());
    let (pending, full) = r.session_cookie().expect("a pending-session cookie");
    assert!(!full.to_ascii_lowercase().contains("max-age"), "{full}");
    let r = app
        .post_json(
            "/api/login/totp",
            json!({ "code": app.totp(&e.secret) }),
            Some(&pending),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (cookie, full) = r.session_cookie().expect("a new session cookie");
    assert!(
        full.to_ascii_lowercase().contains("max-age=2592000"),
        "{full}"
    );
    app.advance(Duration::from_secs(2 * 60 * 60));
    assert_eq!(app.get("/api/me", Some(&cookie)).await.status, 200);
}

/// A password login that must stop at the second factor; returns the
/// pending cookie.
async fn pending_login(app: &TestApp, name: &str) -> String {
    let r = app.login_with(name, PASSWORD, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["mfa_required"], true, "{}", r.text());
    r.session_cookie().expect("a pending-session cookie").0
}

/// Enrolment answers the secret, an otpauth URI and a QR code; the factor
/// is not active before a valid code confirms it; confirmation gives at
/// least 10 distinct recovery codes.
pub async fn totp_enrolment_is_active_only_after_confirmation<F: HarnessFactory>() {
    let app = app::<F>();
    app.register("alice").await;
    let cookie = app.login("alice").await;
    let r = app
        .post_json("/api/mfa/totp/enroll", password_only(), Some(&cookie))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let cookie = renewed(&r, &cookie);
    let body = r.json();
    let secret = body["secret"].as_str().expect("secret");
    assert!(secret.len() >= 32, "160 bits in base32");
    let uri = body["otpauth_uri"].as_str().expect("otpauth_uri");
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    assert!(uri.contains("issuer="), "{uri}");
    assert!(body["qr_svg"].as_str().expect("qr_svg").contains("<svg"));
    assert_eq!(r.header("cache-control"), Some("no-store"));

    // Not confirmed: a new login needs no second factor, and /api/me says so.
    let r = app.login_with("alice", PASSWORD, None).await;
    assert_eq!(r.json()["mfa_required"], false, "{}", r.text());
    let me = app.get("/api/me", Some(&cookie)).await.json();
    assert_eq!(me["mfa_enabled"], false);

    // A wrong code does not confirm.
    let wrong = wrong_code(&app.totp(secret));
    let r = app
        .post_json(
            "/api/mfa/totp/confirm",
            json!({ "code": wrong }),
            Some(&cookie),
        )
        .await;
    assert!(matches!(r.status, 400 | 401), "{}", r.status);
    assert_eq!(
        app.login_with("alice", PASSWORD, None).await.json()["mfa_required"],
        false
    );

    let r = app
        .post_json(
            "/api/mfa/totp/confirm",
            json!({ "code": app.totp(secret) }),
            Some(&cookie),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let codes = codes_of(&r);
    assert!(codes.len() >= 10, "{codes:?}");
    let mut unique = codes.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), codes.len(), "codes are distinct");
    let r = app.login_with("alice", PASSWORD, None).await;
    assert_eq!(r.json()["mfa_required"], true, "{}", r.text());
    assert!(
        r.json()["methods"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m == "totp")),
        "{}",
        r.text()
    );
}

/// Enrolment takes the password with the request (ASVS 5.0 7.5.1): a
/// fresh login without it, or with a wrong one, is refused; a login of
/// more than 10 minutes ago with it works, and the session gets a new ID.
pub async fn totp_enrolment_needs_the_password_not_a_recent_login<F: HarnessFactory>() {
    let app = app::<F>();
    app.register("alice").await;
    let cookie = app.login("alice").await;
    let r = app
        .post_json("/api/mfa/totp/enroll", json!({}), Some(&cookie))
        .await;
    assert!(
        matches!(r.status, 400 | 422),
        "a recent login alone: {} {}",
        r.status,
        r.text()
    );
    let r = app
        .post_json(
            "/api/mfa/totp/enroll",
            json!({ "password": "not alice's password" }),
            Some(&cookie),
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.json()["error"].is_string());
    assert!(r.json()["secret"].is_null());
    assert!(r.session_cookie().is_none(), "a refusal changes nothing");

    app.advance(Duration::from_secs(11 * 60));
    // Keep the session alive past the idle timeout check.
    assert_eq!(app.get("/api/me", Some(&cookie)).await.status, 200);
    let r = app
        .post_json("/api/mfa/totp/enroll", password_only(), Some(&cookie))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["secret"].is_string());
    let renewed = renewed(&r, &cookie);
    assert_eq!(app.get("/api/me", Some(&cookie)).await.status, 401);
    assert_eq!(app.get("/api/me", Some(&renewed)).await.status, 200);
}

/// With TOTP on, the password alone yields a pending session that opens
/// nothing; the code completes the login with a new session ID.
pub async fn the_password_alone_opens_nothing_with_mfa<F: HarnessFactory>() {
    let app = app::<F>();
    let alice = enrolled(&app, "alice").await;
    let pending = pending_login(&app, "alice").await;
    assert_eq!(app.get("/api/me", Some(&pending)).await.status, 401);
    assert_eq!(app.get("/api/sessions", Some(&pending)).await.status, 401);
    let r = crate::cases::change_password(&app, &pending, "another long passphrase here").await;
    assert_eq!(
        r.status, 401,
        "a pending session cannot change the password"
    );
    let r = app
        .post_json("/api/mfa/totp/enroll", password_only(), Some(&pending))
        .await;
    assert_eq!(r.status, 401, "nor enrol, even with the password");

    let r = app
        .post_json(
            "/api/login/totp",
            json!({ "code": app.totp(&alice.secret) }),
            Some(&pending),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["mfa_required"], false);
    let full = r.session_cookie().expect("a new session cookie").0;
    assert_ne!(full, pending, "the session ID changes");
    assert_eq!(app.get("/api/me", Some(&full)).await.status, 200);
    assert_eq!(app.get("/api/me", Some(&pending)).await.status, 401);
    let me = app.get("/api/me", Some(&full)).await.json();
    assert_eq!(me["mfa_enabled"], true);
}

/// A TOTP code works once, even inside its window.
pub async fn a_totp_code_works_once<F: HarnessFactory>() {
    let app = app::<F>();
    let alice = enrolled(&app, "alice").await;
    let code = app.totp(&alice.secret);
    let pending = pending_login(&app, "alice").await;
    let r = app
        .post_json("/api/login/totp", json!({ "code": code }), Some(&pending))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let pending = pending_login(&app, "alice").await;
    let r = app
        .post_json("/api/login/totp", json!({ "code": code }), Some(&pending))
        .await;
    assert_eq!(r.status, 401, "a replayed code is refused");
    assert!(r.session_cookie().is_none());
    app.advance(STEP);
    let r = app
        .post_json(
            "/api/login/totp",
            json!({ "code": app.totp(&alice.secret) }),
            Some(&pending),
        )
        .await;
    assert_eq!(r.status, 200, "the next step's code works: {}", r.text());
}

/// Codes from two steps away are refused; the neighbours are accepted.
pub async fn only_neighbouring_steps_are_accepted<F: HarnessFactory>() {
    let app = app::<F>();
    let alice = enrolled(&app, "alice").await;
    // Well past the step the enrolment used, so a refused -2 is refused
    // for being out of the window, not as a replay.
    app.advance(STEP * 5);
    let pending = pending_login(&app, "alice").await;
    let secret = &alice.secret;
    for offset in [-2i64, 2] {
        let r = app
            .post_json(
                "/api/login/totp",
                json!({ "code": app.totp_at(secret, offset) }),
                Some(&pending),
            )
            .await;
        assert_eq!(r.status, 401, "step {offset:+}");
    }
    let r = app
        .post_json(
            "/api/login/totp",
            json!({ "code": app.totp_at(secret, -1) }),
            Some(&pending),
        )
        .await;
    assert_eq!(r.status, 200, "step -1: {}", r.text());
    let pending = pending_login(&app, "alice").await;
    let r = app
        .post_json(
            "/api/login/totp",
            json!({ "code": app.totp_at(secret, 1) }),
            Some(&pending),
        )
        .await;
    assert_eq!(r.status, 200, "step +1: {}", r.text());
}

/// Each recovery code completes one login, once.
pub async fn recovery_codes_work_once<F: HarnessFactory>() {
    let app = app::<F>();
    let alice = enrolled(&app, "alice").await;
    let pending = pending_login(&app, "alice").await;
    let r = app
        .post_json(
            "/api/login/recovery",
            json!({ "code": alice.recovery_codes[0] }),
            Some(&pending),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let full = r.session_cookie().expect("a new cookie").0;
    assert_eq!(app.get("/api/me", Some(&full)).await.status, 200);

    let pending = pending_login(&app, "alice").await;
    let r = app
        .post_json(
            "/api/login/recovery",
            json!({ "code": alice.recovery_codes[0] }),
            Some(&pending),
        )
        .await;
    assert_eq!(r.status, 401, "a used recovery code is refused");
    let r = app
        .post_json(
            "/api/login/recovery",
            json!({ "code": alice.recovery_codes[1].to_lowercase() }),
            Some(&pending),
        )
        .await;
    assert_eq!(
        r.status,
        200,
        "another code works, in any case: {}",
        r.text()
    );
}

/// Wrong second-factor codes are throttled like passwords: 429 with
/// `Retry-After`, also for the right code while locked.
pub async fn the_second_step_is_throttled<F: HarnessFactory>() {
    let app = app::<F>();
    let alice = enrolled(&app, "alice").await;
    let pending = pending_login(&app, "alice").await;
    let right = app.totp(&alice.secret);
    let wrong = wrong_code(&right);
    let mut locked = None;
    for attempt in 0..12 {
        let r = app
            .post_json("/api/login/totp", json!({ "code": wrong }), Some(&pending))
            .await;
        if r.status == 429 {
            locked = Some((attempt, r));
            break;
        }
        assert_eq!(r.status, 401, "attempt {attempt}");
    }
    let (attempt, r) = locked.expect("the second step locks after repeated failures");
    assert!(attempt <= 10, "locked after {attempt} failures");
    assert!(r.header("retry-after").is_some());
    let r = app
        .post_json("/api/login/totp", json!({ "code": right }), Some(&pending))
        .await;
    assert_eq!(r.status, 429, "the right code is refused while locked");
}

/// The pending step expires after a few minutes.
pub async fn a_pending_login_expires<F: HarnessFactory>() {
    let app = app::<F>();
    let alice = enrolled(&app, "alice").await;
    let pending = pending_login(&app, "alice").await;
    app.advance(Duration::from_secs(6 * 60));
    let r = app
        .post_json(
            "/api/login/totp",
            json!({ "code": app.totp(&alice.secret) }),
            Some(&pending),
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(app.get("/api/me", Some(&pending)).await.status, 401);
}

/// The second step without any session, or on a full session, gives no
/// new session.
pub async fn the_second_step_needs_a_pending_login<F: HarnessFactory>() {
    let app = app::<F>();
    let alice = enrolled(&app, "alice").await;
    let code = app.totp(&alice.secret);
    let r = app
        .post_json("/api/login/totp", json!({ "code": code }), None)
        .await;
    assert_eq!(r.status, 401);
    assert!(r.session_cookie().is_none());
}

/// Removal takes the password and a current code with the request: a
/// missing field is a bad body, a wrong password or code 401; afterwards
/// the password alone logs in.
pub async fn disabling_totp_needs_the_password_and_a_code<F: HarnessFactory>() {
    let app = app::<F>();
    let alice = enrolled(&app, "alice").await;
    let full = full_login(&app, "alice", &alice.secret).await;
    let right = app.totp(&alice.secret);
    for body in [json!({ "code": right }), password_only()] {
        let r = disable(&app, body.clone(), &full).await;
        assert!(
            matches!(r.status, 400 | 422),
            "{body}: {} {}",
            r.status,
            r.text()
        );
    }
    let r = disable(
        &app,
        json!({ "password": "not alice's password", "code": right }),
        &full,
    )
    .await;
    assert_eq!(r.status, 401, "a wrong password: {}", r.text());
    let r = disable(&app, proof(wrong_code(&right)), &full).await;
    assert_eq!(r.status, 401, "a wrong code: {}", r.text());
    assert!(r.session_cookie().is_none(), "a refusal changes nothing");
    assert_eq!(
        app.get("/api/me", Some(&full)).await.json()["mfa_enabled"],
        true
    );
    // The code of the refused attempt with a wrong password was not spent.
    let r = disable(&app, proof(&right), &full).await;
    assert_eq!(r.status, 204, "{}", r.text());
    let renewed = renewed(&r, &full);
    assert_eq!(
        app.get("/api/me", Some(&renewed)).await.json()["mfa_enabled"],
        false
    );
    let r = app.login_with("alice", PASSWORD, None).await;
    assert_eq!(r.json()["mfa_required"], false);
}

/// No response of the MFA flow carries the secret after enrolment, and
/// the session ID never appears in a body.
pub async fn the_second_step_answers_carry_no_secret<F: HarnessFactory>() {
    let app = app::<F>();
    let alice = enrolled(&app, "alice").await;
    let pending = pending_login(&app, "alice").await;
    let r = app
        .post_json(
            "/api/login/totp",
            json!({ "code": app.totp(&alice.secret) }),
            Some(&pending),
        )
        .await;
    let full = r.session_cookie().expect("cookie").0;
    let id = full.split('=').nth(1).unwrap_or_default().to_owned();
    for response in [r, app.get("/api/me", Some(&full)).await] {
        let text = response.text();
        assert!(!text.contains(&alice.secret), "{text}");
        assert!(!text.contains(&id), "{text}");
    }
}

/// The HTML login of a user with TOTP goes through `/login/mfa`, whose
/// form needs the pending session's CSRF token and the code.
pub async fn the_login_form_leads_to_the_second_factor_page<F: HarnessFactory>() {
    let app = app::<F>();
    let alice = enrolled(&app, "alice").await;
    let (cookie, token) = app.form_token("/login?next=/account").await;
    let credentials = format!(
        "username=alice&password={}&next=%2Faccount&csrf_token={token}",
        PASSWORD.replace(' ', "+")
    );
    let r = app.post_form("/login", &credentials, Some(&cookie)).await;
    assert_eq!(r.status, 303, "{}", r.text());
    let location = r.header("location").expect("a redirect").to_owned();
    assert!(location.starts_with("/login/mfa"), "{location}");
    let pending = r.session_cookie().expect("a pending-session cookie").0;
    assert_eq!(app.get("/api/me", Some(&pending)).await.status, 401);

    let page = app
        .send(
            TestApp::req("GET", &location)
                .header("cookie", &pending)
                .header("accept", "text/html"),
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(page.text().contains("name=\"code\""));
    let token = form_token_of(&page.text());

    let code = app.totp(&alice.secret);
    let r = app
        .post_form("/login/mfa", &format!("code={code}"), Some(&pending))
        .await;
    assert_eq!(r.status, 403, "no CSRF token");
    let r = app
        .post_form(
            "/login/mfa",
            &format!("code={code}&next=%2Faccount&csrf_token={token}"),
            Some(&pending),
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.header("location"), Some("/account"));
    let full = r.session_cookie().expect("a new session cookie").0;
    assert_ne!(full, pending);
    let account = app
        .send(
            TestApp::req("GET", "/account")
                .header("cookie", &full)
                .header("accept", "text/html"),
        )
        .await;
    assert_eq!(account.status, 200);
    assert!(account.text().contains("Two-factor authentication is on"));
}

/// The HTML second step also takes a recovery code, once.
pub async fn the_second_factor_form_takes_a_recovery_code_once<F: HarnessFactory>() {
    let app = app::<F>();
    let alice = enrolled(&app, "alice").await;
    let code = alice.recovery_codes[0].clone();
    for (attempt, expected) in [(1, 303), (2, 401)] {
        let (cookie, token) = app.form_token("/login").await;
        let credentials = format!(
            "username=alice&password={}&csrf_token={token}",
            PASSWORD.replace(' ', "+")
        );
        let r = app.post_form("/login", &credentials, Some(&cookie)).await;
        assert_eq!(r.status, 303, "{}", r.text());
        let pending = r.session_cookie().expect("a pending-session cookie").0;
        let page = app
            .send(
                TestApp::req("GET", "/login/mfa")
                    .header("cookie", &pending)
                    .header("accept", "text/html"),
            )
            .await;
        let token = form_token_of(&page.text());
        let r = app
            .post_form(
                "/login/mfa",
                &format!("code={code}&csrf_token={token}"),
                Some(&pending),
            )
            .await;
        assert_eq!(r.status, expected, "attempt {attempt}: {}", r.text());
        if expected == 303 {
            let full = r.session_cookie().expect("a new session cookie").0;
            assert_eq!(app.get("/api/me", Some(&full)).await.status, 200);
        }
    }
}

/// Without a pending login, `/login/mfa` sends the browser to `/login`.
pub async fn the_second_factor_page_needs_a_pending_login<F: HarnessFactory>() {
    let app = app::<F>();
    let r = app
        .send(TestApp::req("GET", "/login/mfa").header("accept", "text/html"))
        .await;
    assert_eq!(r.status, 303);
    assert!(
        r.header("location")
            .is_some_and(|l| l.starts_with("/login"))
    );
}

/// `require_mfa`: new recovery codes need a session that proved the second
/// factor (403 otherwise, even with the password; 401 without a session);
/// they replace the old set.
pub async fn new_recovery_codes_need_a_second_factor_session<F: HarnessFactory>() {
    let app = app::<F>();
    app.register("bob").await;
    let bob = app.login("bob").await;
    let r = app
        .post_json("/api/mfa/recovery-codes", proof("000000"), Some(&bob))
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.json()["error"].is_string());
    let r = app
        .post_json("/api/mfa/recovery-codes", proof("000000"), None)
        .await;
    assert_eq!(r.status, 401);

    let alice = enrolled(&app, "alice").await;
    let pending = pending_login(&app, "alice").await;
    let r = app
        .post_json(
            "/api/mfa/recovery-codes",
            proof(&alice.recovery_codes[1]),
            Some(&pending),
        )
        .await;
    assert_eq!(r.status, 401, "a pending session is no login");
    let r = app
        .post_json(
            "/api/login/totp",
            json!({ "code": app.totp(&alice.secret) }),
            Some(&pending),
        )
        .await;
    let full = r.session_cookie().expect("cookie").0;
    app.advance(STEP);
    let r = app
        .post_json(
            "/api/mfa/recovery-codes",
            proof(&app.totp(&alice.secret)),
            Some(&full),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let fresh = codes_of(&r);
    assert!(fresh.len() >= 10);
    let pending = pending_login(&app, "alice").await;
    let r = app
        .post_json(
            "/api/login/recovery",
            json!({ "code": alice.recovery_codes[0] }),
            Some(&pending),
        )
        .await;
    assert_eq!(r.status, 401, "the old set is void");
    let r = app
        .post_json(
            "/api/login/recovery",
            json!({ "code": fresh[0] }),
            Some(&pending),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// New recovery codes take the password and a current code with the
/// request: a missing field is a bad body, a wrong password or code 401;
/// a recovery code of the old set is proof too (and used up with it).
pub async fn new_recovery_codes_need_the_password_and_a_code<F: HarnessFactory>() {
    let app = app::<F>();
    let alice = enrolled(&app, "alice").await;
    let full = alice.cookie.clone();
    let right = app.totp(&alice.secret);
    let post = |body: Value| app.post_json("/api/mfa/recovery-codes", body, Some(&full));
    for body in [json!({ "code": right }), password_only()] {
        let r = post(body.clone()).await;
        assert!(
            matches!(r.status, 400 | 422),
            "{body}: {} {}",
            r.status,
            r.text()
        );
    }
    let r = post(json!({ "password": "not alice's password", "code": right })).await;
    assert_eq!(r.status, 401, "a wrong password: {}", r.text());
    let r = post(proof(wrong_code(&right))).await;
    assert_eq!(r.status, 401, "a wrong code: {}", r.text());
    assert!(r.json()["recovery_codes"].is_null());
    assert!(r.session_cookie().is_none(), "a refusal changes nothing");

    let r = post(proof(&alice.recovery_codes[0])).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let renewed = renewed(&r, &full);
    let fresh = codes_of(&r);
    assert!(fresh.len() >= 10);
    assert!(fresh.iter().all(|c| !alice.recovery_codes.contains(c)));
    assert_eq!(app.get("/api/me", Some(&renewed)).await.status, 200);
    let pending = pending_login(&app, "alice").await;
    for old in &alice.recovery_codes[..2] {
        let r = app
            .post_json(
                "/api/login/recovery",
                json!({ "code": old }),
                Some(&pending),
            )
            .await;
        assert_eq!(r.status, 401, "the old set is void");
    }
}

/// Wrong passwords given as proof for a factor change count like wrong
/// passwords at login: the account locks (the login with it), 429 with
/// `Retry-After`, even for the right password.
pub async fn a_wrong_password_for_a_factor_change_is_throttled_like_a_login<F: HarnessFactory>() {
    let app = app::<F>();
    app.register("alice").await;
    let cookie = app.login("alice").await;
    let enroll = |password: &str, n: usize| {
        TestApp::req("POST", "/api/mfa/totp/enroll")
            .json(json!({ "password": password }))
            .header("cookie", &cookie)
            .peer(&format!("203.0.113.{n}"))
    };
    let mut locked = None;
    for attempt in 0..12 {
        let r = app.send(enroll("wrong guess!", attempt)).await;
        if r.status == 429 {
            locked = Some((attempt, r));
            break;
        }
        assert_eq!(r.status, 401, "attempt {attempt}: {}", r.text());
    }
    let (attempt, r) = locked.expect("wrong proofs lock the account");
    assert!(attempt <= 10, "locked after {attempt} failures");
    assert!(r.header("retry-after").is_some());
    let r = app.send(enroll(PASSWORD, 99)).await;
    assert_eq!(r.status, 429, "the right password is refused while locked");
    assert_eq!(
        app.login_with("alice", PASSWORD, None).await.status,
        429,
        "the login shares the lock"
    );
}

/// Wrong codes given as proof for a factor change count against the
/// account's second-factor budget, as at the second login step.
pub async fn a_wrong_code_for_a_factor_change_is_throttled<F: HarnessFactory>() {
    let app = app::<F>();
    let alice = enrolled(&app, "alice").await;
    let right = app.totp(&alice.secret);
    let mut locked = None;
    for attempt in 0..12 {
        let r = disable(&app, proof(wrong_code(&right)), &alice.cookie).await;
        if r.status == 429 {
            locked = Some((attempt, r));
            break;
        }
        assert_eq!(r.status, 401, "attempt {attempt}: {}", r.text());
    }
    let (attempt, r) = locked.expect("wrong codes lock the second factor");
    assert!(attempt <= 10, "locked after {attempt} failures");
    assert!(r.header("retry-after").is_some());
    let r = disable(&app, proof(&right), &alice.cookie).await;
    assert_eq!(r.status, 429, "the right code is refused while locked");
    assert_eq!(
        app.get("/api/me", Some(&alice.cookie)).await.json()["mfa_enabled"],
        true
    );
}

/// Every change of factors (confirming an enrolment, removal, new recovery
/// codes) ends the account's other sessions; the acting session stays
/// logged in under a new cookie. Starting an enrolment changes no factor
/// and ends nothing.
pub async fn each_factor_change_ends_the_other_sessions<F: HarnessFactory>() {
    let app = app::<F>();
    app.register("alice").await;
    let mine = app.login("alice").await;
    let other = app.login("alice").await;

    // Confirmation.
    let r = app
        .post_json("/api/mfa/totp/enroll", password_only(), Some(&mine))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mine = renewed(&r, &mine);
    let secret = r.json()["secret"].as_str().expect("a secret").to_owned();
    assert_eq!(app.get("/api/me", Some(&other)).await.status, 200);
    let r = app
        .post_json(
            "/api/mfa/totp/confirm",
            json!({ "code": app.totp(&secret) }),
            Some(&mine),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let confirmed = renewed(&r, &mine);
    assert_eq!(app.get("/api/me", Some(&other)).await.status, 401);
    assert_eq!(app.get("/api/me", Some(&mine)).await.status, 401);
    assert_eq!(app.get("/api/me", Some(&confirmed)).await.status, 200);
    app.advance(STEP);

    // Removal.
    let other = full_login(&app, "alice", &secret).await;
    let r = disable(&app, proof(&app.totp(&secret)), &confirmed).await;
    assert_eq!(r.status, 204, "{}", r.text());
    let disabled = renewed(&r, &confirmed);
    assert_eq!(app.get("/api/me", Some(&other)).await.status, 401);
    assert_eq!(app.get("/api/me", Some(&confirmed)).await.status, 401);
    assert_eq!(app.get("/api/me", Some(&disabled)).await.status, 200);

    // New recovery codes.
    let again = enrol(&app, &disabled).await;
    let other = full_login(&app, "alice", &again.secret).await;
    let r = app
        .post_json(
            "/api/mfa/recovery-codes",
            proof(&app.totp(&again.secret)),
            Some(&again.cookie),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let regenerated = renewed(&r, &again.cookie);
    assert_eq!(app.get("/api/me", Some(&other)).await.status, 401);
    assert_eq!(app.get("/api/me", Some(&again.cookie)).await.status, 401);
    assert_eq!(app.get("/api/me", Some(&regenerated)).await.status, 200);
}

/// The account page asks for the proof with each change of factors: the
/// password (`autocomplete="current-password"`) and, once a factor is on,
/// a code; the forms carry the CSRF token as before.
pub async fn the_account_page_takes_the_proof_with_each_factor_change<F: HarnessFactory>() {
    let app = app::<F>();
    app.register("alice").await;
    let cookie = app.login("alice").await;
    let html = account_html(&app, &cookie).await;
    let enroll_form = form_with_action(&html, "/account/mfa/enroll");
    assert!(
        enroll_form.contains(r#"name="password" type="password" autocomplete="current-password""#),
        "{enroll_form}"
    );
    let token = form_token_of(enroll_form);
    let r = app
        .post_form(
            "/account/mfa/enroll",
            &format!("csrf_token={token}"),
            Some(&cookie),
        )
        .await;
    assert!(matches!(r.status, 400 | 422), "no password: {}", r.status);
    let r = app
        .post_form(
            "/account/mfa/enroll",
            &format!("password=wrong+guess%21&csrf_token={token}"),
            Some(&cookie),
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.text());
    let password = PASSWORD.replace(' ', "+");
    let r = app
        .post_form(
            "/account/mfa/enroll",
            &format!("password={password}"),
            Some(&cookie),
        )
        .await;
    assert_eq!(r.status, 403, "no CSRF token");
    let r = app
        .post_form(
            "/account/mfa/enroll",
            &format!("password={password}&csrf_token={token}"),
            Some(&cookie),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("<svg"));
    let cookie = renewed(&r, &cookie);
    let secret = r
        .text()
        .split("Or enter this key by hand: <code>")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .expect("the secret for manual entry")
        .to_owned();
    let r = app
        .post_json(
            "/api/mfa/totp/confirm",
            json!({ "code": app.totp(&secret) }),
            Some(&cookie),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let cookie = renewed(&r, &cookie);
    app.advance(STEP);

    let html = account_html(&app, &cookie).await;
    for action in ["/account/mfa/recovery-codes", "/account/mfa/disable"] {
        let form = form_with_action(&html, action);
        assert!(
            form.contains(r#"autocomplete="current-password""#),
            "{form}"
        );
        assert!(form.contains(r#"name="code""#), "{form}");
        assert!(form.contains(r#"name="csrf_token""#), "{form}");
    }
    let token = form_token_of(form_with_action(&html, "/account/mfa/disable"));
    let r = app
        .post_form(
            "/account/mfa/disable",
            &format!("password={password}&code=&csrf_token={token}"),
            Some(&cookie),
        )
        .await;
    assert_eq!(r.status, 403, "an empty code is no proof: {}", r.text());
    assert!(
        r.text().contains("recovery code is required"),
        "{}",
        r.text()
    );
    let r = app
        .post_form(
            "/account/mfa/disable",
            &format!(
                "password={password}&code={}&csrf_token={token}",
                app.totp(&secret)
            ),
            Some(&cookie),
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.text());
    let cookie = renewed(&r, &cookie);
    assert_eq!(
        app.get("/api/me", Some(&cookie)).await.json()["mfa_enabled"],
        false
    );
}

/// The `<form>` of `html` whose action is `action`, up to its end.
fn form_with_action<'a>(html: &'a str, action: &str) -> &'a str {
    let start = html
        .find(&format!(r#"<form method="post" action="{action}">"#))
        .unwrap_or_else(|| panic!("a form for {action}: {html}"));
    let rest = &html[start..];
    let end = rest.find("</form>").unwrap_or(rest.len());
    &rest[..end]
}

/// A password reset never bypasses the second factor: the next sign-in
/// still asks for it.
pub async fn a_password_reset_keeps_the_second_factor<F: HarnessFactory>() {
    let app = app::<F>();
    let address = crate::cases::registered_with_verified_email(&app, "alice").await;
    let cookie = app.login("alice").await;
    let enrolled = enrol(&app, &cookie).await;
    let token = crate::cases::reset_token(&app, "alice", &address).await;
    let new_password = "a brand new passphrase 2026";
    let r = crate::cases::reset_password(&app, &token, new_password).await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(app.get("/api/me", Some(&enrolled.cookie)).await.status, 401);
    let r = app.login_with("alice", new_password, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["mfa_required"],
        true,
        "the second factor still applies"
    );
    let pending = r.session_cookie().unwrap().0;
    assert_eq!(app.get("/api/me", Some(&pending)).await.status, 401);
}

/// A magic link is one factor: an account with TOTP is still asked for it.
pub async fn a_magic_link_still_asks_for_the_second_factor<F: HarnessFactory>() {
    let app = app::<F>();
    let address = crate::cases::registered_with_verified_email(&app, "alice").await;
    let cookie = app.login("alice").await;
    let enrolled = enrol(&app, &cookie).await;
    let r = app
        .post_json("/api/login/magic", json!({"login": "alice"}), None)
        .await;
    assert_eq!(r.status, 202);
    let mail = crate::mail_to(&address).await.expect("a sign-in mail");
    let token = crate::link_token(&mail.body).unwrap();
    let r = app
        .post_json("/api/login/magic/finish", json!({"token": token}), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["mfa_required"], true);
    let pending = r.session_cookie().unwrap().0;
    assert_eq!(app.get("/api/me", Some(&pending)).await.status, 401);
    let r = app
        .post_json(
            "/api/login/totp",
            json!({"code": app.totp(&enrolled.secret)}),
            Some(&pending),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let cookie = r.session_cookie().unwrap().0;
    assert_eq!(app.get("/api/me", Some(&cookie)).await.status, 200);
}

/// The account page changes the address with the password (and, once a
/// second factor is on, a code), and shows whether it is confirmed.
pub async fn the_account_page_changes_the_address_with_proof<F: HarnessFactory>() {
    let app = app::<F>();
    let old = crate::cases::registered_with_verified_email(&app, "alice").await;
    let cookie = app.login("alice").await;
    let html = account_html(&app, &cookie).await;
    assert!(html.contains(&old), "the verified address is shown");
    let form = form_with_action(&html, "/account/email");
    let token = form_token_of(form);
    let new = crate::fresh_address("alice-new");
    let wrong = app
        .post_form(
            "/account/email",
            &format!("email={new}&password=wrong+password&csrf_token={token}"),
            Some(&cookie),
        )
        .await;
    assert_eq!(wrong.status, 401);
    let r = app
        .post_form(
            "/account/email",
            &format!(
                "email={new}&password={}&csrf_token={token}",
                PASSWORD.replace(' ', "+")
            ),
            Some(&cookie),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let cookie = r.session_cookie().expect("a new session ID").0;
    assert!(
        crate::mail_to(&new).await.is_some(),
        "a link to the new address"
    );
    assert!(
        crate::mail_to(&old).await.is_some(),
        "a notice to the old one"
    );
    let html = account_html(&app, &cookie).await;
    assert!(html.contains(&old), "in effect until confirmed");
}

/// Every change to how an account signs in is told to its verified
/// address: TOTP on, a new password, TOTP off (the other kinds share the
/// path; the core tests their list).
pub async fn changes_to_how_an_account_signs_in_are_told_to_its_address<F: HarnessFactory>() {
    let app = app::<F>();
    let address = crate::cases::registered_with_verified_email(&app, "alice").await;
    let told = |what: &'static str| {
        let address = address.clone();
        async move {
            let notice = crate::notice_to(&address, what)
                .await
                .unwrap_or_else(|| panic!("a notice: {what}"));
            assert!(
                crate::link_token(&notice.body).is_none(),
                "nothing to act on"
            );
        }
    };
    let cookie = app.login("alice").await;
    let e = enrol(&app, &cookie).await;
    told("authenticator app was set up").await;
    let r = crate::cases::change_password(&app, &e.cookie, "a changed passphrase 12").await;
    assert_eq!(r.status, 204, "{}", r.text());
    let cookie = renewed(&r, &e.cookie);
    told("password was changed").await;
    let r = disable(
        &app,
        json!({"password": "a changed passphrase 12", "code": app.totp(&e.secret)}),
        &cookie,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    told("authenticator app was removed").await;
}
