//! `SmtpMailer`: delivery through an SMTP server with lettre (rustls on
//! ring, the Mozilla roots built in).

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};

use super::{AddressRole, Mail, MailError, Mailer, is_mailbox};

/// The default bound on one send, connection and TLS handshake included.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How the connection to the SMTP server is protected.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// TLS from the first byte (`smtps://`, port 465 by default).
    ImplicitTls,
    /// Plain connection upgraded with `STARTTLS`, which the server must
    /// offer (`smtp://`, port 587 by default): a server that does not is
    /// refused, never talked to in plain text.
    StartTls,
    /// No encryption at all (`smtp://...?insecure_plaintext=true`): only to
    /// a server on a loopback address or `localhost`, for development.
    InsecurePlaintext,
}

impl SmtpSecurity {
    fn scheme(self) -> &'static str {
        match self {
            Self::ImplicitTls => "smtps",
            Self::StartTls | Self::InsecurePlaintext => "smtp",
        }
    }
}

/// Delivery through an SMTP server (feature `smtp`).
///
/// Built from a URL:
///
/// | URL | connection |
/// |---|---|
/// | `smtps://user:password@mail.example.com` | implicit TLS, port 465 by default |
/// | `smtp://user:password@mail.example.com:587` | STARTTLS, required; port 587 by default |
/// | `smtp://127.0.0.1:1025?insecure_plaintext=true` | no TLS: only to a loopback address or `localhost` (a warning is logged) |
///
/// User name and password are optional (both or neither) and
/// percent-decoded; they never appear in `Debug` or in an error. The
/// server's certificate is checked against the Mozilla roots built in
/// (webpki-roots) and any added with
/// [`with_root_certificate_pem`](Self::with_root_certificate_pem). Each
/// send opens its own connection and is bounded by a timeout (30 s by
/// default, [`with_timeout`](Self::with_timeout)).
///
/// Sending needs a tokio runtime with IO and time enabled (what
/// `#[tokio::main]` builds).
///
/// ```
/// use auth_core::mail::{SmtpMailer, SmtpSecurity};
///
/// let mailer = SmtpMailer::from_url(
///     "smtps://mailer:s3cret@mail.example.com",
///     "Example <noreply@example.com>",
/// )?;
/// assert_eq!(mailer.security(), SmtpSecurity::ImplicitTls);
/// assert!(!format!("{mailer:?}").contains("s3cret"));
///
/// // Plain text leaves this machine never.
/// assert!(SmtpMailer::from_url(
///     "smtp://mail.example.com:25?insecure_plaintext=true",
///     "noreply@example.com",
/// )
/// .is_err());
/// # Ok::<(), auth_core::mail::MailError>(())
/// ```
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    host: String,
    port: u16,
    security: SmtpSecurity,
    credentials: Option<(String, SecretString)>,
    roots: Vec<Vec<u8>>,
    from: Mailbox,
    timeout: Duration,
}

impl SmtpMailer {
    /// Parses an SMTP URL (see the table above) and the from address
    /// (`noreply@example.com` or `Example <noreply@example.com>`).
    ///
    /// Errors: [`MailError::Config`] for a URL that is not one of the
    /// forms above (plain text to another machine included),
    /// [`MailError::InvalidAddress`] for the from address.
    pub fn from_url(url: &str, from: &str) -> Result<Self, MailError> {
        let from = parse_mailbox(from, AddressRole::Sender)?;
        let parsed = url::Url::parse(url.trim())
            .map_err(|e| config(format!("the SMTP URL is not a URL ({e})")))?;
        let implicit_tls = match parsed.scheme() {
            "smtps" => true,
            "smtp" => false,
            other => {
                return Err(config(format!(
                    "the SMTP URL's scheme is `{other}`: use `smtps://` (TLS) or `smtp://` (STARTTLS)"
                )));
            }
        };
        let (host, loopback) = match parsed.host() {
            // `smtp` is no special scheme to the URL standard: its host
            // stays text, an IPv4 address included.
            Some(url::Host::Domain(name)) if !name.is_empty() => match name.parse::<IpAddr>() {
                Ok(ip) => (ip.to_string(), ip.is_loopback()),
                Err(_) => {
                    let lower = name.to_ascii_lowercase();
                    let loopback = lower == "localhost";
                    (lower, loopback)
                }
            },
            Some(url::Host::Ipv4(ip)) => (ip.to_string(), ip.is_loopback()),
            Some(url::Host::Ipv6(ip)) => (ip.to_string(), IpAddr::V6(ip).is_loopback()),
            _ => return Err(config("the SMTP URL has no host".to_owned())),
        };
        if !matches!(parsed.path(), "" | "/") || parsed.fragment().is_some() {
            return Err(config(
                "the SMTP URL has a path or a fragment: only scheme, credentials, host, port and \
                 `?insecure_plaintext=true` are understood"
                    .to_owned(),
            ));
        }
        let mut plaintext = false;
        for (key, value) in parsed.query_pairs() {
            match (key.as_ref(), value.as_ref()) {
                ("insecure_plaintext", "true") => plaintext = true,
                ("insecure_plaintext", "false") => plaintext = false,
                ("insecure_plaintext", _) => {
                    return Err(config(
                        "`insecure_plaintext` in the SMTP URL must be `true` or `false`".to_owned(),
                    ));
                }
                // The name is not quoted: a password pasted in the wrong
                // place would be.
                _ => {
                    return Err(config(
                        "unknown parameter in the SMTP URL (only `insecure_plaintext` is understood)"
                            .to_owned(),
                    ));
                }
            }
        }
        let security = match (implicit_tls, plaintext) {
            (true, true) => {
                return Err(config(
                    "`insecure_plaintext` contradicts `smtps://` (TLS): use `smtp://` for plain SMTP"
                        .to_owned(),
                ));
            }
            (true, false) => SmtpSecurity::ImplicitTls,
            (false, false) => SmtpSecurity::StartTls,
            (false, true) if loopback => SmtpSecurity::InsecurePlaintext,
            (false, true) => {
                return Err(config(format!(
                    "insecure_plaintext is allowed only to a server on this machine (a loopback \
                     address or `localhost`), not to `{host}`: use `smtps://` or STARTTLS"
                )));
            }
        };
        let port = parsed.port().unwrap_or(match security {
            SmtpSecurity::ImplicitTls => 465,
            SmtpSecurity::StartTls | SmtpSecurity::InsecurePlaintext => 587,
        });
        let credentials = match (parsed.username(), parsed.password()) {
            ("", None) => None,
            ("", Some(_)) => {
                return Err(config(
                    "the SMTP URL has a password but no user name".to_owned(),
                ));
            }
            (_, None) => {
                return Err(config(
                    "the SMTP URL has a user name but no password".to_owned(),
                ));
            }
            (user, Some(password)) => {
                let decode = |text: &str, what: &str| {
                    percent_decode(text).ok_or_else(|| {
                        config(format!(
                            "the SMTP URL's {what} is not valid percent-encoded UTF-8"
                        ))
                    })
                };
                Some((
                    decode(user, "user name")?,
                    SecretString::from(decode(password, "password")?),
                ))
            }
        };
        let transport = build_transport(
            &host,
            port,
            security,
            credentials.as_ref(),
            &[],
            DEFAULT_TIMEOUT,
        )?;
        let mailer = Self {
            transport,
            host,
            port,
            security,
            credentials,
            roots: Vec::new(),
            from,
            timeout: DEFAULT_TIMEOUT,
        };
        if security == SmtpSecurity::InsecurePlaintext {
            tracing::warn!(
                server = %mailer.server(),
                "insecure_plaintext: mail (with its links) and any SMTP credentials go to the \
                 server unencrypted; development only"
            );
        }
        Ok(mailer)
    }

    /// Bounds each send, from connecting to the server's last answer
    /// (default 30 s). A zero duration is refused.
    pub fn with_timeout(mut self, timeout: Duration) -> Result<Self, MailError> {
        if timeout.is_zero() {
            return Err(config(
                "the SMTP timeout must be longer than zero".to_owned(),
            ));
        }
        self.timeout = timeout;
        self.rebuild()
    }

    /// Trusts the certificates of `pem` (one or more `CERTIFICATE` blocks)
    /// as roots too, besides the Mozilla roots built in: for a server with
    /// a certificate of a private CA.
    pub fn with_root_certificate_pem(mut self, pem: &[u8]) -> Result<Self, MailError> {
        if !pem
            .windows(b"-----BEGIN CERTIFICATE-----".len())
            .any(|w| w == b"-----BEGIN CERTIFICATE-----")
        {
            return Err(config(
                "no `BEGIN CERTIFICATE` block in the root certificate PEM".to_owned(),
            ));
        }
        self.roots.push(pem.to_vec());
        self.rebuild()
    }

    /// How the connection is protected.
    pub fn security(&self) -> SmtpSecurity {
        self.security
    }

    /// The server, without credentials: `smtps://mail.example.com:465`
    /// (for logs).
    pub fn server(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{}://{host}:{}", self.security.scheme(), self.port)
    }

    /// Connects, secures the connection and logs in, without sending a
    /// mail: a start-up check of the settings. Bounded by the timeout.
    pub async fn check_connection(&self) -> Result<(), MailError> {
        match tokio::time::timeout(self.timeout, self.transport.test_connection()).await {
            Err(_) => Err(MailError::Timeout(self.timeout)),
            Ok(Err(error)) => Err(map_error(&error, self.timeout)),
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(MailError::Transport(
                "the server closed the connection".to_owned(),
            )),
        }
    }

    fn rebuild(mut self) -> Result<Self, MailError> {
        self.transport = build_transport(
            &self.host,
            self.port,
            self.security,
            self.credentials.as_ref(),
            &self.roots,
            self.timeout,
        )?;
        Ok(self)
    }

    fn message(&self, mail: Mail) -> Result<Message, MailError> {
        mail.validate()?;
        let to = parse_mailbox(&mail.to, AddressRole::Recipient)?;
        let builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject);
        let built = match mail.html {
            None => builder.singlepart(SinglePart::plain(mail.text)),
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(mail.text, html)),
        };
        // The builder's errors name a missing or doubled header, never a
        // value.
        built.map_err(|_| MailError::InvalidMail("the message could not be assembled"))
    }
}

impl fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpMailer")
            .field("server", &self.server())
            .field("security", &self.security)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "[REDACTED]"),
            )
            .field("extra_roots", &self.roots.len())
            .field("from", &self.from.to_string())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, mail: Mail) -> Result<(), MailError> {
        let message = self.message(mail)?;
        match tokio::time::timeout(self.timeout, self.transport.send(message)).await {
            Err(_) => Err(MailError::Timeout(self.timeout)),
            Ok(Err(error)) => Err(map_error(&error, self.timeout)),
            Ok(Ok(_)) => {
                tracing::debug!(server = %self.server(), "mail handed to the SMTP server");
                Ok(())
            }
        }
    }
}

fn config(message: String) -> MailError {
    MailError::Config(message)
}

fn parse_mailbox(text: &str, role: AddressRole) -> Result<Mailbox, MailError> {
    if !is_mailbox(text) {
        return Err(MailError::InvalidAddress(role));
    }
    text.trim()
        .parse::<Mailbox>()
        .map_err(|_| MailError::InvalidAddress(role))
}

fn build_transport(
    host: &str,
    port: u16,
    security: SmtpSecurity,
    credentials: Option<&(String, SecretString)>,
    roots: &[Vec<u8>],
    timeout: Duration,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, MailError> {
    let tls = match security {
        SmtpSecurity::InsecurePlaintext => Tls::None,
        SmtpSecurity::ImplicitTls | SmtpSecurity::StartTls => {
            let mut parameters = TlsParameters::builder(host.to_owned());
            for pem in roots {
                let certificate = Certificate::from_pem(pem)
                    .map_err(|_| config("the root certificate PEM is not valid".to_owned()))?;
                parameters = parameters.add_root_certificate(certificate);
            }
            let parameters = parameters
                .build_rustls()
                .map_err(|e| config(format!("TLS setup failed: {e}")))?;
            if security == SmtpSecurity::ImplicitTls {
                Tls::Wrapper(parameters)
            } else {
                Tls::Required(parameters)
            }
        }
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(port)
        .tls(tls)
        .timeout(Some(timeout));
    if let Some((user, password)) = credentials {
        builder = builder.credentials(Credentials::new(
            user.clone(),
            password.expose_secret().to_owned(),
        ));
    }
    Ok(builder.build())
}

/// lettre's error as ours. Its text names the kind, the SMTP code and the
/// server's answer or the IO/TLS cause: never the mail or the
/// credentials.
fn map_error(error: &lettre::transport::smtp::Error, timeout: Duration) -> MailError {
    let text = error.to_string();
    if error.is_timeout() {
        MailError::Timeout(timeout)
    } else if error.is_permanent() {
        MailError::Refused(text)
    } else if error.is_transient() {
        MailError::Deferred(text)
    } else {
        MailError::Transport(text)
    }
}

/// Percent-decodes a URL's user name or password.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FROM: &str = "Demo <noreply@example.com>";

    fn refused(url: &str) -> String {
        match SmtpMailer::from_url(url, FROM) {
            Err(MailError::Config(message)) => message,
            other => panic!("{url}: {other:?}"),
        }
    }

    #[test]
    fn url_forms() {
        let m = SmtpMailer::from_url("smtps://u:p@mail.example.com", FROM).unwrap();
        assert_eq!(m.security(), SmtpSecurity::ImplicitTls);
        assert_eq!(m.server(), "smtps://mail.example.com:465");
        let m = SmtpMailer::from_url("smtp://mail.example.com", FROM).unwrap();
        assert_eq!(m.security(), SmtpSecurity::StartTls);
        assert_eq!(m.server(), "smtp://mail.example.com:587");
        let m = SmtpMailer::from_url("smtp://MAIL.example.com:2525/", FROM).unwrap();
        assert_eq!(m.server(), "smtp://mail.example.com:2525");
        for url in [
            "smtp://127.0.0.1:2525?insecure_plaintext=true",
            "smtp://127.9.9.9:2525?insecure_plaintext=true",
            "smtp://localhost:1025?insecure_plaintext=true",
            "smtp://LocalHost:1025?insecure_plaintext=true",
            "smtp://[::1]:1025?insecure_plaintext=true",
        ] {
            let m = SmtpMailer::from_url(url, FROM).unwrap();
            assert_eq!(m.security(), SmtpSecurity::InsecurePlaintext, "{url}");
        }
        let m = SmtpMailer::from_url("smtp://[::1]:1025?insecure_plaintext=true", FROM).unwrap();
        assert_eq!(m.server(), "smtp://[::1]:1025");
    }

    #[test]
    fn bad_urls_are_refused_clearly() {
        assert!(
            refused("smtp://mail.example.com?insecure_plaintext=true").contains("this machine")
        );
        assert!(refused("smtp://10.0.0.1:25?insecure_plaintext=true").contains("this machine"));
        assert!(
            refused("smtp://localhost.example.com?insecure_plaintext=true")
                .contains("this machine")
        );
        assert!(refused("smtps://127.0.0.1?insecure_plaintext=true").contains("contradicts"));
        assert!(refused("smtp://127.0.0.1?insecure_plaintext=yes").contains("`true` or `false`"));
        assert!(refused("http://mail.example.com").contains("scheme"));
        assert!(refused("mail.example.com").contains("not a URL"));
        assert!(refused("smtp://mail.example.com/inbox").contains("path"));
        assert!(refused("smtp://mail.example.com?tls=none").contains("unknown parameter"));
        assert!(refused("smtp://user@mail.example.com").contains("no password"));
        assert!(refused("smtp://:pw@mail.example.com").contains("no user name"));
        assert!(refused("smtp://u:%FF@mail.example.com").contains("percent-encoded"));
        assert!(refused("").contains("not a URL"));
    }

    #[test]
    fn bad_from_is_an_invalid_sender() {
        assert!(matches!(
            SmtpMailer::from_url("smtps://mail.example.com", "noreply"),
            Err(MailError::InvalidAddress(AddressRole::Sender))
        ));
    }

    #[test]
    fn secrets_stay_out_of_debug_and_errors() {
        let m = SmtpMailer::from_url("smtps://mailer:hunter2%40x@mail.example.com", FROM).unwrap();
        let debug = format!("{m:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("[REDACTED]"), "{debug}");
        let Some((user, password)) = &m.credentials else {
            panic!("credentials")
        };
        assert_eq!(user, "mailer");
        assert_eq!(password.expose_secret(), "hunter2@x");
        for url in [
            "smtp://mailer:hunter2@mail.example.com?insecure_plaintext=true",
            "smtp://mailer:hunter2@mail.example.com/x",
            "smtp://mailer:hunter2@mail.example.com?x=1",
            "ftp://mailer:hunter2@mail.example.com",
        ] {
            let message = refused(url);
            assert!(!message.contains("hunter2"), "{message}");
        }
    }

    #[test]
    fn timeout_and_roots_are_checked() {
        let m = SmtpMailer::from_url("smtps://mail.example.com", FROM).unwrap();
        assert!(matches!(
            m.with_timeout(Duration::ZERO),
            Err(MailError::Config(_))
        ));
        let m = SmtpMailer::from_url("smtps://mail.example.com", FROM).unwrap();
        assert!(matches!(
            m.with_root_certificate_pem(b"not a certificate"),
            Err(MailError::Config(_))
        ));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%40b%2Fc").as_deref(), Some("a@b/c"));
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%C3%BC").as_deref(), Some("ü"));
    }
}
