//! Knative manifests in and out: the examples from Knative's documentation apply as
//! they are (with a code package for the image), apply twice changes nothing, get
//! round-trips, and every invalid manifest is refused with its field path.

mod common;

use common::*;
use std::path::{Path, PathBuf};

fn knative(name: &str) -> PathBuf {
    fixtures().join("knative").join(name)
}

fn apply(server: &Server, file: &Path) -> serde_json::Value {
    let out = server.json(&["apply", "-f", file.to_str().unwrap()]);
    assert_eq!(out.as_array().unwrap().len(), 1, "{out}");
    out[0].clone()
}

#[test]
fn knative_doc_examples_apply_and_round_trip() {
    let server = Server::start(&[]);
    let created = apply(&server, &knative("hello.yaml"));
    assert_eq!(created["result"], "created");
    assert_eq!(created["revision"], "hello-00001");
    assert_eq!(server.get("hello", "/hello").body, "Hello World!");

    let again = apply(&server, &knative("hello.yaml"));
    assert_eq!(again["result"], "unchanged");
    assert!(again["revision"].is_null());
    let table = server.cli(&["apply", "-f", knative("hello.yaml").to_str().unwrap()]);
    assert!(table.stdout.contains("service/hello unchanged"), "{}", table.stdout);

    // The traffic splitting example: a second revision, half the traffic each.
    let split = apply(&server, &knative("traffic-split.yaml"));
    assert_eq!(split["revision"], "hello-00002");
    let mut greetings = std::collections::BTreeMap::new();
    for _ in 0..100 {
        *greetings.entry(server.get("hello", "/hello").body).or_insert(0) += 1;
    }
    assert_eq!(greetings["Hello World!"], 50, "{greetings:?}");
    assert_eq!(greetings["Hello Knative!"], 50, "{greetings:?}");

    // Tags: current keeps everything, latest has its own URL.
    let tagged = apply(&server, &knative("tags.yaml"));
    assert_eq!(tagged["result"], "configured");
    assert!(tagged["revision"].is_null(), "a traffic change makes no revision");
    assert_eq!(server.get("hello", "/hello").body, "Hello World!");
    let latest = server
        .request("GET", "latest-hello.default.localhost", "/hello", &[], b"")
        .unwrap();
    assert_eq!(latest.body, "Hello Knative!");
    let current = server
        .request("GET", "current-hello.default.localhost", "/hello", &[], b"")
        .unwrap();
    assert_eq!(current.body, "Hello World!");

    // get -o yaml, applied back, changes nothing.
    let out = server.cli(&["get", "service", "hello", "-o", "yaml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("apiVersion: serving.knative.dev/v1"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("latestReadyRevisionName: hello-00002"),
        "{}",
        out.stdout
    );
    let dir = tempfile::tempdir().unwrap();
    let round = dir.path().join("hello.yaml");
    std::fs::write(&round, &out.stdout).unwrap();
    let back = apply(&server, &round);
    assert_eq!(back["result"], "unchanged", "{back}");
    assert_eq!(server.json(&["revisions", "hello"]).as_array().unwrap().len(), 2);
    let json = server.cli(&["get", "service", "hello", "-o", "json"]);
    let parsed: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(parsed["spec"]["traffic"][0]["tag"], "current");

    // For a Knative cluster: no status, and the package needs an image.
    let out = server.cli(&["get", "service", "hello", "-o", "yaml", "--knative"]);
    assert!(!out.stdout.contains("status:"), "{}", out.stdout);
    assert!(
        out.stdout.contains("# hello-00002 runs Updraft code package sha256:"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("image: registry.example.com/default/hello:hello-00002"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("image: package:"), "{}", out.stdout);

    // The autoscaling example's annotations are kept on the revision.
    let scaled = apply(&server, &knative("autoscale.yaml"));
    assert_eq!(scaled["revision"], "autoscale-go-00001");
    let revisions = server.json(&["revisions", "autoscale-go"]);
    let annotations = &revisions[0]["annotations"];
    assert_eq!(annotations["autoscaling.knative.dev/target"], "10");
    assert_eq!(annotations["autoscaling.knative.dev/max-scale"], "3");
    assert_eq!(
        revisions[0]["scale_to_zero_after"], "40s",
        "the window sets the idle time"
    );
}

#[test]
fn a_folder_with_several_documents_applies_in_one_go_and_a_readiness_path_is_honoured() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app");
    copy_fixture("python", &app);
    std::fs::write(
        dir.path().join("services.yaml"),
        "apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: first}
spec:
  template:
    metadata: {name: first-blue}
    spec:
      containers: [{image: package:./app}]
---
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: warm
  annotations: {serving.knative.dev/rollout-duration: 30s}
spec:
  template:
    spec:
      timeoutSeconds: 30
      responseStartTimeoutSeconds: 1
      containers:
        - image: package:./app
          command: [python3, main.py]
          env: [{name: READY_DELAY, value: '1.0'}]
          readinessProbe:
            httpGet: {path: /ready}
",
    )
    .unwrap();
    let out = server.json(&["apply", "-f", dir.path().to_str().unwrap()]);
    assert_eq!(
        out[0]["revision"], "first-blue",
        "the template's name is the revision's"
    );
    assert_eq!(out[1]["revision"], "warm-00001");
    // The instance listened at once but answered 503 on /ready for a second: only after
    // that was the deploy done, so the first request is served.
    assert_eq!(server.get("warm", "/hello").status, 200);
    let warm = server.json(&["service", "warm"]);
    assert_eq!(
        warm["revisions"][0]["command"],
        serde_json::json!(["python3", "main.py"])
    );
    assert_eq!(warm["annotations"]["serving.knative.dev/rollout-duration"], "30s");
    // The response must start within a second; a stream that starts at once may go on.
    let late = server.get("warm", "/slow");
    assert_eq!(late.status, 504, "{}", late.body);
    assert!(
        late.body.contains("within 1s (responseStartTimeoutSeconds)"),
        "{}",
        late.body
    );
    assert_eq!(server.get("warm", "/stream").status, 200);

    // Renaming an unchanged template is a new revision; reusing a name for a change is not.
    let manifest = std::fs::read_to_string(dir.path().join("services.yaml")).unwrap();
    let first_only = manifest.split("---").next().unwrap().to_string();
    std::fs::write(
        dir.path().join("services.yaml"),
        first_only.replace(
            "containers: [{image: package:./app}]",
            "containers: [{image: package:./app, env: [{name: A, value: b}]}]",
        ),
    )
    .unwrap();
    let out = server.cli(&["apply", "-f", dir.path().to_str().unwrap()]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stderr.contains("spec.template.metadata.name"), "{}", out.stderr);
    assert_eq!(server.json(&["revisions", "first"]).as_array().unwrap().len(), 1);
}

fn copy_fixture(name: &str, to: &Path) {
    let (_tmp, app) = fixture(name);
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(&app).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn invalid_manifests_are_refused_with_their_field_path_and_change_nothing() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    copy_fixture("python", &dir.path().join("app"));
    let base = "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: bad\n";
    let container = "      containers:\n        - image: package:./app\n";
    let cases: Vec<(String, &str, &str)> = vec![
        (
            format!("{base}spec:\n  template:\n    spec:\n{container}          livenessProbe:\n            exec: {{command: [true]}}\n"),
            "spec.template.spec.containers[0].livenessProbe.exec",
            "unknown or unsupported field",
        ),
        (
            format!("{base}spec:\n  template:\n    spec:\n      containers:\n        - image: ghcr.io/Knative/helloworld-go:latest\n"),
            "spec.template.spec.containers[0].image",
            "is not an image reference",
        ),
        (
            format!("{base}spec:\n  template:\n    spec:\n{container}  traffic:\n    - latestRevision: true\n      percent: 90\n"),
            "spec.traffic",
            "add up to 90",
        ),
        (
            format!("{base}spec:\n  template:\n    metadata:\n      annotations:\n        autoscaling.knative.dev/minScal: \"1\"\n    spec:\n{container}"),
            "spec.template.metadata.annotations[autoscaling.knative.dev/minScal]",
            "unknown autoscaling annotation",
        ),
        (
            format!("{base}spec:\n  template:\n    spec:\n{container}          ports:\n            - containerPort: http\n"),
            "spec.template.spec.containers[0].ports[0].containerPort",
            "invalid type",
        ),
        (
            format!("{base}spec:\n  template:\n    spec:\n{container}        - image: package:./app\n"),
            "spec.template.spec.containers",
            "exactly one",
        ),
        (
            format!("{base}spec:\n  template:\n    spec:\n      timeoutSeconds: 900\n{container}"),
            "spec.template.spec.timeoutSeconds",
            "between 1 and 600",
        ),
        (
            format!("{base}spec:\n  template:\n    spec:\n{container}          env:\n            - name: PORT\n              value: \"1\"\n"),
            "spec.template.spec.containers[0].env[PORT]",
            "set by the platform",
        ),
        (
            format!("{base}spec:\n  template:\n    spec:\n      containers:\n        - image: package:./missing\n"),
            "spec.template.spec.containers[0].image",
            "does not exist",
        ),
        (
            "apiVersion: serving.knative.dev/v1\nkind: Route\nmetadata: {name: r}\nspec: {}\n".to_string(),
            "apiVersion/kind",
            "not supported",
        ),
    ];
    for (i, (text, field, reason)) in cases.iter().enumerate() {
        // A valid document first: the whole file is refused before anything is applied.
        let good = format!("{base}spec:\n  template:\n    spec:\n{container}").replace("name: bad", "name: good");
        let file = dir.path().join(format!("case{i}.yaml"));
        std::fs::write(&file, format!("{good}---\n{text}")).unwrap();
        let out = server.cli(&["apply", "-f", file.to_str().unwrap()]);
        assert_eq!(out.code, 1, "case {i} was accepted: {text}");
        assert!(out.stderr.contains("document 2"), "case {i}: {}", out.stderr);
        assert!(
            out.stderr.contains(field),
            "case {i}: expected {field:?} in {}",
            out.stderr
        );
        assert!(
            out.stderr.contains(reason),
            "case {i}: expected {reason:?} in {}",
            out.stderr
        );
    }
    assert_eq!(server.json(&["services"]), serde_json::json!([]));
    let blobs = std::fs::read_dir(server.data.join("blobs/sha256"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(blobs, 0, "nothing was uploaded");

    // The server checks the same rules for API clients that skip the CLI.
    let body = format!("{base}spec:\n  template:\n    spec:\n      containers:\n        - image: package:sha256:xyz\n");
    let r = server.api_call(
        "POST",
        "/v1/apply",
        &[("content-type", "application/yaml")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("spec.template.spec.containers[0].image"), "{}", r.body);

    // Every invalid field of a document is reported at once, by the CLI and the API.
    let many = format!(
        "{base}spec:\n  template:\n    spec:\n      timeoutSeconds: 900\n{container}          stdin: true\n          resources: {{limits: {{memory: lots}}}}\n"
    );
    let file = dir.path().join("many.yaml");
    std::fs::write(&file, &many).unwrap();
    let out = server.cli(&["apply", "-f", file.to_str().unwrap()]);
    assert_eq!(out.code, 1);
    let fields = [
        "spec.template.spec.containers[0].stdin",
        "spec.template.spec.containers[0].resources.limits.memory",
        "spec.template.spec.timeoutSeconds",
    ];
    for field in fields {
        assert!(out.stderr.contains(field), "{field} in {}", out.stderr);
    }
    let r = server.api_call(
        "POST",
        "/v1/apply",
        &[("content-type", "application/yaml")],
        many.replace(
            "image: package:./app",
            &format!("image: package:{}", "sha256:".to_string() + &"a".repeat(64)),
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    for field in fields {
        assert!(r.body.contains(field), "{field} in {}", r.body);
    }
    assert_eq!(server.json(&["services"]), serde_json::json!([]));
}
