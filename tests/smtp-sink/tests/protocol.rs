//! The sink's SMTP, spoken by hand: the commands a client may send, the
//! answers, dot-unstuffing, and what the sink keeps.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use auth_smtp_sink::SmtpSink;

struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(sink: &SmtpSink) -> Self {
        let stream = TcpStream::connect(sink.addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut client = Self {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        };
        assert!(client.answer().starts_with("220 "));
        client
    }

    /// The whole answer (all lines of a multi-line one).
    fn answer(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return all;
            }
        }
    }

    fn send(&mut self, line: &str) -> String {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
        self.answer()
    }
}

#[tokio::test]
async fn a_whole_conversation() {
    let sink = SmtpSink::start().unwrap();
    let mut c = Client::connect(&sink);
    let ehlo = c.send("EHLO client.test");
    assert!(ehlo.starts_with("250-"), "{ehlo}");
    assert!(ehlo.contains("AUTH PLAIN"), "{ehlo}");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(c.send("NOOP").starts_with("250"));
    assert!(c.send("VRFY someone").starts_with("252"));
    assert!(c.send("BOGUS").starts_with("500"));
    assert!(
        c.send("RCPT TO:<x@example.com>").starts_with("503"),
        "MAIL first"
    );
    assert!(c.send("DATA").starts_with("503"), "RCPT first");
    assert!(c.send("MAIL FROM:<dropped@example.com>").starts_with("250"));
    assert!(c.send("RSET").starts_with("250"));
    assert!(
        c.send("MAIL FROM:<sender@example.com> BODY=8BITMIME")
            .starts_with("250")
    );
    assert!(c.send("RCPT TO:<one@example.com>").starts_with("250"));
    assert!(c.send("rcpt to:<Two@Example.com>").starts_with("250"));
    assert!(c.send("DATA").starts_with("354"));
    let message = "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nContent-Type: text/plain; charset=utf-8\r\n\
                   Content-Transfer-Encoding: quoted-printable\r\n\r\n\
                   line one=\r\n continued\r\n..starts with a dot\r\n..\r\nlast=3D\r\n.\r\n";
    c.writer.write_all(message.as_bytes()).unwrap();
    assert!(c.answer().starts_with("250"));
    assert!(c.send("QUIT").starts_with("221"));

    let mail = sink
        .wait_for_mail("two@example.com", Duration::from_secs(5))
        .await
        .expect("kept");
    assert_eq!(mail.from, "sender@example.com");
    assert_eq!(mail.to, ["one@example.com", "Two@Example.com"]);
    assert_eq!(mail.subject, "Grüße");
    assert_eq!(
        mail.body,
        "line one continued\n.starts with a dot\n.\nlast="
    );
    assert!(!mail.tls);
    // Taken once for `two@`, still there for `one@`, and in `mails()`.
    assert!(
        sink.wait_for_mail("two@example.com", Duration::from_millis(20))
            .await
            .is_none()
    );
    assert!(
        sink.wait_for_mail("One <one@example.com>", Duration::ZERO)
            .await
            .is_some()
    );
    assert_eq!(sink.mails().len(), 1);
}

#[tokio::test]
async fn required_credentials_are_checked() {
    let sink = SmtpSink::builder()
        .credentials("user", "pass")
        .start()
        .unwrap();
    let mut c = Client::connect(&sink);
    c.send("EHLO client.test");
    assert!(c.send("MAIL FROM:<a@example.com>").starts_with("530"));
    // AUTH PLAIN "\0user\0wrong", then "\0user\0pass".
    assert!(c.send("AUTH PLAIN AHVzZXIAd3Jvbmc=").starts_with("535"));
    assert!(c.send("AUTH PLAIN AHVzZXIAcGFzcw==").starts_with("235"));
    assert!(c.send("MAIL FROM:<a@example.com>").starts_with("250"));
    assert!(c.send("RCPT TO:<b@example.com>").starts_with("250"));
    assert!(c.send("DATA").starts_with("354"));
    c.writer
        .write_all(b"Subject: hi\r\n\r\nbody\r\n.\r\n")
        .unwrap();
    assert!(c.answer().starts_with("250"));
    let mail = sink
        .wait_for_mail("b@example.com", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(mail.auth_user.as_deref(), Some("user"));
    assert_eq!(mail.body, "body");
}

#[tokio::test]
async fn a_starttls_sink_offers_auth_only_after_tls() {
    let sink = SmtpSink::builder().starttls().start().unwrap();
    assert!(sink.url().starts_with("smtp://localhost:"));
    assert!(sink.ca_pem().unwrap().contains("BEGIN CERTIFICATE"));
    let mut c = Client::connect(&sink);
    let ehlo = c.send("EHLO client.test");
    assert!(ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    assert!(c.send("AUTH PLAIN AHVzZXIAcGFzcw==").starts_with("538"));
}
