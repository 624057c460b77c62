//! The [`TokenStore`] contract: a token is taken once, by one of any
//! number of concurrent callers, only for its purpose and only before it
//! expires on the caller's clock; a key is never overwritten; tokens are
//! deleted per user and purpose, and when expired; records come back
//! exactly as stored.
//!
//! Run it with [`token_store_suite`] or
//! [`token_store_tests!`](crate::token_store_tests). Each case uses fresh
//! random keys and user ids (`suite-user-<random>`), and tokens that
//! expire after the real time (except the expired ones of
//! [`delete_expired`], which expired before it), so the cases can share
//! one store and one database.

use std::sync::Arc;
use std::time::Duration;

use super::{concurrently, run_case, unique};
use crate::clock::{Clock, SystemClock, Timestamp};
use crate::single_use::{
    Purpose, SingleUseToken, TokenKey, TokenRecord, TokenStore, TokenStoreError,
};

/// What a token store does beyond the common core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TokenStoreCaps {
    /// Expires tokens natively (a TTL), so
    /// [`TokenStore::delete_expired`] may count nothing. `false` (the
    /// default) for the memory and SQL stores.
    pub native_expiry: bool,
    /// Keeps [`TokenStore::peek`]'s default (it answers `None`): the suite
    /// then checks only that a peek takes nothing. `false` (the default)
    /// for the toolkit's stores.
    pub without_peek: bool,
}

/// A fresh user id.
fn user() -> String {
    unique("suite-user")
}

/// A fresh random token key.
fn new_key() -> TokenKey {
    SingleUseToken::generate()
        .expect("the OS random number generator works")
        .key()
}

/// A record of `user` for `purpose`, expiring after the purpose's lifetime
/// from `now`, with a binding distinct per call.
fn record(user: &str, purpose: Purpose, now: Timestamp) -> TokenRecord {
    TokenRecord {
        purpose,
        user_id: user.to_owned(),
        binding: unique("binding"),
        expires_at: now.saturating_add(purpose.lifetime()),
    }
}

/// Inserts a fresh token of `user` for `purpose`; returns its key and
/// record.
async fn issue(
    store: &dyn TokenStore,
    user: &str,
    purpose: Purpose,
    now: Timestamp,
) -> (TokenKey, TokenRecord) {
    let key = new_key();
    let record = record(user, purpose, now);
    store.insert(&key, &record).await.unwrap();
    (key, record)
}

/// Runs every case against `store` (which may hold other tokens), and
/// panics naming the first case that fails.
///
/// ```
/// use std::sync::Arc;
///
/// use auth_core::single_use::{MemoryTokenStore, TokenStore};
/// use auth_core::testing::TokenStoreCaps;
///
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() {
/// let store: Arc<dyn TokenStore> = Arc::new(MemoryTokenStore::new());
/// auth_core::testing::token_store_suite(store, TokenStoreCaps::default()).await;
/// # }
/// ```
pub async fn token_store_suite(store: Arc<dyn TokenStore>, caps: TokenStoreCaps) {
    macro_rules! run {
        ($($case:ident),* $(,)?) => {
            $(
                run_case("token store", stringify!($case), $case(Arc::clone(&store), caps)).await;
            )*
        };
    }
    run!(
        consume_returns_the_record_once,
        concurrent_consumes_one_wins,
        wrong_purpose_burns_the_token,
        peek_leaves_the_token,
        expired_tokens_are_refused,
        insert_never_overwrites,
        delete_for_user_is_scoped,
        delete_expired,
        records_round_trip_exactly,
    );
}

/// One test per case of the token-store contract, in a module `$name`:
/// `$name::consume_returns_the_record_once`, ... Each runs on its own
/// multi-threaded runtime (as `#[tokio::test(flavor = "multi_thread",
/// worker_threads = 2)]`) with a store from the block, which returns
/// `Option<Arc<dyn TokenStore>>`: `None` skips the case (e.g. when a
/// database URL is not set; `?` works). Items of the calling module are in
/// scope in the block.
///
/// ```no_run
/// use std::sync::Arc;
///
/// use auth_core::single_use::{MemoryTokenStore, TokenStore};
/// use auth_core::testing::TokenStoreCaps;
///
/// auth_core::token_store_tests!(memory, TokenStoreCaps::default(), {
///     Some(Arc::new(MemoryTokenStore::new()) as Arc<dyn TokenStore>)
/// });
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! token_store_tests {
    ($name:ident, $caps:expr, $make:block) => {
        $crate::token_store_tests!(@cases $name, $caps, $make, [
            consume_returns_the_record_once,
            concurrent_consumes_one_wins,
            wrong_purpose_burns_the_token,
            peek_leaves_the_token,
            expired_tokens_are_refused,
            insert_never_overwrites,
            delete_for_user_is_scoped,
            delete_expired,
            records_round_trip_exactly,
        ]);
    };
    (@cases $name:ident, $caps:expr, $make:block, [$($case:ident),* $(,)?]) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn store() -> ::std::option::Option<
                ::std::sync::Arc<dyn $crate::single_use::TokenStore>,
            > $make

            $(
                #[test]
                fn $case() {
                    $crate::testing::__private::runtime().block_on(async {
                        if let ::std::option::Option::Some(store) = store().await {
                            $crate::testing::token_store::$case(store, $caps).await;
                        }
                    });
                }
            )*
        }
    };
}

/// A token inserted is consumed once, for its purpose, and comes back
/// equal; a second consume and an unknown key answer `None`.
pub async fn consume_returns_the_record_once(store: Arc<dyn TokenStore>, _caps: TokenStoreCaps) {
    let now = SystemClock.now();
    let user = user();
    for purpose in Purpose::ALL {
        let (key, record) = issue(&*store, &user, purpose, now).await;
        assert_eq!(
            store.consume(&key, purpose, now).await.unwrap(),
            Some(record),
            "{purpose:?}"
        );
        assert_eq!(
            store.consume(&key, purpose, now).await.unwrap(),
            None,
            "a token is used once ({purpose:?})"
        );
    }
    assert_eq!(
        store
            .consume(&new_key(), Purpose::PasswordReset, now)
            .await
            .unwrap(),
        None,
        "an unknown key"
    );
}

/// 16 concurrent consumes of one token: exactly one gets the record.
pub async fn concurrent_consumes_one_wins(store: Arc<dyn TokenStore>, _caps: TokenStoreCaps) {
    let now = SystemClock.now();
    let (key, record) = issue(&*store, &user(), Purpose::MagicLink, now).await;
    let results = concurrently(16, |_| {
        let store = Arc::clone(&store);
        async move { store.consume(&key, Purpose::MagicLink, now).await.unwrap() }
    })
    .await;
    let winners: Vec<&TokenRecord> = results.iter().flatten().collect();
    assert_eq!(winners.len(), 1, "exactly one use of a token succeeds");
    assert_eq!(winners[0], &record);
    assert_eq!(
        store.consume(&key, Purpose::MagicLink, now).await.unwrap(),
        None
    );
}

/// A token presented for another purpose answers `None` and is gone: it
/// no longer works for its own purpose either.
pub async fn wrong_purpose_burns_the_token(store: Arc<dyn TokenStore>, _caps: TokenStoreCaps) {
    let now = SystemClock.now();
    let user = user();
    for issued in Purpose::ALL {
        for presented in Purpose::ALL.into_iter().filter(|p| *p != issued) {
            let (key, _) = issue(&*store, &user, issued, now).await;
            assert_eq!(
                store.consume(&key, presented, now).await.unwrap(),
                None,
                "a {issued:?} token is no {presented:?} token"
            );
            assert_eq!(
                store.consume(&key, issued, now).await.unwrap(),
                None,
                "a {issued:?} token shown as {presented:?} is burnt"
            );
        }
    }
}

/// `peek` answers the record without taking it (and never for another
/// purpose, nor once expired or consumed), so the token still works. A
/// store [`without_peek`](TokenStoreCaps::without_peek) answers `None`.
pub async fn peek_leaves_the_token(store: Arc<dyn TokenStore>, caps: TokenStoreCaps) {
    let now = SystemClock.now();
    let user = user();
    let (key, record) = issue(&*store, &user, Purpose::MagicLink, now).await;
    let expected = (!caps.without_peek).then(|| record.clone());
    for _ in 0..2 {
        assert_eq!(
            store.peek(&key, Purpose::MagicLink, now).await.unwrap(),
            expected
        );
    }
    assert_eq!(
        store.peek(&key, Purpose::PasswordReset, now).await.unwrap(),
        None,
        "another purpose"
    );
    let expired = record.expires_at;
    assert_eq!(
        store.peek(&key, Purpose::MagicLink, expired).await.unwrap(),
        None,
        "expired"
    );
    assert_eq!(
        store.consume(&key, Purpose::MagicLink, now).await.unwrap(),
        Some(record),
        "a peek took nothing, not even for another purpose"
    );
    assert_eq!(
        store.peek(&key, Purpose::MagicLink, now).await.unwrap(),
        None,
        "consumed"
    );
}

/// A token is refused from its expiry on (at `now == expires_at` and
/// after), judged by the `now` the caller passes, and accepted one
/// millisecond before.
pub async fn expired_tokens_are_refused(store: Arc<dyn TokenStore>, _caps: TokenStoreCaps) {
    let now = SystemClock.now();
    let user = user();
    for purpose in Purpose::ALL {
        let (before, record) = issue(&*store, &user, purpose, now).await;
        let just_before = record.expires_at.saturating_sub(Duration::from_millis(1));
        assert_eq!(
            store.consume(&before, purpose, just_before).await.unwrap(),
            Some(record),
            "live one millisecond before its expiry ({purpose:?})"
        );
        let (at, record) = issue(&*store, &user, purpose, now).await;
        assert_eq!(
            store
                .consume(&at, purpose, record.expires_at)
                .await
                .unwrap(),
            None,
            "expired at its expiry ({purpose:?})"
        );
        let (later, record) = issue(&*store, &user, purpose, now).await;
        let day_after = record
            .expires_at
            .saturating_add(Duration::from_secs(86_400));
        assert_eq!(
            store.consume(&later, purpose, day_after).await.unwrap(),
            None,
            "expired a day later ({purpose:?})"
        );
    }
}

/// Inserting a key that exists fails with
/// [`TokenStoreError::Collision`] and keeps the first record.
pub async fn insert_never_overwrites(store: Arc<dyn TokenStore>, _caps: TokenStoreCaps) {
    let now = SystemClock.now();
    let (key, first) = issue(&*store, &user(), Purpose::PasswordReset, now).await;
    for purpose in Purpose::ALL {
        let second = record(&user(), purpose, now);
        assert!(
            matches!(
                store.insert(&key, &second).await,
                Err(TokenStoreError::Collision)
            ),
            "a key is never overwritten ({purpose:?})"
        );
    }
    assert_eq!(
        store
            .consume(&key, Purpose::PasswordReset, now)
            .await
            .unwrap(),
        Some(first)
    );
}

/// `delete_for_user` deletes every token of one user for one purpose and
/// answers how many; the user's other purposes, other users (one of them
/// with an id that starts like the user's) and consumed tokens are not
/// counted or touched.
pub async fn delete_for_user_is_scoped(store: Arc<dyn TokenStore>, _caps: TokenStoreCaps) {
    let now = SystemClock.now();
    let alice = user();
    let bob = user();
    let alice_too = format!("{alice}:{}", Purpose::PasswordReset.as_str());
    let mut resets = Vec::new();
    for _ in 0..4 {
        resets.push(issue(&*store, &alice, Purpose::PasswordReset, now).await);
    }
    // One is used before: it is not counted.
    assert!(
        store
            .consume(&resets[0].0, Purpose::PasswordReset, now)
            .await
            .unwrap()
            .is_some()
    );
    let verification = issue(&*store, &alice, Purpose::EmailVerification, now).await;
    let magic = issue(&*store, &alice, Purpose::MagicLink, now).await;
    let bobs = issue(&*store, &bob, Purpose::PasswordReset, now).await;
    let prefixed = issue(&*store, &alice_too, Purpose::PasswordReset, now).await;

    assert_eq!(
        store
            .delete_for_user(&alice, Purpose::PasswordReset)
            .await
            .unwrap(),
        3,
        "alice's three unused reset tokens"
    );
    for (key, _) in &resets {
        assert_eq!(
            store
                .consume(key, Purpose::PasswordReset, now)
                .await
                .unwrap(),
            None
        );
    }
    assert_eq!(
        store
            .delete_for_user(&alice, Purpose::PasswordReset)
            .await
            .unwrap(),
        0,
        "nothing left"
    );
    assert_eq!(
        store
            .delete_for_user(&user(), Purpose::PasswordReset)
            .await
            .unwrap(),
        0,
        "an unknown user"
    );
    for (key, record) in [verification, bobs, prefixed] {
        assert_eq!(
            store.consume(&key, record.purpose, now).await.unwrap(),
            Some(record.clone()),
            "{} kept its {:?} token",
            record.user_id,
            record.purpose
        );
    }
    assert_eq!(
        store
            .delete_for_user(&alice, Purpose::MagicLink)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .consume(&magic.0, Purpose::MagicLink, now)
            .await
            .unwrap(),
        None
    );
}

/// `delete_expired` deletes the tokens that expired at or before `now`
/// (counting them unless the store expires natively) and keeps live ones.
/// The expired tokens here expired before the real time, so this case
/// leaves other tests' tokens alone.
pub async fn delete_expired(store: Arc<dyn TokenStore>, caps: TokenStoreCaps) {
    let now = SystemClock.now();
    let user = user();
    let past = now.saturating_sub(Duration::from_secs(5));
    let mut stale = Vec::new();
    for purpose in [Purpose::PasswordReset, Purpose::MagicLink] {
        let key = new_key();
        let record = TokenRecord {
            expires_at: past,
            ..record(&user, purpose, now)
        };
        store.insert(&key, &record).await.unwrap();
        stale.push((key, record));
    }
    let (live, live_record) = issue(&*store, &user, Purpose::PasswordReset, now).await;
    let removed = store.delete_expired(SystemClock.now()).await.unwrap();
    if !caps.native_expiry {
        assert!(
            removed >= 2,
            "the two expired tokens were deleted ({removed})"
        );
        // Gone: not even a caller whose clock is behind gets them.
        let earlier = past.saturating_sub(Duration::from_secs(60));
        for (key, record) in &stale {
            assert_eq!(
                store.consume(key, record.purpose, earlier).await.unwrap(),
                None,
                "an expired token was deleted"
            );
        }
    }
    for (key, record) in &stale {
        assert_eq!(store.consume(key, record.purpose, now).await.unwrap(), None);
    }
    assert_eq!(
        store
            .consume(&live, Purpose::PasswordReset, now)
            .await
            .unwrap(),
        Some(live_record),
        "a live token is kept"
    );
}

/// Records come back exactly as stored: Unicode and punctuation in the
/// binding and user id, an empty binding, a long user id, an expiry to the
/// millisecond.
pub async fn records_round_trip_exactly(store: Arc<dyn TokenStore>, _caps: TokenStoreCaps) {
    let now = SystemClock.now();
    let long_user = format!("{}-{}", user(), "ü✉".repeat(400));
    let odd = |purpose: Purpose| {
        now.saturating_add(purpose.lifetime())
            .saturating_add(Duration::from_millis(123))
    };
    let records = [
        TokenRecord {
            purpose: Purpose::PasswordReset,
            user_id: long_user.clone(),
            binding: "argon2:ünïcødé ✉ 🔑 'quoted' \"double\" ; DROP TABLE x; --\n\ttab".to_owned(),
            expires_at: odd(Purpose::PasswordReset),
        },
        TokenRecord {
            purpose: Purpose::EmailVerification,
            user_id: format!("{}:with:colons and spaces", user()),
            binding: "Ålice+tag@exämple.org".to_owned(),
            expires_at: odd(Purpose::EmailVerification),
        },
        TokenRecord {
            purpose: Purpose::MagicLink,
            user_id: "42".repeat(3) + &user(),
            binding: String::new(),
            expires_at: odd(Purpose::MagicLink),
        },
    ];
    let mut keys = Vec::new();
    for record in &records {
        let key = new_key();
        store.insert(&key, record).await.unwrap();
        keys.push(key);
    }
    for (key, record) in keys.iter().zip(&records) {
        assert_eq!(
            store
                .consume(key, record.purpose, now)
                .await
                .unwrap()
                .as_ref(),
            Some(record),
            "{:?} round trip",
            record.purpose
        );
    }
    // The long user's tokens are found by user too.
    let (key, _) = issue(&*store, &long_user, Purpose::PasswordReset, now).await;
    assert_eq!(
        store
            .delete_for_user(&long_user, Purpose::PasswordReset)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .consume(&key, Purpose::PasswordReset, now)
            .await
            .unwrap(),
        None
    );
}
