//! One user-store suite, run against the memory, SQLite and PostgreSQL
//! implementations (PostgreSQL reads `AUTH_TEST_POSTGRES_URL`).

use std::sync::Arc;

use auth_core::password::HashedPassword;
use auth_core::user::{MemoryUserStore, NewUser, UserStore, UserStoreError, new_security_stamp};

fn unique(tag: &str) -> String {
    format!("{tag}-{}", new_security_stamp().unwrap().to_lowercase())
}

fn new_user(login: &str) -> NewUser {
    NewUser {
        login: login.to_owned(),
        display_name: login.to_uppercase(),
        password_hash: HashedPassword::new("$argon2id$v=19$m=19456,t=2,p=1$first"),
        security_stamp: "stamp-1".into(),
    }
}

mod cases {
    use super::*;

    pub(super) async fn create_and_find(store: Arc<dyn UserStore>) {
        let login = unique("alice");
        let user = store.create(new_user(&login)).await.unwrap();
        let by_login = store.find_by_login(&login).await.unwrap().unwrap();
        let by_id = store.find_by_id(&user.id).await.unwrap().unwrap();
        for found in [&by_login, &by_id] {
            assert_eq!(found.id, user.id);
            assert_eq!(found.login, login);
            assert_eq!(found.display_name, login.to_uppercase());
            assert_eq!(found.security_stamp, "stamp-1");
            assert!(!found.disabled);
            assert!(found.second_factors.is_empty());
        }
        assert!(
            store
                .find_by_login(&unique("nobody"))
                .await
                .unwrap()
                .is_none()
        );
        assert!(store.find_by_id("no-such-id").await.unwrap().is_none());
        assert!(matches!(
            store.create(new_user(&login)).await,
            Err(UserStoreError::LoginTaken)
        ));
    }

    pub(super) async fn hash_updates_are_compare_and_swap(store: Arc<dyn UserStore>) {
        let user = store.create(new_user(&unique("bob"))).await.unwrap();
        let first = user.password_hash.clone();
        let second = HashedPassword::new("$argon2id$second");
        let third = HashedPassword::new("$argon2id$third");
        assert!(
            store
                .replace_password_hash(&user.id, &first, &second)
                .await
                .unwrap()
        );
        // A writer that still believes in the first hash loses.
        assert!(
            !store
                .replace_password_hash(&user.id, &first, &third)
                .await
                .unwrap()
        );
        assert!(
            !store
                .change_password(&user.id, &first, &third, "stamp-x")
                .await
                .unwrap()
        );
        let found = store.find_by_id(&user.id).await.unwrap().unwrap();
        assert_eq!(found.password_hash, second);
        assert_eq!(found.security_stamp, "stamp-1");
        assert!(
            store
                .change_password(&user.id, &second, &third, "stamp-2")
                .await
                .unwrap()
        );
        let found = store.find_by_id(&user.id).await.unwrap().unwrap();
        assert_eq!(
            (found.password_hash, found.security_stamp.as_str()),
            (third, "stamp-2")
        );
    }

    pub(super) async fn stamps_and_disabling(store: Arc<dyn UserStore>) {
        let user = store.create(new_user(&unique("carol"))).await.unwrap();
        store.set_security_stamp(&user.id, "stamp-9").await.unwrap();
        store.set_disabled(&user.id, true).await.unwrap();
        let found = store.find_by_id(&user.id).await.unwrap().unwrap();
        assert_eq!(found.security_stamp, "stamp-9");
        assert!(found.disabled);
        store.set_disabled(&user.id, false).await.unwrap();
        assert!(!store.find_by_id(&user.id).await.unwrap().unwrap().disabled);
        assert!(store.set_disabled("missing", true).await.is_err());
    }
}

macro_rules! user_suite {
    ($name:ident, $make:block) => {
        mod $name {
            use super::*;

            async fn store() -> Option<Arc<dyn UserStore>> $make

            #[tokio::test]
            async fn create_and_find() {
                if let Some(store) = store().await {
                    cases::create_and_find(store).await;
                }
            }

            #[tokio::test]
            async fn hash_updates_are_compare_and_swap() {
                if let Some(store) = store().await {
                    cases::hash_updates_are_compare_and_swap(store).await;
                }
            }

            #[tokio::test]
            async fn stamps_and_disabling() {
                if let Some(store) = store().await {
                    cases::stamps_and_disabling(store).await;
                }
            }
        }
    };
}

user_suite!(memory, {
    Some(Arc::new(MemoryUserStore::new()) as Arc<dyn UserStore>)
});

#[cfg(feature = "sqlite")]
user_suite!(sqlite, {
    // Cargo's scratch folder for integration tests (under `target/`).
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique("users-db"));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("users.db").display());
    let sessions = auth_core::session::SqliteStore::connect(&url)
        .await
        .unwrap();
    let users = auth_core::user::SqliteUserStore::from_pool(sessions.pool().clone())
        .await
        .unwrap();
    Some(Arc::new(users) as Arc<dyn UserStore>)
});

#[cfg(feature = "postgres")]
mod common;

#[cfg(feature = "postgres")]
user_suite!(postgres, {
    let url = crate::common::service_url("AUTH_TEST_POSTGRES_URL")?;
    let sessions = auth_core::session::PostgresStore::connect(&url)
        .await
        .unwrap();
    let users = auth_core::user::PostgresUserStore::from_pool(sessions.pool().clone())
        .await
        .unwrap();
    Some(Arc::new(users) as Arc<dyn UserStore>)
});
