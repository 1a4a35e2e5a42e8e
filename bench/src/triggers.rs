//! `triggers`: how late cron firings arrive after their scheduled second, at a warm
//! service and at one at zero, against a plain request through the gateway (warm) and
//! a plain cold start (at zero) in the same run; and how many broker events per second
//! are accepted and delivered end to end, against requests per second through the
//! gateway to the same app.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use std::io::Write;

use crate::harness::{get, Server};
use crate::proxy::{connect, load, read_response, Target};
use crate::stats::{summarize, Summary};

/// A Node app that reads the body and answers 200 to anything.
const APP: &str = r#"require("http").createServer((req, res) => {
  req.resume();
  req.on("end", () => res.end("ok"));
}).listen(Number(process.env.PORT), "127.0.0.1");
"#;

#[derive(Serialize)]
struct Report {
    /// Scheduled second to the subscriber's answer, warm service.
    cron_warm: Summary,
    /// A GET through the gateway to the same warm service.
    request_warm: Summary,
    /// Scheduled second to the answer, service at zero.
    cron_cold: Summary,
    /// A GET to the same service at zero.
    request_cold: Summary,
    events: usize,
    connections: usize,
    /// Events accepted per second by the ingress (each stored before its 202).
    accepted_per_second: f64,
    /// Events delivered per second, from the first POST to the last delivery.
    delivered_per_second: f64,
    /// GETs per second through the gateway to the same app, same connections.
    requests_per_second: f64,
}

fn described(server: &Server, updraft: &Path, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    Ok(serde_json::from_str(&server.cli(updraft, &all)?)?)
}

fn wait_zero(server: &Server, updraft: &Path, name: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while described(server, updraft, &["service", name])?["ready_instances"].as_u64() != Some(0) {
        if Instant::now() > deadline {
            bail!("{name} did not scale to zero");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn lags(server: &Server, updraft: &Path, trigger: &str) -> anyhow::Result<Vec<f64>> {
    let detail = described(server, updraft, &["trigger", "show", trigger, "--limit", "1000"])?;
    Ok(detail["history"]
        .as_array()
        .context("history")?
        .iter()
        .filter_map(|h| h["delivered_after_ms"].as_f64())
        .collect())
}

fn post_events(api: SocketAddr, authorization: &str, events: usize, connections: usize) -> anyhow::Result<f64> {
    let barrier = Arc::new(Barrier::new(connections + 1));
    let per = events / connections;
    let handles: Vec<_> = (0..connections)
        .map(|c| {
            let barrier = barrier.clone();
            let authorization = authorization.to_string();
            std::thread::spawn(move || -> anyhow::Result<()> {
                let (mut writer, mut reader) = connect(api)?;
                barrier.wait();
                for i in 0..per {
                    let body = r#"{"n":1}"#;
                    write!(
                        writer,
                        "POST /v1/namespaces/default/brokers/default/events HTTP/1.1\r\nHost: api\r\n{authorization}\
                         ce-specversion: 1.0\r\nce-id: {c}-{i}\r\nce-type: bench\r\nce-source: /bench\r\n\
                         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    )?;
                    let (status, closing) = read_response(&mut reader)?;
                    if status != 202 {
                        bail!("ingress answered {status}");
                    }
                    if closing {
                        (writer, reader) = connect(api)?;
                    }
                }
                Ok(())
            })
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    for handle in handles {
        handle.join().map_err(|_| anyhow::anyhow!("client thread panicked"))??;
    }
    Ok(started.elapsed().as_secs_f64())
}

pub fn run(updraft: &Path, out: &Path, seconds: f64, events: usize, connections: usize) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    std::fs::write(work.path().join("server.js"), APP)?;
    std::fs::write(work.path().join("package.json"), r#"{"main": "server.js"}"#)?;
    let dir = work.path().to_str().context("path")?;
    let server = Server::start(updraft)?;
    server.cli(updraft, &["deploy", "warm", dir, "--scale-to-zero-after", "1h"])?;
    server.cli(updraft, &["deploy", "cold", dir, "--scale-to-zero-after", "1s"])?;

    // Warm: every second. Cold: every 6 s, so the service is back at zero each time.
    server.cli(
        updraft,
        &[
            "trigger",
            "cron",
            "warm",
            "--schedule",
            "* * * * * *",
            "--target",
            "warm",
        ],
    )?;
    server.cli(
        updraft,
        &[
            "trigger",
            "cron",
            "cold",
            "--schedule",
            "*/6 * * * * *",
            "--target",
            "cold",
        ],
    )?;
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let cron_warm = lags(&server, updraft, "warm")?;
    let cron_cold = lags(&server, updraft, "cold")?;
    server.cli(updraft, &["trigger", "delete", "warm"])?;
    server.cli(updraft, &["trigger", "delete", "cold"])?;
    if cron_warm.is_empty() || cron_cold.is_empty() {
        bail!("no firings recorded; run longer (--seconds)");
    }

    let warm_target = Target {
        name: "warm",
        addr: server.gateway,
        host: "warm.default.localhost".to_string(),
    };
    let (request_warm, _) = load(&warm_target, 1, Duration::from_secs(2))?;
    let mut request_cold = Vec::new();
    for _ in 0..3 {
        wait_zero(&server, updraft, "cold")?;
        let sent = Instant::now();
        if get(server.gateway, "cold.default.localhost", "/")? != 200 {
            bail!("cold request failed");
        }
        request_cold.push(sent.elapsed().as_secs_f64() * 1000.0);
    }

    server.cli(
        updraft,
        &["trigger", "event", "sink", "--filter", "type=bench", "--target", "warm"],
    )?;
    let api: SocketAddr = server.api.trim_start_matches("http://").parse()?;
    let events = events / connections * connections;
    let started = Instant::now();
    let posting = post_events(api, &server.authorization(), events, connections)?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let listed = described(&server, updraft, &["triggers"])?;
        let delivered = listed[0]["deliveries"]["delivered"].as_u64().unwrap_or(0) as usize;
        if delivered >= events {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {delivered} of {events} events delivered");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let delivering = started.elapsed().as_secs_f64();
    let (direct, wall) = load(&warm_target, connections, Duration::from_secs(3))?;

    let report = Report {
        cron_warm: summarize(&cron_warm),
        request_warm: summarize(&request_warm),
        cron_cold: summarize(&cron_cold),
        request_cold: summarize(&request_cold),
        events,
        connections,
        accepted_per_second: events as f64 / posting,
        delivered_per_second: events as f64 / delivering,
        requests_per_second: direct.len() as f64 / wall,
    };
    println!(
        "{:<28} {:>6} {:>9} {:>9} {:>9}",
        "latency (ms)", "n", "p50", "p99", "max"
    );
    for (name, s) in [
        ("cron firing, warm", &report.cron_warm),
        ("GET via gateway, warm", &report.request_warm),
        ("cron firing, at zero", &report.cron_cold),
        ("GET via gateway, at zero", &report.request_cold),
    ] {
        println!(
            "{name:<28} {:>6} {:>9.2} {:>9.2} {:>9.2}",
            s.count, s.p50_ms, s.p99_ms, s.max_ms
        );
    }
    println!(
        "broker: {} events over {} connections: {:.0} accepted/s, {:.0} delivered/s; gateway GETs {:.0}/s (delivered/GETs {:.2})",
        report.events,
        report.connections,
        report.accepted_per_second,
        report.delivered_per_second,
        report.requests_per_second,
        report.delivered_per_second / report.requests_per_second
    );
    let path = out.join("triggers.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    println!("wrote {}", path.display());
    Ok(())
}
