//! A namespace's quotas: services, the package size, invocations and events a minute.
//! Past one, a clear refusal naming it (403 for a change, 429 for traffic) that
//! changes nothing; `updraft namespace show` gives the use against each.

mod common;

use common::*;

#[test]
fn quotas_refuse_past_their_value_and_name_themselves() {
    let server = Server::start(&[]);
    server.json(&["namespace", "create", "team"]);
    let component = wasm_component(server.dir.path());
    let wasm = component.to_str().unwrap();
    server.json(&[
        "namespace",
        "limits",
        "team",
        "--quota-services",
        "1",
        "--quota-invocations-per-minute",
        "3",
        "--quota-fires-per-minute",
        "2",
    ]);
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
