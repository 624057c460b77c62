//! Tokens for API and mobile clients (feature `jwt`): short-lived signed
//! access tokens (JWT) and rotating refresh tokens (RFC 9700).
//!
//! * **Access tokens** ([`jwt`]) are JWTs signed asymmetrically (ES256 by
//!   default; EdDSA and RS256 available; no shared-secret HMAC), with
//!   `iss`, `aud`, `sub`, `iat`, `nbf`, `exp`, `jti`, the sign-in's family
//!   (`sid`), when it authenticated (`auth_time`) and how (`amr`), and the
//!   header `typ: at+jwt`. They live 15 minutes by default (15 to 60).
//!   Verification takes the algorithm from the key the `kid` names, never
//!   from the header, and refuses `jwk`/`jku`/`x5u`/`x5c`/`crit` headers,
//!   a wrong issuer or audience, and expired or not-yet-valid tokens (at
//!   most 60 s of leeway).
//! * **Keys**: [`KeySet`](jwt::KeySet) holds the signing key and the
//!   retired public keys; [`TokenService::rotate_key`] signs with a new key
//!   at once and keeps the old public key published
//!   ([`TokenService::jwks`]) and verifying until every token it signed has
//!   expired.
//! * **Refresh tokens** ([`refresh`]) are opaque (384 bits), stored as
//!   SHA-256, one family per sign-in (one stored record, however often it
//!   rotates), rotated on every use. Presenting a
//!   spent one revokes its whole family. Families end at their absolute
//!   lifetime, when idle too long, and at logout, a password change, sign
//!   out everywhere, a factor change, a password reset and
//!   [`sign_out_user`](crate::Authenticator::sign_out_user).
//! * **Revocation of access tokens** is checked on every request by
//!   default (one read of the refresh store): a revoked family's access
//!   tokens are refused at once. Turned off
//!   ([`TokenConfigBuilder::insecure_skip_revocation_check`]), a token lives until it
//!   expires.
//!
//! The web pipeline takes `Authorization: Bearer` on every route (see
//! [`Auth::begin`](crate::web::Auth::begin) for the rule when a request
//! carries both a token and a cookie).

pub mod jwt;
pub mod refresh;
pub(crate) mod service;

pub use service::{
    MAX_ACCESS_LIFETIME, MAX_GRACE, MAX_LEEWAY, MIN_ACCESS_LIFETIME, TokenConfig,
    TokenConfigBuilder, TokenConfigError, TokenService,
};
