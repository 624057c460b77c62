use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::{
    HashedPassword, MAX_PASSWORD_BYTES, Password, PasswordError, PasswordHasher, PasswordPolicy,
    PolicyContext, PolicyViolation, Verification,
};

/// The async password service an application uses: policy, hashing and
/// verification, with every key derivation run on worker threads of its
/// own, never on the async workers that serve requests.
///
/// At most `max_concurrent` derivations run at once (default: the number of
/// CPU cores less one, at least one). A caller that cannot get a slot
/// within `queue_timeout` (default 1 s) gets [`PasswordError::Busy`]: under
/// a login flood, excess attempts are shed quickly instead of queueing
/// without bound. On Linux the worker threads run at a lower CPU priority
/// (nice +10, see [`PasswordServiceBuilder::hash_priority`]), so a flood
/// of logins takes the CPU time requests leave over, rather than CPU time
/// from the requests of logged-in users.
///
/// Cloning is cheap; clones share the slots. Its async methods need a tokio
/// runtime with the time driver enabled (`enable_time`, or `enable_all` as
/// `#[tokio::main]` does).
#[derive(Clone, Debug)]
pub struct PasswordService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    hasher: PasswordHasher,
    policy: PasswordPolicy,
    slots: Arc<Semaphore>,
    max_concurrent: usize,
    queue_timeout: Duration,
    workers: Workers,
}

/// A derivation for a worker thread.
type Job = Box<dyn FnOnce() + Send + 'static>;

/// The threads that run derivations: `max_concurrent` of them, at the
/// configured priority, fed through one queue. They end when the service
/// (every clone) is dropped.
#[derive(Debug)]
struct Workers {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl Workers {
    fn spawn(count: usize, nice: i32) -> Result<Self, PasswordError> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for n in 0..count {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("auth-hash-{n}"))
                .spawn(move || {
                    lower_priority(nice);
                    loop {
                        // The lock is held only while waiting for the next
                        // job, not while running it.
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })
                .map_err(|_| PasswordError::Config("could not start the hashing threads"))?;
        }
        Ok(Self { jobs })
    }
}

/// Lowers this thread's CPU priority by `nice` (Linux: per thread). A
/// failure only means the derivations compete at normal priority.
fn lower_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    if nice > 0 {
        let tid = rustix::thread::gettid();
        let Ok(current) = rustix::process::getpriority_process(Some(tid)) else {
            tracing::warn!("password hashing threads keep their priority (unreadable)");
            return;
        };
        let wanted = current.saturating_add(nice).min(19);
        // Only ever lower it.
        if wanted > current
            && let Err(error) = rustix::process::setpriority_process(Some(tid), wanted)
        {
            tracing::warn!(%error, "password hashing threads keep their priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// Builds a [`PasswordService`].
#[derive(Debug, Default)]
#[must_use]
pub struct PasswordServiceBuilder {
    hasher: Option<PasswordHasher>,
    policy: Option<PasswordPolicy>,
    max_concurrent: Option<usize>,
    queue_timeout: Option<Duration>,
    hash_priority: Option<i32>,
}

impl PasswordServiceBuilder {
    /// The hasher (default: [`PasswordHasher::default`], OWASP parameters).
    pub fn hasher(mut self, hasher: PasswordHasher) -> Self {
        self.hasher = Some(hasher);
        self
    }

    /// The policy for new passwords (default: [`PasswordPolicy::default`]).
    pub fn policy(mut self, policy: PasswordPolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// How many key derivations may run at once, and so how many worker
    /// threads [`build`](Self::build) starts (default: the number of CPU
    /// cores less one, at least one; `docs/performance.md` measures the
    /// choice; at most 1024). Each Argon2 run holds its memory cost (19 MiB
    /// by default) while it runs.
    pub fn max_concurrent(mut self, slots: usize) -> Self {
        self.max_concurrent = Some(slots);
        self
    }

    /// How long a caller may wait for a free slot before getting
    /// [`PasswordError::Busy`] (default 1 s).
    pub fn queue_timeout(mut self, timeout: Duration) -> Self {
        self.queue_timeout = Some(timeout);
        self
    }

    /// How much lower the hashing threads' CPU priority is than that of the
    /// thread that builds the service, in nice steps (Linux; default 10,
    /// capped at nice 19; 0 keeps it). Requests then get the CPU first and derivations take
    /// what is left: under a login flood, logged-in users keep their
    /// throughput (measured in `docs/performance.md`); on a machine busy
    /// with requests, a login takes longer. Never raises the priority.
    pub fn hash_priority(mut self, nice: i32) -> Self {
        self.hash_priority = Some(nice);
        self
    }

    /// Validates the settings and builds the service (starting its
    /// hashing threads).
    pub fn build(self) -> Result<PasswordService, PasswordError> {
        let max_concurrent = self.max_concurrent.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(1, |cores| cores.get().saturating_sub(1).max(1))
        });
        if max_concurrent == 0 {
            return Err(PasswordError::Config("max_concurrent must be at least 1"));
        }
        if max_concurrent > 1024 {
            return Err(PasswordError::Config(
                "max_concurrent must be at most 1024 (one thread each)",
            ));
        }
        let queue_timeout = self.queue_timeout.unwrap_or(Duration::from_secs(1));
        let nice = self.hash_priority.unwrap_or(10);
        if !(0..=39).contains(&nice) {
            return Err(PasswordError::Config("hash_priority must be 0 to 39"));
        }
        let hasher = match self.hasher {
            Some(hasher) => hasher,
            None => PasswordHasher::builder().build()?,
        };
        Ok(PasswordService {
            inner: Arc::new(Inner {
                hasher,
                policy: self.policy.unwrap_or_default(),
                slots: Arc::new(Semaphore::new(max_concurrent)),
                max_concurrent,
                queue_timeout,
                workers: Workers::spawn(max_concurrent, nice)?,
            }),
        })
    }
}

impl PasswordService {
    /// A builder starting from the defaults.
    pub fn builder() -> PasswordServiceBuilder {
        PasswordServiceBuilder::default()
    }

    /// The underlying synchronous hasher.
    pub fn hasher(&self) -> &PasswordHasher {
        &self.inner.hasher
    }

    /// The policy for new passwords.
    pub fn policy(&self) -> &PasswordPolicy {
        &self.inner.policy
    }

    /// The concurrency bound.
    pub fn max_concurrent(&self) -> usize {
        self.inner.max_concurrent
    }

    /// Checks a new password against the policy (cheap: no hashing).
    pub fn check_policy(
        &self,
        password: &Password,
        context: &PolicyContext,
    ) -> Result<(), PolicyViolation> {
        self.inner.policy.check(password, context)
    }

    /// Checks the policy, then hashes: what registration and password
    /// changes call.
    pub async fn hash_new_password(
        &self,
        password: &Password,
        context: &PolicyContext,
    ) -> Result<HashedPassword, PasswordError> {
        self.check_policy(password, context)?;
        self.hash(password).await
    }

    /// Hashes without the policy check: for re-hashing a password that was
    /// just verified (an upgrade), or for imports.
    pub async fn hash(&self, password: &Password) -> Result<HashedPassword, PasswordError> {
        refuse_oversized(password)?;
        let password = password.clone();
        self.run(move |hasher| hasher.hash(&password)).await?
    }

    /// Verifies a password against a stored hash; see
    /// [`PasswordHasher::verify`].
    pub async fn verify(
        &self,
        password: &Password,
        hash: &HashedPassword,
    ) -> Result<Verification, PasswordError> {
        refuse_oversized(password)?;
        self.reserve().await?.verify(password, hash).await
    }

    /// Costs what a real verification costs and always answers
    /// [`Verification::Mismatch`]: for unknown or disabled users.
    pub async fn verify_dummy(&self, password: &Password) -> Result<Verification, PasswordError> {
        refuse_oversized(password)?;
        self.reserve().await?.verify_dummy(password).await
    }

    /// Waits for a hashing slot (at most the queue timeout, then
    /// [`PasswordError::Busy`]) and holds it until the returned
    /// [`HashSlot`] verifies or is dropped. The login flow reserves before
    /// the throttle counts an attempt, so a login refused as busy never
    /// counts against the account.
    pub async fn reserve(&self) -> Result<HashSlot, PasswordError> {
        let permit = tokio::time::timeout(
            self.inner.queue_timeout,
            Arc::clone(&self.inner.slots).acquire_owned(),
        )
        .await
        .map_err(|_| PasswordError::Busy)?
        .map_err(|_| PasswordError::Busy)?;
        Ok(HashSlot {
            service: self.clone(),
            permit,
        })
    }

    /// Runs `job` on a hashing thread once a slot is free, or fails with
    /// `Busy` after the queue timeout.
    async fn run<T, F>(&self, job: F) -> Result<T, PasswordError>
    where
        F: FnOnce(&PasswordHasher) -> T + Send + 'static,
        T: Send + 'static,
    {
        self.reserve().await?.run(job).await
    }
}

/// A reserved hashing slot ([`PasswordService::reserve`]): one
/// verification runs in it without waiting again.
#[derive(Debug)]
#[must_use = "a slot is held until it is used or dropped"]
pub struct HashSlot {
    service: PasswordService,
    permit: tokio::sync::OwnedSemaphorePermit,
}

impl HashSlot {
    /// [`PasswordService::verify`] in this slot.
    pub async fn verify(
        self,
        password: &Password,
        hash: &HashedPassword,
    ) -> Result<Verification, PasswordError> {
        refuse_oversized(password)?;
        let password = password.clone();
        let hash = hash.clone();
        self.run(move |hasher| hasher.verify(&password, &hash))
            .await?
    }

    /// [`PasswordService::verify_dummy`] in this slot.
    pub async fn verify_dummy(self, password: &Password) -> Result<Verification, PasswordError> {
        refuse_oversized(password)?;
        let password = password.clone();
        self.run(move |hasher| hasher.verify_dummy(&password))
            .await?
    }

    /// Runs `job` on a hashing thread. The slot is held by the job itself,
    /// so the bound holds even when the caller's future is dropped.
    async fn run<T, F>(self, job: F) -> Result<T, PasswordError>
    where
        F: FnOnce(&PasswordHasher) -> T + Send + 'static,
        T: Send + 'static,
    {
        let Self { service, permit } = self;
        let hasher = service.inner.hasher.clone();
        let (done, result) = tokio::sync::oneshot::channel();
        let work: Job = Box::new(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&hasher)));
            if outcome.is_err() {
                // The payload is not logged: it could quote its input.
                tracing::error!("password hashing: a derivation panicked");
            }
            // The slot is free before the caller hears back.
            drop(permit);
            // The caller may have gone (a cancelled request): nothing to tell.
            let _ = done.send(outcome.map_err(|_| PasswordError::Task));
        });
        service
            .inner
            .workers
            .jobs
            .send(work)
            .map_err(|_| PasswordError::Task)?;
        result.await.map_err(|_| PasswordError::Task)?
    }
}

/// The 4 KiB limit, checked before a slot is even requested.
fn refuse_oversized(password: &Password) -> Result<(), PasswordError> {
    if password.expose().len() > MAX_PASSWORD_BYTES {
        Err(PasswordError::TooLong)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    use super::*;

    fn service(slots: usize, queue_timeout: Duration) -> PasswordService {
        PasswordService::builder()
            .max_concurrent(slots)
            .queue_timeout(queue_timeout)
            .build()
            .unwrap()
    }

    /// More simultaneous jobs than slots: all of them finish, never more
    /// than the bound at once. (With as many worker threads as slots, the
    /// peak alone cannot show the semaphore works: that callers wait for a
    /// slot rather than pile up in the workers' queue is
    /// `waiting_past_the_queue_timeout_is_busy`.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrency_never_exceeds_the_bound() {
        let service = service(2, Duration::from_secs(600));
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut jobs = Vec::new();
        for _ in 0..12 {
            let service = service.clone();
            let (running, peak) = (Arc::clone(&running), Arc::clone(&peak));
            jobs.push(tokio::spawn(async move {
                service
                    .run(move |_| {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(20));
                        running.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
            }));
        }
        for job in jobs {
            job.await.unwrap().unwrap();
        }
        let peak = peak.load(Ordering::SeqCst);
        assert!(
            (1..=2).contains(&peak),
            "peak concurrency {peak} exceeds the bound"
        );
    }

    /// Derivations run on the service's own threads at a lower CPU
    /// priority than the caller's (Linux), never on the caller's thread.
    #[tokio::test]
    async fn derivations_run_on_lower_priority_threads() {
        let service = service(1, Duration::from_secs(600));
        let caller = std::thread::current().id();
        let (thread, name) = service
            .run(|_| {
                let me = std::thread::current();
                (me.id(), me.name().map(str::to_owned))
            })
            .await
            .unwrap();
        assert_ne!(thread, caller);
        assert_eq!(name.as_deref(), Some("auth-hash-0"));
        #[cfg(target_os = "linux")]
        {
            let nice = |tid| rustix::process::getpriority_process(Some(tid)).unwrap();
            let ours = nice(rustix::thread::gettid());
            let worker = service
                .run(move |_| nice(rustix::thread::gettid()))
                .await
                .unwrap();
            assert_eq!(worker, (ours + 10).min(19), "nice +10 (capped at 19)");
            // 0 keeps the process's priority.
            let same = PasswordService::builder()
                .max_concurrent(1)
                .hash_priority(0)
                .build()
                .unwrap();
            let worker = same
                .run(move |_| nice(rustix::thread::gettid()))
                .await
                .unwrap();
            assert_eq!(worker, ours);
        }
        assert!(matches!(
            PasswordService::builder().hash_priority(-1).build(),
            Err(PasswordError::Config(_))
        ));
    }

    /// A derivation that panics is an error for its caller; the slot is
    /// freed and the service keeps working.
    #[tokio::test]
    async fn a_panicking_derivation_is_an_error_not_a_dead_service() {
        let service = service(1, Duration::from_secs(600));
        let failed = service.run(|_| -> u8 { panic!("derivation failed") }).await;
        assert!(matches!(failed, Err(PasswordError::Task)));
        assert_eq!(service.inner.slots.available_permits(), 1);
        assert_eq!(service.run(|_| 7).await.unwrap(), 7);
    }

    /// Real hashes through the public API respect the bound too: the
    /// hasher's counter proves they all ran, and the slots are all free after.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn real_hashes_go_through_the_slots() {
        let service = service(1, Duration::from_secs(600));
        let password = Password::from("a passphrase to hash");
        let results = futures_join_all((0..4).map(|_| {
            let service = service.clone();
            let password = password.clone();
            async move { service.hash(&password).await }
        }))
        .await;
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(service.hasher().kdf_invocations(), 4);
        assert_eq!(service.inner.slots.available_permits(), 1);
    }

    /// With every slot held, a caller gets `Busy` once the queue timeout
    /// passes, instead of waiting without bound. The slot is held until the
    /// test releases it, so the outcome does not depend on machine speed.
    /// (Tokio's paused clock cannot be used: it does not advance while a
    /// blocking task runs.)
    #[tokio::test]
    async fn waiting_past_the_queue_timeout_is_busy() {
        let service = service(1, Duration::from_millis(250));
        let (release, hold) = mpsc::channel::<()>();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let holder = {
            let service = service.clone();
            tokio::spawn(async move {
                service
                    .run(move |_| {
                        started_tx.send(()).unwrap();
                        hold.recv().unwrap();
                    })
                    .await
            })
        };
        started_rx.await.unwrap();
        let before = service.hasher().kdf_invocations();
        let result = service.verify_dummy(&Password::from("queued")).await;
        assert!(matches!(result, Err(PasswordError::Busy)), "{result:?}");
        assert_eq!(
            service.hasher().kdf_invocations(),
            before,
            "nothing was hashed"
        );
        release.send(()).unwrap();
        holder.await.unwrap().unwrap();
        // The slot is free again.
        assert!(service.verify_dummy(&Password::from("later")).await.is_ok());
    }

    /// The unknown-user path (dummy verification) runs the key derivation
    /// exactly once, like a wrong password, and answers the same.
    #[tokio::test]
    async fn unknown_user_costs_exactly_one_hash_like_a_wrong_password() {
        let service = PasswordService::builder().build().unwrap();
        let stored = service
            .hash(&Password::from("the real passphrase"))
            .await
            .unwrap();
        let counter = || service.hasher().kdf_invocations();

        let before = counter();
        let wrong = service
            .verify(&Password::from("a wrong guess"), &stored)
            .await
            .unwrap();
        let wrong_runs = counter() - before;

        let before = counter();
        let unknown = service
            .verify_dummy(&Password::from("a wrong guess"))
            .await
            .unwrap();
        let unknown_runs = counter() - before;

        assert_eq!(wrong, Verification::Mismatch);
        assert_eq!(unknown, Verification::Mismatch);
        assert_eq!(wrong_runs, 1);
        assert_eq!(unknown_runs, 1);
    }

    #[tokio::test]
    async fn new_passwords_pass_the_policy_before_any_hashing() {
        let service = PasswordService::builder().build().unwrap();
        let context = PolicyContext::new().with_word("alice");
        let result = service
            .hash_new_password(&Password::from("password1"), &context)
            .await;
        assert!(matches!(
            result,
            Err(PasswordError::Policy(PolicyViolation::Common))
        ));
        let result = service
            .hash_new_password(&Password::from("x".repeat(5000)), &context)
            .await;
        assert!(matches!(
            result,
            Err(PasswordError::Policy(PolicyViolation::TooLong { .. }))
        ));
        assert_eq!(service.hasher().kdf_invocations(), 0);
        let hash = service
            .hash_new_password(&Password::from("correct horse battery staple"), &context)
            .await
            .unwrap();
        assert!(hash.as_str().starts_with("$argon2id$"));
    }

    #[test]
    fn zero_or_too_many_slots_is_a_configuration_error() {
        for slots in [0, 1025] {
            assert!(matches!(
                PasswordService::builder().max_concurrent(slots).build(),
                Err(PasswordError::Config(_))
            ));
        }
    }

    async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let handles: Vec<_> = futures.map(tokio::spawn).collect();
        let mut out = Vec::new();
        for handle in handles {
            out.push(handle.await.unwrap());
        }
        out
    }
}
