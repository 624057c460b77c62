//! The [`SessionStore`] contract: what the memory, SQLite, PostgreSQL,
//! Redis and tower-sessions stores keep, and what a store of your own must
//! keep for the session manager's guarantees (no lost write, no
//! resurrected session, revocation) to hold.
//!
//! Run it with [`session_store_suite`] or
//! [`session_store_tests!`](crate::session_store_tests); every case takes a
//! fresh store and the store's [`SessionStoreCaps`].

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::{concurrently, run_case, unique};
use crate::clock::{Clock, SystemClock};
use crate::session::{
    AuthState, SaveOutcome, SessionConfig, SessionId, SessionKey, SessionManager, SessionRecord,
    SessionStore, StoreError,
};

/// What a session store can do beyond the common core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionStoreCaps {
    /// Lists and deletes by user ([`SessionStore::list_by_user`],
    /// [`SessionStore::delete_by_user`]); `false` for a store that answers
    /// [`StoreError::Unsupported`] (the tower-sessions bridge). Must equal
    /// [`SessionStore::revokes_by_user`].
    pub listing: bool,
    /// Expires records natively (a TTL), so
    /// [`SessionStore::delete_expired`] may count nothing.
    pub native_expiry: bool,
}

impl Default for SessionStoreCaps {
    /// A store that lists by user and deletes expired records itself (the
    /// memory and SQL stores).
    fn default() -> Self {
        Self {
            listing: true,
            native_expiry: false,
        }
    }
}

/// A record of `user` (or anonymous), valid for `ttl` from now (absolute
/// deadline `2 * ttl`), with every field set.
pub fn record(user: Option<&str>, ttl: Duration) -> SessionRecord {
    let now = SystemClock.now();
    SessionRecord {
        user_id: user.map(str::to_owned),
        auth: AuthState::Anonymous,
        created_at: now,
        last_seen_at: now,
        idle_expires_at: now.saturating_add(ttl),
        absolute_expires_at: now.saturating_add(ttl * 2),
        persistent: false,
        ip: Some("192.0.2.1".into()),
        user_agent: Some("suite".into()),
        security_stamp: Some("stamp".into()),
        data: BTreeMap::from([("k".to_owned(), serde_json::json!({"n": 1}))]),
        version: 0,
    }
}

/// A record of `user` (or anonymous) whose deadlines passed 5 seconds ago.
pub fn expired_record(user: Option<&str>) -> SessionRecord {
    let mut r = record(user, Duration::from_secs(60));
    let past = SystemClock.now().saturating_sub(Duration::from_secs(5));
    r.idle_expires_at = past;
    r.absolute_expires_at = past;
    r
}

/// A fresh random session key.
pub fn new_key() -> SessionKey {
    SessionId::generate()
        .expect("the OS random number generator works")
        .key()
}

const HOUR: Duration = Duration::from_secs(3600);

/// Runs every case, each against a fresh store from `make`, and panics
/// naming the first case that fails.
///
/// ```
/// use std::sync::Arc;
///
/// use auth_core::session::{MemoryStore, SessionStore};
/// use auth_core::testing::{SessionStoreCaps, session_store_suite};
///
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() {
/// session_store_suite(
///     || async { Arc::new(MemoryStore::new()) as Arc<dyn SessionStore> },
///     SessionStoreCaps::default(),
/// )
/// .await;
/// # }
/// ```
pub async fn session_store_suite<F, Fut>(mut make: F, caps: SessionStoreCaps)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Arc<dyn SessionStore>>,
{
    macro_rules! run {
        ($($case:ident),* $(,)?) => {
            $(
                run_case("session store", stringify!($case), $case(make().await, caps)).await;
            )*
        };
    }
    run!(
        round_trip,
        expired_records_are_never_loaded,
        create_never_overwrites,
        save_is_compare_and_set,
        rotation_moves_the_record_and_kills_the_old_key,
        delete_is_final,
        revoke_all_of_a_user,
        list_by_user,
        concurrent_updates_lose_nothing,
        concurrent_writers_never_resurrect,
        delete_expired,
    );
}

/// One test per case of the session-store contract, in a module `$name`:
/// `$name::round_trip`, `$name::save_is_compare_and_set`, ... Each runs on
/// its own multi-threaded runtime (as
/// `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]`) with a
/// fresh store from the block, which returns
/// `Option<Arc<dyn SessionStore>>`: `None` skips the case (e.g. when a
/// database URL is not set; `?` works). Items of the calling module are in
/// scope in the block.
///
/// ```no_run
/// use std::sync::Arc;
///
/// use auth_core::session::{MemoryStore, SessionStore};
/// use auth_core::testing::SessionStoreCaps;
///
/// auth_core::session_store_tests!(memory, SessionStoreCaps::default(), {
///     Some(Arc::new(MemoryStore::new()) as Arc<dyn SessionStore>)
/// });
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! session_store_tests {
    ($name:ident, $caps:expr, $make:block) => {
        $crate::session_store_tests!(@cases $name, $caps, $make, [
            round_trip,
            expired_records_are_never_loaded,
            create_never_overwrites,
            save_is_compare_and_set,
            rotation_moves_the_record_and_kills_the_old_key,
            delete_is_final,
            revoke_all_of_a_user,
            list_by_user,
            concurrent_updates_lose_nothing,
            concurrent_writers_never_resurrect,
            delete_expired,
        ]);
    };
    (@cases $name:ident, $caps:expr, $make:block, [$($case:ident),* $(,)?]) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn store() -> ::std::option::Option<
                ::std::sync::Arc<dyn $crate::session::SessionStore>,
            > $make

            $(
                #[test]
                fn $case() {
                    $crate::testing::__private::runtime().block_on(async {
                        if let ::std::option::Option::Some(store) = store().await {
                            $crate::testing::session_store::$case(store, $caps).await;
                        }
                    });
                }
            )*
        }
    };
}

/// A created record loads back equal; an unknown key loads `None`.
pub async fn round_trip(store: Arc<dyn SessionStore>, _caps: SessionStoreCaps) {
    let key = new_key();
    let user = unique("u");
    let rec = record(Some(&user), HOUR);
    store.create(&key, &rec).await.unwrap();
    assert_eq!(store.load(&key).await.unwrap(), Some(Arc::new(rec)));
    assert_eq!(store.load(&new_key()).await.unwrap(), None);
}

/// An expired record is never loaded, listed, nor saved back to life.
pub async fn expired_records_are_never_loaded(
    store: Arc<dyn SessionStore>,
    caps: SessionStoreCaps,
) {
    // Both deadlines past, and the idle one alone (its absolute deadline
    // an hour ahead): a store must judge by the earlier of the two.
    let mut idle_expired = record(None, HOUR);
    idle_expired.idle_expires_at = SystemClock.now().saturating_sub(Duration::from_secs(5));
    for expired in [expired_record(None), idle_expired] {
        let key = new_key();
        let user = unique("u");
        let expired = SessionRecord {
            user_id: Some(user.clone()),
            ..expired
        };
        store.create(&key, &expired).await.unwrap();
        assert_eq!(store.load(&key).await.unwrap(), None);
        if caps.listing {
            assert!(store.list_by_user(&user).await.unwrap().is_empty());
        }
        // Nor saved or rotated back to life.
        let outcome = store
            .save(&key, &record(Some(&user), HOUR), 0)
            .await
            .unwrap();
        assert_eq!(outcome, SaveOutcome::Missing);
        assert_eq!(store.load(&key).await.unwrap(), None);
        let new = new_key();
        let outcome = store
            .rotate(&key, &new, &record(Some(&user), HOUR), 0)
            .await
            .unwrap();
        assert_eq!(outcome, SaveOutcome::Missing);
        assert_eq!(store.load(&new).await.unwrap(), None);
    }
}

/// `create` on a live key fails with [`StoreError::Collision`] and keeps the
/// first record; an expired record does not block its key.
pub async fn create_never_overwrites(store: Arc<dyn SessionStore>, _caps: SessionStoreCaps) {
    let key = new_key();
    let first = record(Some(&unique("u")), HOUR);
    store.create(&key, &first).await.unwrap();
    let second = record(Some(&unique("v")), HOUR);
    assert!(matches!(
        store.create(&key, &second).await,
        Err(StoreError::Collision)
    ));
    assert_eq!(store.load(&key).await.unwrap(), Some(Arc::new(first)));
    // An expired record does not block its key.
    let stale = new_key();
    store.create(&stale, &expired_record(None)).await.unwrap();
    store.create(&stale, &second).await.unwrap();
    assert_eq!(store.load(&stale).await.unwrap(), Some(Arc::new(second)));
}

/// `save` writes only over the version it read, and bumps it: a writer
/// that read an older version gets [`SaveOutcome::Conflict`], even with a
/// record equal to the one that won. Saving an
/// unknown key is [`SaveOutcome::Missing`] and never creates it.
pub async fn save_is_compare_and_set(store: Arc<dyn SessionStore>, _caps: SessionStoreCaps) {
    let key = new_key();
    let mut rec = record(None, HOUR);
    store.create(&key, &rec).await.unwrap();
    rec.data.insert("a".into(), 1.into());
    assert_eq!(store.save(&key, &rec, 0).await.unwrap(), SaveOutcome::Saved);
    let loaded = store.load(&key).await.unwrap().unwrap();
    assert_eq!(loaded.version, 1);
    assert_eq!(loaded.data.get("a"), Some(&1.into()));
    // A writer that read version 0 loses, even with the very record that
    // won (two requests building the same change in the same millisecond:
    // a single take, such as a ceremony's, must still have one winner).
    assert_eq!(
        store.save(&key, &rec, 0).await.unwrap(),
        SaveOutcome::Conflict
    );
    rec.data.insert("b".into(), 2.into());
    assert_eq!(
        store.save(&key, &rec, 0).await.unwrap(),
        SaveOutcome::Conflict
    );
    assert!(
        !store
            .load(&key)
            .await
            .unwrap()
            .unwrap()
            .data
            .contains_key("b")
    );
    // Saving an unknown key never creates it.
    let ghost = new_key();
    assert_eq!(
        store.save(&ghost, &rec, 0).await.unwrap(),
        SaveOutcome::Missing
    );
    assert_eq!(store.load(&ghost).await.unwrap(), None);
}

/// `rotate` moves the record to the new key (version bumped, listed under
/// the new key only) and the old key is dead for rotating and saving. A
/// stale version is a conflict; a taken target is a collision that moves
/// nothing.
pub async fn rotation_moves_the_record_and_kills_the_old_key(
    store: Arc<dyn SessionStore>,
    caps: SessionStoreCaps,
) {
    let user = unique("u");
    let old = new_key();
    let new = new_key();
    let mut rec = record(Some(&user), HOUR);
    store.create(&old, &rec).await.unwrap();
    rec.auth = AuthState::Authenticated {
        factors: vec![],
        at: SystemClock.now(),
    };
    assert_eq!(
        store.rotate(&old, &new, &rec, 0).await.unwrap(),
        SaveOutcome::Saved
    );
    assert_eq!(store.load(&old).await.unwrap(), None);
    let moved = store.load(&new).await.unwrap().unwrap();
    assert_eq!(moved.version, 1);
    assert_eq!(moved.auth, rec.auth);
    if caps.listing {
        let listed: Vec<SessionKey> = store
            .list_by_user(&user)
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(listed, vec![new]);
    }
    // The old key cannot be rotated again, nor saved.
    assert_eq!(
        store.rotate(&old, &new_key(), &rec, 1).await.unwrap(),
        SaveOutcome::Missing
    );
    assert_eq!(
        store.save(&old, &rec, 1).await.unwrap(),
        SaveOutcome::Missing
    );
    // Stale version: conflict. Taken target: collision, nothing moves.
    assert_eq!(
        store.rotate(&new, &new_key(), &rec, 0).await.unwrap(),
        SaveOutcome::Conflict
    );
    let taken = new_key();
    store.create(&taken, &record(None, HOUR)).await.unwrap();
    assert!(matches!(
        store.rotate(&new, &taken, &rec, 1).await,
        Err(StoreError::Collision)
    ));
    assert!(store.load(&new).await.unwrap().is_some());
}

/// A deleted record is gone: a second delete answers `false`, it is not
/// listed, and a save does not bring it back.
pub async fn delete_is_final(store: Arc<dyn SessionStore>, caps: SessionStoreCaps) {
    let user = unique("u");
    let key = new_key();
    store
        .create(&key, &record(Some(&user), HOUR))
        .await
        .unwrap();
    assert!(store.delete(&key).await.unwrap());
    assert!(!store.delete(&key).await.unwrap());
    assert_eq!(store.load(&key).await.unwrap(), None);
    if caps.listing {
        assert!(store.list_by_user(&user).await.unwrap().is_empty());
    }
    assert_eq!(
        store
            .save(&key, &record(Some(&user), HOUR), 0)
            .await
            .unwrap(),
        SaveOutcome::Missing
    );
    assert_eq!(store.load(&key).await.unwrap(), None);
}

/// `delete_by_user` deletes every session of one user (but the one kept)
/// and no other user's, counting the live ones. A store without listing answers
/// [`StoreError::Unsupported`]; either way
/// [`SessionStore::revokes_by_user`] says which it is.
pub async fn revoke_all_of_a_user(store: Arc<dyn SessionStore>, caps: SessionStoreCaps) {
    assert_eq!(
        store.revokes_by_user(),
        caps.listing,
        "revokes_by_user() must say whether the store lists and deletes by user"
    );
    let alice = unique("alice");
    let bob = unique("bob");
    if !caps.listing {
        // Revoke-all goes through the security stamp instead.
        assert!(matches!(
            store.delete_by_user(&alice, None).await,
            Err(StoreError::Unsupported)
        ));
        return;
    }
    let keys: Vec<SessionKey> = (0..3).map(|_| new_key()).collect();
    for key in &keys {
        store
            .create(key, &record(Some(&alice), HOUR))
            .await
            .unwrap();
    }
    let bobs = new_key();
    store
        .create(&bobs, &record(Some(&bob), HOUR))
        .await
        .unwrap();
    // An expired one of alice's is no session to end: not counted.
    store
        .create(&new_key(), &expired_record(Some(&alice)))
        .await
        .unwrap();
    assert_eq!(
        store.delete_by_user(&alice, Some(&keys[0])).await.unwrap(),
        2,
        "live sessions ended"
    );
    assert!(store.load(&keys[0]).await.unwrap().is_some());
    assert!(store.load(&keys[1]).await.unwrap().is_none());
    assert!(store.load(&keys[2]).await.unwrap().is_none());
    assert!(store.load(&bobs).await.unwrap().is_some());
    assert_eq!(store.delete_by_user(&alice, None).await.unwrap(), 1);
    assert!(store.load(&keys[0]).await.unwrap().is_none());
    assert_eq!(store.list_by_user(&bob).await.unwrap().len(), 1);
}

/// `list_by_user` lists exactly the user's live sessions (not expired
/// ones, not other users' nor anonymous ones); a save that changes the
/// user moves the session to the new user's list. A store without listing
/// answers [`StoreError::Unsupported`].
pub async fn list_by_user(store: Arc<dyn SessionStore>, caps: SessionStoreCaps) {
    let alice = unique("alice");
    if !caps.listing {
        assert!(matches!(
            store.list_by_user(&alice).await,
            Err(StoreError::Unsupported)
        ));
        return;
    }
    let a1 = new_key();
    let a2 = new_key();
    store
        .create(&a1, &record(Some(&alice), HOUR))
        .await
        .unwrap();
    store
        .create(&a2, &record(Some(&alice), HOUR))
        .await
        .unwrap();
    store
        .create(&new_key(), &expired_record(Some(&alice)))
        .await
        .unwrap();
    store
        .create(&new_key(), &record(Some(&unique("bob")), HOUR))
        .await
        .unwrap();
    store.create(&new_key(), &record(None, HOUR)).await.unwrap();
    let mut listed: Vec<SessionKey> = store
        .list_by_user(&alice)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, r)| {
            assert_eq!(r.user_id.as_deref(), Some(alice.as_str()));
            k
        })
        .collect();
    listed.sort();
    let mut expected = vec![a1, a2];
    expected.sort();
    assert_eq!(listed, expected);
    // A save that changes the user moves the session between users.
    let carol = unique("carol");
    let mut moved = SessionRecord::clone(&store.load(&a1).await.unwrap().unwrap());
    moved.user_id = Some(carol.clone());
    assert_eq!(
        store.save(&a1, &moved, 0).await.unwrap(),
        SaveOutcome::Saved
    );
    assert_eq!(store.list_by_user(&alice).await.unwrap().len(), 1);
    assert_eq!(store.list_by_user(&carol).await.unwrap().len(), 1);
}

/// 16 concurrent writers (through [`SessionManager`], which retries on
/// conflict) each add a key to one session: none is lost, and the version
/// ends at 16.
pub async fn concurrent_updates_lose_nothing(
    store: Arc<dyn SessionStore>,
    _caps: SessionStoreCaps,
) {
    let manager = SessionManager::new(Arc::clone(&store), SessionConfig::default());
    let session = manager.create(Default::default()).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let manager = manager.clone();
        let mut session = session.clone();
        tasks.push(tokio::spawn(async move {
            manager
                .insert(&mut session, &format!("writer-{i}"), &i)
                .await
                .unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let loaded = store.load(session.key()).await.unwrap().unwrap();
    for i in 0..16 {
        assert_eq!(
            loaded.data.get(&format!("writer-{i}")),
            Some(&serde_json::json!(i)),
            "writer {i} lost"
        );
    }
    assert_eq!(loaded.version, 16);
}

/// Writers racing a logout never bring the destroyed session back.
pub async fn concurrent_writers_never_resurrect(
    store: Arc<dyn SessionStore>,
    _caps: SessionStoreCaps,
) {
    let manager = SessionManager::new(Arc::clone(&store), SessionConfig::default());
    let session = manager.create(Default::default()).await.unwrap();
    // Released together (a barrier): the destroy is one of nine racers,
    // not done before the writers start.
    concurrently(9, |i| {
        let manager = manager.clone();
        let mut session = session.clone();
        async move {
            if i == 0 {
                manager.destroy(session).await.unwrap();
            } else {
                let _ = manager.insert(&mut session, &format!("w{i}"), &i).await;
            }
        }
    })
    .await;
    let mut late = session.clone();
    assert!(manager.insert(&mut late, "late", &1).await.is_err());
    assert_eq!(store.load(session.key()).await.unwrap(), None);
}

/// `delete_expired` deletes expired records (counting them unless the
/// store expires natively) and keeps live ones; a deleted key is free
/// again.
pub async fn delete_expired(store: Arc<dyn SessionStore>, caps: SessionStoreCaps) {
    let stale = new_key();
    let live = new_key();
    store.create(&stale, &expired_record(None)).await.unwrap();
    store.create(&live, &record(None, HOUR)).await.unwrap();
    let removed = store.delete_expired(SystemClock.now()).await.unwrap();
    if !caps.native_expiry {
        assert!(removed >= 1, "the expired record was deleted");
    }
    assert_eq!(store.load(&stale).await.unwrap(), None);
    assert!(store.load(&live).await.unwrap().is_some());
    // Deleted for good: its key is free again.
    store.create(&stale, &record(None, HOUR)).await.unwrap();
}
