//! The gateway and the API under clients that misbehave: slow heads, idle connections
//! by the thousand, more sockets than descriptors, malformed bodies and hosts, and
//! apps that answer in HTTP/1.0.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;

/// Reads until the server closes the connection; what it sent. Panics with what came
/// if it is still open after `timeout`.
fn read_until_closed(stream: &mut TcpStream, timeout: Duration) -> Vec<u8> {
    stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return got,
        }
    }
    panic!("never closed; got {:?}", String::from_utf8_lossy(&got));
}

fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap()
}

#[test]
fn slow_heads_and_idle_connections_are_cut_and_good_clients_served() {
    let server = Server::start(&["--header-read-timeout", "1s", "--idle-timeout", "2s"]);
    let (_tmp, app) = fixture("python");
    server.deploy("kept", &app, &[]);
    // Slowloris: heads that never end.
    let mut slow: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut s = connect(server.gateway);
            s.write_all(b"GET / HTTP/1.1\r\nHost: kept.default.localhost\r\nX-Slow: ")
                .unwrap();
            s
        })
        .collect();
    // Keep-alive connections that answered once and then idle.
    let mut idle: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut s = connect(server.gateway);
            s.write_all(b"GET / HTTP/1.1\r\nHost: kept.default.localhost\r\n\r\n")
                .unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).unwrap();
            assert!(
                buf[..n].starts_with(b"HTTP/1.1 200"),
                "{}",
                String::from_utf8_lossy(&buf[..n])
            );
            s
        })
        .collect();
    assert_eq!(server.get("kept", "/").status, 200, "others are served meanwhile");
    for s in slow.iter_mut().chain(idle.iter_mut()) {
        read_until_closed(s, Duration::from_secs(10));
    }
    assert_eq!(server.get("kept", "/").status, 200);
}

#[test]
fn past_the_connection_cap_clients_get_a_503_and_the_api_still_answers() {
    let server = Server::start(&["--max-connections", "20"]);
    let (_tmp, app) = fixture("python");
    server.deploy("capped", &app, &[]);
    let held: Vec<TcpStream> = (0..20).map(|_| connect(server.gateway)).collect();
    std::thread::sleep(Duration::from_millis(200));
    let refused = server.get("capped", "/");
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(
        refused.body.contains("gateway has 20 connections open"),
        "{}",
        refused.body
    );
    assert_eq!(
        server.json(&["services"]).as_array().unwrap().len(),
        1,
        "the API has its own cap"
    );
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.get("capped", "/").status != 200 {
        assert!(Instant::now() < deadline, "connections were never given back");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The server started with an open-file limit of `soft`/`hard`, as `ulimit -n` sets.
fn server_with_open_files(soft: u64, hard: u64) -> (std::process::Child, tempfile::TempDir, SocketAddr, SocketAddr) {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let gateway: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let api: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let mut command = std::process::Command::new(BIN);
    command
        .args(["server", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--gateway-addr", &gateway.to_string(), "--api-addr", &api.to_string()])
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http(api, "GET", "api", "/healthz", &[], b"").is_ok_and(|r| r.status == 200) {
        assert!(Instant::now() < deadline, "the server did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, dir, gateway, api)
}

fn soft_open_files(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

#[test]
fn more_sockets_than_descriptors_leave_the_api_and_the_gateway_answering() {
    // This test holds 1,100 sockets itself.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    let (mut raised, _d, _, _) = server_with_open_files(1024, 4096);
    assert_eq!(
        soft_open_files(raised.id()),
        4096,
        "the soft limit is raised to the hard one"
    );
    let _ = raised.kill();
    let _ = raised.wait();

    let (mut child, dir, gateway, api) = server_with_open_files(1024, 1024);
    let sockets: Vec<TcpStream> = (0..1100).filter_map(|_| TcpStream::connect(gateway).ok()).collect();
    assert!(sockets.len() >= 1000, "{} sockets", sockets.len());
    std::thread::sleep(Duration::from_secs(2));
    let health = http(api, "GET", "api", "/healthz", &[], b"").unwrap();
    assert_eq!(health.status, 200, "the API answers while the gateway is flooded");
    let shed = http(gateway, "GET", "nobody.default.localhost", "/", &[], b"").unwrap();
    assert_eq!(shed.status, 503, "{}", shed.body);
    drop(sockets);
    let deadline = Instant::now() + Duration::from_secs(20);
    while http(gateway, "GET", "nobody.default.localhost", "/", &[], b"")
        .map(|r| r.status)
        .unwrap_or(0)
        != 404
    {
        assert!(Instant::now() < deadline, "the gateway did not recover");
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    let failures = log.matches("accepting connections fails").count();
    assert!(failures <= 5, "{failures} accept warnings:\n{log}");
    assert!(
        log.contains("connection cap lowered to fit the open-file limit"),
        "{log}"
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
}

/// Established connections whose local end is `port` (the instance's side).
fn established_to(port: u16) -> usize {
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            fields.get(3) == Some(&"01")
                && fields
                    .get(1)
                    .and_then(|a| a.rsplit(':').next())
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
                    == Some(port)
        })
        .count()
}

#[test]
fn connections_to_instances_are_bounded_and_expire() {
    let server = Server::start(&["--upstream-max-idle", "4", "--upstream-idle-timeout", "1s"]);
    let (_tmp, app) = fixture("python");
    server.deploy("pooled", &app, &[]);
    let port = server.json(&["service", "pooled"])["revisions"][0]["instances"][0]["port"]
        .as_u64()
        .unwrap() as u16;
    let gateway = server.gateway;
    let clients: Vec<_> = (0..30)
        .map(|_| {
            std::thread::spawn(move || {
                http(gateway, "GET", &Server::host("pooled"), "/sleep?0.5", &[], b"")
                    .unwrap()
                    .status
            })
        })
        .collect();
    for c in clients {
        assert_eq!(c.join().unwrap(), 200);
    }
    std::thread::sleep(Duration::from_millis(200));
    let kept = established_to(port);
    assert!(kept <= 4, "{kept} idle connections kept to the instance");
    let deadline = Instant::now() + Duration::from_secs(10);
    while established_to(port) > 0 {
        assert!(
            Instant::now() < deadline,
            "idle connections to the instance never expired"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_http_1_0_app_is_answered_in_http_1_1_and_keep_alive_holds() {
    let server = Server::start(&[]);
    // The README's app: http.server answers in HTTP/1.0 and closes.
    let (_dir, app) = app_of(&[(
        "main.py",
        "import os\nfrom http.server import BaseHTTPRequestHandler, HTTPServer\nclass H(BaseHTTPRequestHandler):\n    def do_GET(self):\n        self.send_response(200)\n        self.end_headers()\n        self.wfile.write(b'old school')\nHTTPServer(('127.0.0.1', int(os.environ['PORT'])), H).serve_forever()\n",
    )]);
    server.deploy("old", &app, &[]);
    let mut stream = connect(server.gateway);
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for round in 0..3 {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: old.default.localhost\r\n\r\n")
            .unwrap();
        let mut response = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&response).contains("old school") {
            let n = stream.read(&mut buf).unwrap();
            assert!(
                n > 0,
                "round {round}: the connection was closed: {}",
                String::from_utf8_lossy(&response)
            );
            response.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&response);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "round {round}: {text}");
        // The chunked body's last chunk.
        while !String::from_utf8_lossy(&response).ends_with("0\r\n\r\n") {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0);
            response.extend_from_slice(&buf[..n]);
        }
    }
}

#[test]
fn malformed_requests_are_the_clients_fault() {
    let server = Server::start(&[]);
    let (_dir, app) = app_of(&[
        (
            "server.js",
            "require('http').createServer((req, res) => { let n = 0; req.on('data', c => n += c.length); req.on('end', () => res.end(`read ${n}`)); }).listen(Number(process.env.PORT), '127.0.0.1');\n",
        ),
        ("package.json", r#"{"name": "reader", "main": "server.js"}"#),
    ]);
    server.deploy("reader", &app, &[]);

    let mut stream = connect(server.gateway);
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: reader.default.localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n")
        .unwrap();
    let answer = String::from_utf8_lossy(&read_until_closed(&mut stream, Duration::from_secs(10))).into_owned();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("the request body could not be read"), "{answer}");

    for (host_lines, why) in [
        ("Host: reader.default.localhost:99999\r\n", "no valid port"),
        (
            "Host: reader.default.localhost\r\nHost: other.default.localhost\r\n",
            "more than one Host",
        ),
    ] {
        let mut stream = connect(server.gateway);
        stream
            .write_all(format!("GET / HTTP/1.1\r\n{host_lines}Connection: close\r\n\r\n").as_bytes())
            .unwrap();
        let answer = String::from_utf8_lossy(&read_until_closed(&mut stream, Duration::from_secs(10))).into_owned();
        assert!(answer.starts_with("HTTP/1.1 400"), "{host_lines:?}: {answer}");
        assert!(answer.contains(why), "{answer}");
    }

    // None of it counts against the service.
    let metrics = server.api_call("GET", "/metrics", &[], b"").body;
    assert!(!metrics.contains("code=\"5xx\""), "{metrics}");
    assert!(
        metrics.contains("service=\"reader\",revision=\"reader-00001\",code=\"4xx\"} 1"),
        "{metrics}"
    );
}
