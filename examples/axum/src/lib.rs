//! The demo app on axum: the JSON API and pages of `docs/demo-api.md`, built on
//! `auth-axum`. `app` is what the binary serves and what the conformance
//! suite drives in-process. The handlers themselves are shared by the three
//! demos (`example_shared::handlers`); this file is the axum routing and
//! body extraction around them.
//!
//! # Example
//!
//! The demo in-process on in-memory stores, as the conformance suite drives
//! it: a request for the API without a session gets JSON 401.
//!
//! ```
//! use std::sync::Arc;
//!
//! use auth_core::clock::SystemClock;
//! use auth_core::mail::InsecureLogMailer;
//! use auth_core::password::PasswordHasher;
//! use auth_core::rate_limit::TrustedProxies;
//! use axum::extract::ConnectInfo;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let auth = example_shared::build_auth_in_memory(
//!     Arc::new(SystemClock),
//!     example_shared::throttle_config(),
//!     PasswordHasher::insecure_for_tests()?,
//!     TrustedProxies::none(),
//!     Arc::new(InsecureLogMailer::new()),
//! );
//! let mut request = http::Request::get("/api/me")
//!     .header("host", "localhost")
//!     .body(axum::body::Body::empty())?;
//! // What `into_make_service_with_connect_info` gives a served request.
//! request
//!     .extensions_mut()
//!     .insert(ConnectInfo(std::net::SocketAddr::from(([127, 0, 0, 1], 40000))));
//! let response = example_axum::app(auth).oneshot(request).await?;
//! assert_eq!(response.status(), 401);
//! # Ok(())
//! # }
//! ```

use auth_axum::{AuthLayer, AuthSession, CurrentUser, RequireLayer, User, reply};
use auth_core::web::Auth;
use axum::Router;
use axum::extract::rejection::{FormRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Form, Json, Path, Query};
use axum::response::Response;
use axum::routing::{delete, get, patch, post};
use example_shared::handlers::{self as h, Body, Rejected};
use example_shared::{
    ChangePassword, CodeBody, Credentials, EmailChangeBody, EnrollBody, ForgotBody, MAX_BODY_BYTES,
    MagicBody, MagicFinishBody, PasskeyAssertion, PasskeyFinishBody, PasskeyRenameBody,
    PasskeySignInStartBody, ProofBody, RefreshRequest, ResetBody, TokenMfaRequest, TokenRequest,
    VerifyBody,
};
use serde::Deserialize;
use tower::ServiceBuilder;

/// The whole demo around `auth`.
pub fn app(auth: Auth) -> Router {
    let api_protected = Router::new()
        .route("/api/password", post(change_password))
        .route("/api/sessions", get(list_sessions))
        .route("/api/sessions/{id}", delete(revoke_session))
        .route("/api/sessions/revoke-others", post(revoke_others))
        // Changes of factors take their proof (the password, and a code once
        // a factor is on) with the request: a login is all the guard needs.
        .route("/api/mfa/totp/enroll", post(totp_enroll))
        .route("/api/mfa/totp/confirm", post(totp_confirm))
        .route("/api/mfa/totp", delete(totp_disable))
        .route("/api/email", post(change_email))
        // Passkeys: adding and removing one take the same proof.
        .route("/api/passkeys", get(list_passkeys))
        .route("/api/passkeys/register/start", post(passkey_register_start))
        .route(
            "/api/passkeys/register/finish",
            post(passkey_register_finish),
        )
        .route(
            "/api/passkeys/{id}",
            patch(rename_passkey).delete(remove_passkey),
        )
        .route_layer(RequireLayer::login());
    // New recovery codes also need a session that proved the second factor.
    let api_mfa = Router::new()
        .route("/api/mfa/recovery-codes", post(regenerate_recovery_codes))
        .route_layer(RequireLayer::mfa());
    let pages_protected = Router::new()
        .route("/account", get(account_page))
        .route("/account/password", post(account_password))
        .route("/account/revoke-others", post(account_revoke_others))
        .route("/account/sessions/revoke", post(account_revoke))
        .route("/account/reauth", post(account_reauth))
        .route("/account/mfa/enroll", post(account_mfa_enroll))
        .route("/account/mfa/confirm", post(account_mfa_confirm))
        .route("/account/mfa/disable", post(account_mfa_disable))
        .route("/account/mfa/recovery-codes", post(account_recovery_codes))
        .route("/account/email", post(account_email))
        .route("/account/passkeys/rename", post(account_passkey_rename))
        .route("/account/passkeys/remove", post(account_passkey_remove))
        .route_layer(RequireLayer::login());
    Router::new()
        .route("/api/register", post(register))
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/token", post(token))
        .route("/api/token/mfa", post(token_mfa))
        .route("/api/token/refresh", post(token_refresh))
        .route("/api/token/revoke", post(token_revoke))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/api/login/totp", post(login_totp))
        .route("/api/login/recovery", post(login_recovery))
        .route("/api/password/forgot", post(forgot_password))
        .route("/api/password/reset", post(reset_password))
        .route("/api/email/verify", post(verify_email))
        .route("/api/login/magic", post(request_magic_link))
        .route("/api/login/magic/finish", post(finish_magic_link))
        .route("/api/login/passkey/start", post(passkey_sign_in_start))
        .route("/api/login/passkey/finish", post(passkey_sign_in_finish))
        // `CurrentUser` alone protects a route: it refuses as the guard does.
        .route("/api/me", get(me))
        .merge(api_protected)
        .merge(api_mfa)
        .route("/", get(home))
        .route("/static/app.css", get(|| async { reply(h::stylesheet()) }))
        .route(
            "/static/passkeys.js",
            get(|| async { reply(h::passkeys_script()) }),
        )
        .route("/api/openapi.json", get(|| async { reply(h::openapi()) }))
        .route("/login", get(login_page).post(login_form))
        .route("/login/mfa", get(login_mfa_page).post(login_mfa_form))
        .route("/register", get(register_page).post(register_form))
        .route("/logout", post(logout_form))
        .route("/forgot", get(forgot_page).post(forgot_form))
        .route("/reset", get(reset_page).post(reset_form))
        .route("/verify-email", get(verify_page).post(verify_form))
        .route("/login/magic", get(magic_page).post(magic_form))
        .route("/login/magic/request", post(magic_request_form))
        .merge(pages_protected)
        .fallback(|| async { reply(h::not_found()) })
        .method_not_allowed_fallback(|| async { reply(h::method_not_allowed()) })
        // One `layer` call with both: axum wraps every route once per call.
        .layer(
            ServiceBuilder::new()
                .layer(AuthLayer::new(auth))
                .layer(DefaultBodyLimit::max(MAX_BODY_BYTES)),
        )
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Body<T> {
    body.map(|Json(body)| body)
        .map_err(|rejection| Rejected(rejection.status().as_u16()))
}

fn form_body<T>(body: Result<Form<T>, FormRejection>) -> Body<T> {
    body.map(|Form(body)| body)
        .map_err(|rejection| Rejected(rejection.status().as_u16()))
}

async fn register(auth: AuthSession, body: Result<Json<Credentials>, JsonRejection>) -> Response {
    reply(h::register(&auth, json_body(body)).await)
}

async fn login(auth: AuthSession, body: Result<Json<Credentials>, JsonRejection>) -> Response {
    reply(h::login(&auth, json_body(body)).await)
}

async fn token(auth: AuthSession, body: Result<Json<TokenRequest>, JsonRejection>) -> Response {
    reply(h::token(&auth, json_body(body)).await)
}

async fn token_mfa(
    auth: AuthSession,
    body: Result<Json<TokenMfaRequest>, JsonRejection>,
) -> Response {
    reply(h::token_mfa(&auth, json_body(body)).await)
}

async fn token_refresh(
    auth: AuthSession,
    body: Result<Json<RefreshRequest>, JsonRejection>,
) -> Response {
    reply(h::token_refresh(&auth, json_body(body)).await)
}

async fn token_revoke(
    auth: AuthSession,
    body: Result<Json<RefreshRequest>, JsonRejection>,
) -> Response {
    reply(h::token_revoke(&auth, json_body(body)).await)
}

async fn jwks(auth: AuthSession) -> Response {
    reply(h::jwks(&auth))
}

async fn logout(auth: AuthSession) -> Response {
    reply(h::logout(&auth).await)
}

async fn me(auth: AuthSession, CurrentUser(user): CurrentUser<User>) -> Response {
    reply(h::me(&auth, &user).await)
}

async fn change_password(
    auth: AuthSession,
    body: Result<Json<ChangePassword>, JsonRejection>,
) -> Response {
    reply(h::change_password(&auth, json_body(body)).await)
}

async fn list_sessions(auth: AuthSession) -> Response {
    reply(h::list_sessions(&auth).await)
}

async fn revoke_session(auth: AuthSession, id: Result<Path<String>, PathRejection>) -> Response {
    reply(h::revoke_session(&auth, &path_id(id)).await)
}

/// A path id as the handlers take it: one axum cannot decode (bytes that
/// are not UTF-8) names nothing, so the handler answers as for an unknown
/// id (404 JSON, or the login refusal first), as actix-web and Rocket do
/// with their lenient decoding.
fn path_id(id: Result<Path<String>, PathRejection>) -> String {
    id.map(|Path(id)| id).unwrap_or_default()
}

async fn revoke_others(auth: AuthSession) -> Response {
    reply(h::revoke_others(&auth).await)
}

async fn home(auth: AuthSession) -> Response {
    reply(h::home(&auth).await)
}

#[derive(Debug, Deserialize)]
struct NextQuery {
    next: Option<String>,
}

async fn login_page(
    auth: AuthSession,
    query: Result<Query<NextQuery>, QueryRejection>,
) -> Response {
    // A malformed query string only loses `next`.
    let next = query.ok().and_then(|Query(q)| q.next);
    reply(h::login_page(&auth, next.as_deref()).await)
}

async fn register_page(auth: AuthSession) -> Response {
    reply(h::register_page(&auth).await)
}

async fn login_form(
    auth: AuthSession,
    form: Result<Form<h::CredentialsForm>, FormRejection>,
) -> Response {
    reply(h::login_form(&auth, form_body(form)).await)
}

async fn register_form(
    auth: AuthSession,
    form: Result<Form<h::CredentialsForm>, FormRejection>,
) -> Response {
    reply(h::register_form(&auth, form_body(form)).await)
}

async fn logout_form(
    auth: AuthSession,
    form: Result<Form<h::TokenForm>, FormRejection>,
) -> Response {
    reply(h::logout_form(&auth, form_body(form)).await)
}

async fn account_page(auth: AuthSession) -> Response {
    reply(h::account_page(&auth).await)
}

async fn account_password(
    auth: AuthSession,
    form: Result<Form<h::PasswordForm>, FormRejection>,
) -> Response {
    reply(h::account_password(&auth, form_body(form)).await)
}

async fn account_revoke_others(
    auth: AuthSession,
    form: Result<Form<h::TokenForm>, FormRejection>,
) -> Response {
    reply(h::account_revoke_others(&auth, form_body(form)).await)
}

async fn login_totp(auth: AuthSession, body: Result<Json<CodeBody>, JsonRejection>) -> Response {
    reply(h::login_totp(&auth, json_body(body)).await)
}

async fn login_recovery(
    auth: AuthSession,
    body: Result<Json<CodeBody>, JsonRejection>,
) -> Response {
    reply(h::login_recovery(&auth, json_body(body)).await)
}

async fn regenerate_recovery_codes(
    auth: AuthSession,
    body: Result<Json<ProofBody>, JsonRejection>,
) -> Response {
    reply(h::regenerate_recovery_codes(&auth, json_body(body)).await)
}

async fn totp_enroll(auth: AuthSession, body: Result<Json<EnrollBody>, JsonRejection>) -> Response {
    reply(h::totp_enroll(&auth, json_body(body)).await)
}

async fn totp_confirm(auth: AuthSession, body: Result<Json<CodeBody>, JsonRejection>) -> Response {
    reply(h::totp_confirm(&auth, json_body(body)).await)
}

async fn totp_disable(auth: AuthSession, body: Result<Json<ProofBody>, JsonRejection>) -> Response {
    reply(h::totp_disable(&auth, json_body(body)).await)
}

async fn login_mfa_page(
    auth: AuthSession,
    query: Result<Query<NextQuery>, QueryRejection>,
) -> Response {
    let next = query.ok().and_then(|Query(q)| q.next);
    reply(h::login_mfa_page(&auth, next.as_deref()).await)
}

async fn login_mfa_form(
    auth: AuthSession,
    form: Result<Form<h::CodeForm>, FormRejection>,
) -> Response {
    reply(h::login_mfa_form(&auth, form_body(form)).await)
}

async fn account_revoke(
    auth: AuthSession,
    form: Result<Form<h::RevokeForm>, FormRejection>,
) -> Response {
    reply(h::account_revoke(&auth, form_body(form)).await)
}

async fn account_reauth(
    auth: AuthSession,
    form: Result<Form<h::ReauthForm>, FormRejection>,
) -> Response {
    reply(h::account_reauth(&auth, form_body(form)).await)
}

async fn account_mfa_enroll(
    auth: AuthSession,
    form: Result<Form<h::ReauthForm>, FormRejection>,
) -> Response {
    reply(h::account_mfa_enroll(&auth, form_body(form)).await)
}

async fn account_mfa_confirm(
    auth: AuthSession,
    form: Result<Form<h::CodeForm>, FormRejection>,
) -> Response {
    reply(h::account_mfa_confirm(&auth, form_body(form)).await)
}

async fn account_mfa_disable(
    auth: AuthSession,
    form: Result<Form<h::ReauthForm>, FormRejection>,
) -> Response {
    reply(h::account_mfa_disable(&auth, form_body(form)).await)
}

async fn account_recovery_codes(
    auth: AuthSession,
    form: Result<Form<h::ReauthForm>, FormRejection>,
) -> Response {
    reply(h::account_recovery_codes(&auth, form_body(form)).await)
}

async fn forgot_password(
    auth: AuthSession,
    body: Result<Json<ForgotBody>, JsonRejection>,
) -> Response {
    reply(h::forgot_password(&auth, json_body(body)).await)
}

async fn reset_password(
    auth: AuthSession,
    body: Result<Json<ResetBody>, JsonRejection>,
) -> Response {
    reply(h::reset_password(&auth, json_body(body)).await)
}

async fn verify_email(
    auth: AuthSession,
    body: Result<Json<VerifyBody>, JsonRejection>,
) -> Response {
    reply(h::verify_email(&auth, json_body(body)).await)
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

async fn forgot_page(auth: AuthSession) -> Response {
    reply(h::forgot_page(&auth).await)
}

async fn forgot_form(
    auth: AuthSession,
    form: Result<Form<h::LinkForm>, FormRejection>,
) -> Response {
    reply(h::forgot_form(&auth, form_body(form)).await)
}

async fn reset_page(
    auth: AuthSession,
    query: Result<Query<TokenQuery>, QueryRejection>,
) -> Response {
    let token = query.ok().and_then(|Query(q)| q.token);
    reply(h::reset_page(&auth, token.as_deref()).await)
}

async fn reset_form(auth: AuthSession, form: Result<Form<h::LinkForm>, FormRejection>) -> Response {
    reply(h::reset_form(&auth, form_body(form)).await)
}

async fn verify_page(
    auth: AuthSession,
    query: Result<Query<TokenQuery>, QueryRejection>,
) -> Response {
    let token = query.ok().and_then(|Query(q)| q.token);
    reply(h::verify_page(&auth, token.as_deref()).await)
}

async fn verify_form(
    auth: AuthSession,
    form: Result<Form<h::LinkForm>, FormRejection>,
) -> Response {
    reply(h::verify_form(&auth, form_body(form)).await)
}

async fn request_magic_link(
    auth: AuthSession,
    body: Result<Json<MagicBody>, JsonRejection>,
) -> Response {
    reply(h::request_magic_link(&auth, json_body(body)).await)
}

async fn finish_magic_link(
    auth: AuthSession,
    body: Result<Json<MagicFinishBody>, JsonRejection>,
) -> Response {
    reply(h::finish_magic_link(&auth, json_body(body)).await)
}

async fn magic_page(
    auth: AuthSession,
    query: Result<Query<TokenQuery>, QueryRejection>,
) -> Response {
    let token = query.ok().and_then(|Query(q)| q.token);
    reply(h::magic_page(&auth, token.as_deref()).await)
}

async fn magic_form(auth: AuthSession, form: Result<Form<h::LinkForm>, FormRejection>) -> Response {
    reply(h::magic_form(&auth, form_body(form)).await)
}

async fn magic_request_form(
    auth: AuthSession,
    form: Result<Form<h::LinkForm>, FormRejection>,
) -> Response {
    reply(h::magic_request_form(&auth, form_body(form)).await)
}

async fn change_email(
    auth: AuthSession,
    body: Result<Json<EmailChangeBody>, JsonRejection>,
) -> Response {
    reply(h::change_email(&auth, json_body(body)).await)
}

async fn account_email(
    auth: AuthSession,
    form: Result<Form<h::EmailForm>, FormRejection>,
) -> Response {
    reply(h::account_email(&auth, form_body(form)).await)
}

async fn passkey_register_start(
    auth: AuthSession,
    body: Result<Json<EnrollBody>, JsonRejection>,
) -> Response {
    reply(h::passkey_register_start(&auth, json_body(body)).await)
}

async fn passkey_register_finish(
    auth: AuthSession,
    body: Result<Json<PasskeyFinishBody>, JsonRejection>,
) -> Response {
    reply(h::passkey_register_finish(&auth, json_body(body)).await)
}

async fn list_passkeys(auth: AuthSession) -> Response {
    reply(h::list_passkeys(&auth).await)
}

async fn rename_passkey(
    auth: AuthSession,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<PasskeyRenameBody>, JsonRejection>,
) -> Response {
    reply(h::rename_passkey(&auth, &path_id(id), json_body(body)).await)
}

async fn remove_passkey(
    auth: AuthSession,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<EnrollBody>, JsonRejection>,
) -> Response {
    reply(h::remove_passkey(&auth, &path_id(id), json_body(body)).await)
}

async fn passkey_sign_in_start(
    auth: AuthSession,
    body: Result<Json<PasskeySignInStartBody>, JsonRejection>,
) -> Response {
    reply(h::passkey_sign_in_start(&auth, json_body(body)).await)
}

async fn passkey_sign_in_finish(
    auth: AuthSession,
    body: Result<Json<PasskeyAssertion>, JsonRejection>,
) -> Response {
    reply(h::passkey_sign_in_finish(&auth, json_body(body)).await)
}

async fn account_passkey_rename(
    auth: AuthSession,
    form: Result<Form<h::PasskeyRenameForm>, FormRejection>,
) -> Response {
    reply(h::account_passkey_rename(&auth, form_body(form)).await)
}

async fn account_passkey_remove(
    auth: AuthSession,
    form: Result<Form<h::PasskeyRemoveForm>, FormRejection>,
) -> Response {
    reply(h::account_passkey_remove(&auth, form_body(form)).await)
}
