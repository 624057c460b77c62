//! The [`PasskeyStore`] contract (feature `passkeys`): passkeys come back
//! exactly as stored; a user's list is theirs only, oldest first; a
//! credential id belongs to one user and is never overwritten;
//! `record_use` is a compare-and-set on the stored credential (a stale
//! `expected` writes nothing, and of concurrent uses exactly one writes);
//! rename and delete touch the owner's passkey only; `count` counts the
//! user's.
//!
//! Run it with [`passkey_store_suite`] or
//! [`passkey_store_tests!`](crate::passkey_store_tests). Each case uses
//! fresh random credential ids and user ids (`suite-user-<random>`), so the
//! cases can share one store and one database.

use std::sync::Arc;
use std::time::Duration;

use super::{concurrently, run_case, unique};
use crate::clock::{Clock, SystemClock, Timestamp};
use crate::passkey::{MAX_CREDENTIAL_ID_BYTES, PasskeyStore, PasskeyStoreError, StoredPasskey};

/// Concurrent uses of one passkey.
const RACERS: usize = 8;

/// A fresh user id.
fn user() -> String {
    unique("suite-user")
}

/// `len` random bytes: a fresh credential id.
fn random_id(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).expect("the OS random number generator works");
    bytes
}

/// A credential as a WebAuthn library might serialise it, with a counter.
fn credential(counter: u32) -> String {
    format!(
        r#"{{"cred":{{"cred_id":"{}","cred":{{"type_":"ES256","key":{{"EC_EC2":{{"curve":"SECP256R1","x":"{}","y":"{}"}}}}}},"counter":{counter},"backup_eligible":true,"backup_state":false}}}}"#,
        unique("id"),
        unique("x"),
        unique("y"),
    )
}

/// A fresh passkey of `user`, registered at `created_at`, never used.
fn passkey(user: &str, created_at: Timestamp) -> StoredPasskey {
    StoredPasskey {
        credential_id: random_id(16),
        user_id: user.to_owned(),
        name: "YubiKey".to_owned(),
        credential: credential(0),
        created_at,
        last_used_at: None,
        backup_eligible: false,
        backed_up: false,
    }
}

/// Inserts `passkey`, expecting it to work.
async fn insert(store: &dyn PasskeyStore, passkey: &StoredPasskey) {
    store
        .insert(passkey)
        .await
        .expect("a passkey with a fresh credential id is stored");
}

/// The stored passkey with this id, which must exist.
async fn stored(store: &dyn PasskeyStore, passkey: &StoredPasskey) -> StoredPasskey {
    store
        .find(&passkey.credential_id)
        .await
        .unwrap()
        .expect("the passkey is stored")
}

/// `start + seconds`.
fn after(start: Timestamp, seconds: u64) -> Timestamp {
    start.saturating_add(Duration::from_secs(seconds))
}

/// The real time, to the millisecond.
fn now() -> Timestamp {
    SystemClock.now()
}

/// Runs every case against `store` (which may hold other passkeys), and
/// panics naming the first case that fails.
///
/// ```
/// use std::sync::Arc;
///
/// use auth_core::passkey::{MemoryPasskeyStore, PasskeyStore};
///
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() {
/// let store: Arc<dyn PasskeyStore> = Arc::new(MemoryPasskeyStore::new());
/// auth_core::testing::passkey_store_suite(store).await;
/// # }
/// ```
pub async fn passkey_store_suite(store: Arc<dyn PasskeyStore>) {
    macro_rules! run {
        ($($case:ident),* $(,)?) => {
            $(
                run_case("passkey store", stringify!($case), $case(Arc::clone(&store))).await;
            )*
        };
    }
    run!(
        passkeys_round_trip_exactly,
        list_is_per_user_oldest_first,
        a_credential_is_one_users,
        record_use_is_compare_and_set,
        concurrent_uses_one_wins,
        rename_is_scoped_to_the_owner,
        delete_is_scoped_to_the_owner,
        count,
    );
}

/// One test per case of the passkey-store contract, in a module `$name`:
/// `$name::passkeys_round_trip_exactly`, ... Each runs on its own
/// multi-threaded runtime (as
/// `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]`) with a
/// store from the block, which returns `Option<Arc<dyn PasskeyStore>>`:
/// `None` skips the case (e.g. when a database URL is not set; `?` works).
/// Items of the calling module are in scope in the block.
///
/// ```no_run
/// use std::sync::Arc;
///
/// use auth_core::passkey::{MemoryPasskeyStore, PasskeyStore};
///
/// auth_core::passkey_store_tests!(memory, {
///     Some(Arc::new(MemoryPasskeyStore::new()) as Arc<dyn PasskeyStore>)
/// });
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! passkey_store_tests {
    ($name:ident, $make:block) => {
        $crate::passkey_store_tests!(@cases $name, $make, [
            passkeys_round_trip_exactly,
            list_is_per_user_oldest_first,
            a_credential_is_one_users,
            record_use_is_compare_and_set,
            concurrent_uses_one_wins,
            rename_is_scoped_to_the_owner,
            delete_is_scoped_to_the_owner,
            count,
        ]);
    };
    (@cases $name:ident, $make:block, [$($case:ident),* $(,)?]) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn store() -> ::std::option::Option<
                ::std::sync::Arc<dyn $crate::passkey::PasskeyStore>,
            > $make

            $(
                #[test]
                fn $case() {
                    $crate::testing::__private::runtime().block_on(async {
                        if let ::std::option::Option::Some(store) = store().await {
                            $crate::testing::passkey_store::$case(store).await;
                        }
                    });
                }
            )*
        }
    };
}

/// Passkeys come back exactly as stored, from `find` and from `list`:
/// a credential id of the longest length WebAuthn allows (1023 bytes, every
/// byte value likely) and a short one; Unicode, quotes and SQL in the name
/// and the credential; times to the millisecond, `last_used_at` set or not,
/// every combination of the backup flags. An unknown id finds nothing.
pub async fn passkeys_round_trip_exactly(store: Arc<dyn PasskeyStore>) {
    let now = now();
    let odd = |seconds: u64| after(now, seconds).saturating_add(Duration::from_millis(123));
    let owner = format!("{}-{}", user(), "ü✉ 'quoted' {braces}:colons");
    let mut passkeys = vec![
        StoredPasskey {
            credential_id: random_id(MAX_CREDENTIAL_ID_BYTES),
            user_id: owner.clone(),
            name: "Schlüssel 🔑 'quoted' \"double\" ; DROP TABLE x; --\n\t".to_owned(),
            credential: format!(
                "{{\"ünïcødé\":\"✉ \\\"escaped\\\" \\u0000\",\"c\":{}}}",
                credential(41)
            ),
            created_at: odd(0),
            last_used_at: Some(odd(7)),
            backup_eligible: true,
            backed_up: true,
        },
        StoredPasskey {
            credential_id: random_id(16),
            user_id: owner.clone(),
            name: String::new(),
            credential: credential(0),
            created_at: odd(1),
            last_used_at: None,
            backup_eligible: true,
            backed_up: false,
        },
        StoredPasskey {
            credential_id: random_id(32),
            user_id: owner.clone(),
            name: "名前".repeat(32),
            credential: credential(u32::MAX),
            created_at: odd(2),
            last_used_at: Some(odd(2)),
            backup_eligible: false,
            backed_up: false,
        },
    ];
    // A credential id with a zero byte: ids are bytes, not text.
    let mut zero = random_id(20);
    zero[3] = 0;
    passkeys.push(StoredPasskey {
        credential_id: zero,
        created_at: odd(3),
        ..passkey(&owner, now)
    });
    for passkey in &passkeys {
        insert(&*store, passkey).await;
    }
    for passkey in &passkeys {
        assert_eq!(
            &stored(&*store, passkey).await,
            passkey,
            "found exactly as stored"
        );
    }
    assert_eq!(
        store.list(&owner).await.unwrap(),
        passkeys,
        "listed exactly as stored"
    );
    assert_eq!(store.count(&owner).await.unwrap(), passkeys.len() as u64);
    assert_eq!(store.find(&random_id(16)).await.unwrap(), None);
    assert_eq!(
        store
            .find(&random_id(MAX_CREDENTIAL_ID_BYTES))
            .await
            .unwrap(),
        None
    );
    // A prefix of a stored id is another id.
    assert_eq!(
        store
            .find(&passkeys[0].credential_id[..1022])
            .await
            .unwrap(),
        None
    );
}

/// `list` answers the user's passkeys only, oldest first whatever the
/// order of insertion (equal times by credential id, bytewise); a user
/// without passkeys, or one whose id starts like another's, gets none.
pub async fn list_is_per_user_oldest_first(store: Arc<dyn PasskeyStore>) {
    let now = now();
    let alice = user();
    let bob = user();
    let third = passkey(&alice, after(now, 20));
    let first = passkey(&alice, after(now, 1));
    let second = passkey(&alice, after(now, 10));
    let bobs = passkey(&bob, now);
    // Two at the same millisecond: by credential id.
    let mut tie_low = passkey(&alice, after(now, 30));
    tie_low.credential_id[0] = 0x00;
    let mut tie_high = passkey(&alice, after(now, 30));
    tie_high.credential_id[0] = 0xff;
    for passkey in [&tie_high, &third, &bobs, &first, &tie_low, &second] {
        insert(&*store, passkey).await;
    }
    assert_eq!(
        store.list(&alice).await.unwrap(),
        vec![first, second, third, tie_low, tie_high],
        "the user's passkeys, oldest first"
    );
    assert_eq!(store.list(&bob).await.unwrap(), vec![bobs]);
    assert_eq!(store.list(&user()).await.unwrap(), Vec::new());
    assert_eq!(store.list(&format!("{alice}x")).await.unwrap(), Vec::new());
    assert_eq!(
        store.list(&alice[..alice.len() - 1]).await.unwrap(),
        Vec::new()
    );
}

/// A credential id belongs to one user: inserting it again, for another
/// user or for the same one, fails with
/// [`PasskeyStoreError::CredentialTaken`] and leaves the stored passkey
/// exactly as it was.
pub async fn a_credential_is_one_users(store: Arc<dyn PasskeyStore>) {
    let now = now();
    let alice = user();
    let bob = user();
    let original = StoredPasskey {
        backup_eligible: true,
        ..passkey(&alice, now)
    };
    insert(&*store, &original).await;
    let for_bob = StoredPasskey {
        user_id: bob.clone(),
        name: "Stolen".to_owned(),
        credential: credential(99),
        created_at: after(now, 5),
        last_used_at: Some(after(now, 5)),
        backup_eligible: false,
        backed_up: true,
        ..original.clone()
    };
    let for_alice = StoredPasskey {
        user_id: alice.clone(),
        ..for_bob.clone()
    };
    for again in [&for_bob, &for_alice, &original] {
        assert!(
            matches!(
                store.insert(again).await,
                Err(PasskeyStoreError::CredentialTaken)
            ),
            "a credential id is never stored twice"
        );
        assert_eq!(
            stored(&*store, &original).await,
            original,
            "the original is untouched"
        );
    }
    assert_eq!(store.list(&bob).await.unwrap(), Vec::new());
    assert_eq!(store.count(&bob).await.unwrap(), 0);
    assert_eq!(store.list(&alice).await.unwrap(), vec![original.clone()]);
    assert_eq!(store.count(&alice).await.unwrap(), 1);
}

/// `record_use` writes only when the stored credential equals `expected`:
/// it then replaces the credential, sets `last_used_at` and `backed_up`,
/// and nothing else. A stale `expected` (the credential before the latest
/// use) writes nothing, nor does an unknown id.
pub async fn record_use_is_compare_and_set(store: Arc<dyn PasskeyStore>) {
    let now = now();
    let original = StoredPasskey {
        backup_eligible: true,
        ..passkey(&user(), now)
    };
    insert(&*store, &original).await;
    let first_use = credential(1);
    let used_at = after(now, 60);
    assert!(
        store
            .record_use(
                &original.credential_id,
                &original.credential,
                &first_use,
                true,
                used_at
            )
            .await
            .unwrap(),
        "the current credential is replaced"
    );
    let after_use = StoredPasskey {
        credential: first_use.clone(),
        last_used_at: Some(used_at),
        backed_up: true,
        ..original.clone()
    };
    assert_eq!(stored(&*store, &original).await, after_use);

    // A use that verified against the credential before the first use.
    assert!(
        !store
            .record_use(
                &original.credential_id,
                &original.credential,
                &credential(1),
                false,
                after(now, 120),
            )
            .await
            .unwrap(),
        "a stale expected credential writes nothing"
    );
    assert_eq!(
        stored(&*store, &original).await,
        after_use,
        "nothing changed"
    );
    assert!(
        !store
            .record_use(
                &original.credential_id,
                "",
                &credential(3),
                false,
                after(now, 120)
            )
            .await
            .unwrap()
    );
    assert_eq!(stored(&*store, &original).await, after_use);

    // The next use, against the current credential; `backed_up` may go
    // back to false.
    let second_use = credential(2);
    let later = after(now, 180);
    assert!(
        store
            .record_use(
                &original.credential_id,
                &first_use,
                &second_use,
                false,
                later
            )
            .await
            .unwrap()
    );
    assert_eq!(
        stored(&*store, &original).await,
        StoredPasskey {
            credential: second_use,
            last_used_at: Some(later),
            backed_up: false,
            ..original.clone()
        }
    );

    let unknown = random_id(16);
    assert!(
        !store
            .record_use(&unknown, &first_use, &credential(4), true, later)
            .await
            .unwrap(),
        "an unknown credential id"
    );
    assert_eq!(store.find(&unknown).await.unwrap(), None, "not created");
}

/// Concurrent `record_use` calls with the same `expected`: exactly one
/// answers `true`, and the stored credential is the winner's.
pub async fn concurrent_uses_one_wins(store: Arc<dyn PasskeyStore>) {
    let now = now();
    let original = passkey(&user(), now);
    insert(&*store, &original).await;
    let news: Vec<String> = (0..RACERS).map(|_| credential(1)).collect();
    let used_at = after(now, 1);
    let results = concurrently(RACERS, |i| {
        let store = Arc::clone(&store);
        let id = original.credential_id.clone();
        let expected = original.credential.clone();
        let new = news[i].clone();
        async move {
            store
                .record_use(&id, &expected, &new, true, used_at)
                .await
                .unwrap()
        }
    })
    .await;
    let winners: Vec<usize> = (0..RACERS).filter(|i| results[*i]).collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one of {RACERS} concurrent uses writes: {results:?}"
    );
    assert_eq!(
        stored(&*store, &original).await,
        StoredPasskey {
            credential: news[winners[0]].clone(),
            last_used_at: Some(used_at),
            backed_up: true,
            ..original.clone()
        },
        "the winner's credential is stored"
    );
}

/// `rename` renames the owner's passkey only: another user's call answers
/// `false` and changes nothing; an unknown id answers `false`.
pub async fn rename_is_scoped_to_the_owner(store: Arc<dyn PasskeyStore>) {
    let now = now();
    let alice = user();
    let bob = user();
    let alices = passkey(&alice, now);
    let bobs = passkey(&bob, now);
    insert(&*store, &alices).await;
    insert(&*store, &bobs).await;

    assert!(
        !store
            .rename(&bob, &alices.credential_id, "Mine now")
            .await
            .unwrap(),
        "another user's passkey is no such passkey"
    );
    assert_eq!(stored(&*store, &alices).await, alices, "unchanged");
    assert!(!store.rename(&alice, &random_id(16), "Phone").await.unwrap());

    let name = "Téléphone 📱 'quoted'";
    assert!(
        store
            .rename(&alice, &alices.credential_id, name)
            .await
            .unwrap()
    );
    assert_eq!(
        stored(&*store, &alices).await,
        StoredPasskey {
            name: name.to_owned(),
            ..alices.clone()
        },
        "renamed, nothing else changed"
    );
    assert_eq!(stored(&*store, &bobs).await, bobs, "others untouched");
}

/// `delete` deletes the owner's passkey only: another user's call answers
/// `false` and the passkey stays; the owner's deletes it (then `find` and
/// `list` no longer see it, and a second delete answers `false`), leaving
/// the owner's other passkeys.
pub async fn delete_is_scoped_to_the_owner(store: Arc<dyn PasskeyStore>) {
    let now = now();
    let alice = user();
    let bob = user();
    let one = passkey(&alice, now);
    let two = passkey(&alice, after(now, 1));
    let bobs = passkey(&bob, now);
    for passkey in [&one, &two, &bobs] {
        insert(&*store, passkey).await;
    }

    assert!(
        !store.delete(&bob, &one.credential_id).await.unwrap(),
        "another user's passkey is no such passkey"
    );
    assert_eq!(stored(&*store, &one).await, one, "still there");
    assert_eq!(store.count(&alice).await.unwrap(), 2);
    assert!(!store.delete(&alice, &random_id(16)).await.unwrap());

    assert!(store.delete(&alice, &one.credential_id).await.unwrap());
    assert_eq!(store.find(&one.credential_id).await.unwrap(), None);
    assert_eq!(store.list(&alice).await.unwrap(), vec![two.clone()]);
    assert!(
        !store.delete(&alice, &one.credential_id).await.unwrap(),
        "deleted once"
    );
    assert!(
        !store
            .record_use(
                &one.credential_id,
                &one.credential,
                &credential(1),
                false,
                now
            )
            .await
            .unwrap(),
        "a deleted passkey is not used"
    );
    assert_eq!(store.find(&one.credential_id).await.unwrap(), None);
    assert_eq!(stored(&*store, &two).await, two);
    assert_eq!(stored(&*store, &bobs).await, bobs);

    // Its id is free again.
    insert(&*store, &one).await;
    assert_eq!(stored(&*store, &one).await, one);
}

/// `count` counts the user's passkeys only, following inserts and
/// deletes.
pub async fn count(store: Arc<dyn PasskeyStore>) {
    let now = now();
    let alice = user();
    let bob = user();
    assert_eq!(store.count(&alice).await.unwrap(), 0);
    let mut alices = Vec::new();
    for n in 0..3 {
        let passkey = passkey(&alice, after(now, n));
        insert(&*store, &passkey).await;
        alices.push(passkey);
        assert_eq!(store.count(&alice).await.unwrap(), n + 1);
    }
    insert(&*store, &passkey(&bob, now)).await;
    insert(&*store, &passkey(&format!("{alice}x"), now)).await;
    assert_eq!(store.count(&alice).await.unwrap(), 3);
    assert_eq!(store.count(&bob).await.unwrap(), 1);
    assert!(
        store
            .delete(&alice, &alices[1].credential_id)
            .await
            .unwrap()
    );
    assert_eq!(store.count(&alice).await.unwrap(), 2);
    assert_eq!(store.count(&user()).await.unwrap(), 0);
}
