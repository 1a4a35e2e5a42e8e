//! `ingest`: throughput to an app that writes many log lines per request and to the
//! same app writing none, each called directly and through the gateway, in one run.
//! If logging slowed the proxy path, the noisy app's gateway/direct ratio would fall
//! below the quiet one's. Also reports how many lines per second were stored.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use crate::harness::Server;
use crate::proxy::{load, Target};
use crate::stats::{summarize, Summary};

/// A Node app that writes `LOG_LINES` lines to stdout per request.
const APP: &str = r#"const http = require("http");
const lines = Number(process.env.LOG_LINES || 0);
const text = "x".repeat(120);
http.createServer((req, res) => {
  for (let i = 0; i < lines; i++) console.log(`${req.url} line ${i} ${text}`);
  res.end("ok");
}).listen(Number(process.env.PORT), "127.0.0.1");
"#;

#[derive(Serialize)]
struct Row {
    app: String,
    log_lines_per_request: usize,
    requests_per_second: f64,
    latency: Summary,
}

#[derive(Serialize)]
struct Report {
    rows: Vec<Row>,
    /// The gateway's share of the direct throughput, for each app.
    quiet_gateway_over_direct: f64,
    noisy_gateway_over_direct: f64,
    stored_lines_per_second: f64,
}

pub fn run(updraft: &Path, out: &Path, lines: usize, connections: usize, seconds: f64) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    std::fs::write(work.path().join("server.js"), APP)?;
    std::fs::write(work.path().join("package.json"), r#"{"main": "server.js"}"#)?;
    let dir = work.path().to_str().context("path")?;
    let server = Server::start(updraft)?;
    let lines_env = format!("LOG_LINES={lines}");
    server.cli(updraft, &["deploy", "quiet", dir, "--scale-to-zero-after", "1h"])?;
    server.cli(
        updraft,
        &[
            "deploy",
            "noisy",
            dir,
            "--env",
            &lines_env,
            "--scale-to-zero-after",
            "1h",
        ],
    )?;
    let duration = Duration::from_secs_f64(seconds);
    let mut rows = Vec::new();
    let mut rps = Vec::new();
    for (name, per_request) in [("quiet", 0), ("noisy", lines)] {
        let described: serde_json::Value =
            serde_json::from_str(&server.cli(updraft, &["service", name, "-o", "json"])?)?;
        let port = described["revisions"][0]["instances"][0]["port"]
            .as_u64()
            .context("an instance")? as u16;
        // Direct to the instance (its output is captured all the same), then through
        // the gateway: the ratio of the two is what the proxy path costs.
        for (via, addr, host) in [
            (
                "direct",
                std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                format!("127.0.0.1:{port}"),
            ),
            ("gateway", server.gateway, format!("{name}.default.localhost")),
        ] {
            let target = Target { name, addr, host };
            load(&target, connections, Duration::from_millis(500))?;
            let (latencies, wall) = load(&target, connections, duration)?;
            let r = latencies.len() as f64 / wall;
            rps.push(r);
            rows.push(Row {
                app: format!("{name} ({via})"),
                log_lines_per_request: per_request,
                requests_per_second: r,
                latency: summarize(&latencies),
            });
        }
    }
    // The stored lines of the noisy app, read back through the files.
    let logs = server.data_dir().join("logs/default/noisy");
    let stored: usize = std::fs::read_dir(&logs)?
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| {
            std::fs::read_to_string(e.path())
                .map(|t| t.lines().count())
                .unwrap_or(0)
        })
        .sum();
    drop(server);
    let report = Report {
        quiet_gateway_over_direct: rps[1] / rps[0],
        noisy_gateway_over_direct: rps[3] / rps[2],
        stored_lines_per_second: stored as f64 / (2.0 * (seconds + 0.5)),
        rows,
    };
    println!(
        "{:<18} {:>10} {:>10} {:>9} {:>9}",
        "app", "lines/req", "req/s", "p50 ms", "p99 ms"
    );
    for r in &report.rows {
        println!(
            "{:<18} {:>10} {:>10.0} {:>9.3} {:>9.3}",
            r.app, r.log_lines_per_request, r.requests_per_second, r.latency.p50_ms, r.latency.p99_ms
        );
    }
    println!(
        "gateway/direct: quiet {:.2}, noisy {:.2}; {:.0} lines/s stored",
        report.quiet_gateway_over_direct, report.noisy_gateway_over_direct, report.stored_lines_per_second
    );
    let path = out.join("ingest.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    println!("wrote {}", path.display());
    Ok(())
}
