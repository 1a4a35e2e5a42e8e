//! Deleting a namespace against the real server: refused while it holds services
//! unless forced; forced, its services stop and everything it held goes (routes,
//! domains, secrets, triggers, tokens granted only on it), so a namespace made again
//! under the name starts empty.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn a_namespace_is_deleted_with_what_it_holds_only_when_asked_to_take_its_services() {
    let server = Server::start(&[]);
    let (_dir, app) = fixture("python");
    assert_eq!(server.cli(&["namespace", "create", "team"]).code, 0);
    server.deploy("web", &app, &["-n", "team", "--min-scale", "1"]);
    let setup = [
        &["secret", "create", "team/db", "--from-literal", "password=hunter2"][..],
        &["domain", "map", "team.example.com", "--to", "web", "-n", "team"],
        &[
            "trigger",
            "cron",
            "tick",
            "--schedule",
            "0 0 * * *",
            "--target",
            "web",
            "-n",
            "team",
        ],
    ];
    for args in setup {
        let out = server.cli(args);
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
    }
    let out = server.cli(&["token", "create", "ci", "--grant", "developer=team"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let team_token = out.stdout.trim().to_string();
    let pids = instance_pids(&server.json(&["service", "web", "-n", "team"]));
    assert_eq!(pids.len(), 1);
    let host = Server::host("web").replace(".default.", ".team.");

    let refused = server.cli(&["namespace", "delete", "team"]);
    assert_eq!(refused.code, 1, "{}", refused.stdout);
    assert!(
        refused.stderr.contains("holds 1 services (web)") && refused.stderr.contains("--force"),
        "{}",
        refused.stderr
    );
    assert_eq!(server.request("GET", &host, "/", &[], b"").unwrap().status, 200);

    let developer = server.api_as(&team_token, "DELETE", "/v1/namespaces/team?force=true", &[], b"");
    assert_eq!(
        developer.status, 403,
        "only an admin deletes namespaces: {}",
        developer.body
    );
    let default = server.cli(&["namespace", "delete", "default", "--force"]);
    assert_ne!(default.code, 0);
    assert!(default.stderr.contains("cannot be deleted"), "{}", default.stderr);

    let out = server.cli(&["namespace", "delete", "team", "--force"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let namespaces = server.json(&["namespaces"]);
    assert!(
        !namespaces.as_array().unwrap().iter().any(|n| n["name"] == "team"),
        "{namespaces}"
    );
    assert!(wait_dead(&pids, Duration::from_secs(10)), "its instances stop");
    assert_eq!(server.request("GET", &host, "/", &[], b"").unwrap().status, 404);
    assert_eq!(
        server.request("GET", "team.example.com", "/", &[], b"").unwrap().status,
        404
    );
    let revoked = server.api_as(&team_token, "GET", "/v1/namespaces", &[], b"");
    assert_eq!(revoked.status, 401, "a token granted only on it goes: {}", revoked.body);
    assert!(!server.data.join("logs/team").exists());

    // Made again, it starts with nothing of the old one's.
    assert_eq!(server.cli(&["namespace", "create", "team"]).code, 0);
    for listing in [
        &["secret", "list", "-n", "team"][..],
        &["domain", "list", "-n", "team"],
        &["triggers", "-n", "team"],
        &["services", "-n", "team"],
    ] {
        assert_eq!(server.json(listing), serde_json::json!([]), "{listing:?}");
    }
    let gone = server.cli(&["namespace", "delete", "nowhere"]);
    assert_eq!(gone.code, 3, "{}", gone.stderr);
}
