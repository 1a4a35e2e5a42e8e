//! Triggers end to end: cron firings into a service at zero, once per scheduled second
//! across restarts; broker ingress with filters, retries, dead letters and replies;
//! accepted events surviving kill -9; NATS JetStream sources; Knative manifests.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{fixture, ready, recorded_events, wait_events, Nats, Server};
use serde_json::Value;

fn ce<'a>(event: &'a Value, name: &str) -> &'a str {
    event["ce"][name].as_str().unwrap_or("")
}

fn at_path<'a>(events: &'a [Value], path: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["path"] == path).collect()
}

fn unix(rfc3339: &str) -> f64 {
    humantime::parse_rfc3339_weak(rfc3339)
        .unwrap_or_else(|e| panic!("{rfc3339}: {e}"))
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

fn deploy_subscriber(server: &Server, name: &str, events: &Path, extra: &[&str]) {
    let (_dir, app) = fixture("python");
    let env = format!("EVENTS_SOCKET={}", common::record_events(events));
    let mut args = vec!["--env", env.as_str()];
    args.extend(extra);
    server.deploy(name, &app, &args);
}

/// The scheduled time of each event a cron trigger delivered, with the ids seen for it.
fn firings(events: &[Value], path: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut by_time: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for e in at_path(events, path) {
        by_time
            .entry(ce(e, "time").to_string())
            .or_default()
            .insert(ce(e, "id").to_string());
    }
    by_time
}

#[test]
fn a_cron_trigger_wakes_a_service_at_zero_and_fires_each_second_once() {
    let mut server = Server::start(&[]);
    let events = server.dir.path().join("events.jsonl");
    deploy_subscriber(&server, "sub", &events, &["--scale-to-zero-after", "1s"]);
    server.wait_service("sub", "scale to zero", Duration::from_secs(20), |s| ready(s) == 0);

    let out = server.cli(&[
        "trigger",
        "cron",
        "tick",
        "--schedule",
        "* * * * * *",
        "--tz",
        "Asia/Shanghai",
        "--target",
        "sub",
        "--path",
        "/cron",
        "--data",
        r#"{"k":1}"#,
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "cron/tick created");

    let seen = wait_events(&events, "4 firings", Duration::from_secs(20), |e| {
        at_path(e, "/cron").len() >= 4
    });
    let first = at_path(&seen, "/cron")[0];
    assert_eq!(ce(first, "type"), "dev.knative.sources.ping");
    assert_eq!(ce(first, "source"), "/apis/v1/namespaces/default/pingsources/tick");
    assert_eq!(first["content_type"], "application/json");
    assert_eq!(first["body"], r#"{"k":1}"#);
    let service = server.json(&["service", "sub"]);
    assert!(
        !service["last_cold_start"].is_null(),
        "the first firing woke the service: {service}"
    );
    for e in at_path(&seen, "/cron") {
        let time = unix(ce(e, "time"));
        assert_eq!(time.fract(), 0.0, "fired for a whole second: {e}");
    }

    let listed = server.json(&["triggers"]);
    let tick = &listed[0];
    assert_eq!(tick["kind"], "cron");
    assert_eq!(tick["source"], "* * * * * * (Asia/Shanghai)");
    assert!(unix(tick["next_fire"].as_str().unwrap()) > now() - 1.0, "{tick}");
    assert!(tick["deliveries"]["delivered"].as_u64().unwrap() >= 3, "{tick}");

    // A crash and a restart: every scheduled second still fires at most once.
    server.kill9();
    std::thread::sleep(Duration::from_millis(2500));
    server.restart();
    let before = at_path(&recorded_events(&events), "/cron").len();
    wait_events(&events, "firings after the restart", Duration::from_secs(20), |e| {
        at_path(e, "/cron").len() >= before + 3
    });
    let detail = server.json(&["trigger", "show", "tick", "--limit", "100"]);
    let history = detail["history"].as_array().unwrap();
    assert!(history.iter().all(|h| h["status"] != "failed"), "{detail}");
    let scheduled: Vec<&str> = history.iter().map(|h| h["scheduled"].as_str().unwrap()).collect();
    let unique: BTreeSet<&str> = scheduled.iter().copied().collect();
    assert_eq!(
        unique.len(),
        scheduled.len(),
        "a scheduled time fired twice: {scheduled:?}"
    );
    assert_eq!(server.cli(&["trigger", "delete", "tick"]).code, 0);
    std::thread::sleep(Duration::from_millis(1500));
    let all = recorded_events(&events);
    for (time, ids) in firings(&all, "/cron") {
        assert_eq!(ids.len(), 1, "{time} fired as several events: {ids:?}");
    }
    let settled = at_path(&all, "/cron").len();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        at_path(&recorded_events(&events), "/cron").len(),
        settled,
        "a deleted trigger stops"
    );
}

#[test]
fn ticks_missed_while_down_follow_the_catch_up_policy() {
    let mut server = Server::start(&[]);
    let events = server.dir.path().join("events.jsonl");
    deploy_subscriber(&server, "sub", &events, &[]);
    for (name, policy) in [("skipper", "skip"), ("catcher", "once")] {
        let path = format!("/{name}");
        let out = server.cli(&[
            "trigger",
            "cron",
            name,
            "--schedule",
            "*/2 * * * * *",
            "--target",
            "sub",
            "--path",
            &path,
            "--catch-up",
            policy,
        ]);
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    wait_events(&events, "both triggers firing", Duration::from_secs(15), |e| {
        !at_path(e, "/skipper").is_empty() && !at_path(e, "/catcher").is_empty()
    });
    server.kill9();
    let down_at = now();
    std::thread::sleep(Duration::from_millis(4500));
    let up_at = now();
    server.restart();
    std::thread::sleep(Duration::from_millis(2500));
    let all = recorded_events(&events);
    let fired_while_down = |path: &str| -> Vec<f64> {
        firings(&all, path)
            .keys()
            .map(|t| unix(t))
            .filter(|t| *t > down_at && *t < up_at)
            .collect()
    };
    let skipped = fired_while_down("/skipper");
    assert!(
        skipped.iter().all(|t| *t > up_at - 1.5),
        "skip fired a tick missed long before the restart: {skipped:?} (down {down_at}, up {up_at})"
    );
    let caught = fired_while_down("/catcher");
    assert_eq!(caught.len(), 1, "once fires the latest missed tick once: {caught:?}");
    assert!(
        caught[0] > up_at - 2.5,
        "the latest missed tick: {caught:?}, up at {up_at}"
    );
    for path in ["/skipper", "/catcher"] {
        for (time, ids) in firings(&all, path) {
            assert_eq!(ids.len(), 1, "{path} {time} fired twice: {ids:?}");
        }
    }
}

#[test]
fn broker_events_are_filtered_retried_dead_lettered_and_replied_to() {
    let server = Server::start(&[]);
    let events = server.dir.path().join("events.jsonl");
    deploy_subscriber(&server, "sub", &events, &[]);
    deploy_subscriber(&server, "dlq", &events, &[]);
    let triggers: [&[&str]; 5] = [
        &["orders", "--filter", "type=order.created", "--path", "/orders"],
        &[
            "shop",
            "--filter-prefix",
            "type=com.shop.",
            "--filter-suffix",
            "source=/eu",
            "--path",
            "/shop",
        ],
        &[
            "doomed",
            "--filter",
            "type=doomed",
            "--path",
            "/fail",
            "--retry",
            "2",
            "--backoff-policy",
            "linear",
            "--backoff-delay",
            "100ms",
            "--dead-letter",
            "dlq",
        ],
        &["asker", "--filter", "type=ask", "--path", "/reply"],
        &["answers", "--filter", "type=answer", "--path", "/answers"],
    ];
    for args in triggers {
        let mut all = vec!["trigger", "event"];
        all.extend_from_slice(args);
        all.extend(["--target", "sub"]);
        let out = server.cli(&all);
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
    }

    let brokers = server.json(&["brokers"]);
    let url = brokers[0]["url"].as_str().unwrap().to_string();
    assert!(url.ends_with("/v1/namespaces/default/brokers/default/events"), "{url}");
    let ingress = "/v1/namespaces/default/brokers/default/events";
    let post = |headers: &[(&str, &str)], body: &str| server.api_call("POST", ingress, headers, body.as_bytes());
    let binary = |id: &str, ty: &str, source: &str| {
        post(
            &[
                ("ce-specversion", "1.0"),
                ("ce-id", id),
                ("ce-type", ty),
                ("ce-source", source),
                ("content-type", "application/json"),
            ],
            r#"{"n":1}"#,
        )
    };
    let accepted = binary("o1", "order.created", "/shop/us");
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    assert!(accepted.body.contains(r#""deliveries":1"#), "{}", accepted.body);
    let structured = post(
        &[("content-type", "application/cloudevents+json")],
        r#"{"specversion":"1.0","id":"s1","type":"com.shop.item","source":"/shop/eu","data":{"sku":7}}"#,
    );
    assert_eq!(structured.status, 202, "{}", structured.body);
    let batch = post(
        &[("content-type", "application/cloudevents-batch+json")],
        r#"[{"specversion":"1.0","id":"o2","type":"order.created","source":"/s"},
            {"specversion":"1.0","id":"x1","type":"unwanted","source":"/s"}]"#,
    );
    assert_eq!(batch.status, 202, "{}", batch.body);
    assert!(batch.body.contains(r#""accepted":2"#), "{}", batch.body);
    assert_eq!(binary("d1", "doomed", "/s").status, 202);
    assert_eq!(binary("a1", "ask", "/s").status, 202);
    let sent = server.cli(&[
        "event",
        "send",
        "--type",
        "com.shop.item",
        "--source",
        "/shop/eu",
        "--id",
        "c1",
    ]);
    assert_eq!(sent.code, 0, "{}", sent.stderr);

    // Malformed events are refused with the reason and nothing is stored.
    let refused = [
        post(&[("ce-specversion", "1.0"), ("ce-type", "t"), ("ce-source", "/s")], ""),
        post(
            &[
                ("ce-specversion", "0.3"),
                ("ce-id", "i"),
                ("ce-type", "t"),
                ("ce-source", "/s"),
            ],
            "",
        ),
        post(&[("content-type", "application/cloudevents+json")], "{not json"),
        post(&[("content-type", "text/plain")], "hello"),
        post(&[("content-type", "application/cloudevents-batch+json")], "[]"),
    ];
    let reasons = [
        "id",
        "\\\"0.3\\\" is not supported",
        "is not JSON",
        "ce-specversion: is missing",
        "empty batch",
    ];
    for (response, reason) in refused.iter().zip(reasons) {
        assert_eq!(response.status, 400, "{}", response.body);
        assert!(response.body.contains(reason), "{reason}: {}", response.body);
    }
    let unknown = server.api_call(
        "POST",
        "/v1/namespaces/default/brokers/nope/events",
        &[
            ("ce-specversion", "1.0"),
            ("ce-id", "i"),
            ("ce-type", "t"),
            ("ce-source", "/s"),
        ],
        b"",
    );
    assert_eq!(unknown.status, 404, "{}", unknown.body);

    let seen = wait_events(&events, "every delivery", Duration::from_secs(30), |e| {
        at_path(e, "/orders").len() == 2
            && at_path(e, "/shop").len() == 2
            && at_path(e, "/fail").len() == 3
            && e.iter().any(|x| x["service"] == "dlq")
            && at_path(e, "/answers").len() == 1
    });
    let ids =
        |path: &str| -> BTreeSet<String> { at_path(&seen, path).iter().map(|e| ce(e, "id").to_string()).collect() };
    assert_eq!(ids("/orders"), BTreeSet::from(["o1".to_string(), "o2".to_string()]));
    assert_eq!(ids("/shop"), BTreeSet::from(["s1".to_string(), "c1".to_string()]));
    assert!(
        seen.iter().all(|e| ce(e, "id") != "x1"),
        "an event no trigger wants goes nowhere"
    );
    let fails: Vec<f64> = at_path(&seen, "/fail")
        .iter()
        .map(|e| e["at"].as_f64().unwrap())
        .collect();
    assert!(
        fails[1] - fails[0] >= 0.09 && fails[2] - fails[1] >= 0.19,
        "linear backoff: {fails:?}"
    );
    let letter = seen.iter().find(|e| e["service"] == "dlq").unwrap();
    assert_eq!(ce(letter, "id"), "d1");
    assert_eq!(ce(letter, "knativeerrorcode"), "503");
    assert_eq!(
        ce(letter, "knativeerrordest"),
        format!("http://sub.default.localhost:{}/fail", server.gateway.port()),
        "Knative's dead letters carry the destination's URL"
    );
    let answer = at_path(&seen, "/answers")[0];
    assert_eq!(ce(answer, "id"), "reply-a1", "the reply went back into the broker");

    let doomed = server.json(&["trigger", "show", "doomed"]);
    let statuses: Vec<(&str, u64, bool)> = doomed["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["status"].as_str().unwrap(),
                h["attempts"].as_u64().unwrap(),
                h["dead_letter"].as_bool().unwrap(),
            )
        })
        .collect();
    assert!(statuses.contains(&("dead-lettered", 3, false)), "{doomed}");
    let metrics = server.api_call("GET", "/metrics", &[], b"").body;
    assert!(
        metrics.contains(r#"updraft_trigger_failures_total{namespace="default",trigger="doomed",kind="event"} 3"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"updraft_trigger_deliveries_total{namespace="default",trigger="orders",kind="event"} 2"#),
        "{metrics}"
    );
}

#[test]
fn accepted_events_survive_kill_9_mid_delivery() {
    let mut server = Server::start(&[]);
    let events = server.dir.path().join("events.jsonl");
    deploy_subscriber(&server, "sub", &events, &[]);
    let out = server.cli(&[
        "trigger",
        "event",
        "slow",
        "--filter",
        "type=work",
        "--target",
        "sub",
        "--path",
        "/slow",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let ids: Vec<String> = (0..10).map(|i| format!("w{i}")).collect();
    for id in &ids {
        let sent = server.cli(&["event", "send", "--type", "work", "--id", id]);
        assert_eq!(sent.code, 0, "{}", sent.stderr);
    }
    // The subscriber takes a second per event: the server dies with deliveries in flight.
    std::thread::sleep(Duration::from_millis(300));
    server.kill9();
    assert!(
        recorded_events(&events).len() < ids.len(),
        "deliveries were still in flight"
    );
    server.restart();
    let seen = wait_events(&events, "every accepted event", Duration::from_secs(30), |e| {
        ids.iter().all(|id| e.iter().any(|x| ce(x, "id") == id))
    });
    assert!(seen.iter().all(|e| ce(e, "type") == "work"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = server.json(&["triggers"]);
        if listed[0]["deliveries"]["delivered"].as_u64() == Some(ids.len() as u64) {
            break;
        }
        assert!(Instant::now() < deadline, "not all recorded as delivered: {listed}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn nats_messages_wake_a_service_and_are_acknowledged_only_once_delivered() {
    let nats = Nats::start();
    let server = Server::start(&[]);
    let events = server.dir.path().join("events.jsonl");
    deploy_subscriber(&server, "sub", &events, &["--scale-to-zero-after", "1s"]);
    server.wait_service("sub", "scale to zero", Duration::from_secs(20), |s| ready(s) == 0);
    for (name, subject, stream, path) in [
        ("orders", "orders.*", "ORDERS", "/nats"),
        ("broken", "broken.*", "BROKEN", "/fail"),
    ] {
        let out = server.cli(&[
            "source",
            "nats",
            name,
            "--url",
            &nats.url,
            "--subject",
            subject,
            "--stream",
            stream,
            "--durable",
            "updraft",
            "--target",
            "sub",
            "--path",
            path,
            "--retry",
            "0",
        ]);
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let js = runtime.block_on(async {
        let client = async_nats::connect(&nats.url).await.unwrap();
        let js = async_nats::jetstream::new(client);
        // The sources create their streams; wait for them before publishing.
        let deadline = Instant::now() + Duration::from_secs(15);
        while js.get_stream("ORDERS").await.is_err() || js.get_stream("BROKEN").await.is_err() {
            assert!(Instant::now() < deadline, "the sources did not create their streams");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for i in 0..3 {
            let ack = js
                .publish("orders.new", format!(r#"{{"order":{i}}}"#).into())
                .await
                .unwrap();
            ack.await.unwrap();
        }
        js.publish("broken.new", "x".into()).await.unwrap().await.unwrap();
        js
    });
    let seen = wait_events(
        &events,
        "three orders and a redelivered failure",
        Duration::from_secs(30),
        |e| at_path(e, "/nats").len() >= 3 && at_path(e, "/fail").len() >= 2,
    );
    let orders = at_path(&seen, "/nats");
    let ids: BTreeSet<&str> = orders.iter().map(|e| ce(e, "id")).collect();
    assert_eq!(ids, BTreeSet::from(["ORDERS-1", "ORDERS-2", "ORDERS-3"]));
    assert!(orders
        .iter()
        .all(|e| ce(e, "type") == "dev.updraft.sources.nats" && ce(e, "subject") == "orders.new"));
    assert_eq!(orders[0]["body"], r#"{"order":0}"#);
    let failing = at_path(&seen, "/fail");
    assert!(
        failing.iter().all(|e| ce(e, "id") == "BROKEN-1"),
        "the unacknowledged message came again"
    );

    runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut stream = js.get_stream("ORDERS").await.unwrap();
            let mut consumer: async_nats::jetstream::consumer::PullConsumer =
                stream.get_consumer("updraft").await.unwrap();
            let info = consumer.info().await.unwrap();
            if info.num_ack_pending == 0 && info.num_pending == 0 && info.ack_floor.stream_sequence == 3 {
                break;
            }
            assert!(Instant::now() < deadline, "orders not all acknowledged: {info:?}");
            let _ = stream.info().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut broken = js.get_stream("BROKEN").await.unwrap();
        let mut consumer: async_nats::jetstream::consumer::PullConsumer = broken.get_consumer("updraft").await.unwrap();
        let info = consumer.info().await.unwrap();
        assert_eq!(
            info.ack_floor.stream_sequence, 0,
            "a failed delivery is never acknowledged: {info:?}"
        );
        let _ = broken.info().await;
    });
    let listed = server.json(&["triggers"]);
    let orders = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "orders")
        .unwrap();
    assert_eq!(orders["kind"], "nats");
    assert_eq!(orders["deliveries"]["delivered"], 3, "{orders}");
}

#[test]
fn knative_ping_sources_triggers_and_brokers_apply_and_bad_ones_change_nothing() {
    let server = Server::start(&[]);
    let events = server.dir.path().join("events.jsonl");
    deploy_subscriber(&server, "sub", &events, &[]);
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("eventing.yaml");
    std::fs::write(
        &manifest,
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: shop
spec:
  delivery:
    retry: 1
    backoffDelay: PT0.1S
---
apiVersion: sources.knative.dev/v1
kind: PingSource
metadata:
  name: heartbeat
spec:
  schedule: "*/2 * * * * *"
  contentType: text/plain
  data: beat
  sink:
    ref:
      apiVersion: serving.knative.dev/v1
      kind: Service
      name: sub
    uri: /beat
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: paid
spec:
  broker: shop
  filters:
    - all:
        - exact: { type: order.paid }
        - not: { suffix: { source: /test } }
  subscriber:
    ref: { apiVersion: serving.knative.dev/v1, kind: Service, name: sub }
    uri: /paid
"#,
    )
    .unwrap();
    let out = server.cli(&["apply", "-f", manifest.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout.trim(),
        "broker/shop created\npingsource/heartbeat created\ntrigger/paid created"
    );
    let again = server.cli(&["apply", "-f", manifest.to_str().unwrap()]);
    assert!(
        again.stdout.contains("pingsource/heartbeat unchanged"),
        "{}",
        again.stdout
    );
    for (source, id) in [("/live", "p1"), ("/test", "p2")] {
        let out = server.cli(&[
            "event",
            "send",
            "--broker",
            "shop",
            "--type",
            "order.paid",
            "--source",
            source,
            "--id",
            id,
        ]);
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    let seen = wait_events(&events, "a beat and a paid order", Duration::from_secs(15), |e| {
        !at_path(e, "/beat").is_empty() && !at_path(e, "/paid").is_empty()
    });
    assert_eq!(at_path(&seen, "/beat")[0]["body"], "beat");
    assert_eq!(at_path(&seen, "/beat")[0]["content_type"], "text/plain");
    std::thread::sleep(Duration::from_millis(500));
    let now_recorded = recorded_events(&events);
    let paid: Vec<&str> = at_path(&now_recorded, "/paid").iter().map(|e| ce(e, "id")).collect();
    assert_eq!(paid, vec!["p1"], "the not-filter kept the test order out");

    let out = server.cli(&["get", "trigger", "heartbeat"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("kind: PingSource") && out.stdout.contains("uri: /beat"),
        "{}",
        out.stdout
    );
    let exported = dir.path().join("exported.yaml");
    std::fs::write(&exported, &out.stdout).unwrap();
    let round = server.cli(&["apply", "-f", exported.to_str().unwrap()]);
    assert_eq!(
        round.stdout.trim(),
        "pingsource/heartbeat unchanged",
        "{}",
        round.stderr
    );

    // Each bad document is refused with its field, before anything is applied.
    let bad = [
        (
            "spec:\n  schedule: '*/70 * * * * *'",
            "spec.schedule: invalid cron \"*/70 * * * * *\": second field step \"70\" must be 1-59",
        ),
        (
            "spec:\n  schedule: '* * * * *'\n  timezone: Mars/Base",
            "timezone: \"Mars/Base\" is not an IANA time zone",
        ),
        (
            "spec:\n  schedule: '* * * * *'\n  ceOverrides: {}",
            "spec.ceOverrides: unknown or unsupported field",
        ),
    ];
    for (spec, message) in bad {
        let file = dir.path().join("bad.yaml");
        let sink = "\n  sink: {ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: sub}}";
        std::fs::write(
            &file,
            format!(
                "apiVersion: sources.knative.dev/v1\nkind: PingSource\nmetadata: {{name: badping}}\n{spec}{sink}\n"
            ),
        )
        .unwrap();
        let out = server.cli(&["apply", "-f", file.to_str().unwrap()]);
        assert_ne!(out.code, 0);
        assert!(out.stderr.contains(message), "{message}: {}", out.stderr);
    }
    let cli_bad = server.cli(&["trigger", "cron", "x", "--schedule", "* * *", "--target", "sub"]);
    assert_ne!(cli_bad.code, 0);
    assert!(cli_bad.stderr.contains("has 3 fields"), "{}", cli_bad.stderr);
    let no_broker = server.cli(&["trigger", "event", "y", "--broker", "missing", "--target", "sub"]);
    assert_ne!(no_broker.code, 0);
    assert!(
        no_broker.stderr.contains("broker \"missing\" does not exist"),
        "{}",
        no_broker.stderr
    );
    let names: Vec<String> = server
        .json(&["triggers"])
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["heartbeat", "paid"], "nothing bad was stored");
}
