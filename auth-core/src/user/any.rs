//! The one place the app's user type is erased: the flows hold a
//! `dyn DynUsers` and pass [`AnyUser`]s, and the adapters' `CurrentUser<U>`
//! turns one back into the app's `Arc<U>` without a copy.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use super::{AuthUser, LoginName, NewUser, UserStore, UserStoreError};

/// The object-safe view of an [`AuthUser`].
trait ErasedUser: Any + Send + Sync {
    fn login(&self) -> &str;
    fn password_hash(&self) -> &str;
    fn display_name(&self) -> &str;
    fn is_disabled(&self) -> bool;
    fn email(&self) -> Option<&str>;
}

impl<U: AuthUser> ErasedUser for U {
    fn login(&self) -> &str {
        AuthUser::login(self)
    }
    fn password_hash(&self) -> &str {
        AuthUser::password_hash(self)
    }
    fn display_name(&self) -> &str {
        AuthUser::display_name(self)
    }
    fn is_disabled(&self) -> bool {
        AuthUser::is_disabled(self)
    }
    fn email(&self) -> Option<&str> {
        AuthUser::email(self)
    }
}

/// A user of the app's own type, as the toolkit passes it around: shared
/// (cloning it copies a pointer), with the app's value inside
/// ([`downcast`](Self::downcast)). `Debug` shows the id and login only.
#[derive(Clone)]
pub struct AnyUser {
    id: String,
    user: Arc<dyn ErasedUser>,
    type_name: &'static str,
}

impl AnyUser {
    /// Wraps the app's user.
    pub fn new<U: AuthUser>(user: U) -> Self {
        Self::shared(Arc::new(user))
    }

    /// Wraps the app's user, already shared.
    pub fn shared<U: AuthUser>(user: Arc<U>) -> Self {
        Self {
            id: id_text(user.id()),
            user,
            type_name: std::any::type_name::<U>(),
        }
    }

    /// The id, as text (what session records hold).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// [`AuthUser::login`].
    pub fn login(&self) -> &str {
        self.user.login()
    }

    /// [`AuthUser::display_name`].
    pub fn display_name(&self) -> &str {
        self.user.display_name()
    }

    /// [`AuthUser::is_disabled`].
    pub fn is_disabled(&self) -> bool {
        self.user.is_disabled()
    }

    /// [`AuthUser::email`].
    pub fn email(&self) -> Option<&str> {
        self.user.email()
    }

    pub(crate) fn password_hash(&self) -> &str {
        self.user.password_hash()
    }

    /// The app's user, if it is a `U`.
    pub fn downcast<U: AuthUser>(&self) -> Option<Arc<U>> {
        let any: Arc<dyn Any + Send + Sync> = self.user.clone();
        any.downcast::<U>().ok()
    }

    /// The app's user type's name (for the error when a handler asks for
    /// another type than the store yields).
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }
}

impl fmt::Debug for AnyUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnyUser")
            .field("id", &self.id)
            .field("login", &self.login())
            .finish_non_exhaustive()
    }
}

/// An id as text: a `String` id (the toolkit's own [`User`](super::User)'s)
/// is moved, not formatted into a copy.
fn id_text<I: super::UserId>(id: I) -> String {
    let mut id = Some(id);
    if let Some(text) = (&mut id as &mut dyn Any).downcast_mut::<Option<String>>() {
        return text.take().unwrap_or_default();
    }
    id.map(|id| id.to_string()).unwrap_or_default()
}

/// A [`UserStore`] behind dynamic dispatch, with ids as text.
#[async_trait]
pub(crate) trait DynUsers: Send + Sync + 'static {
    async fn find_by_login(&self, login: &LoginName) -> Result<Option<AnyUser>, UserStoreError>;
    /// An id that does not parse as the store's id type is no user.
    async fn find_by_id(&self, id: &str) -> Result<Option<AnyUser>, UserStoreError>;
    async fn set_password_hash(
        &self,
        id: &str,
        current: &str,
        new: &str,
    ) -> Result<bool, UserStoreError>;
    async fn create(&self, user: NewUser) -> Result<AnyUser, UserStoreError>;
    fn store_type(&self) -> &'static str;
}

impl fmt::Debug for dyn DynUsers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("UserStore")
            .field(&self.store_type())
            .finish()
    }
}

struct Erased<S>(S);

#[async_trait]
impl<S: UserStore> DynUsers for Erased<S> {
    async fn find_by_login(&self, login: &LoginName) -> Result<Option<AnyUser>, UserStoreError> {
        Ok(self.0.find_by_login(login).await?.map(AnyUser::new))
    }

    async fn find_by_id(&self, id: &str) -> Result<Option<AnyUser>, UserStoreError> {
        let Ok(id) = id.parse() else {
            return Ok(None);
        };
        Ok(self.0.find_by_id_shared(&id).await?.map(AnyUser::shared))
    }

    async fn set_password_hash(
        &self,
        id: &str,
        current: &str,
        new: &str,
    ) -> Result<bool, UserStoreError> {
        let Ok(id) = id.parse() else {
            return Ok(false);
        };
        self.0.set_password_hash(&id, current, new).await
    }

    async fn create(&self, user: NewUser) -> Result<AnyUser, UserStoreError> {
        Ok(AnyUser::new(self.0.create(user).await?))
    }

    fn store_type(&self) -> &'static str {
        std::any::type_name::<S>()
    }
}

/// Erases an app's store.
pub(crate) fn erase<S: UserStore>(store: S) -> Arc<dyn DynUsers> {
    Arc::new(Erased(store))
}

/// A shared store is a store: keep an `Arc` of yours (to disable users in
/// tests, say) and give the toolkit a clone.
impl<S: UserStore> UserStore for Arc<S> {
    type User = S::User;

    async fn find_by_login(&self, login: &LoginName) -> Result<Option<S::User>, UserStoreError> {
        (**self).find_by_login(login).await
    }

    async fn find_by_id(
        &self,
        id: &<S::User as AuthUser>::Id,
    ) -> Result<Option<S::User>, UserStoreError> {
        (**self).find_by_id(id).await
    }

    async fn find_by_id_shared(
        &self,
        id: &<S::User as AuthUser>::Id,
    ) -> Result<Option<Arc<S::User>>, UserStoreError> {
        (**self).find_by_id_shared(id).await
    }

    async fn set_password_hash(
        &self,
        id: &<S::User as AuthUser>::Id,
        current: &str,
        new: &str,
    ) -> Result<bool, UserStoreError> {
        (**self).set_password_hash(id, current, new).await
    }

    async fn create(&self, user: NewUser) -> Result<S::User, UserStoreError> {
        (**self).create(user).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_become_their_display_text() {
        assert_eq!(id_text(String::from("user-1")), "user-1");
        assert_eq!(id_text(42_i64), "42");
        assert_eq!(id_text(7_u64), "7");
    }
}
