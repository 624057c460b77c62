//! The account-store contract (`auth_core::testing::account_store`), run
//! against the memory, SQLite and PostgreSQL account stores (PostgreSQL
//! reads `AUTH_TEST_POSTGRES_URL`). Each case is its own test per store
//! (`sqlite::concurrent_recovery_consumers_one_wins`, ...).
#![cfg(feature = "testing")]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use auth_core::account::StoredTotp;
use auth_core::account_store_tests;
use auth_core::{AccountStore, MemoryAccountStore, UserStoreError};

#[cfg(feature = "postgres")]
mod common;

account_store_tests!(memory, {
    Some(Arc::new(MemoryAccountStore::new()) as Arc<dyn AccountStore>)
});

#[cfg(feature = "sqlite")]
account_store_tests!(sqlite, {
    // Cargo's scratch folder for integration tests (under `target/`).
    let id = auth_core::session::SessionId::generate().unwrap().key();
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("accounts-db-{}", id.to_hex()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("accounts.db").display());
    let sessions = auth_core::session::SqliteStore::connect(&url)
        .await
        .unwrap();
    let accounts = auth_core::SqliteAccountStore::from_pool(sessions.pool().clone())
        .await
        .unwrap();
    Some(Arc::new(accounts) as Arc<dyn AccountStore>)
});

#[cfg(feature = "postgres")]
account_store_tests!(postgres, {
    let url = crate::common::service_url("AUTH_TEST_POSTGRES_URL")?;
    let sessions = auth_core::session::PostgresStore::connect(&url)
        .await
        .unwrap();
    let accounts = auth_core::PostgresAccountStore::from_pool(sessions.pool().clone())
        .await
        .unwrap();
    Some(Arc::new(accounts) as Arc<dyn AccountStore>)
});

/// The one-call form runs every case too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_one_call_suite_passes_for_the_memory_store() {
    auth_core::testing::account_store_suite(Arc::new(MemoryAccountStore::new())).await;
}

/// A store whose recovery codes are checked, then removed, in two steps:
/// right one at a time, wrong under concurrency. The suite must catch it.
#[derive(Debug, Default)]
struct RacyCodes {
    inner: MemoryAccountStore,
    codes: Mutex<HashMap<String, Vec<String>>>,
}

impl RacyCodes {
    fn set_codes(&self, user: &str, hashes: &[String]) {
        let mut codes = self.codes.lock().unwrap();
        codes.insert(user.to_owned(), hashes.to_vec());
    }
}

#[async_trait]
impl AccountStore for RacyCodes {
    async fn totp(&self, user: &str) -> Result<Option<StoredTotp>, UserStoreError> {
        self.inner.totp(user).await
    }

    async fn set_pending_totp(
        &self,
        user: &str,
        sealed_secret: &str,
    ) -> Result<bool, UserStoreError> {
        self.inner.set_pending_totp(user, sealed_secret).await
    }

    async fn confirm_totp(
        &self,
        user: &str,
        sealed_secret: &str,
        step: i64,
        recovery_hashes: &[String],
    ) -> Result<bool, UserStoreError> {
        let done = self
            .inner
            .confirm_totp(user, sealed_secret, step, &[])
            .await?;
        if done {
            self.set_codes(user, recovery_hashes);
        }
        Ok(done)
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
        self.inner.remove_totp(user).await?;
        self.set_codes(user, &[]);
        Ok(())
    }

    async fn replace_recovery_codes(
        &self,
        user: &str,
        hashes: &[String],
    ) -> Result<(), UserStoreError> {
        self.set_codes(user, hashes);
        Ok(())
    }

    async fn consume_recovery_code(&self, user: &str, hash: &str) -> Result<bool, UserStoreError> {
        let present = {
            let codes = self.codes.lock().unwrap();
            codes.get(user).is_some_and(|c| c.iter().any(|h| h == hash))
        };
        if !present {
            return Ok(false);
        }
        // A round trip to the database between the check and the delete.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut codes = self.codes.lock().unwrap();
        if let Some(list) = codes.get_mut(user) {
            list.retain(|h| h != hash);
        }
        Ok(true)
    }

    async fn recovery_codes_left(&self, user: &str) -> Result<u64, UserStoreError> {
        let codes = self.codes.lock().unwrap();
        Ok(codes.get(user).map_or(0, |c| c.len() as u64))
    }

    async fn epoch(&self, user: &str) -> Result<u64, UserStoreError> {
        self.inner.epoch(user).await
    }

    async fn raise_epoch(&self, user: &str) -> Result<u64, UserStoreError> {
        self.inner.raise_epoch(user).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "case `concurrent_recovery_consumers_one_wins` failed")]
async fn the_suite_catches_a_recovery_code_used_twice() {
    auth_core::testing::account_store_suite(Arc::new(RacyCodes::default())).await;
}
