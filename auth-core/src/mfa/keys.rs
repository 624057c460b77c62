//! The key ring that encrypts TOTP secrets at rest.

use std::fmt;

use base64ct::{Base64, Base64Unpadded, Base64Url, Base64UrlUnpadded, Encoding};
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use zeroize::Zeroizing;

use super::{MfaError, TotpSecret};

/// Key length: 256 bits.
const KEY_BYTES: usize = 32;
/// XChaCha20-Poly1305 nonce length: 192 bits, safe to draw at random.
const NONCE_BYTES: usize = 24;
/// Longest key id.
const MAX_KID_LEN: usize = 32;
/// The version tag of the stored form.
const VERSION: &str = "v1";

struct Key {
    kid: String,
    secret: SecretBox<[u8; KEY_BYTES]>,
}

/// The application keys that encrypt TOTP secrets in the user store: one
/// current key (encrypts and decrypts) and any number of previous keys
/// (decrypt only), so a key can be rotated without locking anyone out.
///
/// A secret is stored as `v1.<kid>.<base64url(nonce || ciphertext)>`:
/// XChaCha20-Poly1305 with a random 192-bit nonce, the key id and the user
/// id as associated data, so a record copied onto another user does not
/// decrypt. Keys are zeroed on drop and never printed.
///
/// Key ids are 1 to 32 characters of `A-Z a-z 0-9 _ -`. Keys are 32 bytes,
/// given in base64 (standard or URL-safe, padded or not), e.g. from
/// `openssl rand -base64 32`, kept outside the database (environment,
/// secret manager).
pub struct MfaKeys {
    current: Key,
    previous: Vec<Key>,
}

impl fmt::Debug for MfaKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MfaKeys")
            .field("current", &self.current.kid)
            .field(
                "previous",
                &self.previous.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .field("keys", &"[REDACTED]")
            .finish()
    }
}

fn check_kid(kid: &str) -> Result<String, MfaError> {
    if kid.is_empty()
        || kid.len() > MAX_KID_LEN
        || !kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(MfaError::InvalidKey(
            "key ids are 1 to 32 characters of A-Z a-z 0-9 _ -",
        ));
    }
    Ok(kid.to_owned())
}

fn decode_key(encoded: &str) -> Result<SecretBox<[u8; KEY_BYTES]>, MfaError> {
    let encoded = encoded.trim();
    let mut buffer = Zeroizing::new([0u8; KEY_BYTES + 3]);
    type Decoder = fn(&str, &mut [u8]) -> Option<usize>;
    let decoders: [Decoder; 4] = [
        |s, out| Base64::decode(s, out).ok().map(|d| d.len()),
        |s, out| Base64Unpadded::decode(s, out).ok().map(|d| d.len()),
        |s, out| Base64Url::decode(s, out).ok().map(|d| d.len()),
        |s, out| Base64UrlUnpadded::decode(s, out).ok().map(|d| d.len()),
    ];
    let length = decoders
        .iter()
        .find_map(|decode| decode(encoded, buffer.as_mut_slice()))
        .ok_or(MfaError::InvalidKey("the key must be 32 bytes in base64"))?;
    if length != KEY_BYTES {
        return Err(MfaError::InvalidKey("the key must be 32 bytes in base64"));
    }
    let mut key = Box::new([0u8; KEY_BYTES]);
    key.copy_from_slice(&buffer[..KEY_BYTES]);
    Ok(SecretBox::new(key))
}

fn associated_data(kid: &str, user_id: &str) -> Vec<u8> {
    // The kid cannot contain NUL, so the split is unambiguous.
    let mut aad = Vec::with_capacity(24 + kid.len() + user_id.len());
    aad.extend_from_slice(b"auth-core totp v1\0");
    aad.extend_from_slice(kid.as_bytes());
    aad.push(0);
    aad.extend_from_slice(user_id.as_bytes());
    aad
}

impl Key {
    fn cipher(&self) -> Result<XChaCha20Poly1305, MfaError> {
        XChaCha20Poly1305::new_from_slice(self.secret.expose_secret())
            .map_err(|_| MfaError::InvalidKey("key length"))
    }
}

impl MfaKeys {
    /// A key ring whose current key is `key` (32 bytes in base64) under
    /// `kid`.
    pub fn from_base64(kid: &str, key: &str) -> Result<Self, MfaError> {
        Ok(Self {
            current: Key {
                kid: check_kid(kid)?,
                secret: decode_key(key)?,
            },
            previous: Vec::new(),
        })
    }

    /// A key ring with a fresh random key under `kid`. Secrets encrypted
    /// with it are lost with it: persist it with
    /// [`current_key_base64`](Self::current_key_base64), or use this only
    /// for tests and throw-away demos.
    pub fn generate(kid: &str) -> Result<Self, MfaError> {
        let mut key = Box::new([0u8; KEY_BYTES]);
        getrandom::fill(key.as_mut_slice()).map_err(|_| MfaError::Rng)?;
        Ok(Self {
            current: Key {
                kid: check_kid(kid)?,
                secret: SecretBox::new(key),
            },
            previous: Vec::new(),
        })
    }

    /// Adds an older key, used only to decrypt secrets stored under it.
    pub fn with_previous_base64(mut self, kid: &str, key: &str) -> Result<Self, MfaError> {
        let kid = check_kid(kid)?;
        if kid == self.current.kid || self.previous.iter().any(|k| k.kid == kid) {
            return Err(MfaError::InvalidKey("duplicate key id"));
        }
        self.previous.push(Key {
            kid,
            secret: decode_key(key)?,
        });
        Ok(self)
    }

    /// Makes `newer` the current key ring's key and keeps every key of
    /// `self` for decryption: what a rotation does.
    pub fn rotate_to(self, newer: MfaKeys) -> Result<Self, MfaError> {
        let mut keys = newer;
        for key in std::iter::once(self.current).chain(self.previous) {
            if key.kid == keys.current.kid || keys.previous.iter().any(|k| k.kid == key.kid) {
                return Err(MfaError::InvalidKey("duplicate key id"));
            }
            keys.previous.push(key);
        }
        Ok(keys)
    }

    /// The id of the key that encrypts.
    pub fn current_kid(&self) -> &str {
        &self.current.kid
    }

    /// The current key in base64, to persist a [`generate`](Self::generate)d
    /// key in a secret store. Handle with care.
    pub fn current_key_base64(&self) -> SecretString {
        SecretString::from(Base64::encode_string(self.current.secret.expose_secret()))
    }

    fn key(&self, kid: &str) -> Option<&Key> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.kid == kid)
    }

    /// Encrypts `secret` for `user_id` with the current key.
    pub fn seal(&self, user_id: &str, secret: &TotpSecret) -> Result<String, MfaError> {
        let key = &self.current;
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).map_err(|_| MfaError::Rng)?;
        let aad = associated_data(&key.kid, user_id);
        let ciphertext = key
            .cipher()?
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: secret.expose_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| MfaError::Decrypt)?;
        let mut blob = Vec::with_capacity(NONCE_BYTES + ciphertext.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ciphertext);
        Ok(format!(
            "{VERSION}.{}.{}",
            key.kid,
            Base64UrlUnpadded::encode_string(&blob)
        ))
    }

    /// Decrypts a secret stored by [`seal`](Self::seal) for the same
    /// `user_id`, with whichever key of the ring its key id names.
    pub fn open(&self, user_id: &str, sealed: &str) -> Result<TotpSecret, MfaError> {
        let mut parts = sealed.splitn(3, '.');
        let (Some(VERSION), Some(kid), Some(body)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(MfaError::Malformed);
        };
        let key = self.key(kid).ok_or(MfaError::UnknownKeyId)?;
        let blob = Base64UrlUnpadded::decode_vec(body).map_err(|_| MfaError::Malformed)?;
        if blob.len() <= NONCE_BYTES {
            return Err(MfaError::Malformed);
        }
        let (nonce, ciphertext) = blob.split_at(NONCE_BYTES);
        let aad = associated_data(kid, user_id);
        let plain = key
            .cipher()?
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| MfaError::Decrypt)?;
        TotpSecret::from_bytes(plain)
    }

    /// Whether `sealed` was encrypted with an older key (re-seal it with
    /// the current one when convenient).
    pub fn is_stale(&self, sealed: &str) -> bool {
        sealed
            .split('.')
            .nth(1)
            .is_some_and(|kid| kid != self.current.kid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn seal_open_round_trip_and_redaction() {
        let keys = MfaKeys::from_base64("a", KEY_A).unwrap();
        let secret = TotpSecret::generate().unwrap();
        let sealed = keys.seal("7", &secret).unwrap();
        assert!(sealed.starts_with("v1.a."));
        let again = keys.seal("7", &secret).unwrap();
        assert_ne!(sealed, again, "a fresh nonce each time");
        assert_eq!(
            keys.open("7", &sealed).unwrap().expose_bytes(),
            secret.expose_bytes()
        );
        let printed = format!("{keys:?}");
        assert!(!printed.contains(KEY_A) && !printed.contains("AAECAw"));
        assert!(matches!(keys.open("8", &sealed), Err(MfaError::Decrypt)));
    }

    /// A key is read in each of the four base64 forms the docs name, with
    /// the `+` / `/` or `-` / `_` that 3 in 4 random keys hold.
    #[test]
    fn every_base64_form_of_a_key_is_read() {
        let raw: [u8; KEY_BYTES] = std::array::from_fn(|i| (i as u8).wrapping_mul(37) | 0xf8);
        let forms = [
            Base64::encode_string(&raw),
            Base64Unpadded::encode_string(&raw),
            Base64Url::encode_string(&raw),
            Base64UrlUnpadded::encode_string(&raw),
        ];
        assert!(forms[0].contains(['+', '/']) && forms[0].ends_with('='));
        assert!(forms[2].contains(['-', '_']) && forms[2].ends_with('='));
        let secret = TotpSecret::generate().unwrap();
        let sealed = MfaKeys::from_base64("k", &forms[0])
            .unwrap()
            .seal("user", &secret)
            .unwrap();
        for form in &forms {
            let keys = MfaKeys::from_base64("k", form).unwrap_or_else(|_| panic!("{form}"));
            let opened = keys.open("user", &sealed).unwrap();
            assert_eq!(opened.expose_bytes(), secret.expose_bytes(), "{form}");
        }
    }

    #[test]
    fn malformed_keys_and_records_are_errors() {
        assert!(MfaKeys::from_base64("a", "AAEC").is_err());
        assert!(MfaKeys::from_base64("", KEY_A).is_err());
        assert!(MfaKeys::from_base64("a.b", KEY_A).is_err());
        assert!(MfaKeys::from_base64("a", "not base64!").is_err());
        let keys = MfaKeys::from_base64("a", KEY_A).unwrap();
        for bad in [
            "",
            "v1",
            "v1.a",
            "v1.a.",
            "v2.a.AAAA",
            "v1.a.!!!",
            "v1.b.AAAA",
        ] {
            assert!(keys.open("1", bad).is_err(), "{bad:?}");
        }
        let sealed = keys.seal("1", &TotpSecret::generate().unwrap()).unwrap();
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert!(keys.open("1", &tampered).is_err());
        // The key id is bound too: relabelling the record fails.
        let other = MfaKeys::from_base64("b", KEY_A).unwrap();
        let relabelled = sealed.replacen("v1.a.", "v1.b.", 1);
        assert!(matches!(
            other.open("1", &relabelled),
            Err(MfaError::Decrypt)
        ));
    }
}
