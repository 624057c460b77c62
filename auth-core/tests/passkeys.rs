//! The passkey flows of the framework-free `Authenticator`, each a real
//! WebAuthn ceremony: the relying party's options go to a software
//! authenticator (1Password's passkey-authenticator behind its WebAuthn
//! client, the conformance suite's `soft_authenticator`), whose answer goes back to the flow as
//! the JSON a browser would post. Memory stores, a `ManualClock`, cheap
//! password hashing.
#![cfg(feature = "passkeys")]

// The conformance suite's software authenticator, shared by path (one copy).
#[path = "../../tests/conformance/src/soft_authenticator.rs"]
#[allow(dead_code, unreachable_pub)]
mod passkey_client;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use auth_core::account::{AccountStore, MemoryAccountStore, StoredTotp};
use auth_core::clock::Timestamp;
use auth_core::clock::{Clock, ManualClock};
use auth_core::event::{AuthEvent, AuthEventHook, AuthEventKind, FailureReason};
use auth_core::flow::{AuthError, Authenticator, Client, FactorProof, LoginOutcome, MAX_PASSKEYS};
use auth_core::passkey::{
    MemoryPasskeyStore, PasskeyStore, PasskeyStoreError, Passkeys, StoredPasskey,
};
use auth_core::password::{Password, PasswordHasher, PasswordService};
use auth_core::rate_limit::ThrottleConfig;
use auth_core::session::{AuthState, Factor, Session};
use auth_core::user::MemoryUserStore;
use auth_core::user::UserStoreError;
use auth_core::web::Auth;
use passkey_client::SoftAuthenticator;

mod common;
use common::FailingEpoch;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";
/// The relying party: its id, and the origin the site is served from.
const RP_ID: &str = "demo.test";
const ORIGIN: &str = "https://demo.test";
/// Origins a browser could be on that are not the site: a sibling
/// subdomain (a phishing page under the same registrable domain, the only
/// kind of foreign origin the WebAuthn client lets ask for this relying
/// party id) and another port of the site's host.
const SUBDOMAIN: &str = "https://login.demo.test";
const OTHER_PORT: &str = "https://demo.test:8443";

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
    fn has(&self, kind: AuthEventKind, reason: Option<FailureReason>) -> bool {
        self.all()
            .iter()
            .any(|e| e.kind == kind && (reason.is_none() || e.reason == reason))
    }
    fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
}

struct Harness {
    auth: Authenticator,
    users: Arc<MemoryUserStore>,
    accounts: Arc<MemoryAccountStore>,
    /// What the flows see of `accounts`.
    race: Arc<EpochRace>,
    store: Arc<MemoryPasskeyStore>,
    /// What the flows see of `store`.
    removal: Arc<RemovalRace>,
    clock: ManualClock,
    events: Arc<Recorder>,
}

fn harness_with(throttle: ThrottleConfig) -> Harness {
    harness_on(throttle, None)
}

/// [`harness_with`], on `backend` when given (else the memory throttle
/// with `throttle`).
fn harness_on(
    throttle: ThrottleConfig,
    backend: Option<Arc<dyn auth_core::rate_limit::ThrottleBackend>>,
) -> Harness {
    let users = Arc::new(MemoryUserStore::new());
    let accounts = Arc::new(MemoryAccountStore::new());
    let store = Arc::new(MemoryPasskeyStore::new());
    let clock = ManualClock::starting_now();
    let events = Arc::new(Recorder::default());
    let removal = Arc::new(RemovalRace {
        inner: store.clone(),
        accounts: accounts.clone(),
        armed: AtomicBool::new(false),
    });
    let passkeys = Passkeys::builder(RP_ID, ORIGIN)
        .unwrap()
        .rp_name("Demo")
        .build(removal.clone())
        .unwrap();
    let passwords = PasswordService::builder()
        .hasher(PasswordHasher::insecure_for_tests().unwrap())
        .build()
        .unwrap();
    let race = Arc::new(EpochRace {
        inner: Arc::new(FailingEpoch {
            inner: accounts.clone(),
            ..FailingEpoch::default()
        }),
        armed: AtomicBool::new(false),
    });
    let mut builder = Auth::builder(users.clone())
        .clock(Arc::new(clock.clone()))
        .accounts(race.clone())
        .passwords(passwords)
        .throttle_config(throttle)
        .event_hook(events.clone())
        .passkeys(passkeys);
    if let Some(backend) = backend {
        builder = builder.throttle(backend);
    }
    let auth = builder.build().unwrap().authenticator().clone();
    Harness {
        auth,
        users,
        accounts,
        race,
        store,
        removal,
        clock,
        events,
    }
}

/// Passkeys without an account store would keep the recovery codes issued
/// with the first passkey in process memory, gone at a restart (and with
/// them the way back in after losing the device): refused at build time.
#[test]
fn passkeys_need_an_account_store() {
    let passkeys = || {
        Passkeys::builder(RP_ID, ORIGIN)
            .unwrap()
            .rp_name("Demo")
            .build(Arc::new(MemoryPasskeyStore::new()))
            .unwrap()
    };
    let err = Auth::builder(MemoryUserStore::new())
        .passkeys(passkeys())
        .build()
        .unwrap_err();
    assert!(
        matches!(err, auth_core::BuildError::AccountStoreRequired),
        "{err:?}"
    );
    assert!(
        Auth::builder(MemoryUserStore::new())
            .passkeys(passkeys())
            .accounts(Arc::new(MemoryAccountStore::new()))
            .build()
            .is_ok()
    );
}

fn harness() -> Harness {
    harness_with(ThrottleConfig::default())
}

/// The account state in memory, where, once armed, a sign out everywhere
/// (the epoch raised) lands right after the next read of the epoch; its
/// `inner` can also be made to fail (the store dropping part-way through a
/// flow).
#[derive(Debug)]
struct EpochRace {
    inner: Arc<FailingEpoch>,
    armed: AtomicBool,
}

#[async_trait::async_trait]
impl AccountStore for EpochRace {
    async fn totp(&self, user: &str) -> Result<Option<StoredTotp>, UserStoreError> {
        self.inner.totp(user).await
    }
    async fn set_pending_totp(&self, user: &str, sealed: &str) -> Result<bool, UserStoreError> {
        self.inner.set_pending_totp(user, sealed).await
    }
    async fn confirm_totp(
        &self,
        user: &str,
        sealed: &str,
        step: i64,
        hashes: &[String],
    ) -> Result<bool, UserStoreError> {
        self.inner.confirm_totp(user, sealed, step, hashes).await
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
        self.inner.remove_totp(user).await
    }
    async fn replace_recovery_codes(&self, user: &str, h: &[String]) -> Result<(), UserStoreError> {
        self.inner.replace_recovery_codes(user, h).await
    }
    async fn consume_recovery_code(&self, user: &str, hash: &str) -> Result<bool, UserStoreError> {
        self.inner.consume_recovery_code(user, hash).await
    }
    async fn recovery_codes_left(&self, user: &str) -> Result<u64, UserStoreError> {
        self.inner.recovery_codes_left(user).await
    }
    async fn epoch(&self, user: &str) -> Result<u64, UserStoreError> {
        let seen = self.inner.epoch(user).await?;
        if self.armed.swap(false, Ordering::SeqCst) {
            self.inner.raise_epoch(user).await?;
        }
        Ok(seen)
    }
    async fn raise_epoch(&self, user: &str) -> Result<u64, UserStoreError> {
        self.inner.raise_epoch(user).await
    }
}

/// The passkeys in memory, where, once armed, the passkey whose use was
/// just recorded is removed as its owner's removal does it (deleted, then
/// the account's epoch raised), right after the record.
#[derive(Debug)]
struct RemovalRace {
    inner: Arc<MemoryPasskeyStore>,
    accounts: Arc<MemoryAccountStore>,
    armed: AtomicBool,
}

#[async_trait::async_trait]
impl PasskeyStore for RemovalRace {
    async fn insert(&self, passkey: &StoredPasskey) -> Result<(), PasskeyStoreError> {
        self.inner.insert(passkey).await
    }
    async fn list(&self, user_id: &str) -> Result<Vec<StoredPasskey>, PasskeyStoreError> {
        self.inner.list(user_id).await
    }
    async fn find(&self, credential_id: &[u8]) -> Result<Option<StoredPasskey>, PasskeyStoreError> {
        self.inner.find(credential_id).await
    }
    async fn record_use(
        &self,
        credential_id: &[u8],
        expected: &str,
        credential: &str,
        backed_up: bool,
        used_at: Timestamp,
    ) -> Result<bool, PasskeyStoreError> {
        let recorded = self
            .inner
            .record_use(credential_id, expected, credential, backed_up, used_at)
            .await?;
        if recorded && self.armed.swap(false, Ordering::SeqCst) {
            let owner = self.inner.find(credential_id).await?.unwrap().user_id;
            assert!(self.inner.delete(&owner, credential_id).await?);
            self.accounts.raise_epoch(&owner).await.unwrap();
        }
        Ok(recorded)
    }
    async fn rename(
        &self,
        user_id: &str,
        credential_id: &[u8],
        name: &str,
    ) -> Result<bool, PasskeyStoreError> {
        self.inner.rename(user_id, credential_id, name).await
    }
    async fn delete(&self, user_id: &str, credential_id: &[u8]) -> Result<bool, PasskeyStoreError> {
        self.inner.delete(user_id, credential_id).await
    }
    async fn count(&self, user_id: &str) -> Result<u64, PasskeyStoreError> {
        self.inner.count(user_id).await
    }
}

fn client() -> Client {
    client_at("192.0.2.1")
}

fn client_at(ip: &str) -> Client {
    Client::new(ip.parse::<IpAddr>().unwrap()).with_user_agent("test")
}

fn password_proof() -> FactorProof {
    FactorProof::password(Password::from(PASSWORD))
}

/// Registers `name` and logs in (no second factor yet): an authenticated
/// session; answers the user id too.
async fn signed_up(h: &Harness, name: &str) -> (String, Session) {
    let user = h
        .auth
        .register(name, &Password::from(PASSWORD), &client())
        .await
        .unwrap();
    match password_login(h, name).await {
        LoginOutcome::LoggedIn(session) => (user.id().to_owned(), session),
        other => panic!("{other:?}"),
    }
}

async fn password_login(h: &Harness, name: &str) -> LoginOutcome {
    h.auth
        .login(name, &Password::from(PASSWORD), &client(), None)
        .await
        .unwrap()
}

/// The whole registration ceremony on `session` with `device`.
async fn add_passkey(
    h: &Harness,
    session: &mut Session,
    device: &mut SoftAuthenticator,
    proof: &FactorProof,
    name: &str,
) -> Result<auth_core::flow::PasskeyAdded, AuthError> {
    let options = h
        .auth
        .begin_passkey_registration(session, proof, &client())
        .await?;
    let credential = device.create(&options).await.expect("the authenticator");
    h.auth
        .finish_passkey_registration(session, name, &credential, &client())
        .await
}

/// `credential` (a registration answer) with its credential id replaced
/// by `len` bytes, in `id`, `rawId` and the attestation object's
/// authenticator data (an attestation of format "none" signs nothing).
fn with_credential_id_of(credential: &Value, len: usize) -> Value {
    use base64ct::{Base64UrlUnpadded, Encoding};
    let text = |v: &Value| v.as_str().unwrap().to_owned();
    let object =
        Base64UrlUnpadded::decode_vec(&text(&credential["response"]["attestationObject"])).unwrap();
    let mut object: ciborium::Value = ciborium::from_reader(object.as_slice()).unwrap();
    let id: Vec<u8> = (0..len).map(|n| (n % 251) as u8).collect();
    let fields = object.as_map_mut().unwrap();
    assert!(
        fields
            .iter()
            .any(|(k, v)| k.as_text() == Some("fmt") && v.as_text() == Some("none"))
    );
    for (key, value) in fields.iter_mut() {
        if key.as_text() == Some("authData") {
            let data = value.as_bytes().unwrap().clone();
            // rpIdHash 32, flags 1, counter 4, AAGUID 16, then the id's
            // length (2, big-endian) and the id.
            let old = usize::from(u16::from_be_bytes([data[53], data[54]]));
            let mut new = data[..53].to_vec();
            new.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
            new.extend_from_slice(&id);
            new.extend_from_slice(&data[55 + old..]);
            *value = ciborium::Value::Bytes(new);
        }
    }
    let mut encoded = Vec::new();
    ciborium::into_writer(&object, &mut encoded).unwrap();
    let mut credential = credential.clone();
    let id = Base64UrlUnpadded::encode_string(&id);
    credential["id"] = json!(id);
    credential["rawId"] = json!(id);
    credential["response"]["attestationObject"] = json!(Base64UrlUnpadded::encode_string(&encoded));
    credential
}

/// A registration on `session` whose credential id is `len` bytes.
async fn register_with_id_of(
    h: &Harness,
    session: &mut Session,
    len: usize,
) -> Result<auth_core::flow::PasskeyAdded, AuthError> {
    let options = h
        .auth
        .begin_passkey_registration(session, &password_proof(), &client())
        .await?;
    let credential = SoftAuthenticator::new(ORIGIN)
        .create(&options)
        .await
        .unwrap();
    h.auth
        .finish_passkey_registration(
            session,
            "Key",
            &with_credential_id_of(&credential, len),
            &client(),
        )
        .await
}

/// A credential id longer than WebAuthn allows (1023 bytes; an
/// authenticator of the attacker's making) is refused at registration: it
/// could be stored, but never renamed nor removed by its handle, so a
/// passkey added with a phished password would outlive the owner's
/// recovery. One of 1023 bytes is added and removed.
#[tokio::test]
async fn a_credential_id_longer_than_webauthn_allows_is_refused() {
    let h = harness();
    let (id, mut session) = signed_up(&h, "alice").await;
    assert!(matches!(
        register_with_id_of(&h, &mut session, 1024).await,
        Err(AuthError::PasskeyRefused)
    ));
    assert!(matches!(
        register_with_id_of(&h, &mut session, 1500).await,
        Err(AuthError::PasskeyRefused)
    ));
    assert!(h.store.list(&id).await.unwrap().is_empty());
    let added = register_with_id_of(&h, &mut session, 1023).await.unwrap();
    let code = added
        .recovery_codes
        .expect("the first factor's codes")
        .codes()[0]
        .to_owned();
    let proof = password_proof().with_code(code);
    assert!(
        h.auth
            .remove_passkey(&mut session, &added.passkey.id(), &proof, &client())
            .await
            .unwrap()
    );
    assert!(h.store.list(&id).await.unwrap().is_empty());
}

/// A user with one passkey on a device of their own: the user id, their
/// session and a recovery code (the proof of later factor changes).
async fn user_with_passkey(
    h: &Harness,
    name: &str,
    device: &mut SoftAuthenticator,
) -> (String, Session, String) {
    let (id, mut session) = signed_up(h, name).await;
    let added = add_passkey(h, &mut session, device, &password_proof(), "Phone")
        .await
        .unwrap();
    let codes = added.recovery_codes.expect("the first factor's codes");
    (id, session, codes.codes()[0].to_owned())
}

/// A passkey registration whose store fails half-way (the account store
/// drops before the passkey is stored, or after) never leaves a session of
/// the user elsewhere that lacks the new factor beside it: those end before
/// the passkey is stored, and a failure there stores nothing.
#[tokio::test]
async fn a_passkey_registration_failing_half_way_leaves_no_lesser_session() {
    for spare in [0, 1] {
        let h = harness();
        let (id, mut session) = signed_up(&h, "alice").await;
        let LoginOutcome::LoggedIn(elsewhere) = password_login(&h, "alice").await else {
            panic!("no second factor yet");
        };
        let options = h
            .auth
            .begin_passkey_registration(&mut session, &password_proof(), &client())
            .await
            .unwrap();
        let credential = SoftAuthenticator::new(ORIGIN)
            .create(&options)
            .await
            .unwrap();
        h.race.inner.spare.store(spare, Ordering::SeqCst);
        h.race.inner.armed.store(true, Ordering::SeqCst);
        let added = h
            .auth
            .finish_passkey_registration(&mut session, "Phone", &credential, &client())
            .await;
        h.race.inner.armed.store(false, Ordering::SeqCst);
        assert!(added.is_err());
        let stored = !h.store.list(&id).await.unwrap().is_empty();
        assert_eq!(stored, spare == 1, "which half failed");
        assert!(
            !stored || !session_exists(&h, &elsewhere).await,
            "a passkey was added and a password-only session lives on"
        );
    }
}

/// A fresh anonymous session and the discoverable ceremony's options.
async fn begin_passwordless(h: &Harness) -> (Session, Value) {
    let mut session = h.auth.anonymous_session(&client()).await.unwrap();
    let options = h
        .auth
        .begin_passkey_sign_in(&mut session, &client())
        .await
        .unwrap();
    (session, options)
}

/// A passwordless sign-in with `device`, from its current origin, by
/// `browser`.
async fn passwordless_from(
    h: &Harness,
    device: &mut SoftAuthenticator,
    browser: &Client,
) -> Result<LoginOutcome, AuthError> {
    let mut session = h.auth.anonymous_session(browser).await.unwrap();
    let options = h
        .auth
        .begin_passkey_sign_in(&mut session, browser)
        .await
        .unwrap();
    let assertion = device.get(&options).await.expect("the authenticator");
    h.auth
        .finish_passkey_sign_in(&mut session, &assertion, browser)
        .await
}

/// A passwordless sign-in with `device`, from its current origin.
async fn passwordless(
    h: &Harness,
    device: &mut SoftAuthenticator,
) -> Result<LoginOutcome, AuthError> {
    let (mut session, options) = begin_passwordless(h).await;
    let assertion = device.get(&options).await.expect("the authenticator");
    h.auth
        .finish_passkey_sign_in(&mut session, &assertion, &client())
        .await
}

/// The MFA-pending session of a password login of `name`.
async fn pending(h: &Harness, name: &str) -> Session {
    match password_login(h, name).await {
        LoginOutcome::MfaRequired { session, methods } => {
            assert!(methods.contains(&Factor::Passkey), "{methods:?}");
            session
        }
        other => panic!("MFA expected, got {other:?}"),
    }
}

fn logged_in(outcome: Result<LoginOutcome, AuthError>) -> Session {
    match outcome {
        Ok(LoginOutcome::LoggedIn(session)) => session,
        other => panic!("a login expected, got {other:?}"),
    }
}

fn factors(session: &Session) -> Vec<Factor> {
    match session.auth_state() {
        AuthState::Authenticated { factors, .. } => factors.clone(),
        other => panic!("not authenticated: {other:?}"),
    }
}

/// The stored passkey of `user_id` (the only one).
async fn stored(h: &Harness, user_id: &str) -> StoredPasskey {
    let mut list = h.store.list(user_id).await.unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    list.remove(0)
}

/// The signature counter webauthn-rs keeps in a stored credential.
fn stored_counter(passkey: &StoredPasskey) -> u64 {
    let credential: Value = serde_json::from_str(&passkey.credential).unwrap();
    credential["cred"]["counter"].as_u64().expect("a counter")
}

async fn session_exists(h: &Harness, session: &Session) -> bool {
    h.auth
        .sessions()
        .load_id(session.id().clone())
        .await
        .unwrap()
        .is_some()
}

fn refused(result: Result<LoginOutcome, AuthError>) {
    assert!(
        matches!(result, Err(AuthError::PasskeyRefused)),
        "refusal expected, got {result:?}"
    );
}

// ---- registration -----------------------------------------------------------

/// Adding a passkey (proof: the password) stores it as discoverable with
/// user verification, lists it, and as the account's first second factor
/// gives recovery codes; the next one needs a code with the password and
/// gives none, and the device's first credential is excluded.
#[tokio::test]
async fn a_registered_passkey_is_listed_and_the_first_gives_recovery_codes() {
    let h = harness();
    let (id, mut session) = signed_up(&h, "alice").await;
    let LoginOutcome::LoggedIn(other_session) = password_login(&h, "alice").await else {
        panic!("no second factor yet");
    };
    let before = session.id().clone();
    let options = h
        .auth
        .begin_passkey_registration(&mut session, &password_proof(), &client())
        .await
        .unwrap();
    assert_ne!(session.id(), &before, "the proof renews the session");
    let selection = &options["publicKey"]["authenticatorSelection"];
    assert_eq!(selection["residentKey"], "required");
    assert_eq!(selection["userVerification"], "required");
    assert_eq!(options["publicKey"]["rp"]["id"], RP_ID);
    assert_eq!(options["publicKey"]["user"]["name"], "alice");
    let mut phone = SoftAuthenticator::new(ORIGIN);
    let credential = phone.create(&options).await.unwrap();
    h.clock.advance(Duration::from_secs(7));
    let added = h
        .auth
        .finish_passkey_registration(&mut session, "  My phone ", &credential, &client())
        .await
        .unwrap();
    let codes = added.recovery_codes.expect("recovery codes");
    assert_eq!(codes.len(), 10);
    assert_eq!(h.auth.recovery_codes_left(&session).await.unwrap(), 10);
    assert!(h.events.has(AuthEventKind::PasskeyAdded, None));

    let list = h.auth.list_passkeys(&session).await.unwrap();
    assert_eq!(list.len(), 1);
    let passkey = &list[0];
    assert_eq!(passkey.name, "My phone");
    assert_eq!(passkey.user_id, id);
    assert_eq!(passkey.created_at, h.clock.now());
    assert_eq!(passkey.last_used_at, None);
    assert_eq!(passkey.id(), credential["id"].as_str().unwrap());
    // The software authenticator reports a synced (backed-up) credential.
    assert!(passkey.backup_eligible && passkey.backed_up, "{passkey:?}");
    // The device keeps it as a discoverable credential for this site.
    assert_eq!(phone.passkeys().len(), 1);
    assert_eq!(phone.passkeys()[0].rp_id, RP_ID);
    assert!(phone.passkeys()[0].user_handle.is_some());
    // A factor change: the user's other session ended.
    assert!(!session_exists(&h, &other_session).await);
    assert!(session_exists(&h, &session).await);

    // A second passkey: the password alone is no longer enough.
    let err = h
        .auth
        .begin_passkey_registration(&mut session, &password_proof(), &client())
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::CodeRequired), "{err:?}");
    let proof = password_proof().with_code(codes.codes()[0]);
    let options = h
        .auth
        .begin_passkey_registration(&mut session, &proof, &client())
        .await
        .unwrap();
    let excluded = options["publicKey"]["excludeCredentials"]
        .as_array()
        .unwrap();
    assert_eq!(excluded.len(), 1);
    assert_eq!(excluded[0]["id"], credential["id"]);
    // The same device refuses to make a second credential for this user.
    assert!(phone.create(&options).await.is_err());
    let mut key = SoftAuthenticator::new(ORIGIN);
    let second = key.create(&options).await.unwrap();
    // Listed oldest first (equal times would order by credential id).
    h.clock.advance(Duration::from_secs(1));
    let added = h
        .auth
        .finish_passkey_registration(&mut session, "", &second, &client())
        .await
        .unwrap();
    assert!(added.recovery_codes.is_none());
    assert_eq!(added.passkey.name, "Passkey");
    let names: Vec<String> = h
        .auth
        .list_passkeys(&session)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["My phone", "Passkey"]);
    // Renaming: the user's own passkey only, checked names.
    assert!(
        h.auth
            .rename_passkey(&session, &added.passkey.id(), "Key")
            .await
            .unwrap()
    );
    assert!(matches!(
        h.auth
            .rename_passkey(&session, &added.passkey.id(), "bad\nname")
            .await,
        Err(AuthError::InvalidPasskeyName)
    ));
    assert!(!h.auth.rename_passkey(&session, "AAAA", "x").await.unwrap());
}

// ---- passwordless -------------------------------------------------------------

/// The discoverable credential signs in without a password: a fresh
/// session, authenticated with `[Passkey]`, which passes `require_mfa`;
/// the stored counter and last use follow every use.
#[tokio::test]
async fn passwordless_sign_in_with_the_discoverable_credential() {
    let h = harness();
    let mut key = SoftAuthenticator::with_counter(ORIGIN);
    let (id, _, _) = user_with_passkey(&h, "alice", &mut key).await;
    assert_eq!(stored_counter(&stored(&h, &id).await), 0);

    let (mut anonymous, options) = begin_passwordless(&h).await;
    let public_key = &options["publicKey"];
    assert_eq!(public_key["userVerification"], "required");
    assert!(
        public_key
            .get("allowCredentials")
            .is_none_or(|a| a.as_array().is_some_and(Vec::is_empty)),
        "discoverable: no allow list, {options}"
    );
    assert_eq!(public_key["rpId"], RP_ID);
    h.clock.advance(Duration::from_secs(30));
    let assertion = key.get(&options).await.unwrap();
    let session = logged_in(
        h.auth
            .finish_passkey_sign_in(&mut anonymous, &assertion, &client())
            .await,
    );
    assert_eq!(session.authenticated_user(), Some(id.as_str()));
    assert_eq!(factors(&session), [Factor::Passkey]);
    assert_ne!(session.id(), anonymous.id(), "a fresh session");
    assert!(h.auth.require_mfa(Some(&session)).is_ok());
    assert!(session_exists(&h, &session).await);
    assert!(!session_exists(&h, &anonymous).await, "the request's ended");
    let after = stored(&h, &id).await;
    assert_eq!(after.last_used_at, Some(h.clock.now()));
    assert_eq!(stored_counter(&after), 1);
    assert!(h.events.has(AuthEventKind::LoginSucceeded, None));

    h.clock.advance(Duration::from_secs(60));
    let again = logged_in(passwordless(&h, &mut key).await);
    assert_eq!(factors(&again), [Factor::Passkey]);
    let after = stored(&h, &id).await;
    assert_eq!(after.last_used_at, Some(h.clock.now()));
    assert_eq!(stored_counter(&after), 2);
}

// ---- the second step ----------------------------------------------------------

/// With a passkey, a password login is MFA-pending; the passkey completes
/// it: `[Password, Passkey]`, a new session ID, the pending ID dead.
#[tokio::test]
async fn a_passkey_completes_a_password_login() {
    let h = harness();
    let mut phone = SoftAuthenticator::new(ORIGIN);
    let (id, _, _) = user_with_passkey(&h, "alice", &mut phone).await;
    let mut session = pending(&h, "alice").await;
    let pending_id = session.id().clone();
    assert!(h.auth.require_login(Some(&session)).is_err());

    let options = h
        .auth
        .begin_passkey_sign_in(&mut session, &client())
        .await
        .unwrap();
    let public_key = &options["publicKey"];
    let allowed = public_key["allowCredentials"].as_array().unwrap();
    assert_eq!(allowed.len(), 1);
    assert_eq!(allowed[0]["id"], stored(&h, &id).await.id().as_str());
    assert_eq!(public_key["userVerification"], "preferred");
    assert!(public_key.get("hints").is_none(), "{options}");

    let assertion = phone.get(&options).await.unwrap();
    let done = logged_in(
        h.auth
            .finish_passkey_sign_in(&mut session, &assertion, &client())
            .await,
    );
    assert_eq!(done.authenticated_user(), Some(id.as_str()));
    assert_eq!(factors(&done), [Factor::Password, Factor::Passkey]);
    assert_ne!(done.id(), &pending_id);
    assert!(h.auth.require_mfa(Some(&done)).is_ok());
    assert!(session_exists(&h, &done).await);
    assert!(
        h.auth
            .sessions()
            .load_id(pending_id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(stored(&h, &id).await.last_used_at.is_some());
}

/// A user disabled while their login is MFA-pending does not complete it
/// with a passkey (as with a TOTP code), nor signs in passwordless.
#[tokio::test]
async fn a_disabled_user_does_not_complete_the_second_step() {
    let h = harness();
    let mut phone = SoftAuthenticator::new(ORIGIN);
    let (id, _, _) = user_with_passkey(&h, "alice", &mut phone).await;
    let mut session = pending(&h, "alice").await;
    let options = h
        .auth
        .begin_passkey_sign_in(&mut session, &client())
        .await
        .unwrap();
    let assertion = phone.get(&options).await.unwrap();
    h.users.set_disabled(&id, true).unwrap();
    let result = h
        .auth
        .finish_passkey_sign_in(&mut session, &assertion, &client())
        .await;
    assert!(
        !matches!(result, Ok(LoginOutcome::LoggedIn(_))),
        "a disabled user signed in: {result:?}"
    );
    assert!(
        !h.events
            .all()
            .iter()
            .any(|e| e.kind == AuthEventKind::LoginSucceeded && e.factor == Some(Factor::Passkey)),
        "{:?}",
        h.events.all()
    );
    // And passwordless neither.
    refused(passwordless(&h, &mut phone).await);
}

// ---- replay, origin, ceremony state -------------------------------------------

/// The same assertion sent again, answering a new ceremony, is refused
/// (its challenge was the old one's), passwordless and as the second
/// step; so is a registration answer sent again.
#[tokio::test]
async fn a_replayed_assertion_is_refused() {
    let h = harness();
    let mut phone = SoftAuthenticator::new(ORIGIN);
    let (id, mut account, code) = user_with_passkey(&h, "alice", &mut phone).await;

    let (mut first, options) = begin_passwordless(&h).await;
    let assertion = phone.get(&options).await.unwrap();
    logged_in(
        h.auth
            .finish_passkey_sign_in(&mut first, &assertion, &client())
            .await,
    );
    let (mut second, _) = begin_passwordless(&h).await;
    refused(
        h.auth
            .finish_passkey_sign_in(&mut second, &assertion, &client())
            .await,
    );
    assert!(h.events.has(
        AuthEventKind::LoginFailed,
        Some(FailureReason::PasskeyInvalid)
    ));

    let mut pending_one = pending(&h, "alice").await;
    let options = h
        .auth
        .begin_passkey_sign_in(&mut pending_one, &client())
        .await
        .unwrap();
    let assertion = phone.get(&options).await.unwrap();
    logged_in(
        h.auth
            .finish_passkey_sign_in(&mut pending_one, &assertion, &client())
            .await,
    );
    let mut pending_two = pending(&h, "alice").await;
    h.auth
        .begin_passkey_sign_in(&mut pending_two, &client())
        .await
        .unwrap();
    refused(
        h.auth
            .finish_passkey_sign_in(&mut pending_two, &assertion, &client())
            .await,
    );
    assert!(matches!(
        pending_two.auth_state(),
        AuthState::MfaPending { .. }
    ));

    // A registration answer replayed into a new registration ceremony.
    let options = h
        .auth
        .begin_passkey_registration(&mut account, &password_proof().with_code(code), &client())
        .await
        .unwrap();
    let mut key = SoftAuthenticator::new(ORIGIN);
    let credential = key.create(&options).await.unwrap();
    h.auth
        .finish_passkey_registration(&mut account, "Key", &credential, &client())
        .await
        .unwrap();
    let code = fresh_recovery_code(&h, &id).await;
    h.auth
        .begin_passkey_registration(&mut account, &password_proof().with_code(code), &client())
        .await
        .unwrap();
    let err = h
        .auth
        .finish_passkey_registration(&mut account, "Key", &credential, &client())
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::PasskeyRefused), "{err:?}");
    assert_eq!(h.store.list(&id).await.unwrap().len(), 2);
}

/// An answer made on another origin (a sibling subdomain, another port) is
/// refused, at registration and at sign-in, and answers its ceremony.
#[tokio::test]
async fn another_origin_is_refused() {
    let h = harness();
    let (id, mut session) = signed_up(&h, "alice").await;
    for origin in [SUBDOMAIN, OTHER_PORT] {
        let mut phishing = SoftAuthenticator::new(origin);
        let options = h
            .auth
            .begin_passkey_registration(&mut session, &password_proof(), &client())
            .await
            .unwrap();
        let credential = phishing.create(&options).await.unwrap();
        let err = h
            .auth
            .finish_passkey_registration(&mut session, "x", &credential, &client())
            .await
            .unwrap_err();
        assert!(
            matches!(err, AuthError::PasskeyRefused),
            "{origin}: {err:?}"
        );
        assert!(h.store.list(&id).await.unwrap().is_empty());
        assert!(h.events.has(
            AuthEventKind::PasskeyAddFailed,
            Some(FailureReason::PasskeyInvalid)
        ));
    }

    let mut phone = SoftAuthenticator::new(ORIGIN);
    add_passkey(&h, &mut session, &mut phone, &password_proof(), "Phone")
        .await
        .unwrap();
    for origin in [SUBDOMAIN, OTHER_PORT] {
        h.events.clear();
        phone.at(origin);
        refused(passwordless(&h, &mut phone).await);
        assert!(h.events.has(
            AuthEventKind::LoginFailed,
            Some(FailureReason::PasskeyInvalid)
        ));
        let mut second_step = pending(&h, "alice").await;
        let options = h
            .auth
            .begin_passkey_sign_in(&mut second_step, &client())
            .await
            .unwrap();
        let assertion = phone.get(&options).await.unwrap();
        refused(
            h.auth
                .finish_passkey_sign_in(&mut second_step, &assertion, &client())
                .await,
        );
        // The ceremony was answered: the right origin cannot use it now.
        phone.at(ORIGIN);
        let assertion = phone.get(&options).await.unwrap();
        let again = h
            .auth
            .finish_passkey_sign_in(&mut second_step, &assertion, &client())
            .await;
        assert!(
            matches!(again, Err(AuthError::PasskeyCeremony)),
            "{again:?}"
        );
    }
    phone.at(ORIGIN);
    logged_in(passwordless(&h, &mut phone).await);
}

/// A ceremony is answered once: a second finish gives PasskeyCeremony,
/// also from a copy of the session taken before the first answer (two
/// requests with the same cookie).
#[tokio::test]
async fn a_ceremony_is_answered_once() {
    let h = harness();
    let (id, mut session) = signed_up(&h, "alice").await;
    let mut phone = SoftAuthenticator::new(ORIGIN);

    // Registration.
    let options = h
        .auth
        .begin_passkey_registration(&mut session, &password_proof(), &client())
        .await
        .unwrap();
    let credential = phone.create(&options).await.unwrap();
    let mut copy = session.clone();
    let err = h
        .auth
        .finish_passkey_registration(&mut session, "Phone", &json!({"id": "x"}), &client())
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::PasskeyRefused), "{err:?}");
    for session in [&mut session, &mut copy] {
        let err = h
            .auth
            .finish_passkey_registration(session, "Phone", &credential, &client())
            .await
            .unwrap_err();
        assert!(matches!(err, AuthError::PasskeyCeremony), "{err:?}");
    }
    assert!(h.store.list(&id).await.unwrap().is_empty());
    // Success, then the same ceremony again.
    let options = h
        .auth
        .begin_passkey_registration(&mut session, &password_proof(), &client())
        .await
        .unwrap();
    let credential = phone.create(&options).await.unwrap();
    h.auth
        .finish_passkey_registration(&mut session, "Phone", &credential, &client())
        .await
        .unwrap();
    let err = h
        .auth
        .finish_passkey_registration(&mut session, "Phone", &credential, &client())
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::PasskeyCeremony), "{err:?}");
    assert_eq!(h.store.list(&id).await.unwrap().len(), 1);

    // Sign-in: a refused first answer leaves the session alive, so a copy
    // taken before it is what a concurrent second request would hold.
    let (mut anonymous, options) = begin_passwordless(&h).await;
    let good = phone.get(&options).await.unwrap();
    let mut bad = good.clone();
    bad["response"]["signature"] = json!("AAAA");
    let mut copy = anonymous.clone();
    refused(
        h.auth
            .finish_passkey_sign_in(&mut anonymous, &bad, &client())
            .await,
    );
    let second = h
        .auth
        .finish_passkey_sign_in(&mut anonymous, &good, &client())
        .await;
    assert!(
        matches!(second, Err(AuthError::PasskeyCeremony)),
        "{second:?}"
    );
    let stale = h
        .auth
        .finish_passkey_sign_in(&mut copy, &good, &client())
        .await;
    assert!(
        matches!(stale, Err(AuthError::PasskeyCeremony)),
        "a used ceremony answered again from a stale copy: {stale:?}"
    );

    // Success, then the same ceremony again (the session is gone then).
    let (mut anonymous, options) = begin_passwordless(&h).await;
    let good = phone.get(&options).await.unwrap();
    logged_in(
        h.auth
            .finish_passkey_sign_in(&mut anonymous, &good, &client())
            .await,
    );
    let again = h
        .auth
        .finish_passkey_sign_in(&mut anonymous, &good, &client())
        .await;
    assert!(
        matches!(again, Err(AuthError::PasskeyCeremony)),
        "{again:?}"
    );

    // The second step, twice on one pending session.
    let mut second_step = pending(&h, "alice").await;
    let options = h
        .auth
        .begin_passkey_sign_in(&mut second_step, &client())
        .await
        .unwrap();
    let good = phone.get(&options).await.unwrap();
    let mut bad = good.clone();
    bad["response"]["signature"] = json!("AAAA");
    let mut copy = second_step.clone();
    refused(
        h.auth
            .finish_passkey_sign_in(&mut second_step, &bad, &client())
            .await,
    );
    let stale = h
        .auth
        .finish_passkey_sign_in(&mut copy, &good, &client())
        .await;
    assert!(
        matches!(stale, Err(AuthError::PasskeyCeremony)),
        "a used second-step ceremony answered again: {stale:?}"
    );
    assert!(matches!(copy.auth_state(), AuthState::MfaPending { .. }));
}

/// A ceremony answered after its 5 minutes: PasskeyCeremony (and the
/// ceremony is gone); at 4 minutes 59 it still works.
#[tokio::test]
async fn an_expired_ceremony_is_refused() {
    let h = harness();
    let (_, mut session) = signed_up(&h, "alice").await;
    let mut phone = SoftAuthenticator::new(ORIGIN);
    let options = h
        .auth
        .begin_passkey_registration(&mut session, &password_proof(), &client())
        .await
        .unwrap();
    let credential = phone.create(&options).await.unwrap();
    h.clock.advance(Duration::from_secs(5 * 60 + 1));
    let err = h
        .auth
        .finish_passkey_registration(&mut session, "Phone", &credential, &client())
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::PasskeyCeremony), "{err:?}");
    assert!(
        !session
            .record()
            .data
            .contains_key("auth.passkey.registration")
    );

    let options = h
        .auth
        .begin_passkey_registration(&mut session, &password_proof(), &client())
        .await
        .unwrap();
    let mut phone = SoftAuthenticator::new(ORIGIN);
    let credential = phone.create(&options).await.unwrap();
    h.clock.advance(Duration::from_secs(5 * 60 - 1));
    h.auth
        .finish_passkey_registration(&mut session, "Phone", &credential, &client())
        .await
        .unwrap();

    let (mut anonymous, options) = begin_passwordless(&h).await;
    let assertion = phone.get(&options).await.unwrap();
    h.clock.advance(Duration::from_secs(5 * 60 + 1));
    let result = h
        .auth
        .finish_passkey_sign_in(&mut anonymous, &assertion, &client())
        .await;
    assert!(
        matches!(result, Err(AuthError::PasskeyCeremony)),
        "{result:?}"
    );
    assert!(!anonymous.record().data.contains_key("auth.passkey.sign_in"));
}

// ---- the signature counter ----------------------------------------------------

/// A passwordless sign-in by alice with `armed` set when her answer is
/// ready: it answers busy (503, the client tries again) and leaves no new
/// session (hers: only the one she registered the passkey in). Answers her
/// user id.
async fn a_raced_sign_in_keeps_no_session(h: &Harness, armed: &AtomicBool) -> String {
    let mut key = SoftAuthenticator::new(ORIGIN);
    let (id, _, _) = user_with_passkey(h, "alice", &mut key).await;
    let (mut session, options) = begin_passwordless(h).await;
    let assertion = key.get(&options).await.unwrap();
    armed.store(true, Ordering::SeqCst);
    let outcome = h
        .auth
        .finish_passkey_sign_in(&mut session, &assertion, &client())
        .await;
    assert!(matches!(outcome, Err(AuthError::Busy)), "{outcome:?}");
    assert!(!armed.load(Ordering::SeqCst), "the race ran");
    let sessions = h.auth.sessions().store().list_by_user(&id).await.unwrap();
    assert_eq!(sessions.len(), 1, "no new session survived");
    id
}

/// A passwordless sign-in racing a sign out everywhere (or a factor
/// change) that raised the epoch while its session was made keeps no
/// session.
#[tokio::test]
async fn a_passwordless_sign_in_racing_a_sign_out_everywhere_keeps_no_session() {
    let h = harness();
    a_raced_sign_in_keeps_no_session(&h, &h.race.armed).await;
}

/// A passwordless sign-in whose passkey is removed right after its use
/// was recorded (the owner removing a stolen key while the thief signs in)
/// keeps no session, however late in the sign-in the removal finished.
#[tokio::test]
async fn a_passkey_removed_while_it_signs_in_leaves_no_session() {
    let h = harness();
    let id = a_raced_sign_in_keeps_no_session(&h, &h.removal.armed).await;
    assert!(h.store.list(&id).await.unwrap().is_empty());
}

/// The second step checks the counter stored when the answer comes, not
/// the copy taken when its ceremony began: a clone that answers a pending
/// challenge after the real authenticator moved the counter on is refused.
#[tokio::test]
async fn a_second_step_checks_the_counter_stored_when_it_is_answered() {
    let h = harness();
    let mut key = SoftAuthenticator::with_counter(ORIGIN);
    let (id, _, _) = user_with_passkey(&h, "alice", &mut key).await;
    logged_in(passwordless(&h, &mut key).await);
    let snapshot = key.passkeys().clone();
    let mut session = pending(&h, "alice").await;
    let options = h
        .auth
        .begin_passkey_sign_in(&mut session, &client())
        .await
        .unwrap();
    // The real authenticator meanwhile: the stored counter moves to 2.
    logged_in(passwordless(&h, &mut key).await);
    assert_eq!(stored_counter(&stored(&h, &id).await), 2);
    // A clone of it as it was after the first use counts 2 again.
    *key.passkeys() = snapshot;
    h.events.clear();
    let assertion = key.get(&options).await.unwrap();
    refused(
        h.auth
            .finish_passkey_sign_in(&mut session, &assertion, &client())
            .await,
    );
    assert!(h.events.has(AuthEventKind::PasskeyCounterRegressed, None));
    assert_eq!(stored_counter(&stored(&h, &id).await), 2);
}

/// A counter that does not go forward is refused and audited as
/// PasskeyCounterRegressed: an authenticator rolled back to an earlier
/// state (a clone), and a stored counter ahead of the authenticator's.
#[tokio::test]
async fn a_counter_that_goes_backwards_is_refused() {
    let h = harness();
    let mut key = SoftAuthenticator::with_counter(ORIGIN);
    let (id, _, _) = user_with_passkey(&h, "alice", &mut key).await;
    logged_in(passwordless(&h, &mut key).await);
    let snapshot = key.passkeys().clone();
    logged_in(passwordless(&h, &mut key).await);
    assert_eq!(stored_counter(&stored(&h, &id).await), 2);

    // A clone of the key as it was after the first use: its next
    // signature counts 2 again.
    *key.passkeys() = snapshot.clone();
    h.events.clear();
    let before = stored(&h, &id).await;
    // Later, so a use recorded by the refused answer would show in
    // `last_used_at`.
    h.clock.advance(Duration::from_secs(60));
    refused(passwordless(&h, &mut key).await);
    assert!(
        h.events.has(
            AuthEventKind::PasskeyCounterRegressed,
            Some(FailureReason::CounterRegressed)
        ),
        "{:?}",
        h.events.all()
    );
    assert_eq!(stored(&h, &id).await, before, "nothing recorded");

    // As the second step too (rolled back again: the refused attempt
    // moved the device's counter on).
    *key.passkeys() = snapshot;
    h.events.clear();
    let mut session = pending(&h, "alice").await;
    let options = h
        .auth
        .begin_passkey_sign_in(&mut session, &client())
        .await
        .unwrap();
    let assertion = key.get(&options).await.unwrap();
    refused(
        h.auth
            .finish_passkey_sign_in(&mut session, &assertion, &client())
            .await,
    );
    assert!(h.events.has(AuthEventKind::PasskeyCounterRegressed, None));

    // The store ahead of a device that was not rolled back.
    let mut fresh = SoftAuthenticator::with_counter(ORIGIN);
    let (bob, _, _) = user_with_passkey(&h, "bob", &mut fresh).await;
    logged_in(passwordless(&h, &mut fresh).await);
    let current = stored(&h, &bob).await;
    let mut credential: Value = serde_json::from_str(&current.credential).unwrap();
    credential["cred"]["counter"] = json!(100);
    assert!(
        h.store
            .record_use(
                &current.credential_id,
                &current.credential,
                &credential.to_string(),
                current.backed_up,
                h.clock.now(),
            )
            .await
            .unwrap()
    );
    h.events.clear();
    refused(passwordless(&h, &mut fresh).await);
    assert!(h.events.has(AuthEventKind::PasskeyCounterRegressed, None));
    assert_eq!(stored_counter(&stored(&h, &bob).await), 100);
}

// ---- removal, other users ------------------------------------------------------

/// A removed passkey signs in no more, passwordless or as a second step;
/// without a second factor left, the recovery codes go and the password
/// alone logs in.
#[tokio::test]
async fn a_removed_passkey_no_longer_signs_in() {
    let h = harness();
    let mut phone = SoftAuthenticator::new(ORIGIN);
    let (id, mut session, code) = user_with_passkey(&h, "alice", &mut phone).await;
    let mut key = SoftAuthenticator::new(ORIGIN);
    let added = add_passkey(
        &h,
        &mut session,
        &mut key,
        &password_proof().with_code(code),
        "Key",
    )
    .await
    .unwrap();
    let phone_id = stored_ids(&h, &id)
        .await
        .into_iter()
        .find(|i| *i != added.passkey.id())
        .unwrap();
    let codes = h.auth.recovery_codes_left(&session).await.unwrap();
    assert_eq!(codes, 9);
    // Proof with another recovery code: the first one is used up.
    let code = fresh_recovery_code(&h, &id).await;
    assert!(
        h.auth
            .remove_passkey(
                &mut session,
                &phone_id,
                &password_proof().with_code(code),
                &client()
            )
            .await
            .unwrap()
    );
    assert!(h.events.has(AuthEventKind::PasskeyRemoved, None));
    refused(passwordless(&h, &mut phone).await);
    assert!(h.events.has(
        AuthEventKind::LoginFailed,
        Some(FailureReason::UnknownCredential)
    ));
    // As the second step: the options list the key only; the phone answers
    // anyway (a client that ignores the allow list).
    let mut second_step = pending(&h, "alice").await;
    let options = h
        .auth
        .begin_passkey_sign_in(&mut second_step, &client())
        .await
        .unwrap();
    assert_eq!(
        options["publicKey"]["allowCredentials"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let assertion = phone.get(&without_allow_list(&options)).await.unwrap();
    refused(
        h.auth
            .finish_passkey_sign_in(&mut second_step, &assertion, &client())
            .await,
    );
    logged_in(passwordless(&h, &mut key).await);

    // The last one: no second factor left.
    let code = fresh_recovery_code(&h, &id).await;
    assert!(
        h.auth
            .remove_passkey(
                &mut session,
                &added.passkey.id(),
                &password_proof().with_code(code),
                &client()
            )
            .await
            .unwrap()
    );
    refused(passwordless(&h, &mut key).await);
    assert_eq!(h.auth.recovery_codes_left(&session).await.unwrap(), 0);
    assert!(matches!(
        password_login(&h, "alice").await,
        LoginOutcome::LoggedIn(_)
    ));
}

async fn stored_ids(h: &Harness, user_id: &str) -> Vec<String> {
    h.store
        .list(user_id)
        .await
        .unwrap()
        .iter()
        .map(StoredPasskey::id)
        .collect()
}

/// Replaces the user's recovery codes with fresh ones and answers one (the
/// account store, behind the flows' back: the proof needs an unused one).
async fn fresh_recovery_code(h: &Harness, user_id: &str) -> String {
    use auth_core::account::AccountStore;
    let codes = auth_core::mfa::RecoveryCodes::generate(user_id).unwrap();
    h.accounts
        .replace_recovery_codes(user_id, codes.hashes())
        .await
        .unwrap();
    codes.codes()[0].to_owned()
}

/// The options as a client that ignores the allow list would use them.
fn without_allow_list(options: &Value) -> Value {
    let mut options = options.clone();
    options["publicKey"]["allowCredentials"] = json!([]);
    options
}

/// Another user's credential: presented in this user's second step, or
/// with a user handle that is not its stored owner's, it is refused.
#[tokio::test]
async fn another_users_credential_is_refused() {
    let h = harness();
    let mut alice_phone = SoftAuthenticator::new(ORIGIN);
    let (alice, _, _) = user_with_passkey(&h, "alice", &mut alice_phone).await;
    let mut bob_phone = SoftAuthenticator::new(ORIGIN);
    let (bob, _, _) = user_with_passkey(&h, "bob", &mut bob_phone).await;

    // Bob's passkey in Alice's second step.
    let mut session = pending(&h, "alice").await;
    let options = h
        .auth
        .begin_passkey_sign_in(&mut session, &client())
        .await
        .unwrap();
    assert!(
        bob_phone.get(&options).await.is_err(),
        "not in the allow list"
    );
    let assertion = bob_phone.get(&without_allow_list(&options)).await.unwrap();
    h.events.clear();
    refused(
        h.auth
            .finish_passkey_sign_in(&mut session, &assertion, &client())
            .await,
    );
    assert!(matches!(session.auth_state(), AuthState::MfaPending { .. }));
    let event = h
        .events
        .all()
        .into_iter()
        .find(|e| e.kind == AuthEventKind::LoginFailed)
        .unwrap();
    assert_eq!(event.user_id.as_deref(), Some(alice.as_str()));
    assert_eq!(event.reason, Some(FailureReason::UnknownCredential));
    assert_eq!(stored(&h, &bob).await.last_used_at, None, "bob's untouched");

    // A discoverable assertion of Alice's credential that names Bob (the
    // user handle is not signed), or no one.
    let (_, options) = begin_passwordless(&h).await;
    let bob_handle = bob_phone.get(&options).await.unwrap()["response"]["userHandle"].clone();
    for handle in [bob_handle, Value::Null] {
        let (mut anonymous, options) = begin_passwordless(&h).await;
        let mut assertion = alice_phone.get(&options).await.unwrap();
        assert_ne!(assertion["response"]["userHandle"], handle);
        assertion["response"]["userHandle"] = handle.clone();
        refused(
            h.auth
                .finish_passkey_sign_in(&mut anonymous, &assertion, &client())
                .await,
        );
        assert!(anonymous.authenticated_user().is_none());
    }
    assert_eq!(stored(&h, &alice).await.last_used_at, None);
    // Untampered, it works.
    let session = logged_in(passwordless(&h, &mut alice_phone).await);
    assert_eq!(session.authenticated_user(), Some(alice.as_str()));
}

// ---- the second factor without the first ----------------------------------------

/// Without the password step a passkey is never the *second* factor: an
/// anonymous session gets the discoverable ceremony (user verification
/// required, so an assertion without it is refused), and a second-step
/// answer needs a live pending session.
#[tokio::test]
async fn no_second_step_without_the_password() {
    let h = harness();
    let mut phone = SoftAuthenticator::new(ORIGIN);
    let (id, _, _) = user_with_passkey(&h, "alice", &mut phone).await;

    // The discoverable ceremony on an anonymous session, answered without
    // user verification (a client that lowers the requirement).
    let (mut anonymous, options) = begin_passwordless(&h).await;
    assert_eq!(options["publicKey"]["userVerification"], "required");
    let assertion = phone.get(&lowered(&options)).await.unwrap();
    refused(
        h.auth
            .finish_passkey_sign_in(&mut anonymous, &assertion, &client())
            .await,
    );
    assert!(matches!(anonymous.auth_state(), AuthState::Anonymous));

    // A finish with no ceremony started.
    let mut fresh = h.auth.anonymous_session(&client()).await.unwrap();
    let (_, options) = begin_passwordless(&h).await;
    let assertion = phone.get(&options).await.unwrap();
    let result = h
        .auth
        .finish_passkey_sign_in(&mut fresh, &assertion, &client())
        .await;
    assert!(
        matches!(result, Err(AuthError::PasskeyCeremony)),
        "{result:?}"
    );

    // A second-step ceremony whose pending state has expired.
    let mut session = pending(&h, "alice").await;
    let options = h
        .auth
        .begin_passkey_sign_in(&mut session, &client())
        .await
        .unwrap();
    let assertion = phone.get(&options).await.unwrap();
    h.clock.advance(Duration::from_secs(5 * 60 + 1));
    let result = h
        .auth
        .finish_passkey_sign_in(&mut session, &assertion, &client())
        .await;
    assert!(
        !matches!(result, Ok(LoginOutcome::LoggedIn(_))),
        "an expired pending session completed: {result:?}"
    );

    // The passwordless sign-in itself is one factor's session, never
    // `[Password, Passkey]`.
    let session = logged_in(passwordless(&h, &mut phone).await);
    assert_eq!(factors(&session), [Factor::Passkey]);
    assert_eq!(session.authenticated_user(), Some(id.as_str()));
}

// ---- throttling --------------------------------------------------------------------

/// Failed assertions count against the user's second-factor throttle:
/// after the free failures, even a good assertion is Throttled, by either
/// path, from another address too.
#[tokio::test]
async fn failed_assertions_are_throttled() {
    let h = harness();
    let mut phone = SoftAuthenticator::new(ORIGIN);
    user_with_passkey(&h, "alice", &mut phone).await;
    let mut anonymous = h.auth.anonymous_session(&client()).await.unwrap();
    let mut throttled = None;
    for attempt in 0..10 {
        let options = h
            .auth
            .begin_passkey_sign_in(&mut anonymous, &client())
            .await
            .unwrap();
        let mut assertion = phone.get(&options).await.unwrap();
        assertion["response"]["signature"] = json!("AAAA");
        match h
            .auth
            .finish_passkey_sign_in(&mut anonymous, &assertion, &client())
            .await
        {
            Err(AuthError::PasskeyRefused) => {}
            Err(AuthError::Throttled { .. }) => {
                throttled = Some(attempt);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    let attempt = throttled.expect("throttled within 10 bad assertions");
    assert!(attempt >= 5, "after the free failures: {attempt}");
    assert!(
        h.events
            .has(AuthEventKind::Throttled, Some(FailureReason::AccountLocked))
    );
    // A good one now: still throttled, passwordless and second step, from
    // another address too.
    let other = client_at("198.51.100.7");
    let mut anonymous = h.auth.anonymous_session(&other).await.unwrap();
    let options = h
        .auth
        .begin_passkey_sign_in(&mut anonymous, &other)
        .await
        .unwrap();
    let assertion = phone.get(&options).await.unwrap();
    let result = h
        .auth
        .finish_passkey_sign_in(&mut anonymous, &assertion, &other)
        .await;
    assert!(
        matches!(result, Err(AuthError::Throttled { .. })),
        "{result:?}"
    );
    let mut session = pending(&h, "alice").await;
    let options = h
        .auth
        .begin_passkey_sign_in(&mut session, &client())
        .await
        .unwrap();
    let assertion = phone.get(&options).await.unwrap();
    let result = h
        .auth
        .finish_passkey_sign_in(&mut session, &assertion, &client())
        .await;
    assert!(
        matches!(result, Err(AuthError::Throttled { .. })),
        "{result:?}"
    );
    // The lock passes.
    h.clock.advance(Duration::from_secs(60 * 60));
    logged_in(passwordless(&h, &mut phone).await);
}

// ---- user verification ------------------------------------------------------------

/// User verification: required at registration and passwordless; the
/// second step's options only prefer it, yet a passkey registered with
/// verification must verify again (webauthn-rs holds it to its
/// registration), so an answer without it is refused on every path.
#[tokio::test]
async fn an_answer_without_user_verification_is_refused() {
    let h = harness();
    let (id, mut session) = signed_up(&h, "alice").await;
    let mut phone = SoftAuthenticator::new(ORIGIN);
    let options = h
        .auth
        .begin_passkey_registration(&mut session, &password_proof(), &client())
        .await
        .unwrap();
    let credential = phone.create(&lowered(&options)).await.unwrap();
    let err = h
        .auth
        .finish_passkey_registration(&mut session, "Phone", &credential, &client())
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::PasskeyRefused), "{err:?}");
    assert!(h.store.list(&id).await.unwrap().is_empty());

    let mut phone = SoftAuthenticator::new(ORIGIN);
    add_passkey(&h, &mut session, &mut phone, &password_proof(), "Phone")
        .await
        .unwrap();
    let (mut anonymous, options) = begin_passwordless(&h).await;
    let assertion = phone.get(&lowered(&options)).await.unwrap();
    refused(
        h.auth
            .finish_passkey_sign_in(&mut anonymous, &assertion, &client())
            .await,
    );

    let mut second_step = pending(&h, "alice").await;
    let options = h
        .auth
        .begin_passkey_sign_in(&mut second_step, &client())
        .await
        .unwrap();
    let assertion = phone.get(&lowered(&options)).await.unwrap();
    refused(
        h.auth
            .finish_passkey_sign_in(&mut second_step, &assertion, &client())
            .await,
    );
    assert!(matches!(
        second_step.auth_state(),
        AuthState::MfaPending { .. }
    ));
    assert_eq!(stored(&h, &id).await.last_used_at, None);
}

/// The options as a client that skips user verification uses them.
fn lowered(options: &Value) -> Value {
    let mut options = options.clone();
    let public_key = &mut options["publicKey"];
    if public_key.get("authenticatorSelection").is_some() {
        public_key["authenticatorSelection"]["userVerification"] = json!("discouraged");
    } else {
        public_key["userVerification"] = json!("discouraged");
    }
    options
}

/// A stand-in passkey row of `user_id` (only counted, never used).
fn filler(user_id: &str, n: u8, h: &Harness) -> StoredPasskey {
    StoredPasskey {
        credential_id: vec![0xf0, n],
        user_id: user_id.to_owned(),
        name: format!("filler {n}"),
        credential: "{}".to_owned(),
        created_at: h.clock.now(),
        last_used_at: None,
        backup_eligible: false,
        backed_up: false,
    }
}

/// An account keeps at most `MAX_PASSKEYS`: one more is refused before
/// the proof (no recovery code spent), and at the finish too, for a
/// ceremony begun below the cap.
#[tokio::test]
async fn an_account_keeps_a_bounded_number_of_passkeys() {
    let h = harness();
    let mut key = SoftAuthenticator::new(ORIGIN);
    let (id, mut session, code) = user_with_passkey(&h, "alice", &mut key).await;
    let max = u8::try_from(MAX_PASSKEYS).unwrap();
    for n in 1..max {
        h.store.insert(&filler(&id, n, &h)).await.unwrap();
    }
    let left = h.auth.recovery_codes_left(&session).await.unwrap();
    let refused = h
        .auth
        .begin_passkey_registration(&mut session, &password_proof().with_code(code), &client())
        .await;
    assert!(
        matches!(refused, Err(AuthError::TooManyPasskeys)),
        "{refused:?}"
    );
    assert_eq!(refused.unwrap_err().status(), 409);
    assert_eq!(
        h.auth.recovery_codes_left(&session).await.unwrap(),
        left,
        "no code spent"
    );

    // One below the cap: a ceremony begins; another passkey lands meanwhile.
    assert!(h.store.delete(&id, &[0xf0, 1]).await.unwrap());
    let code = fresh_recovery_code(&h, &id).await;
    let options = h
        .auth
        .begin_passkey_registration(&mut session, &password_proof().with_code(code), &client())
        .await
        .unwrap();
    h.store.insert(&filler(&id, 1, &h)).await.unwrap();
    let mut another = SoftAuthenticator::new(ORIGIN);
    let credential = another.create(&options).await.unwrap();
    let refused = h
        .auth
        .finish_passkey_registration(&mut session, "one too many", &credential, &client())
        .await;
    assert!(
        matches!(refused, Err(AuthError::TooManyPasskeys)),
        "{refused:?}"
    );
    assert_eq!(h.store.count(&id).await.unwrap(), MAX_PASSKEYS);
}

/// Removing a passkey the user does not have spends no proof: a
/// passkey-only account's recovery codes are its proofs.
#[tokio::test]
async fn removing_no_passkey_spends_no_recovery_code() {
    let h = harness();
    let mut key = SoftAuthenticator::new(ORIGIN);
    let (id, mut session, code) = user_with_passkey(&h, "alice", &mut key).await;
    let mut other = SoftAuthenticator::new(ORIGIN);
    let (bob, _, _) = user_with_passkey(&h, "bob", &mut other).await;
    let bobs = stored_ids(&h, &bob).await;
    let left = h.auth.recovery_codes_left(&session).await.unwrap();
    for id in ["", "not base64!", "AAAA", bobs[0].as_str()] {
        let removed = h
            .auth
            .remove_passkey(
                &mut session,
                id,
                &password_proof().with_code(code.clone()),
                &client(),
            )
            .await
            .unwrap();
        assert!(!removed, "{id:?}");
    }
    assert_eq!(h.auth.recovery_codes_left(&session).await.unwrap(), left);
    assert_eq!(h.store.count(&bob).await.unwrap(), 1, "bob's stays");
    assert_eq!(h.store.count(&id).await.unwrap(), 1);
}

/// Passkeys need a secure origin: `https`, or `http` on localhost only.
#[test]
fn an_http_origin_is_refused_beyond_localhost() {
    assert!(Passkeys::builder("example.com", "http://example.com").is_err());
    assert!(Passkeys::builder("example.com", "http://app.example.com:8080").is_err());
    assert!(Passkeys::builder("example.com", "ftp://example.com").is_err());
    assert!(Passkeys::builder("example.com", "https://example.com").is_ok());
    assert!(Passkeys::builder("localhost", "http://localhost:3000").is_ok());
    assert!(Passkeys::builder("app.localhost", "http://app.localhost").is_ok());
}

/// Turning TOTP off keeps the recovery codes of an account that still has
/// a passkey: they are the proof of its next factor change. (Before, they
/// went with TOTP, and such an account could change no factor again.)
#[tokio::test]
async fn turning_totp_off_keeps_a_passkey_accounts_recovery_codes() {
    use auth_core::account::AccountStore;
    let h = harness();
    let mut phone = SoftAuthenticator::new(ORIGIN);
    let (id, mut session, _) = user_with_passkey(&h, "alice", &mut phone).await;
    // TOTP on as well (in the account store: no MFA key in this harness).
    assert!(
        h.accounts
            .set_pending_totp(&id, "v1.test.not-a-real-secret")
            .await
            .unwrap()
    );
    assert!(
        h.accounts
            .confirm_totp(&id, "v1.test.not-a-real-secret", 0, &[])
            .await
            .unwrap()
    );
    // One set of codes for both factors, as the flows leave it.
    let code = fresh_recovery_code(&h, &id).await;
    let left = h.accounts.recovery_codes_left(&id).await.unwrap();
    h.auth
        .disable_totp(
            &mut session,
            &FactorProof::password(Password::from(PASSWORD)).with_code(&code),
            &client(),
        )
        .await
        .unwrap();
    assert_eq!(
        h.accounts.recovery_codes_left(&id).await.unwrap(),
        left - 1,
        "only the code given as proof is spent"
    );
    assert!(left > 1);
}

/// A memory throttle that records which accounts a device was made known
/// for (`record_success` with a device).
#[derive(Debug)]
struct DeviceLog {
    inner: auth_core::rate_limit::MemoryThrottle,
    remembered: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl auth_core::rate_limit::ThrottleBackend for DeviceLog {
    fn config(&self) -> &ThrottleConfig {
        self.inner.config()
    }

    async fn check(
        &self,
        attempt: &auth_core::rate_limit::Attempt<'_>,
        now: Timestamp,
    ) -> Result<auth_core::rate_limit::Decision, auth_core::rate_limit::ThrottleError> {
        self.inner.check(attempt, now).await
    }

    async fn check_ip(
        &self,
        ip: IpAddr,
        now: Timestamp,
    ) -> Result<auth_core::rate_limit::Decision, auth_core::rate_limit::ThrottleError> {
        self.inner.check_ip(ip, now).await
    }

    async fn record_success(
        &self,
        account: &str,
        device: Option<&auth_core::rate_limit::DeviceKey>,
        now: Timestamp,
    ) -> Result<(), auth_core::rate_limit::ThrottleError> {
        if device.is_some() {
            self.remembered.lock().unwrap().push(account.to_owned());
        }
        self.inner.record_success(account, device, now).await
    }

    async fn record_partial_success(
        &self,
        account: &str,
        device: Option<&auth_core::rate_limit::DeviceKey>,
        now: Timestamp,
    ) -> Result<(), auth_core::rate_limit::ThrottleError> {
        self.inner
            .record_partial_success(account, device, now)
            .await
    }

    async fn unlock(&self, account: &str) -> Result<(), auth_core::rate_limit::ThrottleError> {
        self.inner.unlock(account).await
    }
}

/// A passwordless sign-in makes its device known only once the sign-in
/// is made: a disabled user's verified assertion leaves it unknown.
#[tokio::test]
async fn a_refused_passwordless_sign_in_makes_no_device_known() {
    let log = Arc::new(DeviceLog {
        inner: auth_core::rate_limit::MemoryThrottle::new(
            ThrottleConfig::default(),
            Arc::new(ManualClock::starting_now()),
        ),
        remembered: Mutex::default(),
    });
    let h = harness_on(ThrottleConfig::default(), Some(log.clone()));
    let mut phone = SoftAuthenticator::new(ORIGIN);
    let (id, _, _) = user_with_passkey(&h, "alice", &mut phone).await;
    let mut browser = client();
    browser.device = Some(auth_core::session::SessionId::generate().unwrap());
    log.remembered.lock().unwrap().clear();
    h.users.set_disabled(&id, true).unwrap();
    refused(passwordless_from(&h, &mut phone, &browser).await);
    assert_eq!(
        *log.remembered.lock().unwrap(),
        Vec::<String>::new(),
        "no device made known for a refused sign-in"
    );
    h.users.set_disabled(&id, false).unwrap();
    logged_in(passwordless_from(&h, &mut phone, &browser).await);
    assert_eq!(
        log.remembered.lock().unwrap().len(),
        1,
        "the device is known once the sign-in is made"
    );
}
