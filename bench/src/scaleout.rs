//! `scaleout`: a step in load, from zero to C concurrent clients, on a service at zero.
//! Measures the time until the autoscaler has enough instances ready, and the
//! requests' latency meanwhile, against the same step on a service already scaled to
//! that many instances (min-scale), in the same run.

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::apps::build;
use crate::harness::Server;
use crate::proxy::read_response;
use crate::stats::{summarize, Summary};

#[derive(Serialize)]
struct Report {
    clients: usize,
    target_per_instance: usize,
    instances_needed: usize,
    /// From the step until that many instances were ready (scale-out run only).
    time_to_scale_ms: Option<f64>,
    scale_out: Summary,
    prewarmed: Summary,
    p50_ratio: f64,
    p99_ratio: f64,
}

/// `clients` keep-alive clients start together and send back to back for `duration`.
fn step(gateway: SocketAddr, host: &str, clients: usize, duration: Duration) -> anyhow::Result<Vec<f64>> {
    let barrier = Arc::new(Barrier::new(clients));
    let request = format!("GET /step HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let barrier = barrier.clone();
            let request = request.clone();
            std::thread::spawn(move || -> anyhow::Result<Vec<f64>> {
                let stream = TcpStream::connect(gateway)?;
                stream.set_nodelay(true)?;
                stream.set_read_timeout(Some(Duration::from_secs(120)))?;
                let mut writer = stream.try_clone()?;
                let mut reader = BufReader::new(stream);
                let mut samples = Vec::new();
                barrier.wait();
                let end = Instant::now() + duration;
                while Instant::now() < end {
                    let sent = Instant::now();
                    writer.write_all(request.as_bytes())?;
                    let status = read_response(&mut reader)?.0;
                    if status != 200 {
                        bail!("status {status}");
                    }
                    samples.push(sent.elapsed().as_secs_f64() * 1000.0);
                }
                Ok(samples)
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.join().map_err(|_| anyhow::anyhow!("client panicked"))??);
    }
    Ok(all)
}

fn ready_instances(server: &Server, updraft: &Path, name: &str) -> anyhow::Result<usize> {
    let service: serde_json::Value = serde_json::from_str(&server.cli(updraft, &["service", name, "-o", "json"])?)?;
    Ok(service["ready_instances"].as_u64().unwrap_or(0) as usize)
}

pub fn run(updraft: &Path, out: &Path, clients: usize, target: usize, seconds: f64) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let app = build("node", work.path())?;
    let dir = app.dir.to_str().context("app path")?.to_string();
    let needed = clients.div_ceil(target);
    let server = Server::start(updraft)?;
    let target_s = target.to_string();
    let needed_s = needed.to_string();
    let common = [
        "--target",
        target_s.as_str(),
        "--target-utilization",
        "100",
        "--window",
        "6s",
        "--max-scale",
        needed_s.as_str(),
    ];
    let mut cold = vec!["deploy", "cold", dir.as_str(), "--scale-to-zero-after", "2s"];
    cold.extend(common);
    server.cli(updraft, &cold)?;
    let mut warm = vec!["deploy", "warm", dir.as_str(), "--min-scale", needed_s.as_str()];
    warm.extend(common);
    server.cli(updraft, &warm)?;

    let deadline = Instant::now() + Duration::from_secs(120);
    while ready_instances(&server, updraft, "cold")? > 0 || ready_instances(&server, updraft, "warm")? < needed {
        if Instant::now() > deadline {
            bail!("services did not settle: cold at zero, warm at {needed}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let duration = Duration::from_secs_f64(seconds);

    let prewarmed = step(server.gateway, "warm.default.localhost", clients, duration)?;

    // The step on the service at zero, while a watcher notes when enough are ready.
    let watching = Arc::new(AtomicBool::new(true));
    let started = Instant::now();
    let watcher = {
        let watching = watching.clone();
        let (api, token) = (server.api.clone(), server.token().unwrap_or_default());
        let updraft = updraft.to_path_buf();
        std::thread::spawn(move || -> Option<f64> {
            while watching.load(Ordering::Relaxed) {
                let out = std::process::Command::new(&updraft)
                    .args(["service", "cold", "-o", "json"])
                    .env("UPDRAFT_API", &api)
                    .env("UPDRAFT_TOKEN", &token)
                    .output()
                    .ok()?;
                let service: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
                if service["ready_instances"].as_u64().unwrap_or(0) as usize >= needed {
                    return Some(started.elapsed().as_secs_f64() * 1000.0);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            None
        })
    };
    let scale_out = step(server.gateway, "cold.default.localhost", clients, duration)?;
    watching.store(false, Ordering::Relaxed);
    let time_to_scale_ms = watcher.join().ok().flatten();
    drop(server);

    let scale_out = summarize(&scale_out);
    let prewarmed = summarize(&prewarmed);
    let report = Report {
        clients,
        target_per_instance: target,
        instances_needed: needed,
        time_to_scale_ms,
        p50_ratio: scale_out.p50_ms / prewarmed.p50_ms,
        p99_ratio: scale_out.p99_ms / prewarmed.p99_ms,
        scale_out,
        prewarmed,
    };
    println!(
        "step 0 -> {clients} clients, target {target} per instance: {needed} instances needed; ready after {}",
        report
            .time_to_scale_ms
            .map_or("(not within the run)".to_string(), |ms| format!("{ms:.0} ms"))
    );
    println!(
        "{:<12} {:>9} {:>9} {:>9} {:>9}",
        "service", "requests", "p50 ms", "p99 ms", "max ms"
    );
    for (name, s) in [("from zero", &report.scale_out), ("prewarmed", &report.prewarmed)] {
        println!(
            "{:<12} {:>9} {:>9.2} {:>9.2} {:>9.2}",
            name, s.count, s.p50_ms, s.p99_ms, s.max_ms
        );
    }
    println!(
        "ratios (from zero / prewarmed): p50 {:.2}, p99 {:.2}",
        report.p50_ratio, report.p99_ratio
    );
    let path = out.join("scaleout.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    println!("wrote {}", path.display());
    Ok(())
}
