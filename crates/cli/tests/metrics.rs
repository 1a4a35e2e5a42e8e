//! Prometheus metrics at /metrics move with real requests and real cold starts.

mod common;

use std::time::Duration;

use common::*;

fn scrape(server: &Server) -> String {
    scrape_as(server, &[]).1
}

/// The scrape's content type and text, with the request's headers.
fn scrape_as(server: &Server, headers: &[(&str, &str)]) -> (String, String) {
    let r = server.api_call("GET", "/metrics", headers, b"");
    assert_eq!(r.status, 200);
    (r.header("content-type").unwrap().to_string(), r.body)
}

/// Runs `program` with `text` on its standard input; its exit status and output.
fn pipe(program: &mut std::process::Command, text: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = program
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), said)
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
fn the_scrape_lints_clean_as_prometheus_text_and_as_openmetrics() {
    let server = Server::start(&[]);
    let (_tmp, app) = fixture("python");
    server.deploy("hello", &app, &[]);
    for path in ["/", "/nowhere", "/"] {
        server.get("hello", path);
    }
    assert_eq!(server.cli(&["event", "send", "--type", "t"]).code, 0);

    let (content_type, text) = scrape_as(&server, &[]);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert!(text.contains("# TYPE updraft_requests_total counter"), "{text}");
    let (clean, said) = pipe(std::process::Command::new("promtool").args(["check", "metrics"]), &text);
    assert!(clean && said.is_empty(), "promtool check metrics: {said}\n{text}");

    let accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let (content_type, text) = scrape_as(&server, &[("Accept", accept)]);
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(text.ends_with("# EOF\n"));
    // The OpenMetrics reference parser (prometheus-client) refuses what breaks the spec.
    let parse = "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families\nprint(len(list(text_string_to_metric_families(sys.stdin.read()))))";
    let (clean, said) = pipe(
        std::process::Command::new("python3")
            .args(["-c", parse])
            .env("PYTHONPATH", python_test_deps()),
        &text,
    );
    assert!(clean, "the OpenMetrics parser: {said}\n{text}");
    assert!(said.trim().parse::<u32>().unwrap() >= 10, "{said}");
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
    // Cold starts count for every runtime, not only processes.
    let component = wasm_component(server.dir.path());
    server.json(&["deploy", "component", "--wasm", component.to_str().unwrap()]);
    let handler = fixtures().join("functions/hello.py");
    server.json(&[
        "deploy",
        "function",
        "--function",
        handler.to_str().unwrap(),
        "--runtime",
        "python3",
    ]);
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
    assert_eq!(row("component")["cold_starts"], 1, "{rows}");
    assert_eq!(row("function")["cold_starts"], 1, "{rows}");
    let table = server.cli(&["top", "--once"]);
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(
        table.stdout.contains("REQ/S") && table.stdout.contains("busy"),
        "{}",
        table.stdout
    );
    // The busiest first, in the table and in JSON.
    assert!(
        table.stdout.lines().nth(1).unwrap().starts_with("busy"),
        "{}",
        table.stdout
    );
    assert_eq!(rows[0]["service"], "busy", "{rows}");
}
