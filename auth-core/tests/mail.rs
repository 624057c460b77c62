//! Mail delivery through a real SMTP server on 127.0.0.1 (the
//! `auth-smtp-sink` test crate): plain SMTP to loopback, STARTTLS and
//! implicit TLS with a certificate of the sink's own CA, authentication;
//! and what must never happen: plain text to another machine, a
//! downgrade from STARTTLS, secrets in `Debug` or errors.
#![cfg(feature = "smtp")]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use auth_core::mail::{
    AddressRole, InsecureLogMailer, Mail, MailError, Mailer, SmtpMailer, SmtpSecurity,
};
use auth_smtp_sink::SmtpSink;

const FROM: &str = "Auth Demo <noreply@example.com>";
const WAIT: Duration = Duration::from_secs(5);
const LINK: &str = "https://app.example/reset?token=Zm9vYmFyLWEtdmVyeS1sb25nLXRva2VuLXRoYXQtbWFrZXMtdGhlLWxpbmUtbG9uZw";

fn reset_mail(to: &str) -> Mail {
    Mail::new(
        to,
        "Réinitialiser votre mot de passe",
        format!("Hello,\n\nopen {LINK} to choose a new password.\n.\n..dots stay\nGrüße\n"),
    )
}

fn trusting(sink: &SmtpSink, url: &str) -> SmtpMailer {
    SmtpMailer::from_url(url, FROM)
        .unwrap()
        .with_root_certificate_pem(sink.ca_pem().unwrap().as_bytes())
        .unwrap()
}

#[tokio::test]
async fn plaintext_to_loopback_delivers_subject_and_body() {
    let sink = SmtpSink::start().unwrap();
    let mailer = SmtpMailer::from_url(&sink.url(), FROM).unwrap();
    assert_eq!(mailer.security(), SmtpSecurity::InsecurePlaintext);

    mailer.send(reset_mail("alice@example.com")).await.unwrap();

    let mail = sink
        .wait_for_mail("alice@example.com", WAIT)
        .await
        .expect("delivered");
    assert_eq!(mail.to, ["alice@example.com"]);
    assert_eq!(mail.from, "noreply@example.com");
    assert_eq!(mail.subject, "Réinitialiser votre mot de passe");
    assert_eq!(
        mail.body,
        format!("Hello,\n\nopen {LINK} to choose a new password.\n.\n..dots stay\nGrüße\n")
    );
    assert!(mail.header("From").unwrap().contains("noreply@example.com"));
    assert!(!mail.tls);
    assert_eq!(mail.auth_user, None);
    assert_eq!(sink.mails().len(), 1);
}

#[tokio::test]
async fn html_alternative_is_delivered() {
    let sink = SmtpSink::start().unwrap();
    let mailer = SmtpMailer::from_url(&sink.url(), FROM).unwrap();
    let mail = Mail::new(
        "Bob <bob@example.com>",
        "Verify your address",
        format!("Open {LINK}"),
    )
    .with_html(format!("<p><a href=\"{LINK}\">Verify</a></p>"));
    mailer.send(mail).await.unwrap();

    let mail = sink
        .wait_for_mail("bob@example.com", WAIT)
        .await
        .expect("delivered");
    assert_eq!(mail.subject, "Verify your address");
    assert_eq!(mail.body, format!("Open {LINK}"));
    assert_eq!(
        mail.html.unwrap(),
        format!("<p><a href=\"{LINK}\">Verify</a></p>")
    );
}

#[tokio::test]
async fn starttls_with_credentials_delivers_encrypted() {
    let sink = SmtpSink::builder()
        .starttls()
        .credentials("mailer", "s3cret pass@word")
        .start()
        .unwrap();
    let port = sink.addr().port();
    let mailer = trusting(
        &sink,
        &format!("smtp://mailer:s3cret%20pass%40word@localhost:{port}"),
    );
    assert_eq!(mailer.security(), SmtpSecurity::StartTls);

    mailer.send(reset_mail("carol@example.com")).await.unwrap();

    let mail = sink
        .wait_for_mail("carol@example.com", WAIT)
        .await
        .expect("delivered");
    assert!(mail.tls, "sent after STARTTLS");
    assert_eq!(mail.auth_user.as_deref(), Some("mailer"));
    assert_eq!(mail.subject, "Réinitialiser votre mot de passe");
    assert!(mail.body.contains(LINK));
}

#[tokio::test]
async fn implicit_tls_delivers() {
    let sink = SmtpSink::builder().implicit_tls().start().unwrap();
    let mailer = trusting(&sink, &sink.url());
    assert_eq!(mailer.security(), SmtpSecurity::ImplicitTls);
    mailer.check_connection().await.unwrap();

    mailer.send(reset_mail("dave@example.com")).await.unwrap();

    let mail = sink
        .wait_for_mail("dave@example.com", WAIT)
        .await
        .expect("delivered");
    assert!(mail.tls);
    assert!(mail.body.contains(LINK));
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused() {
    let sink = SmtpSink::builder().starttls().start().unwrap();
    // The sink's CA is not trusted: only the built-in roots.
    let mailer = SmtpMailer::from_url(&sink.url(), FROM).unwrap();
    let error = mailer
        .send(reset_mail("erin@example.com"))
        .await
        .unwrap_err();
    assert!(matches!(error, MailError::Transport(_)), "{error:?}");
    assert!(sink.mails().is_empty());
}

#[tokio::test]
async fn starttls_is_required_never_skipped() {
    // A server that does not offer STARTTLS (or an attacker who strips it).
    let sink = SmtpSink::start().unwrap();
    let port = sink.addr().port();
    let mailer = SmtpMailer::from_url(&format!("smtp://localhost:{port}"), FROM).unwrap();
    assert_eq!(mailer.security(), SmtpSecurity::StartTls);
    let error = mailer
        .send(reset_mail("frank@example.com"))
        .await
        .unwrap_err();
    assert!(matches!(error, MailError::Transport(_)), "{error:?}");
    assert!(sink.mails().is_empty(), "no mail in plain text");
}

#[tokio::test]
async fn a_wrong_password_is_refused_and_not_echoed() {
    let sink = SmtpSink::builder()
        .starttls()
        .credentials("mailer", "right-password")
        .start()
        .unwrap();
    let port = sink.addr().port();
    let mailer = trusting(
        &sink,
        &format!("smtp://mailer:hunter2-wrong@localhost:{port}"),
    );
    let error = mailer
        .send(reset_mail("gina@example.com"))
        .await
        .unwrap_err();
    assert!(matches!(error, MailError::Refused(_)), "{error:?}");
    for text in [
        error.to_string(),
        format!("{error:?}"),
        format!("{mailer:?}"),
    ] {
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains(LINK), "{text}");
    }
    assert!(sink.mails().is_empty());
}

#[tokio::test]
async fn plaintext_to_another_machine_is_refused_at_construction() {
    for url in [
        "smtp://mail.example.com:25?insecure_plaintext=true",
        "smtp://192.0.2.10:25?insecure_plaintext=true",
        "smtp://[2001:db8::1]:25?insecure_plaintext=true",
        "smtp://localhost.example.com:25?insecure_plaintext=true",
    ] {
        match SmtpMailer::from_url(url, FROM) {
            Err(MailError::Config(message)) => {
                assert!(message.contains("insecure_plaintext"), "{message}");
                assert!(message.contains("this machine"), "{message}");
            }
            other => panic!("{url}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn credentials_show_in_no_debug_and_no_error() {
    let mailer = SmtpMailer::from_url("smtps://mailer:Pa55-secret@mail.example.com", FROM).unwrap();
    let debug = format!("{mailer:?}");
    assert!(!debug.contains("Pa55-secret"), "{debug}");
    assert!(debug.contains("smtps://mail.example.com:465"), "{debug}");
    for url in [
        "smtp://mailer:Pa55-secret@mail.example.com?insecure_plaintext=true",
        "smtps://mailer:Pa55-secret@mail.example.com?insecure_plaintext=true",
        "smtp://mailer:Pa55-secret@mail.example.com/path",
        "smtp://mailer:Pa55-secret@mail.example.com?Pa55-secret=1",
        "imap://mailer:Pa55-secret@mail.example.com",
        "smtp://mailer:Pa55-secret%zz@mail.example.com",
        "smtp://mailer:Pa55-secret@",
    ] {
        let error = SmtpMailer::from_url(url, FROM).unwrap_err();
        for text in [error.to_string(), format!("{error:?}")] {
            assert!(!text.contains("Pa55-secret"), "{url}: {text}");
        }
    }
    // An unreachable server: the error names no credential either.
    let unreachable = SmtpMailer::from_url(
        &format!(
            "smtp://mailer:Pa55-secret@127.0.0.1:{}?insecure_plaintext=true",
            closed_port()
        ),
        FROM,
    )
    .unwrap();
    let error = unreachable
        .send(reset_mail("h@example.com"))
        .await
        .unwrap_err();
    assert!(matches!(error, MailError::Transport(_)), "{error:?}");
    assert!(!format!("{error} {error:?}").contains("Pa55-secret"));
}

#[test]
fn mail_debug_hides_the_body() {
    let mail = reset_mail("alice@example.com").with_html(format!("<a href=\"{LINK}\">x</a>"));
    let debug = format!("{mail:?}");
    assert!(debug.contains("alice@example.com"), "{debug}");
    assert!(!debug.contains("token="), "{debug}");
    assert!(!debug.contains("Hello"), "{debug}");
}

#[tokio::test]
async fn bad_input_gets_its_own_error_and_sends_nothing() {
    let sink = SmtpSink::start().unwrap();
    let mailer = SmtpMailer::from_url(&sink.url(), FROM).unwrap();
    for to in [
        "not-an-address",
        "a@example.com\r\nBcc: eve@example.com",
        "a@x.com, b@y.com",
        "",
    ] {
        let error = mailer.send(Mail::new(to, "Hi", "body")).await.unwrap_err();
        assert!(
            matches!(error, MailError::InvalidAddress(AddressRole::Recipient)),
            "{to:?}: {error:?}"
        );
    }
    let error = mailer
        .send(Mail::new(
            "a@example.com",
            "Hi\r\nBcc: eve@example.com",
            "body",
        ))
        .await
        .unwrap_err();
    assert!(matches!(error, MailError::InvalidMail(_)), "{error:?}");
    assert!(matches!(
        SmtpMailer::from_url(&sink.url(), "no address"),
        Err(MailError::InvalidAddress(AddressRole::Sender))
    ));
    assert!(sink.mails().is_empty());
}

#[tokio::test]
async fn a_silent_server_times_out() {
    // Accepts connections (the kernel does) and never says a word.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mailer = SmtpMailer::from_url(
        &format!("smtp://127.0.0.1:{port}?insecure_plaintext=true"),
        FROM,
    )
    .unwrap()
    .with_timeout(Duration::from_millis(300))
    .unwrap();
    let started = Instant::now();
    let error = mailer.send(reset_mail("i@example.com")).await.unwrap_err();
    assert!(matches!(error, MailError::Timeout(_)), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(listener);
}

#[tokio::test]
async fn several_mails_are_read_back_in_order() {
    let sink = SmtpSink::start().unwrap();
    let mailer: Arc<dyn Mailer> = Arc::new(SmtpMailer::from_url(&sink.url(), FROM).unwrap());
    for n in 1..=3 {
        mailer
            .send(Mail::new(
                "jo@example.com",
                format!("mail {n}"),
                format!("body {n}"),
            ))
            .await
            .unwrap();
    }
    mailer
        .send(Mail::new("kim@example.com", "other", "x"))
        .await
        .unwrap();
    for n in 1..=3 {
        let mail = sink.wait_for_mail("JO@example.com", WAIT).await.unwrap();
        assert_eq!(mail.subject, format!("mail {n}"));
        assert_eq!(mail.body, format!("body {n}"));
    }
    assert!(
        sink.wait_for_mail("jo@example.com", Duration::from_millis(50))
            .await
            .is_none()
    );
    assert_eq!(sink.mails().len(), 4);
}

#[tokio::test]
async fn insecure_log_mailer_prints_the_mail_to_the_log() {
    let buffer = Buffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(buffer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mailer = InsecureLogMailer::new();
    mailer.send(reset_mail("alice@example.com")).await.unwrap();
    assert!(matches!(
        mailer.send(Mail::new("nobody", "x", "y")).await,
        Err(MailError::InvalidAddress(AddressRole::Recipient))
    ));

    let log = buffer.text();
    assert!(
        log.contains("WARN") && log.contains("mail is not sent"),
        "{log}"
    );
    assert!(log.contains("alice@example.com"), "{log}");
    assert!(log.contains("Réinitialiser votre mot de passe"), "{log}");
    assert!(log.contains(LINK), "{log}");
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Buffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
