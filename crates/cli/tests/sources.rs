//! Event sources against real RabbitMQ, Redis and mosquitto servers: messages wake a
//! service at zero and arrive with stable ids; a failing subscriber gets its retries,
//! then the dead letter, and only then is the message acknowledged; `kill -9` of the
//! server mid-delivery loses nothing and acknowledges nothing undelivered; a source
//! that cannot work is refused and changes nothing.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{fixture, ready, recorded_events, wait_events, Daemon, Server};
use serde_json::Value;

fn ce<'a>(event: &'a Value, name: &str) -> &'a str {
    event["ce"][name].as_str().unwrap_or_default()
}

fn at_path<'a>(events: &'a [Value], path: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["path"] == path).collect()
}

fn ids(events: &[&Value]) -> BTreeSet<String> {
    events.iter().map(|e| ce(e, "id").to_string()).collect()
}

/// The recording subscriber, scaled to zero before anything is sent.
fn subscriber_at_zero(server: &Server) -> PathBuf {
    let events = server.dir.path().join("events.jsonl");
    let (_dir, app) = fixture("python");
    let env = format!("EVENTS_SOCKET={}", common::record_events(&events));
    server.deploy("sub", &app, &["--env", &env, "--scale-to-zero-after", "1s"]);
    server.wait_service("sub", "scale to zero", Duration::from_secs(20), |s| ready(s) == 0);
    events
}

/// Creates a source with `args`, delivering to the subscriber at `path`; `failing`
/// ones retry once and dead-letter to the subscriber's root.
fn create(server: &Server, args: &[&str], path: &str) {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--target", "sub", "--path", path]);
    if path == "/fail" {
        all.extend(["--retry", "1", "--backoff-delay", "100ms", "--dead-letter", "sub"]);
    }
    let out = server.cli(&all);
    assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
}

/// Three messages arrive once each with their ids; the failing one is tried twice,
/// then dead-lettered with the same id.
fn wait_orders_and_dead_letter(events: &Path) -> (BTreeSet<String>, String) {
    let seen = wait_events(events, "three orders and a dead letter", Duration::from_secs(60), |e| {
        ids(&at_path(e, "/orders")).len() >= 3 && !at_path(e, "/").is_empty()
    });
    let failing = at_path(&seen, "/fail");
    assert_eq!(failing.len(), 2, "the first attempt and one retry: {failing:#?}");
    let dead = at_path(&seen, "/");
    assert_eq!(dead.len(), 1, "{dead:#?}");
    let failed_id = ce(failing[0], "id").to_string();
    assert_eq!(ce(failing[1], "id"), failed_id);
    assert_eq!(ce(dead[0], "id"), failed_id, "the dead letter is the same event");
    (ids(&at_path(&seen, "/orders")), failed_id)
}

fn delivered_count(server: &Server, name: &str) -> u64 {
    let listed = server.json(&["triggers"]);
    let trigger = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no trigger {name}: {listed}"));
    trigger["deliveries"]["delivered"].as_u64().unwrap_or(0)
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Kills the server while slow deliveries are in flight, checks with `undelivered`
/// that the system still holds every message not recorded, restarts, and waits for
/// all `sent` ids.
fn kill_mid_delivery(server: &mut Server, events: &Path, sent: usize, undelivered: impl Fn() -> usize) {
    wait_events(events, "a slow delivery under way", Duration::from_secs(30), |e| {
        !at_path(e, "/slow").is_empty()
    });
    server.kill9();
    let recorded = ids(&at_path(&recorded_events(events), "/slow")).len();
    assert!(recorded < sent, "deliveries were still to come");
    // A message is acknowledged only after its delivery, so the system keeps at
    // least every one the subscriber has not seen.
    wait_until(
        "the system to take back what was in flight",
        Duration::from_secs(20),
        || undelivered() >= sent - recorded,
    );
    server.restart();
    wait_events(
        events,
        "every slow message after the restart",
        Duration::from_secs(60),
        |e| ids(&at_path(e, "/slow")).len() >= sent,
    );
}

fn rabbit_channel(runtime: &tokio::runtime::Runtime, port: u16) -> lapin::Channel {
    runtime.block_on(async {
        let connection = lapin::Connection::connect(
            &format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
            lapin::ConnectionProperties::default(),
        )
        .await
        .unwrap();
        let channel = connection.create_channel().await.unwrap();
        // The connection closes when dropped; the channel's tests outlive this block.
        std::mem::forget(connection);
        channel
    })
}

fn rabbit_publish(
    runtime: &tokio::runtime::Runtime,
    channel: &lapin::Channel,
    queue: &str,
    id: Option<&str>,
    body: &str,
) {
    runtime.block_on(async {
        let mut properties = lapin::BasicProperties::default().with_content_type("application/json".into());
        if let Some(id) = id {
            properties = properties.with_message_id(id.into());
        }
        channel
            .basic_publish(
                "".into(),
                queue.into(),
                lapin::options::BasicPublishOptions::default(),
                body.as_bytes(),
                properties,
            )
            .await
            .unwrap()
            .await
            .unwrap();
    });
}

/// Ready messages in a queue (not counting those delivered and not acknowledged).
fn rabbit_ready(runtime: &tokio::runtime::Runtime, port: u16, queue: &str) -> usize {
    let channel = rabbit_channel(runtime, port);
    runtime.block_on(async {
        let options = lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let declared = channel
            .queue_declare(queue.into(), options, lapin::types::FieldTable::default())
            .await
            .unwrap();
        declared.message_count() as usize
    })
}

#[test]
fn rabbitmq_messages_are_delivered_then_acknowledged_and_survive_kill_9() {
    let rabbit = Daemon::rabbitmq();
    let mut server = Server::start(&[]);
    let events = subscriber_at_zero(&server);
    let out = server.cli(&["secret", "create", "amqp", "--from-literal", "password=guest"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let url = format!("amqp://guest@127.0.0.1:{}/%2f", rabbit.port);
    let base = |name: &'static str, queue: &'static str| {
        vec![
            "source".to_string(),
            "rabbitmq".into(),
            name.into(),
            "--url".into(),
            url.clone(),
            "--password-secret".into(),
            "amqp/password".into(),
            "--queue".into(),
            queue.into(),
            "--declare".into(),
        ]
    };
    for (name, queue, path) in [("orders", "orders", "/orders"), ("broken", "broken", "/fail")] {
        let args = base(name, queue);
        create(&server, &args.iter().map(String::as_str).collect::<Vec<_>>(), path);
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let channel = rabbit_channel(&runtime, rabbit.port);
    rabbit_publish(&runtime, &channel, "orders", Some("order-1"), r#"{"order":1}"#);
    rabbit_publish(&runtime, &channel, "orders", Some("order-2"), r#"{"order":2}"#);
    // Without a message id, the content names the message.
    rabbit_publish(&runtime, &channel, "orders", None, r#"{"order":3}"#);
    rabbit_publish(&runtime, &channel, "broken", Some("bad-1"), "{}");
    let (orders, failed) = wait_orders_and_dead_letter(&events);
    assert!(orders.contains("order-1") && orders.contains("order-2"), "{orders:?}");
    assert_eq!(failed, "bad-1");
    let seen = recorded_events(&events);
    let first = at_path(&seen, "/orders")[0];
    assert_eq!(ce(first, "type"), "dev.knative.rabbitmq.event");
    assert!(
        ce(first, "source").ends_with("/rabbitmqsources/orders#orders"),
        "{first}"
    );
    wait_until(
        "orders and the dead-lettered message acknowledged",
        Duration::from_secs(20),
        || {
            rabbit_ready(&runtime, rabbit.port, "orders") == 0
                && rabbit_ready(&runtime, rabbit.port, "broken") == 0
                && delivered_count(&server, "orders") == 3
        },
    );

    // One at a time, so the kill comes with most still to deliver.
    let mut args = base("slow", "slow");
    args.extend(["--prefetch".to_string(), "1".to_string()]);
    create(&server, &args.iter().map(String::as_str).collect::<Vec<_>>(), "/slow");
    for i in 0..6 {
        rabbit_publish(&runtime, &channel, "slow", Some(&format!("slow-{i}")), "{}");
    }
    kill_mid_delivery(&mut server, &events, 6, || rabbit_ready(&runtime, rabbit.port, "slow"));
    wait_until("every slow message acknowledged", Duration::from_secs(20), || {
        rabbit_ready(&runtime, rabbit.port, "slow") == 0
    });
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Entries of the source's group not acknowledged yet, and not yet read.
fn redis_unacked(port: u16, stream: &str, group: &str) -> usize {
    let pending: usize = redis_cli(port, &["XPENDING", stream, group])
        .lines()
        .next()
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let length: usize = redis_cli(port, &["XLEN", stream]).parse().unwrap_or(0);
    let info = redis_cli(port, &["XINFO", "GROUPS", stream]);
    // `lag` is what the group has not read yet.
    let lag = info
        .lines()
        .collect::<Vec<_>>()
        .windows(2)
        .find(|w| w[0] == "lag")
        .and_then(|w| w[1].parse::<usize>().ok())
        .unwrap_or(length);
    pending + lag
}

#[test]
fn redis_stream_entries_are_acknowledged_after_delivery_and_survive_kill_9() {
    let redis = Daemon::redis();
    let mut server = Server::start(&[]);
    let events = subscriber_at_zero(&server);
    let address = format!("redis://127.0.0.1:{}", redis.port);
    for (name, path) in [("orders", "/orders"), ("broken", "/fail")] {
        create(
            &server,
            &["source", "redis", name, "--address", &address, "--stream", name],
            path,
        );
    }
    // One at a time, so the kill comes with most still to deliver.
    create(
        &server,
        &[
            "source",
            "redis",
            "slow",
            "--address",
            &address,
            "--stream",
            "slow",
            "--count",
            "1",
        ],
        "/slow",
    );
    // The sources make their groups; entries added before are theirs too.
    let mut added = Vec::new();
    for i in 1..=3 {
        added.push(redis_cli(redis.port, &["XADD", "orders", "*", "order", &i.to_string()]));
    }
    let bad = redis_cli(redis.port, &["XADD", "broken", "*", "bad", "1"]);
    let (orders, failed) = wait_orders_and_dead_letter(&events);
    let expected: BTreeSet<String> = added.iter().map(|id| format!("orders-{id}")).collect();
    assert_eq!(orders, expected);
    assert_eq!(failed, format!("broken-{bad}"));
    let seen = recorded_events(&events);
    let first = at_path(&seen, "/orders")[0];
    assert_eq!(ce(first, "type"), "dev.knative.sources.redisstream");
    assert_eq!(first["body"], r#"{"order":"1"}"#);
    wait_until(
        "orders and the dead letter acknowledged",
        Duration::from_secs(20),
        || {
            redis_unacked(redis.port, "orders", "updraft-default-orders") == 0
                && redis_unacked(redis.port, "broken", "updraft-default-broken") == 0
        },
    );

    for i in 0..6 {
        redis_cli(redis.port, &["XADD", "slow", "*", "n", &i.to_string()]);
    }
    kill_mid_delivery(&mut server, &events, 6, || {
        redis_unacked(redis.port, "slow", "updraft-default-slow")
    });
    wait_until("every slow entry acknowledged", Duration::from_secs(20), || {
        redis_unacked(redis.port, "slow", "updraft-default-slow") == 0
    });
}

fn mqtt_publish(port: u16, topic: &str, body: &str) {
    let out = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            topic,
            "-m",
            body,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn mqtt_messages_arrive_with_qos_1_and_those_sent_while_down_are_not_lost() {
    let broker = Daemon::mosquitto();
    let mut server = Server::start(&[]);
    let events = subscriber_at_zero(&server);
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    for (name, topic, path) in [
        ("orders", "shop/+/orders", "/orders"),
        ("broken", "broken/#", "/fail"),
        ("slow", "slow/#", "/slow"),
    ] {
        create(
            &server,
            &["source", "mqtt", name, "--url", &url, "--topic", topic],
            path,
        );
    }
    // The subscriptions exist once the sources' sessions are up.
    wait_until("the sources to subscribe", Duration::from_secs(20), || {
        let log = std::fs::read_to_string(broker.dir.path().join("daemon.log")).unwrap_or_default();
        ["orders", "broken", "slow"]
            .iter()
            .all(|name| log.contains(&format!("as updraft-default-{name} (p2, c0")))
    });
    std::thread::sleep(Duration::from_millis(500));
    for i in 1..=3 {
        mqtt_publish(
            broker.port,
            &format!("shop/eu{i}/orders"),
            &format!(r#"{{"order":{i}}}"#),
        );
    }
    mqtt_publish(broker.port, "broken/x", "{}");
    let (orders, _failed) = wait_orders_and_dead_letter(&events);
    assert_eq!(orders.len(), 3);
    let seen = recorded_events(&events);
    let subjects: BTreeSet<&str> = at_path(&seen, "/orders").iter().map(|e| ce(e, "subject")).collect();
    assert_eq!(
        subjects,
        BTreeSet::from(["shop/eu1/orders", "shop/eu2/orders", "shop/eu3/orders"])
    );

    // Messages published while the server is down wait in its persistent session.
    server.kill9();
    for i in 0..4 {
        mqtt_publish(broker.port, "slow/down", &format!(r#"{{"n":{i}}}"#));
    }
    server.restart();
    let seen = wait_events(&events, "messages sent while down", Duration::from_secs(60), |e| {
        at_path(e, "/slow").len() >= 4
    });
    let bodies: BTreeSet<&str> = at_path(&seen, "/slow")
        .iter()
        .map(|e| e["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies.len(), 4, "{bodies:?}");
}

#[test]
fn sources_that_cannot_work_are_refused_and_change_nothing() {
    let rabbit = Daemon::rabbitmq();
    let server = Server::start(&[]);
    let (_dir, app) = fixture("python");
    server.deploy("sub", &app, &[]);
    let out = server.cli(&["secret", "create", "amqp", "--from-literal", "password=guest"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let url = format!("amqp://guest@127.0.0.1:{}/%2f", rabbit.port);
    let dead_port = common::free_port().to_string();
    let dead_redis = format!("redis://127.0.0.1:{dead_port}");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "rabbitmq",
                "q",
                "--url",
                &url,
                "--password-secret",
                "amqp/password",
                "--queue",
                "missing",
            ],
            "spec.queue: queue \"missing\" cannot be used",
        ),
        (
            vec![
                "rabbitmq",
                "q",
                "--url",
                &url,
                "--password-secret",
                "nope/password",
                "--queue",
                "x",
                "--declare",
            ],
            "spec.password.secretKeyRef: ",
        ),
        (
            vec![
                "rabbitmq",
                "q",
                "--url",
                "amqp://guest:guest@127.0.0.1/",
                "--queue",
                "x",
            ],
            "spec.url: carries a password",
        ),
        (
            vec!["redis", "r", "--address", "127.0.0.1:6379", "--stream", "s"],
            "spec.address: ",
        ),
        (
            vec!["redis", "r", "--address", &dead_redis, "--stream", "s"],
            "spec.address: cannot use Redis",
        ),
        (vec!["mqtt", "m", "--topic", "a/#/b"], "spec.topics[0]: "),
    ];
    for (args, expected) in cases {
        let mut all = vec!["source"];
        all.extend(&args);
        all.extend(["--target", "sub"]);
        let out = server.cli(&all);
        assert_ne!(out.code, 0, "{args:?} was accepted");
        assert!(out.stderr.contains(expected), "{args:?}: {}", out.stderr);
    }
    let listed = server.json(&["triggers"]);
    assert_eq!(listed, serde_json::json!([]), "nothing was stored");
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

#[test]
fn webhooks_take_signed_deliveries_once_and_refuse_the_rest() {
    let server = Server::start(&[]);
    let events = subscriber_at_zero(&server);
    let out = server.cli(&[
        "secret",
        "create",
        "hooks",
        "--from-literal",
        "github=gh-s3cret",
        "--from-literal",
        "standard=whsec_MDEyMzQ1Njc4OWFiY2RlZg==",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for (name, provider, key) in [("gh", "github", "hooks/github"), ("std", "standard", "hooks/standard")] {
        create(
            &server,
            &["source", "webhook", name, "--provider", provider, "--secret", key],
            "/hooks",
        );
    }
    let shown = server.json(&["trigger", "show", "gh"]);
    let source = shown["trigger"]["source"].as_str().unwrap();
    assert!(source.contains("/v1/namespaces/default/webhooks/gh"), "{source}");

    // No token: the signature is the credential.
    let post = |name: &str, headers: &[(&str, &str)], body: &[u8]| {
        server.api_as(
            "",
            "POST",
            &format!("/v1/namespaces/default/webhooks/{name}"),
            headers,
            body,
        )
    };
    let body = br#"{"ref":"refs/heads/main"}"#;
    let signature = format!("sha256={}", hex::encode(hmac_sha256(b"gh-s3cret", &[body])));
    let github = |signature: &str, delivery: &str| {
        vec![
            ("Content-Type", "application/json".to_string()),
            ("X-GitHub-Event", "push".to_string()),
            ("X-GitHub-Delivery", delivery.to_string()),
            ("X-Hub-Signature-256", signature.to_string()),
        ]
    };
    let send = |name: &str, headers: Vec<(&'static str, String)>, body: &[u8]| {
        let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        post(name, &refs, body)
    };
    let accepted = send("gh", github(&signature, "d-1"), body);
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    let replayed = send("gh", github(&signature, "d-1"), body);
    assert_eq!(replayed.status, 409, "{}", replayed.body);
    assert!(replayed.body.contains("received before"), "{}", replayed.body);
    let forged = send("gh", github(&signature, "d-2"), br#"{"ref":"evil"}"#);
    assert_eq!(forged.status, 401, "{}", forged.body);
    assert!(forged.body.contains("signature does not match"), "{}", forged.body);
    let mut unsigned = github(&signature, "d-3");
    unsigned.retain(|(k, _)| *k != "X-Hub-Signature-256");
    let refused = send("gh", unsigned, body);
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert!(refused.body.contains("not signed"), "{}", refused.body);

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let standard_body = br#"{"type":"invoice.paid","amount":3}"#;
    let standard = |id: &str, at: i64| {
        use base64::Engine;
        let signed = hmac_sha256(b"0123456789abcdef", &[format!("{id}.{at}.").as_bytes(), standard_body]);
        vec![
            ("Content-Type", "application/json".to_string()),
            ("webhook-id", id.to_string()),
            ("webhook-timestamp", at.to_string()),
            (
                "webhook-signature",
                format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(signed)),
            ),
        ]
    };
    let fresh = send("std", standard("msg_1", now), standard_body);
    assert_eq!(fresh.status, 202, "{}", fresh.body);
    let old = send("std", standard("msg_2", now - 3600), standard_body);
    assert_eq!(old.status, 401, "{}", old.body);
    assert!(old.body.contains("from now"), "{}", old.body);
    let missing = send("nope", standard("msg_3", now), standard_body);
    assert_eq!(missing.status, 404, "{}", missing.body);

    let seen = wait_events(&events, "the two accepted deliveries", Duration::from_secs(30), |e| {
        at_path(e, "/hooks").len() >= 2
    });
    let hooks = at_path(&seen, "/hooks");
    let by_id = |id: &str| *hooks.iter().find(|e| ce(e, "id") == id).unwrap();
    assert_eq!(ce(by_id("d-1"), "type"), "dev.knative.source.github.push");
    assert_eq!(by_id("d-1")["body"], r#"{"ref":"refs/heads/main"}"#);
    assert_eq!(ce(by_id("msg_1"), "type"), "invoice.paid");
    assert!(ce(by_id("msg_1"), "source").ends_with("/webhooksources/std"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        at_path(&recorded_events(&events), "/hooks").len(),
        2,
        "nothing refused was delivered"
    );
}

#[test]
fn platform_events_go_into_a_broker_whose_triggers_page_on_a_crash() {
    let server = Server::start(&[]);
    let events = server.dir.path().join("events.jsonl");
    let (_dir, app) = fixture("python");
    let env = format!("EVENTS_SOCKET={}", common::record_events(&events));
    server.deploy("sub", &app, &["--env", &env]);
    let out = server.cli(&["source", "platform", "ops", "--sink-broker", "default"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for (name, ty, path) in [
        ("pager", "dev.updraft.instance.crashed.v1", "/pager"),
        ("deploys", "dev.updraft.service.deployed.v1", "/deploys"),
    ] {
        let filter = format!("type={ty}");
        let out = server.cli(&[
            "trigger", "event", name, "--filter", &filter, "--target", "sub", "--path", path,
        ]);
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    server.deploy("web", &app, &[]);
    // The instance exits with code 1 while serving: a crash.
    let _ = server.get("web", "/die");
    let seen = wait_events(&events, "the deploy and the crash", Duration::from_secs(30), |e| {
        at_path(e, "/deploys").iter().any(|x| ce(x, "subject") == "web") && !at_path(e, "/pager").is_empty()
    });
    let crash = at_path(&seen, "/pager")[0];
    assert_eq!(ce(crash, "subject"), "web");
    assert_eq!(ce(crash, "source"), "/apis/v1/namespaces/default/platform");
    let data: Value = serde_json::from_str(crash["body"].as_str().unwrap()).unwrap();
    assert_eq!(data["exitCode"], 1, "{data}");
    assert_eq!(data["service"], "web");
    assert!(data["revision"].as_str().unwrap().starts_with("web-"), "{data}");
    let deployed = at_path(&seen, "/deploys");
    let deployed: Value = serde_json::from_str(deployed[deployed.len() - 1]["body"].as_str().unwrap()).unwrap();
    assert_eq!(deployed["service"], "web");

    // A type that does not exist, or a broker that does not, is refused.
    let out = server.cli(&[
        "source",
        "platform",
        "bad",
        "--type",
        "dev.updraft.nope",
        "--sink-broker",
        "default",
    ]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr
            .contains("spec.types[0]: \"dev.updraft.nope\" is not a platform event"),
        "{}",
        out.stderr
    );
    let out = server.cli(&["source", "platform", "bad", "--sink-broker", "nowhere"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("nowhere"), "{}", out.stderr);
    let listed = server.json(&["triggers"]);
    assert!(
        listed.as_array().unwrap().iter().all(|t| t["name"] != "bad"),
        "{listed}"
    );
}
