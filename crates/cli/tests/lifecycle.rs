//! Instances and deploys whatever clients do: hang-ups mid-deploy, requests held for a
//! service that is deleted, apps that crash as they start.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn a_deploy_whose_client_hangs_up_still_finishes_and_leaves_no_stray_instance() {
    let server = Server::start(&[]);
    let (_tmp, app) = fixture("python");
    let mut client = server
        .command()
        .args(["deploy", "slow", app.to_str().unwrap(), "--env", "START_DELAY=2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Hang up once the first instance is starting: the deploy is under way.
    let deadline = Instant::now() + Duration::from_secs(30);
    while processes_with_env("UPDRAFT_SERVICE=slow").is_empty() {
        assert!(Instant::now() < deadline, "the deploy never started an instance");
        std::thread::sleep(Duration::from_millis(20));
    }
    client.kill().unwrap();
    client.wait().unwrap();

    let service = server.wait_service("slow", "the deploy to finish", Duration::from_secs(30), |s| {
        ready(s) == 1
    });
    assert_eq!(service["latest_revision"], "slow-00001");
    assert_eq!(server.get("slow", "/").status, 200);
    assert_eq!(
        processes_with_env("UPDRAFT_SERVICE=slow"),
        instance_pids(&service),
        "the only instance running is the one the service lists"
    );
}

#[test]
fn requests_held_for_a_deleted_service_are_answered_at_once_with_404() {
    let server = Server::start(&["--activator-timeout", "30s"]);
    let (_tmp, app) = fixture("python");
    server.deploy("gone", &app, &["--concurrency", "1", "--max-scale", "1"]);
    let gateway = server.gateway;
    // One request takes the only slot for 1.5 s; the next is held for it.
    let busy = std::thread::spawn(move || http(gateway, "GET", &Server::host("gone"), "/slow", &[], b""));
    server.wait_service("gone", "the slow request", Duration::from_secs(10), |s| {
        s["revisions"][0]["in_flight"] == 1
    });
    let held = std::thread::spawn(move || http(gateway, "GET", &Server::host("gone"), "/", &[], b""));
    server.wait_service("gone", "a held request", Duration::from_secs(10), |s| {
        s["revisions"][0]["waiting"] == 1
    });

    let out = server.cli(&["delete", "gone"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let held = held.join().unwrap().unwrap();
    assert_eq!(held.status, 404, "{}", held.body);
    assert!(
        held.body.contains("service gone in namespace default was deleted"),
        "{}",
        held.body
    );
    assert_eq!(
        busy.join().unwrap().unwrap().status,
        200,
        "the request in flight finished"
    );
}

#[test]
fn a_crash_looping_revision_backs_off_says_why_and_recovers() {
    let server = Server::start(&[]);
    let (_tmp, app) = fixture("python");
    // The sandboxed app sees its own revision's folder (as its working directory), and
    // nothing else of this machine's that a test could write.
    server.deploy(
        "crashy",
        &app,
        &["--env", "CRASH_IF_EXISTS=crash", "--scale-to-zero-after", "1s"],
    );
    let marker = server.data.join("revisions/default/crashy-00001/crash");
    server.wait_service("crashy", "scale to zero", Duration::from_secs(20), |s| ready(s) == 0);
    std::fs::write(&marker, "").unwrap();
    let starts = || {
        server
            .cli(&["logs", "crashy"])
            .stdout
            .matches("crashing on purpose")
            .count()
    };

    // The first failure is retried by the next request; the second starts a back-off.
    for attempt in 1..=2 {
        let r = server.get("crashy", "/");
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(r.body.contains("exited with code 3"), "attempt {attempt}: {}", r.body);
    }
    let refused = server.get("crashy", "/");
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(refused.body.contains("crash-looping"), "{}", refused.body);
    assert!(refused.body.contains("2 failures in a row"), "{}", refused.body);
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=10).contains(&retry), "{retry}");
    assert_eq!(starts(), 2, "no instance is started during the back-off");

    let service = server.json(&["service", "crashy"]);
    let crash_loop = &service["revisions"][0]["crash_loop"];
    assert_eq!(crash_loop["failures"], 2, "{service}");
    assert!(crash_loop["last_failure"]
        .as_str()
        .unwrap()
        .contains("exited with code 3"));
    assert!(crash_loop["next_start_at"].is_string(), "{service}");
    let events = server.json(&["service", "crashy"])["revisions"][0]["scale_events"].clone();
    let failed: Vec<_> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"] == "instance failed")
        .collect();
    assert_eq!(failed.len(), 2, "{events}");
    assert!(
        failed[1]["message"].as_str().unwrap().contains("back-off 10s"),
        "{events}"
    );
    let described = server.cli(&["service", "crashy"]).stdout;
    assert!(described.contains("failing:  2 failure(s) in a row"), "{described}");

    // Fixed, it starts again once the back-off has passed.
    std::fs::remove_file(&marker).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = server.get("crashy", "/");
        if r.status == 200 {
            break;
        }
        assert!(r.body.contains("crash-looping"), "{}", r.body);
        assert!(Instant::now() < deadline, "never recovered: {}", r.body);
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(starts(), 2);
}
