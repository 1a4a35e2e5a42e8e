//! Metering: a known instance lifetime at known limits gives the vCPU- and GiB-seconds
//! it should, within a second; requests are counted; usage survives kill -9.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;

fn now_s() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

fn rfc3339_s(text: &str) -> f64 {
    humantime::parse_rfc3339(text)
        .unwrap()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn instance_time_and_requests_are_metered_and_kept() {
    let mut server = Server::start(&[]);
    let (_tmp, app) = fixture("python");
    let service = server.deploy(
        "metered",
        &app,
        &["--cpu", "500m", "--memory", "256Mi", "--scale-to-zero-after", "1h"],
    );
    let started = rfc3339_s(service["revisions"][0]["instances"][0]["started_at"].as_str().unwrap());
    for _ in 0..4 {
        assert_eq!(server.get("metered", "/").status, 200);
    }
    std::thread::sleep(Duration::from_secs(2));
    let before = now_s();
    let usage = server.json(&["usage", "--by", "revision"]);
    let after = now_s();
    let row = usage
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["revision"] == "metered-00001")
        .unwrap_or_else(|| panic!("{usage}"))
        .clone();
    let vcpu = row["vcpu_seconds"].as_f64().unwrap();
    let gib = row["gib_seconds"].as_f64().unwrap();
    // Alive from its start to the moment of the query, at 0.5 vCPU and 0.25 GiB.
    assert!(
        vcpu / 0.5 >= before - started - 1.0 && vcpu / 0.5 <= after - started + 1.0,
        "{row}"
    );
    assert!((gib / 0.25 - vcpu / 0.5).abs() < 0.01, "{row}");
    assert_eq!(row["invocations"], 4, "{row}");
    assert!(row["request_gb_seconds"].as_f64().unwrap() > 0.0);
    assert!(row["cpu_seconds"].as_f64().unwrap() >= 0.0);

    let by_day = server.json(&["usage", "--by", "day", "-n", "default"]);
    assert_eq!(by_day[0]["period"].as_str().unwrap().len(), 10, "{by_day}");
    let csv = server.cli(&["usage", "-o", "csv"]);
    assert!(
        csv.stdout.starts_with("namespace,service,revision,period,vcpu_seconds"),
        "{}",
        csv.stdout
    );
    assert!(csv.stdout.contains("default,metered,,"), "{}", csv.stdout);
    let out = server.cli(&["usage", "--by", "color"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("by: \"color\" is not a grouping"), "{}", out.stderr);

    // A crash loses at most the seconds since the last write, and counts nothing twice.
    server.kill9();
    server.restart();
    let again = server.json(&["usage", "--by", "revision"]);
    let kept = again
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["revision"] == "metered-00001")
        .unwrap()["vcpu_seconds"]
        .as_f64()
        .unwrap();
    assert!(kept >= vcpu && kept <= vcpu + 0.5 * 10.0, "before {vcpu}, after {kept}");
}
