//! Single-use recovery codes.

use std::fmt;

use base64ct::{Base64UrlUnpadded, Encoding};
use secrecy::{ExposeSecret, SecretString};
use serde::ser::{Serialize, SerializeStruct, Serializer};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{MfaError, base32};

/// How many codes a set holds.
pub const RECOVERY_CODE_COUNT: usize = 10;
/// Characters per code (24 base32 characters: 120 bits, above ASVS 5.0
/// 6.5.2's 112).
const CODE_CHARS: usize = 24;
/// Codes issued before 120-bit codes (16 characters, 80 bits) keep
/// working until the user's next set replaces them.
const LEGACY_CODE_CHARS: usize = 16;
/// Longest input looked at.
const MAX_INPUT: usize = 64;

/// A fresh set of recovery codes, to show the user once. Only their hashes
/// ([`hashes`](Self::hashes)) are stored. `Debug` prints no code.
///
/// Each code is 24 base32 characters (120 bits from the OS CSPRNG), shown
/// in groups of four, `XXXX-XXXX-XXXX-XXXX-XXXX-XXXX`; input is accepted in
/// any case, with or without dashes and spaces. It serialises as
/// `{"recovery_codes": [...]}`.
pub struct RecoveryCodes {
    codes: Vec<SecretString>,
    hashes: Vec<String>,
}

impl RecoveryCodes {
    /// [`RECOVERY_CODE_COUNT`] new codes for `user_id`.
    pub fn generate(user_id: &str) -> Result<Self, MfaError> {
        let mut codes = Vec::with_capacity(RECOVERY_CODE_COUNT);
        let mut hashes = Vec::with_capacity(RECOVERY_CODE_COUNT);
        while codes.len() < RECOVERY_CODE_COUNT {
            let mut bytes = Zeroizing::new([0u8; CODE_CHARS]);
            getrandom::fill(bytes.as_mut_slice()).map_err(|_| MfaError::Rng)?;
            // Each byte picks one of 32 characters: 5 uniform bits each.
            let raw: Zeroizing<String> = Zeroizing::new(
                bytes
                    .iter()
                    .map(|b| char::from(base32::ALPHABET[usize::from(b & 0x1f)]))
                    .collect(),
            );
            let hash = hash_normalized(user_id, &raw);
            if hashes.contains(&hash) {
                continue;
            }
            let groups: Vec<&str> = (0..CODE_CHARS)
                .step_by(4)
                .map(|start| &raw[start..start + 4])
                .collect();
            let shown = groups.join("-");
            codes.push(SecretString::from(shown));
            hashes.push(hash);
        }
        Ok(Self { codes, hashes })
    }

    /// The codes, as shown to the user.
    pub fn codes(&self) -> Vec<&str> {
        self.codes.iter().map(|c| c.expose_secret()).collect()
    }

    /// How many codes.
    pub fn len(&self) -> usize {
        self.codes.len()
    }

    /// Whether the set is empty (never, for a generated set).
    pub fn is_empty(&self) -> bool {
        self.codes.is_empty()
    }

    /// The hashes a store keeps.
    pub fn hashes(&self) -> &[String] {
        &self.hashes
    }
}

impl fmt::Debug for RecoveryCodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecoveryCodes({} codes, [REDACTED])", self.codes.len())
    }
}

impl Serialize for RecoveryCodes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("RecoveryCodes", 1)?;
        out.serialize_field("recovery_codes", &self.codes())?;
        out.end()
    }
}

/// The canonical form of a typed recovery code: upper case, without dashes
/// or spaces; `None` unless it is 24 base32 characters (or 16, a code of an
/// earlier, 80-bit set).
pub fn normalize_recovery_code(input: &str) -> Option<Zeroizing<String>> {
    if input.len() > MAX_INPUT {
        return None;
    }
    let code: Zeroizing<String> = Zeroizing::new(
        input
            .chars()
            .filter(|c| !matches!(c, '-' | ' '))
            .map(|c| c.to_ascii_uppercase())
            .collect(),
    );
    let length_ok = code.len() == CODE_CHARS || code.len() == LEGACY_CODE_CHARS;
    (length_ok && code.bytes().all(|b| base32::value(b).is_some())).then_some(code)
}

fn hash_normalized(user_id: &str, code: &str) -> String {
    // Salted with the user id: no hash is worth trying against another
    // user, and 120-bit codes make a brute force of one hash out of reach.
    let digest = Sha256::new()
        .chain_update(b"auth-core recovery code v1\0")
        .chain_update((user_id.len() as u64).to_be_bytes())
        .chain_update(user_id.as_bytes())
        .chain_update(code.as_bytes())
        .finalize();
    Base64UrlUnpadded::encode_string(&digest)
}

/// The stored hash of a typed code for `user_id`, `None` when the input
/// cannot be a recovery code.
pub fn hash_recovery_code(user_id: &str, input: &str) -> Option<String> {
    let code = normalize_recovery_code(input)?;
    Some(hash_normalized(user_id, &code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_formatted_and_hash_on_any_spelling() {
        let set = RecoveryCodes::generate("u1").unwrap();
        assert_eq!(set.len(), RECOVERY_CODE_COUNT);
        let codes = set.codes();
        for (code, hash) in codes.iter().zip(set.hashes()) {
            // 24 characters of 32 kinds: 120 bits (ASVS 5.0 6.5.2: 112).
            assert_eq!(code.len(), 29);
            assert_eq!(code.matches('-').count(), 5);
            assert!(code.split('-').all(|group| group.len() == 4));
            assert_eq!(hash_recovery_code("u1", code).as_ref(), Some(hash));
            let sloppy = code.to_lowercase().replace('-', " ");
            assert_eq!(hash_recovery_code("u1", &sloppy).as_ref(), Some(hash));
            assert_eq!(
                hash_recovery_code("u1", &code.replace('-', "")).as_ref(),
                Some(hash)
            );
            assert_ne!(hash_recovery_code("u2", code).as_ref(), Some(hash));
            assert!(!hash.contains(&code.replace('-', "")));
        }
        let unique: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(unique.len(), RECOVERY_CODE_COUNT);
        let printed = format!("{set:?}");
        assert!(codes.iter().all(|c| !printed.contains(c)));
        let json = serde_json::to_value(&set).unwrap();
        assert_eq!(json["recovery_codes"].as_array().unwrap().len(), 10);
    }

    /// The generated characters are uniform over all 32 (a bias would cut
    /// the entropy): 10,000 codes, each character near 1/32 of the total.
    #[test]
    fn every_character_is_drawn_uniformly() {
        let mut counts = std::collections::HashMap::new();
        for _ in 0..1_000 {
            for code in RecoveryCodes::generate("u").unwrap().codes() {
                for c in code.chars().filter(|c| *c != '-') {
                    *counts.entry(c).or_insert(0u32) += 1;
                }
            }
        }
        assert_eq!(counts.len(), 32);
        let total: u32 = counts.values().sum();
        for (c, n) in counts {
            let share = f64::from(n) / f64::from(total);
            assert!((share - 1.0 / 32.0).abs() < 0.004, "{c}: {share}");
        }
    }

    /// A code of an earlier, 80-bit set still works until it is replaced.
    #[test]
    fn a_legacy_sixteen_character_code_still_hashes() {
        let legacy = "ABCD-EFGH-IJKL-MNOP";
        assert!(hash_recovery_code("u1", legacy).is_some());
        assert_eq!(
            hash_recovery_code("u1", legacy),
            hash_recovery_code("u1", "abcdefghijklmnop")
        );
    }

    #[test]
    fn malformed_input_is_not_a_code() {
        for bad in [
            "",
            "ABCD",
            "ABCD-EFGH-IJKL-MNO1",
            "ABCD-EFGH-IJKL-MNOPQ",
            "ABCD-EFGH-IJKL-MNOP-QRST",
            "ABCD-EFGH-IJKL-MNOP-QRST-UVW1",
            &"A".repeat(100),
        ] {
            assert!(hash_recovery_code("u1", bad).is_none(), "{bad:?}");
        }
    }
}
