//! The [`RefreshStore`] contract: a family has one current token; a
//! rotation spends it atomically (of concurrent rotations of one token
//! exactly one wins, so a family never branches); a spent token shown
//! again revokes the whole family, except the one spent by the latest
//! rotation within the grace period, which gets that rotation's successor
//! again; families die at their expiry, when idle and when revoked (by
//! token, by id, by user), and the purge removes the dead ones.
//!
//! Keys carry their family's id ([`RefreshKey::family_id`]): a key of a
//! live family that is not its current token is reuse, whether it was
//! spent or never issued, so a store needs one record per family.
//!
//! Run it with [`refresh_store_suite`] or
//! [`refresh_store_tests!`](crate::refresh_store_tests). Each case uses
//! fresh random family ids, token keys, user ids (`suite-user-<random>`)
//! and session stamps (`suite-stamp-<random>`), and families that are live
//! at the real time (except the dead ones of [`purge`], which died before
//! it; later deadlines are tested with a `now` in the future), so the cases
//! can share one store and one database.

use std::sync::Arc;
use std::time::Duration;

use super::{concurrently, run_case, unique};
use crate::clock::{Clock, SystemClock, Timestamp};
use crate::token::refresh::{
    Family, RefreshKey, RefreshStore, RefreshStoreError, RefreshToken, Rotation,
};

/// What a refresh store does beyond the common core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RefreshStoreCaps {
    /// Expires families natively (a TTL), so [`RefreshStore::purge`] may
    /// count nothing. `false` (the default) for the memory and SQL stores.
    pub native_expiry: bool,
}

/// A family lives 30 days at most.
const LIFETIME: Duration = Duration::from_secs(30 * 24 * 3_600);
/// And dies after 7 days unused.
const IDLE: Duration = Duration::from_secs(7 * 24 * 3_600);
/// Concurrent rotations of one token.
const RACERS: usize = 8;

/// A fresh user id.
fn user() -> String {
    unique("suite-user")
}

/// The key of a fresh random token of a family of its own (one no store
/// holds).
fn new_key() -> RefreshKey {
    RefreshToken::generate()
        .expect("the OS random number generator works")
        .key()
}

/// A fresh family id.
fn new_family_id() -> String {
    new_key().family_id()
}

/// The key of a fresh random token of family `id`.
fn key_in(id: &str) -> RefreshKey {
    RefreshKey::new(id, *new_key().as_bytes()).expect("a family id")
}

/// The key of a fresh random token of `key`'s family (its successor).
fn next_of(key: RefreshKey) -> RefreshKey {
    key_in(&key.family_id())
}

/// A fresh random session stamp.
fn stamp() -> String {
    unique("suite-stamp")
}

/// A fresh family of `user` (with its own random stamp), signed in at
/// `now`.
fn family(user: &str, now: Timestamp) -> Family {
    Family {
        id: new_family_id(),
        user_id: user.to_owned(),
        amr: vec!["pwd".to_owned(), "otp".to_owned()],
        stamp: stamp(),
        created_at: now,
        expires_at: now.saturating_add(LIFETIME),
        idle_timeout: IDLE,
        last_used_at: now,
    }
}

/// Creates `family`; returns its first token.
async fn start(store: &dyn RefreshStore, family: &Family) -> RefreshKey {
    let first = key_in(&family.id);
    store.create(family, first).await.unwrap();
    first
}

/// Rotates `presented` at `now` without grace and expects it to work;
/// returns the new token.
async fn rotate_ok(
    store: &dyn RefreshStore,
    family: &Family,
    presented: RefreshKey,
    now: Timestamp,
) -> RefreshKey {
    let next = next_of(presented);
    let rotation = store
        .rotate(presented, next, &sealed(&next), now, None)
        .await
        .unwrap();
    assert_eq!(
        rotation,
        Rotation::Rotated(Family {
            last_used_at: now,
            ..family.clone()
        }),
        "a current token rotates, and the family was used at `now`"
    );
    next
}

/// A stand-in for the sealed successor: distinct per token.
fn sealed(next: &RefreshKey) -> Vec<u8> {
    let mut blob = b"sealed:".to_vec();
    blob.extend_from_slice(next.as_bytes());
    blob
}

/// `start + seconds`.
fn after(start: Timestamp, seconds: u64) -> Timestamp {
    start.saturating_add(Duration::from_secs(seconds))
}

/// Whether a rotation answer is one a dead family may give for a token it
/// had: never `Rotated` nor `Grace`.
fn refused(rotation: &Rotation) -> bool {
    matches!(rotation, Rotation::Invalid | Rotation::Reused { .. })
}

/// Runs every case against `store` (which may hold other families), and
/// panics naming the first case that fails.
///
/// ```
/// use std::sync::Arc;
///
/// use auth_core::testing::RefreshStoreCaps;
/// use auth_core::token::refresh::{MemoryRefreshStore, RefreshStore};
///
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() {
/// let store: Arc<dyn RefreshStore> = Arc::new(MemoryRefreshStore::new());
/// auth_core::testing::refresh_store_suite(store, RefreshStoreCaps::default()).await;
/// # }
/// ```
pub async fn refresh_store_suite(store: Arc<dyn RefreshStore>, caps: RefreshStoreCaps) {
    macro_rules! run {
        ($($case:ident),* $(,)?) => {
            $(
                run_case("refresh store", stringify!($case), $case(Arc::clone(&store), caps)).await;
            )*
        };
    }
    run!(
        rotation_chain,
        replay_of_a_spent_token_revokes_the_family,
        concurrent_rotations_one_wins,
        concurrent_rotations_with_grace,
        older_predecessor_is_reuse_even_with_grace,
        grace_returns_the_same_successor,
        grace_ends,
        unknown_token_is_invalid,
        any_other_key_of_a_live_family_is_reuse,
        a_long_chain_still_knows_its_first_token,
        create_never_overwrites,
        revoke_by_token,
        revoke_family,
        revoke_user_is_scoped,
        is_live,
        absolute_expiry,
        idle_expiry,
        purge,
        families_round_trip_exactly,
    );
}

/// One test per case of the refresh-store contract, in a module `$name`:
/// `$name::rotation_chain`, ... Each runs on its own multi-threaded runtime
/// (as `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]`) with
/// a store from the block, which returns
/// `Option<Arc<dyn RefreshStore>>`: `None` skips the case (e.g. when a
/// database URL is not set; `?` works). Items of the calling module are in
/// scope in the block.
///
/// ```no_run
/// use std::sync::Arc;
///
/// use auth_core::testing::RefreshStoreCaps;
/// use auth_core::token::refresh::{MemoryRefreshStore, RefreshStore};
///
/// auth_core::refresh_store_tests!(memory, RefreshStoreCaps::default(), {
///     Some(Arc::new(MemoryRefreshStore::new()) as Arc<dyn RefreshStore>)
/// });
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! refresh_store_tests {
    ($name:ident, $caps:expr, $make:block) => {
        $crate::refresh_store_tests!(@cases $name, $caps, $make, [
            rotation_chain,
            replay_of_a_spent_token_revokes_the_family,
            concurrent_rotations_one_wins,
            concurrent_rotations_with_grace,
            older_predecessor_is_reuse_even_with_grace,
            grace_returns_the_same_successor,
            grace_ends,
            unknown_token_is_invalid,
            any_other_key_of_a_live_family_is_reuse,
            a_long_chain_still_knows_its_first_token,
            create_never_overwrites,
            revoke_by_token,
            revoke_family,
            revoke_user_is_scoped,
            is_live,
            absolute_expiry,
            idle_expiry,
            purge,
            families_round_trip_exactly,
        ]);
    };
    (@cases $name:ident, $caps:expr, $make:block, [$($case:ident),* $(,)?]) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn store() -> ::std::option::Option<
                ::std::sync::Arc<dyn $crate::token::refresh::RefreshStore>,
            > $make

            $(
                #[test]
                fn $case() {
                    $crate::testing::__private::runtime().block_on(async {
                        if let ::std::option::Option::Some(store) = store().await {
                            $crate::testing::refresh_store::$case(store, $caps).await;
                        }
                    });
                }
            )*
        }
    };
}

/// A family rotates along a chain: each current token rotates once into
/// the next, the family coming back as created with `last_used_at` at each
/// rotation's `now`; it stays live.
pub async fn rotation_chain(store: Arc<dyn RefreshStore>, _caps: RefreshStoreCaps) {
    let now = SystemClock.now();
    let family = family(&user(), now);
    let mut current = start(&*store, &family).await;
    let mut at = now;
    for step in 1..=5 {
        at = after(now, step * 60);
        current = rotate_ok(&*store, &family, current, at).await;
    }
    assert!(store.is_live(&family.id, at).await.unwrap());
    rotate_ok(&*store, &family, current, after(at, 1)).await;
}

/// The spent token shown again (no grace period) answers `Reused` with
/// the family and its user, and the family is dead: its current token no
/// longer rotates, it is not live, and the spent token is refused again.
pub async fn replay_of_a_spent_token_revokes_the_family(
    store: Arc<dyn RefreshStore>,
    _caps: RefreshStoreCaps,
) {
    let now = SystemClock.now();
    let family = family(&user(), now);
    let first = start(&*store, &family).await;
    let second = rotate_ok(&*store, &family, first, after(now, 10)).await;
    let replay = store
        .rotate(first, next_of(first), b"x", after(now, 11), None)
        .await
        .unwrap();
    assert_eq!(
        replay,
        Rotation::Reused {
            family_id: family.id.clone(),
            user_id: family.user_id.clone(),
        },
        "a spent token shown again is reuse"
    );
    assert!(!store.is_live(&family.id, after(now, 12)).await.unwrap());
    let current = store
        .rotate(second, next_of(second), b"x", after(now, 12), None)
        .await
        .unwrap();
    assert!(
        refused(&current),
        "the current token of a revoked family is refused: {current:?}"
    );
    for grace in [None, Some(Duration::from_secs(3_600))] {
        let again = store
            .rotate(first, next_of(first), b"x", after(now, 13), grace)
            .await
            .unwrap();
        assert!(refused(&again), "{again:?}");
    }
}

/// Concurrent rotations of one token (no grace period): exactly one
/// `Rotated`, the others `Reused` (at least one: the family is revoked)
/// or, once it is revoked, `Invalid`. Afterwards no token of any of them
/// rotates: the family never branched.
pub async fn concurrent_rotations_one_wins(store: Arc<dyn RefreshStore>, _caps: RefreshStoreCaps) {
    let now = SystemClock.now();
    let family = family(&user(), now);
    let first = start(&*store, &family).await;
    let nexts: Vec<RefreshKey> = (0..RACERS).map(|_| next_of(first)).collect();
    let at = after(now, 1);
    let results = concurrently(RACERS, |i| {
        let store = Arc::clone(&store);
        let next = nexts[i];
        async move {
            store
                .rotate(first, next, &sealed(&next), at, None)
                .await
                .unwrap()
        }
    })
    .await;
    let rotated = results
        .iter()
        .filter(|r| matches!(r, Rotation::Rotated(_)))
        .count();
    let reused = results
        .iter()
        .filter(|r| matches!(r, Rotation::Reused { .. }))
        .count();
    assert_eq!(
        rotated, 1,
        "exactly one of {RACERS} concurrent rotations wins: {results:?}"
    );
    assert!(
        reused >= 1,
        "the others are reuse (then invalid): {results:?}"
    );
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Rotation::Rotated(_)) || refused(r)),
        "{results:?}"
    );
    assert!(!store.is_live(&family.id, at).await.unwrap());
    for next in &nexts {
        let later = store
            .rotate(*next, next_of(*next), b"x", after(now, 2), None)
            .await
            .unwrap();
        assert!(refused(&later), "no token of a revoked family: {later:?}");
    }
}

/// Concurrent rotations of one token with a grace period: exactly one
/// `Rotated`, every other one `Grace` with the winner's sealed successor,
/// never two `Rotated`. Afterwards exactly the winner's token is current.
pub async fn concurrent_rotations_with_grace(
    store: Arc<dyn RefreshStore>,
    _caps: RefreshStoreCaps,
) {
    let now = SystemClock.now();
    let family = family(&user(), now);
    let first = start(&*store, &family).await;
    let nexts: Vec<RefreshKey> = (0..RACERS).map(|_| next_of(first)).collect();
    let at = after(now, 1);
    let grace = Some(Duration::from_secs(60));
    let results = concurrently(RACERS, |i| {
        let store = Arc::clone(&store);
        let next = nexts[i];
        async move {
            store
                .rotate(first, next, &sealed(&next), at, grace)
                .await
                .unwrap()
        }
    })
    .await;
    let winners: Vec<usize> = (0..RACERS)
        .filter(|i| matches!(results[*i], Rotation::Rotated(_)))
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "one rotation wins, never two: {results:?}"
    );
    let winner = nexts[winners[0]];
    let expected = Family {
        last_used_at: at,
        ..family.clone()
    };
    for (i, result) in results.iter().enumerate() {
        if i != winners[0] {
            assert_eq!(
                result,
                &Rotation::Grace {
                    family: expected.clone(),
                    sealed_successor: sealed(&winner),
                },
                "a concurrent loser gets the winner's successor"
            );
        }
    }
    assert!(store.is_live(&family.id, after(now, 2)).await.unwrap());
    let third = rotate_ok(&*store, &expected, winner, after(now, 2)).await;
    // A loser's key never became a token: shown now, it is a key of the
    // family other than its current one (reuse), not a rotation.
    let loser = nexts[(winners[0] + 1) % RACERS];
    assert_eq!(
        store
            .rotate(loser, next_of(loser), b"x", after(now, 3), None)
            .await
            .unwrap(),
        Rotation::Reused {
            family_id: family.id.clone(),
            user_id: family.user_id.clone(),
        },
        "a loser's key never became a token"
    );
    let current = store
        .rotate(third, next_of(third), b"x", after(now, 4), None)
        .await
        .unwrap();
    assert!(refused(&current), "{current:?}");
}

/// A token spent before the latest rotation is reuse even within the
/// grace period, and revokes the family.
pub async fn older_predecessor_is_reuse_even_with_grace(
    store: Arc<dyn RefreshStore>,
    _caps: RefreshStoreCaps,
) {
    let now = SystemClock.now();
    let family = family(&user(), now);
    let first = start(&*store, &family).await;
    let second = rotate_ok(&*store, &family, first, after(now, 1)).await;
    let third = rotate_ok(&*store, &family, second, after(now, 2)).await;
    let replay = store
        .rotate(
            first,
            next_of(first),
            b"x",
            after(now, 3),
            Some(Duration::from_secs(3_600)),
        )
        .await
        .unwrap();
    assert_eq!(
        replay,
        Rotation::Reused {
            family_id: family.id.clone(),
            user_id: family.user_id.clone(),
        },
        "only the immediate predecessor has grace"
    );
    let current = store
        .rotate(third, next_of(third), b"x", after(now, 4), None)
        .await
        .unwrap();
    assert!(refused(&current), "{current:?}");
    assert!(!store.is_live(&family.id, after(now, 4)).await.unwrap());
}

/// The token spent by the latest rotation, shown again within the grace
/// period, answers `Grace` with that rotation's sealed successor (not the
/// new blob passed now), every time, changing nothing: the new key passed
/// does not become a token, and the successor still rotates.
pub async fn grace_returns_the_same_successor(
    store: Arc<dyn RefreshStore>,
    _caps: RefreshStoreCaps,
) {
    let now = SystemClock.now();
    let family = family(&user(), now);
    let first = start(&*store, &family).await;
    let second = rotate_ok(&*store, &family, first, after(now, 1)).await;
    let grace = Some(Duration::from_secs(30));
    let expected = Rotation::Grace {
        family: Family {
            last_used_at: after(now, 1),
            ..family.clone()
        },
        sealed_successor: sealed(&second),
    };
    let mut passed = Vec::new();
    for seconds in [2, 10, 30] {
        let other = next_of(first);
        let retry = store
            .rotate(first, other, &sealed(&other), after(now, seconds), grace)
            .await
            .unwrap();
        assert_eq!(retry, expected, "a retry {seconds} s later");
        passed.push(other);
    }
    let third = rotate_ok(
        &*store,
        &Family {
            last_used_at: after(now, 1),
            ..family.clone()
        },
        second,
        after(now, 31),
    )
    .await;
    // Now `second` is the predecessor, `first` an older one.
    assert!(matches!(
        store
            .rotate(second, next_of(second), b"x", after(now, 32), grace)
            .await
            .unwrap(),
        Rotation::Grace { .. }
    ));
    assert!(store.is_live(&family.id, after(now, 32)).await.unwrap());
    let fourth = rotate_ok(
        &*store,
        &Family {
            last_used_at: after(now, 31),
            ..family.clone()
        },
        third,
        after(now, 33),
    )
    .await;
    // The keys passed with the retries never became tokens: shown now,
    // each is a key of the family that is not its current one (reuse).
    let shown = store
        .rotate(passed[0], next_of(fourth), b"x", after(now, 34), grace)
        .await
        .unwrap();
    assert_eq!(
        shown,
        Rotation::Reused {
            family_id: family.id.clone(),
            user_id: family.user_id.clone(),
        },
        "the key passed with a retry is not a token"
    );
}

/// The grace period ends: one millisecond before its end the predecessor
/// gets `Grace`; at its end (and after) it is reuse, and the family is
/// revoked. Without a grace period it is reuse at once.
pub async fn grace_ends(store: Arc<dyn RefreshStore>, _caps: RefreshStoreCaps) {
    let now = SystemClock.now();
    let grace = Duration::from_secs(20);
    let spent_at = after(now, 1);
    for (at, grace, within) in [
        (
            spent_at.saturating_add(grace - Duration::from_millis(1)),
            Some(grace),
            true,
        ),
        (spent_at.saturating_add(grace), Some(grace), false),
        (after(now, 3_600), Some(grace), false),
        (spent_at, None, false),
    ] {
        let family = family(&user(), now);
        let first = start(&*store, &family).await;
        rotate_ok(&*store, &family, first, spent_at).await;
        let replay = store
            .rotate(first, next_of(first), b"x", at, grace)
            .await
            .unwrap();
        if within {
            assert!(matches!(replay, Rotation::Grace { .. }), "{replay:?}");
            assert!(store.is_live(&family.id, at).await.unwrap());
        } else {
            assert_eq!(
                replay,
                Rotation::Reused {
                    family_id: family.id.clone(),
                    user_id: family.user_id.clone(),
                },
                "outside the grace period ({grace:?}, {} ms after)",
                at.as_unix_millis() - spent_at.as_unix_millis()
            );
            assert!(!store.is_live(&family.id, at).await.unwrap());
        }
    }
}

/// An unknown token is `Invalid` (with or without grace) and changes
/// nothing: the key passed as its successor does not become a token.
pub async fn unknown_token_is_invalid(store: Arc<dyn RefreshStore>, _caps: RefreshStoreCaps) {
    let now = SystemClock.now();
    for grace in [None, Some(Duration::from_secs(60))] {
        let presented = new_key();
        let next = next_of(presented);
        assert_eq!(
            store
                .rotate(presented, next, b"x", now, grace)
                .await
                .unwrap(),
            Rotation::Invalid
        );
        assert_eq!(
            store
                .rotate(next, next_of(next), b"x", now, grace)
                .await
                .unwrap(),
            Rotation::Invalid
        );
    }
    assert_eq!(store.revoke_by_token(new_key()).await.unwrap(), None);
    assert!(!store.is_live(&new_family_id(), now).await.unwrap());
}

/// A key of a live family that was never its token (only a holder of one
/// of the family's tokens can make one: its id derives from their shared
/// secret) is reuse, with or without grace, and revokes the family, just as
/// a spent one; so is its successor's key shown with the presented token
/// as the *next* one: only the presented key decides.
pub async fn any_other_key_of_a_live_family_is_reuse(
    store: Arc<dyn RefreshStore>,
    _caps: RefreshStoreCaps,
) {
    let now = SystemClock.now();
    for grace in [None, Some(Duration::from_secs(60))] {
        let family = family(&user(), now);
        let first = start(&*store, &family).await;
        let second = rotate_ok(&*store, &family, first, after(now, 1)).await;
        let never = next_of(first);
        assert_eq!(
            store
                .rotate(never, next_of(first), b"x", after(now, 2), grace)
                .await
                .unwrap(),
            Rotation::Reused {
                family_id: family.id.clone(),
                user_id: family.user_id.clone(),
            },
            "a key of the family that was never current ({grace:?})"
        );
        assert!(!store.is_live(&family.id, after(now, 2)).await.unwrap());
        let current = store
            .rotate(second, next_of(second), b"x", after(now, 3), grace)
            .await
            .unwrap();
        assert!(refused(&current), "{current:?}");
    }
}

/// After many rotations a family's first token is still reuse, and any of
/// its spent tokens revokes it.
pub async fn a_long_chain_still_knows_its_first_token(
    store: Arc<dyn RefreshStore>,
    _caps: RefreshStoreCaps,
) {
    let now = SystemClock.now();
    let family = family(&user(), now);
    let first = start(&*store, &family).await;
    let mut current = first;
    let mut at = now;
    for step in 1..=50 {
        at = after(now, step);
        current = rotate_ok(&*store, &family, current, at).await;
    }
    assert_eq!(
        store
            .rotate(first, next_of(first), b"x", after(at, 1), None)
            .await
            .unwrap(),
        Rotation::Reused {
            family_id: family.id.clone(),
            user_id: family.user_id.clone(),
        },
        "the first of 51 tokens"
    );
    let again = store
        .rotate(current, next_of(current), b"x", after(at, 2), None)
        .await
        .unwrap();
    assert!(refused(&again), "{again:?}");

    let other = self::family(&user(), now);
    let other_first = start(&*store, &other).await;
    let other_second = rotate_ok(&*store, &other, other_first, after(now, 1)).await;
    rotate_ok(&*store, &other, other_second, after(now, 2)).await;
    assert_eq!(
        store.revoke_by_token(other_first).await.unwrap(),
        Some((other.id.clone(), other.user_id.clone())),
        "revoked by its first token, spent twice over"
    );
    assert!(!store.is_live(&other.id, after(now, 3)).await.unwrap());
}

/// `create` with a family id that exists fails with
/// [`RefreshStoreError::Collision`] and keeps the first family as it was.
pub async fn create_never_overwrites(store: Arc<dyn RefreshStore>, _caps: RefreshStoreCaps) {
    let now = SystemClock.now();
    let family = family(&user(), now);
    let first = start(&*store, &family).await;
    let same_id = Family {
        user_id: user(),
        stamp: stamp(),
        ..family.clone()
    };
    assert!(
        matches!(
            store.create(&same_id, key_in(&same_id.id)).await,
            Err(RefreshStoreError::Collision)
        ),
        "a family id is never reused"
    );
    rotate_ok(&*store, &family, first, after(now, 1)).await;
}

/// `revoke_by_token` revokes the family of a current or a spent token and
/// answers its id and user, once; other families (of the same user too)
/// are untouched.
pub async fn revoke_by_token(store: Arc<dyn RefreshStore>, _caps: RefreshStoreCaps) {
    let now = SystemClock.now();
    let alice = user();
    let one = family(&alice, now);
    let two = family(&alice, now);
    let other = family(&user(), now);
    let one_first = start(&*store, &one).await;
    let two_first = start(&*store, &two).await;
    let other_first = start(&*store, &other).await;
    let two_second = rotate_ok(&*store, &two, two_first, after(now, 1)).await;

    assert_eq!(
        store.revoke_by_token(one_first).await.unwrap(),
        Some((one.id.clone(), alice.clone())),
        "by its current token"
    );
    assert_eq!(store.revoke_by_token(one_first).await.unwrap(), None);
    assert!(!store.is_live(&one.id, after(now, 2)).await.unwrap());
    let after_revoke = store
        .rotate(one_first, next_of(one_first), b"x", after(now, 2), None)
        .await
        .unwrap();
    assert!(refused(&after_revoke), "{after_revoke:?}");

    assert_eq!(
        store.revoke_by_token(two_first).await.unwrap(),
        Some((two.id.clone(), alice.clone())),
        "by a spent token"
    );
    let after_revoke = store
        .rotate(two_second, next_of(two_second), b"x", after(now, 2), None)
        .await
        .unwrap();
    assert!(refused(&after_revoke), "{after_revoke:?}");
    assert_eq!(store.revoke_by_token(two_second).await.unwrap(), None);

    assert!(store.is_live(&other.id, after(now, 2)).await.unwrap());
    rotate_ok(&*store, &other, other_first, after(now, 2)).await;
}

/// `revoke_family` revokes one family, answering whether it was live
/// (unrevoked), once; an unknown id answers `false`.
pub async fn revoke_family(store: Arc<dyn RefreshStore>, _caps: RefreshStoreCaps) {
    let now = SystemClock.now();
    let alice = user();
    let one = family(&alice, now);
    let two = family(&alice, now);
    let one_first = start(&*store, &one).await;
    let one_second = rotate_ok(&*store, &one, one_first, after(now, 1)).await;
    let two_first = start(&*store, &two).await;

    assert!(store.revoke_family(&one.id).await.unwrap());
    assert!(!store.revoke_family(&one.id).await.unwrap());
    assert!(!store.revoke_family(&new_family_id()).await.unwrap());
    assert!(!store.is_live(&one.id, after(now, 2)).await.unwrap());
    for token in [one_first, one_second] {
        let rotation = store
            .rotate(token, next_of(token), b"x", after(now, 2), None)
            .await
            .unwrap();
        assert!(refused(&rotation), "{rotation:?}");
    }
    assert!(store.is_live(&two.id, after(now, 2)).await.unwrap());
    rotate_ok(&*store, &two, two_first, after(now, 2)).await;
}

/// `revoke_user` revokes every family of one user (rotated or not) and
/// answers how many; other users' families, one with an id that starts
/// like the user's, are untouched.
pub async fn revoke_user_is_scoped(store: Arc<dyn RefreshStore>, _caps: RefreshStoreCaps) {
    let now = SystemClock.now();
    let alice = user();
    let bob = user();
    let alice_too = format!("{alice}x");
    let mut alices = Vec::new();
    for _ in 0..3 {
        let family = family(&alice, now);
        let first = start(&*store, &family).await;
        alices.push((family, first));
    }
    let (rotated, first) = alices[0].clone();
    let current = rotate_ok(&*store, &rotated, first, after(now, 1)).await;
    alices[0].1 = current;
    let others = [family(&bob, now), family(&alice_too, now)];
    let mut others_first = Vec::new();
    for family in &others {
        others_first.push(start(&*store, family).await);
    }

    assert_eq!(store.revoke_user(&alice).await.unwrap(), 3);
    for (family, current) in &alices {
        assert!(!store.is_live(&family.id, after(now, 2)).await.unwrap());
        let rotation = store
            .rotate(*current, next_of(*current), b"x", after(now, 2), None)
            .await
            .unwrap();
        assert!(refused(&rotation), "{rotation:?}");
    }
    assert_eq!(store.revoke_user(&alice).await.unwrap(), 0, "nothing left");
    assert_eq!(store.revoke_user(&user()).await.unwrap(), 0, "unknown user");
    for (family, first) in others.iter().zip(others_first) {
        assert!(store.is_live(&family.id, after(now, 2)).await.unwrap());
        rotate_ok(&*store, family, first, after(now, 2)).await;
    }
}

/// `is_live` follows the family: live when created; dead from its idle
/// deadline (live one millisecond before), which each rotation pushes on;
/// dead from its absolute expiry; dead when revoked; unknown ids are not
/// live.
pub async fn is_live(store: Arc<dyn RefreshStore>, _caps: RefreshStoreCaps) {
    let now = SystemClock.now();
    let family = family(&user(), now);
    let first = start(&*store, &family).await;
    let ms = Duration::from_millis(1);
    assert!(store.is_live(&family.id, now).await.unwrap());
    let idle_deadline = now.saturating_add(IDLE);
    assert!(
        store
            .is_live(&family.id, idle_deadline.saturating_sub(ms))
            .await
            .unwrap()
    );
    assert!(
        !store.is_live(&family.id, idle_deadline).await.unwrap(),
        "idle"
    );

    let rotated_at = now.saturating_add(IDLE / 2);
    rotate_ok(&*store, &family, first, rotated_at).await;
    assert!(
        store.is_live(&family.id, idle_deadline).await.unwrap(),
        "a rotation pushes the idle deadline on"
    );
    let pushed = rotated_at.saturating_add(IDLE);
    assert!(!store.is_live(&family.id, pushed).await.unwrap());

    // Absolute expiry: a family whose idle timeout outlasts it.
    let long = Family {
        idle_timeout: LIFETIME * 2,
        ..self::family(&user(), now)
    };
    start(&*store, &long).await;
    let end = long.expires_at;
    assert!(
        store
            .is_live(&long.id, end.saturating_sub(ms))
            .await
            .unwrap()
    );
    assert!(!store.is_live(&long.id, end).await.unwrap(), "expired");
    assert!(!store.is_live(&long.id, after(end, 86_400)).await.unwrap());

    assert!(store.revoke_family(&long.id).await.unwrap());
    assert!(!store.is_live(&long.id, now).await.unwrap(), "revoked");
    assert!(!store.is_live(&new_family_id(), now).await.unwrap());
}

/// A family ends at its `expires_at` whatever its use: a rotation one
/// millisecond before works, one at it (or after) is `Invalid`, for the
/// current token and for a spent one (no reuse is reported for a dead
/// family).
pub async fn absolute_expiry(store: Arc<dyn RefreshStore>, _caps: RefreshStoreCaps) {
    let now = SystemClock.now();
    let family = Family {
        idle_timeout: LIFETIME * 2,
        ..family(&user(), now)
    };
    let first = start(&*store, &family).await;
    let ms = Duration::from_millis(1);
    let last = family.expires_at.saturating_sub(ms);
    let current = rotate_ok(&*store, &family, first, last).await;
    for at in [family.expires_at, after(family.expires_at, 86_400)] {
        for token in [current, first] {
            assert_eq!(
                store
                    .rotate(
                        token,
                        next_of(token),
                        b"x",
                        at,
                        Some(Duration::from_secs(60))
                    )
                    .await
                    .unwrap(),
                Rotation::Invalid,
                "expired"
            );
        }
    }
    assert!(!store.is_live(&family.id, family.expires_at).await.unwrap());
}

/// A family unused for its idle timeout dies: a rotation one millisecond
/// before the idle deadline works and pushes it on; at the deadline its
/// tokens, current or spent, are `Invalid`, and it is not live.
pub async fn idle_expiry(store: Arc<dyn RefreshStore>, _caps: RefreshStoreCaps) {
    let now = SystemClock.now();
    let idle = Duration::from_secs(3_600);
    let family = Family {
        idle_timeout: idle,
        ..family(&user(), now)
    };
    let ms = Duration::from_millis(1);
    let first = start(&*store, &family).await;
    let at = now.saturating_add(idle).saturating_sub(ms);
    let second = rotate_ok(&*store, &family, first, at).await;
    let deadline = at.saturating_add(idle);
    assert!(
        store
            .is_live(&family.id, deadline.saturating_sub(ms))
            .await
            .unwrap()
    );
    for token in [second, first] {
        assert_eq!(
            store
                .rotate(token, next_of(token), b"x", deadline, None)
                .await
                .unwrap(),
            Rotation::Invalid,
            "idle"
        );
    }
    assert!(!store.is_live(&family.id, deadline).await.unwrap());
}

/// `purge` deletes the families dead at `now` (expired, idle), counting
/// them unless the store expires natively, and keeps live
/// ones. The dead families here died before the real time, so this case
/// leaves other tests' families alone.
pub async fn purge(store: Arc<dyn RefreshStore>, caps: RefreshStoreCaps) {
    let now = SystemClock.now();
    let user = user();
    let long_ago = now.saturating_sub(LIFETIME * 2);
    let expired = Family {
        created_at: long_ago,
        last_used_at: long_ago,
        expires_at: now.saturating_sub(Duration::from_secs(5)),
        idle_timeout: LIFETIME * 4,
        ..family(&user, now)
    };
    let idle = Family {
        created_at: long_ago,
        last_used_at: long_ago,
        expires_at: now.saturating_add(LIFETIME),
        ..family(&user, now)
    };
    let live = family(&user, now);
    let mut dead = Vec::new();
    for family in [expired, idle] {
        let first = start(&*store, &family).await;
        dead.push((family, first));
    }
    let live_first = start(&*store, &live).await;

    let removed = store.purge(SystemClock.now()).await.unwrap();
    if !caps.native_expiry {
        assert!(
            removed >= 2,
            "the two dead families were purged ({removed})"
        );
        // Gone: not even a caller whose clock is behind finds them.
        for (family, first) in &dead {
            let before = family.last_used_at.saturating_add(Duration::from_secs(1));
            assert!(!store.is_live(&family.id, before).await.unwrap());
            assert_eq!(
                store
                    .rotate(*first, next_of(*first), b"x", before, None)
                    .await
                    .unwrap(),
                Rotation::Invalid
            );
            assert!(!store.revoke_family(&family.id).await.unwrap());
        }
    }
    for (family, first) in &dead {
        assert!(!store.is_live(&family.id, now).await.unwrap());
        assert_eq!(
            store
                .rotate(*first, next_of(*first), b"x", now, None)
                .await
                .unwrap(),
            Rotation::Invalid
        );
    }
    assert!(
        store.is_live(&live.id, now).await.unwrap(),
        "a live family is kept"
    );
    rotate_ok(&*store, &live, live_first, after(now, 1)).await;
}

/// Families come back exactly as stored: Unicode and punctuation in the
/// user id and the methods, no methods at all, a long user id, each
/// family's own session stamp, times and the idle timeout to the
/// millisecond; sealed successors byte for byte (every byte value, and
/// empty); and, from a store that reads families
/// ([`RefreshStore::family`]), the family itself, its last use after a
/// rotation, and nothing once it is revoked.
pub async fn families_round_trip_exactly(store: Arc<dyn RefreshStore>, _caps: RefreshStoreCaps) {
    let now = SystemClock.now();
    let odd = |seconds: u64| after(now, seconds).saturating_add(Duration::from_millis(123));
    let families = [
        Family {
            id: new_family_id(),
            user_id: format!("{}-{}", user(), "ü✉".repeat(400)),
            amr: vec![
                "pwd".to_owned(),
                "ünïcødé ✉ 🔑 'quoted' \"double\" ; DROP TABLE x; --\n\ttab".to_owned(),
                String::new(),
            ],
            stamp: format!("{}:ü✉ 'q' \"d\" {{b}}", stamp()),
            created_at: odd(0),
            expires_at: odd(86_400),
            idle_timeout: Duration::from_millis(3_600_007),
            last_used_at: odd(1),
        },
        Family {
            id: new_family_id(),
            user_id: format!("{}:with:colons and spaces {{braces}}", user()),
            amr: Vec::new(),
            stamp: stamp(),
            created_at: now,
            expires_at: odd(60),
            idle_timeout: Duration::from_millis(59_999),
            last_used_at: now,
        },
    ];
    assert_ne!(families[0].stamp, families[1].stamp);
    let blobs: [Vec<u8>; 2] = [(0..=255).collect(), Vec::new()];
    for (family, blob) in families.iter().zip(&blobs) {
        let first = start(&*store, family).await;
        // A store that reads families gives it back as stored.
        if store.reads_families() {
            assert_eq!(
                store.family(&family.id).await.unwrap().as_ref(),
                Some(family)
            );
        }
        let at = family.last_used_at.saturating_add(Duration::from_millis(7));
        let second = next_of(first);
        assert_eq!(
            store.rotate(first, second, blob, at, None).await.unwrap(),
            Rotation::Rotated(Family {
                last_used_at: at,
                ..family.clone()
            })
        );
        if store.reads_families() {
            let read = store.family(&family.id).await.unwrap();
            assert_eq!(read.map(|f| f.last_used_at), Some(at), "the rotation's use");
        }
        assert_eq!(
            store
                .rotate(
                    first,
                    next_of(first),
                    b"other",
                    at,
                    Some(Duration::from_secs(1))
                )
                .await
                .unwrap(),
            Rotation::Grace {
                family: Family {
                    last_used_at: at,
                    ..family.clone()
                },
                sealed_successor: blob.clone(),
            }
        );
        assert_eq!(
            store.revoke_by_token(second).await.unwrap(),
            Some((family.id.clone(), family.user_id.clone()))
        );
        assert_eq!(store.family(&family.id).await.unwrap(), None, "revoked");
    }
    // The long user's families are found by user too.
    let long_user = families[0].user_id.clone();
    let family = Family {
        id: new_family_id(),
        stamp: stamp(),
        ..families[0].clone()
    };
    start(&*store, &family).await;
    assert_eq!(store.revoke_user(&long_user).await.unwrap(), 1);
}
