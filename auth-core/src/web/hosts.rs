//! The optional allow-list of `Host` names: a request for any other name
//! is refused before anything else runs. It stops DNS rebinding (a page on
//! an attacker's domain that resolves to the app's address, typically a
//! development server on 127.0.0.1, talking to it as same-origin) and
//! poisoned absolute links built from the `Host` header. Only `Host` (or
//! the HTTP/2 authority) is checked: a link built from `X-Forwarded-Host`
//! or `Forwarded: host=` (which actix-web's `ConnectionInfo::host` and
//! `url_for` prefer) is not covered; build links from a configured base
//! URL instead, as the demos' mail links are.

use std::fmt;

/// The `Host` names an app answers to. Empty (the default): any.
///
/// Entries are `name`, `name:port`, `[v6]`, `[v6]:port`, or `.domain` for
/// the domain and every subdomain. An entry without a port allows any port.
/// Names compare ASCII case-insensitively, a trailing dot ignored.
///
/// ```
/// use auth_core::web::AllowedHosts;
///
/// let hosts = AllowedHosts::parse("localhost, 127.0.0.1, [::1], .example.com").unwrap();
/// assert!(hosts.allows(Some("localhost:3000")));
/// assert!(hosts.allows(Some("API.Example.com")));
/// assert!(hosts.allows(Some("[::1]:3000")));
/// assert!(!hosts.allows(Some("rebind.attacker.example:3000")));
/// assert!(!hosts.allows(None));
/// assert!(AllowedHosts::insecure_any().allows(Some("anything")));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct AllowedHosts {
    entries: Vec<Entry>,
}

#[derive(Clone, PartialEq, Eq)]
struct Entry {
    /// Lowercase, no trailing dot; IPv6 in brackets.
    name: String,
    /// `.domain`: the domain and its subdomains.
    subdomains: bool,
    port: Option<u16>,
}

/// An allow-list entry that is not a host name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid allowed host {0:?}: expected name, name:port, [v6]:port or .domain (at least one)"
)]
pub struct InvalidHost(pub String);

impl AllowedHosts {
    /// Every host (no check): the default, for which
    /// [`AuthBuilder::build`](crate::AuthBuilder::build) logs a warning.
    /// Leaves a server on a private address open to DNS rebinding.
    pub fn insecure_any() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    /// A comma-separated list, with at least one entry: an empty list is
    /// refused (allowing any host is [`insecure_any`](Self::insecure_any),
    /// never the outcome of an unset variable).
    pub fn parse(list: &str) -> Result<Self, InvalidHost> {
        let entries = list
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                let (subdomains, rest) = match entry.strip_prefix('.') {
                    Some(rest) => (true, rest),
                    None => (false, entry),
                };
                let (name, port) = split_host(rest).ok_or_else(|| InvalidHost(entry.into()))?;
                let name = name.to_ascii_lowercase();
                let valid = !name.is_empty()
                    && name.bytes().all(|b| {
                        b.is_ascii_alphanumeric()
                            || matches!(b, b'-' | b'.' | b'_' | b':' | b'[' | b']')
                    });
                if !valid {
                    return Err(InvalidHost(entry.into()));
                }
                Ok(Entry {
                    name,
                    subdomains,
                    port,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if entries.is_empty() {
            return Err(InvalidHost(list.into()));
        }
        Ok(Self { entries })
    }

    /// Whether the list is empty (any host passes).
    pub fn is_any(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether a request with this `Host` header (or HTTP/2 authority) may
    /// pass. Without a list, any (also none); with one, a missing or
    /// malformed host is refused.
    pub fn allows(&self, host: Option<&str>) -> bool {
        if self.entries.is_empty() {
            return true;
        }
        let Some((name, port)) = host.and_then(split_host) else {
            return false;
        };
        // Compared without allocating: entries are lowercase already.
        let name = name.as_bytes();
        self.entries.iter().any(|entry| {
            let wanted = entry.name.as_bytes();
            let name_matches = name.eq_ignore_ascii_case(wanted)
                || (entry.subdomains
                    && name.len() > wanted.len()
                    && name[name.len() - wanted.len()..].eq_ignore_ascii_case(wanted)
                    && name[name.len() - wanted.len() - 1] == b'.');
            name_matches && entry.port.is_none_or(|p| port == Some(p))
        })
    }
}

impl fmt::Debug for AllowedHosts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self
            .entries
            .iter()
            .map(|e| {
                let dot = if e.subdomains { "." } else { "" };
                match e.port {
                    Some(port) => format!("{dot}{}:{port}", e.name),
                    None => format!("{dot}{}", e.name),
                }
            })
            .collect();
        f.debug_tuple("AllowedHosts").field(&names).finish()
    }
}

/// `host[:port]` as (the name without a trailing dot, port).
fn split_host(value: &str) -> Option<(&str, Option<u16>)> {
    // Byte scans: every delimiter here is ASCII, so each cut falls on a
    // character boundary (and a scan of a short name costs less than the
    // `char` patterns' searchers, on every request).
    let ows = |b: &u8| matches!(b, b' ' | b'\t');
    let bytes = value.as_bytes();
    let start = bytes.iter().position(|b| !ows(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !ows(b))
        .map_or(start, |last| last + 1);
    let value = &value[start..end];
    let (name, port) = if value.starts_with('[') {
        let end = value.bytes().position(|b| b == b']')?;
        let (name, rest) = value.split_at(end + 1);
        match rest {
            "" => (name, None),
            rest => (name, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match value.bytes().rposition(|b| b == b':') {
            Some(colon) => (&value[..colon], Some(&value[colon + 1..])),
            None => (value, None),
        }
    };
    let port = match port {
        Some(port) => Some(port.parse::<u16>().ok()?),
        None => None,
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    // Only what a host name or an IP literal is made of: anything else
    // (`?`, `#`, `\\`, `/`, `@`, a space) would end the host of an absolute
    // link an app builds from it, so `evil.example?.corp.example` must not
    // pass as a subdomain of `corp.example`.
    let valid = match name.strip_prefix('[') {
        Some(literal) => literal.strip_suffix(']').is_some_and(|inner| {
            !inner.is_empty()
                && inner
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
        }),
        None => {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        }
    };
    if !valid {
        return None;
    }
    Some((name, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_ports_and_subdomains() {
        let hosts = AllowedHosts::parse("app.example:8443, .corp.example, [::1]").unwrap();
        assert!(hosts.allows(Some("app.example:8443")));
        assert!(!hosts.allows(Some("app.example")), "the port is part of it");
        assert!(!hosts.allows(Some("app.example:443")));
        assert!(hosts.allows(Some("corp.example")));
        assert!(hosts.allows(Some("a.b.corp.example:1")));
        assert!(hosts.allows(Some("CORP.example.")));
        assert!(
            !hosts.allows(Some("evilcorp.example")),
            "a suffix, not a domain"
        );
        assert!(hosts.allows(Some("[::1]:3000")));
        assert!(!hosts.allows(Some("[::2]:3000")));
        assert!(
            hosts.allows(Some(" \tapp.example:8443\t ")),
            "optional whitespace"
        );
        for bad in [
            None,
            Some(""),
            Some(" \t "),
            Some("[::1]x"),
            Some("app.example:8443:1"),
            Some("\u{e9}pp.example:8443"),
            Some(":80"),
            Some("a:b"),
            Some("[::1"),
            Some("x@app.example"),
            Some("[zz::1]"),
            Some("[]"),
        ] {
            assert!(!hosts.allows(bad), "{bad:?}");
        }
    }

    /// A name with a character that ends a URL's host (what an app that
    /// builds an absolute link from `Host` would mail to `evil.example`)
    /// is no subdomain of an entry, nor the entry itself.
    #[test]
    fn characters_that_end_a_urls_host_are_refused() {
        let hosts = AllowedHosts::parse(".corp.example").unwrap();
        for bad in [
            "evil.example?.corp.example",
            "evil.example#.corp.example",
            "evil.example\\.corp.example",
            "evil.example .corp.example",
            "evil.example/.corp.example",
            "evil.example%2f.corp.example",
            "evil.example;.corp.example",
        ] {
            assert!(!hosts.allows(Some(bad)), "{bad}");
        }
        assert!(hosts.allows(Some("a-b_c.corp.example:8080")));
    }

    #[test]
    fn invalid_entries_are_refused() {
        for bad in ["a b", "host:port", "[::1", "x/y", "."] {
            assert!(AllowedHosts::parse(bad).is_err(), "{bad}");
        }
        for empty in ["", " , "] {
            assert!(AllowedHosts::parse(empty).is_err(), "{empty:?}");
        }
    }
}
