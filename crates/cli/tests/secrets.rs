//! Secrets against the real server: sealed at rest under a key file only the server
//! reads, shown as their keys only, read as variables by the instances of their own
//! namespace (`--env-secret`, Knative's `secretKeyRef`), and refused clearly when
//! named wrong.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;

const VALUE: &str = "hunter2-correct-horse-battery";

/// Every file under `dir` holding `needle`, so a value at rest anywhere is found.
fn files_holding(dir: &std::path::Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else { continue };
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file()
                && std::fs::read(&path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
            {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

#[test]
fn secrets_are_sealed_shown_as_keys_and_read_by_their_instances() {
    let server = Server::start(&[]);
    let key = std::fs::metadata(server.data.join("secret.key")).unwrap();
    assert_eq!(key.permissions().mode() & 0o777, 0o600, "the key is the server's alone");
    assert_eq!(key.len(), 32);

    let ca = server.dir.path().join("ca.pem");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
    let created = server.json(&[
        "secret",
        "create",
        "default/db",
        "--from-literal",
        &format!("password={VALUE}"),
        "--from-file",
        ca.to_str().unwrap(),
    ]);
    assert_eq!(created["keys"], serde_json::json!(["ca.pem", "password"]), "{created}");
    let again = server.cli(&["secret", "create", "db", "--from-literal", "password=x"]);
    assert_ne!(again.code, 0);
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    let listed = server.cli(&["secret", "list"]);
    assert!(listed.stdout.contains("ca.pem,password"), "{}", listed.stdout);
    assert!(!listed.stdout.contains(VALUE));

    let (_app_dir, app) = fixture("python");
    server.deploy("app", &app, &["--env-secret", "DB_PASSWORD=db/password"]);
    assert_eq!(server.get("app", "/env/DB_PASSWORD").body, VALUE);

    // What the platform shows names the secret, never its value.
    let manifest = server.cli(&["get", "service", "app", "-o", "yaml"]).stdout;
    assert!(manifest.contains("secretKeyRef"), "{manifest}");
    for args in [
        &["get", "service", "app", "-o", "yaml"][..],
        &["service", "app", "--output", "json"],
        &["revisions", "app", "--output", "json"],
        &["secret", "list", "--output", "json"],
        &["logs", "app"],
    ] {
        let out = server.cli(args);
        assert!(!out.stdout.contains(VALUE), "{args:?} shows the value: {}", out.stdout);
    }
    assert!(!server.log().contains(VALUE));
    // At rest only ciphertext: the database, its journal, the revision's files.
    assert_eq!(files_holding(&server.data, VALUE.as_bytes()), Vec::<String>::new());

    // A replaced secret (all its keys) reaches the instances started after it.
    server.json(&[
        "secret",
        "create",
        "db",
        "--replace",
        "--from-literal",
        "password=rotated",
        "--from-file",
        &format!("ca.pem={}", ca.display()),
    ]);
    server.json(&["update", "app", "--env", "TOUCH=1"]);
    assert_eq!(server.get("app", "/env/DB_PASSWORD").body, "rotated");

    // A secret a service reads cannot go; a wrong reference is refused and changes nothing.
    let busy = server.cli(&["secret", "delete", "db"]);
    assert_ne!(busy.code, 0);
    assert!(busy.stderr.contains("read by service app"), "{}", busy.stderr);
    let missing = server.cli(&["deploy", "other", app.to_str().unwrap(), "--env-secret", "X=db/nope"]);
    assert_ne!(missing.code, 0);
    assert!(
        missing.stderr.contains("X comes from key \"nope\" of secret \"db\""),
        "{}",
        missing.stderr
    );
    let services = server.json(&["services"]);
    assert_eq!(services.as_array().unwrap().len(), 1, "{services}");

    // Knative's secretKeyRef in a manifest.
    let manifest = server.dir.path().join("svc.yaml");
    let current: serde_json::Value =
        serde_json::from_str(&server.cli(&["get", "service", "app", "-o", "json"]).stdout).unwrap();
    let image = current["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: applied\nspec:\n  template:\n    spec:\n      containers:\n        - image: {image}\n          env:\n            - name: FROM_REF\n              valueFrom:\n                secretKeyRef: {{name: db, key: ca.pem}}\n"
        ),
    )
    .unwrap();
    server.json(&["apply", "-f", manifest.to_str().unwrap()]);
    assert_eq!(
        server.get("applied", "/env/FROM_REF").body,
        "-----BEGIN CERTIFICATE-----\n"
    );

    // Another namespace has its own secrets: it cannot read these.
    server.json(&["namespace", "create", "team"]);
    let elsewhere = server.cli(&[
        "deploy",
        "thief",
        app.to_str().unwrap(),
        "-n",
        "team",
        "--env-secret",
        "X=db/password",
    ]);
    assert_ne!(elsewhere.code, 0);
    assert!(
        elsewhere.stderr.contains("which namespace \"team\" does not have"),
        "{}",
        elsewhere.stderr
    );
    let developer = server.json(&["token", "create", "dev", "--grant", "developer=team"])["token"]
        .as_str()
        .unwrap()
        .to_string();
    let theirs = server.api_as(&developer, "GET", "/v1/namespaces/default/secrets", &[], b"");
    assert_eq!(theirs.status, 403, "{}", theirs.body);

    // Bad input names the field, and changes nothing (the server refuses it: exit 1).
    for (args, field) in [
        (vec!["secret", "create", "Bad_Name", "--from-literal", "k=v"], "name"),
        (vec!["secret", "create", "fine", "--from-literal", "a/b=v"], "data[a/b]"),
    ] {
        let out = server.cli(&args);
        assert_eq!(out.code, 1, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(field), "{args:?}: {}", out.stderr);
    }
    let out = server.cli(&["secret", "create", "empty"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let out = server.cli(&["update", "app", "--env-secret", "X=no-slash"]);
    assert!(out.stderr.contains("env_secrets.X"), "{}", out.stderr);
    let not_base64 = server.api_call(
        "PUT",
        "/v1/namespaces/default/secrets/db",
        &[("content-type", "application/json")],
        br#"{"data": {"password": "not base64!"}}"#,
    );
    assert_eq!(not_base64.status, 400, "{}", not_base64.body);
    assert!(not_base64.body.contains("data[password]"), "{}", not_base64.body);
    let names: Vec<String> = server
        .json(&["secret", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["db"]);

    // Once nothing reads it, it goes.
    server.json(&["delete", "app"]);
    server.json(&["delete", "applied"]);
    server.json(&["secret", "delete", "db"]);
    assert!(server.json(&["secret", "list"]).as_array().unwrap().is_empty());
}

#[test]
fn a_key_file_others_can_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("secret.key");
    std::fs::write(&key, [7u8; 32]).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_updraft"))
        .current_dir(dir.path())
        .args(["server", "--data-dir", "data", "--secret-key-file"])
        .arg(&key)
        .args(["--gateway-addr", "127.0.0.1:0", "--api-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("chmod 600"), "{stderr}");
}
