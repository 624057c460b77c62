//! The demo app on actix-web: the JSON API and pages of `docs/demo-api.md`,
//! built on `auth-actix`. `app` is what the binary serves and what the
//! conformance suite drives in-process. The handlers themselves are shared
//! by the three demos (`example_shared::handlers`); this file is the actix
//! routing and body extraction around them.
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
//! use actix_web::test;
//!
//! # #[actix_web::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let auth = example_shared::build_auth_in_memory(
//!     Arc::new(SystemClock),
//!     example_shared::throttle_config(),
//!     PasswordHasher::insecure_for_tests()?,
//!     TrustedProxies::none(),
//!     Arc::new(InsecureLogMailer::new()),
//! );
//! let app = test::init_service(example_actix::app(auth)).await;
//! let request = test::TestRequest::get()
//!     .uri("/api/me")
//!     .insert_header(("host", "localhost"))
//!     .peer_addr(std::net::SocketAddr::from(([127, 0, 0, 1], 40000)))
//!     .to_request();
//! let response = test::call_service(&app, request).await;
//! assert_eq!(response.status(), 401);
//! # Ok(())
//! # }
//! ```

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::from_fn;
use actix_web::{App, Error, HttpResponse, Route, web};
use auth_actix::{
    AuthMiddleware, AuthSession, CurrentUser, User, reply, require_login, require_mfa,
};
use auth_core::web::Auth;
use example_shared::handlers::{self as h, Body, Rejected};
use example_shared::{
    ChangePassword, CodeBody, Credentials, EmailChangeBody, EnrollBody, ForgotBody, MAX_BODY_BYTES,
    MagicBody, MagicFinishBody, PasskeyAssertion, PasskeyFinishBody, PasskeyRenameBody,
    PasskeySignInStartBody, ProofBody, RefreshRequest, ResetBody, TokenMfaRequest, TokenRequest,
    VerifyBody,
};
use serde::Deserialize;

/// The whole demo around `auth`.
pub fn app(
    auth: Auth,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = Error,
        InitError = (),
    >,
> {
    // A known path with the wrong method: JSON 405.
    let resource = |path: &str| web::resource(path).default_service(web::to(method_not_allowed));
    // Guards go on the routes, not on a scope or resource: their
    // middleware also wraps the default service, which would answer 401
    // for unknown paths, or for a known path's wrong method (405).
    let protected = |path: &str, routes: Vec<Route>| {
        routes.into_iter().fold(resource(path), |resource, route| {
            resource.route(route.wrap(from_fn(require_login)))
        })
    };
    App::new()
        .app_data(web::JsonConfig::default().limit(MAX_BODY_BYTES))
        .app_data(web::FormConfig::default().limit(MAX_BODY_BYTES))
        .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
        .service(resource("/api/register").post(register))
        .service(resource("/api/login").post(login))
        .service(resource("/api/logout").post(logout))
        .service(resource("/api/token").post(token))
        .service(resource("/api/token/mfa").post(token_mfa))
        .service(resource("/api/token/refresh").post(token_refresh))
        .service(resource("/api/token/revoke").post(token_revoke))
        .service(resource("/.well-known/jwks.json").get(jwks))
        .service(resource("/api/login/totp").post(login_totp))
        .service(resource("/api/login/recovery").post(login_recovery))
        .service(resource("/api/password/forgot").post(forgot_password))
        .service(resource("/api/password/reset").post(reset_password))
        .service(resource("/api/email/verify").post(verify_email))
        .service(resource("/api/login/magic").post(request_magic_link))
        .service(resource("/api/login/magic/finish").post(finish_magic_link))
        .service(resource("/api/login/passkey/start").post(passkey_sign_in_start))
        .service(resource("/api/login/passkey/finish").post(passkey_sign_in_finish))
        // `CurrentUser` alone protects a route: it refuses as the guard does.
        .service(resource("/api/me").get(me))
        .service(protected(
            "/api/password",
            vec![web::post().to(change_password)],
        ))
        .service(protected("/api/email", vec![web::post().to(change_email)]))
        .service(protected(
            "/api/sessions",
            vec![web::get().to(list_sessions)],
        ))
        .service(protected(
            "/api/sessions/revoke-others",
            vec![web::post().to(revoke_others)],
        ))
        .service(protected(
            "/api/sessions/{id}",
            vec![web::delete().to(revoke_session)],
        ))
        // Changes of factors take their proof (the password, and a code once
        // a factor is on) with the request: a login is all the guard needs;
        // new recovery codes also a session that proved the second factor.
        .service(protected(
            "/api/mfa/totp/enroll",
            vec![web::post().to(totp_enroll)],
        ))
        .service(
            resource("/api/mfa/recovery-codes").route(
                web::post()
                    .to(regenerate_recovery_codes)
                    .wrap(from_fn(require_mfa)),
            ),
        )
        .service(protected(
            "/api/mfa/totp/confirm",
            vec![web::post().to(totp_confirm)],
        ))
        .service(protected(
            "/api/mfa/totp",
            vec![web::delete().to(totp_disable)],
        ))
        // Passkeys: adding and removing one take the same proof.
        .service(protected(
            "/api/passkeys",
            vec![web::get().to(list_passkeys)],
        ))
        .service(protected(
            "/api/passkeys/register/start",
            vec![web::post().to(passkey_register_start)],
        ))
        .service(protected(
            "/api/passkeys/register/finish",
            vec![web::post().to(passkey_register_finish)],
        ))
        .service(protected(
            "/api/passkeys/{id}",
            vec![
                web::patch().to(rename_passkey),
                web::delete().to(remove_passkey),
            ],
        ))
        .service(resource("/").get(home))
        .service(resource("/static/app.css").get(stylesheet))
        .service(resource("/static/passkeys.js").get(passkeys_script))
        .service(resource("/api/openapi.json").get(|| async { reply(h::openapi()) }))
        .service(resource("/login").get(login_page).post(login_form))
        .service(
            resource("/login/mfa")
                .get(login_mfa_page)
                .post(login_mfa_form),
        )
        .service(resource("/register").get(register_page).post(register_form))
        .service(resource("/logout").post(logout_form))
        .service(resource("/forgot").get(forgot_page).post(forgot_form))
        .service(resource("/reset").get(reset_page).post(reset_form))
        .service(resource("/verify-email").get(verify_page).post(verify_form))
        .service(resource("/login/magic").get(magic_page).post(magic_form))
        .service(resource("/login/magic/request").post(magic_request_form))
        .service(protected("/account", vec![web::get().to(account_page)]))
        .service(protected(
            "/account/password",
            vec![web::post().to(account_password)],
        ))
        .service(protected(
            "/account/revoke-others",
            vec![web::post().to(account_revoke_others)],
        ))
        .service(protected(
            "/account/sessions/revoke",
            vec![web::post().to(account_revoke)],
        ))
        .service(protected(
            "/account/reauth",
            vec![web::post().to(account_reauth)],
        ))
        .service(protected(
            "/account/mfa/enroll",
            vec![web::post().to(account_mfa_enroll)],
        ))
        .service(protected(
            "/account/mfa/confirm",
            vec![web::post().to(account_mfa_confirm)],
        ))
        .service(protected(
            "/account/mfa/disable",
            vec![web::post().to(account_mfa_disable)],
        ))
        .service(protected(
            "/account/mfa/recovery-codes",
            vec![web::post().to(account_recovery_codes)],
        ))
        .service(protected(
            "/account/email",
            vec![web::post().to(account_email)],
        ))
        .service(protected(
            "/account/passkeys/rename",
            vec![web::post().to(account_passkey_rename)],
        ))
        .service(protected(
            "/account/passkeys/remove",
            vec![web::post().to(account_passkey_remove)],
        ))
        .default_service(web::to(not_found))
        // Last `wrap`: the outermost middleware.
        .wrap(AuthMiddleware::new(auth))
}

async fn not_found() -> HttpResponse {
    reply(h::not_found())
}

async fn method_not_allowed() -> HttpResponse {
    reply(h::method_not_allowed())
}

fn json_body<T>(body: Result<Json<T>, Error>) -> Body<T> {
    body.map(|Json(body)| body)
        .map_err(|e| Rejected(e.as_response_error().status_code().as_u16()))
}

/// `web::Json` with axum's content-type rule, which the Rocket demo
/// follows too: `application/json` or `application/*+json`, else 415.
/// (actix-web's own also takes a JSON subtype of another type, such as
/// `text/json`, and refuses the rest with 400.)
struct Json<T>(T);

impl<T: serde::de::DeserializeOwned + 'static> actix_web::FromRequest for Json<T> {
    type Error = Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self, Error>>>>;

    fn from_request(
        request: &actix_web::HttpRequest,
        payload: &mut actix_web::dev::Payload,
    ) -> Self::Future {
        use actix_web::HttpMessage;
        use actix_web::mime::{APPLICATION, JSON};
        let json = request.mime_type().ok().flatten().is_some_and(|mime| {
            mime.type_() == APPLICATION && (mime.subtype() == JSON || mime.suffix() == Some(JSON))
        });
        if !json {
            return Box::pin(std::future::ready(Err(
                actix_web::error::ErrorUnsupportedMediaType("expected a JSON body"),
            )));
        }
        let body = web::Json::<T>::from_request(request, payload);
        Box::pin(async move {
            body.await
                .map(|web::Json(body)| Json(body))
                .map_err(unprocessable)
        })
    }
}

/// A body that parsed but does not fit the type (a wrong type, a missing
/// field) is 422, as axum's `Json` and `Form` (and the Rocket demo)
/// answer; actix-web answers 400 for every deserialization error.
fn unprocessable(error: Error) -> Error {
    use actix_web::error::{JsonPayloadError, UrlencodedError};
    let misfit = match error.as_error::<JsonPayloadError>() {
        Some(JsonPayloadError::Deserialize(e)) => e.is_data(),
        _ => matches!(
            error.as_error::<UrlencodedError>(),
            Some(UrlencodedError::Parse(_))
        ),
    };
    if misfit {
        actix_web::error::ErrorUnprocessableEntity("the body does not fit")
    } else {
        error
    }
}

fn form_body<T>(body: Result<web::Form<T>, Error>) -> Body<T> {
    body.map(web::Form::into_inner)
        .map_err(|e| Rejected(unprocessable(e).as_response_error().status_code().as_u16()))
}

async fn register(auth: AuthSession, body: Result<Json<Credentials>, Error>) -> HttpResponse {
    reply(h::register(&auth, json_body(body)).await)
}

async fn login(auth: AuthSession, body: Result<Json<Credentials>, Error>) -> HttpResponse {
    reply(h::login(&auth, json_body(body)).await)
}

async fn token(auth: AuthSession, body: Result<Json<TokenRequest>, Error>) -> HttpResponse {
    reply(h::token(&auth, json_body(body)).await)
}

async fn token_mfa(auth: AuthSession, body: Result<Json<TokenMfaRequest>, Error>) -> HttpResponse {
    reply(h::token_mfa(&auth, json_body(body)).await)
}

async fn token_refresh(
    auth: AuthSession,
    body: Result<Json<RefreshRequest>, Error>,
) -> HttpResponse {
    reply(h::token_refresh(&auth, json_body(body)).await)
}

async fn token_revoke(
    auth: AuthSession,
    body: Result<Json<RefreshRequest>, Error>,
) -> HttpResponse {
    reply(h::token_revoke(&auth, json_body(body)).await)
}

async fn jwks(auth: AuthSession) -> HttpResponse {
    reply(h::jwks(&auth))
}

async fn logout(auth: AuthSession) -> HttpResponse {
    reply(h::logout(&auth).await)
}

async fn me(auth: AuthSession, CurrentUser(user): CurrentUser<User>) -> HttpResponse {
    reply(h::me(&auth, &user).await)
}

async fn change_password(
    auth: AuthSession,
    body: Result<Json<ChangePassword>, Error>,
) -> HttpResponse {
    reply(h::change_password(&auth, json_body(body)).await)
}

async fn list_sessions(auth: AuthSession) -> HttpResponse {
    reply(h::list_sessions(&auth).await)
}

async fn revoke_session(auth: AuthSession, id: web::Path<String>) -> HttpResponse {
    reply(h::revoke_session(&auth, &id).await)
}

async fn revoke_others(auth: AuthSession) -> HttpResponse {
    reply(h::revoke_others(&auth).await)
}

async fn stylesheet() -> HttpResponse {
    reply(h::stylesheet())
}

async fn home(auth: AuthSession) -> HttpResponse {
    reply(h::home(&auth).await)
}

#[derive(Debug, Deserialize)]
struct NextQuery {
    next: Option<String>,
}

async fn login_page(
    auth: AuthSession,
    query: Result<web::Query<NextQuery>, Error>,
) -> HttpResponse {
    // A malformed query string only loses `next`.
    let next = query.ok().and_then(|q| q.into_inner().next);
    reply(h::login_page(&auth, next.as_deref()).await)
}

async fn register_page(auth: AuthSession) -> HttpResponse {
    reply(h::register_page(&auth).await)
}

async fn login_form(
    auth: AuthSession,
    form: Result<web::Form<h::CredentialsForm>, Error>,
) -> HttpResponse {
    reply(h::login_form(&auth, form_body(form)).await)
}

async fn register_form(
    auth: AuthSession,
    form: Result<web::Form<h::CredentialsForm>, Error>,
) -> HttpResponse {
    reply(h::register_form(&auth, form_body(form)).await)
}

async fn logout_form(
    auth: AuthSession,
    form: Result<web::Form<h::TokenForm>, Error>,
) -> HttpResponse {
    reply(h::logout_form(&auth, form_body(form)).await)
}

async fn account_page(auth: AuthSession) -> HttpResponse {
    reply(h::account_page(&auth).await)
}

async fn account_password(
    auth: AuthSession,
    form: Result<web::Form<h::PasswordForm>, Error>,
) -> HttpResponse {
    reply(h::account_password(&auth, form_body(form)).await)
}

async fn account_revoke_others(
    auth: AuthSession,
    form: Result<web::Form<h::TokenForm>, Error>,
) -> HttpResponse {
    reply(h::account_revoke_others(&auth, form_body(form)).await)
}

async fn login_totp(auth: AuthSession, body: Result<Json<CodeBody>, Error>) -> HttpResponse {
    reply(h::login_totp(&auth, json_body(body)).await)
}

async fn login_recovery(auth: AuthSession, body: Result<Json<CodeBody>, Error>) -> HttpResponse {
    reply(h::login_recovery(&auth, json_body(body)).await)
}

async fn regenerate_recovery_codes(
    auth: AuthSession,
    body: Result<Json<ProofBody>, Error>,
) -> HttpResponse {
    reply(h::regenerate_recovery_codes(&auth, json_body(body)).await)
}

async fn totp_enroll(auth: AuthSession, body: Result<Json<EnrollBody>, Error>) -> HttpResponse {
    reply(h::totp_enroll(&auth, json_body(body)).await)
}

async fn totp_confirm(auth: AuthSession, body: Result<Json<CodeBody>, Error>) -> HttpResponse {
    reply(h::totp_confirm(&auth, json_body(body)).await)
}

async fn totp_disable(auth: AuthSession, body: Result<Json<ProofBody>, Error>) -> HttpResponse {
    reply(h::totp_disable(&auth, json_body(body)).await)
}

async fn login_mfa_page(
    auth: AuthSession,
    query: Result<web::Query<NextQuery>, Error>,
) -> HttpResponse {
    let next = query.ok().and_then(|q| q.into_inner().next);
    reply(h::login_mfa_page(&auth, next.as_deref()).await)
}

async fn login_mfa_form(
    auth: AuthSession,
    form: Result<web::Form<h::CodeForm>, Error>,
) -> HttpResponse {
    reply(h::login_mfa_form(&auth, form_body(form)).await)
}

async fn account_revoke(
    auth: AuthSession,
    form: Result<web::Form<h::RevokeForm>, Error>,
) -> HttpResponse {
    reply(h::account_revoke(&auth, form_body(form)).await)
}

async fn account_reauth(
    auth: AuthSession,
    form: Result<web::Form<h::ReauthForm>, Error>,
) -> HttpResponse {
    reply(h::account_reauth(&auth, form_body(form)).await)
}

async fn account_mfa_enroll(
    auth: AuthSession,
    form: Result<web::Form<h::ReauthForm>, Error>,
) -> HttpResponse {
    reply(h::account_mfa_enroll(&auth, form_body(form)).await)
}

async fn account_mfa_confirm(
    auth: AuthSession,
    form: Result<web::Form<h::CodeForm>, Error>,
) -> HttpResponse {
    reply(h::account_mfa_confirm(&auth, form_body(form)).await)
}

async fn account_mfa_disable(
    auth: AuthSession,
    form: Result<web::Form<h::ReauthForm>, Error>,
) -> HttpResponse {
    reply(h::account_mfa_disable(&auth, form_body(form)).await)
}

async fn account_recovery_codes(
    auth: AuthSession,
    form: Result<web::Form<h::ReauthForm>, Error>,
) -> HttpResponse {
    reply(h::account_recovery_codes(&auth, form_body(form)).await)
}

async fn forgot_password(auth: AuthSession, body: Result<Json<ForgotBody>, Error>) -> HttpResponse {
    reply(h::forgot_password(&auth, json_body(body)).await)
}

async fn reset_password(auth: AuthSession, body: Result<Json<ResetBody>, Error>) -> HttpResponse {
    reply(h::reset_password(&auth, json_body(body)).await)
}

async fn verify_email(auth: AuthSession, body: Result<Json<VerifyBody>, Error>) -> HttpResponse {
    reply(h::verify_email(&auth, json_body(body)).await)
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

async fn forgot_page(auth: AuthSession) -> HttpResponse {
    reply(h::forgot_page(&auth).await)
}

async fn forgot_form(
    auth: AuthSession,
    form: Result<web::Form<h::LinkForm>, Error>,
) -> HttpResponse {
    reply(h::forgot_form(&auth, form_body(form)).await)
}

async fn reset_page(
    auth: AuthSession,
    query: Result<web::Query<TokenQuery>, Error>,
) -> HttpResponse {
    let token = query.ok().and_then(|q| q.into_inner().token);
    reply(h::reset_page(&auth, token.as_deref()).await)
}

async fn reset_form(
    auth: AuthSession,
    form: Result<web::Form<h::LinkForm>, Error>,
) -> HttpResponse {
    reply(h::reset_form(&auth, form_body(form)).await)
}

async fn verify_page(
    auth: AuthSession,
    query: Result<web::Query<TokenQuery>, Error>,
) -> HttpResponse {
    let token = query.ok().and_then(|q| q.into_inner().token);
    reply(h::verify_page(&auth, token.as_deref()).await)
}

async fn verify_form(
    auth: AuthSession,
    form: Result<web::Form<h::LinkForm>, Error>,
) -> HttpResponse {
    reply(h::verify_form(&auth, form_body(form)).await)
}

async fn request_magic_link(
    auth: AuthSession,
    body: Result<Json<MagicBody>, Error>,
) -> HttpResponse {
    reply(h::request_magic_link(&auth, json_body(body)).await)
}

async fn finish_magic_link(
    auth: AuthSession,
    body: Result<Json<MagicFinishBody>, Error>,
) -> HttpResponse {
    reply(h::finish_magic_link(&auth, json_body(body)).await)
}

async fn magic_page(
    auth: AuthSession,
    query: Result<web::Query<TokenQuery>, Error>,
) -> HttpResponse {
    let token = query.ok().and_then(|q| q.into_inner().token);
    reply(h::magic_page(&auth, token.as_deref()).await)
}

async fn magic_form(
    auth: AuthSession,
    form: Result<web::Form<h::LinkForm>, Error>,
) -> HttpResponse {
    reply(h::magic_form(&auth, form_body(form)).await)
}

async fn magic_request_form(
    auth: AuthSession,
    form: Result<web::Form<h::LinkForm>, Error>,
) -> HttpResponse {
    reply(h::magic_request_form(&auth, form_body(form)).await)
}

async fn change_email(
    auth: AuthSession,
    body: Result<Json<EmailChangeBody>, Error>,
) -> HttpResponse {
    reply(h::change_email(&auth, json_body(body)).await)
}

async fn account_email(
    auth: AuthSession,
    form: Result<web::Form<h::EmailForm>, Error>,
) -> HttpResponse {
    reply(h::account_email(&auth, form_body(form)).await)
}

async fn passkeys_script() -> HttpResponse {
    reply(h::passkeys_script())
}

async fn passkey_register_start(
    auth: AuthSession,
    body: Result<Json<EnrollBody>, Error>,
) -> HttpResponse {
    reply(h::passkey_register_start(&auth, json_body(body)).await)
}

async fn passkey_register_finish(
    auth: AuthSession,
    body: Result<Json<PasskeyFinishBody>, Error>,
) -> HttpResponse {
    reply(h::passkey_register_finish(&auth, json_body(body)).await)
}

async fn list_passkeys(auth: AuthSession) -> HttpResponse {
    reply(h::list_passkeys(&auth).await)
}

async fn rename_passkey(
    auth: AuthSession,
    id: web::Path<String>,
    body: Result<Json<PasskeyRenameBody>, Error>,
) -> HttpResponse {
    reply(h::rename_passkey(&auth, &id, json_body(body)).await)
}

async fn remove_passkey(
    auth: AuthSession,
    id: web::Path<String>,
    body: Result<Json<EnrollBody>, Error>,
) -> HttpResponse {
    reply(h::remove_passkey(&auth, &id, json_body(body)).await)
}

async fn passkey_sign_in_start(
    auth: AuthSession,
    body: Result<Json<PasskeySignInStartBody>, Error>,
) -> HttpResponse {
    reply(h::passkey_sign_in_start(&auth, json_body(body)).await)
}

async fn passkey_sign_in_finish(
    auth: AuthSession,
    body: Result<Json<PasskeyAssertion>, Error>,
) -> HttpResponse {
    reply(h::passkey_sign_in_finish(&auth, json_body(body)).await)
}

async fn account_passkey_rename(
    auth: AuthSession,
    form: Result<web::Form<h::PasskeyRenameForm>, Error>,
) -> HttpResponse {
    reply(h::account_passkey_rename(&auth, form_body(form)).await)
}

async fn account_passkey_remove(
    auth: AuthSession,
    form: Result<web::Form<h::PasskeyRemoveForm>, Error>,
) -> HttpResponse {
    reply(h::account_passkey_remove(&auth, form_body(form)).await)
}
