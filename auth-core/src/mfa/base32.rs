//! RFC 4648 base32 (upper case, no padding): the form authenticator apps
//! expect for TOTP secrets, and the alphabet of recovery codes.

use zeroize::Zeroizing;

pub(crate) const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Encodes without padding.
pub(crate) fn encode(bytes: &[u8]) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(bytes.len().div_ceil(5) * 8));
    let mut buffer: u16 = 0;
    let mut bits = 0u32;
    for &byte in bytes {
        buffer = (buffer << 8) | u16::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[usize::from((buffer >> bits) & 0x1f)]));
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(
            ALPHABET[usize::from((buffer << (5 - bits)) & 0x1f)],
        ));
    }
    out
}

/// The value of one base32 character (upper or lower case).
pub(crate) fn value(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a'),
        b'2'..=b'7' => Some(c - b'2' + 26),
        _ => None,
    }
}

/// Decodes, ignoring case, spaces and trailing `=` padding. `None` on any
/// other character or on non-zero trailing bits.
pub(crate) fn decode(text: &str) -> Option<Zeroizing<Vec<u8>>> {
    let mut out = Zeroizing::new(Vec::with_capacity(text.len() * 5 / 8));
    let mut buffer: u32 = 0;
    let mut bits = 0u32;
    for c in text.trim_end_matches('=').bytes() {
        if c == b' ' {
            continue;
        }
        buffer = (buffer << 5) | u32::from(value(c)?);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((buffer >> bits) & 0xff).ok()?);
        }
        buffer &= (1 << bits) - 1;
    }
    (buffer == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(encode(plain.as_bytes()).as_str(), encoded);
            assert_eq!(decode(encoded).unwrap().as_slice(), plain.as_bytes());
            assert_eq!(
                decode(&encoded.to_lowercase()).unwrap().as_slice(),
                plain.as_bytes()
            );
        }
        assert_eq!(decode("MZXW6YQ=").unwrap().as_slice(), b"foob");
        assert!(decode("MZ1W").is_none());
        // Non-zero trailing bits are refused.
        assert!(decode("MZ").is_none());
    }
}
