//! `deploys`: one wasm component deployed as N services, one after another through the
//! API, as a CI system or an operator's script would. Deploys/s of the first thousand
//! is the baseline for the last thousand: a deploy should cost the same however many
//! services exist.

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::harness::{get, Server};
use crate::proxy::read_response_body;

#[derive(Serialize)]
struct Results {
    services: usize,
    window: usize,
    first_window_deploys_per_second: f64,
    last_window_deploys_per_second: f64,
    last_over_first: f64,
    /// Deploys/s of each window, in order.
    windows: Vec<f64>,
    total_seconds: f64,
}

/// A keep-alive HTTP/1.1 connection to the API.
struct Api {
    addr: SocketAddr,
    /// The `Authorization` header line, or nothing for a server without tokens.
    authorization: String,
    stream: BufReader<TcpStream>,
}

impl Api {
    fn connect(addr: SocketAddr, authorization: String) -> anyhow::Result<Api> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(120)))?;
        stream.set_nodelay(true)?;
        Ok(Api {
            addr,
            authorization,
            stream: BufReader::new(stream),
        })
    }

    /// Sends one request and returns the status and body.
    fn call(&mut self, method: &str, path: &str, body: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: api\r\n{}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.authorization,
            body.len()
        );
        let sent = self
            .stream
            .get_mut()
            .write_all(head.as_bytes())
            .and_then(|()| self.stream.get_mut().write_all(body));
        if sent.is_err() {
            // The API closed an idle connection; one retry on a new one.
            *self = Api::connect(self.addr, self.authorization.clone())?;
            self.stream.get_mut().write_all(head.as_bytes())?;
            self.stream.get_mut().write_all(body)?;
        }
        let (status, _, reply) = read_response_body(&mut self.stream)?;
        Ok((status, reply))
    }
}

pub fn run(updraft: &Path, out: &Path, services: usize, window: usize) -> anyhow::Result<()> {
    if services < 2 * window || window == 0 {
        bail!("--services must be at least twice --window, and --window at least 1");
    }
    println!("deploys: one wasm component as {services} services, one after another");
    let work = tempfile::tempdir()?;
    let component = updraft_wasm_fixture::write_handler_component(work.path()).map_err(anyhow::Error::msg)?;
    let server = Server::start(updraft)?;
    let api_addr: SocketAddr = server.api.trim_start_matches("http://").parse()?;
    let mut api = Api::connect(api_addr, server.authorization())?;
    let (status, reply) = api.call("POST", "/v1/packages", &std::fs::read(&component)?)?;
    if status != 201 {
        bail!("uploading the component: {status} {}", String::from_utf8_lossy(&reply));
    }
    let digest = serde_json::from_slice::<serde_json::Value>(&reply)?["digest"]
        .as_str()
        .context("the upload answer has no digest")?
        .to_string();
    // Instances of services nobody calls go as soon as they may, so what is measured is
    // the deploy path, not thousands of idle instances.
    let spec = serde_json::json!({ "wasm": digest, "scale_to_zero_after": "1s" }).to_string();

    let started = Instant::now();
    let mut windows = Vec::new();
    let mut window_started = Instant::now();
    for n in 0..services {
        let (status, reply) = api.call("PUT", &format!("/v1/namespaces/default/services/s{n}"), spec.as_bytes())?;
        if status != 200 {
            bail!("deploy {n}: {status} {}", String::from_utf8_lossy(&reply));
        }
        if (n + 1) % window == 0 {
            let rate = window as f64 / window_started.elapsed().as_secs_f64();
            windows.push(rate);
            println!("  {:>6} services: {rate:.0} deploys/s", n + 1);
            window_started = Instant::now();
        }
    }
    let total_seconds = started.elapsed().as_secs_f64();
    // Every service answers: the last one deployed and the first.
    for name in [format!("s{}", services - 1), "s0".to_string()] {
        let status = get(server.gateway, &format!("{name}.default.localhost"), "/")?;
        if status != 200 {
            bail!("{name} answers {status} after the run");
        }
    }
    let first = windows[0];
    let last = *windows.last().expect("at least two windows");
    let results = Results {
        services,
        window,
        first_window_deploys_per_second: first,
        last_window_deploys_per_second: last,
        last_over_first: last / first,
        windows,
        total_seconds,
    };
    println!();
    println!("| deploys | deploys/s | vs the first {window} |");
    println!("|---|---|---|");
    println!("| first {window} | {first:.0} | 1.00× |");
    println!("| last {window} (to {services}) | {last:.0} | {:.2}× |", last / first);
    println!(
        "| all {services} | {:.0} | in {total_seconds:.0} s |",
        services as f64 / total_seconds
    );
    std::fs::create_dir_all(out)?;
    let path = out.join("deploys.json");
    std::fs::write(&path, serde_json::to_string_pretty(&results)?)?;
    println!("\nwrote {}", path.display());
    Ok(())
}
