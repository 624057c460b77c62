//! The [`AccountStore`] contract: a pending TOTP secret is no factor and
//! is confirmed once, with the same secret; TOTP steps and recovery codes
//! are single-use under concurrency; the revocation epoch only rises; an
//! email address finds its user only once verified, is verified only while
//! it is still the user's, and belongs to one user among verified ones;
//! and users are independent.
//!
//! Run it with [`account_store_suite`] or
//! [`account_store_tests!`](crate::account_store_tests). Each case uses
//! fresh random user ids (`suite-user-<random>`), so the cases can share
//! one store and one database.

use std::sync::Arc;

use super::{concurrently, run_case, unique};
use crate::account::{AccountStore, StoredEmail, StoredTotp};
use crate::session::Factor;

/// A fresh user id, as text.
fn user() -> String {
    unique("suite-user")
}

/// A sealed secret as the toolkit stores them (`v1.<kid>.<base64url>`),
/// distinct per call.
fn sealed() -> String {
    format!("v1.suite.{}", unique("secret"))
}

/// `n` recovery-code hashes, distinct per call.
fn code_hashes(n: usize) -> Vec<String> {
    let batch = unique("code");
    (0..n).map(|i| format!("{batch}-{i}")).collect()
}

/// A user with a TOTP secret confirmed at step `step` and recovery codes
/// `codes`; returns the user and the secret.
async fn confirmed_user(store: &dyn AccountStore, step: i64, codes: &[String]) -> (String, String) {
    let user = user();
    let secret = sealed();
    assert!(store.set_pending_totp(&user, &secret).await.unwrap());
    assert!(
        store
            .confirm_totp(&user, &secret, step, codes)
            .await
            .unwrap()
    );
    (user, secret)
}

/// Runs every case against `store` (which may hold other users), and
/// panics naming the first case that fails.
///
/// ```
/// use std::sync::Arc;
///
/// use auth_core::{AccountStore, MemoryAccountStore};
///
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() {
/// let store: Arc<dyn AccountStore> = Arc::new(MemoryAccountStore::new());
/// auth_core::testing::account_store_suite(store).await;
/// # }
/// ```
pub async fn account_store_suite(store: Arc<dyn AccountStore>) {
    macro_rules! run {
        ($($case:ident),* $(,)?) => {
            $(
                run_case("account store", stringify!($case), $case(Arc::clone(&store))).await;
            )*
        };
    }
    run!(
        nothing_stored_for_a_new_user,
        pending_totp_is_not_a_factor,
        set_pending_replaces_pending_never_confirmed,
        confirm_needs_the_same_secret_once,
        concurrent_confirmations_one_wins,
        record_totp_step_only_increases,
        reseal_replaces_only_the_same_confirmed_secret,
        concurrent_step_records_one_wins,
        consume_recovery_code,
        concurrent_recovery_consumers_one_wins,
        replace_recovery_codes_replaces,
        concurrent_replacements_leave_one_set,
        remove_totp_removes_the_secret_only,
        epoch_starts_at_zero_and_rises,
        concurrent_epoch_raises_count_all,
        users_are_independent,
        email_is_found_once_verified,
        a_verified_address_belongs_to_one_user,
        a_changed_address_takes_effect_once_verified,
    );
}

/// One test per case of the account-store contract, in a module `$name`:
/// `$name::pending_totp_is_not_a_factor`, ... Each runs on its own
/// multi-threaded runtime (as `#[tokio::test(flavor = "multi_thread",
/// worker_threads = 2)]`) with a store from the block, which returns
/// `Option<Arc<dyn AccountStore>>`: `None` skips the case (e.g. when a
/// database URL is not set; `?` works). Items of the calling module are in
/// scope in the block.
///
/// ```no_run
/// use std::sync::Arc;
///
/// use auth_core::{AccountStore, MemoryAccountStore};
///
/// auth_core::account_store_tests!(memory, {
///     Some(Arc::new(MemoryAccountStore::new()) as Arc<dyn AccountStore>)
/// });
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! account_store_tests {
    ($name:ident, $make:block) => {
        $crate::account_store_tests!(@cases $name, $make, [
            nothing_stored_for_a_new_user,
            pending_totp_is_not_a_factor,
            set_pending_replaces_pending_never_confirmed,
            confirm_needs_the_same_secret_once,
        concurrent_confirmations_one_wins,
            record_totp_step_only_increases,
            reseal_replaces_only_the_same_confirmed_secret,
            concurrent_step_records_one_wins,
            consume_recovery_code,
            concurrent_recovery_consumers_one_wins,
            replace_recovery_codes_replaces,
            concurrent_replacements_leave_one_set,
            remove_totp_removes_the_secret_only,
            epoch_starts_at_zero_and_rises,
            concurrent_epoch_raises_count_all,
            users_are_independent,
            email_is_found_once_verified,
            a_verified_address_belongs_to_one_user,
            a_changed_address_takes_effect_once_verified,
        ]);
    };
    (@cases $name:ident, $make:block, [$($case:ident),* $(,)?]) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn store() -> ::std::option::Option<
                ::std::sync::Arc<dyn $crate::account::AccountStore>,
            > $make

            $(
                #[test]
                fn $case() {
                    $crate::testing::__private::runtime().block_on(async {
                        if let ::std::option::Option::Some(store) = store().await {
                            $crate::testing::account_store::$case(store).await;
                        }
                    });
                }
            )*
        }
    };
}

/// A user the store never saw has no TOTP, no factor, no recovery code,
/// epoch 0; nothing of it can be confirmed, recorded or consumed, and
/// removing its TOTP is no error.
pub async fn nothing_stored_for_a_new_user(store: Arc<dyn AccountStore>) {
    let user = user();
    assert_eq!(store.totp(&user).await.unwrap(), None);
    assert!(store.second_factors(&user).await.unwrap().is_empty());
    assert_eq!(store.recovery_codes_left(&user).await.unwrap(), 0);
    assert_eq!(store.epoch(&user).await.unwrap(), 0);
    assert!(
        !store
            .confirm_totp(&user, &sealed(), 1, &code_hashes(2))
            .await
            .unwrap(),
        "nothing pending: nothing to confirm"
    );
    assert!(!store.record_totp_step(&user, 1).await.unwrap());
    assert!(
        !store
            .consume_recovery_code(&user, &code_hashes(1)[0])
            .await
            .unwrap()
    );
    store.remove_totp(&user).await.unwrap();
    assert_eq!(store.totp(&user).await.unwrap(), None);
    assert_eq!(store.recovery_codes_left(&user).await.unwrap(), 0);
}

/// A pending secret is stored as pending (no last step) and is not a
/// second factor; no step is recorded against it.
pub async fn pending_totp_is_not_a_factor(store: Arc<dyn AccountStore>) {
    let user = user();
    let secret = sealed();
    assert!(store.set_pending_totp(&user, &secret).await.unwrap());
    assert_eq!(
        store.totp(&user).await.unwrap(),
        Some(StoredTotp {
            sealed_secret: secret.clone(),
            confirmed: false,
            last_step: None,
        })
    );
    assert!(
        store.second_factors(&user).await.unwrap().is_empty(),
        "a pending secret is no second factor"
    );
    assert!(
        !store.record_totp_step(&user, 5).await.unwrap(),
        "no step is accepted for a pending secret"
    );
    assert_eq!(store.totp(&user).await.unwrap().unwrap().last_step, None);
}

/// `set_pending_totp` replaces a pending secret, but never a confirmed one
/// (it answers `false` and changes nothing).
pub async fn set_pending_replaces_pending_never_confirmed(store: Arc<dyn AccountStore>) {
    let user = user();
    let (first, second, third) = (sealed(), sealed(), sealed());
    assert!(store.set_pending_totp(&user, &first).await.unwrap());
    assert!(
        store.set_pending_totp(&user, &second).await.unwrap(),
        "a pending secret is replaced"
    );
    let totp = store.totp(&user).await.unwrap().unwrap();
    assert_eq!(
        (totp.sealed_secret.as_str(), totp.confirmed),
        (second.as_str(), false)
    );
    // The replaced secret cannot be confirmed any more.
    assert!(!store.confirm_totp(&user, &first, 10, &[]).await.unwrap());
    let codes = code_hashes(3);
    assert!(
        store
            .confirm_totp(&user, &second, 10, &codes)
            .await
            .unwrap()
    );
    assert!(
        !store.set_pending_totp(&user, &third).await.unwrap(),
        "a confirmed secret is never replaced by a pending one"
    );
    assert_eq!(
        store.totp(&user).await.unwrap(),
        Some(StoredTotp {
            sealed_secret: second,
            confirmed: true,
            last_step: Some(10),
        })
    );
    assert_eq!(
        store.second_factors(&user).await.unwrap(),
        vec![Factor::Totp]
    );
    assert_eq!(store.recovery_codes_left(&user).await.unwrap(), 3);
}

/// `confirm_totp` succeeds only with the pending secret, only once: it
/// marks the secret confirmed, records the step and stores the recovery
/// hashes (replacing earlier ones); the confirmed secret is a factor.
pub async fn confirm_needs_the_same_secret_once(store: Arc<dyn AccountStore>) {
    let user = user();
    let secret = sealed();
    assert!(store.set_pending_totp(&user, &secret).await.unwrap());
    // Codes from before the enrolment are replaced by the confirmation's.
    store
        .replace_recovery_codes(&user, &code_hashes(5))
        .await
        .unwrap();
    assert!(
        !store
            .confirm_totp(&user, &sealed(), 7, &code_hashes(2))
            .await
            .unwrap(),
        "another secret does not confirm the pending one"
    );
    let totp = store.totp(&user).await.unwrap().unwrap();
    assert!(!totp.confirmed);
    assert_eq!(store.recovery_codes_left(&user).await.unwrap(), 5);

    let codes = code_hashes(3);
    assert!(store.confirm_totp(&user, &secret, 7, &codes).await.unwrap());
    assert_eq!(
        store.totp(&user).await.unwrap(),
        Some(StoredTotp {
            sealed_secret: secret.clone(),
            confirmed: true,
            last_step: Some(7),
        })
    );
    assert_eq!(
        store.second_factors(&user).await.unwrap(),
        vec![Factor::Totp]
    );
    assert_eq!(store.recovery_codes_left(&user).await.unwrap(), 3);
    assert!(store.consume_recovery_code(&user, &codes[0]).await.unwrap());

    // Once: a second confirmation changes nothing.
    assert!(
        !store
            .confirm_totp(&user, &secret, 9, &code_hashes(4))
            .await
            .unwrap(),
        "a secret is confirmed once"
    );
    assert_eq!(store.totp(&user).await.unwrap().unwrap().last_step, Some(7));
    assert_eq!(store.recovery_codes_left(&user).await.unwrap(), 2);
}

/// 16 concurrent confirmations of one pending secret (two tabs, a
/// double submit), each with its own recovery codes: exactly one wins,
/// and the codes stored are the winner's.
pub async fn concurrent_confirmations_one_wins(store: Arc<dyn AccountStore>) {
    let user = user();
    let secret = sealed();
    assert!(store.set_pending_totp(&user, &secret).await.unwrap());
    let batches: Vec<Vec<String>> = (0..16).map(|_| code_hashes(2)).collect();
    let results = concurrently(16, |i| {
        let (store, user, secret) = (Arc::clone(&store), user.clone(), secret.clone());
        let codes = batches[i].clone();
        async move {
            store
                .confirm_totp(&user, &secret, 40 + i as i64, &codes)
                .await
                .unwrap()
        }
    })
    .await;
    let winners: Vec<usize> = (0..16).filter(|&i| results[i]).collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one confirmation wins: {winners:?}"
    );
    let winner = winners[0];
    let totp = store.totp(&user).await.unwrap().unwrap();
    assert!(totp.confirmed);
    assert_eq!(totp.last_step, Some(40 + winner as i64));
    assert_eq!(store.recovery_codes_left(&user).await.unwrap(), 2);
    for (i, batch) in batches.iter().enumerate().filter(|(i, _)| *i != winner) {
        assert!(
            !store.consume_recovery_code(&user, &batch[0]).await.unwrap(),
            "a losing confirmation ({i}) stored no code"
        );
    }
    assert!(
        store
            .consume_recovery_code(&user, &batches[winner][0])
            .await
            .unwrap()
    );
}

/// `record_totp_step` accepts only a step greater than the last one (the
/// confirmation's step included), and records it.
pub async fn record_totp_step_only_increases(store: Arc<dyn AccountStore>) {
    let (user, _) = confirmed_user(&*store, 10, &code_hashes(1)).await;
    assert!(
        !store.record_totp_step(&user, 10).await.unwrap(),
        "same step"
    );
    assert!(
        !store.record_totp_step(&user, 9).await.unwrap(),
        "older step"
    );
    assert!(store.record_totp_step(&user, 11).await.unwrap());
    assert!(
        !store.record_totp_step(&user, 11).await.unwrap(),
        "replayed"
    );
    assert_eq!(
        store.totp(&user).await.unwrap().unwrap().last_step,
        Some(11)
    );
    assert!(store.record_totp_step(&user, 20).await.unwrap());
    assert!(!store.record_totp_step(&user, 15).await.unwrap());
    assert_eq!(
        store.totp(&user).await.unwrap().unwrap().last_step,
        Some(20)
    );
}

/// `reseal_totp` replaces a confirmed secret that is still the one
/// given, keeping the last step; never a pending secret, another secret,
/// or a removed one.
pub async fn reseal_replaces_only_the_same_confirmed_secret(store: Arc<dyn AccountStore>) {
    let (user, secret) = confirmed_user(&*store, 10, &code_hashes(1)).await;
    let resealed = sealed();
    assert!(
        !store
            .reseal_totp(&user, &sealed(), &resealed)
            .await
            .unwrap(),
        "not the stored secret"
    );
    assert!(store.reseal_totp(&user, &secret, &resealed).await.unwrap());
    let stored = store.totp(&user).await.unwrap().unwrap();
    assert_eq!(stored.sealed_secret, resealed);
    assert!(stored.confirmed);
    assert_eq!(stored.last_step, Some(10));
    assert!(
        !store.reseal_totp(&user, &secret, &sealed()).await.unwrap(),
        "replaced already"
    );
    assert!(!store.record_totp_step(&user, 10).await.unwrap());
    // A pending secret is not re-sealed.
    let pending = self::user();
    let pending_secret = sealed();
    assert!(
        store
            .set_pending_totp(&pending, &pending_secret)
            .await
            .unwrap()
    );
    assert!(
        !store
            .reseal_totp(&pending, &pending_secret, &sealed())
            .await
            .unwrap()
    );
    assert_eq!(
        store.totp(&pending).await.unwrap().unwrap().sealed_secret,
        pending_secret
    );
    // Nor a removed one.
    store.remove_totp(&user).await.unwrap();
    assert!(
        !store
            .reseal_totp(&user, &resealed, &sealed())
            .await
            .unwrap()
    );
    assert!(store.totp(&user).await.unwrap().is_none());
}

/// 16 concurrent `record_totp_step` calls with one step: exactly one gets
/// `true`.
pub async fn concurrent_step_records_one_wins(store: Arc<dyn AccountStore>) {
    let (user, _) = confirmed_user(&*store, 100, &[]).await;
    let results = concurrently(16, |_| {
        let (store, user) = (Arc::clone(&store), user.clone());
        async move { store.record_totp_step(&user, 101).await.unwrap() }
    })
    .await;
    let winners = results.iter().filter(|won| **won).count();
    assert_eq!(winners, 1, "exactly one use of a TOTP step succeeds");
    assert_eq!(
        store.totp(&user).await.unwrap().unwrap().last_step,
        Some(101)
    );
}

/// `consume_recovery_code` removes one code once: `true` the first time,
/// `false` after and for an unknown code; the count goes down by one.
pub async fn consume_recovery_code(store: Arc<dyn AccountStore>) {
    let user = user();
    let codes = code_hashes(3);
    store.replace_recovery_codes(&user, &codes).await.unwrap();
    assert_eq!(store.recovery_codes_left(&user).await.unwrap(), 3);
    assert!(
        !store
            .consume_recovery_code(&user, &code_hashes(1)[0])
            .await
            .unwrap(),
        "an unknown code is refused"
    );
    assert_eq!(store.recovery_codes_left(&user).await.unwrap(), 3);
    assert!(store.consume_recovery_code(&user, &codes[1]).await.unwrap());
    assert_eq!(store.recovery_codes_left(&user).await.unwrap(), 2);
    assert!(
        !store.consume_recovery_code(&user, &codes[1]).await.unwrap(),
        "a code is used once"
    );
    assert_eq!(store.recovery_codes_left(&user).await.unwrap(), 2);
    assert!(store.consume_recovery_code(&user, &codes[0]).await.unwrap());
    assert!(store.consume_recovery_code(&user, &codes[2]).await.unwrap());
    assert_eq!(store.recovery_codes_left(&user).await.unwrap(), 0);
    assert!(!store.consume_recovery_code(&user, &codes[2]).await.unwrap());
}

/// 16 concurrent consumers of one recovery code: exactly one gets `true`,
/// and only that code is gone.
pub async fn concurrent_recovery_consumers_one_wins(store: Arc<dyn AccountStore>) {
    let user = user();
    let codes = code_hashes(5);
    store.replace_recovery_codes(&user, &codes).await.unwrap();
    let results = concurrently(16, |_| {
        let (store, user, code) = (Arc::clone(&store), user.clone(), codes[2].clone());
        async move { store.consume_recovery_code(&user, &code).await.unwrap() }
    })
    .await;
    let winners = results.iter().filter(|won| **won).count();
    assert_eq!(winners, 1, "exactly one use of a recovery code succeeds");
    assert_eq!(store.recovery_codes_left(&user).await.unwrap(), 4);
    assert!(store.consume_recovery_code(&user, &codes[3]).await.unwrap());
}

/// `replace_recovery_codes` replaces the whole set: old codes no longer
/// work, new ones do; an empty set leaves none.
pub async fn replace_recovery_codes_replaces(store: Arc<dyn AccountStore>) {
    let user = user();
    let old = code_hashes(2);
    let new = code_hashes(3);
    store.replace_recovery_codes(&user, &old).await.unwrap();
    assert_eq!(store.recovery_codes_left(&user).await.unwrap(), 2);
    store.replace_recovery_codes(&user, &new).await.unwrap();
    assert_eq!(store.recovery_codes_left(&user).await.unwrap(), 3);
    assert!(
        !store.consume_recovery_code(&user, &old[0]).await.unwrap(),
        "a replaced code no longer works"
    );
    assert!(store.consume_recovery_code(&user, &new[0]).await.unwrap());
    assert_eq!(store.recovery_codes_left(&user).await.unwrap(), 2);
    store.replace_recovery_codes(&user, &[]).await.unwrap();
    assert_eq!(store.recovery_codes_left(&user).await.unwrap(), 0);
    assert!(!store.consume_recovery_code(&user, &new[1]).await.unwrap());
}

/// 8 concurrent replacements of one user's codes (a double-submitted
/// "new codes" form, a regeneration racing a confirmation): one set is
/// left, whole, never a mix of sets (each replacement deletes what the
/// others inserted, even under PostgreSQL's read committed).
pub async fn concurrent_replacements_leave_one_set(store: Arc<dyn AccountStore>) {
    let user = user();
    let sets: Vec<Vec<String>> = (0..8).map(|_| code_hashes(4)).collect();
    concurrently(8, |i| {
        let (store, user, set) = (Arc::clone(&store), user.clone(), sets[i].clone());
        async move { store.replace_recovery_codes(&user, &set).await.unwrap() }
    })
    .await;
    assert_eq!(store.recovery_codes_left(&user).await.unwrap(), 4);
    let mut kept = 0;
    for set in &sets {
        if store.consume_recovery_code(&user, &set[0]).await.unwrap() {
            kept += 1;
            for code in &set[1..] {
                assert!(store.consume_recovery_code(&user, code).await.unwrap());
            }
        }
    }
    assert_eq!(kept, 1, "exactly one set is left");
}

/// `remove_totp` removes the secret (confirmed or pending) and leaves the
/// recovery codes (another factor may need them); the user can enrol
/// again afterwards.
pub async fn remove_totp_removes_the_secret_only(store: Arc<dyn AccountStore>) {
    let codes = code_hashes(3);
    let (user, _) = confirmed_user(&*store, 1, &codes).await;
    store.remove_totp(&user).await.unwrap();
    assert_eq!(store.totp(&user).await.unwrap(), None);
    assert!(store.second_factors(&user).await.unwrap().is_empty());
    assert_eq!(store.recovery_codes_left(&user).await.unwrap(), 3);
    assert!(store.consume_recovery_code(&user, &codes[0]).await.unwrap());
    assert!(!store.record_totp_step(&user, 2).await.unwrap());

    // A new enrolment starts afresh, and a pending one is removed too.
    let secret = sealed();
    assert!(store.set_pending_totp(&user, &secret).await.unwrap());
    assert_eq!(store.totp(&user).await.unwrap().unwrap().last_step, None);
    store.remove_totp(&user).await.unwrap();
    assert_eq!(store.totp(&user).await.unwrap(), None);
    assert!(!store.confirm_totp(&user, &secret, 3, &[]).await.unwrap());
}

/// The epoch starts at 0; each `raise_epoch` adds one and returns the new
/// value, for that user only.
pub async fn epoch_starts_at_zero_and_rises(store: Arc<dyn AccountStore>) {
    let (alice, bob) = (user(), user());
    assert_eq!(store.epoch(&alice).await.unwrap(), 0);
    assert_eq!(store.raise_epoch(&alice).await.unwrap(), 1);
    assert_eq!(store.raise_epoch(&alice).await.unwrap(), 2);
    assert_eq!(store.epoch(&alice).await.unwrap(), 2);
    assert_eq!(store.epoch(&bob).await.unwrap(), 0, "epochs are per user");
    assert_eq!(store.raise_epoch(&bob).await.unwrap(), 1);
    assert_eq!(store.epoch(&alice).await.unwrap(), 2);
}

/// 16 concurrent raises of a new user's epoch: each returns a distinct
/// value (1 to 16) and the epoch ends at 16.
pub async fn concurrent_epoch_raises_count_all(store: Arc<dyn AccountStore>) {
    let user = user();
    let mut results = concurrently(16, |_| {
        let (store, user) = (Arc::clone(&store), user.clone());
        async move { store.raise_epoch(&user).await.unwrap() }
    })
    .await;
    results.sort_unstable();
    assert_eq!(results, (1..=16).collect::<Vec<u64>>(), "no raise is lost");
    assert_eq!(store.epoch(&user).await.unwrap(), 16);
}

/// What is done to one user changes nothing of another's: enrolment,
/// codes, steps, removal, epochs.
pub async fn users_are_independent(store: Arc<dyn AccountStore>) {
    let alice_codes = code_hashes(3);
    let (alice, alice_secret) = confirmed_user(&*store, 5, &alice_codes).await;
    let bob = user();
    // Bob has nothing of Alice's.
    assert_eq!(store.totp(&bob).await.unwrap(), None);
    assert!(store.second_factors(&bob).await.unwrap().is_empty());
    assert_eq!(store.recovery_codes_left(&bob).await.unwrap(), 0);
    assert!(
        !store
            .consume_recovery_code(&bob, &alice_codes[0])
            .await
            .unwrap()
    );
    assert!(!store.record_totp_step(&bob, 6).await.unwrap());
    assert!(
        !store
            .confirm_totp(&bob, &alice_secret, 6, &[])
            .await
            .unwrap()
    );
    // Bob's enrolment, codes, removal and epoch leave Alice's alone.
    let bob_secret = sealed();
    assert!(store.set_pending_totp(&bob, &bob_secret).await.unwrap());
    let bob_codes = code_hashes(2);
    assert!(
        store
            .confirm_totp(&bob, &bob_secret, 50, &bob_codes)
            .await
            .unwrap()
    );
    assert!(store.record_totp_step(&bob, 60).await.unwrap());
    store
        .replace_recovery_codes(&bob, &code_hashes(4))
        .await
        .unwrap();
    store.raise_epoch(&bob).await.unwrap();
    store.remove_totp(&bob).await.unwrap();
    assert_eq!(
        store.totp(&alice).await.unwrap(),
        Some(StoredTotp {
            sealed_secret: alice_secret,
            confirmed: true,
            last_step: Some(5),
        })
    );
    assert_eq!(store.recovery_codes_left(&alice).await.unwrap(), 3);
    assert_eq!(store.epoch(&alice).await.unwrap(), 0);
    assert_eq!(store.epoch(&bob).await.unwrap(), 1);
    // And Alice's codes are hers only.
    assert!(
        store
            .consume_recovery_code(&alice, &alice_codes[0])
            .await
            .unwrap()
    );
    assert!(store.record_totp_step(&alice, 6).await.unwrap());
}

/// A fresh address, distinct per call.
fn address() -> String {
    format!("{}@example.com", unique("suite"))
}

/// An address is stored unverified and finds no user until verified;
/// verifying needs the address to be still the user's; a new address
/// replaces the old one, unverified, and the old one finds nobody.
pub async fn email_is_found_once_verified(store: Arc<dyn AccountStore>) {
    let (user, first, second) = (user(), address(), address());
    assert_eq!(store.email(&user).await.unwrap(), None);
    store.set_email(&user, &first).await.unwrap();
    assert_eq!(
        store.email(&user).await.unwrap(),
        Some(StoredEmail {
            address: first.clone(),
            verified: false,
            pending: None
        })
    );
    assert_eq!(
        store.find_by_email(&first).await.unwrap(),
        None,
        "unverified"
    );
    assert!(
        !store.verify_email(&user, &second).await.unwrap(),
        "not its address"
    );
    assert!(store.verify_email(&user, &first).await.unwrap());
    assert_eq!(
        store.find_by_email(&first).await.unwrap(),
        Some(user.clone())
    );
    assert!(
        store
            .email(&user)
            .await
            .unwrap()
            .is_some_and(|e| e.verified)
    );
    store.set_email(&user, &second).await.unwrap();
    assert_eq!(
        store.email(&user).await.unwrap(),
        Some(StoredEmail {
            address: second.clone(),
            verified: false,
            pending: None
        })
    );
    assert_eq!(store.find_by_email(&first).await.unwrap(), None);
    assert_eq!(store.find_by_email(&second).await.unwrap(), None);
    assert!(
        !store.verify_email(&user, &first).await.unwrap(),
        "the old address"
    );
}

/// Two users may claim one address; the first to verify it owns it, the
/// other's verification fails (concurrently too: exactly one wins).
pub async fn a_verified_address_belongs_to_one_user(store: Arc<dyn AccountStore>) {
    let shared = address();
    let users: Vec<String> = (0..8).map(|_| user()).collect();
    for user in &users {
        store.set_email(user, &shared).await.unwrap();
    }
    let results = concurrently(users.len(), |i| {
        let (store, user, shared) = (Arc::clone(&store), users[i].clone(), shared.clone());
        async move { store.verify_email(&user, &shared).await.unwrap() }
    })
    .await;
    assert_eq!(results.iter().filter(|won| **won).count(), 1, "{results:?}");
    let winner = &users[results.iter().position(|won| *won).unwrap()];
    assert_eq!(
        store.find_by_email(&shared).await.unwrap().as_ref(),
        Some(winner)
    );
}

/// A verified address stays in effect while a new one waits; verifying
/// the new one replaces it (the old finds nobody); a newer pending address
/// replaces an older one; without a verified address a change is a plain
/// unverified address.
pub async fn a_changed_address_takes_effect_once_verified(store: Arc<dyn AccountStore>) {
    let (user, old, new, newer) = (user(), address(), address(), address());
    store.set_pending_email(&user, &old).await.unwrap();
    assert_eq!(
        store.email(&user).await.unwrap(),
        Some(StoredEmail {
            address: old.clone(),
            verified: false,
            pending: None
        }),
        "nothing verified yet: a plain address"
    );
    assert!(store.verify_email(&user, &old).await.unwrap());
    store.set_pending_email(&user, &new).await.unwrap();
    store.set_pending_email(&user, &newer).await.unwrap();
    assert_eq!(
        store.email(&user).await.unwrap(),
        Some(StoredEmail {
            address: old.clone(),
            verified: true,
            pending: Some(newer.clone())
        })
    );
    assert_eq!(store.find_by_email(&old).await.unwrap(), Some(user.clone()));
    assert!(!store.verify_email(&user, &new).await.unwrap(), "replaced");
    assert!(
        !store.verify_email(&user, &old).await.unwrap(),
        "already verified"
    );
    assert!(store.verify_email(&user, &newer).await.unwrap());
    assert_eq!(
        store.email(&user).await.unwrap(),
        Some(StoredEmail {
            address: newer.clone(),
            verified: true,
            pending: None
        })
    );
    assert_eq!(store.find_by_email(&old).await.unwrap(), None);
    assert_eq!(store.find_by_email(&newer).await.unwrap(), Some(user));
}
