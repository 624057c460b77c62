//! Browser security headers: decided here, applied by every adapter to
//! every response (a header the app's handler already set is kept).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

/// The security headers of every response.
///
/// Defaults, safe for any app: `X-Content-Type-Options: nosniff`,
/// `Referrer-Policy: no-referrer` (no URL, and so no token in one, leaves
/// through a link), and `Content-Security-Policy: frame-ancestors 'none'`
/// (no framing: clickjacking) with no other directive, so the app's own
/// scripts and styles keep working. An app whose pages allow it sets a
/// strict policy with [`content_security_policy`](Self::content_security_policy)
/// (the demo does). `Strict-Transport-Security` only when configured
/// ([`hsts`](Self::hsts)): the app must be served over HTTPS.
#[derive(Debug, Clone)]
pub struct SecurityHeaders {
    headers: Arc<Vec<(&'static str, Cow<'static, str>)>>,
}

impl Default for SecurityHeaders {
    fn default() -> Self {
        Self {
            headers: Arc::new(vec![
                ("x-content-type-options", Cow::Borrowed("nosniff")),
                ("referrer-policy", Cow::Borrowed("no-referrer")),
                (
                    "content-security-policy",
                    Cow::Borrowed("frame-ancestors 'none'"),
                ),
            ]),
        }
    }
}

impl SecurityHeaders {
    /// The defaults (see the type's docs).
    pub fn new() -> Self {
        Self::default()
    }

    fn set(mut self, name: &'static str, value: String) -> Self {
        let headers = Arc::make_mut(&mut self.headers);
        headers.retain(|(n, _)| *n != name);
        headers.push((name, Cow::Owned(value)));
        self
    }

    /// The whole `Content-Security-Policy` (replacing the default
    /// `frame-ancestors 'none'`; keep that directive in yours).
    #[must_use]
    pub fn content_security_policy(self, policy: impl Into<String>) -> Self {
        self.set("content-security-policy", policy.into())
    }

    /// `Referrer-Policy` (default `no-referrer`).
    #[must_use]
    pub fn referrer_policy(self, policy: impl Into<String>) -> Self {
        self.set("referrer-policy", policy.into())
    }

    /// `Strict-Transport-Security: max-age=...; includeSubDomains`: only
    /// for an app served over HTTPS on every subdomain.
    #[must_use]
    pub fn hsts(self, max_age: Duration) -> Self {
        let value = format!("max-age={}; includeSubDomains", max_age.as_secs());
        self.set("strict-transport-security", value)
    }

    /// The first header whose value is no valid header value (visible
    /// ASCII, spaces and tabs only), if any.
    pub(crate) fn first_invalid(&self) -> Option<&'static str> {
        self.iter()
            .find(|(_, value)| {
                !value
                    .bytes()
                    .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
            })
            .map(|(name, _)| name)
    }

    /// Whether the `Content-Security-Policy` limits framing, as the default
    /// does: its first `frame-ancestors` directive (the one browsers apply)
    /// has sources, none of which any site matches: `*`, a bare scheme
    /// (`https:`), or a scheme with a wildcard host (`https://*`).
    pub(crate) fn forbids_framing(&self) -> bool {
        self.iter().any(|(name, value)| {
            name == "content-security-policy"
                && value
                    .split(';')
                    .map(str::split_ascii_whitespace)
                    .find_map(|mut words| {
                        let name = words.next()?;
                        name.eq_ignore_ascii_case("frame-ancestors")
                            .then_some(words)
                    })
                    .is_some_and(|sources| {
                        let sources: Vec<&str> = sources.collect();
                        !sources.is_empty() && !sources.iter().any(|s| any_site(s))
                    })
        })
    }

    /// The headers as stored, names in lower case.
    pub(crate) fn entries(&self) -> &[(&'static str, Cow<'static, str>)] {
        &self.headers
    }

    /// The headers, names in lower case.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.headers
            .iter()
            .map(|(name, value)| (*name, value.as_ref()))
    }

    /// The headers with their values as `Cow<'static, str>`, for a
    /// framework whose responses take owned or static values: a default
    /// value is a static string, so handing it out allocates nothing.
    pub fn iter_static(&self) -> impl Iterator<Item = (&'static str, Cow<'static, str>)> + '_ {
        self.headers
            .iter()
            .map(|(name, value)| (*name, value.clone()))
    }
}

impl PartialEq for SecurityHeaders {
    fn eq(&self, other: &Self) -> bool {
        self.headers == other.headers
    }
}

impl Eq for SecurityHeaders {}

/// Whether every site matches the CSP source expression `source`.
fn any_site(source: &str) -> bool {
    let host = match source.split_once("://") {
        Some((_, host)) => host,
        // A bare scheme (`https:`).
        None if source.ends_with(':') => return true,
        None => source,
    };
    // `*`, `*:443`, `https://*`, `https://*:*/`.
    host.split(['/', ':']).next() == Some("*")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_forbid_framing_and_sniffing_and_hsts_is_opt_in() {
        let headers = SecurityHeaders::new();
        let defaults: Vec<_> = headers.iter().collect();
        assert!(defaults.contains(&("x-content-type-options", "nosniff")));
        assert!(defaults.contains(&("content-security-policy", "frame-ancestors 'none'")));
        assert!(defaults.contains(&("referrer-policy", "no-referrer")));
        assert!(
            !defaults
                .iter()
                .any(|(n, _)| *n == "strict-transport-security")
        );
        let configured = SecurityHeaders::new()
            .hsts(Duration::from_secs(31_536_000))
            .content_security_policy("default-src 'none'; frame-ancestors 'none'");
        let csp: Vec<_> = configured
            .iter()
            .filter(|(n, _)| *n == "content-security-policy")
            .collect();
        assert_eq!(csp.len(), 1, "replaced, not added");
        assert!(configured.iter().any(|h| h
            == (
                "strict-transport-security",
                "max-age=31536000; includeSubDomains"
            )));
    }

    #[test]
    fn unsendable_values_and_a_policy_that_allows_framing_are_found() {
        let defaults = SecurityHeaders::new();
        assert_eq!(defaults.first_invalid(), None);
        assert!(defaults.forbids_framing());
        let framed = SecurityHeaders::new().content_security_policy("default-src 'self'");
        assert!(!framed.forbids_framing());
        assert_eq!(framed.first_invalid(), None);
        let broken = SecurityHeaders::new().referrer_policy("no-referrer\r\nX: y");
        assert_eq!(broken.first_invalid(), Some("referrer-policy"));
        let upper = SecurityHeaders::new().content_security_policy("FRAME-ANCESTORS 'none'");
        assert!(upper.forbids_framing());
        for allows in [
            "default-src 'self'; frame-ancestors *",
            "frame-ancestors https:",
            "frame-ancestors 'self' *",
            "frame-ancestors",
            "default-src 'self'; report-uri /frame-ancestors-report",
            "frame-ancestors https://*",
            "frame-ancestors https://*:443 'self'",
            "frame-ancestors *; frame-ancestors 'none'",
            "frame-ancestors *:443",
            "frame-ancestors *:*",
        ] {
            let policy = SecurityHeaders::new().content_security_policy(allows);
            assert!(!policy.forbids_framing(), "{allows}");
        }
        for limits in [
            "default-src 'self'; frame-ancestors 'self'",
            "frame-ancestors https://admin.example https://*.example",
            "frame-ancestors 'none'; frame-ancestors *",
        ] {
            let policy = SecurityHeaders::new().content_security_policy(limits);
            assert!(policy.forbids_framing(), "{limits}");
        }
    }
}
