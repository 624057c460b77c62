//! Cross-site request protection (ASVS 3.5.1, 3.5.3).
//!
//! [`CsrfGuard`] follows the algorithm of Go 1.25's
//! `net/http.CrossOriginProtection`:
//!
//! 1. `GET`, `HEAD` and `OPTIONS` always pass (they must not change state).
//! 2. `Sec-Fetch-Site: same-origin` or `none` passes; any other value
//!    (`cross-site`, `same-site`) is refused unless the `Origin` is trusted.
//! 3. Without `Sec-Fetch-Site`: no `Origin` passes (a non-browser client, or
//!    a same-origin request from an old browser); an `Origin` whose host
//!    matches the request's `Host` passes; any other is refused unless
//!    trusted.
//!
//! One step beyond Go's: with [`https_origins`](CsrfGuard::https_origins)
//! (which `AuthBuilder` turns on whenever cookies are `Secure`), an
//! `Origin` of `http://` matches only a loopback host: a page an attacker
//! injected into the plain-HTTP site (an old browser without
//! `Sec-Fetch-Site` sends the `SameSite=Lax` cookie from it) is refused.
//! A request that carries two `Origin` or `Sec-Fetch-Site` lines is refused
//! (by `Auth`'s check; a browser never sends two).
//!
//! It applies to every unsafe method, login included. For HTML forms in
//! browsers that send neither header, [`CsrfTokens`] issues and checks
//! session-bound tokens.
//!
//! ```
//! use auth_core::csrf::{CsrfGuard, RequestMeta};
//!
//! let guard = CsrfGuard::default();
//! let cross = RequestMeta {
//!     method: "POST",
//!     host: Some("app.example"),
//!     sec_fetch_site: Some("cross-site"),
//!     origin: Some("https://evil.example"),
//! };
//! assert!(guard.check(&cross).is_err());
//! let api_client = RequestMeta { method: "POST", host: Some("app.example"), sec_fetch_site: None, origin: None };
//! assert!(guard.check(&api_client).is_ok());
//! ```

use std::collections::HashSet;
use std::fmt;

use base64ct::{Base64UrlUnpadded, Encoding};
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretBox};
use sha2::Sha256;

use crate::session::SessionKey;

/// The parts of a request the guard looks at, as header strings.
#[derive(Debug, Clone, Copy)]
pub struct RequestMeta<'a> {
    /// The HTTP method.
    pub method: &'a str,
    /// The `Host` header (or HTTP/2 `:authority`).
    pub host: Option<&'a str>,
    /// The `Sec-Fetch-Site` header.
    pub sec_fetch_site: Option<&'a str>,
    /// The `Origin` header.
    pub origin: Option<&'a str>,
}

/// Why a request was refused. Answer 403.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CsrfRejection {
    /// `Sec-Fetch-Site` says the request comes from another site.
    #[error("cross-origin request refused")]
    CrossOrigin,
    /// No `Sec-Fetch-Site`, and `Origin` does not match `Host`.
    #[error("cross-origin request refused (origin does not match host)")]
    OriginMismatch,
}

impl CsrfRejection {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        403
    }
}

/// A trusted origin that is not `scheme://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid trusted origin {0:?}: expected scheme://host[:port]")]
pub struct InvalidOrigin(pub String);

/// The cross-origin check; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct CsrfGuard {
    trusted_origins: HashSet<String>,
    /// `None` until set: then `AuthBuilder` follows the cookies.
    https_origins: Option<bool>,
}

impl CsrfGuard {
    /// Also accepts unsafe requests whose `Origin` is exactly `origin`:
    /// `scheme://host[:port]`, nothing else (as Go's `AddTrustedOrigin`), so
    /// `null` or a path cannot be trusted by mistake.
    pub fn trust_origin(mut self, origin: &str) -> Result<Self, InvalidOrigin> {
        let origin = origin.trim();
        let valid =
            origin_host(origin).is_some_and(|host| origin.ends_with(host) && !host.is_empty());
        if !valid {
            return Err(InvalidOrigin(origin.to_owned()));
        }
        self.trusted_origins.insert(origin.to_ascii_lowercase());
        Ok(self)
    }

    /// With `on`, an `Origin` of `http://` matches the request's host only
    /// when that host is a loopback one (`localhost`, `*.localhost`,
    /// `127.0.0.0/8`, `[::1]`, where browsers treat plain HTTP as secure);
    /// trusted origins stay trusted. For an app served over HTTPS only
    /// (`AuthBuilder` turns it on whenever cookies are `Secure`, unless it
    /// was set here).
    pub fn https_origins(mut self, on: bool) -> Self {
        self.https_origins = Some(on);
        self
    }

    /// [`https_origins`](Self::https_origins) set to `on` unless it was
    /// set explicitly.
    pub(crate) fn https_origins_by_default(mut self, on: bool) -> Self {
        self.https_origins.get_or_insert(on);
        self
    }

    /// Whether the method never changes state.
    pub fn is_safe_method(method: &str) -> bool {
        matches!(method, "GET" | "HEAD" | "OPTIONS")
    }

    /// Checks one request.
    pub fn check(&self, request: &RequestMeta<'_>) -> Result<(), CsrfRejection> {
        if Self::is_safe_method(request.method) {
            return Ok(());
        }
        // Empty headers count as absent, as in Go.
        let sec_fetch_site = request
            .sec_fetch_site
            .map(str::trim)
            .filter(|v| !v.is_empty());
        let origin = request.origin.map(str::trim).filter(|v| !v.is_empty());
        match sec_fetch_site {
            Some(site)
                if site.eq_ignore_ascii_case("same-origin")
                    || site.eq_ignore_ascii_case("none") =>
            {
                return Ok(());
            }
            Some(_) => {
                return if self.is_trusted(origin) {
                    Ok(())
                } else {
                    Err(CsrfRejection::CrossOrigin)
                };
            }
            None => {}
        }
        let Some(origin) = origin else {
            return Ok(());
        };
        if let (Some(origin_host), Some(host)) = (origin_host(origin), request.host)
            && origin_host.eq_ignore_ascii_case(host.trim())
            && (self.https_origins != Some(true) || is_https(origin) || is_loopback(origin_host))
        {
            return Ok(());
        }
        if self.is_trusted(Some(origin)) {
            Ok(())
        } else {
            Err(CsrfRejection::OriginMismatch)
        }
    }

    fn is_trusted(&self, origin: Option<&str>) -> bool {
        origin.is_some_and(|o| self.trusted_origins.contains(&o.to_ascii_lowercase()))
    }
}

/// Whether an `Origin` value's scheme is `https`.
fn is_https(origin: &str) -> bool {
    origin
        .trim()
        .split_once("://")
        .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("https"))
}

/// Whether `host[:port]` names a loopback host: `localhost` and its
/// subdomains, `127.0.0.0/8`, `[::1]`.
fn is_loopback(host_port: &str) -> bool {
    let host = match host_port.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => host_port.split(':').next().unwrap_or_default(),
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The `host[:port]` of an `Origin` value (`scheme://host[:port]`); `None`
/// for `null` or anything unparsable.
fn origin_host(origin: &str) -> Option<&str> {
    let (scheme, rest) = origin.trim().split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return None;
    }
    let host = rest.split(['/', '?', '#']).next()?;
    (!host.is_empty() && !host.contains('@')).then_some(host)
}

/// Session-bound form tokens: `nonce || HMAC-SHA256(key, nonce || session
/// key)`, base64url. A fresh nonce per form masks the token (no BREACH
/// oracle); verification is constant-time.
pub struct CsrfTokens {
    key: SecretBox<[u8]>,
}

impl fmt::Debug for CsrfTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CsrfTokens([REDACTED])")
    }
}

const NONCE_LEN: usize = 16;
/// The MAC's domain for session-bound tokens (the format of v1).
const SESSION_DOMAIN: &[u8] = b"auth-core csrf v1";
/// The MAC's domain for visitor-bound tokens.
const VISITOR_DOMAIN: &[u8] = b"auth-core csrf visitor v1";
const MAC_LEN: usize = 32;

/// A CSRF key shorter than 32 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the CSRF key must be at least 32 bytes")]
pub struct WeakCsrfKey;

impl CsrfTokens {
    /// Tokens under `key` (at least 32 bytes, from configuration: every
    /// instance must share it).
    pub fn new(key: impl Into<Vec<u8>>) -> Result<Self, WeakCsrfKey> {
        let key: Vec<u8> = key.into();
        if key.len() < 32 {
            return Err(WeakCsrfKey);
        }
        Ok(Self {
            key: SecretBox::new(key.into_boxed_slice()),
        })
    }

    fn mac(&self, domain: &[u8], nonce: &[u8], binding: &SessionKey) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(self.key.expose_secret())
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(domain);
        mac.update(nonce);
        mac.update(binding.as_bytes());
        mac
    }

    /// A token for a form shown to `session`.
    pub fn issue(&self, session: &SessionKey) -> String {
        self.issue_in(SESSION_DOMAIN, session)
    }

    /// Whether `token` was issued for `session`.
    pub fn verify(&self, session: &SessionKey, token: &str) -> bool {
        self.verify_in(SESSION_DOMAIN, session, token)
    }

    /// A token for a form shown to a visitor without a session, bound to
    /// the key of their visitor cookie's value (a signed double-submit
    /// token: showing the form stores nothing on the server). It never
    /// verifies as a session's token, nor the reverse.
    pub fn issue_for_visitor(&self, visitor: &SessionKey) -> String {
        self.issue_in(VISITOR_DOMAIN, visitor)
    }

    /// Whether `token` was issued for the visitor whose cookie has this key.
    pub fn verify_for_visitor(&self, visitor: &SessionKey, token: &str) -> bool {
        self.verify_in(VISITOR_DOMAIN, visitor, token)
    }

    fn issue_in(&self, domain: &[u8], binding: &SessionKey) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        // An RNG failure yields a token that never verifies, not a panic.
        if getrandom::fill(&mut nonce).is_err() {
            return String::new();
        }
        let tag = self.mac(domain, &nonce, binding).finalize().into_bytes();
        let mut raw = Vec::with_capacity(NONCE_LEN + MAC_LEN);
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&tag);
        Base64UrlUnpadded::encode_string(&raw)
    }

    fn verify_in(&self, domain: &[u8], binding: &SessionKey, token: &str) -> bool {
        let mut raw = [0u8; NONCE_LEN + MAC_LEN];
        match Base64UrlUnpadded::decode(token.trim(), &mut raw) {
            Ok(decoded) if decoded.len() == NONCE_LEN + MAC_LEN => {}
            _ => return false,
        }
        let (nonce, tag) = raw.split_at(NONCE_LEN);
        self.mac(domain, nonce, binding).verify_slice(tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::SessionId;

    fn req<'a>(method: &'a str, site: Option<&'a str>, origin: Option<&'a str>) -> RequestMeta<'a> {
        RequestMeta {
            method,
            host: Some("app.example:8443"),
            sec_fetch_site: site,
            origin,
        }
    }

    /// Every combination of method, `Sec-Fetch-Site` and `Origin`.
    #[test]
    fn the_csrf_matrix() {
        let guard = CsrfGuard::default()
            .trust_origin("https://admin.example")
            .unwrap();
        let same = Some("https://app.example:8443");
        let foreign = Some("https://evil.example");
        let trusted = Some("https://admin.example");
        let sites = [
            None,
            Some("same-origin"),
            Some("none"),
            Some("same-site"),
            Some("cross-site"),
        ];
        let origins = [None, same, foreign, trusted, Some("null")];
        for method in ["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"] {
            for site in sites {
                for origin in origins {
                    let result = guard.check(&req(method, site, origin));
                    // RFC 9110's safe methods, written out: not the code's
                    // own list.
                    let expected_ok = matches!(method, "GET" | "HEAD" | "OPTIONS")
                        || match site {
                            Some("same-origin" | "none") => true,
                            Some(_) => origin == trusted,
                            None => origin.is_none() || origin == same || origin == trusted,
                        };
                    assert_eq!(
                        result.is_ok(),
                        expected_ok,
                        "{method} site={site:?} origin={origin:?} -> {result:?}"
                    );
                }
            }
        }
    }

    /// Hand-written expectations, independent of the code's own logic.
    #[test]
    fn the_csrf_table() {
        let guard = CsrfGuard::default()
            .trust_origin("https://admin.example")
            .unwrap();
        let cases: &[(&str, Option<&str>, Option<&str>, bool)] = &[
            ("POST", None, None, true),
            ("POST", Some(""), Some(""), true),
            (
                "POST",
                Some("same-origin"),
                Some("https://evil.example"),
                true,
            ),
            ("POST", Some("none"), None, true),
            ("POST", Some("cross-site"), None, false),
            (
                "POST",
                Some("same-site"),
                Some("https://app.example:8443"),
                false,
            ),
            (
                "POST",
                Some("cross-site"),
                Some("https://admin.example"),
                true,
            ),
            ("POST", None, Some("https://app.example:8443"), true),
            ("POST", None, Some("http://app.example:8443"), true),
            ("POST", None, Some("https://app.example"), false),
            ("POST", None, Some("https://app.example:8444"), false),
            ("POST", None, Some("null"), false),
            (
                "DELETE",
                Some("cross-site"),
                Some("https://evil.example"),
                false,
            ),
            (
                "GET",
                Some("cross-site"),
                Some("https://evil.example"),
                true,
            ),
            ("PUT", Some("cross-site"), None, false),
            ("PATCH", Some("cross-site"), None, false),
            ("PATCH", None, Some("https://evil.example"), false),
            ("HEAD", Some("cross-site"), None, true),
            ("OPTIONS", Some("cross-site"), None, true),
        ];
        for (method, site, origin, ok) in cases {
            let result = guard.check(&req(method, *site, *origin));
            assert_eq!(result.is_ok(), *ok, "{method} {site:?} {origin:?}");
        }
        for bad in [
            "null",
            "https://a.example/path",
            "a.example",
            "https://",
            "",
        ] {
            assert!(CsrfGuard::default().trust_origin(bad).is_err(), "{bad}");
        }
    }

    /// With `https_origins`, an `http://` Origin matches only a loopback
    /// host; `https://` and trusted origins as before; off, as Go.
    #[test]
    fn https_origins_refuse_plain_http_but_on_loopback() {
        let strict = CsrfGuard::default()
            .https_origins(true)
            .trust_origin("http://partner.example")
            .unwrap();
        let post = |host: &'static str, origin: &'static str| RequestMeta {
            method: "POST",
            host: Some(host),
            sec_fetch_site: None,
            origin: Some(origin),
        };
        for (host, origin, ok) in [
            ("app.example", "https://app.example", true),
            ("app.example", "HTTPS://app.example", true),
            ("app.example", "http://app.example", false),
            ("app.example:8443", "http://app.example:8443", false),
            ("app.example", "http://partner.example", true),
            ("localhost:3000", "http://localhost:3000", true),
            ("demo.localhost:3000", "http://demo.localhost:3000", true),
            ("127.0.0.1:3000", "http://127.0.0.1:3000", true),
            ("127.9.9.9", "http://127.9.9.9", true),
            ("[::1]:3000", "http://[::1]:3000", true),
            ("localhost.example", "http://localhost.example", false),
            ("127.0.0.1.example", "http://127.0.0.1.example", false),
            ("10.0.0.1", "http://10.0.0.1", false),
        ] {
            assert_eq!(
                strict.check(&post(host, origin)).is_ok(),
                ok,
                "{host} {origin}"
            );
        }
        assert!(
            CsrfGuard::default()
                .check(&post("app.example", "http://app.example"))
                .is_ok(),
            "off by default (Go's algorithm)"
        );
    }

    #[test]
    fn origin_parsing_is_strict() {
        assert_eq!(origin_host("https://a.example"), Some("a.example"));
        assert_eq!(origin_host("http://a.example:80/x"), Some("a.example:80"));
        assert_eq!(origin_host("null"), None);
        assert_eq!(origin_host("https://user@a.example"), None);
        assert_eq!(origin_host("://a.example"), None);
        let guard = CsrfGuard::default();
        // A host that merely starts with ours is another host.
        let attack = RequestMeta {
            method: "POST",
            host: Some("app.example"),
            sec_fetch_site: None,
            origin: Some("https://app.example.evil.example"),
        };
        assert_eq!(guard.check(&attack), Err(CsrfRejection::OriginMismatch));
        assert_eq!(CsrfRejection::OriginMismatch.status(), 403);
    }

    #[test]
    fn form_tokens_are_bound_to_the_session_and_masked() {
        let tokens = CsrfTokens::new(vec![7u8; 32]).unwrap();
        let session = SessionId::generate().unwrap().key();
        let other = SessionId::generate().unwrap().key();
        let a = tokens.issue(&session);
        let b = tokens.issue(&session);
        assert_ne!(a, b, "a fresh nonce each time");
        assert!(tokens.verify(&session, &a) && tokens.verify(&session, &b));
        assert!(!tokens.verify(&other, &a), "bound to its session");
        let other_key = CsrfTokens::new(vec![8u8; 32]).unwrap();
        assert!(!other_key.verify(&session, &a), "bound to the key");
        for garbage in ["", "x", &a[..a.len() - 1], &format!("{a}A")] {
            assert!(!tokens.verify(&session, garbage), "{garbage:?}");
        }
        let mut flipped = a.clone().into_bytes();
        flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
        assert!(!tokens.verify(&session, &String::from_utf8(flipped).unwrap()));
        assert!(CsrfTokens::new(vec![0u8; 31]).is_err());
        assert_eq!(format!("{tokens:?}"), "CsrfTokens([REDACTED])");
    }

    /// Visitor tokens are bound to the visitor cookie's key, and never
    /// pass as a session's token (or the reverse), even for equal keys.
    #[test]
    fn visitor_tokens_are_bound_to_the_visitor_and_apart_from_sessions() {
        let tokens = CsrfTokens::new(vec![9u8; 32]).unwrap();
        let visitor = SessionId::generate().unwrap().key();
        let other = SessionId::generate().unwrap().key();
        let token = tokens.issue_for_visitor(&visitor);
        assert!(tokens.verify_for_visitor(&visitor, &token));
        assert!(!tokens.verify_for_visitor(&other, &token));
        assert!(!tokens.verify(&visitor, &token), "not a session token");
        let session_token = tokens.issue(&visitor);
        assert!(!tokens.verify_for_visitor(&visitor, &session_token));
        assert_ne!(token, tokens.issue_for_visitor(&visitor), "masked");
    }
}
