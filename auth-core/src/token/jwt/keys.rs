//! Signing keys, public (verification) keys, their JWK form and ids.

use std::fmt;

use base64ct::{Base64UrlUnpadded, Encoding};
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use jsonwebtoken::{DecodingKey, EncodingKey};
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::traits::PublicKeyParts as _;
use secrecy::SecretSlice;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{Algorithm, KeyError};

/// The smallest RSA modulus accepted, in bits.
const RSA_MIN_BITS: usize = 2048;
/// The largest RSA modulus accepted, in bits (the `rsa` crate's limit).
const RSA_MAX_BITS: usize = 8192;
/// The longest `kid` taken from a JWK.
const MAX_KID_LEN: usize = 256;
/// JWK members that hold private key material (RFC 7518 section 6).
const PRIVATE_JWK_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];
/// Tries at drawing a P-256 scalar (one fails with odds of 2^-32).
const P256_DRAWS: usize = 8;

/// A public key's material.
#[derive(Clone, PartialEq, Eq)]
enum Material {
    /// The affine coordinates of a P-256 point.
    Es256 { x: [u8; 32], y: [u8; 32] },
    /// An Ed25519 public key.
    EdDsa { x: [u8; 32] },
    /// Modulus and exponent, big-endian without leading zeros.
    Rs256 { n: Vec<u8>, e: Vec<u8> },
}

fn b64(bytes: &[u8]) -> String {
    Base64UrlUnpadded::encode_string(bytes)
}

impl Material {
    fn algorithm(&self) -> Algorithm {
        match self {
            Self::Es256 { .. } => Algorithm::Es256,
            Self::EdDsa { .. } => Algorithm::EdDsa,
            Self::Rs256 { .. } => Algorithm::Rs256,
        }
    }

    /// The required public members in lexicographic order, as RFC 7638
    /// hashes them (values are base64url: nothing to escape).
    fn canonical_json(&self) -> String {
        match self {
            Self::Es256 { x, y } => format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                b64(x),
                b64(y)
            ),
            Self::EdDsa { x } => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, b64(x)),
            Self::Rs256 { n, e } => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, b64(e), b64(n)),
        }
    }

    /// The RFC 7638 JWK thumbprint: SHA-256, base64url.
    fn thumbprint(&self) -> String {
        b64(&Sha256::digest(self.canonical_json().as_bytes()))
    }

    /// The public JWK members (`kty`, `crv`, `x`, `y` / `n`, `e`).
    fn members(&self) -> Map<String, Value> {
        let mut map = Map::new();
        let mut put = |name: &str, value: String| {
            map.insert(name.to_owned(), Value::String(value));
        };
        match self {
            Self::Es256 { x, y } => {
                put("kty", "EC".to_owned());
                put("crv", "P-256".to_owned());
                put("x", b64(x));
                put("y", b64(y));
            }
            Self::EdDsa { x } => {
                put("kty", "OKP".to_owned());
                put("crv", "Ed25519".to_owned());
                put("x", b64(x));
            }
            Self::Rs256 { n, e } => {
                put("kty", "RSA".to_owned());
                put("n", b64(n));
                put("e", b64(e));
            }
        }
        map
    }

    /// The key as jsonwebtoken's providers take it: the SEC1 point for
    /// EC, the 32 bytes for Ed25519, `n` and `e` for RSA.
    fn decoding_key(&self) -> Result<DecodingKey, KeyError> {
        match self {
            Self::Es256 { x, y } => {
                DecodingKey::from_ec_components(&b64(x), &b64(y)).map_err(|_| KeyError::Invalid)
            }
            Self::EdDsa { x } => {
                DecodingKey::from_ed_components(&b64(x)).map_err(|_| KeyError::Invalid)
            }
            Self::Rs256 { n, e } => Ok(DecodingKey::from_rsa_raw_components(n, e)),
        }
    }

    /// A P-256 point, checked to be on the curve (and not the identity).
    fn p256(sec1_uncompressed: &[u8]) -> Result<Self, KeyError> {
        p256::ecdsa::VerifyingKey::from_sec1_bytes(sec1_uncompressed)
            .map_err(|_| KeyError::Invalid)?;
        match sec1_uncompressed {
            [4, rest @ ..] if rest.len() == 64 => {
                let (x, y) = rest.split_at(32);
                Ok(Self::Es256 {
                    x: x.try_into().map_err(|_| KeyError::Invalid)?,
                    y: y.try_into().map_err(|_| KeyError::Invalid)?,
                })
            }
            _ => Err(KeyError::Invalid),
        }
    }

    /// An Ed25519 key, checked to be a valid point of large order.
    fn ed25519(x: [u8; 32]) -> Result<Self, KeyError> {
        let key = ed25519_dalek::VerifyingKey::from_bytes(&x).map_err(|_| KeyError::Invalid)?;
        if key.is_weak() {
            return Err(KeyError::Invalid);
        }
        Ok(Self::EdDsa { x })
    }

    /// An RSA key of 2048 to 8192 bits with an acceptable exponent.
    fn rsa(n: &[u8], e: &[u8]) -> Result<Self, KeyError> {
        let n = strip_leading_zeros(n);
        let e = strip_leading_zeros(e);
        let bits = match n.first() {
            Some(first) => (n.len() - 1) * 8 + (8 - first.leading_zeros() as usize),
            None => 0,
        };
        if bits < RSA_MIN_BITS {
            return Err(KeyError::Weak);
        }
        if bits > RSA_MAX_BITS {
            return Err(KeyError::Unsupported);
        }
        rsa::RsaPublicKey::new(
            rsa::BoxedUint::from_be_slice_vartime(n),
            rsa::BoxedUint::from_be_slice_vartime(e),
        )
        .map_err(|_| KeyError::Invalid)?;
        Ok(Self::Rs256 {
            n: n.to_vec(),
            e: e.to_vec(),
        })
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// A verification key: its id, its algorithm and the public key. From a
/// JWK ([`PublicKey::from_jwk`]) or a [`SigningKey`].
#[derive(Clone)]
pub struct PublicKey {
    kid: String,
    material: Material,
    decoding: DecodingKey,
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.kid == other.kid && self.material == other.material
    }
}

impl Eq for PublicKey {}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("kid", &self.kid)
            .field("alg", &self.algorithm())
            .finish()
    }
}

impl PublicKey {
    fn new(material: Material, kid: Option<String>) -> Result<Self, KeyError> {
        Ok(Self {
            kid: kid.unwrap_or_else(|| material.thumbprint()),
            decoding: material.decoding_key()?,
            material,
        })
    }

    /// A public key from its JWK (RFC 7517): `kty` `EC` with `crv` `P-256`
    /// and `alg` `ES256`, `OKP`/`Ed25519` with `EdDSA`, or `RSA` (2048 to
    /// 8192 bits) with `RS256`. `alg` is required; `use`, if present, must
    /// be `sig`; `key_ops`, if present, must hold `verify`; private members
    /// are refused. The key id is the JWK's `kid` (a string of 1 to 256
    /// bytes), or without one the RFC 7638 thumbprint.
    pub fn from_jwk(jwk: &Value) -> Result<Self, KeyError> {
        let obj = jwk.as_object().ok_or(KeyError::Invalid)?;
        if PRIVATE_JWK_MEMBERS
            .iter()
            .any(|name| obj.contains_key(*name))
        {
            return Err(KeyError::PrivateMaterial);
        }
        match obj.get("use") {
            None => {}
            Some(Value::String(usage)) if usage == "sig" => {}
            Some(Value::String(_)) => return Err(KeyError::Usage),
            Some(_) => return Err(KeyError::Invalid),
        }
        match obj.get("key_ops") {
            None => {}
            Some(Value::Array(ops)) => {
                if !ops.iter().all(Value::is_string) {
                    return Err(KeyError::Invalid);
                }
                if !ops.iter().any(|op| op.as_str() == Some("verify")) {
                    return Err(KeyError::Usage);
                }
            }
            Some(_) => return Err(KeyError::Invalid),
        }
        let alg = match obj.get("alg") {
            None => return Err(KeyError::MissingAlgorithm),
            Some(Value::String(alg)) => Algorithm::parse(alg).ok_or(KeyError::Unsupported)?,
            Some(_) => return Err(KeyError::Invalid),
        };
        let kid = match obj.get("kid") {
            None => None,
            Some(Value::String(kid)) if !kid.is_empty() && kid.len() <= MAX_KID_LEN => {
                Some(kid.clone())
            }
            Some(_) => return Err(KeyError::Invalid),
        };
        let kty = jwk_str(obj, "kty")?;
        let material = match (alg, kty) {
            (Algorithm::Es256, "EC") => {
                if jwk_str(obj, "crv")? != "P-256" {
                    return Err(KeyError::Unsupported);
                }
                let mut sec1 = Vec::with_capacity(65);
                sec1.push(4);
                sec1.extend_from_slice(&jwk_bytes::<32>(obj, "x")?);
                sec1.extend_from_slice(&jwk_bytes::<32>(obj, "y")?);
                Material::p256(&sec1)?
            }
            (Algorithm::EdDsa, "OKP") => {
                if jwk_str(obj, "crv")? != "Ed25519" {
                    return Err(KeyError::Unsupported);
                }
                Material::ed25519(jwk_bytes::<32>(obj, "x")?)?
            }
            (Algorithm::Rs256, "RSA") => Material::rsa(&jwk_b64(obj, "n")?, &jwk_b64(obj, "e")?)?,
            _ => return Err(KeyError::Unsupported),
        };
        Self::new(material, kid)
    }

    /// The JWK: public members only, with `kid`, `alg` and `use: sig`.
    pub fn to_jwk(&self) -> Value {
        let mut map = self.material.members();
        map.insert("kid".to_owned(), Value::String(self.kid.clone()));
        map.insert(
            "alg".to_owned(),
            Value::String(self.algorithm().as_str().to_owned()),
        );
        map.insert("use".to_owned(), Value::String("sig".to_owned()));
        Value::Object(map)
    }

    /// The key id: tokens name their key by it.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The one algorithm this key verifies.
    pub fn algorithm(&self) -> Algorithm {
        self.material.algorithm()
    }

    /// The RFC 7638 JWK thumbprint (SHA-256, base64url) of the key,
    /// whatever its `kid`.
    pub fn thumbprint(&self) -> String {
        self.material.thumbprint()
    }

    pub(super) fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }

    /// The length of a signature by this key, in bytes.
    pub(super) fn signature_len(&self) -> usize {
        match &self.material {
            Material::Es256 { .. } | Material::EdDsa { .. } => 64,
            Material::Rs256 { n, .. } => n.len(),
        }
    }
}

fn jwk_str<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<&'a str, KeyError> {
    obj.get(name)
        .and_then(Value::as_str)
        .ok_or(KeyError::Invalid)
}

fn jwk_b64(obj: &Map<String, Value>, name: &str) -> Result<Vec<u8>, KeyError> {
    Base64UrlUnpadded::decode_vec(jwk_str(obj, name)?).map_err(|_| KeyError::Invalid)
}

fn jwk_bytes<const N: usize>(obj: &Map<String, Value>, name: &str) -> Result<[u8; N], KeyError> {
    jwk_b64(obj, name)?
        .try_into()
        .map_err(|_| KeyError::Invalid)
}

/// A private key that signs: its algorithm, its id (the RFC 7638
/// thumbprint of its public key) and the key itself, zeroed on drop.
/// `Debug` shows the id and the algorithm only.
#[derive(Clone)]
pub struct SigningKey {
    /// PKCS#8 DER, for persistence.
    pkcs8: Zeroizing<Vec<u8>>,
    /// The key as jsonwebtoken's providers take it (PKCS#8 for EC and
    /// Ed25519, PKCS#1 for RSA).
    encoding: EncodingKey,
    public: PublicKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid())
            .field("alg", &self.algorithm())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh key from the OS CSPRNG. ES256 and EdDSA only: RSA keys are
    /// generated elsewhere (e.g. `openssl genpkey -algorithm RSA -pkeyopt
    /// rsa_keygen_bits:3072 -outform DER`) and imported with
    /// [`from_pkcs8_der`](Self::from_pkcs8_der); `Rs256` answers
    /// [`KeyError::Unsupported`].
    pub fn generate(alg: Algorithm) -> Result<Self, KeyError> {
        match alg {
            Algorithm::Es256 => {
                for _ in 0..P256_DRAWS {
                    let seed = random_seed()?;
                    if let Ok(key) = p256::ecdsa::SigningKey::from_slice(seed.as_slice()) {
                        return Self::from_p256(&key);
                    }
                }
                Err(KeyError::Rng)
            }
            Algorithm::EdDsa => {
                let seed = random_seed()?;
                Self::from_ed25519(&ed25519_dalek::SigningKey::from_bytes(&seed))
            }
            Algorithm::Rs256 => Err(KeyError::Unsupported),
        }
    }

    /// A key from its PKCS#8 DER (RFC 5208/5958) for `alg`: a P-256 key
    /// for ES256, an Ed25519 key for EdDSA, an RSA key of 2048 to 8192
    /// bits for RS256. A key of another type is [`KeyError::Invalid`].
    pub fn from_pkcs8_der(alg: Algorithm, der: &[u8]) -> Result<Self, KeyError> {
        match alg {
            Algorithm::Es256 => Self::from_p256(
                &p256::ecdsa::SigningKey::from_pkcs8_der(der).map_err(|_| KeyError::Invalid)?,
            ),
            Algorithm::EdDsa => Self::from_ed25519(
                &ed25519_dalek::SigningKey::from_pkcs8_der(der).map_err(|_| KeyError::Invalid)?,
            ),
            Algorithm::Rs256 => Self::from_rsa(
                &rsa::RsaPrivateKey::from_pkcs8_der(der).map_err(|_| KeyError::Invalid)?,
            ),
        }
    }

    fn from_p256(key: &p256::ecdsa::SigningKey) -> Result<Self, KeyError> {
        use p256::pkcs8::EncodePrivateKey as _;
        let pkcs8 = key.to_pkcs8_der().map_err(|_| KeyError::Invalid)?;
        let point = key.verifying_key().to_sec1_point(false);
        let material = Material::p256(point.as_bytes())?;
        Self::new(
            pkcs8.as_bytes(),
            EncodingKey::from_ec_der(pkcs8.as_bytes()),
            material,
        )
    }

    fn from_ed25519(key: &ed25519_dalek::SigningKey) -> Result<Self, KeyError> {
        let pkcs8 = key.to_pkcs8_der().map_err(|_| KeyError::Invalid)?;
        let material = Material::ed25519(key.verifying_key().to_bytes())?;
        Self::new(
            pkcs8.as_bytes(),
            EncodingKey::from_ed_der(pkcs8.as_bytes()),
            material,
        )
    }

    fn from_rsa(key: &rsa::RsaPrivateKey) -> Result<Self, KeyError> {
        use rsa::pkcs8::EncodePrivateKey as _;
        // The size first: a weak key is `Weak`, not `Invalid`.
        let material = Material::rsa(&key.n_bytes(), &key.e_bytes())?;
        key.validate().map_err(|_| KeyError::Invalid)?;
        let pkcs8 = key.to_pkcs8_der().map_err(|_| KeyError::Invalid)?;
        let pkcs1 = key.to_pkcs1_der().map_err(|_| KeyError::Invalid)?;
        Self::new(
            pkcs8.as_bytes(),
            EncodingKey::from_rsa_der(pkcs1.as_bytes()),
            material,
        )
    }

    fn new(pkcs8: &[u8], encoding: EncodingKey, material: Material) -> Result<Self, KeyError> {
        Ok(Self {
            pkcs8: Zeroizing::new(pkcs8.to_vec()),
            encoding,
            public: PublicKey::new(material, None)?,
        })
    }

    /// The key as PKCS#8 DER, for persistence (keep it secret).
    pub fn to_pkcs8_der(&self) -> SecretSlice<u8> {
        SecretSlice::from(self.pkcs8.to_vec())
    }

    /// The key id: the RFC 7638 JWK thumbprint (SHA-256, base64url) of the
    /// public key.
    pub fn kid(&self) -> &str {
        self.public.kid()
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.public.algorithm()
    }

    /// The public key, to verify with or publish.
    pub fn public_key(&self) -> PublicKey {
        self.public.clone()
    }

    pub(super) fn public_key_ref(&self) -> &PublicKey {
        &self.public
    }

    pub(super) fn encoding_key(&self) -> &EncodingKey {
        &self.encoding
    }
}

/// 32 bytes from the OS CSPRNG, zeroed on drop.
fn random_seed() -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut_slice()).map_err(|_| KeyError::Rng)?;
    Ok(seed)
}
