//! Mail delivery for account recovery: password reset, email verification,
//! magic links.
//!
//! A flow builds a [`Mail`] and hands it to a [`Mailer`]. Two mailers come
//! with the toolkit:
//!
//! - [`InsecureLogMailer`], always available, for development: it sends
//!   nothing and writes each mail, body included, to the log. A mail of
//!   account recovery carries a link with a token that is as good as a
//!   password for a while, so the log becomes secret: hence the name.
//! - `SmtpMailer` (feature `smtp`), real delivery through an SMTP server
//!   with [`lettre`](https://docs.rs/lettre): implicit TLS (`smtps://`) or
//!   STARTTLS (`smtp://`, required, never opportunistic), checked against
//!   the Mozilla roots built in (plus roots of your own); plain SMTP only to
//!   a server on this machine, for development, and only when asked for by
//!   name (`?insecure_plaintext=true`).
//!
//! No mail body reaches a `Debug` output or an error: `Debug` of a [`Mail`]
//! shows the recipient only, and [`MailError`] never quotes the mail or the
//! SMTP credentials.
//!
//! ```
//! use auth_core::mail::{InsecureLogMailer, Mail, Mailer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), auth_core::mail::MailError> {
//! // Development only: the mail, with its link, goes to the log.
//! let mailer = InsecureLogMailer::new();
//! let mail = Mail::new(
//!     "alice@example.com",
//!     "Reset your password",
//!     "Open https://app.example/reset#token to choose a new password.",
//! );
//! // `Debug` never shows the body (nor the subject).
//! assert!(!format!("{mail:?}").contains("token"));
//! mailer.send(mail).await?;
//!
//! // A recipient that is not a mail address is refused, as by SMTP.
//! let error = mailer.send(Mail::new("not an address", "Hi", "...")).await;
//! assert!(matches!(error, Err(auth_core::mail::MailError::InvalidAddress(_))));
//! # Ok(())
//! # }
//! ```

use std::fmt;

use async_trait::async_trait;

#[cfg(feature = "smtp")]
mod smtp;
#[cfg(feature = "smtp")]
pub use smtp::{SmtpMailer, SmtpSecurity};

/// Longest mail address accepted (RFC 5321's path limit less the angle
/// brackets).
const MAX_ADDRESS_LEN: usize = 254;

/// One mail to one recipient: plain text, with an optional HTML
/// alternative.
///
/// `Debug` shows the recipient only: the subject and the bodies are
/// `[REDACTED]`, since a recovery mail carries a token.
#[non_exhaustive]
#[derive(Clone, PartialEq, Eq)]
pub struct Mail {
    /// The recipient: `alice@example.com` or `Alice <alice@example.com>`.
    pub to: String,
    /// The subject line (one line: a line break is refused when sending).
    pub subject: String,
    /// The plain-text body.
    pub text: String,
    /// An HTML body, sent as an alternative to [`Mail::text`] when set.
    pub html: Option<String>,
}

impl Mail {
    /// A plain-text mail.
    pub fn new(to: impl Into<String>, subject: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            to: to.into(),
            subject: subject.into(),
            text: text.into(),
            html: None,
        }
    }

    /// Adds an HTML alternative to the plain text.
    #[must_use]
    pub fn with_html(mut self, html: impl Into<String>) -> Self {
        self.html = Some(html.into());
        self
    }

    /// Checks what every mailer refuses: a recipient that is not one mail
    /// address, a subject with a control character (a line break would
    /// start a new header).
    fn validate(&self) -> Result<(), MailError> {
        if !is_mailbox(&self.to) {
            return Err(MailError::InvalidAddress(AddressRole::Recipient));
        }
        if self.subject.chars().any(char::is_control) {
            return Err(MailError::InvalidMail(
                "the subject contains a line break or another control character",
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for Mail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mail")
            .field("to", &self.to)
            .field("subject", &"[REDACTED]")
            .field("text", &"[REDACTED]")
            .field("html", &self.html.as_ref().map(|_| "[REDACTED]"))
            .finish()
    }
}

/// Sends [`Mail`]. Implementations: [`InsecureLogMailer`] and, with the
/// feature `smtp`, `SmtpMailer`; an app may bring its own (an HTTP API of a
/// mail provider, a queue).
///
/// `send` returns once the mail is handed over (to the SMTP server, the
/// log, the queue); delivery to the mailbox may still fail later.
#[async_trait]
pub trait Mailer: Send + Sync + fmt::Debug + 'static {
    /// Sends one mail.
    async fn send(&self, mail: Mail) -> Result<(), MailError>;
}

/// Which address of a mail was not valid.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressRole {
    /// The recipient ([`Mail::to`]).
    Recipient,
    /// The sender (the mailer's from address).
    Sender,
}

impl fmt::Display for AddressRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Recipient => "recipient",
            Self::Sender => "sender",
        })
    }
}

/// Why a mail was not sent, or a mailer not built. No message quotes the
/// mail's body or the SMTP credentials.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// An address is not one valid mail address (a flow may tell the user
    /// to check it).
    #[error("the {0} is not a valid mail address")]
    InvalidAddress(AddressRole),
    /// The mail cannot be sent as it is (the reason says what).
    #[error("invalid mail: {0}")]
    InvalidMail(&'static str),
    /// The mailer's settings are wrong: the SMTP URL, a certificate, the
    /// timeout.
    #[error("mailer configuration: {0}")]
    Config(String),
    /// The server refused the mail for good (an SMTP `5xx` answer: unknown
    /// recipient, authentication failed, ...).
    #[error("the mail server refused the mail: {0}")]
    Refused(String),
    /// The server refused the mail for now (an SMTP `4xx` answer): a later
    /// try may succeed.
    #[error("the mail server deferred the mail: {0}")]
    Deferred(String),
    /// No conversation with the server: connection, TLS (an untrusted
    /// certificate too), or protocol failure.
    #[error("mail transport failed: {0}")]
    Transport(String),
    /// Sending took longer than the mailer's bound.
    #[error("sending the mail timed out after {0:?}")]
    Timeout(std::time::Duration),
}

/// For development: sends nothing, writes each mail (recipient, subject,
/// body) to the log at `info`. Building one logs a warning.
///
/// Insecure by name: the bodies of recovery mails carry tokens that are as
/// good as a password until they expire, and this writes them to the log.
/// Never use it where the log is read by anyone but the developer.
#[derive(Debug)]
pub struct InsecureLogMailer {
    _private: (),
}

impl InsecureLogMailer {
    /// The mailer; logs a warning that mail is not sent.
    pub fn new() -> Self {
        tracing::warn!(
            "InsecureLogMailer: mail is not sent; links are printed to the log \
             (tokens included): development only"
        );
        Self { _private: () }
    }
}

impl Default for InsecureLogMailer {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Mailer for InsecureLogMailer {
    async fn send(&self, mail: Mail) -> Result<(), MailError> {
        mail.validate()?;
        match &mail.html {
            None => tracing::info!(
                to = %mail.to,
                subject = %mail.subject,
                "mail not sent (InsecureLogMailer):\n{}",
                mail.text
            ),
            Some(html) => tracing::info!(
                to = %mail.to,
                subject = %mail.subject,
                "mail not sent (InsecureLogMailer):\n{}\n--- HTML ---\n{html}",
                mail.text
            ),
        }
        Ok(())
    }
}

/// Whether `text` is one mailbox: `local@domain` or `Name <local@domain>`.
/// A shape check shared by every mailer (the SMTP mailer parses again with
/// lettre): one `@`; no space, control character, bracket, comma or quote
/// in the address; a domain of labels made of letters, digits and `-`,
/// joined by dots.
fn is_mailbox(text: &str) -> bool {
    let text = text.trim();
    let address = match text.rfind('<') {
        Some(open) => {
            let Some(inner) = text[open + 1..].strip_suffix('>') else {
                return false;
            };
            let name = &text[..open];
            if name.chars().any(|c| c.is_control() || c == '<' || c == '>') {
                return false;
            }
            inner
        }
        None => text,
    };
    is_address(address)
}

/// Whether `address` is a plain `local@domain` address.
fn is_address(address: &str) -> bool {
    if address.is_empty() || address.len() > MAX_ADDRESS_LEN {
        return false;
    }
    let Some((local, domain)) = address.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local.chars().all(|c| {
            !c.is_control()
                && !c.is_whitespace()
                && !matches!(
                    c,
                    '@' | '<' | '>' | '(' | ')' | '[' | ']' | ',' | ';' | ':' | '\\' | '"'
                )
        });
    let domain_ok = !domain.is_empty()
        && domain.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
    local_ok && domain_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailbox_shapes() {
        for good in [
            "alice@example.com",
            "a.b+tag@sub.example.co",
            "Alice <alice@example.com>",
            "\"Alice A.\" <alice@example.com>",
            "ü@bücher.example",
            "root@localhost",
        ] {
            assert!(is_mailbox(good), "{good}");
        }
        for bad in [
            "",
            "alice",
            "@example.com",
            "alice@",
            "alice@@example.com",
            "a@b@example.com",
            "alice@example..com",
            "alice@-example.com",
            "alice @example.com",
            "alice@example.com, bob@example.com",
            "alice@example.com\r\nBcc: eve@example.com",
            "Alice <alice@example.com",
            "Alice <alice@example.com> x",
            ".alice@example.com",
            "alice@exa_mple.com",
        ] {
            assert!(!is_mailbox(bad), "{bad:?}");
        }
        let long = format!("{}@example.com", "a".repeat(65));
        assert!(!is_mailbox(&long));
    }

    #[test]
    fn debug_hides_subject_and_bodies() {
        let mail = Mail::new("alice@example.com", "Code 123456", "token-abc")
            .with_html("<a>token-abc</a>");
        let debug = format!("{mail:?}");
        assert!(debug.contains("alice@example.com"));
        assert!(!debug.contains("token-abc"));
        assert!(!debug.contains("123456"));
    }

    #[test]
    fn subject_line_breaks_are_refused() {
        let mail = Mail::new("alice@example.com", "Hi\r\nBcc: eve@example.com", "x");
        assert!(matches!(mail.validate(), Err(MailError::InvalidMail(_))));
    }
}
