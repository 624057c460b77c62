//! The demo app on Rocket: the JSON API and pages of `docs/demo-api.md`, built on
//! `auth-rocket`. `app` is what the binary serves and what the conformance
//! suite drives in-process. The handlers themselves are shared by the three
//! demos (`example_shared::handlers`); this file is the Rocket routing and
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
//! use rocket::http::{Header, Status};
//! use rocket::local::asynchronous::Client;
//!
//! # #[rocket::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let auth = example_shared::build_auth_in_memory(
//!     Arc::new(SystemClock),
//!     example_shared::throttle_config(),
//!     PasswordHasher::insecure_for_tests()?,
//!     TrustedProxies::none(),
//!     Arc::new(InsecureLogMailer::new()),
//! );
//! let client = Client::untracked(example_rocket::app(auth)).await?;
//! let response = client
//!     .get("/api/me")
//!     .header(Header::new("host", "localhost"))
//!     .remote(std::net::SocketAddr::from(([127, 0, 0, 1], 40000)))
//!     .dispatch()
//!     .await;
//! assert_eq!(response.status(), Status::Unauthorized);
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeSet;

use auth_core::web::Auth;
use auth_rocket::{
    AuthFairing, AuthSession, CurrentUser, ReplyResponder, RequireLogin, RequireMfa, User, reply,
};
use example_shared::handlers::{self as h, Body, Rejected};
use example_shared::{
    ChangePassword, CodeBody, Credentials, EmailChangeBody, EnrollBody, ForgotBody, MAX_BODY_BYTES,
    MagicBody, MagicFinishBody, PasskeyAssertion, PasskeyFinishBody, PasskeyRenameBody,
    PasskeySignInStartBody, ProofBody, RefreshRequest, ResetBody, TokenMfaRequest, TokenRequest,
    VerifyBody, error_json,
};
use rocket::config::{Ident, LogLevel};
use rocket::data::{self, FromData, Limits, ToByteUnit};
use rocket::http::{Method, Status};
use rocket::outcome::Outcome;
use rocket::request::Request;
use rocket::route::{self, Handler, Route};
use rocket::serde::json::Json;
use rocket::{Build, Config, Data, Rocket, catch, catchers, delete, get, patch, post, routes};
use serde::de::DeserializeOwned;

/// The demo's Rocket settings: body limits of [`MAX_BODY_BYTES`], no
/// `Server` header, no trust in `X-Real-IP` (the core decides the client
/// IP), and Rocket's own log quiet (`ROCKET_LOG_LEVEL` = `critical` by
/// default, or `off`; see [`log_level`] for `normal` and `debug`). The
/// binary sets the address from `DEMO_ADDR`; `Rocket.toml` and other
/// `ROCKET_*` variables are not read.
pub fn config() -> Config {
    let limit = MAX_BODY_BYTES.bytes();
    let log_level = log_level(
        std::env::var("ROCKET_LOG_LEVEL").ok().as_deref(),
        std::env::var("DEMO_INSECURE_ROCKET_LOG").as_deref() == Ok("true"),
    );
    Config {
        limits: Limits::default()
            .limit("json", limit)
            .limit("form", limit)
            .limit("data-form", limit)
            .limit("string", limit)
            .limit("bytes", limit)
            .limit("file", limit),
        ident: Ident::none(),
        ip_header: None,
        log_level,
        cli_colors: false,
        ..Config::default()
    }
}

/// Rocket's log level for `ROCKET_LOG_LEVEL` (`asked`). Rocket logs each
/// request's URL at `normal`, with the token of a sign-in, reset or
/// verification link in it, and every header at `debug` (session cookies,
/// bearer tokens): those need `insecure` (`DEMO_INSECURE_ROCKET_LOG=true`)
/// and log a warning; without it the log stays at `critical`, with a
/// warning that says why.
pub fn log_level(asked: Option<&str>, insecure: bool) -> LogLevel {
    let level = asked
        .and_then(|level| level.parse().ok())
        .unwrap_or(LogLevel::Critical);
    if !matches!(level, LogLevel::Normal | LogLevel::Debug) {
        return level;
    }
    if insecure {
        tracing::warn!(
            "DEMO_INSECURE_ROCKET_LOG: Rocket logs request URLs (with the tokens of mailed \
             links) and, at debug, every header (session cookies, bearer tokens); \
             development only"
        );
        level
    } else {
        tracing::warn!(
            "ROCKET_LOG_LEVEL above critical ignored: Rocket would log request URLs (with \
             the tokens of mailed links) and, at debug, every header (session cookies, \
             bearer tokens); set DEMO_INSECURE_ROCKET_LOG=true to allow it"
        );
        LogLevel::Critical
    }
}

/// The whole demo around `auth`, with [`config`].
pub fn app(auth: Auth) -> Rocket<Build> {
    let routes = routes![
        register,
        login,
        token,
        token_mfa,
        token_refresh,
        token_revoke,
        jwks,
        logout,
        me,
        change_password,
        list_sessions,
        revoke_session,
        revoke_others,
        login_totp,
        login_recovery,
        totp_enroll,
        regenerate_recovery_codes,
        totp_confirm,
        totp_disable,
        change_email,
        home,
        stylesheet,
        openapi,
        login_page,
        login_form,
        login_mfa_page,
        login_mfa_form,
        register_page,
        register_form,
        logout_form,
        account_page,
        account_password,
        account_revoke_others,
        account_revoke,
        account_reauth,
        account_mfa_enroll,
        account_mfa_confirm,
        account_mfa_disable,
        account_recovery_codes,
        account_email,
        forgot_password,
        reset_password,
        verify_email,
        forgot_page,
        forgot_form,
        reset_page,
        reset_form,
        verify_page,
        verify_form,
        request_magic_link,
        finish_magic_link,
        magic_page,
        magic_form,
        magic_request_form,
        passkeys_script,
        passkey_register_start,
        passkey_register_finish,
        list_passkeys,
        rename_passkey,
        remove_passkey,
        passkey_sign_in_start,
        passkey_sign_in_finish,
        account_passkey_rename,
        account_passkey_remove,
    ];
    let wrong_methods = method_not_allowed_routes(&routes);
    rocket::custom(config())
        .mount("/", routes)
        .mount("/", wrong_methods)
        .register("/", catchers![not_found, any_error])
        .attach(AuthFairing::new(auth))
}

/// Rocket has no 405: for every path of `routes`, a route per method it
/// does not serve answers JSON 405. They get the default rank of their
/// path, so (as in axum) a static path with the wrong method is a 405 even
/// where a dynamic path would take that method.
fn method_not_allowed_routes(routes: &[Route]) -> Vec<Route> {
    const METHODS: [Method; 8] = [
        Method::Get,
        Method::Put,
        Method::Post,
        Method::Delete,
        Method::Options,
        Method::Trace,
        Method::Connect,
        Method::Patch,
    ];
    let paths: BTreeSet<&str> = routes.iter().map(|r| r.uri.path()).collect();
    let mut extra = Vec::new();
    for path in paths {
        for method in METHODS {
            let served = routes
                .iter()
                .any(|r| r.uri.path() == path && r.method == method);
            if !served {
                extra.push(Route::new(method, path, MethodNotAllowed));
            }
        }
    }
    extra
}

#[derive(Debug, Clone, Copy)]
struct MethodNotAllowed;

#[rocket::async_trait]
impl Handler for MethodNotAllowed {
    async fn handle<'r>(&self, request: &'r Request<'_>, _data: Data<'r>) -> route::Outcome<'r> {
        route::Outcome::from(request, reply(h::method_not_allowed()))
    }
}

#[catch(404)]
fn not_found() -> ReplyResponder {
    reply(h::not_found())
}

/// Every other error Rocket answers itself is JSON too.
#[catch(default)]
fn any_error(status: Status, _request: &Request<'_>) -> ReplyResponder {
    reply(auth_core::web::Reply::json(
        status.code,
        error_json(status.reason_lossy()),
    ))
}

/// A JSON body, or the status Rocket's `Json` refused it with (415 without
/// a JSON content type, as in axum).
struct JsonBody<T>(Body<T>);

#[rocket::async_trait]
impl<'r, T: DeserializeOwned + Send> FromData<'r> for JsonBody<T> {
    type Error = std::convert::Infallible;

    async fn from_data(request: &'r Request<'_>, data: Data<'r>) -> data::Outcome<'r, Self> {
        let is_json = request.content_type().is_some_and(|ct| {
            let sub = ct.sub().as_str();
            ct.top() == "application"
                && (sub.eq_ignore_ascii_case("json")
                    || sub
                        .len()
                        .checked_sub(5)
                        .and_then(|at| sub.get(at..))
                        .is_some_and(|end| end.eq_ignore_ascii_case("+json")))
        });
        if !is_json {
            return Outcome::Success(Self(Err(Rejected(415))));
        }
        // Rocket's error carries the raw body: it is dropped here, never
        // logged.
        let body = match Json::<T>::from_data(request, data).await {
            Outcome::Success(Json(body)) => Ok(body),
            Outcome::Error((status, _)) | Outcome::Forward((_, status)) => {
                Err(Rejected(status.code))
            }
        };
        Outcome::Success(Self(body))
    }
}

/// A URL-encoded form body, read into the shared (serde) form types. 415
/// without a form content type, 413 over the limit, 422 when the fields do
/// not fit (duplicates included), as in axum.
struct FormBody<T>(Body<T>);

#[rocket::async_trait]
impl<'r, T: DeserializeOwned + Send> FromData<'r> for FormBody<T> {
    type Error = std::convert::Infallible;

    async fn from_data(request: &'r Request<'_>, data: Data<'r>) -> data::Outcome<'r, Self> {
        if !request.content_type().is_some_and(|ct| ct.is_form()) {
            return Outcome::Success(Self(Err(Rejected(415))));
        }
        let limit = request
            .limits()
            .get("form")
            .unwrap_or(MAX_BODY_BYTES.bytes());
        let body = match data.open(limit).into_string().await {
            Ok(text) if text.is_complete() => parse_form(&text),
            Ok(_) => Err(Rejected(413)),
            Err(_) => Err(Rejected(400)),
        };
        Outcome::Success(Self(body))
    }
}

/// `application/x-www-form-urlencoded` into the shared serde form types
/// (Rocket's `Form` needs its own `FromForm` derive): duplicate or
/// mistyped fields are a 422.
fn parse_form<T: DeserializeOwned>(text: &str) -> Body<T> {
    serde_urlencoded::from_str(text).map_err(|_| Rejected(422))
}

#[post("/api/register", data = "<body>")]
async fn register(auth: AuthSession, body: JsonBody<Credentials>) -> ReplyResponder {
    reply(h::register(&auth, body.0).await)
}

#[post("/api/login", data = "<body>")]
async fn login(auth: AuthSession, body: JsonBody<Credentials>) -> ReplyResponder {
    reply(h::login(&auth, body.0).await)
}

#[post("/api/token", data = "<body>")]
async fn token(auth: AuthSession, body: JsonBody<TokenRequest>) -> ReplyResponder {
    reply(h::token(&auth, body.0).await)
}

#[post("/api/token/mfa", data = "<body>")]
async fn token_mfa(auth: AuthSession, body: JsonBody<TokenMfaRequest>) -> ReplyResponder {
    reply(h::token_mfa(&auth, body.0).await)
}

#[post("/api/token/refresh", data = "<body>")]
async fn token_refresh(auth: AuthSession, body: JsonBody<RefreshRequest>) -> ReplyResponder {
    reply(h::token_refresh(&auth, body.0).await)
}

#[post("/api/token/revoke", data = "<body>")]
async fn token_revoke(auth: AuthSession, body: JsonBody<RefreshRequest>) -> ReplyResponder {
    reply(h::token_revoke(&auth, body.0).await)
}

#[get("/.well-known/jwks.json")]
fn jwks(auth: AuthSession) -> ReplyResponder {
    reply(h::jwks(&auth))
}

#[post("/api/logout")]
async fn logout(auth: AuthSession) -> ReplyResponder {
    reply(h::logout(&auth).await)
}

/// `CurrentUser` alone protects a route: it refuses as `RequireLogin` does.
#[get("/api/me")]
async fn me(user: CurrentUser<User>, auth: AuthSession) -> ReplyResponder {
    reply(h::me(&auth, &user).await)
}

#[post("/api/password", data = "<body>")]
async fn change_password(
    _login: RequireLogin,
    auth: AuthSession,
    body: JsonBody<ChangePassword>,
) -> ReplyResponder {
    reply(h::change_password(&auth, body.0).await)
}

#[get("/api/sessions")]
async fn list_sessions(_login: RequireLogin, auth: AuthSession) -> ReplyResponder {
    reply(h::list_sessions(&auth).await)
}

#[delete("/api/sessions/<id>")]
async fn revoke_session(_login: RequireLogin, auth: AuthSession, id: String) -> ReplyResponder {
    reply(h::revoke_session(&auth, &id).await)
}

#[post("/api/sessions/revoke-others")]
async fn revoke_others(_login: RequireLogin, auth: AuthSession) -> ReplyResponder {
    reply(h::revoke_others(&auth).await)
}

#[get("/static/app.css")]
fn stylesheet() -> ReplyResponder {
    reply(h::stylesheet())
}

#[get("/api/openapi.json")]
fn openapi() -> ReplyResponder {
    reply(h::openapi())
}

#[get("/")]
async fn home(auth: AuthSession) -> ReplyResponder {
    reply(h::home(&auth).await)
}

/// A malformed `next` is simply absent.
///
/// Rank 1, as every page that takes a query string: Rocket tries the
/// routes of a method in rank order, and by default a route with a query
/// ranks ahead of every static one (-10 against -9), so each `GET` of the
/// API would be matched against these pages first. Their paths collide
/// with no other route's, so the rank changes no answer.
#[get("/login?<next>", rank = 1)]
async fn login_page(auth: AuthSession, next: Option<String>) -> ReplyResponder {
    reply(h::login_page(&auth, next.as_deref()).await)
}

#[post("/login", data = "<form>")]
async fn login_form(auth: AuthSession, form: FormBody<h::CredentialsForm>) -> ReplyResponder {
    reply(h::login_form(&auth, form.0).await)
}

#[get("/register")]
async fn register_page(auth: AuthSession) -> ReplyResponder {
    reply(h::register_page(&auth).await)
}

#[post("/register", data = "<form>")]
async fn register_form(auth: AuthSession, form: FormBody<h::CredentialsForm>) -> ReplyResponder {
    reply(h::register_form(&auth, form.0).await)
}

#[post("/logout", data = "<form>")]
async fn logout_form(auth: AuthSession, form: FormBody<h::TokenForm>) -> ReplyResponder {
    reply(h::logout_form(&auth, form.0).await)
}

#[get("/account")]
async fn account_page(_login: RequireLogin, auth: AuthSession) -> ReplyResponder {
    reply(h::account_page(&auth).await)
}

#[post("/account/password", data = "<form>")]
async fn account_password(
    _login: RequireLogin,
    auth: AuthSession,
    form: FormBody<h::PasswordForm>,
) -> ReplyResponder {
    reply(h::account_password(&auth, form.0).await)
}

#[post("/account/revoke-others", data = "<form>")]
async fn account_revoke_others(
    _login: RequireLogin,
    auth: AuthSession,
    form: FormBody<h::TokenForm>,
) -> ReplyResponder {
    reply(h::account_revoke_others(&auth, form.0).await)
}

#[post("/api/login/totp", data = "<body>")]
async fn login_totp(auth: AuthSession, body: JsonBody<CodeBody>) -> ReplyResponder {
    reply(h::login_totp(&auth, body.0).await)
}

#[post("/api/login/recovery", data = "<body>")]
async fn login_recovery(auth: AuthSession, body: JsonBody<CodeBody>) -> ReplyResponder {
    reply(h::login_recovery(&auth, body.0).await)
}

// Changes of factors take their proof (the password, and a code once a
// factor is on) with the request: a login is all the guard needs; new
// recovery codes also a session that proved the second factor.
#[post("/api/mfa/totp/enroll", data = "<body>")]
async fn totp_enroll(
    _login: RequireLogin,
    auth: AuthSession,
    body: JsonBody<EnrollBody>,
) -> ReplyResponder {
    reply(h::totp_enroll(&auth, body.0).await)
}

#[post("/api/mfa/recovery-codes", data = "<body>")]
async fn regenerate_recovery_codes(
    _mfa: RequireMfa,
    auth: AuthSession,
    body: JsonBody<ProofBody>,
) -> ReplyResponder {
    reply(h::regenerate_recovery_codes(&auth, body.0).await)
}

#[post("/api/mfa/totp/confirm", data = "<body>")]
async fn totp_confirm(
    _login: RequireLogin,
    auth: AuthSession,
    body: JsonBody<CodeBody>,
) -> ReplyResponder {
    reply(h::totp_confirm(&auth, body.0).await)
}

#[delete("/api/mfa/totp", data = "<body>")]
async fn totp_disable(
    _login: RequireLogin,
    auth: AuthSession,
    body: JsonBody<ProofBody>,
) -> ReplyResponder {
    reply(h::totp_disable(&auth, body.0).await)
}

/// A malformed `next` is simply absent.
#[get("/login/mfa?<next>", rank = 1)]
async fn login_mfa_page(auth: AuthSession, next: Option<String>) -> ReplyResponder {
    reply(h::login_mfa_page(&auth, next.as_deref()).await)
}

#[post("/login/mfa", data = "<form>")]
async fn login_mfa_form(auth: AuthSession, form: FormBody<h::CodeForm>) -> ReplyResponder {
    reply(h::login_mfa_form(&auth, form.0).await)
}

#[post("/account/sessions/revoke", data = "<form>")]
async fn account_revoke(
    _login: RequireLogin,
    auth: AuthSession,
    form: FormBody<h::RevokeForm>,
) -> ReplyResponder {
    reply(h::account_revoke(&auth, form.0).await)
}

#[post("/account/reauth", data = "<form>")]
async fn account_reauth(
    _login: RequireLogin,
    auth: AuthSession,
    form: FormBody<h::ReauthForm>,
) -> ReplyResponder {
    reply(h::account_reauth(&auth, form.0).await)
}

#[post("/account/mfa/enroll", data = "<form>")]
async fn account_mfa_enroll(
    _login: RequireLogin,
    auth: AuthSession,
    form: FormBody<h::ReauthForm>,
) -> ReplyResponder {
    reply(h::account_mfa_enroll(&auth, form.0).await)
}

#[post("/account/mfa/confirm", data = "<form>")]
async fn account_mfa_confirm(
    _login: RequireLogin,
    auth: AuthSession,
    form: FormBody<h::CodeForm>,
) -> ReplyResponder {
    reply(h::account_mfa_confirm(&auth, form.0).await)
}

#[post("/account/mfa/disable", data = "<form>")]
async fn account_mfa_disable(
    _login: RequireLogin,
    auth: AuthSession,
    form: FormBody<h::ReauthForm>,
) -> ReplyResponder {
    reply(h::account_mfa_disable(&auth, form.0).await)
}

#[post("/account/mfa/recovery-codes", data = "<form>")]
async fn account_recovery_codes(
    _login: RequireLogin,
    auth: AuthSession,
    form: FormBody<h::ReauthForm>,
) -> ReplyResponder {
    reply(h::account_recovery_codes(&auth, form.0).await)
}

#[post("/api/password/forgot", data = "<body>")]
async fn forgot_password(auth: AuthSession, body: JsonBody<ForgotBody>) -> ReplyResponder {
    reply(h::forgot_password(&auth, body.0).await)
}

#[post("/api/password/reset", data = "<body>")]
async fn reset_password(auth: AuthSession, body: JsonBody<ResetBody>) -> ReplyResponder {
    reply(h::reset_password(&auth, body.0).await)
}

#[post("/api/email/verify", data = "<body>")]
async fn verify_email(auth: AuthSession, body: JsonBody<VerifyBody>) -> ReplyResponder {
    reply(h::verify_email(&auth, body.0).await)
}

#[get("/forgot")]
async fn forgot_page(auth: AuthSession) -> ReplyResponder {
    reply(h::forgot_page(&auth).await)
}

#[post("/forgot", data = "<form>")]
async fn forgot_form(auth: AuthSession, form: FormBody<h::LinkForm>) -> ReplyResponder {
    reply(h::forgot_form(&auth, form.0).await)
}

/// A malformed `token` is simply absent (the form then fails to verify).
#[get("/reset?<token>", rank = 1)]
async fn reset_page(auth: AuthSession, token: Option<String>) -> ReplyResponder {
    reply(h::reset_page(&auth, token.as_deref()).await)
}

#[post("/reset", data = "<form>")]
async fn reset_form(auth: AuthSession, form: FormBody<h::LinkForm>) -> ReplyResponder {
    reply(h::reset_form(&auth, form.0).await)
}

#[get("/verify-email?<token>", rank = 1)]
async fn verify_page(auth: AuthSession, token: Option<String>) -> ReplyResponder {
    reply(h::verify_page(&auth, token.as_deref()).await)
}

#[post("/verify-email", data = "<form>")]
async fn verify_form(auth: AuthSession, form: FormBody<h::LinkForm>) -> ReplyResponder {
    reply(h::verify_form(&auth, form.0).await)
}

#[post("/api/login/magic", data = "<body>")]
async fn request_magic_link(auth: AuthSession, body: JsonBody<MagicBody>) -> ReplyResponder {
    reply(h::request_magic_link(&auth, body.0).await)
}

#[post("/api/login/magic/finish", data = "<body>")]
async fn finish_magic_link(auth: AuthSession, body: JsonBody<MagicFinishBody>) -> ReplyResponder {
    reply(h::finish_magic_link(&auth, body.0).await)
}

#[get("/login/magic?<token>", rank = 1)]
async fn magic_page(auth: AuthSession, token: Option<String>) -> ReplyResponder {
    reply(h::magic_page(&auth, token.as_deref()).await)
}

#[post("/login/magic", data = "<form>")]
async fn magic_form(auth: AuthSession, form: FormBody<h::LinkForm>) -> ReplyResponder {
    reply(h::magic_form(&auth, form.0).await)
}

#[post("/login/magic/request", data = "<form>")]
async fn magic_request_form(auth: AuthSession, form: FormBody<h::LinkForm>) -> ReplyResponder {
    reply(h::magic_request_form(&auth, form.0).await)
}

#[post("/api/email", data = "<body>")]
async fn change_email(
    _login: RequireLogin,
    auth: AuthSession,
    body: JsonBody<EmailChangeBody>,
) -> ReplyResponder {
    reply(h::change_email(&auth, body.0).await)
}

#[post("/account/email", data = "<form>")]
async fn account_email(
    _login: RequireLogin,
    auth: AuthSession,
    form: FormBody<h::EmailForm>,
) -> ReplyResponder {
    reply(h::account_email(&auth, form.0).await)
}

#[get("/static/passkeys.js")]
fn passkeys_script() -> ReplyResponder {
    reply(h::passkeys_script())
}

// Passkeys: adding and removing one take the same proof as the other
// factor changes.
#[post("/api/passkeys/register/start", data = "<body>")]
async fn passkey_register_start(
    _login: RequireLogin,
    auth: AuthSession,
    body: JsonBody<EnrollBody>,
) -> ReplyResponder {
    reply(h::passkey_register_start(&auth, body.0).await)
}

#[post("/api/passkeys/register/finish", data = "<body>")]
async fn passkey_register_finish(
    _login: RequireLogin,
    auth: AuthSession,
    body: JsonBody<PasskeyFinishBody>,
) -> ReplyResponder {
    reply(h::passkey_register_finish(&auth, body.0).await)
}

#[get("/api/passkeys")]
async fn list_passkeys(_login: RequireLogin, auth: AuthSession) -> ReplyResponder {
    reply(h::list_passkeys(&auth).await)
}

#[patch("/api/passkeys/<id>", data = "<body>")]
async fn rename_passkey(
    _login: RequireLogin,
    auth: AuthSession,
    id: String,
    body: JsonBody<PasskeyRenameBody>,
) -> ReplyResponder {
    reply(h::rename_passkey(&auth, &id, body.0).await)
}

#[delete("/api/passkeys/<id>", data = "<body>")]
async fn remove_passkey(
    _login: RequireLogin,
    auth: AuthSession,
    id: String,
    body: JsonBody<EnrollBody>,
) -> ReplyResponder {
    reply(h::remove_passkey(&auth, &id, body.0).await)
}

#[post("/api/login/passkey/start", data = "<body>")]
async fn passkey_sign_in_start(
    auth: AuthSession,
    body: JsonBody<PasskeySignInStartBody>,
) -> ReplyResponder {
    reply(h::passkey_sign_in_start(&auth, body.0).await)
}

#[post("/api/login/passkey/finish", data = "<body>")]
async fn passkey_sign_in_finish(
    auth: AuthSession,
    body: JsonBody<PasskeyAssertion>,
) -> ReplyResponder {
    reply(h::passkey_sign_in_finish(&auth, body.0).await)
}

#[post("/account/passkeys/rename", data = "<form>")]
async fn account_passkey_rename(
    _login: RequireLogin,
    auth: AuthSession,
    form: FormBody<h::PasskeyRenameForm>,
) -> ReplyResponder {
    reply(h::account_passkey_rename(&auth, form.0).await)
}

#[post("/account/passkeys/remove", data = "<form>")]
async fn account_passkey_remove(
    _login: RequireLogin,
    auth: AuthSession,
    form: FormBody<h::PasskeyRemoveForm>,
) -> ReplyResponder {
    reply(h::account_passkey_remove(&auth, form.0).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rocket's request log (URLs with link tokens, and at debug every
    /// header) needs the explicit insecure setting.
    #[test]
    fn a_log_that_would_show_tokens_needs_the_insecure_setting() {
        for asked in [None, Some("critical"), Some("nonsense")] {
            assert_eq!(log_level(asked, false), LogLevel::Critical, "{asked:?}");
        }
        assert_eq!(log_level(Some("off"), false), LogLevel::Off);
        for asked in ["normal", "debug"] {
            assert_eq!(log_level(Some(asked), false), LogLevel::Critical, "{asked}");
        }
        assert_eq!(log_level(Some("normal"), true), LogLevel::Normal);
        assert_eq!(log_level(Some("debug"), true), LogLevel::Debug);
    }
}
