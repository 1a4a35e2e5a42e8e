//! A namespace's quotas: services, the package size, invocations and events a minute.
//! Past one, a clear refusal naming it (403 for a change, 429 for traffic) that
//! changes nothing; `updraft namespace show` gives the use against each.

mod common;

use common::*;

/// A server whose namespace `team` has these limits, and a component to deploy there.
fn team_with_limits(limits: &[&str]) -> (Server, std::path::PathBuf) {
    let server = Server::start(&[]);
    server.json(&["namespace", "create", "team"]);
    let component = wasm_component(server.dir.path());
    let mut args = vec!["namespace", "limits", "team"];
    args.extend(limits);
    server.json(&args);
    (server, component)
}

#[test]
fn quotas_refuse_past_their_value_and_name_themselves() {
    let (server, component) = team_with_limits(&[
        "--quota-services",
        "1",
        "--quota-invocations-per-minute",
        "3",
        "--quota-fires-per-minute",
        "2",
    ]);
    let wasm = component.to_str().unwrap();
    server.json(&["deploy", "a", "--wasm", wasm, "-n", "team"]);

    // One service is the quota: a second is refused, and not made.
    let out = server.cli(&["deploy", "b", "--wasm", wasm, "-n", "team"]);
    assert_eq!(out.code, 5, "{}", out.stderr);
    assert!(out.stderr.contains("quota.services = 1"), "{}", out.stderr);
    assert_eq!(server.json(&["services", "-n", "team"]).as_array().unwrap().len(), 1);

    // Three requests a minute: the fourth is 429, saying which quota and when to retry.
    for _ in 0..3 {
        let r = server.request("GET", "a.team.localhost", "/", &[], b"").unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let over = server.request("GET", "a.team.localhost", "/", &[], b"").unwrap();
    assert_eq!(over.status, 429, "{}", over.body);
    assert!(over.body.contains("quota.invocations_per_minute"), "{}", over.body);
    assert!(over
        .header("retry-after")
        .is_some_and(|s| s.parse::<u64>().unwrap() >= 1));

    // Two events a minute at the brokers.
    for id in ["e1", "e2"] {
        let out = server.cli(&["event", "send", "--type", "t", "--id", id, "-n", "team"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    let out = server.cli(&["event", "send", "--type", "t", "--id", "e3", "-n", "team"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("quota.fires_per_minute"), "{}", out.stderr);

    // The package size: what already runs stays, a new, bigger package is refused.
    server.json(&["namespace", "limits", "team", "--quota-package-size", "1Ki"]);
    let (_tmp, app) = fixture("python");
    let out = server.cli(&["update", "a", "--env", "X=1", "-n", "team"]);
    assert_eq!(
        out.code, 0,
        "a settings change keeps the running package: {}",
        out.stderr
    );
    let out = server.cli(&["deploy", "a", app.to_str().unwrap(), "-n", "team"]);
    assert_eq!(out.code, 5, "{}", out.stderr);
    assert!(out.stderr.contains("quota.package_bytes = 1024"), "{}", out.stderr);

    // Use against each quota.
    let shown = server.json(&["namespace", "show", "team"]);
    assert_eq!(shown["usage"]["services"], 1);
    assert!(
        shown["usage"]["largest_package_bytes"].as_u64().unwrap() > 1024,
        "{shown}"
    );
    assert_eq!(shown["limits"]["quota"]["services"], 1);
    let table = server.cli(&["namespace", "show", "team"]);
    assert!(
        table.stdout.contains("services") && table.stdout.contains("package_bytes"),
        "{}",
        table.stdout
    );

    // A bad value names its field and changes nothing.
    let r = server.api_call("PUT", "/v1/namespaces/team", &[], br#"{"quota": {"services": 0}}"#);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("quota.services"), "{}", r.body);
    assert_eq!(server.json(&["namespace", "show", "team"])["limits"], shown["limits"]);

    // 0 removes a quota.
    server.json(&[
        "namespace",
        "limits",
        "team",
        "--quota-services",
        "0",
        "--quota-package-size",
        "0",
    ]);
    server.json(&["deploy", "b", "--wasm", wasm, "-n", "team"]);
}

/// Waits (bounded) until the team's service has no instance left.
fn wait_for_zero(server: &Server, service: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !server.json(&["service", service, "-n", "team"])["revisions"][0]["instances"]
        .as_array()
        .unwrap()
        .is_empty()
    {
        assert!(std::time::Instant::now() < deadline, "{service} never scaled to zero");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn quotas_on_what_runs_hold_instances_memory_and_cpu() {
    let (server, component) = team_with_limits(&["--quota-instances", "1", "--quota-memory", "96Mi"]);
    let wasm = component.to_str().unwrap();

    // With a memory quota, a service without a memory limit cannot run, and the
    // refused deploy leaves nothing behind.
    let out = server.cli(&["deploy", "unbounded", "--wasm", wasm, "-n", "team"]);
    assert_eq!(out.code, 5, "{}", out.stderr);
    assert!(out.stderr.contains("need a memory limit (--memory)"), "{}", out.stderr);
    assert!(server.json(&["services", "-n", "team"]).as_array().unwrap().is_empty());

    server.json(&[
        "deploy",
        "a",
        "--wasm",
        wasm,
        "-n",
        "team",
        "--memory",
        "64Mi",
        "--scale-to-zero-after",
        "2s",
    ]);
    let shown = server.json(&["namespace", "show", "team"]);
    assert_eq!(shown["usage"]["running"]["instances"], 1, "{shown}");
    assert_eq!(shown["usage"]["running"]["memory_bytes"], 64u64 << 20, "{shown}");
    let table = server.cli(&["namespace", "show", "team"]).stdout;
    assert!(table.contains("instances") && table.contains("memory_bytes"), "{table}");

    // One instance at once: a second service cannot start while `a` runs.
    let out = server.cli(&["deploy", "b", "--wasm", wasm, "-n", "team", "--memory", "16Mi"]);
    assert_eq!(out.code, 5, "{}", out.stderr);
    assert!(out.stderr.contains("quota.instances = 1"), "{}", out.stderr);

    // Once `a` is at zero `b` starts; then a request for `a` is refused with 429,
    // naming the quota, instead of waiting for an instance that may not start.
    wait_for_zero(&server, "a");
    server.json(&["deploy", "b", "--wasm", wasm, "-n", "team", "--memory", "16Mi"]);
    let over = server.request("GET", "a.team.localhost", "/", &[], b"").unwrap();
    assert_eq!(over.status, 429, "{}", over.body);
    assert!(over.body.contains("quota.instances = 1"), "{}", over.body);
    assert!(over.header("retry-after").is_some());

    // More instances, but memory limits add up: 64Mi + 16Mi fit in 96Mi, 32Mi more do not.
    server.json(&["namespace", "limits", "team", "--quota-instances", "3"]);
    let r = server.request("GET", "a.team.localhost", "/", &[], b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let out = server.cli(&["deploy", "c", "--wasm", wasm, "-n", "team", "--memory", "32Mi"]);
    assert_eq!(out.code, 5, "{}", out.stderr);
    assert!(out.stderr.contains("quota.memory_bytes = 100663296"), "{}", out.stderr);

    // A CPU quota asks every service for a CPU limit, and adds them up too.
    server.json(&[
        "namespace",
        "limits",
        "team",
        "--quota-instances",
        "0",
        "--quota-cpu",
        "500m",
    ]);
    let out = server.cli(&["deploy", "d", "--wasm", wasm, "-n", "team", "--memory", "8Mi"]);
    assert!(out.stderr.contains("need a CPU limit (--cpu)"), "{}", out.stderr);

    // Bad values are refused with the field, and change nothing.
    let out = server.cli(&["namespace", "limits", "team", "--quota-cpu", "lots"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let body = br#"{"quota": {"instances": 0}}"#;
    let refused = server.api_call(
        "PUT",
        "/v1/namespaces/team",
        &[("content-type", "application/json")],
        body,
    );
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body.contains("quota.instances"), "{}", refused.body);
    let kept = server.json(&["namespace", "show", "team"]);
    assert_eq!(kept["limits"]["quota"]["cpu_millis"], 500, "{kept}");
}
