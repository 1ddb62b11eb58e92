//! `GET {base}/openapi.json`: the OpenAPI 3.1 description of the API, kept true here. The route
//! table it describes is `snapkeep::http::openapi::ROUTES`; these tests hold the document, the
//! table and the router to each other:
//! - the document's paths and operations are exactly the table's, under the configured base;
//! - every route of the table answers a well-formed request with a success, for each of its
//!   methods, and `405` for every other method (so the table's methods are the router's);
//! - every path the router is built with (`router()` in `src/http/mod.rs`) is in the table;
//! - a standard validator (`openapi-spec-validator`, from PyPI) accepts the document.
//!
//! Schemathesis runs against the document in `tests/schemathesis.rs`.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::Command;

use serde_json::Value;
use snapkeep::http::openapi::ROUTES;

use crate::helpers::{TestApp, json};

const METHODS: [&str; 6] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];

/// The served document of `app`, whose base path is `base`.
async fn document(app: &TestApp, base: &str) -> Value {
    let response = app.get(&format!("{base}/openapi.json")).await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert_eq!(content_type, "application/json");
    json(response).await
}

/// The table's routes under `base`, as (path, method) pairs.
fn listed(base: &str) -> BTreeSet<(String, String)> {
    ROUTES
        .iter()
        .flat_map(|(path, methods)| {
            let path = path.replace("{base}", base);
            methods.iter().map(move |m| (path.clone(), m.to_string()))
        })
        .collect()
}

/// The document's operations, as (path, method) pairs.
fn described(doc: &Value) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for key in item.as_object().expect("a path item").keys() {
            // The other keys of a path item (OpenAPI 3.1, 4.8.9).
            if ["parameters", "summary", "description", "servers", "$ref"].contains(&key.as_str()) {
                continue;
            }
            operations.insert((path.clone(), key.to_ascii_uppercase()));
        }
    }
    operations
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_describes_every_route() {
    let app = TestApp::spawn().await;
    let doc = document(&app, "/api/backup").await;
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1.")),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(described(&doc), listed("/api/backup"));
    assert!(!doc.to_string().contains("{{"), "a placeholder was left");
    // The error bodies, with their extra fields.
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["BadRequestError"]["required"],
        serde_json::json!(["error", "code"])
    );
    assert_eq!(
        schemas["TooLargeError"]["required"],
        serde_json::json!(["error", "code", "limit"])
    );
    assert_eq!(
        schemas["PreconditionFailedError"]["required"],
        serde_json::json!(["error", "code", "latest"])
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

#[tokio::test]
async fn the_paths_carry_the_configured_base() {
    let base = "/custom/base";
    let app = TestApp::with(&[("SNAPKEEP_BASE_PATH", base)]).await;
    let doc = document(&app, base).await;
    assert_eq!(described(&doc), listed(base));
    let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
    assert!(paths.iter().any(|p| *p == "/custom/base/{session}/{id}"));
    assert!(
        !doc.to_string().contains("/api/backup"),
        "the default base is nowhere in a document for another one"
    );
    // The default base answers nothing here.
    assert_eq!(app.get("/api/backup/openapi.json").await.status(), 404);
}

#[tokio::test]
async fn the_document_is_public_also_when_disabled() {
    let app = TestApp::with(&[
        ("SNAPKEEP_TOKEN", "an-operator-token-of-some-length"),
        ("SNAPKEEP_ENABLED", "false"),
    ])
    .await;
    let doc = document(&app, "/api/backup").await;
    assert_eq!(described(&doc), listed("/api/backup"));
    // Its neighbours are not.
    let sessions = app.get("/api/backup/_sessions").await;
    assert_eq!(sessions.status(), 503);
}

/// The document's address is no session's: writing there says so, and changes nothing.
#[tokio::test]
async fn openapi_json_is_no_session_id() {
    let app = TestApp::spawn().await;
    let refused = app.post("openapi.json", "{}").await;
    assert_eq!(refused.headers()["allow"], "GET,HEAD");
    crate::helpers::assert_error(refused, 405, "method_not_allowed").await;
    for below in [
        "latest",
        "events",
        "20261123T185337.123456Z-0123456789abcdef",
    ] {
        let below = app.get(&format!("/api/backup/openapi.json/{below}")).await;
        let body = crate::helpers::assert_error(below, 400, "invalid_session").await;
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("API's description"),
            "{body}"
        );
    }
    assert!(app.tree().is_empty(), "nothing written");
    assert_eq!(app.get("/api/backup/openapi.json").await.status(), 200);
}

/// A well-formed request to `path` (a table path under `base`) with `method`, on a server where
/// session `s` holds the snapshot `id`. Deletes go to sessions of their own.
async fn request(
    app: &TestApp,
    base: &str,
    path: &str,
    method: &str,
    id: &str,
) -> reqwest::Response {
    let deleting = method == "DELETE";
    let session = if deleting { "doomed" } else { "s" };
    let doomed = match (deleting, path.contains("{id}")) {
        (true, true) => {
            let response = app
                .client
                .post(app.url(&format!("{base}/doomed")))
                .header("content-type", "application/json")
                .body(format!("{{\"n\":\"{}\"}}", uuid::Uuid::new_v4()))
                .send()
                .await
                .unwrap();
            json(response).await["id"].as_str().unwrap().to_owned()
        }
        _ => id.to_owned(),
    };
    let url = app.url(
        &path
            .replace("{base}", base)
            .replace("{session}", session)
            .replace("{id}", &doomed),
    );
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut builder = app.client.request(method.clone(), url);
    if method == reqwest::Method::PATCH {
        builder = builder
            .header("content-type", "application/merge-patch+json")
            .body(r#"{"patched":true}"#);
    } else if method != reqwest::Method::GET && method != reqwest::Method::HEAD {
        builder = builder
            .header("content-type", "application/json")
            .body(format!("{{\"n\":\"{}\"}}", uuid::Uuid::new_v4()));
    }
    // A change feed answers with its headers and then streams: the headers are enough, and the
    // response is dropped, closing it.
    builder.send().await.unwrap()
}

async fn each_route_answers(base: &str) {
    let app = TestApp::with(&[("SNAPKEEP_BASE_PATH", base)]).await;
    let saved = app
        .client
        .post(app.url(&format!("{base}/s")))
        .header("content-type", "application/json")
        .body(r#"{"a":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), 201);
    let id = json(saved).await["id"].as_str().unwrap().to_owned();
    for (path, methods) in ROUTES {
        for method in METHODS {
            let response = request(&app, base, path, method, &id).await;
            let status = response.status();
            if methods.contains(&method) {
                assert!(
                    status.is_success(),
                    "{method} {path} (under {base}) answered {status}: {:?}",
                    response.text().await
                );
            } else {
                assert_eq!(status, 405, "{method} {path} (under {base})");
                assert_eq!(json(response).await["code"], "method_not_allowed");
            }
        }
    }
}

#[tokio::test]
async fn every_listed_route_answers_with_its_methods_and_only_those() {
    each_route_answers("/api/backup").await;
    each_route_answers("/custom/base").await;
}

/// The first argument of each `.route(` call in `router()`, as a path template.
fn router_paths(source: &str) -> BTreeSet<String> {
    let start = source
        .find("pub fn router(")
        .expect("router() in src/http/mod.rs");
    let end = start + source[start..].find(".fallback(").expect("its fallback");
    let mut paths = BTreeSet::new();
    for call in source[start..end].split(".route(").skip(1) {
        let call = call.trim_start();
        let path = if let Some(rest) = call.strip_prefix('"') {
            rest[..rest.find('"').unwrap()].to_owned()
        } else if let Some(rest) = call.strip_prefix("&format!(\"") {
            rest[..rest.find('"').unwrap()]
                .replace("{{", "{")
                .replace("}}", "}")
        } else if call.starts_with("base,") || call.starts_with("base)") {
            "{base}".to_owned()
        } else {
            panic!("a route whose path this test cannot read; teach it: .route({call:.60}");
        };
        paths.insert(path);
    }
    paths
}

#[test]
fn the_table_lists_every_path_of_the_router() {
    let source = include_str!("../../src/http/mod.rs");
    let table: BTreeSet<String> = ROUTES.iter().map(|(p, _)| p.to_string()).collect();
    assert_eq!(router_paths(source), table);
}

/// Whether `python3` can import `module`. When it cannot, the test is skipped with a line on the
/// terminal, or fails under `CI=true`.
pub fn python_has(module: &str, package: &str) -> bool {
    let found = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|out| out.status.success());
    if !found {
        let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(
            !in_ci,
            "python3 cannot import {module} and CI=true: pip install {package}"
        );
        // Straight to the terminal: the test harness captures only print! and eprint!.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: the OpenAPI validation (python3 cannot import {module}; pip install {package})"
        );
    }
    found
}

#[tokio::test]
async fn a_standard_validator_accepts_the_document() {
    if !python_has("openapi_spec_validator", "openapi-spec-validator") {
        return;
    }
    for base in ["/api/backup", "/custom/base"] {
        let app = TestApp::with(&[("SNAPKEEP_BASE_PATH", base)]).await;
        let doc = document(&app, base).await;
        let mut file = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
        file.write_all(doc.to_string().as_bytes()).unwrap();
        let out = Command::new("python3")
            .args(["-m", "openapi_spec_validator"])
            .arg(file.path())
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "openapi-spec-validator: {said}");
        assert!(said.contains(": OK"), "openapi-spec-validator: {said}");
    }
}
