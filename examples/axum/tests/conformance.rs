//! The conformance suite against the axum demo, in-process through
//! `tower::ServiceExt::oneshot`.

use std::net::SocketAddr;

use async_trait::async_trait;
use auth_conformance::{Harness, HarnessFactory, TestRequest, TestResponse, conformance_suite};
use auth_core::web::Auth;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use http_body_util::BodyExt;
use tower::ServiceExt;

struct Axum(Router);

#[async_trait]
impl Harness for Axum {
    async fn send(&self, request: TestRequest) -> TestResponse {
        let mut builder = http::Request::builder()
            .method(request.method)
            .uri(&request.path);
        for (name, value) in &request.headers {
            builder = builder.header(name, value.as_slice());
        }
        let mut http_request = builder
            .body(Body::from(request.body))
            .expect("a valid test request");
        http_request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::new(request.peer, 40000)));
        let response = self
            .0
            .clone()
            .oneshot(http_request)
            .await
            .expect("axum services are infallible");
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
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec())
            .unwrap_or_default();
        TestResponse {
            status,
            headers,
            body,
        }
    }
}

struct AxumFactory;

impl HarnessFactory for AxumFactory {
    fn build(auth: Auth) -> Box<dyn Harness> {
        Box::new(Axum(example_axum::app(auth)))
    }
}

conformance_suite!(AxumFactory);
