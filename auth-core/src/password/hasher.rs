use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Argon2, KeyId, Params, ParamsBuilder, Version};
use secrecy::{ExposeSecret, SecretBox};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::error::CryptoError;
use super::{HashedPassword, Password, PasswordError, UpgradeReason, Verification};

/// Salt length for new hashes, in bytes (the PHC recommendation).
const SALT_LEN: usize = 16;
/// Output length for new hashes, in bytes.
const OUTPUT_LEN: usize = 32;
/// A stored hash may ask for at most this many times the configured memory
/// and time cost (or [`STORED_M_COST_FLOOR`] / [`STORED_T_COST_FLOOR`] if
/// larger); beyond, it is refused as malformed, so a planted or imported
/// hash cannot hold every hashing slot or exhaust memory.
const STORED_COST_FACTOR: u32 = 8;
/// Memory any stored hash may use: 256 MiB, in KiB.
const STORED_M_COST_FLOOR: u32 = 256 * 1024;
/// Passes any stored hash may use.
const STORED_T_COST_FLOOR: u32 = 10;

/// Argon2id cost parameters.
///
/// The default is the OWASP Password Storage Cheat Sheet's first choice,
/// m=19456 KiB (19 MiB), t=2, p=1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Params {
    /// Memory cost, in KiB.
    pub m_cost: u32,
    /// Time cost: number of passes over the memory.
    pub t_cost: u32,
    /// Degree of parallelism (lanes).
    pub p_cost: u32,
}

impl Argon2Params {
    /// Parameters so cheap that they protect nothing (m=256 KiB, t=1,
    /// p=1): for tests, where hashing must not dominate. A hasher takes
    /// them only with [`PasswordHasherBuilder::insecure_allow_weak_params`]
    /// (see [`PasswordHasher::insecure_for_tests`]), which logs a warning.
    pub const INSECURE_TEST: Self = Self {
        m_cost: 256,
        t_cost: 1,
        p_cost: 1,
    };

    /// OWASP's recommended minimum: m=19456 KiB, t=2, p=1.
    pub const OWASP: Self = Self {
        m_cost: 19456,
        t_cost: 2,
        p_cost: 1,
    };

    /// Whether these parameters reach one of the OWASP Password Storage
    /// Cheat Sheet's Argon2id configurations: m=47104 KiB with t=1, 19456
    /// with t=2, 12288 with t=3, 9216 with t=4, 7168 with t>=5.
    pub fn meets_owasp_minimum(&self) -> bool {
        let required_m = match self.t_cost {
            0 => return false,
            1 => 47104,
            2 => 19456,
            3 => 12288,
            4 => 9216,
            _ => 7168,
        };
        self.m_cost >= required_m && self.p_cost >= 1
    }
}

impl Default for Argon2Params {
    fn default() -> Self {
        Self::OWASP
    }
}

/// A pepper: a secret key mixed into every Argon2 hash as its `secret`
/// input, kept outside the database (an environment variable, a secret
/// manager), so a stolen database alone cannot be cracked.
///
/// The key id (1 to 8 bytes) is written into the PHC string (`keyid=...`), so
/// a new pepper can be introduced while hashes made with an older one still
/// verify (configure it with
/// [`PasswordHasherBuilder::previous_pepper`]) and are flagged for upgrade.
#[derive(Clone)]
pub struct Pepper {
    key_id: KeyId,
    secret: Arc<SecretBox<[u8]>>,
}

impl Pepper {
    /// Minimum pepper length in bytes.
    pub const MIN_SECRET_LEN: usize = 16;

    /// A pepper with the given key id (1 to 8 bytes) and secret (at least
    /// [`Self::MIN_SECRET_LEN`] bytes).
    pub fn new(
        key_id: impl AsRef<[u8]>,
        secret: impl Into<Vec<u8>>,
    ) -> Result<Self, PasswordError> {
        let key_id = key_id.as_ref();
        if key_id.is_empty() || key_id.len() > Params::MAX_KEYID_LEN {
            return Err(PasswordError::Config("pepper key id must be 1 to 8 bytes"));
        }
        let secret: Vec<u8> = secret.into();
        if secret.len() < Self::MIN_SECRET_LEN {
            return Err(PasswordError::Config(
                "pepper secret must be at least 16 bytes",
            ));
        }
        let key_id = KeyId::new(key_id).map_err(|_| PasswordError::Config("pepper key id"))?;
        Ok(Self {
            key_id,
            secret: Arc::new(SecretBox::new(secret.into_boxed_slice())),
        })
    }

    /// The key id written into hashes made with this pepper.
    pub fn key_id(&self) -> &[u8] {
        self.key_id.as_bytes()
    }
}

impl fmt::Debug for Pepper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pepper")
            .field("key_id", &self.key_id.as_bytes())
            .field("secret", &"[REDACTED]")
            .finish()
    }
}

/// Builds a [`PasswordHasher`]; every setting is validated by
/// [`build`](Self::build).
#[derive(Debug, Default)]
#[must_use]
pub struct PasswordHasherBuilder {
    params: Argon2Params,
    pepper: Option<Pepper>,
    previous_peppers: Vec<Pepper>,
    allow_weak_params: bool,
}

impl PasswordHasherBuilder {
    /// Argon2id cost parameters for new hashes. [`build`](Self::build) refuses
    /// parameters below the OWASP minimum (see
    /// [`Argon2Params::meets_owasp_minimum`]) unless
    /// [`insecure_allow_weak_params`](Self::insecure_allow_weak_params) is set.
    pub fn params(mut self, params: Argon2Params) -> Self {
        self.params = params;
        self
    }

    /// Allows parameters below the OWASP minimum. Only for tests and local
    /// development: `build` logs a warning when it is used.
    pub fn insecure_allow_weak_params(mut self) -> Self {
        self.allow_weak_params = true;
        self
    }

    /// The pepper mixed into new hashes. Hashes without it, or with another
    /// key id, are flagged for upgrade when they verify.
    pub fn pepper(mut self, pepper: Pepper) -> Self {
        self.pepper = Some(pepper);
        self
    }

    /// An older pepper, kept so hashes made with it still verify (and are
    /// flagged for upgrade to the current one).
    pub fn previous_pepper(mut self, pepper: Pepper) -> Self {
        self.previous_peppers.push(pepper);
        self
    }

    /// Validates the settings and builds the hasher.
    pub fn build(self) -> Result<PasswordHasher, PasswordError> {
        let Argon2Params {
            m_cost,
            t_cost,
            p_cost,
        } = self.params;
        if !self.params.meets_owasp_minimum() {
            if !self.allow_weak_params {
                return Err(PasswordError::Config(
                    "Argon2 parameters are below the OWASP minimum \
                     (use insecure_allow_weak_params only for tests)",
                ));
            }
            tracing::warn!(
                m_cost,
                t_cost,
                p_cost,
                "insecure_allow_weak_params: Argon2 parameters below the OWASP minimum; \
                 never use this in production"
            );
        }
        let mut all_ids: Vec<&[u8]> = self.previous_peppers.iter().map(Pepper::key_id).collect();
        all_ids.extend(self.pepper.as_ref().map(Pepper::key_id));
        let distinct = all_ids.len();
        all_ids.sort_unstable();
        all_ids.dedup();
        if all_ids.len() != distinct {
            return Err(PasswordError::Config("pepper key ids must be distinct"));
        }

        let mut builder = ParamsBuilder::new();
        builder
            .m_cost(m_cost)
            .t_cost(t_cost)
            .p_cost(p_cost)
            .output_len(OUTPUT_LEN);
        if let Some(pepper) = &self.pepper {
            builder.keyid(pepper.key_id);
        }
        let params = builder
            .build()
            .map_err(|_| PasswordError::Config("invalid Argon2 parameters"))?;

        let dummy_hash = dummy_hash(&params)?;
        Ok(PasswordHasher {
            inner: Arc::new(Inner {
                config: self.params,
                params,
                pepper: self.pepper,
                previous_peppers: self.previous_peppers,
                dummy_hash,
                kdf_runs: AtomicU64::new(0),
            }),
        })
    }
}

/// The synchronous password engine: hash, verify, detect upgrades.
///
/// Every method runs a deliberately slow key derivation; call them from a
/// blocking context, or use [`PasswordService`](super::PasswordService),
/// which does so with bounded concurrency. Cloning is cheap and clones share
/// their configuration and counters.
#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<Inner>,
}

struct Inner {
    config: Argon2Params,
    /// Current parameters for new hashes, including the pepper key id.
    params: Params,
    pepper: Option<Pepper>,
    previous_peppers: Vec<Pepper>,
    /// A syntactically valid hash at current parameters that no password
    /// matches (random salt and random output).
    dummy_hash: String,
    kdf_runs: AtomicU64,
}

impl fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("params", &self.inner.config)
            .field("pepper", &self.inner.pepper)
            .field("previous_peppers", &self.inner.previous_peppers)
            .finish_non_exhaustive()
    }
}

impl Default for PasswordHasher {
    /// The OWASP defaults, without pepper.
    fn default() -> Self {
        Self::builder()
            .build()
            .expect("the default configuration is valid")
    }
}

impl PasswordHasher {
    /// A builder starting from the defaults (OWASP parameters, no pepper).
    pub fn builder() -> PasswordHasherBuilder {
        PasswordHasherBuilder::default()
    }

    /// A hasher with [`Argon2Params::INSECURE_TEST`]: fast, and no
    /// protection at all. Only for tests; building it logs a warning.
    pub fn insecure_for_tests() -> Result<Self, PasswordError> {
        Self::builder()
            .params(Argon2Params::INSECURE_TEST)
            .insecure_allow_weak_params()
            .build()
    }

    /// The parameters new hashes are made with.
    pub fn params(&self) -> Argon2Params {
        self.inner.config
    }

    /// How many key derivations (Argon2, bcrypt or PBKDF2 runs) this hasher
    /// and its clones have performed. A metric, and the way tests prove that
    /// an unknown-user login costs exactly what a wrong password costs.
    pub fn kdf_invocations(&self) -> u64 {
        self.inner.kdf_runs.load(Ordering::Relaxed)
    }

    /// Hashes a password (NFKC-normalised first) with Argon2id at the current
    /// parameters, a fresh 16-byte salt and the current pepper.
    ///
    /// This does not apply the policy; see
    /// [`PasswordService::hash_new_password`](super::PasswordService::hash_new_password).
    pub fn hash(&self, password: &Password) -> Result<HashedPassword, PasswordError> {
        let normalized = password.normalized()?;
        let mut salt = [0u8; SALT_LEN];
        getrandom::fill(&mut salt).map_err(|e| PasswordError::Crypto(CryptoError::Rng(e)))?;
        let secret = self.inner.pepper.as_ref().map(|p| p.secret.expose_secret());
        let argon2 = argon2_context(
            argon2::Algorithm::Argon2id,
            Version::V0x13,
            self.inner.params.clone(),
            secret,
        )?;
        let mut output = Zeroizing::new([0u8; OUTPUT_LEN]);
        self.count_kdf();
        argon2
            .hash_password_into(normalized.as_bytes(), &salt, output.as_mut_slice())
            .map_err(|e| PasswordError::Crypto(e.into()))?;
        encode_argon2id(&self.inner.params, &salt, output.as_slice()).map(HashedPassword)
    }

    /// Verifies a password against a stored hash and says whether the hash
    /// should be upgraded.
    ///
    /// Argon2 hashes (any variant and version, with or without a pepper key
    /// id) are always supported; bcrypt (`$2a$`, `$2b$`, `$2y$`) with the
    /// `bcrypt` feature, PBKDF2 (`$pbkdf2-sha256$` PHC and Django's
    /// `pbkdf2_sha256$...`) with the `pbkdf2` feature. Legacy hashes never
    /// had our NFKC normalisation, so they are tried with the normalised form
    /// and, when it differs, with the text exactly as sent.
    ///
    /// A bcrypt hash only covers 72 bytes: a longer password is a
    /// [`Verification::Mismatch`], never silently truncated.
    ///
    /// Every verification of an acceptable password costs at least one key
    /// derivation: a stored hash that cannot be verified (malformed, over
    /// the cost cap, an unknown algorithm or pepper key) still runs the
    /// dummy derivation at the current parameters before its error, so
    /// such an account answers a wrong password as slowly as any other.
    pub fn verify(
        &self,
        password: &Password,
        hash: &HashedPassword,
    ) -> Result<Verification, PasswordError> {
        let result = self.verify_stored(password, hash);
        if let Err(
            PasswordError::MalformedHash
            | PasswordError::UnsupportedAlgorithm
            | PasswordError::UnknownPepperKey,
        ) = result
        {
            // Always a mismatch: only its cost matters here.
            let _ = self.verify_dummy(password)?;
        }
        result
    }

    fn verify_stored(
        &self,
        password: &Password,
        hash: &HashedPassword,
    ) -> Result<Verification, PasswordError> {
        let normalized = password.normalized()?;
        let stored = hash.as_str();
        if stored.starts_with("$argon2") {
            let phc = PasswordHash::new(stored).map_err(|_| PasswordError::MalformedHash)?;
            return self.verify_argon2(normalized.as_bytes(), &phc);
        }
        #[cfg(any(feature = "bcrypt", feature = "pbkdf2"))]
        if let Some(kind) = super::legacy::LegacyKind::detect(stored) {
            let mut candidates: Vec<&[u8]> = vec![normalized.as_bytes()];
            if password.expose() != normalized.as_str() {
                candidates.push(password.expose().as_bytes());
            }
            for candidate in candidates {
                if kind.verify(candidate, stored, || self.count_kdf())? {
                    return Ok(Verification::Match {
                        upgrade: Some(UpgradeReason::Algorithm),
                    });
                }
            }
            return Ok(Verification::Mismatch);
        }
        if stored.starts_with('$') || stored.starts_with("pbkdf2_") {
            Err(PasswordError::UnsupportedAlgorithm)
        } else {
            Err(PasswordError::MalformedHash)
        }
    }

    /// Verifies the password against a dummy hash at the current parameters
    /// (and pepper), and returns [`Verification::Mismatch`].
    ///
    /// Call this when the user does not exist or is disabled, so that path
    /// costs exactly one key derivation, like a wrong password.
    pub fn verify_dummy(&self, password: &Password) -> Result<Verification, PasswordError> {
        let normalized = password.normalized()?;
        let phc =
            PasswordHash::new(&self.inner.dummy_hash).map_err(|_| PasswordError::MalformedHash)?;
        // The dummy output is random: a match has probability 2^-256.
        let _ = self.verify_argon2(normalized.as_bytes(), &phc)?;
        Ok(Verification::Mismatch)
    }

    /// Whether a stored hash is weaker than the current configuration,
    /// without verifying any password (for reports and migrations). Login
    /// flows should rely on [`Verification::Match`] instead.
    pub fn upgrade_reason(
        &self,
        hash: &HashedPassword,
    ) -> Result<Option<UpgradeReason>, PasswordError> {
        let stored = hash.as_str();
        if !stored.starts_with("$argon2") {
            #[cfg(any(feature = "bcrypt", feature = "pbkdf2"))]
            if super::legacy::LegacyKind::detect(stored).is_some() {
                return Ok(Some(UpgradeReason::Algorithm));
            }
            return Err(PasswordError::UnsupportedAlgorithm);
        }
        let phc = PasswordHash::new(stored).map_err(|_| PasswordError::MalformedHash)?;
        let parsed = ParsedArgon2::new(&phc, &self.inner.config)?;
        let (_, pepper_outdated) = self.select_pepper(parsed.params.keyid())?;
        Ok(self.upgrade_for(&parsed, pepper_outdated))
    }

    fn verify_argon2(
        &self,
        password: &[u8],
        phc: &PasswordHash,
    ) -> Result<Verification, PasswordError> {
        let parsed = ParsedArgon2::new(phc, &self.inner.config)?;
        let (secret, pepper_outdated) = self.select_pepper(parsed.params.keyid())?;
        let argon2 = argon2_context(
            parsed.algorithm,
            parsed.version,
            parsed.params.clone(),
            secret,
        )?;
        let mut output = Zeroizing::new(vec![0u8; parsed.expected.len()]);
        self.count_kdf();
        argon2
            .hash_password_into(password, parsed.salt, &mut output)
            .map_err(|_| PasswordError::MalformedHash)?;
        if !bool::from(output.as_slice().ct_eq(parsed.expected)) {
            return Ok(Verification::Mismatch);
        }
        Ok(Verification::Match {
            upgrade: self.upgrade_for(&parsed, pepper_outdated),
        })
    }

    /// The pepper secret for a stored key id, and whether that hash is not
    /// on the current pepper.
    fn select_pepper(&self, key_id: &[u8]) -> Result<(Option<&[u8]>, bool), PasswordError> {
        let current = self.inner.pepper.as_ref();
        if key_id.is_empty() {
            return Ok((None, current.is_some()));
        }
        if let Some(pepper) = current.filter(|p| p.key_id() == key_id) {
            return Ok((Some(pepper.secret.expose_secret()), false));
        }
        self.inner
            .previous_peppers
            .iter()
            .find(|p| p.key_id() == key_id)
            .map(|p| (Some(p.secret.expose_secret()), true))
            .ok_or(PasswordError::UnknownPepperKey)
    }

    fn upgrade_for(
        &self,
        parsed: &ParsedArgon2<'_>,
        pepper_outdated: bool,
    ) -> Option<UpgradeReason> {
        let current = &self.inner.config;
        if parsed.algorithm != argon2::Algorithm::Argon2id {
            Some(UpgradeReason::Algorithm)
        } else if parsed.version != Version::V0x13 {
            Some(UpgradeReason::Version)
        } else if parsed.params.m_cost() < current.m_cost
            || parsed.params.t_cost() < current.t_cost
            || parsed.expected.len() < OUTPUT_LEN
            || parsed.salt.len() < SALT_LEN
        {
            Some(UpgradeReason::Params)
        } else if pepper_outdated {
            Some(UpgradeReason::Pepper)
        } else {
            None
        }
    }

    pub(super) fn count_kdf(&self) {
        self.inner.kdf_runs.fetch_add(1, Ordering::Relaxed);
    }
}

/// The parts of a stored Argon2 PHC string, validated.
struct ParsedArgon2<'a> {
    algorithm: argon2::Algorithm,
    version: Version,
    params: Params,
    salt: &'a [u8],
    expected: &'a [u8],
}

impl<'a> ParsedArgon2<'a> {
    fn new(phc: &'a PasswordHash, config: &Argon2Params) -> Result<Self, PasswordError> {
        let algorithm = argon2::Algorithm::try_from(phc.algorithm.as_str())
            .map_err(|_| PasswordError::MalformedHash)?;
        // The reference implementation reads a missing `v=` as version 0x10.
        let version = Version::try_from(phc.version.unwrap_or(0x10))
            .map_err(|_| PasswordError::MalformedHash)?;
        let params = Params::try_from(phc).map_err(|_| PasswordError::MalformedHash)?;
        let max_m = config
            .m_cost
            .saturating_mul(STORED_COST_FACTOR)
            .max(STORED_M_COST_FLOOR);
        let max_t = config
            .t_cost
            .saturating_mul(STORED_COST_FACTOR)
            .max(STORED_T_COST_FLOOR);
        if params.m_cost() > max_m || params.t_cost() > max_t {
            return Err(PasswordError::MalformedHash);
        }
        let salt = phc.salt.as_ref().ok_or(PasswordError::MalformedHash)?;
        let expected = phc.hash.as_ref().ok_or(PasswordError::MalformedHash)?;
        Ok(Self {
            algorithm,
            version,
            params,
            salt: salt.as_ref(),
            expected: expected.as_bytes(),
        })
    }
}

fn argon2_context<'k>(
    algorithm: argon2::Algorithm,
    version: Version,
    params: Params,
    secret: Option<&'k [u8]>,
) -> Result<Argon2<'k>, PasswordError> {
    match secret {
        Some(secret) => Argon2::new_with_secret(secret, algorithm, version, params)
            .map_err(|e| PasswordError::Crypto(e.into())),
        None => Ok(Argon2::new(algorithm, version, params)),
    }
}

/// A PHC string at `params` with a random salt and a random output, which no
/// password matches.
fn dummy_hash(params: &Params) -> Result<String, PasswordError> {
    let mut salt = [0u8; SALT_LEN];
    let mut output = [0u8; OUTPUT_LEN];
    getrandom::fill(&mut salt).map_err(|e| PasswordError::Crypto(CryptoError::Rng(e)))?;
    getrandom::fill(&mut output).map_err(|e| PasswordError::Crypto(CryptoError::Rng(e)))?;
    encode_argon2id(params, &salt, &output)
}

/// The PHC string of an Argon2id v19 hash.
fn encode_argon2id(params: &Params, salt: &[u8], output: &[u8]) -> Result<String, PasswordError> {
    let phc_error = |e| PasswordError::Crypto(CryptoError::Phc(e));
    let phc = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params)
            .map_err(|e| PasswordError::Crypto(CryptoError::PasswordHash(e)))?,
        salt: Some(Salt::new(salt).map_err(phc_error)?),
        hash: Some(Output::new(output).map_err(phc_error)?),
    };
    Ok(phc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every failed verification costs exactly one key derivation at the
    /// current parameters, whatever the stored hash (Django's
    /// `test_authentication_timing` counts the same way): a wrong password,
    /// the unknown-user dummy, a malformed string, a hash over the cost
    /// cap, an unsupported algorithm and an unknown pepper key.
    #[test]
    fn every_failed_verification_costs_exactly_one_derivation() {
        let hasher = PasswordHasher::insecure_for_tests().unwrap();
        let real = hasher.hash(&Password::from("the real passphrase")).unwrap();
        let with_unknown_pepper = real.as_str().replacen("p=1", "p=1,keyid=azk", 1);
        let over_the_cap = "$argon2id$v=19$m=4194304,t=64,p=1$c29tZXNhbHRzb21lc2FsdA$\
            AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let wrong = Password::from("a wrong guess");
        use PasswordError::{MalformedHash, UnknownPepperKey, UnsupportedAlgorithm};
        let cases: Vec<(&str, String, Option<PasswordError>)> = vec![
            ("wrong password", real.as_str().to_owned(), None),
            (
                "malformed",
                "$argon2id$garbage".to_owned(),
                Some(MalformedHash),
            ),
            ("not a hash", "plain text".to_owned(), Some(MalformedHash)),
            ("empty", String::new(), Some(MalformedHash)),
            (
                "over the cost cap",
                over_the_cap.to_owned(),
                Some(MalformedHash),
            ),
            (
                "unsupported",
                "$5$rounds=5000$salt$hash".to_owned(),
                Some(UnsupportedAlgorithm),
            ),
            (
                "unknown pepper key",
                with_unknown_pepper,
                Some(UnknownPepperKey),
            ),
        ];
        for (what, stored, error) in cases {
            let before = hasher.kdf_invocations();
            let answer = hasher.verify(&wrong, &HashedPassword::new(stored));
            match error {
                None => assert_eq!(answer.unwrap(), Verification::Mismatch, "{what}"),
                Some(expected) => assert_eq!(
                    std::mem::discriminant(&answer.unwrap_err()),
                    std::mem::discriminant(&expected),
                    "{what}"
                ),
            }
            assert_eq!(hasher.kdf_invocations() - before, 1, "{what}");
        }
        let before = hasher.kdf_invocations();
        assert_eq!(hasher.verify_dummy(&wrong).unwrap(), Verification::Mismatch);
        assert_eq!(hasher.kdf_invocations() - before, 1, "unknown user");
        // Oversized input is refused before any work, on every path alike.
        let huge = Password::from("x".repeat(5000));
        let before = hasher.kdf_invocations();
        assert!(hasher.verify(&huge, &real).is_err());
        assert!(
            hasher
                .verify(&huge, &HashedPassword::new("garbage"))
                .is_err()
        );
        assert_eq!(hasher.kdf_invocations(), before);
    }

    /// RFC 9106 section 5.3: the Argon2id known answer, run through the same
    /// `argon2_context` wiring (secret = pepper input) that `hash` and
    /// `verify` use.
    #[test]
    fn rfc9106_argon2id_known_answer() {
        let mut builder = ParamsBuilder::new();
        builder
            .m_cost(32)
            .t_cost(3)
            .p_cost(4)
            .output_len(32)
            .data(argon2::AssociatedData::new(&[0x04; 12]).unwrap());
        let mut tag = [0u8; 32];
        let context = argon2_context(
            argon2::Algorithm::Argon2id,
            Version::V0x13,
            builder.build().unwrap(),
            Some(&[0x03; 8]),
        )
        .unwrap();
        context
            .hash_password_into(&[0x01; 32], &[0x02; 16], &mut tag)
            .unwrap();
        assert_eq!(
            tag,
            [
                0x0d, 0x64, 0x0d, 0xf5, 0x8d, 0x78, 0x76, 0x6c, 0x08, 0xc0, 0x37, 0xa3, 0x4a, 0x8b,
                0x53, 0xc9, 0xd0, 0x1e, 0xf0, 0x45, 0x2d, 0x75, 0xb6, 0x5e, 0xb5, 0x25, 0x20, 0xe9,
                0x6b, 0x01, 0xe6, 0x59,
            ]
        );
        // Without the secret the tag differs: the pepper really is an input.
        let mut other = [0u8; 32];
        let mut builder = ParamsBuilder::new();
        builder.m_cost(32).t_cost(3).p_cost(4).output_len(32);
        argon2_context(
            argon2::Algorithm::Argon2id,
            Version::V0x13,
            builder.build().unwrap(),
            None,
        )
        .unwrap()
        .hash_password_into(&[0x01; 32], &[0x02; 16], &mut other)
        .unwrap();
        assert_ne!(tag, other);
    }

    #[test]
    fn dummy_hash_is_current_and_matches_nothing() {
        let hasher = PasswordHasher::default();
        assert!(
            hasher
                .inner
                .dummy_hash
                .starts_with("$argon2id$v=19$m=19456,t=2,p=1$")
        );
        let dummy = HashedPassword::new(hasher.inner.dummy_hash.clone());
        assert_eq!(hasher.upgrade_reason(&dummy).unwrap(), None);

        // With other parameters and a pepper, the dummy follows them, so the
        // unknown-user path costs what a real verification costs.
        let custom = PasswordHasher::builder()
            .params(Argon2Params {
                m_cost: 47104,
                t_cost: 1,
                p_cost: 1,
            })
            .pepper(Pepper::new("k9", vec![7; 32]).unwrap())
            .build()
            .unwrap();
        assert!(
            custom
                .inner
                .dummy_hash
                .starts_with("$argon2id$v=19$m=47104,t=1,p=1,keyid=azk$")
        );
        let custom_dummy = HashedPassword::new(custom.inner.dummy_hash.clone());
        assert_eq!(custom.upgrade_reason(&custom_dummy).unwrap(), None);
        assert_eq!(
            hasher.verify(&Password::from(""), &dummy).unwrap(),
            Verification::Mismatch
        );
    }
}
