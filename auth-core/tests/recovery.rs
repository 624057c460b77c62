//! Account recovery through a real SMTP server on 127.0.0.1 (the
//! `auth-smtp-sink` crate), never a mock of the mailer: email verification,
//! password reset, their bindings, single use under concurrency, and that
//! no token reaches a log line (its own binary, with a global subscriber).

#![cfg(feature = "smtp")]

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use auth_core::account::{AccountStore, MemoryAccountStore};
use auth_core::clock::ManualClock;
use auth_core::event::{AuthEvent, AuthEventHook, AuthEventKind};
use auth_core::flow::{AuthError, Authenticator, Client, FactorProof, LoginOutcome, MailLinks};
use auth_core::mail::SmtpMailer;
use auth_core::password::{Password, PasswordHasher, PasswordService};
use auth_core::session::{AuthState, Factor, NewSession, Session};
use auth_core::user::{AuthUser, LoginName, MemoryUserStore, UserStore};
use auth_core::{Auth, MemoryTokenStore};
use auth_smtp_sink::SmtpSink;
use tracing_subscriber::fmt::MakeWriter;

mod common;

const PASSWORD: &str = "correct horse battery staple";
const NEW_PASSWORD: &str = "a brand new passphrase 2026";

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Every log line of this binary.
fn logs() -> &'static Buffer {
    static LOGS: std::sync::OnceLock<Buffer> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(buffer.clone())
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        buffer
    })
}

struct Harness {
    auth: Authenticator,
    users: Arc<MemoryUserStore>,
    accounts: Arc<MemoryAccountStore>,
    clock: ManualClock,
    sink: SmtpSink,
}

fn harness() -> Harness {
    harness_with(None)
}

/// Hands over the kinds of the audit events, as they happen.
#[derive(Debug)]
struct Events(tokio::sync::mpsc::UnboundedSender<AuthEventKind>);

impl AuthEventHook for Events {
    fn on_event(&self, event: &AuthEvent) {
        let _ = self.0.send(event.kind);
    }
}

/// Waits for an audit event of `kind` (a bounded wait: a regression fails
/// the test instead of hanging the suite).
async fn wait_for(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<AuthEventKind>,
    kind: AuthEventKind,
) {
    let seen = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(next) = events.recv().await {
            if next == kind {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(seen, Ok(true), "no {kind:?} event");
}

fn harness_with(hook: Option<Arc<dyn AuthEventHook>>) -> Harness {
    harness_with_tokens(hook, Arc::new(MemoryTokenStore::new()))
}

fn harness_with_tokens(
    hook: Option<Arc<dyn AuthEventHook>>,
    tokens: Arc<dyn auth_core::TokenStore>,
) -> Harness {
    logs();
    let sink = SmtpSink::start().unwrap();
    let mailer = SmtpMailer::from_url(&sink.url(), "App <app@app.test>").unwrap();
    let clock = ManualClock::starting_now();
    let users = Arc::new(MemoryUserStore::new());
    let accounts = Arc::new(MemoryAccountStore::new());
    let cheap = PasswordHasher::insecure_for_tests().unwrap();
    let mut builder = Auth::builder(users.clone());
    if let Some(hook) = hook {
        builder = builder.event_hook(hook);
    }
    let web = builder
        .clock(Arc::new(clock.clone()))
        .accounts(accounts.clone())
        .link_tokens(tokens)
        .passwords(PasswordService::builder().hasher(cheap).build().unwrap())
        .app_name("Example App")
        .mail(
            Arc::new(mailer),
            MailLinks::new("https://app.test").unwrap(),
        )
        .build()
        .unwrap();
    Harness {
        auth: web.authenticator().clone(),
        users,
        accounts,
        clock,
        sink,
    }
}

fn client() -> Client {
    Client::new("192.0.2.1".parse::<IpAddr>().unwrap())
}

fn token_of(body: &str) -> String {
    let start = body.find("?token=").expect("a link") + "?token=".len();
    body[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

impl Harness {
    fn clock_now(&self) -> auth_core::clock::Timestamp {
        use auth_core::clock::Clock;
        self.clock.now()
    }

    /// Registers `name` with a verified address; returns the address.
    async fn user_with_address(&self, name: &str) -> String {
        let address = format!("{name}@mail.test");
        self.user_with_unverified_address(name, &address).await;
        let mail = self.mail(&address).await;
        assert!(
            mail.body.contains("https://app.test/verify-email?token="),
            "{}",
            mail.body
        );
        // The mail quotes nothing the registrant chose (the address is not
        // proven: a login name could be a phishing line); the link's page
        // names the account, so a link somebody else's registration sent
        // is not confirmed blindly.
        assert!(!mail.body.contains(&format!("\"{name}\"")), "{}", mail.body);
        let token = token_of(&mail.body);
        assert_eq!(
            self.auth.verification_account(&token).await.unwrap(),
            Some(name.to_lowercase())
        );
        self.auth.verify_email(&token, &client()).await.unwrap();
        address
    }

    /// Registers `name` and gives it `address`, unverified (its
    /// verification mail is left in the sink).
    async fn user_with_unverified_address(&self, name: &str, address: &str) {
        let user = self
            .auth
            .register(name, &Password::from(PASSWORD), &client())
            .await
            .unwrap();
        self.auth
            .set_email(&user, address, &client())
            .await
            .unwrap();
    }

    /// A logged-in session of `name` (whose password is [`PASSWORD`]).
    async fn session(&self, name: &str) -> Session {
        self.auth
            .login(name, &Password::from(PASSWORD), &client(), None)
            .await
            .unwrap()
            .session()
            .clone()
    }

    /// Changes the password of `session`'s user from [`PASSWORD`] to
    /// [`NEW_PASSWORD`].
    async fn change_password(&self, session: &mut Session) {
        self.auth
            .change_password(
                session,
                &Password::from(PASSWORD),
                &Password::from(NEW_PASSWORD),
                &client(),
            )
            .await
            .unwrap();
    }

    /// Asks, with the password, to move `session`'s account to `address`.
    async fn change_email(&self, session: &mut Session, address: &str) {
        self.auth
            .change_email(
                session,
                &FactorProof::password(Password::from(PASSWORD)),
                address,
                &client(),
            )
            .await
            .unwrap();
    }

    /// The next mail to `address`, security notices aside.
    async fn mail(&self, address: &str) -> auth_smtp_sink::ReceivedMail {
        self.sink
            .wait_for_mail_where(address, Duration::from_secs(10), |m| {
                !m.subject.starts_with("Security notice")
            })
            .await
            .expect("a mail")
    }

    /// The next security notice to `address`.
    async fn notice(&self, address: &str) -> Option<auth_smtp_sink::ReceivedMail> {
        self.sink
            .wait_for_mail_where(address, Duration::from_secs(10), |m| {
                m.subject.starts_with("Security notice")
            })
            .await
    }

    async fn reset_token(&self, login: &str, address: &str) -> String {
        self.auth
            .request_password_reset(login, &client())
            .await
            .unwrap();
        token_of(&self.mail(address).await.body)
    }
}

/// A verification mail goes to an address nobody has proven yet: it
/// quotes nothing the registrant chose, so a login name cannot carry a
/// phishing line (or a link) into somebody else's mailbox under the app's
/// name. The link's page names the account instead.
#[tokio::test]
async fn a_verification_mail_quotes_no_text_of_the_registrants() {
    let h = harness();
    let login = "security team: verify at https://evil.example/x";
    let user = h
        .auth
        .register(login, &Password::from(PASSWORD), &client())
        .await
        .unwrap();
    h.auth
        .set_email(&user, "victim@mail.test", &client())
        .await
        .unwrap();
    let mail = h.mail("victim@mail.test").await;
    assert!(!mail.body.contains("evil.example"), "{}", mail.body);
    assert!(!mail.subject.contains("evil.example"), "{}", mail.subject);
    let token = token_of(&mail.body);
    let named = h.auth.verification_account(&token).await.unwrap().unwrap();
    assert!(named.contains("evil.example"), "the page names the account");
    // The same for a change of address (to one the account names).
    let mut session = h.session(login).await;
    h.auth.verify_email(&token, &client()).await.unwrap();
    h.change_email(&mut session, "victim2@mail.test").await;
    let mail = h.mail("victim2@mail.test").await;
    assert!(!mail.body.contains("evil.example"), "{}", mail.body);
}

/// A memory token store whose `delete_for_user` fails while `down` is set.
#[derive(Debug, Default)]
struct FailingDeletes {
    inner: MemoryTokenStore,
    down: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl auth_core::TokenStore for FailingDeletes {
    async fn insert(
        &self,
        key: &auth_core::single_use::TokenKey,
        record: &auth_core::single_use::TokenRecord,
    ) -> Result<(), auth_core::single_use::TokenStoreError> {
        self.inner.insert(key, record).await
    }
    async fn consume(
        &self,
        key: &auth_core::single_use::TokenKey,
        purpose: auth_core::single_use::Purpose,
        now: auth_core::clock::Timestamp,
    ) -> Result<Option<auth_core::single_use::TokenRecord>, auth_core::single_use::TokenStoreError>
    {
        self.inner.consume(key, purpose, now).await
    }
    async fn peek(
        &self,
        key: &auth_core::single_use::TokenKey,
        purpose: auth_core::single_use::Purpose,
        now: auth_core::clock::Timestamp,
    ) -> Result<Option<auth_core::single_use::TokenRecord>, auth_core::single_use::TokenStoreError>
    {
        self.inner.peek(key, purpose, now).await
    }
    async fn delete_for_user(
        &self,
        user_id: &str,
        purpose: auth_core::single_use::Purpose,
    ) -> Result<u64, auth_core::single_use::TokenStoreError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(auth_core::single_use::TokenStoreError::backend(
                std::io::Error::other("token store down"),
            ));
        }
        self.inner.delete_for_user(user_id, purpose).await
    }
    async fn delete_expired(
        &self,
        now: auth_core::clock::Timestamp,
    ) -> Result<u64, auth_core::single_use::TokenStoreError> {
        self.inner.delete_expired(now).await
    }
}

/// An address change whose clean-up of the old address's links fails
/// does not take effect: the reset link mailed to the old address (which
/// may be the compromised mailbox the user is leaving) never outlives the
/// change. The verification link is spent; the user asks again.
#[tokio::test]
async fn an_address_change_whose_link_clean_up_fails_does_not_take_effect() {
    let tokens = Arc::new(FailingDeletes::default());
    let h = harness_with_tokens(None, tokens.clone());
    let old = h.user_with_address("alice").await;
    let mut session = h.session("alice").await;
    let user_id = session.record().user_id.clone().unwrap();
    let reset = h.reset_token("alice", &old).await;
    h.change_email(&mut session, "new@mail.test").await;
    let link = token_of(&h.mail("new@mail.test").await.body);

    tokens.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let verified = h.auth.verify_email(&link, &client()).await;
    tokens
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let error = verified.unwrap_err();
    assert_eq!(error.status(), 503, "{error:?}");
    let email = h.accounts.email(&user_id).await.unwrap().unwrap();
    assert_eq!(email.address, old, "the address did not change");
    assert!(email.verified);
    // The old address is still the account's: its reset link still works.
    h.auth
        .reset_password(&reset, &Password::from(NEW_PASSWORD), &client())
        .await
        .unwrap();
}

/// Verification mails from one account are budgeted (5, then a
/// back-off): a signed-in account cannot mail a stream of them (quoting
/// its login name) to somebody else's address. The address itself is not
/// held: anyone else can still have it verified.
#[tokio::test]
async fn verification_mails_from_one_account_are_budgeted() {
    let h = harness();
    h.auth
        .register("mallory", &Password::from(PASSWORD), &client())
        .await
        .unwrap();
    let mut session = h.session("mallory").await;
    let mut sent = 0;
    let mut throttled = false;
    for n in 0..10 {
        match h
            .auth
            .change_email(
                &mut session,
                &FactorProof::password(Password::from(PASSWORD)),
                &format!("victim{n}@mail.test"),
                &client(),
            )
            .await
        {
            Ok(()) => sent += 1,
            Err(AuthError::Throttled { .. }) => {
                throttled = true;
                break;
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    assert!(throttled && (1..=5).contains(&sent), "{sent} mails");
    // Another account, an address the first one mailed: not held.
    let user = h
        .auth
        .register("alice", &Password::from(PASSWORD), &client())
        .await
        .unwrap();
    h.auth
        .set_email(&user, "victim0@mail.test", &client())
        .await
        .unwrap();
}

/// A verified address (the account's way back in) is not replaced by
/// `set_email`, which needs no proof: a reset link mailed to it stays the
/// owner's, and the change goes through `change_email`.
#[tokio::test]
async fn set_email_never_replaces_a_verified_address() {
    let h = harness();
    let address = h.user_with_address("alice").await;
    let alice = h
        .users
        .find_by_login(&LoginName::parse("alice").unwrap())
        .await
        .unwrap()
        .unwrap();
    let token = h.reset_token("alice", &address).await;
    assert!(matches!(
        h.auth
            .set_email(
                &auth_core::user::AnyUser::new(alice),
                "mallory@mail.test",
                &client()
            )
            .await,
        Err(AuthError::EmailAlreadyVerified)
    ));
    let email = h.accounts.email(&id_of(&h, "alice").await).await.unwrap();
    let email = email.expect("an address");
    assert_eq!(
        (email.address.as_str(), email.verified),
        (address.as_str(), true)
    );
    h.auth
        .reset_password(&token, &Password::from(NEW_PASSWORD), &client())
        .await
        .unwrap();
}

/// A disabled account claims no address: its verification link is
/// refused, and its page names nobody. A live link's page names the
/// account.
#[tokio::test]
async fn a_disabled_account_cannot_verify_an_address() {
    let h = harness();
    let address = "bob@mail.test";
    h.user_with_unverified_address("bob", address).await;
    let token = token_of(&h.mail(address).await.body);
    assert_eq!(
        h.auth
            .verification_account(&token)
            .await
            .unwrap()
            .as_deref(),
        Some("bob")
    );
    assert_eq!(h.auth.verification_account("garbage").await.unwrap(), None);
    let bob = id_of(&h, "bob").await;
    h.users.set_disabled(&bob, true).unwrap();
    assert_eq!(
        h.auth.verification_account(&token).await.unwrap(),
        None,
        "disabled"
    );
    assert!(matches!(
        h.auth.verify_email(&token, &client()).await,
        Err(AuthError::InvalidToken)
    ));
    let email = h.accounts.email(&bob).await.unwrap().expect("an address");
    assert!(!email.verified);
}

/// A completed reset lifts the password lock, not the second factor's:
/// whoever holds the mailbox (what the second factor stands against)
/// cannot buy fresh code guesses with resets.
#[tokio::test]
async fn a_reset_keeps_the_second_factors_lock() {
    let h = harness();
    let address = h.user_with_address("alice").await;
    let alice = id_of(&h, "alice").await;
    assert!(
        h.accounts
            .set_pending_totp(&alice, "v1.test.not-a-real-secret")
            .await
            .unwrap()
    );
    assert!(
        h.accounts
            .confirm_totp(&alice, "v1.test.not-a-real-secret", 0, &[])
            .await
            .unwrap()
    );
    let pending = |password: &'static str| {
        let h = &h;
        async move {
            match h
                .auth
                .login("alice", &Password::from(password), &client(), None)
                .await
                .unwrap()
            {
                LoginOutcome::MfaRequired { session, .. } => session,
                other => panic!("{other:?}"),
            }
        }
    };
    let mut session = pending(PASSWORD).await;
    let mut locked = false;
    for _ in 0..20 {
        match h
            .auth
            .login_recovery(&mut session, "aaaa-bbbb-cccc", &client())
            .await
        {
            Err(AuthError::InvalidCode) => {}
            Err(AuthError::Throttled { .. }) => {
                locked = true;
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(locked, "wrong codes lock the second factor");
    let token = h.reset_token("alice", &address).await;
    h.auth
        .reset_password(&token, &Password::from(NEW_PASSWORD), &client())
        .await
        .unwrap();
    let mut session = pending(NEW_PASSWORD).await;
    assert!(
        matches!(
            h.auth
                .login_recovery(&mut session, "aaaa-bbbb-cccc", &client())
                .await,
            Err(AuthError::Throttled { .. })
        ),
        "still locked after the reset"
    );
}

#[tokio::test]
async fn a_reset_sets_the_password_once_and_no_token_is_logged() {
    let h = harness();
    let address = h.user_with_address("alice").await;
    let token = h.reset_token("alice", &address).await;
    // From an address of its own: its audit line is told apart from the
    // other tests' in the shared capture.
    let resetter = Client::new("192.0.2.147".parse::<IpAddr>().unwrap());
    h.auth
        .reset_password(&token, &Password::from(NEW_PASSWORD), &resetter)
        .await
        .unwrap();
    let err = h
        .auth
        .reset_password(
            &token,
            &Password::from("yet another passphrase 9"),
            &client(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::InvalidToken), "{err:?}");
    h.auth
        .login("alice", &Password::from(NEW_PASSWORD), &client(), None)
        .await
        .unwrap();
    let logged = String::from_utf8(logs().0.lock().unwrap().clone()).unwrap();
    // The capture works: the reset's own audit line is there.
    assert!(
        logged
            .lines()
            .any(|line| line.contains("kind=PasswordReset ") && line.contains("192.0.2.147")),
        "nothing captured"
    );
    assert!(!logged.contains(&token), "a token in the logs");
    assert!(!logged.contains(NEW_PASSWORD));
}

/// Of concurrent uses of one link, exactly one sets a password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_resets_with_one_link_one_wins() {
    let h = harness();
    let address = h.user_with_address("alice").await;
    let token = h.reset_token("alice", &address).await;
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (auth, token) = (h.auth.clone(), token.clone());
            tokio::spawn(async move {
                let password = Password::from(format!("{NEW_PASSWORD} number {i}"));
                auth.reset_password(&token, &password, &client()).await
            })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        if task.await.unwrap().is_ok() {
            won += 1;
        }
    }
    assert_eq!(won, 1);
}

/// A password set by another path (the app's own admin tool writing the
/// hash) voids a reset link sent before.
#[tokio::test]
async fn a_password_changed_elsewhere_voids_the_link() {
    let h = harness();
    let address = h.user_with_address("alice").await;
    let token = h.reset_token("alice", &address).await;
    let user = h
        .users
        .find_by_login(&auth_core::LoginName::parse("alice").unwrap())
        .await
        .unwrap()
        .unwrap();
    let other = h
        .auth
        .passwords()
        .hash(&Password::from("set by an administrator 1"))
        .await
        .unwrap();
    assert!(
        h.users
            .set_password_hash(&user.id, user.password_hash.as_str(), other.as_str())
            .await
            .unwrap()
    );
    let err = h
        .auth
        .reset_password(&token, &Password::from(NEW_PASSWORD), &client())
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::InvalidToken), "{err:?}");
}

/// Links expire: 30 minutes for a reset, 24 hours for a verification.
#[tokio::test]
async fn links_expire() {
    let h = harness();
    let address = h.user_with_address("alice").await;
    let token = h.reset_token("alice", &address).await;
    h.clock.advance(Duration::from_secs(30 * 60));
    let err = h
        .auth
        .reset_password(&token, &Password::from(NEW_PASSWORD), &client())
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::InvalidToken), "{err:?}");

    h.user_with_unverified_address("bob", "bob@mail.test").await;
    let token = token_of(&h.mail("bob@mail.test").await.body);
    h.clock.advance(Duration::from_secs(24 * 60 * 60));
    assert!(matches!(
        h.auth.verify_email(&token, &client()).await,
        Err(AuthError::InvalidToken)
    ));
}

/// One call sweeps what has expired: sessions and link tokens alike.
#[tokio::test]
async fn expired_sessions_and_links_are_swept_in_one_call() {
    let h = harness();
    let address = h.user_with_address("alice").await;
    let _unused = h.reset_token("alice", &address).await;
    h.auth
        .login("alice", &Password::from(PASSWORD), &client(), None)
        .await
        .unwrap();
    assert_eq!(h.auth.delete_expired().await.unwrap(), 0, "nothing expired");
    // Past the session's absolute lifetime (12 h) and the link's (30 min).
    h.clock.advance(Duration::from_secs(13 * 60 * 60));
    let swept = h.auth.delete_expired().await.unwrap();
    assert!(swept >= 2, "a session and a link at least: {swept}");
    let now = auth_core::clock::Clock::now(&h.clock);
    assert_eq!(h.auth.sessions().delete_expired().await.unwrap(), 0);
    assert_eq!(h.auth.tokens().delete_expired(now).await.unwrap(), 0);
}

/// A verification link dies when the address changes; only a verified
/// address receives a reset; a newer reset link voids the older one.
#[tokio::test]
async fn verification_is_bound_to_the_address_and_new_links_void_old_ones() {
    let h = harness();
    let user = h
        .auth
        .register("alice", &Password::from(PASSWORD), &client())
        .await
        .unwrap();
    h.auth
        .set_email(&user, "first@mail.test", &client())
        .await
        .unwrap();
    let first = token_of(&h.mail("first@mail.test").await.body);
    h.auth
        .set_email(&user, "second@mail.test", &client())
        .await
        .unwrap();
    assert!(matches!(
        h.auth.verify_email(&first, &client()).await,
        Err(AuthError::InvalidToken)
    ));
    // Unverified: a reset request mails nothing.
    h.auth
        .request_password_reset("alice", &client())
        .await
        .unwrap();
    let second = token_of(&h.mail("second@mail.test").await.body);
    assert!(
        h.sink
            .wait_for_mail("second@mail.test", Duration::from_millis(300))
            .await
            .is_none(),
        "no reset link to an unverified address"
    );
    h.auth.verify_email(&second, &client()).await.unwrap();
    let stored = h.accounts.email(user.id()).await.unwrap();
    assert!(stored.is_some_and(|e| e.verified));
    let older = h.reset_token("alice", "second@mail.test").await;
    let newer = h.reset_token("second@mail.test", "second@mail.test").await;
    assert!(matches!(
        h.auth
            .reset_password(&older, &Password::from(NEW_PASSWORD), &client())
            .await,
        Err(AuthError::InvalidToken)
    ));
    h.auth
        .reset_password(&newer, &Password::from(NEW_PASSWORD), &client())
        .await
        .unwrap();
}

/// Someone who knew the password asks to move the account to their own
/// address; the owner, told at the old address, changes the password: the
/// link to the new address is dead, the old address stays the account's.
#[tokio::test]
async fn a_pending_change_of_address_dies_with_a_password_change() {
    let h = harness();
    let address = h.user_with_address("alice").await;
    let mut intruder = h.session("alice").await;
    h.change_email(&mut intruder, "intruder@mail.test").await;
    let link = token_of(&h.mail("intruder@mail.test").await.body);
    let notice = h.mail(&address).await;
    assert!(
        notice.body.contains("intruder@mail.test"),
        "{}",
        notice.body
    );
    let mut owner = h.session("alice").await;
    h.change_password(&mut owner).await;
    assert!(matches!(
        h.auth.verify_email(&link, &client()).await,
        Err(AuthError::InvalidToken)
    ));
    let user = h
        .users
        .find_by_login(&auth_core::LoginName::parse("alice").unwrap())
        .await
        .unwrap()
        .unwrap();
    let email = h.accounts.email(&user.id).await.unwrap().unwrap();
    assert_eq!(
        (email.address.as_str(), email.verified),
        (address.as_str(), true)
    );
    // Recovery mail still goes to the old address only.
    h.reset_token("alice", &address).await;
    h.auth
        .request_password_reset("intruder@mail.test", &client())
        .await
        .unwrap();
    assert!(
        h.sink
            .wait_for_mail("intruder@mail.test", Duration::from_millis(300))
            .await
            .is_none()
    );
}

/// A change to how an account signs in is told to its verified address
/// (a new password, a reset), with nothing in the notice to act on; an
/// unverified address is told nothing.
#[tokio::test]
async fn changes_to_how_an_account_signs_in_are_told_to_its_address() {
    let (sender, mut events) = tokio::sync::mpsc::unbounded_channel();
    let h = harness_with(Some(Arc::new(Events(sender))));
    let address = h.user_with_address("alice").await;
    let mut session = h.session("alice").await;
    h.change_password(&mut session).await;
    let notice = h.notice(&address).await.expect("a notice of the change");
    assert!(
        notice.subject.contains("your password was changed"),
        "{}",
        notice.subject
    );
    assert!(notice.body.contains("\"alice\""), "{}", notice.body);
    assert!(!notice.body.contains(NEW_PASSWORD));
    assert!(!notice.body.contains("token="), "nothing to act on in it");
    wait_for(&mut events, AuthEventKind::SecurityNoticeSent).await;

    let token = h.reset_token("alice", &address).await;
    h.auth
        .reset_password(&token, &Password::from("a third passphrase 31"), &client())
        .await
        .unwrap();
    let notice = h.notice(&address).await.expect("a notice of the reset");
    assert!(notice.subject.contains("reset"), "{}", notice.subject);

    h.user_with_unverified_address("bob", "bob@mail.test").await;
    h.mail("bob@mail.test").await;
    let mut session = h.session("bob").await;
    h.change_password(&mut session).await;
    assert!(
        h.sink
            .wait_for_mail_where("bob@mail.test", Duration::from_millis(500), |m| {
                m.subject.starts_with("Security notice")
            })
            .await
            .is_none(),
        "no notice to an unverified address"
    );
}

/// Confirming a new address voids the reset and sign-in links mailed to
/// the old one (the owner may be leaving a mailbox someone else reads),
/// and the old one is told the change took effect.
#[tokio::test]
async fn a_confirmed_new_address_voids_links_sent_to_the_old_one() {
    let h = harness();
    let address = h.user_with_address("alice").await;
    let reset = h.reset_token("alice", &address).await;
    h.auth.request_magic_link("alice", &client()).await.unwrap();
    let magic = token_of(&h.mail(&address).await.body);
    let mut session = h.session("alice").await;
    h.change_email(&mut session, "alice-new@mail.test").await;
    let link = token_of(&h.mail("alice-new@mail.test").await.body);
    h.auth.verify_email(&link, &client()).await.unwrap();
    assert!(matches!(
        h.auth
            .reset_password(&reset, &Password::from(NEW_PASSWORD), &client())
            .await,
        Err(AuthError::InvalidToken)
    ));
    assert!(matches!(
        h.auth.finish_magic_link(&magic, &client(), None).await,
        Err(AuthError::InvalidToken)
    ));
    let notice = h.notice(&address).await.expect("the old address is told");
    assert!(
        notice.subject.contains("email address was changed"),
        "{}",
        notice.subject
    );
    assert!(
        notice.body.contains("alice-new@mail.test"),
        "{}",
        notice.body
    );
}

/// A reset or sign-in link mailed to the old address stays void after a
/// new address is confirmed even when its token is back in the store
/// afterwards (a reset whose new password was refused puts its token
/// back, and may do so after the confirmation deleted the links; a link
/// issued while the confirmation ran is stored after it): the link is
/// bound to the address it went to.
#[tokio::test]
async fn a_link_back_in_the_store_after_an_address_change_stays_void() {
    use auth_core::TokenStore;
    use auth_core::single_use::{Purpose, SingleUseToken};
    let store = Arc::new(MemoryTokenStore::new());
    let h = harness_with_tokens(None, store.clone());
    let address = h.user_with_address("alice").await;
    let reset = h.reset_token("alice", &address).await;
    h.auth.request_magic_link("alice", &client()).await.unwrap();
    let magic = token_of(&h.mail(&address).await.body);
    let mut held = Vec::new();
    for (token, purpose) in [
        (&reset, Purpose::PasswordReset),
        (&magic, Purpose::MagicLink),
    ] {
        let key = SingleUseToken::parse(token).unwrap().key();
        let record = store
            .peek(&key, purpose, h.clock_now())
            .await
            .unwrap()
            .unwrap();
        held.push((key, record));
    }
    let mut session = h.session("alice").await;
    h.change_email(&mut session, "alice-new@mail.test").await;
    let link = token_of(&h.mail("alice-new@mail.test").await.body);
    h.auth.verify_email(&link, &client()).await.unwrap();
    for (key, record) in &held {
        store.insert(key, record).await.unwrap();
    }
    assert!(matches!(
        h.auth
            .reset_password(&reset, &Password::from(NEW_PASSWORD), &client())
            .await,
        Err(AuthError::InvalidToken)
    ));
    assert!(matches!(
        h.auth.finish_magic_link(&magic, &client(), None).await,
        Err(AuthError::InvalidToken)
    ));
    // A link to the new address works.
    let fresh = h.reset_token("alice", "alice-new@mail.test").await;
    h.auth
        .reset_password(&fresh, &Password::from(NEW_PASSWORD), &client())
        .await
        .unwrap();
}

/// Login names may contain `@`: one registered as somebody else's
/// verified address does not take that person's recovery mail.
#[tokio::test]
async fn a_login_name_never_takes_somebodys_address() {
    let h = harness();
    let address = h.user_with_address("alice").await;
    let squatter = h
        .auth
        .register(&address, &Password::from(PASSWORD), &client())
        .await
        .unwrap();
    h.auth
        .set_email(&squatter, "squatter@mail.test", &client())
        .await
        .unwrap();
    let link = token_of(&h.mail("squatter@mail.test").await.body);
    h.auth.verify_email(&link, &client()).await.unwrap();
    h.reset_token(&address, &address).await;
    assert!(
        h.sink
            .wait_for_mail("squatter@mail.test", Duration::from_millis(300))
            .await
            .is_none(),
        "the address found its owner, not the name"
    );
    // The squatter's own address finds the squatter.
    h.reset_token("squatter@mail.test", "squatter@mail.test")
        .await;
}

/// A link request takes as much from the client's IP budget for an
/// unknown name as for a real account: how soon an address is throttled
/// tells nothing about which names exist.
#[tokio::test]
async fn link_requests_cost_the_ip_the_same_for_every_name() {
    let (sender, mut events) = tokio::sync::mpsc::unbounded_channel();
    let h = harness_with(Some(Arc::new(Events(sender))));
    h.user_with_address("alice").await;
    let mut admitted = Vec::new();
    for (n, login) in ["alice", "nobody"].into_iter().enumerate() {
        let from = Client::new(IpAddr::from([198, 51, 100, 10 + n as u8]));
        let mut count = 0;
        loop {
            match h.auth.request_password_reset(login, &from).await {
                Ok(()) => count += 1,
                Err(AuthError::Throttled { .. }) => break,
                Err(other) => panic!("{other:?}"),
            }
            // The out-of-band part ends with its audit event.
            wait_for(&mut events, AuthEventKind::PasswordResetRequested).await;
        }
        admitted.push(count);
    }
    assert_eq!(admitted[0], admitted[1], "{admitted:?}");
}

/// Reset requests for one account are throttled (5, then a growing
/// back-off) without a different answer.
#[tokio::test]
async fn reset_requests_per_account_are_throttled_silently() {
    let h = harness();
    let address = h.user_with_address("alice").await;
    for n in 0..8u8 {
        let from = Client::new(IpAddr::from([198, 51, 100, n]));
        h.auth.request_password_reset("alice", &from).await.unwrap();
    }
    let mut mails = 0;
    while h
        .sink
        .wait_for_mail(&address, Duration::from_millis(500))
        .await
        .is_some()
    {
        mails += 1;
    }
    assert_eq!(mails, 5, "five links, then the account's back-off");
}

/// Without a mailer the recovery flows answer 501, and a mailer needs an
/// explicit account store.
#[tokio::test]
async fn recovery_needs_a_mailer_and_a_persistent_account_store() {
    let auth = Auth::builder(MemoryUserStore::new()).build().unwrap();
    let err = auth
        .authenticator()
        .request_password_reset("alice", &client())
        .await
        .unwrap_err();
    assert_eq!(err.status(), 501);
    let sink = SmtpSink::start().unwrap();
    let mailer = SmtpMailer::from_url(&sink.url(), "app@app.test").unwrap();
    let built = Auth::builder(MemoryUserStore::new())
        .mail(
            Arc::new(mailer),
            MailLinks::new("https://app.test").unwrap(),
        )
        .build();
    assert!(matches!(
        built,
        Err(auth_core::BuildError::AccountStoreRequired)
    ));
    assert!(MailLinks::new("ftp://app.test").is_err());
    // Plain HTTP only to a loopback host, unless asked for by name.
    assert!(MailLinks::new("http://app.test").is_err());
    assert!(MailLinks::new("http://127.0.0.1:8080").is_ok());
    assert!(MailLinks::new("http://localhost:3000/app").is_ok());
    assert!(MailLinks::new("http://[::1]:3000").is_ok());
    assert!(MailLinks::new("http://127.0.0.1.app.test").is_err());
    assert!(MailLinks::new("http://localhost.app.test").is_err());
    assert!(MailLinks::insecure_http("http://app.test").is_ok());
    assert!(MailLinks::insecure_http("ftp://app.test").is_err());
    assert!(MailLinks::new("https://app.test/?x=1").is_err());
}

/// A magic link is one factor (`require_mfa` refuses its session) and
/// dies with a password change. (`require_verified_email`: see
/// `sign_in_can_require_a_verified_address`.)
#[tokio::test]
async fn magic_links_are_one_factor_and_die_with_the_password() {
    let h = harness();
    let address = h.user_with_address("alice").await;
    h.auth.request_magic_link("alice", &client()).await.unwrap();
    let token = token_of(&h.mail(&address).await.body);
    let outcome = h
        .auth
        .finish_magic_link(&token, &client(), None)
        .await
        .unwrap();
    let session = outcome.session();
    assert_eq!(
        session.auth_state(),
        &auth_core::session::AuthState::Authenticated {
            factors: vec![auth_core::session::Factor::EmailLink],
            at: h.clock_now(),
        }
    );
    h.auth.require_login(Some(session)).unwrap();
    assert!(matches!(
        h.auth.require_mfa(Some(session)),
        Err(AuthError::SecondFactorRequired)
    ));

    // A link sent before a password change dies with it.
    h.auth.request_magic_link("alice", &client()).await.unwrap();
    let stale = token_of(&h.mail(&address).await.body);
    let mut session = outcome.session().clone();
    h.change_password(&mut session).await;
    assert!(matches!(
        h.auth.finish_magic_link(&stale, &client(), None).await,
        Err(AuthError::InvalidToken)
    ));
}

/// A sign-in link opened in a browser signed in to another account (a
/// link somebody sent to switch that browser to their account) is refused
/// and leaves that session alone; the link still works for its owner.
#[tokio::test]
async fn a_magic_link_never_replaces_another_accounts_session() {
    let h = harness();
    let address = h.user_with_address("alice").await;
    h.user_with_address("bob").await;
    let bob = match h
        .auth
        .login("bob", &Password::from(PASSWORD), &client(), None)
        .await
        .unwrap()
    {
        LoginOutcome::LoggedIn(session) => session,
        other => panic!("{other:?}"),
    };
    h.auth.request_magic_link("alice", &client()).await.unwrap();
    let token = token_of(&h.mail(&address).await.body);
    // Its page can name the account before the link is used, as often as
    // it is opened; a token that would not sign in names none.
    for _ in 0..2 {
        assert_eq!(
            h.auth.magic_link_account(&token).await.unwrap().as_deref(),
            Some("alice")
        );
    }
    for garbage in ["", "x", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
        assert_eq!(h.auth.magic_link_account(garbage).await.unwrap(), None);
    }
    let refused = h
        .auth
        .finish_magic_link(&token, &client(), Some(&bob))
        .await;
    assert!(
        matches!(refused, Err(AuthError::SignedInAsAnother)),
        "{refused:?}"
    );
    // Audited, against the link's account.
    let logged = String::from_utf8(logs().0.lock().unwrap().clone()).unwrap();
    assert!(
        logged.contains("reason=Some(SignedInAsAnother)"),
        "the refusal is audited"
    );
    let bob_again = h
        .auth
        .sessions()
        .load_id(bob.id().clone())
        .await
        .unwrap()
        .expect("bob's session lives on");
    h.auth.require_login(Some(&bob_again)).unwrap();
    // Signed out, the same link signs alice in.
    let outcome = h
        .auth
        .finish_magic_link(&token, &client(), None)
        .await
        .unwrap();
    assert!(matches!(outcome, LoginOutcome::LoggedIn(_)));
    assert_eq!(
        h.auth.magic_link_account(&token).await.unwrap(),
        None,
        "used"
    );

    // Half-way through signing in to another account (waiting for bob's
    // second factor): refused too.
    h.auth.request_magic_link("alice", &client()).await.unwrap();
    let token = token_of(&h.mail(&address).await.body);
    let bob_id = id_of(&h, "bob").await;
    let until = auth_core::clock::Clock::now(&h.clock).saturating_add(Duration::from_secs(300));
    let pending = h
        .auth
        .sessions()
        .create_as(NewSession::default(), |record| {
            record.user_id = Some(bob_id);
            record.auth = AuthState::MfaPending {
                methods: vec![Factor::Totp],
                first: Factor::Password,
                expires_at: until,
            };
        })
        .await
        .unwrap();
    assert!(matches!(
        h.auth
            .finish_magic_link(&token, &client(), Some(&pending))
            .await,
        Err(AuthError::SignedInAsAnother)
    ));
    // A link that would not sign in names nobody: a disabled user's, or
    // one sent before a password change.
    let alice = id_of(&h, "alice").await;
    h.users.set_disabled(&alice, true).unwrap();
    assert_eq!(
        h.auth.magic_link_account(&token).await.unwrap(),
        None,
        "disabled"
    );
    h.users.set_disabled(&alice, false).unwrap();
    assert!(h.auth.magic_link_account(&token).await.unwrap().is_some());
    let mut session = match h
        .auth
        .login("alice", &Password::from(PASSWORD), &client(), None)
        .await
        .unwrap()
    {
        LoginOutcome::LoggedIn(session) => session,
        other => panic!("{other:?}"),
    };
    h.change_password(&mut session).await;
    assert_eq!(
        h.auth.magic_link_account(&token).await.unwrap(),
        None,
        "stale"
    );
}

/// The id of the user `name`.
async fn id_of(h: &Harness, name: &str) -> String {
    let name = LoginName::parse(name).unwrap();
    h.users
        .find_by_login(&name)
        .await
        .unwrap()
        .unwrap()
        .id()
        .to_owned()
}

#[tokio::test]
async fn sign_in_can_require_a_verified_address() {
    logs();
    let sink = SmtpSink::start().unwrap();
    let mailer = SmtpMailer::from_url(&sink.url(), "app@app.test").unwrap();
    let auth = Auth::builder(MemoryUserStore::new())
        .accounts(Arc::new(MemoryAccountStore::new()))
        .passwords(
            PasswordService::builder()
                .hasher(PasswordHasher::insecure_for_tests().unwrap())
                .build()
                .unwrap(),
        )
        .mail(
            Arc::new(mailer),
            MailLinks::new("https://app.test").unwrap(),
        )
        .require_verified_email(true)
        .build()
        .unwrap();
    let flows = auth.authenticator();
    let user = flows
        .register("alice", &Password::from(PASSWORD), &client())
        .await
        .unwrap();
    let mut browser = client();
    browser.device = Some(auth_core::session::SessionId::generate().unwrap());
    let err = flows
        .login("alice", &Password::from(PASSWORD), &browser, None)
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::EmailNotVerified), "{err:?}");
    assert_eq!(err.status(), 403);
    flows
        .set_email(&user, "alice@mail.test", &client())
        .await
        .unwrap();
    let mail = sink
        .wait_for_mail("alice@mail.test", Duration::from_secs(10))
        .await
        .unwrap();
    flows
        .verify_email(&token_of(&mail.body), &client())
        .await
        .unwrap();
    // The refused sign-in made its browser no known device: a lock others
    // put on the account holds it.
    let lock = || common::lock_password(flows, "alice");
    lock().await;
    let err = flows
        .login("alice", &Password::from(PASSWORD), &browser, None)
        .await
        .unwrap_err();
    assert_eq!(err.status(), 429, "no standing from a refused sign-in");
    flows.unlock_account(user.id()).await.unwrap();
    flows
        .login("alice", &Password::from(PASSWORD), &browser, None)
        .await
        .unwrap();
    lock().await;
    flows
        .login("alice", &Password::from(PASSWORD), &browser, None)
        .await
        .expect("a complete sign-in made it known");
}

/// The answer to a reset or magic-link request never waits for the mail
/// server: with a server that accepts the connection and never speaks,
/// the requests still answer (the mail is sent out of band), for a real
/// account exactly as for an unknown name.
#[tokio::test]
async fn requests_never_wait_for_the_mail_server() {
    logs();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "smtp://127.0.0.1:{}?insecure_plaintext=true",
        silent.local_addr().unwrap().port()
    );
    // Holds the connections open, saying nothing, for longer than the
    // test waits (the thread ends with the test binary).
    std::thread::spawn(move || {
        let held: Vec<_> = silent.incoming().take(4).collect();
        std::thread::sleep(Duration::from_secs(300));
        drop(held);
    });
    let accounts = Arc::new(MemoryAccountStore::new());
    let users = Arc::new(MemoryUserStore::new());
    let auth = Auth::builder(users)
        .accounts(accounts.clone())
        .passwords(
            PasswordService::builder()
                .hasher(PasswordHasher::insecure_for_tests().unwrap())
                .build()
                .unwrap(),
        )
        .mail(
            Arc::new(
                SmtpMailer::from_url(&url, "app@app.test")
                    .unwrap()
                    .with_timeout(Duration::from_secs(600))
                    .unwrap(),
            ),
            MailLinks::new("https://app.test").unwrap(),
        )
        .build()
        .unwrap();
    let flows = auth.authenticator();
    let user = flows
        .register("alice", &Password::from(PASSWORD), &client())
        .await
        .unwrap();
    accounts
        .set_email(user.id(), "alice@mail.test")
        .await
        .unwrap();
    assert!(
        accounts
            .verify_email(user.id(), "alice@mail.test")
            .await
            .unwrap()
    );
    // A generous bound for a liveness check (no timing is measured): had
    // the request awaited the silent server, it would not answer at all.
    let bound = Duration::from_secs(30);
    for login in ["alice", "nobody", "alice@mail.test"] {
        tokio::time::timeout(bound, flows.request_password_reset(login, &client()))
            .await
            .expect("answered without waiting for the mail")
            .unwrap();
        tokio::time::timeout(bound, flows.request_magic_link(login, &client()))
            .await
            .expect("answered without waiting for the mail")
            .unwrap();
    }
}
