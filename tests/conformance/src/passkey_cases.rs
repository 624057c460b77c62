//! The passkey cases: each a real WebAuthn ceremony over the demo's JSON
//! API (`/api/passkeys/...`, `/api/login/passkey/...`), a software
//! authenticator ([`crate::soft_authenticator`]) answering the options the
//! way a browser would: registration, passwordless sign-in, the second
//! step of a password login, and what must be refused (a replayed or
//! foreign-origin answer, a ceremony answered twice or too late, a signature
//! counter gone backwards, a removed passkey, another user's passkey, a
//! second step without the first).

use std::time::Duration;

use serde_json::{Value, json};

use crate::soft_authenticator::SoftAuthenticator;
use crate::{HarnessFactory, PASSWORD, TestApp, TestOptions, TestResponse};

fn app<F: HarnessFactory>() -> TestApp {
    TestApp::start::<F>(TestOptions::default())
}

/// The demo's relying party origin.
const ORIGIN: &str = "https://demo.test";
/// A sibling subdomain (a phishing page under the same registrable
/// domain: the only foreign origin the WebAuthn client lets ask for the
/// relying party id `demo.test`).
const SUBDOMAIN: &str = "https://login.demo.test";
/// Another port of the site's host.
const OTHER_PORT: &str = "https://demo.test:8443";
/// Past the 5 minutes a ceremony may take.
const TOO_LATE: Duration = Duration::from_secs(5 * 60 + 1);

/// A passkey just registered: the session's cookie after the ceremony,
/// the passkey's handle and the recovery codes (when it was the first
/// second factor).
struct Registered {
    cookie: String,
    id: String,
    recovery_codes: Vec<String>,
}

/// The cookie `r` set (session and visitor cookies), joined as a `Cookie`
/// header, or `None`.
fn cookies_set(r: &TestResponse) -> Option<String> {
    let cookies: Vec<String> = [r.session_cookie(), r.visitor_cookie()]
        .into_iter()
        .flatten()
        .map(|(pair, _)| pair)
        .collect();
    (!cookies.is_empty()).then(|| cookies.join("; "))
}

/// The session cookie `r` set, else `old`.
fn carried(r: &TestResponse, old: &str) -> String {
    r.session_cookie().map_or_else(|| old.to_owned(), |c| c.0)
}

/// `POST /api/passkeys/register/start` on `cookie` with `proof`: the
/// options and the (renewed) cookie.
async fn register_start(app: &TestApp, cookie: &str, proof: Value) -> (Value, String) {
    let r = app
        .post_json("/api/passkeys/register/start", proof, Some(cookie))
        .await;
    assert_eq!(r.status, 200, "register/start: {}", r.text());
    let options = r.json();
    assert!(options["publicKey"]["challenge"].is_string(), "{options}");
    (options, carried(&r, cookie))
}

/// `POST /api/passkeys/register/finish` on `cookie`.
async fn register_finish(
    app: &TestApp,
    cookie: &str,
    name: &str,
    credential: &Value,
) -> TestResponse {
    app.post_json(
        "/api/passkeys/register/finish",
        json!({ "name": name, "credential": credential }),
        Some(cookie),
    )
    .await
}

/// The whole registration ceremony on the signed-in `cookie`, with
/// `proof`; must succeed.
async fn add_passkey(
    app: &TestApp,
    cookie: &str,
    device: &mut SoftAuthenticator,
    proof: Value,
    name: &str,
) -> Registered {
    let (options, cookie) = register_start(app, cookie, proof).await;
    let credential = device.create(&options).await.expect("the authenticator");
    let r = register_finish(app, &cookie, name, &credential).await;
    assert_eq!(r.status, 201, "register/finish: {}", r.text());
    let body = r.json();
    assert_eq!(body["name"], name);
    let id = body["id"].as_str().expect("an id").to_owned();
    let recovery_codes = body["recovery_codes"]
        .as_array()
        .map(|codes| {
            codes
                .iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Registered {
        cookie: carried(&r, &cookie),
        id,
        recovery_codes,
    }
}

/// Registers `name`, logs in and adds a passkey on `device` (its first
/// second factor, so the answer has the recovery codes).
async fn user_with_passkey(
    app: &TestApp,
    name: &str,
    device: &mut SoftAuthenticator,
) -> Registered {
    app.register(name).await;
    let cookie = app.login(name).await;
    let added = add_passkey(
        app,
        &cookie,
        device,
        json!({ "password": PASSWORD }),
        "Phone",
    )
    .await;
    assert_eq!(added.recovery_codes.len(), 10, "the first factor's codes");
    added
}

/// `POST /api/login/passkey/start` with an optional cookie: the options and
/// the cookies to carry on (the ones it set, else the ones sent).
async fn sign_in_start(app: &TestApp, cookie: Option<&str>) -> (Value, Option<String>) {
    let r = app
        .post_json("/api/login/passkey/start", json!({}), cookie)
        .await;
    assert_eq!(r.status, 200, "login/passkey/start: {}", r.text());
    let options = r.json();
    assert!(options["publicKey"]["challenge"].is_string(), "{options}");
    let cookie = cookies_set(&r).or_else(|| cookie.map(str::to_owned));
    (options, cookie)
}

/// `POST /api/login/passkey/finish` with `assertion`.
async fn sign_in_finish(app: &TestApp, cookie: Option<&str>, assertion: &Value) -> TestResponse {
    app.post_json("/api/login/passkey/finish", assertion.clone(), cookie)
        .await
}

/// A passwordless ceremony as a fresh visitor: the visitor's cookie and
/// the device's assertion.
async fn passwordless_assertion(
    app: &TestApp,
    device: &mut SoftAuthenticator,
) -> (Option<String>, Value) {
    let (options, cookie) = sign_in_start(app, None).await;
    assert!(
        cookie.is_some(),
        "a visitor gets a cookie that holds the challenge"
    );
    assert!(
        options["publicKey"]["allowCredentials"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "a discoverable ceremony names no credential: {options}"
    );
    let assertion = device.get(&options).await.expect("the authenticator");
    (cookie, assertion)
}

/// A whole passwordless sign-in with `device` from its current origin.
async fn passwordless(app: &TestApp, device: &mut SoftAuthenticator) -> TestResponse {
    let (cookie, assertion) = passwordless_assertion(app, device).await;
    sign_in_finish(app, cookie.as_deref(), &assertion).await
}

/// A sign-in answer: 200 `{"mfa_required": false}` and a new session
/// cookie that `/api/me` takes; answers the cookie.
async fn signed_in(app: &TestApp, r: &TestResponse, old: Option<&str>) -> String {
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["mfa_required"], false, "{}", r.text());
    let cookie = r.session_cookie().expect("a new session cookie").0;
    if let Some(old) = old {
        assert!(!old.contains(&cookie), "the session ID changes");
    }
    let me = app.get("/api/me", Some(&cookie)).await;
    assert_eq!(me.status, 200, "{}", me.text());
    cookie
}

/// A refusal: one of `statuses`, no login answer, and no cookie of a
/// signed-in session (a cookie it sets, if any, opens nothing).
async fn refused(app: &TestApp, r: &TestResponse, statuses: &[u16], what: &str) {
    assert!(
        statuses.contains(&r.status),
        "{what}: expected one of {statuses:?}, got {} {}",
        r.status,
        r.text()
    );
    assert!(r.json()["mfa_required"].is_null(), "{what}: {}", r.text());
    if let Some((cookie, _)) = r.session_cookie() {
        let me = app.get("/api/me", Some(&cookie)).await;
        assert_eq!(me.status, 401, "{what}: the refusal's cookie signs in");
    }
}

/// A session cookie that is not signed in (a visitor's, a pending login's).
async fn not_signed_in(app: &TestApp, cookie: Option<&str>, what: &str) {
    if let Some(cookie) = cookie {
        let me = app.get("/api/me", Some(cookie)).await;
        assert_eq!(me.status, 401, "{what}: {}", me.text());
    }
}

/// The session `cookie` passes `require_mfa`: `POST
/// /api/mfa/recovery-codes` (the one route behind it) is neither 401 nor
/// 403 (what it then answers is
/// [`a_passkey_only_account_renews_its_recovery_codes`]'s matter). A
/// password-only session of an account without a second factor gets 403
/// there. Answers the session's cookie (renewed on success).
async fn passes_require_mfa(app: &TestApp, cookie: &str, code: &str) -> String {
    let r = app
        .post_json(
            "/api/mfa/recovery-codes",
            json!({ "password": PASSWORD, "code": code }),
            Some(cookie),
        )
        .await;
    assert!(
        !matches!(r.status, 401 | 403),
        "require_mfa: {} {}",
        r.status,
        r.text()
    );
    carried(&r, cookie)
}

/// `GET /api/passkeys` on `cookie`.
async fn list(app: &TestApp, cookie: &str) -> Vec<Value> {
    let r = app.get("/api/passkeys", Some(cookie)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json().as_array().cloned().expect("a list")
}

/// A password login that stops at the second factor, offering a passkey;
/// answers the pending cookie.
async fn pending_login(app: &TestApp, name: &str) -> String {
    let r = app.login_with(name, PASSWORD, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["mfa_required"], true, "{body}");
    let methods = body["methods"].as_array().expect("methods");
    assert!(methods.iter().any(|m| m == "passkey"), "{body}");
    r.session_cookie().expect("a pending-session cookie").0
}

/// The options as a client that ignores the allow list would use them.
fn without_allow_list(options: &Value) -> Value {
    let mut options = options.clone();
    options["publicKey"]["allowCredentials"] = json!([]);
    options
}

/// Registration: options for a discoverable credential with user
/// verification; 201 with the id, the name and the first factor's recovery
/// codes; the list shows it (never used yet); `/api/me` reports a second
/// factor; the same device cannot register it twice (excluded).
pub async fn a_registered_passkey_is_listed<F: HarnessFactory>() {
    let app = app::<F>();
    app.register("alice").await;
    let cookie = app.login("alice").await;
    let mut phone = SoftAuthenticator::new(ORIGIN);
    let (options, cookie) = register_start(&app, &cookie, json!({ "password": PASSWORD })).await;
    let public_key = &options["publicKey"];
    assert_eq!(public_key["rp"]["id"], "demo.test", "{options}");
    assert_eq!(
        public_key["authenticatorSelection"]["residentKey"], "required",
        "{options}"
    );
    assert_eq!(
        public_key["authenticatorSelection"]["userVerification"], "required",
        "{options}"
    );
    let credential = phone.create(&options).await.expect("the authenticator");
    let r = register_finish(&app, &cookie, "Phone", &credential).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let body = r.json();
    assert_eq!(body["name"], "Phone");
    let id = body["id"].as_str().expect("an id").to_owned();
    let codes = body["recovery_codes"].as_array().expect("recovery codes");
    assert_eq!(codes.len(), 10, "{body}");
    let cookie = r.session_cookie().expect("a new session cookie").0;

    let passkeys = list(&app, &cookie).await;
    assert_eq!(passkeys.len(), 1, "{passkeys:?}");
    let entry = &passkeys[0];
    assert_eq!(entry["id"], id.as_str());
    assert_eq!(entry["name"], "Phone");
    assert!(entry["created_at"].is_u64(), "{entry}");
    assert!(entry["last_used_at"].is_null(), "{entry}");
    assert!(entry["synced"].is_boolean(), "{entry}");
    let me = app.get("/api/me", Some(&cookie)).await.json();
    assert_eq!(me["mfa_enabled"], true, "{me}");

    // The device holds it already: the options exclude it.
    let code = codes[0].as_str().expect("a code");
    let (options, _) =
        register_start(&app, &cookie, json!({ "password": PASSWORD, "code": code })).await;
    let excluded = options["publicKey"]["excludeCredentials"]
        .as_array()
        .expect("excludeCredentials");
    assert_eq!(excluded.len(), 1, "{options}");
    assert!(phone.create(&options).await.is_err(), "excluded");
}

/// A passwordless sign-in: a visitor starts (and gets the cookie that holds
/// the challenge), the device answers, the finish signs in with a new
/// session that passes `require_mfa`; the passkey's last use is recorded.
pub async fn a_passkey_signs_in_without_a_password<F: HarnessFactory>() {
    let app = app::<F>();
    let mut phone = SoftAuthenticator::new(ORIGIN);
    let added = user_with_passkey(&app, "alice", &mut phone).await;

    let (visitor, assertion) = passwordless_assertion(&app, &mut phone).await;
    not_signed_in(&app, visitor.as_deref(), "the visitor's cookie").await;
    let r = sign_in_finish(&app, visitor.as_deref(), &assertion).await;
    let cookie = signed_in(&app, &r, visitor.as_deref()).await;
    let me = app.get("/api/me", Some(&cookie)).await.json();
    assert_eq!(me["username"], "alice", "{me}");

    let cookie = passes_require_mfa(&app, &cookie, &added.recovery_codes[0]).await;

    let passkeys = list(&app, &cookie).await;
    assert_eq!(passkeys.len(), 1, "{passkeys:?}");
    assert!(passkeys[0]["last_used_at"].is_u64(), "{passkeys:?}");

    // "remember": true beside the credential: a persistent cookie.
    let (_, full) = r.session_cookie().expect("a session cookie");
    assert!(!full.to_ascii_lowercase().contains("max-age"), "{full}");
    app.advance(Duration::from_secs(1));
    let (visitor, mut assertion) = passwordless_assertion(&app, &mut phone).await;
    assertion["remember"] = Value::Bool(true);
    let r = sign_in_finish(&app, visitor.as_deref(), &assertion).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (_, full) = r.session_cookie().expect("a session cookie");
    assert!(
        full.to_ascii_lowercase().contains("max-age=2592000"),
        "{full}"
    );
}

/// The second step: a password login asks for a second factor and offers
/// the passkey; on the pending cookie the ceremony (the user's passkeys
/// allowed) completes the login with a new session.
pub async fn a_passkey_completes_a_password_login<F: HarnessFactory>() {
    let app = app::<F>();
    let mut phone = SoftAuthenticator::new(ORIGIN);
    let added = user_with_passkey(&app, "alice", &mut phone).await;

    let pending = pending_login(&app, "alice").await;
    not_signed_in(&app, Some(&pending), "a pending login").await;
    let (options, cookie) = sign_in_start(&app, Some(&pending)).await;
    let allowed = options["publicKey"]["allowCredentials"]
        .as_array()
        .expect("the user's passkeys");
    assert_eq!(allowed.len(), 1, "{options}");
    assert_eq!(allowed[0]["id"], added.id.as_str(), "{options}");
    let assertion = phone.get(&options).await.expect("the authenticator");
    let r = sign_in_finish(&app, cookie.as_deref(), &assertion).await;
    let full = signed_in(&app, &r, Some(&pending)).await;
    not_signed_in(&app, Some(&pending), "the pending cookie after the login").await;
    passes_require_mfa(&app, &full, &added.recovery_codes[0]).await;
}

/// An account whose one second factor is a passkey renews its recovery
/// codes (`POST /api/mfa/recovery-codes`, behind `require_mfa`) after a
/// passkey sign-in, with the password and a recovery code, as a TOTP
/// account does: 200 and a new set.
pub async fn a_passkey_only_account_renews_its_recovery_codes<F: HarnessFactory>() {
    let app = app::<F>();
    let mut phone = SoftAuthenticator::new(ORIGIN);
    let added = user_with_passkey(&app, "alice", &mut phone).await;
    let r = passwordless(&app, &mut phone).await;
    let cookie = signed_in(&app, &r, None).await;
    let r = app
        .post_json(
            "/api/mfa/recovery-codes",
            json!({ "password": PASSWORD, "code": added.recovery_codes[0] }),
            Some(&cookie),
        )
        .await;
    assert_eq!(r.status, 200, "new recovery codes: {}", r.text());
    let codes = r.json()["recovery_codes"].as_array().map_or(0, Vec::len);
    assert_eq!(codes, 10, "{}", r.text());
}

/// The step-up page of a passkey-only account asks for a recovery code
/// beside the password (a password alone does not renew a multi-factor
/// login), and the two renew it; without the field the page would only
/// come back.
pub async fn a_passkey_only_account_steps_up_with_a_recovery_code<F: HarnessFactory>() {
    let app = app::<F>();
    let mut phone = SoftAuthenticator::new(ORIGIN);
    let added = user_with_passkey(&app, "alice", &mut phone).await;
    let page = app.get("/account", Some(&added.cookie)).await;
    assert_eq!(page.status, 200);
    let token = crate::form_token_of(&page.text());
    let password = PASSWORD.replace(' ', "+");
    let r = app
        .post_form(
            "/account/reauth",
            &format!("password={password}&csrf_token={token}"),
            Some(&added.cookie),
        )
        .await;
    assert_eq!(r.status, 403, "a password alone: {}", r.text());
    assert!(
        r.text().contains("name=\"code\""),
        "the page asks for a code: {}",
        r.text()
    );
    let r = app
        .post_form(
            "/account/reauth",
            &format!(
                "password={password}&code={}&csrf_token={token}",
                added.recovery_codes[0]
            ),
            Some(&added.cookie),
        )
        .await;
    assert_eq!(r.status, 303, "password and recovery code: {}", r.text());
}

/// An assertion sent again (on its own spent session, and into a new
/// ceremony) never signs in, passwordless or as the second step.
pub async fn a_replayed_passkey_assertion_is_refused<F: HarnessFactory>() {
    let app = app::<F>();
    let mut phone = SoftAuthenticator::new(ORIGIN);
    user_with_passkey(&app, "alice", &mut phone).await;

    let (visitor, assertion) = passwordless_assertion(&app, &mut phone).await;
    let r = sign_in_finish(&app, visitor.as_deref(), &assertion).await;
    signed_in(&app, &r, visitor.as_deref()).await;
    let r = sign_in_finish(&app, visitor.as_deref(), &assertion).await;
    refused(&app, &r, &[400, 401], "the same finish again").await;
    let (_, fresh) = sign_in_start(&app, None).await;
    let r = sign_in_finish(&app, fresh.as_deref(), &assertion).await;
    refused(&app, &r, &[400, 401], "replayed into a new ceremony").await;
    not_signed_in(&app, fresh.as_deref(), "the new ceremony's visitor").await;

    // The second step.
    let pending = pending_login(&app, "alice").await;
    let (options, cookie) = sign_in_start(&app, Some(&pending)).await;
    let assertion = phone.get(&options).await.expect("the authenticator");
    let r = sign_in_finish(&app, cookie.as_deref(), &assertion).await;
    signed_in(&app, &r, cookie.as_deref()).await;
    let pending = pending_login(&app, "alice").await;
    let (_, cookie) = sign_in_start(&app, Some(&pending)).await;
    let r = sign_in_finish(&app, cookie.as_deref(), &assertion).await;
    refused(&app, &r, &[400, 401], "replayed into a new second step").await;
    not_signed_in(&app, cookie.as_deref(), "the pending login").await;
}

/// An answer made on another origin (a sibling subdomain, another port) is
/// refused at registration (nothing stored) and at sign-in, passwordless
/// and as the second step; from the right origin it then works.
pub async fn a_passkey_answer_from_another_origin_is_refused<F: HarnessFactory>() {
    let app = app::<F>();
    app.register("alice").await;
    let mut cookie = app.login("alice").await;
    for origin in [SUBDOMAIN, OTHER_PORT] {
        let mut phishing = SoftAuthenticator::new(origin);
        let (options, renewed) =
            register_start(&app, &cookie, json!({ "password": PASSWORD })).await;
        cookie = renewed;
        let credential = phishing.create(&options).await.expect("the authenticator");
        let r = register_finish(&app, &cookie, "Phone", &credential).await;
        assert_eq!(r.status, 401, "{origin}: {}", r.text());
        assert!(r.json()["id"].is_null(), "{}", r.text());
        cookie = carried(&r, &cookie);
        assert!(list(&app, &cookie).await.is_empty(), "{origin}: stored");
    }

    let mut phone = SoftAuthenticator::new(ORIGIN);
    add_passkey(
        &app,
        &cookie,
        &mut phone,
        json!({ "password": PASSWORD }),
        "Phone",
    )
    .await;
    for origin in [SUBDOMAIN, OTHER_PORT] {
        phone.at(origin);
        let (visitor, assertion) = passwordless_assertion(&app, &mut phone).await;
        let r = sign_in_finish(&app, visitor.as_deref(), &assertion).await;
        refused(&app, &r, &[401], origin).await;
        not_signed_in(&app, visitor.as_deref(), origin).await;
    }
    let pending = pending_login(&app, "alice").await;
    let (options, cookie) = sign_in_start(&app, Some(&pending)).await;
    phone.at(SUBDOMAIN);
    let assertion = phone.get(&options).await.expect("the authenticator");
    let r = sign_in_finish(&app, cookie.as_deref(), &assertion).await;
    refused(&app, &r, &[401], "the second step from a subdomain").await;
    not_signed_in(&app, cookie.as_deref(), "the pending login").await;

    phone.at(ORIGIN);
    let r = passwordless(&app, &mut phone).await;
    signed_in(&app, &r, None).await;
}

/// A ceremony is answered once: a second finish for one start answers 400
/// (start again), at registration and at sign-in.
pub async fn a_passkey_ceremony_is_answered_once<F: HarnessFactory>() {
    let app = app::<F>();
    app.register("alice").await;
    let cookie = app.login("alice").await;
    let mut phone = SoftAuthenticator::new(ORIGIN);

    // Registration: a refused answer uses the ceremony up too.
    let (options, cookie) = register_start(&app, &cookie, json!({ "password": PASSWORD })).await;
    let credential = phone.create(&options).await.expect("the authenticator");
    let mut bad = credential.clone();
    bad["response"]["clientDataJSON"] = json!("AAAA");
    let r = register_finish(&app, &cookie, "Phone", &bad).await;
    assert!(matches!(r.status, 400 | 401), "{} {}", r.status, r.text());
    let cookie = carried(&r, &cookie);
    let r = register_finish(&app, &cookie, "Phone", &credential).await;
    assert_eq!(r.status, 400, "answered already: {}", r.text());
    let cookie = carried(&r, &cookie);
    assert!(list(&app, &cookie).await.is_empty());

    // A successful registration, then its finish again.
    let (options, cookie) = register_start(&app, &cookie, json!({ "password": PASSWORD })).await;
    let credential = phone.create(&options).await.expect("the authenticator");
    let r = register_finish(&app, &cookie, "Phone", &credential).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let cookie = carried(&r, &cookie);
    let r = register_finish(&app, &cookie, "Phone", &credential).await;
    assert_eq!(r.status, 400, "answered already: {}", r.text());
    let cookie = carried(&r, &cookie);
    assert_eq!(list(&app, &cookie).await.len(), 1);

    // Sign-in: a refused answer, then the good one for the same start.
    let (visitor, good) = passwordless_assertion(&app, &mut phone).await;
    let mut bad = good.clone();
    bad["response"]["signature"] = json!("AAAA");
    let r = sign_in_finish(&app, visitor.as_deref(), &bad).await;
    refused(&app, &r, &[401], "a bad signature").await;
    let r = sign_in_finish(&app, visitor.as_deref(), &good).await;
    refused(&app, &r, &[400], "the same ceremony answered twice").await;
    assert_eq!(
        r.json()["error"],
        "no passkey request in progress, start again"
    );
    not_signed_in(&app, visitor.as_deref(), "the visitor").await;
}

/// A ceremony answered after its 5 minutes: 400, at registration and at
/// sign-in.
pub async fn an_expired_passkey_ceremony_is_refused<F: HarnessFactory>() {
    let app = app::<F>();
    app.register("alice").await;
    let cookie = app.login("alice").await;
    let mut phone = SoftAuthenticator::new(ORIGIN);
    let (options, cookie) = register_start(&app, &cookie, json!({ "password": PASSWORD })).await;
    let credential = phone.create(&options).await.expect("the authenticator");
    app.advance(TOO_LATE);
    let r = register_finish(&app, &cookie, "Phone", &credential).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let cookie = carried(&r, &cookie);
    assert!(list(&app, &cookie).await.is_empty());

    let mut phone = SoftAuthenticator::new(ORIGIN);
    add_passkey(
        &app,
        &cookie,
        &mut phone,
        json!({ "password": PASSWORD }),
        "Phone",
    )
    .await;
    let (visitor, assertion) = passwordless_assertion(&app, &mut phone).await;
    app.advance(TOO_LATE);
    let r = sign_in_finish(&app, visitor.as_deref(), &assertion).await;
    refused(&app, &r, &[400], "an expired sign-in").await;
    not_signed_in(&app, visitor.as_deref(), "the visitor").await;
}

/// A device whose signature counter goes backwards (a clone of it as it was
/// earlier) is refused with 401.
pub async fn a_passkey_counter_that_goes_backwards_is_refused<F: HarnessFactory>() {
    let app = app::<F>();
    let mut key = SoftAuthenticator::with_counter(ORIGIN);
    user_with_passkey(&app, "alice", &mut key).await;
    // A copy from before two uses: its next signature counts one less
    // than the stored counter, not only the same.
    let snapshot = key.passkeys().clone();
    let r = passwordless(&app, &mut key).await;
    signed_in(&app, &r, None).await;
    let r = passwordless(&app, &mut key).await;
    let cookie = signed_in(&app, &r, None).await;
    let used = list(&app, &cookie).await[0]["last_used_at"].clone();

    // Later, so a use recorded by the refused answer would show.
    app.advance(Duration::from_secs(120));
    *key.passkeys() = snapshot;
    let (visitor, assertion) = passwordless_assertion(&app, &mut key).await;
    let r = sign_in_finish(&app, visitor.as_deref(), &assertion).await;
    refused(&app, &r, &[401], "a counter gone backwards").await;
    not_signed_in(&app, visitor.as_deref(), "the visitor").await;
    assert_eq!(
        list(&app, &cookie).await[0]["last_used_at"],
        used,
        "nothing recorded"
    );
}

/// A removed passkey (the proof: the password and a recovery code) signs
/// in no more; with no second factor left, the password alone logs in.
pub async fn a_removed_passkey_no_longer_signs_in<F: HarnessFactory>() {
    let app = app::<F>();
    let mut phone = SoftAuthenticator::new(ORIGIN);
    let added = user_with_passkey(&app, "alice", &mut phone).await;
    let path = format!("/api/passkeys/{}", added.id);

    let r = app
        .send(
            TestApp::req("DELETE", &path)
                .json(json!({ "password": PASSWORD }))
                .header("cookie", &added.cookie),
        )
        .await;
    assert!(
        matches!(r.status, 400 | 403),
        "a code is required: {}",
        r.status
    );
    let r = app
        .send(
            TestApp::req("DELETE", &path)
                .json(json!({ "password": PASSWORD, "code": added.recovery_codes[0] }))
                .header("cookie", &added.cookie),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let cookie = r.session_cookie().expect("a new session cookie").0;
    assert!(list(&app, &cookie).await.is_empty());

    let r = passwordless(&app, &mut phone).await;
    refused(&app, &r, &[401], "a removed passkey").await;
    let r = app.login_with("alice", PASSWORD, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["mfa_required"], false, "{}", r.text());
}

/// Bob's passkey answering Alice's second step (a client that ignores the
/// allow list) is refused with 401; Alice's login stays pending.
pub async fn another_users_passkey_does_not_complete_a_login<F: HarnessFactory>() {
    let app = app::<F>();
    let mut alice_phone = SoftAuthenticator::new(ORIGIN);
    user_with_passkey(&app, "alice", &mut alice_phone).await;
    let mut bob_phone = SoftAuthenticator::new(ORIGIN);
    user_with_passkey(&app, "bob", &mut bob_phone).await;

    let pending = pending_login(&app, "alice").await;
    let (options, cookie) = sign_in_start(&app, Some(&pending)).await;
    assert!(
        bob_phone.get(&options).await.is_err(),
        "not in the allow list"
    );
    let assertion = bob_phone
        .get(&without_allow_list(&options))
        .await
        .expect("the authenticator");
    let r = sign_in_finish(&app, cookie.as_deref(), &assertion).await;
    refused(&app, &r, &[401], "bob's passkey for alice").await;
    not_signed_in(&app, cookie.as_deref(), "alice's pending login").await;

    // Alice's own passkey still completes it.
    let (options, cookie) = sign_in_start(&app, cookie.as_deref()).await;
    let assertion = alice_phone.get(&options).await.expect("the authenticator");
    let r = sign_in_finish(&app, cookie.as_deref(), &assertion).await;
    let full = signed_in(&app, &r, cookie.as_deref()).await;
    let me = app.get("/api/me", Some(&full)).await.json();
    assert_eq!(me["username"], "alice", "{me}");
}

/// An assertion without a started ceremony never signs in: no cookie at
/// all, a pending login that never started the passkey step, a garbage
/// cookie.
pub async fn no_passkey_second_step_without_the_password<F: HarnessFactory>() {
    let app = app::<F>();
    let mut phone = SoftAuthenticator::new(ORIGIN);
    user_with_passkey(&app, "alice", &mut phone).await;
    // An assertion for someone else's ceremony.
    let (_, assertion) = passwordless_assertion(&app, &mut phone).await;

    let r = sign_in_finish(&app, None, &assertion).await;
    refused(&app, &r, &[400, 401], "no session").await;

    let pending = pending_login(&app, "alice").await;
    let r = sign_in_finish(&app, Some(&pending), &assertion).await;
    refused(&app, &r, &[400, 401], "a pending login without a start").await;
    not_signed_in(&app, Some(&pending), "the pending login").await;

    let r = sign_in_finish(&app, Some("__Host-session=garbage"), &assertion).await;
    refused(&app, &r, &[400, 401], "a garbage cookie").await;
}

/// Adding and removing a passkey are told to the account's verified
/// address (someone who learnt the password and added one is then known
/// to the owner).
pub async fn adding_and_removing_a_passkey_are_told_to_the_address<F: HarnessFactory>() {
    let app = app::<F>();
    let address = crate::cases::registered_with_verified_email(&app, "alice").await;
    let cookie = app.login("alice").await;
    let mut phone = SoftAuthenticator::new(ORIGIN);
    let added = add_passkey(
        &app,
        &cookie,
        &mut phone,
        json!({ "password": PASSWORD }),
        "Phone",
    )
    .await;
    assert!(
        crate::notice_to(&address, "a passkey was added")
            .await
            .is_some(),
        "told of the new passkey"
    );
    let r = app
        .send(
            TestApp::req("DELETE", &format!("/api/passkeys/{}", added.id))
                .json(json!({ "password": PASSWORD, "code": added.recovery_codes[0] }))
                .header("cookie", &added.cookie),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(
        crate::notice_to(&address, "a passkey was removed")
            .await
            .is_some(),
        "told of the removal"
    );
}
