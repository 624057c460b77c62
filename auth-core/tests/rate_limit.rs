//! One throttle suite, run against the memory and Redis backends with an
//! injected clock. Redis reads `AUTH_TEST_REDIS_URL` (skipped with a printed
//! reason locally when unset; a failure under `CI=true`).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use auth_core::clock::{Clock, ManualClock};
use auth_core::rate_limit::{
    Attempt, Decision, DeviceKey, Ipv6Tier, LimitScope, MAX_KNOWN_DEVICES, MemoryThrottle,
    ThrottleBackend, ThrottleConfig,
};

const SEC: Duration = Duration::from_secs(1);

fn config() -> ThrottleConfig {
    ThrottleConfig::builder()
        .per_ip(3, 10 * SEC)
        .ipv6_tiers([
            Ipv6Tier {
                prefix_len: 56,
                burst: 5,
                period: 10 * SEC,
            },
            Ipv6Tier {
                prefix_len: 48,
                burst: 8,
                period: 10 * SEC,
            },
        ])
        .per_account(5, 30 * SEC, 240 * SEC)
        .hard_lock_after(9)
        .failure_memory(3600 * SEC)
        .device_trust(7 * 24 * 3600 * SEC)
        .unknown_name_buckets(4)
        .build()
        .unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse::<IpAddr>().unwrap()
}

fn random_hex() -> String {
    auth_core::session::SessionId::generate()
        .unwrap()
        .key()
        .to_hex()
}

/// A fresh existing account (the flows key those as U+0001 "id:" and the
/// user id), so shared backends never see one twice.
fn account() -> String {
    format!("\u{1}id:{}", random_hex())
}

/// A fresh login name that finds no account.
fn unknown_name() -> String {
    format!("nobody-{}", random_hex())
}

/// A fresh device cookie's key.
fn device() -> DeviceKey {
    auth_core::session::SessionId::generate().unwrap().key()
}

/// Checks an attempt without a device cookie.
async fn check(
    t: &Arc<dyn ThrottleBackend>,
    ip: IpAddr,
    account: &str,
    clock: &ManualClock,
) -> Decision {
    t.check(
        &Attempt {
            ip,
            account,
            device: None,
        },
        clock.now(),
    )
    .await
    .unwrap()
}

/// A fresh IPv4 address from the 10/8 range, unique per call.
fn fresh_ip() -> IpAddr {
    let bytes = auth_core::session::SessionId::generate().unwrap().key();
    let b = bytes.as_bytes();
    ip(&format!("10.{}.{}.{}", b[0], b[1], b[2]))
}

fn limited(decision: Decision) -> (Duration, LimitScope) {
    match decision {
        Decision::Limited { retry_after, scope } => (retry_after, scope),
        Decision::Allowed => panic!("expected a limit"),
    }
}

mod cases {
    use super::*;

    pub(super) async fn ip_budget_and_refill(t: Arc<dyn ThrottleBackend>, clock: ManualClock) {
        let me = fresh_ip();
        for _ in 0..3 {
            assert_eq!(check(&t, me, &account(), &clock).await, Decision::Allowed);
        }
        let (wait, scope) = limited(check(&t, me, &account(), &clock).await);
        assert_eq!(scope, LimitScope::Ip);
        assert!(wait > Duration::ZERO && wait <= 10 * SEC, "{wait:?}");
        // Another client is not affected.
        assert_eq!(
            check(&t, fresh_ip(), &account(), &clock).await,
            Decision::Allowed
        );
        clock.advance(10 * SEC);
        assert_eq!(check(&t, me, &account(), &clock).await, Decision::Allowed);
    }

    pub(super) async fn ipv6_is_one_budget_per_64(t: Arc<dyn ThrottleBackend>, clock: ManualClock) {
        let suffix = &random_hex()[..8];
        let prefix = format!("2001:db8:{}:{}", &suffix[..4], &suffix[4..8]);
        for host in 1..=3 {
            let addr = ip(&format!("{prefix}::{host}"));
            assert_eq!(check(&t, addr, &account(), &clock).await, Decision::Allowed);
        }
        let other_host = ip(&format!("{prefix}:ffff::1"));
        let (_, scope) = limited(check(&t, other_host, &account(), &clock).await);
        assert_eq!(scope, LimitScope::Ip);
    }

    /// One attempt by `account` from a fresh IP (a failure unless cleared).
    async fn attempt(t: &Arc<dyn ThrottleBackend>, account: &str, clock: &ManualClock) -> Decision {
        check(t, fresh_ip(), account, clock).await
    }

    /// One attempt by `account` from a fresh IP with device cookie `device`.
    async fn attempt_on(
        t: &Arc<dyn ThrottleBackend>,
        account: &str,
        device: &DeviceKey,
        clock: &ManualClock,
    ) -> Decision {
        let attempt = Attempt {
            ip: fresh_ip(),
            account,
            device: Some(device),
        };
        t.check(&attempt, clock.now()).await.unwrap()
    }

    /// Attempts on `account` (waiting out every back-off) until it is at its
    /// hard lock.
    async fn lock_hard(t: &Arc<dyn ThrottleBackend>, account: &str, clock: &ManualClock) {
        let mut admitted = 0;
        while admitted < 9 {
            match attempt(t, account, clock).await {
                Decision::Allowed => admitted += 1,
                Decision::Limited { retry_after, .. } => clock.advance(retry_after),
            }
        }
    }

    pub(super) async fn account_locks_across_many_ips(
        t: Arc<dyn ThrottleBackend>,
        clock: ManualClock,
    ) {
        let victim = account();
        for _ in 1..=5 {
            assert_eq!(attempt(&t, &victim, &clock).await, Decision::Allowed);
        }
        // The 6th, from any IP and even with the right password: locked.
        let (wait, scope) = limited(attempt(&t, &victim, &clock).await);
        assert_eq!(scope, LimitScope::Account);
        assert_eq!(wait, 30 * SEC);
        clock.advance(29 * SEC);
        let (wait, _) = limited(attempt(&t, &victim, &clock).await);
        assert_eq!(wait, SEC);
        clock.advance(SEC);
        assert_eq!(attempt(&t, &victim, &clock).await, Decision::Allowed);
        // Other accounts were never affected.
        assert_eq!(attempt(&t, &account(), &clock).await, Decision::Allowed);
    }

    pub(super) async fn back_off_grows_and_is_capped(
        t: Arc<dyn ThrottleBackend>,
        clock: ManualClock,
    ) {
        let victim = account();
        let mut waits = Vec::new();
        for _ in 0..6 {
            assert_eq!(attempt(&t, &victim, &clock).await, Decision::Allowed);
            match attempt(&t, &victim, &clock).await {
                Decision::Allowed => {
                    waits.push(0);
                    // Not locked yet: that probe counted as an attempt too.
                }
                Decision::Limited { retry_after, .. } => {
                    waits.push(retry_after.as_secs());
                    clock.advance(retry_after);
                }
            }
        }
        // Attempts 1-4 free (the probes count too), then 30, 60, 120 and the
        // 240 s cap.
        assert_eq!(waits, vec![0, 0, 30, 60, 120, 240]);
    }

    pub(super) async fn success_clears_the_count(t: Arc<dyn ThrottleBackend>, clock: ManualClock) {
        let user = account();
        for _ in 0..4 {
            assert_eq!(attempt(&t, &user, &clock).await, Decision::Allowed);
        }
        t.record_success(&user, None, clock.now()).await.unwrap();
        for _ in 0..5 {
            assert_eq!(attempt(&t, &user, &clock).await, Decision::Allowed);
        }
        let (_, scope) = limited(attempt(&t, &user, &clock).await);
        assert_eq!(scope, LimitScope::Account);
    }

    /// The hard lock ends (no lock without end), after which the count
    /// starts again; an unlock lifts it at once.
    pub(super) async fn hard_lock_ends_or_is_lifted(
        t: Arc<dyn ThrottleBackend>,
        clock: ManualClock,
    ) {
        let victim = account();
        let mut admitted = 0;
        // Keep trying, waiting out every back-off: the 9th admitted attempt
        // is the last for the failure memory (an hour here).
        for _ in 0..40 {
            match attempt(&t, &victim, &clock).await {
                Decision::Allowed => admitted += 1,
                Decision::Limited { retry_after, .. } => {
                    assert!(retry_after <= 240 * SEC, "announces at most the back-off");
                    if retry_after < 240 * SEC {
                        clock.advance(retry_after);
                    } else {
                        clock.advance(60 * SEC);
                    }
                }
            }
        }
        assert_eq!(admitted, 9, "never more than the ceiling in its window");
        let (wait, scope) = limited(attempt(&t, &victim, &clock).await);
        assert_eq!((wait, scope), (240 * SEC, LimitScope::Account));
        clock.advance(3600 * SEC);
        for _ in 0..5 {
            assert_eq!(
                attempt(&t, &victim, &clock).await,
                Decision::Allowed,
                "a fresh count"
            );
        }
        assert!(matches!(
            attempt(&t, &victim, &clock).await,
            Decision::Limited { .. }
        ));
        t.unlock(&victim).await.unwrap();
        assert_eq!(attempt(&t, &victim, &clock).await, Decision::Allowed);
    }

    /// A browser that logged in to the account before is not held by a
    /// lock that others put on it; other browsers are.
    pub(super) async fn a_known_device_passes_the_account_lock(
        t: Arc<dyn ThrottleBackend>,
        clock: ManualClock,
    ) {
        let victim = account();
        let owner = device();
        t.record_success(&victim, Some(&owner), clock.now())
            .await
            .unwrap();
        lock_hard(&t, &victim, &clock).await;
        let (_, scope) = limited(attempt(&t, &victim, &clock).await);
        assert_eq!(scope, LimitScope::Account);
        let (_, scope) = limited(attempt_on(&t, &victim, &device(), &clock).await);
        assert_eq!(
            scope,
            LimitScope::Account,
            "an unknown device is locked out"
        );
        assert_eq!(
            attempt_on(&t, &victim, &owner, &clock).await,
            Decision::Allowed,
            "the owner's browser is not"
        );
        // Known for this account only.
        let other = account();
        lock_hard(&t, &other, &clock).await;
        let (_, scope) = limited(attempt_on(&t, &other, &owner, &clock).await);
        assert_eq!(scope, LimitScope::Account);
        // The owner's success clears the device's count, not the lock.
        t.record_success(&victim, Some(&owner), clock.now())
            .await
            .unwrap();
        assert!(matches!(
            attempt(&t, &victim, &clock).await,
            Decision::Limited { .. }
        ));
    }

    /// An account keeps at most `MAX_KNOWN_DEVICES` known devices: a
    /// sign-in beyond them makes none known (anyone who can sign in makes a
    /// device with each sign-in without the cookie), and those already
    /// known stay known.
    pub(super) async fn an_account_keeps_a_bounded_number_of_devices(
        t: Arc<dyn ThrottleBackend>,
        clock: ManualClock,
    ) {
        let owner = account();
        let devices: Vec<DeviceKey> = (0..MAX_KNOWN_DEVICES + 8).map(|_| device()).collect();
        for device in &devices {
            t.record_success(&owner, Some(device), clock.now())
                .await
                .unwrap();
        }
        lock_hard(&t, &owner, &clock).await;
        assert_eq!(
            attempt_on(&t, &owner, &devices[0], &clock).await,
            Decision::Allowed,
            "a device known before the cap stays known"
        );
        let (_, scope) = limited(attempt_on(&t, &owner, &devices[MAX_KNOWN_DEVICES], &clock).await);
        assert_eq!(scope, LimitScope::Account, "one beyond it is not known");
    }

    /// A known device has a budget of its own, with the same back-off; at
    /// the hard count it is unknown again (and then counts against the
    /// account).
    pub(super) async fn a_known_device_has_its_own_budget(
        t: Arc<dyn ThrottleBackend>,
        clock: ManualClock,
    ) {
        let user = account();
        let stolen = device();
        t.record_success(&user, Some(&stolen), clock.now())
            .await
            .unwrap();
        for _ in 0..5 {
            assert_eq!(
                attempt_on(&t, &user, &stolen, &clock).await,
                Decision::Allowed
            );
        }
        let (wait, scope) = limited(attempt_on(&t, &user, &stolen, &clock).await);
        assert_eq!((wait, scope), (30 * SEC, LimitScope::Account));
        // The account's own budget was untouched.
        for _ in 0..5 {
            assert_eq!(attempt(&t, &user, &clock).await, Decision::Allowed);
        }
        let mut admitted = 5;
        let mut waited = Duration::ZERO;
        // Well within the hour a hard lock lasts.
        while waited < 3000 * SEC {
            match attempt_on(&t, &user, &stolen, &clock).await {
                Decision::Allowed => admitted += 1,
                Decision::Limited { retry_after, .. } => {
                    clock.advance(retry_after);
                    waited += retry_after;
                }
            }
        }
        assert_eq!(admitted, 9 + 4, "the device lost its standing");
    }

    /// A partial success (the password right, a second factor still due)
    /// clears the counts a success clears but makes no device known; a
    /// known device stays known.
    pub(super) async fn a_partial_success_makes_no_device_known(
        t: Arc<dyn ThrottleBackend>,
        clock: ManualClock,
    ) {
        let user = account();
        let known = device();
        t.record_success(&user, Some(&known), clock.now())
            .await
            .unwrap();
        let half_way = device();
        t.record_partial_success(&user, Some(&half_way), clock.now())
            .await
            .unwrap();
        lock_hard(&t, &user, &clock).await;
        let (_, scope) = limited(attempt_on(&t, &user, &half_way, &clock).await);
        assert_eq!(
            scope,
            LimitScope::Account,
            "no standing from half a sign-in"
        );
        // A known device's partial success clears its own count, not the
        // account's lock, and it stays known.
        t.record_partial_success(&user, Some(&known), clock.now())
            .await
            .unwrap();
        let (_, scope) = limited(attempt(&t, &user, &clock).await);
        assert_eq!(scope, LimitScope::Account, "the lock stands");
        assert_eq!(
            attempt_on(&t, &user, &known, &clock).await,
            Decision::Allowed,
            "a known device stays known"
        );
        // It clears an unknown client's count as a success does.
        let other = account();
        for _ in 0..4 {
            assert_eq!(attempt(&t, &other, &clock).await, Decision::Allowed);
        }
        t.record_partial_success(&other, None, clock.now())
            .await
            .unwrap();
        for _ in 0..5 {
            assert_eq!(attempt(&t, &other, &clock).await, Decision::Allowed);
        }
    }

    /// Forgetting an account's devices ends their standing and frees their
    /// slots, except the one kept; the account's lock stands; other
    /// accounts' devices are untouched.
    pub(super) async fn forgotten_devices_lose_their_standing(
        t: Arc<dyn ThrottleBackend>,
        clock: ManualClock,
    ) {
        let user = account();
        let other = account();
        let devices: Vec<DeviceKey> = (0..MAX_KNOWN_DEVICES).map(|_| device()).collect();
        for device in &devices {
            t.record_success(&user, Some(device), clock.now())
                .await
                .unwrap();
        }
        t.record_success(&other, Some(&devices[0]), clock.now())
            .await
            .unwrap();
        lock_hard(&t, &user, &clock).await;
        let kept = &devices[1];
        t.forget_devices(&user, Some(kept)).await.unwrap();
        let (_, scope) = limited(attempt(&t, &user, &clock).await);
        assert_eq!(scope, LimitScope::Account, "the lock stands");
        let (_, scope) = limited(attempt_on(&t, &user, &devices[0], &clock).await);
        assert_eq!(scope, LimitScope::Account, "a forgotten device");
        assert_eq!(
            attempt_on(&t, &user, kept, &clock).await,
            Decision::Allowed,
            "the kept device"
        );
        // Without a device to keep, every one goes.
        t.forget_devices(&user, None).await.unwrap();
        let (_, scope) = limited(attempt_on(&t, &user, kept, &clock).await);
        assert_eq!(scope, LimitScope::Account, "forgotten too");
        // The slots of the full account are free again.
        let fresh = device();
        t.record_success(&user, Some(&fresh), clock.now())
            .await
            .unwrap();
        lock_hard(&t, &user, &clock).await;
        assert_eq!(
            attempt_on(&t, &user, &fresh, &clock).await,
            Decision::Allowed,
            "a device known after the forgetting has a slot"
        );
        lock_hard(&t, &other, &clock).await;
        assert_eq!(
            attempt_on(&t, &other, &devices[0], &clock).await,
            Decision::Allowed,
            "another account's devices stay known"
        );
    }

    /// A device that lost its standing (too many failures) frees its slot:
    /// a new device can become known on a full account.
    pub(super) async fn a_spent_device_frees_its_slot(
        t: Arc<dyn ThrottleBackend>,
        clock: ManualClock,
    ) {
        let user = account();
        let devices: Vec<DeviceKey> = (0..MAX_KNOWN_DEVICES).map(|_| device()).collect();
        for device in &devices {
            t.record_success(&user, Some(device), clock.now())
                .await
                .unwrap();
        }
        // Spend the first device's standing (as in
        // `a_known_device_has_its_own_budget`).
        let mut waited = Duration::ZERO;
        while waited < 3000 * SEC {
            if let Decision::Limited { retry_after, .. } =
                attempt_on(&t, &user, &devices[0], &clock).await
            {
                clock.advance(retry_after);
                waited += retry_after;
            }
        }
        let fresh = device();
        t.record_success(&user, Some(&fresh), clock.now())
            .await
            .unwrap();
        lock_hard(&t, &user, &clock).await;
        assert_eq!(
            attempt_on(&t, &user, &fresh, &clock).await,
            Decision::Allowed,
            "the spent device's slot went to the new one"
        );
    }

    /// A device is known for the configured time after its last success.
    pub(super) async fn a_device_is_known_for_a_while(
        t: Arc<dyn ThrottleBackend>,
        clock: ManualClock,
    ) {
        let user = account();
        let owner = device();
        t.record_success(&user, Some(&owner), clock.now())
            .await
            .unwrap();
        clock.advance(7 * 24 * 3600 * SEC + SEC);
        lock_hard(&t, &user, &clock).await;
        let (_, scope) = limited(attempt_on(&t, &user, &owner, &clock).await);
        assert_eq!(scope, LimitScope::Account, "no longer known after 7 days");
    }

    /// Each IPv6 attempt also draws on its /56 and /48 budgets.
    pub(super) async fn ipv6_sites_share_wider_budgets(
        t: Arc<dyn ThrottleBackend>,
        clock: ManualClock,
    ) {
        let r = random_hex();
        let site = format!("2001:{}:{}", &r[..4], &r[4..8]);
        let a = u8::from_str_radix(&r[8..10], 16).unwrap();
        // Two /64s of one /56: 3 each would fit their /64s, but the /56
        // allows 5 in all.
        let mut admitted = 0;
        for net in 0..2 {
            for host in 1..=3 {
                let addr = ip(&format!("{site}:{a:02x}{net:02x}::{host}"));
                if check(&t, addr, &account(), &clock).await == Decision::Allowed {
                    admitted += 1;
                }
            }
        }
        assert_eq!(admitted, 5, "the /56 budget");
        // Another /56 of the same /48: 3 more, then the /48's 8 are spent.
        let b = a ^ 0x80;
        let mut more = 0;
        for net in 0..2 {
            for host in 1..=3 {
                let addr = ip(&format!("{site}:{b:02x}{net:02x}::{host}"));
                if check(&t, addr, &account(), &clock).await == Decision::Allowed {
                    more += 1;
                }
            }
        }
        assert_eq!(more, 3, "the /48 budget");
        let third = ip(&format!("{site}:{:02x}00::1", a ^ 0x40));
        let (_, scope) = limited(check(&t, third, &account(), &clock).await);
        assert_eq!(scope, LimitScope::Ip);
        // IPv4 and other sites are not affected.
        assert_eq!(
            check(&t, fresh_ip(), &account(), &clock).await,
            Decision::Allowed
        );
        let elsewhere = ip(&format!("2001:{}:{}::1", &r[..4], &r[10..14]));
        assert_eq!(
            check(&t, elsewhere, &account(), &clock).await,
            Decision::Allowed
        );
    }

    /// Names without an account share a few buckets: spraying them cannot
    /// grow the state (they may lock each other: no account is behind
    /// them), and existing accounts are not touched.
    pub(super) async fn unknown_names_share_buckets(
        t: Arc<dyn ThrottleBackend>,
        clock: ManualClock,
    ) {
        let mut limited_names = 0;
        for _ in 0..100 {
            if let Decision::Limited { scope, .. } = attempt(&t, &unknown_name(), &clock).await {
                assert_eq!(scope, LimitScope::Account);
                limited_names += 1;
            }
        }
        // 4 buckets of 5 free attempts each: at most 20 admitted.
        assert!(limited_names >= 80, "{limited_names}");
        assert_eq!(attempt(&t, &account(), &clock).await, Decision::Allowed);
    }

    pub(super) async fn old_failures_are_forgotten(
        t: Arc<dyn ThrottleBackend>,
        clock: ManualClock,
    ) {
        let user = account();
        for _ in 0..4 {
            assert_eq!(attempt(&t, &user, &clock).await, Decision::Allowed);
        }
        clock.advance(3601 * SEC);
        for _ in 0..5 {
            assert_eq!(attempt(&t, &user, &clock).await, Decision::Allowed);
        }
    }

    /// Parallel attempts cannot all pass before any is counted.
    pub(super) async fn parallel_attempts_are_counted_on_admission(
        t: Arc<dyn ThrottleBackend>,
        clock: ManualClock,
    ) {
        let victim = account();
        let mut tasks = Vec::new();
        for _ in 0..40 {
            let (t, victim, clock) = (Arc::clone(&t), victim.clone(), clock.clone());
            tasks.push(tokio::spawn(
                async move { attempt(&t, &victim, &clock).await },
            ));
        }
        let mut admitted = 0;
        for task in tasks {
            if task.await.unwrap() == Decision::Allowed {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 5);
    }

    pub(super) async fn registration_uses_the_ip_budget_only(
        t: Arc<dyn ThrottleBackend>,
        clock: ManualClock,
    ) {
        let me = fresh_ip();
        for _ in 0..3 {
            assert_eq!(
                t.check_ip(me, clock.now()).await.unwrap(),
                Decision::Allowed
            );
        }
        let (_, scope) = limited(t.check_ip(me, clock.now()).await.unwrap());
        assert_eq!(scope, LimitScope::Ip);
        let (_, scope) = limited(check(&t, me, &account(), &clock).await);
        assert_eq!(scope, LimitScope::Ip, "one budget for both");
    }
}

macro_rules! throttle_cases {
    ($($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let clock = ManualClock::starting_now();
                if let Some(backend) = backend(&clock).await {
                    cases::$case(backend, clock).await;
                }
            }
        )*
    };
}

mod memory {
    use super::*;

    async fn backend(clock: &ManualClock) -> Option<Arc<dyn ThrottleBackend>> {
        Some(Arc::new(MemoryThrottle::new(
            config(),
            Arc::new(clock.clone()),
        )))
    }

    throttle_cases!(
        ip_budget_and_refill,
        ipv6_is_one_budget_per_64,
        ipv6_sites_share_wider_budgets,
        account_locks_across_many_ips,
        back_off_grows_and_is_capped,
        success_clears_the_count,
        hard_lock_ends_or_is_lifted,
        a_known_device_passes_the_account_lock,
        an_account_keeps_a_bounded_number_of_devices,
        a_known_device_has_its_own_budget,
        a_device_is_known_for_a_while,
        a_partial_success_makes_no_device_known,
        forgotten_devices_lose_their_standing,
        a_spent_device_frees_its_slot,
        unknown_names_share_buckets,
        old_failures_are_forgotten,
        parallel_attempts_are_counted_on_admission,
        registration_uses_the_ip_budget_only,
    );

    /// A spray of 100,000 distinct IPs and 50,000 names against caps of
    /// 10,000 stays within the caps, never refuses a newcomer, keeps a
    /// locked victim locked, and all is given back once stale.
    #[tokio::test]
    async fn memory_stays_bounded_under_key_spraying() {
        let clock = ManualClock::starting_now();
        let config = ThrottleConfig::builder()
            .max_tracked(10_000, 10_000)
            .unknown_name_buckets(1_000)
            .build()
            .unwrap();
        let memory = Arc::new(MemoryThrottle::new(config, Arc::new(clock.clone())));
        let throttle: Arc<dyn ThrottleBackend> = memory.clone();
        // A victim locked before the spray stays locked through it.
        let victim = account();
        for n in 0..5u8 {
            let _ = check(&throttle, IpAddr::from([192, 0, 2, n]), &victim, &clock).await;
        }
        for n in 0u32..100_000 {
            let name = format!("sprayed-{}", n % 50_000);
            let _ = check(&throttle, IpAddr::from(n.to_be_bytes()), &name, &clock).await;
        }
        // Existing accounts are still admitted after the spray.
        let fresh = IpAddr::from([198, 51, 100, 2]);
        assert_eq!(
            check(&throttle, fresh, &account(), &clock).await,
            Decision::Allowed
        );
        let probe = IpAddr::from([198, 51, 100, 1]);
        assert!(
            matches!(
                check(&throttle, probe, &victim, &clock).await,
                Decision::Limited {
                    scope: LimitScope::Account,
                    ..
                }
            ),
            "the spray did not unlock the victim"
        );
        let counts = memory.tracked();
        assert!(counts.0 <= 10_256, "{} IP keys tracked", counts.0);
        assert!(
            counts.1 <= 1_000 + 2,
            "{} account entries tracked",
            counts.1
        );
        // Once their window has passed, everything is given back.
        clock.advance(Duration::from_secs(25 * 3600));
        memory.housekeeping();
        assert_eq!(memory.tracked(), (0, 0));
    }

    /// A memory throttle whose account table holds 100 entries, and the
    /// same as a backend.
    fn small_table(clock: &ManualClock) -> (Arc<MemoryThrottle>, Arc<dyn ThrottleBackend>) {
        let config = ThrottleConfig::builder()
            .max_tracked(1_000_000, 100)
            .build()
            .unwrap();
        let memory = Arc::new(MemoryThrottle::new(config, Arc::new(clock.clone())));
        (memory.clone(), memory)
    }

    /// A full account table makes room (devices, then the accounts with
    /// the fewest failures go) rather than refusing anyone.
    #[tokio::test]
    async fn a_full_account_table_refuses_no_one() {
        let clock = ManualClock::starting_now();
        let (memory, throttle) = small_table(&clock);
        for _ in 0..150 {
            let locked = account();
            for _ in 0..6 {
                let _ = check(&throttle, fresh_ip(), &locked, &clock).await;
            }
            clock.advance(SEC);
        }
        let (_, accounts) = memory.tracked();
        assert!(accounts <= 100, "{accounts}");
        assert_eq!(
            check(&throttle, fresh_ip(), &account(), &clock).await,
            Decision::Allowed
        );
    }

    /// Device entries anyone with an account can make (a sign-in without
    /// the cookie makes one) never push another account's lock out of a
    /// full table: devices make room first.
    #[tokio::test]
    async fn device_entries_never_evict_a_lock() {
        let clock = ManualClock::starting_now();
        let (memory, throttle) = small_table(&clock);
        let victim = account();
        for _ in 0..6 {
            let _ = check(&throttle, fresh_ip(), &victim, &clock).await;
        }
        assert!(matches!(
            check(&throttle, fresh_ip(), &victim, &clock).await,
            Decision::Limited {
                scope: LimitScope::Account,
                ..
            }
        ));
        let own = account();
        for _ in 0..500 {
            throttle
                .record_success(&own, Some(&device()), clock.now())
                .await
                .unwrap();
        }
        let (_, tracked) = memory.tracked();
        assert!(tracked <= 100, "{tracked}");
        assert!(
            matches!(
                check(&throttle, fresh_ip(), &victim, &clock).await,
                Decision::Limited {
                    scope: LimitScope::Account,
                    ..
                }
            ),
            "the lock survived"
        );
    }

    /// Nor do fresh single failures sprayed over many accounts: an older
    /// count, closer to the end of its failure memory than they are, stays
    /// (the accounts with the fewest failures make room first).
    #[tokio::test]
    async fn a_spray_of_single_failures_never_evicts_an_older_count() {
        let clock = ManualClock::starting_now();
        let (memory, throttle) = small_table(&clock);
        let victim = account();
        for _ in 0..6 {
            let _ = check(&throttle, fresh_ip(), &victim, &clock).await;
        }
        // Hours later (the failure memory is a day; the back-off is over,
        // the count stays), the spray.
        clock.advance(20 * 3600 * SEC);
        for _ in 0..500 {
            let _ = check(&throttle, fresh_ip(), &account(), &clock).await;
        }
        let (_, tracked) = memory.tracked();
        assert!(tracked <= 100, "{tracked}");
        // The count survived: the next attempt is admitted and locks the
        // account again at once (a forgotten count would allow 5 more).
        assert_eq!(
            check(&throttle, fresh_ip(), &victim, &clock).await,
            Decision::Allowed
        );
        assert!(
            matches!(
                check(&throttle, fresh_ip(), &victim, &clock).await,
                Decision::Limited {
                    scope: LimitScope::Account,
                    ..
                }
            ),
            "the count survived"
        );
    }
}

#[cfg(feature = "redis")]
mod common;

#[cfg(feature = "redis")]
mod redis {
    use super::*;

    async fn backend(_clock: &ManualClock) -> Option<Arc<dyn ThrottleBackend>> {
        let url = crate::common::service_url("AUTH_TEST_REDIS_URL")?;
        let throttle = auth_core::rate_limit::RedisThrottle::connect_with_prefix(
            &url,
            config(),
            format!("test:{}:", random_hex()),
        )
        .await
        .unwrap();
        Some(Arc::new(throttle))
    }

    /// A throttle on `AUTH_TEST_REDIS_URL` under a fresh prefix: the URL,
    /// the prefix and the throttle; `None` (skipped) without a Redis.
    async fn prefixed() -> Option<(String, String, Arc<dyn ThrottleBackend>)> {
        let url = crate::common::service_url("AUTH_TEST_REDIS_URL")?;
        let prefix = format!("test:{}:", random_hex());
        let throttle =
            auth_core::rate_limit::RedisThrottle::connect_with_prefix(&url, config(), &prefix)
                .await
                .unwrap();
        Some((url, prefix, Arc::new(throttle)))
    }

    /// The keys matching `pattern`, read through a client of their own.
    async fn keys(url: &str, pattern: &str) -> (Vec<String>, ::redis::aio::MultiplexedConnection) {
        let mut conn = ::redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let keys = ::redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut conn)
            .await
            .unwrap();
        (keys, conn)
    }

    throttle_cases!(
        ip_budget_and_refill,
        ipv6_is_one_budget_per_64,
        ipv6_sites_share_wider_budgets,
        account_locks_across_many_ips,
        back_off_grows_and_is_capped,
        success_clears_the_count,
        hard_lock_ends_or_is_lifted,
        a_known_device_passes_the_account_lock,
        an_account_keeps_a_bounded_number_of_devices,
        a_known_device_has_its_own_budget,
        a_device_is_known_for_a_while,
        a_partial_success_makes_no_device_known,
        forgotten_devices_lose_their_standing,
        a_spent_device_frees_its_slot,
        unknown_names_share_buckets,
        old_failures_are_forgotten,
        parallel_attempts_are_counted_on_admission,
        registration_uses_the_ip_budget_only,
    );

    /// A spray of names without an account writes at most one key per
    /// bucket, and every key the throttle writes expires (device keys and
    /// the index of an account's devices included).
    #[tokio::test]
    async fn sprayed_names_stay_within_their_buckets() {
        let Some((url, prefix, t)) = prefixed().await else {
            return;
        };
        let clock = ManualClock::starting_now();
        for n in 0..200 {
            let _ = check(&t, fresh_ip(), &format!("sprayed-{n}"), &clock).await;
        }
        let _ = check(&t, fresh_ip(), &account(), &clock).await;
        // A known device (its key and the account's index of devices), and
        // a partial success, write keys that expire too.
        let owner = account();
        t.record_success(&owner, Some(&device()), clock.now())
            .await
            .unwrap();
        t.record_partial_success(&owner, Some(&device()), clock.now())
            .await
            .unwrap();
        let (keys, mut conn) = keys(&url, &format!("{prefix}*")).await;
        let names = keys.iter().filter(|k| k.contains(":n:")).count();
        assert!(names <= 4, "{names} name keys");
        assert!(keys.iter().any(|k| k.contains(":d:")), "{keys:?}");
        assert!(keys.iter().any(|k| k.ends_with(":dv")), "{keys:?}");
        for key in keys.iter().filter(|k| !k.ends_with("bucket-key")) {
            let ttl: i64 = ::redis::cmd("PTTL")
                .arg(key)
                .query_async(&mut conn)
                .await
                .unwrap();
            assert!(ttl > 0, "{key} does not expire");
        }
    }

    /// Beyond `MAX_KNOWN_DEVICES`, a sign-in writes no device key: one
    /// account cannot fill Redis with 90-day keys.
    #[tokio::test]
    async fn an_account_writes_a_bounded_number_of_device_keys() {
        let Some((url, prefix, t)) = prefixed().await else {
            return;
        };
        let clock = ManualClock::starting_now();
        let owner = account();
        for _ in 0..MAX_KNOWN_DEVICES + 8 {
            t.record_success(&owner, Some(&device()), clock.now())
                .await
                .unwrap();
        }
        let (devices_kept, _) = keys(&url, &format!("{prefix}*:d:*")).await;
        assert_eq!(devices_kept.len(), MAX_KNOWN_DEVICES);
    }

    /// Forwards connections on a local port to `target` until the task is
    /// aborted, which drops every forwarded connection with it.
    async fn forwarder(target: std::net::SocketAddr) -> (u16, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let mut links = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                links.spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        (port, task)
    }

    /// Fails closed once connected too: when Redis goes away under a
    /// running throttle, a check is an error (a flow answers 503), never
    /// "allowed".
    #[tokio::test]
    async fn a_redis_lost_after_connecting_fails_closed() {
        let Some(url) = crate::common::service_url("AUTH_TEST_REDIS_URL") else {
            return;
        };
        let mut url = url::Url::parse(&url).unwrap();
        let target = url.socket_addrs(|| Some(6379)).unwrap()[0];
        let (port, link) = forwarder(target).await;
        url.set_host(Some("127.0.0.1")).unwrap();
        url.set_port(Some(port)).unwrap();
        let prefix = format!("test:{}:", random_hex());
        let t: Arc<dyn ThrottleBackend> = Arc::new(
            auth_core::rate_limit::RedisThrottle::connect_with_prefix(
                url.as_str(),
                config(),
                &prefix,
            )
            .await
            .unwrap(),
        );
        let clock = ManualClock::starting_now();
        assert_eq!(
            check(&t, fresh_ip(), &account(), &clock).await,
            Decision::Allowed
        );
        link.abort();
        let _ = link.await;
        let attempt = Attempt {
            ip: fresh_ip(),
            account: &account(),
            device: None,
        };
        let after = t.check(&attempt, clock.now()).await;
        assert!(
            matches!(
                after,
                Err(auth_core::rate_limit::ThrottleError::Unavailable(_))
            ),
            "{after:?}"
        );
        // And at once, not after a back-off of reconnection attempts: each
        // check while Redis stays away waits for at most two attempts (a
        // refused command is sent once more; refused here, so a moment). The redis crate's default (six
        // retries from 100 ms, doubling) held each for 6 s and more. A
        // hang detector, far above one attempt and below the default.
        for _ in 0..3 {
            let start = std::time::Instant::now();
            assert!(t.check(&attempt, clock.now()).await.is_err());
            assert!(start.elapsed() < Duration::from_secs(3));
        }
    }

    /// Fails closed: an unreachable Redis is an error, never "allowed".
    #[tokio::test]
    async fn unreachable_redis_fails_closed() {
        let result =
            auth_core::rate_limit::RedisThrottle::connect("redis://127.0.0.1:1/", config()).await;
        assert!(matches!(
            result,
            Err(auth_core::rate_limit::ThrottleError::Unavailable(_))
        ));
    }
}

#[test]
fn retry_after_rounds_up_to_whole_seconds() {
    let d = |ms| Decision::Limited {
        retry_after: Duration::from_millis(ms),
        scope: LimitScope::Ip,
    };
    assert_eq!(d(1).retry_after_secs(), Some(1));
    assert_eq!(d(1000).retry_after_secs(), Some(1));
    assert_eq!(d(1001).retry_after_secs(), Some(2));
    assert_eq!(Decision::Allowed.retry_after_secs(), None);
}

/// NIST's ceiling on consecutive failures: by default the 100th locks the
/// account for the failure memory (24 hours), before it the back-off tops
/// out at 15 minutes, and the builder refuses a ceiling above 100.
#[test]
fn the_hard_lock_is_at_most_100_failures_and_lasts_the_failure_memory() {
    let defaults = ThrottleConfig::default();
    assert_eq!(defaults.lock_for(99), Some(Duration::from_secs(15 * 60)));
    assert_eq!(defaults.lock_for(100), Some(Duration::from_secs(24 * 3600)));
    assert_eq!(defaults.failure_memory(), Duration::from_secs(24 * 3600));
    assert!(
        ThrottleConfig::builder()
            .hard_lock_after(100)
            .build()
            .is_ok()
    );
    assert!(matches!(
        ThrottleConfig::builder().hard_lock_after(101).build(),
        Err(auth_core::rate_limit::ThrottleError::Config(_))
    ));
}
