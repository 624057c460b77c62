//! The conformance suite against the Rocket demo, in-process through
//! Rocket's local (untracked) client: the suite sends its own `Cookie`
//! headers and the peer address is set per request.

use std::net::SocketAddr;
use std::sync::Mutex;

use async_trait::async_trait;
use auth_conformance::{Harness, HarnessFactory, TestRequest, TestResponse, conformance_suite};
use auth_core::web::Auth;
use rocket::http::{Header, Method};
use rocket::local::asynchronous::Client;
use rocket::{Build, Rocket};
use tokio::sync::OnceCell;

/// The client is built on first use: `HarnessFactory::build` is not async
/// and igniting a rocket is.
struct RocketHarness {
    rocket: Mutex<Option<Rocket<Build>>>,
    client: OnceCell<Client>,
}

/// A header value as Rocket's HTTP server hands it on: Rocket 0.5 keeps
/// only UTF-8 values and drops the others before any fairing runs
/// (`Request::from_hyp`), and its local client takes `&str` values only.
/// So a non-UTF-8 value is dropped here exactly as the server drops it.
fn as_rocket_sees_it(value: &[u8]) -> Option<String> {
    String::from_utf8(value.to_vec()).ok()
}

#[async_trait]
impl Harness for RocketHarness {
    async fn send(&self, request: TestRequest) -> TestResponse {
        let client = self
            .client
            .get_or_init(|| async {
                let rocket = self
                    .rocket
                    .lock()
                    .expect("not poisoned")
                    .take()
                    .expect("built once");
                Client::untracked(rocket).await.expect("the demo ignites")
            })
            .await;
        let method: Method = request.method.parse().expect("a known method");
        let mut local = client
            .req(method, request.path.clone())
            .remote(SocketAddr::new(request.peer, 40000))
            .body(request.body);
        for (name, value) in request.headers {
            if let Some(value) = as_rocket_sees_it(&value) {
                local = local.header(Header::new(name, value));
            }
        }
        let response = local.dispatch().await;
        let status = response.status().code;
        let headers = response
            .headers()
            .iter()
            .map(|h| (h.name().as_str().to_owned(), h.value().to_owned()))
            .collect();
        let body = response.into_bytes().await.unwrap_or_default();
        TestResponse {
            status,
            headers,
            body,
        }
    }
}

struct RocketFactory;

impl HarnessFactory for RocketFactory {
    // See `as_rocket_sees_it`.
    const KEEPS_NON_UTF8_HEADERS: bool = false;

    fn build(auth: Auth) -> Box<dyn Harness> {
        Box::new(RocketHarness {
            rocket: Mutex::new(Some(example_rocket::app(auth))),
            client: OnceCell::new(),
        })
    }
}

conformance_suite!(RocketFactory);
