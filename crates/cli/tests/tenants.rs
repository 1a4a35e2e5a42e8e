//! Tokens, roles and namespaces as tenants, against the real server: every route of
//! the API with no token, a bad one, an expired and a revoked one, and each role in
//! its own namespace and in another; what a tenant can list; tokens stored as hashes;
//! the audit log; contexts; and the local admin token of the embedded default.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Nobody,
    Malformed,
    WrongSecret,
    Expired,
    Revoked,
    Invoker,
    Viewer,
    Developer,
    Admin,
}

/// What a route asks, as the issue's roles read: written here again, not taken from
/// the server's table, so the test checks the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    Public,
    Signed,
    Read,
    Logs,
    Invoke,
    Write,
    WriteSomewhere,
    Admin,
}

/// What an allowed caller gets.
#[derive(Clone, Copy, Debug)]
enum Answer {
    /// 2xx for the first allowed caller (a delete succeeds once), and no 401 or 403
    /// for the others. As the refused callers go first, the first success also shows
    /// that no refusal changed anything: what a refused delete named is still there.
    Success,
    /// The request is refused on its merits (a registry that is not there); only no
    /// 401 or 403 is asked of it.
    Anything,
}

struct Case {
    method: &'static str,
    /// As the OpenAPI document writes it.
    route: &'static str,
    /// `{ns}` is each namespace in turn, `{tid}` the throwaway token's id.
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body: &'static str,
    need: Need,
    answer: Answer,
}

const JSON: &[(&str, &str)] = &[("content-type", "application/json")];
const EVENT: &[(&str, &str)] = &[
    ("ce-specversion", "1.0"),
    ("ce-id", "e1"),
    ("ce-type", "t"),
    ("ce-source", "/s"),
];
/// Stands for the wasm component's bytes.
const COMPONENT: &str = "<component>";

fn case(method: &'static str, route: &'static str, path: &'static str, need: Need) -> Case {
    Case {
        method,
        route,
        path,
        headers: JSON,
        body: "",
        need,
        answer: Answer::Success,
    }
}

fn cases() -> Vec<Case> {
    use Need::*;
    let with = |mut c: Case, body: &'static str| {
        c.body = body;
        c
    };
    let anything = |mut c: Case| {
        c.answer = Answer::Anything;
        c
    };
    let svc = "/v1/namespaces/{ns}/services/{name}";
    let invoke = "/v1/namespaces/{ns}/services/{name}/invoke";
    let mut all = vec![
        case("GET", "/healthz", "/healthz", Public),
        case("GET", "/v1/openapi.json", "/v1/openapi.json", Public),
        case("GET", "/v1/info", "/v1/info", Signed),
        case("GET", "/v1/whoami", "/v1/whoami", Signed),
        case("GET", "/metrics", "/metrics", Signed),
        case("GET", "/v1/usage", "/v1/usage", Signed),
        case("GET", "/v1/namespaces", "/v1/namespaces", Signed),
        with(
            case("POST", "/v1/namespaces", "/v1/namespaces", Admin),
            r#"{"name": "made"}"#,
        ),
        case("GET", "/v1/namespaces/{ns}", "/v1/namespaces/{ns}", Read),
        with(case("PUT", "/v1/namespaces/{ns}", "/v1/namespaces/{ns}", Admin), "{}"),
        case("GET", "/v1/tokens", "/v1/tokens", Admin),
        with(
            case("POST", "/v1/tokens", "/v1/tokens", Admin),
            r#"{"name": "made", "grants": [{"role": "viewer", "namespace": "a"}]}"#,
        ),
        case("DELETE", "/v1/tokens/{id}", "/v1/tokens/{tid}", Admin),
        case("GET", "/v1/audit", "/v1/audit", Admin),
        case("GET", "/v1/registries", "/v1/registries", Admin),
        anything(with(
            case("POST", "/v1/registries", "/v1/registries", Admin),
            r#"{"registry": "bad host", "username": "u", "password": "p"}"#,
        )),
        anything(case(
            "DELETE",
            "/v1/registries/{registry}",
            "/v1/registries/nowhere.example",
            Admin,
        )),
        with(case("POST", "/v1/packages", "/v1/packages", WriteSomewhere), COMPONENT),
        anything(with(
            case("POST", "/v1/images", "/v1/images", WriteSomewhere),
            "not an archive",
        )),
        anything(with(
            case("POST", "/v1/images/pull", "/v1/images/pull", WriteSomewhere),
            r#"{"reference": "127.0.0.1:1/nothing:1"}"#,
        )),
        with(
            case("POST", "/v1/apply", "/v1/apply", Write),
            "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: applied\n  namespace: {ns}\nspec: {}\n",
        ),
        case(
            "GET",
            "/v1/namespaces/{ns}/services",
            "/v1/namespaces/{ns}/services",
            Read,
        ),
        case("GET", "/v1/namespaces/{ns}/top", "/v1/namespaces/{ns}/top", Read),
        case("GET", svc, "/v1/namespaces/{ns}/services/svc", Read),
        with(
            case("PUT", svc, "/v1/namespaces/{ns}/services/svc", Write),
            r#"{"env": {"V": "2"}}"#,
        ),
        case("DELETE", svc, "/v1/namespaces/{ns}/services/doomed", Write),
        case(
            "GET",
            "/v1/namespaces/{ns}/services/{name}/manifest",
            "/v1/namespaces/{ns}/services/svc/manifest",
            Read,
        ),
        case(
            "GET",
            "/v1/namespaces/{ns}/services/{name}/revisions",
            "/v1/namespaces/{ns}/services/svc/revisions",
            Read,
        ),
        case(
            "GET",
            "/v1/namespaces/{ns}/services/{name}/events",
            "/v1/namespaces/{ns}/services/svc/events",
            Read,
        ),
        with(
            case(
                "PUT",
                "/v1/namespaces/{ns}/services/{name}/traffic",
                "/v1/namespaces/{ns}/services/svc/traffic",
                Write,
            ),
            r#"{"traffic": [{"latest": true, "percent": 100}]}"#,
        ),
        with(
            case(
                "POST",
                "/v1/namespaces/{ns}/services/{name}/rollback",
                "/v1/namespaces/{ns}/services/svc/rollback",
                Write,
            ),
            "{}",
        ),
        case(
            "DELETE",
            "/v1/namespaces/{ns}/revisions/{revision}",
            "/v1/namespaces/{ns}/revisions/old-00001",
            Write,
        ),
        case(
            "GET",
            "/v1/namespaces/{ns}/services/{name}/logs",
            "/v1/namespaces/{ns}/services/svc/logs",
            Logs,
        ),
        case("GET", invoke, "/v1/namespaces/{ns}/services/svc/invoke", Invoke),
        case(
            "GET",
            "/v1/namespaces/{ns}/services/{name}/invoke/",
            "/v1/namespaces/{ns}/services/svc/invoke/",
            Invoke,
        ),
        anything(case(
            "GET",
            "/v1/namespaces/{ns}/services/{name}/invoke/{*path}",
            "/v1/namespaces/{ns}/services/svc/invoke/x",
            Invoke,
        )),
        case(
            "GET",
            "/v1/namespaces/{ns}/triggers",
            "/v1/namespaces/{ns}/triggers",
            Read,
        ),
        case(
            "GET",
            "/v1/namespaces/{ns}/triggers/{name}",
            "/v1/namespaces/{ns}/triggers/tick",
            Read,
        ),
        with(
            case(
                "PUT",
                "/v1/namespaces/{ns}/triggers/{name}",
                "/v1/namespaces/{ns}/triggers/tick",
                Write,
            ),
            r#"{"kind": "cron", "schedule": "0 0 1 1 *", "sink": {"ref": {"name": "svc"}}}"#,
        ),
        case(
            "DELETE",
            "/v1/namespaces/{ns}/triggers/{name}",
            "/v1/namespaces/{ns}/triggers/doomed",
            Write,
        ),
        case(
            "GET",
            "/v1/namespaces/{ns}/triggers/{name}/manifest",
            "/v1/namespaces/{ns}/triggers/tick/manifest",
            Read,
        ),
        case(
            "GET",
            "/v1/namespaces/{ns}/brokers",
            "/v1/namespaces/{ns}/brokers",
            Read,
        ),
        with(
            case(
                "PUT",
                "/v1/namespaces/{ns}/brokers/{name}",
                "/v1/namespaces/{ns}/brokers/made",
                Write,
            ),
            "{}",
        ),
        case(
            "DELETE",
            "/v1/namespaces/{ns}/brokers/{name}",
            "/v1/namespaces/{ns}/brokers/doomed",
            Write,
        ),
        case(
            "GET",
            "/v1/namespaces/{ns}/secrets",
            "/v1/namespaces/{ns}/secrets",
            Read,
        ),
        with(
            case(
                "POST",
                "/v1/namespaces/{ns}/secrets",
                "/v1/namespaces/{ns}/secrets",
                Write,
            ),
            r#"{"name": "made", "data": {"k": "dg=="}}"#,
        ),
        case(
            "GET",
            "/v1/namespaces/{ns}/secrets/{name}",
            "/v1/namespaces/{ns}/secrets/cred",
            Read,
        ),
        with(
            case(
                "PUT",
                "/v1/namespaces/{ns}/secrets/{name}",
                "/v1/namespaces/{ns}/secrets/cred",
                Write,
            ),
            r#"{"data": {"k": "dg=="}}"#,
        ),
        case(
            "DELETE",
            "/v1/namespaces/{ns}/secrets/{name}",
            "/v1/namespaces/{ns}/secrets/doomed",
            Write,
        ),
        case(
            "GET",
            "/v1/namespaces/{ns}/domainmappings",
            "/v1/namespaces/{ns}/domainmappings",
            Read,
        ),
        case(
            "GET",
            "/v1/namespaces/{ns}/domainmappings/{name}",
            "/v1/namespaces/{ns}/domainmappings/{ns}.kept.example.com",
            Read,
        ),
        with(
            case(
                "PUT",
                "/v1/namespaces/{ns}/domainmappings/{name}",
                "/v1/namespaces/{ns}/domainmappings/{ns}.made.example.com",
                Write,
            ),
            r#"{"service": "svc"}"#,
        ),
        case(
            "DELETE",
            "/v1/namespaces/{ns}/domainmappings/{name}",
            "/v1/namespaces/{ns}/domainmappings/{ns}.doomed.example.com",
            Write,
        ),
        case("DELETE", "/v1/namespaces/{ns}", "/v1/namespaces/gone?force=true", Admin),
        Case {
            headers: EVENT,
            ..case(
                "POST",
                "/v1/namespaces/{ns}/brokers/{name}/events",
                "/v1/namespaces/{ns}/brokers/default/events",
                Invoke,
            )
        },
        // Signed by the provider, not by a token: every caller gets the same answer.
        anything(case(
            "POST",
            "/v1/namespaces/{ns}/webhooks/{name}",
            "/v1/namespaces/{ns}/webhooks/none",
            Public,
        )),
    ];
    // Whatever the component makes of other methods, they are invocations too.
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        all.push(anything(case(
            method,
            invoke,
            "/v1/namespaces/{ns}/services/svc/invoke",
            Invoke,
        )));
    }
    all
}

fn allowed(need: Need, who: Who, namespace: &str) -> bool {
    use Who::*;
    let own = namespace == "a";
    match who {
        Nobody | Malformed | WrongSecret | Expired | Revoked => need == Need::Public,
        Admin => true,
        Invoker | Viewer | Developer => match need {
            Need::Public | Need::Signed => true,
            Need::Admin => false,
            Need::WriteSomewhere => who == Developer,
            Need::Read => own && matches!(who, Developer | Viewer),
            Need::Logs | Need::Write => own && who == Developer,
            Need::Invoke => own && matches!(who, Developer | Invoker),
        },
    }
}

fn token_json(server: &Server, name: &str, grant: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["token", "create", name, "--grant", grant];
    args.extend(extra);
    server.json(&args)
}

fn token_of(server: &Server, name: &str, grant: &str, extra: &[&str]) -> String {
    token_json(server, name, grant, extra)["token"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Two namespaces with the same things in each: `a`, where the role tokens hold their
/// roles, and `b`, where they hold none.
fn two_tenants(server: &Server) {
    let component = wasm_component(server.dir.path());
    let component = component.to_str().unwrap();
    for ns in ["a", "b"] {
        server.json(&["namespace", "create", ns]);
        for name in ["svc", "old", "doomed"] {
            server.json(&["deploy", name, "--wasm", component, "-n", ns]);
        }
        for name in ["svc", "old"] {
            server.json(&["update", name, "--env", "V=1", "-n", ns]);
        }
        for name in ["default", "doomed"] {
            server.json(&["broker", "set", name, "-n", ns]);
        }
        for name in ["cred", "doomed"] {
            server.json(&["secret", "create", name, "--from-literal", "k=v", "-n", ns]);
        }
        for name in ["tick", "doomed"] {
            server.json(&[
                "trigger",
                "cron",
                name,
                "--schedule",
                "0 0 1 1 *",
                "--target",
                "svc",
                "-n",
                ns,
            ]);
        }
        for name in ["kept", "doomed"] {
            let domain = format!("{ns}.{name}.example.com");
            server.json(&["domain", "map", &domain, "--to", "svc", "-n", ns]);
        }
    }
    server.json(&["namespace", "create", "gone"]);
    server.json(&["deploy", "svc", "--wasm", component, "-n", "gone"]);
}

#[test]
fn every_route_answers_each_token_as_its_role_allows() {
    let server = Server::start(&[]);
    two_tenants(&server);
    let expiring = token_of(&server, "expiring", "developer=a", &["--expires", "1s"]);
    let expired_at = Instant::now() + Duration::from_millis(1100);
    let revoked = token_json(&server, "revoked", "developer=a", &[]);
    server.json(&["token", "revoke", revoked["details"]["id"].as_str().unwrap()]);
    let developer = token_of(&server, "dev", "developer=a", &[]);
    let throwaway = token_json(&server, "throwaway", "viewer=b", &[]);
    let throwaway_id = throwaway["details"]["id"].as_str().unwrap();
    let wrong_secret = format!("{}{}", &developer[..21], "A".repeat(40));
    let callers = [
        (Who::Nobody, String::new()),
        (Who::Malformed, "updraft_not_a_token".to_string()),
        (Who::WrongSecret, wrong_secret),
        (Who::Expired, expiring),
        (Who::Revoked, revoked["token"].as_str().unwrap().to_string()),
        (Who::Invoker, token_of(&server, "inv", "invoker=a", &[])),
        (Who::Viewer, token_of(&server, "view", "viewer=a", &[])),
        (Who::Developer, developer),
        (Who::Admin, server.admin_token()),
    ];
    std::thread::sleep(expired_at.saturating_duration_since(Instant::now()));
    let component = std::fs::read(wasm_component(server.dir.path())).unwrap();

    // Every documented operation is in the table.
    let doc: serde_json::Value =
        serde_json::from_str(&server.api_call("GET", "/v1/openapi.json", &[], b"").body).unwrap();
    let table = cases();
    let covered: BTreeSet<(String, String)> = table
        .iter()
        .map(|c| (c.method.to_lowercase(), c.route.to_string()))
        .collect();
    for (route, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            assert!(
                covered.contains(&(method.clone(), route.clone())),
                "{method} {route} is not in the table"
            );
        }
    }

    let mut checked = 0;
    for case in &table {
        let namespaces: &[&str] = if case.path.contains("{ns}") || case.body.contains("{ns}") {
            &["a", "b"]
        } else {
            &["a"]
        };
        for ns in namespaces {
            let path = case.path.replace("{ns}", ns).replace("{tid}", throwaway_id);
            let body = match case.body {
                COMPONENT => component.clone(),
                text => text.replace("{ns}", ns).into_bytes(),
            };
            let mut first_allowed = true;
            for (who, token) in &callers {
                let r = server.api_as(token, case.method, &path, case.headers, &body);
                let what = format!("{who:?} {} {path}: {} {}", case.method, r.status, r.body);
                checked += 1;
                if allowed(case.need, *who, ns) {
                    assert!(r.status != 401 && r.status != 403, "allowed, yet refused: {what}");
                    if first_allowed && matches!(case.answer, Answer::Success) {
                        assert!((200..300).contains(&r.status), "not a success: {what}");
                    }
                    first_allowed = false;
                    continue;
                }
                let authenticated = matches!(who, Who::Invoker | Who::Viewer | Who::Developer | Who::Admin);
                assert_eq!(r.status, if authenticated { 403 } else { 401 }, "{what}");
                let error: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_else(|_| panic!("{what}"));
                assert_eq!(error["error"]["code"], r.status, "{what}");
                if r.status == 401 {
                    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"updraft\""), "{what}");
                }
            }
        }
    }
    assert!(checked >= 690, "only {checked} requests");
}

#[test]
fn tokens_are_shown_once_kept_as_hashes_and_refused_once_revoked() {
    let server = Server::start(&[]);
    server.json(&["namespace", "create", "a"]);
    let mode = std::fs::metadata(server.data.join("admin.token"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the admin token is the server user's alone");

    // Shown once, on stdout alone, so `T=$(updraft token create …)` works.
    let out = server.cli(&["token", "create", "ci", "--grant", "developer=a", "--expires", "30d"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let token = out.stdout.trim().to_string();
    assert!(token.starts_with("updraft_") && token.len() == 61, "{token}");
    assert!(out.stderr.contains("not shown again"), "{}", out.stderr);
    let secret = &token[21..];

    let listed = server.cli(&["token", "list", "-o", "json"]);
    assert!(
        !listed.stdout.contains(secret),
        "list shows no secret: {}",
        listed.stdout
    );
    let ci = serde_json::from_str::<serde_json::Value>(&listed.stdout).unwrap();
    let ci = ci
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "ci")
        .unwrap()
        .clone();
    assert_eq!(
        ci["grants"],
        serde_json::json!([{"role": "developer", "namespace": "a"}])
    );
    assert!(ci["expires_at"].as_str().unwrap().starts_with("20"), "{ci}");
    // Nowhere on disk: the store keeps a hash.
    for entry in std::fs::read_dir(&server.data).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} holds the secret",
                path.display()
            );
        }
    }

    let as_ci = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env("UPDRAFT_API", &server.api)
            .env("UPDRAFT_TOKEN", &token)
            .env("UPDRAFT_CONFIG", server.dir.path().join("none.yaml"))
            .output()
            .unwrap()
    };
    assert!(as_ci(&["services", "-n", "a"]).status.success());
    let denied = as_ci(&["services", "-n", "default"]);
    assert_eq!(denied.status.code(), Some(5), "denied has its exit code");
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(stderr.contains("may not read namespace \"default\""), "{stderr}");

    server.json(&["token", "revoke", ci["id"].as_str().unwrap()]);
    let after = as_ci(&["services", "-n", "a"]);
    assert_eq!(after.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&after.stderr).contains("revoked"), "{after:?}");

    // Bad input is refused with the field and what is allowed, and makes nothing.
    let before = server.json(&["token", "list"]).as_array().unwrap().len();
    for (args, code, says) in [
        (
            vec!["--grant", "owner=a"],
            2,
            "the roles are admin, developer, viewer and invoker",
        ),
        (vec!["--grant", "developer"], 2, "developer needs a namespace"),
        (vec!["--grant", "admin=a"], 2, "takes no namespace"),
        (vec!["--grant", "viewer=Bad_NS"], 2, "DNS-1123"),
        (vec!["--grant", "viewer=nope"], 3, "namespace \"nope\" does not exist"),
        (vec!["--grant", "viewer=a", "--expires", "soon"], 1, "expires_in"),
        (
            vec!["--grant", "viewer=a", "--grant", "developer=a"],
            1,
            "one role per namespace",
        ),
    ] {
        let mut all = vec!["token", "create", "bad"];
        all.extend(args.iter().copied());
        let out = server.cli(&all);
        assert_eq!(out.code, code, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
    }
    let out = server.cli(&["token", "create", "a b", "--grant", "viewer=a"]);
    assert!(out.code != 0 && out.stderr.contains("name:"), "{}", out.stderr);
    assert_eq!(server.json(&["token", "list"]).as_array().unwrap().len(), before);

    // The last admin token stays: revoking it would lock every admin out.
    let admin = server.admin_token();
    let out = server.cli(&["token", "revoke", &admin[8..20]]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("last valid admin token"), "{}", out.stderr);

    // A restart keeps the tokens and writes no new admin token.
    let first = server.admin_token();
    let mut server = server;
    server.terminate();
    server.restart();
    assert_eq!(server.admin_token(), first);
    assert_eq!(server.json(&["token", "list"]).as_array().unwrap().len(), before);
}

#[test]
fn a_tenant_sees_only_its_own_namespaces() {
    let server = Server::start(&[]);
    let component = wasm_component(server.dir.path());
    for ns in ["a", "b"] {
        server.json(&["namespace", "create", ns]);
        server.json(&["deploy", "svc", "--wasm", component.to_str().unwrap(), "-n", ns]);
        let r = server
            .request("GET", &format!("svc.{ns}.localhost"), "/", &[], b"")
            .unwrap();
        assert_eq!(r.status, 200);
    }
    let viewer = token_of(&server, "view", "viewer=a", &[]);
    let as_viewer = |path: &str| {
        let r = server.api_as(&viewer, "GET", path, &[], b"");
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        r.body
    };
    let namespaces: serde_json::Value = serde_json::from_str(&as_viewer("/v1/namespaces")).unwrap();
    assert_eq!(namespaces.as_array().unwrap().len(), 1, "{namespaces}");
    assert_eq!(namespaces[0]["name"], "a");

    let usage: serde_json::Value = serde_json::from_str(&as_viewer("/v1/usage")).unwrap();
    let seen: BTreeSet<&str> = usage
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(seen, BTreeSet::from(["a"]), "{usage}");
    let all: serde_json::Value = serde_json::from_str(&server.api_call("GET", "/v1/usage", &[], b"").body).unwrap();
    assert!(
        all.as_array().unwrap().iter().any(|u| u["namespace"] == "b"),
        "the admin sees b: {all}"
    );
    let r = server.api_as(&viewer, "GET", "/v1/usage?namespace=b", &[], b"");
    assert_eq!(r.status, 403, "{}", r.body);

    let metrics = as_viewer("/metrics");
    assert!(metrics.contains("namespace=\"a\""), "{metrics}");
    assert!(!metrics.contains("namespace=\"b\""), "{metrics}");
    assert!(metrics.contains("# TYPE"), "still an exposition: {metrics}");
    let admin_metrics = server.api_call("GET", "/metrics", &[], b"").body;
    assert!(admin_metrics.contains("namespace=\"b\""));

    // A trigger delivers within its namespace only.
    let developer = token_of(&server, "dev", "developer=a", &[]);
    let cross = r#"{"kind": "cron", "schedule": "* * * * *", "sink": {"ref": {"name": "svc", "namespace": "b"}}}"#;
    let r = server.api_as(&developer, "PUT", "/v1/namespaces/a/triggers/t", &[], cross.as_bytes());
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("sink.ref.namespace"), "{}", r.body);
    // Apply goes by the namespace the manifest names.
    let manifest =
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: x\n  namespace: b\nspec: {}\n";
    let r = server.api_as(&developer, "POST", "/v1/apply", &[], manifest.as_bytes());
    assert_eq!(r.status, 403, "{}", r.body);
    let r = server.api_as(
        &developer,
        "POST",
        "/v1/apply?namespace=b",
        &[],
        manifest.replace("  namespace: b\n", "").as_bytes(),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(server
        .json(&["brokers", "-n", "b"])
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b["name"] != "x"));
}

#[test]
fn the_audit_log_says_who_changed_what() {
    let server = Server::start(&[]);
    server.json(&["namespace", "create", "a"]);
    let developer = token_json(&server, "dev", "developer=a", &[]);
    let (token, id) = (
        developer["token"].as_str().unwrap(),
        developer["details"]["id"].as_str().unwrap(),
    );
    let broker = |ns: &str| {
        server
            .api_as(token, "PUT", &format!("/v1/namespaces/{ns}/brokers/x"), &[], b"{}")
            .status
    };
    assert_eq!(broker("a"), 200);
    assert_eq!(broker("default"), 403);
    server.api_as(token, "GET", "/v1/namespaces/a/brokers", &[], b"");
    server.api_as("", "DELETE", "/v1/namespaces/a/brokers/x", &[], b"");

    let entries = server.json(&["audit", "--token-id", id]);
    let lines: Vec<(String, String, u64)> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["method"].as_str().unwrap().to_string(),
                e["path"].as_str().unwrap().to_string(),
                e["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            ("PUT".to_string(), "/v1/namespaces/a/brokers/x".to_string(), 200),
            ("PUT".to_string(), "/v1/namespaces/default/brokers/x".to_string(), 403),
        ],
        "reads are not audited"
    );
    let all = server.json(&["audit"]);
    let anonymous = all
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["method"] == "DELETE")
        .unwrap();
    assert_eq!(anonymous["status"], 401);
    assert!(anonymous.get("token_id").is_none(), "{anonymous}");
    assert!(all
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["path"] == "/v1/tokens" && e["status"] == 201));
    let r = server.api_as(token, "GET", "/v1/audit", &[], b"");
    assert_eq!(r.status, 403, "a developer does not read the audit log");
    let out = server.cli(&["audit", "--limit", "0"]);
    assert!(out.code != 0 && out.stderr.contains("limit"), "{}", out.stderr);
}

#[test]
fn login_saves_a_private_context_the_cli_then_uses() {
    let server = Server::start(&[]);
    server.json(&["namespace", "create", "a"]);
    let viewer = token_of(&server, "view", "viewer=a", &[]);
    let config = server.dir.path().join("home/updraft/config.yaml");
    let bare = |args: &[&str]| cli_with_contexts(&config, server.dir.path(), args);
    let token_file = server.dir.path().join("viewer.token");
    std::fs::write(&token_file, format!("{viewer}\n")).unwrap();
    let login = bare(&[
        "login",
        "--api",
        &server.api,
        "--token-file",
        token_file.to_str().unwrap(),
        "--name",
        "team",
    ]);
    assert!(login.status.success(), "{}", String::from_utf8_lossy(&login.stderr));
    assert!(String::from_utf8_lossy(&login.stdout).contains("viewer=a"), "{login:?}");
    assert_eq!(std::fs::metadata(&config).unwrap().permissions().mode() & 0o777, 0o600);

    let services = bare(&["services", "-n", "a", "-o", "json"]);
    assert!(
        services.status.success(),
        "{}",
        String::from_utf8_lossy(&services.stderr)
    );
    let contexts = bare(&["contexts", "-o", "json"]);
    let listed: serde_json::Value = serde_json::from_slice(&contexts.stdout).unwrap();
    assert_eq!(
        listed,
        serde_json::json!([{"name": "team", "api": server.api, "current": true}])
    );
    assert!(!String::from_utf8_lossy(&contexts.stdout).contains(&viewer[21..]));

    let bad = bare(&["services", "--context", "nope"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no context \"nope\""));
    let wrong = server.dir.path().join("wrong.token");
    std::fs::write(&wrong, format!("{}{}\n", &viewer[..21], "B".repeat(40))).unwrap();
    let refused = bare(&[
        "login",
        "--api",
        &server.api,
        "--token-file",
        wrong.to_str().unwrap(),
        "--name",
        "x",
    ]);
    assert_eq!(refused.status.code(), Some(5), "a token the API refuses is not saved");
    let kept = bare(&["contexts", "-o", "json"]);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&kept.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// The embedded default: `updraft server` in a folder writes its admin token there,
/// and the CLI run from that folder needs nothing else.
#[test]
fn the_cli_beside_a_default_server_uses_its_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let (gateway, api) = (free_port(), free_port());
    let mut child = Command::new(BIN)
        .args(["server", "--gateway-addr", &format!("127.0.0.1:{gateway}")])
        .args(["--api-addr", &format!("127.0.0.1:{api}")])
        .current_dir(dir.path())
        .stdout(std::fs::File::create(dir.path().join("out.log")).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http(([127, 0, 0, 1], api).into(), "GET", "api", "/healthz", &[], b"").is_ok_and(|r| r.status == 200) {
        assert!(Instant::now() < deadline, "the server did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The line comes once the listeners are up, which may be just after the first answer.
    let printed = loop {
        let printed = std::fs::read_to_string(dir.path().join("out.log")).unwrap();
        if printed.contains("admin token") || Instant::now() > deadline {
            break printed;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        printed.contains(".updraft/admin.token (0600)"),
        "it says where: {printed}"
    );
    let cli = |cwd: &std::path::Path| {
        Command::new(BIN)
            .args(["namespaces", "-o", "json"])
            .env("UPDRAFT_API", format!("http://127.0.0.1:{api}"))
            .env_remove("UPDRAFT_TOKEN")
            .env("UPDRAFT_CONFIG", dir.path().join("none.yaml"))
            .current_dir(cwd)
            .output()
            .unwrap()
    };
    let beside = cli(dir.path());
    assert!(beside.status.success(), "{}", String::from_utf8_lossy(&beside.stderr));
    let elsewhere = tempfile::tempdir().unwrap();
    let away = cli(elsewhere.path());
    assert_eq!(away.status.code(), Some(5));
    assert!(
        String::from_utf8_lossy(&away.stderr).contains("this route needs a token"),
        "{}",
        String::from_utf8_lossy(&away.stderr)
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
}

/// Knative's `cluster-local`: the gateway answers a private service only to tokens
/// that may invoke in its namespace, never hands the token to the app, and lets the
/// platform's own requests (triggers, the API's invoke) through.
#[test]
fn a_private_service_answers_only_invokers_of_its_namespace_and_the_platform() {
    let server = Server::start(&[]);
    for ns in ["a", "b"] {
        server.json(&["namespace", "create", ns]);
    }
    let (tmp, app) = fixture("python");
    let events = tmp.path().join("events.jsonl");
    let env = format!("EVENTS_SOCKET={}", common::record_events(&events));
    server.json(&[
        "deploy",
        "inner",
        app.to_str().unwrap(),
        "-n",
        "a",
        "--private",
        "--env",
        &env,
    ]);
    let get = |token: &str| {
        let bearer = format!("Bearer {token}");
        let headers: Vec<(&str, &str)> = if token.is_empty() {
            vec![]
        } else {
            vec![("Authorization", &bearer)]
        };
        server
            .request("GET", "inner.a.localhost", "/headers", &headers, b"")
            .unwrap()
    };
    let nobody = get("");
    assert_eq!(nobody.status, 401, "{}", nobody.body);
    assert!(nobody.body.contains("private service"), "{}", nobody.body);
    assert_eq!(get("updraft_not_a_token").status, 401);
    for refused in [
        token_of(&server, "view-a", "viewer=a", &[]),
        token_of(&server, "inv-b", "invoker=b", &[]),
    ] {
        let r = get(&refused);
        assert_eq!(r.status, 403, "{}", r.body);
    }
    for allowed in [
        token_of(&server, "inv-a", "invoker=a", &[]),
        token_of(&server, "dev-a", "developer=a", &[]),
    ] {
        let r = get(&allowed);
        assert_eq!(r.status, 200, "{}", r.body);
        let seen: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert!(
            seen.as_object()
                .unwrap()
                .keys()
                .all(|k| !k.eq_ignore_ascii_case("authorization")),
            "the app never sees the platform's token: {seen}"
        );
    }
    let described = server.json(&["service", "inner", "-n", "a"]);
    assert_eq!(
        described["labels"]["networking.knative.dev/visibility"],
        "cluster-local"
    );

    // The platform's own requests get in: the API's invoke, and a trigger's delivery.
    let out = server.cli(&["invoke", "inner", "-n", "a", "--path", "/hello"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    server.json(&["broker", "set", "default", "-n", "a"]);
    server.json(&["trigger", "event", "feed", "--target", "inner", "-n", "a"]);
    let out = server.cli(&["event", "send", "--type", "ping", "--id", "p1", "-n", "a"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    wait_events(&events, "the trigger's delivery", Duration::from_secs(20), |e| {
        !e.is_empty()
    });

    server.json(&["update", "inner", "-n", "a", "--public"]);
    assert_eq!(get("").status, 200, "public again");

    // A manifest says it with the label; a visibility Knative does not know is refused.
    let out = server.cli(&["get", "service", "inner", "-n", "a", "-o", "yaml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&out.stdout).unwrap();
    let manifest = tmp.path().join("svc.yaml");
    for (value, code) in [("internal", 1), ("cluster-local", 0)] {
        doc["metadata"]["labels"] =
            serde_yaml_ng::from_str(&format!("{{networking.knative.dev/visibility: {value}}}")).unwrap();
        std::fs::write(&manifest, serde_yaml_ng::to_string(&doc).unwrap()).unwrap();
        let out = server.cli(&["apply", "-f", manifest.to_str().unwrap()]);
        assert_eq!(out.code, code, "{value}: {}", out.stderr);
        if code == 1 {
            assert!(
                out.stderr
                    .contains("metadata.labels[networking.knative.dev/visibility]"),
                "{}",
                out.stderr
            );
        }
    }
    assert_eq!(get("").status, 401, "private by its manifest");
}

#[test]
fn listings_span_the_namespaces_a_token_may_read_and_stay_aligned() {
    let server = Server::start(&[]);
    let (_dir, app) = static_app();
    let long = "team-with-a-rather-long-name-for-columns";
    server.json(&["namespace", "create", long]);
    server.json(&["namespace", "create", "other"]);
    server.deploy("a-service-with-a-long-name-too", &app, &[]);
    server.json(&["deploy", "web", app.to_str().unwrap(), "-n", long]);
    server.json(&["deploy", "hidden", app.to_str().unwrap(), "-n", "other"]);

    let table = server.cli(&["services", "-A"]).stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAMESPACE"), "{table}");
    assert_eq!(lines.len(), 4, "{table}");
    let url_column = lines[0].find("URL").unwrap();
    for line in &lines[1..] {
        assert_eq!(
            line.find("http://").unwrap(),
            url_column,
            "every URL starts under its header:\n{table}"
        );
    }
    let json = server.json(&["services", "-A"]);
    let names: Vec<(&str, &str)> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["namespace"].as_str().unwrap(), s["name"].as_str().unwrap()))
        .collect();
    assert_eq!(names.len(), 3, "{json}");
    assert!(names.contains(&(long, "web")));

    // A token of one namespace sees that one alone.
    let token = token_of(&server, "viewer", &format!("viewer={long}"), &[]);
    let seen = Command::new(BIN)
        .args(["services", "-A", "-o", "json"])
        .env("UPDRAFT_API", &server.api)
        .env("UPDRAFT_TOKEN", &token)
        .env("UPDRAFT_CONFIG", server.dir.path().join("none.yaml"))
        .output()
        .unwrap();
    assert!(seen.status.success(), "{}", String::from_utf8_lossy(&seen.stderr));
    let seen: serde_json::Value = serde_json::from_slice(&seen.stdout).unwrap();
    let namespaces: Vec<&str> = seen
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(namespaces, [long]);

    let secrets = server.cli(&["secret", "list", "-A"]);
    assert_eq!(secrets.code, 0, "{}", secrets.stderr);
    assert!(secrets.stdout.starts_with("NAMESPACE"), "{}", secrets.stdout);
    assert!(server.cli(&["triggers", "-A"]).stdout.starts_with("NAMESPACE"));
    assert!(server.cli(&["brokers", "-A"]).stdout.starts_with("NAMESPACE"));
}
