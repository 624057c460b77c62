//! Captures every `tracing` line during register, login, failed login,
//! password change and logout, and looks for secrets: passwords, hashes,
//! session IDs, security stamps (ASVS 16.2.5). Its own test binary, with a
//! global subscriber, so no other test's threads race the capture.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use auth_core::clock::{Clock, ManualClock};
use auth_core::flow::{Authenticator, Client, LoginOutcome};
use auth_core::password::{Password, PasswordService};
use auth_core::rate_limit::{MemoryThrottle, ThrottleConfig};
use auth_core::session::{MemoryStore, SessionConfig, SessionManager};
use auth_core::user::{MemoryUserStore, UserStamps, UserStore};
use tracing_subscriber::fmt::MakeWriter;

const PASSWORD: &str = "correct horse battery staple";

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn pw(s: &str) -> Password {
    Password::from(s)
}

#[tokio::test]
async fn no_secret_reaches_the_logs() {
    let buffer = Buffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(buffer.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let clock = ManualClock::starting_now();
    let dyn_clock: Arc<dyn Clock> = Arc::new(clock);
    let users = Arc::new(MemoryUserStore::new());
    let sessions = SessionManager::new(
        Arc::new(MemoryStore::with_clock(dyn_clock.clone())),
        SessionConfig::default(),
    )
    .with_clock(dyn_clock.clone())
    .with_stamp_source(Arc::new(UserStamps(users.clone())));
    let auth = Authenticator::builder(
        PasswordService::builder().build().unwrap(),
        sessions,
        users.clone(),
        Arc::new(MemoryThrottle::new(ThrottleConfig::default(), dyn_clock)),
    )
    .build();
    let c = Client {
        ip: "192.0.2.1".parse::<IpAddr>().unwrap(),
        user_agent: Some("test".into()),
    };

    let new_password = "another secret passphrase";
    let user = auth.register("alice", &pw(PASSWORD), &c).await.unwrap();
    let _ = auth
        .login("alice", &pw("wrong secret guess"), &c, None)
        .await;
    let LoginOutcome::LoggedIn(mut session) =
        auth.login("alice", &pw(PASSWORD), &c, None).await.unwrap()
    else {
        panic!("no MFA enrolled");
    };
    let first_cookie = session.id().encode();
    auth.change_password(&mut session, &pw(PASSWORD), &pw(new_password), &c)
        .await
        .unwrap();
    let final_cookie = session.id().encode();
    let stored = users.find_by_id(&user.id).await.unwrap().unwrap();
    auth.logout(session, &c).await.unwrap();

    let logs = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    for kind in [
        "Registered",
        "LoginFailed",
        "LoginSucceeded",
        "PasswordChanged",
        "LoggedOut",
    ] {
        assert!(logs.contains(kind), "{kind} is logged:\n{logs}");
    }
    for secret in [
        PASSWORD,
        "wrong secret guess",
        new_password,
        user.password_hash.as_str(),
        stored.password_hash.as_str(),
        "$argon2id$",
        &user.security_stamp,
        &stored.security_stamp,
        &first_cookie,
        &final_cookie,
    ] {
        assert!(!logs.contains(secret), "a secret leaked into the logs");
    }
}
