//! The demo's handlers, written once against the core's per-request
//! [`RequestAuth`] (what every adapter's `AuthSession` dereferences to).
//! Each framework's demo only routes, extracts the typed body with its own
//! extractors, and converts the [`Reply`] with its adapter; so the three
//! demos answer byte for byte alike and the conformance suite tests the
//! adapters, not three copies of the demo.

use auth_core::flow::{AuthError, FactorProof, LoginOutcome};
use auth_core::mfa::normalize_recovery_code;
use auth_core::password::Password;
use auth_core::session::{AuthState, Factor, SessionHandle};
use auth_core::user::User;
use auth_core::web::{Reply, RequestAuth, safe_next, with_next};
use serde::{Deserialize, Serialize};

use crate::{
    ChangePassword, CodeBody, Credentials, EmailChangeBody, EnrollBody, ForgotBody, LoginAnswer,
    MagicBody, MagicFinishBody, Me, PasskeyAssertion, PasskeyEntry, PasskeyFinishBody,
    PasskeyRegistered, PasskeyRenameBody, PasskeySignInStartBody, ProofBody, Registered, ResetBody,
    SessionEntry, VerifyBody, error_json, pages,
};

/// A body the framework could not parse, with the framework's 4xx status
/// (anything else becomes 400).
#[derive(Debug, Clone, Copy)]
pub struct Rejected(pub u16);

/// A parsed request body, or why not.
pub type Body<T> = Result<T, Rejected>;

fn json<T: Serialize>(status: u16, value: &T) -> Reply {
    Reply::json(
        status,
        serde_json::to_string(value).unwrap_or_else(|_| error_json("serialisation failed")),
    )
}

/// `op` once the form's CSRF token checks out (`op` does not start
/// before); the token's error otherwise.
async fn with_form_token<T>(
    auth: &RequestAuth,
    token: Option<&str>,
    op: impl Future<Output = Result<T, AuthError>>,
) -> Result<T, AuthError> {
    auth.verify_form_token(token).await?;
    op.await
}

fn no_content() -> Reply {
    Reply {
        status: 204,
        headers: Vec::new(),
        body: String::new(),
    }
}

fn html(status: u16, body: String) -> Reply {
    Reply {
        status,
        headers: vec![("content-type", "text/html; charset=utf-8".into())],
        body,
    }
}

/// The status for a body the framework refused: its own 4xx (413 too
/// large, 415 wrong type, 422 unreadable), else 400.
fn body_status(rejected: Rejected) -> u16 {
    if (400..500).contains(&rejected.0) {
        rejected.0
    } else {
        400
    }
}

fn bad_body(rejected: Rejected) -> Reply {
    Reply::json(body_status(rejected), error_json("invalid request body"))
}

fn unwrap_reply(result: Result<Reply, AuthError>) -> Reply {
    result.unwrap_or_else(|error| Reply::error(&error))
}

/// Unknown route: JSON 404.
pub fn not_found() -> Reply {
    Reply::json(404, error_json("not found"))
}

/// `GET /static/app.css`: the pages' stylesheet.
pub fn stylesheet() -> Reply {
    Reply {
        status: 200,
        headers: vec![
            ("content-type", "text/css; charset=utf-8".into()),
            ("cache-control", "public, max-age=3600".into()),
        ],
        body: crate::STYLESHEET.to_owned(),
    }
}

/// `GET /static/passkeys.js`: the pages' one script (passkey ceremonies).
pub fn passkeys_script() -> Reply {
    Reply {
        status: 200,
        headers: vec![
            ("content-type", "text/javascript; charset=utf-8".into()),
            ("cache-control", "public, max-age=3600".into()),
        ],
        body: crate::PASSKEYS_SCRIPT.to_owned(),
    }
}

/// Known route, wrong method: JSON 405.
pub fn method_not_allowed() -> Reply {
    Reply::json(405, error_json("method not allowed"))
}

/// Registers, then (with an address) stores it and mails its
/// verification link. A malformed address is refused before the account
/// is made.
async fn register_with_email(
    auth: &RequestAuth,
    username: &str,
    password: Password,
    email: Option<&str>,
) -> Result<auth_core::user::AnyUser, AuthError> {
    let email = email.map(str::trim).filter(|e| !e.is_empty());
    if let Some(email) = email {
        auth_core::account::normalize_email(email).map_err(|_| AuthError::InvalidEmail)?;
    }
    let user = auth.register(username, &password).await?;
    if let Some(email) = email {
        auth.set_email(&user, email).await?;
    }
    Ok(user)
}

/// `POST /api/register` (an optional `email` gets a verification link).
pub async fn register(auth: &RequestAuth, body: Body<Credentials>) -> Reply {
    let body = match body {
        Ok(body) => body,
        Err(rejected) => return bad_body(rejected),
    };
    let result = register_with_email(
        auth,
        &body.username,
        Password::from(body.password),
        body.email.as_deref(),
    )
    .await;
    unwrap_reply(result.map(|user| {
        json(
            201,
            &Registered {
                username: user.display_name().to_owned(),
            },
        )
    }))
}

/// `POST /api/password/forgot`: 202 whether or not the account exists.
pub async fn forgot_password(auth: &RequestAuth, body: Body<ForgotBody>) -> Reply {
    let body = match body {
        Ok(body) => body,
        Err(rejected) => return bad_body(rejected),
    };
    let result = auth.request_password_reset(&body.login).await;
    unwrap_reply(result.map(|()| Reply::json(202, "{}".to_owned())))
}

/// `POST /api/password/reset`: 204; every session of the account ends.
pub async fn reset_password(auth: &RequestAuth, body: Body<ResetBody>) -> Reply {
    let body = match body {
        Ok(body) => body,
        Err(rejected) => return bad_body(rejected),
    };
    let result = auth
        .reset_password(&body.token, &Password::from(body.new_password))
        .await;
    unwrap_reply(result.map(|()| no_content()))
}

/// `POST /api/email` (behind `require_login`): 202; a link goes to the
/// new address, a notice to the old one; the session gets a new ID.
pub async fn change_email(auth: &RequestAuth, body: Body<EmailChangeBody>) -> Reply {
    let body = match body {
        Ok(body) => body,
        Err(rejected) => return bad_body(rejected),
    };
    let proof = FactorProof::new(Password::from(body.password), body.code);
    let result = auth.change_email(&body.email, &proof).await;
    unwrap_reply(result.map(|()| Reply::json(202, "{}".to_owned())))
}

/// `POST /api/email/verify`: 204.
pub async fn verify_email(auth: &RequestAuth, body: Body<VerifyBody>) -> Reply {
    let body = match body {
        Ok(body) => body,
        Err(rejected) => return bad_body(rejected),
    };
    unwrap_reply(auth.verify_email(&body.token).await.map(|()| no_content()))
}

/// `POST /api/login`.
pub async fn login(auth: &RequestAuth, body: Body<Credentials>) -> Reply {
    let body = match body {
        Ok(body) => body,
        Err(rejected) => return bad_body(rejected),
    };
    auth.remember_me(body.remember);
    let result = auth
        .login(&body.username, &Password::from(body.password))
        .await;
    unwrap_reply(result.map(login_answer))
}

/// The answer to a completed first factor (password or magic link).
fn login_answer(outcome: LoginOutcome) -> Reply {
    let answer = match outcome {
        LoginOutcome::LoggedIn(_) => LoginAnswer {
            mfa_required: false,
            methods: None,
        },
        LoginOutcome::MfaRequired { methods, .. } => LoginAnswer {
            mfa_required: true,
            methods: Some(methods.iter().map(|m| m.as_str().to_owned()).collect()),
        },
    };
    json(200, &answer)
}

/// `POST /api/login/magic`: 202 whether or not the account exists.
pub async fn request_magic_link(auth: &RequestAuth, body: Body<MagicBody>) -> Reply {
    let body = match body {
        Ok(body) => body,
        Err(rejected) => return bad_body(rejected),
    };
    let result = auth.request_magic_link(&body.login).await;
    unwrap_reply(result.map(|()| Reply::json(202, "{}".to_owned())))
}

/// `POST /api/login/magic/finish`: the login answer.
pub async fn finish_magic_link(auth: &RequestAuth, body: Body<MagicFinishBody>) -> Reply {
    let body = match body {
        Ok(body) => body,
        Err(rejected) => return bad_body(rejected),
    };
    auth.remember_me(body.remember);
    unwrap_reply(auth.finish_magic_link(&body.token).await.map(login_answer))
}

/// `POST /api/logout`.
pub async fn logout(auth: &RequestAuth) -> Reply {
    unwrap_reply(auth.logout().await.map(|()| no_content()))
}

/// `GET /api/me`, for the user the framework's `CurrentUser` extracted.
pub async fn me(auth: &RequestAuth, user: &User) -> Reply {
    unwrap_reply(auth.has_second_factor().await.map(|mfa_enabled| {
        json(
            200,
            &Me {
                username: user.display_name.clone(),
                mfa_enabled,
            },
        )
    }))
}

/// `POST /api/password`.
pub async fn change_password(auth: &RequestAuth, body: Body<ChangePassword>) -> Reply {
    let body = match body {
        Ok(body) => body,
        Err(rejected) => return bad_body(rejected),
    };
    let result = auth
        .change_password(
            &Password::from(body.current_password),
            &Password::from(body.new_password),
        )
        .await;
    unwrap_reply(result.map(|()| no_content()))
}

/// `GET /api/sessions`.
pub async fn list_sessions(auth: &RequestAuth) -> Reply {
    unwrap_reply(auth.list_sessions().await.map(|sessions| {
        let entries: Vec<SessionEntry> = sessions.into_iter().map(SessionEntry::from).collect();
        json(200, &entries)
    }))
}

/// `DELETE /api/sessions/{id}`.
pub async fn revoke_session(auth: &RequestAuth, id: &str) -> Reply {
    unwrap_reply(
        auth.revoke(&SessionHandle::new(id.to_owned()))
            .await
            .map(|found| {
                if found {
                    no_content()
                } else {
                    Reply::json(404, error_json("no such session"))
                }
            }),
    )
}

/// `POST /api/sessions/revoke-others`.
pub async fn revoke_others(auth: &RequestAuth) -> Reply {
    unwrap_reply(auth.sign_out_everywhere().await.map(|_| no_content()))
}

const LOGGED_IN: LoginAnswer = LoginAnswer {
    mfa_required: false,
    methods: None,
};

/// `POST /api/login/totp`: the second step after a password login that
/// answered `mfa_required`.
pub async fn login_totp(auth: &RequestAuth, body: Body<CodeBody>) -> Reply {
    let body = match body {
        Ok(body) => body,
        Err(rejected) => return bad_body(rejected),
    };
    unwrap_reply(
        auth.login_totp(&body.code)
            .await
            .map(|()| json(200, &LOGGED_IN)),
    )
}

/// `POST /api/login/recovery`: the second step with a recovery code.
pub async fn login_recovery(auth: &RequestAuth, body: Body<CodeBody>) -> Reply {
    let body = match body {
        Ok(body) => body,
        Err(rejected) => return bad_body(rejected),
    };
    unwrap_reply(
        auth.login_recovery(&body.code)
            .await
            .map(|()| json(200, &LOGGED_IN)),
    )
}

/// `POST /api/mfa/totp/enroll` (behind `require_login`): the proof with
/// the request, the password (and a code when the account already has a
/// second factor); a recent login is not enough. The session gets a new ID.
pub async fn totp_enroll(auth: &RequestAuth, body: Body<EnrollBody>) -> Reply {
    let body = match body {
        Ok(body) => body,
        Err(rejected) => return bad_body(rejected),
    };
    let proof = FactorProof::new(Password::from(body.password), body.code);
    unwrap_reply(
        auth.begin_totp_enrollment(&proof)
            .await
            .map(|enrollment| json(200, &enrollment)),
    )
}

/// `POST /api/mfa/totp/confirm` (behind `require_login`).
pub async fn totp_confirm(auth: &RequestAuth, body: Body<CodeBody>) -> Reply {
    let body = match body {
        Ok(body) => body,
        Err(rejected) => return bad_body(rejected),
    };
    unwrap_reply(
        auth.confirm_totp(&body.code)
            .await
            .map(|codes| json(200, &codes)),
    )
}

fn proof_of(body: ProofBody) -> FactorProof {
    FactorProof::password(Password::from(body.password)).with_code(body.code)
}

/// `DELETE /api/mfa/totp` (behind `require_login`): the password and a
/// current TOTP or recovery code with the request. The user's other
/// sessions end; this one gets a new ID.
pub async fn totp_disable(auth: &RequestAuth, body: Body<ProofBody>) -> Reply {
    let body = match body {
        Ok(body) => body,
        Err(rejected) => return bad_body(rejected),
    };
    unwrap_reply(
        auth.disable_totp(&proof_of(body))
            .await
            .map(|()| no_content()),
    )
}

/// `POST /api/mfa/recovery-codes` (behind `require_mfa`): the password and
/// a current TOTP or recovery code with the request; a new set of recovery
/// codes, the old set void. The user's other sessions end; this one gets a
/// new ID.
pub async fn regenerate_recovery_codes(auth: &RequestAuth, body: Body<ProofBody>) -> Reply {
    let body = match body {
        Ok(body) => body,
        Err(rejected) => return bad_body(rejected),
    };
    unwrap_reply(
        auth.regenerate_recovery_codes(&proof_of(body))
            .await
            .map(|codes| json(200, &codes)),
    )
}

// ---------------------------------------------------------------------------
// Passkeys (JSON API)
// ---------------------------------------------------------------------------

fn no_such_passkey() -> Reply {
    Reply::json(404, error_json("no such passkey"))
}

/// `POST /api/passkeys/register/start` (behind `require_login`): the
/// proof with the request, as `/api/mfa/totp/enroll`; answers the
/// `{"publicKey": ...}` options for `navigator.credentials.create`. The
/// session gets a new ID.
pub async fn passkey_register_start(auth: &RequestAuth, body: Body<EnrollBody>) -> Reply {
    let body = match body {
        Ok(body) => body,
        Err(rejected) => return bad_body(rejected),
    };
    let proof = FactorProof::new(Password::from(body.password), body.code);
    unwrap_reply(
        auth.begin_passkey_registration(&proof)
            .await
            .map(|options| json(200, &options)),
    )
}

/// `POST /api/passkeys/register/finish` (behind `require_login`): 201 with
/// the new passkey (and the recovery codes when it is the account's first
/// second factor). The user's other sessions end; this one gets a new ID.
pub async fn passkey_register_finish(auth: &RequestAuth, body: Body<PasskeyFinishBody>) -> Reply {
    let body = match body {
        Ok(body) => body,
        Err(rejected) => return bad_body(rejected),
    };
    let result = auth
        .finish_passkey_registration(&body.name, &body.credential)
        .await;
    unwrap_reply(result.map(|added| {
        json(
            201,
            &PasskeyRegistered {
                id: added.passkey.id(),
                name: added.passkey.name.clone(),
                recovery_codes: added
                    .recovery_codes
                    .as_ref()
                    .map(|codes| codes.codes().into_iter().map(str::to_owned).collect()),
            },
        )
    }))
}

/// `GET /api/passkeys` (behind `require_login`): the user's passkeys,
/// oldest first.
pub async fn list_passkeys(auth: &RequestAuth) -> Reply {
    unwrap_reply(auth.list_passkeys().await.map(|passkeys| {
        let entries: Vec<PasskeyEntry> = passkeys.iter().map(PasskeyEntry::from).collect();
        json(200, &entries)
    }))
}

/// `PATCH /api/passkeys/{id}` (behind `require_login`): 204; 404 unknown.
pub async fn rename_passkey(auth: &RequestAuth, id: &str, body: Body<PasskeyRenameBody>) -> Reply {
    let body = match body {
        Ok(body) => body,
        Err(rejected) => return bad_body(rejected),
    };
    unwrap_reply(auth.rename_passkey(id, &body.name).await.map(|found| {
        if found {
            no_content()
        } else {
            no_such_passkey()
        }
    }))
}

/// `DELETE /api/passkeys/{id}` (behind `require_login`): the proof with
/// the request; 204, the user's other sessions end and this one gets a
/// new ID; 404 unknown (before the proof: no code spent).
pub async fn remove_passkey(auth: &RequestAuth, id: &str, body: Body<EnrollBody>) -> Reply {
    let body = match body {
        Ok(body) => body,
        Err(rejected) => return bad_body(rejected),
    };
    let proof = FactorProof::new(Password::from(body.password), body.code);
    unwrap_reply(auth.remove_passkey(id, &proof).await.map(|found| {
        if found {
            no_content()
        } else {
            no_such_passkey()
        }
    }))
}

/// `POST /api/login/passkey/start`: the `{"publicKey": ...}` options for
/// `navigator.credentials.get`: the second step of an
/// MFA-pending session, otherwise a passwordless sign-in (a visitor gets
/// a session cookie that holds the challenge).
pub async fn passkey_sign_in_start(
    auth: &RequestAuth,
    body: Body<PasskeySignInStartBody>,
) -> Reply {
    if let Err(rejected) = body {
        return bad_body(rejected);
    }
    unwrap_reply(
        auth.begin_passkey_sign_in()
            .await
            .map(|options| json(200, &options)),
    )
}

/// `POST /api/login/passkey/finish`: the browser's assertion; the answer
/// of `POST /api/login` and a new session cookie.
pub async fn passkey_sign_in_finish(auth: &RequestAuth, body: Body<PasskeyAssertion>) -> Reply {
    let mut body = match body {
        Ok(body) => body,
        Err(rejected) => return bad_body(rejected),
    };
    // "remember" beside the credential's own members.
    let remember = body
        .0
        .as_object_mut()
        .and_then(|members| members.remove("remember"));
    auth.remember_me(remember.and_then(|r| r.as_bool()).unwrap_or(false));
    unwrap_reply(auth.finish_passkey_sign_in(&body.0).await.map(login_answer))
}

// ---------------------------------------------------------------------------
// Pages
// ---------------------------------------------------------------------------

/// The login and registration form body.
#[derive(Deserialize)]
pub struct CredentialsForm {
    /// Login name.
    pub username: String,
    /// Password.
    pub password: String,
    /// Registration only: an optional email address.
    #[serde(default)]
    pub email: Option<String>,
    /// Where to go after logging in.
    pub next: Option<String>,
    /// Login only: the "Keep me signed in" checkbox (present when ticked).
    #[serde(default)]
    pub remember: Option<String>,
    /// The form's CSRF token.
    pub csrf_token: Option<String>,
}

/// A form with only a CSRF token (logout, sign out everywhere).
#[derive(Default, Deserialize)]
pub struct TokenForm {
    /// The form's CSRF token.
    pub csrf_token: Option<String>,
}

/// The password-change form body.
#[derive(Deserialize)]
pub struct PasswordForm {
    /// The current password.
    pub current_password: String,
    /// The new password.
    pub new_password: String,
    /// The form's CSRF token.
    pub csrf_token: Option<String>,
}

/// `GET /`.
pub async fn home(auth: &RequestAuth) -> Reply {
    unwrap_reply(auth.optional_user::<User>().await.map(|user| {
        html(
            200,
            pages::home(user.as_deref().map(|u| u.display_name.as_str())),
        )
    }))
}

/// `GET /login?next=...`.
pub async fn login_page(auth: &RequestAuth, next: Option<&str>) -> Reply {
    let next = next.and_then(safe_next);
    unwrap_reply(auth.form_token().await.map(|token| {
        html(
            200,
            pages::credentials_form("Log in", "/login", None, next, token.as_deref()),
        )
    }))
}

/// `GET /register`.
pub async fn register_page(auth: &RequestAuth) -> Reply {
    unwrap_reply(auth.form_token().await.map(|token| {
        html(
            200,
            pages::credentials_form("Register", "/register", None, None, token.as_deref()),
        )
    }))
}

/// The form page again, with the error, its status and `Retry-After`.
async fn page_error(
    auth: &RequestAuth,
    (title, action): (&str, &str),
    error: &AuthError,
    next: Option<&str>,
) -> Reply {
    let mut message = error.to_string();
    if let Some(reason) = error.reason() {
        message = format!("{message} ({reason})");
    }
    let token = auth.form_token().await.ok().flatten();
    let page = pages::credentials_form(title, action, Some(&message), next, token.as_deref());
    html(200, page).failing_with(error)
}

fn invalid_form(title: &str, rejected: Rejected) -> Reply {
    html(
        body_status(rejected),
        pages::layout(title, "<p class=\"error\">invalid form</p>"),
    )
}

/// `POST /login` (form).
pub async fn login_form(auth: &RequestAuth, form: Body<CredentialsForm>) -> Reply {
    let form = match form {
        Ok(form) => form,
        Err(rejected) => return invalid_form("Log in", rejected),
    };
    let next = form
        .next
        .as_deref()
        .and_then(safe_next)
        .unwrap_or("/account")
        .to_owned();
    auth.remember_me(form.remember.is_some());
    let result = with_form_token(
        auth,
        form.csrf_token.as_deref(),
        auth.login(&form.username, &Password::from(form.password)),
    )
    .await;
    match result {
        Ok(LoginOutcome::LoggedIn(_)) => Reply::redirect(next),
        Ok(LoginOutcome::MfaRequired { .. }) => Reply::redirect(with_next("/login/mfa", &next)),
        Err(error) => page_error(auth, ("Log in", "/login"), &error, Some(&next)).await,
    }
}

/// `POST /register` (form).
pub async fn register_form(auth: &RequestAuth, form: Body<CredentialsForm>) -> Reply {
    let form = match form {
        Ok(form) => form,
        Err(rejected) => return invalid_form("Register", rejected),
    };
    let result = with_form_token(auth, form.csrf_token.as_deref(), async {
        register_with_email(
            auth,
            &form.username,
            Password::from(form.password),
            form.email.as_deref(),
        )
        .await
        .map(|_| ())
    })
    .await;
    match result {
        Ok(()) => Reply::redirect("/login".to_owned()),
        Err(error) => page_error(auth, ("Register", "/register"), &error, None).await,
    }
}

/// `POST /logout` (form).
pub async fn logout_form(auth: &RequestAuth, form: Body<TokenForm>) -> Reply {
    let token = form.ok().and_then(|f| f.csrf_token);
    let result = with_form_token(auth, token.as_deref(), auth.logout()).await;
    unwrap_reply(result.map(|()| Reply::redirect("/".to_owned())))
}

/// `GET /account` (behind `require_login`).
pub async fn account_page(auth: &RequestAuth) -> Reply {
    unwrap_reply(account(auth).await)
}

async fn account(auth: &RequestAuth) -> Result<Reply, AuthError> {
    let user = auth.current_user::<User>().await?;
    let sessions = auth.list_sessions().await?;
    let token = pages::token_field(auth.form_token().await?.as_deref());
    let rows: String = sessions
        .into_iter()
        .map(|s| {
            let action = if s.current {
                "this session".to_owned()
            } else {
                format!(
                    r#"<form method="post" action="/account/sessions/revoke">{token}<input type="hidden" name="id" value="{id}"><button>Sign out</button></form>"#,
                    id = pages::escape(s.handle.as_str()),
                )
            };
            format!(
                "<tr><td>{}</td><td>{}</td><td>{action}</td></tr>",
                pages::escape(s.ip.as_deref().unwrap_or("-")),
                pages::escape(s.user_agent.as_deref().unwrap_or("-")),
            )
        })
        .collect();
    // Every change of factors takes the proof with the form: the password,
    // and a code once a second factor (TOTP or a passkey) is on.
    let password = r#"<label>Password <input name="password" type="password" autocomplete="current-password" required></label>"#;
    let code = r#"<label>Code from your app, or a recovery code <input name="code" autocomplete="one-time-code" required></label>"#;
    let totp = auth.totp_enabled().await?;
    // `None`: the server has no passkeys.
    let passkeys = match auth.list_passkeys().await {
        Ok(passkeys) => Some(passkeys),
        Err(AuthError::PasskeysUnavailable) => None,
        Err(error) => return Err(error),
    };
    let has_passkey = passkeys.as_ref().is_some_and(|p| !p.is_empty());
    let mfa = if !totp {
        // With a passkey, the account has a second factor already: the
        // proof takes a (recovery) code.
        let proof_code = if has_passkey { code } else { "" };
        format!(
            r#"<p>Two-factor authentication with an authenticator app is off.</p>
<form method="post" action="/account/mfa/enroll">{token}
{password}
{proof_code}
<button>Set up an authenticator app</button></form>"#
        )
    } else {
        let left = auth.recovery_codes_left().await?;
        format!(
            r#"<p>Two-factor authentication is on; {left} recovery codes left.</p>
<form method="post" action="/account/mfa/recovery-codes">{token}
{password}
{code}
<button>New recovery codes</button></form>
<form method="post" action="/account/mfa/disable">{token}
{password}
{code}
<button>Turn off two-factor authentication</button></form>"#
        )
    };
    let passkeys = match passkeys {
        Some(list) => passkeys_section(auth, &list, &token, totp).await?,
        None => String::new(),
    };
    let email = match auth.email().await? {
        Some(e) if e.verified => format!("<p>Email: {}</p>", pages::escape(&e.address)),
        Some(e) => format!(
            "<p>Email: {} (not confirmed yet)</p>",
            pages::escape(&e.address)
        ),
        None => "<p>No email address: you cannot reset your password.</p>".to_owned(),
    };
    let email_code = if totp || has_passkey {
        code.replace(" required>", ">")
    } else {
        String::new()
    };
    let script = if passkeys.is_empty() {
        ""
    } else {
        pages::PASSKEYS_SCRIPT_TAG
    };
    let body = format!(
        r#"<p>Logged in as <b>{name}</b>.</p>
<h2>Active sessions</h2><table><tr><th>IP</th><th>Browser</th><th></th></tr>{rows}</table>
<form method="post" action="/account/revoke-others">{token}<button>Sign out everywhere else</button></form>
<h2>Two-factor authentication</h2>{mfa}
{passkeys}
<h2>Email address</h2>{email}
<form method="post" action="/account/email">{token}
<label>New address <input name="email" type="email" autocomplete="email" required></label>
{password}
{email_code}
<button>Change address</button></form>
<h2>Change password</h2>
<form method="post" action="/account/password">{token}
<label>Current password <input name="current_password" type="password" autocomplete="current-password" required></label>
<label>New password <input name="new_password" type="password" autocomplete="new-password" required></label>
<button>Change password</button></form>
<form method="post" action="/logout">{token}<button>Log out</button></form>{script}"#,
        name = pages::escape(&user.display_name),
    );
    Ok(html(200, pages::layout("Account", &body)))
}

/// The "Passkeys" section of `/account`: the list (name, created, last
/// used, synced), "Add a passkey" (by the script: a name and the proof),
/// and the rename and remove forms (no script needed).
async fn passkeys_section(
    auth: &RequestAuth,
    passkeys: &[auth_core::passkey::StoredPasskey],
    token: &str,
    totp: bool,
) -> Result<String, AuthError> {
    let password = |id: &str| {
        format!(
            r#"<label>Password <input id="{id}" name="password" type="password" autocomplete="current-password" required></label>"#
        )
    };
    let code_label = if totp {
        "Code from your app, or a recovery code"
    } else {
        "A recovery code"
    };
    let code = |id: &str| {
        format!(
            r#"<label>{code_label} <input id="{id}" name="code" autocomplete="one-time-code" required></label>"#
        )
    };
    // Adding one needs a code once the account has a second factor.
    let add_code = if totp || !passkeys.is_empty() {
        code("passkey-code")
    } else {
        String::new()
    };
    let add = format!(
        r#"<form id="passkey-add" method="post" hidden>
<label>Name for the passkey <input id="passkey-name" name="name" maxlength="64" autocomplete="off" placeholder="e.g. Phone, Laptop, Security key"></label>
{password}
{add_code}
<button id="passkey-add-button">Add a passkey</button></form>
<noscript><p>Adding a passkey needs JavaScript.</p></noscript>
{error}
<div id="passkey-recovery" hidden><p>Save these recovery codes somewhere safe. Each works once, in place of your passkey or a code from your app. They will not be shown again.</p>
<ul id="passkey-recovery-codes"></ul><p><a href="/account">Done</a></p></div>"#,
        password = password("passkey-password"),
        error = pages::PASSKEY_ERROR,
    );
    if passkeys.is_empty() {
        return Ok(format!(
            r#"<h2>Passkeys</h2>
<p id="passkeys-none">No passkeys yet. A passkey signs you in with your device's fingerprint, face or PIN, without a password, and can be your second factor.</p>
{add}"#
        ));
    }
    let rows: String = passkeys
        .iter()
        .map(|p| {
            format!(
                r#"<tr data-passkey-id="{id}"><td>{name}</td><td>{created}</td><td>{used}</td><td>{synced}</td></tr>"#,
                id = pages::escape(&p.id()),
                name = pages::escape(&p.name),
                created = pages::utc_time(p.created_at),
                used = p.last_used_at.map_or("never".to_owned(), pages::utc_time),
                synced = if p.backed_up { "yes" } else { "no" },
            )
        })
        .collect();
    let options: String = passkeys
        .iter()
        .map(|p| {
            format!(
                r#"<option value="{}">{}</option>"#,
                pages::escape(&p.id()),
                pages::escape(&p.name)
            )
        })
        .collect();
    // Without TOTP the recovery codes are this section's: each change of
    // passkeys spends one, so new ones can be had here.
    let left = if totp || passkeys.is_empty() {
        String::new()
    } else {
        match auth.recovery_codes_left().await? {
            0 => "<p>No recovery codes left.</p>".to_owned(),
            left => format!(
                r#"<p>{left} recovery codes left.</p>
<form method="post" action="/account/mfa/recovery-codes">{token}
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
<label>A recovery code <input name="code" autocomplete="one-time-code" required></label>
<button>New recovery codes</button></form>"#
            ),
        }
    };
    Ok(format!(
        r#"<h2>Passkeys</h2>{left}
<table id="passkeys"><tr><th>Name</th><th>Created</th><th>Last used</th><th>Synced</th></tr>{rows}</table>
{add}
<h3>Rename a passkey</h3>
<form id="passkey-rename" method="post" action="/account/passkeys/rename">{token}
<label>Passkey <select id="passkey-rename-id" name="id">{options}</select></label>
<label>New name <input id="passkey-rename-name" name="name" maxlength="64" autocomplete="off" required></label>
<button>Rename</button></form>
<h3>Remove a passkey</h3>
<form id="passkey-remove" method="post" action="/account/passkeys/remove">{token}
<label>Passkey <select id="passkey-remove-id" name="id">{options}</select></label>
{password}
{code}
<button>Remove</button></form>"#,
        password = password("passkey-remove-password"),
        code = code("passkey-remove-code"),
    ))
}

/// `POST /account/passkeys/rename` form.
#[derive(Deserialize)]
pub struct PasskeyRenameForm {
    /// The passkey's handle.
    pub id: String,
    /// The new name.
    pub name: String,
    /// The form's CSRF token.
    pub csrf_token: Option<String>,
}

/// `POST /account/passkeys/remove` form: the passkey and the proof.
#[derive(Deserialize)]
pub struct PasskeyRemoveForm {
    /// The passkey's handle.
    pub id: String,
    /// The current password.
    pub password: String,
    /// A TOTP or recovery code.
    pub code: Option<String>,
    /// The form's CSRF token.
    pub csrf_token: Option<String>,
}

fn no_such_passkey_page() -> Reply {
    html(
        404,
        pages::layout(
            "Account",
            "<p class=\"error\">no such passkey</p><p><a href=\"/account\">Back</a></p>",
        ),
    )
}

/// `POST /account/passkeys/rename` (form, behind `require_login`).
pub async fn account_passkey_rename(auth: &RequestAuth, form: Body<PasskeyRenameForm>) -> Reply {
    let form = match form {
        Ok(form) => form,
        Err(rejected) => return invalid_form("Account", rejected),
    };
    let result = with_form_token(
        auth,
        form.csrf_token.as_deref(),
        auth.rename_passkey(&form.id, &form.name),
    )
    .await;
    match result {
        Ok(true) => Reply::redirect("/account".to_owned()),
        Ok(false) => no_such_passkey_page(),
        Err(error) => account_error(&error),
    }
}

/// `POST /account/passkeys/remove` (form with the password and a code,
/// behind `require_login`): the user's other sessions end.
pub async fn account_passkey_remove(auth: &RequestAuth, form: Body<PasskeyRemoveForm>) -> Reply {
    let form = match form {
        Ok(form) => form,
        Err(rejected) => return invalid_form("Account", rejected),
    };
    let proof = FactorProof::new(Password::from(form.password), form.code);
    let result = with_form_token(
        auth,
        form.csrf_token.as_deref(),
        auth.remove_passkey(&form.id, &proof),
    )
    .await;
    match result {
        Ok(true) => Reply::redirect("/account".to_owned()),
        Ok(false) => no_such_passkey_page(),
        Err(error) => mfa_action_error(auth, &error).await,
    }
}

/// `POST /account/password` (form, behind `require_login`).
pub async fn account_password(auth: &RequestAuth, form: Body<PasswordForm>) -> Reply {
    let form = match form {
        Ok(form) => form,
        Err(rejected) => return invalid_form("Account", rejected),
    };
    let result = with_form_token(
        auth,
        form.csrf_token.as_deref(),
        auth.change_password(
            &Password::from(form.current_password),
            &Password::from(form.new_password),
        ),
    )
    .await;
    match result {
        Ok(()) => Reply::redirect("/account".to_owned()),
        Err(error) => account_error(&error),
    }
}

/// `POST /account/revoke-others` (form, behind `require_login`).
pub async fn account_revoke_others(auth: &RequestAuth, form: Body<TokenForm>) -> Reply {
    let token = form.ok().and_then(|f| f.csrf_token);
    let result = with_form_token(auth, token.as_deref(), async {
        auth.sign_out_everywhere().await.map(|_| ())
    })
    .await;
    unwrap_reply(result.map(|()| Reply::redirect("/account".to_owned())))
}

/// The session-revocation form body.
#[derive(Deserialize)]
pub struct RevokeForm {
    /// The session handle (never a session ID).
    pub id: String,
    /// The form's CSRF token.
    pub csrf_token: Option<String>,
}

/// `POST /account/sessions/revoke` (form, behind `require_login`).
pub async fn account_revoke(auth: &RequestAuth, form: Body<RevokeForm>) -> Reply {
    let form = match form {
        Ok(form) => form,
        Err(rejected) => return invalid_form("Account", rejected),
    };
    let result = with_form_token(
        auth,
        form.csrf_token.as_deref(),
        auth.revoke(&SessionHandle::new(form.id)),
    )
    .await;
    match result {
        Ok(_) => Reply::redirect("/account".to_owned()),
        Err(error) => account_error(&error),
    }
}

fn account_error(error: &AuthError) -> Reply {
    let message = match error.reason() {
        Some(reason) => format!("{error} ({reason})"),
        None => error.to_string(),
    };
    let body = format!(
        "<p class=\"error\">{}</p><p><a href=\"/account\">Back</a></p>",
        pages::escape(&message)
    );
    html(200, pages::layout("Account", &body)).failing_with(error)
}

// ---------------------------------------------------------------------------
// Second factor pages
// ---------------------------------------------------------------------------

/// A one-field code form (second login step, confirmation).
#[derive(Deserialize)]
pub struct CodeForm {
    /// A TOTP code or a recovery code.
    pub code: String,
    /// Where to go afterwards.
    pub next: Option<String>,
    /// The form's CSRF token.
    pub csrf_token: Option<String>,
}

/// The step-up form body, and the proof a change of factors takes
/// (`/account/mfa/enroll`, `/account/mfa/disable`,
/// `/account/mfa/recovery-codes`): the password, and a code for users with
/// a second factor.
#[derive(Deserialize)]
pub struct ReauthForm {
    /// The current password.
    pub password: String,
    /// A TOTP or recovery code (empty or absent without a second factor).
    pub code: Option<String>,
    /// The form's CSRF token.
    pub csrf_token: Option<String>,
}

fn code_form(action: &str, label: &str, next: Option<&str>, token: &str) -> String {
    let next = next.map_or(String::new(), |n| {
        format!(
            "<input type=\"hidden\" name=\"next\" value=\"{}\">",
            pages::escape(n)
        )
    });
    format!(
        r#"<form method="post" action="{action}">{next}{token}
<label>{label} <input name="code" autocomplete="one-time-code" required autofocus></label>
<button>Continue</button></form>"#
    )
}

/// The second-step page; `methods` are the pending login's (a passkey
/// among them adds the "Use a passkey" button, which needs the script).
fn mfa_page(
    status: u16,
    error: Option<&str>,
    next: Option<&str>,
    token: Option<&str>,
    methods: &[Factor],
) -> Reply {
    let error = error.map_or(String::new(), |e| {
        format!("<p class=\"error\">{}</p>", pages::escape(e))
    });
    let label = if methods.contains(&Factor::Totp) || !methods.contains(&Factor::Passkey) {
        "Code from your authenticator app, or a recovery code"
    } else {
        "A recovery code"
    };
    let form = code_form("/login/mfa", label, next, &pages::token_field(token));
    let passkey = if methods.contains(&Factor::Passkey) {
        format!(
            r#"
<p><button type="button" id="passkey-mfa" data-passkey-signin data-next="{next}" hidden>Use a passkey</button></p>
{error}
{script}"#,
            next = pages::escape(next.unwrap_or("/account")),
            error = pages::PASSKEY_ERROR,
            script = pages::PASSKEYS_SCRIPT_TAG,
        )
    } else {
        String::new()
    };
    html(
        status,
        pages::layout("Second factor", &format!("{error}{form}{passkey}")),
    )
}

/// The second factors a pending login may finish with; `None` when the
/// session is not MFA-pending.
fn pending_methods(session: Option<&auth_core::session::Session>) -> Option<Vec<Factor>> {
    match session?.auth_state() {
        AuthState::MfaPending { methods, .. } => Some(methods.clone()),
        _ => None,
    }
}

/// `GET /login/mfa?next=...`: the second step of a login that needs one.
pub async fn login_mfa_page(auth: &RequestAuth, next: Option<&str>) -> Reply {
    let next = next.and_then(safe_next);
    match auth.session().await {
        Ok(session) => match pending_methods(session.as_ref()) {
            Some(methods) => {
                let token = auth.form_token().await.ok().flatten();
                mfa_page(200, None, next, token.as_deref(), &methods)
            }
            None => Reply::redirect(with_next("/login", next.unwrap_or_default())),
        },
        Err(error) => Reply::error(&error),
    }
}

/// `POST /login/mfa` (form): a TOTP code, or a recovery code (told apart by
/// their shape).
pub async fn login_mfa_form(auth: &RequestAuth, form: Body<CodeForm>) -> Reply {
    let form = match form {
        Ok(form) => form,
        Err(rejected) => return invalid_form("Second factor", rejected),
    };
    let next = form
        .next
        .as_deref()
        .and_then(safe_next)
        .unwrap_or("/account")
        .to_owned();
    let result = with_form_token(auth, form.csrf_token.as_deref(), async {
        if normalize_recovery_code(&form.code).is_some() {
            auth.login_recovery(&form.code).await
        } else {
            auth.login_totp(&form.code).await
        }
    })
    .await;
    match result {
        Ok(()) => Reply::redirect(next),
        Err(AuthError::NotAuthenticated) => Reply::redirect(with_next("/login", &next)),
        Err(error) => {
            let token = auth.form_token().await.ok().flatten();
            let methods = match auth.session().await {
                Ok(session) => pending_methods(session.as_ref()).unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            mfa_page(
                200,
                Some(&error.to_string()),
                Some(&next),
                token.as_deref(),
                &methods,
            )
            .failing_with(&error)
        }
    }
}

/// The step-up page shown when an action needs a recent login.
async fn reauth_page(auth: &RequestAuth, error: Option<&str>, needs_code: bool) -> Reply {
    // An account with a second factor steps up with a code too: its app's,
    // or a recovery code (what a passkey-only account has to give here).
    // `needs_code`: the core refused a password alone.
    let totp = auth.totp_enabled().await.unwrap_or(false);
    let codes = needs_code || auth.recovery_codes_left().await.unwrap_or(0) > 0;
    let token = pages::token_field(auth.form_token().await.ok().flatten().as_deref());
    let error = error.map_or(String::new(), |e| {
        format!("<p class=\"error\">{}</p>", pages::escape(e))
    });
    let code = if totp {
        r#"<label>Code from your app, or a recovery code <input name="code" autocomplete="one-time-code" required></label>"#
    } else if codes {
        r#"<label>A recovery code <input name="code" autocomplete="one-time-code" required></label>"#
    } else {
        ""
    };
    let body = format!(
        r#"{error}<p>This needs a recent login: confirm it's you, then try again.</p>
<form method="post" action="/account/reauth">{token}
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
{code}<button>Confirm</button></form>"#
    );
    html(403, pages::layout("Confirm it's you", &body))
}

/// An account action's error: the step-up page when a recent login is
/// needed, else the error.
async fn mfa_action_error(auth: &RequestAuth, error: &AuthError) -> Reply {
    match error {
        AuthError::ReauthenticationRequired => reauth_page(auth, None, false).await,
        _ => account_error(error),
    }
}

/// `POST /account/reauth` (form, behind `require_login`).
pub async fn account_reauth(auth: &RequestAuth, form: Body<ReauthForm>) -> Reply {
    let form = match form {
        Ok(form) => form,
        Err(rejected) => return invalid_form("Confirm it's you", rejected),
    };
    let code = form.code.as_deref().filter(|c| !c.trim().is_empty());
    let result = with_form_token(
        auth,
        form.csrf_token.as_deref(),
        auth.reauthenticate(&Password::from(form.password), code),
    )
    .await;
    match result {
        Ok(()) => Reply::redirect("/account".to_owned()),
        // A password alone does not renew a login with a second factor.
        Err(AuthError::ReauthenticationRequired) => reauth_page(auth, None, true).await,
        Err(error) => reauth_page(auth, Some(&error.to_string()), false)
            .await
            .failing_with(&error),
    }
}

/// The proof a form carries (an empty code field is no code).
fn form_proof(form: ReauthForm) -> (FactorProof, Option<String>) {
    let proof = FactorProof::new(Password::from(form.password), form.code);
    (proof, form.csrf_token)
}

/// `POST /account/mfa/enroll` (form with the password, behind
/// `require_login`): the QR code, the secret for manual entry, and the
/// confirmation form.
pub async fn account_mfa_enroll(auth: &RequestAuth, form: Body<ReauthForm>) -> Reply {
    let form = match form {
        Ok(form) => form,
        Err(rejected) => return invalid_form("Set up two-factor authentication", rejected),
    };
    let (proof, token) = form_proof(form);
    let result = with_form_token(auth, token.as_deref(), auth.begin_totp_enrollment(&proof)).await;
    let enrollment = match result {
        Ok(enrollment) => enrollment,
        Err(error) => return mfa_action_error(auth, &error).await,
    };
    let token = pages::token_field(auth.form_token().await.ok().flatten().as_deref());
    // The SVG is made by the core from the URI: rectangles only, no text.
    let body = format!(
        r#"<p>Scan this code with your authenticator app, then enter the code it shows.</p>
<div class="qr">{qr}</div>
<p>Or enter this key by hand: <code>{secret}</code></p>
{form}"#,
        qr = enrollment.qr_svg(),
        secret = pages::escape(enrollment.secret_base32()),
        form = code_form("/account/mfa/confirm", "Code from your app", None, &token),
    );
    html(
        200,
        pages::layout("Set up two-factor authentication", &body),
    )
}

fn recovery_codes_page(codes: &auth_core::mfa::RecoveryCodes) -> Reply {
    let items: String = codes
        .codes()
        .into_iter()
        .map(|c| format!("<li><code>{}</code></li>", pages::escape(c)))
        .collect();
    let body = format!(
        r#"<p>Save these recovery codes somewhere safe. Each works once, in place of a code from your app. They will not be shown again.</p>
<ul>{items}</ul><p><a href="/account">Done</a></p>"#
    );
    html(200, pages::layout("Recovery codes", &body))
}

/// `POST /account/mfa/confirm` (form, behind `require_login`): activates
/// TOTP and shows the recovery codes once.
pub async fn account_mfa_confirm(auth: &RequestAuth, form: Body<CodeForm>) -> Reply {
    let form = match form {
        Ok(form) => form,
        Err(rejected) => return invalid_form("Set up two-factor authentication", rejected),
    };
    let result = with_form_token(
        auth,
        form.csrf_token.as_deref(),
        auth.confirm_totp(&form.code),
    )
    .await;
    match result {
        Ok(codes) => recovery_codes_page(&codes),
        Err(AuthError::InvalidCode) => {
            let token = pages::token_field(auth.form_token().await.ok().flatten().as_deref());
            let body = format!(
                "<p class=\"error\">{}</p>{}",
                pages::escape(&AuthError::InvalidCode.to_string()),
                code_form("/account/mfa/confirm", "Code from your app", None, &token)
            );
            html(
                401,
                pages::layout("Set up two-factor authentication", &body),
            )
        }
        Err(error) => mfa_action_error(auth, &error).await,
    }
}

/// `POST /account/mfa/disable` (form with the password and a code, behind
/// `require_login`).
pub async fn account_mfa_disable(auth: &RequestAuth, form: Body<ReauthForm>) -> Reply {
    let form = match form {
        Ok(form) => form,
        Err(rejected) => return invalid_form("Account", rejected),
    };
    let (proof, token) = form_proof(form);
    let result = with_form_token(auth, token.as_deref(), auth.disable_totp(&proof)).await;
    match result {
        Ok(()) => Reply::redirect("/account".to_owned()),
        Err(error) => mfa_action_error(auth, &error).await,
    }
}

/// `POST /account/email` (form with the new address, the password and,
/// with a second factor, a code; behind `require_login`).
pub async fn account_email(auth: &RequestAuth, form: Body<EmailForm>) -> Reply {
    let form = match form {
        Ok(form) => form,
        Err(rejected) => return invalid_form("Account", rejected),
    };
    let proof = FactorProof::new(Password::from(form.password), form.code);
    let result = with_form_token(
        auth,
        form.csrf_token.as_deref(),
        auth.change_email(&form.email, &proof),
    )
    .await;
    match result {
        Ok(()) => html(
            200,
            pages::message(
                "Email address",
                "We mailed a link to the new address: it takes effect once you open it. \
                 Your old address was told.",
            ),
        ),
        Err(error) => mfa_action_error(auth, &error).await,
    }
}

/// `POST /account/email` form.
#[derive(Deserialize)]
pub struct EmailForm {
    /// The new address.
    pub email: String,
    /// The current password.
    pub password: String,
    /// A TOTP or recovery code (empty or absent without a second factor).
    pub code: Option<String>,
    /// The form's CSRF token.
    pub csrf_token: Option<String>,
}

impl std::fmt::Debug for EmailForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmailForm([REDACTED])")
    }
}

/// `POST /account/mfa/recovery-codes` (form with the password and a code,
/// behind `require_login`): a new set, shown once.
pub async fn account_recovery_codes(auth: &RequestAuth, form: Body<ReauthForm>) -> Reply {
    let form = match form {
        Ok(form) => form,
        Err(rejected) => return invalid_form("Recovery codes", rejected),
    };
    let (proof, token) = form_proof(form);
    let result = with_form_token(
        auth,
        token.as_deref(),
        auth.regenerate_recovery_codes(&proof),
    )
    .await;
    match result {
        Ok(codes) => recovery_codes_page(&codes),
        Err(error) => mfa_action_error(auth, &error).await,
    }
}

redacted_debug!(
    CredentialsForm {
        username,
        password,
        next,
        csrf_token
    },
    PasswordForm {
        current_password,
        new_password,
        csrf_token
    },
    CodeForm {
        code,
        next,
        csrf_token
    },
    ReauthForm {
        password,
        code,
        csrf_token
    },
    TokenForm { csrf_token },
    PasskeyRemoveForm {
        id,
        password,
        code,
        csrf_token
    },
    PasskeyRenameForm {
        id,
        name,
        csrf_token
    },
    RevokeForm { id, csrf_token },
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_with_secrets_print_none() {
        let form: CredentialsForm = serde_json::from_str(
            r#"{"username":"alice","password":"hunter2 hunter2","csrf_token":"tok3n"}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let printed = format!("{form:?}");
        assert!(
            !printed.contains("hunter2") && !printed.contains("tok3n"),
            "{printed}"
        );
        let form: PasskeyRenameForm =
            serde_json::from_str(r#"{"id":"p1","name":"phone","csrf_token":"tok3n"}"#)
                .unwrap_or_else(|e| panic!("{e}"));
        assert!(!format!("{form:?}").contains("tok3n"));
        let form: RevokeForm = serde_json::from_str(r#"{"id":"h1","csrf_token":"tok3n"}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!format!("{form:?}").contains("tok3n"));
        let body: crate::ChangePassword = serde_json::from_str(
            r#"{"current_password":"old secret","new_password":"new secret"}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(!format!("{body:?}").contains("secret"));
        let body: crate::ProofBody =
            serde_json::from_str(r#"{"password":"old secret","code":"ABCD-EFGH"}"#)
                .unwrap_or_else(|e| panic!("{e}"));
        let printed = format!("{body:?}");
        let printed = format!("{printed} {:?}", proof_of(body));
        assert!(
            !printed.contains("secret") && !printed.contains("ABCD"),
            "{printed}"
        );
        let body: crate::EnrollBody =
            serde_json::from_str(r#"{"password":"old secret"}"#).unwrap_or_else(|e| panic!("{e}"));
        assert!(body.code.is_none(), "the code is optional at enrolment");
        assert!(!format!("{body:?}").contains("secret"));
        let form: PasskeyRemoveForm = serde_json::from_str(
            r#"{"id":"AAAA","password":"old secret","code":"ABCD-EFGH","csrf_token":"tok3n"}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let printed = format!("{form:?}");
        assert!(
            !printed.contains("secret") && !printed.contains("ABCD") && !printed.contains("tok3n"),
            "{printed}"
        );
    }

    #[test]
    fn passkey_times_print_as_utc() {
        use auth_core::clock::Timestamp;
        assert_eq!(
            pages::utc_time(Timestamp::from_unix_millis(0)),
            "1970-01-01 00:00 UTC"
        );
        assert_eq!(
            pages::utc_time(Timestamp::from_unix_millis(1_709_210_096_000)),
            "2024-02-29 12:34 UTC"
        );
        assert_eq!(
            pages::utc_time(Timestamp::from_unix_millis(-86_400_000)),
            "1969-12-31 00:00 UTC"
        );
    }
}

/// `POST /forgot`, `/reset` and `/verify-email` forms.
#[derive(Default, Deserialize)]
pub struct LinkForm {
    /// `/forgot`: a login name or a verified address.
    pub login: Option<String>,
    /// `/reset` and `/verify-email`: the link's token.
    pub token: Option<String>,
    /// `/reset`: the new password.
    pub new_password: Option<String>,
    /// `/login/magic`: the "Keep me signed in" checkbox (present when
    /// ticked).
    #[serde(default)]
    pub remember: Option<String>,
    /// The form's CSRF token.
    pub csrf_token: Option<String>,
}

impl std::fmt::Debug for LinkForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkForm([REDACTED])")
    }
}

const FORGOT_FIELDS: &str =
    r#"<label>User name or email <input name="login" autocomplete="username" required></label>"#;

fn token_input(token: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"token\" value=\"{}\">",
        pages::escape(token)
    )
}

/// The sign-in link's form: its token and "remember me".
fn magic_fields(token: &str) -> String {
    format!("{}{}", token_input(token), pages::REMEMBER_FIELD)
}

fn reset_fields(token: &str) -> String {
    format!(
        r#"{}<label>New password <input name="new_password" type="password" autocomplete="new-password" required></label>"#,
        token_input(token)
    )
}

/// A link page's form again, with the error and its status.
async fn link_page_error(
    auth: &RequestAuth,
    (title, intro, action): (&str, &str, &str),
    fields: &str,
    error: &AuthError,
) -> Reply {
    let mut message = error.to_string();
    if let Some(reason) = error.reason() {
        message = format!("{message} ({reason})");
    }
    let token = auth.form_token().await.ok().flatten();
    let page = pages::simple_form(
        title,
        intro,
        action,
        fields,
        Some(&message),
        token.as_deref(),
    );
    html(200, page).failing_with(error)
}

const FORGOT: (&str, &str, &str) = (
    "Forgot password",
    "We mail a link to set a new password to the account's verified address.",
    "/forgot",
);
const RESET: (&str, &str, &str) = ("Set a new password", "Choose a new password.", "/reset");
const VERIFY: (&str, &str, &str) = (
    "Confirm your email",
    "Confirm this address for your account.",
    "/verify-email",
);

/// `GET /forgot`.
pub async fn forgot_page(auth: &RequestAuth) -> Reply {
    let (title, intro, action) = FORGOT;
    unwrap_reply(auth.form_token().await.map(|token| {
        html(
            200,
            pages::simple_form(title, intro, action, FORGOT_FIELDS, None, token.as_deref()),
        )
    }))
}

/// `POST /forgot` (form): the same page for every login.
pub async fn forgot_form(auth: &RequestAuth, form: Body<LinkForm>) -> Reply {
    let form = match form {
        Ok(form) => form,
        Err(rejected) => return invalid_form(FORGOT.0, rejected),
    };
    let login = form.login.unwrap_or_default();
    let result = with_form_token(
        auth,
        form.csrf_token.as_deref(),
        auth.request_password_reset(&login),
    )
    .await;
    match result {
        Ok(()) => html(
            200,
            pages::message(
                FORGOT.0,
                "If an account with a verified email address matches, we have mailed it a link \
                 to set a new password. It works once, for 30 minutes.",
            ),
        ),
        Err(error) => link_page_error(auth, FORGOT, FORGOT_FIELDS, &error).await,
    }
}

/// `GET /reset?token=...`: a form that POSTs the token (opening the link
/// consumes nothing).
pub async fn reset_page(auth: &RequestAuth, token: Option<&str>) -> Reply {
    let (title, intro, action) = RESET;
    let fields = reset_fields(token.unwrap_or_default());
    unwrap_reply(auth.form_token().await.map(|csrf| {
        html(
            200,
            pages::simple_form(title, intro, action, &fields, None, csrf.as_deref()),
        )
    }))
}

/// `POST /reset` (form).
pub async fn reset_form(auth: &RequestAuth, form: Body<LinkForm>) -> Reply {
    let form = match form {
        Ok(form) => form,
        Err(rejected) => return invalid_form(RESET.0, rejected),
    };
    let token = form.token.unwrap_or_default();
    let password = Password::from(form.new_password.unwrap_or_default());
    let result = with_form_token(
        auth,
        form.csrf_token.as_deref(),
        auth.reset_password(&token, &password),
    )
    .await;
    match result {
        Ok(()) => html(
            200,
            pages::message(
                RESET.0,
                "Your password is changed and every session of the account has ended. \
                 Log in with the new password.",
            ),
        ),
        Err(error) => link_page_error(auth, RESET, &reset_fields(&token), &error).await,
    }
}

/// `GET /verify-email?token=...`: a form that POSTs the token (opening
/// the link consumes nothing), naming the account the address would join.
pub async fn verify_page(auth: &RequestAuth, token: Option<&str>) -> Reply {
    let (title, intro, action) = VERIFY;
    let fields = token_input(token.unwrap_or_default());
    // A link somebody else's registration sent shows their account's name;
    // a store that cannot answer now leaves the page without it.
    let account = match token {
        Some(token) => auth.verification_account(token).await.ok().flatten(),
        None => None,
    };
    let intro = match &account {
        Some(login) => format!(
            "Confirm this address for the account <b>{}</b>. Not your account? Do not confirm it.",
            pages::escape(login)
        ),
        None => intro.to_owned(),
    };
    unwrap_reply(auth.form_token().await.map(|csrf| {
        html(
            200,
            pages::simple_form(title, &intro, action, &fields, None, csrf.as_deref()),
        )
    }))
}

/// `POST /verify-email` (form).
pub async fn verify_form(auth: &RequestAuth, form: Body<LinkForm>) -> Reply {
    let form = match form {
        Ok(form) => form,
        Err(rejected) => return invalid_form(VERIFY.0, rejected),
    };
    let token = form.token.unwrap_or_default();
    let result = with_form_token(auth, form.csrf_token.as_deref(), auth.verify_email(&token)).await;
    match result {
        Ok(()) => html(
            200,
            pages::message(VERIFY.0, "Your email address is confirmed."),
        ),
        Err(error) => link_page_error(auth, VERIFY, &token_input(&token), &error).await,
    }
}

const MAGIC_REQUEST: (&str, &str, &str) = (
    "Email me a sign-in link",
    "We mail a link that signs you in to the account's verified address.",
    "/login/magic/request",
);
const MAGIC: (&str, &str, &str) = (
    "Sign in",
    "Sign in with the link from your mail.",
    "/login/magic",
);

/// `GET /login/magic?token=...`: with a token, a form that POSTs it (opening
/// the link consumes nothing), naming the account it signs in to; without,
/// the form that asks for a link.
pub async fn magic_page(auth: &RequestAuth, token: Option<&str>) -> Reply {
    let ((title, intro, action), fields) = match token {
        Some(token) => (MAGIC, magic_fields(token)),
        None => (MAGIC_REQUEST, FORGOT_FIELDS.to_owned()),
    };
    // The account the link is for: a link somebody else sent shows their
    // name, not the reader's.
    // A store that cannot answer now leaves the page without the name
    // (the link is still checked when it is used).
    let account = match token {
        Some(token) => auth.magic_link_account(token).await.ok().flatten(),
        None => None,
    };
    let intro = match &account {
        Some(login) => format!(
            "Sign in as <b>{}</b> with the link from your mail. Not you? Do not use it.",
            pages::escape(login)
        ),
        None => intro.to_owned(),
    };
    unwrap_reply(auth.form_token().await.map(|csrf| {
        html(
            200,
            pages::simple_form(title, &intro, action, &fields, None, csrf.as_deref()),
        )
    }))
}

/// `POST /login/magic/request` (form): the same page for every login.
pub async fn magic_request_form(auth: &RequestAuth, form: Body<LinkForm>) -> Reply {
    let form = match form {
        Ok(form) => form,
        Err(rejected) => return invalid_form(MAGIC_REQUEST.0, rejected),
    };
    let login = form.login.unwrap_or_default();
    let result = with_form_token(
        auth,
        form.csrf_token.as_deref(),
        auth.request_magic_link(&login),
    )
    .await;
    match result {
        Ok(()) => html(
            200,
            pages::message(
                MAGIC_REQUEST.0,
                "If an account with a verified email address matches, we have mailed it a \
                 sign-in link. It works once, for 15 minutes.",
            ),
        ),
        Err(error) => link_page_error(auth, MAGIC_REQUEST, FORGOT_FIELDS, &error).await,
    }
}

/// `POST /login/magic` (form): signs in, then on to the account page (or
/// the second factor).
pub async fn magic_form(auth: &RequestAuth, form: Body<LinkForm>) -> Reply {
    let form = match form {
        Ok(form) => form,
        Err(rejected) => return invalid_form(MAGIC.0, rejected),
    };
    let token = form.token.unwrap_or_default();
    auth.remember_me(form.remember.is_some());
    let result = with_form_token(
        auth,
        form.csrf_token.as_deref(),
        auth.finish_magic_link(&token),
    )
    .await;
    match result {
        Ok(LoginOutcome::LoggedIn(_)) => Reply::redirect("/account".to_owned()),
        Ok(LoginOutcome::MfaRequired { .. }) => {
            Reply::redirect(with_next("/login/mfa", "/account"))
        }
        Err(error) => link_page_error(auth, MAGIC, &magic_fields(&token), &error).await,
    }
}

/// `GET /api/openapi.json`: the OpenAPI 3.1 document of the JSON API
/// (built once, see [`crate::openapi`]); no session needed.
pub fn openapi() -> Reply {
    Reply::json(200, crate::openapi::json().to_owned())
}

/// A token answer: never stored by a cache (RFC 6749 5.1).
fn no_store(mut reply: Reply) -> Reply {
    reply.headers.push(("cache-control", "no-store".into()));
    reply.headers.push(("pragma", "no-cache".into()));
    reply
}

/// The answer with a token pair.
fn token_answer(pair: auth_core::flow::TokenPair) -> Reply {
    no_store(json(
        200,
        &crate::TokenAnswer {
            access_token: pair.access_token,
            token_type: "Bearer",
            expires_in: pair.expires_in,
            refresh_token: pair.refresh_token,
        },
    ))
}

/// `POST /api/token`: a sign-in for tokens (the same throttles and
/// answers as `POST /api/login`), or `mfa_required` with an `mfa_token`.
pub async fn token(auth: &RequestAuth, body: Body<crate::TokenRequest>) -> Reply {
    let body = match body {
        Ok(body) => body,
        Err(rejected) => return bad_body(rejected),
    };
    let result = auth
        .token_login(&body.username, &Password::from(body.password))
        .await;
    unwrap_reply(result.map(|outcome| match outcome {
        auth_core::flow::TokenOutcome::Issued(pair) => token_answer(pair),
        auth_core::flow::TokenOutcome::MfaRequired { mfa_token, .. } => no_store(json(
            200,
            &crate::MfaRequiredAnswer {
                mfa_required: true,
                mfa_token,
            },
        )),
    }))
}

/// `POST /api/token/mfa`: the second step of a token sign-in.
pub async fn token_mfa(auth: &RequestAuth, body: Body<crate::TokenMfaRequest>) -> Reply {
    let body = match body {
        Ok(body) => body,
        Err(rejected) => return bad_body(rejected),
    };
    unwrap_reply(
        auth.token_mfa(&body.mfa_token, &body.code)
            .await
            .map(token_answer),
    )
}

/// `POST /api/token/refresh`: new tokens for a refresh token.
pub async fn token_refresh(auth: &RequestAuth, body: Body<crate::RefreshRequest>) -> Reply {
    let body = match body {
        Ok(body) => body,
        Err(rejected) => return bad_body(rejected),
    };
    unwrap_reply(
        auth.refresh_tokens(&body.refresh_token)
            .await
            .map(token_answer),
    )
}

/// `POST /api/token/revoke`: 200 whether or not the token was known
/// (RFC 7009).
pub async fn token_revoke(auth: &RequestAuth, body: Body<crate::RefreshRequest>) -> Reply {
    let body = match body {
        Ok(body) => body,
        Err(rejected) => return bad_body(rejected),
    };
    unwrap_reply(
        auth.revoke_refresh_token(&body.refresh_token)
            .await
            .map(|()| Reply::json(200, "{}".to_owned())),
    )
}

/// `GET /.well-known/jwks.json`: the public keys that verify access
/// tokens.
pub fn jwks(auth: &RequestAuth) -> Reply {
    let authenticator = auth.authenticator();
    let result = authenticator.token_service().map(|service| {
        let now = authenticator.sessions().clock().now();
        let mut reply = Reply::json(200, service.jwks(now).to_string());
        reply
            .headers
            .push(("cache-control", "public, max-age=60".into()));
        reply
    });
    unwrap_reply(result)
}
