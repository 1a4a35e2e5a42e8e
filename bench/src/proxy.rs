//! `proxy`: the warm request path. One Node instance deployed on Updraft is called
//! three ways in the same run: directly on its port (the baseline), through Updraft's
//! gateway, and through nginx configured as a reverse proxy with keep-alive to the
//! same port. Each client holds one keep-alive connection and sends requests back to
//! back; rounds alternate between the three so machine noise spreads evenly.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::apps::build;
use crate::harness::{free_port, get, Server};
use crate::stats::{summarize, Summary};

#[derive(Serialize)]
struct Row {
    target: String,
    connections: usize,
    requests: usize,
    requests_per_second: f64,
    latency: Summary,
}

#[derive(Serialize)]
struct Ratios {
    connections: usize,
    updraft_rps_over_direct: f64,
    updraft_p50_over_direct: f64,
    updraft_p99_over_direct: f64,
    nginx_rps_over_direct: f64,
    nginx_p50_over_direct: f64,
    updraft_rps_over_nginx: f64,
    updraft_p50_over_nginx: f64,
}

pub struct Target {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub host: String,
}

/// Reads one HTTP/1.1 response (sized or chunked); returns its status and whether the
/// server closes the connection after it.
pub fn read_response(reader: &mut BufReader<TcpStream>) -> anyhow::Result<(u16, bool)> {
    let (status, closing, _) = read_response_body(reader)?;
    Ok((status, closing))
}

/// [`read_response`], keeping the body.
pub fn read_response_body(reader: &mut BufReader<TcpStream>) -> anyhow::Result<(u16, bool, Vec<u8>)> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut length = 0usize;
    let mut chunked = false;
    let mut closing = false;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            bail!("connection closed mid-response");
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse()?;
            } else if name.eq_ignore_ascii_case("transfer-encoding") && value.trim().eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else if name.eq_ignore_ascii_case("connection") && value.trim().eq_ignore_ascii_case("close") {
                closing = true;
            }
        }
    }
    if !chunked {
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body)?;
        return Ok((status, closing, body));
    }
    // A streamed body: chunks of `size\r\n data\r\n` up to a zero-size one and its
    // (empty) trailers.
    let mut body = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)?;
        if size == 0 {
            line.clear();
            reader.read_line(&mut line)?;
            return Ok((status, closing, body));
        }
        let start = body.len();
        body.resize(start + size + 2, 0);
        reader.read_exact(&mut body[start..])?;
        body.truncate(start + size);
    }
}

pub fn connect(addr: SocketAddr) -> anyhow::Result<(TcpStream, BufReader<TcpStream>)> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    Ok((stream.try_clone()?, BufReader::new(stream)))
}

/// `connections` clients, each sending requests on one keep-alive connection for
/// `duration`; returns every request's latency in ms and the wall time.
pub fn load(target: &Target, connections: usize, duration: Duration) -> anyhow::Result<(Vec<f64>, f64)> {
    let barrier = Arc::new(Barrier::new(connections + 1));
    let request = format!("GET /bench HTTP/1.1\r\nHost: {}\r\n\r\n", target.host);
    let handles: Vec<_> = (0..connections)
        .map(|_| {
            let barrier = barrier.clone();
            let request = request.clone();
            let addr = target.addr;
            std::thread::spawn(move || -> anyhow::Result<Vec<f64>> {
                let (mut writer, mut reader) = connect(addr)?;
                let mut samples = Vec::with_capacity(100_000);
                barrier.wait();
                let end = Instant::now() + duration;
                while Instant::now() < end {
                    let sent = Instant::now();
                    writer.write_all(request.as_bytes())?;
                    let (status, closing) = read_response(&mut reader)?;
                    if status != 200 {
                        bail!("status {status} from {addr}");
                    }
                    samples.push(sent.elapsed().as_secs_f64() * 1000.0);
                    if closing {
                        (writer, reader) = connect(addr)?;
                    }
                }
                Ok(samples)
            })
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    let mut all = Vec::new();
    for handle in handles {
        all.extend(handle.join().map_err(|_| anyhow::anyhow!("client thread panicked"))??);
    }
    Ok((all, started.elapsed().as_secs_f64()))
}

struct Nginx {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(listen: SocketAddr, upstream: u16) -> anyhow::Result<Nginx> {
        let dir = tempfile::tempdir()?;
        let conf = dir.path().join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "worker_processes auto;
pid {pid};
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    upstream instance {{ server 127.0.0.1:{upstream}; keepalive 64; keepalive_requests 100000000; }}
    server {{
        listen {listen};
        location / {{
            proxy_pass http://instance;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
        }}
    }}
}}
",
                pid = dir.path().join("nginx.pid").display(),
                dir = dir.path().display(),
            ),
        )?;
        let child = Command::new("nginx")
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(dir.path())
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting nginx (Debian package nginx; bench/run installs it)")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while get(listen, "nginx", "/").ok() != Some(200) {
            if Instant::now() > deadline {
                bail!("nginx did not come up");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Nginx { child, _dir: dir })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGQUIT) };
        let _ = self.child.wait();
    }
}

pub fn run(updraft: &Path, out: &Path, connections: &[usize], seconds: f64, rounds: usize) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let app = build("node", work.path())?;
    let server = Server::start(updraft)?;
    server.cli(
        updraft,
        &[
            "deploy",
            "bench",
            app.dir.to_str().unwrap_or_default(),
            "--scale-to-zero-after",
            "1h",
        ],
    )?;
    let described: serde_json::Value =
        serde_json::from_str(&server.cli(updraft, &["service", "bench", "-o", "json"])?)?;
    let port = described["revisions"][0]["instances"][0]["port"]
        .as_u64()
        .context("the deployed service has no instance")? as u16;
    let nginx_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let nginx = Nginx::start(nginx_addr, port)?;
    let targets = [
        Target {
            name: "direct",
            addr: ([127, 0, 0, 1], port).into(),
            host: format!("127.0.0.1:{port}"),
        },
        Target {
            name: "updraft",
            addr: server.gateway,
            host: "bench.default.localhost".into(),
        },
        Target {
            name: "nginx",
            addr: nginx_addr,
            host: "bench.default.localhost".into(),
        },
    ];
    // Warm every path: connection pools, JIT, page cache.
    for target in &targets {
        load(target, 4, Duration::from_millis(500))?;
    }
    let slice = Duration::from_secs_f64(seconds / rounds as f64);
    let mut rows = Vec::new();
    let mut ratios = Vec::new();
    println!(
        "{:<8} {:>5} {:>9} {:>10} {:>8} {:>8} {:>8}",
        "target", "conns", "requests", "req/s", "p50 ms", "p99 ms", "max ms"
    );
    for &conns in connections {
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
        let mut wall = vec![0.0; targets.len()];
        for _ in 0..rounds {
            for (i, target) in targets.iter().enumerate() {
                let (latencies, secs) = load(target, conns, slice)?;
                samples[i].extend(latencies);
                wall[i] += secs;
            }
        }
        let mut by_target = Vec::new();
        for (i, target) in targets.iter().enumerate() {
            let latency = summarize(&samples[i]);
            let rps = samples[i].len() as f64 / wall[i];
            println!(
                "{:<8} {:>5} {:>9} {:>10.0} {:>8.3} {:>8.3} {:>8.3}",
                target.name,
                conns,
                samples[i].len(),
                rps,
                latency.p50_ms,
                latency.p99_ms,
                latency.max_ms
            );
            by_target.push((rps, latency.clone()));
            rows.push(Row {
                target: target.name.into(),
                connections: conns,
                requests: samples[i].len(),
                requests_per_second: rps,
                latency,
            });
        }
        let (direct, updraft_row, nginx_row) = (&by_target[0], &by_target[1], &by_target[2]);
        ratios.push(Ratios {
            connections: conns,
            updraft_rps_over_direct: updraft_row.0 / direct.0,
            updraft_p50_over_direct: updraft_row.1.p50_ms / direct.1.p50_ms,
            updraft_p99_over_direct: updraft_row.1.p99_ms / direct.1.p99_ms,
            nginx_rps_over_direct: nginx_row.0 / direct.0,
            nginx_p50_over_direct: nginx_row.1.p50_ms / direct.1.p50_ms,
            updraft_rps_over_nginx: updraft_row.0 / nginx_row.0,
            updraft_p50_over_nginx: updraft_row.1.p50_ms / nginx_row.1.p50_ms,
        });
    }
    println!();
    println!(
        "{:>5} {:>14} {:>14} {:>14} {:>12} {:>14} {:>14}",
        "conns", "updraft/direct", "p50 u/direct", "p99 u/direct", "nginx/direct", "updraft/nginx", "p50 u/nginx"
    );
    for r in &ratios {
        println!(
            "{:>5} {:>14.2} {:>14.2} {:>14.2} {:>12.2} {:>14.2} {:>14.2}",
            r.connections,
            r.updraft_rps_over_direct,
            r.updraft_p50_over_direct,
            r.updraft_p99_over_direct,
            r.nginx_rps_over_direct,
            r.updraft_rps_over_nginx,
            r.updraft_p50_over_nginx
        );
    }
    drop(nginx);
    drop(server);
    let path = out.join("proxy.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&serde_json::json!({ "rows": rows, "ratios": ratios }))?,
    )?;
    println!("\nwrote {}", path.display());
    Ok(())
}
