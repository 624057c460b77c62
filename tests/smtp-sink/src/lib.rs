//! Test support: a small SMTP server on `127.0.0.1` that keeps every mail
//! it receives, for tests to read back. Real delivery, no mock: a test
//! points its mailer (`auth_core::mail::SmtpMailer`, a demo through
//! `DEMO_SMTP_URL`) at [`SmtpSink::url`] and reads the mail with
//! [`SmtpSink::wait_for_mail`].
//!
//! It speaks what an SMTP client needs: `EHLO`/`HELO`, `STARTTLS`
//! ([`SmtpSinkBuilder::starttls`]) or TLS from the first byte
//! ([`SmtpSinkBuilder::implicit_tls`]) with a certificate made at start
//! for `localhost`, `127.0.0.1` and `::1` by a throw-away CA
//! ([`SmtpSink::ca_pem`]), `AUTH PLAIN` and `AUTH LOGIN` (any credentials,
//! or only the ones given to [`SmtpSinkBuilder::credentials`]),
//! `MAIL FROM`, `RCPT TO`, `DATA` (dot-unstuffed), `RSET`, `NOOP`,
//! `VRFY`, `QUIT`. Bodies are decoded (quoted-printable, base64, the text
//! and HTML parts of a multipart mail, RFC 2047 subjects), so a test
//! compares plain text.
//!
//! The server runs on a thread of its own with its own tokio runtime, so
//! it serves whatever runtime (or none) the test uses; dropping the
//! [`SmtpSink`] stops it.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use std::time::Duration;
//! use auth_smtp_sink::SmtpSink;
//!
//! let sink = SmtpSink::start()?;
//! assert!(sink.url().starts_with("smtp://127.0.0.1:"));
//! // ... make the code under test send to `sink.url()`, then:
//! let mail = sink.wait_for_mail("alice@example.com", Duration::from_millis(10)).await;
//! assert!(mail.is_none(), "nothing was sent");
//! # Ok(())
//! # }
//! ```

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use base64ct::{Base64, Encoding};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio_rustls::TlsAcceptor;

/// Longest command line accepted (bytes, CRLF included).
const MAX_COMMAND_LINE: u64 = 4096;
/// Longest line of a message accepted (RFC 5321 says 1000; some slack).
const MAX_DATA_LINE: u64 = 8192;
/// Largest message accepted.
const MAX_MESSAGE_BYTES: usize = 10 * 1024 * 1024;
/// The name the sink greets with.
const SERVER_NAME: &str = "sink.test";

/// How the sink protects its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    None,
    StartTls,
    Implicit,
}

/// Options of an [`SmtpSink`]; [`SmtpSinkBuilder::start`] starts it.
#[derive(Debug)]
pub struct SmtpSinkBuilder {
    security: Security,
    credentials: Option<(String, String)>,
}

impl SmtpSinkBuilder {
    /// Offers `STARTTLS`, with a certificate of the sink's own CA
    /// ([`SmtpSink::ca_pem`]); `AUTH` is offered only after it.
    pub fn starttls(mut self) -> Self {
        self.security = Security::StartTls;
        self
    }

    /// TLS from the first byte (what `smtps://` clients expect), with a
    /// certificate of the sink's own CA ([`SmtpSink::ca_pem`]).
    pub fn implicit_tls(mut self) -> Self {
        self.security = Security::Implicit;
        self
    }

    /// Accepts only these credentials at `AUTH` (`535` otherwise) and
    /// refuses `MAIL` before a successful `AUTH` (`530`). Without this,
    /// any credentials pass and `AUTH` is optional.
    pub fn credentials(mut self, user: &str, password: &str) -> Self {
        self.credentials = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// Binds `127.0.0.1:0` and starts serving on a thread of its own.
    pub fn start(self) -> io::Result<SmtpSink> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (acceptor, ca_pem) = match self.security {
            Security::None => (None, None),
            Security::StartTls | Security::Implicit => {
                let (acceptor, pem) = tls_material()?;
                (Some(acceptor), Some(pem))
            }
        };
        let config = Arc::new(Config {
            security: self.security,
            acceptor,
            credentials: self.credentials,
        });
        let shared = Arc::new(Shared {
            mails: Mutex::new(Vec::new()),
            received: watch::Sender::new(0),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("smtp-sink-{}", addr.port()))
                .spawn(move || {
                    runtime.block_on(async move {
                        let accepting = tokio::spawn(accept_loop(listener, config, shared));
                        // Sender dropped or signalled: stop either way.
                        let _ = stopped.await;
                        accepting.abort();
                    });
                    // Dropping the runtime ends the open sessions.
                })?
        };
        Ok(SmtpSink {
            addr,
            security: self.security,
            shared,
            ca_pem,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// A running SMTP sink on `127.0.0.1` (see the crate docs). Dropping it
/// stops the server.
#[derive(Debug)]
pub struct SmtpSink {
    addr: SocketAddr,
    security: Security,
    shared: Arc<Shared>,
    ca_pem: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SmtpSink {
    /// Options: TLS, required credentials.
    pub fn builder() -> SmtpSinkBuilder {
        SmtpSinkBuilder {
            security: Security::None,
            credentials: None,
        }
    }

    /// A plain SMTP sink (no TLS, any or no credentials).
    pub fn start() -> io::Result<Self> {
        Self::builder().start()
    }

    /// The address it listens on (`127.0.0.1`, a free port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A URL for `auth_core::mail::SmtpMailer::from_url`:
    /// `smtp://127.0.0.1:PORT?insecure_plaintext=true` for a plain sink,
    /// `smtp://localhost:PORT` with `STARTTLS`, `smtps://localhost:PORT`
    /// with implicit TLS (trust [`SmtpSink::ca_pem`]). No credentials.
    pub fn url(&self) -> String {
        let port = self.addr.port();
        match self.security {
            Security::None => format!("smtp://127.0.0.1:{port}?insecure_plaintext=true"),
            Security::StartTls => format!("smtp://localhost:{port}"),
            Security::Implicit => format!("smtps://localhost:{port}"),
        }
    }

    /// The PEM of the CA that signed the sink's certificate (for TLS
    /// sinks): what a client must trust.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Every mail received so far, in order (those already returned by
    /// [`SmtpSink::wait_for_mail`] too).
    pub fn mails(&self) -> Vec<ReceivedMail> {
        self.shared
            .lock()
            .iter()
            .map(|entry| entry.mail.clone())
            .collect()
    }

    /// The oldest mail to `to` (an envelope recipient, compared without
    /// case; `Name <addr>` is reduced to `addr`) that this method has not
    /// returned for `to` yet, waiting up to `timeout` for it to arrive.
    /// `None` when none came in time. So a test that makes two mails go to
    /// Alice gets them one after the other. Call it inside a tokio
    /// runtime with time enabled (`#[tokio::test]` is).
    pub async fn wait_for_mail(&self, to: &str, timeout: Duration) -> Option<ReceivedMail> {
        self.wait_for_mail_where(to, timeout, |_| true).await
    }

    /// [`wait_for_mail`](Self::wait_for_mail) among the mails to `to` that
    /// `wanted` accepts only (the others stay for other calls): a test
    /// waits for a reset link whatever notices were sent meanwhile, and in
    /// whichever order.
    pub async fn wait_for_mail_where(
        &self,
        to: &str,
        timeout: Duration,
        wanted: impl Fn(&ReceivedMail) -> bool,
    ) -> Option<ReceivedMail> {
        let to = bare_address(to).to_ascii_lowercase();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut received = self.shared.received.subscribe();
        loop {
            if let Some(mail) = self.take(&to, &wanted) {
                return Some(mail);
            }
            match tokio::time::timeout_at(deadline, received.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return self.take(&to, &wanted),
            }
        }
    }

    fn take(&self, wanted: &str, accept: &impl Fn(&ReceivedMail) -> bool) -> Option<ReceivedMail> {
        let mut mails = self.shared.lock();
        let entry = mails.iter_mut().find(|entry| {
            !entry.taken_for.iter().any(|taken| taken == wanted)
                && accept(&entry.mail)
                && entry
                    .mail
                    .to
                    .iter()
                    .any(|rcpt| rcpt.eq_ignore_ascii_case(wanted))
        })?;
        entry.taken_for.push(wanted.to_owned());
        Some(entry.mail.clone())
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One mail as the sink received it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReceivedMail {
    /// The envelope sender (`MAIL FROM`).
    pub from: String,
    /// The envelope recipients (`RCPT TO`), in order.
    pub to: Vec<String>,
    /// The `Subject` header, decoded (RFC 2047).
    pub subject: String,
    /// The plain-text body (the `text/plain` part of a multipart mail),
    /// decoded, lines ending in `\n`; the line break a client adds to end
    /// the last line is dropped.
    pub body: String,
    /// The `text/html` part, decoded, when there is one.
    pub html: Option<String>,
    /// The headers, unfolded, values as sent.
    pub headers: Vec<(String, String)>,
    /// The message as received, dot-unstuffed, lines ending in CRLF.
    pub raw: String,
    /// Whether the connection was encrypted when the mail came.
    pub tls: bool,
    /// The user name of a successful `AUTH`, if any.
    pub auth_user: Option<String>,
}

impl ReceivedMail {
    /// The first value of a header (name compared without case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
struct Shared {
    mails: Mutex<Vec<Entry>>,
    /// How many mails arrived (waiters watch it).
    received: watch::Sender<usize>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Vec<Entry>> {
        self.mails
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn push(&self, mail: ReceivedMail) {
        let count = {
            let mut mails = self.lock();
            mails.push(Entry {
                mail,
                taken_for: Vec::new(),
            });
            mails.len()
        };
        self.received.send_replace(count);
    }
}

#[derive(Debug)]
struct Entry {
    mail: ReceivedMail,
    /// The recipients (lower case) `wait_for_mail` returned it for.
    taken_for: Vec<String>,
}

struct Config {
    security: Security,
    acceptor: Option<TlsAcceptor>,
    credentials: Option<(String, String)>,
}

async fn accept_loop(listener: std::net::TcpListener, config: Arc<Config>, shared: Arc<Shared>) {
    let Ok(listener) = TcpListener::from_std(listener) else {
        return;
    };
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            // Out of file descriptors or the like: do not spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let config = config.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            // A client that goes away mid-session is no failure of the sink.
            let _ = session(tcp, &config, &shared).await;
        });
    }
}

/// A plain or TLS connection.
enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The state of one SMTP conversation.
#[derive(Default)]
struct Transaction {
    from: Option<String>,
    to: Vec<String>,
}

async fn reply(io: &mut BufReader<Conn>, lines: &[&str]) -> io::Result<()> {
    let mut out = String::new();
    for line in lines {
        out.push_str(line);
        out.push_str("\r\n");
    }
    io.write_all(out.as_bytes()).await?;
    io.flush().await
}

/// One line without its line ending; `None` at the end of the stream;
/// an error for a line longer than `limit`.
async fn read_line(io: &mut BufReader<Conn>, limit: u64) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = (&mut *io).take(limit).read_until(b'\n', &mut buf).await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        if n as u64 >= limit {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
        }
        return Ok(None);
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

async fn session(tcp: TcpStream, config: &Config, shared: &Shared) -> io::Result<()> {
    let mut tls = false;
    let conn = match (&config.acceptor, config.security) {
        (Some(acceptor), Security::Implicit) => {
            tls = true;
            Conn::Tls(Box::new(acceptor.accept(tcp).await?))
        }
        _ => Conn::Plain(tcp),
    };
    let mut io = BufReader::new(conn);
    reply(
        &mut io,
        &[&format!("220 {SERVER_NAME} ESMTP auth-smtp-sink")],
    )
    .await?;
    let mut auth_user: Option<String> = None;
    let mut tx = Transaction::default();
    loop {
        let line = match read_line(&mut io, MAX_COMMAND_LINE).await {
            Ok(Some(line)) => line,
            Ok(None) => return Ok(()),
            Err(error) => {
                let _ = reply(&mut io, &["500 5.5.2 line too long"]).await;
                return Err(error);
            }
        };
        let (verb, arg) = match line.split_once(' ') {
            Some((verb, arg)) => (verb.to_ascii_uppercase(), arg.trim()),
            None => (line.trim().to_ascii_uppercase(), ""),
        };
        let offer_auth = tls || config.security == Security::None;
        match verb.as_str() {
            "EHLO" => {
                tx = Transaction::default();
                let mut lines = vec![
                    format!("250-{SERVER_NAME} hello"),
                    "250-8BITMIME".to_owned(),
                    "250-SMTPUTF8".to_owned(),
                    format!("250-SIZE {MAX_MESSAGE_BYTES}"),
                ];
                if config.security == Security::StartTls && !tls {
                    lines.push("250-STARTTLS".to_owned());
                }
                if offer_auth {
                    lines.push("250-AUTH PLAIN LOGIN".to_owned());
                }
                lines.push("250 ENHANCEDSTATUSCODES".to_owned());
                let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
                reply(&mut io, &lines).await?;
            }
            "HELO" => {
                tx = Transaction::default();
                reply(&mut io, &[&format!("250 {SERVER_NAME}")]).await?;
            }
            "STARTTLS" => {
                let Some(acceptor) = config
                    .acceptor
                    .as_ref()
                    .filter(|_| config.security == Security::StartTls && !tls)
                else {
                    reply(&mut io, &["502 5.5.1 STARTTLS not offered"]).await?;
                    continue;
                };
                reply(&mut io, &["220 2.0.0 ready to start TLS"]).await?;
                let Conn::Plain(tcp) = io.into_inner() else {
                    return Ok(());
                };
                io = BufReader::new(Conn::Tls(Box::new(acceptor.accept(tcp).await?)));
                tls = true;
                // RFC 3207: forget everything said before.
                auth_user = None;
                tx = Transaction::default();
            }
            "AUTH" => {
                if !offer_auth {
                    reply(&mut io, &["538 5.7.11 encryption required for AUTH"]).await?;
                    continue;
                }
                match authenticate(&mut io, arg).await? {
                    None => reply(&mut io, &["501 5.5.2 malformed AUTH"]).await?,
                    Some((user, password)) => {
                        let accepted = config
                            .credentials
                            .as_ref()
                            .is_none_or(|(u, p)| *u == user && *p == password);
                        if accepted {
                            auth_user = Some(user);
                            reply(&mut io, &["235 2.7.0 authenticated"]).await?;
                        } else {
                            reply(&mut io, &["535 5.7.8 authentication credentials invalid"])
                                .await?;
                        }
                    }
                }
            }
            "MAIL" => {
                if config.credentials.is_some() && auth_user.is_none() {
                    reply(&mut io, &["530 5.7.0 authentication required"]).await?;
                    continue;
                }
                match path_argument(arg, "FROM:") {
                    Some(from) => {
                        tx = Transaction {
                            from: Some(from),
                            to: Vec::new(),
                        };
                        reply(&mut io, &["250 2.1.0 sender ok"]).await?;
                    }
                    None => reply(&mut io, &["501 5.5.4 syntax: MAIL FROM:<address>"]).await?,
                }
            }
            "RCPT" => {
                if tx.from.is_none() {
                    reply(&mut io, &["503 5.5.1 MAIL first"]).await?;
                    continue;
                }
                match path_argument(arg, "TO:").filter(|to| !to.is_empty()) {
                    Some(to) => {
                        tx.to.push(to);
                        reply(&mut io, &["250 2.1.5 recipient ok"]).await?;
                    }
                    None => reply(&mut io, &["501 5.5.4 syntax: RCPT TO:<address>"]).await?,
                }
            }
            "DATA" => {
                if tx.to.is_empty() {
                    reply(&mut io, &["503 5.5.1 RCPT first"]).await?;
                    continue;
                }
                reply(&mut io, &["354 end data with <CR><LF>.<CR><LF>"]).await?;
                let Some(raw) = read_data(&mut io).await? else {
                    reply(&mut io, &["552 5.3.4 message too big"]).await?;
                    tx = Transaction::default();
                    continue;
                };
                let tx = std::mem::take(&mut tx);
                shared.push(received_mail(
                    tx.from.unwrap_or_default(),
                    tx.to,
                    raw,
                    tls,
                    auth_user.clone(),
                ));
                reply(&mut io, &["250 2.0.0 queued"]).await?;
            }
            "RSET" => {
                tx = Transaction::default();
                reply(&mut io, &["250 2.0.0 ok"]).await?;
            }
            "NOOP" => reply(&mut io, &["250 2.0.0 ok"]).await?,
            "VRFY" => reply(&mut io, &["252 2.0.0 cannot verify"]).await?,
            "QUIT" => {
                reply(&mut io, &["221 2.0.0 bye"]).await?;
                let _ = io.shutdown().await;
                return Ok(());
            }
            _ => reply(&mut io, &["500 5.5.1 unknown command"]).await?,
        }
    }
}

/// `AUTH PLAIN [initial]` or `AUTH LOGIN [user]`: the user name and
/// password, `None` when malformed or cancelled.
async fn authenticate(io: &mut BufReader<Conn>, arg: &str) -> io::Result<Option<(String, String)>> {
    let mut words = arg.split_whitespace();
    let mechanism = words.next().unwrap_or("").to_ascii_uppercase();
    let initial = words.next().map(str::to_owned);
    match mechanism.as_str() {
        "PLAIN" => {
            let response = match initial {
                Some(initial) => initial,
                None => {
                    reply(io, &["334 "]).await?;
                    let Some(line) = read_line(io, MAX_COMMAND_LINE).await? else {
                        return Ok(None);
                    };
                    line
                }
            };
            let Some(decoded) = decode_base64_text(&response) else {
                return Ok(None);
            };
            let mut parts = decoded.split('\0');
            let (Some(_authzid), Some(user), Some(password), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Ok(None);
            };
            Ok(Some((user.to_owned(), password.to_owned())))
        }
        "LOGIN" => {
            let user = match initial {
                Some(initial) => initial,
                None => {
                    reply(io, &["334 VXNlcm5hbWU6"]).await?;
                    let Some(line) = read_line(io, MAX_COMMAND_LINE).await? else {
                        return Ok(None);
                    };
                    line
                }
            };
            reply(io, &["334 UGFzc3dvcmQ6"]).await?;
            let Some(password) = read_line(io, MAX_COMMAND_LINE).await? else {
                return Ok(None);
            };
            match (decode_base64_text(&user), decode_base64_text(&password)) {
                (Some(user), Some(password)) => Ok(Some((user, password))),
                _ => Ok(None),
            }
        }
        _ => Ok(None),
    }
}

fn decode_base64_text(text: &str) -> Option<String> {
    let text = text.trim();
    if text == "*" {
        return None;
    }
    String::from_utf8(Base64::decode_vec(text).ok()?).ok()
}

/// The address of `FROM:<a@b> PARAMS` / `TO:<a@b>`; `Some("")` for the
/// null path `<>`.
fn path_argument(arg: &str, keyword: &str) -> Option<String> {
    let head = arg.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = arg[keyword.len()..].trim_start();
    let inner = rest.strip_prefix('<')?;
    let end = inner.find('>')?;
    Some(inner[..end].to_owned())
}

/// The message after `DATA`, up to the line with a lone dot, dot-unstuffed,
/// lines joined with CRLF. `None` when it grew past the size limit (the
/// rest is read and dropped).
async fn read_data(io: &mut BufReader<Conn>) -> io::Result<Option<String>> {
    let mut raw = String::new();
    let mut too_big = false;
    loop {
        let Some(line) = read_line(io, MAX_DATA_LINE).await? else {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed inside DATA",
            ));
        };
        if line == "." {
            return Ok(if too_big { None } else { Some(raw) });
        }
        if too_big {
            continue;
        }
        let line = line.strip_prefix('.').unwrap_or(&line);
        if !raw.is_empty() {
            raw.push_str("\r\n");
        }
        raw.push_str(line);
        if raw.len() > MAX_MESSAGE_BYTES {
            too_big = true;
            raw.clear();
        }
    }
}

fn received_mail(
    from: String,
    to: Vec<String>,
    raw: String,
    tls: bool,
    auth_user: Option<String>,
) -> ReceivedMail {
    let (head, body) = split_head_body(&raw);
    let headers = parse_headers(head);
    let subject = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("subject"))
        .map(|(_, v)| decode_encoded_words(v))
        .unwrap_or_default();
    // The CRLF that ends the last line of a single-part body (clients add
    // one; in a multipart mail the closing delimiter takes it).
    let body = body.strip_suffix("\r\n").unwrap_or(body);
    let mut text = None;
    let mut html = None;
    collect_parts(&headers, body, &mut text, &mut html, 0);
    ReceivedMail {
        from,
        to,
        subject,
        body: text.unwrap_or_default(),
        html,
        headers,
        raw,
        tls,
        auth_user,
    }
}

/// Headers and body of a message or a MIME part (CRLF line endings).
fn split_head_body(text: &str) -> (&str, &str) {
    if let Some(body) = text.strip_prefix("\r\n") {
        return ("", body);
    }
    match text.find("\r\n\r\n") {
        Some(at) => (&text[..at], &text[at + 4..]),
        None => (text, ""),
    }
}

fn parse_headers(head: &str) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = headers.last_mut() {
                value.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    headers
}

fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A parameter of a structured header value (`boundary="x"`).
fn header_param(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|param| {
        let (key, val) = param.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| val.trim().trim_matches('"').to_owned())
    })
}

/// Walks a part: the first `text/plain` into `text`, the first
/// `text/html` into `html`.
fn collect_parts(
    headers: &[(String, String)],
    body: &str,
    text: &mut Option<String>,
    html: &mut Option<String>,
    depth: usize,
) {
    let content_type = header(headers, "content-type").unwrap_or("text/plain");
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime.starts_with("multipart/") {
        let Some(boundary) = header_param(content_type, "boundary") else {
            return;
        };
        if depth > 8 {
            return;
        }
        for part in multipart_parts(body, &boundary) {
            let (head, part_body) = split_head_body(part);
            let part_headers = parse_headers(head);
            collect_parts(&part_headers, part_body, text, html, depth + 1);
        }
        return;
    }
    let encoding = header(headers, "content-transfer-encoding")
        .unwrap_or("7bit")
        .trim()
        .to_ascii_lowercase();
    let decoded = match encoding.as_str() {
        "quoted-printable" => decode_quoted_printable(body),
        "base64" => {
            let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            Base64::decode_vec(&compact)
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .unwrap_or_default()
        }
        _ => body.to_owned(),
    };
    let decoded = decoded.replace("\r\n", "\n");
    match mime.as_str() {
        "text/html" if html.is_none() => *html = Some(decoded),
        "text/plain" | "" if text.is_none() => *text = Some(decoded),
        _ => {}
    }
}

/// The parts between `--boundary` lines (the preamble and epilogue
/// dropped), each without the CRLF that belongs to the next delimiter.
fn multipart_parts<'b>(body: &'b str, boundary: &str) -> Vec<&'b str> {
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut start: Option<usize> = None;
    let mut offset: usize = 0;
    for line in body.split_inclusive("\r\n") {
        let bare = line.trim_end_matches("\r\n");
        if bare.starts_with(&delimiter) {
            if let Some(begin) = start {
                // The CRLF before the delimiter belongs to it.
                let end = offset.saturating_sub(2).max(begin);
                parts.push(&body[begin..end]);
            }
            if bare[delimiter.len()..].starts_with("--") {
                return parts;
            }
            start = Some(offset + line.len());
        }
        offset += line.len();
    }
    if let Some(begin) = start {
        parts.push(&body[begin.min(body.len())..]);
    }
    parts
}

fn decode_quoted_printable(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'=' if bytes[i + 1..].starts_with(b"\r\n") => i += 3,
            b'=' if bytes[i + 1..].starts_with(b"\n") => i += 2,
            b'=' => match bytes
                .get(i + 1..i + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            {
                Some(byte) => {
                    out.push(byte);
                    i += 3;
                }
                None => {
                    out.push(b'=');
                    i += 1;
                }
            },
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// RFC 2047 encoded words (`=?utf-8?b?...?=`, `=?utf-8?q?...?=`) decoded;
/// white space between two encoded words dropped.
fn decode_encoded_words(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    let mut pending_space = String::new();
    let mut last_was_word = false;
    while !rest.is_empty() {
        if let Some((decoded, after)) = encoded_word(rest) {
            if !last_was_word {
                out.push_str(&pending_space);
            }
            pending_space.clear();
            out.push_str(&decoded);
            rest = after;
            last_was_word = true;
            continue;
        }
        let Some(c) = rest.chars().next() else { break };
        rest = &rest[c.len_utf8()..];
        if c == ' ' || c == '\t' {
            pending_space.push(c);
        } else {
            out.push_str(&pending_space);
            pending_space.clear();
            out.push(c);
            last_was_word = false;
        }
    }
    out.push_str(&pending_space);
    out
}

/// One encoded word at the start of `text`: its text and the rest.
fn encoded_word(text: &str) -> Option<(String, &str)> {
    let inner = text.strip_prefix("=?")?;
    let (_charset, inner) = inner.split_once('?')?;
    let (encoding, inner) = inner.split_once('?')?;
    let end = inner.find("?=")?;
    let payload = &inner[..end];
    if payload.contains(' ') {
        return None;
    }
    let rest = &inner[end + 2..];
    let bytes = match encoding {
        "B" | "b" => Base64::decode_vec(payload).ok()?,
        "Q" | "q" => decode_quoted_printable(&payload.replace('_', " ")).into_bytes(),
        _ => return None,
    };
    Some((String::from_utf8_lossy(&bytes).into_owned(), rest))
}

fn bare_address(text: &str) -> &str {
    let text = text.trim();
    match (text.rfind('<'), text.rfind('>')) {
        (Some(open), Some(close)) if open < close => &text[open + 1..close],
        _ => text,
    }
}

/// A throw-away CA and a certificate it signs for `localhost`,
/// `127.0.0.1` and `::1`: the acceptor and the CA's PEM.
fn tls_material() -> io::Result<(TlsAcceptor, String)> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    use tokio_rustls::rustls::ServerConfig;
    use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    let other = |e: &dyn std::fmt::Display| io::Error::other(e.to_string());
    let ca_key = KeyPair::generate().map_err(|e| other(&e))?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| other(&e))?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "auth-smtp-sink test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).map_err(|e| other(&e))?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().map_err(|e| other(&e))?;
    let mut leaf = CertificateParams::new(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])
    .map_err(|e| other(&e))?;
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.use_authority_key_identifier_extension = true;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_cert = leaf.signed_by(&key, &issuer).map_err(|e| other(&e))?;

    // The ring provider, as lettre uses (rustls 0.23.48 deprecates it for
    // lacking post-quantum key exchange; a test server needs none).
    #[allow(deprecated)]
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| other(&e))?
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf_cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .map_err(|e| other(&e))?;
    Ok((TlsAcceptor::from(Arc::new(config)), ca_cert.pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_printable() {
        assert_eq!(decode_quoted_printable("a=3Db=\r\nc =C3=BC"), "a=bc ü");
        assert_eq!(decode_quoted_printable("x=zz"), "x=zz");
        assert_eq!(decode_quoted_printable("end="), "end=");
    }

    #[test]
    fn encoded_words() {
        assert_eq!(decode_encoded_words("plain subject"), "plain subject");
        assert_eq!(
            decode_encoded_words("=?utf-8?b?w7w=?= =?utf-8?q?_x=C3=BC?= tail"),
            "ü xü tail"
        );
        assert_eq!(decode_encoded_words("=?broken"), "=?broken");
    }

    #[test]
    fn multipart() {
        let raw = "Subject: hi\r\nContent-Type: multipart/alternative;\r\n boundary=\"XY\"\r\n\r\n\
                   preamble\r\n--XY\r\nContent-Type: text/plain; charset=utf-8\r\n\
                   Content-Transfer-Encoding: base64\r\n\r\naMOk\r\n--XY\r\n\
                   Content-Type: text/html\r\n\r\n<p>h</p>\r\n--XY--\r\nepilogue";
        let mail = received_mail(String::new(), vec![], raw.to_owned(), false, None);
        assert_eq!(mail.subject, "hi");
        assert_eq!(mail.body, "hä");
        assert_eq!(mail.html.as_deref(), Some("<p>h</p>"));
    }

    #[test]
    fn paths() {
        assert_eq!(
            path_argument("FROM:<a@b> BODY=8BITMIME", "FROM:").as_deref(),
            Some("a@b")
        );
        assert_eq!(
            path_argument("from: <a@b>", "FROM:").as_deref(),
            Some("a@b")
        );
        assert_eq!(path_argument("FROM:<>", "FROM:").as_deref(), Some(""));
        assert_eq!(path_argument("TO:a@b", "TO:"), None);
        assert_eq!(bare_address(" Alice <a@b> "), "a@b");
    }
}
