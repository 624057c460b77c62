//! [`TokenService`]: the configuration, keys, refresh store and
//! verified-token cache that the token flows of the
//! [`Authenticator`](crate::Authenticator) run on.

use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use hashbrown::HashMap;
use sha2::{Digest, Sha256};

use super::jwt::{AccessClaims, Expect, KeySet, SigningKey, TokenError};
use super::refresh::{Family, RefreshStore, RefreshToken};
use crate::clock::Timestamp;
use crate::secret_key::{Lookup, SecretKey};
use crate::session::Session;

/// The shortest access-token lifetime [`TokenConfigBuilder::access_lifetime`]
/// takes.
pub const MIN_ACCESS_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// The longest access-token lifetime.
pub const MAX_ACCESS_LIFETIME: Duration = Duration::from_secs(60 * 60);
/// The largest clock leeway verification allows.
pub const MAX_LEEWAY: Duration = Duration::from_secs(60);
/// The longest reuse grace period ([`TokenConfigBuilder::reuse_grace`]).
pub const MAX_GRACE: Duration = Duration::from_secs(60);

/// How tokens are issued and checked. Built by [`TokenConfig::builder`];
/// every default is the safe one.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    issuer: String,
    audience: String,
    access_lifetime: Duration,
    leeway: Duration,
    family_lifetime: Duration,
    family_idle: Duration,
    grace: Option<Duration>,
    check_revocation: bool,
}

impl TokenConfig {
    /// A configuration for tokens issued by `issuer` (the `iss` claim, e.g.
    /// the app's origin) for `audience` (the `aud` claim, e.g. its API's
    /// name), with the defaults:
    ///
    /// * access tokens live 15 minutes;
    /// * 30 s of clock leeway;
    /// * a sign-in's refresh-token family lives at most 30 days, and dies
    ///   after 7 days unused;
    /// * no reuse grace: presenting a spent refresh token revokes its
    ///   family at once;
    /// * revocation is checked on every request: an access token of a
    ///   revoked family is refused at once (one read of the refresh store).
    pub fn builder(issuer: impl Into<String>, audience: impl Into<String>) -> TokenConfigBuilder {
        TokenConfigBuilder {
            config: TokenConfig {
                issuer: issuer.into(),
                audience: audience.into(),
                access_lifetime: MIN_ACCESS_LIFETIME,
                leeway: Duration::from_secs(30),
                family_lifetime: Duration::from_secs(30 * 24 * 60 * 60),
                family_idle: Duration::from_secs(7 * 24 * 60 * 60),
                grace: None,
                check_revocation: true,
            },
        }
    }

    /// The `iss` claim.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The `aud` claim.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// How long an access token lives.
    pub fn access_lifetime(&self) -> Duration {
        self.access_lifetime
    }

    /// The clock leeway of verification.
    pub fn leeway(&self) -> Duration {
        self.leeway
    }

    /// The absolute lifetime of a refresh-token family.
    pub fn family_lifetime(&self) -> Duration {
        self.family_lifetime
    }

    /// How long a refresh-token family may go unused.
    pub fn family_idle_timeout(&self) -> Duration {
        self.family_idle
    }

    /// The reuse grace period, if any.
    pub fn reuse_grace(&self) -> Option<Duration> {
        self.grace
    }

    /// Whether every request checks its token's family.
    pub fn checks_revocation(&self) -> bool {
        self.check_revocation
    }
}

/// Builds a [`TokenConfig`].
#[derive(Debug, Clone)]
#[must_use]
pub struct TokenConfigBuilder {
    config: TokenConfig,
}

/// A [`TokenConfig`] value out of range.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenConfigError {
    /// Access tokens live 15 to 60 minutes.
    #[error("the access-token lifetime must be between 15 and 60 minutes")]
    AccessLifetime,
    /// The leeway is at most 60 seconds.
    #[error("the clock leeway must be at most 60 seconds")]
    Leeway,
    /// The family lifetimes must be positive, the idle timeout no longer
    /// than the absolute lifetime.
    #[error(
        "the refresh-token lifetimes must be positive, the idle timeout at most the absolute lifetime"
    )]
    FamilyLifetime,
    /// The reuse grace is between 1 and 60 seconds.
    #[error("the reuse grace period must be between 1 and 60 seconds")]
    Grace,
    /// Issuer and audience must not be empty.
    #[error("issuer and audience must not be empty")]
    Names,
}

impl TokenConfigBuilder {
    /// How long an access token lives: 15 to 60 minutes (default 15).
    pub fn access_lifetime(mut self, lifetime: Duration) -> Self {
        self.config.access_lifetime = lifetime;
        self
    }

    /// Clock leeway for `exp` and `nbf`: at most 60 s (default 30 s).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.config.leeway = leeway;
        self
    }

    /// The absolute lifetime of a sign-in's refresh tokens (default 30
    /// days).
    pub fn refresh_lifetime(mut self, lifetime: Duration) -> Self {
        self.config.family_lifetime = lifetime;
        self
    }

    /// How long a sign-in's refresh token may go unused (default 7 days).
    pub fn refresh_idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.family_idle = timeout;
        self
    }

    /// A grace period for concurrent refreshes (off by default): within it,
    /// the refresh token just replaced gets the *same* successor again
    /// (never a new one), so two requests racing with one token do not
    /// revoke the family. 1 to 60 seconds.
    pub fn reuse_grace(mut self, grace: Duration) -> Self {
        self.config.grace = Some(grace);
        self
    }

    /// Stops checking, at each request, that its token's family is still
    /// live (checked by default). A revoked sign-in's access tokens then
    /// stay valid until they expire (at most the access lifetime plus the
    /// leeway: a logout, a password change or "sign out everywhere" does
    /// not end them), and a request costs no store read;
    /// [`build`](Self::build) logs a warning.
    pub fn insecure_skip_revocation_check(mut self) -> Self {
        self.config.check_revocation = false;
        self
    }

    /// The configuration, or the first value out of range.
    pub fn build(self) -> Result<TokenConfig, TokenConfigError> {
        let c = self.config;
        if c.issuer.is_empty() || c.audience.is_empty() {
            return Err(TokenConfigError::Names);
        }
        if !(MIN_ACCESS_LIFETIME..=MAX_ACCESS_LIFETIME).contains(&c.access_lifetime) {
            return Err(TokenConfigError::AccessLifetime);
        }
        if c.leeway > MAX_LEEWAY {
            return Err(TokenConfigError::Leeway);
        }
        if c.family_lifetime.is_zero()
            || c.family_idle.is_zero()
            || c.family_idle > c.family_lifetime
        {
            return Err(TokenConfigError::FamilyLifetime);
        }
        if let Some(grace) = c.grace
            && (grace < Duration::from_secs(1) || grace > MAX_GRACE)
        {
            return Err(TokenConfigError::Grace);
        }
        if !c.check_revocation {
            tracing::warn!(
                "auth: access tokens are not checked for revocation: after a logout, a \
                 password change or sign-out everywhere, tokens already issued stay valid \
                 until they expire (up to {} s, the leeway included)",
                c.access_lifetime.saturating_add(c.leeway).as_secs()
            );
        }
        Ok(c)
    }
}

/// Access and refresh tokens of one app: the [`TokenConfig`], the signing
/// keys (a [`KeySet`]; rotate with [`rotate_key`](Self::rotate_key)), the
/// [`RefreshStore`], and a bounded cache of verified access tokens.
/// Given to [`AuthBuilder::tokens`](crate::flow::AuthBuilder::tokens).
pub struct TokenService {
    config: TokenConfig,
    keys: RwLock<KeySet>,
    store: Arc<dyn RefreshStore>,
    verified: VerifiedCache,
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService")
            .field("config", &self.config)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl TokenService {
    /// Tokens signed with `key`, families kept in `store`.
    pub fn new(config: TokenConfig, key: SigningKey, store: Arc<dyn RefreshStore>) -> Self {
        Self::with_keys(config, KeySet::new(key), store)
    }

    /// Tokens signed and verified with `keys` (a current key and the
    /// retired ones still verifying, e.g. loaded from storage).
    pub fn with_keys(config: TokenConfig, keys: KeySet, store: Arc<dyn RefreshStore>) -> Self {
        Self {
            config,
            keys: RwLock::new(keys),
            store,
            verified: VerifiedCache::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &TokenConfig {
        &self.config
    }

    /// The refresh-token store.
    pub fn store(&self) -> &Arc<dyn RefreshStore> {
        &self.store
    }

    /// Signs with `next` from now on. The key it replaces keeps verifying,
    /// and stays in the JWKS, until every token it signed has expired (the
    /// access lifetime plus the leeway).
    pub fn rotate_key(&self, next: SigningKey, now: Timestamp) {
        let keep = self.config.access_lifetime + self.config.leeway;
        self.keys_mut().rotate(next, system_time(now), keep);
    }

    /// The public keys that verify tokens at `now` (`{"keys": [...]}`).
    pub fn jwks(&self, now: Timestamp) -> serde_json::Value {
        self.keys().jwks(system_time(now))
    }

    fn keys(&self) -> std::sync::RwLockReadGuard<'_, KeySet> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn keys_mut(&self) -> std::sync::RwLockWriteGuard<'_, KeySet> {
        self.keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A signed access token for `family`, and its lifetime in seconds.
    pub(crate) fn issue_access(
        &self,
        family: &Family,
        now: Timestamp,
    ) -> Result<(String, u64), TokenError> {
        let iat = unix_secs(now);
        let lifetime = self.config.access_lifetime.as_secs();
        let claims = AccessClaims {
            iss: self.config.issuer.clone(),
            aud: self.config.audience.clone(),
            sub: family.user_id.clone(),
            iat,
            nbf: iat,
            exp: iat + lifetime,
            jti: super::refresh::random_id().map_err(|_| TokenError::Sign)?,
            sid: family.id.clone(),
            amr: family.amr.clone(),
            auth_time: unix_secs(family.created_at),
        };
        Ok((self.keys().sign(&claims)?, lifetime))
    }

    /// A valid access token's claims (signature, header, issuer,
    /// audience, times checked), from the cache when this process verified
    /// the same token string before and `now` is before its `exp`.
    /// Revocation is the caller's check.
    pub(crate) fn verify(&self, token: &str, now: Timestamp) -> Result<Arc<Verified>, TokenError> {
        let now_secs = unix_secs(now);
        if let Some(verified) = self.verified.get(token, now_secs) {
            return Ok(verified);
        }
        let expect = Expect {
            issuer: self.config.issuer.clone(),
            audience: self.config.audience.clone(),
            leeway: self.config.leeway,
        };
        let claims = self.keys().verify(token, &expect, system_time(now))?;
        let verified = Arc::new(Verified {
            claims: Arc::new(claims),
            session: OnceLock::new(),
        });
        // Cached until it expires by the token's own `exp` (no leeway: the
        // cache never extends a token).
        self.verified.put(token, Arc::clone(&verified), now_secs);
        Ok(verified)
    }

    /// Drops the cached tokens of family `sid` (it was revoked here).
    pub(crate) fn forget_family(&self, sid: &str) {
        self.verified.forget(|claims| claims.sid == sid);
    }

    /// Drops the cached tokens of user `sub`.
    pub(crate) fn forget_user(&self, sub: &str) {
        self.verified.forget(|claims| claims.sub == sub);
    }

    /// A new family for a sign-in of `user_id` that authenticated with
    /// `amr`, the user's session stamp being `stamp`, and its first refresh
    /// token.
    pub(crate) fn new_family(
        &self,
        user_id: &str,
        amr: Vec<String>,
        stamp: String,
        now: Timestamp,
    ) -> Result<(Family, RefreshToken), super::refresh::RefreshStoreError> {
        let token = RefreshToken::generate()?;
        let family = Family {
            id: token.key().family_id(),
            user_id: user_id.to_owned(),
            amr,
            stamp,
            created_at: now,
            expires_at: now.saturating_add(self.config.family_lifetime),
            idle_timeout: self.config.family_idle,
            last_used_at: now,
        };
        Ok((family, token))
    }
}

/// The successor of refresh token `presented`, sealed with a key only the
/// holder of `presented` can derive (the store keeps it for the reuse
/// grace; it is useless without the token it was sealed under).
pub(crate) fn seal_successor(presented: &RefreshToken, successor: &RefreshToken) -> Vec<u8> {
    let cipher = ChaCha20Poly1305::new(&seal_key(presented).into());
    let mut nonce = [0u8; 12];
    if getrandom::fill(&mut nonce).is_err() {
        // No grace without randomness: an empty blob never opens.
        return Vec::new();
    }
    match cipher.encrypt(Nonce::from_slice(&nonce), successor.encode().as_bytes()) {
        Ok(sealed) => nonce.into_iter().chain(sealed).collect(),
        Err(_) => Vec::new(),
    }
}

/// Opens what [`seal_successor`] sealed under `presented`.
pub(crate) fn open_successor(presented: &RefreshToken, sealed: &[u8]) -> Option<RefreshToken> {
    if sealed.len() < 12 {
        return None;
    }
    let (nonce, ciphertext) = sealed.split_at(12);
    let cipher = ChaCha20Poly1305::new(&seal_key(presented).into());
    let plain = cipher.decrypt(Nonce::from_slice(nonce), ciphertext).ok()?;
    RefreshToken::parse(std::str::from_utf8(&plain).ok()?)
}

fn seal_key(token: &RefreshToken) -> [u8; 32] {
    let mut digest = Sha256::new();
    digest.update(b"auth-core refresh successor v1\0");
    digest.update(token.encode().as_bytes());
    digest.finalize().into()
}

fn unix_secs(at: Timestamp) -> u64 {
    u64::try_from(at.as_unix_secs()).unwrap_or(0)
}

fn system_time(at: Timestamp) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(at.as_unix_millis()).unwrap_or(0))
}

/// An access token this process verified: its claims, and what a request
/// derives from the claims alone, made once per token.
pub(crate) struct Verified {
    /// The verified claims.
    pub(crate) claims: Arc<AccessClaims>,
    /// The session standing for the token in a request (never stored; see
    /// `Authenticator::verify_bearer`), made by the first request that
    /// needs it. It holds nothing but what the claims say, so it is as
    /// valid as they are, and it lives in the cache entry: past the
    /// token's `exp` it is never handed out again.
    pub(crate) session: OnceLock<Session>,
}

/// Access tokens this process verified, until their `exp`: a repeated
/// token costs a map lookup instead of a signature check. Keyed by the
/// whole token: a lookup compares the whole string, in constant time, so a
/// different token never matches and the time a lookup takes says nothing
/// about how much of a presented token matched a cached one; bounded: when
/// full, expired entries go, and if that frees nothing, all of them.
#[derive(Default)]
struct VerifiedCache(RwLock<VerifiedMap>);

type VerifiedMap = HashMap<SecretKey, Arc<Verified>, TailHash>;

impl VerifiedCache {
    const MAX: usize = 16_384;

    fn read(&self) -> std::sync::RwLockReadGuard<'_, VerifiedMap> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, VerifiedMap> {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, token: &str, now_secs: u64) -> Option<Arc<Verified>> {
        let map = self.read();
        let verified = map.get(&Lookup(token))?;
        (now_secs < verified.claims.exp).then(|| Arc::clone(verified))
    }

    fn put(&self, token: &str, verified: Arc<Verified>, now_secs: u64) {
        let mut map = self.write();
        if map.len() >= Self::MAX {
            map.retain(|_, v| now_secs < v.claims.exp);
            if map.len() >= Self::MAX {
                map.clear();
            }
        }
        map.insert(SecretKey::new(token), verified);
    }

    fn forget(&self, mut drop_if: impl FnMut(&AccessClaims) -> bool) {
        self.write()
            .retain(|_, verified| !drop_if(&verified.claims));
    }
}

/// The cache's hash: a seeded fast hash (`foldhash`, under a random seed
/// per map) of the last [`TAIL`](TailHasher::TAIL) bytes of the token and
/// its length, instead of all of it (~500 bytes). The tail is the
/// signature's, different for every token, and the seed keeps it
/// unpredictable which tokens share a bucket. No flooding: only tokens this
/// process verified are ever inserted, and their signatures are not the
/// client's to choose. The hash only picks the bucket: a lookup still
/// compares the whole token (in constant time).
#[derive(Default, Clone)]
struct TailHash(foldhash::fast::RandomState);

impl BuildHasher for TailHash {
    type Hasher = TailHasher;

    fn build_hasher(&self) -> TailHasher {
        TailHasher(self.0.build_hasher())
    }
}

struct TailHasher(foldhash::fast::FoldHasher<'static>);

impl TailHasher {
    const TAIL: usize = 32;
}

impl Hasher for TailHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0
            .write(&bytes[bytes.len().saturating_sub(Self::TAIL)..]);
        self.0.write_usize(bytes.len());
    }

    fn finish(&self) -> u64 {
        self.0.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sealed successor opens only under the token it replaced, never
    /// when tampered with, and holds neither token in the clear.
    #[test]
    fn a_sealed_successor_opens_only_under_the_token_it_replaced() {
        let presented = RefreshToken::generate().unwrap();
        let successor = presented.successor().unwrap();
        let sealed = seal_successor(&presented, &successor);
        let opened = open_successor(&presented, &sealed).expect("opens under its token");
        assert_eq!(opened.encode(), successor.encode());
        // Not under another token of the family, nor of another family.
        let sibling = presented.successor().unwrap();
        assert!(open_successor(&sibling, &sealed).is_none());
        let other = RefreshToken::generate().unwrap();
        assert!(open_successor(&other, &sealed).is_none());
        assert!(open_successor(&successor, &sealed).is_none());
        for at in [0, 12, sealed.len() - 1] {
            let mut tampered = sealed.clone();
            tampered[at] ^= 1;
            assert!(open_successor(&presented, &tampered).is_none(), "byte {at}");
        }
        assert!(open_successor(&presented, &[]).is_none());
        for token in [&presented, &successor] {
            let text = token.encode();
            assert!(
                !sealed
                    .windows(text.len())
                    .any(|window| window == text.as_bytes())
            );
        }
    }

    fn verified(sub: &str, exp: u64) -> Arc<Verified> {
        Arc::new(Verified {
            claims: Arc::new(AccessClaims {
                iss: "https://issuer.test".into(),
                aud: "api".into(),
                sub: sub.into(),
                iat: exp - 900,
                nbf: exp - 900,
                exp,
                jti: "jti".into(),
                sid: format!("family-of-{sub}"),
                amr: vec!["pwd".into()],
                auth_time: exp - 900,
            }),
            session: OnceLock::new(),
        })
    }

    /// The cache hashes only a token's tail, but answers only for the
    /// exact same string: tokens that differ before their last 32 bytes
    /// (same tail, same length: the same hash) are different entries.
    #[test]
    fn the_cache_answers_only_for_the_same_token() {
        let cache = VerifiedCache::default();
        let tail = "s".repeat(TailHasher::TAIL);
        let alice = format!("header.alice-claims.{tail}");
        let mallory = format!("header.mallo-claims.{tail}");
        assert_eq!(alice.len(), mallory.len());
        let hash = TailHash::default();
        assert_eq!(
            hash.hash_one(alice.as_str()),
            hash.hash_one(mallory.as_str())
        );
        cache.put(&alice, verified("alice", 2_000), 1_000);
        assert!(cache.get(&mallory, 1_000).is_none());
        assert!(cache.get(&alice[..alice.len() - 1], 1_000).is_none());
        cache.put(&mallory, verified("mallory", 2_000), 1_000);
        let hit = |token: &str| cache.get(token, 1_000).map(|v| v.claims.sub.clone());
        assert_eq!(hit(&alice).as_deref(), Some("alice"));
        assert_eq!(hit(&mallory).as_deref(), Some("mallory"));
    }

    /// An entry answers before the token's `exp` only, and goes with its
    /// family or user.
    #[test]
    fn the_cache_never_outlives_exp_or_a_revocation() {
        let cache = VerifiedCache::default();
        cache.put("a.b.c", verified("alice", 2_000), 1_000);
        cache.put("d.e.f", verified("bob", 2_000), 1_000);
        assert!(cache.get("a.b.c", 1_999).is_some());
        assert!(cache.get("a.b.c", 2_000).is_none());
        cache.forget(|claims| claims.sid == "family-of-alice");
        assert!(cache.get("a.b.c", 1_000).is_none());
        assert!(cache.get("d.e.f", 1_000).is_some());
        cache.forget(|claims| claims.sub == "bob");
        assert!(cache.get("d.e.f", 1_000).is_none());
    }
}
