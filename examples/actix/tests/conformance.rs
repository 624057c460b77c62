//! The conformance suite against the actix demo, in-process through
//! `actix_web::test`. Actix services are not `Send`, so the app lives on its
//! own thread with its own actix system, and requests reach it through a
//! channel.

use std::net::SocketAddr;
use std::thread;

use actix_web::http::Method;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::test;
use async_trait::async_trait;
use auth_conformance::{Harness, HarnessFactory, TestRequest, TestResponse, conformance_suite};
use auth_core::web::Auth;
use tokio::sync::{mpsc, oneshot};

type Job = (TestRequest, oneshot::Sender<TestResponse>);

struct Actix(mpsc::UnboundedSender<Job>);

#[async_trait]
impl Harness for Actix {
    async fn send(&self, request: TestRequest) -> TestResponse {
        let (tx, rx) = oneshot::channel();
        self.0
            .send((request, tx))
            .expect("the actix test thread is running");
        rx.await.expect("the actix test thread answers")
    }
}

async fn serve(auth: Auth, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let app = test::init_service(example_actix::app(auth)).await;
    while let Some((request, answer)) = jobs.recv().await {
        let mut builder = test::TestRequest::default()
            .method(Method::from_bytes(request.method.as_bytes()).expect("a valid method"))
            .uri(&request.path)
            .peer_addr(SocketAddr::new(request.peer, 40000))
            .set_payload(request.body);
        for (name, value) in &request.headers {
            builder = builder.append_header((
                HeaderName::from_bytes(name.as_bytes()).expect("a valid header name"),
                HeaderValue::from_bytes(value).expect("a valid header value"),
            ));
        }
        let response = test::call_service(&app, builder.to_request()).await;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    v.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let body = test::read_body(response).await.to_vec();
        let _ = answer.send(TestResponse {
            status,
            headers,
            body,
        });
    }
}

struct ActixFactory;

impl HarnessFactory for ActixFactory {
    fn build(auth: Auth) -> Box<dyn Harness> {
        let (tx, rx) = mpsc::unbounded_channel();
        thread::spawn(move || actix_web::rt::System::new().block_on(serve(auth, rx)));
        Box::new(Actix(tx))
    }
}

conformance_suite!(ActixFactory);
