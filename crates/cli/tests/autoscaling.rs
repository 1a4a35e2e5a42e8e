//! A real service through 0 → 1 → N → 1 → 0 under a bounded load, with the scale
//! events that explain each step.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

/// `clients` threads sending requests to `path`, `pause` apart, until `stop` (and at
/// most 1,000 each); returns the statuses that were not 200.
fn load(
    server: &Server,
    clients: usize,
    path: &'static str,
    pause: Duration,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU32>,
) -> Vec<std::thread::JoinHandle<Vec<u16>>> {
    (0..clients)
        .map(|_| {
            let gateway = server.gateway;
            let stop = stop.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                for _ in 0..1000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let r = http(gateway, "GET", "auto.default.localhost", path, &[], b"").unwrap();
                    if r.status != 200 {
                        failures.push(r.status);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(pause);
                }
                failures
            })
        })
        .collect()
}

fn live_instances(service: &serde_json::Value) -> usize {
    service["revisions"][0]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["state"] == "ready")
        .count()
}

#[test]
fn a_service_scales_zero_to_n_and_back_with_its_reasons() {
    let server = Server::start(&["--tick-interval", "1s"]);
    let (_tmp, app) = fixture("python");
    server.deploy(
        "auto",
        &app,
        &[
            "--target",
            "1",
            "--target-utilization",
            "100",
            "--max-scale",
            "3",
            "--window",
            "6s",
            "--scale-to-zero-after",
            "3s",
        ],
    );
    let at_zero = |s: &serde_json::Value| s["revisions"][0]["instances"].as_array().unwrap().is_empty();
    server.wait_service("auto", "scale to zero", Duration::from_secs(20), at_zero);

    // 0 → 1: one request wakes it.
    assert_eq!(server.get("auto", "/").status, 200);

    // 1 → 3: three clients each keep a slow request in flight.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU32::new(0));
    let busy = load(&server, 3, "/slow", Duration::ZERO, stop.clone(), done.clone());
    let peak = server.wait_service("auto", "three instances", Duration::from_secs(30), |s| {
        live_instances(s) == 3
    });
    assert_eq!(peak["revisions"][0]["ready_instances"], 3);
    stop.store(true, Ordering::Relaxed);
    let failures: Vec<u16> = busy.into_iter().flat_map(|h| h.join().unwrap()).collect();
    assert!(failures.is_empty(), "no request failed while scaling up: {failures:?}");

    // 3 → 1: one client; the windows forget the burst.
    let stop = Arc::new(AtomicBool::new(false));
    let light = load(&server, 1, "/", Duration::from_millis(50), stop.clone(), done.clone());
    server.wait_service("auto", "back to one", Duration::from_secs(40), |s| {
        live_instances(s) == 1
    });
    stop.store(true, Ordering::Relaxed);
    let failures: Vec<u16> = light.into_iter().flat_map(|h| h.join().unwrap()).collect();
    assert!(
        failures.is_empty(),
        "no request failed while scaling down: {failures:?}"
    );

    // 1 → 0 once idle.
    server.wait_service("auto", "zero again", Duration::from_secs(20), at_zero);

    let events = server.api_call("GET", "/v1/namespaces/default/services/auto/events", &[], b"");
    let events: Vec<serde_json::Value> = serde_json::from_str(&events.body).unwrap();
    let steps: Vec<(u64, u64, String)> = events
        .iter()
        .map(|e| {
            (
                e["from"].as_u64().unwrap(),
                e["to"].as_u64().unwrap(),
                e["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(steps.first().map(|s| (s.0, s.1)), Some((1, 0)), "{steps:?}");
    assert!(
        steps.iter().any(|s| s.0 == 0 && s.1 == 1 && s.2 == "activation"),
        "{steps:?}"
    );
    assert!(steps.iter().any(|s| s.1 == 3), "{steps:?}");
    assert!(steps.iter().any(|s| s.0 == 3 && s.1 < 3), "{steps:?}");
    assert_eq!(
        steps.last().map(|s| (s.1, s.2.as_str())),
        Some((0, "idle")),
        "{steps:?}"
    );
    assert!(events.iter().all(|e| e["metric"] == "concurrency"));
    let table = server.cli(&["service", "auto"]);
    assert!(table.stdout.contains("Scale events:"), "{}", table.stdout);

    // The keep-alive policy is chosen per service and checked.
    let out = server.cli(&["update", "auto", "--keep-alive", "forever"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("updraft.dev/keep-alive") && out.stderr.contains("hybrid-histogram"),
        "{}",
        out.stderr
    );
    let learning = server.json(&["update", "auto", "--keep-alive", "hybrid-histogram"]);
    let newest = learning["revisions"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(newest["annotations"]["updraft.dev/keep-alive"], "hybrid-histogram");
    assert!(done.load(Ordering::Relaxed) > 3);
}

#[test]
fn the_hpa_class_scales_on_cpu_from_the_cgroup() {
    let server = Server::start(&["--tick-interval", "1s"]);
    let dir = tempfile::tempdir().unwrap();
    let (_tmp, app) = fixture("python");
    std::fs::write(
        dir.path().join("hpa.yaml"),
        format!(
            "apiVersion: serving.knative.dev/v1
kind: Service
metadata: {{name: cpu}}
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/class: hpa.autoscaling.knative.dev
        autoscaling.knative.dev/metric: cpu
        autoscaling.knative.dev/target: \"50\"
        autoscaling.knative.dev/max-scale: \"2\"
        autoscaling.knative.dev/window: 6s
        autoscaling.knative.dev/scale-to-zero-pod-retention-period: 1s
    spec:
      containers:
        - image: package:{}
          resources:
            requests: {{cpu: 100m}}
            limits: {{cpu: 200m}}
",
            app.display()
        ),
    )
    .unwrap();
    server.json(&["apply", "-f", dir.path().join("hpa.yaml").to_str().unwrap()]);
    // One request keeps its instance at its 200m limit: four times the 50m target.
    let gateway = server.gateway;
    let spin = std::thread::spawn(move || http(gateway, "GET", "cpu.default.localhost", "/spin?10", &[], b"").unwrap());
    let scaled = server.wait_service("cpu", "a second instance", Duration::from_secs(30), |s| {
        s["revisions"][0]["scale_events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["to"] == 2))
    });
    let event = scaled["revisions"][0]["scale_events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["to"] == 2)
        .unwrap()
        .clone();
    assert_eq!(event["metric"], "cpu", "{event}");
    assert_eq!(event["panicking"], false, "{event}");
    assert!(
        event["stable"].as_f64().unwrap() > 50.0,
        "millicores over the window: {event}"
    );
    assert_eq!(spin.join().unwrap().status, 200);
    // Idle far past its 1 s retention, the HPA class still keeps one: min-scale is 1.
    std::thread::sleep(Duration::from_secs(4));
    let after = server.json(&["service", "cpu"]);
    assert!(!after["revisions"][0]["instances"].as_array().unwrap().is_empty());
}
