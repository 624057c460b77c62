//! Account recovery by mail, on the single-use token primitive
//! ([`crate::single_use`]): email addresses and their verification, and
//! the password reset.
//!
//! * A reset is asked for by login name or verified address; the answer
//!   (and its timing) is the same whether or not an account exists: all
//!   the work after the per-IP throttle runs out of band, in a task of its
//!   own, which mails the link only to a verified address.
//! * The reset token is bound to a fingerprint of the password hash it was
//!   issued against: any password change (by any path, the app's own admin
//!   tools too) voids it. A completed reset ends every session of the
//!   account and lifts its login locks (the owner's way back in after a
//!   lockout); it does not sign in, so a second factor still applies at the
//!   next sign-in.
//! * A verification token is bound to the address it was sent to and to
//!   the password hash: a new address voids it, and so does a password
//!   change (a pending change of address asked for by someone who knew the
//!   password dies when the owner changes it). Confirming a new address
//!   voids the reset and sign-in links mailed to the old one.
//! * A recovery request names an account by verified address first, then
//!   by login name: a login name that looks like somebody's address never
//!   takes that person's mail.
//! * Opening a link never consumes its token; the page it opens posts it.

use std::sync::Arc;

use base64ct::{Base64UrlUnpadded, Encoding};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{AuthError, Authenticator, Client, FactorProof, LoginOutcome};
use crate::account::normalize_email;
use crate::event::{AuthEventKind, FailureReason};
use crate::mail::{Mail, Mailer};
use crate::password::{Password, PasswordError, PolicyContext};
use crate::rate_limit::{Attempt, Decision};
use crate::session::{Factor, Session};
use crate::single_use::{Purpose, SingleUseToken, TokenRecord, TokenStoreError};
use crate::user::{AnyUser, LoginName};

/// Where the links in account-recovery mail point: the app's public base
/// URL and the paths of its pages (each page shows a form that POSTs the
/// token; opening the link consumes nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailLinks {
    base: String,
    reset: String,
    verify: String,
    magic: String,
}

/// A base URL that is not `https://host[:port]` (or `http://` to a
/// loopback host) with an optional path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid public URL {0:?}: expected https://host[:port][/path] (http:// only to \
     localhost, 127.0.0.0/8 or [::1]), no query"
)]
pub struct InvalidUrl(pub String);

impl MailLinks {
    /// Links under `base` (e.g. `https://app.example`), to the default
    /// pages `/reset`, `/verify-email` and `/login/magic`. The links carry
    /// single-use tokens that sign in or set a password, so `http://` is
    /// taken only for a loopback host (development);
    /// [`insecure_http`](Self::insecure_http) takes any.
    pub fn new(base: &str) -> Result<Self, InvalidUrl> {
        Self::parse(base, false)
    }

    /// [`new`](Self::new), also taking `http://` to any host, for
    /// development setups that serve plain HTTP on another name: the
    /// tokens then cross the network in clear text. Logs a warning.
    pub fn insecure_http(base: &str) -> Result<Self, InvalidUrl> {
        let links = Self::parse(base, true)?;
        if links.base.starts_with("http://") {
            tracing::warn!(
                "auth: mail links over plain HTTP (MailLinks::insecure_http): their tokens \
                 cross the network in clear text; development only"
            );
        }
        Ok(links)
    }

    fn parse(base: &str, any_http: bool) -> Result<Self, InvalidUrl> {
        let trimmed = base.trim_end_matches('/');
        let (rest, plain) = match trimmed.strip_prefix("https://") {
            Some(rest) => (rest, false),
            None => (
                trimmed
                    .strip_prefix("http://")
                    .ok_or_else(|| InvalidUrl(base.into()))?,
                true,
            ),
        };
        let host = rest.split('/').next().unwrap_or_default();
        if host.is_empty()
            || rest.contains(['?', '#', '@', ' ', '\\'])
            || rest.chars().any(char::is_control)
            || (plain && !any_http && !is_loopback(host))
        {
            return Err(InvalidUrl(base.into()));
        }
        Ok(Self {
            base: trimmed.to_owned(),
            reset: "/reset".to_owned(),
            verify: "/verify-email".to_owned(),
            magic: "/login/magic".to_owned(),
        })
    }

    /// The reset page's path (default `/reset`).
    #[must_use]
    pub fn reset_path(mut self, path: &str) -> Self {
        self.reset = path.to_owned();
        self
    }

    /// The verification page's path (default `/verify-email`).
    #[must_use]
    pub fn verify_path(mut self, path: &str) -> Self {
        self.verify = path.to_owned();
        self
    }

    /// The magic-link sign-in page's path (default `/login/magic`).
    #[must_use]
    pub fn magic_path(mut self, path: &str) -> Self {
        self.magic = path.to_owned();
        self
    }

    fn link(&self, path: &str, token: &SingleUseToken) -> String {
        format!("{}{path}?token={}", self.base, token.encode())
    }
}

/// Whether `host` (`name[:port]`) is a loopback name or address.
fn is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// What recovery mail needs: a mailer, the links, the app's name.
#[derive(Debug, Clone)]
pub(crate) struct MailSetup {
    pub(crate) mailer: Arc<dyn Mailer>,
    pub(crate) links: MailLinks,
}

/// What a reset token is bound to: a fingerprint of the password hash.
fn reset_binding(password_hash: &str) -> String {
    let mut digest = Sha256::new();
    digest.update(b"auth-core reset binding v1\0");
    digest.update(password_hash.as_bytes());
    Base64UrlUnpadded::encode_string(&digest.finalize())
}

/// What a reset or sign-in link is bound to: the password (a change voids
/// it) and the address it was mailed to, so a newly confirmed address
/// voids every link mailed to the old one, also one that a put-back (a
/// refused new password returns the reset token) or an issue racing the
/// confirmation brought back after the confirmation deleted the links.
/// A digest: the token store keeps no address of these.
fn link_binding(password_hash: &str, address: &str) -> String {
    let mut digest = Sha256::new();
    digest.update(b"auth-core link binding v1\0");
    digest.update(password_hash.as_bytes());
    digest.update(b"\0");
    digest.update(address.as_bytes());
    Base64UrlUnpadded::encode_string(&digest.finalize())
}

/// What a verification token is bound to: the password (as for a reset)
/// and the address it was sent to.
fn address_binding(password_hash: &str, address: &str) -> String {
    format!("{}:{address}", reset_binding(password_hash))
}

/// What a security notice says happened, for the events that change how
/// an account signs in; `None` for every other event.
pub(super) fn notice(kind: AuthEventKind) -> Option<&'static str> {
    Some(match kind {
        AuthEventKind::PasswordChanged => "your password was changed",
        AuthEventKind::PasswordReset => "your password was reset through a mailed link",
        AuthEventKind::TotpEnabled => "an authenticator app was set up as a second factor",
        AuthEventKind::TotpDisabled => "the authenticator app was removed as a second factor",
        AuthEventKind::RecoveryCodesRegenerated => {
            "new recovery codes were made (the old ones no longer work)"
        }
        AuthEventKind::PasskeyAdded => "a passkey was added",
        AuthEventKind::PasskeyRemoved => "a passkey was removed",
        _ => return None,
    })
}

/// The per-account budget of link requests of `purpose`.
pub(super) fn link_account(user_id: &str, purpose: Purpose) -> String {
    format!("\u{1}{}:{user_id}", purpose.as_str())
}

impl Authenticator {
    /// Charges a verification mail against the account's budget (5, then
    /// a back-off, as link requests): a signed-in account cannot send a
    /// stream of them to somebody's address. (Many new accounts are held by
    /// the per-IP budget of registration. A budget per recipient address
    /// would let anyone keep an address from being verified anywhere.)
    async fn verification_budget(&self, user_id: &str, client: &Client) -> Result<(), AuthError> {
        let account = link_account(user_id, Purpose::EmailVerification);
        let attempt = Attempt {
            ip: client.ip,
            account: &account,
            device: None,
        };
        if let Decision::Limited { retry_after, .. } =
            self.inner.throttle.check(&attempt, self.now()).await?
        {
            self.failure(
                AuthEventKind::Throttled,
                Some(user_id),
                client,
                None,
                FailureReason::AccountLocked,
            );
            return Err(AuthError::Throttled { retry_after });
        }
        Ok(())
    }

    fn mail_setup(&self) -> Result<&MailSetup, AuthError> {
        self.inner.mail.as_ref().ok_or(AuthError::MailUnavailable)
    }

    fn app_label(&self) -> &str {
        self.inner.app_name.as_deref().unwrap_or("your account")
    }

    /// Stores `address` as the user's email address, unverified, and mails
    /// a verification link to it (out of band: mail trouble is logged, not
    /// answered): for an account without a verified address (a
    /// registration). The new address is used for recovery only once
    /// verified; earlier verification links die with the old address.
    ///
    /// Errors: [`AuthError::InvalidEmail`], [`AuthError::MailUnavailable`]
    /// (no mailer), [`AuthError::Unsupported`] (an account store without
    /// addresses), [`AuthError::EmailAlreadyVerified`]: a verified address
    /// (the account's way back in) changes only with the owner's proof,
    /// through [`change_email`](Self::change_email);
    /// [`AuthError::Throttled`]: the account has had its verification
    /// mails for now (5, then a back-off; a first address is not
    /// charged). (The check for a verified
    /// address and the write are two store calls: a verification of the
    /// account's unverified address that lands between them is replaced.)
    pub async fn set_email(
        &self,
        user: &AnyUser,
        address: &str,
        client: &Client,
    ) -> Result<(), AuthError> {
        let address = normalize_email(address).map_err(|_| AuthError::InvalidEmail)?;
        let setup = self.mail_setup()?.clone();
        let accounts = &self.inner.accounts;
        let current = accounts.email(user.id()).await?;
        if current.as_ref().is_some_and(|email| email.verified) {
            return Err(AuthError::EmailAlreadyVerified);
        }
        // The first address (a registration's) is not charged: the
        // registration was, and a 429 now would come after the account
        // was made. Replacing one is.
        if current.is_some() {
            self.verification_budget(user.id(), client).await?;
        }
        accounts.set_email(user.id(), &address).await?;
        let tokens = &self.inner.tokens;
        tokens
            .delete_for_user(user.id(), Purpose::EmailVerification)
            .await?;
        let binding = address_binding(user.password_hash(), &address);
        let token = self
            .issue_token(user.id(), Purpose::EmailVerification, &binding)
            .await?;
        let link = setup.links.link(&setup.links.verify, &token);
        let lifetime = Purpose::EmailVerification.lifetime().as_secs() / 3600;
        let mail = Mail::new(
            address,
            format!("Confirm your email address for {}", self.app_label()),
            // The account is named on the page the link opens, not here:
            // the address is not proven yet, and a login name is the
            // registrant's own text (a phishing line, a link).
            format!(
                "Someone (we hope you) gave this address to an account at {}.\n\n\
                 Open this link within {lifetime} hours: the page names the account, \
                 and confirms the address only if you ask it to, so check the name:\n\
                 {link}\n\n\
                 If it is not your account, ignore this mail: nothing changes.\n",
                self.app_label()
            ),
        );
        self.send_out_of_band(
            setup.mailer,
            mail,
            user.id().to_owned(),
            client.ip,
            AuthEventKind::EmailVerificationSent,
        );
        Ok(())
    }

    /// Changes the address of the session's user, given the account
    /// owner's [`FactorProof`] (the password, and a current code once the
    /// account has a second factor; checked like a login): a link to verify
    /// the new address is mailed to it, and the old verified address (which
    /// stays in effect until the new one is verified) is told. A password
    /// change before the new address is confirmed voids the link. The
    /// proof is a re-authentication: the session gets a new ID.
    ///
    /// Errors: [`AuthError::InvalidEmail`], [`AuthError::MailUnavailable`],
    /// what a [`FactorProof`] can answer ([`AuthError::InvalidCredentials`],
    /// [`AuthError::CodeRequired`], [`AuthError::InvalidCode`],
    /// [`AuthError::Throttled`]); [`AuthError::Throttled`] also when the
    /// account has had its verification mails for now (5, then a back-off;
    /// a recovery code given as proof is then spent).
    pub async fn change_email(
        &self,
        session: &mut Session,
        proof: &FactorProof,
        address: &str,
        client: &Client,
    ) -> Result<(), AuthError> {
        let address = normalize_email(address).map_err(|_| AuthError::InvalidEmail)?;
        let setup = self.mail_setup()?.clone();
        let user = self.changing_user(session).await?;
        let hash = self
            .check_proof(&user, proof, client, AuthEventKind::EmailChangeFailed)
            .await?;
        // The proof renews the session (its stamp follows a re-hash) even
        // if the budget then refuses the mail.
        self.renew_after_proof(session, &user, &hash).await?;
        // After the proof: only proven changes count (whoever holds a
        // session without the password cannot spend the owner's budget).
        self.verification_budget(user.id(), client).await?;
        let accounts = &self.inner.accounts;
        let old = accounts.email(user.id()).await?.filter(|e| e.verified);
        accounts.set_pending_email(user.id(), &address).await?;
        self.inner
            .tokens
            .delete_for_user(user.id(), Purpose::EmailVerification)
            .await?;
        let token = self
            .issue_token(
                user.id(),
                Purpose::EmailVerification,
                &address_binding(&hash, &address),
            )
            .await?;
        let app = self.app_label().to_owned();
        let hours = Purpose::EmailVerification.lifetime().as_secs() / 3600;
        let link = setup.links.link(&setup.links.verify, &token);
        let confirm = Mail::new(
            address.clone(),
            format!("Confirm your new email address for {app}"),
            // Named on the link's page, not here (see `set_email`).
            format!(
                "An account at {app} is to use this address from now on.\n\n\
                 Open this link within {hours} hours: the page names the account, \
                 and confirms the address only if you ask it to:\n{link}\n\n\
                 If it was not you, ignore this mail: nothing changes.\n"
            ),
        );
        let id = user.id().to_owned();
        self.send_out_of_band(
            Arc::clone(&setup.mailer),
            confirm,
            id.clone(),
            client.ip,
            AuthEventKind::EmailVerificationSent,
        );
        if let Some(old) = old {
            let notice = Mail::new(
                old.address,
                format!("Your email address at {app} is being changed"),
                format!(
                    "Someone signed in to the account \"{}\" at {app} with its password \
                     asked to use another email address ({address}). It takes effect \
                     once that address is confirmed.\n\n\
                     If it was not you, change your password now: every session then ends, and \
                     so does this change of address if it is not confirmed yet.\n",
                    user.login()
                ),
            );
            self.send_out_of_band(
                setup.mailer,
                notice,
                id,
                client.ip,
                AuthEventKind::EmailChangeNotified,
            );
        }
        Ok(())
    }

    /// Tells the verified address of `user_id` that `change` happened to
    /// its account (ASVS 5.0 6.3.7): out of band, audited as
    /// [`AuthEventKind::SecurityNoticeSent`]; nothing without a mailer or a
    /// verified address. Someone who learnt the password and added a
    /// passkey, say, is then known to the owner, whose password reset ends
    /// their sessions.
    pub(super) fn notify(&self, user_id: &str, ip: std::net::IpAddr, change: &'static str) {
        let Some(setup) = self.inner.mail.clone() else {
            return;
        };
        let this = self.clone();
        let user_id = user_id.to_owned();
        tokio::spawn(async move {
            match this.security_notice(&user_id, change).await {
                Ok(Some(mail)) => this.send_out_of_band(
                    setup.mailer,
                    mail,
                    user_id,
                    ip,
                    AuthEventKind::SecurityNoticeSent,
                ),
                Ok(None) => {}
                Err(error) => {
                    tracing::error!(%error, user_id = %user_id, "auth: security notice not sent");
                }
            }
        });
    }

    /// The notice of `change` for `user_id`'s verified address, if any.
    async fn security_notice(
        &self,
        user_id: &str,
        change: &str,
    ) -> Result<Option<Mail>, AuthError> {
        let Some(user) = self.inner.users.find_by_id(user_id).await? else {
            return Ok(None);
        };
        let Some(address) = self.verified_address(&user).await? else {
            return Ok(None);
        };
        let app = self.app_label();
        Ok(Some(Mail::new(
            address,
            format!("Security notice from {app}: {change}"),
            format!(
                "On the account \"{}\" at {app}: {change}.\n\n\
                 If it was you, there is nothing to do. If it was not, reset your password \
                 now (\"Forgot your password?\" on the sign-in page): that ends every \
                 session. Then check the account's second factors and passkeys.\n",
                user.login()
            ),
        )))
    }

    /// The audited refusal of a link: one answer,
    /// [`AuthError::InvalidToken`], whatever was wrong with it.
    fn refuse_link<'a>(
        &'a self,
        kind: AuthEventKind,
        factor: Option<Factor>,
        client: &'a Client,
    ) -> impl Fn(Option<&str>) -> AuthError + 'a {
        move |user| {
            self.failure(kind, user, client, factor, FailureReason::InvalidToken);
            AuthError::InvalidToken
        }
    }

    /// The refusal of a sign-in link opened in another account's browser,
    /// audited against the link's account (someone may be trying to move
    /// a browser into it).
    fn signed_in_as_another(&self, link_user: &str, client: &Client) -> AuthError {
        self.failure(
            AuthEventKind::LoginFailed,
            Some(link_user),
            client,
            Some(Factor::EmailLink),
            FailureReason::SignedInAsAnother,
        );
        AuthError::SignedInAsAnother
    }

    /// Parses and consumes a link's token of `purpose`: its record, or the
    /// refusal.
    async fn consume_link(
        &self,
        token: &str,
        purpose: Purpose,
        refuse: &impl Fn(Option<&str>) -> AuthError,
    ) -> Result<TokenRecord, AuthError> {
        let Some(token) = SingleUseToken::parse(token.trim()) else {
            return Err(refuse(None));
        };
        self.inner
            .tokens
            .consume(&token.key(), purpose, self.now())
            .await?
            .ok_or_else(|| refuse(None))
    }

    /// Deletes `user_id`'s links that went to its address (password
    /// reset, magic link).
    async fn delete_address_links(&self, user_id: &str) -> Result<(), AuthError> {
        let tokens = &self.inner.tokens;
        tokens
            .delete_for_user(user_id, Purpose::PasswordReset)
            .await?;
        tokens.delete_for_user(user_id, Purpose::MagicLink).await?;
        Ok(())
    }

    /// A fresh token of `purpose` for `user_id`, bound to `binding`.
    async fn issue_token(
        &self,
        user_id: &str,
        purpose: Purpose,
        binding: &str,
    ) -> Result<SingleUseToken, AuthError> {
        let expires_at = self.now().saturating_add(purpose.lifetime());
        for _ in 0..3 {
            let token = SingleUseToken::generate()?;
            let record = TokenRecord {
                purpose,
                user_id: user_id.to_owned(),
                binding: binding.to_owned(),
                expires_at,
            };
            match self.inner.tokens.insert(&token.key(), &record).await {
                Ok(()) => return Ok(token),
                Err(TokenStoreError::Collision) => continue,
                Err(other) => return Err(other.into()),
            }
        }
        Err(AuthError::internal("token key collisions"))
    }

    /// Sends `mail` in a task of its own: the request's answer and timing
    /// never depend on the mail server. The outcome is audited.
    fn send_out_of_band(
        &self,
        mailer: Arc<dyn Mailer>,
        mail: Mail,
        user_id: String,
        ip: std::net::IpAddr,
        kind: AuthEventKind,
    ) {
        let this = self.clone();
        tokio::spawn(async move {
            match mailer.send(mail).await {
                Ok(()) => this.success(kind, Some(&user_id), Some(ip), None),
                Err(error) => {
                    tracing::error!(%error, user_id = %user_id, "auth: account mail not sent");
                    this.failure(
                        kind,
                        Some(&user_id),
                        &Client::new(ip),
                        None,
                        FailureReason::MailFailed,
                    );
                }
            }
        });
    }

    /// Confirms an email address with the token from its verification
    /// link. Needs no session (the link may be opened anywhere).
    ///
    /// Errors: [`AuthError::InvalidToken`] (one answer for a malformed,
    /// unknown, expired or used token, for one whose address or password
    /// changed since it was sent, and for a disabled account's),
    /// [`AuthError::Throttled`].
    pub async fn verify_email(&self, token: &str, client: &Client) -> Result<(), AuthError> {
        self.throttle_ip(client).await?;
        let refuse = self.refuse_link(AuthEventKind::EmailVerificationFailed, None, client);
        let record = self
            .consume_link(token, Purpose::EmailVerification, &refuse)
            .await?;
        // `fingerprint:address`; a link mailed before links were bound to
        // the password (no `:` in a fingerprint, an address has no `:`
        // either) is bound to its address alone until it expires (24 h).
        let (password, address) = match record.binding.split_once(':') {
            Some((password, address)) => (Some(password), address),
            None => (None, record.binding.as_str()),
        };
        // The password it was sent under is still the account's, and the
        // account is not disabled (a disabled account claims no address).
        let user = self
            .inner
            .users
            .find_by_id(&record.user_id)
            .await?
            .filter(|user| !user.is_disabled());
        let same_password = user.as_ref().is_some_and(|user| {
            password.is_none_or(|password| {
                bool::from(
                    reset_binding(user.password_hash())
                        .as_bytes()
                        .ct_eq(password.as_bytes()),
                )
            })
        });
        let accounts = &self.inner.accounts;
        let current = accounts.email(&record.user_id).await?;
        let binding = address.as_bytes();
        // The address it was sent to is still the pending one, or still
        // the unverified one.
        let (pending, unverified) = current.as_ref().map_or((false, false), |email| {
            let pending = email
                .pending
                .as_deref()
                .is_some_and(|p| bool::from(p.as_bytes().ct_eq(binding)));
            let unverified = !email.verified && bool::from(email.address.as_bytes().ct_eq(binding));
            (pending, unverified)
        });
        if !same_password || !(pending || unverified) {
            return Err(refuse(Some(&record.user_id)));
        }
        // Links mailed to the old address die with it: before the change
        // (a failure leaves the old address in effect, links and all: the
        // user asks again), and after it (a link asked for in between went
        // to the old address too).
        if pending {
            self.delete_address_links(&record.user_id).await?;
        }
        if !accounts.verify_email(&record.user_id, address).await? {
            return Err(refuse(Some(&record.user_id)));
        }
        if pending {
            self.delete_address_links(&record.user_id).await?;
            // The old address is told the change took effect.
            if let (Some(old), Some(user), Some(setup)) =
                (current.as_ref(), user.as_ref(), self.inner.mail.as_ref())
            {
                let app = self.app_label();
                let notice = Mail::new(
                    old.address.clone(),
                    format!("Security notice from {app}: your email address was changed"),
                    format!(
                        "The account \"{}\" at {app} uses another email address from now \
                         on ({address}); this one no longer receives its mail.\n\n\
                         If it was not you, contact {app}: whoever changed it can reset \
                         the password through the new address.\n",
                        user.login()
                    ),
                );
                self.send_out_of_band(
                    Arc::clone(&setup.mailer),
                    notice,
                    record.user_id.clone(),
                    client.ip,
                    AuthEventKind::SecurityNoticeSent,
                );
            }
        }
        self.success(
            AuthEventKind::EmailVerified,
            Some(&record.user_id),
            Some(client.ip),
            None,
        );
        Ok(())
    }

    /// Asks for a password reset for `login` (a login name or a verified
    /// email address). The answer is `Ok` whether or not such an account
    /// exists, after the same work: only the per-IP throttle runs before
    /// it ([`AuthError::Throttled`]); finding the account, its own budget
    /// (5 requests, then a growing back-off), the token and the mail run
    /// in a task of their own and are audited
    /// ([`AuthEventKind::PasswordResetRequested`]).
    ///
    /// Errors: [`AuthError::Throttled`], [`AuthError::MailUnavailable`].
    pub async fn request_password_reset(
        &self,
        login: &str,
        client: &Client,
    ) -> Result<(), AuthError> {
        self.request_link(login, client, Purpose::PasswordReset)
            .await
    }

    /// Asks for a sign-in link for `login`, as
    /// [`request_password_reset`](Self::request_password_reset) does for a
    /// reset (the same answer for every login, the work out of band, mail
    /// only to a verified address, audited as
    /// [`AuthEventKind::MagicLinkRequested`]). The link is one factor: an
    /// account with a second factor is still asked for it.
    ///
    /// Errors: [`AuthError::Throttled`], [`AuthError::MailUnavailable`].
    pub async fn request_magic_link(&self, login: &str, client: &Client) -> Result<(), AuthError> {
        self.request_link(login, client, Purpose::MagicLink).await
    }

    async fn request_link(
        &self,
        login: &str,
        client: &Client,
        purpose: Purpose,
    ) -> Result<(), AuthError> {
        let setup = self.mail_setup()?.clone();
        self.throttle_ip(client).await?;
        let this = self.clone();
        let login = login.to_owned();
        let client = client.clone();
        tokio::spawn(async move {
            if let Err(error) = this.mail_link(&login, &client, setup, purpose).await {
                tracing::error!(%error, purpose = purpose.as_str(), "auth: link request failed");
            }
        });
        Ok(())
    }

    /// The out-of-band part of [`request_link`](Self::request_link).
    async fn mail_link(
        &self,
        login: &str,
        client: &Client,
        setup: MailSetup,
        purpose: Purpose,
    ) -> Result<(), AuthError> {
        let kind = match purpose {
            Purpose::MagicLink => AuthEventKind::MagicLinkRequested,
            _ => AuthEventKind::PasswordResetRequested,
        };
        let refused = |user: Option<&str>, reason| {
            self.failure(kind, user, client, None, reason);
        };
        let user = self.find_for_recovery(login).await?;
        let Some(user) = user.filter(|u| !u.is_disabled()) else {
            // An account's budget check below takes one more attempt from
            // the client's IP budgets: take the same here, or how soon the
            // IP is throttled would tell which names have an account.
            let _same_cost = self.inner.throttle.check_ip(client.ip, self.now()).await?;
            refused(None, FailureReason::UnknownUser);
            return Ok(());
        };
        let decision = self
            .inner
            .throttle
            .check(
                &Attempt {
                    ip: client.ip,
                    account: &link_account(user.id(), purpose),
                    device: None,
                },
                self.now(),
            )
            .await?;
        if let Decision::Limited { .. } = decision {
            refused(Some(user.id()), FailureReason::AccountLocked);
            return Ok(());
        }
        let Some(address) = self.verified_address(&user).await? else {
            refused(Some(user.id()), FailureReason::NoAddress);
            return Ok(());
        };
        let tokens = &self.inner.tokens;
        tokens.delete_for_user(user.id(), purpose).await?;
        let token = self
            .issue_token(
                user.id(),
                purpose,
                &link_binding(user.password_hash(), &address),
            )
            .await?;
        let minutes = purpose.lifetime().as_secs() / 60;
        let app = self.app_label();
        let mail = match purpose {
            Purpose::MagicLink => Mail::new(
                address,
                format!("Your sign-in link for {app}"),
                format!(
                    "Someone (we hope you) asked to sign in to the account \"{}\" at {app}.\n\n\
                     To sign in, open this link within {minutes} minutes:\n{}\n\n\
                     If it was not you, ignore this mail: nobody can sign in without it.\n",
                    user.login(),
                    setup.links.link(&setup.links.magic, &token),
                ),
            ),
            _ => Mail::new(
                address,
                format!("Reset your password for {app}"),
                format!(
                    "Someone (we hope you) asked to reset the password of the account \
                     \"{}\" at {app}.\n\n\
                     To choose a new password, open this link within {minutes} minutes:\n{}\n\n\
                     If it was not you, ignore this mail: your password stays as it is.\n",
                    user.login(),
                    setup.links.link(&setup.links.reset, &token),
                ),
            ),
        };
        match setup.mailer.send(mail).await {
            Ok(()) => self.success(kind, Some(user.id()), Some(client.ip), None),
            Err(error) => {
                tracing::error!(%error, user_id = %user.id(), "auth: link mail not sent");
                refused(Some(user.id()), FailureReason::MailFailed);
            }
        }
        Ok(())
    }

    /// The record of a live link of `purpose`, looked at without taking it,
    /// and its user if enabled (the link pages' "whose is it").
    async fn peek_link(
        &self,
        token: &str,
        purpose: Purpose,
    ) -> Result<Option<(TokenRecord, AnyUser)>, AuthError> {
        let Some(token) = SingleUseToken::parse(token.trim()) else {
            return Ok(None);
        };
        let tokens = &self.inner.tokens;
        let Some(record) = tokens.peek(&token.key(), purpose, self.now()).await? else {
            return Ok(None);
        };
        Ok(match self.inner.users.find_by_id(&record.user_id).await? {
            Some(user) if !user.is_disabled() => Some((record, user)),
            _ => None,
        })
    }

    /// The login name of the account a magic link signs in to, looked up
    /// without using the link, for the link's page to name ("sign in as
    /// ..."): a link somebody else sent is then not followed blindly.
    /// `None` for a link that would not sign in (malformed, unknown, used,
    /// expired, stale, a disabled user), or when the token store cannot
    /// look without taking ([`TokenStore::peek`](crate::single_use::TokenStore::peek)).
    /// Not throttled: the page is a GET any other site can have a browser
    /// load, and a charge to the client IP's budget would lock that
    /// browser's logins; a token is 256 random bits, so the answer tells
    /// nothing to whoever does not hold one.
    pub async fn magic_link_account(&self, token: &str) -> Result<Option<String>, AuthError> {
        let Some((record, user)) = self.peek_link(token, Purpose::MagicLink).await? else {
            return Ok(None);
        };
        if !self.link_holds(&user, &record).await? {
            return Ok(None);
        }
        Ok(Some(user.login().to_owned()))
    }

    /// The login name of the account an email verification link would give
    /// its address to, looked up without using the link, for the link's
    /// page to name ("confirm this address for the account ..."): a link
    /// somebody else's registration sent is then not confirmed blindly.
    /// `None` for a link that would not verify (malformed, unknown, used,
    /// expired, one whose address or password changed, a disabled user),
    /// or when the token store cannot look without taking. Not throttled,
    /// as [`magic_link_account`](Self::magic_link_account).
    pub async fn verification_account(&self, token: &str) -> Result<Option<String>, AuthError> {
        let Some((record, user)) = self.peek_link(token, Purpose::EmailVerification).await? else {
            return Ok(None);
        };
        let (password, address) = match record.binding.split_once(':') {
            Some((password, address)) => (Some(password), address),
            None => (None, record.binding.as_str()),
        };
        let same_password = password.is_none_or(|password| {
            bool::from(
                reset_binding(user.password_hash())
                    .as_bytes()
                    .ct_eq(password.as_bytes()),
            )
        });
        let current = self.inner.accounts.email(user.id()).await?;
        let same_address = current.is_some_and(|email| {
            email.pending.as_deref() == Some(address)
                || (!email.verified && email.address == address)
        });
        Ok((same_password && same_address).then(|| user.login().to_owned()))
    }

    /// Signs in with the token from a magic link: one factor
    /// ([`Factor::EmailLink`]), so an account with a second factor gets
    /// [`LoginOutcome::MfaRequired`] as after a password. `current` is the
    /// request's session, ended and replaced as at a login. The link works
    /// once, dies with a password change, and lasts 15 minutes.
    ///
    /// Errors: [`AuthError::InvalidToken`] (one answer for a malformed,
    /// unknown, used, expired or stale token, and a disabled user),
    /// [`AuthError::SignedInAsAnother`] when `current` belongs to another
    /// account, signed in or half-way through a sign-in (the link stays
    /// usable: someone else's link must not replace the owner's session
    /// with theirs),
    /// [`AuthError::Throttled`], and what [`login`](Self::login) answers
    /// for an unverified address when verification is required.
    pub async fn finish_magic_link(
        &self,
        token: &str,
        client: &Client,
        current: Option<&Session>,
    ) -> Result<LoginOutcome, AuthError> {
        self.throttle_ip(client).await?;
        let refuse = self.refuse_link(AuthEventKind::LoginFailed, Some(Factor::EmailLink), client);
        // The session's user (signed in, or half-way through a sign-in).
        let occupant = current.and_then(|s| s.record().user_id.as_deref());
        // Another account's link: refused before it is taken, where the
        // store can look without taking (no put-back that a cancellation
        // of the link could race).
        if let (Some(occupant), Some(token)) = (occupant, SingleUseToken::parse(token.trim()))
            && let Some(record) = self
                .inner
                .tokens
                .peek(&token.key(), Purpose::MagicLink, self.now())
                .await?
            && record.user_id != occupant
        {
            return Err(self.signed_in_as_another(&record.user_id, client));
        }
        let record = self
            .consume_link(token, Purpose::MagicLink, &refuse)
            .await?;
        let user = match self.inner.users.find_by_id(&record.user_id).await? {
            Some(user) if !user.is_disabled() => user,
            _ => return Err(refuse(Some(&record.user_id))),
        };
        let hash = user.password_hash().to_owned();
        if !self.link_holds(&user, &record).await? {
            return Err(refuse(Some(user.id())));
        }
        if let Some(other) = occupant
            && other != user.id()
        {
            // A store without `peek`: put back, the owner of the link may
            // still use it.
            if let Some(token) = SingleUseToken::parse(token.trim()) {
                self.inner.tokens.insert(&token.key(), &record).await?;
            }
            return Err(self.signed_in_as_another(user.id(), client));
        }
        // As a password login: the device earns standing only from a
        // complete sign-in.
        let account = link_account(user.id(), Purpose::MagicLink);
        self.throttle_partial_success(&account, client).await?;
        let outcome = self
            .sign_in(&user, &hash, Factor::EmailLink, current, client)
            .await?;
        if matches!(outcome, LoginOutcome::LoggedIn(_)) {
            self.remember_device(&account, client).await;
        }
        Ok(outcome)
    }

    /// With [`require_verified_email`](super::AuthBuilder::require_verified_email):
    /// refuses a sign-in of a user without a verified address
    /// ([`AuthError::EmailNotVerified`], audited).
    pub(super) async fn check_verified(
        &self,
        user: &AnyUser,
        client: &Client,
    ) -> Result<(), AuthError> {
        if !self.inner.require_verified_email || self.verified_address(user).await?.is_some() {
            return Ok(());
        }
        self.failure(
            AuthEventKind::LoginFailed,
            Some(user.id()),
            client,
            None,
            FailureReason::NoAddress,
        );
        Err(AuthError::EmailNotVerified)
    }

    /// The user a recovery request names: by verified address, else by
    /// login name. The address goes first: login names may contain `@`,
    /// and a name registered as somebody else's address must not take
    /// their recovery mail.
    async fn find_for_recovery(&self, login: &str) -> Result<Option<AnyUser>, AuthError> {
        if let Ok(address) = normalize_email(login)
            && let Some(id) = self.inner.accounts.find_by_email(&address).await?
        {
            return Ok(self.inner.users.find_by_id(&id).await?);
        }
        match LoginName::parse(login) {
            Ok(name) => Ok(self.inner.users.find_by_login(&name).await?),
            Err(_) => Ok(None),
        }
    }

    /// Whether a reset or sign-in link's `record` still holds for `user`:
    /// bound to the current password and the current verified address
    /// (compared in constant time).
    async fn link_holds(&self, user: &AnyUser, record: &TokenRecord) -> Result<bool, AuthError> {
        let Some(address) = self.verified_address(user).await? else {
            return Ok(false);
        };
        let current = link_binding(user.password_hash(), &address);
        Ok(bool::from(
            current.as_bytes().ct_eq(record.binding.as_bytes()),
        ))
    }

    /// Where recovery mail for `user` may go: the app's own address, else
    /// the toolkit's if verified.
    async fn verified_address(&self, user: &AnyUser) -> Result<Option<String>, AuthError> {
        if let Some(address) = user.email() {
            return Ok(Some(address.to_owned()));
        }
        Ok(self
            .inner
            .accounts
            .email(user.id())
            .await?
            .filter(|email| email.verified)
            .map(|email| email.address))
    }

    /// Sets a new password with the token from a reset link: the policy
    /// applies (as at registration; a refused password leaves the link
    /// usable), every session of the account ends, its login locks are
    /// lifted and its other reset links die. Does not sign in: the next
    /// sign-in asks for the second factor as usual.
    ///
    /// Errors: [`AuthError::InvalidToken`] (one answer for a malformed,
    /// unknown, expired, used or stale token, and for a password changed
    /// since the link was sent), [`AuthError::Policy`],
    /// [`AuthError::Throttled`], [`AuthError::Busy`].
    pub async fn reset_password(
        &self,
        token: &str,
        new_password: &Password,
        client: &Client,
    ) -> Result<(), AuthError> {
        self.throttle_ip(client).await?;
        let refuse = self.refuse_link(
            AuthEventKind::PasswordResetFailed,
            Some(Factor::Password),
            client,
        );
        let Some(token) = SingleUseToken::parse(token.trim()) else {
            return Err(refuse(None));
        };
        let passwords = &self.inner.passwords;
        // The policy without the user first: a refused password keeps the
        // link usable.
        let base = match &self.inner.app_name {
            Some(app) => PolicyContext::new().with_word(app),
            None => PolicyContext::new(),
        };
        passwords
            .check_policy(new_password, &base)
            .map_err(AuthError::Policy)?;
        let key = token.key();
        let tokens = &self.inner.tokens;
        let Some(record) = tokens
            .consume(&key, Purpose::PasswordReset, self.now())
            .await?
        else {
            return Err(refuse(None));
        };
        let user = match self.inner.users.find_by_id(&record.user_id).await? {
            Some(user) if !user.is_disabled() => user,
            _ => return Err(refuse(Some(&record.user_id))),
        };
        if !self.link_holds(&user, &record).await? {
            // The password changed since the link was sent, or the address
            // it went to is no longer the account's.
            return Err(refuse(Some(user.id())));
        }
        let hash = match passwords
            .hash_new_password(new_password, &self.policy_context(user.login()))
            .await
        {
            Ok(hash) => hash,
            Err(error) => {
                // Not the token's fault: put it back for another try.
                tokens.insert(&key, &record).await?;
                return Err(match error {
                    PasswordError::Policy(violation) => AuthError::Policy(violation),
                    other => other.into(),
                });
            }
        };
        if !self
            .inner
            .users
            .set_password_hash(user.id(), user.password_hash(), hash.as_str())
            .await?
        {
            return Err(refuse(Some(user.id())));
        }
        // Every session ends (the stamp follows the hash; the epoch covers
        // stores that cannot revoke by user), and the password lock lifts.
        // The second factor's stays: a reset proves the mailbox, which is
        // what the second factor stands against, so a reset never buys
        // fresh code guesses.
        self.sign_out_user(user.id()).await?;
        self.unlock_password(user.id()).await?;
        tokens
            .delete_for_user(user.id(), Purpose::PasswordReset)
            .await?;
        self.success(
            AuthEventKind::PasswordReset,
            Some(user.id()),
            Some(client.ip),
            Some(Factor::Password),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::notice;
    use crate::event::AuthEventKind;

    /// The events that change how an account signs in are told; the rest
    /// (logins, failures, the notice itself) are not.
    #[test]
    fn every_change_to_how_an_account_signs_in_has_a_notice() {
        for kind in [
            AuthEventKind::PasswordChanged,
            AuthEventKind::PasswordReset,
            AuthEventKind::TotpEnabled,
            AuthEventKind::TotpDisabled,
            AuthEventKind::RecoveryCodesRegenerated,
            AuthEventKind::PasskeyAdded,
            AuthEventKind::PasskeyRemoved,
        ] {
            assert!(notice(kind).is_some(), "{kind:?}");
        }
        for kind in [
            AuthEventKind::LoginSucceeded,
            AuthEventKind::LoginFailed,
            AuthEventKind::PasskeyAddFailed,
            AuthEventKind::TokensRefreshed,
            AuthEventKind::SecurityNoticeSent,
        ] {
            assert!(notice(kind).is_none(), "{kind:?}");
        }
    }
}
