//! The session cookie: rendering `Set-Cookie` values and finding the session
//! ID in `Cookie` headers, as plain strings so every framework adapter can
//! use it whatever `http` or `cookie` version it has.
//!
//! Defaults (ASVS 3.3.1-3.3.4): name `__Host-session`, `Secure`, `HttpOnly`,
//! `SameSite=Lax`, `Path=/`, no `Domain`, a browser-session cookie unless the
//! session is persistent ("remember me"), whose `Max-Age` is then its
//! absolute lifetime.
//!
//! ```
//! use auth_core::cookie::CookieConfig;
//! use auth_core::session::SessionId;
//!
//! let config = CookieConfig::default();
//! let id = SessionId::generate().unwrap();
//! let set_cookie = config.session_cookie(&id, None);
//! assert!(set_cookie.starts_with("__Host-session="));
//! assert!(set_cookie.contains("; HttpOnly") && set_cookie.contains("; Secure"));
//!
//! let header = format!("theme=dark; {}", set_cookie.split(';').next().unwrap());
//! assert_eq!(config.session_id([header.as_str()]), Some(id));
//! ```

use std::time::Duration;

use cookie::{Cookie, SameSite as CookieSameSite};

use crate::session::SessionId;

/// The required prefix of a secure session cookie's name.
pub const HOST_PREFIX: &str = "__Host-";

/// The `SameSite` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SameSite {
    /// Sent on top-level navigations from other sites (the default): links
    /// into the app keep the user logged in; cross-site POSTs do not carry it.
    #[default]
    Lax,
    /// Never sent on cross-site requests.
    Strict,
}

/// How the session cookie is named and flagged.
#[derive(Debug, Clone)]
pub struct CookieConfig {
    name: String,
    same_site: SameSite,
    secure: bool,
}

impl Default for CookieConfig {
    fn default() -> Self {
        Self {
            name: format!("{HOST_PREFIX}session"),
            same_site: SameSite::Lax,
            secure: true,
        }
    }
}

/// Builds a [`CookieConfig`].
#[derive(Debug, Default)]
#[must_use]
pub struct CookieConfigBuilder {
    name: Option<String>,
    same_site: SameSite,
    insecure_http: bool,
}

/// Why a cookie configuration was refused.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CookieConfigError {
    /// The name does not start with `__Host-` (required unless
    /// [`CookieConfigBuilder::insecure_http_development`]).
    #[error("the session cookie name must start with __Host-")]
    MissingHostPrefix,
    /// The name is empty or has characters not allowed in a cookie name.
    #[error("invalid cookie name")]
    InvalidName,
    /// A `__Host-` or `__Secure-` name (in any case) with
    /// [`CookieConfigBuilder::insecure_http_development`]: browsers refuse
    /// such a cookie without `Secure`, so logins would silently not stick.
    /// Leave the name out (it is then `session`) or drop the prefix.
    #[error(
        "a __Host- or __Secure- cookie needs Secure: drop the prefix for insecure_http_development"
    )]
    HostPrefixWithoutSecure,
}

impl CookieConfigBuilder {
    /// The cookie name. It must start with `__Host-`, which browsers accept
    /// only with `Secure`, `Path=/` and no `Domain`, so a subdomain or a
    /// plain-HTTP page cannot plant or overwrite it.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// `SameSite` (default `Lax`).
    pub fn same_site(mut self, same_site: SameSite) -> Self {
        self.same_site = same_site;
        self
    }

    /// Drops `Secure` and the `__Host-` prefix so the cookie works over plain
    /// HTTP on a host other than `localhost`. Only for local development:
    /// anyone on the network can then read the session ID. `build` logs a
    /// warning. (Browsers accept `Secure` cookies from `http://localhost`, so
    /// this is not needed there.)
    pub fn insecure_http_development(mut self) -> Self {
        self.insecure_http = true;
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<CookieConfig, CookieConfigError> {
        let name = match (self.name, self.insecure_http) {
            (Some(name), _) => name,
            (None, false) => format!("{HOST_PREFIX}session"),
            (None, true) => "session".to_owned(),
        };
        let valid_char = |c: char| c.is_ascii_graphic() && !"()<>@,;:\\\"/[]?={}".contains(c);
        if name.is_empty() || !name.chars().all(valid_char) {
            return Err(CookieConfigError::InvalidName);
        }
        // Browsers refuse `__Host-` and `__Secure-` cookies without
        // `Secure`, and match the prefixes case-insensitively.
        let lower = name.to_ascii_lowercase();
        if self.insecure_http && (lower.starts_with("__host-") || lower.starts_with("__secure-")) {
            return Err(CookieConfigError::HostPrefixWithoutSecure);
        }
        if self.insecure_http {
            tracing::warn!(
                cookie = %name,
                "insecure_http_development: the session cookie is sent without Secure; \
                 never use this in production"
            );
        } else if !name.starts_with(HOST_PREFIX) {
            return Err(CookieConfigError::MissingHostPrefix);
        }
        Ok(CookieConfig {
            name,
            same_site: self.same_site,
            secure: !self.insecure_http,
        })
    }
}

impl CookieConfig {
    /// A builder starting from the secure defaults.
    pub fn builder() -> CookieConfigBuilder {
        CookieConfigBuilder::default()
    }

    /// The cookie name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `Secure` is set (false only in insecure development mode).
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// The `Set-Cookie` value carrying `id`. `max_age` makes it persistent
    /// ("remember me"); `None` gives a browser-session cookie.
    pub fn session_cookie(&self, id: &SessionId, max_age: Option<Duration>) -> String {
        let mut cookie = self.base(id.encode());
        if let Some(max_age) = max_age {
            let secs = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
            cookie.set_max_age(cookie::time::Duration::seconds(secs));
        }
        cookie.to_string()
    }

    /// The `Set-Cookie` value that removes the cookie (logout).
    pub fn removal_cookie(&self) -> String {
        let mut cookie = self.base(String::new());
        cookie.make_removal();
        cookie.to_string()
    }

    fn base(&self, value: String) -> Cookie<'static> {
        Cookie::build((self.name.clone(), value))
            .http_only(true)
            .secure(self.secure)
            .same_site(match self.same_site {
                SameSite::Lax => CookieSameSite::Lax,
                SameSite::Strict => CookieSameSite::Strict,
            })
            .path("/")
            .build()
    }

    /// The session IDs the request's `Cookie` header lines (HTTP/2 may
    /// split them) carry under exactly the configured name, in header
    /// order, at most [`MAX_SESSION_COOKIES`]. Names compare byte for byte
    /// after trimming only SP and HTAB (RFC 6265): a same-name cookie
    /// without the `__Host-` prefix, or one whose name starts with another
    /// Unicode space (U+2000, U+00A0, ...), which any sibling subdomain
    /// could set, is not the session cookie. Malformed values are skipped.
    ///
    /// The caller loads them in order and takes the first live one, so a
    /// well-formed but dead duplicate planted before the real cookie
    /// cannot shadow it.
    pub fn session_ids<'h, I>(&self, headers: I) -> impl Iterator<Item = SessionId>
    where
        I: IntoIterator<Item = &'h str>,
    {
        ids_named(headers, (self.name.as_str(), "")).take(MAX_SESSION_COOKIES)
    }

    /// The name of the visitor cookie: the session cookie's name and
    /// `-csrf` (`__Host-session-csrf`). It binds the form tokens of a
    /// visitor who has no session, so showing a form stores nothing on the
    /// server.
    pub fn visitor_name(&self) -> String {
        format!("{}{VISITOR_SUFFIX}", self.name)
    }

    /// The `Set-Cookie` value of a new visitor cookie: the session
    /// cookie's flags, `SameSite=Strict`, a browser-session cookie.
    pub fn visitor_cookie(&self, id: &SessionId) -> String {
        Cookie::build((self.visitor_name(), id.encode()))
            .http_only(true)
            .secure(self.secure)
            .same_site(CookieSameSite::Strict)
            .path("/")
            .build()
            .to_string()
    }

    /// The visitor cookie's value in the request's `Cookie` header lines
    /// (the first well-formed one; names compared as for the session).
    pub fn visitor_id<'h>(&self, headers: impl IntoIterator<Item = &'h str>) -> Option<SessionId> {
        ids_named(headers, (self.name.as_str(), VISITOR_SUFFIX)).next()
    }

    /// The name of the device cookie: the session cookie's name and
    /// `-device` (`__Host-session-device`). A browser gets it at its first
    /// successful login and keeps it; the throttle gives the attempts of a
    /// device that completed a login to an account a budget of their own
    /// (see [`rate_limit`](crate::rate_limit)).
    pub fn device_name(&self) -> String {
        format!("{}{DEVICE_SUFFIX}", self.name)
    }

    /// The `Set-Cookie` value of a new device cookie: the session cookie's
    /// flags, `SameSite=Strict`, kept for `max_age`.
    pub fn device_cookie(&self, id: &SessionId, max_age: Duration) -> String {
        let secs = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
        Cookie::build((self.device_name(), id.encode()))
            .http_only(true)
            .secure(self.secure)
            .same_site(CookieSameSite::Strict)
            .path("/")
            .max_age(cookie::time::Duration::seconds(secs))
            .build()
            .to_string()
    }

    /// The device cookie's value in the request's `Cookie` header lines
    /// (the first well-formed one; names compared as for the session).
    pub fn device_id<'h>(&self, headers: impl IntoIterator<Item = &'h str>) -> Option<SessionId> {
        ids_named(headers, (self.name.as_str(), DEVICE_SUFFIX)).next()
    }

    /// The first session ID of [`session_ids`](Self::session_ids).
    pub fn session_id<'h>(&self, headers: impl IntoIterator<Item = &'h str>) -> Option<SessionId> {
        self.session_ids(headers).next()
    }
}

const VISITOR_SUFFIX: &str = "-csrf";
const DEVICE_SUFFIX: &str = "-device";

/// The well-formed IDs under exactly the name `base` + `suffix` in `Cookie`
/// header lines, in order (see [`CookieConfig::session_ids`] for the
/// comparison rules). The name is never built, so looking costs no
/// allocation.
fn ids_named<'h, 'n, I>(
    headers: I,
    (base, suffix): (&'n str, &'n str),
) -> impl Iterator<Item = SessionId>
where
    I: IntoIterator<Item = &'h str>,
{
    headers
        .into_iter()
        .flat_map(|header| header.split(';'))
        .filter_map(|pair| pair.trim_matches([' ', '\t']).split_once('='))
        .filter(move |(n, _)| {
            n.len() == base.len() + suffix.len()
                && n.as_bytes().starts_with(base.as_bytes())
                && n.as_bytes().ends_with(suffix.as_bytes())
        })
        .filter_map(|(_, value)| {
            let value = value.trim_matches([' ', '\t']);
            let unquoted = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            SessionId::parse(unquoted)
        })
}

/// How many session cookies of one request are looked up at most (each is
/// a store read).
pub const MAX_SESSION_COOKIES: usize = 4;

#[cfg(test)]
mod tests {
    use super::*;

    fn attributes(set_cookie: &str) -> Vec<String> {
        set_cookie
            .split(';')
            .skip(1)
            .map(|a| a.trim().to_ascii_lowercase())
            .collect()
    }

    #[test]
    fn defaults_are_host_prefixed_secure_httponly_lax_path_root_no_domain() {
        let config = CookieConfig::default();
        let id = SessionId::generate().unwrap();
        let value = config.session_cookie(&id, None);
        assert!(value.starts_with(&format!("__Host-session={}", id.encode())));
        let attrs = attributes(&value);
        for expected in ["httponly", "secure", "samesite=lax", "path=/"] {
            assert!(attrs.iter().any(|a| a == expected), "{expected} in {value}");
        }
        assert!(!attrs.iter().any(|a| a.starts_with("domain")), "{value}");
        assert!(
            !attrs
                .iter()
                .any(|a| a.starts_with("max-age") || a.starts_with("expires"))
        );
    }

    #[test]
    fn persistent_cookie_carries_max_age() {
        let config = CookieConfig::default();
        let id = SessionId::generate().unwrap();
        let value = config.session_cookie(&id, Some(Duration::from_secs(86_400)));
        assert!(
            attributes(&value).contains(&"max-age=86400".to_owned()),
            "{value}"
        );
    }

    #[test]
    fn removal_cookie_expires_it() {
        let value = CookieConfig::default().removal_cookie();
        assert!(value.starts_with("__Host-session=;"), "{value}");
        let attrs = attributes(&value);
        assert!(attrs.contains(&"max-age=0".to_owned()), "{value}");
        assert!(attrs.iter().any(|a| a.starts_with("expires=")), "{value}");
        assert!(attrs.contains(&"secure".to_owned()) && attrs.contains(&"path=/".to_owned()));
    }

    #[test]
    fn only_the_prefixed_cookie_counts() {
        let config = CookieConfig::default();
        let id = SessionId::generate().unwrap();
        let other = SessionId::generate().unwrap();
        let unprefixed = format!("session={}", other.encode());
        assert_eq!(config.session_id([unprefixed.as_str()]), None);
        let both = format!("session={}; __Host-session={}", other.encode(), id.encode());
        assert_eq!(config.session_id([both.as_str()]), Some(id.clone()));
        // Case matters: "__host-session" is another cookie.
        let lower = format!("__host-session={}", other.encode());
        assert_eq!(config.session_id([lower.as_str()]), None);
    }

    /// `str::trim` would strip every Unicode space: a cookie named
    /// U+2000 + `__Host-session` (no prefix, so any sibling subdomain can
    /// set it) would be read as ours. Only SP and HTAB are trimmed.
    #[test]
    fn only_sp_and_htab_are_trimmed_around_the_name() {
        let config = CookieConfig::default();
        let id = SessionId::generate().unwrap();
        for space in [
            '\u{2000}', '\u{00a0}', '\u{3000}', '\u{feff}', '\u{200b}', '\u{85}',
        ] {
            let planted = format!("{space}__Host-session={}", id.encode());
            assert_eq!(config.session_id([planted.as_str()]), None, "{space:?}");
            let trailing = format!("__Host-session{space}={}", id.encode());
            assert_eq!(config.session_id([trailing.as_str()]), None, "{space:?}");
        }
        for ok in [" ", "\t", "  \t "] {
            let spaced = format!("x=1;{ok}__Host-session={}{ok}", id.encode());
            assert_eq!(
                config.session_id([spaced.as_str()]),
                Some(id.clone()),
                "{ok:?}"
            );
        }
    }

    /// Every well-formed candidate, in order, at most four: the caller
    /// takes the first live one.
    #[test]
    fn every_candidate_is_offered_in_order_and_bounded() {
        let config = CookieConfig::default();
        let ids: Vec<SessionId> = (0..6).map(|_| SessionId::generate().unwrap()).collect();
        let header = ids
            .iter()
            .map(|id| format!("__Host-session={}", id.encode()))
            .collect::<Vec<_>>()
            .join("; __Host-session=garbage; ");
        let found: Vec<SessionId> = config.session_ids([header.as_str()]).collect();
        assert_eq!(found, ids[..MAX_SESSION_COOKIES].to_vec());
    }

    #[test]
    fn duplicates_and_garbage_are_deterministic() {
        let config = CookieConfig::default();
        let a = SessionId::generate().unwrap();
        let b = SessionId::generate().unwrap();
        let dup = format!(
            "__Host-session=garbage; __Host-session={}; __Host-session={}",
            a.encode(),
            b.encode()
        );
        assert_eq!(config.session_id([dup.as_str()]), Some(a.clone()));
        // Split across two header lines: still header order.
        let first = format!("x=1; __Host-session={}", b.encode());
        let second = format!("__Host-session={}", a.encode());
        assert_eq!(
            config.session_id([first.as_str(), second.as_str()]),
            Some(b)
        );
        for garbage in [
            "",
            ";;;",
            "__Host-session",
            "__Host-session=",
            "__Host-session=%00%ff",
            "=;=",
            "__Host-session=\u{fffd}\u{fffd}",
        ] {
            assert_eq!(config.session_id([garbage]), None, "{garbage:?}");
        }
    }

    #[test]
    fn the_prefix_is_enforced_unless_insecure() {
        assert_eq!(
            CookieConfig::builder().name("session").build().unwrap_err(),
            CookieConfigError::MissingHostPrefix
        );
        assert_eq!(
            CookieConfig::builder()
                .name("__Host-a b")
                .build()
                .unwrap_err(),
            CookieConfigError::InvalidName
        );
        let strict = CookieConfig::builder()
            .name("__Host-app")
            .same_site(SameSite::Strict)
            .build()
            .unwrap();
        let id = SessionId::generate().unwrap();
        assert!(
            attributes(&strict.session_cookie(&id, None)).contains(&"samesite=strict".to_owned())
        );
        let dev = CookieConfig::builder()
            .insecure_http_development()
            .build()
            .unwrap();
        assert_eq!(dev.name(), "session");
        assert!(!dev.is_secure());
        assert!(!attributes(&dev.session_cookie(&id, None)).contains(&"secure".to_owned()));
        // A browser refuses a __Host- or __Secure- cookie (any case)
        // without Secure.
        for name in ["__Host-app", "__host-app", "__Secure-app", "__SECURE-app"] {
            assert_eq!(
                CookieConfig::builder()
                    .name(name)
                    .insecure_http_development()
                    .build()
                    .unwrap_err(),
                CookieConfigError::HostPrefixWithoutSecure,
                "{name}"
            );
        }
    }
}
