//! Users: the app's own user type ([`AuthUser`]) and table ([`UserStore`]).
//!
//! The toolkit asks three things of an app's users: find one by login name,
//! find one by id, and replace a password hash if it is still the one the
//! toolkit read (compare-and-set). Creating users is needed only by apps
//! that use the toolkit's registration. Nothing else is asked of the app's
//! table: second factors, recovery codes and the revocation epoch live in
//! the toolkit's own [`AccountStore`](crate::account::AccountStore).
//!
//! A session stays valid only while its user's password hash is the one it
//! was made with: a password change through any path (the toolkit's or the
//! app's own) ends every other session, with no extra column (the scheme of
//! axum-login's `session_auth_hash`).
//!
//! For apps without a user table, [`MemoryUserStore`] and (features
//! `sqlite` / `postgres`) the SQL stores hold the ready [`User`] type.
//!
//! # A store over the app's own table
//!
//! ```
//! use auth_core::{AuthUser, LoginName, UserStore, UserStoreError};
//!
//! #[derive(Clone)]
//! struct MyUser { id: i64, email: String, password_hash: String }
//!
//! impl AuthUser for MyUser {
//!     type Id = i64;
//!     fn id(&self) -> i64 { self.id }
//!     fn login(&self) -> &str { &self.email }
//!     fn password_hash(&self) -> &str { &self.password_hash }
//! }
//!
//! struct MyUsers(std::sync::Mutex<Vec<MyUser>>);
//!
//! impl UserStore for MyUsers {
//!     type User = MyUser;
//!
//!     async fn find_by_login(&self, login: &LoginName) -> Result<Option<MyUser>, UserStoreError> {
//!         // Emails are stored in normal form (see `create` below), so the
//!         // lookup compares normal forms: `Alice@Example.com` finds
//!         // `alice@example.com`.
//!         let users = self.0.lock().unwrap();
//!         Ok(users.iter().find(|u| u.email == login.normalized()).cloned())
//!     }
//!
//!     async fn find_by_id(&self, id: &i64) -> Result<Option<MyUser>, UserStoreError> {
//!         Ok(self.0.lock().unwrap().iter().find(|u| u.id == *id).cloned())
//!     }
//!
//!     async fn set_password_hash(&self, id: &i64, current: &str, new: &str) -> Result<bool, UserStoreError> {
//!         let mut users = self.0.lock().unwrap();
//!         match users.iter_mut().find(|u| u.id == *id && u.password_hash == current) {
//!             Some(user) => { user.password_hash = new.to_owned(); Ok(true) }
//!             None => Ok(false),
//!         }
//!     }
//! }
//! ```

mod any;
mod memory;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;

pub use any::AnyUser;
pub(crate) use any::{DynUsers, erase};
pub use memory::MemoryUserStore;
#[cfg(feature = "postgres")]
pub use sql::PostgresUserStore;
#[cfg(feature = "sqlite")]
pub use sql::SqliteUserStore;

use std::fmt;
use std::future::Future;
use std::str::FromStr;

use unicode_normalization::UnicodeNormalization;

use crate::password::HashedPassword;

/// Longest accepted login name, in characters.
pub const MAX_LOGIN_CHARS: usize = 254;

/// A login name that cannot be used.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LoginNameError {
    /// Empty after trimming.
    #[error("login name is empty")]
    Empty,
    /// Longer than [`MAX_LOGIN_CHARS`].
    #[error("login name is too long")]
    TooLong,
    /// Contains control or invisible formatting characters.
    #[error("login name contains control or invisible characters")]
    Control,
}

/// The lookup form of a login name: NFKC, trimmed, lower-cased.
pub fn normalize_login(name: &str) -> Result<String, LoginNameError> {
    if name.len() > MAX_LOGIN_CHARS * 4 {
        return Err(LoginNameError::TooLong);
    }
    let normalized: String = name.nfkc().collect::<String>().trim().to_lowercase();
    if normalized.is_empty() {
        return Err(LoginNameError::Empty);
    }
    if normalized.chars().count() > MAX_LOGIN_CHARS {
        return Err(LoginNameError::TooLong);
    }
    if normalized
        .chars()
        .any(|c| c.is_control() || is_invisible_format(c))
    {
        return Err(LoginNameError::Control);
    }
    Ok(normalized)
}

/// Characters that would make two names look alike: Unicode's
/// Default_Ignorable_Code_Point set (zero-width spaces and joiners,
/// direction marks and overrides, variation selectors, Hangul fillers,
/// tags, soft hyphens, the BOM, ...), which PRECIS (RFC 8264, the
/// UsernameCaseMapped profile of RFC 8265) disallows, plus the
/// interlinear annotation characters.
fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}'..='\u{1160}' | '\u{17B4}'..='\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
        | '\u{FFA0}' | '\u{FFF0}'..='\u{FFFB}' | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// A login name as the user typed it, checked, with its normal form.
///
/// This is what [`UserStore::find_by_login`] receives, so a store decides
/// explicitly how names compare: [`normalized`](Self::normalized) (NFKC,
/// trimmed, lower-cased: `Alice` and `ＡＬＩＣＥ` are `alice`) when the
/// table holds names in that form, which is what the toolkit's registration
/// stores ([`NewUser::login`]); or [`as_typed`](Self::as_typed) with a
/// comparison of the store's own (e.g. a case-insensitive collation). A
/// store that compares the typed name against normalised rows would miss
/// `Alice`: the choice is in the signature so it is never made by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct LoginName {
    typed: String,
    normalized: String,
}

impl LoginName {
    /// Checks a typed name: not empty, at most [`MAX_LOGIN_CHARS`], no
    /// control or invisible formatting characters.
    pub fn parse(typed: &str) -> Result<Self, LoginNameError> {
        let normalized = normalize_login(typed)?;
        Ok(Self {
            typed: typed.trim().to_owned(),
            normalized,
        })
    }

    /// NFKC, trimmed, lower-cased: the form to store and to look up.
    pub fn normalized(&self) -> &str {
        &self.normalized
    }

    /// As typed, trimmed (e.g. to show it back: `Alice`).
    pub fn as_typed(&self) -> &str {
        &self.typed
    }
}

impl fmt::Debug for LoginName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("LoginName").field(&self.normalized).finish()
    }
}

impl fmt::Display for LoginName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.typed)
    }
}

/// What a user id must be: the toolkit keeps it in session records as text
/// (`Display`) and reads it back (`FromStr`). `i64`, `u64`, `String` and
/// UUID types all qualify.
pub trait UserId: Clone + fmt::Display + FromStr + Send + Sync + 'static {}

impl<T: Clone + fmt::Display + FromStr + Send + Sync + 'static> UserId for T {}

/// The app's own user type, as the toolkit needs it. Implement it for the
/// struct your handlers already use; [`CurrentUser<MyUser>`] in every
/// adapter then hands the handler that struct, read once per request with
/// the session.
///
/// [`CurrentUser<MyUser>`]: crate::web::RequestAuth::current_user
pub trait AuthUser: Send + Sync + 'static {
    /// The id type (`i64`, a UUID, a string).
    type Id: UserId;

    /// The user's id: the key of [`UserStore::find_by_id`].
    fn id(&self) -> Self::Id;

    /// The name the user logs in with (e.g. the email address), as stored.
    /// The user's new passwords may not contain it (the per-account
    /// throttle is keyed by [`id`](Self::id), whatever name found the
    /// account).
    fn login(&self) -> &str;

    /// The stored password hash (a PHC string such as Argon2id's, or a
    /// legacy hash when the matching feature is on). A user without a
    /// password returns `""`, which never verifies.
    fn password_hash(&self) -> &str;

    /// The name to show (in authenticator apps, for example). Default:
    /// [`login`](Self::login).
    fn display_name(&self) -> &str {
        self.login()
    }

    /// The user's email address, when the app's own user type keeps one
    /// (verified by the app): account-recovery mail goes there. Default:
    /// `None`, and the toolkit keeps the address itself (see
    /// [`AccountStore`](crate::AccountStore)), verified by a link.
    fn email(&self) -> Option<&str> {
        None
    }

    /// A disabled user cannot log in, and each of its sessions ends at its
    /// next request. Default: never disabled.
    fn is_disabled(&self) -> bool {
        false
    }
}

/// What [`UserStore::create`] stores for the toolkit's registration.
#[derive(Clone)]
pub struct NewUser {
    /// The login name; store [`LoginName::normalized`] (or keep the typed
    /// form and compare case-insensitively in `find_by_login`).
    pub login: LoginName,
    /// The password hash (Argon2id PHC string).
    pub password_hash: HashedPassword,
}

impl fmt::Debug for NewUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewUser")
            .field("login", &self.login)
            .finish_non_exhaustive()
    }
}

/// Failures of the user and account stores.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum UserStoreError {
    /// The login name is taken.
    #[error("login name already taken")]
    LoginTaken,
    /// No such user.
    #[error("no such user")]
    NotFound,
    /// The OS random number generator failed.
    #[error("random number generator failed")]
    Rng,
    /// The store does not implement this optional operation (e.g.
    /// [`UserStore::create`] in an app that registers users itself).
    #[error("operation not supported by this store")]
    Unsupported,
    /// The backend failed (the database's own error is the source).
    #[error("user store error")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl UserStoreError {
    /// Wraps a backend's error (a database error of any driver version:
    /// `.map_err(UserStoreError::backend)?`).
    pub fn backend(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Backend(Box::new(error))
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl From<sqlx::Error> for UserStoreError {
    fn from(error: sqlx::Error) -> Self {
        Self::backend(error)
    }
}

/// The app's user table, as the toolkit needs it. Implement it over your
/// own table (see the [module docs](self) for a complete one); the
/// toolkit never asks for a schema change.
///
/// Methods are `async fn` in your `impl` (they must be `Send`, as any
/// handler's future is). Errors from your database go in
/// [`UserStoreError::backend`].
pub trait UserStore: Send + Sync + 'static {
    /// The app's user type.
    type User: AuthUser;

    /// The user with this login name, or `None`. The name is checked and
    /// comes in both forms: compare [`LoginName::normalized`] against names
    /// stored in normal form, or decide your own comparison with
    /// [`LoginName::as_typed`]; see [`LoginName`].
    fn find_by_login(
        &self,
        login: &LoginName,
    ) -> impl Future<Output = Result<Option<Self::User>, UserStoreError>> + Send;

    /// The user with this id, or `None`. Called once per authenticated
    /// request (with the session read).
    fn find_by_id(
        &self,
        id: &<Self::User as AuthUser>::Id,
    ) -> impl Future<Output = Result<Option<Self::User>, UserStoreError>> + Send;

    /// Replaces the user's password hash with `new` only if it is still
    /// `current` (compare-and-set: `UPDATE users SET password_hash = $new
    /// WHERE id = $id AND password_hash = $current`), and answers whether it
    /// did. Used by password changes and by the re-hash after a login with
    /// outdated parameters, so a re-hash racing a password change never
    /// restores the old password.
    fn set_password_hash(
        &self,
        id: &<Self::User as AuthUser>::Id,
        current: &str,
        new: &str,
    ) -> impl Future<Output = Result<bool, UserStoreError>> + Send;

    /// [`find_by_id`](Self::find_by_id), shared: what the toolkit calls on
    /// every authenticated request. Stores that keep their users in memory
    /// override it to hand out the value they hold without a copy; the
    /// default wraps `find_by_id`'s answer.
    fn find_by_id_shared(
        &self,
        id: &<Self::User as AuthUser>::Id,
    ) -> impl Future<Output = Result<Option<std::sync::Arc<Self::User>>, UserStoreError>> + Send
    {
        async move { Ok(self.find_by_id(id).await?.map(std::sync::Arc::new)) }
    }

    /// Creates a user, for apps that use the toolkit's registration;
    /// [`UserStoreError::LoginTaken`] when the name exists. The default
    /// answers [`UserStoreError::Unsupported`] (registration then answers
    /// 501).
    fn create(
        &self,
        user: NewUser,
    ) -> impl Future<Output = Result<Self::User, UserStoreError>> + Send {
        let _ = user;
        std::future::ready(Err(UserStoreError::Unsupported))
    }
}

/// The ready user type of [`MemoryUserStore`] and the SQL user stores, for
/// apps without a user table of their own.
#[derive(Clone)]
pub struct User {
    /// Stable id (128 random bits, base64url).
    pub id: String,
    /// The normalised login name.
    pub login: String,
    /// The login name as the user typed it at registration.
    pub display_name: String,
    /// The password hash.
    pub password_hash: HashedPassword,
    /// A disabled user cannot log in and has no live session.
    pub disabled: bool,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("login", &self.login)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

impl AuthUser for User {
    type Id = String;

    fn id(&self) -> String {
        self.id.clone()
    }

    fn login(&self) -> &str {
        &self.login
    }

    fn password_hash(&self) -> &str {
        self.password_hash.as_str()
    }

    fn display_name(&self) -> &str {
        &self.display_name
    }

    fn is_disabled(&self) -> bool {
        self.disabled
    }
}

/// A new random id for the SQL stores: 128 bits, base64url.
#[cfg(any(feature = "sqlite", feature = "postgres", test))]
pub(crate) fn new_random_id() -> Result<String, UserStoreError> {
    use base64ct::{Base64UrlUnpadded, Encoding};
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|_| UserStoreError::Rng)?;
    Ok(Base64UrlUnpadded::encode_string(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_names_are_normalised() {
        assert_eq!(normalize_login("  Alice ").unwrap(), "alice");
        assert_eq!(normalize_login("ＡＬＩＣＥ").unwrap(), "alice");
        assert_eq!(
            normalize_login("Jose\u{301}").unwrap(),
            normalize_login("Jos\u{e9}").unwrap()
        );
        assert_eq!(normalize_login("   "), Err(LoginNameError::Empty));
        assert_eq!(normalize_login("a\u{0}b"), Err(LoginNameError::Control));
        assert_eq!(
            normalize_login("al\u{200b}ice"),
            Err(LoginNameError::Control)
        );
        assert_eq!(
            normalize_login("alice\u{202e}"),
            Err(LoginNameError::Control)
        );
        // Default-ignorable code points (PRECIS disallows them): lookalike
        // accounts cannot be made with any of them.
        for invisible in [
            '\u{034F}',
            '\u{115F}',
            '\u{17B4}',
            '\u{180B}',
            '\u{3164}',
            '\u{FE0F}',
            '\u{FFA0}',
            '\u{1BCA0}',
            '\u{1D173}',
            '\u{E0041}',
            '\u{E0001}',
        ] {
            assert_eq!(
                normalize_login(&format!("ali{invisible}ce")),
                Err(LoginNameError::Control),
                "{invisible:?}"
            );
        }
        // Visible letters of other scripts stay welcome.
        assert!(normalize_login("Łukasz").is_ok() && normalize_login("山田").is_ok());
        assert_eq!(
            normalize_login(&"a".repeat(255)),
            Err(LoginNameError::TooLong)
        );
        assert!(normalize_login(&"a".repeat(254)).is_ok());
        let name = LoginName::parse("  Alice@Example.COM ").unwrap();
        assert_eq!(name.normalized(), "alice@example.com");
        assert_eq!(name.as_typed(), "Alice@Example.COM");
    }

    #[test]
    fn ids_are_random_and_user_debug_is_redacted() {
        let a = new_random_id().unwrap();
        assert_ne!(a, new_random_id().unwrap());
        assert_eq!(a.len(), 22);
        let user = User {
            id: "1".into(),
            login: "alice".into(),
            display_name: "Alice".into(),
            password_hash: HashedPassword::new("$argon2id$secret-hash"),
            disabled: false,
        };
        let printed = format!("{user:?}");
        assert!(!printed.contains("secret-hash"));
    }
}
