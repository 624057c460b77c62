//! [`Passkeys`]: the relying party (webauthn-rs) and the passkey store the
//! passkey flows of the [`Authenticator`](crate::Authenticator) run on.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use webauthn_rs::prelude::{Url, Uuid, Webauthn, WebauthnBuilder};

use super::PasskeyStore;
use crate::clock::Timestamp;

/// How long a ceremony (a challenge sent to the browser) stays answerable.
pub const CEREMONY_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// The relying party and the store. Built by [`Passkeys::builder`]; given
/// to [`AuthBuilder::passkeys`](crate::flow::AuthBuilder::passkeys).
pub struct Passkeys {
    webauthn: Webauthn,
    store: Arc<dyn PasskeyStore>,
}

impl std::fmt::Debug for Passkeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passkeys")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// A relying-party setting that webauthn-rs refuses.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid passkey relying party: the origin must be https (http only on localhost) and the \
     id its domain or a parent of it"
)]
pub struct PasskeyConfigError;

/// Builds [`Passkeys`].
#[must_use]
pub struct PasskeysBuilder {
    rp_id: String,
    origin: Url,
    rp_name: Option<String>,
    any_port: bool,
}

impl std::fmt::Debug for PasskeysBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasskeysBuilder")
            .field("rp_id", &self.rp_id)
            .field("origin", &self.origin.as_str())
            .finish_non_exhaustive()
    }
}

impl Passkeys {
    /// Passkeys for the relying party `rp_id` (a domain: `example.com`, or
    /// `localhost` in development; never an IP address), used from
    /// `origin` (`https://app.example.com`; `http://localhost:3000` in
    /// development: browsers treat localhost as a secure context). An
    /// `http` origin on any other host is refused: browsers offer no
    /// WebAuthn there, and its ceremonies would run unencrypted.
    pub fn builder(rp_id: &str, origin: &str) -> Result<PasskeysBuilder, PasskeyConfigError> {
        let origin = Url::parse(origin).map_err(|_| PasskeyConfigError)?;
        let localhost = origin
            .host_str()
            .is_some_and(|host| host == "localhost" || host.ends_with(".localhost"));
        match origin.scheme() {
            "https" => {}
            "http" if localhost => {}
            _ => return Err(PasskeyConfigError),
        }
        Ok(PasskeysBuilder {
            rp_id: rp_id.to_owned(),
            origin,
            rp_name: None,
            any_port: false,
        })
    }

    /// The passkey store.
    pub fn store(&self) -> &Arc<dyn PasskeyStore> {
        &self.store
    }

    pub(crate) fn webauthn(&self) -> &Webauthn {
        &self.webauthn
    }
}

impl PasskeysBuilder {
    /// The name browsers show for the relying party (default: its id).
    pub fn rp_name(mut self, name: impl Into<String>) -> Self {
        self.rp_name = Some(name.into());
        self
    }

    /// Accepts the origin's host on any port (for tests whose servers get
    /// a random port). Another service on the same host could then ask for
    /// assertions: development only; it logs a warning.
    pub fn insecure_allow_any_port(mut self) -> Self {
        self.any_port = true;
        self
    }

    /// The relying party, with passkeys kept in `store`.
    pub fn build(self, store: Arc<dyn PasskeyStore>) -> Result<Passkeys, PasskeyConfigError> {
        if self.any_port {
            tracing::warn!(
                rp_id = %self.rp_id,
                "passkeys: insecure_allow_any_port: any port of the origin's host is accepted \
                 (development only)"
            );
        }
        let mut builder =
            WebauthnBuilder::new(&self.rp_id, &self.origin).map_err(|_| PasskeyConfigError)?;
        if let Some(name) = &self.rp_name {
            builder = builder.rp_name(name);
        }
        let webauthn = builder
            .allow_any_port(self.any_port)
            .timeout(CEREMONY_TIMEOUT)
            .build()
            .map_err(|_| PasskeyConfigError)?;
        Ok(Passkeys { webauthn, store })
    }
}

/// The WebAuthn user handle of user `user_id`: 128 bits of a SHA-256 of the
/// id, so the authenticator holds nothing that names the user, and a
/// discoverable credential's handle is checked against its stored owner.
pub(crate) fn user_handle(user_id: &str) -> Uuid {
    let mut digest = Sha256::new();
    digest.update(b"auth-core passkey user handle v1\0");
    digest.update(user_id.as_bytes());
    let bytes: [u8; 32] = digest.finalize().into();
    let mut handle = [0u8; 16];
    handle.copy_from_slice(&bytes[..16]);
    Uuid::from_bytes(handle)
}

/// A ceremony in progress, kept in the session's data: its state and its
/// deadline. Taken out (deleted) by the step that answers it, so a
/// challenge is answered once. No `Debug`: the state holds the challenge.
#[derive(Serialize, Deserialize)]
pub(crate) struct Ceremony<T> {
    pub(crate) state: T,
    pub(crate) expires_at: Timestamp,
}
