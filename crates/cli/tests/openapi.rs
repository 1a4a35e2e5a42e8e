//! The API as a contract: `GET /v1/openapi.json` is a valid OpenAPI 3.1 document, it
//! and the router agree on every route, every error has the documented shape, and
//! schemathesis, fuzzing a live server from that document, finds nothing.

mod common;

use std::process::Command;

use common::*;

fn document(server: &Server) -> serde_json::Value {
    let r = http(server.api_addr(), "GET", "api", "/v1/openapi.json", &[], b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"));
    serde_json::from_str(&r.body).unwrap()
}

#[test]
fn the_document_is_valid_openapi_and_matches_the_router() {
    let server = Server::start(&[]);
    let doc = document(&server);
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));

    let file = server.dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec(&doc).unwrap()).unwrap();
    let checked = Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .env("PYTHONPATH", python_test_deps())
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // Every documented operation has a route: with made-up names it may be refused or
    // not found, but never "no such route" or "method not allowed".
    let paths = doc["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, item) in paths {
        let concrete = path
            .replace("{ns}", "default")
            .replace("{name}", "nothing-here")
            .replace("{revision}", "nothing-here-00001")
            .replace("{id}", "nothing-here");
        for method in item.as_object().unwrap().keys() {
            let r = server.api_call(&method.to_uppercase(), &concrete, &[], b"");
            assert_ne!(r.status, 405, "{method} {path}: {}", r.body);
            assert!(
                !r.body.contains("has no route"),
                "{method} {path} is documented but not routed: {}",
                r.body
            );
            operations += 1;
        }
    }
    assert!(operations >= 44, "only {operations} operations documented");
    for route in [
        "/v1/namespaces/{ns}/services/{name}",
        "/v1/namespaces/{ns}/triggers/{name}",
        "/v1/namespaces/{ns}/brokers/{name}/events",
        "/v1/images/pull",
        "/v1/apply",
        "/metrics",
    ] {
        assert!(paths.contains_key(route), "{route} is not documented");
    }
    for schema in ["DeploySpec", "ServiceView", "TriggerSpec", "ErrorBody"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema} missing");
    }
}

/// Refusals from body, path and query parsing, and from the router itself, all come as
/// `{"error": {"code", "message", "field"}}`.
#[test]
fn every_refusal_has_the_documented_error_shape() {
    let server = Server::start(&[]);
    let json = [("content-type", "application/json")];
    // (method, path, body, status, the field the error names)
    type Case<'a> = (&'a str, &'a str, &'a [u8], u16, Option<&'a str>);
    let cases: Vec<Case> = vec![
        // serde reads a struct from an array; the API does not.
        ("PUT", "/v1/namespaces/default", b"[null, null]", 400, Some("body")),
        (
            "PUT",
            "/v1/namespaces/default/brokers/b",
            br#"{"delivery": [3, "linear"]}"#,
            400,
            Some("delivery"),
        ),
        (
            "PUT",
            "/v1/namespaces/default",
            br#"{"log_max_bytes": "x"}"#,
            400,
            Some("log_max_bytes"),
        ),
        (
            "PUT",
            "/v1/namespaces/default",
            br#"{"log_max_bytes": 9223372036854775808}"#,
            400,
            Some("log_max_bytes"),
        ),
        ("POST", "/v1/namespaces", b"{", 400, Some("body")),
        ("POST", "/v1/images/pull", b"[]", 400, Some("body")),
        (
            "POST",
            "/v1/registries",
            br#"{"registry": "bad host", "username": "u", "password": "p"}"#,
            400,
            Some("registry"),
        ),
        (
            "GET",
            "/v1/namespaces/default/triggers/t?limit=99999999999",
            b"",
            400,
            Some("query"),
        ),
        ("GET", "/v1/usage?by=color", b"", 400, Some("by")),
        ("GET", "/v1/no-such-route", b"", 404, None),
        ("POST", "/v1/namespaces/default/services/s/rollback", b"null", 404, None),
    ];
    for (method, path, body, status, field) in cases {
        let r = server.api_call(method, path, &json, body);
        assert_eq!(r.status, status, "{method} {path}: {}", r.body);
        assert_eq!(r.header("content-type"), Some("application/json"), "{method} {path}");
        let error: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(error["error"]["code"], status, "{method} {path}: {}", r.body);
        assert!(error["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(error["error"]["field"].as_str(), field, "{method} {path}: {}", r.body);
    }
    // Nothing refused was stored.
    let ns = server.api_call("GET", "/v1/namespaces", &[], b"");
    assert!(!ns.body.contains("log_max_bytes"), "{}", ns.body);
    let brokers = server.api_call("GET", "/v1/namespaces/default/brokers", &[], b"");
    assert!(!brokers.body.contains("\"b\""), "{}", brokers.body);
}

/// Schemathesis generates requests from the document (valid ones, invalid ones, and
/// sequences that follow one answer into the next request) and checks every answer
/// against it. The run is bounded by examples and time and has a fixed seed, so a
/// failure reproduces; `fixtures/schemathesis.toml` gives the few rules a schema
/// cannot state. One worker: Python 3.11's `ast` is not safe across threads, and
/// hypothesis parses source with it while drawing.
#[test]
fn schemathesis_finds_nothing_wrong() {
    let server = Server::start(&[]);
    // Something to find, so operations on a service, a revision and a trigger get past
    // "not found".
    let (_dir, app) = static_app();
    server.deploy("hello", &app, &[]);
    let out = server.cli(&[
        "trigger",
        "cron",
        "tick",
        "--schedule",
        "0 0 1 1 *",
        "--target",
        "hello",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);

    let out = Command::new("python3")
        .args(["-m", "schemathesis.cli", "--config-file"])
        .arg(fixtures().join("schemathesis.toml"))
        .args(["run", &format!("{}/v1/openapi.json", server.api)])
        .args([
            "--seed",
            "20261130",
            "--max-examples",
            "15",
            "--max-time",
            "45",
            "--workers",
            "1",
        ])
        .args(["--request-timeout", "20", "--no-color"])
        .args(["--header", &format!("Authorization: Bearer {}", server.admin_token())])
        .env("PYTHONPATH", python_test_deps())
        .current_dir(server.dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{stdout}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    let (selected, total) = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Selected: "))
        .and_then(|s| s.split_once('/'))
        .unwrap_or_else(|| panic!("no summary:\n{stdout}"));
    // All but the one the configuration turns off (revoking the fuzzer's own token).
    let total: usize = total.trim().parse().unwrap();
    assert_eq!(selected.trim(), (total - 1).to_string(), "{stdout}");
    assert!(
        stdout.contains(&format!("Tested: {selected}")),
        "not every operation ran:\n{stdout}"
    );
}

/// The typed client the CLI is built on, against a live server: answers come back as
/// the views, refusals as errors naming their status and field.
#[test]
fn the_typed_client_reads_answers_and_refusals() {
    use updraft_api::client::{Client, Error};
    use updraft_model::annotations::RateLimit;
    use updraft_model::NamespaceLimits;

    let server = Server::start(&[]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = Client::new(&server.api).with_token(Some(server.admin_token()));
        assert_eq!(client.info().await.unwrap().version, env!("CARGO_PKG_VERSION"));
        let created = client.create_namespace("team-a").await.unwrap();
        assert_eq!(created.name, "team-a");
        let limits = NamespaceLimits {
            rate_limit: Some(RateLimit {
                per_second: 5,
                burst: 10,
            }),
            ..Default::default()
        };
        let set = client.set_namespace_limits("team-a", &limits).await.unwrap();
        assert_eq!(set.limits, limits);
        let listed = client.namespaces().await.unwrap();
        assert!(listed.iter().any(|n| n.name == "team-a" && n.limits == limits));

        let zero = NamespaceLimits {
            rate_limit: Some(RateLimit {
                per_second: 0,
                burst: 1,
            }),
            ..Default::default()
        };
        match client.set_namespace_limits("team-a", &zero).await {
            Err(Error::Api { status, field, .. }) => {
                assert_eq!(
                    (status.as_u16(), field.as_deref()),
                    (400, Some("rate_limit.per_second"))
                )
            }
            other => panic!("{:?}", other.map(|n| n.name)),
        }
        match client.service("team-a", "nothing").await {
            Err(e) => assert_eq!(e.status().map(|s| s.as_u16()), Some(404), "{e}"),
            Ok(s) => panic!("{}", s.name),
        }
        // A name that is not one path segment stays one, and is refused as a name.
        match client.services("../v1").await {
            Err(Error::Api { status, .. }) => assert!(status.is_client_error()),
            other => panic!("{:?}", other.map(|s| s.len())),
        }
        let nowhere = Client::new(&format!("http://127.0.0.1:{}", free_port()));
        assert!(matches!(nowhere.info().await, Err(Error::Unreachable { .. })));
    });
}
