//! The client's IP address: from the socket, and from the configured
//! forwarding header (`X-Forwarded-For` by default, or `Forwarded`, RFC 7239)
//! only when the socket peer is a configured trusted proxy. The chain is read right to left, skipping trusted proxies, and the
//! first untrusted address is the client; a malformed entry stops the walk at
//! the last address known to be genuine.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use ipnet::IpNet;

/// Which header the trusted proxies write. Only that one is read; the
/// other is ignored entirely, because a proxy that appends to one usually
/// passes the client's copy of the other through untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For` (nginx `$proxy_add_x_forwarded_for`, most load
    /// balancers). The default.
    #[default]
    XForwardedFor,
    /// `Forwarded` (RFC 7239).
    Forwarded,
}

/// Addresses and networks whose forwarding header is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    header: ForwardedHeader,
}

/// A trusted-proxy entry that is neither an IP address nor a CIDR network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid trusted proxy entry: {0}")]
pub struct InvalidProxy(pub String);

impl TrustedProxies {
    /// No trusted proxy: forwarding headers are always ignored.
    pub fn none() -> Self {
        Self::default()
    }

    /// Parses a comma-separated list of IPs and CIDR networks, e.g.
    /// `"10.0.0.0/8, 127.0.0.1, ::1"` (as in `DEMO_TRUSTED_PROXIES`).
    pub fn parse(list: &str) -> Result<Self, InvalidProxy> {
        let mut nets = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let net = IpNet::from_str(entry)
                .or_else(|_| IpAddr::from_str(entry).map(IpNet::from))
                .map_err(|_| InvalidProxy(entry.to_owned()))?;
            nets.push(canonical_net(net));
        }
        let proxies = Self {
            nets,
            header: ForwardedHeader::default(),
        };
        if proxies.trusts_everyone() {
            tracing::warn!(
                "trusted proxies: the list covers every address (0.0.0.0/0, ::/0 or all of \
                 global IPv6): any client can name any address in a forwarding header and \
                 escape the per-IP login throttle; trust only your proxies' own addresses"
            );
        }
        Ok(proxies)
    }

    /// Whether the list trusts every client: `0.0.0.0/0`, `::/0`, or all
    /// of global IPv6 (`2000::/3` or wider), also when pieced together
    /// from narrower entries (`0.0.0.0/1, 128.0.0.0/1`). Any client could
    /// then name any address in a forwarding header, so
    /// [`parse`](Self::parse) warns.
    pub fn trusts_everyone(&self) -> bool {
        IpNet::aggregate(&self.nets).iter().any(|net| match net {
            IpNet::V4(v4) => v4.prefix_len() == 0,
            IpNet::V6(v6) => v6.prefix_len() <= 3,
        })
    }

    /// Reads `header` instead of the default `X-Forwarded-For`.
    #[must_use]
    pub fn using(mut self, header: ForwardedHeader) -> Self {
        self.header = header;
        self
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// The client address for a request that arrived from `peer` with these
    /// headers (name, value; names are matched case-insensitively; repeated
    /// headers are read in order). Only the configured forwarding header is
    /// read, and only when `peer` is trusted.
    pub fn client_ip<'a>(
        &self,
        peer: IpAddr,
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        let name = match self.header {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
        };
        let mut chain = Vec::new();
        for (_, value) in headers
            .into_iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            match self.header {
                ForwardedHeader::XForwardedFor => {
                    chain.extend(value.split(',').map(|v| parse_addr(v.trim())));
                }
                // Split at commas outside quoted strings: a quoted value
                // (a `host` the client chose) may hold `,for=...`.
                ForwardedHeader::Forwarded => chain.extend(
                    forwarded_elements(value)
                        .into_iter()
                        .map(|element| element.and_then(forwarded_for)),
                ),
            }
        }
        let mut client = peer;
        for hop in chain.iter().rev() {
            match hop {
                Some(ip) => {
                    client = canonical(*ip);
                    if !self.contains(client) {
                        return client;
                    }
                }
                // Malformed or obfuscated: nothing left of it can be trusted.
                None => return client,
            }
        }
        client
    }
}

/// An IPv4-mapped IPv6 entry (`::ffff:10.0.0.0/104`, `::ffff:10.0.0.1`)
/// as the IPv4 network it names: peers are compared in their IPv4 form.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map_or(net, |v4| IpNet::V4(v4.trunc())),
            None => net,
        },
        other => other,
    }
}

/// The elements of one `Forwarded` line, left to right, cut at commas
/// outside quoted strings. Read from the right, as the walk trusts it: a
/// quote a client left open (`for="x`, to which its proxy appended
/// `, for=203.0.113.5`) spoils only its own element and what is left of
/// it (`None`), never the elements the proxies appended after it.
fn forwarded_elements(value: &str) -> Vec<Option<&str>> {
    let bytes = value.as_bytes();
    let mut elements = Vec::new();
    let (mut end, mut quoted) = (bytes.len(), false);
    for i in (0..bytes.len()).rev() {
        match bytes[i] {
            b'"' => {
                let backslashes = bytes[..i].iter().rev().take_while(|&&b| b == b'\\').count();
                if backslashes % 2 == 0 {
                    quoted = !quoted;
                }
            }
            b',' if !quoted => {
                elements.push(Some(&value[i + 1..end]));
                end = i;
            }
            _ => {}
        }
    }
    elements.push((!quoted).then(|| &value[..end]));
    elements.reverse();
    elements
}

/// `value` cut at each `separator` outside a quoted string (RFC 7230
/// `quoted-string`, with `\`-escapes); `None` when a quote is left open.
fn split_unquoted(value: &str, separator: u8) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, b) in value.bytes().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted && b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            quoted = !quoted;
        } else if b == separator && !quoted {
            parts.push(&value[start..i]);
            start = i + 1;
        }
    }
    if quoted {
        return None;
    }
    parts.push(&value[start..]);
    Some(parts)
}

/// The `for=` address of one `Forwarded` element, if it is an address
/// (RFC 7239: a token, or a quoted string such as `"[2001:db8::1]:443"`).
fn forwarded_for(element: &str) -> Option<IpAddr> {
    split_unquoted(element, b';')?.into_iter().find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        if !key.trim().eq_ignore_ascii_case("for") {
            return None;
        }
        let value = value.trim();
        let value = match value.strip_prefix('"') {
            // An address never holds `"` or `\\`: an escape is malformed.
            Some(quoted) => quoted
                .strip_suffix('"')
                .filter(|v| !v.contains(['"', '\\']))?,
            None => value,
        };
        parse_addr(value)
    })
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:443`.
fn parse_addr(value: &str) -> Option<IpAddr> {
    IpAddr::from_str(value)
        .ok()
        .or_else(|| SocketAddr::from_str(value).ok().map(|s| s.ip()))
        .or_else(|| {
            let inner = value.strip_prefix('[')?.strip_suffix(']')?;
            Ipv6Addr::from_str(inner).ok().map(IpAddr::V6)
        })
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) are IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// The throttling key of an address: an IPv4 address, or an IPv6 network
/// (the /64 by default: one subscriber usually holds a whole /64; wider
/// tiers group a site).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpBucket {
    /// One IPv4 address.
    V4(u32),
    /// An IPv6 network: its address bits above `len`, and `len`.
    V6 {
        /// The network address (bits past `len` are zero).
        network: u128,
        /// The prefix length.
        len: u8,
    },
}

impl IpBucket {
    /// The bucket of `ip`: the address itself for IPv4, its /64 for IPv6.
    pub fn of(ip: IpAddr) -> Self {
        Self::within(ip, 64)
    }

    /// The bucket of `ip` in IPv6 networks of `len` bits (at most 128); an
    /// IPv4 address (also IPv4-mapped) is its own bucket.
    pub fn within(ip: IpAddr, len: u8) -> Self {
        match canonical(ip) {
            IpAddr::V4(v4) => Self::V4(u32::from(v4)),
            IpAddr::V6(v6) => {
                let len = len.min(128);
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                Self::V6 {
                    network: u128::from(v6) & mask,
                    len,
                }
            }
        }
    }
}

impl std::fmt::Display for IpBucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::V4(v4) => write!(f, "{}", std::net::Ipv4Addr::from(*v4)),
            Self::V6 { network, len } => write!(f, "{}/{len}", Ipv6Addr::from(*network)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn without_trusted_proxies_headers_are_ignored() {
        let proxies = TrustedProxies::none();
        let headers = [
            ("X-Forwarded-For", "203.0.113.9"),
            ("Forwarded", "for=203.0.113.9"),
        ];
        assert_eq!(
            proxies.client_ip(ip("198.51.100.1"), headers),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn an_untrusted_peer_cannot_spoof() {
        let proxies = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let headers = [("X-Forwarded-For", "1.1.1.1")];
        assert_eq!(
            proxies.client_ip(ip("198.51.100.1"), headers),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn the_chain_is_read_right_to_left() {
        let proxies = TrustedProxies::parse("10.0.0.0/8, 192.168.1.1").unwrap();
        // The client can prepend anything; only what trusted hops appended counts.
        let headers = [("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.1.1.1")];
        assert_eq!(
            proxies.client_ip(ip("10.0.0.2"), headers),
            ip("203.0.113.9")
        );
        // Split over two header lines: still in order.
        let headers = [
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Forwarded-For", "203.0.113.9, 192.168.1.1"),
        ];
        assert_eq!(
            proxies.client_ip(ip("10.0.0.2"), headers),
            ip("203.0.113.9")
        );
        // Every hop trusted: the leftmost.
        let headers = [("X-Forwarded-For", "10.9.9.9, 10.1.1.1")];
        assert_eq!(proxies.client_ip(ip("10.0.0.2"), headers), ip("10.9.9.9"));
    }

    #[test]
    fn only_the_configured_header_is_read() {
        let xff = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let forwarded = xff.clone().using(ForwardedHeader::Forwarded);
        let headers = [
            ("X-Forwarded-For", "198.51.100.20"),
            (
                "Forwarded",
                r#"for=192.0.2.60;proto=http;by=203.0.113.43, For="[2001:db8:cafe::17]:4711""#,
            ),
        ];
        // A client-supplied Forwarded header cannot override what the proxy
        // appended to X-Forwarded-For, and vice versa.
        assert_eq!(xff.client_ip(ip("10.0.0.2"), headers), ip("198.51.100.20"));
        assert_eq!(
            forwarded.client_ip(ip("10.0.0.2"), headers),
            ip("2001:db8:cafe::17")
        );
        let headers = [("Forwarded", "for=192.0.2.43:80, for=10.0.0.9")];
        assert_eq!(
            forwarded.client_ip(ip("10.0.0.2"), headers),
            ip("192.0.2.43")
        );
        assert_eq!(xff.client_ip(ip("10.0.0.2"), headers), ip("10.0.0.2"));
    }

    #[test]
    fn malformed_entries_stop_the_walk() {
        let proxies = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let headers = [("X-Forwarded-For", "1.2.3.4, garbage, 10.0.0.7")];
        assert_eq!(proxies.client_ip(ip("10.0.0.2"), headers), ip("10.0.0.7"));
        let forwarded = proxies.clone().using(ForwardedHeader::Forwarded);
        let headers = [("Forwarded", "for=1.2.3.4, for=_hidden")];
        assert_eq!(forwarded.client_ip(ip("10.0.0.2"), headers), ip("10.0.0.2"));
        let headers = [("Forwarded", "for=unknown")];
        assert_eq!(forwarded.client_ip(ip("10.0.0.2"), headers), ip("10.0.0.2"));
    }

    /// A quoted value may hold `,` and `;`: a `host` the client chose
    /// (`"a,for=198.51.100.7"`) is no element of its own, and a quote left
    /// open is malformed.
    #[test]
    fn quoted_strings_in_forwarded_are_one_value() {
        let proxies = TrustedProxies::parse("10.0.0.0/8")
            .unwrap()
            .using(ForwardedHeader::Forwarded);
        let peer = ip("10.0.0.2");
        let headers = [("Forwarded", r#"for=203.0.113.5;host="a,for=198.51.100.7""#)];
        assert_eq!(proxies.client_ip(peer, headers), ip("203.0.113.5"));
        let headers = [("Forwarded", r#"for=203.0.113.5;host="a;for=198.51.100.7""#)];
        assert_eq!(proxies.client_ip(peer, headers), ip("203.0.113.5"));
        let headers = [(
            "Forwarded",
            r#"for=203.0.113.5;host="a\",for=198.51.100.7""#,
        )];
        assert_eq!(proxies.client_ip(peer, headers), ip("203.0.113.5"));
        let headers = [("Forwarded", r#"for=203.0.113.5, for="198.51.100.7"#)];
        assert_eq!(proxies.client_ip(peer, headers), peer, "an open quote");
        // A quote the client left open spoils only its own element: the
        // one its proxy appended still names it.
        let headers = [("Forwarded", r#"for="x, for=203.0.113.5"#)];
        assert_eq!(proxies.client_ip(peer, headers), ip("203.0.113.5"));
        let headers = [("Forwarded", r#"for="x, for=10.0.0.9, for=203.0.113.5"#)];
        assert_eq!(proxies.client_ip(peer, headers), ip("203.0.113.5"));
        let headers = [("Forwarded", r#"for="x, for=10.0.0.9"#)];
        assert_eq!(
            proxies.client_ip(peer, headers),
            ip("10.0.0.9"),
            "the walk stops at the spoiled element"
        );
        let headers = [("Forwarded", r#"for="198.51.100.\7""#)];
        assert_eq!(proxies.client_ip(peer, headers), peer, "an escape");
        let headers = [("Forwarded", r#"for="[2001:db8::17]:4711";proto=https"#)];
        assert_eq!(proxies.client_ip(peer, headers), ip("2001:db8::17"));
    }

    /// A proxy written in its IPv4-mapped IPv6 form (as a dual-stack
    /// listener logs it) is the IPv4 proxy.
    #[test]
    fn mapped_proxy_entries_are_their_ipv4_form() {
        let headers = [("X-Forwarded-For", "203.0.113.9")];
        for entry in [
            "::ffff:10.0.0.0/104",
            "::ffff:10.0.0.2",
            "::ffff:10.0.0.2/128",
        ] {
            let proxies = TrustedProxies::parse(entry).unwrap();
            for peer in ["::ffff:10.0.0.2", "10.0.0.2"] {
                assert_eq!(
                    proxies.client_ip(ip(peer), headers),
                    ip("203.0.113.9"),
                    "{entry} {peer}"
                );
            }
            // 10.0.1.2 is in ::ffff:10.0.0.0/104 (10.0.0.0/8) only.
            let other = if entry.ends_with("/104") {
                "203.0.113.9"
            } else {
                "10.0.1.2"
            };
            assert_eq!(
                proxies.client_ip(ip("10.0.1.2"), headers),
                ip(other),
                "{entry}"
            );
        }
    }

    #[test]
    fn ipv6_is_grouped_by_64_and_mapped_v4_is_v4() {
        let a = IpBucket::of(ip("2001:db8:1:2:aaaa::1"));
        let b = IpBucket::of(ip("2001:db8:1:2:ffff::9"));
        let c = IpBucket::of(ip("2001:db8:1:3::1"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_eq!(
            IpBucket::of(ip("::ffff:192.0.2.1")),
            IpBucket::of(ip("192.0.2.1"))
        );
        assert_ne!(IpBucket::of(ip("192.0.2.1")), IpBucket::of(ip("192.0.2.2")));
        let wide = IpBucket::within(ip("2001:db8:1:2ff::1"), 56);
        assert_eq!(wide.to_string(), "2001:db8:1:200::/56");
        assert_eq!(wide, IpBucket::within(ip("2001:db8:1:280::9"), 56));
        assert_ne!(wide, IpBucket::within(ip("2001:db8:1:300::9"), 56));
        assert_eq!(
            IpBucket::within(ip("2001:db8:1:2::1"), 0).to_string(),
            "::/0"
        );
        let proxies = TrustedProxies::parse("127.0.0.1").unwrap();
        assert!(proxies.contains(ip("::ffff:127.0.0.1")));
    }

    #[test]
    fn lists_that_trust_the_whole_internet_are_recognised() {
        for wide in [
            "0.0.0.0/0",
            "::/0",
            "127.0.0.1, 0.0.0.0/0",
            "2000::/3",
            "0.0.0.0/1, 128.0.0.0/1",
            "2000::/4, 3000::/4",
            "0.0.0.0/2, 64.0.0.0/2, 128.0.0.0/1",
        ] {
            assert!(
                TrustedProxies::parse(wide).unwrap().trusts_everyone(),
                "{wide}"
            );
        }
        for narrow in [
            "",
            "10.0.0.0/9",
            "127.0.0.1, ::1",
            "fd00::/17",
            "192.168.0.0/16",
            "0.0.0.0/1",
            "0.0.0.0/1, 192.0.0.0/2",
            "2000::/4",
        ] {
            assert!(
                !TrustedProxies::parse(narrow).unwrap().trusts_everyone(),
                "{narrow}"
            );
        }
    }

    #[test]
    fn bad_proxy_lists_are_errors() {
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("example.com").is_err());
        assert!(TrustedProxies::parse("").unwrap().is_empty());
    }
}
