//! Over real HTTP: Rocket 0.5 drops a header value that is not UTF-8
//! before the fairing runs, so a trusted proxy's forwarding header with
//! such bytes counts as absent and the client is the proxy itself. This
//! pins that behaviour (the in-process harness mirrors it).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use auth_core::clock::ManualClock;
use auth_core::password::PasswordHasher;
use auth_core::rate_limit::{ThrottleConfig, TrustedProxies};
use rocket::fairing::AdHoc;

fn login(addr: SocketAddr, name: &str, forwarded: Option<&[u8]>) -> u16 {
    let body = format!(r#"{{"username":"{name}","password":"guess guess"}}"#);
    let mut request = format!(
        "POST /api/login HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    )
    .into_bytes();
    if let Some(forwarded) = forwarded {
        request.extend_from_slice(b"X-Forwarded-For: ");
        request.extend_from_slice(forwarded);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(body.as_bytes());
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(&request).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    String::from_utf8_lossy(&raw)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[rocket::async_test]
async fn a_non_utf8_forwarding_header_counts_as_absent() {
    let hasher = PasswordHasher::insecure_for_tests().unwrap();
    let throttle = ThrottleConfig::builder()
        .per_ip(3, Duration::from_secs(60))
        .build()
        .unwrap();
    let auth = example_shared::build_auth_in_memory(
        Arc::new(ManualClock::starting_now()),
        throttle,
        hasher,
        TrustedProxies::parse("127.0.0.1").unwrap(),
        Arc::new(auth_core::mail::InsecureLogMailer::new()),
    );
    let (bound, port) = tokio::sync::oneshot::channel();
    let bound = std::sync::Mutex::new(Some(bound));
    let config = rocket::Config {
        port: 0,
        ..example_rocket::config()
    };
    let rocket = example_rocket::app(auth)
        .configure(config)
        .attach(AdHoc::on_liftoff("port", move |rocket| {
            let port = rocket.config().port;
            if let Some(bound) = bound.lock().unwrap().take() {
                let _ = bound.send(port);
            }
            Box::pin(async {})
        }));
    let server = tokio::spawn(rocket.launch());
    let addr = SocketAddr::from(([127, 0, 0, 1], port.await.unwrap()));
    let statuses = tokio::task::spawn_blocking(move || {
        let mut statuses: Vec<u16> = (0..4)
            .map(|n| login(addr, &format!("u{n}"), Some(b"\xff\xfe, 192.0.2.66")))
            .collect();
        // A client behind the proxy with a readable header has its own
        // budget; the proxy's own (no header) is the one that was spent.
        statuses.push(login(addr, "u8", Some(b"192.0.2.67")));
        statuses.push(login(addr, "u9", None));
        statuses
    })
    .await
    .unwrap();
    server.abort();
    assert_eq!(statuses, [401, 401, 401, 429, 401, 429]);
}
