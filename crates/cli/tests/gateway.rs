//! The data path: holding requests while an instance starts, and its bounds and failures.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn held_requests_are_bounded_in_time_and_count() {
    let server = Server::start(&["--activator-timeout", "1s", "--activator-capacity", "1"]);
    let (_tmp, app) = fixture("python");
    server.deploy(
        "sluggish",
        &app,
        &["--env", "START_DELAY=3", "--scale-to-zero-after", "1s"],
    );
    server.wait_service("sluggish", "scale to zero", Duration::from_secs(20), |s| {
        instance_pids(s).is_empty()
    });

    let gateway = server.gateway;
    let held = std::thread::spawn(move || {
        let started = Instant::now();
        (
            http(gateway, "GET", &Server::host("sluggish"), "/", &[], b"").unwrap(),
            started.elapsed(),
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    let refused = server.get("sluggish", "/");
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(refused.body.contains("too many requests waiting"), "{}", refused.body);
    assert_eq!(refused.header("Retry-After"), Some("1"));

    let (timed_out, waited) = held.join().unwrap();
    assert_eq!(timed_out.status, 503, "{}", timed_out.body);
    assert!(
        timed_out.body.contains("has no ready instance yet"),
        "{}",
        timed_out.body
    );
    assert_eq!(timed_out.header("Retry-After"), Some("5"));
    assert!(waited >= Duration::from_millis(900), "held only {waited:?}");

    // The instance that request asked for still comes up and serves.
    server.wait_service("sluggish", "the slow instance", Duration::from_secs(20), |s| {
        ready(s) == 1
    });
    assert_eq!(server.get("sluggish", "/").status, 200);
}

#[test]
fn an_instance_dying_mid_request_is_a_502_and_is_replaced() {
    let server = Server::start(&[]);
    let (_tmp, app) = fixture("python");
    server.deploy("fragile", &app, &[]);
    let before = instance_pids(&server.json(&["service", "fragile"]));

    let r = server.get("fragile", "/die");
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(r.body.contains("failed to answer"), "{}", r.body);
    assert!(wait_dead(&before, Duration::from_secs(5)));

    let r = server.get("fragile", "/again");
    assert_eq!((r.status, r.body.as_str()), (200, "python fragile-00001 /again"));
    let after = instance_pids(&server.json(&["service", "fragile"]));
    assert_eq!(after.len(), 1);
    assert_ne!(after, before);
}

#[test]
fn unknown_hosts_get_a_404_naming_the_host() {
    let server = Server::start(&[]);
    let r = server.request("GET", "ghost.default.localhost", "/", &[], b"").unwrap();
    assert_eq!(r.status, 404);
    assert!(r.body.contains("\"ghost.default.localhost\""), "{}", r.body);
    let out = server.cli(&["invoke", "ghost"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr.contains("service \"ghost\" does not exist"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_memory_limit_is_enforced_by_the_kernel() {
    let server = Server::start(&[]);
    let (_tmp, app) = fixture("python");
    server.deploy("hog", &app, &["--memory", "64Mi"]);
    let before = instance_pids(&server.json(&["service", "hog"]));
    let r = server.get("hog", "/hog");
    assert_eq!(
        r.status, 502,
        "a 256 MiB allocation under a 64 MiB limit must not succeed: {}",
        r.body
    );
    assert!(wait_dead(&before, Duration::from_secs(5)));
    assert!(
        server.wait_log("was killed by signal 9", Duration::from_secs(5)),
        "the OOM kill is reported: {}",
        server.log()
    );
    assert_eq!(server.get("hog", "/ok").body, "python hog-00001 /ok");
}

#[test]
fn large_request_bodies_stream_through() {
    let server = Server::start(&[]);
    let (_tmp, app) = fixture("python");
    server.deploy("echo", &app, &[]);
    let body = "x".repeat(4 << 20);
    let r = server
        .request("POST", &Server::host("echo"), "/upload", &[], body.as_bytes())
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), "echo POST /upload ".len() + body.len());
    assert!(r.body.ends_with("xxxx"));
}
