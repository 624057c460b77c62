//! Passkeys (WebAuthn credentials), feature `passkeys`: webauthn-rs 0.6
//! (pure Rust) as the relying party, [`Passkeys`] to configure it, and
//! the flows on the [`Authenticator`](crate::Authenticator)
//! (`begin_passkey_registration`, `finish_passkey_registration`,
//! `list_passkeys`, `rename_passkey`, `remove_passkey`,
//! `begin_passkey_sign_in`, `finish_passkey_sign_in`; see the flow docs
//! for the rules: single-use challenges bound to the session for 5
//! minutes, discoverable credentials with user verification, counters and
//! backup flags updated on every use, a counter that goes backwards
//! refused and audited, failed assertions throttled like passwords).
//!
//! # Storage
//!
//! The toolkit keeps each user's passkeys in a store of its own, keyed by
//! the credential id and naming the user by the app's user id as text:
//!
//! * [`StoredPasskey`]: one passkey: its credential id (raw bytes, unique
//!   across all users; [`StoredPasskey::id`] is its base64url handle for
//!   URLs), owner, name, the credential as the WebAuthn library serialises
//!   it (an opaque JSON string here), when it was registered and last
//!   used, and its backup flags. `Debug` never prints the credential.
//! * [`PasskeyStore`]: insert (never overwrites: a credential id belongs
//!   to one user only), list (oldest first), find by credential id, count,
//!   rename and delete (scoped to the owner), and
//!   [`record_use`](PasskeyStore::record_use), a compare-and-set on the
//!   stored credential, so of concurrent uses only one writes and a stale
//!   signature counter never overwrites a newer one.
//! * Ready stores, all running one shared suite (features `passkeys` and
//!   `testing`: `auth_core::testing::passkey_store_suite`):
//!   [`MemoryPasskeyStore`] (tests and demos), and with features `sqlite` /
//!   `postgres` `SqlitePasskeyStore` / `PostgresPasskeyStore` (table
//!   `auth_passkeys`, created or migrated on open).
//!
//! There is no Redis store: passkeys are durable account data (losing one
//! locks its user out), not state that may expire or be evicted.

// ---- The relying party --------------------------------------------------------

pub(crate) mod service;

pub use service::{CEREMONY_TIMEOUT, PasskeyConfigError, Passkeys, PasskeysBuilder};

/// The credential id a passkey's public handle ([`StoredPasskey::id`])
/// names.
pub(crate) fn parse_id(id: &str) -> Option<Vec<u8>> {
    StoredPasskey::decode_id(id)
}

// ---- Storage ----------------------------------------------------------------

mod store;

#[cfg(feature = "postgres")]
pub use store::PostgresPasskeyStore;
#[cfg(feature = "sqlite")]
pub use store::SqlitePasskeyStore;
pub use store::{
    MAX_CREDENTIAL_ID_BYTES, MemoryPasskeyStore, PasskeyStore, PasskeyStoreError, StoredPasskey,
};
