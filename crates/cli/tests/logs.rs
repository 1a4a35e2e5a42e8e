//! Logs read back with filters, and followed live over server-sent events.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use common::*;

#[test]
fn logs_filter_by_text_and_time() {
    let server = Server::start(&[]);
    let (_tmp, app) = fixture("python");
    server.deploy("hello", &app, &[]);
    for path in ["/one", "/two", "/two"] {
        assert_eq!(server.get("hello", path).status, 200);
    }
    let grep = server.json(&["logs", "hello", "--grep", "GET /two"]);
    assert_eq!(grep.as_array().unwrap().len(), 2, "{grep}");
    let recent = server.json(&["logs", "hello", "--since", "1h", "--grep", "listening"]);
    assert_eq!(recent.as_array().unwrap().len(), 1, "{recent}");
    let future = server.json(&["logs", "hello", "--since", "2099-01-01T00:00:00Z"]);
    assert!(future.as_array().unwrap().is_empty());
    let old = server.json(&["logs", "hello", "--until", "1h"]);
    assert!(old.as_array().unwrap().is_empty());
    let out = server.cli(&["logs", "hello", "--since", "yesterday-ish"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("since: \"yesterday-ish\" is neither a time"),
        "{}",
        out.stderr
    );
}

#[test]
fn follow_streams_new_lines_as_they_are_written() {
    let server = Server::start(&[]);
    let (_tmp, app) = fixture("python");
    server.deploy("hello", &app, &[]);
    let mut follower = server
        .command()
        .args(["logs", "hello", "--follow", "--grep", "GET /followed"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Give the follower time to subscribe, then write lines it must see.
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..3 {
        assert_eq!(server.get("hello", &format!("/followed/{i}")).status, 200);
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("line {i} not followed: {e}"));
        assert!(line.contains(&format!("GET /followed/{i}")), "{line}");
        assert!(line.contains("stderr"), "{line}");
    }
    assert_eq!(server.get("hello", "/not-matching").status, 200);
    assert!(
        rx.recv_timeout(Duration::from_millis(500)).is_err(),
        "the filter applies live"
    );
    let _ = follower.kill();
    let _ = follower.wait();
}

#[test]
fn requests_are_logged_apart_with_cold_or_warm_and_json_lines_are_parsed() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app");
    std::fs::create_dir(&app).unwrap();
    std::fs::copy(fixtures().join("python/main.py"), app.join("main.py")).unwrap();
    std::fs::write(
        app.join("updraft.yaml"),
        "run: \"python3 -c 'import json; print(json.dumps({\\\"level\\\": \\\"info\\\", \\\"msg\\\": \\\"starting\\\"}), flush=True)' && exec python3 main.py\"\n",
    )
    .unwrap();
    server.deploy("acc", &app, &["--scale-to-zero-after", "1s"]);
    assert_eq!(server.get("acc", "/warm-one").status, 200);
    server.wait_service("acc", "scale to zero", Duration::from_secs(20), |s| {
        s["revisions"][0]["instances"].as_array().unwrap().is_empty()
    });
    assert_eq!(server.get("acc", "/cold-one").status, 200);
    assert_eq!(
        server
            .request("GET", "acc.default.localhost", "/missing-method", &[], b"")
            .unwrap()
            .status,
        200
    );
    // The writer is asynchronous: wait (bounded) for the records.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let records = loop {
        let records = server.json(&["logs", "acc", "--requests"]);
        if records.as_array().unwrap().len() >= 3 || std::time::Instant::now() > deadline {
            break records;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let find = |path: &str| {
        records
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["path"] == path)
            .unwrap_or_else(|| panic!("{path} in {records}"))
            .clone()
    };
    let warm = find("/warm-one");
    assert_eq!(
        (warm["status"].as_u64(), warm["cold"].as_bool(), warm["method"].as_str()),
        (Some(200), Some(false), Some("GET"))
    );
    assert!(warm["instance"].as_str().unwrap().starts_with("acc-00001-"));
    assert!(warm["traceparent"].as_str().unwrap().starts_with("00-"));
    assert_eq!(find("/cold-one")["cold"], true);
    let only = server.json(&["logs", "acc", "--requests", "--grep", "cold"]);
    assert_eq!(only.as_array().unwrap().len(), 1);
    // The app's output has none of them, and its JSON line was parsed.
    let output = server.json(&["logs", "acc"]);
    assert!(output.as_array().unwrap().iter().all(|l| l.get("path").is_none()));
    let structured = output
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["fields"].is_object())
        .unwrap_or_else(|| panic!("a parsed line in {output}"));
    assert_eq!(structured["fields"]["msg"], "starting");
}

#[test]
fn retention_deletes_old_logs_of_stopped_instances_only() {
    let server = Server::start(&[]);
    let (_tmp, app) = fixture("python");
    server.deploy("kept", &app, &["--scale-to-zero-after", "1s"]);
    let first = server.json(&["service", "kept"])["revisions"][0]["instances"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    server.wait_service("kept", "scale to zero", Duration::from_secs(20), |s| {
        s["revisions"][0]["instances"].as_array().unwrap().is_empty()
    });
    assert_eq!(server.get("kept", "/").status, 200);
    let second = server.json(&["service", "kept"])["revisions"][0]["instances"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = server.data.join("logs/default/kept");
    assert!(dir.join(format!("{first}.log")).exists());
    // An access log the writer moved aside when it grew past its size.
    std::fs::write(dir.join("requests.access.1"), "{}\n").unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let limits = server.json(&[
        "namespace",
        "limits",
        "default",
        "--log-max-age",
        "1s",
        "--log-max-size",
        "1Gi",
    ]);
    assert_eq!(limits["limits"]["log_max_age_seconds"], 1);
    assert!(
        !dir.join(format!("{first}.log")).exists(),
        "the stopped instance's old log is gone"
    );
    assert!(
        dir.join(format!("{second}.log")).exists(),
        "the live instance's log stays"
    );
    assert!(!dir.join("requests.access.1").exists(), "a rotated access log goes too");
    let cleared = server.json(&["namespace", "limits", "default", "--clear"]);
    assert!(cleared["limits"].get("log_max_age_seconds").is_none(), "{cleared}");
}

#[test]
fn a_service_deleted_and_made_again_keeps_logging_requests() {
    let server = Server::start(&[]);
    let (_tmp, app) = fixture("python");
    let logged = |path: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let records = server.json(&["logs", "again", "--requests"]);
            if records.as_array().unwrap().iter().any(|r| r["path"] == path) {
                return records;
            }
            assert!(std::time::Instant::now() < deadline, "{path} never logged: {records}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    server.deploy("again", &app, &[]);
    assert_eq!(server.get("again", "/first-life").status, 200);
    logged("/first-life");
    assert_eq!(server.cli(&["delete", "again"]).code, 0);

    server.deploy("again", &app, &[]);
    assert_eq!(server.get("again", "/second-life").status, 200);
    let records = logged("/second-life");
    assert_eq!(
        records.as_array().unwrap().len(),
        1,
        "the first life's log went with it: {records}"
    );
}

#[test]
fn client_commands_end_quietly_when_their_reader_goes_away() {
    let server = Server::start(&[]);
    let (_tmp, app) = fixture("python");
    server.deploy("piped", &app, &[]);
    for _ in 0..5 {
        server.get("piped", "/");
    }
    for args in [
        &["logs", "piped"][..],
        &["services"],
        &["top", "--once"],
        &["service", "piped"],
    ] {
        // As `updraft logs piped | head -0`: the reader is gone before the first write.
        let mut child = server
            .command()
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.is_empty(), "{args:?} said: {stderr}");
        use std::os::unix::process::ExitStatusExt;
        assert!(
            out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
            "{args:?} ended with {}",
            out.status
        );
    }
}
