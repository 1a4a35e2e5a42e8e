//! Flow control for real: 429 over a rate limit, 503 past a full concurrency queue,
//! 504 past the request timeout; streams and WebSockets within the timeout.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

#[test]
fn rate_limits_per_service_and_per_namespace_answer_429() {
    let server = Server::start(&[]);
    let (_tmp, app) = fixture("python");
    server.deploy("hello", &app, &["--rate-limit", "1", "--rate-limit-burst", "2"]);
    let statuses: Vec<u16> = (0..2).map(|_| server.get("hello", "/").status).collect();
    assert_eq!(statuses, [200, 200], "the burst passes");
    // At 1 request/s, a refusal comes within a few back-to-back requests however slow
    // the machine is.
    let refused = (0..20)
        .map(|_| server.get("hello", "/"))
        .find(|r| r.status != 200)
        .expect("a request over the rate is refused");
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert!(refused.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    assert!(refused.body.contains("service default/hello"), "{}", refused.body);

    server.json(&["update", "hello", "--rate-limit", "0"]);
    assert!(
        (0..5).all(|_| server.get("hello", "/").status == 200),
        "the limit is gone"
    );

    server.json(&["namespace", "create", "team"]);
    let limited = server.json(&["namespace", "limits", "team", "--rate-limit", "1"]);
    assert_eq!(limited["limits"]["rate_limit"]["per_second"], 1);
    server.json(&["deploy", "a", app.to_str().unwrap(), "-n", "team"]);
    server.json(&["deploy", "b", app.to_str().unwrap(), "-n", "team"]);
    let first = server.request("GET", "a.team.localhost", "/", &[], b"").unwrap();
    assert_eq!(first.status, 200);
    let second = (0..20)
        .map(|_| server.request("GET", "b.team.localhost", "/", &[], b"").unwrap())
        .find(|r| r.status != 200)
        .expect("the namespace's services share one budget");
    assert_eq!(second.status, 429, "{}", second.body);
    assert!(second.body.contains("namespace team"), "{}", second.body);
    let zero = br#"{"rate_limit": {"per_second": 0, "burst": 1}}"#;
    let refused = server.api_call("PUT", "/v1/namespaces/team", &[], zero);
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body.contains("rate_limit"), "{}", refused.body);
    server.json(&["namespace", "limits", "team", "--clear"]);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        server.request("GET", "b.team.localhost", "/", &[], b"").unwrap().status,
        200
    );
}

#[test]
fn container_concurrency_queues_then_refuses_with_503() {
    let server = Server::start(&["--activator-capacity", "1"]);
    let (_tmp, app) = fixture("python");
    server.deploy("one", &app, &["--concurrency", "1"]);
    let gateway = server.gateway;
    let load = |field: &'static str, wanted: u64| {
        server.wait_service("one", field, Duration::from_secs(10), |s| {
            s["revisions"][0][field].as_u64() == Some(wanted)
        });
    };
    let slow = std::thread::spawn(move || http(gateway, "GET", "one.default.localhost", "/slow", &[], b"").unwrap());
    load("in_flight", 1);
    let queued = std::thread::spawn(move || http(gateway, "GET", "one.default.localhost", "/", &[], b"").unwrap());
    load("waiting", 1);
    let refused = server.get("one", "/");
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(refused.body.contains("concurrency limit"), "{}", refused.body);
    assert_eq!(slow.join().unwrap().status, 200);
    let queued = queued.join().unwrap();
    assert_eq!(
        queued.status, 200,
        "the queued request got the freed slot: {}",
        queued.body
    );
}

#[test]
fn timeouts_answer_504_while_streams_and_websockets_work_within_them() {
    let server = Server::start(&[]);
    let (_tmp, app) = fixture("python");
    server.deploy("quick", &app, &["--timeout", "1s"]);
    let timed_out = server.get("quick", "/slow");
    assert_eq!(timed_out.status, 504, "{}", timed_out.body);
    assert!(
        timed_out.body.contains("within 1s (timeoutSeconds)"),
        "{}",
        timed_out.body
    );
    let stream = server.get("quick", "/stream");
    assert_eq!(stream.status, 200);
    assert!(
        stream.body.contains("part0") && stream.body.contains("part2"),
        "{}",
        stream.body
    );

    // A WebSocket: the handshake is forwarded, then bytes flow both ways.
    let mut ws = TcpStream::connect(server.gateway).unwrap();
    ws.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    ws.write_all(
        b"GET /ws HTTP/1.1\r\nHost: quick.default.localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(ws.read(&mut byte).unwrap(), 1, "handshake cut short: {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    for message in [&b"hello over the tunnel"[..], b"second"] {
        ws.write_all(message).unwrap();
        let mut echoed = vec![0u8; message.len()];
        ws.read_exact(&mut echoed).unwrap();
        assert_eq!(echoed, message);
    }
    // The tunnel is bounded by the same timeout: it closes after 1s.
    std::thread::sleep(Duration::from_millis(1500));
    let mut rest = Vec::new();
    let closed = ws.read_to_end(&mut rest).is_ok() || ws.write_all(b"x").is_err();
    assert!(closed, "the upgraded connection closes at the timeout");
}
