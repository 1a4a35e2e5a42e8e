//! Every bad input gets a clear error and changes nothing.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

fn tar_entry(kind: tar::EntryType, name: &str, link: Option<&str>, data: &[u8]) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    // Written byte by byte: the tar crate's setters refuse the hostile names we need.
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    if let Some(link) = link {
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_cksum();
    h
}

/// A .tar.gz with a valid main.py plus the given entries.
fn archive(dir: &Path, file: &str, entries: &[(tar::EntryType, &str, Option<&str>, &[u8])]) -> PathBuf {
    let path = dir.join(file);
    let gz = flate2::write::GzEncoder::new(std::fs::File::create(&path).unwrap(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(gz);
    let main = std::fs::read(fixtures().join("python/main.py")).unwrap();
    builder
        .append(&tar_entry(tar::EntryType::Regular, "main.py", None, &main), &main[..])
        .unwrap();
    for (kind, name, link, data) in entries {
        builder.append(&tar_entry(*kind, name, *link, data), *data).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap();
    path
}

fn assert_refused(server: &Server, package: &Path, expect: &str) {
    let out = server.cli(&["deploy", "bad", package.to_str().unwrap()]);
    assert_eq!(
        out.code,
        1,
        "deploy of {} should fail: {}{}",
        package.display(),
        out.stdout,
        out.stderr
    );
    assert!(out.stderr.contains(expect), "expected {expect:?} in: {}", out.stderr);
}

fn assert_nothing_stored(server: &Server) {
    assert_eq!(server.json(&["services"]), serde_json::json!([]));
    let files = |dir: &str| std::fs::read_dir(server.data.join(dir)).map(|d| d.count()).unwrap_or(0);
    assert_eq!(files("blobs/sha256"), 0, "no package blob may stay");
    assert_eq!(files("revisions/default"), 0, "no unpacked revision may stay");
    assert_eq!(files("tmp"), 0, "no staging files may stay");
}

#[test]
fn hostile_and_broken_packages_are_refused_and_leave_nothing() {
    let server = Server::start(&["--max-package-size", "4Mi", "--max-unpacked-size", "16Mi"]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    use tar::EntryType::*;

    assert_refused(
        &server,
        &archive(dir, "parent.tgz", &[(Regular, "../evil", None, b"x")]),
        "\"../evil\": '..' is not allowed",
    );
    assert_refused(
        &server,
        &archive(dir, "abs.tgz", &[(Regular, "/etc/evil", None, b"x")]),
        "absolute paths are not allowed",
    );
    assert_refused(
        &server,
        &archive(dir, "symabs.tgz", &[(Symlink, "passwd", Some("/etc/passwd"), b"")]),
        "links to absolute path /etc/passwd",
    );
    assert_refused(
        &server,
        &archive(dir, "symrel.tgz", &[(Symlink, "up", Some("../../etc"), b"")]),
        "outside the package",
    );
    assert_refused(
        &server,
        &archive(dir, "hard.tgz", &[(Link, "shadow", Some("/etc/shadow"), b"")]),
        "absolute paths are not allowed",
    );
    assert_refused(
        &server,
        &archive(dir, "dev.tgz", &[(Char, "null", None, b"")]),
        "device files are not allowed",
    );
    assert_refused(
        &server,
        &archive(dir, "fifo.tgz", &[(Fifo, "pipe", None, b"")]),
        "named pipes are not allowed",
    );

    // A zip bomb: 64 MiB of zeros compresses to a few KiB.
    let zeros = vec![0u8; 64 << 20];
    let bomb = archive(dir, "bomb.tgz", &[(Regular, "zeros", None, &zeros)]);
    assert!(std::fs::metadata(&bomb).unwrap().len() < 1 << 20);
    assert_refused(&server, &bomb, "expands past the limit");

    let mut big = Vec::with_capacity(5 << 20);
    let mut x: u64 = 88172645463325252;
    while big.len() < 5 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        big.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(dir.join("big.tar.gz"), &big).unwrap();
    assert_refused(&server, &dir.join("big.tar.gz"), "larger than the limit");

    let mut corrupt = std::fs::read(archive(dir, "ok.tgz", &[])).unwrap();
    corrupt.truncate(corrupt.len() / 2);
    std::fs::write(dir.join("corrupt.tgz"), &corrupt).unwrap();
    assert_refused(&server, &dir.join("corrupt.tgz"), "corrupt");
    std::fs::write(dir.join("notes.txt"), "just text").unwrap();
    assert_refused(&server, &dir.join("notes.txt"), "not a .tar.gz, .tar or .zip archive");

    assert_nothing_stored(&server);
}

#[test]
fn bad_deploys_are_refused_with_the_field_and_change_nothing() {
    let server = Server::start(&[]);
    let (tmp, app) = fixture("python");
    let path = app.to_str().unwrap();

    let out = server.cli(&["deploy", "Hello_World", path]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("name: \"Hello_World\" must be a DNS-1035 label"),
        "{}",
        out.stderr
    );

    let out = server.cli(&["deploy", "hello", path, "-n", "nope"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr.contains("namespace \"nope\" does not exist"),
        "{}",
        out.stderr
    );

    let out = server.cli(&["deploy", "hello", path, "--memory", "lots"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("memory: \"lots\" is not a memory quantity"),
        "{}",
        out.stderr
    );

    let out = server.cli(&["deploy", "hello", path, "--env", "PORT=1"]);
    assert!(
        out.stderr.contains("env.PORT: PORT is set by the platform"),
        "{}",
        out.stderr
    );

    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join("README.md"), "nothing to run").unwrap();
    let out = server.cli(&["deploy", "hello", empty.to_str().unwrap()]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("no command found; looked for updraft.yaml"),
        "{}",
        out.stderr
    );

    let broken_yaml = tmp.path().join("yaml");
    std::fs::create_dir(&broken_yaml).unwrap();
    std::fs::write(broken_yaml.join("updraft.yaml"), "run: x\nreplicas: 3\n").unwrap();
    let out = server.cli(&["deploy", "hello", broken_yaml.to_str().unwrap()]);
    assert!(
        out.stderr.contains("updraft.yaml: unknown field `replicas`"),
        "{}",
        out.stderr
    );

    let crasher = tmp.path().join("crash");
    std::fs::create_dir(&crasher).unwrap();
    std::fs::write(
        crasher.join("main.py"),
        "import sys\nprint('boom: missing config', file=sys.stderr)\nsys.exit(3)\n",
    )
    .unwrap();
    let out = server.cli(&["deploy", "hello", crasher.to_str().unwrap()]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("revision hello-00001 failed to start: instance exited with code 3"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("boom: missing config"), "{}", out.stderr);

    assert_nothing_stored(&server);
    assert_eq!(server.cli(&["service", "hello"]).code, 3);

    // A broken new version leaves the serving one as it was.
    server.deploy("hello", &app, &[]);
    let out = server.cli(&["deploy", "hello", crasher.to_str().unwrap()]);
    assert!(out.stderr.contains("hello-00002 failed to start"), "{}", out.stderr);
    assert_eq!(server.get("hello", "/").body, "python hello-00001 /");
    assert_eq!(
        server.json(&["service", "hello"])["revisions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let logs = server.cli(&["logs", "hello"]).stdout;
    assert!(
        !logs.contains("boom"),
        "a failed revision's logs are not the service's: {logs}"
    );
}

#[test]
fn api_bodies_are_validated_with_field_paths() {
    let server = Server::start(&[]);
    let put = |body: &str| {
        server.api_call(
            "PUT",
            "/v1/namespaces/default/services/hello",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
    };

    let r = put(r#"{"package": "sha256:00", "replicas": 3}"#);
    assert_eq!(r.status, 400);
    let error: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(error["error"]["field"], "body");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `replicas`"),
        "{}",
        r.body
    );

    let r = put(r#"{"package": "sha256:00"}"#);
    let error: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        (r.status, &error["error"]["field"]),
        (400, &serde_json::json!("package"))
    );

    let digest = format!("sha256:{}", "a".repeat(64));
    let r = put(&format!(r#"{{"package": "{digest}"}}"#));
    assert_eq!(r.status, 400);
    assert!(r.body.contains("upload it first"), "{}", r.body);

    // The server refuses a declared oversize at once, before reading the body.
    let server_with_limit = Server::start(&["--max-package-size", "4Mi"]);
    let mut stream = std::net::TcpStream::connect(server_with_limit.api_addr()).unwrap();
    let head = format!(
        "POST /v1/packages HTTP/1.0\r\nHost: api\r\nAuthorization: Bearer {}\r\nContent-Length: 5242880\r\n\r\n",
        server_with_limit.admin_token()
    );
    std::io::Write::write_all(&mut stream, head.as_bytes()).unwrap();
    let mut reply = String::new();
    std::io::Read::read_to_string(&mut stream, &mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.0 413"), "{reply}");
    assert!(reply.contains("larger than the limit of 4194304 bytes"), "{reply}");

    let r = server.api_call("POST", "/v1/packages", &[], b"");
    assert_eq!(r.status, 400);
    assert!(r.body.contains("the upload is empty"), "{}", r.body);
    assert_eq!(server.json(&["services"]), serde_json::json!([]));
}

#[test]
fn deeply_nested_manifests_are_refused_at_once_while_the_gateway_serves() {
    let server = Server::start(&[]);
    let (tmp, app) = fixture("python");
    server.deploy("hello", &app, &[]);
    let api = server.api_addr();
    let bearer = format!("Bearer {}", server.admin_token());
    // 100,000 levels each: libyaml alone spends seconds of CPU on such a document.
    let bodies = ["[".repeat(100_000), "{a: ".repeat(100_000)];
    let posts: Vec<_> = bodies
        .into_iter()
        .map(|body| {
            let bearer = bearer.clone();
            std::thread::spawn(move || {
                http(
                    api,
                    "POST",
                    "api",
                    "/v1/apply",
                    &[("Authorization", &bearer)],
                    body.as_bytes(),
                )
                .unwrap()
            })
        })
        .collect();
    for _ in 0..20 {
        assert_eq!(server.get("hello", "/").status, 200, "the gateway serves meanwhile");
    }
    for post in posts {
        let r = post.join().unwrap();
        assert_eq!(r.status, 400, "{}", r.body);
        assert!(r.body.contains("deeper than 64 levels at line 1"), "{}", r.body);
    }

    let deep = tmp.path().join("deep.yaml");
    std::fs::write(&deep, format!("apiVersion: {}", "[".repeat(1000))).unwrap();
    let out = server.cli(&["apply", "-f", deep.to_str().unwrap()]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("deeper than 64 levels"), "{}", out.stderr);

    // A device is read no further than the largest manifest.
    let out = server.cli(&["apply", "-f", "/dev/zero"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("/dev/zero: is larger than 2 MiB, the most a manifest may be"),
        "{}",
        out.stderr
    );
    assert_eq!(server.json(&["services"]).as_array().unwrap().len(), 1);
}

#[test]
fn env_values_exec_cannot_take_are_refused_before_anything_starts() {
    let server = Server::start(&[]);
    let (tmp, app) = fixture("python");
    let package = server.cli(&["deploy", "hello", app.to_str().unwrap(), "--env", "A=fine"]);
    assert_eq!(package.code, 0, "{}", package.stderr);
    let r = server.api_call(
        "PUT",
        "/v1/namespaces/default/services/hello",
        &[("Content-Type", "application/json")],
        br#"{"env": {"B": "before\u0000after"}}"#,
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let error: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(error["error"]["field"], "env.B");
    assert!(
        error["error"]["message"].as_str().unwrap().contains("NUL"),
        "{}",
        r.body
    );

    let manifest = tmp.path().join("nul.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: other\nspec:\n  template:\n    spec:\n      containers:\n        - image: package:{}\n          env:\n            - name: B\n              value: \"a\\0b\"\n",
            app.display()
        ),
    )
    .unwrap();
    let out = server.cli(&["apply", "-f", manifest.to_str().unwrap()]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("spec.template.spec.containers[0].env[B]: contains a NUL byte"),
        "{}",
        out.stderr
    );
    let service = server.json(&["service", "hello"]);
    assert_eq!(service["revisions"].as_array().unwrap().len(), 1, "{service}");
    assert_eq!(server.cli(&["service", "other"]).code, 3);
}

#[test]
fn a_request_past_the_api_time_budget_is_answered_and_its_deploy_carries_on() {
    let server = Server::start(&["--api-timeout", "1s"]);
    let (_tmp, app) = fixture("python");
    // The CLI watches its deploy: the steps stream past the budget to the outcome.
    let out = server.cli(&["deploy", "late", app.to_str().unwrap(), "--env", "START_DELAY=3"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("ready: late-00001 is ready"), "{}", out.stderr);

    // A plain request is answered within the budget, and its deploy goes on.
    let slow = br#"{"env": {"START_DELAY": "3", "AGAIN": "1"}}"#;
    let r = server.api_call(
        "PUT",
        "/v1/namespaces/default/services/late",
        &[("content-type", "application/json")],
        slow,
    );
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("longer than the API's time budget of 1s"), "{}", r.body);
    let service = server.wait_service("late", "the deploy to finish", Duration::from_secs(30), |s| {
        s["latest_revision"] == "late-00002" && ready(s) >= 1
    });
    assert_eq!(service["latest_revision"], "late-00002");
}

#[test]
fn names_that_are_no_names_and_oversize_uploads_are_refused_plainly() {
    let server = Server::start(&["--max-package-size", "4Mi"]);
    let (tmp, app) = fixture("python");
    for (args, field) in [
        (vec!["deploy", "../x", app.to_str().unwrap()], "name: \"../x\""),
        (vec!["deploy", "a/b", app.to_str().unwrap()], "name: \"a/b\""),
        (vec!["service", "x", "-n", "../.."], "namespace: \"../..\""),
    ] {
        let out = server.cli(&args);
        assert_eq!(out.code, 1, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains(field) && out.stderr.contains("DNS-1"),
            "{args:?}: {}",
            out.stderr
        );
    }
    let r = server.api_call("GET", "/v1/nothing/here", &[], b"");
    assert_eq!(r.status, 404);
    assert!(
        r.body.contains("the API has no route GET /v1/nothing/here"),
        "{}",
        r.body
    );

    // The server would answer 413 and close mid-upload; the client says why first.
    let component = tmp.path().join("big.wasm");
    let mut bytes = b"\0asm\x0d\0\x01\0".to_vec();
    bytes.resize(5 << 20, 0);
    std::fs::write(&component, bytes).unwrap();
    let out = server.cli(&["deploy", "big", "--wasm", component.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("larger than the limit of 4194304 bytes (server flag --max-package-size)"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("cannot reach"), "{}", out.stderr);
}
