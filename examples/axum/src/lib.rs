//! The demo app on axum: the JSON API and pages of `DEMO-API.md`, built on
//! `auth-axum`. `app` is what the binary serves and what the conformance
//! suite drives in-process.

use auth_axum::{AuthLayer, AuthRejection, AuthSession, CurrentUser, OptionalUser, require_login};
use auth_core::flow::{AuthError, LoginOutcome};
use auth_core::password::Password;
use auth_core::session::SessionHandle;
use auth_core::web::{Auth, safe_next};
use axum::Router;
use axum::extract::rejection::{FormRejection, JsonRejection};
use axum::extract::{DefaultBodyLimit, Form, Json, Path, Query};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::from_fn;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{delete, get, post};
use example_shared::{
    ChangePassword, Credentials, LoginAnswer, MAX_BODY_BYTES, Me, Registered, SessionEntry,
    error_json, pages,
};
use serde::Deserialize;

/// The whole demo around `auth`.
pub fn app(auth: Auth) -> Router {
    let api_protected = Router::new()
        .route("/api/me", get(me))
        .route("/api/password", post(change_password))
        .route("/api/sessions", get(list_sessions))
        .route("/api/sessions/{id}", delete(revoke_session))
        .route("/api/sessions/revoke-others", post(revoke_others))
        .route_layer(from_fn(require_login));
    let pages_protected = Router::new()
        .route("/account", get(account_page))
        .route("/account/password", post(account_password))
        .route("/account/revoke-others", post(account_revoke_others))
        .route_layer(from_fn(require_login));
    Router::new()
        .route("/api/register", post(register))
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .merge(api_protected)
        .route("/", get(home))
        .route("/login", get(login_page).post(login_form))
        .route("/register", get(register_page).post(register_form))
        .route("/logout", post(logout_form))
        .merge(pages_protected)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(AuthLayer::new(auth))
}

fn json(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Malformed, mistyped or oversized JSON: a JSON 4xx, never a 5xx.
fn bad_json(rejection: &JsonRejection) -> Response {
    let status = rejection.status();
    let status = if status.is_client_error() {
        status
    } else {
        StatusCode::BAD_REQUEST
    };
    json(status, error_json("invalid request body"))
}

async fn not_found() -> Response {
    json(StatusCode::NOT_FOUND, error_json("not found"))
}

async fn method_not_allowed() -> Response {
    json(
        StatusCode::METHOD_NOT_ALLOWED,
        error_json("method not allowed"),
    )
}

async fn register(auth: AuthSession, body: Result<Json<Credentials>, JsonRejection>) -> Response {
    let Json(body) = match body {
        Ok(body) => body,
        Err(rejection) => return bad_json(&rejection),
    };
    let result = auth
        .authenticator()
        .register(
            &body.username,
            &Password::from(body.password),
            auth.client(),
        )
        .await;
    match result {
        Ok(user) => (
            StatusCode::CREATED,
            Json(Registered {
                username: user.display_name,
            }),
        )
            .into_response(),
        Err(error) => AuthRejection(error).into_response(),
    }
}

async fn login(auth: AuthSession, body: Result<Json<Credentials>, JsonRejection>) -> Response {
    let Json(body) = match body {
        Ok(body) => body,
        Err(rejection) => return bad_json(&rejection),
    };
    match auth
        .login(&body.username, &Password::from(body.password))
        .await
    {
        Ok(LoginOutcome::LoggedIn(_)) => Json(LoginAnswer {
            mfa_required: false,
            methods: None,
        })
        .into_response(),
        Ok(LoginOutcome::MfaRequired { methods, .. }) => Json(LoginAnswer {
            mfa_required: true,
            methods: Some(methods.iter().map(|m| m.as_str().to_owned()).collect()),
        })
        .into_response(),
        Err(rejection) => rejection.into_response(),
    }
}

async fn logout(auth: AuthSession) -> Result<StatusCode, AuthRejection> {
    auth.logout().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn me(CurrentUser(user): CurrentUser) -> Json<Me> {
    Json(Me {
        username: user.display_name,
        mfa_enabled: !user.second_factors.is_empty(),
    })
}

async fn change_password(
    auth: AuthSession,
    body: Result<Json<ChangePassword>, JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(body) => body,
        Err(rejection) => return bad_json(&rejection),
    };
    match auth
        .change_password(
            &Password::from(body.current_password),
            &Password::from(body.new_password),
        )
        .await
    {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(rejection) => rejection.into_response(),
    }
}

async fn list_sessions(auth: AuthSession) -> Result<Json<Vec<SessionEntry>>, AuthRejection> {
    let sessions = auth.list_sessions().await?;
    Ok(Json(sessions.into_iter().map(SessionEntry::from).collect()))
}

async fn revoke_session(
    auth: AuthSession,
    Path(id): Path<String>,
) -> Result<Response, AuthRejection> {
    if auth.revoke(&SessionHandle::new(id)).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Ok(json(StatusCode::NOT_FOUND, error_json("no such session")))
    }
}

async fn revoke_others(auth: AuthSession) -> Result<StatusCode, AuthRejection> {
    auth.sign_out_everywhere().await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------
// Pages
// ---------------------------------------------------------------------------

async fn home(OptionalUser(user): OptionalUser) -> Html<String> {
    Html(pages::home(user.as_ref().map(|u| u.display_name.as_str())))
}

#[derive(Debug, Deserialize)]
struct NextQuery {
    next: Option<String>,
}

async fn login_page(
    auth: AuthSession,
    Query(query): Query<NextQuery>,
) -> Result<Html<String>, AuthRejection> {
    let next = query.next.as_deref().and_then(safe_next);
    let token = auth.form_token().await?;
    Ok(Html(pages::credentials_form(
        "Log in",
        "/login",
        None,
        next,
        token.as_deref(),
    )))
}

async fn register_page(auth: AuthSession) -> Result<Html<String>, AuthRejection> {
    let token = auth.form_token().await?;
    Ok(Html(pages::credentials_form(
        "Register",
        "/register",
        None,
        None,
        token.as_deref(),
    )))
}

#[derive(Debug, Deserialize)]
struct CredentialsForm {
    username: String,
    password: String,
    next: Option<String>,
    csrf_token: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TokenForm {
    csrf_token: Option<String>,
}

async fn page_error(
    auth: &AuthSession,
    (title, action): (&str, &str),
    error: &AuthError,
    next: Option<&str>,
) -> Response {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut message = error.to_string();
    if let Some(reason) = error.reason() {
        message = format!("{message} ({reason})");
    }
    let token = auth.form_token().await.ok().flatten();
    let page = pages::credentials_form(title, action, Some(&message), next, token.as_deref());
    let mut response = (status, Html(page)).into_response();
    if let Some(secs) = error.retry_after_secs() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

fn invalid_form(title: &str) -> Response {
    let body = "<p class=\"error\">invalid form</p>";
    (StatusCode::BAD_REQUEST, Html(pages::layout(title, body))).into_response()
}

async fn login_form(
    auth: AuthSession,
    form: Result<Form<CredentialsForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return invalid_form("Log in");
    };
    let next = form
        .next
        .as_deref()
        .and_then(safe_next)
        .unwrap_or("/account")
        .to_owned();
    if let Err(AuthRejection(error)) = auth.verify_form_token(form.csrf_token.as_deref()).await {
        return page_error(&auth, ("Log in", "/login"), &error, Some(&next)).await;
    }
    match auth
        .login(&form.username, &Password::from(form.password))
        .await
    {
        Ok(_) => Redirect::to(&next).into_response(),
        Err(AuthRejection(error)) => {
            page_error(&auth, ("Log in", "/login"), &error, Some(&next)).await
        }
    }
}

async fn register_form(
    auth: AuthSession,
    form: Result<Form<CredentialsForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return invalid_form("Register");
    };
    if let Err(AuthRejection(error)) = auth.verify_form_token(form.csrf_token.as_deref()).await {
        return page_error(&auth, ("Register", "/register"), &error, None).await;
    }
    match auth
        .authenticator()
        .register(
            &form.username,
            &Password::from(form.password),
            auth.client(),
        )
        .await
    {
        Ok(_) => Redirect::to("/login").into_response(),
        Err(error) => page_error(&auth, ("Register", "/register"), &error, None).await,
    }
}

async fn logout_form(
    auth: AuthSession,
    form: Result<Form<TokenForm>, FormRejection>,
) -> Result<Redirect, AuthRejection> {
    let token = form.ok().and_then(|Form(f)| f.csrf_token);
    auth.verify_form_token(token.as_deref()).await?;
    auth.logout().await?;
    Ok(Redirect::to("/"))
}

async fn account_page(
    auth: AuthSession,
    CurrentUser(user): CurrentUser,
) -> Result<Html<String>, AuthRejection> {
    let sessions = auth.list_sessions().await?;
    let token = pages::token_field(auth.form_token().await?.as_deref());
    let rows: String = sessions
        .into_iter()
        .map(|s| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                pages::escape(s.ip.as_deref().unwrap_or("-")),
                pages::escape(s.user_agent.as_deref().unwrap_or("-")),
                if s.current { "this session" } else { "" }
            )
        })
        .collect();
    let body = format!(
        r#"<p>Logged in as <b>{name}</b>.</p>
<h2>Active sessions</h2><table><tr><th>IP</th><th>Browser</th><th></th></tr>{rows}</table>
<form method="post" action="/account/revoke-others">{token}<button>Sign out everywhere else</button></form>
<h2>Change password</h2>
<form method="post" action="/account/password">{token}
<label>Current password <input name="current_password" type="password" autocomplete="current-password" required></label>
<label>New password <input name="new_password" type="password" autocomplete="new-password" required></label>
<button>Change password</button></form>
<form method="post" action="/logout">{token}<button>Log out</button></form>"#,
        name = pages::escape(&user.display_name),
    );
    Ok(Html(pages::layout("Account", &body)))
}

#[derive(Debug, Deserialize)]
struct PasswordForm {
    current_password: String,
    new_password: String,
    csrf_token: Option<String>,
}

async fn account_password(
    auth: AuthSession,
    form: Result<Form<PasswordForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return invalid_form("Account");
    };
    let result = match auth.verify_form_token(form.csrf_token.as_deref()).await {
        Ok(()) => {
            auth.change_password(
                &Password::from(form.current_password),
                &Password::from(form.new_password),
            )
            .await
        }
        Err(rejection) => Err(rejection),
    };
    match result {
        Ok(()) => Redirect::to("/account").into_response(),
        Err(AuthRejection(error)) => {
            let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST);
            let message = match error.reason() {
                Some(reason) => format!("{error} ({reason})"),
                None => error.to_string(),
            };
            let body = format!(
                "<p class=\"error\">{}</p><p><a href=\"/account\">Back</a></p>",
                pages::escape(&message)
            );
            (status, Html(pages::layout("Account", &body))).into_response()
        }
    }
}

async fn account_revoke_others(
    auth: AuthSession,
    form: Result<Form<TokenForm>, FormRejection>,
) -> Result<Redirect, AuthRejection> {
    let token = form.ok().and_then(|Form(f)| f.csrf_token);
    auth.verify_form_token(token.as_deref()).await?;
    auth.sign_out_everywhere().await?;
    Ok(Redirect::to("/account"))
}
