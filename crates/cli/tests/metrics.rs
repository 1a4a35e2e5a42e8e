//! Prometheus metrics at /metrics move with real requests and real cold starts.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;

fn scrape(server: &Server) -> String {
    let api: SocketAddr = server.api.trim_start_matches("http://").parse().unwrap();
    let r = http(api, "GET", "api", "/metrics", &[], b"").unwrap();
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().contains("openmetrics"));
    r.body
}

/// The value of the series whose line starts with `prefix` (name and labels).
fn value(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

const LABELS: &str = "namespace=\"default\",service=\"hello\",revision=\"hello-00001\"";

#[test]
fn cold_starts_requests_and_instances_are_counted() {
    let server = Server::start(&["--tick-interval", "1s"]);
    let (_tmp, app) = fixture("python");
    server.deploy("hello", &app, &["--scale-to-zero-after", "1s"]);
    let text = scrape(&server);
    let cold = format!("updraft_cold_starts_total{{{LABELS},runtime=\"process\"}}");
    assert_eq!(value(&text, &cold), 1.0, "the deploy's start: {text}");
    assert_eq!(
        value(&text, &format!("updraft_instances{{{LABELS},state=\"ready\"}}")),
        1.0
    );
    assert!(text.contains("# TYPE updraft_cold_start_duration_seconds histogram"));

    for _ in 0..3 {
        assert_eq!(server.get("hello", "/").status, 200);
    }
    let text = scrape(&server);
    assert_eq!(
        value(&text, &format!("updraft_requests_total{{{LABELS},code=\"2xx\"}}")),
        3.0,
        "{text}"
    );
    assert_eq!(
        value(&text, &format!("updraft_request_duration_seconds_count{{{LABELS}}}")),
        3.0
    );

    // At zero, the next request is a cold start: the counter and the histogram move.
    server.wait_service("hello", "scale to zero", Duration::from_secs(20), |s| {
        s["revisions"][0]["instances"].as_array().unwrap().is_empty()
    });
    assert_eq!(server.get("hello", "/").status, 200);
    let text = scrape(&server);
    assert_eq!(value(&text, &cold), 2.0, "{text}");
    assert_eq!(
        value(
            &text,
            &format!("updraft_cold_start_duration_seconds_count{{{LABELS},runtime=\"process\"}}")
        ),
        2.0
    );
    assert_eq!(
        value(&text, &format!("updraft_activator_wait_seconds_count{{{LABELS}}}")),
        1.0,
        "the request held while it started"
    );
    assert!(
        value(
            &text,
            &format!("updraft_scale_decisions_total{{{LABELS},direction=\"down\",reason=\"idle\"}}")
        ) >= 1.0
    );
    assert!(text.contains("updraft_pool_size "), "{text}");
    assert!(
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .all(|l| l.starts_with("updraft_")),
        "{text}"
    );
}

#[test]
fn a_w3c_traceparent_is_started_or_passed_on() {
    let server = Server::start(&[]);
    let (_tmp, app) = fixture("python");
    server.deploy("traced", &app, &[]);
    let headers = |extra: &[(&str, &str)]| -> serde_json::Value {
        let r = server
            .request("GET", "traced.default.localhost", "/headers", extra, b"")
            .unwrap();
        serde_json::from_str(&r.body).unwrap()
    };
    let started = headers(&[]);
    let traceparent = started["traceparent"].as_str().unwrap();
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(
        (parts[0], parts[1].len(), parts[2].len(), parts[3]),
        ("00", 32, 16, "01")
    );
    let given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    assert_eq!(headers(&[("traceparent", given)])["traceparent"], given);
}

#[test]
fn top_shows_each_service_load() {
    let server = Server::start(&[]);
    let (_tmp, app) = fixture("python");
    server.deploy("busy", &app, &[]);
    server.deploy("quiet", &app, &[]);
    for _ in 0..20 {
        assert_eq!(server.get("busy", "/").status, 200);
    }
    // Samples are taken each second: wait for one past the requests.
    std::thread::sleep(Duration::from_millis(1500));
    let rows = server.json(&["top"]);
    let row = |name: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["service"] == name)
            .unwrap_or_else(|| panic!("{name} in {rows}"))
            .clone()
    };
    let busy = row("busy");
    assert_eq!(busy["requests"], 20, "{busy}");
    assert!(busy["requests_per_second"].as_f64().unwrap() > 0.0, "{busy}");
    assert!(busy["p50_ms"].as_f64().unwrap() > 0.0);
    assert!(busy["p99_ms"].as_f64().unwrap() >= busy["p50_ms"].as_f64().unwrap());
    assert_eq!(busy["ready"], 1);
    assert_eq!(busy["cold_starts"], 1, "the deploy's start");
    assert_eq!(row("quiet")["requests"], 0);
    let table = server.cli(&["top", "--once"]);
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(
        table.stdout.contains("REQ/S") && table.stdout.contains("busy"),
        "{}",
        table.stdout
    );
}
