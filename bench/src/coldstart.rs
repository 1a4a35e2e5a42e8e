//! `coldstart`: time to first response of N services at zero hit by N simultaneous
//! requests through Updraft, against starting the same N commands directly and
//! polling their ports until they answer (no platform).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::apps::{build, App};
use crate::harness::{free_port, get, Server};
use crate::stats::{summarize, Summary};

#[derive(Serialize)]
struct Row {
    kind: String,
    services: usize,
    /// The server's `--sandbox` (`on` confines each instance, `off` does not).
    sandbox: String,
    updraft: Summary,
    direct: Summary,
    /// Updraft's mean over the direct mean.
    ratio_mean: f64,
    ratio_p50: f64,
}

/// Runs `work(i)` on N threads released at the same instant; returns each one's time.
fn simultaneously(
    n: usize,
    work: impl Fn(usize) -> anyhow::Result<()> + Send + Sync + 'static,
) -> anyhow::Result<Vec<f64>> {
    let barrier = Arc::new(Barrier::new(n));
    let work = Arc::new(work);
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let barrier = barrier.clone();
            let work = work.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let started = Instant::now();
                work(i).map(|_| started.elapsed().as_secs_f64() * 1000.0)
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().map_err(|_| anyhow::anyhow!("worker panicked"))?)
        .collect()
}

fn through_updraft(updraft: &Path, app: &App, n: usize, sandbox: &str) -> anyhow::Result<Vec<f64>> {
    let dir = app.dir.to_str().context("app path is not UTF-8")?.to_string();
    let server = Server::start_with_env(updraft, &[("UPDRAFT_SANDBOX", sandbox)])?;
    cold_starts(&server, updraft, &[dir], n, 0)
}

/// N services deployed with `what` (a path, or `--function F --runtime R`), then bursts
/// of N simultaneous requests at zero; the first `warmups` bursts are not counted (they
/// let a pool grow to the demand).
pub fn cold_starts(
    server: &Server,
    updraft: &Path,
    what: &[String],
    n: usize,
    warmups: usize,
) -> anyhow::Result<Vec<f64>> {
    // Deploy a few at a time: each deploy starts and checks a first instance.
    for chunk in (0..n).collect::<Vec<_>>().chunks(4) {
        let deploys: Vec<_> = chunk
            .iter()
            .map(|i| {
                let mut args = vec!["deploy".to_string(), format!("svc-{i}")];
                args.extend(what.iter().cloned());
                args.extend(["--scale-to-zero-after", "1s"].map(String::from));
                let mut command = server.command(updraft);
                std::thread::spawn(move || command.args(&args).stdout(Stdio::null()).status())
            })
            .collect();
        for d in deploys {
            let status = d.join().map_err(|_| anyhow::anyhow!("deploy thread panicked"))??;
            if !status.success() {
                bail!("a deploy failed");
            }
        }
    }
    let mut times = Vec::new();
    for round in 0..rounds(n) + warmups {
        wait_for_zero(server, updraft, n)?;
        let gateway = server.gateway;
        let burst = simultaneously(n, move |i| {
            match get(gateway, &format!("svc-{i}.default.localhost"), "/")? {
                200 => Ok(()),
                status => bail!("svc-{i} answered {status}"),
            }
        })?;
        if round >= warmups {
            times.extend(burst);
        }
    }
    Ok(times)
}

fn wait_for_zero(server: &Server, updraft: &Path, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let list: serde_json::Value = serde_json::from_str(&server.cli(updraft, &["services", "--output", "json"])?)?;
        let instances: u64 = (0..n)
            .map(|i| {
                let svc: serde_json::Value = serde_json::from_str(
                    &server
                        .cli(updraft, &["service", &format!("svc-{i}"), "--output", "json"])
                        .unwrap_or_default(),
                )
                .unwrap_or_default();
                svc["revisions"][0]["instances"]
                    .as_array()
                    .map_or(0, |a| a.len() as u64)
            })
            .sum();
        if list.as_array().is_some_and(|a| a.len() == n) && instances == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("services did not scale to zero");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Bursts of N per row: enough that even N = 1 gives 10 samples.
fn rounds(n: usize) -> usize {
    10usize.div_ceil(n)
}

fn directly(app: &App, n: usize) -> anyhow::Result<Vec<f64>> {
    let mut times = Vec::new();
    for _ in 0..rounds(n) {
        times.extend(direct_round(app, n)?);
    }
    Ok(times)
}

fn direct_round(app: &App, n: usize) -> anyhow::Result<Vec<f64>> {
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let children = Arc::new(std::sync::Mutex::new(Vec::<Child>::new()));
    let command = app.command.clone();
    let dir = app.dir.clone();
    let spawned = children.clone();
    let times = simultaneously(n, move |i| {
        // The environment an instance gets, so both sides start the same program alike.
        let inherited = updraft_runtime::INHERITED_ENV
            .iter()
            .filter_map(|k| Some((*k, std::env::var_os(k)?)));
        let child = Command::new(&command[0])
            .args(&command[1..])
            .current_dir(&dir)
            .env_clear()
            .envs(inherited)
            .env("PORT", ports[i].to_string())
            .env("K_REVISION", format!("svc-{i}-00001"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        spawned.lock().unwrap_or_else(|p| p.into_inner()).push(child);
        let addr: SocketAddr = ([127, 0, 0, 1], ports[i]).into();
        let deadline = Instant::now() + Duration::from_secs(600);
        // The same tight poll the platform's readiness probe uses.
        loop {
            if let Ok(200) = get(addr, "direct", "/") {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("direct start {i} never answered");
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    });
    for mut child in children.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
        let _ = child.kill();
        let _ = child.wait();
    }
    times
}

pub fn run(
    updraft: &Path,
    out: &Path,
    sizes: &[usize],
    kinds: &[String],
    sandbox_modes: &[String],
) -> anyhow::Result<()> {
    if !updraft.exists() {
        bail!(
            "{} not found; build it with `cargo build --release -p updraft`",
            updraft.display()
        );
    }
    let work = tempfile::tempdir()?;
    let mut rows = Vec::new();
    println!(
        "{:<7} {:>4} {:>7} | {:>9} {:>9} {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9} {:>9} {:>9} | {:>6}",
        "app", "N", "sandbox", "mean", "p50", "p99", "min", "max", "mean", "p50", "p99", "min", "max", "ratio"
    );
    println!(
        "{:<20} | {:^49} | {:^49} |",
        "", "through updraft (ms)", "started directly (ms)"
    );
    for kind in kinds {
        let app = build(kind, work.path())?;
        for &n in sizes {
            let direct_ms = directly(&app, n)?;
            for sandbox in sandbox_modes {
                let updraft_ms = through_updraft(updraft, &app, n, sandbox)?;
                let (u, d) = (summarize(&updraft_ms), summarize(&direct_ms));
                let row = Row {
                    kind: kind.clone(),
                    services: n,
                    sandbox: sandbox.clone(),
                    ratio_mean: u.mean_ms / d.mean_ms,
                    ratio_p50: u.p50_ms / d.p50_ms,
                    updraft: u,
                    direct: d,
                };
                println!(
                    "{:<7} {:>4} {:>7} | {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} | {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} | {:>6.2}",
                    row.kind,
                    n,
                    row.sandbox,
                    row.updraft.mean_ms,
                    row.updraft.p50_ms,
                    row.updraft.p99_ms,
                    row.updraft.min_ms,
                    row.updraft.max_ms,
                    row.direct.mean_ms,
                    row.direct.p50_ms,
                    row.direct.p99_ms,
                    row.direct.min_ms,
                    row.direct.max_ms,
                    row.ratio_mean
                );
                rows.push(row);
            }
        }
    }
    let path = out.join("coldstart.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&serde_json::json!({ "scenario": "coldstart", "results": rows }))?,
    )?;
    println!("wrote {}", path.display());
    Ok(())
}
