//! The token cases: a sign-in for tokens (with the cookie login's
//! throttles, answers and second-factor rule), bearer requests on every
//! route (no cookie, no cross-site check, one rule when a cookie comes
//! too), refresh-token rotation and reuse detection, revocation, the
//! JWKS and key rotation, and forged, tampered and expired tokens.

use std::time::Duration;

use auth_core::token::jwt::{Algorithm, SigningKey};
use base64ct::{Base64UrlUnpadded, Encoding};
use hmac::{Hmac, KeyInit, Mac};
use p256::ecdsa::signature::Signer;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::mfa_cases::enrolled;
use crate::{HarnessFactory, PASSWORD, TestApp, TestOptions, TestResponse};

fn app<F: HarnessFactory>() -> TestApp {
    TestApp::start::<F>(TestOptions::default())
}

/// A token answer's two tokens.
struct Tokens {
    access: String,
    refresh: String,
}

/// Checks a token answer and takes its tokens.
fn tokens(r: &TestResponse) -> Tokens {
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900, "15 minutes by default");
    assert_eq!(r.header("cache-control"), Some("no-store"), "RFC 6749 5.1");
    assert!(r.session_cookie().is_none(), "no cookie with tokens");
    let refresh = body["refresh_token"].as_str().expect("a refresh token");
    assert_eq!(refresh.len(), 64, "384 bits, base64url");
    Tokens {
        access: body["access_token"]
            .as_str()
            .expect("an access token")
            .to_owned(),
        refresh: refresh.to_owned(),
    }
}

/// `POST /api/token` for `name` with `password`.
async fn token_login(app: &TestApp, name: &str, password: &str) -> TestResponse {
    app.post_json(
        "/api/token",
        json!({"username": name, "password": password}),
        None,
    )
    .await
}

/// Registers `name` and signs in for tokens.
async fn signed_in(app: &TestApp, name: &str) -> Tokens {
    app.register(name).await;
    tokens(&token_login(app, name, PASSWORD).await)
}

async fn refresh(app: &TestApp, refresh: &str) -> TestResponse {
    app.post_json(
        "/api/token/refresh",
        json!({ "refresh_token": refresh }),
        None,
    )
    .await
}

/// `GET path` with `Authorization: Bearer access`.
async fn bearer_get(app: &TestApp, path: &str, access: &str) -> TestResponse {
    app.send(TestApp::req("GET", path).header("authorization", &format!("Bearer {access}")))
        .await
}

/// The decoded header and claims of a JWT (not verified).
fn decode(token: &str) -> (Value, Value) {
    let part = |i: usize| -> Value {
        let text = token.split('.').nth(i).expect("three parts");
        let bytes = Base64UrlUnpadded::decode_vec(text).expect("base64url");
        serde_json::from_slice(&bytes).expect("JSON")
    };
    (part(0), part(1))
}

fn encode(value: &Value) -> String {
    Base64UrlUnpadded::encode_string(value.to_string().as_bytes())
}

/// A 401 for a bearer request says so (RFC 6750).
fn refused(r: &TestResponse) {
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(
        r.header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer")),
        "WWW-Authenticate: Bearer"
    );
}

/// Every 401 of a bearer request carries a `WWW-Authenticate` challenge
/// (RFC 9110 15.5.2, RFC 6750 3), whether a guard or the handler answered
/// it: `invalid_token` for a refused token, a plain `Bearer` for a valid
/// token whose request failed otherwise (a wrong current password).
pub async fn every_bearer_401_carries_a_challenge<F: HarnessFactory>() {
    let app = app::<F>();
    let t = signed_in(&app, "alice").await;
    let bearer = |token: &str| format!("Bearer {token}");
    let r = app
        .send(TestApp::req("POST", "/api/logout").header("authorization", &bearer("not-a-token")))
        .await;
    refused(&r);
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer error="invalid_token""#)
    );
    let r = app
        .send(
            TestApp::req("POST", "/api/password")
                .header("authorization", &bearer(&t.access))
                .json(json!({
                    "current_password": "not the password at all",
                    "new_password": "a brand new passphrase 2",
                })),
        )
        .await;
    refused(&r);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    // A cookie request's 401 carries none.
    let r = app
        .post_json(
            "/api/password",
            json!({
                "current_password": "not the password at all",
                "new_password": "a brand new passphrase 2",
            }),
            None,
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), None);
}

/// A sign-in for tokens answers an access token that every route takes
/// as `Authorization: Bearer`, with the claims of the issue (ASVS 9.2).
pub async fn a_token_sign_in_answers_tokens_every_route_takes<F: HarnessFactory>() {
    let app = app::<F>();
    let t = signed_in(&app, "alice").await;
    let (header, claims) = decode(&t.access);
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["typ"], "at+jwt");
    assert!(header["kid"].is_string());
    for claim in ["iss", "aud", "sub", "iat", "exp", "jti", "sid", "amr"] {
        assert!(!claims[claim].is_null(), "claim {claim}");
    }
    assert_eq!(claims["amr"], json!(["pwd"]));
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        900
    );
    let me = bearer_get(&app, "/api/me", &t.access).await;
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(me.json()["username"], "alice");
    assert!(me.header_all("set-cookie").is_empty(), "no cookie");
    assert_eq!(me.header("cache-control"), Some("no-store"));
    let sessions = bearer_get(&app, "/api/sessions", &t.access).await;
    assert_eq!(sessions.status, 200, "{}", sessions.text());
    refused(&bearer_get(&app, "/api/me", "not-a-token").await);
    let anonymous = app.get("/api/me", None).await;
    assert_eq!(anonymous.status, 401);
}

/// The token sign-in is the cookie login: one answer for an unknown user
/// and a wrong password, the same account throttle.
pub async fn a_token_sign_in_refuses_and_throttles_like_the_login<F: HarnessFactory>() {
    let app = app::<F>();
    app.register("alice").await;
    let wrong = token_login(&app, "alice", "wrong guess!").await;
    let unknown = token_login(&app, "nobody", "wrong guess!").await;
    assert_eq!(wrong.status, 401);
    assert_eq!(unknown.status, 401);
    assert_eq!(wrong.body, unknown.body, "one answer");
    for n in 0..4 {
        let r = app
            .send(
                TestApp::req("POST", "/api/token")
                    .json(json!({"username": "alice", "password": "wrong guess!"}))
                    .peer(&format!("203.0.113.{n}")),
            )
            .await;
        assert_eq!(r.status, 401);
    }
    let r = app
        .send(
            TestApp::req("POST", "/api/token")
                .json(json!({"username": "alice", "password": PASSWORD}))
                .peer("203.0.113.99"),
        )
        .await;
    assert_eq!(r.status, 429, "the account lock holds for tokens too");
    assert!(r.header("retry-after").is_some());
    // The cookie login shares the count.
    let r = app
        .send(
            TestApp::req("POST", "/api/login")
                .json(json!({"username": "alice", "password": PASSWORD}))
                .peer("203.0.113.98"),
        )
        .await;
    assert_eq!(r.status, 429);
}

/// With a second factor the password alone gets an `mfa_token`, no access
/// token; the code completes it once; the result satisfies `require_mfa`.
pub async fn a_token_sign_in_with_a_second_factor_needs_the_code<F: HarnessFactory>() {
    let app = app::<F>();
    let enrolled = enrolled(&app, "alice").await;
    app.advance(Duration::from_secs(30));
    let r = token_login(&app, "alice", PASSWORD).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["mfa_required"], true);
    assert!(body["access_token"].is_null(), "no token before the code");
    assert!(r.session_cookie().is_none(), "no cookie either");
    let mfa_token = body["mfa_token"].as_str().expect("an mfa token").to_owned();
    // Not a way around the password step: an mfa token is not a cookie
    // login's pending session, and a made-up one is nothing.
    let forged = app
        .post_json(
            "/api/token/mfa",
            json!({"mfa_token": "A".repeat(43), "code": app.totp(&enrolled.secret)}),
            None,
        )
        .await;
    assert_eq!(forged.status, 401);
    // Nor is it a cookie login's pending session.
    let as_cookie = app
        .post_json(
            "/api/login/totp",
            json!({"code": app.totp(&enrolled.secret)}),
            Some(&format!("__Host-session={mfa_token}")),
        )
        .await;
    assert_eq!(as_cookie.status, 401, "{}", as_cookie.text());
    assert!(
        as_cookie
            .session_cookie()
            .is_none_or(|c| c.1.contains("Max-Age=0"))
    );
    // A code of the right shape that no step in the accepted window has.
    let window = [-1, 0, 1].map(|steps| app.totp_at(&enrolled.secret, steps));
    let wrong_code = ["000000", "111111", "222222", "333333"]
        .into_iter()
        .find(|code| !window.iter().any(|right| right == code))
        .expect("four codes cannot all be in a window of three");
    let wrong = app
        .post_json(
            "/api/token/mfa",
            json!({"mfa_token": mfa_token, "code": wrong_code}),
            None,
        )
        .await;
    assert_eq!(wrong.status, 401, "{}", wrong.text());
    let r = app
        .post_json(
            "/api/token/mfa",
            json!({"mfa_token": mfa_token, "code": app.totp(&enrolled.secret)}),
            None,
        )
        .await;
    let t = tokens(&r);
    assert_eq!(decode(&t.access).1["amr"], json!(["pwd", "otp"]));
    let again = app
        .post_json(
            "/api/token/mfa",
            json!({"mfa_token": mfa_token, "code": enrolled.recovery_codes[0]}),
            None,
        )
        .await;
    assert_eq!(again.status, 401, "the mfa token is single-use");
    // A route behind require_mfa takes the token.
    let r = app
        .send(
            TestApp::req("POST", "/api/mfa/recovery-codes")
                .header("authorization", &format!("Bearer {}", t.access))
                .json(json!({"password": PASSWORD, "code": enrolled.recovery_codes[1]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// A password-only token does not pass `require_mfa`; a cookie login's
/// pending session ID is no mfa token.
pub async fn a_password_only_token_is_not_multi_factor<F: HarnessFactory>() {
    let app = app::<F>();
    let enrolled = enrolled(&app, "alice").await;
    let pending = app.login_with("alice", PASSWORD, None).await;
    let pending_id = pending
        .session_cookie()
        .expect("a pending session")
        .0
        .split_once('=')
        .expect("name=value")
        .1
        .to_owned();
    let r = app
        .post_json(
            "/api/token/mfa",
            json!({"mfa_token": pending_id, "code": app.totp(&enrolled.secret)}),
            None,
        )
        .await;
    assert_eq!(
        r.status,
        401,
        "a cookie login's pending session: {}",
        r.text()
    );
    let bob = signed_in(&app, "bob").await;
    let r = app
        .send(
            TestApp::req("POST", "/api/mfa/recovery-codes")
                .header("authorization", &format!("Bearer {}", bob.access))
                .json(json!({"password": PASSWORD})),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
}

/// Every refresh answers a new refresh token and spends the old one;
/// presenting a spent one revokes the whole family, its access tokens
/// too (RFC 9700 4.14.2).
pub async fn a_reused_refresh_token_revokes_its_family<F: HarnessFactory>() {
    let app = app::<F>();
    let first = signed_in(&app, "alice").await;
    let second = tokens(&refresh(&app, &first.refresh).await);
    assert_ne!(second.refresh, first.refresh, "rotated");
    assert_ne!(second.access, first.access);
    assert_eq!(
        decode(&second.access).1["sid"],
        decode(&first.access).1["sid"],
        "one family"
    );
    assert_eq!(
        bearer_get(&app, "/api/me", &second.access).await.status,
        200
    );
    // The spent token again: refused, and the family is gone.
    assert_eq!(refresh(&app, &first.refresh).await.status, 401);
    assert_eq!(
        refresh(&app, &second.refresh).await.status,
        401,
        "the live successor died with its family"
    );
    refused(&bearer_get(&app, "/api/me", &second.access).await);
    // Another sign-in is another family, unharmed.
    let other = tokens(&token_login(&app, "alice", PASSWORD).await);
    assert_eq!(bearer_get(&app, "/api/me", &other.access).await.status, 200);
    assert_eq!(refresh(&app, "garbage").await.status, 401);
}

/// Revocation (RFC 7009) answers 200 for any token and ends the family,
/// given the refresh token or an access token of the sign-in; a bearer
/// logout ends its own.
pub async fn revocation_and_logout_end_the_family<F: HarnessFactory>() {
    let app = app::<F>();
    let t = signed_in(&app, "alice").await;
    let unknown = app
        .post_json(
            "/api/token/revoke",
            json!({ "refresh_token": "A".repeat(64) }),
            None,
        )
        .await;
    assert_eq!(unknown.status, 200);
    let r = app
        .post_json(
            "/api/token/revoke",
            json!({ "refresh_token": t.refresh }),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(refresh(&app, &t.refresh).await.status, 401);
    refused(&bearer_get(&app, "/api/me", &t.access).await);

    let t = tokens(&token_login(&app, "alice", PASSWORD).await);
    let other = tokens(&token_login(&app, "alice", PASSWORD).await);
    let r = app
        .post_json(
            "/api/token/revoke",
            json!({ "refresh_token": t.access }),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    refused(&bearer_get(&app, "/api/me", &t.access).await);
    assert_eq!(refresh(&app, &t.refresh).await.status, 401);
    assert_eq!(
        bearer_get(&app, "/api/me", &other.access).await.status,
        200,
        "another sign-in stays"
    );

    let t = tokens(&token_login(&app, "alice", PASSWORD).await);
    let r = app
        .send(
            TestApp::req("POST", "/api/logout")
                .header("authorization", &format!("Bearer {}", t.access)),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(r.header_all("set-cookie").is_empty());
    refused(&bearer_get(&app, "/api/me", &t.access).await);
    assert_eq!(refresh(&app, &t.refresh).await.status, 401);
}

/// A password change, sign out everywhere (here through a bearer
/// request) and a password reset revoke the user's families.
pub async fn account_changes_revoke_token_families<F: HarnessFactory>() {
    let app = app::<F>();
    let t = signed_in(&app, "alice").await;
    let cookie = app.login("alice").await;
    let r = crate::cases::change_password(&app, &cookie, "another long passphrase 7").await;
    assert_eq!(r.status, 204, "{}", r.text());
    refused(&bearer_get(&app, "/api/me", &t.access).await);
    assert_eq!(refresh(&app, &t.refresh).await.status, 401);

    let t = tokens(&token_login(&app, "alice", "another long passphrase 7").await);
    let u = tokens(&token_login(&app, "alice", "another long passphrase 7").await);
    let r = app
        .send(
            TestApp::req("POST", "/api/sessions/revoke-others")
                .header("authorization", &format!("Bearer {}", t.access)),
        )
        .await;
    assert!(r.status < 300, "{}: {}", r.status, r.text());
    assert!(r.header_all("set-cookie").is_empty());
    refused(&bearer_get(&app, "/api/me", &u.access).await);
    assert_eq!(refresh(&app, &u.refresh).await.status, 401);

    // A password reset by mail: the access token is refused at once, not
    // only the refresh (which the password's new stamp would refuse too).
    let address = crate::cases::registered_with_verified_email(&app, "carol").await;
    let c = tokens(&token_login(&app, "carol", PASSWORD).await);
    assert_eq!(bearer_get(&app, "/api/me", &c.access).await.status, 200);
    let token = crate::cases::reset_token(&app, "carol", &address).await;
    let r = crate::cases::reset_password(&app, &token, "a third long passphrase 8").await;
    assert_eq!(r.status, 204, "{}", r.text());
    refused(&bearer_get(&app, "/api/me", &c.access).await);
    assert_eq!(refresh(&app, &c.refresh).await.status, 401);
}

/// A bearer request is decided by its token alone: no cross-site check
/// (a browser adds no such header on its own), its cookie is not read
/// (the token wins, and a bad token never falls back to the cookie), and
/// it gets no cookie.
pub async fn a_bearer_request_is_decided_by_its_token_alone<F: HarnessFactory>() {
    let app = app::<F>();
    let bob = signed_in(&app, "bob").await;
    app.register("alice").await;
    let alice_cookie = app.login("alice").await;
    let r = app
        .send(
            TestApp::req("GET", "/api/me")
                .header("cookie", &alice_cookie)
                .header("authorization", &format!("Bearer {}", bob.access)),
        )
        .await;
    assert_eq!(r.json()["username"], "bob", "the token wins");
    let r = app
        .send(
            TestApp::req("GET", "/api/me")
                .header("cookie", &alice_cookie)
                .header("authorization", "Bearer eyJhbGciOiJub25lIn0.e30."),
        )
        .await;
    refused(&r);
    // A bearer request cannot make a cookie session: nowhere to send it.
    let r = app
        .send(
            TestApp::req("POST", "/api/login")
                .header("authorization", &format!("Bearer {}", bob.access))
                .json(json!({"username": "bob", "password": PASSWORD})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let sessions = bearer_get(&app, "/api/sessions", &bob.access).await;
    assert_eq!(sessions.json(), json!([]), "no stored session was made");
    // An unsafe method with cross-site fetch headers: no CSRF refusal.
    let r = app
        .send(
            TestApp::req("POST", "/api/sessions/revoke-others")
                .header("origin", "https://evil.example")
                .header("sec-fetch-site", "cross-site")
                .header("authorization", &format!("Bearer {}", bob.access)),
        )
        .await;
    assert!(r.status < 300, "{}: {}", r.status, r.text());
    // The same request with the cookie alone is refused as cross-site.
    let r = app
        .send(
            TestApp::req("POST", "/api/sessions/revoke-others")
                .header("origin", "https://evil.example")
                .header("sec-fetch-site", "cross-site")
                .header("cookie", &alice_cookie),
        )
        .await;
    assert_eq!(r.status, 403);
}

/// Forged tokens are refused: `alg: none`, HS256 keyed with the public
/// key (a real MAC), another key under our `kid`, a changed claim, an
/// attacker's key embedded as `jwk` that signed the token; an expired
/// token too, while its refresh token still works (ASVS 9.1.1-9.2.4).
pub async fn forged_tampered_and_expired_tokens_are_refused<F: HarnessFactory>() {
    let app = app::<F>();
    let t = signed_in(&app, "alice").await;
    let (header, claims) = decode(&t.access);
    let mut parts = t.access.split('.');
    let (h, p, s) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let mut none = header.clone();
    none["alg"] = json!("none");
    refused(&bearer_get(&app, "/api/me", &format!("{}.{p}.", encode(&none))).await);
    // HS256 with a real MAC keyed with our public key, in the forms an
    // attacker would try: the JWK's JSON text, and the SEC1 point.
    let mut hs = header.clone();
    hs["alg"] = json!("HS256");
    let hs_input = format!("{}.{p}", encode(&hs));
    let jwk = app.get("/.well-known/jwks.json", None).await.json()["keys"][0].clone();
    let coordinate = |name: &str| {
        Base64UrlUnpadded::decode_vec(jwk[name].as_str().expect("a coordinate")).expect("base64url")
    };
    let point: Vec<u8> = [vec![4], coordinate("x"), coordinate("y")].concat();
    for secret in [jwk.to_string().into_bytes(), point] {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&secret).expect("any length");
        mac.update(hs_input.as_bytes());
        let tag = Base64UrlUnpadded::encode_string(&mac.finalize().into_bytes());
        refused(&bearer_get(&app, "/api/me", &format!("{hs_input}.{tag}")).await);
    }
    // An attacker's own key, embedded as `jwk` and signing the token
    // (with and without our `kid`): a verifier that trusted the header
    // would take it.
    let attacker = p256::ecdsa::SigningKey::from_slice(&[7; 32]).expect("a scalar");
    let sec1 = attacker.verifying_key().to_sec1_point(false);
    let (x, y) = sec1.as_bytes()[1..].split_at(32);
    for keep_kid in [true, false] {
        let mut with_jwk = header.clone();
        with_jwk["jwk"] = json!({
            "kty": "EC",
            "crv": "P-256",
            "x": Base64UrlUnpadded::encode_string(x),
            "y": Base64UrlUnpadded::encode_string(y),
        });
        if !keep_kid {
            with_jwk.as_object_mut().expect("an object").remove("kid");
        }
        let input = format!("{}.{p}", encode(&with_jwk));
        let signature: p256::ecdsa::Signature = attacker.sign(input.as_bytes());
        let forged = format!(
            "{input}.{}",
            Base64UrlUnpadded::encode_string(&signature.to_bytes())
        );
        refused(&bearer_get(&app, "/api/me", &forged).await);
    }
    // A claim raised (a second factor that never happened), all else as
    // signed: only the signature can refuse it.
    let mut other = claims.clone();
    other["amr"] = json!(["pwd", "otp"]);
    refused(&bearer_get(&app, "/api/me", &format!("{h}.{}.{s}", encode(&other))).await);
    // Our header and claims exactly, signed by another key (a valid
    // signature of the very bytes, under our key's id): only the binding of
    // the `kid` to our key refuses it.
    let foreign = p256::ecdsa::SigningKey::from_slice(&[9; 32]).expect("a scalar");
    let input = format!("{h}.{p}");
    let signature: p256::ecdsa::Signature = foreign.sign(input.as_bytes());
    let forged = format!(
        "{input}.{}",
        Base64UrlUnpadded::encode_string(&signature.to_bytes())
    );
    refused(&bearer_get(&app, "/api/me", &forged).await);
    // Expired: 15 minutes and the leeway later.
    app.advance(Duration::from_secs(15 * 60 + 61));
    refused(&bearer_get(&app, "/api/me", &t.access).await);
    let fresh = tokens(&refresh(&app, &t.refresh).await);
    assert_eq!(bearer_get(&app, "/api/me", &fresh.access).await.status, 200);
}

/// The JWKS publishes public keys only, with `kid`, `alg` and `use`; a
/// rotation signs with the new key at once and keeps the old one
/// published and verifying until its tokens have expired.
pub async fn the_jwks_publishes_public_keys_through_a_rotation<F: HarnessFactory>() {
    let app = app::<F>();
    let r = app.get("/.well-known/jwks.json", None).await;
    assert_eq!(r.status, 200);
    let keys = r.json()["keys"].as_array().expect("keys").clone();
    assert_eq!(keys.len(), 1);
    let key = &keys[0];
    assert_eq!(key["alg"], "ES256");
    assert_eq!(key["use"], "sig");
    assert_eq!(key["kty"], "EC");
    for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
        assert!(key[private].is_null(), "no private member {private}");
    }
    let old = signed_in(&app, "alice").await;
    assert_eq!(decode(&old.access).0["kid"], key["kid"]);
    let service = app
        .auth
        .authenticator()
        .token_service()
        .expect("tokens are on");
    service.rotate_key(
        SigningKey::generate(Algorithm::Es256).expect("a key"),
        auth_core::clock::Clock::now(&app.clock),
    );
    let r = app.get("/.well-known/jwks.json", None).await;
    assert_eq!(r.json()["keys"].as_array().expect("keys").len(), 2);
    let new = tokens(&refresh(&app, &old.refresh).await);
    assert_ne!(
        decode(&new.access).0["kid"],
        key["kid"],
        "the new key signs at once"
    );
    assert_eq!(bearer_get(&app, "/api/me", &old.access).await.status, 200);
    assert_eq!(bearer_get(&app, "/api/me", &new.access).await.status, 200);
    app.advance(Duration::from_secs(15 * 60 + 61));
    let r = app.get("/.well-known/jwks.json", None).await;
    assert_eq!(
        r.json()["keys"].as_array().expect("keys").len(),
        1,
        "the old key goes once its tokens expired"
    );
}

/// A sign-in's refresh tokens die after 7 days unused.
pub async fn an_idle_family_expires<F: HarnessFactory>() {
    let app = app::<F>();
    let t = signed_in(&app, "alice").await;
    app.advance(Duration::from_secs(6 * 24 * 60 * 60));
    let t = tokens(&refresh(&app, &t.refresh).await);
    app.advance(Duration::from_secs(7 * 24 * 60 * 60 + 1));
    assert_eq!(refresh(&app, &t.refresh).await.status, 401);
}
