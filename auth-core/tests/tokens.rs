//! The token flows on the framework-free API: what the conformance suite
//! cannot reach over HTTP (a disabled user, the reuse grace, revocation
//! checks turned off, the configuration's bounds).
#![cfg(feature = "jwt")]

use std::sync::Arc;
use std::time::Duration;

use auth_core::account::{AccountStore, MemoryAccountStore};
use auth_core::clock::ManualClock;
use auth_core::event::{AuthEvent, AuthEventHook, AuthEventKind};
use auth_core::flow::{AuthError, Client, TokenOutcome, TokenPair};
use auth_core::password::{Password, PasswordHasher, PasswordService};
use auth_core::token::jwt::{Algorithm, SigningKey};
use auth_core::token::refresh::MemoryRefreshStore;
use auth_core::token::{TokenConfig, TokenConfigError, TokenService};
use auth_core::user::{MemoryUserStore, UserStore};
use auth_core::{Auth, Authenticator};

const PASSWORD: &str = "correct horse battery staple";

struct Harness {
    auth: Authenticator,
    users: Arc<MemoryUserStore>,
    accounts: Arc<MemoryAccountStore>,
    clock: ManualClock,
    events: Arc<Events>,
}

/// The kinds of the audit events so far.
#[derive(Debug, Default)]
struct Events(std::sync::Mutex<Vec<AuthEventKind>>);

impl AuthEventHook for Events {
    fn on_event(&self, event: &AuthEvent) {
        self.0.lock().unwrap().push(event.kind);
    }
}

impl Events {
    fn count(&self, kind: AuthEventKind) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|k| **k == kind)
            .count()
    }
}

fn harness(config: TokenConfig) -> Harness {
    harness_on(config, Arc::new(MemoryRefreshStore::new()))
}

/// [`harness`] with its refresh families in `store`.
fn harness_on(
    config: TokenConfig,
    store: Arc<dyn auth_core::token::refresh::RefreshStore>,
) -> Harness {
    let users = Arc::new(MemoryUserStore::new());
    let clock = ManualClock::starting_now();
    let accounts = Arc::new(MemoryAccountStore::new());
    let events = Arc::new(Events::default());
    let auth = token_auth_with(Arc::clone(&users), config, store)
        .accounts(accounts.clone())
        .event_hook(events.clone())
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap()
        .authenticator()
        .clone();
    Harness {
        auth,
        users,
        accounts,
        clock,
        events,
    }
}

fn config() -> auth_core::token::TokenConfigBuilder {
    TokenConfig::builder("https://issuer.test", "api")
}

/// `Auth::builder(users)` with what a token test needs: an account store,
/// cheap hashing, and tokens (the default settings, families in memory).
fn token_auth<S: auth_core::user::UserStore>(users: S) -> auth_core::AuthBuilder {
    token_auth_with(
        users,
        config().build().unwrap(),
        Arc::new(MemoryRefreshStore::new()),
    )
}

/// [`token_auth`] with tokens of `config`, families in `store`.
fn token_auth_with<S: auth_core::user::UserStore>(
    users: S,
    config: TokenConfig,
    store: Arc<dyn auth_core::token::refresh::RefreshStore>,
) -> auth_core::AuthBuilder {
    Auth::builder(users)
        .accounts(Arc::new(MemoryAccountStore::new()))
        .passwords(
            PasswordService::builder()
                .hasher(PasswordHasher::insecure_for_tests().unwrap())
                .build()
                .unwrap(),
        )
        .tokens(TokenService::new(
            config,
            SigningKey::generate(Algorithm::Es256).unwrap(),
            store,
        ))
}

fn client() -> Client {
    Client::new("192.0.2.1".parse().unwrap())
}

/// Registers `name` and signs in for tokens; answers the user id and the
/// pair.
async fn signed_in(h: &Harness, name: &str) -> (String, TokenPair) {
    let user = h
        .auth
        .register(name, &Password::from(PASSWORD.to_owned()), &client())
        .await
        .unwrap();
    match h
        .auth
        .token_login(name, &Password::from(PASSWORD.to_owned()), &client())
        .await
        .unwrap()
    {
        TokenOutcome::Issued(pair) => (user.id().to_owned(), pair),
        other => panic!("tokens expected, got {other:?}"),
    }
}

/// `Debug` of the answers shows no token.
#[tokio::test]
async fn token_answers_print_no_token() {
    let h = harness(config().build().unwrap());
    let (_, pair) = signed_in(&h, "alice").await;
    let shown = format!("{pair:?} {:?}", TokenOutcome::Issued(pair.clone()));
    assert!(!shown.contains(&pair.access_token), "{shown}");
    assert!(!shown.contains(&pair.refresh_token), "{shown}");
    assert!(shown.contains("expires_in"), "{shown}");
    let pending = TokenOutcome::MfaRequired {
        mfa_token: "the-single-use-mfa-token".to_owned(),
        methods: Vec::new(),
    };
    assert!(!format!("{pending:?}").contains("the-single-use-mfa-token"));
}

/// A disabled user's refresh token and access token stop working at once;
/// the first refresh refused ends every family of the user.
#[tokio::test]
async fn a_disabled_user_gets_no_tokens() {
    let h = harness(config().build().unwrap());
    let (id, pair) = signed_in(&h, "alice").await;
    let second = match h
        .auth
        .token_login("alice", &Password::from(PASSWORD.to_owned()), &client())
        .await
        .unwrap()
    {
        TokenOutcome::Issued(pair) => pair,
        other => panic!("tokens expected, got {other:?}"),
    };
    assert!(h.auth.verify_bearer(&pair.access_token).await.is_ok());
    h.users.set_disabled(&id, true).unwrap();
    assert!(matches!(
        h.auth.verify_bearer(&pair.access_token).await,
        Err(AuthError::NotAuthenticated)
    ));
    assert!(matches!(
        h.auth.refresh_tokens(&pair.refresh_token, &client()).await,
        Err(AuthError::InvalidGrant)
    ));
    // Re-enabled, the families stay revoked: the one refused, and the
    // other the user had.
    h.users.set_disabled(&id, false).unwrap();
    assert!(matches!(
        h.auth.refresh_tokens(&pair.refresh_token, &client()).await,
        Err(AuthError::InvalidGrant)
    ));
    assert!(matches!(
        h.auth
            .refresh_tokens(&second.refresh_token, &client())
            .await,
        Err(AuthError::InvalidGrant)
    ));
}

/// `sign_out_user` (what an administrator calls, and the password reset)
/// revokes every family of the user, and only theirs.
#[tokio::test]
async fn sign_out_user_revokes_the_users_families() {
    let h = harness(config().build().unwrap());
    let (alice, a) = signed_in(&h, "alice").await;
    let (_, b) = signed_in(&h, "bob").await;
    h.auth.sign_out_user(&alice).await.unwrap();
    assert!(h.auth.verify_bearer(&a.access_token).await.is_err());
    assert!(
        h.auth
            .refresh_tokens(&a.refresh_token, &client())
            .await
            .is_err()
    );
    assert!(h.auth.verify_bearer(&b.access_token).await.is_ok());
    assert!(
        h.auth
            .refresh_tokens(&b.refresh_token, &client())
            .await
            .is_ok()
    );
}

/// `delete_expired` sweeps dead refresh families with the rest; a live
/// one stays and keeps working.
#[tokio::test]
async fn dead_refresh_families_are_swept_with_the_rest() {
    let h = harness(config().build().unwrap());
    let (_, idle) = signed_in(&h, "alice").await;
    assert_eq!(
        h.auth.delete_expired().await.unwrap(),
        0,
        "nothing dead yet"
    );
    // Past the idle expiry (7 days) of the first family; the second is
    // made then and lives on.
    h.clock.advance(Duration::from_secs(8 * 24 * 60 * 60));
    let (_, live) = signed_in(&h, "bob").await;
    let store = h.auth.token_service().unwrap().store().clone();
    let now = auth_core::clock::Clock::now(&h.clock);
    assert!(h.auth.delete_expired().await.unwrap() >= 1);
    assert_eq!(store.purge(now).await.unwrap(), 0, "swept already");
    assert!(
        h.auth
            .refresh_tokens(&idle.refresh_token, &client())
            .await
            .is_err()
    );
    assert!(
        h.auth
            .refresh_tokens(&live.refresh_token, &client())
            .await
            .is_ok()
    );
}

/// With a reuse grace, the token just replaced gets the same successor
/// again (never a second live one) within the grace, and revokes the
/// family after it.
#[tokio::test]
async fn the_reuse_grace_answers_the_same_successor() {
    let h = harness(
        config()
            .reuse_grace(Duration::from_secs(10))
            .build()
            .unwrap(),
    );
    let (_, first) = signed_in(&h, "alice").await;
    let second = h
        .auth
        .refresh_tokens(&first.refresh_token, &client())
        .await
        .unwrap();
    let again = h
        .auth
        .refresh_tokens(&first.refresh_token, &client())
        .await
        .unwrap();
    assert_eq!(
        again.refresh_token, second.refresh_token,
        "the same successor"
    );
    assert!(h.auth.verify_bearer(&again.access_token).await.is_ok());
    h.clock.advance(Duration::from_secs(11));
    assert!(matches!(
        h.auth.refresh_tokens(&first.refresh_token, &client()).await,
        Err(AuthError::InvalidGrant)
    ));
    assert!(
        h.auth
            .refresh_tokens(&second.refresh_token, &client())
            .await
            .is_err(),
        "the reuse after the grace revoked the family"
    );
}

/// A family stored before stamps carried the epoch keeps refreshing (its
/// password check holds) until it ends, instead of every client being
/// signed out at the upgrade.
#[tokio::test]
async fn a_family_from_before_epoch_stamps_keeps_working() {
    let store = Arc::new(Stalling::default());
    store
        .legacy
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let h = harness_on(config().build().unwrap(), store.clone());
    let (_, pair) = signed_in(&h, "alice").await;
    let pair = h
        .auth
        .refresh_tokens(&pair.refresh_token, &client())
        .await
        .unwrap();
    h.auth
        .refresh_tokens(&pair.refresh_token, &client())
        .await
        .unwrap();
}

/// The store keeps a (sealed) successor only when a reuse grace is
/// configured: without one, nothing stored opens to a live token.
#[tokio::test]
async fn the_successor_is_stored_only_for_a_grace() {
    for grace in [None, Some(Duration::from_secs(10))] {
        let store = Arc::new(Stalling::default());
        let mut builder = config();
        if let Some(grace) = grace {
            builder = builder.reuse_grace(grace);
        }
        let h = harness_on(builder.build().unwrap(), store.clone());
        let (_, first) = signed_in(&h, "alice").await;
        let second = h
            .auth
            .refresh_tokens(&first.refresh_token, &client())
            .await
            .unwrap();
        let sealed = store.sealed.lock().unwrap().clone();
        assert_eq!(sealed.len(), 1);
        assert_eq!(sealed[0].is_empty(), grace.is_none(), "{grace:?}");
        let text = second.refresh_token.as_bytes();
        assert!(!sealed[0].windows(text.len()).any(|w| w == text));
    }
}

/// Without a grace (the default), the replaced token is reuse at once:
/// the family is revoked and the reuse audited.
#[tokio::test]
async fn without_grace_a_replay_revokes_at_once() {
    let h = harness(config().build().unwrap());
    let (_, first) = signed_in(&h, "alice").await;
    let second = h
        .auth
        .refresh_tokens(&first.refresh_token, &client())
        .await
        .unwrap();
    assert_eq!(h.events.count(AuthEventKind::RefreshTokenReused), 0);
    assert!(
        h.auth
            .refresh_tokens(&first.refresh_token, &client())
            .await
            .is_err()
    );
    assert_eq!(h.events.count(AuthEventKind::RefreshTokenReused), 1);
    assert!(
        h.auth
            .refresh_tokens(&second.refresh_token, &client())
            .await
            .is_err()
    );
}

/// With revocation checks off, a revoked family's access token lives on
/// until it expires (the documented trade-off), and not a moment longer.
#[tokio::test]
async fn without_revocation_checks_a_token_lives_until_it_expires() {
    let h = harness(config().insecure_skip_revocation_check().build().unwrap());
    let (_, pair) = signed_in(&h, "alice").await;
    h.auth
        .revoke_refresh_token(&pair.refresh_token, &client())
        .await
        .unwrap();
    assert!(h.auth.verify_bearer(&pair.access_token).await.is_ok());
    h.clock.advance(Duration::from_secs(15 * 60 + 31));
    assert!(h.auth.verify_bearer(&pair.access_token).await.is_err());
}

/// A cached verification never outlives the token: the second check
/// (served from the cache) fails once the token has expired.
#[tokio::test]
async fn the_verified_token_cache_never_extends_a_token() {
    let h = harness(config().build().unwrap());
    let (_, pair) = signed_in(&h, "alice").await;
    assert!(h.auth.verify_bearer(&pair.access_token).await.is_ok());
    assert!(h.auth.verify_bearer(&pair.access_token).await.is_ok());
    // Another string is another entry, never the cached one's claims.
    let mut tampered = pair.access_token.clone();
    tampered.push('A');
    assert!(h.auth.verify_bearer(&tampered).await.is_err());
    // Past `exp` the cache answers nothing, and the full check applies
    // the leeway (30 s) as for a token never seen.
    h.clock.advance(Duration::from_secs(15 * 60 + 29));
    assert!(h.auth.verify_bearer(&pair.access_token).await.is_ok());
    h.clock.advance(Duration::from_secs(2));
    assert!(h.auth.verify_bearer(&pair.access_token).await.is_err());
}

/// The configuration's bounds: 15 to 60 minutes, at most 60 s of leeway,
/// a grace of 1 to 60 s, idle no longer than absolute.
#[test]
fn the_configuration_is_bounded() {
    let min = Duration::from_secs(60);
    assert_eq!(
        config().access_lifetime(14 * min).build().unwrap_err(),
        TokenConfigError::AccessLifetime
    );
    assert_eq!(
        config().access_lifetime(61 * min).build().unwrap_err(),
        TokenConfigError::AccessLifetime
    );
    assert!(config().access_lifetime(60 * min).build().is_ok());
    assert_eq!(
        config()
            .leeway(Duration::from_secs(61))
            .build()
            .unwrap_err(),
        TokenConfigError::Leeway
    );
    assert_eq!(
        config()
            .reuse_grace(Duration::from_secs(61))
            .build()
            .unwrap_err(),
        TokenConfigError::Grace
    );
    assert_eq!(
        config()
            .refresh_idle_timeout(Duration::from_secs(31 * 24 * 3600))
            .build()
            .unwrap_err(),
        TokenConfigError::FamilyLifetime
    );
    assert_eq!(
        TokenConfig::builder("", "api").build().unwrap_err(),
        TokenConfigError::Names
    );
    let c = config().build().unwrap();
    assert_eq!(c.access_lifetime(), 15 * min);
    assert!(c.checks_revocation());
    assert_eq!(c.reuse_grace(), None);
}

/// Without a token service every token flow answers 501, and a bearer
/// token is simply no login.
#[tokio::test]
async fn without_a_token_service_tokens_are_unavailable() {
    let users = MemoryUserStore::new();
    let auth = Auth::builder(users).build().unwrap();
    let a = auth.authenticator();
    let r = a
        .token_login("alice", &Password::from(PASSWORD.to_owned()), &client())
        .await;
    assert!(matches!(r, Err(AuthError::TokensUnavailable)));
    assert_eq!(AuthError::TokensUnavailable.status(), 501);
    assert!(matches!(
        a.verify_bearer("x.y.z").await,
        Err(AuthError::NotAuthenticated)
    ));
}

/// Revocation is seen at the next request on a SQL store too: in memory,
/// and on a file, where the per-request family check is answered from the
/// file's read cache, also when the revocation comes through another
/// connection (another process).
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn revocation_is_seen_on_sqlite() {
    revocation_is_seen_on("sqlite::memory:", false).await;
    let dir = std::env::temp_dir().join(format!(
        "auth-core-tokens-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("auth.db").display());
    revocation_is_seen_on(&url, false).await;
    revocation_is_seen_on(&url, true).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(feature = "sqlite")]
async fn revocation_is_seen_on(url: &str, through_another_connection: bool) {
    use auth_core::token::refresh::RefreshStore;
    let users = Arc::new(MemoryUserStore::new());
    let store = auth_core::session::SqliteStore::connect(url).await.unwrap();
    let refresh = auth_core::token::refresh::SqliteRefreshStore::from_pool(store.pool().clone())
        .await
        .unwrap();
    let auth = token_auth_with(
        Arc::clone(&users),
        config().build().unwrap(),
        Arc::new(refresh),
    )
    .build()
    .unwrap();
    let h = Harness {
        auth: auth.authenticator().clone(),
        users,
        accounts: Arc::default(),
        clock: ManualClock::starting_now(),
        events: Arc::default(),
    };
    let (id, pair) = signed_in(&h, "alice").await;
    // Twice: the second answered from the cache where there is one.
    assert!(h.auth.verify_bearer(&pair.access_token).await.is_ok());
    assert!(h.auth.verify_bearer(&pair.access_token).await.is_ok());
    if through_another_connection {
        let other = auth_core::session::SqliteStore::connect(url).await.unwrap();
        let other = auth_core::token::refresh::SqliteRefreshStore::from_pool(other.pool().clone())
            .await
            .unwrap();
        other.revoke_user(&id).await.unwrap();
    } else {
        h.auth
            .revoke_refresh_token(&pair.refresh_token, &client())
            .await
            .unwrap();
    }
    assert!(
        h.auth.verify_bearer(&pair.access_token).await.is_err(),
        "{url} {through_another_connection}"
    );
}

/// Changes `id`'s password behind the toolkit's back: in the user store
/// directly (the app's own admin path).
async fn change_password_elsewhere(h: &Harness, id: &str) {
    use auth_core::UserStore;
    let old = h.users.find_by_id(&id.to_owned()).await.unwrap().unwrap();
    let new_hash = h
        .auth
        .passwords()
        .hash(&Password::from("another long passphrase 7".to_owned()))
        .await
        .unwrap();
    assert!(
        h.users
            .set_password_hash(
                &id.to_owned(),
                old.password_hash.as_str(),
                new_hash.as_str()
            )
            .await
            .unwrap()
    );
}

/// A password changed behind the toolkit's back (the app's own admin path)
/// ends the token sign-in at its next refresh: the family recorded the
/// stamp of the old hash.
#[tokio::test]
async fn a_password_changed_elsewhere_ends_the_family_at_refresh() {
    let h = harness(config().build().unwrap());
    let (id, pair) = signed_in(&h, "alice").await;
    change_password_elsewhere(&h, &id).await;
    assert!(matches!(
        h.auth.refresh_tokens(&pair.refresh_token, &client()).await,
        Err(AuthError::InvalidGrant)
    ));
}

/// An access token whose sign-in no longer holds cannot change the account
/// for the rest of its life: after a password change through the app's own
/// table, a flow run on the token (the stand-in `bearer_session` makes) is
/// refused at once, as the family's next refresh will be. And a token's
/// family must be its user's: claims naming another user's family are
/// refused too.
#[tokio::test]
async fn a_stale_or_mismatched_token_changes_no_account() {
    let h = harness(config().build().unwrap());
    let (id, pair) = signed_in(&h, "alice").await;
    let (bob, _) = signed_in(&h, "bob").await;
    let (claims, _, _) = h.auth.verify_bearer(&pair.access_token).await.unwrap();
    let session = h.auth.bearer_session(&claims, &client()).await.unwrap();
    h.auth.end_bearer_session(session).await.unwrap();
    let mut forged = (*claims).clone();
    forged.sub = bob;
    assert!(matches!(
        h.auth.bearer_session(&forged, &client()).await,
        Err(AuthError::NotAuthenticated)
    ));

    change_password_elsewhere(&h, &id).await;
    // The token itself still verifies (it lives out its minutes for reads).
    assert!(h.auth.verify_bearer(&pair.access_token).await.is_ok());
    assert!(matches!(
        h.auth.bearer_session(&claims, &client()).await,
        Err(AuthError::NotAuthenticated)
    ));
}

/// A family that its revocation missed (a store error halfway through a
/// sign out everywhere, or a family created while one ran) still ends at
/// its next refresh: the account's epoch, which every such event raises,
/// is part of the family's stamp.
#[tokio::test]
async fn a_raised_epoch_ends_the_family_at_refresh() {
    use auth_core::account::AccountStore;
    let h = harness(config().build().unwrap());
    let (id, pair) = signed_in(&h, "alice").await;
    let (bob, other) = signed_in(&h, "bob").await;
    let pair = h
        .auth
        .refresh_tokens(&pair.refresh_token, &client())
        .await
        .unwrap();
    // As a sign out everywhere does, without the families' revocation.
    h.accounts.raise_epoch(&id).await.unwrap();
    assert!(matches!(
        h.auth.refresh_tokens(&pair.refresh_token, &client()).await,
        Err(AuthError::InvalidGrant)
    ));
    assert_ne!(id, bob);
    h.auth
        .refresh_tokens(&other.refresh_token, &client())
        .await
        .unwrap();
}

/// A refresh store that stops answering `is_live` (a stalled network)
/// once told to, records the sealed successors it is given, can store
/// families as an older version did, and can lose `rotate`'s answer.
#[derive(Debug, Default)]
struct Stalling {
    inner: MemoryRefreshStore,
    stalled: std::sync::atomic::AtomicBool,
    /// `rotate` rotates, then answers an error (its answer lost to a
    /// timeout, a commit whose reply never came).
    lost: std::sync::atomic::AtomicBool,
    /// `rotate` answers a refused connection without rotating.
    refused: std::sync::atomic::AtomicBool,
    /// Every sealed successor it was given to keep.
    sealed: std::sync::Mutex<Vec<Vec<u8>>>,
    /// Stores families as a version before epoch stamps did (the stamp
    /// without its `.epoch`).
    legacy: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl auth_core::token::refresh::RefreshStore for Stalling {
    async fn create(
        &self,
        family: &auth_core::token::refresh::Family,
        first: auth_core::token::refresh::RefreshKey,
    ) -> Result<(), auth_core::token::refresh::RefreshStoreError> {
        if self.legacy.load(std::sync::atomic::Ordering::Relaxed) {
            let mut old = family.clone();
            old.stamp = old.stamp.split('.').next().unwrap_or_default().to_owned();
            return self.inner.create(&old, first).await;
        }
        self.inner.create(family, first).await
    }
    async fn rotate(
        &self,
        presented: auth_core::token::refresh::RefreshKey,
        next: auth_core::token::refresh::RefreshKey,
        sealed_successor: &[u8],
        now: auth_core::clock::Timestamp,
        grace: Option<Duration>,
    ) -> Result<auth_core::token::refresh::Rotation, auth_core::token::refresh::RefreshStoreError>
    {
        if self.refused.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(auth_core::token::refresh::RefreshStoreError::backend(
                std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
            ));
        }
        self.sealed.lock().unwrap().push(sealed_successor.to_vec());
        let rotation = self
            .inner
            .rotate(presented, next, sealed_successor, now, grace)
            .await?;
        if self.lost.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(auth_core::token::refresh::RefreshStoreError::backend(
                std::io::Error::from(std::io::ErrorKind::TimedOut),
            ));
        }
        Ok(rotation)
    }
    async fn revoke_by_token(
        &self,
        token: auth_core::token::refresh::RefreshKey,
    ) -> Result<Option<(String, String)>, auth_core::token::refresh::RefreshStoreError> {
        self.inner.revoke_by_token(token).await
    }
    async fn revoke_family(
        &self,
        family_id: &str,
    ) -> Result<bool, auth_core::token::refresh::RefreshStoreError> {
        self.inner.revoke_family(family_id).await
    }
    async fn revoke_user(
        &self,
        user_id: &str,
    ) -> Result<u64, auth_core::token::refresh::RefreshStoreError> {
        self.inner.revoke_user(user_id).await
    }
    async fn is_live(
        &self,
        family_id: &str,
        now: auth_core::clock::Timestamp,
    ) -> Result<bool, auth_core::token::refresh::RefreshStoreError> {
        if self.stalled.load(std::sync::atomic::Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
        self.inner.is_live(family_id, now).await
    }
    async fn purge(
        &self,
        now: auth_core::clock::Timestamp,
    ) -> Result<u64, auth_core::token::refresh::RefreshStoreError> {
        self.inner.purge(now).await
    }
}

/// A bearer request whose refresh store stops answering ends after 5 s
/// with 503 and `Retry-After`, never a hang and never admitted. (Tokio's
/// clock is paused after the sign-in, whose hashing runs on threads of its
/// own: no real wait.)
#[tokio::test]
async fn a_bearer_check_on_a_store_that_stops_answering_answers_503_in_bounded_time() {
    let store = Arc::new(Stalling::default());
    let h = harness_on(config().build().unwrap(), store.clone());
    let (_, pair) = signed_in(&h, "alice").await;
    assert!(h.auth.verify_bearer(&pair.access_token).await.is_ok());
    store
        .stalled
        .store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::time::pause();
    let started = tokio::time::Instant::now();
    // An outer limit on the same paused clock turns a hang into a failure.
    let error = tokio::time::timeout(
        Duration::from_secs(3600),
        h.auth.verify_bearer(&pair.access_token),
    )
    .await
    .expect("the bearer check hung")
    .unwrap_err();
    // The deadline, to the timer's millisecond (the clock was paused
    // mid-millisecond).
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(6),
        "{waited:?}"
    );
    assert!(matches!(error, AuthError::Unavailable(_)), "{error:?}");
    assert_eq!((error.status(), error.retry_after_secs()), (503, Some(1)));
}

/// A user store in memory with two switches: once `snapshot` is set, its
/// login lookup answers that snapshot (a token sign-in that read the user,
/// and checked the old password, just before a password change
/// committed); while `failing` is set, its reads by id fail.
#[derive(Debug)]
struct TamperedUsers {
    inner: Arc<MemoryUserStore>,
    snapshot: std::sync::Mutex<Option<auth_core::user::User>>,
    failing: std::sync::atomic::AtomicBool,
}

impl TamperedUsers {
    fn new(inner: Arc<MemoryUserStore>) -> Self {
        Self {
            inner,
            snapshot: std::sync::Mutex::new(None),
            failing: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl UserStore for TamperedUsers {
    type User = auth_core::user::User;

    async fn find_by_login(
        &self,
        login: &auth_core::user::LoginName,
    ) -> Result<Option<Self::User>, auth_core::user::UserStoreError> {
        let snapshot = self.snapshot.lock().unwrap().clone();
        match snapshot {
            Some(user) => Ok(Some(user)),
            None => self.inner.find_by_login(login).await,
        }
    }
    async fn find_by_id(
        &self,
        id: &String,
    ) -> Result<Option<Self::User>, auth_core::user::UserStoreError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(auth_core::user::UserStoreError::Unsupported);
        }
        self.inner.find_by_id(id).await
    }
    async fn set_password_hash(
        &self,
        id: &String,
        current: &str,
        new: &str,
    ) -> Result<bool, auth_core::user::UserStoreError> {
        self.inner.set_password_hash(id, current, new).await
    }
    async fn create(
        &self,
        user: auth_core::user::NewUser,
    ) -> Result<Self::User, auth_core::user::UserStoreError> {
        self.inner.create(user).await
    }
}

/// A token sign-in that checked the old password while a password change
/// committed (and ended the user's families before this sign-in's
/// existed) issues no tokens: its family is revoked when it is made, and
/// the client is told to retry (503), where the old password fails.
#[tokio::test]
async fn a_token_sign_in_racing_a_password_change_issues_nothing() {
    let memory = Arc::new(MemoryUserStore::new());
    let users = Arc::new(TamperedUsers::new(memory.clone()));
    let store = Arc::new(MemoryRefreshStore::new());
    let auth = token_auth_with(users.clone(), config().build().unwrap(), store)
        .clock(Arc::new(ManualClock::starting_now()))
        .build()
        .unwrap();
    let flows = auth.authenticator();
    let alice = flows
        .register("alice", &Password::from(PASSWORD.to_owned()), &client())
        .await
        .unwrap();
    let before = memory.find_by_id(&alice.id().to_owned()).await.unwrap();
    *users.snapshot.lock().unwrap() = before;
    let new_hash = PasswordHasher::insecure_for_tests()
        .unwrap()
        .hash(&Password::from("another long passphrase".to_owned()))
        .unwrap();
    memory.force_password_hash(alice.id(), new_hash).unwrap();
    let answer = flows
        .token_login("alice", &Password::from(PASSWORD.to_owned()), &client())
        .await;
    assert!(
        matches!(answer, Err(AuthError::Busy)),
        "no tokens from the old password: {answer:?}"
    );
}

/// The account state in memory, where a sign out everywhere (the epoch
/// raised, then the user's sessions ended; no family exists yet to
/// revoke) lands at the `at`-th read of the epoch: between a token
/// sign-in's session and its family.
#[derive(Debug)]
struct SignOutRace {
    inner: MemoryAccountStore,
    reads: std::sync::atomic::AtomicUsize,
    at: usize,
    /// At the `at`-th read, fail instead (the store went away).
    fail: bool,
    sessions: std::sync::OnceLock<auth_core::session::SessionManager>,
}

#[async_trait::async_trait]
impl AccountStore for SignOutRace {
    async fn totp(
        &self,
        user: &str,
    ) -> Result<Option<auth_core::account::StoredTotp>, auth_core::user::UserStoreError> {
        self.inner.totp(user).await
    }
    async fn set_pending_totp(
        &self,
        user: &str,
        sealed: &str,
    ) -> Result<bool, auth_core::user::UserStoreError> {
        self.inner.set_pending_totp(user, sealed).await
    }
    async fn confirm_totp(
        &self,
        user: &str,
        sealed: &str,
        step: i64,
        hashes: &[String],
    ) -> Result<bool, auth_core::user::UserStoreError> {
        self.inner.confirm_totp(user, sealed, step, hashes).await
    }
    async fn record_totp_step(
        &self,
        user: &str,
        step: i64,
    ) -> Result<bool, auth_core::user::UserStoreError> {
        self.inner.record_totp_step(user, step).await
    }
    async fn reseal_totp(
        &self,
        user: &str,
        old_sealed: &str,
        new_sealed: &str,
    ) -> Result<bool, auth_core::user::UserStoreError> {
        self.inner.reseal_totp(user, old_sealed, new_sealed).await
    }
    async fn remove_totp(&self, user: &str) -> Result<(), auth_core::user::UserStoreError> {
        self.inner.remove_totp(user).await
    }
    async fn replace_recovery_codes(
        &self,
        user: &str,
        hashes: &[String],
    ) -> Result<(), auth_core::user::UserStoreError> {
        self.inner.replace_recovery_codes(user, hashes).await
    }
    async fn consume_recovery_code(
        &self,
        user: &str,
        hash: &str,
    ) -> Result<bool, auth_core::user::UserStoreError> {
        self.inner.consume_recovery_code(user, hash).await
    }
    async fn recovery_codes_left(
        &self,
        user: &str,
    ) -> Result<u64, auth_core::user::UserStoreError> {
        self.inner.recovery_codes_left(user).await
    }
    async fn epoch(&self, user: &str) -> Result<u64, auth_core::user::UserStoreError> {
        let read = self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if read == self.at && self.fail {
            return Err(auth_core::user::UserStoreError::Unsupported);
        }
        if read == self.at {
            self.inner.raise_epoch(user).await?;
            let sessions = self.sessions.get().expect("the session manager");
            sessions.destroy_all_for_user(user, None).await.unwrap();
        }
        self.inner.epoch(user).await
    }
    async fn raise_epoch(&self, user: &str) -> Result<u64, auth_core::user::UserStoreError> {
        self.inner.raise_epoch(user).await
    }
}

/// The toolkit with tokens over memory stores and `accounts`.
fn racing(accounts: Arc<SignOutRace>) -> Auth {
    token_auth(MemoryUserStore::new())
        .accounts(accounts)
        .clock(Arc::new(ManualClock::starting_now()))
        .build()
        .unwrap()
}

/// A sign out everywhere that lands between a token sign-in's session and
/// its family (it ends the session, and finds no family to revoke) leaves
/// no family behind: the sign-in answers 503 and issues nothing.
#[tokio::test]
async fn a_token_sign_in_racing_a_sign_out_everywhere_issues_nothing() {
    let accounts = Arc::new(SignOutRace {
        inner: MemoryAccountStore::new(),
        reads: std::sync::atomic::AtomicUsize::new(0),
        at: usize::MAX,
        fail: false,
        sessions: std::sync::OnceLock::new(),
    });
    // Count the epoch reads of a token sign-in up to its family.
    let auth = racing(accounts.clone());
    let flows = auth.authenticator();
    let password = || Password::from(PASSWORD.to_owned());
    flows
        .register("alice", &password(), &client())
        .await
        .unwrap();
    let start = accounts.reads.load(std::sync::atomic::Ordering::SeqCst);
    flows
        .token_login("alice", &password(), &client())
        .await
        .unwrap();
    let per_sign_in = accounts.reads.load(std::sync::atomic::Ordering::SeqCst) - start;
    // The sign-in makes its session (two reads: before and after), then
    // its family (one read before the family, one after).
    assert_eq!(per_sign_in, 4);

    let accounts = Arc::new(SignOutRace {
        inner: MemoryAccountStore::new(),
        reads: std::sync::atomic::AtomicUsize::new(0),
        at: 3,
        fail: false,
        sessions: std::sync::OnceLock::new(),
    });
    let auth = racing(accounts.clone());
    let flows = auth.authenticator();
    accounts
        .sessions
        .set(flows.sessions().clone())
        .expect("set once");
    let alice = flows
        .register("alice", &password(), &client())
        .await
        .unwrap();
    accounts.reads.store(0, std::sync::atomic::Ordering::SeqCst);
    let answer = flows.token_login("alice", &password(), &client()).await;
    assert!(
        matches!(answer, Err(AuthError::Busy)),
        "no family outlives the sign out: {answer:?}"
    );
    assert!(accounts.inner.epoch(alice.id()).await.unwrap() > 0);
}

/// A token sign-in that fails after its session was made (the account
/// store went away while the family was being made) leaves no session
/// behind: the session only carried the sign-in.
#[tokio::test]
async fn a_failed_token_sign_in_leaves_no_session() {
    let accounts = Arc::new(SignOutRace {
        inner: MemoryAccountStore::new(),
        reads: std::sync::atomic::AtomicUsize::new(0),
        at: 3,
        fail: true,
        sessions: std::sync::OnceLock::new(),
    });
    let auth = racing(accounts.clone());
    let flows = auth.authenticator();
    let password = || Password::from(PASSWORD.to_owned());
    let alice = flows
        .register("alice", &password(), &client())
        .await
        .unwrap();
    accounts.reads.store(0, std::sync::atomic::Ordering::SeqCst);
    assert!(
        flows
            .token_login("alice", &password(), &client())
            .await
            .is_err()
    );
    let left = flows
        .sessions()
        .list_for_user(alice.id(), None)
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}

/// A bearer token's stand-in session (what `verify_bearer` answers, and
/// what a bearer request's guards hold) gives its user to
/// `current_user`: it records no stamp, its token's family is its check.
/// A flow that changes the account refuses it before anything changes
/// (the web pipeline stores a stand-in for such a flow).
#[tokio::test]
async fn a_bearer_requests_session_gives_its_user() {
    let h = harness(config().build().unwrap());
    let (id, pair) = signed_in(&h, "alice").await;
    let (_, mut session, _) = h.auth.verify_bearer(&pair.access_token).await.unwrap();
    assert_eq!(h.auth.current_user(&session).await.unwrap().id(), id);
    let epoch = h.accounts.epoch(&id).await.unwrap();
    assert!(matches!(
        h.auth.sign_out_everywhere(&mut session, &client()).await,
        Err(AuthError::SessionRequired)
    ));
    assert!(matches!(
        h.auth
            .change_password(
                &mut session,
                &Password::from(PASSWORD.to_owned()),
                &Password::from("another long passphrase 7".to_owned()),
                &client(),
            )
            .await,
        Err(AuthError::SessionRequired)
    ));
    assert_eq!(
        h.accounts.epoch(&id).await.unwrap(),
        epoch,
        "nothing changed"
    );
    assert!(h.auth.verify_bearer(&pair.access_token).await.is_ok());
}

/// A refresh that fails after its rotation was stored (the user store
/// failed) loses the successor: the family ends plainly, and the client's
/// retry with the spent token is an unknown token, not a theft (no
/// `RefreshTokenReused` event).
#[tokio::test]
async fn a_refresh_that_fails_after_its_rotation_is_no_theft() {
    let users = Arc::new(TamperedUsers::new(Arc::new(MemoryUserStore::new())));
    let events = Arc::new(Events::default());
    let auth = token_auth(users.clone())
        .event_hook(events.clone())
        .build()
        .unwrap();
    let flows = auth.authenticator();
    let password = || Password::from(PASSWORD.to_owned());
    flows
        .register("alice", &password(), &client())
        .await
        .unwrap();
    let TokenOutcome::Issued(pair) = flows
        .token_login("alice", &password(), &client())
        .await
        .unwrap()
    else {
        panic!("tokens expected");
    };
    users
        .failing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(
        flows
            .refresh_tokens(&pair.refresh_token, &client())
            .await
            .is_err()
    );
    users
        .failing
        .store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(matches!(
        flows.refresh_tokens(&pair.refresh_token, &client()).await,
        Err(AuthError::InvalidGrant)
    ));
    assert_eq!(events.count(AuthEventKind::RefreshTokenReused), 0);
    assert!(flows.verify_bearer(&pair.access_token).await.is_err());
}

/// A rotation the store made but whose answer was lost (so the client
/// never got the successor) is no theft either: the retry with the same
/// token is an unknown token, with no reuse alarm, and the sign-in ends.
/// With a reuse grace the family stays and the retry is answered.
#[tokio::test]
async fn a_rotation_whose_answer_was_lost_is_no_theft() {
    for grace in [false, true] {
        let store = Arc::new(Stalling::default());
        let mut tokens = config();
        if grace {
            tokens = tokens.reuse_grace(Duration::from_secs(10));
        }
        let h = harness_on(tokens.build().unwrap(), store.clone());
        let (_, pair) = signed_in(&h, "alice").await;
        store.lost.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(matches!(
            h.auth.refresh_tokens(&pair.refresh_token, &client()).await,
            Err(AuthError::Unavailable(_))
        ));
        store.lost.store(false, std::sync::atomic::Ordering::SeqCst);
        let retry = h.auth.refresh_tokens(&pair.refresh_token, &client()).await;
        assert_eq!(h.events.count(AuthEventKind::RefreshTokenReused), 0);
        if grace {
            assert!(retry.is_ok(), "the grace answers the retry");
        } else {
            assert!(matches!(retry, Err(AuthError::InvalidGrant)));
            assert!(h.auth.verify_bearer(&pair.access_token).await.is_err());
        }
    }
}

/// A refresh whose call never reached the store (the connection refused)
/// changed nothing: the sign-in stays, and the client's retry rotates.
#[tokio::test]
async fn a_rotation_that_never_reached_the_store_ends_nothing() {
    let store = Arc::new(Stalling::default());
    let h = harness_on(config().build().unwrap(), store.clone());
    let (_, pair) = signed_in(&h, "alice").await;
    store
        .refused
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(matches!(
        h.auth.refresh_tokens(&pair.refresh_token, &client()).await,
        Err(AuthError::Unavailable(_))
    ));
    store
        .refused
        .store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(h.auth.verify_bearer(&pair.access_token).await.is_ok());
    assert!(
        h.auth
            .refresh_tokens(&pair.refresh_token, &client())
            .await
            .is_ok()
    );
    assert_eq!(h.events.count(AuthEventKind::RefreshTokenReused), 0);
}

/// An access token given to revocation (RFC 7009 allows either token)
/// ends its sign-in, not only a refresh token; anything else changes
/// nothing.
#[tokio::test]
async fn revocation_takes_the_access_token_too() {
    let h = harness(config().build().unwrap());
    let (_, pair) = signed_in(&h, "alice").await;
    let TokenOutcome::Issued(other) = h
        .auth
        .token_login("alice", &Password::from(PASSWORD.to_owned()), &client())
        .await
        .unwrap()
    else {
        panic!("tokens expected");
    };
    for garbage in [
        "",
        "x.y.z",
        &other.access_token[..other.access_token.len() - 2],
    ] {
        h.auth
            .revoke_refresh_token(garbage, &client())
            .await
            .unwrap();
    }
    assert!(h.auth.verify_bearer(&other.access_token).await.is_ok());
    h.auth
        .revoke_refresh_token(&pair.access_token, &client())
        .await
        .unwrap();
    assert!(h.auth.verify_bearer(&pair.access_token).await.is_err());
    assert!(
        h.auth
            .refresh_tokens(&pair.refresh_token, &client())
            .await
            .is_err()
    );
    assert_eq!(h.events.count(AuthEventKind::TokensRevoked), 1);
    assert!(h.auth.verify_bearer(&other.access_token).await.is_ok());
}

/// The passkey flows change an account too: they refuse a bearer token's
/// unstored stand-in before anything changes (no proof is spent, no
/// passkey removed), as every other account-changing flow does.
#[cfg(feature = "passkeys")]
#[tokio::test]
async fn passkey_flows_refuse_a_bearer_stand_in() {
    use auth_core::flow::FactorProof;
    use auth_core::passkey::{MemoryPasskeyStore, Passkeys};

    let auth = token_auth(MemoryUserStore::new())
        .passkeys(
            Passkeys::builder("app.test", "https://app.test")
                .unwrap()
                .build(Arc::new(MemoryPasskeyStore::new()))
                .unwrap(),
        )
        .build()
        .unwrap()
        .authenticator()
        .clone();
    auth.register("alice", &Password::from(PASSWORD.to_owned()), &client())
        .await
        .unwrap();
    let TokenOutcome::Issued(pair) = auth
        .token_login("alice", &Password::from(PASSWORD.to_owned()), &client())
        .await
        .unwrap()
    else {
        panic!("tokens expected");
    };
    let (_, mut session, _) = auth.verify_bearer(&pair.access_token).await.unwrap();
    let proof = FactorProof::password(Password::from(PASSWORD.to_owned()));
    assert!(matches!(
        auth.begin_passkey_registration(&mut session, &proof, &client())
            .await,
        Err(AuthError::SessionRequired)
    ));
    assert!(matches!(
        auth.finish_passkey_registration(&mut session, "Phone", &serde_json::json!({}), &client())
            .await,
        Err(AuthError::SessionRequired)
    ));
    assert!(matches!(
        auth.remove_passkey(&mut session, "AAAA", &proof, &client())
            .await,
        Err(AuthError::SessionRequired)
    ));
}

/// A bearer request has no session to bind a form token to: it is issued
/// none, and checking one answers `SessionRequired`, so one client's token
/// is never good for another's request (their stand-ins share no key).
#[tokio::test]
async fn form_tokens_are_refused_on_bearer_requests() {
    let auth = token_auth(MemoryUserStore::new())
        .form_tokens(auth_core::csrf::CsrfTokens::new(vec![7u8; 32]).unwrap())
        .build()
        .unwrap();
    register_on(&auth, "alice").await;
    let bearer = bearer_for_signed_in(&auth, "alice").await;
    let peer = Some("192.0.2.1".parse().unwrap());
    let request = auth
        .begin(
            "POST",
            [("host", "app.test"), ("authorization", bearer.as_str())],
            peer,
        )
        .unwrap();
    assert_eq!(request.form_token().await.unwrap(), None);
    assert!(matches!(
        request.verify_form_token(Some("anything")).await,
        Err(AuthError::SessionRequired)
    ));
    // A cookie request is unchanged: its token is bound to its session.
    let page = auth.begin("GET", [("host", "app.test")], peer).unwrap();
    assert!(page.form_token().await.unwrap().is_some());
}

/// TOTP enrolment needs a session: it is confirmed in the session that
/// began it, and a bearer request's stand-in lasts one request. Both steps
/// answer `SessionRequired` to a bearer request, before anything is
/// checked or stored.
#[tokio::test]
async fn totp_enrolment_refuses_a_bearer_request() {
    let auth = token_auth(MemoryUserStore::new())
        .mfa_keys(auth_core::mfa::MfaKeys::generate("k").unwrap())
        .build()
        .unwrap();
    let user = register_on(&auth, "alice").await;
    let bearer = bearer_for_signed_in(&auth, "alice").await;
    let request = auth
        .begin(
            "POST",
            [("host", "app.test"), ("authorization", bearer.as_str())],
            Some("192.0.2.1".parse().unwrap()),
        )
        .unwrap();
    let proof = auth_core::flow::FactorProof::password(Password::from(PASSWORD.to_owned()));
    assert!(matches!(
        request.begin_totp_enrollment(&proof).await,
        Err(AuthError::SessionRequired)
    ));
    assert!(matches!(
        request.confirm_totp("123456").await,
        Err(AuthError::SessionRequired)
    ));
    assert!(
        auth.authenticator()
            .accounts()
            .totp(user.id())
            .await
            .unwrap()
            .is_none(),
        "nothing stored"
    );
}

/// Registers `name` on `auth`.
async fn register_on(auth: &Auth, name: &str) -> auth_core::user::AnyUser {
    auth.authenticator()
        .register(name, &Password::from(PASSWORD.to_owned()), &client())
        .await
        .unwrap()
}

/// `Bearer <access token>` of a token sign-in of `name` (registered).
async fn bearer_for_signed_in(auth: &Auth, name: &str) -> String {
    let TokenOutcome::Issued(pair) = auth
        .authenticator()
        .token_login(name, &Password::from(PASSWORD.to_owned()), &client())
        .await
        .unwrap()
    else {
        panic!("tokens expected");
    };
    format!("Bearer {}", pair.access_token)
}
