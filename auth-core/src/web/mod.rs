//! The framework-neutral request pipeline every adapter runs, so no adapter
//! decides anything itself. An adapter converts its request into header
//! strings and a peer address, calls these functions, and converts back:
//!
//! 1. [`Auth::check_csrf`] on every request (safe methods pass);
//! 2. [`Auth::client`] for the client IP (trusted proxies) and user agent;
//! 3. [`Auth::load_session`] lazily, when a handler first asks for auth;
//! 4. after the handler: [`Auth::set_cookie`] when the session got a new ID,
//!    [`Auth::removal_cookie`] when it ended;
//! 5. errors: [`AuthError::status`], [`AuthError::retry_after_secs`] and
//!    [`error_body`] for the JSON body; HTML routes redirect to the login
//!    page with a [`safe_next`] parameter.
//!
//! Adapters do not call these steps one by one: [`Auth::begin`] runs 1 and
//! 2 and gives a [`RequestAuth`], which loads the session (3), runs every
//! flow, and answers [`RequestAuth::finish`] (4); [`Reply`] carries every
//! response the core decides on (5).

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use crate::csrf::{CsrfGuard, CsrfRejection, CsrfTokens, RequestMeta};
use crate::flow::{AuthError, Authenticator, Client};
use crate::rate_limit::TrustedProxies;
use crate::session::Session;
use crate::user::AnyUser;

mod headers;
mod hosts;
mod request;

pub use headers::SecurityHeaders;
pub use hosts::{AllowedHosts, InvalidHost};

pub use request::{Finish, Guard, RequestAuth, ResponseHeaders};

/// A framework-neutral response the core decided on (a refusal, an error,
/// a redirect); every adapter converts it the same way.
/// `Debug` shows the status and header names only: a body can hold a TOTP
/// secret or recovery codes, and a header a session-bound value.
#[derive(Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Headers to set (`Content-Type`, `Retry-After`, `Location`): a fixed
    /// value is borrowed, so adapters set it without a copy.
    pub headers: Vec<(&'static str, Cow<'static, str>)>,
    /// The body (JSON for errors, empty for redirects).
    pub body: String,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(name, _)| *name).collect();
        f.debug_struct("Reply")
            .field("status", &self.status)
            .field("headers", &names)
            .field(
                "body",
                &format_args!("[{} bytes REDACTED]", self.body.len()),
            )
            .finish()
    }
}

/// An error as its client sees it (the status and the public message, no
/// internal source: a driver's text can carry a connection string), for
/// the `Debug` of the adapters' rejection types, which frameworks log
/// (Rocket's guard failures, actix-web's `Logger`).
pub struct PublicError<'a>(pub &'a AuthError);

impl std::fmt::Debug for PublicError<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthError")
            .field("status", &self.0.status())
            .field("error", &format_args!("{}", self.0))
            .finish()
    }
}

impl Reply {
    /// A JSON body with `status`.
    pub fn json(status: u16, body: String) -> Self {
        Self {
            status,
            headers: vec![("content-type", Cow::Borrowed("application/json"))],
            body,
        }
    }

    /// An error: status, `Retry-After` and JSON body from the core
    /// ([`AuthError::status`], [`AuthError::retry_after_secs`],
    /// [`error_body`]). Internal errors are logged here (their text never
    /// reaches the client).
    pub fn error(error: &AuthError) -> Self {
        if let AuthError::Internal(source) = error {
            tracing::error!(error = %source, "auth: internal error");
        }
        Self::json(error.status(), error_body(error)).failing_with(error)
    }

    /// This reply (e.g. an HTML page explaining `error`) with the error's
    /// status and `Retry-After`.
    #[must_use]
    pub fn failing_with(mut self, error: &AuthError) -> Self {
        self.status = error.status();
        if let Some(secs) = error.retry_after_secs() {
            self.headers
                .push(("retry-after", Cow::Owned(secs.to_string())));
        }
        self
    }

    /// `303 See Other` to `location`.
    pub fn redirect(location: String) -> Self {
        Self {
            status: 303,
            headers: vec![("location", Cow::Owned(location))],
            body: String::new(),
        }
    }
}

/// Everything an adapter needs, built once at start-up; cheap to clone
/// (one shared allocation: every request holds a handle to it).
#[derive(Debug, Clone)]
pub struct Auth {
    parts: Arc<Parts>,
}

#[derive(Debug)]
struct Parts {
    authenticator: Authenticator,
    security: SecurityHeaders,
    hosts: AllowedHosts,
    proxies: TrustedProxies,
    csrf: CsrfGuard,
    tokens: Option<Arc<CsrfTokens>>,
    login_page: String,
}

impl Auth {
    /// The pipeline, from the builder's parts.
    pub(crate) fn from_parts(
        authenticator: Authenticator,
        security: SecurityHeaders,
        hosts: AllowedHosts,
        proxies: TrustedProxies,
        csrf: CsrfGuard,
        tokens: Option<CsrfTokens>,
        login_page: String,
    ) -> Self {
        Self {
            parts: Arc::new(Parts {
                authenticator,
                security,
                hosts,
                proxies,
                csrf,
                tokens: tokens.map(Arc::new),
                login_page,
            }),
        }
    }

    /// The security headers every response gets.
    pub fn security_headers(&self) -> &SecurityHeaders {
        &self.parts.security
    }

    /// The flows.
    pub fn authenticator(&self) -> &Authenticator {
        &self.parts.authenticator
    }

    /// Step 1: the cross-origin check for a request.
    pub fn check_csrf<'a>(
        &self,
        method: &'a str,
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<(), CsrfRejection> {
        let mut meta = RequestMeta {
            method,
            host: None,
            sec_fetch_site: None,
            origin: None,
        };
        let mut repeated = false;
        for (name, value) in headers {
            // The first `Host`, as the allow-list reads it.
            if name.eq_ignore_ascii_case("host") {
                meta.host = meta.host.or(Some(value));
            } else if name.eq_ignore_ascii_case("sec-fetch-site") {
                repeated |= meta.sec_fetch_site.replace(value).is_some();
            } else if name.eq_ignore_ascii_case("origin") {
                repeated |= meta.origin.replace(value).is_some();
            }
        }
        // A browser sends each once: two are something in between (a proxy
        // adding its own) deciding instead of the browser.
        if repeated && !CsrfGuard::is_safe_method(method) {
            return Err(CsrfRejection::CrossOrigin);
        }
        self.parts.csrf.check(&meta)
    }

    /// Step 2: the client behind the request, with its device cookie (see
    /// [`Client::device`]).
    pub fn client<'a>(
        &self,
        peer: IpAddr,
        headers: impl IntoIterator<Item = (&'a str, &'a str)> + Clone,
    ) -> Client {
        let mut client = self.base_client(peer, headers.clone());
        let cookies = headers
            .into_iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("cookie"))
            .map(|(_, value)| value);
        client.device = self.authenticator().cookies().device_id(cookies);
        client
    }

    /// The client without its device cookie: what every request needs
    /// (decoding the device cookie waits until a flow that throttles asks).
    fn base_client<'a>(
        &self,
        peer: IpAddr,
        headers: impl IntoIterator<Item = (&'a str, &'a str)> + Clone,
    ) -> Client {
        let ip = self.parts.proxies.client_ip(peer, headers.clone());
        let user_agent = headers
            .into_iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("user-agent"))
            .map(|(_, value)| truncated(value, 512).to_owned());
        Client {
            ip,
            user_agent,
            device: None,
            remember: false,
        }
    }

    /// Step 3: the session named by the `Cookie` header lines, if it is
    /// live, with its user (read once for the stamp check and the
    /// handler). When several cookies carry the session name, the first
    /// live one counts (a dead duplicate never shadows it).
    pub async fn load_session<'a, I>(
        &self,
        cookie_headers: I,
    ) -> Result<Option<(Session, Option<AnyUser>)>, AuthError>
    where
        I: IntoIterator<Item = &'a str>,
        I::IntoIter: Send,
    {
        let authenticator = &self.parts.authenticator;
        for id in authenticator.cookies().session_ids(cookie_headers) {
            if let Some(found) = authenticator.load_session(id).await? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// Step 4: the `Set-Cookie` value for a session that got a new ID.
    pub fn set_cookie(&self, session: &Session) -> String {
        self.parts.authenticator.session_cookie(session)
    }

    /// Step 4: the `Set-Cookie` value that removes the cookie.
    pub fn removal_cookie(&self) -> String {
        self.parts.authenticator.removal_cookie()
    }

    /// Where to send a refused request instead of an error body: the login
    /// page (with a safe `next`) when a browser asked for HTML (`Accept`
    /// contains `text/html`) and the refusal is "not logged in". `None`
    /// means answer with the error itself.
    pub fn redirect_for(
        &self,
        error: &AuthError,
        accept: Option<&str>,
        path_and_query: &str,
    ) -> Option<String> {
        let wants_html = accept.is_some_and(|a| a.contains("text/html"));
        (wants_html && matches!(error, AuthError::NotAuthenticated))
            .then(|| self.login_redirect(path_and_query))
    }

    /// Whether a response must carry `Cache-Control: no-store`: whenever it
    /// was made for a session (its content is personal) or changes the
    /// cookie.
    pub fn no_store(had_session: bool, cookie_changed: bool) -> bool {
        had_session || cookie_changed
    }

    /// The login page, with `next` when it is a safe same-origin path.
    pub fn login_redirect(&self, next: &str) -> String {
        with_next(&self.parts.login_page, next)
    }
}

/// `path?next=...` with `next` percent-encoded, or `path` alone when `next`
/// is not a safe same-origin path ([`safe_next`]).
pub fn with_next(path: &str, next: &str) -> String {
    match safe_next(next) {
        Some(next) => format!("{path}?next={}", encode_query(next)),
        None => path.to_owned(),
    }
}

/// `next` if it is a same-origin path (`/account`, `/a?b=c`), else `None`:
/// no scheme, no `//host` or `/\host`, no control characters, so a login
/// redirect is never an open redirect.
pub fn safe_next(next: &str) -> Option<&str> {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && next.len() <= 2048
        && !next.chars().any(|c| c.is_control() || c == '\\');
    ok.then_some(next)
}

fn encode_query(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The JSON body for an error: `{"error": "...", "reason": "..."}` (reason
/// only for policy refusals). Never contains a secret.
pub fn error_body(error: &AuthError) -> String {
    let mut body = serde_json::json!({ "error": error.to_string() });
    if let Some(reason) = error.reason() {
        body["reason"] = serde_json::Value::from(reason);
    }
    body.to_string()
}

/// The JSON body for a cross-origin refusal.
pub fn csrf_error_body(rejection: &CsrfRejection) -> String {
    serde_json::json!({ "error": rejection.to_string() }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_never_an_open_redirect() {
        for good in ["/", "/account", "/a/b?c=d#e"] {
            assert_eq!(safe_next(good), Some(good));
        }
        for bad in [
            "",
            "account",
            "//evil.example",
            "/\\evil.example",
            "https://evil.example",
            "javascript:alert(1)",
            "/a\nb",
            "/a\\b",
            " /account",
        ] {
            assert_eq!(safe_next(bad), None, "{bad:?}");
        }
        assert_eq!(encode_query("/a?b=c&d"), "/a%3Fb%3Dc%26d");
    }

    #[test]
    fn reply_debug_shows_no_body_and_no_header_value() {
        let reply = Reply::json(200, r#"{"secret":"JBSWY3DPEHPK3PXP"}"#.to_owned())
            .failing_with(&AuthError::Busy);
        let printed = format!("{reply:?}");
        assert!(!printed.contains("JBSWY3DPEHPK3PXP"), "{printed}");
        assert!(
            printed.contains("503") && printed.contains("retry-after"),
            "{printed}"
        );
        let redirect = format!(
            "{:?}",
            Reply::redirect("/login?next=%2Fsecret-path".to_owned())
        );
        assert!(!redirect.contains("secret-path"), "{redirect}");
    }

    #[test]
    fn error_bodies_name_the_policy_rule() {
        let body = error_body(&AuthError::Policy(crate::password::PolicyViolation::Common));
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["reason"], "common_password");
        let body = error_body(&AuthError::InvalidCredentials);
        assert_eq!(body, r#"{"error":"invalid credentials"}"#);
    }
}

/// `value`, cut to at most `max` bytes on a character boundary (one copy
/// later, rather than a character at a time).
fn truncated(value: &str, max: usize) -> &str {
    let mut end = value.len().min(max);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

#[cfg(test)]
mod truncation_tests {
    use super::truncated;

    #[test]
    fn user_agents_are_cut_on_a_character_boundary() {
        assert_eq!(truncated("curl/8.5", 512), "curl/8.5");
        assert_eq!(truncated("abc", 3), "abc");
        // 'é' is two bytes: a cut inside it keeps the whole character out.
        assert_eq!(truncated("aé", 2), "a");
        assert_eq!(truncated("aé", 3), "aé");
        assert_eq!(truncated(&"x".repeat(600), 512).len(), 512);
    }
}

#[cfg(test)]
mod finish_tests {
    use super::*;

    /// Response headers as a list of lines, for [`Finish::apply`].
    #[derive(Default)]
    struct Lines(Vec<(String, String)>);

    impl ResponseHeaders for Lines {
        fn contains(&self, name: &str) -> bool {
            self.0.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
        }
        fn set(&mut self, name: &'static str, value: Cow<'static, str>) {
            self.0.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
            self.0.push((name.to_owned(), value.into_owned()));
        }
        fn append(&mut self, name: &'static str, value: String) {
            self.0.push((name.to_owned(), value));
        }
    }

    /// The policy every adapter applies after the handler: `no-store`
    /// replaces the handler's caching, cookies come after the handler's,
    /// and a security header the handler set is kept.
    #[test]
    fn finishing_replaces_caching_appends_cookies_and_keeps_the_handlers_headers() {
        let mut handler = Lines::default();
        handler.append("Cache-Control", "public, max-age=60".to_owned());
        handler.append("Set-Cookie", "theirs=1".to_owned());
        handler.append("Referrer-Policy", "strict-origin".to_owned());
        let finish = Finish {
            set_cookie: Some("__Host-session=x".to_owned()),
            visitor_cookie: None,
            device_cookie: Some("__Host-session-device=y".to_owned()),
            no_store: true,
            security: SecurityHeaders::new(),
            bearer_challenge: None,
        };
        finish.apply(&mut handler);
        let get = |name: &str| -> Vec<&str> {
            handler
                .0
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
                .collect()
        };
        assert_eq!(get("cache-control"), ["no-store"]);
        assert_eq!(
            get("set-cookie"),
            ["theirs=1", "__Host-session=x", "__Host-session-device=y"]
        );
        assert_eq!(
            get("referrer-policy"),
            ["strict-origin"],
            "the handler's wins"
        );
        assert_eq!(get("x-content-type-options"), ["nosniff"]);
        assert_eq!(get("content-security-policy"), ["frame-ancestors 'none'"]);
        // Without a reason for `no-store`, the handler's caching stays.
        let mut cached = Lines::default();
        cached.append("cache-control", "public".to_owned());
        Finish {
            set_cookie: None,
            visitor_cookie: None,
            device_cookie: None,
            no_store: false,
            security: SecurityHeaders::new(),
            bearer_challenge: None,
        }
        .apply(&mut cached);
        assert_eq!(
            cached.0[0],
            ("cache-control".to_owned(), "public".to_owned())
        );
    }
}
