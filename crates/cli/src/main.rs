//! `updraft`: the server (`updraft server`) and the client commands over its REST API.

mod access;
mod apply;
mod client;
mod commands;
mod domains;
mod images;
mod manage;
mod output;
mod pack;
mod progress;
mod secrets;
mod settings;
mod sim;
mod triggers;
mod uploads;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

/// Exit codes, so scripts can tell failures apart.
pub mod exit {
    /// The server refused or failed the request.
    pub const FAILED: u8 = 1;
    /// The command line was wrong (clap's own code).
    pub const USAGE: u8 = 2;
    /// The namespace, service or revision does not exist.
    pub const NOT_FOUND: u8 = 3;
    /// The API could not be reached.
    pub const UNREACHABLE: u8 = 4;
    /// The API refused the token (401), or the token may not do this (403).
    pub const DENIED: u8 = 5;
}

#[derive(Parser)]
#[command(
    name = "updraft",
    version,
    about = "Serverless applications on one machine: deploy, get a URL, scale to zero"
)]
struct Cli {
    /// The Updraft API to talk to (default: the context's, else http://127.0.0.1:8081).
    #[arg(long, global = true, env = "UPDRAFT_API")]
    api: Option<String>,
    /// The API token (default: the context's, else ./.updraft/admin.token).
    #[arg(long, global = true, env = "UPDRAFT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A context saved by `updraft login` (default: the current one).
    #[arg(long, global = true, env = "UPDRAFT_CONTEXT")]
    context: Option<String>,
    /// Trust this certificate (PEM) for an https:// API beside the Mozilla roots: the
    /// server's own or its CA's (default: the context's).
    #[arg(long, global = true, env = "UPDRAFT_CA_CERT", value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// How to print results.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
    Yaml,
    /// Comma-separated values (`updraft usage`; a table elsewhere).
    Csv,
}

/// The namespaces a listing covers: one, or with `-A` every one the token may read.
#[derive(Args, Clone)]
pub struct ListScope {
    #[command(flatten)]
    pub ns: NamespaceArg,
    /// List in every namespace the token may read.
    #[arg(long, short = 'A')]
    pub all_namespaces: bool,
}

impl ListScope {
    /// The listing of each namespace in scope, one after the other.
    pub async fn list<T>(
        &self,
        client: &client::ApiClient,
        list: impl AsyncFn(&str) -> updraft_api::client::Result<Vec<T>>,
    ) -> Result<Vec<T>, client::CliError> {
        let namespaces = match self.all_namespaces {
            true => client.namespaces().await?.into_iter().map(|n| n.name).collect(),
            false => vec![self.ns.namespace.clone()],
        };
        let mut items = Vec::new();
        for ns in namespaces {
            items.extend(list(&ns).await?);
        }
        Ok(items)
    }
}

#[derive(Args, Clone)]
pub struct NamespaceArg {
    /// The namespace (tenant space) to act in.
    #[arg(long, short = 'n', env = "UPDRAFT_NAMESPACE", default_value = "default")]
    pub namespace: String,
}

#[derive(Subcommand)]
enum Command {
    /// Run the platform: gateway, API and scaler, with the embedded store.
    Server(ServerArgs),
    /// Replay a serverless trace through keep-alive and pooling policies.
    Sim(sim::SimArgs),
    /// A pre-warmed stem cell: waits for its order on stdin, then becomes the instance.
    #[command(hide = true)]
    Stem,
    /// Print the shell completion script (`source <(updraft completion bash)`).
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Deploy a code package (a folder, .tar.gz, .tar or .zip) as a new revision.
    Deploy(commands::DeployArgs),
    /// Change a service's settings without a new package; a new revision if they
    /// change the revision (env, limits, concurrency, timeout, scaling).
    Update(manage::UpdateArgs),
    /// Apply Knative manifests: Service, DomainMapping, PingSource, Trigger, Broker (files or folders;
    /// several documents per file).
    Apply(apply::ApplyArgs),
    /// Print a resource as a manifest (`updraft get service hello -o yaml`).
    #[command(subcommand)]
    Get(apply::GetCommand),
    /// A live table of services: requests/s, latency, instances, cold starts.
    Top(manage::TopArgs),
    /// Metered usage: vCPU- and GiB-seconds, CPU used, invocations, GB-seconds.
    Usage(manage::UsageArgs),
    /// List a service's revisions with their traffic, tags and ready instances.
    Revisions {
        name: String,
        #[command(flatten)]
        ns: NamespaceArg,
    },
    /// Manage revisions.
    #[command(subcommand)]
    Revision(manage::RevisionCommand),
    /// Set how a service's traffic splits between revisions, and tags.
    Traffic(manage::TrafficArgs),
    /// Send all of a service's traffic to the revision before the one serving now.
    Rollback {
        name: String,
        #[command(flatten)]
        ns: NamespaceArg,
        /// Roll back to this revision instead.
        #[arg(long)]
        to: Option<String>,
    },
    /// List services with their URLs and ready instances.
    Services {
        #[command(flatten)]
        scope: ListScope,
    },
    /// Describe a service: URL, revisions, instances, last cold start.
    Service {
        name: String,
        #[command(flatten)]
        ns: NamespaceArg,
    },
    /// Send a test request to a service through the gateway.
    Invoke(commands::InvokeArgs),
    /// Show the stdout and stderr of a service's instances.
    Logs(commands::LogsArgs),
    /// Delete a service, its revisions and instances.
    Delete {
        name: String,
        #[command(flatten)]
        ns: NamespaceArg,
    },
    /// Credentials for private registries (`updraft registry login ghcr.io -u me --password-stdin`).
    #[command(subcommand)]
    Registry(images::RegistryCommand),
    /// Create a cron or event trigger, or show and delete one.
    #[command(subcommand)]
    Trigger(triggers::TriggerCommand),
    /// Create a queue source (NATS) that delivers messages as CloudEvents.
    #[command(subcommand)]
    Source(triggers::SourceCommand),
    /// List triggers and sources with their next fire times and deliveries.
    Triggers {
        #[command(flatten)]
        scope: ListScope,
    },
    /// List brokers and the URLs that take CloudEvents.
    Brokers {
        #[command(flatten)]
        scope: ListScope,
    },
    /// Create, list and delete secrets, which services read as variables
    /// (`--env-secret VAR=secret/key`).
    #[command(subcommand)]
    Secret(secrets::SecretCommand),
    /// Create, configure or delete a broker.
    #[command(subcommand)]
    Broker(triggers::BrokerCommand),
    /// Route domains of your own to services (Knative's DomainMapping).
    #[command(subcommand)]
    Domain(domains::DomainCommand),
    /// Send a CloudEvent to a broker.
    #[command(subcommand)]
    Event(triggers::EventCommand),
    /// List namespaces.
    Namespaces,
    /// Check a token against an API and save both as the current context.
    Login(access::LoginArgs),
    /// List saved contexts, or make one current (`updraft contexts --use NAME`).
    Contexts {
        #[arg(long = "use", value_name = "CONTEXT")]
        select: Option<String>,
    },
    /// Create, list and revoke API tokens (admin).
    #[command(subcommand)]
    Token(access::TokenCommand),
    /// Who changed what, and when (admin).
    Audit(access::AuditArgs),
    /// Manage namespaces.
    #[command(subcommand)]
    Namespace(NamespaceCommand),
}

#[derive(Subcommand)]
enum NamespaceCommand {
    /// Create a namespace.
    Create { name: String },
    /// Show a namespace: its limits, its quotas and what it uses of them.
    Show { name: String },
    /// Set a namespace's limits, shared by all its services.
    Limits(manage::NamespaceLimitsArgs),
    /// Delete a namespace with its triggers, brokers, domains, secrets and the
    /// grants tokens hold on it; refused while it holds services unless --force.
    Delete {
        name: String,
        /// Delete its services too: their instances stop and their logs go.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SandboxMode {
    Auto,
    On,
    Off,
}

/// What `updraft` runs as the sandbox when `updraft-sandbox` is not beside it (as
/// after `cargo run -p updraft`): the same code, paying this larger binary's start.
const SANDBOX_ARG: &str = "__sandbox";

/// The sandbox command, when instances are to be confined.
fn sandbox_command(mode: SandboxMode) -> anyhow::Result<Option<Vec<PathBuf>>> {
    // SAFETY: geteuid only reads the process's credentials.
    let root = unsafe { libc::geteuid() } == 0;
    match mode {
        SandboxMode::Off => Ok(None),
        SandboxMode::Auto if !root => Ok(None),
        SandboxMode::On if !root => {
            anyhow::bail!("--sandbox on needs the server to run as root (it gives each namespace a uid of its own)")
        }
        _ => {
            let this = std::env::current_exe()?;
            let small = this.with_file_name("updraft-sandbox");
            Ok(Some(if small.is_file() {
                vec![small]
            } else {
                vec![this, SANDBOX_ARG.into()]
            }))
        }
    }
}

#[derive(Args)]
struct ServerArgs {
    /// Where the store, packages and logs live.
    #[arg(long, env = "UPDRAFT_DATA_DIR", default_value = ".updraft")]
    data_dir: PathBuf,
    /// Serve the gateway and the API over HTTPS with this certificate chain (PEM);
    /// HTTP/2 is offered by ALPN.
    #[arg(long, env = "UPDRAFT_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "UPDRAFT_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve the API without TLS on an address other machines can reach (refused
    /// otherwise: tokens would cross the network in the clear).
    #[arg(long, env = "UPDRAFT_INSECURE")]
    insecure: bool,
    /// Confine code packages and function runtimes (own uid per namespace, mount and
    /// PID namespaces, no capabilities, seccomp, no access to this machine's other
    /// ports). `auto` is on when the server runs as root, which confining needs.
    #[arg(long, env = "UPDRAFT_SANDBOX", value_enum, default_value = "auto")]
    sandbox: SandboxMode,
    /// The key secrets are sealed with: 32 bytes, raw or base64, readable by the
    /// server's user only (default: `secret.key` in the data directory, made on the
    /// first start).
    #[arg(long, env = "UPDRAFT_SECRET_KEY_FILE", value_name = "FILE")]
    secret_key_file: Option<PathBuf>,
    /// Where the gateway listens for service traffic.
    #[arg(long, env = "UPDRAFT_GATEWAY_ADDR", default_value = "127.0.0.1:8080")]
    gateway_addr: SocketAddr,
    /// Where the REST API listens.
    #[arg(long, env = "UPDRAFT_API_ADDR", default_value = "127.0.0.1:8081")]
    api_addr: SocketAddr,
    /// Services answer at {service}.{namespace}.{domain}.
    #[arg(long, env = "UPDRAFT_DOMAIN", default_value = "localhost")]
    domain: String,
    /// Largest package archive accepted (e.g. 512Mi).
    #[arg(long, env = "UPDRAFT_MAX_PACKAGE_SIZE", default_value = "512Mi")]
    max_package_size: String,
    /// Most a package may expand to when unpacked (e.g. 2Gi).
    #[arg(long, env = "UPDRAFT_MAX_UNPACKED_SIZE", default_value = "2Gi")]
    max_unpacked_size: String,
    /// How long a build from source (dependencies, `build:`) may run.
    #[arg(long, env = "UPDRAFT_BUILD_TIMEOUT", default_value = "10m", value_parser = humantime::parse_duration)]
    build_timeout: Duration,
    /// Most a build's output (a dependency layer, what `build:` adds) may hold.
    #[arg(long, env = "UPDRAFT_BUILD_MAX_SIZE", default_value = "2Gi")]
    build_max_size: String,
    /// Memory a build's processes may use together.
    #[arg(long, env = "UPDRAFT_BUILD_MEMORY", default_value = "2Gi")]
    build_memory: String,
    /// Whether builds may reach the network to fetch packages (off: a package must
    /// ship its dependencies; needs the sandbox).
    #[arg(long, env = "UPDRAFT_BUILD_NETWORK", default_value = "on", value_parser = ["on", "off"])]
    build_network: String,
    /// Largest OCI image archive accepted by an import (e.g. 8Gi).
    #[arg(long, env = "UPDRAFT_MAX_IMAGE_SIZE", default_value = "8Gi")]
    max_image_size: String,
    /// The runc binary that runs OCI images.
    #[arg(long, env = "UPDRAFT_RUNC", default_value = "runc")]
    runc: PathBuf,
    /// How long a request is held waiting for an instance before 503.
    #[arg(long, env = "UPDRAFT_ACTIVATOR_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    activator_timeout: Duration,
    /// How many requests per revision may wait for an instance at once.
    #[arg(long, env = "UPDRAFT_ACTIVATOR_CAPACITY", default_value_t = 1000)]
    activator_capacity: u32,
    /// How long a new instance may take to listen on $PORT.
    #[arg(long, env = "UPDRAFT_READY_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    ready_timeout: Duration,
    /// Time between SIGTERM and SIGKILL when an instance is stopped.
    #[arg(long, env = "UPDRAFT_STOP_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    stop_grace: Duration,
    /// How long shutdown and scale-down wait for requests in flight.
    #[arg(long, env = "UPDRAFT_DRAIN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// Longest an API request may take before it is answered 503 (a deploy carries on;
    /// the default covers `invoke` of a revision at the longest request timeout, 600s).
    #[arg(long, env = "UPDRAFT_API_TIMEOUT", default_value = "10m", value_parser = humantime::parse_duration)]
    api_timeout: Duration,
    #[command(flatten)]
    connections: ConnectionArgs,
    #[command(flatten)]
    autoscaler: AutoscalerArgs,
    #[command(flatten)]
    pool: PoolArgs,
}

/// How the gateway and the API treat client connections.
#[derive(Args)]
struct ConnectionArgs {
    /// Connections the gateway keeps open at once; more get 503 (lowered to fit the
    /// open-file limit).
    #[arg(long, env = "UPDRAFT_MAX_CONNECTIONS", default_value_t = 10_000)]
    max_connections: usize,
    /// Connections the API keeps open at once, apart from the gateway's.
    #[arg(long, env = "UPDRAFT_API_MAX_CONNECTIONS", default_value_t = 1024)]
    api_max_connections: usize,
    /// Longest a client may take to send a request's head, from its first byte.
    #[arg(long, env = "UPDRAFT_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    header_read_timeout: Duration,
    /// Longest a keep-alive connection may wait for its next request.
    #[arg(long, env = "UPDRAFT_IDLE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
    /// Idle connections the gateway keeps to each instance between requests.
    #[arg(long, env = "UPDRAFT_UPSTREAM_MAX_IDLE", default_value_t = 32)]
    upstream_max_idle: usize,
    /// How long an idle connection to an instance is kept.
    #[arg(long, env = "UPDRAFT_UPSTREAM_IDLE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    upstream_idle_timeout: Duration,
}

impl ConnectionArgs {
    fn limits(&self) -> anyhow::Result<(updraft_server::ConnectionLimits, updraft_server::ConnectionLimits)> {
        anyhow::ensure!(self.max_connections > 0, "--max-connections: must be at least 1");
        anyhow::ensure!(
            self.api_max_connections > 0,
            "--api-max-connections: must be at least 1"
        );
        for (flag, value) in [
            ("--header-read-timeout", self.header_read_timeout),
            ("--idle-timeout", self.idle_timeout),
        ] {
            anyhow::ensure!(!value.is_zero(), "{flag}: must be above 0");
        }
        let limits = |max_connections| updraft_server::ConnectionLimits {
            max_connections,
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
        };
        Ok((limits(self.max_connections), limits(self.api_max_connections)))
    }
}

/// Autoscaling defaults, named as Knative's `config-autoscaler`; a revision's
/// `autoscaling.knative.dev/*` annotations override them.
#[derive(Args)]
struct AutoscalerArgs {
    /// How often each revision's autoscaler decides.
    #[arg(long, env = "UPDRAFT_TICK_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    tick_interval: Duration,
    /// Concurrent requests per instance aimed at.
    #[arg(long, env = "UPDRAFT_CONTAINER_CONCURRENCY_TARGET_DEFAULT", default_value_t = 100.0)]
    container_concurrency_target_default: f64,
    /// Requests per second per instance aimed at, for the rps metric.
    #[arg(long, env = "UPDRAFT_REQUESTS_PER_SECOND_TARGET_DEFAULT", default_value_t = 200.0)]
    requests_per_second_target_default: f64,
    /// Percent of the target actually used, leaving room for bursts.
    #[arg(
        long,
        env = "UPDRAFT_CONTAINER_CONCURRENCY_TARGET_PERCENTAGE",
        default_value_t = 70.0
    )]
    container_concurrency_target_percentage: f64,
    /// The window load is averaged over.
    #[arg(long, env = "UPDRAFT_STABLE_WINDOW", default_value = "60s", value_parser = humantime::parse_duration)]
    stable_window: Duration,
    /// The panic window, as a percent of the stable window.
    #[arg(long, env = "UPDRAFT_PANIC_WINDOW_PERCENTAGE", default_value_t = 10.0)]
    panic_window_percentage: f64,
    /// Panic when the panic window wants this percent of the ready instances.
    #[arg(long, env = "UPDRAFT_PANIC_THRESHOLD_PERCENTAGE", default_value_t = 200.0)]
    panic_threshold_percentage: f64,
    /// Most a count may grow by in one decision, as a factor of the ready instances.
    #[arg(long, env = "UPDRAFT_MAX_SCALE_UP_RATE", default_value_t = 1000.0)]
    max_scale_up_rate: f64,
    /// Most a count may shrink by in one decision, as a divisor of the ready instances.
    #[arg(long, env = "UPDRAFT_MAX_SCALE_DOWN_RATE", default_value_t = 2.0)]
    max_scale_down_rate: f64,
    /// How idle revisions are kept unless they say otherwise: fixed or hybrid-histogram.
    #[arg(long, env = "UPDRAFT_KEEP_ALIVE_POLICY", default_value = "fixed")]
    keep_alive_policy: String,
}

/// The pre-warmed pool: stem cells already forked into their own cgroup, waiting to
/// become an instance ("fast expand, slow shrink").
#[derive(Args)]
struct PoolArgs {
    /// Stem cells kept even without demand.
    #[arg(long, env = "UPDRAFT_POOL_MIN", default_value_t = 1)]
    pool_min: usize,
    /// Most memory the pool may hold (0 turns it off).
    #[arg(long, env = "UPDRAFT_POOL_MAX_MEMORY", default_value = "256Mi")]
    pool_max_memory: String,
    /// Without demand, the pool's capacity halves this often.
    #[arg(long, env = "UPDRAFT_POOL_HALF_LIFE", default_value = "5m", value_parser = humantime::parse_duration)]
    pool_half_life: Duration,
    /// WebAssembly requests in flight the pooling allocator reserves room for (0: allocate
    /// each instance on demand).
    #[arg(long, env = "UPDRAFT_WASM_POOL_INSTANCES", default_value_t = 1000)]
    wasm_pool_instances: u32,
    /// Largest linear memory a pooled wasm instance may grow to.
    #[arg(long, env = "UPDRAFT_WASM_MAX_MEMORY", default_value = "4Gi")]
    wasm_max_memory: String,
}

fn scaling_defaults(a: &AutoscalerArgs) -> anyhow::Result<updraft_scaling::ScalingSpec> {
    let positive = [
        (
            "--container-concurrency-target-default",
            a.container_concurrency_target_default,
        ),
        (
            "--requests-per-second-target-default",
            a.requests_per_second_target_default,
        ),
        ("--panic-window-percentage", a.panic_window_percentage),
        ("--max-scale-up-rate", a.max_scale_up_rate),
        ("--max-scale-down-rate", a.max_scale_down_rate),
    ];
    for (flag, value) in positive {
        anyhow::ensure!(value > 0.0, "{flag} {value}: must be above 0");
    }
    anyhow::ensure!(
        a.container_concurrency_target_percentage > 0.0 && a.container_concurrency_target_percentage <= 100.0,
        "--container-concurrency-target-percentage {}: must be above 0 and at most 100",
        a.container_concurrency_target_percentage
    );
    anyhow::ensure!(
        a.stable_window >= Duration::from_secs(6) && a.stable_window <= Duration::from_secs(3600),
        "--stable-window: must be from 6s to 1h"
    );
    anyhow::ensure!(!a.tick_interval.is_zero(), "--tick-interval: must be above 0");
    Ok(updraft_scaling::ScalingSpec {
        target: a.container_concurrency_target_default,
        rps_target: a.requests_per_second_target_default,
        utilization: a.container_concurrency_target_percentage / 100.0,
        stable_window_us: a.stable_window.as_micros() as i64,
        panic_window_pct: a.panic_window_percentage,
        panic_threshold_pct: a.panic_threshold_percentage,
        max_scale_up_rate: a.max_scale_up_rate,
        max_scale_down_rate: a.max_scale_down_rate,
        keep_alive: updraft_scaling::KeepAlivePolicy::parse(&a.keep_alive_policy).ok_or_else(|| {
            anyhow::anyhow!(
                "--keep-alive-policy {:?}: use fixed or hybrid-histogram",
                a.keep_alive_policy
            )
        })?,
        ..Default::default()
    })
}

/// Reads one order and execs it; returns only on failure. Started by the server's pool
/// in the instance's process group and cgroup, so exec is all that is left to do.
fn become_instance() -> ExitCode {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(0) => return ExitCode::SUCCESS,
        Ok(_) => {}
        Err(e) => {
            eprintln!("stem cell: reading the order: {e}");
            return ExitCode::from(exit::FAILED);
        }
    }
    let order: updraft_server::StemOrder = match serde_json::from_str(&line) {
        Ok(order) => order,
        Err(e) => {
            eprintln!("stem cell: bad order: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    let mut command = std::process::Command::new(&order.program);
    command
        .args(&order.args)
        .env_clear()
        .envs(order.env)
        .current_dir(&order.cwd)
        .stdin(std::process::Stdio::null());
    // In a sandbox the stem is root until now, able only to become its namespace's
    // user; std drops the supplementary groups with it.
    if let (Some(uid), Some(gid)) = (order.uid, order.gid) {
        command.uid(uid).gid(gid);
    }
    let error = command.exec();
    eprintln!("cannot start {}: {error}", order.program.display());
    ExitCode::from(127)
}

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|a| a == SANDBOX_ARG) {
        std::process::exit(updraft_sandbox::run(args));
    }
    let cli = Cli::parse();
    if matches!(cli.command, Command::Stem) {
        return become_instance();
    }
    if let Command::Completion { shell } = cli.command {
        // SAFETY: sets a signal disposition before any thread is started; a closed
        // pipe then ends the command quietly.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        clap_complete::generate(shell, &mut Cli::command(), "updraft", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    if !matches!(cli.command, Command::Server(_)) {
        // A client command whose reader went away (`updraft logs s | head -1`) ends
        // quietly on SIGPIPE, as Unix tools do, instead of panicking on the write. The
        // server keeps ignoring it: its output going away must not stop it.
        // SAFETY: sets a signal disposition before any thread is started.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Server(args) => run_server(args).await,
            Command::Sim(args) => sim::run(args, cli.output),
            command => {
                let target = access::Target {
                    api: cli.api,
                    token: cli.token,
                    context: cli.context,
                    ca_cert: cli.ca_cert,
                };
                commands::run(command, &target, cli.output).await
            }
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            ExitCode::from(exit::FAILED)
        }
    }
}

async fn run_server(args: ServerArgs) -> anyhow::Result<u8> {
    use tracing_subscriber::EnvFilter;
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("UPDRAFT_LOG").unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // Its fallback for a failed write is eprintln!, which panics on a closed stderr
        // (`updraft server 2>&1 | tee log` after tee is gone) and aborts the shutdown.
        .log_internal_errors(false)
        .init();
    let (gateway_connections, api_connections) = args.connections.limits()?;
    let size = |field: &str, text: &str| {
        updraft_model::quantity::parse_memory(field, text).map_err(|e| anyhow::anyhow!("{e}"))
    };
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(updraft_server::TlsFiles { cert, key }),
        _ => None,
    };
    let sandbox = sandbox_command(args.sandbox)?;
    if args.build_network == "off" && sandbox.is_none() {
        anyhow::bail!("--build-network off needs the sandbox: without it a build runs as the server, on its network");
    }
    let config = updraft_server::ServerConfig {
        tls,
        insecure: args.insecure,
        sandbox,
        sandbox_slots: updraft_server::ServerConfig::default().sandbox_slots,
        secret_key_file: args.secret_key_file,
        data_dir: args.data_dir,
        gateway_addr: args.gateway_addr,
        api_addr: args.api_addr,
        domain: args.domain,
        max_package_bytes: size("--max-package-size", &args.max_package_size)?,
        max_unpacked_bytes: size("--max-unpacked-size", &args.max_unpacked_size)?,
        build_limits: updraft_server::BuildLimits {
            timeout: args.build_timeout,
            max_bytes: size("--build-max-size", &args.build_max_size)?,
            memory_bytes: size("--build-memory", &args.build_memory)?,
            network: args.build_network == "on",
        },
        activator: updraft_server::ActivatorConfig {
            capacity: args.activator_capacity,
            timeout: args.activator_timeout,
        },
        ready_timeout: args.ready_timeout,
        stop_grace: args.stop_grace,
        drain_timeout: args.drain_timeout,
        tick: args.autoscaler.tick_interval,
        scaling: scaling_defaults(&args.autoscaler)?,
        pool: updraft_server::PoolConfig {
            stem_command: vec![std::env::current_exe()?, "stem".into()],
            min: args.pool.pool_min,
            max_memory_bytes: match args.pool.pool_max_memory.trim() {
                "0" => 0,
                text => size("--pool-max-memory", text)?,
            },
            half_life: args.pool.pool_half_life,
        },
        wasm_pool: updraft_server::WasmPoolConfig {
            instances: args.pool.wasm_pool_instances,
            max_memory_bytes: size("--wasm-max-memory", &args.pool.wasm_max_memory)?,
        },
        runc: args.runc,
        max_image_bytes: size("--max-image-size", &args.max_image_size)?,
        api_timeout: args.api_timeout,
        gateway_connections,
        api_connections,
        upstream: updraft_server::UpstreamPool {
            max_idle_per_instance: args.connections.upstream_max_idle,
            idle_timeout: args.connections.upstream_idle_timeout,
        },
    };
    updraft_server::run(config, stop_signals()?).await?;
    Ok(0)
}

/// Counts SIGINT (Ctrl-C) and SIGTERM: the first asks for a graceful shutdown, the
/// second for an immediate one.
fn stop_signals() -> anyhow::Result<tokio::sync::watch::Receiver<u32>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let (count, signals) = tokio::sync::watch::channel(0u32);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            count.send_modify(|n| *n += 1);
        }
    });
    Ok(signals)
}
