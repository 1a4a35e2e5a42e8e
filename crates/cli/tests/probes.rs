//! Knative's probes with their timing fields against the real server: a readiness
//! probe that fails takes an instance out of rotation and brings it back when it
//! passes; a liveness probe that fails restarts the instance; a startup probe holds
//! the others back until it passes, and fails a start that never passes it.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

const APP: &str = r#"
import os, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler

started = time.monotonic()
startup_delay = float(os.environ.get("STARTUP_DELAY", "0"))
state = {"alive": True, "unready_until": 0.0}

class H(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, code, body=b""):
        self.send_response(code)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        now = time.monotonic()
        if self.path == "/healthz":
            return self.reply(200 if state["alive"] else 500)
        if self.path == "/started":
            return self.reply(200 if now - started >= startup_delay else 503)
        if self.path == "/ready":
            return self.reply(503 if now < state["unready_until"] else 200)
        if self.path == "/wedge":
            state["alive"] = False
            return self.reply(200, b"wedged")
        if self.path == "/unready":
            state["unready_until"] = now + 4
            return self.reply(200, b"unready for 4s")
        return self.reply(200, str(os.getpid()).encode())

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

fn manifest(dir: &Path, name: &str, env: &str, probes: &str) -> std::path::PathBuf {
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &file,
        format!(
            "apiVersion: serving.knative.dev/v1
kind: Service
metadata: {{name: {name}}}
spec:
  template:
    metadata:
      annotations: {{autoscaling.knative.dev/min-scale: '1'}}
    spec:
      containers:
        - image: package:./app
          env: [{env}]
{probes}"
        ),
    )
    .unwrap();
    file
}

/// Polls the service until `done` holds (bounded), returning its description.
fn wait_for(server: &Server, name: &str, what: &str, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let service = server.json(&["service", name]);
        if done(&service) {
            return service;
        }
        assert!(Instant::now() < deadline, "{what}: {service:#}\n{}", server.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_failing_readiness_probe_takes_an_instance_out_and_a_failing_liveness_probe_restarts_it() {
    let server = Server::start(&[]);
    let (dir, _app) = app_of(&[("main.py", APP)]);
    let file = manifest(
        dir.path(),
        "probed",
        "",
        "          readinessProbe:
            httpGet: {path: /ready}
            periodSeconds: 1
            failureThreshold: 1
            successThreshold: 2
          livenessProbe:
            httpGet: {path: /healthz}
            periodSeconds: 1
            failureThreshold: 2
",
    );
    let out = server.cli(&["apply", "-f", file.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}\n{}", out.stderr, server.log());
    let first = server.get("probed", "/");
    assert_eq!(first.status, 200, "{}", first.body);
    let pids = instance_pids(&server.json(&["service", "probed"]));
    assert_eq!(pids.len(), 1);

    assert_eq!(server.get("probed", "/unready").status, 200);
    wait_for(&server, "probed", "out of rotation", |s| ready(s) == 0);
    let back = wait_for(&server, "probed", "back in rotation", |s| ready(s) == 1);
    assert_eq!(
        instance_pids(&back),
        pids,
        "a failing readiness probe must not restart the instance"
    );

    assert_eq!(server.get("probed", "/wedge").status, 200);
    let restarted = wait_for(&server, "probed", "restarted", |s| {
        ready(s) == 1 && !instance_pids(s).contains(&pids[0])
    });
    assert!(
        restarted
            .to_string()
            .contains("failed its liveness probe 2 times in a row"),
        "the restart is reported: {restarted:#}"
    );
    let healthy = server.get("probed", "/healthz");
    assert_eq!(healthy.status, 200, "the replacement starts healthy: {}", healthy.body);
}

#[test]
fn a_startup_probe_holds_readiness_back_and_fails_a_start_that_never_passes() {
    let server = Server::start(&[]);
    let (dir, _app) = app_of(&[("main.py", APP)]);
    let startup = "          startupProbe:
            httpGet: {path: /started}
            periodSeconds: 1
            failureThreshold: 2
";
    let slow = manifest(dir.path(), "slow", "{name: STARTUP_DELAY, value: '0.5'}", startup);
    let out = server.cli(&["apply", "-f", slow.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}\n{}", out.stderr, server.log());
    // Ready means the startup probe passed first.
    assert_eq!(server.get("slow", "/started").status, 200);

    let never = manifest(dir.path(), "never", "{name: STARTUP_DELAY, value: '3600'}", startup);
    let out = server.cli(&["apply", "-f", never.to_str().unwrap()]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stderr
            .contains("failed its startup probe 2 times in a row (the last: GET /started: status 503)"),
        "{}",
        out.stderr
    );
}
