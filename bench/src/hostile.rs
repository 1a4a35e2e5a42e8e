//! `hostile`: the gateway and the API under clients that misbehave, each next to a
//! well-behaved baseline in the same run. It uses the server's default flags only, so
//! the same scenario measures an older binary too (`--updraft`).
//!
//! - slowloris: connections that never finish a request's head; when the last is cut.
//! - idle: keep-alive connections that go quiet after one request; when the last is cut.
//! - nesting: two manifests nested 100,000 deep posted at once; how long their answers
//!   take, and the gateway's latency meanwhile against its latency without them.
//! - descriptors: the server under `ulimit -n 1024` and 1,100 idle sockets; accept
//!   failures logged in 10 s, and whether the API and the gateway still answer.
//! - version: keep-alive requests/s (`ab -k`) to an app that answers in HTTP/1.0,
//!   against the same app answering in HTTP/1.1 (which sends a response's head and
//!   body apart, so delayed acknowledgements to instances show here too).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::harness::{get, Server, ServerOptions};
use crate::proxy::{load, read_response, Target};
use crate::stats::summarize;

/// The app for the nesting and idle cases: answers every request at once.
const STEADY: &str = "import os\nfrom http.server import BaseHTTPRequestHandler, ThreadingHTTPServer\nclass H(BaseHTTPRequestHandler):\n    protocol_version = 'HTTP/1.1'\n    def do_GET(self):\n        self.send_response(200)\n        self.send_header('Content-Length', '2')\n        self.end_headers()\n        self.wfile.write(b'ok')\n    def log_message(self, *a):\n        pass\nThreadingHTTPServer(('127.0.0.1', int(os.environ['PORT'])), H).serve_forever()\n";

#[derive(Serialize)]
struct Results {
    slowloris_connections: usize,
    /// Seconds until the last slow head was cut, if all were within the wait.
    slowloris_cut_after_s: Option<f64>,
    slowloris_still_open: usize,
    idle_connections: usize,
    idle_cut_after_s: Option<f64>,
    idle_still_open: usize,
    /// The two nested posts' answer times, ms.
    nesting_answered_ms: Vec<f64>,
    nesting_statuses: Vec<u16>,
    gateway_p99_ms_quiet: f64,
    gateway_p99_ms_during_nesting: f64,
    gateway_max_ms_during_nesting: f64,
    descriptor_sockets: usize,
    accept_failures_logged: usize,
    api_answered_when_flooded: bool,
    gateway_answered_when_flooded: bool,
    http10_app_rps: f64,
    http11_app_rps: f64,
    http10_over_http11: f64,
}

pub fn run(updraft: &Path, out: &Path, slowloris: usize, idle: usize, wait: f64, seconds: f64) -> anyhow::Result<()> {
    raise_own_open_files();
    let work = tempfile::tempdir()?;
    let steady = work.path().join("steady");
    std::fs::create_dir(&steady)?;
    std::fs::write(steady.join("main.py"), STEADY)?;
    let server = Server::start(updraft)?;
    server.cli(
        updraft,
        &[
            "deploy",
            "steady",
            steady.to_str().context("path")?,
            "--scale-to-zero-after",
            "1h",
        ],
    )?;
    let wait = Duration::from_secs_f64(wait);

    println!("slowloris: {slowloris} connections that never finish a head");
    let slow: Vec<TcpStream> = (0..slowloris)
        .map(|_| {
            let mut s = TcpStream::connect(server.gateway)?;
            s.write_all(b"GET / HTTP/1.1\r\nHost: steady.default.localhost\r\nX-Slow: ")?;
            Ok(s)
        })
        .collect::<anyhow::Result<_>>()?;
    let (slowloris_cut_after_s, slowloris_still_open) = wait_cut(slow, wait)?;

    println!("idle: {idle} keep-alive connections quiet after one request");
    let quiet: Vec<TcpStream> = (0..idle)
        .map(|_| {
            let stream = TcpStream::connect(server.gateway)?;
            let mut reader = std::io::BufReader::new(stream.try_clone()?);
            (&stream).write_all(b"GET / HTTP/1.1\r\nHost: steady.default.localhost\r\n\r\n")?;
            read_response(&mut reader)?;
            Ok(stream)
        })
        .collect::<anyhow::Result<_>>()?;
    let (idle_cut_after_s, idle_still_open) = wait_cut(quiet, wait)?;

    println!("nesting: two manifests 100,000 deep while the gateway is under load");
    let target = Target {
        name: "updraft",
        addr: server.gateway,
        host: "steady.default.localhost".into(),
    };
    let (quiet_latency, _) = load(&target, 4, Duration::from_secs(3))?;
    let api: SocketAddr = server.api.trim_start_matches("http://").parse()?;
    let posts: Vec<_> = ["[".repeat(100_000), "{a: ".repeat(100_000)]
        .into_iter()
        .map(|body| {
            let authorization = server.authorization();
            std::thread::spawn(move || post(api, &authorization, "/v1/apply", body.as_bytes()))
        })
        .collect();
    let during = std::thread::spawn(move || load(&target, 4, Duration::from_secs(3)));
    let mut nesting_answered_ms = Vec::new();
    let mut nesting_statuses = Vec::new();
    for p in posts {
        let (status, took) = p.join().map_err(|_| anyhow::anyhow!("post thread panicked"))??;
        nesting_statuses.push(status);
        nesting_answered_ms.push(took.as_secs_f64() * 1000.0);
    }
    let (during_latency, _) = during.join().map_err(|_| anyhow::anyhow!("load thread panicked"))??;
    let (quiet_summary, during_summary) = (summarize(&quiet_latency), summarize(&during_latency));
    drop(server);

    println!("descriptors: ulimit -n 1024 and 1,100 idle sockets");
    let limited = Server::start_with(
        updraft,
        ServerOptions {
            open_files: Some(1024),
            ..Default::default()
        },
    )?;
    let sockets: Vec<TcpStream> = (0..1100)
        .filter_map(|_| TcpStream::connect(limited.gateway).ok())
        .collect();
    let descriptor_sockets = sockets.len();
    std::thread::sleep(Duration::from_secs(10));
    let limited_api: SocketAddr = limited.api.trim_start_matches("http://").parse()?;
    let api_answered_when_flooded = answers(limited_api, "api", "/healthz");
    let gateway_answered_when_flooded = answers(limited.gateway, "nobody.default.localhost", "/");
    let log = std::fs::read_to_string(limited.log_path()).unwrap_or_default();
    let accept_failures_logged = log
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("accept") && l.contains("fail")
        })
        .count();
    drop(sockets);
    drop(limited);

    println!("version: ab -k to an HTTP/1.0 app and to an HTTP/1.1 app");
    let server = Server::start(updraft)?;
    let old = work.path().join("old");
    std::fs::create_dir(&old)?;
    std::fs::write(
        old.join("main.py"),
        STEADY.replace("    protocol_version = 'HTTP/1.1'\n", ""),
    )?;
    server.cli(
        updraft,
        &[
            "deploy",
            "old",
            old.to_str().context("path")?,
            "--scale-to-zero-after",
            "1h",
        ],
    )?;
    server.cli(
        updraft,
        &[
            "deploy",
            "new",
            steady.to_str().context("path")?,
            "--scale-to-zero-after",
            "1h",
        ],
    )?;
    let http10_app_rps = ab(server.gateway, "old.default.localhost", seconds)?;
    let http11_app_rps = ab(server.gateway, "new.default.localhost", seconds)?;
    drop(server);

    let results = Results {
        slowloris_connections: slowloris,
        slowloris_cut_after_s,
        slowloris_still_open,
        idle_connections: idle,
        idle_cut_after_s,
        idle_still_open,
        nesting_answered_ms,
        nesting_statuses,
        gateway_p99_ms_quiet: quiet_summary.p99_ms,
        gateway_p99_ms_during_nesting: during_summary.p99_ms,
        gateway_max_ms_during_nesting: during_summary.max_ms,
        descriptor_sockets,
        accept_failures_logged,
        api_answered_when_flooded,
        gateway_answered_when_flooded,
        http10_app_rps,
        http11_app_rps,
        http10_over_http11: http10_app_rps / http11_app_rps,
    };
    let cut = |after: Option<f64>, open: usize| match after {
        Some(s) => format!("all cut after {s:.1} s"),
        None => format!("{open} still open after {:.0} s", wait.as_secs_f64()),
    };
    println!();
    println!("| case | result | baseline |");
    println!("|---|---|---|");
    println!(
        "| {slowloris} slow heads | {} | — |",
        cut(results.slowloris_cut_after_s, results.slowloris_still_open)
    );
    println!(
        "| {idle} idle keep-alive connections | {} | — |",
        cut(results.idle_cut_after_s, results.idle_still_open)
    );
    println!(
        "| two manifests 100,000 deep | answered {:?} in {:.0} / {:.0} ms; gateway p99 {:.2} ms (max {:.1}) | gateway p99 {:.2} ms without them |",
        results.nesting_statuses,
        results.nesting_answered_ms[0],
        results.nesting_answered_ms[1],
        results.gateway_p99_ms_during_nesting,
        results.gateway_max_ms_during_nesting,
        results.gateway_p99_ms_quiet
    );
    println!(
        "| ulimit -n 1024, {} idle sockets | {} accept failures logged in 10 s; API {}, gateway {} | — |",
        results.descriptor_sockets,
        results.accept_failures_logged,
        if results.api_answered_when_flooded {
            "answers"
        } else {
            "does not answer"
        },
        if results.gateway_answered_when_flooded {
            "answers"
        } else {
            "does not answer"
        },
    );
    println!(
        "| ab -k to an HTTP/1.0 app | {:.0} req/s ({:.2}×) | {:.0} req/s to the HTTP/1.1 app |",
        results.http10_app_rps, results.http10_over_http11, results.http11_app_rps
    );
    let path = out.join("hostile.json");
    std::fs::write(&path, serde_json::to_string_pretty(&results)?)?;
    println!("\nwrote {}", path.display());
    Ok(())
}

/// The bench holds thousands of sockets itself.
fn raise_own_open_files() {
    // SAFETY: plain getrlimit/setrlimit on this process.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Waits until the server has closed every connection, or `wait` passes; when the last
/// closed (seconds), and how many are still open.
fn wait_cut(streams: Vec<TcpStream>, wait: Duration) -> anyhow::Result<(Option<f64>, usize)> {
    let started = Instant::now();
    let mut open = streams;
    for s in &open {
        s.set_nonblocking(true)?;
    }
    let mut buf = [0u8; 1024];
    while !open.is_empty() && started.elapsed() < wait {
        open.retain_mut(|s| match s.read(&mut buf) {
            Ok(0) => false,
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
            Err(_) => false,
        });
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(match open.len() {
        0 => (Some(started.elapsed().as_secs_f64()), 0),
        n => (None, n),
    })
}

fn post(addr: SocketAddr, authorization: &str, path: &str, body: &[u8]) -> anyhow::Result<(u16, Duration)> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(300)))?;
    write!(
        stream,
        "POST {path} HTTP/1.0\r\nHost: api\r\n{authorization}Content-Length: {}\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    let status = String::from_utf8_lossy(&reply)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, started.elapsed()))
}

/// Whether a GET gets any HTTP answer within 5 s.
fn answers(addr: SocketAddr, host: &str, path: &str) -> bool {
    let (tx, rx) = std::sync::mpsc::channel();
    let host = host.to_string();
    let path = path.to_string();
    std::thread::spawn(move || {
        let _ = tx.send(get(addr, &host, &path).is_ok_and(|status| status > 0));
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap_or(false)
}

/// Requests/s of `ab -k -c 1` for `seconds`, as the issue measured it.
fn ab(gateway: SocketAddr, host: &str, seconds: f64) -> anyhow::Result<f64> {
    let out = Command::new("ab")
        .args(["-q", "-k", "-c", "1", "-t"])
        .arg(format!("{}", seconds.ceil() as u64))
        .args(["-n", "1000000", "-H"])
        .arg(format!("Host: {host}"))
        .arg(format!("http://{gateway}/"))
        .output()
        .context("running ab (Debian's apache2-utils; bench/run installs it)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(rps) = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests per second:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
    else {
        bail!("ab printed no rate: {text}{}", String::from_utf8_lossy(&out.stderr));
    };
    Ok(rps)
}
