//! A software passkey authenticator for tests: 1Password's
//! `passkey-authenticator` (in-memory, discoverable credentials, user
//! verification) behind its WebAuthn client (`passkey-client`), driven with
//! the JSON a relying party sends (`{"publicKey": ...}`) and answering the
//! JSON a browser posts back (`PublicKeyCredential.toJSON()`: bytes as
//! unpadded base64url).
//!
//! The two conversions are plain functions, [`create`] and [`get`]: options
//! JSON -> `passkey_types` request -> the client's ceremony -> answer JSON.
//! auth-core's own passkey tests include this file too (by path).
//! [`SoftAuthenticator`] wraps them for one device.
//!
//! What the client insists on (passkey-client 0.6): the origin is `https`
//! (only `localhost` may be `http`, and only with
//! `allows_insecure_localhost`), the relying party id is the origin's host
//! or a registrable parent of it, and not a public suffix. So an origin of
//! another site cannot be tried through it; a sibling origin can (a
//! subdomain of the relying party id, another port), which is what a
//! phishing page on a subdomain looks like to the relying party.

use async_trait::async_trait;
use passkey_authenticator::{
    Authenticator, CredentialStore, DiscoverabilitySupport, StoreInfo, UiHint, UserCheck,
    UserValidationMethod,
};
use passkey_client::{Client, DefaultClientData};
use passkey_crypto::rust_crypto::RustCryptoBackend;
use passkey_types::Passkey;
use passkey_types::ctap2::make_credential::{
    Options, PublicKeyCredentialRpEntity, PublicKeyCredentialUserEntity,
};
use passkey_types::ctap2::{Aaguid, Ctap2Error, StatusCode};
use passkey_types::webauthn::{
    CredentialCreationOptions, CredentialRequestOptions, PublicKeyCredentialDescriptor,
};
use serde_json::Value;
use url::Url;

/// The authenticator's credentials: a list, newest first, that answers a
/// request without an allow list with every credential of the relying
/// party (what makes them discoverable; passkey-authenticator's own
/// `MemoryStore` finds credentials only by id).
#[derive(Debug, Default, Clone)]
pub struct SoftStore {
    /// The credentials, newest first.
    pub passkeys: Vec<Passkey>,
}

#[async_trait]
impl CredentialStore for SoftStore {
    type PasskeyItem = Passkey;

    async fn find_credentials(
        &self,
        ids: Option<&[PublicKeyCredentialDescriptor]>,
        rp_id: &str,
        _user_handle: Option<&[u8]>,
    ) -> Result<Vec<Passkey>, StatusCode> {
        let found: Vec<Passkey> = self
            .passkeys
            .iter()
            .filter(|p| p.rp_id == rp_id)
            .filter(|p| match ids {
                Some(ids) => ids.iter().any(|d| *d.id == *p.credential_id),
                None => true,
            })
            .cloned()
            .collect();
        if found.is_empty() {
            Err(Ctap2Error::NoCredentials.into())
        } else {
            Ok(found)
        }
    }

    async fn save_credential(
        &mut self,
        cred: Passkey,
        _user: PublicKeyCredentialUserEntity,
        _rp: PublicKeyCredentialRpEntity,
        _options: Options,
    ) -> Result<(), StatusCode> {
        self.passkeys
            .retain(|p| p.credential_id != cred.credential_id);
        self.passkeys.insert(0, cred);
        Ok(())
    }

    async fn update_credential(&mut self, cred: &Passkey) -> Result<(), StatusCode> {
        for stored in &mut self.passkeys {
            if stored.credential_id == cred.credential_id {
                *stored = cred.clone();
            }
        }
        Ok(())
    }

    async fn get_info(&self) -> StoreInfo {
        StoreInfo {
            discoverability: DiscoverabilitySupport::Full,
        }
    }
}

/// The user at the authenticator: present, and verified whenever
/// verification is asked for (a fingerprint or PIN that always succeeds;
/// not asked, it reports none). Told that a credential in the request's
/// exclude list is here already, it stops, as a platform's dialog does
/// (passkey-authenticator leaves that decision to this hook).
#[derive(Debug, Clone, Copy)]
pub struct SoftUser;

#[async_trait]
impl UserValidationMethod for SoftUser {
    type PasskeyItem = Passkey;

    async fn check_user<'a>(
        &self,
        hint: UiHint<'a, Passkey>,
        presence: bool,
        verification: bool,
    ) -> Result<UserCheck, Ctap2Error> {
        if let UiHint::InformExcludedCredentialFound(_) = hint {
            return Err(Ctap2Error::CredentialExcluded);
        }
        Ok(UserCheck {
            presence: presence || verification,
            verification,
        })
    }

    fn is_presence_enabled(&self) -> bool {
        true
    }

    fn is_verification_enabled(&self) -> Option<bool> {
        Some(true)
    }
}

/// The client type the helpers run.
pub type SoftClient =
    Client<SoftStore, SoftUser, RustCryptoBackend, public_suffix::PublicSuffixList, ()>;

/// A new client over an empty authenticator. `counter`: whether new
/// credentials keep a signature counter (a hardware key does; synced
/// passkeys answer 0 every time).
pub fn soft_client(counter: bool) -> SoftClient {
    let mut authenticator = Authenticator::new(
        Aaguid::new_empty(),
        SoftStore::default(),
        SoftUser,
        RustCryptoBackend,
    );
    authenticator.set_make_credentials_with_signature_counter(counter);
    Client::new(authenticator)
}

/// `navigator.credentials.create(options)` from `origin`: the relying
/// party's options JSON (`{"publicKey": ...}`) to the credential JSON it
/// verifies (`id`, `rawId`, `type`, `response.{clientDataJSON,
/// attestationObject, ...}`, `clientExtensionResults`).
pub async fn create(
    client: &mut SoftClient,
    origin: &Url,
    options: &Value,
) -> Result<Value, String> {
    let request: CredentialCreationOptions =
        serde_json::from_value(options.clone()).map_err(|e| format!("creation options: {e}"))?;
    let credential = client
        .register(origin, request, DefaultClientData)
        .await
        .map_err(|e| format!("register: {e:?}"))?;
    serde_json::to_value(&credential).map_err(|e| format!("credential: {e}"))
}

/// `navigator.credentials.get(options)` from `origin`: the relying party's
/// request options JSON (`{"publicKey": ...}`, with or without an allow
/// list; a top-level `mediation` is ignored) to the assertion JSON it
/// verifies (`response.{clientDataJSON, authenticatorData, signature,
/// userHandle}`).
pub async fn get(client: &mut SoftClient, origin: &Url, options: &Value) -> Result<Value, String> {
    let request: CredentialRequestOptions =
        serde_json::from_value(options.clone()).map_err(|e| format!("request options: {e}"))?;
    let assertion = client
        .authenticate(origin, request, DefaultClientData)
        .await
        .map_err(|e| format!("authenticate: {e:?}"))?;
    serde_json::to_value(&assertion).map_err(|e| format!("assertion: {e}"))
}

/// One software authenticator (a phone, a password manager) and the origin
/// its browser is on.
#[allow(missing_debug_implementations)]
pub struct SoftAuthenticator {
    /// The WebAuthn client over the authenticator.
    pub client: SoftClient,
    /// The origin its browser is on.
    pub origin: Url,
}

impl SoftAuthenticator {
    /// A synced-passkey-like authenticator (no signature counter) at
    /// `origin`.
    pub fn new(origin: &str) -> Self {
        Self {
            client: soft_client(false),
            origin: Url::parse(origin).expect("a valid origin"),
        }
    }

    /// A hardware-key-like authenticator that counts signatures.
    pub fn with_counter(origin: &str) -> Self {
        Self {
            client: soft_client(true),
            origin: Url::parse(origin).expect("a valid origin"),
        }
    }

    /// The same device, its browser now on another origin.
    pub fn at(&mut self, origin: &str) -> &mut Self {
        self.origin = Url::parse(origin).expect("a valid origin");
        self
    }

    /// [`create`] with this device at its origin.
    pub async fn create(&mut self, options: &Value) -> Result<Value, String> {
        create(&mut self.client, &self.origin, options).await
    }

    /// [`get`] with this device at its origin.
    pub async fn get(&mut self, options: &Value) -> Result<Value, String> {
        get(&mut self.client, &self.origin, options).await
    }

    /// The credentials the device holds.
    pub fn passkeys(&mut self) -> &mut Vec<Passkey> {
        &mut self.client.authenticator_mut().store_mut().passkeys
    }
}
