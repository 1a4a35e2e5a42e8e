//! Revisions and traffic: splits measured over real requests, tags, rollback,
//! blue/green deploys, gradual rollouts and revision deletion.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;

/// Sends `n` requests to a host and counts which revision answered each.
fn spread(server: &Server, host: &str, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let r = server.request("GET", host, "/", &[], b"").unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        let revision = r.body.split_whitespace().nth(1).unwrap_or("").to_string();
        *counts.entry(revision).or_insert(0) += 1;
    }
    counts
}

fn percent_of(service: &serde_json::Value, revision: &str) -> u64 {
    service["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["revision"] == revision)
        .map_or(0, |r| r["percent"].as_u64().unwrap())
}

#[test]
fn split_tags_rollback_and_revision_delete() {
    let mut server = Server::start(&[]);
    let (_tmp, app) = fixture("python");
    server.deploy("hello", &app, &[]);
    let updated = server.json(&["update", "hello", "--env", "GREETING=v2"]);
    assert_eq!(updated["latest_revision"], "hello-00002");
    assert_eq!(
        percent_of(&updated, "hello-00002"),
        100,
        "latest follows the new revision"
    );
    let same = server.json(&["update", "hello", "--rate-limit", "0"]);
    assert_eq!(
        same["latest_revision"], "hello-00002",
        "a service-only change makes no revision"
    );

    // Rollback: everything to the revision before the one serving.
    let rolled = server.json(&["rollback", "hello"]);
    assert_eq!(percent_of(&rolled, "hello-00001"), 100);
    assert_eq!(spread(&server, &Server::host("hello"), 5)["hello-00001"], 5);

    // A 90/10 split with a tag, measured over 1,000 requests.
    let split = server.json(&[
        "traffic",
        "hello",
        "--to",
        "hello-00001=90",
        "--to",
        "latest=10",
        "--tag",
        "hello-00002=canary",
    ]);
    assert_eq!(percent_of(&split, "hello-00001"), 90);
    let counts = spread(&server, &Server::host("hello"), 1000);
    let share = counts.get("hello-00002").copied().unwrap_or(0) as f64 / 10.0;
    assert!((6.0..=14.0).contains(&share), "10% split gave {share}%: {counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 1000);

    let canary = spread(&server, "canary-hello.default.localhost", 20);
    assert_eq!(canary.get("hello-00002"), Some(&20), "{canary:?}");

    // The table is in the store: a crash keeps it.
    server.kill9();
    server.restart();
    assert_eq!(percent_of(&server.json(&["service", "hello"]), "hello-00001"), 90);
    let counts = spread(&server, &Server::host("hello"), 100);
    assert_eq!(counts.get("hello-00002"), Some(&10), "{counts:?}");
    let canary = spread(&server, "canary-hello.default.localhost", 3);
    assert_eq!(canary.get("hello-00002"), Some(&3), "{canary:?}");
    let revisions = server.json(&["revisions", "hello"]);
    let v2 = revisions
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "hello-00002")
        .unwrap();
    assert_eq!(v2["traffic_percent"], 10);
    assert_eq!(v2["tags"], serde_json::json!(["canary"]));
    assert!(v2["ready_instances"].as_u64().unwrap() >= 1);
    let table = server.cli(&["revisions", "hello"]);
    assert!(
        table.stdout.contains("canary") && table.stdout.contains("90%"),
        "{}",
        table.stdout
    );

    // Bad tables are refused and change nothing.
    let out = server.cli(&["traffic", "hello", "--to", "hello-00001=50", "--to", "latest=40"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("add up to 90"), "{}", out.stderr);
    let out = server.cli(&["traffic", "hello", "--to", "hello-00009=100"]);
    assert!(out.stderr.contains("hello-00009"), "{}", out.stderr);
    assert_eq!(percent_of(&server.json(&["service", "hello"]), "hello-00001"), 90);

    // A revision with traffic, or the latest, cannot be deleted.
    let out = server.cli(&["revision", "delete", "hello-00001"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("has traffic (90%"), "{}", out.stderr);
    let out = server.cli(&["revision", "delete", "hello-00002"]);
    assert!(out.stderr.contains("is the latest"), "{}", out.stderr);

    server.json(&["traffic", "hello", "--to", "latest=100", "--untag", "canary"]);
    let pids = instance_pids(&server.json(&["service", "hello"]));
    server.json(&["revision", "delete", "hello-00001"]);
    let service = server.json(&["service", "hello"]);
    let names: Vec<&str> = service["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hello-00002"]);
    assert!(!server.data.join("revisions/default/hello-00001").exists());
    let kept: Vec<u32> = instance_pids(&service);
    assert!(
        wait_dead(
            &pids.into_iter().filter(|p| !kept.contains(p)).collect::<Vec<_>>(),
            Duration::from_secs(10)
        ),
        "the deleted revision's instances stop"
    );
    assert_eq!(server.cli(&["revision", "delete", "hello-00001"]).code, 3);
    assert_eq!(spread(&server, &Server::host("hello"), 3)["hello-00002"], 3);
}

#[test]
fn blue_green_deploy_then_a_gradual_rollout() {
    let server = Server::start(&[]);
    let (_tmp, app) = fixture("python");
    server.deploy("hello", &app, &[]);
    let green = server.deploy("hello", &app, &["--no-traffic"]);
    assert_eq!(green["latest_revision"], "hello-00002");
    assert_eq!(
        percent_of(&green, "hello-00001"),
        100,
        "--no-traffic keeps the old table"
    );
    assert_eq!(spread(&server, &Server::host("hello"), 10)["hello-00001"], 10);
    server.json(&["traffic", "hello", "--to", "latest=100"]);
    assert_eq!(spread(&server, &Server::host("hello"), 5)["hello-00002"], 5);

    // A new revision takes over in steps: 1% at once, then a quarter a second.
    let started = Instant::now();
    let rolling = server.json(&["update", "hello", "--env", "V=3", "--rollout-duration", "4s"]);
    assert_eq!(rolling["latest_revision"], "hello-00003");
    assert_eq!(rolling["rollout"]["from"], "hello-00002");
    let mut seen = Vec::new();
    let mut mixed = BTreeMap::new();
    while started.elapsed() < Duration::from_secs(10) {
        let service = server.json(&["service", "hello"]);
        let percent = percent_of(&service, "hello-00003");
        if seen.last() != Some(&percent) {
            seen.push(percent);
        }
        if percent == 100 && service["rollout"].is_null() {
            break;
        }
        if (20..=80).contains(&percent) && mixed.is_empty() {
            mixed = spread(&server, &Server::host("hello"), 40);
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    assert_eq!(seen.last(), Some(&100), "the rollout finished: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "shares only grow: {seen:?}");
    let steps = seen.iter().filter(|p| (1..100).contains(*p)).count();
    assert!(steps >= 3, "traffic moved in steps, not at once: {seen:?}");
    assert!(
        mixed.contains_key("hello-00002") && mixed.contains_key("hello-00003"),
        "both revisions served during the rollout: {mixed:?}"
    );

    // A new command is a configuration change too: a revision, without a new package.
    let changed = server.json(&[
        "update",
        "hello",
        "--cmd",
        "python3",
        "--cmd",
        "main.py",
        "--arg",
        "extra",
        "--rollout-duration",
        "0s",
    ]);
    let newest = changed["revisions"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(newest["name"], "hello-00004");
    assert_eq!(newest["command"], serde_json::json!(["python3", "main.py", "extra"]));
    assert_eq!(newest["command_source"], "template (--cmd or the manifest)");
    assert_eq!(spread(&server, &Server::host("hello"), 3)["hello-00004"], 3);
}
