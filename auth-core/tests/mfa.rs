//! TOTP and recovery codes: the RFC vectors through our verifier, the
//! window and replay rules on an injected clock, atomic single use in every
//! account store (memory, SQLite, PostgreSQL with `AUTH_TEST_POSTGRES_URL`,
//! each with the ready user store of its backend), encryption at rest, and
//! the second login step with its throttle.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use auth_core::account::{AccountStore, MemoryAccountStore};
use auth_core::clock::{Clock, ManualClock, Timestamp};
use auth_core::event::{AuthEvent, AuthEventHook, AuthEventKind, FailureReason};
use auth_core::flow::{AuthError, Authenticator, BuildError, Client, FactorProof, LoginOutcome};
use auth_core::mfa::{MfaError, MfaKeys, RecoveryCodes, TotpAlgorithm, TotpParams, TotpSecret};
use auth_core::password::Password;
use auth_core::session::{AuthState, Factor, Session};
use auth_core::user::{AnyUser, MemoryUserStore, UserStore};
use auth_core::web::Auth;

mod common;
use common::FailingEpoch;

const PASSWORD: &str = "correct horse battery staple";
const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const KEY_B: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY2Nzg5Ojs8PT4=";
/// 15 s into a TOTP step.
const START_SECS: i64 = 1_700_000_010 + 15;

// ---------------------------------------------------------------- vectors

#[test]
fn rfc6238_appendix_b_vectors() {
    let sha1 = TotpSecret::from_bytes(b"12345678901234567890".to_vec()).unwrap();
    let sha256 = TotpSecret::from_bytes(b"12345678901234567890123456789012".to_vec()).unwrap();
    let sha512 = TotpSecret::from_bytes(
        b"1234567890123456789012345678901234567890123456789012345678901234".to_vec(),
    )
    .unwrap();
    let table: [(u64, &str, &str, &str); 6] = [
        (59, "94287082", "46119246", "90693936"),
        (1_111_111_109, "07081804", "68084774", "25091201"),
        (1_111_111_111, "14050471", "67062674", "99943326"),
        (1_234_567_890, "89005924", "91819424", "93441116"),
        (2_000_000_000, "69279037", "90698825", "38618901"),
        (20_000_000_000, "65353130", "77737706", "47863826"),
    ];
    for (time, c1, c256, c512) in table {
        for (algorithm, secret, expected) in [
            (TotpAlgorithm::Sha1, &sha1, c1),
            (TotpAlgorithm::Sha256, &sha256, c256),
            (TotpAlgorithm::Sha512, &sha512, c512),
        ] {
            let params = TotpParams::new(algorithm, 8, 30).unwrap();
            assert_eq!(
                params.code_at(secret, time).unwrap().as_str(),
                expected,
                "{algorithm:?} at {time}"
            );
            let now = i64::try_from(time).unwrap();
            assert_eq!(params.verify(secret, expected, now), Some(time / 30));
            // The same code under another algorithm is refused.
            let other = if algorithm == TotpAlgorithm::Sha1 {
                TotpAlgorithm::Sha256
            } else {
                TotpAlgorithm::Sha1
            };
            let other = TotpParams::new(other, 8, 30).unwrap();
            assert_ne!(other.verify(&sha1, expected, now), Some(time / 30));
        }
    }
}

#[test]
fn rfc4226_appendix_d_hotp_vectors() {
    let secret = TotpSecret::from_bytes(b"12345678901234567890".to_vec()).unwrap();
    let expected = [
        "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871",
        "520489",
    ];
    let params = TotpParams::default();
    for (counter, code) in expected.iter().enumerate() {
        let counter = counter as u64;
        assert_eq!(params.hotp(&secret, counter).unwrap().as_str(), *code);
        // As TOTP: counter c is the step of time 30c.
        let now = i64::try_from(counter * 30 + 7).unwrap();
        assert_eq!(params.verify(&secret, code, now), Some(counter));
    }
}

#[test]
fn the_verifier_accepts_exactly_the_steps_t_minus_1_to_t_plus_1() {
    let secret = TotpSecret::generate().unwrap();
    let params = TotpParams::default();
    let now = START_SECS;
    let t = u64::try_from(now).unwrap() / 30;
    for (offset, accepted) in [
        (-3i64, false),
        (-2, false),
        (-1, true),
        (0, true),
        (1, true),
        (2, false),
        (3, false),
    ] {
        let step = t.checked_add_signed(offset).unwrap();
        let code = params.hotp(&secret, step).unwrap();
        let verified = params.verify(&secret, &code, now);
        if accepted {
            assert_eq!(verified, Some(step), "offset {offset}");
        } else {
            assert_eq!(verified, None, "offset {offset}");
        }
    }
}

// ---------------------------------------------------------------- harness

#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<AuthEvent>>);

impl AuthEventHook for Recorder {
    fn on_event(&self, event: &AuthEvent) {
        self.0.lock().unwrap().push(event.clone());
    }
}

impl Recorder {
    fn all(&self) -> Vec<AuthEvent> {
        self.0.lock().unwrap().clone()
    }
    fn last(&self) -> AuthEvent {
        self.0.lock().unwrap().last().cloned().unwrap()
    }
}

struct Harness {
    auth: Authenticator,
    accounts: Arc<dyn AccountStore>,
    clock: ManualClock,
    events: Arc<Recorder>,
}

fn keys_a() -> MfaKeys {
    MfaKeys::from_base64("a", KEY_A).unwrap()
}

fn build<S: UserStore>(
    users: S,
    accounts: Arc<dyn AccountStore>,
    keys: Option<MfaKeys>,
    clock: ManualClock,
) -> Harness {
    let events = Arc::new(Recorder::default());
    let mut builder = Auth::builder(users)
        .clock(Arc::new(clock.clone()))
        .accounts(Arc::clone(&accounts))
        .app_name("Example App")
        .event_hook(events.clone());
    if let Some(keys) = keys {
        builder = builder.mfa_keys(keys);
    }
    Harness {
        auth: builder.build().unwrap().authenticator().clone(),
        accounts,
        clock,
        events,
    }
}

fn start_clock() -> ManualClock {
    ManualClock::new(Timestamp::from_unix_millis(START_SECS * 1000))
}

fn memory() -> Harness {
    build(
        MemoryUserStore::new(),
        Arc::new(MemoryAccountStore::new()),
        Some(keys_a()),
        start_clock(),
    )
}

/// `tag` and 96 random bits in hex (lower case, as login names are
/// stored).
fn unique(tag: &str) -> String {
    let random = TotpSecret::generate().unwrap();
    let hex: String = random.expose_bytes()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{tag}-{hex}")
}

/// The ready user store and the account store in one SQLite file,
/// `users.db` in `dir` (the pool of a session store, as an app would share
/// it).
#[cfg(feature = "sqlite")]
async fn sqlite_stores(
    dir: &std::path::Path,
) -> (auth_core::user::SqliteUserStore, Arc<dyn AccountStore>) {
    std::fs::create_dir_all(dir).unwrap();
    let url = format!("sqlite://{}", dir.join("users.db").display());
    let sessions = auth_core::session::SqliteStore::connect(&url)
        .await
        .unwrap();
    let pool = sessions.pool().clone();
    let users = auth_core::user::SqliteUserStore::from_pool(pool.clone())
        .await
        .unwrap();
    let accounts = auth_core::account::SqliteAccountStore::from_pool(pool)
        .await
        .unwrap();
    (users, Arc::new(accounts))
}

fn client(ip: &str) -> Client {
    Client::new(ip.parse::<IpAddr>().unwrap()).with_user_agent("test")
}

fn pw() -> Password {
    Password::from(PASSWORD)
}

/// The proof of a user without a second factor: the password.
fn proof() -> FactorProof {
    FactorProof::password(pw())
}

/// The proof of a user with a second factor: the password and `code`.
fn proof_with(code: &str) -> FactorProof {
    FactorProof::password(pw()).with_code(code)
}

/// Whether `session` still loads on the per-request path (stamp checked).
async fn alive(h: &Harness, session: &Session) -> bool {
    h.auth
        .load_session(session.id().clone())
        .await
        .unwrap()
        .is_some()
}

fn now_secs(h: &Harness) -> u64 {
    u64::try_from(h.clock.now().as_unix_secs()).unwrap()
}

fn code(h: &Harness, secret: &TotpSecret) -> String {
    TotpParams::default()
        .code_at(secret, now_secs(h))
        .unwrap()
        .to_string()
}

fn next_step(h: &Harness) {
    h.clock.advance(Duration::from_secs(30));
}

async fn logged_in(h: &Harness, login: &str) -> Session {
    match h
        .auth
        .login(login, &pw(), &client("192.0.2.1"), None)
        .await
        .unwrap()
    {
        LoginOutcome::LoggedIn(session) => session,
        other => panic!("expected a full login, got {other:?}"),
    }
}

async fn pending(h: &Harness, login: &str, ip: &str) -> Session {
    match h.auth.login(login, &pw(), &client(ip), None).await.unwrap() {
        LoginOutcome::MfaRequired { session, methods } => {
            assert_eq!(methods, vec![Factor::Totp]);
            session
        }
        other => panic!("expected MFA, got {other:?}"),
    }
}

struct Enrolled {
    user: AnyUser,
    secret: TotpSecret,
    secret_base32: String,
    codes: RecoveryCodes,
}

/// Registers `login` and enrols TOTP; the clock is then one step on, so
/// the confirmation code's step is spent.
async fn enrolled(h: &Harness, login: &str) -> Enrolled {
    let c = client("192.0.2.1");
    let user = h.auth.register(login, &pw(), &c).await.unwrap();
    let mut session = logged_in(h, login).await;
    let enrollment = h
        .auth
        .begin_totp_enrollment(&mut session, &proof(), &c)
        .await
        .unwrap();
    let secret = TotpSecret::from_base32(enrollment.secret_base32()).unwrap();
    assert_eq!(secret.expose_bytes().len(), 20);
    let codes = h
        .auth
        .confirm_totp(&mut session, &code(h, &secret), &c)
        .await
        .unwrap();
    next_step(h);
    Enrolled {
        user,
        secret,
        secret_base32: enrollment.secret_base32().to_owned(),
        codes,
    }
}

/// A TOTP confirmation whose store fails half-way (the account store
/// drops before the factor is stored, or after) never leaves a
/// password-only session of the user elsewhere beside a second factor:
/// those end before the factor is stored, and a failure there stores
/// nothing.
#[tokio::test]
async fn a_totp_confirmation_failing_half_way_leaves_no_password_only_session() {
    for spare in [0, 1] {
        confirmation_failing_after(spare).await;
    }
}

async fn confirmation_failing_after(spare: usize) {
    let accounts = Arc::new(FailingEpoch::default());
    accounts
        .spare
        .store(spare, std::sync::atomic::Ordering::SeqCst);
    let h = build(
        MemoryUserStore::new(),
        accounts.clone(),
        Some(keys_a()),
        start_clock(),
    );
    let c = client("192.0.2.1");
    let user = h.auth.register("alice", &pw(), &c).await.unwrap();
    let elsewhere = logged_in(&h, "alice").await;
    let mut session = logged_in(&h, "alice").await;
    let enrollment = h
        .auth
        .begin_totp_enrollment(&mut session, &proof(), &c)
        .await
        .unwrap();
    let secret = TotpSecret::from_base32(enrollment.secret_base32()).unwrap();
    accounts
        .armed
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let confirmed = h
        .auth
        .confirm_totp(&mut session, &code(&h, &secret), &c)
        .await;
    accounts
        .armed
        .store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(confirmed.is_err());
    let on = accounts
        .totp(user.id())
        .await
        .unwrap()
        .is_some_and(|t| t.confirmed);
    assert!(
        !on || !alive(&h, &elsewhere).await,
        "TOTP is on and a password-only session lives on"
    );
    // Which half failed: before the factor was stored, or after.
    assert_eq!(on, spare == 1);
}

// ------------------------------------------------------------- enrolment

#[tokio::test]
async fn enrolment_gives_secret_uri_and_qr_and_is_inactive_until_confirmed() {
    let h = memory();
    let c = client("192.0.2.1");
    let user = h.auth.register("Alice", &pw(), &c).await.unwrap();
    let mut session = logged_in(&h, "alice").await;
    let enrollment = h
        .auth
        .begin_totp_enrollment(&mut session, &proof(), &c)
        .await
        .unwrap();
    let secret = enrollment.secret_base32().to_owned();
    assert_eq!(secret.len(), 32, "160 bits in base32");
    assert!(
        enrollment
            .otpauth_uri()
            .starts_with("otpauth://totp/Example%20App:Alice?secret=")
    );
    assert!(
        enrollment
            .otpauth_uri()
            .contains(&format!("secret={secret}&"))
    );
    assert!(enrollment.otpauth_uri().contains("issuer=Example%20App"));
    assert!(enrollment.qr_svg().starts_with("<?xml") || enrollment.qr_svg().contains("<svg"));
    assert!(!format!("{enrollment:?}").contains(&secret));
    let json = serde_json::to_value(&enrollment).unwrap();
    assert_eq!(json["secret"], secret.as_str());

    // Pending: not a second factor; the password alone still logs in.
    let stored = h.accounts.totp(user.id()).await.unwrap().unwrap();
    assert!(!stored.confirmed);
    assert!(!stored.sealed_secret.contains(&secret));
    assert!(
        h.accounts
            .second_factors(user.id())
            .await
            .unwrap()
            .is_empty()
    );
    let other = logged_in(&h, "alice").await;
    // Nothing to complete a login with either.
    assert!(!h.auth.totp_enabled(&session).await.unwrap());

    // A wrong code does not confirm.
    let err = h
        .auth
        .confirm_totp(&mut session, "000000", &c)
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::InvalidCode));
    assert_eq!(err.status(), 401);
    assert!(
        h.accounts
            .second_factors(user.id())
            .await
            .unwrap()
            .is_empty()
    );

    let old_id = session.id().encode();
    let secret = TotpSecret::from_base32(&secret).unwrap();
    let codes = h
        .auth
        .confirm_totp(&mut session, &code(&h, &secret), &c)
        .await
        .unwrap();
    assert_eq!(codes.len(), 10);
    assert_ne!(
        session.id().encode(),
        old_id,
        "confirmation rotates the session"
    );
    assert!(h.auth.sessions().load(&old_id).await.unwrap().is_none());
    assert!(
        h.auth
            .sessions()
            .load(&other.id().encode())
            .await
            .unwrap()
            .is_none(),
        "a password-only session of the user ends at the confirmation"
    );
    assert!(
        h.auth
            .sessions()
            .load(&session.id().encode())
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        matches!(session.auth_state(), AuthState::Authenticated { factors, .. } if factors.contains(&Factor::Totp))
    );
    h.auth.require_mfa(Some(&session)).unwrap();
    assert_eq!(h.events.last().kind, AuthEventKind::TotpEnabled);
    assert_eq!(
        h.accounts.second_factors(user.id()).await.unwrap(),
        vec![Factor::Totp]
    );
    assert_eq!(h.auth.recovery_codes_left(&session).await.unwrap(), 10);
    // Now the password alone only gives a pending session.
    pending(&h, "alice", "192.0.2.1").await;
    // And a second enrolment is refused until TOTP is disabled.
    let err = h
        .auth
        .begin_totp_enrollment(&mut session, &proof_with(&code(&h, &secret)), &c)
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::TotpAlreadyEnabled));
    assert_eq!(err.status(), 409);
}

/// Enrolment needs MFA keys, and the password with the request (ASVS 5.0
/// 7.5.1): a recent login alone is refused, a login of long ago with the
/// password works, and the proof gives the session a new ID and a fresh
/// authentication time.
#[tokio::test]
async fn enrolment_needs_a_key_and_the_password() {
    let h = build(
        MemoryUserStore::new(),
        Arc::new(MemoryAccountStore::new()),
        None,
        start_clock(),
    );
    let c = client("192.0.2.1");
    let user = h.auth.register("alice", &pw(), &c).await.unwrap();
    let mut session = logged_in(&h, "alice").await;
    let err = h
        .auth
        .begin_totp_enrollment(&mut session, &proof(), &c)
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::MfaUnavailable));
    assert_eq!(err.status(), 501);
    assert!(
        h.accounts.totp(user.id()).await.unwrap().is_none(),
        "nothing stored"
    );

    let h = memory();
    let bob = h.auth.register("bob", &pw(), &c).await.unwrap();
    // A login just now is no proof: a wrong password is refused, counted
    // and audited like a login's.
    let mut session = logged_in(&h, "bob").await;
    let wrong = FactorProof::password(Password::from("not bob's password"));
    let err = h
        .auth
        .begin_totp_enrollment(&mut session, &wrong, &c)
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::InvalidCredentials), "{err:?}");
    assert_eq!(err.status(), 401);
    let last = h.events.last();
    assert_eq!(
        (last.kind, last.success, last.reason),
        (
            AuthEventKind::TotpEnableFailed,
            false,
            Some(FailureReason::WrongPassword)
        )
    );
    assert!(h.accounts.totp(bob.id()).await.unwrap().is_none());

    // A login of long ago with the password works.
    h.clock.advance(Duration::from_secs(11 * 60));
    let mut session = h
        .auth
        .sessions()
        .load(&session.id().encode())
        .await
        .unwrap()
        .unwrap();
    assert!(h.auth.require_recent(&session).is_err());
    let old_id = session.id().encode();
    h.auth
        .begin_totp_enrollment(&mut session, &proof(), &c)
        .await
        .unwrap();
    assert_ne!(session.id().encode(), old_id, "the proof rotates the ID");
    assert!(h.auth.sessions().load(&old_id).await.unwrap().is_none());
    assert!(alive(&h, &session).await);
    h.auth.require_recent(&session).unwrap();
    assert_eq!(h.events.last().kind, AuthEventKind::TotpEnrollmentStarted);
    assert!(!h.accounts.totp(bob.id()).await.unwrap().unwrap().confirmed);
}

/// MFA keys without an account store would keep second factors in process
/// memory, where a restart silently turns them off: refused at build time.
#[test]
fn mfa_keys_need_an_account_store() {
    let err = Auth::builder(MemoryUserStore::new())
        .mfa_keys(keys_a())
        .build()
        .unwrap_err();
    assert!(matches!(err, BuildError::AccountStoreRequired), "{err:?}");
    assert!(
        Auth::builder(MemoryUserStore::new())
            .mfa_keys(keys_a())
            .accounts(Arc::new(MemoryAccountStore::new()))
            .build()
            .is_ok()
    );
}

// ----------------------------------------------------------- second step

#[tokio::test]
async fn the_full_flow_password_then_totp() {
    let h = memory();
    let e = enrolled(&h, "alice").await;
    let mut session = pending(&h, "alice", "192.0.2.1").await;
    assert!(matches!(session.auth_state(), AuthState::MfaPending { .. }));
    let pending_id = session.id().encode();
    h.auth
        .login_totp(&mut session, &code(&h, &e.secret), &client("192.0.2.1"))
        .await
        .unwrap();
    assert_ne!(session.id().encode(), pending_id);
    assert!(
        h.auth.sessions().load(&pending_id).await.unwrap().is_none(),
        "the pending ID is dead"
    );
    let loaded = h
        .auth
        .sessions()
        .load(&session.id().encode())
        .await
        .unwrap()
        .unwrap();
    match loaded.auth_state() {
        AuthState::Authenticated { factors, at } => {
            assert_eq!(factors, &vec![Factor::Password, Factor::Totp]);
            assert_eq!(*at, h.clock.now());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(loaded.authenticated_user(), Some(e.user.id()));
    h.auth.require_login(Some(&loaded)).unwrap();
    h.auth.require_mfa(Some(&loaded)).unwrap();
    let last = h.events.last();
    assert_eq!(
        (last.kind, last.success, last.factor),
        (AuthEventKind::LoginSucceeded, true, Some(Factor::Totp))
    );
}

/// "Remember me" carries through the second factor: the pending session
/// gets a browser-session cookie, the completed one a persistent cookie
/// and the persistent idle timeout (it outlives 30 idle minutes, not 7
/// idle days).
#[tokio::test]
async fn a_remembered_login_is_persistent_once_the_second_factor_is_done() {
    let h = memory();
    let e = enrolled(&h, "alice").await;
    let remembered = client("192.0.2.1").remembering(true);
    let LoginOutcome::MfaRequired { mut session, .. } = h
        .auth
        .login("alice", &pw(), &remembered, None)
        .await
        .unwrap()
    else {
        panic!("expected MFA");
    };
    assert!(
        !h.auth.session_cookie(&session).contains("Max-Age"),
        "a pending session's cookie ends with the browser session"
    );
    h.auth
        .login_totp(&mut session, &code(&h, &e.secret), &remembered)
        .await
        .unwrap();
    assert!(session.record().persistent);
    let cookie = h.auth.session_cookie(&session);
    assert!(cookie.contains("Max-Age=2592000"), "{cookie}");
    h.clock.advance(Duration::from_secs(2 * 60 * 60));
    assert!(alive(&h, &session).await, "two idle hours");
    h.clock.advance(Duration::from_secs(7 * 24 * 60 * 60 + 1));
    assert!(!alive(&h, &session).await, "seven idle days");

    // Not asked: a browser-session cookie, and 31 idle minutes end it.
    next_step(&h);
    let mut session = pending(&h, "alice", "192.0.2.1").await;
    h.auth
        .login_totp(&mut session, &code(&h, &e.secret), &client("192.0.2.1"))
        .await
        .unwrap();
    assert!(!session.record().persistent);
    assert!(!h.auth.session_cookie(&session).contains("Max-Age"));
    h.clock.advance(Duration::from_secs(31 * 60));
    assert!(!alive(&h, &session).await);
}

#[tokio::test]
async fn window_edges_on_the_clock() {
    let h = memory();
    let e = enrolled(&h, "alice").await;
    // Well past the confirmation step.
    h.clock.advance(Duration::from_secs(600));
    let params = TotpParams::default();
    let t = now_secs(&h) / 30;
    let at = |offset: i64| {
        params
            .hotp(&e.secret, t.checked_add_signed(offset).unwrap())
            .unwrap()
            .to_string()
    };
    for offset in [-2, 2, -3, 3] {
        let mut session = pending(&h, "alice", "192.0.2.1").await;
        let err = h
            .auth
            .login_totp(&mut session, &at(offset), &client("192.0.2.1"))
            .await
            .unwrap_err();
        assert!(matches!(err, AuthError::InvalidCode), "offset {offset}");
    }
    for offset in [-1, 0, 1] {
        let mut session = pending(&h, "alice", "192.0.2.1").await;
        h.auth
            .login_totp(&mut session, &at(offset), &client("192.0.2.1"))
            .await
            .unwrap_or_else(|e| panic!("offset {offset}: {e:?}"));
    }
}

#[tokio::test]
async fn a_code_works_once_and_earlier_steps_are_refused_after_it() {
    let h = memory();
    let e = enrolled(&h, "alice").await;
    let params = TotpParams::default();
    let t = now_secs(&h) / 30;
    let later = params.hotp(&e.secret, t + 1).unwrap().to_string();
    let current = params.hotp(&e.secret, t).unwrap().to_string();
    let mut first = pending(&h, "alice", "192.0.2.1").await;
    h.auth
        .login_totp(&mut first, &later, &client("192.0.2.1"))
        .await
        .unwrap();
    for reused in [&later, &current] {
        let mut again = pending(&h, "alice", "192.0.2.1").await;
        let err = h
            .auth
            .login_totp(&mut again, reused, &client("192.0.2.1"))
            .await
            .unwrap_err();
        assert!(matches!(err, AuthError::InvalidCode));
        let last = h.events.last();
        assert_eq!(
            (last.kind, last.reason),
            (AuthEventKind::LoginFailed, Some(FailureReason::CodeReused))
        );
    }
    // The confirmation code's step is spent too.
    let mut again = pending(&h, "alice", "192.0.2.1").await;
    let confirm_step_code = params.hotp(&e.secret, t - 1).unwrap().to_string();
    assert!(
        h.auth
            .login_totp(&mut again, &confirm_step_code, &client("192.0.2.1"))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn an_expired_pending_session_cannot_be_completed() {
    let h = memory();
    let e = enrolled(&h, "alice").await;
    let mut session = pending(&h, "alice", "192.0.2.1").await;
    let timeout = h.auth.sessions().config().mfa_pending_timeout();
    h.clock.advance(timeout + Duration::from_secs(1));
    let err = h
        .auth
        .login_totp(&mut session, &code(&h, &e.secret), &client("192.0.2.1"))
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::NotAuthenticated));
    assert_eq!(h.events.last().reason, Some(FailureReason::MfaExpired));
    assert!(
        h.auth
            .sessions()
            .load(&session.id().encode())
            .await
            .unwrap()
            .is_none()
    );
    // The code was not spent: a fresh login can use it.
    let mut fresh = pending(&h, "alice", "192.0.2.1").await;
    h.auth
        .login_totp(&mut fresh, &code(&h, &e.secret), &client("192.0.2.1"))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_second_step_is_throttled_per_account_and_a_password_does_not_reset_it() {
    let h = memory();
    let e = enrolled(&h, "alice").await;
    for n in 1..=5 {
        let mut session = pending(&h, "alice", &format!("198.51.100.{n}")).await;
        let err = h
            .auth
            .login_totp(&mut session, "000000", &client(&format!("198.51.100.{n}")))
            .await
            .unwrap_err();
        assert!(matches!(err, AuthError::InvalidCode), "attempt {n}");
    }
    // From yet another IP, with the right code, after a right password.
    let mut session = pending(&h, "alice", "203.0.113.9").await;
    let err = h
        .auth
        .login_totp(&mut session, &code(&h, &e.secret), &client("203.0.113.9"))
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::Throttled { .. }), "{err:?}");
    assert_eq!(err.status(), 429);
    assert!(err.retry_after_secs().unwrap() >= 1);
    let last = h.events.last();
    assert_eq!(
        (last.kind, last.factor, last.reason),
        (
            AuthEventKind::Throttled,
            Some(Factor::Totp),
            Some(FailureReason::AccountLocked)
        )
    );
    // Recovery codes share the budget.
    let err = h
        .auth
        .login_recovery(&mut session, e.codes.codes()[0], &client("203.0.113.9"))
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::Throttled { .. }));
    // After the lock, the right code works.
    h.clock.advance(Duration::from_secs(31));
    let mut session = pending(&h, "alice", "203.0.113.9").await;
    h.auth
        .login_totp(&mut session, &code(&h, &e.secret), &client("203.0.113.9"))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_second_step_is_throttled_per_ip_across_accounts() {
    let h = memory();
    // More accounts than the IP's burst (30), each failing its second step
    // once: no account comes near its own lock (5), so only the IP's
    // budget can refuse.
    let names: Vec<String> = (0..40).map(|i| format!("u{i}")).collect();
    for name in &names {
        enrolled(&h, name).await;
    }
    let c = client("198.51.100.77");
    let mut refused_at = None;
    for (attempt, name) in names.iter().enumerate() {
        let mut session = match h.auth.login(name, &pw(), &c, None).await {
            Ok(LoginOutcome::MfaRequired { session, .. }) => session,
            Err(AuthError::Throttled { .. }) => {
                refused_at = Some(attempt);
                break;
            }
            other => panic!("attempt {attempt}: {other:?}"),
        };
        match h.auth.login_totp(&mut session, "000000", &c).await {
            Err(AuthError::Throttled { .. }) => {
                refused_at = Some(attempt);
                break;
            }
            Err(AuthError::InvalidCode) => {}
            other => panic!("attempt {attempt}: {other:?}"),
        }
    }
    // Every attempt counts against the IP, each step of a login too: 15
    // passwords and 15 wrong codes spend the burst of 30, and the next
    // attempt is refused for the IP. (Were the second step not charged to
    // the IP, the refusal would come at the 30th password.)
    assert_eq!(refused_at, Some(15));
    let last = h.events.last();
    assert_eq!(
        (last.kind, last.reason),
        (AuthEventKind::Throttled, Some(FailureReason::IpThrottled))
    );
}

#[tokio::test]
async fn a_pending_session_is_not_a_login_anywhere() {
    let h = memory();
    let e = enrolled(&h, "alice").await;
    let c = client("192.0.2.1");
    let mut session = pending(&h, "alice", "192.0.2.1").await;
    assert!(matches!(
        h.auth.require_login(Some(&session)),
        Err(AuthError::NotAuthenticated)
    ));
    let refused = h.auth.require_mfa(Some(&session));
    assert!(
        matches!(refused, Err(AuthError::NotAuthenticated)),
        "{refused:?}"
    );
    let refused = h.auth.require_recent(&session);
    assert!(
        matches!(refused, Err(AuthError::NotAuthenticated)),
        "{refused:?}"
    );
    assert!(matches!(
        h.auth.current_user(&session).await,
        Err(AuthError::NotAuthenticated)
    ));
    let refused = h.auth.list_sessions(&session).await;
    assert!(
        matches!(refused, Err(AuthError::NotAuthenticated)),
        "{refused:?}"
    );
    let new_password = Password::from("another fine password 42");
    assert!(matches!(
        h.auth
            .change_password(&mut session, &pw(), &new_password, &c)
            .await,
        Err(AuthError::NotAuthenticated)
    ));
    let refused = h.auth.reauthenticate(&mut session, &pw(), &c).await;
    assert!(
        matches!(refused, Err(AuthError::NotAuthenticated)),
        "{refused:?}"
    );
    let refused = h
        .auth
        .reauthenticate_with_code(&mut session, &pw(), &code(&h, &e.secret), &c)
        .await;
    assert!(
        matches!(refused, Err(AuthError::NotAuthenticated)),
        "{refused:?}"
    );
    let refused = h.auth.sign_out_everywhere(&mut session, &c).await;
    assert!(
        matches!(refused, Err(AuthError::NotAuthenticated)),
        "{refused:?}"
    );
    assert!(matches!(
        h.auth
            .begin_totp_enrollment(&mut session, &proof(), &c)
            .await,
        Err(AuthError::NotAuthenticated)
    ));
    let refused = h
        .auth
        .confirm_totp(&mut session, &code(&h, &e.secret), &c)
        .await;
    assert!(
        matches!(refused, Err(AuthError::NotAuthenticated)),
        "{refused:?}"
    );
    assert!(matches!(
        h.auth
            .disable_totp(&mut session, &proof_with(&code(&h, &e.secret)), &c)
            .await,
        Err(AuthError::NotAuthenticated)
    ));
    assert!(matches!(
        h.auth
            .regenerate_recovery_codes(&mut session, &proof_with(e.codes.codes()[0]), &c)
            .await,
        Err(AuthError::NotAuthenticated)
    ));
    h.auth.rotate(&mut session).await.unwrap();
    assert!(matches!(session.auth_state(), AuthState::MfaPending { .. }));
    assert!(session.authenticated_user().is_none());
    // A second factor of an authenticated session is not a pending login.
    let mut full = logged_in_with_totp(&h, &e).await;
    let err = h
        .auth
        .login_totp(&mut full, "000000", &c)
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::NotAuthenticated));
    // And a user without TOTP cannot finish a login with a code.
    h.auth.register("bob", &pw(), &c).await.unwrap();
    let mut anonymous = h.auth.anonymous_session(&c).await.unwrap();
    assert!(
        h.auth
            .login_totp(&mut anonymous, "123456", &c)
            .await
            .is_err()
    );
}

async fn logged_in_with_totp(h: &Harness, e: &Enrolled) -> Session {
    next_step(h);
    let mut session = pending(h, e.user.login(), "192.0.2.1").await;
    h.auth
        .login_totp(&mut session, &code(h, &e.secret), &client("192.0.2.1"))
        .await
        .unwrap();
    session
}

// -------------------------------------------------------- recovery codes

#[tokio::test]
async fn recovery_codes_work_once_each_and_regeneration_replaces_them() {
    let h = memory();
    let e = enrolled(&h, "alice").await;
    let c = client("192.0.2.1");
    let codes = e.codes.codes();
    assert_eq!(codes.len(), 10);
    let mut session = pending(&h, "alice", "192.0.2.1").await;
    // Typed sloppily: lower case, spaces for dashes.
    let sloppy = codes[0].to_lowercase().replace('-', " ");
    h.auth
        .login_recovery(&mut session, &sloppy, &c)
        .await
        .unwrap();
    assert!(
        matches!(session.auth_state(), AuthState::Authenticated { factors, .. } if factors == &vec![Factor::Password, Factor::RecoveryCode])
    );
    assert_eq!(h.events.last().factor, Some(Factor::RecoveryCode));
    assert_eq!(h.auth.recovery_codes_left(&session).await.unwrap(), 9);

    let mut again = pending(&h, "alice", "192.0.2.1").await;
    let err = h
        .auth
        .login_recovery(&mut again, codes[0], &c)
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::InvalidCode));
    h.auth
        .login_recovery(&mut again, codes[1], &c)
        .await
        .unwrap();

    // Regenerating (the password and a code) kills the old set.
    let fresh = h
        .auth
        .regenerate_recovery_codes(&mut again, &proof_with(&code(&h, &e.secret)), &c)
        .await
        .unwrap();
    assert_eq!(h.auth.recovery_codes_left(&again).await.unwrap(), 10);
    assert_eq!(
        h.events.last().kind,
        AuthEventKind::RecoveryCodesRegenerated
    );
    let mut third = pending(&h, "alice", "192.0.2.1").await;
    assert!(
        h.auth
            .login_recovery(&mut third, codes[2], &c)
            .await
            .is_err()
    );
    h.auth
        .login_recovery(&mut third, fresh.codes()[0], &c)
        .await
        .unwrap();
    // A login of long ago is no obstacle: the proof is what counts, here
    // the password and a recovery code of the set it replaces.
    h.clock.advance(Duration::from_secs(11 * 60));
    let mut stale = h
        .auth
        .sessions()
        .load(&third.id().encode())
        .await
        .unwrap()
        .unwrap();
    let newest = h
        .auth
        .regenerate_recovery_codes(&mut stale, &proof_with(fresh.codes()[1]), &c)
        .await
        .unwrap();
    assert_eq!(h.auth.recovery_codes_left(&stale).await.unwrap(), 10);
    // A TOTP code is not a recovery code and vice versa.
    let mut fourth = pending(&h, "alice", "192.0.2.1").await;
    assert!(
        h.auth
            .login_recovery(&mut fourth, &code(&h, &e.secret), &c)
            .await
            .is_err()
    );
    assert!(
        h.auth
            .login_totp(&mut fourth, newest.codes()[1], &c)
            .await
            .is_err()
    );
}

/// New recovery codes need the password and a current code with the
/// request (ASVS 5.0 7.5.1); they end the user's other sessions and give
/// this one a new ID.
#[tokio::test]
async fn new_recovery_codes_need_the_password_and_a_code_and_end_other_sessions() {
    let h = memory();
    let e = enrolled(&h, "alice").await;
    let c = client("192.0.2.1");
    let mut session = logged_in_with_totp(&h, &e).await;
    let other = logged_in_with_totp(&h, &e).await;
    next_step(&h);
    let totp = code(&h, &e.secret);
    // The password alone: a code is required, nothing is checked.
    let events = h.events.all().len();
    let err = h
        .auth
        .regenerate_recovery_codes(&mut session, &proof(), &c)
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::CodeRequired), "{err:?}");
    assert_eq!(err.status(), 403);
    assert_eq!(h.events.all().len(), events, "nothing was attempted");
    // A wrong password: the code is not even looked at (not spent).
    let wrong = FactorProof::password(Password::from("not the password")).with_code(&totp);
    let err = h
        .auth
        .regenerate_recovery_codes(&mut session, &wrong, &c)
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::InvalidCredentials), "{err:?}");
    let last = h.events.last();
    assert_eq!(
        (last.kind, last.reason),
        (
            AuthEventKind::RecoveryCodesRegenerationFailed,
            Some(FailureReason::WrongPassword)
        )
    );
    // A wrong code.
    let err = h
        .auth
        .regenerate_recovery_codes(&mut session, &proof_with("000000"), &c)
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::InvalidCode), "{err:?}");
    assert_eq!(
        h.events.last().kind,
        AuthEventKind::RecoveryCodesRegenerationFailed
    );
    assert_eq!(
        h.accounts.recovery_codes_left(e.user.id()).await.unwrap(),
        10
    );
    assert!(alive(&h, &other).await, "a refused change ends nothing");

    let old_id = session.id().encode();
    let fresh = h
        .auth
        .regenerate_recovery_codes(&mut session, &proof_with(&totp), &c)
        .await
        .unwrap();
    assert_eq!(fresh.len(), 10);
    assert_ne!(session.id().encode(), old_id, "this session gets a new ID");
    assert!(h.auth.sessions().load(&old_id).await.unwrap().is_none());
    assert!(alive(&h, &session).await);
    assert!(!alive(&h, &other).await, "every other session ends");
    h.auth.require_recent(&session).unwrap();
    // The TOTP code of the proof is spent.
    let mut again = pending(&h, "alice", "192.0.2.1").await;
    assert!(h.auth.login_totp(&mut again, &totp, &c).await.is_err());
    // The proof's code of the old set and the old set are void.
    assert!(
        h.auth
            .login_recovery(&mut again, e.codes.codes()[0], &c)
            .await
            .is_err()
    );
    h.auth
        .login_recovery(&mut again, fresh.codes()[0], &c)
        .await
        .unwrap();
}

/// Wrong proofs for a factor change are throttled like a login: wrong
/// passwords lock the account's password budget (the login's too), wrong
/// codes its second-factor budget; while locked, even the right proof is
/// refused with 429.
#[tokio::test]
async fn wrong_factor_proofs_are_throttled_like_a_login() {
    let h = memory();
    let c = client("192.0.2.1");
    h.auth.register("bob", &pw(), &c).await.unwrap();
    let mut session = logged_in(&h, "bob").await;
    let wrong = || FactorProof::password(Password::from("not bob's password"));
    for n in 1..=5 {
        let err = h
            .auth
            .begin_totp_enrollment(&mut session, &wrong(), &client(&format!("198.51.100.{n}")))
            .await
            .unwrap_err();
        assert!(matches!(err, AuthError::InvalidCredentials), "attempt {n}");
    }
    let err = h
        .auth
        .begin_totp_enrollment(&mut session, &proof(), &client("203.0.113.9"))
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::Throttled { .. }), "{err:?}");
    assert_eq!(err.status(), 429);
    assert!(err.retry_after_secs().unwrap() >= 1);
    let last = h.events.last();
    assert_eq!(
        (last.kind, last.factor, last.reason),
        (
            AuthEventKind::Throttled,
            Some(Factor::Password),
            Some(FailureReason::AccountLocked)
        )
    );
    assert!(matches!(
        h.auth
            .login("bob", &pw(), &client("203.0.113.9"), None)
            .await,
        Err(AuthError::Throttled { .. })
    ));

    let e = enrolled(&h, "alice").await;
    let mut session = logged_in_with_totp(&h, &e).await;
    next_step(&h);
    for n in 1..=5 {
        let err = h
            .auth
            .disable_totp(
                &mut session,
                &proof_with("000000"),
                &client(&format!("198.51.100.{n}")),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, AuthError::InvalidCode), "attempt {n}");
    }
    let err = h
        .auth
        .disable_totp(
            &mut session,
            &proof_with(&code(&h, &e.secret)),
            &client("203.0.113.9"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::Throttled { .. }), "{err:?}");
    let last = h.events.last();
    assert_eq!(
        (last.kind, last.factor, last.reason),
        (
            AuthEventKind::Throttled,
            Some(Factor::Totp),
            Some(FailureReason::AccountLocked)
        )
    );
    assert!(h.auth.totp_enabled(&session).await.unwrap());
}

// ---------------------------------------------------------- removal, step-up

#[tokio::test]
async fn disabling_needs_a_valid_code_and_removes_the_factor() {
    let h = memory();
    let e = enrolled(&h, "alice").await;
    let c = client("192.0.2.1");
    let mut session = logged_in_with_totp(&h, &e).await;
    let other = logged_in_with_totp(&h, &e).await;
    let err = h
        .auth
        .disable_totp(&mut session, &proof_with("000000"), &c)
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::InvalidCode));
    assert_eq!(h.events.last().kind, AuthEventKind::TotpDisableFailed);
    assert!(h.auth.totp_enabled(&session).await.unwrap());
    // The password alone is not enough.
    let err = h
        .auth
        .disable_totp(&mut session, &proof(), &c)
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::CodeRequired));
    // Nor a code with a wrong password; the code is not spent.
    let wrong =
        FactorProof::password(Password::from("not the password")).with_code(e.codes.codes()[3]);
    let err = h
        .auth
        .disable_totp(&mut session, &wrong, &c)
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::InvalidCredentials));
    let last = h.events.last();
    assert_eq!(
        (last.kind, last.reason),
        (
            AuthEventKind::TotpDisableFailed,
            Some(FailureReason::WrongPassword)
        )
    );
    assert!(h.auth.totp_enabled(&session).await.unwrap());
    assert_eq!(h.auth.recovery_codes_left(&session).await.unwrap(), 10);
    // A recovery code also proves possession.
    let old_id = session.id().encode();
    h.auth
        .disable_totp(&mut session, &proof_with(e.codes.codes()[3]), &c)
        .await
        .unwrap();
    assert_ne!(session.id().encode(), old_id);
    assert_eq!(h.events.last().kind, AuthEventKind::TotpDisabled);
    assert!(!h.auth.totp_enabled(&session).await.unwrap());
    assert!(h.accounts.totp(e.user.id()).await.unwrap().is_none());
    assert_eq!(
        h.accounts.recovery_codes_left(e.user.id()).await.unwrap(),
        0
    );
    let sessions = h.auth.sessions();
    assert!(sessions.load(&old_id).await.unwrap().is_none());
    assert!(
        sessions.load(&other.id().encode()).await.unwrap().is_none(),
        "every other session of the user ends"
    );
    assert!(
        sessions
            .load(&session.id().encode())
            .await
            .unwrap()
            .is_some()
    );
    // The password alone logs in again; the old factor no longer works.
    let mut plain = logged_in(&h, "alice").await;
    next_step(&h);
    assert!(
        h.auth
            .login_totp(&mut plain, &code(&h, &e.secret), &c)
            .await
            .is_err()
    );
    assert!(matches!(
        h.auth
            .disable_totp(&mut plain, &proof_with(&code(&h, &e.secret)), &c)
            .await,
        Err(AuthError::TotpNotEnabled)
    ));
}

/// Removal takes its proof with the request: a login of long ago with the
/// password and a TOTP code works, no step-up needed; a fresh step-up
/// alone is no proof.
#[tokio::test]
async fn disabling_needs_the_proof_not_a_recent_login() {
    let h = memory();
    let e = enrolled(&h, "alice").await;
    let c = client("192.0.2.1");
    let mut session = logged_in_with_totp(&h, &e).await;
    // The password alone is no step-up for an MFA user...
    assert!(matches!(
        h.auth.reauthenticate(&mut session, &pw(), &c).await,
        Err(AuthError::ReauthenticationRequired)
    ));
    // ...and a recent login, even just stepped up, is no proof.
    next_step(&h);
    h.auth
        .reauthenticate_with_code(&mut session, &pw(), &code(&h, &e.secret), &c)
        .await
        .unwrap();
    h.auth.require_recent(&session).unwrap();
    assert!(matches!(
        h.auth.disable_totp(&mut session, &proof(), &c).await,
        Err(AuthError::CodeRequired)
    ));
    // Long after the login, the proof alone does it.
    h.clock.advance(Duration::from_secs(11 * 60));
    let mut session_later = h
        .auth
        .sessions()
        .load(&session.id().encode())
        .await
        .unwrap()
        .unwrap();
    assert!(h.auth.require_recent(&session_later).is_err());
    h.auth
        .disable_totp(&mut session_later, &proof_with(&code(&h, &e.secret)), &c)
        .await
        .unwrap();
    assert!(!h.auth.totp_enabled(&session_later).await.unwrap());
    h.auth.require_recent(&session_later).unwrap();
}

/// A proof whose password check re-hashes the password (outdated
/// parameters) changes the user's stamp: the acting session takes the new
/// stamp and survives, at enrolment and at removal.
#[tokio::test]
async fn a_proof_that_rehashes_the_password_keeps_this_session() {
    use auth_core::password::{Argon2Params, PasswordHasher, PasswordService};
    let users = Arc::new(MemoryUserStore::new());
    let accounts: Arc<dyn AccountStore> = Arc::new(MemoryAccountStore::new());
    let clock = start_clock();
    let h = build(
        users.clone(),
        accounts.clone(),
        Some(keys_a()),
        clock.clone(),
    );
    let c = client("192.0.2.1");
    let user = h.auth.register("alice", &pw(), &c).await.unwrap();
    let weak_hasher = PasswordHasher::builder()
        .params(Argon2Params {
            m_cost: 64,
            t_cost: 1,
            p_cost: 1,
        })
        .insecure_allow_weak_params()
        .build()
        .unwrap();
    // An instance still configured with the weak parameters, on the same
    // stores, makes the sessions (it has nothing to upgrade at login).
    let old_instance = Auth::builder(users.clone())
        .clock(Arc::new(clock.clone()))
        .sessions(Arc::clone(h.auth.sessions().store()))
        .accounts(accounts.clone())
        .mfa_keys(keys_a())
        .passwords(
            PasswordService::builder()
                .hasher(weak_hasher.clone())
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let old = old_instance.authenticator();
    let weaken = || {
        let weak = weak_hasher.hash(&pw()).unwrap();
        users.force_password_hash(user.id(), weak.clone()).unwrap();
        weak
    };

    let weak = weaken();
    let mut session = match old.login("alice", &pw(), &c, None).await.unwrap() {
        LoginOutcome::LoggedIn(session) => session,
        other => panic!("{other:?}"),
    };
    let enrollment = h
        .auth
        .begin_totp_enrollment(&mut session, &proof(), &c)
        .await
        .unwrap();
    let stored = users
        .find_by_id(&user.id().to_owned())
        .await
        .unwrap()
        .unwrap();
    assert_ne!(
        stored.password_hash.as_str(),
        weak.as_str(),
        "the proof re-hashed"
    );
    assert!(alive(&h, &session).await, "and this session lives on");
    let secret = TotpSecret::from_base32(enrollment.secret_base32()).unwrap();
    h.auth
        .confirm_totp(&mut session, &code(&h, &secret), &c)
        .await
        .unwrap();
    next_step(&h);

    let weak = weaken();
    let mut session = match old.login("alice", &pw(), &c, None).await.unwrap() {
        LoginOutcome::MfaRequired { mut session, .. } => {
            old.login_totp(&mut session, &code(&h, &secret), &c)
                .await
                .unwrap();
            session
        }
        other => panic!("{other:?}"),
    };
    next_step(&h);
    h.auth
        .disable_totp(&mut session, &proof_with(&code(&h, &secret)), &c)
        .await
        .unwrap();
    let stored = users
        .find_by_id(&user.id().to_owned())
        .await
        .unwrap()
        .unwrap();
    assert_ne!(
        stored.password_hash.as_str(),
        weak.as_str(),
        "the proof re-hashed"
    );
    assert!(alive(&h, &session).await, "and this session lives on");
}

// ------------------------------------------------------- encryption at rest

#[test]
fn a_record_sealed_for_one_user_does_not_open_for_another() {
    let keys = keys_a();
    let secret = TotpSecret::generate().unwrap();
    let sealed = keys.seal("user-1", &secret).unwrap();
    assert!(sealed.starts_with("v1.a."));
    assert_eq!(
        keys.open("user-1", &sealed).unwrap().expose_bytes(),
        secret.expose_bytes()
    );
    assert!(matches!(
        keys.open("user-2", &sealed),
        Err(MfaError::Decrypt)
    ));
    let wrong_key = MfaKeys::from_base64("a", KEY_B).unwrap();
    assert!(matches!(
        wrong_key.open("user-1", &sealed),
        Err(MfaError::Decrypt)
    ));
    assert!(!format!("{keys:?}").contains(KEY_A));
}

#[tokio::test]
async fn a_secret_copied_onto_another_user_is_useless() {
    let h = memory();
    let alice = enrolled(&h, "alice").await;
    let c = client("192.0.2.1");
    let bob = h.auth.register("bob", &pw(), &c).await.unwrap();
    let stolen = h.accounts.totp(alice.user.id()).await.unwrap().unwrap();
    assert!(
        h.accounts
            .set_pending_totp(bob.id(), &stolen.sealed_secret)
            .await
            .unwrap()
    );
    // Not begun in bob's session: refused before anything is opened.
    let mut session = logged_in(&h, "bob").await;
    let err = h
        .auth
        .confirm_totp(&mut session, &code(&h, &alice.secret), &c)
        .await
        .unwrap_err();
    assert_eq!(err.status(), 409, "{err:?}");
    assert!(
        h.accounts
            .second_factors(bob.id())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(!h.accounts.totp(bob.id()).await.unwrap().unwrap().confirmed);
    // Confirmed by a write to the store itself, it does not open for bob
    // (the user is bound in as associated data): his login fails closed.
    assert!(
        h.accounts
            .confirm_totp(bob.id(), &stolen.sealed_secret, 0, &[])
            .await
            .unwrap()
    );
    let mut session = pending(&h, "bob", "192.0.2.1").await;
    let err = h
        .auth
        .login_totp(&mut session, &code(&h, &alice.secret), &c)
        .await
        .unwrap_err();
    assert_eq!(err.status(), 500, "{err:?}");
}

#[test]
fn keys_rotate_old_records_still_open() {
    let old = MfaKeys::from_base64("2025", KEY_A).unwrap();
    let secret = TotpSecret::generate().unwrap();
    let sealed = old.seal("7", &secret).unwrap();
    let rotated = MfaKeys::from_base64("2026", KEY_B)
        .unwrap()
        .with_previous_base64("2025", KEY_A)
        .unwrap();
    assert_eq!(rotated.current_kid(), "2026");
    assert!(rotated.is_stale(&sealed));
    assert_eq!(
        rotated.open("7", &sealed).unwrap().expose_bytes(),
        secret.expose_bytes()
    );
    let resealed = rotated.seal("7", &secret).unwrap();
    assert!(resealed.starts_with("v1.2026.") && !rotated.is_stale(&resealed));
    // Without the old key the old record cannot be read.
    let only_new = MfaKeys::from_base64("2026", KEY_B).unwrap();
    assert!(matches!(
        only_new.open("7", &sealed),
        Err(MfaError::UnknownKeyId)
    ));
    // rotate_to keeps the old ring for decryption.
    let ring = MfaKeys::from_base64("2025", KEY_A)
        .unwrap()
        .rotate_to(MfaKeys::from_base64("2026", KEY_B).unwrap())
        .unwrap();
    assert_eq!(
        ring.open("7", &sealed).unwrap().expose_bytes(),
        secret.expose_bytes()
    );
    // generate() makes a usable, exportable key.
    let generated = MfaKeys::generate("g").unwrap();
    let exported = secrecy::ExposeSecret::expose_secret(&generated.current_key_base64()).to_owned();
    let imported = MfaKeys::from_base64("g", &exported).unwrap();
    let sealed = generated.seal("7", &secret).unwrap();
    assert_eq!(
        imported.open("7", &sealed).unwrap().expose_bytes(),
        secret.expose_bytes()
    );
}

/// A harness with MFA key "2025" (KEY_A) and `alice` enrolled under it,
/// and one on the same stores with the ring rotated to "2026" (KEY_B;
/// "2025" kept for reading): before, enrolled, after, and the user store.
async fn enrolled_before_a_rotation(
    accounts: Arc<dyn AccountStore>,
) -> (Harness, Enrolled, Harness, Arc<MemoryUserStore>) {
    let users = Arc::new(MemoryUserStore::new());
    let clock = start_clock();
    let before = build(
        users.clone(),
        accounts.clone(),
        Some(MfaKeys::from_base64("2025", KEY_A).unwrap()),
        clock.clone(),
    );
    let alice = enrolled(&before, "alice").await;
    let rotated = MfaKeys::from_base64("2026", KEY_B)
        .unwrap()
        .with_previous_base64("2025", KEY_A)
        .unwrap();
    let after = build(users.clone(), accounts, Some(rotated), clock);
    (before, alice, after, users)
}

#[tokio::test]
async fn logins_keep_working_across_a_key_rotation() {
    let (_, e, after, _) = enrolled_before_a_rotation(Arc::new(MemoryAccountStore::new())).await;
    let mut session = pending(&after, "alice", "192.0.2.1").await;
    after
        .auth
        .login_totp(&mut session, &code(&after, &e.secret), &client("192.0.2.1"))
        .await
        .unwrap();
    // A server that lost the old key: see
    // `secrets_move_to_the_new_key_so_the_old_one_can_go`.
}

#[tokio::test]
async fn no_code_or_secret_in_events_or_errors() {
    let h = memory();
    let e = enrolled(&h, "alice").await;
    let c = client("192.0.2.1");
    let totp = code(&h, &e.secret);
    let mut session = pending(&h, "alice", "192.0.2.1").await;
    let err = h
        .auth
        .login_recovery(&mut session, "AAAA-BBBB-CCCC-DDDD", &c)
        .await
        .unwrap_err();
    h.auth.login_totp(&mut session, &totp, &c).await.unwrap();
    let printed = format!(
        "{:?} {err:?} {err} {:?} {:?}",
        h.events.all(),
        e.codes,
        e.user
    );
    assert!(!printed.contains(&totp));
    assert!(!printed.contains(&e.secret_base32));
    assert!(!printed.contains("AAAA-BBBB"));
    for code in e.codes.codes() {
        assert!(!printed.contains(code));
    }
    let stored = h.accounts.totp(e.user.id()).await.unwrap().unwrap();
    assert!(!format!("{stored:?}").contains(&stored.sealed_secret));
}

// ------------------------------------------------- atomic single use, stores

/// 8 tasks (as many logins as the memory session store keeps waiting for
/// one user's second factor) submit one code at once, each from its own
/// pending session: exactly one logs in.
async fn concurrent_double_submit(h: Harness) {
    let h = Arc::new(h);
    let e = enrolled(&h, &unique("race")).await;
    let totp = code(&h, &e.secret);
    let mut sessions = Vec::new();
    for n in 0..auth_core::session::MemoryStore::PENDING_PER_USER {
        sessions.push(pending(&h, e.user.login(), &format!("198.51.100.{}", n + 1)).await);
    }
    let mut tasks = Vec::new();
    for (n, mut session) in sessions.into_iter().enumerate() {
        let h = h.clone();
        let totp = totp.clone();
        tasks.push(tokio::spawn(async move {
            h.auth
                .login_totp(
                    &mut session,
                    &totp,
                    &client(&format!("198.51.100.{}", n + 1)),
                )
                .await
        }));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => ok += 1,
            Err(AuthError::InvalidCode | AuthError::Throttled { .. }) => {}
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(ok, 1, "exactly one of the concurrent submissions succeeds");

    // The account store's primitives themselves, hammered directly.
    let id = e.user.id();
    let step = h
        .accounts
        .totp(id)
        .await
        .unwrap()
        .unwrap()
        .last_step
        .unwrap()
        + 5;
    let hash = auth_core::mfa::hash_recovery_code(id, e.codes.codes()[0]).unwrap();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let accounts = h.accounts.clone();
        let (id, hash) = (id.to_owned(), hash.clone());
        tasks.push(tokio::spawn(async move {
            (
                accounts.record_totp_step(&id, step).await.unwrap(),
                accounts.consume_recovery_code(&id, &hash).await.unwrap(),
            )
        }));
    }
    let (mut steps, mut consumed) = (0, 0);
    for task in tasks {
        let (s, c) = task.await.unwrap();
        steps += usize::from(s);
        consumed += usize::from(c);
    }
    assert_eq!((steps, consumed), (1, 1));
    assert!(!h.accounts.record_totp_step(id, step - 1).await.unwrap());
    assert!(h.accounts.record_totp_step(id, step + 1).await.unwrap());
    assert_eq!(h.accounts.recovery_codes_left(id).await.unwrap(), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_double_submit_memory() {
    concurrent_double_submit(memory()).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_double_submit_sqlite() {
    let dir = std::env::temp_dir().join(unique("auth-core-mfa"));
    let (users, accounts) = sqlite_stores(&dir).await;
    concurrent_double_submit(build(users, accounts, Some(keys_a()), start_clock())).await;
    let _ = std::fs::remove_dir_all(dir);
}

/// The ready user store and the account store on one PostgreSQL pool.
#[cfg(feature = "postgres")]
async fn postgres_stores() -> Option<(auth_core::user::PostgresUserStore, Arc<dyn AccountStore>)> {
    let url = crate::common::service_url("AUTH_TEST_POSTGRES_URL")?;
    let sessions = auth_core::session::PostgresStore::connect(&url)
        .await
        .unwrap();
    let pool = sessions.pool().clone();
    let users = auth_core::user::PostgresUserStore::from_pool(pool.clone())
        .await
        .unwrap();
    let accounts = auth_core::account::PostgresAccountStore::from_pool(pool)
        .await
        .unwrap();
    Some((users, Arc::new(accounts)))
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_double_submit_postgres() {
    if let Some((users, accounts)) = postgres_stores().await {
        concurrent_double_submit(build(users, accounts, Some(keys_a()), start_clock())).await;
    }
}

/// The store suite for the MFA methods of the account store.
async fn store_round_trip<S: UserStore>(users: S, accounts: Arc<dyn AccountStore>) {
    let h = build(users, accounts.clone(), Some(keys_a()), start_clock());
    let e = enrolled(&h, &unique("store")).await;
    let id = e.user.id();
    let stored = accounts.totp(id).await.unwrap().unwrap();
    assert!(stored.confirmed);
    assert!(stored.last_step.is_some());
    assert_eq!(
        accounts.second_factors(id).await.unwrap(),
        vec![Factor::Totp]
    );
    // A confirmed secret cannot be replaced by a pending one.
    assert!(!accounts.set_pending_totp(id, "v1.a.AAAA").await.unwrap());
    assert_eq!(accounts.totp(id).await.unwrap().unwrap(), stored);
    assert_eq!(accounts.recovery_codes_left(id).await.unwrap(), 10);
    accounts
        .replace_recovery_codes(id, &["h1".into(), "h2".into()])
        .await
        .unwrap();
    assert_eq!(accounts.recovery_codes_left(id).await.unwrap(), 2);
    assert!(accounts.consume_recovery_code(id, "h1").await.unwrap());
    assert!(!accounts.consume_recovery_code(id, "h1").await.unwrap());
    assert!(
        !accounts
            .consume_recovery_code("someone-else", "h2")
            .await
            .unwrap()
    );
    accounts.remove_totp(id).await.unwrap();
    assert!(accounts.totp(id).await.unwrap().is_none());
    // The codes stay with the store (the flow clears them with the last
    // factor).
    assert_eq!(accounts.recovery_codes_left(id).await.unwrap(), 1);
    assert!(accounts.second_factors(id).await.unwrap().is_empty());
    assert!(
        !accounts.record_totp_step(id, i64::MAX).await.unwrap(),
        "no step without a confirmed secret"
    );
    // A pending secret does not accept steps either and a stale
    // confirmation (another secret) is refused.
    assert!(accounts.set_pending_totp(id, "v1.a.first").await.unwrap());
    assert!(accounts.set_pending_totp(id, "v1.a.second").await.unwrap());
    assert!(!accounts.record_totp_step(id, 1).await.unwrap());
    assert!(accounts.second_factors(id).await.unwrap().is_empty());
    assert!(
        !accounts
            .confirm_totp(id, "v1.a.first", 1, &[])
            .await
            .unwrap()
    );
    assert!(
        accounts
            .confirm_totp(id, "v1.a.second", 1, &["x".into()])
            .await
            .unwrap()
    );
    assert!(
        !accounts
            .confirm_totp(id, "v1.a.second", 1, &[])
            .await
            .unwrap()
    );
    assert_eq!(
        accounts.second_factors(id).await.unwrap(),
        vec![Factor::Totp]
    );
}

#[tokio::test]
async fn store_round_trip_memory() {
    store_round_trip(MemoryUserStore::new(), Arc::new(MemoryAccountStore::new())).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn store_round_trip_sqlite() {
    let dir = std::env::temp_dir().join(unique("auth-core-mfa"));
    let (users, accounts) = sqlite_stores(&dir).await;
    store_round_trip(users, accounts).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn store_round_trip_postgres() {
    if let Some((users, accounts)) = postgres_stores().await {
        store_round_trip(users, accounts).await;
    }
}

#[cfg(feature = "sqlite")]
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn secrets_and_recovery_codes_are_not_readable_in_the_sqlite_file() {
    let dir = std::env::temp_dir().join(unique("auth-core-mfa-file"));
    // The user table and the account tables, in one file.
    let (users, accounts) = sqlite_stores(&dir).await;
    let h = build(users, accounts, Some(keys_a()), start_clock());
    let e = enrolled(&h, "alice").await;
    // Also a pending secret of a second user.
    let c = client("192.0.2.1");
    h.auth.register("bob", &pw(), &c).await.unwrap();
    let mut bob = logged_in(&h, "bob").await;
    let pending = h
        .auth
        .begin_totp_enrollment(&mut bob, &proof(), &c)
        .await
        .unwrap();
    let pending_secret = TotpSecret::from_base32(pending.secret_base32()).unwrap();

    let mut bytes = Vec::new();
    for name in ["users.db", "users.db-wal"] {
        if let Ok(file) = std::fs::read(dir.join(name)) {
            bytes.extend(file);
        }
    }
    assert!(contains(&bytes, b"alice"), "the test reads the right files");
    assert!(contains(&bytes, b"v1.a."), "the sealed form is stored");
    for code in e.codes.codes() {
        let hash = auth_core::mfa::hash_recovery_code(e.user.id(), code).unwrap();
        assert!(
            contains(&bytes, hash.as_bytes()),
            "the recovery codes' table is in the files read"
        );
    }
    for (base32, raw) in [
        (e.secret_base32.as_str(), e.secret.expose_bytes()),
        (pending.secret_base32(), pending_secret.expose_bytes()),
    ] {
        assert!(!contains(&bytes, base32.as_bytes()));
        assert!(!contains(&bytes, base32.to_lowercase().as_bytes()));
        assert!(!contains(&bytes, raw));
    }
    for code in e.codes.codes() {
        assert!(!contains(&bytes, code.as_bytes()));
        assert!(!contains(&bytes, code.replace('-', "").as_bytes()));
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[cfg(feature = "sqlite")]
async fn migration_version(pool: &sqlx::SqlitePool, component: &str) -> i64 {
    sqlx::query_scalar("SELECT version FROM auth_schema_migrations WHERE component = ?1")
        .bind(component)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[cfg(feature = "sqlite")]
async fn bare_sqlite_pool(dir: &std::path::Path) -> sqlx::SqlitePool {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    use std::str::FromStr;
    std::fs::create_dir_all(dir).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.join("users.db").display());
    SqlitePoolOptions::new()
        .connect_with(SqliteConnectOptions::from_str(&url).unwrap())
        .await
        .unwrap()
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn a_version_1_sqlite_user_table_is_migrated() {
    use auth_core::account::SqliteAccountStore;
    use auth_core::user::SqliteUserStore;
    let dir = std::env::temp_dir().join(unique("auth-core-mfa-migrate"));
    let pool = bare_sqlite_pool(&dir).await;
    for statement in [
        "CREATE TABLE auth_users (id TEXT PRIMARY KEY NOT NULL, login TEXT NOT NULL UNIQUE,
            display_name TEXT NOT NULL, password_hash TEXT NOT NULL, security_stamp TEXT NOT NULL,
            disabled BOOLEAN NOT NULL DEFAULT FALSE, second_factors TEXT NOT NULL DEFAULT '[]')",
        "CREATE TABLE auth_schema_migrations (component TEXT PRIMARY KEY NOT NULL, version INTEGER NOT NULL)",
        "INSERT INTO auth_schema_migrations VALUES ('users', 1)",
        "INSERT INTO auth_users (id, login, display_name, password_hash, security_stamp)
            VALUES ('old', 'old', 'Old', '$argon2id$x', 's')",
    ] {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    let users = SqliteUserStore::from_pool(pool.clone()).await.unwrap();
    let old = users.find_by_id(&"old".to_owned()).await.unwrap().unwrap();
    assert_eq!(
        (old.login.as_str(), old.display_name.as_str(), old.disabled),
        ("old", "Old", false)
    );
    assert_eq!(old.password_hash.as_str(), "$argon2id$x");
    assert_eq!(migration_version(&pool, "users").await, 3);
    let accounts = SqliteAccountStore::from_pool(pool.clone()).await.unwrap();
    assert_eq!(migration_version(&pool, "accounts").await, 3);
    assert!(accounts.totp("old").await.unwrap().is_none());
    assert!(accounts.set_pending_totp("old", "v1.a.x").await.unwrap());
    // Opening again is a no-op.
    SqliteUserStore::from_pool(pool.clone()).await.unwrap();
    let accounts = SqliteAccountStore::from_pool(pool.clone()).await.unwrap();
    assert_eq!(
        accounts.totp("old").await.unwrap().unwrap().sealed_secret,
        "v1.a.x"
    );
    assert_eq!(migration_version(&pool, "users").await, 3);
    assert_eq!(migration_version(&pool, "accounts").await, 3);
    let _ = std::fs::remove_dir_all(dir);
}

/// A user who had TOTP in the version-2 user table (TOTP columns on
/// `auth_users`) still needs it after the move into the account tables:
/// the migration never turns a second factor off.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn a_version_2_sqlite_user_table_keeps_its_second_factors() {
    use auth_core::account::SqliteAccountStore;
    use auth_core::password::PasswordHasher;
    use auth_core::user::SqliteUserStore;
    let dir = std::env::temp_dir().join(unique("auth-core-mfa-migrate"));
    let pool = bare_sqlite_pool(&dir).await;
    let keys = keys_a();
    let secret = TotpSecret::generate().unwrap();
    let hash = PasswordHasher::default().hash(&pw()).unwrap();
    let codes = RecoveryCodes::generate("old").unwrap();
    for statement in [
        "CREATE TABLE auth_users (id TEXT PRIMARY KEY NOT NULL, login TEXT NOT NULL UNIQUE,
            display_name TEXT NOT NULL, password_hash TEXT NOT NULL, security_stamp TEXT NOT NULL,
            disabled BOOLEAN NOT NULL DEFAULT FALSE, second_factors TEXT NOT NULL DEFAULT '[]',
            totp_secret TEXT, totp_confirmed BOOLEAN NOT NULL DEFAULT FALSE,
            totp_last_step INTEGER)",
        "CREATE TABLE auth_recovery_codes (user_id TEXT NOT NULL, code_hash TEXT NOT NULL,
            PRIMARY KEY (user_id, code_hash))",
        "CREATE TABLE auth_schema_migrations (component TEXT PRIMARY KEY NOT NULL, version INTEGER NOT NULL)",
        "INSERT INTO auth_schema_migrations VALUES ('users', 2)",
    ] {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    sqlx::query(
        "INSERT INTO auth_users (id, login, display_name, password_hash, security_stamp,
            second_factors, totp_secret, totp_confirmed, totp_last_step)
         VALUES ('old', 'old', 'Old', ?1, 's', '[\"totp\"]', ?2, TRUE, 7),
                ('half', 'half', 'Half', ?1, 's', '[]', 'v1.a.pending', FALSE, NULL)",
    )
    .bind(hash.as_str())
    .bind(keys.seal("old", &secret).unwrap())
    .execute(&pool)
    .await
    .unwrap();
    for code_hash in codes.hashes() {
        sqlx::query("INSERT INTO auth_recovery_codes (user_id, code_hash) VALUES ('old', ?1)")
            .bind(code_hash)
            .execute(&pool)
            .await
            .unwrap();
    }

    let users = SqliteUserStore::from_pool(pool.clone()).await.unwrap();
    let accounts: Arc<dyn AccountStore> =
        Arc::new(SqliteAccountStore::from_pool(pool.clone()).await.unwrap());
    assert_eq!(migration_version(&pool, "users").await, 3);
    let moved = accounts.totp("old").await.unwrap().unwrap();
    assert!(moved.confirmed);
    assert_eq!(moved.last_step, Some(7));
    assert_eq!(
        accounts.second_factors("old").await.unwrap(),
        vec![Factor::Totp]
    );
    assert_eq!(accounts.recovery_codes_left("old").await.unwrap(), 10);
    let half = accounts.totp("half").await.unwrap().unwrap();
    assert!(!half.confirmed, "a pending enrolment stays pending");
    assert!(accounts.second_factors("half").await.unwrap().is_empty());

    // The password alone no longer logs the migrated user in; the TOTP
    // secret and the recovery codes still complete the login.
    let h = build(users, accounts, Some(keys), start_clock());
    let mut session = pending(&h, "old", "192.0.2.1").await;
    h.auth
        .login_totp(&mut session, &code(&h, &secret), &client("192.0.2.1"))
        .await
        .unwrap();
    let mut session = pending(&h, "old", "192.0.2.1").await;
    h.auth
        .login_recovery(&mut session, codes.codes()[0], &client("192.0.2.1"))
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

/// A visitor's form token (from a page shown before the login) does not
/// act for a login waiting for its second factor either: on a shared
/// browser, the form of whoever came before is not the next user's.
#[tokio::test]
async fn a_visitor_token_does_not_act_for_a_pending_login() {
    let clock = start_clock();
    let accounts: Arc<dyn AccountStore> = Arc::new(MemoryAccountStore::new());
    let auth = Auth::builder(MemoryUserStore::new())
        .clock(Arc::new(clock.clone()))
        .accounts(Arc::clone(&accounts))
        .mfa_keys(keys_a())
        .form_tokens(auth_core::csrf::CsrfTokens::new(vec![7u8; 32]).unwrap())
        .build()
        .unwrap();
    let h = Harness {
        auth: auth.authenticator().clone(),
        accounts,
        clock,
        events: Arc::new(Recorder::default()),
    };
    let peer = Some("192.0.2.1".parse().unwrap());
    let host = ("host", "example.test");
    let page = auth.begin("GET", [host], peer).unwrap();
    let token = page.form_token().await.unwrap().unwrap();
    let visitor = page.finish().await.visitor_cookie.unwrap();
    let visitor = visitor.split(';').next().unwrap().to_owned();

    enrolled(&h, "alice").await;
    let session = pending(&h, "alice", "192.0.2.1").await;
    let cookie = h.auth.session_cookie(&session);
    let both = format!("{}; {visitor}", cookie.split(';').next().unwrap());
    let waiting = auth
        .begin("POST", [host, ("cookie", both.as_str())], peer)
        .unwrap();
    assert!(matches!(
        waiting.verify_form_token(Some(&token)).await,
        Err(AuthError::CsrfToken)
    ));
    // The pending session's own form token works.
    let own = waiting.form_token().await.unwrap().unwrap();
    waiting.verify_form_token(Some(&own)).await.unwrap();
}

/// A device earns throttle standing only from a complete sign-in: the
/// password alone (the second factor still due) leaves it unknown, so
/// whoever phished the password cannot take the account's device slots;
/// once the code is given, the device passes a lock others put on the
/// account.
#[tokio::test]
async fn a_device_is_known_only_after_the_second_factor() {
    let h = memory();
    let alice = enrolled(&h, "alice").await;
    let mut phone = client("192.0.2.7");
    phone.device = Some(auth_core::session::SessionId::generate().unwrap());
    let lock = || common::lock_password(&h.auth, "alice");
    let LoginOutcome::MfaRequired { .. } =
        h.auth.login("alice", &pw(), &phone, None).await.unwrap()
    else {
        panic!("a second factor is due")
    };
    lock().await;
    let err = h
        .auth
        .login("alice", &pw(), &phone, None)
        .await
        .unwrap_err();
    assert_eq!(err.status(), 429, "no standing from the password alone");

    h.auth.unlock_account(alice.user.id()).await.unwrap();
    let LoginOutcome::MfaRequired { mut session, .. } =
        h.auth.login("alice", &pw(), &phone, None).await.unwrap()
    else {
        panic!("a second factor is due")
    };
    h.auth
        .login_totp(&mut session, &code(&h, &alice.secret), &phone)
        .await
        .unwrap();
    lock().await;
    assert!(matches!(
        h.auth.login("alice", &pw(), &phone, None).await.unwrap(),
        LoginOutcome::MfaRequired { .. }
    ));
}

/// After a key rotation, a login with a code moves the user's secret to
/// the new key, and `reseal_totp_secret` moves those of users not seen
/// since: then the old key can leave the ring (a leaked key need not stay
/// in service). Until then, a server without it fails closed.
#[tokio::test]
async fn secrets_move_to_the_new_key_so_the_old_one_can_go() {
    let accounts: Arc<dyn AccountStore> = Arc::new(MemoryAccountStore::new());
    let (before, alice, after, users) = enrolled_before_a_rotation(accounts.clone()).await;
    let bob = enrolled(&before, "bob").await;
    let kid = |user: &AnyUser| {
        let accounts = accounts.clone();
        let id = user.id().to_owned();
        async move {
            let stored = accounts.totp(&id).await.unwrap().unwrap();
            stored.sealed_secret.split('.').nth(1).unwrap().to_owned()
        }
    };
    assert_eq!(kid(&alice.user).await, "2025");
    let c = client("192.0.2.1");
    let mut session = pending(&after, "alice", "192.0.2.1").await;
    after
        .auth
        .login_totp(&mut session, &code(&after, &alice.secret), &c)
        .await
        .unwrap();
    assert_eq!(kid(&alice.user).await, "2026", "moved by the login");
    assert_eq!(kid(&bob.user).await, "2025", "not seen yet");

    let only_new = build(
        users,
        accounts.clone(),
        Some(MfaKeys::from_base64("2026", KEY_B).unwrap()),
        before.clock.clone(),
    );
    next_step(&only_new);
    let mut session = pending(&only_new, "bob", "192.0.2.1").await;
    let err = only_new
        .auth
        .login_totp(&mut session, &code(&only_new, &bob.secret), &c)
        .await
        .unwrap_err();
    assert_eq!(err.status(), 500, "fails closed without the old key");
    assert!(!format!("{err:?} {err}").contains(&bob.secret_base32));

    assert!(after.auth.reseal_totp_secret(bob.user.id()).await.unwrap());
    assert!(!after.auth.reseal_totp_secret(bob.user.id()).await.unwrap());
    assert!(
        !after
            .auth
            .reseal_totp_secret(alice.user.id())
            .await
            .unwrap()
    );
    assert_eq!(kid(&bob.user).await, "2026");
    for (name, user) in [("alice", &alice), ("bob", &bob)] {
        next_step(&only_new);
        let mut session = pending(&only_new, name, "192.0.2.1").await;
        only_new
            .auth
            .login_totp(&mut session, &code(&only_new, &user.secret), &c)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    }
}

/// A TOTP enrolment is confirmed only in the session that began it, and
/// within 15 minutes: a secret left on a shared screen is no way in from
/// another session of the user, nor later.
#[tokio::test]
async fn an_enrolment_is_confirmed_only_where_and_soon_after_it_began() {
    let h = memory();
    let c = client("192.0.2.1");
    h.auth.register("alice", &pw(), &c).await.unwrap();
    let mut here = logged_in(&h, "alice").await;
    let mut elsewhere = logged_in(&h, "alice").await;
    let enrollment = h
        .auth
        .begin_totp_enrollment(&mut here, &proof(), &c)
        .await
        .unwrap();
    let secret = TotpSecret::from_base32(enrollment.secret_base32()).unwrap();
    let err = h
        .auth
        .confirm_totp(&mut elsewhere, &code(&h, &secret), &c)
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::TotpNotEnabled), "{err:?}");
    // Past the deadline, not here either.
    h.clock
        .advance(auth_core::flow::TOTP_ENROLMENT_TIMEOUT + Duration::from_secs(1));
    let err = h
        .auth
        .confirm_totp(&mut here, &code(&h, &secret), &c)
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::TotpNotEnabled), "{err:?}");
    assert!(h.accounts.second_factors("1").await.unwrap().is_empty());
    // Begun again (a new secret), it is confirmed in time, here.
    let enrollment = h
        .auth
        .begin_totp_enrollment(&mut here, &proof(), &c)
        .await
        .unwrap();
    let secret = TotpSecret::from_base32(enrollment.secret_base32()).unwrap();
    h.auth
        .confirm_totp(&mut here, &code(&h, &secret), &c)
        .await
        .unwrap();
}

/// `unlock_account` lifts the second factor's lock too (an administrator):
/// wrong codes from many addresses lock the code step, even for the right
/// code; after the unlock the right code is accepted.
#[tokio::test]
async fn unlock_account_lifts_the_second_factors_lock() {
    let h = memory();
    let alice = enrolled(&h, "alice").await;
    let mut session = pending(&h, "alice", "192.0.2.1").await;
    let mut locked = false;
    for n in 1..=12 {
        match h
            .auth
            .login_totp(&mut session, "000000", &client(&format!("198.51.100.{n}")))
            .await
        {
            Err(AuthError::Throttled { .. }) => {
                locked = true;
                break;
            }
            Err(AuthError::InvalidCode) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(locked, "wrong codes lock the second step");
    let err = h
        .auth
        .login_totp(
            &mut session,
            &code(&h, &alice.secret),
            &client("203.0.113.9"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::Throttled { .. }), "{err:?}");
    h.auth.unlock_account(alice.user.id()).await.unwrap();
    h.auth
        .login_totp(
            &mut session,
            &code(&h, &alice.secret),
            &client("203.0.113.9"),
        )
        .await
        .expect("unlocked");
}

/// An account store written before `reseal_totp` (the trait's default).
#[derive(Debug, Default)]
struct NoReseal(MemoryAccountStore);

#[async_trait::async_trait]
impl AccountStore for NoReseal {
    async fn totp(
        &self,
        user: &str,
    ) -> Result<Option<auth_core::account::StoredTotp>, auth_core::user::UserStoreError> {
        self.0.totp(user).await
    }
    async fn set_pending_totp(
        &self,
        user: &str,
        sealed: &str,
    ) -> Result<bool, auth_core::user::UserStoreError> {
        self.0.set_pending_totp(user, sealed).await
    }
    async fn confirm_totp(
        &self,
        user: &str,
        sealed: &str,
        step: i64,
        hashes: &[String],
    ) -> Result<bool, auth_core::user::UserStoreError> {
        self.0.confirm_totp(user, sealed, step, hashes).await
    }
    async fn record_totp_step(
        &self,
        user: &str,
        step: i64,
    ) -> Result<bool, auth_core::user::UserStoreError> {
        self.0.record_totp_step(user, step).await
    }
    async fn remove_totp(&self, user: &str) -> Result<(), auth_core::user::UserStoreError> {
        self.0.remove_totp(user).await
    }
    async fn replace_recovery_codes(
        &self,
        user: &str,
        hashes: &[String],
    ) -> Result<(), auth_core::user::UserStoreError> {
        self.0.replace_recovery_codes(user, hashes).await
    }
    async fn consume_recovery_code(
        &self,
        user: &str,
        hash: &str,
    ) -> Result<bool, auth_core::user::UserStoreError> {
        self.0.consume_recovery_code(user, hash).await
    }
    async fn recovery_codes_left(
        &self,
        user: &str,
    ) -> Result<u64, auth_core::user::UserStoreError> {
        self.0.recovery_codes_left(user).await
    }
    async fn epoch(&self, user: &str) -> Result<u64, auth_core::user::UserStoreError> {
        self.0.epoch(user).await
    }
    async fn raise_epoch(&self, user: &str) -> Result<u64, auth_core::user::UserStoreError> {
        self.0.raise_epoch(user).await
    }
}

/// On an account store that cannot re-seal, a login with a code still
/// works (the secret stays under its key, logged), and
/// `reseal_totp_secret` answers an error: a run over every user without
/// one really leaves no secret under the old key.
#[tokio::test]
async fn a_store_that_cannot_reseal_says_so() {
    let accounts: Arc<dyn AccountStore> = Arc::new(NoReseal::default());
    let (_, alice, after, _) = enrolled_before_a_rotation(accounts.clone()).await;
    let mut session = pending(&after, "alice", "192.0.2.1").await;
    after
        .auth
        .login_totp(
            &mut session,
            &code(&after, &alice.secret),
            &client("192.0.2.1"),
        )
        .await
        .unwrap();
    let stored = accounts.totp(alice.user.id()).await.unwrap().unwrap();
    assert!(stored.sealed_secret.starts_with("v1.2025."));
    assert!(
        after
            .auth
            .reseal_totp_secret(alice.user.id())
            .await
            .is_err()
    );
}
