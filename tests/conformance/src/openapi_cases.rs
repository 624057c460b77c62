//! The OpenAPI document (`GET /api/openapi.json`): served alike by every
//! framework, and describing exactly the routes the demo serves.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::{HarnessFactory, TestApp, TestOptions};

/// The operation keys of an OpenAPI path item.
const METHODS: [&str; 8] = [
    "GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE",
];

/// The document every demo serves, built by `example_shared` (the single
/// source).
fn document() -> Value {
    serde_json::from_str(example_shared::openapi::json())
        .unwrap_or_else(|e| panic!("the document is JSON: {e}"))
}

/// The (method, path template) pairs the document describes.
fn documented_operations(document: &Value) -> BTreeSet<(&'static str, String)> {
    let paths = document["paths"]
        .as_object()
        .unwrap_or_else(|| panic!("the document has paths"));
    let mut operations = BTreeSet::new();
    for (path, item) in paths {
        for method in METHODS {
            if item.get(method.to_ascii_lowercase()).is_some() {
                operations.insert((method, path.clone()));
            }
        }
    }
    operations
}

/// The `METHOD /api/...` rows of the JSON API table of
/// `docs/demo-api.md`.
fn routes_in_the_docs() -> BTreeSet<(&'static str, String)> {
    const DOCS: &str = include_str!("../../../docs/demo-api.md");
    DOCS.lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|cell| cell.split('`').next())
        .filter_map(|route| route.split_once(' '))
        .filter_map(|(method, path)| {
            let method = METHODS.into_iter().find(|m| *m == method)?;
            path.starts_with("/api/").then(|| (method, path.to_owned()))
        })
        .collect()
}

/// A concrete path for a template: each `{parameter}` becomes a dummy.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') && segment.ends_with('}') {
                "placeholder"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The position and neighbourhood of the first difference, for a
/// readable failure instead of two 35 KB strings.
fn first_difference(served: &[u8], built: &[u8]) -> String {
    let at = served
        .iter()
        .zip(built)
        .position(|(a, b)| a != b)
        .unwrap_or(served.len().min(built.len()));
    let around = |bytes: &[u8]| {
        String::from_utf8_lossy(&bytes[at.saturating_sub(40)..(at + 40).min(bytes.len())])
            .into_owned()
    };
    format!(
        "{} bytes served, {} built; first difference at byte {at}: served {:?}, built {:?}",
        served.len(),
        built.len(),
        around(served),
        around(built),
    )
}

/// `GET /api/openapi.json` serves, without a session, the very bytes
/// `example_shared` builds: so every framework serves the same document.
/// It is OpenAPI 3.1 with both ways to present a session.
pub async fn the_openapi_document_is_identical_in_every_framework<F: HarnessFactory>() {
    let app = TestApp::start::<F>(TestOptions::default());
    let r = app.get("/api/openapi.json", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{:?}",
        r.header("content-type")
    );
    let built = example_shared::openapi::json().as_bytes();
    assert!(r.body == built, "{}", first_difference(&r.body, built));
    let served = r.json();
    assert!(
        served["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "openapi: {}",
        served["openapi"]
    );
    let schemes = &served["components"]["securitySchemes"];
    let cookie = &schemes[example_shared::openapi::SESSION_COOKIE];
    assert_eq!(
        (&cookie["type"], &cookie["in"], &cookie["name"]),
        (&json!("apiKey"), &json!("cookie"), &json!("__Host-session"))
    );
    let bearer = &schemes[example_shared::openapi::BEARER_JWT];
    assert_eq!(
        (&bearer["type"], &bearer["scheme"], &bearer["bearerFormat"]),
        (&json!("http"), &json!("bearer"), &json!("JWT"))
    );
}

/// The document's operations are the routes the demo serves: every
/// `/api` route of `docs/demo-api.md` is described, and every described
/// (method, path) is routed (a request without a session or with an empty
/// body may get 400, 401, 422, ..., but never the 404 of an unknown path
/// or the 405 of a wrong method). This includes the token routes and
/// `GET /.well-known/jwks.json`.
pub async fn the_openapi_document_describes_every_api_route<F: HarnessFactory>() {
    let document = document();
    let documented = documented_operations(&document);
    let listed = routes_in_the_docs();
    assert!(
        listed.len() >= 20,
        "the docs' JSON API table was not parsed: {listed:?}"
    );
    let undocumented: Vec<_> = listed.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes of docs/demo-api.md missing from the OpenAPI document: {undocumented:?}"
    );
    for required in [
        ("POST", "/api/token"),
        ("POST", "/api/token/mfa"),
        ("POST", "/api/token/refresh"),
        ("POST", "/api/token/revoke"),
        ("GET", "/.well-known/jwks.json"),
        ("GET", "/api/openapi.json"),
    ] {
        assert!(
            documented.contains(&(required.0, required.1.to_owned())),
            "{required:?} is not documented"
        );
    }

    let app = TestApp::start::<F>(TestOptions::default());
    let mut not_served = Vec::new();
    for (method, template) in &documented {
        let mut request = TestApp::req(method, &concrete(template));
        if !matches!(*method, "GET" | "HEAD") {
            request = request.json(json!({}));
        }
        let r = app.send(request).await;
        if matches!(r.status, 404 | 405) {
            not_served.push(format!("{method} {template}: {} {}", r.status, r.text()));
        }
    }
    assert!(
        not_served.is_empty(),
        "documented in the OpenAPI document but not served by the demo: {not_served:#?}"
    );
}
