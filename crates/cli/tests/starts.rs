//! How a start fails: an app that listens on another port than `$PORT` fails at once,
//! naming both; a revision's own start timeout (Knative's progress deadline) replaces
//! the server's.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Listens on `LISTEN_PORT` when set (the wrong one), else on `$PORT`, after
/// `START_DELAY` seconds.
const APP: &str = r#"
import os, time
from http.server import HTTPServer, BaseHTTPRequestHandler

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"up")

time.sleep(float(os.environ.get("START_DELAY", "0")))
port = int(os.environ.get("LISTEN_PORT") or os.environ["PORT"])
HTTPServer(("127.0.0.1", port), H).serve_forever()
"#;

#[test]
fn an_app_on_the_wrong_port_fails_at_once_naming_both_ports() {
    let server = Server::start(&[]);
    let (_dir, app) = app_of(&[("main.py", APP)]);
    let wrong = free_port();
    let started = Instant::now();
    let out = server.cli(&[
        "deploy",
        "elsewhere",
        app.to_str().unwrap(),
        "--env",
        &format!("LISTEN_PORT={wrong}"),
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("listening on {wrong}, not on $PORT (")) && out.stderr.contains("read the port"),
        "{}",
        out.stderr
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "failed after {:?}, not at the server's minute",
        started.elapsed()
    );

    // The same app told its port is fine.
    server.deploy("elsewhere", &app, &[]);
    assert_eq!(server.get("elsewhere", "/").body, "up");
}

#[test]
fn a_revisions_start_timeout_replaces_the_servers() {
    let server = Server::start(&[]);
    let (_dir, app) = app_of(&[("main.py", APP)]);
    let out = server.cli(&[
        "deploy",
        "slow",
        app.to_str().unwrap(),
        "--env",
        "START_DELAY=4",
        "--start-timeout",
        "1s",
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("did not listen on $PORT within 1s"),
        "{}",
        out.stderr
    );

    // A longer one lets it start; it is the Knative annotation in the manifest.
    server.deploy("slow", &app, &["--env", "START_DELAY=2", "--start-timeout", "30s"]);
    assert_eq!(server.get("slow", "/").body, "up");
    let manifest = server.cli(&["get", "service", "slow", "-o", "yaml"]).stdout;
    assert!(
        manifest.contains("serving.knative.dev/progress-deadline: 30s"),
        "{manifest}"
    );

    let out = server.cli(&["update", "slow", "--start-timeout", "forever"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("serving.knative.dev/progress-deadline"),
        "{}",
        out.stderr
    );
}
