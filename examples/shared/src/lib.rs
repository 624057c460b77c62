//! What the demo apps of every framework share, none of it framework code:
//! settings from the environment, the store wiring, the JSON shapes of the
//! API (described in the repository's `docs/demo-api.md`) and the HTML
//! pages.
//!
//! # Example
//!
//! What the demos print of a database URL at start-up: never its
//! credentials.
//!
//! ```
//! assert_eq!(
//!     example_shared::redact_url("postgres://app:hunter2@db:5432/auth?sslmode=require"),
//!     "postgres://[REDACTED]@db:5432/auth?[REDACTED]"
//! );
//! assert_eq!(example_shared::redact_url("sqlite://demo.db"), "sqlite://demo.db");
//! ```

use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;

use auth_core::clock::{Clock, SystemClock};
use auth_core::csrf::CsrfTokens;
use auth_core::flow::MailLinks;
use auth_core::mail::{InsecureLogMailer, MailError, Mailer, SmtpMailer};
use auth_core::mfa::MfaKeys;
use auth_core::passkey::{
    MemoryPasskeyStore, Passkeys, PasskeysBuilder, PostgresPasskeyStore, SqlitePasskeyStore,
    StoredPasskey,
};
use auth_core::password::{PasswordHasher, PasswordService};
use auth_core::rate_limit::{RedisThrottle, ThrottleConfig, TrustedProxies};
use auth_core::session::{PostgresStore, RedisStore, SessionInfo, SqliteStore};
use auth_core::single_use::{PostgresTokenStore, RedisTokenStore, SqliteTokenStore};
use auth_core::token::jwt::{Algorithm, SigningKey};
use auth_core::token::refresh::{
    MemoryRefreshStore, PostgresRefreshStore, RedisRefreshStore, RefreshStore, SqliteRefreshStore,
};
use auth_core::token::{TokenConfig, TokenService};
use auth_core::web::{AllowedHosts, SecurityHeaders};
use auth_core::{
    Auth, MemoryAccountStore, MemoryUserStore, PostgresAccountStore, PostgresUserStore,
    SqliteAccountStore, SqliteUserStore,
};
use base64ct::{Base64, Encoding};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zeroize::Zeroizing;

/// `Debug` for request bodies that carry a password, code or token: the
/// type name and its public fields, each value redacted.
macro_rules! redacted_debug {
    ($($ty:ident { $($field:ident),* }),* $(,)?) => {
        $(
            impl std::fmt::Debug for $ty {
                fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.debug_struct(stringify!($ty))
                        $(.field(stringify!($field), &"[REDACTED]"))*
                        .finish()
                }
            }
        )*
    };
}

pub mod handlers;
pub mod openapi;

/// The pages' stylesheet, served at `/static/app.css` (no inline style:
/// the pages' [`CONTENT_SECURITY_POLICY`] allows none).
pub const STYLESHEET: &str = "body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem}
form{margin:1rem 0}label{display:block;margin:.5rem 0}input{padding:.3rem;width:100%}
input[type=checkbox]{width:auto}
button{padding:.4rem 1rem}.error{color:#b00}nav a{margin-right:1rem}table{width:100%}.qr{max-width:16rem}
[hidden]{display:none!important}
b{overflow-wrap:anywhere}
";

/// The pages' one script, served at `/static/passkeys.js`: the passkey
/// ceremonies (WebAuthn) of `/account`, `/login` and `/login/mfa`, no
/// dependency, nothing inline (the [`CONTENT_SECURITY_POLICY`] allows
/// scripts from the demo itself only). Everything else on the pages works
/// without it.
pub const PASSKEYS_SCRIPT: &str = include_str!("passkeys.js");

/// The demo's `Content-Security-Policy`: nothing but its own script
/// ([`PASSKEYS_SCRIPT`], no inline script or handler) talking to itself
/// only, its own stylesheet, images from itself or inline data, forms to
/// itself, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The demo's security headers: the core's defaults with the strict
/// [`CONTENT_SECURITY_POLICY`].
pub fn security_headers() -> SecurityHeaders {
    SecurityHeaders::new().content_security_policy(CONTENT_SECURITY_POLICY)
}

/// [`security_headers`] for the demo served at `public_url`: with HSTS
/// (one year, subdomains included) when that is an `https://` URL, so a
/// browser that has seen it never goes back to plain HTTP.
pub fn security_headers_for(public_url: &str) -> SecurityHeaders {
    let headers = security_headers();
    if public_url.to_ascii_lowercase().starts_with("https://") {
        headers.hsts(std::time::Duration::from_secs(365 * 86_400))
    } else {
        headers
    }
}

/// The demo's name, refused inside passwords.
pub const APP_NAME: &str = "Auth Toolkit Demo";

/// The names of a demo on a loopback address.
pub const LOOPBACK_HOSTS: &str = "localhost, 127.0.0.1, [::1]";

/// The `Host` names of the in-memory app: the conformance suite's, and
/// loopback.
pub const TEST_HOSTS: &str = "demo.test, localhost, 127.0.0.1, [::1]";

/// Largest request body the demo accepts (bytes).
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Settings from the environment, with working defaults.
/// `Debug` shows no key and no URL that may carry a password.
#[derive(Clone)]
pub struct Settings {
    /// `DEMO_ADDR`, default `127.0.0.1:3000`.
    pub addr: SocketAddr,
    /// `DATABASE_URL`, default a SQLite file `demo.db` in the working
    /// directory.
    pub database_url: String,
    /// `REDIS_URL`: when set, sessions, throttles, refresh tokens and
    /// single-use tokens live in Redis. One node: `redis://host:port/db`.
    /// A Redis Cluster: its seed nodes, comma-separated
    /// (`redis://10.0.0.1:7000,redis://10.0.0.2:7000,redis://10.0.0.3:7000`;
    /// one seed with a trailing comma). A secret (it may hold a password):
    /// `Debug` shows only whether it is set.
    pub redis_url: Option<String>,
    /// `DEMO_TRUSTED_PROXIES`: comma-separated IPs/CIDRs.
    pub trusted_proxies: TrustedProxies,
    /// `DEMO_CSRF_KEY`: the key of the forms' CSRF tokens (at least 32
    /// bytes); random at each start when unset, so open forms need a reload
    /// after a restart.
    pub csrf_key: Option<String>,
    /// `DEMO_ALLOWED_HOSTS`: comma-separated `Host` names the demo answers
    /// to (see `AllowedHosts`). Default: `localhost, 127.0.0.1, [::1]` when
    /// it listens on a loopback address (a page on another domain that
    /// resolves to 127.0.0.1 cannot talk to it: DNS rebinding), else any.
    pub allowed_hosts: AllowedHosts,
    /// `DEMO_MFA_KEY`: the key (32 bytes, base64) that encrypts TOTP
    /// secrets at rest. When unset, a SQLite demo keeps a generated key in
    /// a file beside the database (`demo.db-mfa.key`, mode 0600); a
    /// PostgreSQL demo uses a random key per start (with a warning), so
    /// enrolments do not survive a restart.
    pub mfa_key: Option<String>,
    /// `DEMO_PUBLIC_URL`: where the links in the demo's mail point (the
    /// demo's address as its users reach it); default `http://` and
    /// `DEMO_ADDR`. `https://`, or `http://` to a loopback host: the links
    /// carry sign-in and password-reset tokens.
    pub public_url: String,
    /// `DEMO_SMTP_URL`: the SMTP server the demo's mail (password reset,
    /// address verification) goes through, see
    /// `auth_core::mail::SmtpMailer::from_url`: `smtps://user:pass@host`
    /// (TLS), `smtp://user:pass@host:587` (STARTTLS), or
    /// `smtp://127.0.0.1:1025?insecure_plaintext=true` for a development
    /// server on this machine. Unset: mail is not sent and its links are
    /// written to the log, which the demo accepts only on a loopback
    /// [`addr`](Self::addr) or with
    /// [`insecure_log_mail`](Self::insecure_log_mail). A secret (it may
    /// hold a password): `Debug` redacts it.
    pub smtp_url: Option<SecretString>,
    /// `DEMO_INSECURE_LOG_MAIL=true`: without `DEMO_SMTP_URL`, write mail
    /// (sign-in and reset links included) to the log also when the demo
    /// listens beyond loopback. Default false: such a demo refuses to start.
    pub insecure_log_mail: bool,
    /// `DEMO_MAIL_FROM`: the sender of the demo's mail; default
    /// `Auth Toolkit Demo <noreply@localhost>` (set a real one for a real
    /// server).
    pub mail_from: String,
    /// `DEMO_JWT_KEY`: the ES256 key that signs access tokens (PKCS#8 DER,
    /// base64). When unset, a SQLite demo keeps a generated key in a file
    /// beside the database (`demo.db-jwt.key`, mode 0600); a PostgreSQL
    /// demo uses a random key per start (with a warning), so tokens do not
    /// survive a restart. A secret: `Debug` redacts it.
    pub jwt_key: Option<SecretString>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |present: bool| if present { "[set]" } else { "[unset]" };
        f.debug_struct("Settings")
            .field("addr", &self.addr)
            .field("database_url", &"[REDACTED]")
            .field("redis_url", &set(self.redis_url.is_some()))
            .field("trusted_proxies", &self.trusted_proxies)
            .field("csrf_key", &set(self.csrf_key.is_some()))
            .field("allowed_hosts", &self.allowed_hosts)
            .field("mfa_key", &set(self.mfa_key.is_some()))
            .field("public_url", &self.public_url)
            .field("smtp_url", &set(self.smtp_url.is_some()))
            .field("insecure_log_mail", &self.insecure_log_mail)
            .field("mail_from", &self.mail_from)
            .field("jwt_key", &set(self.jwt_key.is_some()))
            .finish()
    }
}

impl Settings {
    /// Reads the environment.
    pub fn from_env() -> Result<Self, Box<dyn Error>> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let addr = var("DEMO_ADDR")
            .unwrap_or_else(|| "127.0.0.1:3000".to_owned())
            .parse()
            .map_err(|e| format!("DEMO_ADDR: {e}"))?;
        Ok(Self {
            addr,
            database_url: var("DATABASE_URL").unwrap_or_else(|| "sqlite://demo.db".to_owned()),
            redis_url: var("REDIS_URL"),
            trusted_proxies: TrustedProxies::parse(
                &var("DEMO_TRUSTED_PROXIES").unwrap_or_default(),
            )?,
            csrf_key: var("DEMO_CSRF_KEY"),
            allowed_hosts: match var("DEMO_ALLOWED_HOSTS") {
                Some(list) => {
                    AllowedHosts::parse(&list).map_err(|e| format!("DEMO_ALLOWED_HOSTS: {e}"))?
                }
                None if addr.ip().is_loopback() => AllowedHosts::parse(LOOPBACK_HOSTS)?,
                None => {
                    tracing::warn!(
                        "DEMO_ALLOWED_HOSTS is not set: requests for any Host name are served"
                    );
                    AllowedHosts::insecure_any()
                }
            },
            mfa_key: var("DEMO_MFA_KEY"),
            public_url: var("DEMO_PUBLIC_URL").unwrap_or_else(|| format!("http://{addr}")),
            smtp_url: var("DEMO_SMTP_URL").map(SecretString::from),
            insecure_log_mail: match var("DEMO_INSECURE_LOG_MAIL").as_deref() {
                None | Some("false") => false,
                Some("true") => true,
                Some(_) => return Err("DEMO_INSECURE_LOG_MAIL: true or false".into()),
            },
            mail_from: var("DEMO_MAIL_FROM")
                .unwrap_or_else(|| format!("{APP_NAME} <noreply@localhost>")),
            jwt_key: var("DEMO_JWT_KEY").map(SecretString::from),
        })
    }
}

/// The demo's throttle defaults (`docs/demo-api.md`): per account 5 failures
/// then a growing back-off; per IP a burst of 30, one back every 2 s.
pub fn throttle_config() -> ThrottleConfig {
    ThrottleConfig::default()
}

/// The demo's mailer: an [`SmtpMailer`] through [`Settings::smtp_url`]
/// when set (the URL and [`Settings::mail_from`] are checked here; the
/// server is first contacted by the first mail), else an
/// [`InsecureLogMailer`], which writes each mail, its link included, to
/// the log: a warning at start-up says so. That fallback is refused when
/// others can reach the demo (it listens beyond loopback, or its
/// `DEMO_PUBLIC_URL` names a host that is not loopback: a reverse proxy),
/// unless [`Settings::insecure_log_mail`] names it: the links sign in.
pub fn mailer(settings: &Settings) -> Result<Arc<dyn Mailer>, Box<dyn Error>> {
    let Some(url) = &settings.smtp_url else {
        let public_host = url::Url::parse(&settings.public_url)
            .ok()
            .and_then(|url| url.host().map(|host| host.to_owned()));
        let public_is_local = match public_host {
            Some(url::Host::Domain(name)) => name == "localhost" || name.ends_with(".localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        let reachable = !settings.addr.ip().is_loopback() || !public_is_local;
        if reachable && !settings.insecure_log_mail {
            return Err(format!(
                "DEMO_SMTP_URL is not set and others reach the demo (it listens on {}, \
                 DEMO_PUBLIC_URL is {}): sign-in and reset links would be written to the \
                 log; set DEMO_SMTP_URL, or DEMO_INSECURE_LOG_MAIL=true to accept that",
                settings.addr, settings.public_url
            )
            .into());
        }
        tracing::warn!(
            "DEMO_SMTP_URL is not set: mail is not sent; password-reset and verification \
             links are written to the log (development only)"
        );
        return Ok(Arc::new(InsecureLogMailer::new()));
    };
    let mailer = SmtpMailer::from_url(url.expose_secret(), &settings.mail_from).map_err(
        |error| match error {
            MailError::InvalidAddress(_) => format!("DEMO_MAIL_FROM: {error}"),
            error => format!("DEMO_SMTP_URL: {error}"),
        },
    )?;
    tracing::info!(server = %mailer.server(), from = %settings.mail_from, "mail goes through SMTP");
    Ok(Arc::new(mailer))
}

/// Builds the auth pipeline from the settings: SQLite (a file, created and
/// migrated) or PostgreSQL for users, second factors and sessions, Redis
/// (one node or a cluster, see [`Settings::redis_url`]) for sessions,
/// throttles, refresh tokens and single-use tokens when `REDIS_URL` is set.
pub async fn build_auth(settings: &Settings) -> Result<Auth, Box<dyn Error>> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (builder, refresh): (_, Arc<dyn RefreshStore>) =
        if settings.database_url.starts_with("postgres") {
            let store = PostgresStore::connect(&settings.database_url).await?;
            let pool = store.pool().clone();
            let builder = Auth::builder(PostgresUserStore::from_pool(pool.clone()).await?)
                .accounts(Arc::new(
                    PostgresAccountStore::from_pool(pool.clone()).await?,
                ))
                .link_tokens(Arc::new(PostgresTokenStore::from_pool(pool.clone()).await?))
                .sessions(Arc::new(store));
            let refresh = Arc::new(PostgresRefreshStore::from_pool(pool.clone()).await?);
            // Not inside the awaiting expression: its error would live
            // across the await, and the future would not be `Send`.
            let relying_party = passkeys(&settings.public_url)?;
            let store = Arc::new(PostgresPasskeyStore::from_pool(pool).await?);
            let builder = builder.passkeys(relying_party.build(store)?);
            (builder, refresh)
        } else {
            create_private_database(settings)?;
            let store = SqliteStore::connect(&settings.database_url).await?;
            let pool = store.pool().clone();
            let builder = Auth::builder(SqliteUserStore::from_pool(pool.clone()).await?)
                .accounts(Arc::new(SqliteAccountStore::from_pool(pool.clone()).await?))
                .link_tokens(Arc::new(SqliteTokenStore::from_pool(pool.clone()).await?))
                .sessions(Arc::new(store));
            let refresh = Arc::new(SqliteRefreshStore::from_pool(pool.clone()).await?);
            let relying_party = passkeys(&settings.public_url)?;
            let store = Arc::new(SqlitePasskeyStore::from_pool(pool).await?);
            let builder = builder.passkeys(relying_party.build(store)?);
            (builder, refresh)
        };
    let (builder, refresh): (_, Arc<dyn RefreshStore>) = match &settings.redis_url {
        Some(url) => (
            builder
                .sessions(Arc::new(RedisStore::connect(url).await?))
                .link_tokens(Arc::new(RedisTokenStore::connect(url).await?))
                .throttle(Arc::new(
                    RedisThrottle::connect(url, throttle_config()).await?,
                )),
            Arc::new(RedisRefreshStore::connect(url).await?),
        ),
        None => (builder.throttle_config(throttle_config()), refresh),
    };
    let tokens = TokenService::new(
        token_config(&settings.public_url)?,
        signing_key(settings)?,
        refresh,
    );
    Ok(builder
        .clock(clock)
        .app_name(APP_NAME)
        .mfa_keys(mfa_keys(settings)?)
        .tokens(tokens)
        .trusted_proxies(settings.trusted_proxies.clone())
        .form_tokens(form_tokens(settings.csrf_key.as_deref())?)
        .allowed_hosts(settings.allowed_hosts.clone())
        .security_headers(security_headers_for(&settings.public_url))
        .mail(
            mailer(settings)?,
            MailLinks::new(&settings.public_url).map_err(|e| format!("DEMO_PUBLIC_URL: {e}"))?,
        )
        .build()?)
}

/// The demo's passkey relying party for `public_url`: its host, or
/// `localhost` when that is an IP address (a relying-party id is a domain;
/// browsers treat `http://localhost` as a secure context), on its port.
pub fn passkeys(public_url: &str) -> Result<PasskeysBuilder, Box<dyn Error>> {
    let url = url::Url::parse(public_url).map_err(|e| format!("DEMO_PUBLIC_URL: {e}"))?;
    let host = url.host_str().unwrap_or("localhost");
    let (rp_id, origin) = if host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
        let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
        (
            "localhost".to_owned(),
            format!("{}://localhost{port}", url.scheme()),
        )
    } else {
        (host.to_owned(), url.origin().ascii_serialization())
    };
    let builder =
        Passkeys::builder(&rp_id, &origin).map_err(|e| format!("DEMO_PUBLIC_URL: {e}"))?;
    Ok(builder.rp_name(APP_NAME))
}

/// The audience (`aud`) of the demo's access tokens.
pub const TOKEN_AUDIENCE: &str = "auth-toolkit-demo";

/// The demo's token settings: issued by `issuer` (its public URL) for
/// [`TOKEN_AUDIENCE`], with the core's defaults (15-minute access tokens,
/// revocation checked on every request, no reuse grace).
pub fn token_config(issuer: &str) -> Result<TokenConfig, Box<dyn Error>> {
    Ok(TokenConfig::builder(issuer, TOKEN_AUDIENCE).build()?)
}

/// Where a SQLite demo keeps a generated key: beside its database file,
/// `suffix` appended; `None` for PostgreSQL or an in-memory database.
fn key_file(settings: &Settings, suffix: &str) -> Option<String> {
    sqlite_file(&settings.database_url).map(|(path, _)| format!("{path}{suffix}"))
}

/// A SQLite URL's file path and query (`sqlite://path?query` or
/// `sqlite:path`); `None` for another database or an in-memory one.
fn sqlite_file(url: &str) -> Option<(&str, &str)> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    (!path.is_empty() && !path.contains(":memory:")).then_some((path, query))
}

/// Creates a SQLite demo's database file, readable by its owner only, if
/// it does not exist yet (it holds password hashes, addresses and
/// passkeys; SQLite gives its journal files the same mode). An existing
/// file is left as it is.
fn create_private_database(settings: &Settings) -> Result<(), Box<dyn Error>> {
    let Some((path, query)) = sqlite_file(&settings.database_url) else {
        return Ok(());
    };
    // In memory or read-only: SQLite opens it as it is.
    if query
        .split('&')
        .any(|pair| pair == "mode=memory" || pair == "mode=ro")
    {
        return Ok(());
    }
    // A percent-encoded name is not this text: SQLite makes the file.
    if path.contains('%') {
        tracing::warn!(
            "DATABASE_URL: a percent-encoded SQLite file name; the file is made with the \
             process's umask, not mode 0600"
        );
        return Ok(());
    }
    let path = path.to_owned();
    match create_key_file(&path, "") {
        Err(error)
            if error
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::AlreadyExists) =>
        {
            Ok(())
        }
        other => other.map_err(|error| format!("{path}: {error}").into()),
    }
}

/// Writes a new key file, readable by its owner only; never overwrites.
fn create_key_file(path: &str, contents: &str) -> Result<(), Box<dyn Error>> {
    let mut file = std::fs::OpenOptions::new();
    file.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
    std::io::Write::write_all(&mut file.open(path)?, contents.as_bytes())?;
    Ok(())
}

/// The key that signs access tokens (see [`Settings::jwt_key`]).
fn signing_key(settings: &Settings) -> Result<SigningKey, Box<dyn Error>> {
    let parse = |text: &str, source: &str| -> Result<SigningKey, Box<dyn Error>> {
        let der = Zeroizing::new(
            Base64::decode_vec(text.trim()).map_err(|_| format!("{source}: not base64"))?,
        );
        Ok(SigningKey::from_pkcs8_der(Algorithm::Es256, &der)
            .map_err(|e| format!("{source}: {e}"))?)
    };
    if let Some(key) = &settings.jwt_key {
        return parse(key.expose_secret(), "DEMO_JWT_KEY");
    }
    let Some(path) = key_file(settings, "-jwt.key") else {
        tracing::warn!(
            "DEMO_JWT_KEY is not set: access tokens are signed with a random key that is \
             lost at exit"
        );
        return Ok(SigningKey::generate(Algorithm::Es256)?);
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => parse(&Zeroizing::new(text), &path),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let key = SigningKey::generate(Algorithm::Es256)?;
            let der = key.to_pkcs8_der();
            create_key_file(
                &path,
                &Zeroizing::new(Base64::encode_string(der.expose_secret())),
            )?;
            tracing::info!(%path, "created the key that signs access tokens (set DEMO_JWT_KEY in production)");
            Ok(key)
        }
        Err(error) => Err(format!("{path}: {error}").into()),
    }
}

/// The key ring for TOTP secrets (see [`Settings::mfa_key`]).
fn mfa_keys(settings: &Settings) -> Result<MfaKeys, Box<dyn Error>> {
    const KID: &str = "demo";
    if let Some(key) = &settings.mfa_key {
        return Ok(MfaKeys::from_base64(KID, key).map_err(|e| format!("DEMO_MFA_KEY: {e}"))?);
    }
    let Some(path) = key_file(settings, "-mfa.key") else {
        tracing::warn!(
            "DEMO_MFA_KEY is not set: TOTP secrets are encrypted with a random key \
             that is lost at exit"
        );
        return Ok(MfaKeys::generate(KID)?);
    };
    match std::fs::read_to_string(&path) {
        Ok(key) => Ok(MfaKeys::from_base64(KID, key.trim()).map_err(|e| format!("{path}: {e}"))?),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let keys = MfaKeys::generate(KID)?;
            create_key_file(&path, keys.current_key_base64().expose_secret())?;
            tracing::info!(%path, "created the key that encrypts TOTP secrets (set DEMO_MFA_KEY in production)");
            Ok(keys)
        }
        Err(error) => Err(format!("{path}: {error}").into()),
    }
}

/// Form-token keys: the configured one, or 256 random bits.
fn form_tokens(key: Option<&str>) -> Result<CsrfTokens, Box<dyn Error>> {
    let key = match key {
        Some(key) => key.as_bytes().to_vec(),
        // A fresh session ID is 256 bits from the OS CSPRNG.
        None => auth_core::session::SessionId::generate()?
            .encode()
            .into_bytes(),
    };
    Ok(CsrfTokens::new(key)?)
}

/// The same app on in-memory stores and the given clock: what the
/// conformance suite drives. Its mail goes through `mailer` (the suite's
/// SMTP sink) with links to `http://demo.test`.
pub fn build_auth_in_memory(
    clock: Arc<dyn Clock>,
    throttle: ThrottleConfig,
    hasher: PasswordHasher,
    trusted_proxies: TrustedProxies,
    mailer: Arc<dyn Mailer>,
) -> Auth {
    let passwords = PasswordService::builder()
        .hasher(hasher)
        .build()
        .unwrap_or_else(|_| unreachable!("the default service settings are valid"));
    let tokens = form_tokens(None).unwrap_or_else(|_| unreachable!("random keys are long enough"));
    let api_tokens = TokenService::new(
        token_config("http://demo.test").unwrap_or_else(|_| unreachable!("valid token settings")),
        SigningKey::generate(Algorithm::Es256)
            .unwrap_or_else(|_| unreachable!("the OS CSPRNG works")),
        Arc::new(MemoryRefreshStore::new()),
    );
    Auth::builder(MemoryUserStore::new())
        .accounts(Arc::new(MemoryAccountStore::new()))
        .clock(clock)
        .throttle_config(throttle)
        .passwords(passwords)
        .app_name(APP_NAME)
        .mfa_keys(MfaKeys::generate("test").unwrap_or_else(|_| unreachable!("the OS CSPRNG works")))
        .trusted_proxies(trusted_proxies)
        .form_tokens(tokens)
        .tokens(api_tokens)
        .passkeys(
            passkeys("https://demo.test")
                .and_then(|p| Ok(p.build(Arc::new(MemoryPasskeyStore::new()))?))
                .unwrap_or_else(|_| unreachable!("a valid relying party")),
        )
        .allowed_hosts(
            AllowedHosts::parse(TEST_HOSTS).unwrap_or_else(|_| unreachable!("valid host names")),
        )
        .security_headers(security_headers())
        .mail(
            mailer,
            // In-process only: the suite reads the links from captured mail.
            MailLinks::insecure_http("http://demo.test")
                .unwrap_or_else(|_| unreachable!("a valid URL")),
        )
        .build()
        .unwrap_or_else(|_| unreachable!("an account store is given"))
}

/// `POST /api/register` and `POST /api/login` bodies.
#[derive(Deserialize, ToSchema)]
pub struct Credentials {
    /// Login name.
    pub username: String,
    /// Password.
    pub password: String,
    /// Registration only: an email address for account recovery (a link
    /// to verify it is mailed).
    #[serde(default)]
    pub email: Option<String>,
    /// Login only: stay signed in on this device ("remember me"): the
    /// session cookie then persists across browser restarts, and the
    /// session lasts 7 idle days (30 days at most) instead of 30 idle
    /// minutes (12 hours at most). Carried through the second factor.
    #[serde(default)]
    pub remember: bool,
}

/// `POST /api/password/forgot` body.
#[derive(Deserialize, ToSchema)]
pub struct ForgotBody {
    /// A login name or a verified email address.
    pub login: String,
}

/// `POST /api/email` body: the new address and the proof an account
/// change needs.
#[derive(Deserialize, ToSchema)]
pub struct EmailChangeBody {
    /// The new address.
    pub email: String,
    /// The current password.
    pub password: String,
    /// A current TOTP or recovery code, once the account has a second
    /// factor.
    #[serde(default)]
    pub code: Option<String>,
}

/// `POST /api/login/magic` body.
#[derive(Deserialize, ToSchema)]
pub struct MagicBody {
    /// A login name or a verified email address.
    pub login: String,
}

/// `POST /api/password/reset` body.
#[derive(Deserialize, ToSchema)]
pub struct ResetBody {
    /// The token from the reset link.
    pub token: String,
    /// The new password.
    pub new_password: String,
}

/// `POST /api/login/magic/finish` body.
#[derive(Deserialize, ToSchema)]
pub struct MagicFinishBody {
    /// The token from the sign-in link.
    pub token: String,
    /// Stay signed in on this device, as in `POST /api/login`.
    #[serde(default)]
    pub remember: bool,
}

/// `POST /api/email/verify` body.
#[derive(Deserialize, ToSchema)]
pub struct VerifyBody {
    /// The token from the verification link.
    pub token: String,
}

/// `POST /api/password` body.
#[derive(Deserialize, ToSchema)]
pub struct ChangePassword {
    /// The current password.
    pub current_password: String,
    /// The new password.
    pub new_password: String,
}

/// `POST /api/login/totp`, `/api/login/recovery` and
/// `/api/mfa/totp/confirm` body.
#[derive(Deserialize, ToSchema)]
pub struct CodeBody {
    /// A TOTP code or a recovery code.
    pub code: String,
}

/// `POST /api/mfa/totp/enroll`, `POST /api/passkeys/register/start` and
/// `DELETE /api/passkeys/{id}` body: the proof a factor change needs, for
/// an account that may have no second factor yet.
#[derive(Deserialize, ToSchema)]
pub struct EnrollBody {
    /// The current password.
    pub password: String,
    /// A TOTP code or a recovery code: required when the account already
    /// has a second factor, ignored otherwise.
    pub code: Option<String>,
}

/// `DELETE /api/mfa/totp` and `POST /api/mfa/recovery-codes` body: the
/// proof a factor change needs, for an account with a second factor.
#[derive(Deserialize, ToSchema)]
pub struct ProofBody {
    /// The current password.
    pub password: String,
    /// A current TOTP code or an unused recovery code (used up).
    pub code: String,
}

/// `POST /api/register` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Registered {
    /// The name as registered.
    pub username: String,
}

/// `POST /api/login` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginAnswer {
    /// Whether a second factor must follow.
    pub mfa_required: bool,
    /// The second factors available, when required.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub methods: Option<Vec<String>>,
}

/// `GET /api/me` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    /// The name as registered.
    pub username: String,
    /// Whether a second factor is enrolled (TOTP or a passkey).
    pub mfa_enabled: bool,
}

/// One entry of `GET /api/sessions`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionEntry {
    /// A handle, never the cookie value.
    pub id: String,
    /// Whether it is the requesting session.
    pub current: bool,
    /// Creation time, Unix milliseconds.
    pub created_at: i64,
    /// Last use, Unix milliseconds.
    pub last_seen_at: i64,
    /// Client IP at creation.
    pub ip: Option<String>,
    /// User agent at creation.
    pub user_agent: Option<String>,
}

impl From<SessionInfo> for SessionEntry {
    fn from(info: SessionInfo) -> Self {
        Self {
            id: info.handle.as_str().to_owned(),
            current: info.current,
            created_at: info.created_at.as_unix_millis(),
            last_seen_at: info.last_seen_at.as_unix_millis(),
            ip: info.ip,
            user_agent: info.user_agent,
        }
    }
}

// ---------------------------------------------------------------------------
// Passkeys: the JSON shapes of `/api/passkeys...` and `/api/login/passkey/...`
// (handlers and OpenAPI document share them).
// ---------------------------------------------------------------------------

/// `POST /api/passkeys/register/finish` body: the browser's answer to the
/// creation options, and a name for the passkey.
#[derive(Deserialize, ToSchema)]
pub struct PasskeyFinishBody {
    /// The user's name for it ("Phone", "YubiKey"): at most 64 characters,
    /// no control characters; blank or absent gives "Passkey".
    #[serde(default)]
    pub name: String,
    /// The `PublicKeyCredential` of `navigator.credentials.create`, as
    /// JSON: `id`, `rawId`, `type`, `response.clientDataJSON`,
    /// `response.attestationObject` (base64url), `response.transports`,
    /// `extensions` (the client extension results).
    #[schema(value_type = Object)]
    pub credential: serde_json::Value,
}

/// `PATCH /api/passkeys/{id}` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PasskeyRenameBody {
    /// The new name: at most 64 characters, no control characters; blank
    /// gives "Passkey".
    pub name: String,
}

/// `POST /api/login/passkey/start` body: `{}`; a `username` is accepted
/// and not used (the answer is the same for every name, so it tells
/// nobody whether an account exists).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct PasskeySignInStartBody {
    /// Ignored.
    #[serde(default)]
    #[schema(nullable = false)]
    pub username: Option<String>,
}

/// `POST /api/login/passkey/finish` body: the `PublicKeyCredential` of
/// `navigator.credentials.get`, as JSON: `id`, `rawId`, `type`,
/// `response.clientDataJSON`, `response.authenticatorData`,
/// `response.signature`, `response.userHandle` (base64url), `extensions`
/// (the client extension results); and optionally `remember: true`, to
/// stay signed in on this device as in `POST /api/login`.
#[derive(Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = Object)]
pub struct PasskeyAssertion(pub serde_json::Value);

impl std::fmt::Debug for PasskeyAssertion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasskeyAssertion([REDACTED])")
    }
}

/// `POST /api/passkeys/register/finish` answer.
#[derive(Serialize, ToSchema)]
pub struct PasskeyRegistered {
    /// The passkey's handle (base64url of its credential ID) in
    /// `/api/passkeys/{id}`.
    pub id: String,
    /// Its name as stored.
    pub name: String,
    /// The account's new recovery codes, shown once: only when this
    /// passkey is its first second factor.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub recovery_codes: Option<Vec<String>>,
}

impl std::fmt::Debug for PasskeyRegistered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasskeyRegistered")
            .field("id", &self.id)
            .field("name", &self.name)
            .field(
                "recovery_codes",
                &self.recovery_codes.as_ref().map(|_| "[REDACTED]"),
            )
            .finish()
    }
}

/// One entry of `GET /api/passkeys`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PasskeyEntry {
    /// The passkey's handle (base64url of its credential ID) in
    /// `/api/passkeys/{id}`.
    pub id: String,
    /// The user's name for it.
    pub name: String,
    /// When it was added, Unix milliseconds.
    pub created_at: i64,
    /// Its latest sign-in, Unix milliseconds; `null` when never used.
    pub last_used_at: Option<i64>,
    /// Whether it is backed up (synced to the user's other devices by the
    /// platform or password manager), as of its latest use.
    pub synced: bool,
}

impl From<&StoredPasskey> for PasskeyEntry {
    fn from(passkey: &StoredPasskey) -> Self {
        Self {
            id: passkey.id(),
            name: passkey.name.clone(),
            created_at: passkey.created_at.as_unix_millis(),
            last_used_at: passkey.last_used_at.map(|t| t.as_unix_millis()),
            synced: passkey.backed_up,
        }
    }
}

// ---------------------------------------------------------------------------
// Tokens for API clients: the JSON shapes of `POST /api/token`,
// `/api/token/mfa`, `/api/token/refresh`, `/api/token/revoke` and
// `GET /.well-known/jwks.json` (handlers and OpenAPI document share them).
// ---------------------------------------------------------------------------

/// `POST /api/token` body: a password login for an API client.
#[derive(Deserialize, ToSchema)]
pub struct TokenRequest {
    /// Login name.
    pub username: String,
    /// Password.
    pub password: String,
}

/// The tokens: the answer of `POST /api/token` (without a second factor),
/// `/api/token/mfa` and `/api/token/refresh`.
#[derive(Serialize, ToSchema)]
pub struct TokenAnswer {
    /// A short-lived signed JWT, sent as `Authorization: Bearer <token>`.
    pub access_token: String,
    /// Always `Bearer`.
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// A single-use refresh token: `POST /api/token/refresh` trades it for
    /// new tokens (this one is then spent).
    pub refresh_token: String,
}

/// `POST /api/token` answer when the account has a second factor: the
/// password was right, `POST /api/token/mfa` with a code and this token
/// gets the tokens.
#[derive(Serialize, ToSchema)]
pub struct MfaRequiredAnswer {
    /// Always `true`.
    pub mfa_required: bool,
    /// Short-lived, single-use: proves the password step to
    /// `POST /api/token/mfa`.
    pub mfa_token: String,
}

/// `POST /api/token` answer (200): the tokens, or a second factor first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum TokenOutcome {
    /// No second factor: the tokens.
    Tokens(TokenAnswer),
    /// A second factor must follow.
    MfaRequired(MfaRequiredAnswer),
}

/// `POST /api/token/mfa` body: the second step of a token login.
#[derive(Deserialize, ToSchema)]
pub struct TokenMfaRequest {
    /// The `mfa_token` of the `POST /api/token` answer.
    pub mfa_token: String,
    /// A TOTP code or a recovery code.
    pub code: String,
}

/// `POST /api/token/refresh` and `POST /api/token/revoke` body.
#[derive(Deserialize, ToSchema)]
pub struct RefreshRequest {
    /// A refresh token from a token answer.
    pub refresh_token: String,
}

/// `GET /.well-known/jwks.json` answer: the public keys that verify access
/// tokens (RFC 7517).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Jwks {
    /// The keys; an access token's `kid` names one.
    pub keys: Vec<Jwk>,
}

/// One public key of the key set (RFC 7517, 7518, 8037).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Jwk {
    /// Key type: `EC`, `OKP` or `RSA`.
    pub kty: String,
    /// Key id, as in the tokens' header.
    pub kid: String,
    /// Algorithm: `ES256`, `EdDSA` or `RS256`.
    pub alg: String,
    /// Always `sig`.
    #[serde(rename = "use")]
    pub key_use: String,
    /// Curve (`EC`, `OKP`): `P-256` or `Ed25519`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub crv: Option<String>,
    /// `EC`, `OKP`: x coordinate / public key, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub x: Option<String>,
    /// `EC`: y coordinate, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub y: Option<String>,
    /// `RSA`: modulus, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub n: Option<String>,
    /// `RSA`: public exponent, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub e: Option<String>,
}

redacted_debug!(
    TokenRequest { username, password },
    TokenAnswer {
        access_token,
        token_type,
        expires_in,
        refresh_token
    },
    MfaRequiredAnswer {
        mfa_required,
        mfa_token
    },
    TokenMfaRequest { mfa_token, code },
    RefreshRequest { refresh_token },
);

// ---------------------------------------------------------------------------
// End of the token shapes.
// ---------------------------------------------------------------------------

/// What every demo binary does before serving: logs through `tracing`
/// (`RUST_LOG`, default `info`), reads the [`Settings`], builds the
/// [`Auth`], and starts sweeping expired records every 10 minutes
/// ([`Authenticator::delete_expired`](auth_core::flow::Authenticator::delete_expired):
/// sessions, link tokens and refresh families in the stores without
/// native expiry, SQLite and PostgreSQL). Call it inside the
/// framework's tokio runtime.
pub async fn start() -> Result<(Settings, Auth), Box<dyn Error>> {
    use tracing_subscriber::EnvFilter;
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let settings = Settings::from_env()?;
    let auth = build_auth(&settings).await?;
    let authenticator = auth.authenticator().clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(600));
        loop {
            every.tick().await;
            if let Err(error) = authenticator.delete_expired().await {
                tracing::warn!(%error, "sweeping expired records failed");
            }
        }
    });
    Ok((settings, auth))
}

/// Logs the bound address and prints the line people (and the demos'
/// integration tests, which start the binary on port 0) read it from.
pub fn announce(framework: &str, addr: SocketAddr, settings: &Settings) {
    let database = redact_url(&settings.database_url);
    tracing::info!(%addr, %database, "demo listening");
    eprintln!("auth toolkit demo ({framework}) listening on http://{addr}/");
    if addr.ip().is_loopback() {
        eprintln!(
            "open http://localhost:{}/ in a browser (passkeys need the name localhost)",
            addr.port()
        );
    }
}

/// A database URL without its credentials: the user info and the whole
/// query go (drivers take a password as `?password=` too).
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, _)) => (base, "?[REDACTED]"),
        None => (url, ""),
    };
    match (base.find("://"), base.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!(
                "{}://[REDACTED]@{}{query}",
                &base[..scheme],
                &base[at + 1..]
            )
        }
        _ => format!("{base}{query}"),
    }
}

/// A JSON error body for the demo's own errors (bad JSON, not found).
pub fn error_json(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

/// The HTML pages, as plain strings with escaped values.
pub mod pages {
    /// Escapes text for HTML.
    /// The line and paragraph separators (U+2028, U+2029), which are no
    /// control characters (a login name may hold them) yet break a line,
    /// become spaces: text somebody else chose stays on its line.
    pub fn escape(text: &str) -> String {
        text.chars()
            .map(|c| match c {
                '\u{2028}' | '\u{2029}' => " ".to_owned(),
                '&' => "&amp;".to_owned(),
                '<' => "&lt;".to_owned(),
                '>' => "&gt;".to_owned(),
                '"' => "&quot;".to_owned(),
                '\'' => "&#39;".to_owned(),
                c => c.to_string(),
            })
            .collect()
    }

    /// A page around `body`.
    pub fn layout(title: &str, body: &str) -> String {
        format!(
            r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} - {app}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/static/app.css">
</head><body><nav><a href="/">Home</a><a href="/account">Account</a><a href="/login">Log in</a><a href="/register">Register</a></nav>
<h1>{title}</h1>{body}</body></html>"#,
            title = escape(title),
            app = super::APP_NAME,
        )
    }

    /// The home page.
    pub fn home(user: Option<&str>) -> String {
        let who = match user {
            Some(name) => format!("<p>Logged in as <b>{}</b>.</p>", escape(name)),
            None => "<p>Not logged in. <a href=\"/register\">Register</a> or <a href=\"/login\">log in</a>.</p>".to_owned(),
        };
        layout("Home", &who)
    }

    /// The hidden CSRF-token field of a form.
    pub fn token_field(token: Option<&str>) -> String {
        token.map_or(String::new(), |t| {
            format!(
                "<input type=\"hidden\" name=\"csrf_token\" value=\"{}\">",
                escape(t)
            )
        })
    }

    /// A page with one form posting to `action`: `fields` (HTML), the form
    /// token, a button.
    pub fn simple_form(
        title: &str,
        intro: &str,
        action: &str,
        fields: &str,
        error: Option<&str>,
        token: Option<&str>,
    ) -> String {
        let error = error.map_or(String::new(), |e| {
            format!("<p class=\"error\">{}</p>", escape(e))
        });
        layout(
            title,
            &format!(
                r#"{error}<p>{intro}</p><form method="post" action="{action}">{token}{fields}
<button>{title}</button></form>"#,
                token = token_field(token),
            ),
        )
    }

    /// A page with a message only.
    pub fn message(title: &str, text: &str) -> String {
        layout(title, &format!("<p>{}</p>", escape(text)))
    }

    /// The tag that loads the pages' one script ([`super::PASSKEYS_SCRIPT`]),
    /// on the pages with passkey actions.
    pub const PASSKEYS_SCRIPT_TAG: &str = r#"<script src="/static/passkeys.js" defer></script>"#;

    /// The error line the passkey script writes to (hidden until then).
    pub const PASSKEY_ERROR: &str =
        r#"<p id="passkey-error" class="error" role="alert" hidden></p>"#;

    /// A time as `YYYY-MM-DD HH:MM UTC`.
    pub fn utc_time(time: auth_core::clock::Timestamp) -> String {
        let secs = time.as_unix_secs();
        let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        format!(
            "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
            rest / 3600,
            rest % 3600 / 60
        )
    }

    /// The "remember me" checkbox of the sign-in forms (the passkey
    /// sign-in on the login page reads it too).
    pub const REMEMBER_FIELD: &str = "\n<label><input type=\"checkbox\" id=\"remember\" name=\"remember\" value=\"on\"> Keep me signed in on this device</label>";

    /// The login or registration form; `action` is `/login` or `/register`.
    /// The login form also offers a passkey: the "Sign in with a passkey"
    /// button and the browser's passkey autofill on the user-name field
    /// (both by the script; hidden without it), and "remember me".
    pub fn credentials_form(
        title: &str,
        action: &str,
        error: Option<&str>,
        next: Option<&str>,
        token: Option<&str>,
    ) -> String {
        let error = error.map_or(String::new(), |e| {
            format!("<p class=\"error\">{}</p>", escape(e))
        });
        let next_field = next.map_or(String::new(), |n| {
            format!(
                "<input type=\"hidden\" name=\"next\" value=\"{}\">",
                escape(n)
            )
        });
        let login = action == "/login";
        let passkey = if login {
            format!(
                r#"
<p><button type="button" id="passkey-signin" data-passkey-signin data-next="{next}" hidden>Sign in with a passkey</button></p>
{PASSKEY_ERROR}
{PASSKEYS_SCRIPT_TAG}"#,
                next = escape(next.unwrap_or("/account")),
            )
        } else {
            String::new()
        };
        layout(
            title,
            &format!(
                r#"{error}<form method="post" action="{action}">{next_field}{token}
<label>User name <input id="username" name="username" autocomplete="{user_ac}" required></label>
<label>Password <input id="password" name="password" type="password" autocomplete="{ac}" required></label>{email}{remember}
<button>{title}</button></form>{forgot}{passkey}"#,
                remember = if login { REMEMBER_FIELD } else { "" },
                user_ac = if login {
                    "username webauthn"
                } else {
                    "username"
                },
                email = if action == "/register" {
                    "\n<label>Email (optional, for password reset) <input name=\"email\" type=\"email\" autocomplete=\"email\"></label>"
                } else {
                    ""
                },
                forgot = if action == "/login" {
                    "\n<p><a href=\"/forgot\">Forgot your password?</a> \
                     <a href=\"/login/magic\">Email me a sign-in link</a></p>"
                } else {
                    ""
                },
                ac = if action == "/register" {
                    "new-password"
                } else {
                    "current-password"
                },
                token = token_field(token),
            ),
        )
    }
}

redacted_debug!(
    Credentials {
        username,
        password,
        email,
        remember
    },
    ForgotBody { login },
    ResetBody {
        token,
        new_password
    },
    VerifyBody { token },
    MagicFinishBody { token, remember },
    MagicBody { login },
    EmailChangeBody {
        email,
        password,
        code
    },
    ChangePassword {
        current_password,
        new_password
    },
    CodeBody { code },
    EnrollBody { password, code },
    ProofBody { password, code },
    PasskeyFinishBody { name, credential },
);

#[cfg(test)]
mod tests {
    use super::{
        AllowedHosts, Settings, TrustedProxies, create_key_file, create_private_database, mailer,
        passkeys, redact_url,
    };

    /// The demo's public URL gives the passkeys' relying party: an IP
    /// address (v4 or v6) becomes `localhost`; plain `http` elsewhere is
    /// refused, naming the setting.
    #[test]
    fn the_public_url_gives_the_passkeys_relying_party() {
        for url in [
            "http://127.0.0.1:3000",
            "http://[::1]:3000",
            "http://localhost:3000",
            "https://demo.example.com",
        ] {
            assert!(passkeys(url).is_ok(), "{url}");
        }
        let refused = passkeys("http://demo.example.com").err();
        let message = refused.map(|e| e.to_string()).unwrap_or_default();
        assert!(message.starts_with("DEMO_PUBLIC_URL: "), "{message}");
        assert!(message.contains("https"), "{message}");
    }

    fn settings(addr: &str, insecure_log_mail: bool) -> Settings {
        settings_at(addr, "http://localhost", insecure_log_mail)
    }

    fn settings_at(addr: &str, public_url: &str, insecure_log_mail: bool) -> Settings {
        Settings {
            addr: addr.parse().unwrap_or_else(|e| panic!("{e}")),
            database_url: "sqlite://demo.db".to_owned(),
            redis_url: None,
            trusted_proxies: TrustedProxies::parse("").unwrap_or_else(|e| panic!("{e}")),
            csrf_key: None,
            allowed_hosts: AllowedHosts::insecure_any(),
            mfa_key: None,
            public_url: public_url.to_owned(),
            smtp_url: None,
            insecure_log_mail,
            mail_from: "Demo <noreply@localhost>".to_owned(),
            jwt_key: None,
        }
    }

    /// A new SQLite database file is its owner's only; an existing one is
    /// left alone.
    #[cfg(unix)]
    #[test]
    fn a_new_database_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!(
            "example-shared-db-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let path = dir.join("demo.db");
        let mut s = settings("127.0.0.1:3000", false);
        s.database_url = format!("sqlite://{}", path.display());
        create_private_database(&s).unwrap_or_else(|e| panic!("{e}"));
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        create_private_database(&s).unwrap_or_else(|e| panic!("{e}"));
        // Without the slashes too; nothing made for memory, read-only or
        // percent-encoded names.
        let plain = dir.join("plain.db");
        s.database_url = format!("sqlite:{}", plain.display());
        create_private_database(&s).unwrap_or_else(|e| panic!("{e}"));
        let mode = std::fs::metadata(&plain)
            .unwrap_or_else(|e| panic!("{e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        for url in [
            "sqlite::memory:".to_owned(),
            format!("sqlite://{}?mode=ro", dir.join("ro.db").display()),
            format!("sqlite://{}?mode=memory", dir.join("mem.db").display()),
            format!("sqlite://{}", dir.join("my%20db.db").display()),
        ] {
            s.database_url = url.clone();
            create_private_database(&s).unwrap_or_else(|e| panic!("{e}"));
        }
        for name in ["ro.db", "mem.db", "my%20db.db"] {
            assert!(!dir.join(name).exists(), "{name}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Without SMTP, links go to the log only on loopback, or when named.
    #[test]
    fn mail_to_the_log_beyond_loopback_must_be_named() {
        let refused = mailer(&settings("0.0.0.0:3000", false)).err();
        let message = refused.map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("DEMO_INSECURE_LOG_MAIL"), "{message}");
        assert!(mailer(&settings("0.0.0.0:3000", true)).is_ok());
        assert!(mailer(&settings("127.0.0.1:3000", false)).is_ok());
        assert!(mailer(&settings("[::1]:3000", false)).is_ok());
        // Behind a reverse proxy: loopback, but its public URL is not.
        let proxied = settings_at("127.0.0.1:3000", "https://auth.example.com", false);
        let message = mailer(&proxied)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(message.contains("DEMO_INSECURE_LOG_MAIL"), "{message}");
        let named = settings_at("127.0.0.1:3000", "https://auth.example.com", true);
        assert!(mailer(&named).is_ok());
        for local in [
            "http://127.0.0.1:3000",
            "http://[::1]:3000",
            "http://app.localhost:3000",
        ] {
            assert!(
                mailer(&settings_at("127.0.0.1:3000", local, false)).is_ok(),
                "{local}"
            );
        }
    }

    /// No password of a database URL reaches the log, in the user info or
    /// in the query.
    #[test]
    fn database_urls_are_logged_without_credentials() {
        for (url, logged) in [
            (
                "postgres://app:s3cret@db:5432/app",
                "postgres://[REDACTED]@db:5432/app",
            ),
            (
                "postgres://app@db/app?password=s3cret&sslmode=require",
                "postgres://[REDACTED]@db/app?[REDACTED]",
            ),
            (
                "postgres:///app?host=/run/postgresql&password=s3cret",
                "postgres:///app?[REDACTED]",
            ),
            ("sqlite://demo.db", "sqlite://demo.db"),
        ] {
            assert_eq!(redact_url(url), logged);
        }
    }

    /// A generated key file is its owner's alone (mode 0600) and is never
    /// overwritten.
    #[cfg(unix)]
    #[test]
    fn key_files_are_the_owners_alone_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!(
            "demo-key-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("demo.db-jwt.key");
        let path = path.to_str().unwrap();
        create_key_file(path, "first").unwrap();
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        assert!(create_key_file(path, "second").is_err());
        assert_eq!(std::fs::read_to_string(path).unwrap(), "first");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(test)]
mod headers_tests {
    use super::security_headers_for;

    /// Served over HTTPS, the demo sends HSTS; over plain HTTP (a
    /// development address) it does not.
    #[test]
    fn hsts_follows_the_public_url() {
        let hsts = |url: &str| {
            security_headers_for(url)
                .iter()
                .find(|(name, _)| *name == "strict-transport-security")
                .map(|(_, value)| value.to_string())
        };
        assert_eq!(
            hsts("https://auth.example.com").as_deref(),
            Some("max-age=31536000; includeSubDomains")
        );
        assert_eq!(hsts("http://localhost:3000"), None);
    }
}

#[cfg(test)]
mod pages_tests {
    use super::pages::escape;

    /// Text somebody else chose (a login name on a link's page) cannot
    /// start a line of its own, nor carry markup.
    #[test]
    fn escaped_text_stays_on_its_line() {
        assert_eq!(
            escape("alice\u{2028}Your account is suspended\u{2029}<b>"),
            "alice Your account is suspended &lt;b&gt;"
        );
    }
}
