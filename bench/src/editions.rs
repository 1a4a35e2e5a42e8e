//! `editions`: a service's latency while another namespace's service saturates the
//! CPUs, with the service's namespace exclusive (its own CPU) and then shared, against
//! the same service with no noise, all in one run on one server.

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;

use crate::apps::build;
use crate::harness::Server;
use crate::proxy::read_response;
use crate::stats::{summarize, Summary};

#[derive(Serialize)]
struct Report {
    rate_per_second: u32,
    seconds: f64,
    noisy_clients: usize,
    quiet: Summary,
    noisy_exclusive: Summary,
    noisy_shared: Summary,
    /// p99 under noise over p99 without, exclusive and shared.
    p99_ratio_exclusive: f64,
    p99_ratio_shared: f64,
}

/// Requests to `host` at `rate` a second on one keep-alive connection, for `duration`;
/// each one's latency.
fn paced(gateway: SocketAddr, host: &str, rate: u32, duration: Duration) -> anyhow::Result<Vec<f64>> {
    let stream = TcpStream::connect(gateway)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let request = format!("GET /hello HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let start = Instant::now();
    let mut samples = Vec::new();
    for i in 0u32.. {
        let slot = start + interval * i;
        if slot > start + duration {
            break;
        }
        if let Some(wait) = slot.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let sent = Instant::now();
        writer.write_all(request.as_bytes())?;
        if read_response(&mut reader)?.0 != 200 {
            bail!("{host} did not answer 200");
        }
        samples.push(sent.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(samples)
}

/// `clients` connections asking the noisy service to spin a CPU, back to back, until
/// `stop`; bounded by `limit` in any case.
fn noise(
    gateway: SocketAddr,
    clients: usize,
    stop: Arc<AtomicBool>,
    limit: Duration,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..clients)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let end = Instant::now() + limit;
                let Ok(stream) = TcpStream::connect(gateway) else {
                    return;
                };
                let Ok(mut writer) = stream.try_clone() else { return };
                let mut reader = BufReader::new(stream);
                let request = "GET /spin?0.2 HTTP/1.1\r\nHost: noisy.default.localhost\r\n\r\n";
                while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                    if writer.write_all(request.as_bytes()).is_err() || read_response(&mut reader).is_err() {
                        return;
                    }
                }
            })
        })
        .collect()
}

fn under_noise(server: &Server, clients: usize, rate: u32, duration: Duration) -> anyhow::Result<Vec<f64>> {
    let stop = Arc::new(AtomicBool::new(false));
    let hogs = noise(server.gateway, clients, stop.clone(), duration * 3);
    // Let the noisy instances get going first.
    std::thread::sleep(Duration::from_secs(2));
    let samples = paced(server.gateway, "probe.gold.localhost", rate, duration);
    stop.store(true, Ordering::Relaxed);
    for hog in hogs {
        let _ = hog.join();
    }
    samples
}

pub fn run(updraft: &Path, out: &Path, seconds: f64, rate: u32, clients: usize) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let app = build("python", work.path())?;
    let dir = app.dir.to_str().unwrap_or_default();
    let server = Server::start(updraft)?;
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    server.cli(updraft, &["namespace", "create", "gold"])?;
    server.cli(
        updraft,
        &[
            "namespace",
            "limits",
            "gold",
            "--exclusive-cpus",
            "1",
            "--exclusive-memory",
            "512Mi",
        ],
    )?;
    server.cli(updraft, &["deploy", "probe", dir, "-n", "gold", "--min-scale", "1"])?;
    // Enough single-threaded instances to keep every CPU of the machine busy.
    let noisy_instances = cpus.to_string();
    server.cli(
        updraft,
        &[
            "deploy",
            "noisy",
            dir,
            "--concurrency",
            "1",
            "--min-scale",
            &noisy_instances,
        ],
    )?;
    let duration = Duration::from_secs_f64(seconds);

    let quiet = paced(server.gateway, "probe.gold.localhost", rate, duration)?;
    let noisy_exclusive = under_noise(&server, clients, rate, duration)?;
    server.cli(updraft, &["namespace", "limits", "gold", "--shared"])?;
    // A new revision, so the probe's instance starts again, on the shared CPUs.
    server.cli(updraft, &["update", "probe", "-n", "gold", "--env", "EDITION=shared"])?;
    let noisy_shared = under_noise(&server, clients, rate, duration)?;

    let (quiet, noisy_exclusive, noisy_shared) =
        (summarize(&quiet), summarize(&noisy_exclusive), summarize(&noisy_shared));
    let report = Report {
        rate_per_second: rate,
        seconds,
        noisy_clients: clients,
        p99_ratio_exclusive: noisy_exclusive.p99_ms / quiet.p99_ms,
        p99_ratio_shared: noisy_shared.p99_ms / quiet.p99_ms,
        quiet,
        noisy_exclusive,
        noisy_shared,
    };
    println!(
        "{:<34} {:>8} {:>9} {:>9} {:>9}",
        "probe (python, /hello)", "count", "p50 ms", "p99 ms", "max ms"
    );
    for (name, s) in [
        ("quiet", &report.quiet),
        ("noisy neighbour, probe exclusive", &report.noisy_exclusive),
        ("noisy neighbour, probe shared", &report.noisy_shared),
    ] {
        println!(
            "{:<34} {:>8} {:>9.2} {:>9.2} {:>9.2}",
            name, s.count, s.p50_ms, s.p99_ms, s.max_ms
        );
    }
    println!(
        "p99 over quiet: exclusive {:.2}x, shared {:.2}x",
        report.p99_ratio_exclusive, report.p99_ratio_shared
    );
    std::fs::write(out.join("editions.json"), serde_json::to_string_pretty(&report)?)?;
    Ok(())
}
