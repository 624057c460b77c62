//! The [`UserStore`] contract, for a store whose
//! [`create`](UserStore::create) works (the toolkit's registration): login
//! names compare in normal form, a login is taken once, and the password
//! hash is replaced only by compare-and-set.
//!
//! Run it with [`user_store_suite`] or
//! [`user_store_tests!`](crate::user_store_tests). The cases create users
//! with random login names (`alice.<random>@example.com`) in the store they
//! are given and never delete any.

use std::sync::Arc;

use super::{concurrently, run_case, unique};
use crate::password::HashedPassword;
use crate::user::{
    AuthUser, LoginName, NewUser, UserId, UserStore, UserStoreError, normalize_login,
};

/// The user id of `user`, as text (ids need not be `PartialEq`).
fn id_text<U: AuthUser>(user: &U) -> String {
    user.id().to_string()
}

/// A new login name as typed, with capitals: `Alice.<random>@Example.com`.
fn typed_login() -> String {
    format!("Alice.{}@Example.com", unique("suite"))
}

/// `name` in full-width forms (`Ａｌｉｃｅ`): the same name after NFKC.
fn full_width(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '!'..='~' => char::from_u32(c as u32 + 0xFEE0).unwrap_or(c),
            _ => c,
        })
        .collect()
}

/// A password hash in PHC form, distinct per `tag`.
fn hash(tag: &str) -> String {
    format!("$argon2id$v=19$m=19456,t=2,p=1$c3VpdGVzYWx0$suite-{tag}")
}

fn login(name: &str) -> LoginName {
    LoginName::parse(name).expect("a valid login name")
}

fn new_user(name: &str, password_hash: &str) -> NewUser {
    NewUser {
        login: login(name),
        password_hash: HashedPassword::new(password_hash),
    }
}

/// An id of type `I` that no user has: a random number or a random UUID,
/// whichever `I` parses. `None` when it parses neither (then the
/// unknown-id check is skipped).
fn unknown_id<I: UserId>() -> Option<I> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random number generator works");
    let number = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let uuid = format!(
        "{}-{}-4{}-8{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    );
    [
        // Large enough to be no sequence's value, small enough for i64,
        // then for i32 and i16.
        (number >> 2 | 1 << 61).to_string(),
        ((number >> 34) | 1 << 29).to_string(),
        ((number >> 51) | 1 << 12).to_string(),
        uuid,
    ]
    .iter()
    .find_map(|candidate| candidate.parse().ok())
}

/// Runs every case against `store` (users with random names, so the store
/// may hold other users), and panics naming the first case that fails.
///
/// ```
/// use std::sync::Arc;
///
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() {
/// auth_core::testing::user_store_suite(Arc::new(auth_core::MemoryUserStore::new())).await;
/// # }
/// ```
pub async fn user_store_suite<S: UserStore>(store: Arc<S>) {
    macro_rules! run {
        ($($case:ident),* $(,)?) => {
            $(
                run_case("user store", stringify!($case), $case(Arc::clone(&store))).await;
            )*
        };
    }
    run!(
        create_then_find,
        logins_compare_in_normal_form,
        unknown_login_and_id_are_none,
        duplicate_login_is_taken,
        set_password_hash_is_compare_and_set,
        concurrent_password_writers_one_wins,
    );
}

/// One test per case of the user-store contract, in a module `$name`:
/// `$name::create_then_find`, ... Each runs on its own multi-threaded
/// runtime (as `#[tokio::test(flavor = "multi_thread", worker_threads =
/// 2)]`) with a store from the block, which returns `Option<Arc<S>>` for
/// the store type `S`: `None` skips the case (e.g. when a database URL is
/// not set; `?` works). Items of the calling module are in scope in the
/// block.
///
/// ```no_run
/// use std::sync::Arc;
///
/// auth_core::user_store_tests!(memory, { Some(Arc::new(auth_core::MemoryUserStore::new())) });
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! user_store_tests {
    ($name:ident, $make:block) => {
        $crate::user_store_tests!(@cases $name, $make, [
            create_then_find,
            logins_compare_in_normal_form,
            unknown_login_and_id_are_none,
            duplicate_login_is_taken,
            set_password_hash_is_compare_and_set,
            concurrent_password_writers_one_wins,
        ]);
    };
    (@cases $name:ident, $make:block, [$($case:ident),* $(,)?]) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn store() -> ::std::option::Option<
                ::std::sync::Arc<impl $crate::user::UserStore>,
            > $make

            $(
                #[test]
                fn $case() {
                    $crate::testing::__private::runtime().block_on(async {
                        if let ::std::option::Option::Some(store) = store().await {
                            $crate::testing::user_store::$case(store).await;
                        }
                    });
                }
            )*
        }
    };
}

/// A created user is found by its login name and by its id, with the
/// login (in normal form), the password hash and not disabled; two users
/// get two ids.
pub async fn create_then_find<S: UserStore>(store: Arc<S>) {
    let typed = typed_login();
    let normalized = normalize_login(&typed).expect("a valid login name");
    let first = hash("first");
    let user = store.create(new_user(&typed, &first)).await.unwrap();
    assert_eq!(
        normalize_login(user.login()).as_deref(),
        Ok(normalized.as_str()),
        "create returns the user with its login name"
    );
    assert_eq!(user.password_hash(), first);
    assert!(!user.is_disabled(), "a new user is not disabled");

    let by_login = store
        .find_by_login(&login(&typed))
        .await
        .unwrap()
        .expect("the new user is found by its login name");
    let by_id = store
        .find_by_id(&user.id())
        .await
        .unwrap()
        .expect("the new user is found by its id");
    for (how, found) in [("login", &by_login), ("id", &by_id)] {
        assert_eq!(id_text(found), id_text(&user), "found by {how}: the id");
        assert_eq!(
            normalize_login(found.login()).as_deref(),
            Ok(normalized.as_str()),
            "found by {how}: the login name"
        );
        assert_eq!(found.password_hash(), first, "found by {how}: the hash");
        assert!(!found.is_disabled(), "found by {how}: not disabled");
    }

    let other = store
        .create(new_user(&typed_login(), &hash("other")))
        .await
        .unwrap();
    assert_ne!(id_text(&other), id_text(&user), "two users, two ids");
    let found = store.find_by_id(&other.id()).await.unwrap().unwrap();
    assert_eq!(id_text(&found), id_text(&other));
    assert_eq!(found.password_hash(), hash("other"));
    let found = store.find_by_id(&user.id()).await.unwrap().unwrap();
    assert_eq!(found.password_hash(), first);
}

/// A user created as `Alice.<random>@Example.com` is found by its
/// lower-case form, by its full-width form (`Ａｌｉｃｅ...`) and with
/// surrounding spaces: lookups compare normal forms (NFKC, trimmed,
/// lower-cased).
pub async fn logins_compare_in_normal_form<S: UserStore>(store: Arc<S>) {
    let typed = typed_login();
    let user = store
        .create(new_user(&typed, &hash("first")))
        .await
        .unwrap();
    let lower = typed.to_lowercase();
    let wide = full_width(&typed);
    let wide_upper = full_width(&typed.to_uppercase());
    let spaced = format!("  {typed} ");
    for name in [&typed, &lower, &wide, &wide_upper, &spaced] {
        let found = store
            .find_by_login(&login(name))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("`{typed}` is found as `{name}`"));
        assert_eq!(id_text(&found), id_text(&user), "found as `{name}`");
    }
}

/// An unknown login name or id finds nobody (`Ok(None)`), nor does a name
/// that only starts like an existing one. The unknown id is a random
/// number or UUID, whichever the id type parses (the id check is skipped
/// for other id types).
pub async fn unknown_login_and_id_are_none<S: UserStore>(store: Arc<S>) {
    let typed = typed_login();
    let user = store
        .create(new_user(&typed, &hash("first")))
        .await
        .unwrap();
    assert!(
        store
            .find_by_login(&login(&typed_login()))
            .await
            .unwrap()
            .is_none(),
        "an unknown login name finds nobody"
    );
    let prefix = &typed[..typed.len() - 1];
    assert!(
        store.find_by_login(&login(prefix)).await.unwrap().is_none(),
        "a prefix of a login name finds nobody"
    );
    assert!(
        store
            .find_by_login(&login(&format!("{typed}x")))
            .await
            .unwrap()
            .is_none(),
        "a longer login name finds nobody"
    );
    if let Some(id) = unknown_id::<<S::User as AuthUser>::Id>() {
        assert_ne!(id.to_string(), id_text(&user));
        assert!(
            store.find_by_id(&id).await.unwrap().is_none(),
            "an unknown id ({id}) finds nobody"
        );
        assert!(
            !store
                .set_password_hash(&id, &hash("first"), &hash("second"))
                .await
                .unwrap(),
            "set_password_hash of an unknown id answers false"
        );
    }
}

/// A second user with the same login name, in any form (`alice...`,
/// `ＡＬＩＣＥ...`), is refused with [`UserStoreError::LoginTaken`], and the
/// first user is unchanged.
pub async fn duplicate_login_is_taken<S: UserStore>(store: Arc<S>) {
    let typed = typed_login();
    let user = store
        .create(new_user(&typed, &hash("first")))
        .await
        .unwrap();
    let lower = typed.to_lowercase();
    let wide = full_width(&typed.to_uppercase());
    for name in [&typed, &lower, &wide] {
        match store.create(new_user(name, &hash("second"))).await {
            Err(UserStoreError::LoginTaken) => {}
            Err(error) => panic!("creating `{name}` again: LoginTaken expected, got {error:?}"),
            Ok(_) => panic!("creating `{name}` again: LoginTaken expected, got a user"),
        }
    }
    let found = store.find_by_login(&login(&typed)).await.unwrap().unwrap();
    assert_eq!(id_text(&found), id_text(&user));
    assert_eq!(found.password_hash(), hash("first"));
}

/// `set_password_hash` replaces the hash only while it is still `current`:
/// a writer holding a stale `current` loses (`false`) and changes nothing.
pub async fn set_password_hash_is_compare_and_set<S: UserStore>(store: Arc<S>) {
    let (first, second, third) = (hash("first"), hash("second"), hash("third"));
    let user = store
        .create(new_user(&typed_login(), &first))
        .await
        .unwrap();
    let id = user.id();
    let stored = |store: Arc<S>, id: <S::User as AuthUser>::Id| async move {
        let user = store.find_by_id(&id).await.unwrap().expect("the user");
        user.password_hash().to_owned()
    };
    assert!(
        store.set_password_hash(&id, &first, &second).await.unwrap(),
        "the current hash is replaced"
    );
    assert_eq!(stored(Arc::clone(&store), id.clone()).await, second);
    // A writer that still believes in the first hash loses.
    assert!(
        !store.set_password_hash(&id, &first, &third).await.unwrap(),
        "a stale current hash loses"
    );
    assert_eq!(stored(Arc::clone(&store), id.clone()).await, second);
    // Another user's hash is no key either.
    let other = store
        .create(new_user(&typed_login(), &third))
        .await
        .unwrap();
    assert!(!store.set_password_hash(&id, &third, &first).await.unwrap());
    assert_eq!(stored(Arc::clone(&store), id.clone()).await, second);
    assert_eq!(stored(Arc::clone(&store), other.id()).await, third);
    assert!(store.set_password_hash(&id, &second, &third).await.unwrap());
    assert_eq!(stored(Arc::clone(&store), id.clone()).await, third);
    assert_eq!(stored(Arc::clone(&store), other.id()).await, third);
}

/// 16 concurrent writers from the same `current` hash, each with its own
/// new hash: exactly one wins, and its hash is the one stored.
pub async fn concurrent_password_writers_one_wins<S: UserStore>(store: Arc<S>) {
    let first = hash("first");
    let user = store
        .create(new_user(&typed_login(), &first))
        .await
        .unwrap();
    let id = user.id();
    let results = concurrently(16, |i| {
        let store = Arc::clone(&store);
        let (id, first) = (id.clone(), first.clone());
        async move {
            store
                .set_password_hash(&id, &first, &hash(&format!("writer-{i}")))
                .await
                .unwrap()
        }
    })
    .await;
    let winners: Vec<usize> = (0..16).filter(|&i| results[i]).collect();
    assert_eq!(winners.len(), 1, "exactly one writer wins: {winners:?}");
    let found = store.find_by_id(&id).await.unwrap().unwrap();
    assert_eq!(
        found.password_hash(),
        hash(&format!("writer-{}", winners[0]))
    );
}
