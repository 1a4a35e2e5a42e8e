//! Real clients read what Updraft writes and write what it reads: the CloudEvents
//! Python SDK on both sides of the broker.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn the_cloudevents_python_sdk_round_trips_non_ascii_attributes_through_the_broker() {
    let server = Server::start(&[]);
    let deps = python_test_deps();
    let events = server.dir.path().join("events.jsonl");
    let app = server.dir.path().join("subscriber");
    std::fs::create_dir(&app).unwrap();
    std::fs::copy(fixtures().join("interop/subscriber.py"), app.join("main.py")).unwrap();
    // Vendored into the package, as a user would: the sandboxed app sees nothing of
    // this machine's folders but its own package.
    for module in ["cloudevents", "deprecation.py", "packaging", "dateutil", "six.py"] {
        copy_tree(&deps.join(module), &app.join(module));
    }
    server.deploy(
        "sub",
        &app,
        &["--env", &format!("EVENTS_SOCKET={}", common::record_events(&events))],
    );
    // The filter compares decoded values: only the Zürich events match.
    let out = server.cli(&[
        "trigger",
        "event",
        "visits",
        "--filter",
        "type=visit",
        "--filter",
        "city=Zürich",
        "--target",
        "sub",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);

    let ingress = format!("{}/v1/namespaces/default/brokers/default/events", server.api);
    let sent = Command::new("python3")
        .arg(fixtures().join("interop/producer.py"))
        .arg(&ingress)
        .arg(server.admin_token())
        .env("PYTHONPATH", &deps)
        .output()
        .unwrap();
    assert!(sent.status.success(), "{}", String::from_utf8_lossy(&sent.stderr));
    // Some senders put raw UTF-8 in headers; it is read as the text it is.
    let path = "/v1/namespaces/default/brokers/default/events";
    let raw = server.api_call(
        "POST",
        path,
        &[
            ("ce-specversion", "1.0"),
            ("ce-id", "raw"),
            ("ce-type", "visit"),
            ("ce-source", "/raw"),
            ("ce-city", "Zürich"),
        ],
        b"",
    );
    assert_eq!(raw.status, 202, "{}", raw.body);

    wait_events(&events, "three deliveries", Duration::from_secs(20), |e| e.len() >= 3);
    // Time for a wrongly matched fourth to arrive too.
    std::thread::sleep(Duration::from_millis(500));
    let seen = recorded_events(&events);
    assert_eq!(seen.len(), 3, "only the Zürich events match the filter: {seen:#?}");
    for record in &seen {
        assert_eq!(record["city"], "Zürich", "{record}");
    }
    let subject = |id: &str| seen.iter().find(|r| r["id"] == id).unwrap()["subject"].clone();
    assert_eq!(subject("sdk-binary"), "Euro € 😀");
    assert_eq!(subject("sdk-structured"), "Euro € 😀");

    // What receivers' SDKs refuse is refused at the door.
    let bad = server.api_call(
        "POST",
        path,
        &[
            ("ce-specversion", "1.0"),
            ("ce-id", "bad"),
            ("ce-type", "visit"),
            ("ce-source", "/raw"),
            ("ce-bad_ext", "x"),
        ],
        b"",
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(
        bad.body
            .contains(r#"extension name \"bad_ext\" must be lower-case letters (a-z) and digits (0-9) only"#),
        "{}",
        bad.body
    );
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap().flatten() {
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::copy(from, to).unwrap();
    }
}
