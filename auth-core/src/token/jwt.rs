//! Signed access tokens (JWT): keys, signing, verification, JWKS.
//!
//! * An access token is a compact JWS (RFC 7515) with the header
//!   `{"typ":"at+jwt","alg":..,"kid":..}` (RFC 9068) and the claims of
//!   [`AccessClaims`]. [`KeySet::sign`] signs with the current key;
//!   [`KeySet::verify`] checks everything listed under *Verification*.
//! * Three algorithms, one per key: [`Algorithm::Es256`] (the default),
//!   [`Algorithm::EdDsa`] (Ed25519) and [`Algorithm::Rs256`] (RSA of 2048
//!   to 8192 bits, imported only). A key's id ([`SigningKey::kid`]) is its
//!   RFC 7638 JWK thumbprint.
//! * Rotation: [`KeySet::rotate`] signs with a new key from then on and
//!   keeps verifying with the old one for as long as its tokens live;
//!   [`KeySet::jwks`] publishes the public keys that verify.
//!
//! # Verification
//!
//! In this order, each failure with its own [`TokenError`]:
//!
//! 1. At most [`MAX_TOKEN_LEN`] bytes, exactly three dot-separated parts of
//!    strict base64url without padding, a header that is a JSON object with
//!    no repeated member ([`TokenError::Malformed`]).
//! 2. The header carries none of `jwk`, `jku`, `x5u`, `x5c`, `crit`, `b64`,
//!    `enc`, `zip`; `kid` and `typ` are strings; `typ` is `at+jwt`
//!    ([`TokenError::Header`]).
//! 3. The key is found by the header's `kid` among the current key and the
//!    retired keys still valid at `now` ([`TokenError::UnknownKey`]).
//! 4. The algorithm is the *key's*: the header's `alg` must equal it
//!    exactly, so `none`, HMAC keyed with a public key, or ES256 against an
//!    Ed25519 key are refused before any cryptography
//!    ([`TokenError::Algorithm`]).
//! 5. The signature, of the length the algorithm defines (ECDSA as the
//!    64-byte `r || s`, never DER) ([`TokenError::Signature`]).
//! 6. Every claim of [`AccessClaims`] present with its JSON type, `iss`
//!    and `aud` (a string, or an array holding it) as [`Expect`]ed
//!    ([`TokenError::Claims`]); then `exp > now - leeway`
//!    ([`TokenError::Expired`]) and `nbf`, `iat <= now + leeway`
//!    ([`TokenError::NotYetValid`]), the leeway at most [`MAX_LEEWAY`].
//!
//! The clock is never read here: `now` is the caller's.
//!
//! # Crypto provider
//!
//! Encoding and decoding go through [`jsonwebtoken`] without any backend of
//! its own; the cryptography is this module's `CryptoProvider` over
//! RustCrypto (`p256`, `ed25519-dalek`, `rsa`), installed as the process
//! default the first time a token is signed or verified. An
//! application that installed its own provider before that
//! (`jsonwebtoken::crypto::CryptoProvider::install_default`) keeps it, and
//! this module signs and verifies through it; the strict parsing and the
//! checks above stay this module's either way.

mod keys;
mod provider;
#[cfg(test)]
mod tests;

pub use keys::{PublicKey, SigningKey};

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64ct::{Base64UrlUnpadded, Encoding};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The longest token accepted (and signed), in bytes: 8 KiB.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The largest clock leeway [`KeySet::verify`] applies, whatever
/// [`Expect::leeway`] says: 60 seconds.
pub const MAX_LEEWAY: Duration = Duration::from_secs(60);

/// The `typ` header of an access token (RFC 9068).
const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// Header members refused in every token: keys or key locations chosen by
/// the sender (`jwk`, `jku`, `x5u`, `x5c`), extensions we would have to
/// understand (`crit`, `b64`), and JWE members (`enc`, `zip`).
const FORBIDDEN_HEADER_MEMBERS: [&str; 8] =
    ["jwk", "jku", "x5u", "x5c", "crit", "b64", "enc", "zip"];

/// A signature algorithm: each key has exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Algorithm {
    /// ECDSA on P-256 with SHA-256 (the default).
    #[default]
    Es256,
    /// Ed25519.
    EdDsa,
    /// RSASSA-PKCS1-v1_5 with SHA-256, keys of 2048 bits or more.
    Rs256,
}

impl Algorithm {
    /// Every algorithm.
    pub const ALL: [Algorithm; 3] = [Algorithm::Es256, Algorithm::EdDsa, Algorithm::Rs256];

    /// The JOSE name: `ES256`, `EdDSA`, `RS256`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
            Self::Rs256 => "RS256",
        }
    }

    /// The algorithm a JOSE name names exactly (case-sensitive).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|alg| alg.as_str() == name)
    }

    fn to_jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::Es256 => jsonwebtoken::Algorithm::ES256,
            Self::EdDsa => jsonwebtoken::Algorithm::EdDSA,
            Self::Rs256 => jsonwebtoken::Algorithm::RS256,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    /// Issuer.
    pub iss: String,
    /// Audience (signed as a string; verified as a string or an array
    /// holding the expected one).
    pub aud: String,
    /// Subject: the user id.
    pub sub: String,
    /// Issued at (unix seconds).
    pub iat: u64,
    /// Not before (unix seconds).
    pub nbf: u64,
    /// Expires (unix seconds).
    pub exp: u64,
    /// Token id: 128 random bits, base64url ([`AccessClaims::new_jti`]).
    pub jti: String,
    /// Session id: the refresh-token family the token was issued for.
    pub sid: String,
    /// How the user authenticated, e.g. `["pwd", "otp"]` (RFC 8176).
    pub amr: Vec<String>,
    /// When the user authenticated (unix seconds).
    pub auth_time: u64,
}

impl AccessClaims {
    /// A fresh token id: 128 bits from the OS CSPRNG, base64url (22
    /// characters).
    pub fn new_jti() -> Result<String, TokenError> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(|_| TokenError::Sign)?;
        Ok(Base64UrlUnpadded::encode_string(&bytes))
    }
}

/// What [`KeySet::verify`] expects of a token's claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    /// The `iss` claim, exactly.
    pub issuer: String,
    /// The `aud` claim: this string, or an array holding it.
    pub audience: String,
    /// Clock skew allowed on `exp`, `nbf` and `iat`, in whole seconds;
    /// anything above [`MAX_LEEWAY`] counts as [`MAX_LEEWAY`].
    pub leeway: Duration,
}

/// Why a token was not signed or not accepted. Messages never contain the
/// token, its claims or key material.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Not a compact JWS: too long, not three parts, not strict base64url,
    /// or a header that is not a JSON object without repeated members.
    #[error("token is malformed")]
    Malformed,
    /// The header names no key, or one that does not verify (any more).
    #[error("token key is unknown")]
    UnknownKey,
    /// The header's `alg` is not the key's algorithm.
    #[error("token algorithm does not match its key")]
    Algorithm,
    /// A header member that is refused, of the wrong type, or a `typ`
    /// other than `at+jwt`.
    #[error("token header is not accepted")]
    Header,
    /// The signature does not verify.
    #[error("token signature is invalid")]
    Signature,
    /// `exp` has passed (beyond the leeway).
    #[error("token has expired")]
    Expired,
    /// `nbf` or `iat` is in the future (beyond the leeway).
    #[error("token is not valid yet")]
    NotYetValid,
    /// A claim is missing, of the wrong type, or not the expected issuer
    /// or audience.
    #[error("token claims are invalid")]
    Claims,
    /// Signing failed (or the OS random number generator did).
    #[error("token could not be signed")]
    Sign,
    /// The signed token would be longer than [`MAX_TOKEN_LEN`].
    #[error("token would exceed the size limit")]
    TooLarge,
}

/// Why a key was not made or not accepted. Messages never contain key
/// material.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// An algorithm, key type or curve this module does not use, or RSA key
    /// generation (import RSA keys with [`SigningKey::from_pkcs8_der`]).
    #[error("key type or algorithm is not supported")]
    Unsupported,
    /// Not a well-formed key of the algorithm.
    #[error("key is invalid")]
    Invalid,
    /// An RSA modulus under 2048 bits.
    #[error("key is too weak")]
    Weak,
    /// A JWK with private members (`d`, `p`, `q`, `dp`, `dq`, `qi`, `oth`,
    /// `k`): a verification key is public only.
    #[error("key contains private material")]
    PrivateMaterial,
    /// A JWK whose `use` is not `sig` or whose `key_ops` lacks `verify`.
    #[error("key is not meant for verifying signatures")]
    Usage,
    /// A JWK without `alg`.
    #[error("key has no algorithm")]
    MissingAlgorithm,
    /// The OS random number generator failed.
    #[error("random number generator failed")]
    Rng,
}

/// A retired key: verifies until `until`, never signs.
#[derive(Clone)]
struct Retired {
    key: PublicKey,
    until: SystemTime,
}

/// The signing key and the retired keys that still verify. `Debug` shows
/// key ids only.
#[derive(Clone)]
pub struct KeySet {
    current: SigningKey,
    retired: Vec<Retired>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet")
            .field("current", &self.current.kid())
            .field(
                "retired",
                &self.retired.iter().map(|r| r.key.kid()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl KeySet {
    /// A set with one key, which signs.
    pub fn new(current: SigningKey) -> Self {
        Self {
            current,
            retired: Vec::new(),
        }
    }

    /// Signs with the current key. Header: the key's `alg`, its `kid`, and
    /// `typ: at+jwt` (RFC 9068).
    pub fn sign(&self, claims: &AccessClaims) -> Result<String, TokenError> {
        provider::ensure_installed();
        let key = &self.current;
        let mut header = jsonwebtoken::Header::new(key.algorithm().to_jwt());
        header.typ = Some(ACCESS_TOKEN_TYP.to_owned());
        header.kid = Some(key.kid().to_owned());
        let token = jsonwebtoken::encode(&header, claims, key.encoding_key())
            .map_err(|_| TokenError::Sign)?;
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLarge);
        }
        Ok(token)
    }

    /// Rotation: `next` signs from now on; the previous current key's
    /// public key stays published and verifying until `now + keep` (pass
    /// the access-token lifetime plus the leeway). Retired keys whose time
    /// has passed are dropped here and by [`prune`](Self::prune); from that
    /// time on [`verify`](Self::verify) and [`jwks`](Self::jwks) ignore
    /// them anyway. Rotating to the current key changes nothing.
    pub fn rotate(&mut self, next: SigningKey, now: SystemTime, keep: Duration) {
        self.prune(now);
        if next.kid() == self.current.kid() {
            return;
        }
        let until = now
            .checked_add(keep)
            .or_else(|| now.checked_add(Duration::from_secs(u64::from(u32::MAX))))
            .unwrap_or(now);
        let previous = std::mem::replace(&mut self.current, next);
        let current_kid = self.current.kid().to_owned();
        self.retired.retain(|r| r.key.kid() != current_kid);
        self.add_retired(previous.public_key(), until);
    }

    /// Also verifies (never signs) with `key` until `until`: a key of
    /// another instance, or a retired key loaded from storage. A key with
    /// the current key's id is ignored; one with a retired key's id
    /// replaces that entry.
    pub fn add_retired(&mut self, key: PublicKey, until: SystemTime) {
        if key.kid() == self.current.kid() {
            return;
        }
        if let Some(entry) = self.retired.iter_mut().find(|r| r.key.kid() == key.kid()) {
            *entry = Retired { key, until };
        } else {
            self.retired.push(Retired { key, until });
        }
    }

    /// Drops the retired keys whose time has passed at `now`.
    pub fn prune(&mut self, now: SystemTime) {
        self.retired.retain(|r| now < r.until);
    }

    /// The key that signs.
    pub fn current(&self) -> &SigningKey {
        &self.current
    }

    /// The retired keys that still verify at `now`, with their end (for
    /// persisting them).
    pub fn retired(&self, now: SystemTime) -> impl Iterator<Item = (&PublicKey, SystemTime)> {
        self.retired
            .iter()
            .filter(move |r| now < r.until)
            .map(|r| (&r.key, r.until))
    }

    /// The key with id `kid` that verifies at `now`.
    fn find(&self, kid: &str, now: SystemTime) -> Option<&PublicKey> {
        if kid == self.current.kid() {
            return Some(self.current.public_key_ref());
        }
        self.retired
            .iter()
            .find(|r| r.key.kid() == kid && now < r.until)
            .map(|r| &r.key)
    }

    /// `{"keys": [...]}`: the public keys that verify at `now` (the
    /// current one first), each with `kid`, `alg` and `use: sig`, never a
    /// private member.
    pub fn jwks(&self, now: SystemTime) -> Value {
        let keys: Vec<Value> = std::iter::once(self.current.public_key_ref())
            .chain(self.retired(now).map(|(key, _)| key))
            .map(PublicKey::to_jwk)
            .collect();
        serde_json::json!({ "keys": keys })
    }

    /// Verifies an access token at `now` (see the module docs for every
    /// check) and returns its claims, `aud` set to the expected audience.
    pub fn verify(
        &self,
        token: &str,
        expect: &Expect,
        now: SystemTime,
    ) -> Result<AccessClaims, TokenError> {
        let jws = Compact::parse(token)?;
        jws.check_header()?;
        match jws.header.get("typ") {
            Some(Value::String(typ)) if is_access_token_typ(typ) => {}
            _ => return Err(TokenError::Header),
        }
        let kid = match jws.header.get("kid") {
            None => return Err(TokenError::UnknownKey),
            Some(Value::String(kid)) => kid,
            Some(_) => return Err(TokenError::Header),
        };
        let key = self.find(kid, now).ok_or(TokenError::UnknownKey)?;
        jws.verify_signature(key)?;
        check_claims(&jws.payload, expect, now)
    }
}

/// `at+jwt`, or its full media type, compared as media types are
/// (ASCII case-insensitively, RFC 7515 section 4.1.9).
fn is_access_token_typ(typ: &str) -> bool {
    typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYP) || typ.eq_ignore_ascii_case("application/at+jwt")
}

/// Low-level compact JWS verification with one key: the strict format, the
/// refused header members, `alg` equal to the key's, `kid` (if present)
/// equal to the key's, and the signature. `typ` is not required. Returns
/// the decoded payload (any bytes). For the Wycheproof vectors, and the
/// core of [`KeySet::verify`].
pub fn verify_jws(jws: &str, key: &PublicKey) -> Result<Vec<u8>, TokenError> {
    let parsed = Compact::parse(jws)?;
    parsed.check_header()?;
    match parsed.header.get("kid") {
        None => {}
        Some(Value::String(kid)) if kid == key.kid() => {}
        Some(Value::String(_)) => return Err(TokenError::UnknownKey),
        Some(_) => return Err(TokenError::Header),
    }
    parsed.verify_signature(key)?;
    Ok(parsed.payload)
}

/// A compact JWS, parsed but not verified.
struct Compact<'a> {
    /// `header.payload`, as signed.
    signing_input: &'a str,
    /// The signature part, still base64url.
    signature: &'a str,
    /// Its decoded length.
    signature_len: usize,
    header: Map<String, Value>,
    payload: Vec<u8>,
}

impl<'a> Compact<'a> {
    fn parse(token: &'a str) -> Result<Self, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let (signing_input, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let (header, payload) = signing_input.split_once('.').ok_or(TokenError::Malformed)?;
        if header.is_empty() || signature.is_empty() || payload.contains('.') {
            return Err(TokenError::Malformed);
        }
        // Validates the signature's encoding; decoded again by the provider.
        let signature_len = decode_part(signature)?.len();
        let header: UniqueObject =
            serde_json::from_slice(&decode_part(header)?).map_err(|_| TokenError::Malformed)?;
        Ok(Self {
            signing_input,
            signature,
            signature_len,
            header: header.0,
            payload: decode_part(payload)?,
        })
    }

    /// The header checks that need no key.
    fn check_header(&self) -> Result<(), TokenError> {
        if FORBIDDEN_HEADER_MEMBERS
            .iter()
            .any(|name| self.header.contains_key(*name))
        {
            return Err(TokenError::Header);
        }
        for name in ["kid", "typ"] {
            if self.header.get(name).is_some_and(|v| !v.is_string()) {
                return Err(TokenError::Header);
            }
        }
        Ok(())
    }

    /// `alg` equal to the key's, then the signature.
    fn verify_signature(&self, key: &PublicKey) -> Result<(), TokenError> {
        match self.header.get("alg") {
            Some(Value::String(alg)) if alg == key.algorithm().as_str() => {}
            _ => return Err(TokenError::Algorithm),
        }
        // The length the algorithm defines, whatever provider verifies.
        if self.signature_len != key.signature_len() {
            return Err(TokenError::Signature);
        }
        provider::ensure_installed();
        match jsonwebtoken::crypto::verify(
            self.signature,
            self.signing_input.as_bytes(),
            key.decoding_key(),
            key.algorithm().to_jwt(),
        ) {
            Ok(true) => Ok(()),
            Ok(false) | Err(_) => Err(TokenError::Signature),
        }
    }
}

/// Strict base64url without padding (no whitespace, no stray bits).
fn decode_part(part: &str) -> Result<Vec<u8>, TokenError> {
    Base64UrlUnpadded::decode_vec(part).map_err(|_| TokenError::Malformed)
}

/// A JSON object whose member names are unique (RFC 7515 section 5.2 lets
/// a parser refuse repeated header members; we do, so no two parsers can
/// read two different headers from one token).
struct UniqueObject(Map<String, Value>);

impl<'de> Deserialize<'de> for UniqueObject {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = UniqueObject;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object without repeated members")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut access: A,
            ) -> Result<UniqueObject, A::Error> {
                let mut map = Map::new();
                while let Some((name, value)) = access.next_entry::<String, Value>()? {
                    if map.insert(name, value).is_some() {
                        return Err(serde::de::Error::custom("repeated member"));
                    }
                }
                Ok(UniqueObject(map))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// `aud` as sent: one string or several.
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// The claims as sent: every field required, with its JSON type (`u64`
/// refuses strings, negatives and fractions).
#[derive(Deserialize)]
struct WireClaims {
    iss: String,
    aud: Audience,
    sub: String,
    iat: u64,
    nbf: u64,
    exp: u64,
    jti: String,
    sid: String,
    amr: Vec<String>,
    auth_time: u64,
}

fn check_claims(
    payload: &[u8],
    expect: &Expect,
    now: SystemTime,
) -> Result<AccessClaims, TokenError> {
    let wire: WireClaims = serde_json::from_slice(payload).map_err(|_| TokenError::Claims)?;
    if wire.iss != expect.issuer {
        return Err(TokenError::Claims);
    }
    let audience_ok = match &wire.aud {
        Audience::One(aud) => *aud == expect.audience,
        Audience::Many(auds) => auds.contains(&expect.audience),
    };
    if !audience_ok {
        return Err(TokenError::Claims);
    }
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let leeway = expect.leeway.min(MAX_LEEWAY).as_secs();
    // exp > now - leeway
    if wire.exp.saturating_add(leeway) <= now {
        return Err(TokenError::Expired);
    }
    // nbf <= now + leeway, and the same for iat
    let latest = now.saturating_add(leeway);
    if wire.nbf > latest || wire.iat > latest {
        return Err(TokenError::NotYetValid);
    }
    Ok(AccessClaims {
        iss: wire.iss,
        aud: expect.audience.clone(),
        sub: wire.sub,
        iat: wire.iat,
        nbf: wire.nbf,
        exp: wire.exp,
        jti: wire.jti,
        sid: wire.sid,
        amr: wire.amr,
        auth_time: wire.auth_time,
    })
}
