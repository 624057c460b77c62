//! Captures every `tracing` line during register, login, failed login,
//! password change and logout, and looks for secrets: passwords, hashes,
//! session IDs, session stamps (ASVS 16.2.5). Its own test binary, with a
//! global subscriber, so no other test's threads race the capture.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use auth_core::clock::ManualClock;
use auth_core::flow::Client;
use auth_core::{Auth, LoginOutcome, MemoryUserStore, Password, User, UserStore};
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

    let users = Arc::new(MemoryUserStore::new());
    let auth = Auth::builder(users.clone())
        .clock(Arc::new(ManualClock::starting_now()))
        .build()
        .unwrap();
    let auth = auth.authenticator();
    let c = Client::new("192.0.2.1".parse::<IpAddr>().unwrap()).with_user_agent("test");

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
    let first_stamp = session.record().security_stamp.clone().unwrap();
    auth.change_password(&mut session, &pw(PASSWORD), &pw(new_password), &c)
        .await
        .unwrap();
    let final_cookie = session.id().encode();
    let final_stamp = session.record().security_stamp.clone().unwrap();
    assert_ne!(first_stamp, final_stamp, "the stamp follows the password");
    // The toolkit's own state prints none of it either (its stamp cache
    // is keyed by password hashes).
    let state = format!("{auth:?}");
    assert!(!state.contains(&first_stamp) && !state.contains(&final_stamp));
    assert!(!state.contains("$argon2id$"), "{state}");
    let registered = user.downcast::<User>().unwrap();
    let stored = users.find_by_id(&registered.id).await.unwrap().unwrap();
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
        registered.password_hash.as_str(),
        stored.password_hash.as_str(),
        "$argon2id$",
        &first_stamp,
        &final_stamp,
        &first_cookie,
        &final_cookie,
    ] {
        assert!(!logs.contains(secret), "a secret leaked into the logs");
    }
}
