//! Property tests over every parser of untrusted input in the core: cookie
//! headers, forwarding headers and client IPs, proxy lists, login names,
//! recovery and TOTP codes, form tokens, `next` paths and the cross-origin
//! check. None may panic, whatever the bytes; where a parse has an
//! inverse, the round trip holds. (Form and JSON bodies are parsed by each
//! framework's extractors; the conformance suite sends malformed ones to
//! all three.)

use std::net::IpAddr;

use auth_core::cookie::CookieConfig;
use auth_core::csrf::{CsrfGuard, CsrfTokens, RequestMeta};
use auth_core::mfa::{TotpParams, TotpSecret, hash_recovery_code, normalize_recovery_code};
use auth_core::rate_limit::{ForwardedHeader, TrustedProxies};
use auth_core::session::SessionId;
use auth_core::user::{LoginName, normalize_login};
use auth_core::web::safe_next;
use proptest::prelude::*;

/// Text with the characters parsers trip on: separators, quotes, spaces of
/// every kind, controls, non-ASCII.
fn nasty() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just(';'),
            Just('='),
            Just(','),
            Just('"'),
            Just(' '),
            Just('\t'),
            Just('\u{2000}'),
            Just('\u{a0}'),
            Just('\u{0}'),
            Just('\n'),
            Just('['),
            Just(']'),
            Just(':'),
            Just('/'),
            Just('%'),
            Just('-'),
            any::<char>(),
            proptest::char::range('a', 'z'),
        ],
        0..120,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn cookie_headers_never_panic(header in nasty(), second in nasty()) {
        let config = CookieConfig::default();
        let lines = [header.as_str(), second.as_str()];
        prop_assert!(config.session_ids(lines).count() <= auth_core::cookie::MAX_SESSION_COOKIES);
        let _ = config.visitor_id(lines);
    }

    /// A session cookie among any other well-formed cookies, before or
    /// after them, is found, and only under its exact name.
    #[test]
    fn a_session_cookie_is_found_among_other_cookies(
        before in proptest::collection::vec("[a-z]{1,8}=[A-Za-z0-9_-]{0,20}", 0..4),
        after in proptest::collection::vec("[a-z]{1,8}=[A-Za-z0-9_-]{0,20}", 0..4),
    ) {
        let config = CookieConfig::default();
        let id = SessionId::generate().unwrap();
        let mut pairs = before.clone();
        pairs.push(format!("__Host-session={}", id.encode()));
        pairs.extend(after);
        let header = pairs.join("; ");
        prop_assert_eq!(config.session_id([header.as_str()]), Some(id.clone()));
        let renamed = header.replace("__Host-session=", "\u{2000}__Host-session=");
        prop_assert_eq!(config.session_id([renamed.as_str()]), None);
    }

    #[test]
    fn session_ids_round_trip_and_any_text_parses_safely(text in nasty()) {
        let id = SessionId::generate().unwrap();
        prop_assert_eq!(SessionId::parse(&id.encode()), Some(id));
        let _ = SessionId::parse(&text);
    }

    /// Forwarding headers never panic the client-IP logic; without a
    /// trusted proxy the client is always the socket peer, whatever the
    /// headers say.
    #[test]
    fn client_ips_never_panic_and_untrusted_peers_are_the_client(
        xff in nasty(), forwarded in nasty(), peer in any::<IpAddr>(), proxies in nasty(),
    ) {
        let headers = [("x-forwarded-for", xff.as_str()), ("forwarded", forwarded.as_str())];
        prop_assert_eq!(TrustedProxies::none().client_ip(peer, headers), canonical(peer));
        let everyone = TrustedProxies::parse("0.0.0.0/0, ::/0").unwrap();
        let _ = everyone.client_ip(peer, headers);
        let _ = everyone.using(ForwardedHeader::Forwarded).client_ip(peer, headers);
        let _ = TrustedProxies::parse(&proxies);
    }

    /// Login names: never a panic; the normal form is a fixed point; a
    /// parsed name keeps its normal form.
    #[test]
    fn login_names_normalise_to_a_fixed_point(name in nasty()) {
        if let Ok(normal) = normalize_login(&name) {
            prop_assert_eq!(normalize_login(&normal), Ok(normal.clone()));
            let parsed = LoginName::parse(&name).unwrap();
            prop_assert_eq!(parsed.normalized(), normal.as_str());
        }
    }

    /// Codes: any text is safe to check; a real recovery code is found in
    /// any case and with any dashes or spaces between its characters.
    #[test]
    fn codes_parse_safely_and_recovery_codes_survive_sloppy_typing(
        text in nasty(), separators in proptest::collection::vec(prop_oneof![Just(""), Just("-"), Just(" ")], 24),
    ) {
        let _ = normalize_recovery_code(&text);
        let _ = hash_recovery_code("u1", &text);
        let secret = TotpSecret::generate().unwrap();
        let _ = TotpParams::default().verify(&secret, &text, 1_700_000_000);
        let codes = auth_core::mfa::RecoveryCodes::generate("u1").unwrap();
        let code = codes.codes()[0].replace('-', "");
        let sloppy: String = code
            .chars()
            .zip(&separators)
            .map(|(c, sep)| format!("{}{sep}", c.to_ascii_lowercase()))
            .collect();
        let hashed = hash_recovery_code("u1", &sloppy);
        prop_assert_eq!(hashed.as_ref(), Some(&codes.hashes()[0]));
    }

    /// Form tokens: garbage never verifies and never panics.
    #[test]
    fn form_tokens_refuse_garbage(token in nasty()) {
        let tokens = CsrfTokens::new(vec![3u8; 32]).unwrap();
        let key = SessionId::generate().unwrap().key();
        prop_assert!(!tokens.verify(&key, &token));
        prop_assert!(!tokens.verify_for_visitor(&key, &token));
    }

    /// `next`: whatever comes in, what goes out is a same-origin path.
    #[test]
    fn next_is_always_a_same_origin_path(next in nasty()) {
        if let Some(path) = safe_next(&next) {
            prop_assert!(path.starts_with('/') && !path.starts_with("//") && !path.starts_with("/\\"));
            prop_assert!(!path.chars().any(char::is_control));
        }
    }

    /// The cross-origin check: any header values, no panic; a safe method
    /// always passes.
    #[test]
    fn the_cross_origin_check_never_panics(
        host in nasty(), origin in nasty(), site in nasty(), method in "[A-Z]{1,8}",
    ) {
        let guard = CsrfGuard::default();
        let request = RequestMeta {
            method: &method,
            host: Some(&host),
            sec_fetch_site: Some(&site),
            origin: Some(&origin),
        };
        let result = guard.check(&request);
        if ["GET", "HEAD", "OPTIONS"].contains(&method.as_str()) {
            prop_assert!(result.is_ok());
        }
    }
}

/// An IPv4-mapped IPv6 peer is its IPv4 address (as the core reports it).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}
