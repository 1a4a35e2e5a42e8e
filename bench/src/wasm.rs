//! `wasm`: a `wasi:http` component served by Updraft against the same component under
//! `wasmtime serve` (the wasmtime CLI of the same LTS line) in the same run: requests
//! per second and latency at C connections, warm latency, and the first request after
//! scale to zero (compiled state dropped, reloaded from the disk cache).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::harness::{free_port, get, Server};
use crate::proxy::{load, Target};
use crate::stats::{summarize, Summary};

#[derive(Serialize)]
struct Row {
    target: String,
    connections: usize,
    requests_per_second: f64,
    latency: Summary,
}

#[derive(Serialize)]
struct Report {
    rows: Vec<Row>,
    /// Updraft's requests/s over `wasmtime serve`'s, per connection count.
    updraft_over_wasmtime: Vec<(usize, f64)>,
    /// First request after scale to zero, through the gateway (µs in the summary's ms fields ×1000).
    cold: Summary,
}

struct WasmtimeServe(Child);

impl Drop for WasmtimeServe {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wasmtime_serve(wasmtime: &Path, component: &Path) -> anyhow::Result<(WasmtimeServe, SocketAddr)> {
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let child = Command::new(wasmtime)
        .args(["serve", "-S", "cli=y", "--addr", &addr.to_string()])
        .arg(component)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", wasmtime.display()))?;
    let serve = WasmtimeServe(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(addr, "wasmtime", "/").ok() != Some(200) {
        if Instant::now() > deadline {
            bail!("wasmtime serve did not come up");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((serve, addr))
}

pub fn run(
    updraft: &Path,
    out: &Path,
    wasmtime: &Path,
    connections: &[usize],
    seconds: f64,
    colds: usize,
) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let component = updraft_wasm_fixture::write_handler_component(work.path()).map_err(anyhow::Error::msg)?;
    let server = Server::start(updraft)?;
    let path = component.to_str().context("path")?;
    server.cli(
        updraft,
        &["deploy", "warm", "--wasm", path, "--scale-to-zero-after", "1h"],
    )?;
    server.cli(
        updraft,
        &["deploy", "cold", "--wasm", path, "--scale-to-zero-after", "1s"],
    )?;
    let (_serve, serve_addr) = wasmtime_serve(wasmtime, &component)?;
    let duration = Duration::from_secs_f64(seconds);
    let mut rows = Vec::new();
    let mut ratios = Vec::new();
    for &c in connections {
        let mut rps = Vec::new();
        for (name, addr, host) in [
            ("updraft", server.gateway, "warm.default.localhost".to_string()),
            ("wasmtime serve", serve_addr, "wasmtime".to_string()),
        ] {
            let target = Target { name, addr, host };
            load(&target, c, Duration::from_millis(500))?;
            let (latencies, wall) = load(&target, c, duration)?;
            let r = latencies.len() as f64 / wall;
            rps.push(r);
            rows.push(Row {
                target: name.to_string(),
                connections: c,
                requests_per_second: r,
                latency: summarize(&latencies),
            });
        }
        ratios.push((c, rps[0] / rps[1]));
    }
    let mut cold = Vec::new();
    for _ in 0..colds {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let described: serde_json::Value =
                serde_json::from_str(&server.cli(updraft, &["service", "cold", "-o", "json"])?)?;
            if described["ready_instances"].as_u64() == Some(0) {
                break;
            }
            if Instant::now() > deadline {
                bail!("the cold service did not scale to zero");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let sent = Instant::now();
        if get(server.gateway, "cold.default.localhost", "/")? != 200 {
            bail!("cold request failed");
        }
        cold.push(sent.elapsed().as_secs_f64() * 1000.0);
    }
    let report = Report {
        rows,
        updraft_over_wasmtime: ratios,
        cold: summarize(&cold),
    };
    println!(
        "{:<16} {:>5} {:>10} {:>10} {:>10}",
        "target", "conns", "req/s", "p50 µs", "p99 µs"
    );
    for r in &report.rows {
        println!(
            "{:<16} {:>5} {:>10.0} {:>10.0} {:>10.0}",
            r.target,
            r.connections,
            r.requests_per_second,
            r.latency.p50_ms * 1000.0,
            r.latency.p99_ms * 1000.0
        );
    }
    for (c, ratio) in &report.updraft_over_wasmtime {
        println!("updraft/wasmtime serve at {c} connection(s): {ratio:.2}");
    }
    println!(
        "first request after scale to zero ({} runs): p50 {:.0} µs, p99 {:.0} µs",
        report.cold.count,
        report.cold.p50_ms * 1000.0,
        report.cold.p99_ms * 1000.0
    );
    let path = out.join("wasm.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    println!("wrote {}", path.display());
    Ok(())
}
