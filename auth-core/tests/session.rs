//! The session manager's rules, with an injected clock for every timeout:
//! rotation, idle and absolute deadlines, server-side logout, revocation,
//! security stamps, listing by handle, MFA-pending expiry, typed data.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use auth_core::clock::{Clock, ManualClock};
use auth_core::session::{
    AuthState, ClientInfo, Factor, MemoryStore, NewSession, SessionConfig, SessionError,
    SessionHandle, SessionManager, StampSource, StoreError,
};

const MIN: Duration = Duration::from_secs(60);

fn setup() -> (SessionManager, ManualClock) {
    let clock = ManualClock::starting_now();
    let store = MemoryStore::with_clock(Arc::new(clock.clone()));
    let config = SessionConfig::builder()
        .idle_timeout(30 * MIN)
        .absolute_timeout(120 * MIN)
        .touch_interval(MIN)
        .build()
        .unwrap();
    let manager = SessionManager::new(Arc::new(store), config).with_clock(Arc::new(clock.clone()));
    (manager, clock)
}

fn client() -> NewSession {
    NewSession {
        client: ClientInfo {
            ip: Some("198.51.100.7".into()),
            user_agent: Some("Mozilla/5.0 test".into()),
        },
        persistent: false,
    }
}

async fn login(manager: &SessionManager, user: &str, stamp: &str) -> auth_core::session::Session {
    login_as(manager, client(), user, stamp).await
}

/// [`login`] from a session made with `new` (a persistent one, say).
async fn login_as(
    manager: &SessionManager,
    new: NewSession,
    user: &str,
    stamp: &str,
) -> auth_core::session::Session {
    let mut session = manager.create(new).await.unwrap();
    let now = manager.clock().now();
    let (user, stamp) = (user.to_owned(), stamp.to_owned());
    manager
        .rotate_with(&mut session, |record| {
            record.user_id = Some(user.clone());
            record.security_stamp = Some(stamp.clone());
            record.auth = AuthState::Authenticated {
                factors: vec![Factor::Password],
                at: now,
            };
        })
        .await
        .unwrap();
    session
}

#[tokio::test]
async fn create_then_load_by_cookie_value() {
    let (manager, _) = setup();
    let session = manager.create(client()).await.unwrap();
    assert!(session.id_changed());
    let loaded = manager.load(&session.id().encode()).await.unwrap().unwrap();
    assert_eq!(loaded.key(), session.key());
    assert!(!loaded.id_changed());
    assert_eq!(loaded.record().ip.as_deref(), Some("198.51.100.7"));
    for garbage in ["", "x", "%%%", &"A".repeat(43), &"A".repeat(44)] {
        assert!(manager.load(garbage).await.unwrap().is_none(), "{garbage}");
    }
}

#[tokio::test]
async fn rotation_kills_the_old_id_and_keeps_the_data() {
    let (manager, _) = setup();
    let mut session = manager.create(client()).await.unwrap();
    manager
        .insert(&mut session, "cart", &vec![1, 2, 3])
        .await
        .unwrap();
    let old = session.id().encode();
    manager.rotate(&mut session).await.unwrap();
    assert_ne!(session.id().encode(), old);
    assert!(session.id_changed());
    assert!(
        manager.load(&old).await.unwrap().is_none(),
        "old ID is dead"
    );
    let loaded = manager.load(&session.id().encode()).await.unwrap().unwrap();
    assert_eq!(loaded.get::<Vec<i32>>("cart").unwrap(), Some(vec![1, 2, 3]));
}

#[tokio::test]
async fn a_pre_login_id_dies_at_login() {
    let (manager, _) = setup();
    let planted = manager.create(client()).await.unwrap();
    let planted_cookie = planted.id().encode();
    let mut session = manager.load(&planted_cookie).await.unwrap().unwrap();
    manager
        .rotate_with(&mut session, |r| r.user_id = Some("alice".into()))
        .await
        .unwrap();
    assert!(manager.load(&planted_cookie).await.unwrap().is_none());
    assert_eq!(
        manager
            .load(&session.id().encode())
            .await
            .unwrap()
            .unwrap()
            .user_id(),
        Some("alice")
    );
}

#[tokio::test]
async fn idle_timeout_is_enforced_server_side() {
    let (manager, clock) = setup();
    let session = login(&manager, "u1", "s1").await;
    let cookie = session.id().encode();
    clock.advance(29 * MIN);
    assert!(
        manager.load(&cookie).await.unwrap().is_some(),
        "within idle"
    );
    // That load touched it: another 29 minutes is still fine.
    clock.advance(29 * MIN);
    assert!(manager.load(&cookie).await.unwrap().is_some());
    clock.advance(30 * MIN + Duration::from_secs(1));
    assert!(
        manager.load(&cookie).await.unwrap().is_none(),
        "idle expired"
    );
}

/// Anonymous sessions (anyone can make one) idle out after 10 minutes, a
/// user's after the configured 30.
#[tokio::test]
async fn anonymous_sessions_idle_out_sooner() {
    let (manager, clock) = setup();
    let anonymous = manager.create(client()).await.unwrap().id().encode();
    let user = login(&manager, "u1", "s1").await.id().encode();
    clock.advance(9 * MIN);
    assert!(manager.load(&anonymous).await.unwrap().is_some());
    // Touched at 9 minutes: alive until 19.
    clock.advance(10 * MIN + Duration::from_secs(1));
    assert!(
        manager.load(&anonymous).await.unwrap().is_none(),
        "anonymous idle expired"
    );
    assert!(
        manager.load(&user).await.unwrap().is_some(),
        "a user's is not"
    );
}

/// A flood of anonymous sessions stays within its own cap, and never keeps
/// a login out of a full store; only users' sessions fill it.
#[tokio::test]
async fn anonymous_sessions_never_block_a_login() {
    let clock = ManualClock::starting_now();
    let store = Arc::new(
        MemoryStore::with_clock(Arc::new(clock.clone()))
            .capacity(100)
            .anonymous_capacity(20),
    );
    let manager = SessionManager::new(store.clone(), SessionConfig::default())
        .with_clock(Arc::new(clock.clone()));
    for _ in 0..500 {
        manager.create(client()).await.unwrap();
    }
    assert!(store.anonymous_len() <= 20, "{}", store.anonymous_len());
    // Fill the rest with users' sessions: every login gets in.
    for n in 0..100 {
        let user = format!("u{n}");
        manager
            .create_as(client(), |record| {
                record.user_id = Some(user.clone());
                record.auth = AuthState::Authenticated {
                    factors: vec![Factor::Password],
                    at: clock.now(),
                };
            })
            .await
            .unwrap();
    }
    assert_eq!(store.anonymous_len(), 0, "anonymous sessions made room");
    // Full of users: a visitor's session is refused, no login is evicted.
    assert!(matches!(
        manager.create(client()).await,
        Err(SessionError::Store(StoreError::Full))
    ));
    assert_eq!(store.len(), 100);
}

/// A flood of anonymous sessions from one network (an address, a /64,
/// the /64s of one /48) ends its own sessions when the anonymous cap is
/// reached, not other visitors' (an anonymous session may hold a sign-in
/// under way).
#[tokio::test]
async fn a_flood_from_one_network_evicts_its_own_sessions() {
    let clock = ManualClock::starting_now();
    let store = Arc::new(MemoryStore::with_clock(Arc::new(clock.clone())).anonymous_capacity(20));
    let manager = SessionManager::new(store.clone(), SessionConfig::default())
        .with_clock(Arc::new(clock.clone()));
    let from = |ip: &str| {
        let mut new = client();
        new.client.ip = Some(ip.to_owned());
        new
    };
    let visitors: Vec<String> = (1..=5)
        .map(|n| format!("192.0.2.{n}"))
        .chain(["2001:db8:1:2::1".to_owned()])
        .collect();
    let mut kept = Vec::new();
    for ip in &visitors {
        kept.push(manager.create(from(ip)).await.unwrap().id().encode());
    }
    clock.advance(Duration::from_secs(60));
    // Fresher than the visitors', from one address, from addresses of one
    // /64 and from /64s of one /48, each its own.
    for n in 0..300 {
        let ip = match n % 3 {
            0 => "203.0.113.9".to_owned(),
            1 => format!("2001:db8:9:9::{n:x}"),
            _ => format!("2001:db8:7:{n:x}::1"),
        };
        manager.create(from(&ip)).await.unwrap();
    }
    assert!(store.anonymous_len() <= 20, "{}", store.anonymous_len());
    for id in &kept {
        assert!(
            manager.load(id).await.unwrap().is_some(),
            "a visitor's session stays"
        );
    }
}

/// One account logging in again and again (an attacker's own) cannot fill
/// the store for everybody else: past its cap, each new session of a user
/// ends that user's session that expires soonest.
#[tokio::test]
async fn one_user_cannot_fill_the_store() {
    let clock = ManualClock::starting_now();
    let store = Arc::new(
        MemoryStore::with_clock(Arc::new(clock.clone()))
            .capacity(20)
            .per_user_capacity(5),
    );
    let manager = SessionManager::new(store.clone(), SessionConfig::default())
        .with_clock(Arc::new(clock.clone()));
    let mut mallory = Vec::new();
    for _ in 0..50 {
        mallory.push(login(&manager, "mallory", "s1").await.id().encode());
        clock.advance(Duration::from_secs(1));
    }
    assert_eq!(store.len(), 5);
    // The newest five live, the older ones ended.
    for (n, cookie) in mallory.iter().enumerate() {
        let alive = manager.load(cookie).await.unwrap().is_some();
        assert_eq!(alive, n >= 45, "session {n}");
    }
    for n in 0..15 {
        login(&manager, &format!("u{n}"), "s1").await;
    }
    assert_eq!(store.len(), 20);
}

/// Whoever has only the password makes logins that wait for the second
/// factor: however many, they end only each other (at most 8 held), never
/// the user's signed-in sessions. A signed-in session saved or rotated at
/// the cap ends nothing.
#[tokio::test]
async fn logins_waiting_for_a_second_factor_never_end_signed_in_sessions() {
    let clock = ManualClock::starting_now();
    let store = Arc::new(
        MemoryStore::with_clock(Arc::new(clock.clone()))
            .capacity(1000)
            .per_user_capacity(5),
    );
    let manager = SessionManager::new(store.clone(), SessionConfig::default())
        .with_clock(Arc::new(clock.clone()));
    let mut signed_in = Vec::new();
    for _ in 0..5 {
        signed_in.push(login(&manager, "alice", "s1").await);
    }
    clock.advance(Duration::from_secs(1));
    for _ in 0..50 {
        let now = clock.now();
        manager
            .create_as(client(), |record| {
                record.user_id = Some("alice".into());
                record.auth = AuthState::MfaPending {
                    methods: vec![Factor::Totp],
                    first: Factor::Password,
                    expires_at: now.saturating_add(5 * MIN),
                };
            })
            .await
            .unwrap();
    }
    assert_eq!(store.len(), 5 + 5, "five signed in, five pending");
    // At the cap, a save and a rotation of a signed-in session end nothing.
    let mut first = signed_in.remove(0);
    manager
        .update(&mut first, |record| {
            record.data.insert("k".into(), 1.into());
        })
        .await
        .unwrap();
    manager.rotate(&mut first).await.unwrap();
    signed_in.push(first);
    for session in &signed_in {
        let cookie = session.id().encode();
        assert!(manager.load(&cookie).await.unwrap().is_some());
    }
}

#[tokio::test]
async fn absolute_timeout_is_never_extended() {
    let (manager, clock) = setup();
    let session = login(&manager, "u1", "s1").await;
    let cookie = session.id().encode();
    // Active every 20 minutes: idle never triggers, absolute (2 h) does.
    for _ in 0..5 {
        clock.advance(20 * MIN);
        assert!(manager.load(&cookie).await.unwrap().is_some());
    }
    clock.advance(20 * MIN + Duration::from_secs(1));
    assert!(manager.load(&cookie).await.unwrap().is_none());
}

#[tokio::test]
async fn last_seen_is_written_at_most_once_per_interval() {
    let (manager, clock) = setup();
    let session = manager.create(client()).await.unwrap();
    let cookie = session.id().encode();
    for _ in 0..5 {
        clock.advance(Duration::from_secs(5));
        let loaded = manager.load(&cookie).await.unwrap().unwrap();
        assert_eq!(loaded.record().version, 0, "no write within the interval");
    }
    clock.advance(MIN);
    let loaded = manager.load(&cookie).await.unwrap().unwrap();
    assert_eq!(loaded.record().version, 1, "one touch after the interval");
    assert_eq!(loaded.record().last_seen_at, clock.now());
}

#[tokio::test]
async fn logout_is_server_side() {
    let (manager, _) = setup();
    let session = login(&manager, "alice", "s1").await;
    let cookie = session.id().encode();
    manager.destroy(session).await.unwrap();
    assert!(
        manager.load(&cookie).await.unwrap().is_none(),
        "replay finds nothing"
    );
}

#[tokio::test]
async fn revoke_all_of_a_user_optionally_keeping_the_current() {
    let (manager, _) = setup();
    let current = login(&manager, "alice", "s1").await;
    let other = login(&manager, "alice", "s1").await;
    let bobs = login(&manager, "bob", "s1").await;
    assert_eq!(
        manager
            .destroy_all_for_user("alice", Some(&current))
            .await
            .unwrap(),
        1
    );
    assert!(
        manager
            .load(&current.id().encode())
            .await
            .unwrap()
            .is_some()
    );
    assert!(manager.load(&other.id().encode()).await.unwrap().is_none());
    assert!(manager.load(&bobs.id().encode()).await.unwrap().is_some());
    manager.destroy_all_for_user("alice", None).await.unwrap();
    assert!(
        manager
            .load(&current.id().encode())
            .await
            .unwrap()
            .is_none()
    );
}

#[derive(Debug, Default)]
struct Stamps(Mutex<HashMap<String, String>>);

#[async_trait]
impl StampSource for Stamps {
    async fn current_stamp(&self, user_id: &str) -> Result<Option<String>, StoreError> {
        Ok(self.0.lock().unwrap().get(user_id).cloned())
    }
}

#[tokio::test]
async fn a_changed_security_stamp_ends_older_sessions() {
    let (manager, _) = setup();
    let stamps = Arc::new(Stamps::default());
    stamps.0.lock().unwrap().insert("alice".into(), "s1".into());
    stamps.0.lock().unwrap().insert("bob".into(), "s1".into());
    let manager = manager.with_stamp_source(stamps.clone());
    let alice = login(&manager, "alice", "s1").await;
    let bob = login(&manager, "bob", "s1").await;
    let anonymous = manager.create(client()).await.unwrap();
    assert!(manager.load(&alice.id().encode()).await.unwrap().is_some());
    // Password change / "sign out everywhere": a new stamp.
    stamps.0.lock().unwrap().insert("alice".into(), "s2".into());
    assert!(manager.load(&alice.id().encode()).await.unwrap().is_none());
    assert!(
        manager
            .list_for_user("alice", None)
            .await
            .unwrap()
            .is_empty()
    );
    // A deleted or disabled user: no stamp at all.
    stamps.0.lock().unwrap().remove("bob");
    assert!(manager.load(&bob.id().encode()).await.unwrap().is_none());
    // Anonymous sessions have no user to check.
    assert!(
        manager
            .load(&anonymous.id().encode())
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn users_list_their_sessions_by_handles_that_are_not_tokens() {
    let (manager, clock) = setup();
    let first = login(&manager, "alice", "s1").await;
    clock.advance(Duration::from_secs(5));
    let second = login(&manager, "alice", "s1").await;
    login(&manager, "bob", "s1").await;
    let list = manager.list_for_user("alice", Some(&second)).await.unwrap();
    assert_eq!(list.len(), 2);
    assert!(
        list[0].current && !list[1].current,
        "most recent first, current marked"
    );
    for info in &list {
        let handle = info.handle.as_str();
        for session in [&first, &second] {
            assert!(!session.id().encode().contains(handle));
            assert!(!session.key().to_hex().contains(handle));
        }
        assert_eq!(info.user_agent.as_deref(), Some("Mozilla/5.0 test"));
        assert_eq!(info.ip.as_deref(), Some("198.51.100.7"));
        // The serialised form (what an API returns) carries no token.
        let json = serde_json::to_string(info).unwrap();
        assert!(!json.contains(&first.id().encode()) && !json.contains(&second.id().encode()));
    }
    // Revoke one by handle; another user's handle is simply not found.
    let first_handle = first.handle();
    assert!(
        !manager
            .destroy_by_handle("bob", &first_handle)
            .await
            .unwrap()
    );
    assert!(
        manager
            .destroy_by_handle("alice", &first_handle)
            .await
            .unwrap()
    );
    assert!(manager.load(&first.id().encode()).await.unwrap().is_none());
    assert!(
        !manager
            .destroy_by_handle("alice", &SessionHandle::new("nope"))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn an_mfa_pending_state_expires() {
    let (manager, clock) = setup();
    let mut session = manager.create(client()).await.unwrap();
    let deadline = clock
        .now()
        .saturating_add(manager.config().mfa_pending_timeout());
    manager
        .rotate_with(&mut session, |r| {
            r.user_id = Some("alice".into());
            r.auth = AuthState::MfaPending {
                methods: vec![Factor::Totp],
                first: Factor::Password,
                expires_at: deadline,
            };
        })
        .await
        .unwrap();
    let cookie = session.id().encode();
    clock.advance(4 * MIN);
    let loaded = manager.load(&cookie).await.unwrap().unwrap();
    assert_eq!(
        loaded.authenticated_user(),
        None,
        "pending is not authenticated"
    );
    clock.advance(MIN + Duration::from_secs(1));
    assert!(manager.load(&cookie).await.unwrap().is_none());
}

#[tokio::test]
async fn recent_authentication_is_measured_by_the_clock() {
    let (manager, clock) = setup();
    let session = login(&manager, "alice", "s1").await;
    assert!(session.authenticated_within(clock.now(), 10 * MIN));
    clock.advance(11 * MIN);
    assert!(!session.authenticated_within(clock.now(), 10 * MIN));
}

#[tokio::test]
async fn typed_data_round_trips_and_bad_types_are_errors() {
    let (manager, _) = setup();
    let mut session = manager.create(client()).await.unwrap();
    manager.insert(&mut session, "n", &42u32).await.unwrap();
    let loaded = manager.load(&session.id().encode()).await.unwrap().unwrap();
    assert_eq!(loaded.get::<u32>("n").unwrap(), Some(42));
    assert_eq!(loaded.get::<u32>("missing").unwrap(), None);
    assert!(matches!(
        loaded.get::<String>("n"),
        Err(SessionError::Data(_))
    ));
    manager.remove(&mut session, "n").await.unwrap();
    assert_eq!(session.get::<u32>("n").unwrap(), None);
}

#[tokio::test]
async fn updates_on_a_destroyed_session_never_resurrect_it() {
    let (manager, _) = setup();
    let session = manager.create(client()).await.unwrap();
    let mut stale = session.clone();
    manager.destroy(session).await.unwrap();
    assert!(matches!(
        manager.insert(&mut stale, "x", &1).await,
        Err(SessionError::Gone)
    ));
    assert!(matches!(
        manager.rotate(&mut stale).await,
        Err(SessionError::Gone)
    ));
    assert!(manager.load(&stale.id().encode()).await.unwrap().is_none());
}

#[tokio::test]
async fn persistent_sessions_get_the_longer_lifetime() {
    let (manager, clock) = setup();
    let session = manager
        .create(NewSession {
            persistent: true,
            ..client()
        })
        .await
        .unwrap();
    assert!(session.record().persistent);
    assert_eq!(
        session.record().absolute_expires_at,
        clock
            .now()
            .saturating_add(manager.config().persistent_absolute_timeout())
    );
}

/// A signed-in "remember me" session idles out after the persistent idle
/// timeout (7 days by default), not the browser session's 30 minutes; an
/// anonymous one keeps the short timeout, and the absolute lifetime still
/// ends it.
#[tokio::test]
async fn persistent_sessions_idle_out_after_the_persistent_idle_timeout() {
    let (manager, clock) = setup();
    let day = 24 * 60 * MIN;
    assert_eq!(manager.config().persistent_idle_timeout(), 7 * day);
    let persistent = || NewSession {
        persistent: true,
        ..client()
    };
    let anonymous = manager.create(persistent()).await.unwrap().id().encode();
    let cookie = login_as(&manager, persistent(), "u1", "s1")
        .await
        .id()
        .encode();
    clock.advance(6 * day);
    assert!(
        manager.load(&cookie).await.unwrap().is_some(),
        "six idle days are within the persistent idle timeout"
    );
    assert!(
        manager.load(&anonymous).await.unwrap().is_none(),
        "an anonymous session keeps the short idle timeout"
    );
    // Touched at day 6: alive a second before day 13 (which touches it
    // again), and gone seven idle days and a second after that.
    clock.advance(7 * day - Duration::from_secs(1));
    assert!(manager.load(&cookie).await.unwrap().is_some());
    clock.advance(7 * day + Duration::from_secs(1));
    assert!(
        manager.load(&cookie).await.unwrap().is_none(),
        "seven idle days end it"
    );
    // Used every six days, it still ends at the absolute lifetime (30 days).
    let cookie = login_as(&manager, persistent(), "u1", "s1")
        .await
        .id()
        .encode();
    for _ in 0..4 {
        clock.advance(6 * day);
        assert!(manager.load(&cookie).await.unwrap().is_some());
    }
    clock.advance(6 * day + Duration::from_secs(1));
    assert!(
        manager.load(&cookie).await.unwrap().is_none(),
        "past the absolute lifetime"
    );
}

#[test]
fn configuration_is_validated() {
    assert!(
        SessionConfig::builder()
            .idle_timeout(Duration::ZERO)
            .build()
            .is_err()
    );
    assert!(
        SessionConfig::builder()
            .idle_timeout(3 * 3600 * Duration::from_secs(1))
            .absolute_timeout(2 * 3600 * Duration::from_secs(1))
            .build()
            .is_err()
    );
    assert!(
        SessionConfig::builder()
            .touch_interval(Duration::from_secs(3600))
            .build()
            .is_err()
    );
    let zero = SessionConfig::builder()
        .anonymous_idle_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(zero.to_string().contains("positive"), "{zero}");
    // The persistent idle timeout is at most the persistent absolute
    // lifetime; a shorter persistent lifetime set alone still builds.
    let day = 24 * 3600 * Duration::from_secs(1);
    // A shorter one than the idle timeout is kept (the app's choice), but
    // not at or below the touch interval.
    let short = SessionConfig::builder()
        .persistent_idle_timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    assert_eq!(short.persistent_idle_timeout(), Duration::from_secs(120));
    assert!(
        SessionConfig::builder()
            .persistent_idle_timeout(Duration::from_secs(60))
            .build()
            .is_err()
    );
    let long = SessionConfig::builder()
        .persistent_idle_timeout(31 * day)
        .build()
        .unwrap();
    assert_eq!(long.persistent_idle_timeout(), 30 * day);
    let three_days = SessionConfig::builder()
        .persistent_absolute_timeout(3 * day)
        .build()
        .unwrap();
    assert_eq!(three_days.persistent_idle_timeout(), 3 * day);
    assert!(SessionConfig::builder().build().is_ok());
}

#[test]
fn debug_output_reveals_no_secret() {
    let id = auth_core::session::SessionId::generate().unwrap();
    assert_eq!(format!("{id:?}"), "SessionId([REDACTED])");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (manager, _) = setup();
        let session = login(&manager, "alice", "stamp-secret-value").await;
        let mut session = session;
        manager
            .insert(&mut session, "api_token", &"token-secret-value")
            .await
            .unwrap();
        let printed = format!("{session:?} {:?}", session.record());
        assert!(!printed.contains(&session.id().encode()));
        assert!(!printed.contains("stamp-secret-value"));
        assert!(!printed.contains("token-secret-value"));
    });
}

/// A store that stops answering in the middle of a read (a stalled
/// network, where the driver has no timeout of its own) fails the load
/// after the 5 s deadline, as a store error the flows answer 503 with
/// `Retry-After`: the request never hangs and is never admitted. (Time is
/// tokio's paused clock: the deadline passes without waiting.)
#[tokio::test(start_paused = true)]
async fn a_store_that_stops_answering_fails_the_load_in_bounded_time() {
    #[derive(Debug)]
    struct Stalled;
    #[async_trait]
    impl StampSource for Stalled {
        async fn current_stamp(&self, _user: &str) -> Result<Option<String>, StoreError> {
            std::future::pending().await
        }
    }
    let (manager, _clock) = setup();
    let session = login(&manager, "alice", "s1").await;
    let manager = manager.with_stamp_source(Arc::new(Stalled));
    let started = tokio::time::Instant::now();
    // Without the deadline this would wait forever: an outer limit (on
    // the same paused clock) turns that into a failure.
    let error = tokio::time::timeout(60 * MIN, manager.load(&session.id().encode()))
        .await
        .expect("the load hung")
        .unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    let error = auth_core::flow::AuthError::from(error);
    assert_eq!((error.status(), error.retry_after_secs()), (503, Some(1)));
}
