//! The login flow: every login row of the security requirements, with
//! in-memory stores, an injected clock and the default (OWASP) hasher.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use auth_core::account::{AccountStore, MemoryAccountStore};
use auth_core::clock::ManualClock;
use auth_core::event::{AuthEvent, AuthEventHook, AuthEventKind, FailureReason};
use auth_core::flow::{AuthError, Authenticator, Client, LoginOutcome};
use auth_core::password::{
    Argon2Params, HashedPassword, Password, PasswordHasher, PasswordService, PolicyViolation,
};
use auth_core::rate_limit::ThrottleConfig;
use auth_core::session::{
    AuthState, Factor, MemoryStore, SaveOutcome, SessionKey, SessionRecord, SessionStore,
    StoreError,
};
use auth_core::user::{
    AnyUser, LoginName, MemoryUserStore, NewUser, User, UserStore, UserStoreError,
};
use auth_core::web::Auth;

mod common;

const PASSWORD: &str = "correct horse battery staple";

#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<AuthEvent>>);

impl AuthEventHook for Recorder {
    fn on_event(&self, event: &AuthEvent) {
        self.0.lock().unwrap().push(event.clone());
    }
}

impl Recorder {
    fn kinds(&self) -> Vec<AuthEventKind> {
        self.0.lock().unwrap().iter().map(|e| e.kind).collect()
    }
    fn last(&self) -> AuthEvent {
        self.0.lock().unwrap().last().cloned().unwrap()
    }
}

struct Harness {
    auth: Authenticator,
    web: Auth,
    users: Arc<MemoryUserStore>,
    accounts: Arc<MemoryAccountStore>,
    clock: ManualClock,
    events: Arc<Recorder>,
}

/// The toolkit over `users` (which may wrap `memory_users`, the handle the
/// tests use to change users behind the toolkit's back), with memory
/// sessions, throttle and account state on one manual clock.
fn harness_with<S: UserStore>(
    users: S,
    memory_users: Arc<MemoryUserStore>,
    throttle: ThrottleConfig,
) -> Harness {
    let clock = ManualClock::starting_now();
    let accounts = Arc::new(MemoryAccountStore::new());
    let events = Arc::new(Recorder::default());
    let web = Auth::builder(users)
        .clock(Arc::new(clock.clone()))
        .accounts(accounts.clone())
        .throttle_config(throttle)
        .app_name("Example App")
        .event_hook(events.clone())
        .build()
        .unwrap();
    Harness {
        auth: web.authenticator().clone(),
        web,
        users: memory_users,
        accounts,
        clock,
        events,
    }
}

fn harness() -> Harness {
    let users = Arc::new(MemoryUserStore::new());
    harness_with(users.clone(), users, ThrottleConfig::default())
}

fn client(ip: &str) -> Client {
    Client::new(ip.parse::<IpAddr>().unwrap()).with_user_agent("test")
}

/// Password hashing at the cheap test parameters.
fn cheap_passwords() -> PasswordService {
    PasswordService::builder()
        .hasher(PasswordHasher::insecure_for_tests().unwrap())
        .build()
        .unwrap()
}

/// [`PASSWORD`] hashed at parameters below the default: a login re-hashes it.
fn weak_hash() -> HashedPassword {
    PasswordHasher::builder()
        .params(Argon2Params {
            m_cost: 64,
            t_cost: 1,
            p_cost: 1,
        })
        .insecure_allow_weak_params()
        .build()
        .unwrap()
        .hash(&pw(PASSWORD))
        .unwrap()
}

fn pw(s: &str) -> Password {
    Password::from(s)
}

async fn register(h: &Harness, name: &str) -> AnyUser {
    h.auth
        .register(name, &pw(PASSWORD), &client("192.0.2.1"))
        .await
        .unwrap()
}

async fn login_ok(h: &Harness, name: &str) -> auth_core::session::Session {
    match h
        .auth
        .login(name, &pw(PASSWORD), &client("192.0.2.1"), None)
        .await
        .unwrap()
    {
        LoginOutcome::LoggedIn(session) => session,
        other => panic!("{other:?}"),
    }
}

/// The user as the store holds it now.
async fn stored(h: &Harness, user: &AnyUser) -> User {
    h.users
        .find_by_id(&user.id().to_owned())
        .await
        .unwrap()
        .unwrap()
}

/// Gives the user a confirmed TOTP enrolment in the account store (what
/// makes a second factor), without the enrolment flow.
async fn give_second_factor(h: &Harness, user: &AnyUser) {
    assert!(
        h.accounts
            .set_pending_totp(user.id(), "v1.test.not-a-real-secret")
            .await
            .unwrap()
    );
    assert!(
        h.accounts
            .confirm_totp(user.id(), "v1.test.not-a-real-secret", 0, &[])
            .await
            .unwrap()
    );
    assert_eq!(
        h.accounts.second_factors(user.id()).await.unwrap(),
        vec![Factor::Totp]
    );
}

#[tokio::test]
async fn register_applies_the_policy_and_refuses_duplicates() {
    let h = harness();
    let c = client("192.0.2.1");
    let err = h
        .auth
        .register("alice", &pw("password1"), &c)
        .await
        .unwrap_err();
    assert_eq!((err.status(), err.reason()), (400, Some("common_password")));
    let err = h
        .auth
        .register("alice", &pw("alice-is-my-name"), &c)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        AuthError::Policy(PolicyViolation::ContainsContextWord)
    ));
    let err = h
        .auth
        .register("bob", &pw("my example app pw"), &c)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), Some("context_word"));
    let user = register(&h, "Alice").await;
    assert_eq!(user.login(), "alice");
    let created = user.downcast::<User>().expect("the store's own user type");
    assert!(
        created
            .password_hash
            .as_str()
            .starts_with("$argon2id$v=19$m=19456,t=2,p=1$")
    );
    assert_eq!(stored(&h, &user).await.password_hash, created.password_hash);
    // "ALICE" is the same account.
    let err = h
        .auth
        .register("ALICE", &pw(PASSWORD), &c)
        .await
        .unwrap_err();
    assert_eq!(err.status(), 409);
    assert_eq!(
        h.auth
            .register("  ", &pw(PASSWORD), &c)
            .await
            .unwrap_err()
            .status(),
        400
    );
    assert!(h.events.kinds().contains(&AuthEventKind::Registered));
}

/// Unknown user, wrong password and disabled user: same status, same
/// message, and exactly one key derivation each.
#[tokio::test]
async fn unknown_wrong_and_disabled_look_the_same_and_cost_one_hash() {
    let h = harness();
    let alice = register(&h, "alice").await;
    register(&h, "carol").await;
    let carol = h
        .users
        .find_by_login(&LoginName::parse("carol").unwrap())
        .await
        .unwrap()
        .unwrap();
    h.users.set_disabled(&carol.id, true).unwrap();
    let counter = || h.auth.passwords().hasher().kdf_invocations();
    let mut answers = Vec::new();
    for (name, password) in [
        ("nobody", PASSWORD),
        ("alice", "wrong password!"),
        ("carol", PASSWORD),
    ] {
        let before = counter();
        let err = h
            .auth
            .login(name, &pw(password), &client("192.0.2.9"), None)
            .await
            .unwrap_err();
        assert_eq!(counter() - before, 1, "{name}: exactly one hash");
        answers.push((err.status(), err.to_string()));
        let event = h.events.last();
        assert_eq!(event.kind, AuthEventKind::LoginFailed);
        assert!(!event.success);
    }
    assert!(
        answers
            .iter()
            .all(|a| *a == (401, "invalid credentials".to_owned())),
        "{answers:?}"
    );
    // The audit trail still knows which was which.
    let reasons: Vec<_> = h
        .events
        .0
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| e.reason)
        .collect();
    assert_eq!(
        reasons,
        vec![
            FailureReason::UnknownUser,
            FailureReason::WrongPassword,
            FailureReason::Disabled
        ]
    );
    let _ = alice;
}

#[tokio::test]
async fn login_rotates_the_session_and_kills_the_pre_login_id() {
    let h = harness();
    register(&h, "alice").await;
    let planted = h.auth.sessions().create(Default::default()).await.unwrap();
    let planted_cookie = planted.id().encode();
    let outcome = h
        .auth
        .login("Alice", &pw(PASSWORD), &client("192.0.2.1"), Some(&planted))
        .await
        .unwrap();
    let session = outcome.session();
    assert_ne!(session.id().encode(), planted_cookie);
    assert!(
        h.auth
            .sessions()
            .load(&planted_cookie)
            .await
            .unwrap()
            .is_none()
    );
    let loaded = h
        .auth
        .sessions()
        .load(&session.id().encode())
        .await
        .unwrap()
        .unwrap();
    assert!(loaded.authenticated_user().is_some());
    assert!(
        matches!(loaded.auth_state(), AuthState::Authenticated { factors, .. } if factors == &vec![Factor::Password])
    );
    let cookie = h.auth.session_cookie(session);
    assert!(cookie.starts_with("__Host-session=") && cookie.contains("HttpOnly"));
}

#[tokio::test]
async fn a_second_factor_yields_only_a_pending_session() {
    let h = harness();
    let user = register(&h, "alice").await;
    give_second_factor(&h, &user).await;
    let outcome = h
        .auth
        .login("alice", &pw(PASSWORD), &client("192.0.2.1"), None)
        .await
        .unwrap();
    let LoginOutcome::MfaRequired { session, methods } = outcome else {
        panic!("expected MFA");
    };
    assert_eq!(methods, vec![Factor::Totp]);
    assert_eq!(session.authenticated_user(), None);
    assert!(matches!(
        h.auth.current_user(&session).await,
        Err(AuthError::NotAuthenticated)
    ));
    assert_eq!(h.events.last().kind, AuthEventKind::LoginMfaRequired);
}

/// The owner's ways back in after an attacker locked the account: a
/// browser that logged in before passes the lock (its device cookie), and
/// `unlock_account` (an administrator; a completed reset lifts the
/// password lock the same way) lifts it for everyone.
#[tokio::test]
async fn known_devices_pass_the_lock_and_unlock_account_lifts_it() {
    let h = harness();
    let alice = register(&h, "alice").await;
    let mut owner = client("192.0.2.9");
    owner.device = Some(auth_core::session::SessionId::generate().unwrap());
    h.auth
        .login("alice", &pw(PASSWORD), &owner, None)
        .await
        .unwrap();
    for n in 1..=6 {
        let _ = h
            .auth
            .login(
                "alice",
                &pw("wrong password!"),
                &client(&format!("198.51.100.{n}")),
                None,
            )
            .await;
    }
    let err = h
        .auth
        .login("alice", &pw(PASSWORD), &client("203.0.113.77"), None)
        .await
        .unwrap_err();
    assert_eq!(err.status(), 429);
    h.auth
        .login("alice", &pw(PASSWORD), &owner, None)
        .await
        .expect("the owner's browser is not held by the lock");
    h.auth.unlock_account(alice.id()).await.unwrap();
    h.auth
        .login("alice", &pw(PASSWORD), &client("203.0.113.78"), None)
        .await
        .expect("unlocked for every browser");
}

#[tokio::test]
async fn the_account_is_throttled_across_many_ips_even_for_the_right_password() {
    let h = harness();
    register(&h, "alice").await;
    for n in 1..=5 {
        let err = h
            .auth
            .login(
                "alice",
                &pw("wrong password!"),
                &client(&format!("198.51.100.{n}")),
                None,
            )
            .await
            .unwrap_err();
        assert_eq!(err.status(), 401);
    }
    let err = h
        .auth
        .login("alice", &pw(PASSWORD), &client("203.0.113.77"), None)
        .await
        .unwrap_err();
    assert_eq!(err.status(), 429);
    assert_eq!(err.retry_after_secs(), Some(30));
    assert_eq!(h.events.last().reason, Some(FailureReason::AccountLocked));
    // Unknown accounts are counted too (no enumeration through the lock).
    for _ in 0..5 {
        let _ = h
            .auth
            .login("ghost", &pw("x-wrong-pass"), &client("198.51.100.50"), None)
            .await;
    }
    let err = h
        .auth
        .login("ghost", &pw("x-wrong-pass"), &client("198.51.100.51"), None)
        .await
        .unwrap_err();
    assert_eq!(err.status(), 429);
    // After the back-off, the right password works and clears the count.
    h.clock.advance(Duration::from_secs(30));
    login_ok(&h, "alice").await;
    let err = h
        .auth
        .login("alice", &pw("wrong password!"), &client("192.0.2.1"), None)
        .await
        .unwrap_err();
    assert_eq!(err.status(), 401, "the count was cleared by the success");
}

#[tokio::test]
async fn one_ip_is_throttled_across_many_accounts() {
    let users = Arc::new(MemoryUserStore::new());
    let config = ThrottleConfig::builder()
        .per_ip(4, Duration::from_secs(60))
        .build()
        .unwrap();
    let h = harness_with(users.clone(), users, config);
    let attacker = client("203.0.113.5");
    for n in 0..4 {
        let err = h
            .auth
            .login(&format!("user{n}"), &pw("guess-guess"), &attacker, None)
            .await
            .unwrap_err();
        assert_eq!(err.status(), 401);
    }
    let before = h.auth.passwords().hasher().kdf_invocations();
    let err = h
        .auth
        .login("user9", &pw("guess-guess"), &attacker, None)
        .await
        .unwrap_err();
    assert_eq!(err.status(), 429);
    assert!(err.retry_after_secs().unwrap() <= 60);
    assert_eq!(
        h.auth.passwords().hasher().kdf_invocations(),
        before,
        "refused before hashing"
    );
    // Another client is unaffected.
    let err = h
        .auth
        .login("user9", &pw("guess-guess"), &client("203.0.113.6"), None)
        .await
        .unwrap_err();
    assert_eq!(err.status(), 401);
}

#[tokio::test]
async fn a_weak_hash_is_upgraded_only_after_a_correct_password() {
    let h = harness();
    let user = register(&h, "alice").await;
    let weak_hasher = PasswordHasher::builder()
        .params(Argon2Params {
            m_cost: 64,
            t_cost: 1,
            p_cost: 1,
        })
        .insecure_allow_weak_params()
        .build()
        .unwrap();
    let weak = weak_hasher.hash(&pw(PASSWORD)).unwrap();
    h.users
        .force_password_hash(user.id(), weak.clone())
        .unwrap();
    // A session made while the weak hash is stored: by an instance still
    // configured with the weak parameters (it has nothing to upgrade), on
    // the same stores.
    let old_instance = Auth::builder(h.users.clone())
        .clock(Arc::new(h.clock.clone()))
        .sessions(Arc::clone(h.auth.sessions().store()))
        .accounts(h.accounts.clone())
        .passwords(
            PasswordService::builder()
                .hasher(weak_hasher)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let made_with_weak = match old_instance
        .authenticator()
        .login("alice", &pw(PASSWORD), &client("192.0.2.1"), None)
        .await
        .unwrap()
    {
        LoginOutcome::LoggedIn(session) => session,
        other => panic!("{other:?}"),
    };
    assert_eq!(stored(&h, &user).await.password_hash, weak);
    let _ = h
        .auth
        .login("alice", &pw("wrong password!"), &client("192.0.2.1"), None)
        .await
        .unwrap_err();
    assert_eq!(
        stored(&h, &user).await.password_hash,
        weak,
        "no upgrade on a wrong password"
    );
    let sessions = h.auth.sessions();
    assert!(
        sessions
            .load(&made_with_weak.id().encode())
            .await
            .unwrap()
            .is_some()
    );
    let upgrading = login_ok(&h, "alice").await;
    let upgraded = stored(&h, &user).await.password_hash;
    assert!(
        upgraded
            .as_str()
            .starts_with("$argon2id$v=19$m=19456,t=2,p=1$")
    );
    assert!(h.events.kinds().contains(&AuthEventKind::PasswordRehashed));
    // The re-hash changed the stored hash, so it ended the user's other
    // sessions; the session that logged in carries the new hash's stamp.
    assert!(
        sessions
            .load(&made_with_weak.id().encode())
            .await
            .unwrap()
            .is_none(),
        "the re-hash ends the other sessions"
    );
    assert!(
        sessions
            .load(&upgrading.id().encode())
            .await
            .unwrap()
            .is_some(),
        "the session that logged in stays valid"
    );
    // Once: the next login finds nothing to upgrade and ends nothing.
    let next = login_ok(&h, "alice").await;
    let rehashes = h
        .events
        .kinds()
        .into_iter()
        .filter(|k| *k == AuthEventKind::PasswordRehashed)
        .count();
    assert_eq!(rehashes, 1);
    assert_eq!(stored(&h, &user).await.password_hash, upgraded);
    for session in [&upgrading, &next] {
        assert!(
            sessions
                .load(&session.id().encode())
                .await
                .unwrap()
                .is_some()
        );
    }
}

/// A user store whose re-hash write loses a race against a password change
/// that lands just before it.
#[derive(Debug)]
struct RacingStore {
    inner: Arc<MemoryUserStore>,
    racing_hash: HashedPassword,
}

impl UserStore for RacingStore {
    type User = User;

    async fn find_by_login(&self, login: &LoginName) -> Result<Option<User>, UserStoreError> {
        self.inner.find_by_login(login).await
    }
    async fn find_by_id(&self, id: &String) -> Result<Option<User>, UserStoreError> {
        self.inner.find_by_id(id).await
    }
    async fn set_password_hash(
        &self,
        id: &String,
        current: &str,
        new: &str,
    ) -> Result<bool, UserStoreError> {
        // The password change commits first...
        self.inner
            .force_password_hash(id, self.racing_hash.clone())?;
        // ...then the re-hash arrives, conditional on the old hash.
        self.inner.set_password_hash(id, current, new).await
    }
    async fn create(&self, user: NewUser) -> Result<User, UserStoreError> {
        self.inner.create(user).await
    }
}

#[tokio::test]
async fn a_rehash_racing_a_password_change_never_restores_the_old_password() {
    let memory = Arc::new(MemoryUserStore::new());
    let new_hash = PasswordHasher::default()
        .hash(&pw("the new password 123"))
        .unwrap();
    let racing = RacingStore {
        inner: memory.clone(),
        racing_hash: new_hash.clone(),
    };
    let h = harness_with(racing, memory.clone(), ThrottleConfig::default());
    let user = register(&h, "alice").await;
    let weak = weak_hash();
    memory.force_password_hash(user.id(), weak).unwrap();
    let err = h
        .auth
        .login("alice", &pw(PASSWORD), &client("192.0.2.1"), None)
        .await
        .unwrap_err();
    assert_eq!(
        err.status(),
        401,
        "a login whose password changed while it was checked fails"
    );
    assert_eq!(h.events.last().reason, Some(FailureReason::WrongPassword));
    assert_eq!(
        stored(&h, &user).await.password_hash,
        new_hash,
        "the password change stands; the old password was not written back"
    );
    let err = h
        .auth
        .login("alice", &pw(PASSWORD), &client("192.0.2.1"), None)
        .await
        .unwrap_err();
    assert_eq!(err.status(), 401, "the old password no longer works");
}

/// Two logins with the right password race to re-hash a weak hash: the
/// one whose write loses to the other's re-hash of the same password still
/// logs in (it checks the password against the hash that won), instead of
/// answering 401 and counting a failure.
#[tokio::test]
async fn a_rehash_losing_to_a_rehash_of_the_same_password_still_logs_in() {
    let memory = Arc::new(MemoryUserStore::new());
    let same_password = PasswordHasher::default().hash(&pw(PASSWORD)).unwrap();
    let racing = RacingStore {
        inner: memory.clone(),
        racing_hash: same_password.clone(),
    };
    let h = harness_with(racing, memory.clone(), ThrottleConfig::default());
    let user = register(&h, "alice").await;
    let weak = weak_hash();
    memory.force_password_hash(user.id(), weak).unwrap();
    let session = match h
        .auth
        .login("alice", &pw(PASSWORD), &client("192.0.2.1"), None)
        .await
        .unwrap()
    {
        LoginOutcome::LoggedIn(session) => session,
        other => panic!("{other:?}"),
    };
    assert_eq!(stored(&h, &user).await.password_hash, same_password);
    assert!(
        h.auth
            .load_session(session.id().clone())
            .await
            .unwrap()
            .is_some(),
        "its session carries the stamp of the hash that won"
    );
}

#[tokio::test]
async fn changing_the_password_ends_other_sessions_and_rotates_this_one() {
    let h = harness();
    register(&h, "alice").await;
    let mut mine = login_ok(&h, "alice").await;
    let other = login_ok(&h, "alice").await;
    let old_cookie = mine.id().encode();
    let c = client("192.0.2.1");
    let err = h
        .auth
        .change_password(
            &mut mine,
            &pw("not my password"),
            &pw("a brand new passphrase"),
            &c,
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), 401);
    let err = h
        .auth
        .change_password(&mut mine, &pw(PASSWORD), &pw("password123"), &c)
        .await
        .unwrap_err();
    assert_eq!(err.status(), 400);
    h.auth
        .change_password(&mut mine, &pw(PASSWORD), &pw("a brand new passphrase"), &c)
        .await
        .unwrap();
    let sessions = h.auth.sessions();
    assert!(
        sessions.load(&other.id().encode()).await.unwrap().is_none(),
        "other session ended"
    );
    assert!(
        sessions.load(&old_cookie).await.unwrap().is_none(),
        "current ID rotated"
    );
    assert!(
        sessions.load(&mine.id().encode()).await.unwrap().is_some(),
        "current session lives on"
    );
    let err = h
        .auth
        .login("alice", &pw(PASSWORD), &c, None)
        .await
        .unwrap_err();
    assert_eq!(err.status(), 401, "the old password stopped working");
    h.auth
        .login("alice", &pw("a brand new passphrase"), &c, None)
        .await
        .unwrap();
    assert!(h.events.kinds().contains(&AuthEventKind::PasswordChanged));
}

#[tokio::test]
async fn sign_out_everywhere_and_disabling_end_sessions() {
    let h = harness();
    let user = register(&h, "alice").await;
    let mut mine = login_ok(&h, "alice").await;
    let other = login_ok(&h, "alice").await;
    let ended = h
        .auth
        .sign_out_everywhere(&mut mine, &client("192.0.2.1"))
        .await
        .unwrap();
    assert_eq!(ended, 1);
    let sessions = h.auth.sessions();
    assert!(sessions.load(&other.id().encode()).await.unwrap().is_none());
    let mine_loaded = sessions.load(&mine.id().encode()).await.unwrap().unwrap();
    h.users.set_disabled(user.id(), true).unwrap();
    assert!(
        sessions
            .load(&mine_loaded.id().encode())
            .await
            .unwrap()
            .is_none(),
        "a disabled user has no session"
    );
    // Re-enabling does not bring the ended session back.
    h.users.set_disabled(user.id(), false).unwrap();
    assert!(
        sessions
            .load(&mine_loaded.id().encode())
            .await
            .unwrap()
            .is_none()
    );
}

/// An app's store that also finds a user by an alias (or a looser
/// collation): every name of one account spends one budget.
struct AliasStore(Arc<MemoryUserStore>);

impl UserStore for AliasStore {
    type User = User;

    async fn find_by_login(&self, login: &LoginName) -> Result<Option<User>, UserStoreError> {
        let real = match login.normalized() {
            "the-alias" => LoginName::parse("alice").unwrap(),
            _ => login.clone(),
        };
        self.0.find_by_login(&real).await
    }
    async fn find_by_id(&self, id: &String) -> Result<Option<User>, UserStoreError> {
        self.0.find_by_id(id).await
    }
    async fn set_password_hash(
        &self,
        id: &String,
        current: &str,
        new: &str,
    ) -> Result<bool, UserStoreError> {
        self.0.set_password_hash(id, current, new).await
    }
    async fn create(&self, user: NewUser) -> Result<User, UserStoreError> {
        self.0.create(user).await
    }
}

#[tokio::test]
async fn every_name_of_an_account_spends_one_budget() {
    let memory = Arc::new(MemoryUserStore::new());
    let h = harness_with(
        AliasStore(memory.clone()),
        memory,
        ThrottleConfig::default(),
    );
    register(&h, "alice").await;
    let attacker = client("198.51.100.7");
    for _ in 0..5 {
        let err = h
            .auth
            .login("alice", &pw("wrong guess one"), &attacker, None)
            .await
            .unwrap_err();
        assert_eq!(err.status(), 401);
    }
    // The alias finds the same account: it is locked, not a fresh budget.
    let err = h
        .auth
        .login(
            "the-alias",
            &pw("wrong guess two"),
            &client("203.0.113.9"),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), 429, "{err:?}");
}

/// Account state in memory where a TOTP confirmation (second factor on,
/// epoch raised: what `confirm_totp` does before ending sessions) lands
/// while a login reads the user's factors, once.
#[derive(Debug)]
struct ConfirmationRace {
    inner: Arc<MemoryAccountStore>,
    armed: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl AccountStore for ConfirmationRace {
    async fn totp(
        &self,
        user: &str,
    ) -> Result<Option<auth_core::account::StoredTotp>, UserStoreError> {
        self.inner.totp(user).await
    }
    async fn set_pending_totp(&self, user: &str, sealed: &str) -> Result<bool, UserStoreError> {
        self.inner.set_pending_totp(user, sealed).await
    }
    async fn confirm_totp(
        &self,
        user: &str,
        sealed: &str,
        step: i64,
        hashes: &[String],
    ) -> Result<bool, UserStoreError> {
        self.inner.confirm_totp(user, sealed, step, hashes).await
    }
    async fn record_totp_step(&self, user: &str, step: i64) -> Result<bool, UserStoreError> {
        self.inner.record_totp_step(user, step).await
    }
    async fn reseal_totp(
        &self,
        user: &str,
        old_sealed: &str,
        new_sealed: &str,
    ) -> Result<bool, UserStoreError> {
        self.inner.reseal_totp(user, old_sealed, new_sealed).await
    }
    async fn remove_totp(&self, user: &str) -> Result<(), UserStoreError> {
        self.inner.remove_totp(user).await
    }
    async fn replace_recovery_codes(&self, user: &str, h: &[String]) -> Result<(), UserStoreError> {
        self.inner.replace_recovery_codes(user, h).await
    }
    async fn consume_recovery_code(&self, user: &str, hash: &str) -> Result<bool, UserStoreError> {
        self.inner.consume_recovery_code(user, hash).await
    }
    async fn recovery_codes_left(&self, user: &str) -> Result<u64, UserStoreError> {
        self.inner.recovery_codes_left(user).await
    }
    async fn epoch(&self, user: &str) -> Result<u64, UserStoreError> {
        self.inner.epoch(user).await
    }
    async fn raise_epoch(&self, user: &str) -> Result<u64, UserStoreError> {
        self.inner.raise_epoch(user).await
    }
    async fn second_factors(&self, user: &str) -> Result<Vec<Factor>, UserStoreError> {
        let seen = self.inner.second_factors(user).await?;
        if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            // The confirmation commits now: after this read, before the
            // login's session exists (its deletions find nothing to end).
            assert!(self.inner.set_pending_totp(user, "sealed").await?);
            assert!(self.inner.confirm_totp(user, "sealed", 1, &[]).await?);
            self.inner.raise_epoch(user).await?;
        }
        Ok(seen)
    }
}

/// A login racing the confirmation of a second factor never keeps a
/// password-only session: the epoch moved while its session was made, so
/// that session is ended and made again, MFA-pending.
#[tokio::test]
async fn a_login_racing_a_totp_confirmation_never_keeps_a_password_only_session() {
    let users = Arc::new(MemoryUserStore::new());
    let accounts = Arc::new(ConfirmationRace {
        inner: Arc::new(MemoryAccountStore::new()),
        armed: std::sync::atomic::AtomicBool::new(false),
    });
    let auth = Auth::builder(users)
        .clock(Arc::new(ManualClock::starting_now()))
        .accounts(accounts.clone())
        .passwords(cheap_passwords())
        .build()
        .unwrap();
    let flows = auth.authenticator();
    let c = client("192.0.2.1");
    flows.register("alice", &pw(PASSWORD), &c).await.unwrap();
    accounts
        .armed
        .store(true, std::sync::atomic::Ordering::SeqCst);
    match flows.login("alice", &pw(PASSWORD), &c, None).await.unwrap() {
        LoginOutcome::MfaRequired { session, methods } => {
            assert_eq!(methods, vec![Factor::Totp]);
            assert!(session.authenticated_user().is_none());
        }
        LoginOutcome::LoggedIn(session) => {
            panic!(
                "a password-only session survived: {:?}",
                session.auth_state()
            )
        }
    }
}

/// A session store that cannot delete by user must say so: otherwise
/// "sign out everywhere" would end nothing, silently. It fails instead.
#[tokio::test]
async fn a_store_that_cannot_revoke_by_user_without_saying_so_fails_closed() {
    let store = Arc::new(NoUserIndex::new(false));
    let users = Arc::new(MemoryUserStore::new());
    let auth = Auth::builder(users)
        .clock(Arc::new(ManualClock::starting_now()))
        .sessions(store)
        .build()
        .unwrap();
    let flows = auth.authenticator();
    let c = client("192.0.2.1");
    flows.register("alice", &pw(PASSWORD), &c).await.unwrap();
    let LoginOutcome::LoggedIn(mut session) =
        flows.login("alice", &pw(PASSWORD), &c, None).await.unwrap()
    else {
        panic!("no second factor")
    };
    let err = flows
        .sign_out_everywhere(&mut session, &c)
        .await
        .unwrap_err();
    assert_eq!(err.status(), 500);
    // And a store that says so needs a persistent account store.
    let honest = Auth::builder(MemoryUserStore::new())
        .sessions(Arc::new(NoUserIndex::new(true)))
        .build();
    assert!(matches!(
        honest,
        Err(auth_core::BuildError::AccountStoreRequired)
    ));
}

/// Two `Host` lines: refused with an allow-list (RFC 9112: 400), and the
/// cross-origin check reads the same (first) one the allow-list would, so
/// a second `Host` matching a foreign `Origin` smuggles nothing.
#[tokio::test]
async fn two_host_lines_are_read_as_the_first_or_refused() {
    let peer = Some("192.0.2.1".parse().unwrap());
    let open = Auth::builder(MemoryUserStore::new()).build().unwrap();
    let smuggled = open.begin(
        "POST",
        [
            ("host", "app.test"),
            ("host", "evil.test"),
            ("origin", "https://evil.test"),
        ],
        peer,
    );
    assert_eq!(smuggled.map(|_| ()).unwrap_err().status, 403);
    let listed = Auth::builder(MemoryUserStore::new())
        .allowed_hosts(auth_core::web::AllowedHosts::parse("app.test").unwrap())
        .build()
        .unwrap();
    let two = listed.begin("GET", [("host", "app.test"), ("host", "app.test")], peer);
    assert_eq!(two.map(|_| ()).unwrap_err().status, 400);
    assert!(listed.begin("GET", [("host", "app.test")], peer).is_ok());
}

/// A POST through an `Auth` with nothing but a memory user store.
fn plain_post() -> auth_core::web::RequestAuth {
    Auth::builder(MemoryUserStore::new())
        .build()
        .unwrap()
        .begin(
            "POST",
            [("host", "example.test")],
            Some("192.0.2.1".parse().unwrap()),
        )
        .unwrap()
}

/// Without passkeys, starting a passkey sign-in answers 501 before any
/// session is made: no cookie, nothing stored.
#[cfg(feature = "passkeys")]
#[tokio::test]
async fn a_passkey_sign_in_without_passkeys_makes_no_session() {
    let request = plain_post();
    let err = request.begin_passkey_sign_in().await.unwrap_err();
    assert_eq!(err.status(), 501);
    assert!(request.finish().await.set_cookie.is_none());
}

/// Checking a form token without form tokens configured fails closed
/// (500), whatever is sent: never a silent pass.
#[tokio::test]
async fn a_form_token_check_without_form_tokens_fails_closed() {
    let request = plain_post();
    assert_eq!(request.form_token().await.unwrap(), None);
    for token in [None, Some("anything")] {
        let err = request.verify_form_token(token).await.unwrap_err();
        assert_eq!(err.status(), 500, "{token:?}");
    }
}

/// A visitor's form token (shown before a login) does not act for a
/// logged-in session: on a shared browser, a form from before a login is
/// not the logged-in user's. Without a login it works.
#[tokio::test]
async fn a_visitor_token_does_not_act_for_a_logged_in_session() {
    let auth = Auth::builder(MemoryUserStore::new())
        .clock(Arc::new(ManualClock::starting_now()))
        .form_tokens(auth_core::csrf::CsrfTokens::new(vec![7u8; 32]).unwrap())
        .passwords(cheap_passwords())
        .build()
        .unwrap();
    let peer = Some("192.0.2.1".parse().unwrap());
    let host = ("host", "example.test");
    let page = auth.begin("GET", [host], peer).unwrap();
    let token = page.form_token().await.unwrap().unwrap();
    let visitor = page.finish().await.visitor_cookie.unwrap();
    let visitor = visitor.split(';').next().unwrap().to_owned();
    let c = client("192.0.2.1");
    auth.authenticator()
        .register("alice", &pw(PASSWORD), &c)
        .await
        .unwrap();
    let LoginOutcome::LoggedIn(session) = auth
        .authenticator()
        .login("alice", &pw(PASSWORD), &c, None)
        .await
        .unwrap()
    else {
        panic!("no second factor")
    };
    let session = auth.authenticator().session_cookie(&session);
    let session = session.split(';').next().unwrap();
    let both = format!("{session}; {visitor}");
    let logged_in = auth
        .begin("POST", [host, ("cookie", both.as_str())], peer)
        .unwrap();
    assert!(matches!(
        logged_in.verify_form_token(Some(&token)).await,
        Err(AuthError::CsrfToken)
    ));
    let anonymous = auth
        .begin("POST", [host, ("cookie", visitor.as_str())], peer)
        .unwrap();
    anonymous.verify_form_token(Some(&token)).await.unwrap();
}

/// A user without a password (`password_hash` is "") is a wrong password
/// like any other: one derivation, the same answer.
#[tokio::test]
async fn a_user_without_a_password_is_a_silent_mismatch() {
    let h = harness();
    let user = register(&h, "alice").await;
    h.users
        .force_password_hash(user.id(), HashedPassword::new(""))
        .unwrap();
    let before = h.auth.passwords().hasher().kdf_invocations();
    let err = h
        .auth
        .login("alice", &pw(PASSWORD), &client("192.0.2.1"), None)
        .await
        .unwrap_err();
    assert_eq!(err.status(), 401);
    assert_eq!(h.auth.passwords().hasher().kdf_invocations() - before, 1);
    assert_eq!(h.events.last().reason, Some(FailureReason::WrongPassword));
}

/// A login refused because hashing is busy (503) counts against nothing:
/// not the account (twenty of them would lock it five times over) and not
/// the client's IP budget; nor does a step-up or a password change. The
/// hashing slot is reserved before the throttle counts.
#[tokio::test]
async fn a_login_refused_as_busy_never_counts_against_the_account() {
    let passwords = PasswordService::builder()
        .hasher(PasswordHasher::insecure_for_tests().unwrap())
        .max_concurrent(1)
        .queue_timeout(Duration::from_millis(20))
        .build()
        .unwrap();
    let auth = Auth::builder(MemoryUserStore::new())
        .clock(Arc::new(ManualClock::starting_now()))
        .passwords(passwords.clone())
        .build()
        .unwrap();
    let flows = auth.authenticator();
    let c = client("192.0.2.1");
    flows.register("alice", &pw(PASSWORD), &c).await.unwrap();
    let only_slot = passwords.reserve().await.unwrap();
    for _ in 0..40 {
        let err = flows
            .login("alice", &pw("a wrong guess"), &c, None)
            .await
            .unwrap_err();
        assert_eq!(err.status(), 503, "busy, not throttled");
    }
    drop(only_slot);
    let Ok(LoginOutcome::LoggedIn(mut session)) =
        flows.login("alice", &pw(PASSWORD), &c, None).await
    else {
        panic!("the right password logs in");
    };
    // A step-up and a password change refused as busy count nothing
    // either: the right password then works from the same address.
    let only_slot = passwords.reserve().await.unwrap();
    for _ in 0..20 {
        let err = flows
            .reauthenticate(&mut session, &pw("a wrong guess"), &c)
            .await
            .unwrap_err();
        assert_eq!(err.status(), 503, "step-up: busy, not throttled");
        let err = flows
            .change_password(
                &mut session,
                &pw("a wrong guess"),
                &pw("x".repeat(20).as_str()),
                &c,
            )
            .await
            .unwrap_err();
        assert_eq!(err.status(), 503, "password change: busy, not throttled");
    }
    drop(only_slot);
    flows
        .reauthenticate(&mut session, &pw(PASSWORD), &c)
        .await
        .expect("not throttled");
}

/// The app changes a password in its own table (its own reset flow, an
/// admin tool): every session made with the old hash ends at its next
/// load, on the per-request path too, with no call into the toolkit.
#[tokio::test]
async fn a_password_changed_outside_the_toolkit_ends_every_session() {
    let h = harness();
    let user = register(&h, "alice").await;
    let session = login_ok(&h, "alice").await;
    let id = session.id().encode();
    assert!(h.auth.sessions().load(&id).await.unwrap().is_some());
    let other_hash = PasswordHasher::insecure_for_tests()
        .unwrap()
        .hash(&pw("changed by the app itself"))
        .unwrap();
    h.users.force_password_hash(user.id(), other_hash).unwrap();
    let parsed = auth_core::session::SessionId::parse(&id).unwrap();
    assert!(
        h.auth.load_session(parsed).await.unwrap().is_none(),
        "the per-request load ends it"
    );
    assert!(h.auth.sessions().load(&id).await.unwrap().is_none());
}

#[tokio::test]
async fn an_administrator_signs_every_session_of_a_user_out() {
    let h = harness();
    let alice = register(&h, "alice").await;
    register(&h, "bob").await;
    let first = login_ok(&h, "alice").await;
    let second = login_ok(&h, "alice").await;
    let bobs = login_ok(&h, "bob").await;
    assert_eq!(h.auth.sign_out_user(alice.id()).await.unwrap(), 2);
    let sessions = h.auth.sessions();
    for session in [&first, &second] {
        assert!(
            sessions
                .load(&session.id().encode())
                .await
                .unwrap()
                .is_none()
        );
    }
    assert!(sessions.load(&bobs.id().encode()).await.unwrap().is_some());
}

#[tokio::test]
async fn logout_is_server_side_and_sensitive_operations_need_a_recent_login() {
    let h = harness();
    register(&h, "alice").await;
    let mut session = login_ok(&h, "alice").await;
    h.auth.require_recent(&session).unwrap();
    h.clock.advance(Duration::from_secs(11 * 60));
    let session_now = h
        .auth
        .sessions()
        .load(&session.id().encode())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        h.auth.require_recent(&session_now),
        Err(AuthError::ReauthenticationRequired)
    ));
    let before = session.id().encode();
    h.auth
        .reauthenticate(&mut session, &pw(PASSWORD), &client("192.0.2.1"))
        .await
        .unwrap();
    assert_ne!(session.id().encode(), before, "step-up rotates the ID");
    h.auth.require_recent(&session).unwrap();
    let cookie = session.id().encode();
    h.auth.logout(session, &client("192.0.2.1")).await.unwrap();
    assert!(h.auth.sessions().load(&cookie).await.unwrap().is_none());
    assert_eq!(h.events.last().kind, AuthEventKind::LoggedOut);
}

#[tokio::test]
async fn users_revoke_their_own_sessions_by_handle() {
    let h = harness();
    register(&h, "alice").await;
    register(&h, "bob").await;
    let mine = login_ok(&h, "alice").await;
    let other = login_ok(&h, "alice").await;
    let bobs = login_ok(&h, "bob").await;
    let c = client("192.0.2.1");
    assert!(
        !h.auth
            .revoke_session(&mine, &bobs.handle(), &c)
            .await
            .unwrap(),
        "not someone else's"
    );
    assert!(
        h.auth
            .revoke_session(&mine, &other.handle(), &c)
            .await
            .unwrap()
    );
    assert!(
        h.auth
            .sessions()
            .load(&other.id().encode())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        h.auth
            .sessions()
            .load(&bobs.id().encode())
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn oversized_passwords_do_not_tell_real_accounts_from_unknown_ones() {
    let h = harness();
    register(&h, "alice").await;
    let huge = "x".repeat(5000);
    for name in ["alice", "nobody"] {
        for _ in 0..5 {
            let err = h
                .auth
                .login(name, &pw(&huge), &client("198.51.100.9"), None)
                .await
                .unwrap_err();
            assert_eq!(err.status(), 401, "{name}");
        }
        let err = h
            .auth
            .login(name, &pw(&huge), &client("198.51.100.10"), None)
            .await
            .unwrap_err();
        assert_eq!(err.status(), 429, "{name}: counted and locked alike");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_guesses_cannot_outrun_the_account_lock() {
    let h = Arc::new(harness());
    register(&h, "alice").await;
    let before = h.auth.passwords().hasher().kdf_invocations();
    let mut tasks = Vec::new();
    for n in 0..20 {
        let h = Arc::clone(&h);
        tasks.push(tokio::spawn(async move {
            h.auth
                .login(
                    "alice",
                    &pw("wrong password!"),
                    &client(&format!("198.51.100.{n}")),
                    None,
                )
                .await
                .unwrap_err()
                .status()
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 15);
    assert_eq!(
        h.auth.passwords().hasher().kdf_invocations() - before,
        5,
        "only admitted guesses are hashed"
    );
}

#[tokio::test]
async fn registration_is_throttled_per_ip() {
    let users = Arc::new(MemoryUserStore::new());
    let config = ThrottleConfig::builder()
        .per_ip(3, Duration::from_secs(60))
        .build()
        .unwrap();
    let h = harness_with(users.clone(), users, config);
    let c = client("203.0.113.80");
    for n in 0..3 {
        h.auth
            .register(&format!("user{n}"), &pw(PASSWORD), &c)
            .await
            .unwrap();
    }
    let err = h
        .auth
        .register("user9", &pw(PASSWORD), &c)
        .await
        .unwrap_err();
    assert_eq!(err.status(), 429);
    assert!(err.retry_after_secs().is_some());
}

#[tokio::test]
async fn step_up_kills_the_old_id_is_throttled_and_needs_every_factor() {
    let h = harness();
    let user = register(&h, "alice").await;
    let mut session = login_ok(&h, "alice").await;
    let before = session.id().encode();
    h.auth
        .reauthenticate(&mut session, &pw(PASSWORD), &client("192.0.2.1"))
        .await
        .unwrap();
    assert!(
        h.auth.sessions().load(&before).await.unwrap().is_none(),
        "old ID is dead"
    );
    for _ in 0..5 {
        let err = h
            .auth
            .reauthenticate(&mut session, &pw("wrong password!"), &client("192.0.2.1"))
            .await
            .unwrap_err();
        assert_eq!(err.status(), 401);
    }
    let err = h
        .auth
        .reauthenticate(&mut session, &pw(PASSWORD), &client("192.0.2.1"))
        .await
        .unwrap_err();
    assert_eq!(
        err.status(),
        429,
        "re-authentication is throttled like a login"
    );
    // A user with a second factor cannot step up with the password alone.
    h.clock.advance(Duration::from_secs(3600));
    give_second_factor(&h, &user).await;
    let err = h
        .auth
        .reauthenticate(&mut session, &pw(PASSWORD), &client("192.0.2.1"))
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::ReauthenticationRequired));
}

/// A session store that cannot revoke or list by user (like a
/// tower-sessions store): password changes still end the other sessions,
/// through the session stamp (the password hash's fingerprint), and "sign
/// out everywhere" through the account's epoch, which the stamp includes
/// for such a store.
/// `honest`: whether `revokes_by_user` says it cannot.
#[derive(Debug)]
struct NoUserIndex(MemoryStore, bool);

impl NoUserIndex {
    fn new(honest: bool) -> Self {
        Self(MemoryStore::new(), honest)
    }
}

impl Default for NoUserIndex {
    fn default() -> Self {
        Self::new(true)
    }
}

#[async_trait]
impl SessionStore for NoUserIndex {
    async fn create(&self, key: &SessionKey, record: &SessionRecord) -> Result<(), StoreError> {
        self.0.create(key, record).await
    }
    async fn load(&self, key: &SessionKey) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        self.0.load(key).await
    }
    async fn save(
        &self,
        key: &SessionKey,
        record: &SessionRecord,
        expected: u64,
    ) -> Result<SaveOutcome, StoreError> {
        self.0.save(key, record, expected).await
    }
    async fn rotate(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        record: &SessionRecord,
        expected: u64,
    ) -> Result<SaveOutcome, StoreError> {
        self.0.rotate(old, new, record, expected).await
    }
    async fn delete(&self, key: &SessionKey) -> Result<bool, StoreError> {
        self.0.delete(key).await
    }
    async fn delete_by_user(&self, _: &str, _: Option<&SessionKey>) -> Result<u64, StoreError> {
        Err(StoreError::Unsupported)
    }
    async fn list_by_user(&self, _: &str) -> Result<Vec<(SessionKey, SessionRecord)>, StoreError> {
        Err(StoreError::Unsupported)
    }
    async fn delete_expired(&self, now: auth_core::clock::Timestamp) -> Result<u64, StoreError> {
        self.0.delete_expired(now).await
    }
    fn revokes_by_user(&self) -> bool {
        !self.1
    }
}

#[tokio::test]
async fn without_revoke_by_user_the_stamp_still_ends_other_sessions() {
    let users = Arc::new(MemoryUserStore::new());
    let store = Arc::new(NoUserIndex::default());
    // The builder installs the stamp source; the epoch it reads must
    // persist, so the builder asks for an account store.
    let auth = Auth::builder(users.clone())
        .sessions(store.clone())
        .accounts(Arc::new(MemoryAccountStore::new()))
        .build()
        .unwrap()
        .authenticator()
        .clone();
    let c = client("192.0.2.1");
    let alice = auth.register("alice", &pw(PASSWORD), &c).await.unwrap();
    let login = || async {
        auth.login("alice", &pw(PASSWORD), &c, None)
            .await
            .unwrap()
            .session()
            .clone()
    };
    let mut mine = login().await;
    let other = login().await;
    auth.change_password(&mut mine, &pw(PASSWORD), &pw("a brand new passphrase"), &c)
        .await
        .unwrap();
    assert!(
        store.load(other.key()).await.unwrap().is_some(),
        "the store could not delete it"
    );
    assert!(
        auth.sessions()
            .load(&other.id().encode())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        auth.sessions()
            .load(&mine.id().encode())
            .await
            .unwrap()
            .is_some()
    );
    // The password is unchanged from here on: only the epoch can end the
    // third session.
    let third = auth
        .login("alice", &pw("a brand new passphrase"), &c, None)
        .await
        .unwrap()
        .session()
        .clone();
    assert_eq!(auth.accounts().epoch(alice.id()).await.unwrap(), 0);
    let ended = auth.sign_out_everywhere(&mut mine, &c).await.unwrap();
    assert_eq!(ended, 0, "the store cannot count or delete by user");
    assert_eq!(auth.accounts().epoch(alice.id()).await.unwrap(), 1);
    assert!(
        store.load(third.key()).await.unwrap().is_some(),
        "the store could not delete it"
    );
    assert!(
        auth.sessions()
            .load(&third.id().encode())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        auth.sessions()
            .load(&mine.id().encode())
            .await
            .unwrap()
            .is_some()
    );
}

/// The per-request state of the web pipeline holds the raw `Cookie`
/// header (the session ID) and the loaded session: its `Debug` shows
/// neither.
#[tokio::test]
async fn request_state_debug_reveals_no_session_id() {
    let h = harness();
    register(&h, "alice").await;
    let session = login_ok(&h, "alice").await;
    let set_cookie = h.auth.session_cookie(&session);
    let pair = set_cookie.split(';').next().unwrap().to_owned();
    let id = pair.split('=').nth(1).unwrap().to_owned();
    let state = h
        .web
        .begin(
            "GET",
            [("host", "example.test"), ("cookie", pair.as_str())],
            Some("192.0.2.1".parse().unwrap()),
        )
        .unwrap();
    let user = state.current_user::<User>().await.unwrap();
    assert_eq!(user.login, "alice");
    let debug = format!("{state:?}");
    assert!(!debug.contains(&id), "{debug}");
    assert!(debug.contains("REDACTED"), "{debug}");
    // What the response gets: a new cookie after a rotation.
    state.rotate().await.unwrap();
    let finish = state.finish().await;
    let new_id = finish
        .set_cookie
        .as_deref()
        .unwrap()
        .split(['=', ';'])
        .nth(1)
        .unwrap();
    let debug = format!("{finish:?}");
    assert!(
        !debug.contains(new_id) && debug.contains("REDACTED"),
        "{debug}"
    );
}

/// Counts user reads; a login-name read waits while `gate` is held.
#[derive(Debug)]
struct CountingStore {
    inner: Arc<MemoryUserStore>,
    finds: std::sync::atomic::AtomicUsize,
    gate: tokio::sync::Mutex<()>,
    /// Reads by id fail while set (the app's database is down).
    down: std::sync::atomic::AtomicBool,
}

impl CountingStore {
    fn new(inner: Arc<MemoryUserStore>) -> Self {
        Self {
            inner,
            finds: std::sync::atomic::AtomicUsize::new(0),
            gate: tokio::sync::Mutex::new(()),
            down: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl UserStore for CountingStore {
    type User = User;

    async fn find_by_login(&self, login: &LoginName) -> Result<Option<User>, UserStoreError> {
        drop(self.gate.lock().await);
        self.inner.find_by_login(login).await
    }
    async fn find_by_id(&self, id: &String) -> Result<Option<User>, UserStoreError> {
        self.finds.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(UserStoreError::backend(std::io::Error::other(
                "database down",
            )));
        }
        self.inner.find_by_id(id).await
    }
    async fn set_password_hash(
        &self,
        id: &String,
        current: &str,
        new: &str,
    ) -> Result<bool, UserStoreError> {
        self.inner.set_password_hash(id, current, new).await
    }
    async fn create(&self, user: NewUser) -> Result<User, UserStoreError> {
        self.inner.create(user).await
    }
}

/// A request reads its user once: the security-stamp check and the
/// handler's `current_user` share the read. The stamp is still checked on
/// that read: a disabled user's session stops at once.
#[tokio::test]
async fn a_request_reads_its_user_once_and_still_checks_the_stamp() {
    let memory = Arc::new(MemoryUserStore::new());
    let counting = Arc::new(CountingStore::new(memory.clone()));
    let h = harness_with(counting.clone(), memory.clone(), ThrottleConfig::default());
    let alice = register(&h, "alice").await;
    let session = login_ok(&h, "alice").await;
    let pair = h.auth.session_cookie(&session);
    let pair = pair.split(';').next().unwrap().to_owned();
    let begin = || {
        h.web
            .begin(
                "GET",
                [("host", "example.test"), ("cookie", pair.as_str())],
                Some("192.0.2.1".parse().unwrap()),
            )
            .unwrap()
    };
    let before = counting.finds.load(std::sync::atomic::Ordering::SeqCst);
    let state = begin();
    state.check(auth_core::web::Guard::Login).await.unwrap();
    assert_eq!(state.current_user::<User>().await.unwrap().login, "alice");
    assert_eq!(state.current_user::<User>().await.unwrap().login, "alice");
    assert_eq!(state.user().await.unwrap().id(), alice.id());
    let reads = counting.finds.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert_eq!(reads, 1, "one user read per request");

    memory.set_disabled(alice.id(), true).unwrap();
    let state = begin();
    assert!(matches!(
        state.current_user::<User>().await,
        Err(AuthError::NotAuthenticated)
    ));
    assert!(
        state.session().await.unwrap().is_none(),
        "the session ended"
    );
}

/// Logging out while the session cannot be read (the app's user store is
/// down, so its stamp cannot be checked) answers the error (503) and
/// removes the cookie all the same: a shared browser is signed out at
/// once. A request with `Authorization: Bearer` whose token is not valid
/// has no session to end (its cookies are not read): refused, never a
/// success that ended nothing.
#[tokio::test]
async fn logout_removes_the_cookie_even_when_the_session_cannot_be_read() {
    use std::sync::atomic::Ordering;

    let memory = Arc::new(MemoryUserStore::new());
    let counting = Arc::new(CountingStore::new(memory.clone()));
    let h = harness_with(counting.clone(), memory, ThrottleConfig::default());
    register(&h, "alice").await;
    let session = login_ok(&h, "alice").await;
    let pair = h.auth.session_cookie(&session);
    let pair = pair.split(';').next().unwrap().to_owned();
    let peer = Some("192.0.2.1".parse().unwrap());

    counting.down.store(true, Ordering::SeqCst);
    let request = h
        .web
        .begin(
            "POST",
            [("host", "example.test"), ("cookie", pair.as_str())],
            peer,
        )
        .unwrap();
    let error = request.logout().await.unwrap_err();
    assert_eq!(error.status(), 503, "{error:?}");
    assert_eq!(
        request.finish().await.set_cookie,
        Some(h.web.removal_cookie())
    );
    counting.down.store(false, Ordering::SeqCst);

    let request = h
        .web
        .begin(
            "POST",
            [
                ("host", "example.test"),
                ("cookie", pair.as_str()),
                ("authorization", "Bearer not-a-token"),
            ],
            peer,
        )
        .unwrap();
    assert!(matches!(
        request.logout().await,
        Err(AuthError::NotAuthenticated)
    ));
    assert_eq!(request.finish().await.set_cookie, None);
    assert!(
        h.auth
            .load_session(session.id().clone())
            .await
            .unwrap()
            .is_some(),
        "the cookie's session was not touched, and the caller knows it"
    );
}

/// A session whose user's password changed after it was loaded (through
/// the app's own table here) is not re-stamped by a flow that needs no
/// password: sign out everywhere refuses it, and it stays ended.
#[tokio::test]
async fn a_flow_without_a_password_never_revives_an_ended_session() {
    let h = harness();
    let user = register(&h, "alice").await;
    let mut session = login_ok(&h, "alice").await;
    let other = PasswordHasher::insecure_for_tests()
        .unwrap()
        .hash(&pw("another long passphrase 7"))
        .unwrap();
    h.users.force_password_hash(user.id(), other).unwrap();
    assert!(matches!(
        h.auth
            .sign_out_everywhere(&mut session, &client("192.0.2.1"))
            .await,
        Err(AuthError::NotAuthenticated)
    ));
    assert!(
        h.auth
            .load_session(session.id().clone())
            .await
            .unwrap()
            .is_none()
    );
}

/// `RequestAuth::remember_me` makes the request's login persistent: its
/// cookie carries the 30-day `Max-Age`; a login without it gets a
/// browser-session cookie. The choice is the request's: a later request
/// that does not ask makes no persistent session.
#[tokio::test]
async fn remember_me_makes_the_requests_login_persistent() {
    let h = harness();
    register(&h, "alice").await;
    let begin = || {
        h.web
            .begin(
                "POST",
                [("host", "example.test")],
                Some("192.0.2.1".parse().unwrap()),
            )
            .unwrap()
    };
    let request = begin();
    request.remember_me(true);
    let LoginOutcome::LoggedIn(mut session) = request.login("alice", &pw(PASSWORD)).await.unwrap()
    else {
        panic!("expected a login");
    };
    assert!(session.record().persistent);
    let cookie = request.finish().await.set_cookie.unwrap();
    assert!(
        cookie.starts_with("__Host-session=") && cookie.contains("Max-Age=2592000"),
        "{cookie}"
    );
    // A step-up (new ID) keeps it.
    h.auth
        .reauthenticate(&mut session, &pw(PASSWORD), &client("192.0.2.1"))
        .await
        .unwrap();
    assert!(session.record().persistent);
    assert!(h.auth.session_cookie(&session).contains("Max-Age="));

    let request = begin();
    let LoginOutcome::LoggedIn(session) = request.login("alice", &pw(PASSWORD)).await.unwrap()
    else {
        panic!("expected a login");
    };
    assert!(!session.record().persistent);
    let cookie = request.finish().await.set_cookie.unwrap();
    assert!(!cookie.contains("Max-Age"), "{cookie}");
}

/// `try_finish` gives the same answer as `finish` without waiting, and
/// declines (rather than guessing) while an operation on the request still
/// holds its state.
#[tokio::test]
async fn try_finish_answers_like_finish_and_never_races_an_operation() {
    let memory = Arc::new(MemoryUserStore::new());
    let gated = Arc::new(CountingStore::new(memory.clone()));
    let h = harness_with(gated.clone(), memory, ThrottleConfig::default());
    register(&h, "alice").await;
    let web = &h.web;
    let begin = || {
        Arc::new(
            web.begin(
                "POST",
                [("host", "example.test"), ("sec-fetch-site", "same-origin")],
                Some("192.0.2.1".parse().unwrap()),
            )
            .unwrap(),
        )
    };
    let password = Password::from("correct horse battery staple");
    let state = begin();
    assert_eq!(
        state.try_finish(),
        Some(state.finish().await),
        "no cookie yet"
    );
    state.login("alice", &password).await.unwrap();
    let quick = state.try_finish().expect("nothing holds the state");
    assert_eq!(quick, state.finish().await);
    assert!(quick.set_cookie.is_some() && quick.no_store);

    // A login still running (e.g. in a task the handler spawned) holds the
    // request's state while it waits on the user store.
    let state = begin();
    let gate = gated.gate.lock().await;
    let running = {
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let password = Password::from("correct horse battery staple");
            state.login("alice", &password).await.map(|_| ())
        })
    };
    let mut declined = false;
    for _ in 0..1000 {
        if state.try_finish().is_none() {
            declined = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(
        declined,
        "try_finish declines while the login holds the state"
    );
    drop(gate);
    // `finish` waits for it, and sees its new session.
    let finish = state.finish().await;
    running.await.unwrap().unwrap();
    assert!(
        finish.set_cookie.is_some(),
        "the login's cookie is not lost"
    );
    assert_eq!(state.try_finish(), Some(finish));
}

/// `begin_raw`: UTF-8 values are read as they are; a value with bytes that
/// are not UTF-8 is seen (lossily), not dropped; the URI authority stands
/// in for a missing `Host` (HTTP/2), and never overrides one.
#[tokio::test]
async fn begin_raw_sees_malformed_values_and_the_http2_authority() {
    let h = harness();
    let web = &h.web;
    let peer = Some("192.0.2.1".parse().unwrap());
    fn lines<'a>(
        lines: &'a [(&'a str, &'a [u8])],
    ) -> impl Fn() -> std::iter::Copied<std::slice::Iter<'a, (&'a str, &'a [u8])>> {
        move || lines.iter().copied()
    }
    // A cross-site POST is refused.
    let cross = [("origin", b"https://evil.example".as_slice())];
    assert!(
        web.begin_raw("POST", lines(&cross), Some("example.test"), peer)
            .is_err()
    );
    // The header name's case does not matter: a `Host` header wins over
    // the authority.
    let capital = [
        ("Host", b"other.test".as_slice()),
        ("origin", b"https://example.test".as_slice()),
    ];
    assert!(
        web.begin_raw("POST", lines(&capital), Some("example.test"), peer)
            .is_err()
    );
    // The authority also stands in when another header is not UTF-8 (the
    // lossy path).
    let lossy = [
        ("x-junk", b"\xfe".as_slice()),
        ("origin", b"https://example.test".as_slice()),
    ];
    assert!(
        web.begin_raw("POST", lines(&lossy), Some("example.test"), peer)
            .is_ok()
    );
    assert!(
        web.begin_raw("POST", lines(&lossy), Some("evil.example"), peer)
            .is_err()
    );
    // Same origin through the authority alone: allowed.
    let same = [("origin", b"https://example.test".as_slice())];
    assert!(
        web.begin_raw("POST", lines(&same), Some("example.test"), peer)
            .is_ok()
    );
    // A Host header wins over the authority.
    let host = [
        ("host", b"other.test".as_slice()),
        ("origin", b"https://example.test".as_slice()),
    ];
    assert!(
        web.begin_raw("POST", lines(&host), Some("example.test"), peer)
            .is_err()
    );
    // A malformed Origin is not a missing one: still refused.
    let malformed = [("origin", b"https://example.test\xff".as_slice())];
    assert!(
        web.begin_raw("POST", lines(&malformed), Some("example.test"), peer)
            .is_err()
    );
    // The user agent survives lossily next to a malformed header.
    let agent = [
        ("user-agent", b"probe/1".as_slice()),
        ("x-junk", b"\xfe".as_slice()),
    ];
    let state = web
        .begin_raw("GET", lines(&agent), Some("example.test"), peer)
        .unwrap();
    assert_eq!(state.client().user_agent.as_deref(), Some("probe/1"));
}

/// The app's store, stopped in the middle of a query (a stalled network,
/// where its driver has no timeout of its own).
struct StalledStore(Arc<MemoryUserStore>);

impl UserStore for StalledStore {
    type User = User;

    async fn find_by_login(&self, _login: &LoginName) -> Result<Option<User>, UserStoreError> {
        std::future::pending().await
    }
    async fn find_by_id(&self, id: &String) -> Result<Option<User>, UserStoreError> {
        self.0.find_by_id(id).await
    }
    async fn set_password_hash(
        &self,
        id: &String,
        current: &str,
        new: &str,
    ) -> Result<bool, UserStoreError> {
        self.0.set_password_hash(id, current, new).await
    }
}

/// A login whose store stops answering ends after 10 s with 503 and
/// `Retry-After`, never a hang. (Tokio's paused clock: no real wait.)
#[tokio::test(start_paused = true)]
async fn a_login_on_a_store_that_stops_answering_answers_503_in_bounded_time() {
    let memory = Arc::new(MemoryUserStore::new());
    let h = harness_with(
        StalledStore(memory.clone()),
        memory,
        ThrottleConfig::default(),
    );
    let started = tokio::time::Instant::now();
    // An outer limit on the same paused clock turns a hang into a failure.
    let (password, from) = (pw(PASSWORD), client("192.0.2.1"));
    let login = h.auth.login("alice", &password, &from, None);
    let error = tokio::time::timeout(Duration::from_secs(3600), login)
        .await
        .expect("the login hung")
        .unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(10));
    assert!(matches!(error, AuthError::Unavailable(_)), "{error:?}");
    assert_eq!((error.status(), error.retry_after_secs()), (503, Some(1)));
}

/// A security header whose value cannot be a header value is refused when
/// the pipeline is built: the adapters could only drop it, and responses
/// would go out without that protection.
#[test]
fn an_unsendable_security_header_is_refused_at_build() {
    for bad in [
        "default-src 'none'\r\nX-Injected: yes",
        "frame-ancestors 'none'\n",
        "frame-ancestors 'n\u{f6}ne'",
    ] {
        let built = Auth::builder(MemoryUserStore::new())
            .security_headers(auth_core::web::SecurityHeaders::new().content_security_policy(bad))
            .build();
        assert!(
            matches!(
                built,
                Err(auth_core::BuildError::InvalidSecurityHeader(
                    "content-security-policy"
                ))
            ),
            "{bad:?}"
        );
    }
    let built = Auth::builder(MemoryUserStore::new())
        .security_headers(
            auth_core::web::SecurityHeaders::new()
                .content_security_policy("default-src 'self';\tframe-ancestors 'none'")
                .referrer_policy("strict-origin"),
        )
        .build();
    assert!(built.is_ok());
}

/// [`common::lock_password`] on `h`.
async fn lock_account(h: &Harness, name: &str) {
    common::lock_password(&h.auth, name).await;
}

/// A password change ends the throttle standing of every device known
/// before it (whoever signed in with the old password, a phisher
/// included, gets no device budget for guessing the new one), except the
/// one that made the change; a lock others put on the account stands.
/// Sign out everywhere does the same.
#[tokio::test]
async fn a_password_change_ends_the_standing_of_other_devices() {
    const NEW: &str = "another horse battery staple";
    let h = harness();
    let alice = register(&h, "alice").await;
    let with_device = |ip: &str| {
        let mut c = client(ip);
        c.device = Some(auth_core::session::SessionId::generate().unwrap());
        c
    };
    let before = with_device("192.0.2.9");
    let here = with_device("192.0.2.10");
    let sign_in = |c: Client, password: &'static str| {
        let auth = h.auth.clone();
        async move {
            match auth.login("alice", &pw(password), &c, None).await {
                Ok(LoginOutcome::LoggedIn(session)) => Ok(session),
                Ok(other) => panic!("no second factor: {other:?}"),
                Err(error) => Err(error.status()),
            }
        }
    };
    sign_in(before.clone(), PASSWORD).await.unwrap();
    let mut session = sign_in(here.clone(), PASSWORD).await.unwrap();
    lock_account(&h, "alice").await;
    assert_eq!(
        sign_in(with_device("203.0.113.1"), PASSWORD)
            .await
            .unwrap_err(),
        429
    );
    sign_in(before.clone(), PASSWORD)
        .await
        .expect("known before the change: not held by the lock");
    h.auth
        .change_password(&mut session, &pw(PASSWORD), &pw(NEW), &here)
        .await
        .unwrap();
    assert_eq!(
        sign_in(with_device("203.0.113.2"), NEW).await.unwrap_err(),
        429,
        "the lock stands"
    );
    assert_eq!(
        sign_in(before.clone(), NEW).await.unwrap_err(),
        429,
        "a device known before the change"
    );
    sign_in(here.clone(), NEW)
        .await
        .expect("the device that changed it keeps its standing");

    // Sign out everywhere, from `here`: `before` (known again after an
    // unlock and a sign-in) loses its standing too, and the lock stands.
    h.auth.unlock_account(alice.id()).await.unwrap();
    sign_in(before.clone(), NEW).await.unwrap();
    let mut session = sign_in(here.clone(), NEW).await.unwrap();
    lock_account(&h, "alice").await;
    h.auth
        .sign_out_everywhere(&mut session, &here)
        .await
        .unwrap();
    assert_eq!(
        sign_in(with_device("203.0.113.3"), NEW).await.unwrap_err(),
        429,
        "the lock stands"
    );
    assert_eq!(
        sign_in(before.clone(), NEW).await.unwrap_err(),
        429,
        "a device known before sign out everywhere"
    );
    sign_in(here.clone(), NEW)
        .await
        .expect("the device that signed out everywhere keeps its standing");
}

/// Without the `jwt` feature no bearer token is valid, and a request that
/// carries one is still decided by it alone: its session cookie is not
/// read, so `Authorization: Bearer anything` never signs a request in (nor
/// turns a cookie request into one that skips the CSRF check with the
/// cookie's user). Runs in the test command's `auth-core` run without
/// optional features.
#[cfg(not(feature = "jwt"))]
#[tokio::test]
async fn without_jwt_a_bearer_request_is_never_signed_in() {
    let auth = Auth::builder(MemoryUserStore::new()).build().unwrap();
    // A session of this `Auth`'s own.
    auth.authenticator()
        .register("bob", &pw(PASSWORD), &client("192.0.2.1"))
        .await
        .unwrap();
    let LoginOutcome::LoggedIn(session) = auth
        .authenticator()
        .login("bob", &pw(PASSWORD), &client("192.0.2.1"), None)
        .await
        .unwrap()
    else {
        panic!("no second factor")
    };
    let cookie = auth.authenticator().session_cookie(&session);
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let peer = Some("192.0.2.1".parse().unwrap());
    let host = ("host", "example.test");
    let with_cookie = auth
        .begin("GET", [host, ("cookie", cookie.as_str())], peer)
        .unwrap();
    assert!(with_cookie.user().await.is_ok(), "the cookie signs in");
    for token in ["Bearer anything", "Bearer eyJhbGciOiJub25lIn0.e30."] {
        let request = auth
            .begin(
                "GET",
                [host, ("cookie", cookie.as_str()), ("authorization", token)],
                peer,
            )
            .unwrap();
        assert!(request.is_bearer());
        assert!(matches!(
            request.user().await,
            Err(AuthError::NotAuthenticated)
        ));
    }
}

/// A request with two `Origin` or two `Sec-Fetch-Site` lines is refused
/// when its method is unsafe (a browser sends each once; two mean a proxy
/// in between decides); a safe one, or one line each, is judged as usual.
#[test]
fn repeated_origin_headers_are_refused() {
    let auth = Auth::builder(MemoryUserStore::new()).build().unwrap();
    let host = ("host", "example.test");
    for headers in [
        [
            host,
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-site", "same-origin"),
        ],
        [
            host,
            ("origin", "https://evil.test"),
            ("origin", "https://example.test"),
        ],
        [
            host,
            ("origin", "https://example.test"),
            ("Origin", "https://example.test"),
        ],
    ] {
        assert!(auth.check_csrf("POST", headers).is_err(), "{headers:?}");
        assert!(auth.check_csrf("GET", headers).is_ok(), "{headers:?}");
    }
    assert!(
        auth.check_csrf("POST", [host, ("sec-fetch-site", "same-origin")])
            .is_ok()
    );
    assert!(
        auth.check_csrf("POST", [host, ("origin", "https://example.test")])
            .is_ok()
    );
    // Secure cookies (the default): a plain-HTTP page of the same host is
    // another origin, but on a loopback host.
    assert!(
        auth.check_csrf("POST", [host, ("origin", "http://example.test")])
            .is_err()
    );
    assert!(
        auth.check_csrf(
            "POST",
            [
                ("host", "localhost:3000"),
                ("origin", "http://localhost:3000")
            ]
        )
        .is_ok()
    );
}

/// The app-data keys the toolkit keeps its own state under (`auth.`:
/// passkey ceremonies, a TOTP enrolment, a token sign-in) are refused to
/// the app (500), so neither a mistake nor a key a client chose can
/// overwrite that state; other keys work.
#[tokio::test]
async fn the_toolkits_session_keys_are_reserved() {
    let request = plain_post();
    for key in [
        "auth.totp.enrolment",
        "auth.passkey.sign_in",
        "auth.anything",
    ] {
        let err = request.insert(key, &"forged").await.unwrap_err();
        assert_eq!(err.status(), 500, "{key}");
        let err = request.get::<String>(key).await.unwrap_err();
        assert_eq!(err.status(), 500, "{key}");
    }
    request.insert("cart", &3).await.unwrap();
    assert_eq!(request.get::<i32>("cart").await.unwrap(), Some(3));
    request.insert("authors", &1).await.unwrap();
}
