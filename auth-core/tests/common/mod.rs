//! Helpers shared by the integration tests: the URLs of real services,
//! and stores that fail on purpose.

/// The URL of a required service from the environment variable `var`, or
/// `None` (with a printed reason) when it is not set locally. Under
/// `CI=true` its absence fails the test: CI must run the service tests.
#[allow(dead_code)]
pub(crate) fn service_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{var} is not set, but CI=true requires the service tests to run")
        }
        _ => {
            // Written to the real stderr, past the test harness's capture.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED (service): {var} is not set; run .ci/run or export it"
            );
            None
        }
    }
}

/// Six wrong passwords for `name`, each from an address of its own: the
/// account's lock (the owner's known devices pass it).
#[allow(dead_code)]
pub(crate) async fn lock_password(auth: &auth_core::flow::Authenticator, name: &str) {
    for n in 1..=6 {
        let client = auth_core::flow::Client::new(
            format!("198.51.100.{n}").parse().expect("an IPv4 address"),
        );
        let _ = auth
            .login(
                name,
                &auth_core::password::Password::from("wrong password!"),
                &client,
                None,
            )
            .await;
    }
}

/// Account state in memory whose `raise_epoch` fails once armed, after
/// `spare` more calls succeed (the account store drops part-way through a
/// flow).
#[derive(Debug, Default)]
#[allow(dead_code)]
pub(crate) struct FailingEpoch {
    pub(crate) inner: std::sync::Arc<auth_core::account::MemoryAccountStore>,
    pub(crate) armed: std::sync::atomic::AtomicBool,
    pub(crate) spare: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl auth_core::account::AccountStore for FailingEpoch {
    async fn totp(
        &self,
        user: &str,
    ) -> Result<Option<auth_core::account::StoredTotp>, auth_core::user::UserStoreError> {
        self.inner.totp(user).await
    }
    async fn set_pending_totp(
        &self,
        user: &str,
        sealed: &str,
    ) -> Result<bool, auth_core::user::UserStoreError> {
        self.inner.set_pending_totp(user, sealed).await
    }
    async fn confirm_totp(
        &self,
        user: &str,
        sealed: &str,
        step: i64,
        hashes: &[String],
    ) -> Result<bool, auth_core::user::UserStoreError> {
        self.inner.confirm_totp(user, sealed, step, hashes).await
    }
    async fn record_totp_step(
        &self,
        user: &str,
        step: i64,
    ) -> Result<bool, auth_core::user::UserStoreError> {
        self.inner.record_totp_step(user, step).await
    }
    async fn reseal_totp(
        &self,
        user: &str,
        old_sealed: &str,
        new_sealed: &str,
    ) -> Result<bool, auth_core::user::UserStoreError> {
        self.inner.reseal_totp(user, old_sealed, new_sealed).await
    }
    async fn remove_totp(&self, user: &str) -> Result<(), auth_core::user::UserStoreError> {
        self.inner.remove_totp(user).await
    }
    async fn replace_recovery_codes(
        &self,
        user: &str,
        hashes: &[String],
    ) -> Result<(), auth_core::user::UserStoreError> {
        self.inner.replace_recovery_codes(user, hashes).await
    }
    async fn consume_recovery_code(
        &self,
        user: &str,
        hash: &str,
    ) -> Result<bool, auth_core::user::UserStoreError> {
        self.inner.consume_recovery_code(user, hash).await
    }
    async fn recovery_codes_left(
        &self,
        user: &str,
    ) -> Result<u64, auth_core::user::UserStoreError> {
        self.inner.recovery_codes_left(user).await
    }
    async fn epoch(&self, user: &str) -> Result<u64, auth_core::user::UserStoreError> {
        self.inner.epoch(user).await
    }
    async fn raise_epoch(&self, user: &str) -> Result<u64, auth_core::user::UserStoreError> {
        use std::sync::atomic::Ordering::SeqCst;
        if self.armed.load(SeqCst)
            && self
                .spare
                .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                .is_err()
        {
            return Err(auth_core::user::UserStoreError::backend(
                std::io::Error::other("account store down"),
            ));
        }
        self.inner.raise_epoch(user).await
    }
}

/// A plain connection to the Redis at `url`, to look at what a store
/// wrote there.
#[cfg(feature = "redis")]
#[allow(dead_code)]
pub(crate) async fn redis_admin(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Redis's own clock (`TIME`), in Unix milliseconds (to the second).
#[cfg(feature = "redis")]
#[allow(dead_code)]
pub(crate) async fn redis_now_ms(conn: &mut redis::aio::MultiplexedConnection) -> i64 {
    let time: Vec<String> = redis::cmd("TIME").query_async(conn).await.unwrap();
    time[0].parse::<i64>().unwrap() * 1000
}

/// The members of the sorted set at `key`, in alphabetical order.
#[cfg(feature = "redis")]
#[allow(dead_code)]
pub(crate) async fn sorted_members(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
) -> Vec<String> {
    let mut members: Vec<String> = redis::cmd("ZRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query_async(conn)
        .await
        .unwrap();
    members.sort();
    members
}

/// Lists each `(member, score)` in the sorted set at `key`, as a store
/// would have.
#[cfg(feature = "redis")]
#[allow(dead_code)]
pub(crate) async fn add_scored(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
    members: &[(&str, i64)],
) {
    for (member, score) in members {
        redis::cmd("ZADD")
            .arg(key)
            .arg(*score)
            .arg(*member)
            .query_async::<()>(conn)
            .await
            .unwrap();
    }
}

/// Puts a string at `key` (for a minute): a key of the wrong type for a
/// store, as a failing node would answer.
#[cfg(feature = "redis")]
#[allow(dead_code)]
pub(crate) async fn set_wrong_type(conn: &mut redis::aio::MultiplexedConnection, key: &str) {
    redis::cmd("SET")
        .arg(key)
        .arg("not what the store expects")
        .arg("PX")
        .arg(60_000)
        .query_async::<()>(conn)
        .await
        .unwrap();
}

/// Moves `member` from the sorted-set index at `index` to the plain set at
/// `old_set` (a day to live): where a store from before the sorted sets
/// (or an instance not yet upgraded) listed it.
#[cfg(feature = "redis")]
#[allow(dead_code)]
pub(crate) async fn move_to_old_set(
    conn: &mut redis::aio::MultiplexedConnection,
    index: &str,
    old_set: &str,
    member: &str,
) {
    redis::cmd("ZREM")
        .arg(index)
        .arg(member)
        .query_async::<()>(&mut *conn)
        .await
        .unwrap();
    redis::cmd("SADD")
        .arg(old_set)
        .arg(member)
        .query_async::<()>(&mut *conn)
        .await
        .unwrap();
    redis::cmd("PEXPIRE")
        .arg(old_set)
        .arg(86_400_000)
        .query_async::<()>(conn)
        .await
        .unwrap();
}

/// The members of the plain set at `key`.
#[cfg(feature = "redis")]
#[allow(dead_code)]
pub(crate) async fn set_members(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
) -> Vec<String> {
    redis::cmd("SMEMBERS")
        .arg(key)
        .query_async(conn)
        .await
        .unwrap()
}
