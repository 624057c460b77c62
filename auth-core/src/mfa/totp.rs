//! The TOTP verifier (RFC 4226 HOTP, RFC 6238 TOTP), secrets, the otpauth
//! URI and its QR code.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::ser::{Serialize, SerializeStruct, Serializer};
use sha1::Sha1;
use sha2::{Sha256, Sha512};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::{MfaError, base32};

/// Length of a generated secret in bytes (160 bits, RFC 4226's
/// recommendation).
const SECRET_BYTES: usize = 20;
/// Shortest secret accepted (RFC 4226: at least 128 bits).
const MIN_SECRET_BYTES: usize = 16;
/// Longest code input looked at; anything longer is simply wrong.
const MAX_CODE_INPUT: usize = 32;

/// The HMAC behind the codes.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TotpAlgorithm {
    /// HMAC-SHA-1: the default, and the only one every authenticator app
    /// supports (some silently ignore the others).
    #[default]
    Sha1,
    /// HMAC-SHA-256.
    Sha256,
    /// HMAC-SHA-512.
    Sha512,
}

impl TotpAlgorithm {
    /// The name used in otpauth URIs: `SHA1`, `SHA256`, `SHA512`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Sha1 => "SHA1",
            Self::Sha256 => "SHA256",
            Self::Sha512 => "SHA512",
        }
    }
}

/// A TOTP shared secret: random bytes, zeroed on drop, never printed.
#[derive(Clone)]
pub struct TotpSecret(Zeroizing<Vec<u8>>);

impl TotpSecret {
    /// 160 fresh bits from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, MfaError> {
        let mut bytes = Zeroizing::new(vec![0u8; SECRET_BYTES]);
        getrandom::fill(bytes.as_mut_slice()).map_err(|_| MfaError::Rng)?;
        Ok(Self(bytes))
    }

    /// From raw bytes (at least 128 bits).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, MfaError> {
        let bytes = Zeroizing::new(bytes);
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(MfaError::InvalidParams(
                "a TOTP secret needs at least 128 bits",
            ));
        }
        Ok(Self(bytes))
    }

    /// From the base32 form shown to users (case and spaces ignored).
    pub fn from_base32(text: &str) -> Result<Self, MfaError> {
        let bytes = base32::decode(text).ok_or(MfaError::InvalidParams("invalid base32"))?;
        Self::from_bytes(bytes.to_vec())
    }

    /// The base32 form (upper case, no padding) that authenticator apps
    /// accept for manual entry.
    pub fn to_base32(&self) -> SecretString {
        SecretString::from(base32::encode(&self.0).as_str())
    }

    /// The raw bytes. Handle with care.
    pub fn expose_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret([REDACTED])")
    }
}

/// The TOTP step of a Unix time: `floor(secs / step)`, `None` before the
/// epoch.
pub fn totp_step(unix_secs: i64, step_secs: u64) -> Option<u64> {
    let secs = u64::try_from(unix_secs).ok()?;
    secs.checked_div(step_secs)
}

/// TOTP settings and the verifier. The default is what authenticator apps
/// expect: SHA-1, 6 digits, 30 s steps, one step of tolerance either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TotpParams {
    algorithm: TotpAlgorithm,
    digits: u8,
    step_secs: u64,
}

impl Default for TotpParams {
    fn default() -> Self {
        Self {
            algorithm: TotpAlgorithm::Sha1,
            digits: 6,
            step_secs: 30,
        }
    }
}

impl TotpParams {
    /// Custom parameters: 6 to 8 digits, a step of 1 s or more. The
    /// tolerance is fixed at one step either way.
    pub fn new(algorithm: TotpAlgorithm, digits: u8, step_secs: u64) -> Result<Self, MfaError> {
        if !(6..=8).contains(&digits) {
            return Err(MfaError::InvalidParams("TOTP codes have 6 to 8 digits"));
        }
        if step_secs == 0 {
            return Err(MfaError::InvalidParams("the TOTP step must be positive"));
        }
        Ok(Self {
            algorithm,
            digits,
            step_secs,
        })
    }

    /// The algorithm.
    pub fn algorithm(&self) -> TotpAlgorithm {
        self.algorithm
    }

    /// Digits per code.
    pub fn digits(&self) -> u8 {
        self.digits
    }

    /// Step length in seconds.
    pub fn step_secs(&self) -> u64 {
        self.step_secs
    }

    /// The HMAC of the big-endian counter under `secret`.
    fn mac(&self, secret: &TotpSecret, counter: u64) -> Result<Zeroizing<Vec<u8>>, MfaError> {
        let key = secret.expose_bytes();
        let message = counter.to_be_bytes();
        let mac = match self.algorithm {
            TotpAlgorithm::Sha1 => {
                let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(key)
                    .map_err(|_| MfaError::InvalidParams("TOTP secret"))?;
                mac.update(&message);
                mac.finalize().into_bytes().to_vec()
            }
            TotpAlgorithm::Sha256 => {
                let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
                    .map_err(|_| MfaError::InvalidParams("TOTP secret"))?;
                mac.update(&message);
                mac.finalize().into_bytes().to_vec()
            }
            TotpAlgorithm::Sha512 => {
                let mut mac = <Hmac<Sha512> as KeyInit>::new_from_slice(key)
                    .map_err(|_| MfaError::InvalidParams("TOTP secret"))?;
                mac.update(&message);
                mac.finalize().into_bytes().to_vec()
            }
        };
        Ok(Zeroizing::new(mac))
    }

    /// The HOTP code (RFC 4226) for `counter`, zero-padded to
    /// [`digits`](Self::digits).
    pub fn hotp(&self, secret: &TotpSecret, counter: u64) -> Result<Zeroizing<String>, MfaError> {
        let mac = self.mac(secret, counter)?;
        // Dynamic truncation (RFC 4226 section 5.3).
        let offset = usize::from(mac.last().copied().unwrap_or(0) & 0x0f);
        let window = mac
            .get(offset..offset + 4)
            .ok_or(MfaError::InvalidParams("HMAC output too short"))?;
        let binary = u32::from_be_bytes([window[0] & 0x7f, window[1], window[2], window[3]]);
        let modulus = 10u32.pow(u32::from(self.digits));
        Ok(Zeroizing::new(format!(
            "{:0width$}",
            binary % modulus,
            width = usize::from(self.digits)
        )))
    }

    /// The TOTP code (RFC 6238) at `unix_secs`.
    pub fn code_at(
        &self,
        secret: &TotpSecret,
        unix_secs: u64,
    ) -> Result<Zeroizing<String>, MfaError> {
        self.hotp(secret, unix_secs / self.step_secs)
    }

    /// Checks `code` at `unix_secs` against the steps T-1, T and T+1 and
    /// returns the step it matched (the latest, should two match). Spaces
    /// in the input are ignored; every candidate is computed and compared
    /// in constant time. The caller must refuse a step at or below the last
    /// one it accepted for this user (replay).
    pub fn verify(&self, secret: &TotpSecret, code: &str, unix_secs: i64) -> Option<u64> {
        if code.len() > MAX_CODE_INPUT {
            return None;
        }
        let code: Zeroizing<String> = Zeroizing::new(code.chars().filter(|c| *c != ' ').collect());
        if code.len() != usize::from(self.digits) || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let now = totp_step(unix_secs, self.step_secs)?;
        let mut matched = None;
        for step in [now.checked_sub(1), Some(now), now.checked_add(1)]
            .into_iter()
            .flatten()
        {
            let Ok(expected) = self.hotp(secret, step) else {
                return None;
            };
            if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
                matched = Some(step);
            }
        }
        matched
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(text: &str) -> String {
    use fmt::Write;
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// The `otpauth://totp/...` URI (Google Authenticator key URI format) that
/// authenticator apps read from the QR code: label `issuer:account`, the
/// secret in base32, issuer, algorithm, digits and period. It contains the
/// secret: show it once, never log it.
pub fn otpauth_uri(
    secret: &TotpSecret,
    issuer: Option<&str>,
    account: &str,
    params: &TotpParams,
) -> SecretString {
    let secret = secret.to_base32();
    let account = percent_encode(account);
    let (label, issuer_param) = match issuer.filter(|i| !i.is_empty()) {
        Some(issuer) => {
            let issuer = percent_encode(issuer);
            (format!("{issuer}:{account}"), format!("&issuer={issuer}"))
        }
        None => (account, String::new()),
    };
    SecretString::from(format!(
        "otpauth://totp/{label}?secret={}{issuer_param}&algorithm={}&digits={}&period={}",
        secret.expose_secret(),
        params.algorithm.as_str(),
        params.digits,
        params.step_secs
    ))
}

/// `uri` as a QR code in SVG. It encodes the secret: show it once.
pub fn qr_svg(uri: &str) -> Result<SecretString, MfaError> {
    let code = qrcode::QrCode::with_error_correction_level(uri.as_bytes(), qrcode::EcLevel::M)
        .map_err(|_| MfaError::Qr)?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build();
    Ok(SecretString::from(svg))
}

/// What a user needs to set up an authenticator app: the secret in base32
/// (manual entry), the otpauth URI and its QR code as SVG. Every field is
/// the secret in some form: `Debug` prints none of them.
///
/// It serialises as `{"secret", "otpauth_uri", "qr_svg"}`, the response
/// body of the enrolment endpoint.
pub struct Enrollment {
    pub(crate) secret: SecretString,
    pub(crate) otpauth_uri: SecretString,
    pub(crate) qr_svg: SecretString,
}

impl Enrollment {
    /// The secret in base32, for manual entry.
    pub fn secret_base32(&self) -> &str {
        self.secret.expose_secret()
    }

    /// The `otpauth://totp/...` URI.
    pub fn otpauth_uri(&self) -> &str {
        self.otpauth_uri.expose_secret()
    }

    /// The QR code of the URI, as an SVG document.
    pub fn qr_svg(&self) -> &str {
        self.qr_svg.expose_secret()
    }
}

impl fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Enrollment([REDACTED])")
    }
}

impl Serialize for Enrollment {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("Enrollment", 3)?;
        out.serialize_field("secret", self.secret_base32())?;
        out.serialize_field("otpauth_uri", self.otpauth_uri())?;
        out.serialize_field("qr_svg", self.qr_svg())?;
        out.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfc_secret() -> TotpSecret {
        TotpSecret::from_bytes(b"12345678901234567890".to_vec()).unwrap()
    }

    #[test]
    fn generated_secrets_are_160_bits_and_distinct() {
        let a = TotpSecret::generate().unwrap();
        let b = TotpSecret::generate().unwrap();
        assert_eq!(a.expose_bytes().len(), 20);
        assert_ne!(a.expose_bytes(), b.expose_bytes());
        let encoded = a.to_base32();
        assert_eq!(encoded.expose_secret().len(), 32);
        let decoded = TotpSecret::from_base32(&encoded.expose_secret().to_lowercase()).unwrap();
        assert_eq!(decoded.expose_bytes(), a.expose_bytes());
        assert_eq!(format!("{a:?}"), "TotpSecret([REDACTED])");
        assert!(TotpSecret::from_bytes(vec![1; 15]).is_err());
    }

    #[test]
    fn bad_input_is_refused_without_panicking() {
        let totp = TotpParams::default();
        let secret = rfc_secret();
        for code in [
            "",
            "12345",
            "1234567",
            "12345a",
            "+12345",
            "１２３４５６",
            &"9".repeat(10_000),
        ] {
            assert_eq!(totp.verify(&secret, code, 59), None, "{code:?}");
        }
        assert_eq!(totp.verify(&secret, "287082", -1), None);
        assert!(TotpParams::new(TotpAlgorithm::Sha1, 5, 30).is_err());
        assert!(TotpParams::new(TotpAlgorithm::Sha1, 9, 30).is_err());
        assert!(TotpParams::new(TotpAlgorithm::Sha1, 6, 0).is_err());
        // A longer secret is an HMAC key like any other (RFC 4226 asks for
        // at least 128 bits), for SHA-1 too.
        let long = TotpSecret::from_bytes(vec![7; 32]).unwrap();
        let code = totp.hotp(&long, 1).unwrap();
        assert_eq!(code.len(), 6);
        assert_ne!(*code, *totp.hotp(&secret, 1).unwrap());
    }

    #[test]
    fn spaces_in_the_code_are_ignored() {
        let totp = TotpParams::default();
        let secret = rfc_secret();
        let code = totp.code_at(&secret, 1_000_000).unwrap();
        let spaced = format!("{} {}", &code[..3], &code[3..]);
        assert!(totp.verify(&secret, &spaced, 1_000_000).is_some());
    }

    #[test]
    fn the_uri_carries_issuer_account_and_parameters() {
        let secret = rfc_secret();
        let uri = otpauth_uri(
            &secret,
            Some("Example App"),
            "alice@example.com",
            &TotpParams::default(),
        );
        assert_eq!(
            uri.expose_secret(),
            "otpauth://totp/Example%20App:alice%40example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Example%20App&algorithm=SHA1&digits=6&period=30"
        );
        let svg = qr_svg(uri.expose_secret()).unwrap();
        assert!(svg.expose_secret().contains("<svg"));
    }
}
