//! Python and Node function runtimes: a handler deployed with `--function`, served by
//! Updraft's shim, started from a warm interpreter (a stem cell) when one is ready.

mod common;

use std::time::Duration;

use common::{fixtures, ready, Server};
use serde_json::Value;

fn json_body(server: &Server, service: &str, path: &str, body: &[u8]) -> Value {
    let r = server
        .request(
            "POST",
            &Server::host(service),
            path,
            &[("content-type", "application/json"), ("x-agent", "test")],
            body,
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"), "{}", r.body);
    serde_json::from_str(&r.body).unwrap()
}

fn check_handler(server: &Server, service: &str) {
    let echoed = json_body(server, service, "/orders?id=7", br#"{"n": 1}"#);
    assert_eq!(echoed["method"], "POST");
    assert_eq!(echoed["path"], "/orders");
    assert_eq!(echoed["query"]["id"], "7");
    assert_eq!(echoed["json"]["n"], 1);
    assert_eq!(echoed["agent"], "test");
    assert_eq!(echoed["greeting"], "hi");
    let text = server.get(service, "/text");
    assert_eq!((text.status, text.body.as_str()), (200, "plain text"));
    assert!(text.header("content-type").unwrap().starts_with("text/plain"));
    let teapot = server.get(service, "/teapot");
    assert_eq!((teapot.status, teapot.body.as_str()), (418, "short and stout"));
    assert_eq!(teapot.header("x-kind"), Some("teapot"));
    let boom = server.get(service, "/boom");
    assert_eq!(boom.status, 500);
    assert!(
        !boom.body.contains("boom from the handler"),
        "the trace stays out of the response: {}",
        boom.body
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let logs = server.cli(&["logs", service]).stdout;
        if logs.contains("boom from the handler") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no traceback in the logs: {logs}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_python_handler_is_served_from_a_warm_interpreter() {
    let server = Server::start(&[]);
    let handler = fixtures().join("functions/hello.py");
    server.json(&[
        "deploy",
        "py",
        "--function",
        handler.to_str().unwrap(),
        "--runtime",
        "python3",
        "--env",
        "GREETING=hi",
        "--scale-to-zero-after",
        "1s",
    ]);
    check_handler(&server, "py");
    let tuple = server.get("py", "/tuple");
    assert_eq!((tuple.status, tuple.body.as_str()), (201, "created"));

    // From zero, a stem cell (python with the shim loaded) becomes the instance.
    server.wait_service("py", "scale to zero", Duration::from_secs(20), |s| ready(s) == 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while server.json(&["service", "py"])["last_cold_start"]["from_pool"] != true {
        assert!(std::time::Instant::now() < deadline, "no cold start from the pool");
        server.wait_service("py", "scale to zero", Duration::from_secs(20), |s| ready(s) == 0);
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(server.get("py", "/text").status, 200);
    }

    let debug = server.json(&[
        "deploy",
        "py",
        "--function",
        handler.to_str().unwrap(),
        "--runtime",
        "python3",
        "--debug",
    ]);
    assert_eq!(debug["latest_revision"], "py-00002");
    let boom = server.get("py", "/boom");
    assert_eq!(boom.status, 500);
    assert!(
        boom.body.contains("ValueError: boom from the handler"),
        "--debug shows the trace: {}",
        boom.body
    );
}

#[test]
fn a_node_handler_is_served_and_returns_fetch_responses() {
    let server = Server::start(&[]);
    let handler = fixtures().join("functions/hello.mjs");
    server.json(&[
        "deploy",
        "js",
        "--function",
        handler.to_str().unwrap(),
        "--runtime",
        "node",
        "--env",
        "GREETING=hi",
    ]);
    check_handler(&server, "js");
}

#[test]
fn folders_bring_their_dependencies_and_import_errors_fail_the_deploy() {
    let server = Server::start(&[]);
    let py = fixtures().join("functions/pyfolder");
    server.json(&[
        "deploy",
        "pyf",
        "--function",
        py.to_str().unwrap(),
        "--runtime",
        "python3",
    ]);
    assert_eq!(server.get("pyf", "/").body, "VENDORED!");
    let js = fixtures().join("functions/nodefolder");
    server.json(&["deploy", "jsf", "--function", js.to_str().unwrap(), "--runtime", "node"]);
    assert_eq!(server.get("jsf", "/").body, "FROM NODE_MODULES!");

    let broken = fixtures().join("functions/broken.py");
    let out = server.cli(&[
        "deploy",
        "broken",
        "--function",
        broken.to_str().unwrap(),
        "--runtime",
        "python3",
    ]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("No module named 'nonexistent_module_for_the_test'"),
        "the import error is the deploy's error: {}",
        out.stderr
    );
    let services: Vec<String> = server
        .json(&["services"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(services, vec!["jsf", "pyf"], "nothing stored for the broken one");
}

#[test]
fn the_runtime_is_told_by_the_handlers_name_unless_given() {
    let server = Server::start(&[]);
    let handler = fixtures().join("functions/hello.mjs");
    server.json(&[
        "deploy",
        "js",
        "--function",
        handler.to_str().unwrap(),
        "--env",
        "GREETING=hi",
    ]);
    check_handler(&server, "js");
    let folder = fixtures().join("functions/pyfolder");
    let service = server.json(&["deploy", "pyf", "--function", folder.to_str().unwrap()]);
    assert_eq!(server.get("pyf", "/").body, "VENDORED!");
    assert!(service.to_string().contains("python3"), "{service}");

    let (_dir, unknown) = common::app_of(&[("handler.rb", "def handle(r) end")]);
    let out = server.cli(&[
        "deploy",
        "rb",
        "--function",
        unknown.join("handler.rb").to_str().unwrap(),
    ]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("give --runtime python3 or node"), "{}", out.stderr);
}
