//! `logs`: query time over a million stored log lines through the API (grep, since,
//! tail), against GNU grep reading the same file, in the same run.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::Serialize;

use crate::apps::build;
use crate::harness::{get, Server};
use crate::stats::{summarize, Summary};

#[derive(Serialize)]
struct Row {
    query: String,
    matches: usize,
    updraft: Summary,
    grep: Summary,
    ratio_mean: f64,
}

fn timed(runs: usize, mut f: impl FnMut() -> anyhow::Result<usize>) -> anyhow::Result<(usize, Vec<f64>)> {
    let mut samples = Vec::new();
    let mut found = 0;
    for _ in 0..runs {
        let start = Instant::now();
        found = f()?;
        samples.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    Ok((found, samples))
}

pub fn run(updraft: &Path, out: &Path, lines: usize, runs: usize) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let app = build("node", work.path())?;
    let server = Server::start(updraft)?;
    server.cli(updraft, &["deploy", "noisy", app.dir.to_str().context("path")?])?;
    let service: serde_json::Value = serde_json::from_str(&server.cli(updraft, &["service", "noisy", "-o", "json"])?)?;
    let revision = service["latest_revision"].as_str().context("revision")?.to_string();
    let dir = server.data_dir().join("logs/default/noisy");
    let file = dir.join(format!("{revision}-stored.log"));
    let now_us = SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros() as i64;
    {
        let mut w = BufWriter::new(std::fs::File::create(&file)?);
        for i in 0..lines {
            let needle = if i % 10_000 == 0 { " needle" } else { "" };
            writeln!(
                w,
                r#"{{"ts_us":{},"revision":"{revision}","instance":"{revision}-stored","stream":"stdout","line":"request {i} handled in {} ms{needle}"}}"#,
                now_us - (lines - i) as i64 * 1000,
                i % 97
            )?;
        }
    }
    let size = std::fs::metadata(&file)?.len();
    println!(
        "{lines} lines ({:.0} MiB) stored; {runs} runs per query",
        size as f64 / 1048576.0
    );
    let api: std::net::SocketAddr = server.api.trim_start_matches("http://").parse()?;
    let queries = [
        ("grep needle", "grep=needle", "needle"),
        ("since 10s, tail 100", "since=10s&tail=100", "handled"),
        ("grep 'in 42 ms', tail 1000", "grep=in%2042%20ms&tail=1000", "in 42 ms"),
    ];
    let mut rows = Vec::new();
    println!(
        "{:<28} {:>8} {:>12} {:>12} {:>8}",
        "query", "matches", "updraft ms", "grep ms", "ratio"
    );
    for (name, params, pattern) in queries {
        let path = format!("/v1/namespaces/default/services/noisy/logs?{params}");
        let (matches, updraft_ms) = timed(runs, || {
            let body = get_body(api, &server.authorization(), &path)?;
            let lines: Vec<serde_json::Value> = serde_json::from_str(&body)?;
            Ok(lines.len())
        })?;
        let (_, grep_ms) = timed(runs, || {
            let out = Command::new("grep")
                .arg("-c")
                .arg("-F")
                .arg(pattern)
                .arg(&file)
                .output()?;
            Ok(String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0))
        })?;
        let (u, g) = (summarize(&updraft_ms), summarize(&grep_ms));
        println!(
            "{:<28} {:>8} {:>12.1} {:>12.1} {:>8.2}",
            name,
            matches,
            u.mean_ms,
            g.mean_ms,
            u.mean_ms / g.mean_ms
        );
        rows.push(Row {
            query: name.into(),
            matches,
            ratio_mean: u.mean_ms / g.mean_ms,
            updraft: u,
            grep: g,
        });
    }
    let _ = get(api, "api", "/healthz");
    drop(server);
    let path = out.join("logs.json");
    std::fs::write(&path, serde_json::to_string_pretty(&rows)?)?;
    println!("wrote {}", path.display());
    Ok(())
}

/// A GET's body over HTTP/1.0.
fn get_body(addr: std::net::SocketAddr, authorization: &str, path: &str) -> anyhow::Result<String> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(addr)?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: api\r\n{authorization}\r\n")?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    let text = String::from_utf8_lossy(&reply);
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}
