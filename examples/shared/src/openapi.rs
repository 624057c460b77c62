//! The demo's OpenAPI 3.1 document: the whole JSON API of the repository's
//! `docs/demo-api.md`, token routes and key set included, served as
//! `GET /api/openapi.json` by every demo.
//!
//! The handlers are framework code, so the operations are described on
//! documentation-only functions (`#[utoipa::path]` in the private `doc`
//! module); the request and answer bodies are the shared types of this
//! crate (`ToSchema`), the error bodies are those of
//! [`auth_core::web::error_body`]. A route that takes a session accepts
//! the `__Host-session` cookie or an access token
//! (`Authorization: Bearer`).

use std::sync::LazyLock;

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The name of the session-cookie security scheme.
pub const SESSION_COOKIE: &str = "session_cookie";
/// The name of the bearer-token (JWT) security scheme.
pub const BEARER_JWT: &str = "bearer_jwt";

/// The document (see the [module](self)).
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Auth Toolkit Demo API",
        description = "The JSON API every demo (axum, actix-web, Rocket) serves alike. \
            Bodies are JSON; errors are `{\"error\": \"...\"}` (plus `reason` for a \
            password-policy refusal). A `Host` outside the server's allow-list gets \
            400; unsafe methods from a browser on another site get 403; bodies over \
            16 KiB get 413. Any route may answer 503 with \
            `Retry-After` while a store the server needs (its database, Redis) is \
            unavailable."
    ),
    paths(
        doc::register,
        doc::change_email,
        doc::verify_email,
        doc::forgot_password,
        doc::reset_password,
        doc::login,
        doc::login_totp,
        doc::login_recovery,
        doc::request_magic_link,
        doc::finish_magic_link,
        doc::logout,
        doc::me,
        doc::change_password,
        doc::list_sessions,
        doc::revoke_session,
        doc::revoke_others,
        doc::totp_enroll,
        doc::totp_confirm,
        doc::totp_disable,
        doc::regenerate_recovery_codes,
        doc::passkey_register_start,
        doc::passkey_register_finish,
        doc::list_passkeys,
        doc::rename_passkey,
        doc::remove_passkey,
        doc::passkey_sign_in_start,
        doc::passkey_sign_in_finish,
        doc::token,
        doc::token_mfa,
        doc::token_refresh,
        doc::token_revoke,
        doc::jwks,
        doc::openapi_json,
    ),
    components(
        schemas(doc::ErrorBody),
        responses(
            doc::NotLoggedIn,
            doc::CrossOrigin,
            doc::TooLarge,
            doc::BodyRejected,
            doc::Throttled,
            doc::Busy,
        )
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "account", description = "Registration, the account and its email address"),
        (name = "login", description = "Logging in and out with a session cookie"),
        (name = "recovery", description = "Password reset by mail"),
        (name = "sessions", description = "The user's sessions"),
        (name = "mfa", description = "The second factor: TOTP and recovery codes"),
        (name = "passkeys", description = "Passkeys (WebAuthn): adding, listing, renaming and removing them; signing in with one is under `login`"),
        (name = "tokens", description = "Access and refresh tokens for API clients"),
        (name = "meta", description = "This document"),
    )
)]
pub struct ApiDoc;

/// Adds the two ways to present a session.
#[derive(Debug)]
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            SESSION_COOKIE,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "__Host-session",
                "The session cookie that `POST /api/login` sets (Secure, HttpOnly, SameSite=Lax)",
            ))),
        );
        components.add_security_scheme(
            BEARER_JWT,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An access token from `POST /api/token`, verified with the keys of \
                         `GET /.well-known/jwks.json`",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document as compact JSON, built once: what `GET /api/openapi.json`
/// serves.
pub fn json() -> &'static str {
    static JSON: LazyLock<String> = LazyLock::new(|| {
        serde_json::to_string(&ApiDoc::openapi())
            .unwrap_or_else(|_| unreachable!("an OpenAPI document is plain JSON"))
    });
    &JSON
}

/// Documentation only: the operations and the schemas that no handler
/// type carries (the core's answers, the error body). Nothing here runs.
#[allow(dead_code, reason = "these only describe the API to the derives")]
mod doc {
    use utoipa::{ToResponse, ToSchema};

    use crate::{
        ChangePassword, CodeBody, Credentials, EmailChangeBody, EnrollBody, ForgotBody, Jwks,
        LoginAnswer, MagicBody, MagicFinishBody, Me, PasskeyAssertion, PasskeyEntry,
        PasskeyFinishBody, PasskeyRegistered, PasskeyRenameBody, PasskeySignInStartBody, ProofBody,
        RefreshRequest, Registered, ResetBody, SessionEntry, TokenAnswer, TokenMfaRequest,
        TokenOutcome, TokenRequest, VerifyBody,
    };

    /// An error (`auth_core::web::error_body`).
    #[derive(ToSchema)]
    #[schema(example = json!({"error": "invalid credentials"}))]
    pub(super) struct ErrorBody {
        /// What went wrong, for people.
        error: String,
        /// With a password-policy refusal only: the rule (`too_short`,
        /// `common_password`, `context_word`, ...).
        #[schema(nullable = false)]
        reason: Option<String>,
    }

    /// An empty object: `{}`.
    #[derive(ToSchema)]
    struct Empty {}

    /// `POST /api/mfa/totp/enroll` answer (`auth_core::mfa::Enrollment`).
    #[derive(ToSchema)]
    struct TotpEnrollment {
        /// The TOTP secret, base32, for entering by hand.
        secret: String,
        /// The `otpauth://` URI the QR code holds.
        otpauth_uri: String,
        /// The QR code, an SVG document.
        qr_svg: String,
    }

    /// A new set of recovery codes (`auth_core::mfa::RecoveryCodes`),
    /// shown once.
    #[derive(ToSchema)]
    struct RecoveryCodes {
        /// Each works once in place of a TOTP code.
        recovery_codes: Vec<String>,
    }

    /// `POST /api/passkeys/register/start` answer: the options for
    /// `navigator.credentials.create` (binary members base64url).
    #[derive(ToSchema)]
    #[allow(non_snake_case, reason = "the member's name in JSON")]
    struct PasskeyCreationOptions {
        /// `PublicKeyCredentialCreationOptions` (`rp`, `user`, `challenge`,
        /// `pubKeyCredParams`, `excludeCredentials`, `authenticatorSelection`
        /// with `residentKey: "required"` and `userVerification:
        /// "required"`, ...).
        #[schema(value_type = Object)]
        publicKey: serde_json::Value,
    }

    /// `POST /api/login/passkey/start` answer: the options for
    /// `navigator.credentials.get` (binary members base64url).
    #[derive(ToSchema)]
    #[allow(non_snake_case, reason = "the member's name in JSON")]
    struct PasskeyRequestOptions {
        /// `PublicKeyCredentialRequestOptions` (`challenge`, `rpId`,
        /// `allowCredentials`: empty for a passwordless sign-in, the
        /// user's passkeys for the second step; `userVerification`, ...).
        #[schema(value_type = Object)]
        publicKey: serde_json::Value,
    }

    /// No session, or an expired one.
    #[derive(ToResponse)]
    #[response(description = "Not logged in (no session, or an expired or revoked one)")]
    pub(super) struct NotLoggedIn(ErrorBody);

    /// Cross-site request refused.
    #[derive(ToResponse)]
    #[response(
        description = "A browser request from another site (`Sec-Fetch-Site: cross-site` or a foreign `Origin`)"
    )]
    pub(super) struct CrossOrigin(ErrorBody);

    /// Body over the limit.
    #[derive(ToResponse)]
    #[response(description = "The body is over 16 KiB")]
    pub(super) struct TooLarge(ErrorBody);

    /// Body the framework could not read.
    #[derive(ToResponse)]
    #[response(
        description = "The body is not JSON of the expected shape (the status depends on the framework: 400, 415 or 422)"
    )]
    pub(super) struct BodyRejected(ErrorBody);

    /// Too many attempts.
    #[derive(ToResponse)]
    #[response(
        description = "Too many attempts (per client IP, per account or per second factor): retry after `Retry-After` seconds",
        headers(("Retry-After" = u64, description = "Seconds to wait"))
    )]
    pub(super) struct Throttled(ErrorBody);

    /// Password hashing saturated, or a store unavailable.
    #[derive(ToResponse)]
    #[response(
        description = "The password service is busy, or a store the server needs (its \
            database, Redis) is unavailable: retry after `Retry-After` seconds",
        headers(("Retry-After" = u64, description = "Seconds to wait"))
    )]
    pub(super) struct Busy(ErrorBody);

    /// Register an account.
    ///
    /// With an `email`, a link to verify it is mailed (until verified it
    /// receives nothing else). Registration does not log in.
    #[utoipa::path(
        post, path = "/api/register", tag = "account",
        request_body = Credentials,
        responses(
            (status = 201, description = "Registered", body = Registered),
            (status = 400, description = "The password policy refuses the password (`reason` names the rule), the name is not a valid login name, the email address is invalid (no account is made), or the body is malformed", body = ErrorBody,
                example = json!({"error": "password refused by policy", "reason": "too_short"})),
            (status = 403, response = CrossOrigin),
            (status = 409, description = "The name is taken (whatever its case)", body = ErrorBody),
            (status = 413, response = TooLarge),
            (status = 415, response = BodyRejected),
            (status = 422, response = BodyRejected),
            (status = 429, response = Throttled),
            (status = 503, response = Busy),
        )
    )]
    pub(super) fn register() {}

    /// Change the email address.
    ///
    /// A link goes to the new address, a notice to the old verified one,
    /// which stays in effect until the new one is verified. The proof (the
    /// password, and a code once a second factor is on) is a
    /// re-authentication: the session gets a new ID.
    #[utoipa::path(
        post, path = "/api/email", tag = "account",
        request_body = EmailChangeBody,
        security(("session_cookie" = []), ("bearer_jwt" = [])),
        responses(
            (status = 202, description = "The verification link is mailed", body = Empty,
                headers(("Set-Cookie" = String, description = "The session's new ID"))),
            (status = 400, description = "Invalid address or malformed body", body = ErrorBody),
            (status = 401, description = "Not logged in, or wrong password or code (throttled like a login)", body = ErrorBody),
            (status = 403, description = "A code is required (the account has a second factor), or a cross-site request", body = ErrorBody),
            (status = 413, response = TooLarge),
            (status = 415, response = BodyRejected),
            (status = 422, response = BodyRejected),
            (status = 429, response = Throttled),
            (status = 503, response = Busy),
        )
    )]
    pub(super) fn change_email() {}

    /// Verify an email address with the mailed token.
    #[utoipa::path(
        post, path = "/api/email/verify", tag = "account",
        request_body = VerifyBody,
        responses(
            (status = 204, description = "The address is verified"),
            (status = 400, description = "A malformed, unknown, used or expired token (24 hours), one sent to an address the account no longer has, or a malformed body", body = ErrorBody,
                example = json!({"error": "invalid or expired link"})),
            (status = 403, response = CrossOrigin),
            (status = 413, response = TooLarge),
            (status = 415, response = BodyRejected),
            (status = 422, response = BodyRejected),
            (status = 429, response = Throttled),
        )
    )]
    pub(super) fn verify_email() {}

    /// Ask for a password-reset link.
    ///
    /// The same answer, with the same timing, whether or not the account
    /// exists; the mail goes only to a verified address.
    #[utoipa::path(
        post, path = "/api/password/forgot", tag = "recovery",
        request_body = ForgotBody,
        responses(
            (status = 202, description = "Accepted (whether or not a mail goes out)", body = Empty),
            (status = 400, description = "Malformed body", body = ErrorBody),
            (status = 403, response = CrossOrigin),
            (status = 413, response = TooLarge),
            (status = 415, response = BodyRejected),
            (status = 422, response = BodyRejected),
            (status = 429, response = Throttled),
        )
    )]
    pub(super) fn forgot_password() {}

    /// Set a new password with the mailed token.
    ///
    /// Every session of the account ends and its password lock is lifted
    /// (not the second factor's); it does not log in.
    #[utoipa::path(
        post, path = "/api/password/reset", tag = "recovery",
        request_body = ResetBody,
        responses(
            (status = 204, description = "The password is set"),
            (status = 400, description = "Invalid or expired link (malformed, unknown, used, older than 30 minutes, or the password changed since), the policy refuses the password (the link stays usable), or a malformed body", body = ErrorBody),
            (status = 403, response = CrossOrigin),
            (status = 413, response = TooLarge),
            (status = 415, response = BodyRejected),
            (status = 422, response = BodyRejected),
            (status = 429, response = Throttled),
            (status = 503, response = Busy),
        )
    )]
    pub(super) fn reset_password() {}

    /// Log in with a password.
    ///
    /// Sets the session cookie; with a second factor enrolled, a pending
    /// session that `POST /api/login/totp` or `/api/login/recovery`
    /// completes.
    #[utoipa::path(
        post, path = "/api/login", tag = "login",
        request_body = Credentials,
        responses(
            (status = 200, description = "Logged in, or a second factor must follow (`mfa_required`)", body = LoginAnswer,
                headers(("Set-Cookie" = String, description = "`__Host-session` (and `__Host-session-device`); with `remember`, a `Max-Age` once the sign-in is complete"))),
            (status = 400, description = "Malformed body, or a bearer token (a login needs a browser session)", body = ErrorBody),
            (status = 401, description = "Invalid credentials: the same for an unknown user, a wrong password and a disabled user", body = ErrorBody),
            (status = 403, response = CrossOrigin),
            (status = 413, response = TooLarge),
            (status = 415, response = BodyRejected),
            (status = 422, response = BodyRejected),
            (status = 429, response = Throttled),
            (status = 503, response = Busy),
        )
    )]
    pub(super) fn login() {}

    /// Second step of a login: a TOTP code.
    #[utoipa::path(
        post, path = "/api/login/totp", tag = "login",
        request_body = CodeBody,
        security(("session_cookie" = [])),
        responses(
            (status = 200, description = "Logged in", body = LoginAnswer,
                headers(("Set-Cookie" = String, description = "The session's new ID"))),
            (status = 400, description = "Malformed body", body = ErrorBody),
            (status = 401, description = "Wrong code, or no pending login", body = ErrorBody),
            (status = 403, response = CrossOrigin),
            (status = 413, response = TooLarge),
            (status = 415, response = BodyRejected),
            (status = 422, response = BodyRejected),
            (status = 429, response = Throttled),
        )
    )]
    pub(super) fn login_totp() {}

    /// Second step of a login: a recovery code (each works once).
    #[utoipa::path(
        post, path = "/api/login/recovery", tag = "login",
        request_body = CodeBody,
        security(("session_cookie" = [])),
        responses(
            (status = 200, description = "Logged in", body = LoginAnswer,
                headers(("Set-Cookie" = String, description = "The session's new ID"))),
            (status = 400, description = "Malformed body", body = ErrorBody),
            (status = 401, description = "Wrong or used code, or no pending login", body = ErrorBody),
            (status = 403, response = CrossOrigin),
            (status = 413, response = TooLarge),
            (status = 415, response = BodyRejected),
            (status = 422, response = BodyRejected),
            (status = 429, response = Throttled),
        )
    )]
    pub(super) fn login_recovery() {}

    /// Ask for a sign-in link.
    ///
    /// As `POST /api/password/forgot`: the same answer for every login; a
    /// link (15 minutes, once) goes to the verified address.
    #[utoipa::path(
        post, path = "/api/login/magic", tag = "login",
        request_body = MagicBody,
        responses(
            (status = 202, description = "Accepted (whether or not a mail goes out)", body = Empty),
            (status = 400, description = "Malformed body", body = ErrorBody),
            (status = 403, response = CrossOrigin),
            (status = 413, response = TooLarge),
            (status = 415, response = BodyRejected),
            (status = 422, response = BodyRejected),
            (status = 429, response = Throttled),
        )
    )]
    pub(super) fn request_magic_link() {}

    /// Sign in with the mailed link's token.
    ///
    /// The answer of `POST /api/login`: the link is one factor, so a second
    /// factor, when set, still follows.
    #[utoipa::path(
        post, path = "/api/login/magic/finish", tag = "login",
        request_body = MagicFinishBody,
        responses(
            (status = 200, description = "Logged in, or a second factor must follow", body = LoginAnswer,
                headers(("Set-Cookie" = String, description = "`__Host-session`; with `remember`, a `Max-Age` once the sign-in is complete"))),
            (status = 400, description = "Invalid or expired link (also after a password change), a malformed body, or a bearer token (needs a browser session)", body = ErrorBody),
            (status = 403, response = CrossOrigin),
            (status = 409, description = "This browser is signed in (or half-way through signing in) to another account: log out first (the link stays usable)", body = ErrorBody),
            (status = 413, response = TooLarge),
            (status = 415, response = BodyRejected),
            (status = 422, response = BodyRejected),
            (status = 429, response = Throttled),
        )
    )]
    pub(super) fn finish_magic_link() {}

    /// Log out: the session is destroyed server-side.
    #[utoipa::path(
        post, path = "/api/logout", tag = "login",
        security((), ("session_cookie" = []), ("bearer_jwt" = [])),
        responses(
            (status = 204, description = "Logged out (also without a session); with a bearer token, its sign-in (refresh token and access tokens) ends",
                headers(("Set-Cookie" = String, description = "Removes `__Host-session`"))),
            (status = 401, description = "A bearer request whose token is refused (malformed, expired, revoked)", body = ErrorBody,
                headers(("WWW-Authenticate" = String, description = "`Bearer error=\"invalid_token\"`"))),
            (status = 403, response = CrossOrigin),
            (status = 503, response = Busy),
        )
    )]
    pub(super) fn logout() {}

    /// Who am I.
    #[utoipa::path(
        get, path = "/api/me", tag = "account",
        security(("session_cookie" = []), ("bearer_jwt" = [])),
        responses(
            (status = 200, description = "The logged-in user", body = Me),
            (status = 401, response = NotLoggedIn),
            (status = 503, response = Busy),
        )
    )]
    pub(super) fn me() {}

    /// Change the password.
    ///
    /// Every other session of the user ends; this one gets a new ID.
    #[utoipa::path(
        post, path = "/api/password", tag = "account",
        request_body = ChangePassword,
        security(("session_cookie" = []), ("bearer_jwt" = [])),
        responses(
            (status = 204, description = "Changed",
                headers(("Set-Cookie" = String, description = "The session's new ID"))),
            (status = 400, description = "The policy refuses the new password (`reason` names the rule), or a malformed body", body = ErrorBody),
            (status = 401, description = "Not logged in, or a wrong current password", body = ErrorBody),
            (status = 403, response = CrossOrigin),
            (status = 413, response = TooLarge),
            (status = 415, response = BodyRejected),
            (status = 422, response = BodyRejected),
            (status = 429, response = Throttled),
            (status = 503, response = Busy),
        )
    )]
    pub(super) fn change_password() {}

    /// The user's active sessions.
    ///
    /// `id` is a one-way handle, never the cookie value; times are Unix
    /// milliseconds.
    #[utoipa::path(
        get, path = "/api/sessions", tag = "sessions",
        security(("session_cookie" = []), ("bearer_jwt" = [])),
        responses(
            (status = 200, description = "The sessions", body = Vec<SessionEntry>),
            (status = 401, response = NotLoggedIn),
        )
    )]
    pub(super) fn list_sessions() {}

    /// End one session of the user.
    #[utoipa::path(
        delete, path = "/api/sessions/{id}", tag = "sessions",
        params(("id" = String, Path, description = "A handle from `GET /api/sessions`")),
        security(("session_cookie" = []), ("bearer_jwt" = [])),
        responses(
            (status = 204, description = "Ended (the caller's own session: its cookie is removed too)",
                headers(("Set-Cookie" = String, description = "Removes `__Host-session` when the caller ended its own session"))),
            (status = 401, response = NotLoggedIn),
            (status = 403, response = CrossOrigin),
            (status = 404, description = "No such session of this user", body = ErrorBody),
        )
    )]
    pub(super) fn revoke_session() {}

    /// End every other session of the user.
    #[utoipa::path(
        post, path = "/api/sessions/revoke-others", tag = "sessions",
        security(("session_cookie" = []), ("bearer_jwt" = [])),
        responses(
            (status = 204, description = "Only this session remains, under a new ID (with a bearer token: every sign-in of the user ends, this one included)",
                headers(("Set-Cookie" = String, description = "The session's new ID"))),
            (status = 401, response = NotLoggedIn),
            (status = 403, response = CrossOrigin),
        )
    )]
    pub(super) fn revoke_others() {}

    /// Start setting up TOTP.
    ///
    /// The proof comes with the request (a recent login is not enough): the
    /// password, and a code once the account has a second factor. Not
    /// active until confirmed, from this session, within 15 minutes, with
    /// `POST /api/mfa/totp/confirm`. Needs a browser session (a bearer
    /// token gets 400).
    #[utoipa::path(
        post, path = "/api/mfa/totp/enroll", tag = "mfa",
        request_body = EnrollBody,
        security(("session_cookie" = [])),
        responses(
            (status = 200, description = "The secret to show, pending confirmation", body = TotpEnrollment,
                headers(("Set-Cookie" = String, description = "The session's new ID"))),
            (status = 400, description = "Malformed body or a missing field, or a bearer token", body = ErrorBody),
            (status = 401, description = "Not logged in, or a wrong password or code", body = ErrorBody),
            (status = 403, description = "A code is required, or a cross-site request", body = ErrorBody),
            (status = 409, description = "TOTP is already on", body = ErrorBody),
            (status = 413, response = TooLarge),
            (status = 415, response = BodyRejected),
            (status = 422, response = BodyRejected),
            (status = 429, response = Throttled),
            (status = 503, response = Busy),
        )
    )]
    pub(super) fn totp_enroll() {}

    /// Confirm TOTP with a first code: it is on.
    ///
    /// Every other session of the user ends; the recovery codes are shown
    /// once. In the session that began the enrolment, within 15 minutes.
    #[utoipa::path(
        post, path = "/api/mfa/totp/confirm", tag = "mfa",
        request_body = CodeBody,
        security(("session_cookie" = [])),
        responses(
            (status = 200, description = "TOTP is on", body = RecoveryCodes,
                headers(("Set-Cookie" = String, description = "The session's new ID"))),
            (status = 400, description = "Malformed body, or a bearer token", body = ErrorBody),
            (status = 401, description = "Not logged in, or a wrong code", body = ErrorBody),
            (status = 403, response = CrossOrigin),
            (status = 409, description = "No enrolment is pending for this session (none begun here, or begun over 15 minutes ago: begin again), or TOTP is on already", body = ErrorBody),
            (status = 413, response = TooLarge),
            (status = 415, response = BodyRejected),
            (status = 422, response = BodyRejected),
            (status = 429, response = Throttled),
        )
    )]
    pub(super) fn totp_confirm() {}

    /// Turn TOTP off, with the password and a TOTP or recovery code.
    ///
    /// Every other session of the user ends; this one gets a new ID.
    #[utoipa::path(
        delete, path = "/api/mfa/totp", tag = "mfa",
        request_body = ProofBody,
        security(("session_cookie" = []), ("bearer_jwt" = [])),
        responses(
            (status = 204, description = "TOTP is off",
                headers(("Set-Cookie" = String, description = "The session's new ID"))),
            (status = 400, description = "Malformed body or a missing field", body = ErrorBody),
            (status = 401, description = "Not logged in, or a wrong password or code", body = ErrorBody),
            (status = 403, response = CrossOrigin),
            (status = 409, description = "TOTP is not on", body = ErrorBody),
            (status = 413, response = TooLarge),
            (status = 415, response = BodyRejected),
            (status = 422, response = BodyRejected),
            (status = 429, response = Throttled),
            (status = 503, response = Busy),
        )
    )]
    pub(super) fn totp_disable() {}

    /// A new set of recovery codes, with the password and a TOTP or
    /// recovery code (a recovery code is used up).
    ///
    /// The old set stops working; every other session of the user ends.
    /// Needs a session that proved a second factor.
    #[utoipa::path(
        post, path = "/api/mfa/recovery-codes", tag = "mfa",
        request_body = ProofBody,
        security(("session_cookie" = []), ("bearer_jwt" = [])),
        responses(
            (status = 200, description = "The new codes, shown once", body = RecoveryCodes,
                headers(("Set-Cookie" = String, description = "The session's new ID"))),
            (status = 400, description = "Malformed body or a missing field", body = ErrorBody),
            (status = 401, description = "Not logged in, or a wrong password or code", body = ErrorBody),
            (status = 403, description = "This session did not prove a second factor, a code is required, or a cross-site request", body = ErrorBody),
            (status = 409, description = "The account has no second factor left (TOTP turned off, or its last passkey removed, since this session proved one)", body = ErrorBody),
            (status = 413, response = TooLarge),
            (status = 415, response = BodyRejected),
            (status = 422, response = BodyRejected),
            (status = 429, response = Throttled),
            (status = 503, response = Busy),
        )
    )]
    pub(super) fn regenerate_recovery_codes() {}

    /// Start adding a passkey: the options for `navigator.credentials.create`.
    ///
    /// The proof comes with the request, as for `POST /api/mfa/totp/enroll`:
    /// the password, and a code once the account has a second factor (TOTP
    /// or a passkey). It is a re-authentication: the session gets a new ID.
    /// The options ask for a discoverable credential with user
    /// verification; the user's passkeys are excluded. Answer them within
    /// 5 minutes, from this session, with
    /// `POST /api/passkeys/register/finish`. Needs a browser session (a
    /// bearer token gets 400).
    #[utoipa::path(
        post, path = "/api/passkeys/register/start", tag = "passkeys",
        request_body = EnrollBody,
        security(("session_cookie" = [])),
        responses(
            (status = 200, description = "The creation options", body = PasskeyCreationOptions,
                headers(("Set-Cookie" = String, description = "The session's new ID"))),
            (status = 400, description = "Malformed body or a missing field, or a bearer token", body = ErrorBody),
            (status = 401, description = "Not logged in, or a wrong password or code", body = ErrorBody),
            (status = 403, description = "A code is required, or a cross-site request", body = ErrorBody),
            (status = 409, description = "The account has the most passkeys it may have (25): remove one first; checked before the proof, so no code is spent", body = ErrorBody),
            (status = 413, response = TooLarge),
            (status = 415, response = BodyRejected),
            (status = 422, response = BodyRejected),
            (status = 429, response = Throttled),
            (status = 501, description = "Passkeys are not available on this server", body = ErrorBody),
            (status = 503, response = Busy),
        )
    )]
    pub(super) fn passkey_register_start() {}

    /// Finish adding a passkey with the browser's answer.
    ///
    /// A factor change: every other session of the user ends; this one
    /// gets a new ID. When the passkey is the account's first second
    /// factor, the answer carries its recovery codes (shown once).
    #[utoipa::path(
        post, path = "/api/passkeys/register/finish", tag = "passkeys",
        request_body = PasskeyFinishBody,
        security(("session_cookie" = [])),
        responses(
            (status = 201, description = "Added", body = PasskeyRegistered,
                headers(("Set-Cookie" = String, description = "The session's new ID"))),
            (status = 400, description = "No registration in progress on this session, or it expired (start again); an invalid name; a malformed body; or a bearer token", body = ErrorBody,
                example = json!({"error": "no passkey request in progress, start again"})),
            (status = 401, description = "Not logged in, or the browser's answer was refused", body = ErrorBody),
            (status = 403, response = CrossOrigin),
            (status = 409, description = "This passkey is already registered, or the account reached the most passkeys it may have (25) meanwhile", body = ErrorBody),
            (status = 413, response = TooLarge),
            (status = 415, response = BodyRejected),
            (status = 422, response = BodyRejected),
            (status = 501, description = "Passkeys are not available on this server", body = ErrorBody),
        )
    )]
    pub(super) fn passkey_register_finish() {}

    /// The user's passkeys, oldest first.
    ///
    /// Times are Unix milliseconds; `last_used_at` is `null` for a passkey
    /// never used; `synced` says whether it is backed up.
    #[utoipa::path(
        get, path = "/api/passkeys", tag = "passkeys",
        security(("session_cookie" = []), ("bearer_jwt" = [])),
        responses(
            (status = 200, description = "The passkeys", body = Vec<PasskeyEntry>),
            (status = 401, response = NotLoggedIn),
            (status = 501, description = "Passkeys are not available on this server", body = ErrorBody),
        )
    )]
    pub(super) fn list_passkeys() {}

    /// Rename one of the user's passkeys.
    #[utoipa::path(
        patch, path = "/api/passkeys/{id}", tag = "passkeys",
        params(("id" = String, Path, description = "A passkey's `id` from `GET /api/passkeys`")),
        request_body = PasskeyRenameBody,
        security(("session_cookie" = []), ("bearer_jwt" = [])),
        responses(
            (status = 204, description = "Renamed"),
            (status = 400, description = "An invalid name (over 64 characters, or control characters), or a malformed body", body = ErrorBody),
            (status = 401, response = NotLoggedIn),
            (status = 403, response = CrossOrigin),
            (status = 404, description = "No such passkey of this user", body = ErrorBody),
            (status = 413, response = TooLarge),
            (status = 415, response = BodyRejected),
            (status = 422, response = BodyRejected),
            (status = 501, description = "Passkeys are not available on this server", body = ErrorBody),
        )
    )]
    pub(super) fn rename_passkey() {}

    /// Remove one of the user's passkeys, with the password and a code.
    ///
    /// A factor change: it no longer signs in, every other session of the
    /// user ends and this one gets a new ID; with no second factor left,
    /// the recovery codes go too.
    #[utoipa::path(
        delete, path = "/api/passkeys/{id}", tag = "passkeys",
        params(("id" = String, Path, description = "A passkey's `id` from `GET /api/passkeys`")),
        request_body = EnrollBody,
        security(("session_cookie" = []), ("bearer_jwt" = [])),
        responses(
            (status = 204, description = "Removed",
                headers(("Set-Cookie" = String, description = "The session's new ID"))),
            (status = 400, description = "Malformed body or a missing field", body = ErrorBody),
            (status = 401, description = "Not logged in, or a wrong password or code", body = ErrorBody),
            (status = 403, description = "A code is required, or a cross-site request", body = ErrorBody),
            (status = 404, description = "No such passkey of this user (answered before the proof is checked: no code spent)", body = ErrorBody),
            (status = 413, response = TooLarge),
            (status = 415, response = BodyRejected),
            (status = 422, response = BodyRejected),
            (status = 429, response = Throttled),
            (status = 501, description = "Passkeys are not available on this server", body = ErrorBody),
            (status = 503, response = Busy),
        )
    )]
    pub(super) fn remove_passkey() {}

    /// Start a passkey sign-in: the options for `navigator.credentials.get`.
    ///
    /// On a session waiting for its second factor (after the password), the
    /// second step with one of that user's passkeys. Otherwise a
    /// passwordless sign-in with any passkey of this site (the browser's
    /// list; for its autofill the page adds `mediation: "conditional"` to
    /// the options itself); a visitor
    /// gets a session cookie that holds the challenge. A `username` is
    /// accepted and not used. Answer within 5 minutes with
    /// `POST /api/login/passkey/finish`.
    #[utoipa::path(
        post, path = "/api/login/passkey/start", tag = "login",
        request_body = PasskeySignInStartBody,
        security((), ("session_cookie" = [])),
        responses(
            (status = 200, description = "The request options", body = PasskeyRequestOptions,
                headers(("Set-Cookie" = String, description = "`__Host-session`, for a visitor: the session that holds the challenge"))),
            (status = 400, description = "Malformed body, or a bearer token", body = ErrorBody),
            (status = 401, description = "The pending login expired", body = ErrorBody),
            (status = 403, response = CrossOrigin),
            (status = 409, description = "The second step of a user without a passkey", body = ErrorBody),
            (status = 413, response = TooLarge),
            (status = 415, response = BodyRejected),
            (status = 422, response = BodyRejected),
            (status = 429, response = Throttled),
            (status = 501, description = "Passkeys are not available on this server", body = ErrorBody),
        )
    )]
    pub(super) fn passkey_sign_in_start() {}

    /// Finish a passkey sign-in with the browser's assertion.
    ///
    /// The answer of `POST /api/login`, and the cookie rotation of a
    /// completed login: a passwordless sign-in starts a fresh session
    /// (user verification makes it multi-factor: `require_mfa` passes); the
    /// second step completes the pending login.
    #[utoipa::path(
        post, path = "/api/login/passkey/finish", tag = "login",
        request_body = PasskeyAssertion,
        security((), ("session_cookie" = [])),
        responses(
            (status = 200, description = "Logged in", body = LoginAnswer,
                headers(("Set-Cookie" = String, description = "`__Host-session`, a new ID (and `__Host-session-device`)"))),
            (status = 400, description = "No sign-in in progress on this session, or it expired or was answered (start again); a malformed body; or a bearer token", body = ErrorBody,
                example = json!({"error": "no passkey request in progress, start again"})),
            (status = 401, description = "The passkey was refused: unknown or removed, another user's, a wrong challenge or origin, a bad signature, or a signature counter gone backwards", body = ErrorBody),
            (status = 403, response = CrossOrigin),
            (status = 413, response = TooLarge),
            (status = 415, response = BodyRejected),
            (status = 422, response = BodyRejected),
            (status = 429, response = Throttled),
            (status = 501, description = "Passkeys are not available on this server", body = ErrorBody),
        )
    )]
    pub(super) fn passkey_sign_in_finish() {}

    /// Tokens for an API client, with a password.
    ///
    /// Without a second factor: the tokens. With one: an `mfa_token` for
    /// `POST /api/token/mfa`.
    #[utoipa::path(
        post, path = "/api/token", tag = "tokens",
        request_body = TokenRequest,
        responses(
            (status = 200, description = "The tokens, or a second factor must follow", body = TokenOutcome),
            (status = 400, description = "Malformed body", body = ErrorBody),
            (status = 401, description = "Invalid credentials (the same for every cause)", body = ErrorBody),
            (status = 403, response = CrossOrigin),
            (status = 413, response = TooLarge),
            (status = 415, response = BodyRejected),
            (status = 422, response = BodyRejected),
            (status = 429, response = Throttled),
            (status = 503, response = Busy),
        )
    )]
    pub(super) fn token() {}

    /// Second step of a token login: a TOTP or recovery code.
    #[utoipa::path(
        post, path = "/api/token/mfa", tag = "tokens",
        request_body = TokenMfaRequest,
        responses(
            (status = 200, description = "The tokens", body = TokenAnswer),
            (status = 400, description = "Malformed body", body = ErrorBody),
            (status = 401, description = "Wrong code, or an invalid or expired `mfa_token`", body = ErrorBody),
            (status = 403, response = CrossOrigin),
            (status = 413, response = TooLarge),
            (status = 415, response = BodyRejected),
            (status = 422, response = BodyRejected),
            (status = 429, response = Throttled),
        )
    )]
    pub(super) fn token_mfa() {}

    /// Trade a refresh token for new tokens (the old one is spent).
    #[utoipa::path(
        post, path = "/api/token/refresh", tag = "tokens",
        request_body = RefreshRequest,
        responses(
            (status = 200, description = "New tokens", body = TokenAnswer),
            (status = 400, description = "Malformed body", body = ErrorBody),
            (status = 401, description = "The refresh token is malformed, unknown, spent, revoked or expired, or its user is gone", body = ErrorBody,
                example = json!({"error": "invalid or expired token"})),
            (status = 403, response = CrossOrigin),
            (status = 413, response = TooLarge),
            (status = 415, response = BodyRejected),
            (status = 422, response = BodyRejected),
        )
    )]
    pub(super) fn token_refresh() {}

    /// Revoke a sign-in's tokens (RFC 7009): `refresh_token` may also be an
    /// access token of the sign-in.
    #[utoipa::path(
        post, path = "/api/token/revoke", tag = "tokens",
        request_body = RefreshRequest,
        responses(
            (status = 200, description = "Revoked, or it was not known", body = Empty),
            (status = 400, description = "Malformed body", body = ErrorBody),
            (status = 403, response = CrossOrigin),
            (status = 413, response = TooLarge),
            (status = 415, response = BodyRejected),
            (status = 422, response = BodyRejected),
        )
    )]
    pub(super) fn token_revoke() {}

    /// The public keys that verify access tokens.
    #[utoipa::path(
        get, path = "/.well-known/jwks.json", tag = "tokens",
        responses((status = 200, description = "The key set (RFC 7517)", body = Jwks))
    )]
    pub(super) fn jwks() {}

    /// This document.
    #[utoipa::path(
        get, path = "/api/openapi.json", tag = "meta",
        responses((status = 200, description = "The OpenAPI 3.1 document", body = Object))
    )]
    pub(super) fn openapi_json() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs<'a>(value: &'a serde_json::Value, out: &mut Vec<&'a str>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("$ref", serde_json::Value::String(target)) => out.push(target),
                        _ => refs(value, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn the_document_is_3_1_and_every_reference_resolves() {
        let document: serde_json::Value =
            serde_json::from_str(json()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(document["openapi"], "3.1.0");
        let mut targets = Vec::new();
        refs(&document, &mut targets);
        assert!(!targets.is_empty());
        for target in targets {
            let pointer = target
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("an external reference: {target}"));
            assert!(document.pointer(pointer).is_some(), "{target} is missing");
        }
        let schemes = &document["components"]["securitySchemes"];
        assert_eq!(schemes[SESSION_COOKIE]["in"], "cookie");
        assert_eq!(schemes[SESSION_COOKIE]["name"], "__Host-session");
        assert_eq!(schemes[BEARER_JWT]["scheme"], "bearer");
        assert_eq!(schemes[BEARER_JWT]["bearerFormat"], "JWT");
    }

    #[test]
    fn the_document_is_built_alike_every_time() {
        let again = serde_json::to_string(&ApiDoc::openapi()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(json(), again);
    }

    #[test]
    fn token_bodies_print_no_secret() {
        let answer = crate::TokenAnswer {
            access_token: "eyJaccess".to_owned(),
            token_type: "Bearer",
            expires_in: 900,
            refresh_token: "refresh-secret".to_owned(),
        };
        let mfa = crate::MfaRequiredAnswer {
            mfa_required: true,
            mfa_token: "mfa-secret".to_owned(),
        };
        let printed = format!(
            "{answer:?} {mfa:?} {:?}",
            crate::TokenOutcome::Tokens(crate::TokenAnswer {
                access_token: "eyJother".to_owned(),
                token_type: "Bearer",
                expires_in: 900,
                refresh_token: "refresh-other".to_owned(),
            })
        );
        for secret in ["eyJ", "refresh-", "mfa-secret"] {
            assert!(!printed.contains(secret), "{printed}");
        }
        let request: crate::RefreshRequest =
            serde_json::from_str(r#"{"refresh_token":"refresh-secret"}"#)
                .unwrap_or_else(|e| panic!("{e}"));
        assert!(!format!("{request:?}").contains("secret"));
    }
}
