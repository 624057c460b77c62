//! The second-factor cases: TOTP enrolment, the second login step, replay,
//! recovery codes, throttling and expiry of the pending step.

use std::time::Duration;

use serde_json::json;

use crate::{HarnessFactory, PASSWORD, TestApp, TestOptions};

fn app<F: HarnessFactory>() -> TestApp {
    TestApp::start::<F>(TestOptions::default())
}

/// A TOTP step: codes are re-usable only after this much time.
const STEP: Duration = Duration::from_secs(30);

/// An enrolled user: its secret and recovery codes.
struct Enrolled {
    secret: String,
    recovery_codes: Vec<String>,
}

/// Registers, logs in, enrols and confirms TOTP for `name`.
async fn enrolled(app: &TestApp, name: &str) -> Enrolled {
    app.register(name).await;
    let cookie = app.login(name).await;
    let r = app
        .post_json("/api/mfa/totp/enroll", json!({}), Some(&cookie))
        .await;
    assert_eq!(r.status, 200, "enroll: {}", r.text());
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
    let recovery_codes = r.json()["recovery_codes"]
        .as_array()
        .expect("recovery codes")
        .iter()
        .filter_map(|c| c.as_str().map(str::to_owned))
        .collect();
    // The confirming code's step is now used up.
    app.advance(STEP);
    Enrolled {
        secret,
        recovery_codes,
    }
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
        .post_json("/api/mfa/totp/enroll", json!({}), Some(&cookie))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
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
    let wrong = if app.totp(secret) == "000000" {
        "111111"
    } else {
        "000000"
    };
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
    let codes: Vec<String> = r.json()["recovery_codes"]
        .as_array()
        .expect("codes")
        .iter()
        .filter_map(|c| c.as_str().map(str::to_owned))
        .collect();
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

/// Enrolment needs a recent login: 403 once the window (10 min) passed.
pub async fn totp_enrolment_needs_a_recent_login<F: HarnessFactory>() {
    let app = app::<F>();
    app.register("alice").await;
    let cookie = app.login("alice").await;
    app.advance(Duration::from_secs(11 * 60));
    // Keep the session alive past the idle timeout check.
    assert_eq!(app.get("/api/me", Some(&cookie)).await.status, 200);
    let r = app
        .post_json("/api/mfa/totp/enroll", json!({}), Some(&cookie))
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.json()["error"].is_string());
}

/// With TOTP on, the password alone yields a pending session that opens
/// nothing; the code completes the login with a new session ID.
pub async fn the_password_alone_opens_nothing_with_mfa<F: HarnessFactory>() {
    let app = app::<F>();
    let alice = enrolled(&app, "alice").await;
    let pending = pending_login(&app, "alice").await;
    assert_eq!(app.get("/api/me", Some(&pending)).await.status, 401);
    assert_eq!(app.get("/api/sessions", Some(&pending)).await.status, 401);
    let r = app
        .post_json(
            "/api/password",
            json!({"current_password": PASSWORD, "new_password": "another long passphrase here"}),
            Some(&pending),
        )
        .await;
    assert_eq!(
        r.status, 401,
        "a pending session cannot change the password"
    );
    let r = app
        .post_json("/api/mfa/totp/enroll", json!({}), Some(&pending))
        .await;
    assert_eq!(r.status, 401, "nor enrol");

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
    let wrong = if right == "000000" {
        "111111"
    } else {
        "000000"
    };
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

/// Removal needs a valid code; afterwards the password alone logs in.
pub async fn disabling_totp_needs_a_valid_code<F: HarnessFactory>() {
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
    app.advance(STEP);
    let right = app.totp(&alice.secret);
    let wrong = if right == "000000" {
        "111111"
    } else {
        "000000"
    };
    let delete = |code: String| {
        TestApp::req("DELETE", "/api/mfa/totp")
            .json(json!({ "code": code }))
            .header("cookie", &full)
    };
    let r = app.send(delete(wrong.to_owned())).await;
    assert!(matches!(r.status, 400 | 401), "{}", r.status);
    let r = app.send(delete(right)).await;
    assert_eq!(r.status, 204, "{}", r.text());
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

fn form_token_of(html: &str) -> String {
    html.split("name=\"csrf_token\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the form carries a CSRF token")
        .to_owned()
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
/// factor (403 otherwise, 401 without a session); they replace the old set.
pub async fn new_recovery_codes_need_a_second_factor_session<F: HarnessFactory>() {
    let app = app::<F>();
    app.register("bob").await;
    let bob = app.login("bob").await;
    let r = app
        .post_json("/api/mfa/recovery-codes", json!({}), Some(&bob))
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.json()["error"].is_string());
    let r = app
        .post_json("/api/mfa/recovery-codes", json!({}), None)
        .await;
    assert_eq!(r.status, 401);

    let alice = enrolled(&app, "alice").await;
    let pending = pending_login(&app, "alice").await;
    let r = app
        .post_json("/api/mfa/recovery-codes", json!({}), Some(&pending))
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
    let r = app
        .post_json("/api/mfa/recovery-codes", json!({}), Some(&full))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let fresh: Vec<String> = r.json()["recovery_codes"]
        .as_array()
        .expect("codes")
        .iter()
        .filter_map(|c| c.as_str().map(str::to_owned))
        .collect();
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
