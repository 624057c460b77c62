//! auth-core's [`CryptoProvider`] for `jsonwebtoken` 12, over RustCrypto:
//! ES256 (`p256`), EdDSA with Ed25519 (`ed25519-dalek`) and RS256 (`rsa`).
//! Every other algorithm is an error, and so is every key utility it cannot
//! serve: nothing here panics on its input.
//!
//! Adapted from jsonwebtoken 12.0.0's `crypto::rust_crypto` provider
//! (<https://github.com/Keats/jsonwebtoken>, MIT licence, Copyright (c)
//! 2015 Vincent Prouillet): cut down to three algorithms, ported to
//! `rsa` 0.10.0-rc.19 (the release webauthn-rs 0.6 pins, which
//! jsonwebtoken's own `rust_crypto` feature cannot resolve beside), with
//! exact key and signature lengths checked and RSA signing blinded.

use std::sync::Once;

use ed25519_dalek::pkcs8::DecodePrivateKey as _;
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::signature::{self, RandomizedSigner as _, Signer, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use rsa::pkcs1::{DecodeRsaPrivateKey as _, DecodeRsaPublicKey as _};
use rsa::traits::PublicKeyParts as _;
use sha2::{Digest, Sha256, Sha384, Sha512};

/// The provider, installed once by [`ensure_installed`].
static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: rsa_components_from_private_key,
        rsa_pub_components_from_public_key: rsa_components_from_public_key,
        ec_pub_components_from_private_key: ec_components_from_private_key,
        ed_pub_components_from_private_key: ed_components_from_private_key,
        compute_digest,
    },
};

/// Installs [`PROVIDER`] as jsonwebtoken's process default, once, before
/// the first signature or verification. If the application installed a
/// provider of its own before, that one stays and is used.
pub(super) fn ensure_installed() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Err: another provider was installed first; it serves.
        let _ = CryptoProvider::install_default(&PROVIDER);
    });
}

/// Ours, for tests that call it directly.
#[cfg(test)]
pub(super) fn provider() -> &'static CryptoProvider {
    &PROVIDER
}

fn new_signer(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    Ok(match algorithm {
        Algorithm::ES256 => Box::new(Es256Signer::new(key)?),
        Algorithm::EdDSA => Box::new(EdDsaSigner::new(key)?),
        Algorithm::RS256 => Box::new(Rs256Signer::new(key)?),
        _ => return Err(ErrorKind::UnsupportedAlgorithm.into()),
    })
}

fn new_verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    Ok(match algorithm {
        Algorithm::ES256 => Box::new(Es256Verifier::new(key)?),
        Algorithm::EdDSA => Box::new(EdDsaVerifier::new(key)?),
        Algorithm::RS256 => Box::new(Rs256Verifier::new(key)?),
        _ => return Err(ErrorKind::UnsupportedAlgorithm.into()),
    })
}

fn family(expected: AlgorithmFamily, actual: AlgorithmFamily) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(ErrorKind::InvalidKeyFormat.into())
    }
}

// ES256

/// Signs with a P-256 key from PKCS#8 DER; the signature is `r || s`.
struct Es256Signer(p256::ecdsa::SigningKey);

impl Es256Signer {
    fn new(key: &EncodingKey) -> Result<Self> {
        family(AlgorithmFamily::Ec, key.family())?;
        p256::ecdsa::SigningKey::from_pkcs8_der(key.as_bytes())
            .map(Self)
            .map_err(|_| ErrorKind::InvalidEcdsaKey.into())
    }
}

impl Signer<Vec<u8>> for Es256Signer {
    fn try_sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, signature::Error> {
        let signature: p256::ecdsa::Signature = self.0.try_sign(msg)?;
        Ok(signature.to_bytes().to_vec())
    }
}

impl JwtSigner for Es256Signer {
    fn algorithm(&self) -> Algorithm {
        Algorithm::ES256
    }
}

/// Verifies with an uncompressed SEC1 P-256 point; takes the 64-byte
/// `r || s` only (a DER signature is refused).
struct Es256Verifier(p256::ecdsa::VerifyingKey);

impl Es256Verifier {
    fn new(key: &DecodingKey) -> Result<Self> {
        family(AlgorithmFamily::Ec, key.family())?;
        p256::ecdsa::VerifyingKey::from_sec1_bytes(key.try_get_as_bytes()?)
            .map(Self)
            .map_err(|_| ErrorKind::InvalidEcdsaKey.into())
    }
}

impl Verifier<Vec<u8>> for Es256Verifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        if signature.len() != 64 {
            return Err(signature::Error::new());
        }
        let signature = p256::ecdsa::Signature::from_slice(signature)?;
        self.0.verify(msg, &signature)
    }
}

impl JwtVerifier for Es256Verifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::ES256
    }
}

// EdDSA (Ed25519)

/// Signs with an Ed25519 key from PKCS#8 DER.
struct EdDsaSigner(ed25519_dalek::SigningKey);

impl EdDsaSigner {
    fn new(key: &EncodingKey) -> Result<Self> {
        family(AlgorithmFamily::Ed, key.family())?;
        ed25519_dalek::SigningKey::from_pkcs8_der(key.as_bytes())
            .map(Self)
            .map_err(|_| ErrorKind::InvalidEddsaKey.into())
    }
}

impl Signer<Vec<u8>> for EdDsaSigner {
    fn try_sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, signature::Error> {
        let signature: ed25519_dalek::Signature = self.0.try_sign(msg)?;
        Ok(signature.to_bytes().to_vec())
    }
}

impl JwtSigner for EdDsaSigner {
    fn algorithm(&self) -> Algorithm {
        Algorithm::EdDSA
    }
}

/// Verifies with the 32-byte Ed25519 key, strictly (RFC 8032 with
/// canonical `S`, no small-order keys or `R`).
struct EdDsaVerifier(ed25519_dalek::VerifyingKey);

impl EdDsaVerifier {
    fn new(key: &DecodingKey) -> Result<Self> {
        family(AlgorithmFamily::Ed, key.family())?;
        let bytes: &[u8; 32] = key
            .try_get_as_bytes()?
            .try_into()
            .map_err(|_| ErrorKind::InvalidEddsaKey)?;
        ed25519_dalek::VerifyingKey::from_bytes(bytes)
            .map(Self)
            .map_err(|_| ErrorKind::InvalidEddsaKey.into())
    }
}

impl Verifier<Vec<u8>> for EdDsaVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        let signature = ed25519_dalek::Signature::from_slice(signature)?;
        self.0.verify_strict(msg, &signature)
    }
}

impl JwtVerifier for EdDsaVerifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::EdDSA
    }
}

// RS256

/// Signs with an RSA key from PKCS#1 DER (RSASSA-PKCS1-v1_5, SHA-256),
/// blinded with the OS CSPRNG.
struct Rs256Signer(rsa::pkcs1v15::SigningKey<Sha256>);

impl Rs256Signer {
    fn new(key: &EncodingKey) -> Result<Self> {
        family(AlgorithmFamily::Rsa, key.family())?;
        let key = rsa::RsaPrivateKey::from_pkcs1_der(key.as_bytes())
            .map_err(|_| ErrorKind::InvalidRsaKey("invalid PKCS#1 private key".to_owned()))?;
        Ok(Self(rsa::pkcs1v15::SigningKey::new(key)))
    }
}

impl Signer<Vec<u8>> for Rs256Signer {
    fn try_sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, signature::Error> {
        use signature::SignatureEncoding as _;
        let signature = self.0.try_sign_with_rng(&mut OsRng, msg)?;
        Ok(signature.to_vec())
    }
}

impl JwtSigner for Rs256Signer {
    fn algorithm(&self) -> Algorithm {
        Algorithm::RS256
    }
}

/// Verifies with `n` and `e` (or a PKCS#1 public key); the signature must
/// be exactly as long as the modulus.
struct Rs256Verifier(rsa::RsaPublicKey);

impl Rs256Verifier {
    fn new(key: &DecodingKey) -> Result<Self> {
        family(AlgorithmFamily::Rsa, key.family())?;
        let invalid = |_| ErrorKind::InvalidRsaKey("invalid RSA public key".to_owned());
        let key = match key.kind() {
            DecodingKeyKind::SecretOrDer(der) => {
                rsa::RsaPublicKey::from_pkcs1_der(der).map_err(|_| invalid(()))?
            }
            DecodingKeyKind::RsaModulusExponent { n, e } => rsa::RsaPublicKey::new(
                rsa::BoxedUint::from_be_slice_vartime(n),
                rsa::BoxedUint::from_be_slice_vartime(e),
            )
            .map_err(|_| invalid(()))?,
        };
        Ok(Self(key))
    }
}

impl Verifier<Vec<u8>> for Rs256Verifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        if signature.len() != self.0.size() {
            return Err(signature::Error::new());
        }
        self.0
            .verify(
                rsa::Pkcs1v15Sign::new::<Sha256>(),
                &Sha256::digest(msg),
                signature,
            )
            .map_err(signature::Error::from_source)
    }
}

impl JwtVerifier for Rs256Verifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::RS256
    }
}

/// The OS CSPRNG as `rand_core`'s fallible generator (RSA blinding).
struct OsRng;

impl rsa::rand_core::TryRng for OsRng {
    type Error = getrandom::Error;

    fn try_next_u32(&mut self) -> std::result::Result<u32, Self::Error> {
        getrandom::u32()
    }

    fn try_next_u64(&mut self) -> std::result::Result<u64, Self::Error> {
        getrandom::u64()
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> std::result::Result<(), Self::Error> {
        getrandom::fill(dst)
    }
}

impl rsa::rand_core::TryCryptoRng for OsRng {}

// Key utilities (jsonwebtoken's JWK helpers)

fn rsa_components_from_private_key(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    let key = rsa::RsaPrivateKey::from_pkcs1_der(der)
        .map_err(|_| ErrorKind::InvalidRsaKey("invalid PKCS#1 private key".to_owned()))?;
    Ok((key.n_bytes().into_vec(), key.e_bytes().into_vec()))
}

fn rsa_components_from_public_key(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    let key = rsa::RsaPublicKey::from_pkcs1_der(der)
        .map_err(|_| ErrorKind::InvalidRsaKey("invalid PKCS#1 public key".to_owned()))?;
    Ok((key.n_bytes().into_vec(), key.e_bytes().into_vec()))
}

fn ec_components_from_private_key(
    der: &[u8],
    algorithm: Algorithm,
) -> Result<(EllipticCurve, Vec<u8>, Vec<u8>)> {
    if algorithm != Algorithm::ES256 {
        return Err(ErrorKind::UnsupportedAlgorithm.into());
    }
    let key =
        p256::ecdsa::SigningKey::from_pkcs8_der(der).map_err(|_| ErrorKind::InvalidEcdsaKey)?;
    let point = key.verifying_key().to_sec1_point(false);
    match point.as_bytes() {
        [4, rest @ ..] if rest.len() == 64 => {
            let (x, y) = rest.split_at(32);
            Ok((EllipticCurve::P256, x.to_vec(), y.to_vec()))
        }
        _ => Err(ErrorKind::InvalidEcdsaKey.into()),
    }
}

fn ed_components_from_private_key(der: &[u8], curve: &EllipticCurve) -> Result<Vec<u8>> {
    if *curve != EllipticCurve::Ed25519 {
        return Err(ErrorKind::UnsupportedAlgorithm.into());
    }
    let key =
        ed25519_dalek::SigningKey::from_pkcs8_der(der).map_err(|_| ErrorKind::InvalidEddsaKey)?;
    Ok(key.verifying_key().to_bytes().to_vec())
}

fn compute_digest(data: &[u8], hash: ThumbprintHash) -> Result<Vec<u8>> {
    Ok(match hash {
        ThumbprintHash::SHA256 => Sha256::digest(data).to_vec(),
        ThumbprintHash::SHA384 => Sha384::digest(data).to_vec(),
        ThumbprintHash::SHA512 => Sha512::digest(data).to_vec(),
        _ => return Err(ErrorKind::UnsupportedAlgorithm.into()),
    })
}
