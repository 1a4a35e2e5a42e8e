//! The client commands.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use http::Method;
use updraft_api::views::{AccessLineView, InfoView, LogLineView, NamespaceView, PackageView, ServiceView};
use updraft_model::DeploySpec;

use crate::client::{encode, full, ApiClient, CliError};
use crate::output::{print_service, print_services, print_structured};
use crate::{pack, Command, NamespaceArg, NamespaceCommand, Output};

#[derive(Args)]
pub struct DeployArgs {
    /// The service name (a DNS label: lower-case letters, digits, '-').
    name: String,
    /// A folder, or a .tar.gz, .tar or .zip archive.
    #[arg(required_unless_present_any = ["wasm", "function", "image"], conflicts_with_all = ["wasm", "function", "image"])]
    path: Option<PathBuf>,
    /// An OCI image to run with runc: a registry reference (127.0.0.1:5000/web:1.2),
    /// oci-archive:./web.tar (an OCI archive or docker save tar) or oci-layout:./dir.
    #[arg(long, value_name = "IMAGE", conflicts_with_all = ["wasm", "function"])]
    image: Option<String>,
    /// Log in to the image's registry with this user first (with --registry-password-stdin).
    #[arg(long, value_name = "USER", requires_all = ["image", "registry_password_stdin"])]
    registry_username: Option<String>,
    /// Read the registry password or token from standard input.
    #[arg(long, requires = "registry_username")]
    registry_password_stdin: bool,
    /// A WebAssembly component (wasi:http/incoming-handler) to run instead of a package.
    #[arg(long, value_name = "FILE", conflicts_with = "function")]
    wasm: Option<PathBuf>,
    /// A handler file (or a folder holding one) for a function runtime: Updraft runs
    /// the HTTP server and calls it.
    #[arg(long, value_name = "PATH", requires = "runtime")]
    function: Option<PathBuf>,
    /// The function runtime: python3 or node.
    #[arg(long, value_name = "RUNTIME", requires = "function", value_parser = ["python3", "node"])]
    runtime: Option<String>,
    /// Functions: put an exception's traceback in the 500 response, not only in the logs.
    #[arg(long, requires = "function")]
    debug: bool,
    #[command(flatten)]
    ns: NamespaceArg,
    #[command(flatten)]
    settings: SettingsArgs,
}

/// Settings a deploy or an update may change.
#[derive(Args)]
pub struct SettingsArgs {
    /// An environment variable for the instances (repeatable); `KEY-` removes one the
    /// latest revision has. A deploy keeps the settings it does not change.
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE|KEY-")]
    env: Vec<String>,
    /// Memory limit per instance (e.g. 256Mi).
    #[arg(long)]
    memory: Option<String>,
    /// CPU limit per instance (e.g. 0.5 or 500m).
    #[arg(long)]
    cpu: Option<String>,
    /// Idle time after which instances are stopped (default 60s).
    #[arg(long, value_name = "DURATION")]
    scale_to_zero_after: Option<String>,
    /// The program to run instead of the detected one; repeat for its words
    /// (`--cmd python3 --cmd app.py`).
    #[arg(long = "cmd", value_name = "WORD")]
    cmd: Vec<String>,
    /// An argument appended to the command (repeatable).
    #[arg(long = "arg", value_name = "ARG")]
    arg: Vec<String>,
    /// Requests one instance handles at once; more wait in the gateway (0 = no limit).
    #[arg(long, value_name = "N")]
    concurrency: Option<u32>,
    /// Longest a request may take, e.g. 30s (Knative's timeoutSeconds; at most 600s).
    #[arg(long, value_name = "DURATION")]
    timeout: Option<String>,
    /// Instances kept while the service is routed (autoscaling.knative.dev/min-scale).
    #[arg(long, value_name = "N")]
    min_scale: Option<u32>,
    /// Most instances (max-scale; 0 = no limit).
    #[arg(long, value_name = "N")]
    max_scale: Option<u32>,
    /// Instances a new revision starts with (initial-scale).
    #[arg(long, value_name = "N")]
    initial_scale: Option<u32>,
    /// What the autoscaler follows: concurrency or rps (metric).
    #[arg(long, value_name = "METRIC")]
    metric: Option<String>,
    /// Per instance: concurrent requests, or requests/s for --metric rps (target).
    #[arg(long, value_name = "N")]
    target: Option<String>,
    /// Percent of the target aimed for (target-utilization-percentage; default 70).
    #[arg(long, value_name = "PERCENT")]
    target_utilization: Option<String>,
    /// The stable window the load is averaged over (window; 6s to 1h, default 60s).
    #[arg(long, value_name = "DURATION")]
    window: Option<String>,
    /// How long a lower count must hold before scaling down (scale-down-delay).
    #[arg(long, value_name = "DURATION")]
    scale_down_delay: Option<String>,
    /// How an idle revision is kept: fixed (its scale-to-zero period) or
    /// hybrid-histogram (learns the gaps between calls and pre-warms before the next).
    #[arg(long, value_name = "POLICY")]
    keep_alive: Option<String>,
    /// Create the revision without sending it traffic (blue/green).
    #[arg(long)]
    no_traffic: bool,
    /// Move traffic to new revisions in steps over this time (0s: at once).
    #[arg(long, value_name = "DURATION")]
    rollout_duration: Option<String>,
    /// Requests per second the service accepts; more get 429 (0 removes the limit).
    #[arg(long, value_name = "N")]
    rate_limit: Option<u32>,
    /// Requests accepted at once above the rate (default: the rate).
    #[arg(long, value_name = "N")]
    rate_limit_burst: Option<u32>,
    /// WebAssembly: a host (or host:port, or *) outbound HTTP may reach; repeatable.
    /// `--allow-host ''` removes them all.
    #[arg(long = "allow-host", value_name = "HOST")]
    allow_host: Vec<String>,
}

impl SettingsArgs {
    pub fn spec(self, package: Option<String>, mut env_remove: Vec<String>) -> Result<DeploySpec, CliError> {
        let mut env = std::collections::BTreeMap::new();
        for pair in &self.env {
            match (pair.split_once('='), pair.strip_suffix('-')) {
                (Some((k, v)), _) => {
                    env.insert(k.to_string(), v.to_string());
                }
                (None, Some(removed)) if !removed.is_empty() => env_remove.push(removed.to_string()),
                _ => {
                    return Err(CliError {
                        code: crate::exit::USAGE,
                        message: format!("--env {pair:?}: expected KEY=VALUE, or KEY- to remove one"),
                    })
                }
            }
        }
        let autoscaling = [
            ("min-scale", self.min_scale.map(|n| n.to_string())),
            ("max-scale", self.max_scale.map(|n| n.to_string())),
            ("initial-scale", self.initial_scale.map(|n| n.to_string())),
            ("metric", self.metric),
            ("target", self.target),
            ("target-utilization-percentage", self.target_utilization),
            ("window", self.window),
            ("scale-down-delay", self.scale_down_delay),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
        .collect();
        let allow_hosts =
            (!self.allow_host.is_empty()).then(|| self.allow_host.into_iter().filter(|h| !h.is_empty()).collect());
        Ok(DeploySpec {
            package,
            wasm: None,
            image: None,
            function_runtime: None,
            function_handler: None,
            allow_hosts,
            autoscaling,
            keep_alive: self.keep_alive,
            env,
            env_remove,
            memory: self.memory,
            cpu: self.cpu,
            command: (!self.cmd.is_empty()).then_some(self.cmd),
            args: (!self.arg.is_empty()).then_some(self.arg),
            scale_to_zero_after: self.scale_to_zero_after,
            concurrency: self.concurrency,
            timeout: self.timeout,
            no_traffic: self.no_traffic,
            rollout_duration: self.rollout_duration,
            rate_limit: self.rate_limit,
            rate_limit_burst: self.rate_limit_burst,
        })
    }
}

#[derive(Args)]
pub struct InvokeArgs {
    name: String,
    #[command(flatten)]
    ns: NamespaceArg,
    /// The request path, with any query string.
    #[arg(long, default_value = "/")]
    path: String,
    #[arg(long, short = 'X', default_value = "GET")]
    method: String,
    /// The request body.
    #[arg(long, short = 'd', conflicts_with = "data_file")]
    data: Option<String>,
    /// Read the request body from a file.
    #[arg(long)]
    data_file: Option<PathBuf>,
    /// A request header (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Print the status line and headers before the body.
    #[arg(long, short = 'i')]
    include: bool,
}

#[derive(Args)]
pub struct LogsArgs {
    name: String,
    #[command(flatten)]
    ns: NamespaceArg,
    /// Only this revision's instances.
    #[arg(long)]
    revision: Option<String>,
    /// Only this instance.
    #[arg(long)]
    instance: Option<String>,
    /// Only the last N lines.
    #[arg(long)]
    tail: Option<usize>,
    /// Only lines from this time (RFC 3339) or age (10m, 2h) on.
    #[arg(long, value_name = "TIME|AGE")]
    since: Option<String>,
    /// Only lines before this time or age.
    #[arg(long, value_name = "TIME|AGE")]
    until: Option<String>,
    /// Only lines containing this text.
    #[arg(long, value_name = "TEXT")]
    grep: Option<String>,
    /// Keep printing new lines as the instances write them (Ctrl-C to stop).
    #[arg(long, short = 'f', conflicts_with = "requests")]
    follow: bool,
    /// The access log: one line per request (method, path, status, duration, instance,
    /// cold or warm) instead of the instances' output.
    #[arg(long)]
    requests: bool,
}

pub async fn run(command: Command, api: &str, output: Output) -> anyhow::Result<u8> {
    let client = ApiClient::new(api);
    match execute(command, &client, output).await {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("error: {}", e.message);
            Ok(e.code)
        }
    }
}

/// A service's path in the API, its names encoded as path segments.
pub(crate) fn service_path(ns: &NamespaceArg, name: &str) -> String {
    format!("/v1/namespaces/{}/services/{}", encode(&ns.namespace), encode(name))
}

async fn execute(command: Command, client: &ApiClient, output: Output) -> Result<u8, CliError> {
    match command {
        Command::Server(_) | Command::Sim(_) | Command::Stem => unreachable!("handled in main"),
        Command::Deploy(args) => deploy(args, client, output).await,
        Command::Update(args) => crate::manage::update(args, client, output).await,
        Command::Top(args) => crate::manage::top(args, client, output).await,
        Command::Usage(args) => crate::manage::usage(args, client, output).await,
        Command::Apply(args) => crate::apply::apply(args, client, output).await,
        Command::Registry(command) => crate::images::registry(command, client, output).await,
        Command::Trigger(command) => crate::triggers::trigger(command, client, output).await,
        Command::Source(command) => crate::triggers::source(command, client, output).await,
        Command::Triggers { ns } => crate::triggers::list(&ns, client, output).await,
        Command::Brokers { ns } => crate::triggers::brokers(&ns, client, output).await,
        Command::Broker(command) => crate::triggers::broker(command, client, output).await,
        Command::Event(command) => crate::triggers::event(command, client, output).await,
        Command::Get(get) => crate::apply::get(get, client, output).await,
        Command::Revisions { name, ns } => crate::manage::revisions(&name, &ns, client, output).await,
        Command::Revision(command) => crate::manage::revision(command, client, output).await,
        Command::Traffic(args) => crate::manage::traffic(args, client, output).await,
        Command::Rollback { name, ns, to } => crate::manage::rollback(&name, &ns, to, client, output).await,
        Command::Namespace(NamespaceCommand::Limits(args)) => {
            crate::manage::namespace_limits(args, client, output).await
        }
        Command::Services { ns } => {
            let services: Vec<ServiceView> = client
                .json(
                    Method::GET,
                    &format!("/v1/namespaces/{}/services", encode(&ns.namespace)),
                    None::<&()>,
                )
                .await?;
            if !print_structured(&services, output) {
                print_services(&services);
            }
            Ok(0)
        }
        Command::Service { name, ns } => {
            let service: ServiceView = client.json(Method::GET, &service_path(&ns, &name), None::<&()>).await?;
            if !print_structured(&service, output) {
                print_service(&service);
            }
            Ok(0)
        }
        Command::Invoke(args) => invoke(args, client, output).await,
        Command::Logs(args) => {
            let mut query = Vec::new();
            if let Some(r) = &args.revision {
                query.push(format!("revision={r}"));
            }
            if let Some(i) = &args.instance {
                query.push(format!("instance={i}"));
            }
            if let Some(t) = args.tail {
                query.push(format!("tail={t}"));
            }
            for (key, value) in [("since", &args.since), ("until", &args.until), ("grep", &args.grep)] {
                if let Some(v) = value {
                    query.push(format!("{key}={}", encode(v)));
                }
            }
            if args.requests {
                query.push("requests=true".into());
                let path = format!("{}/logs?{}", service_path(&args.ns, &args.name), query.join("&"));
                let lines: Vec<AccessLineView> = client.json(Method::GET, &path, None::<&()>).await?;
                if !print_structured(&lines, output) {
                    for l in &lines {
                        let start = if l.cold { "cold" } else { "warm" };
                        println!(
                            "{} {} {} {} {} {:.1}ms {} {start}",
                            l.time,
                            l.revision,
                            l.method,
                            l.path,
                            l.status,
                            l.duration_ms,
                            l.instance.as_deref().unwrap_or("-")
                        );
                    }
                }
                return Ok(0);
            }
            if args.follow {
                query.push("follow=true".into());
                let path = format!("{}/logs?{}", service_path(&args.ns, &args.name), query.join("&"));
                return follow_logs(client, &path, output).await;
            }
            let path = format!("{}/logs?{}", service_path(&args.ns, &args.name), query.join("&"));
            let lines: Vec<LogLineView> = client.json(Method::GET, &path, None::<&()>).await?;
            if !print_structured(&lines, output) {
                for l in &lines {
                    print_line(l, output);
                }
            }
            Ok(0)
        }
        Command::Delete { name, ns } => {
            let _: () = client
                .json(Method::DELETE, &service_path(&ns, &name), None::<&()>)
                .await?;
            if !print_structured(&serde_json::json!({"deleted": name, "namespace": ns.namespace}), output) {
                println!("Deleted service {name} from namespace {}", ns.namespace);
            }
            Ok(0)
        }
        Command::Namespaces => {
            let namespaces: Vec<NamespaceView> = client.json(Method::GET, "/v1/namespaces", None::<&()>).await?;
            if !print_structured(&namespaces, output) {
                println!("{:<30} {:<26} RATE LIMIT", "NAME", "CREATED");
                for n in &namespaces {
                    let rate = n
                        .limits
                        .rate_limit
                        .map_or("-".to_string(), |r| format!("{}/s burst {}", r.per_second, r.burst));
                    println!("{:<30} {:<26} {rate}", n.name, n.created_at);
                }
            }
            Ok(0)
        }
        Command::Namespace(NamespaceCommand::Create { name }) => {
            let ns: NamespaceView = client
                .json(
                    Method::POST,
                    "/v1/namespaces",
                    Some(&serde_json::json!({ "name": name })),
                )
                .await?;
            if !print_structured(&ns, output) {
                println!("Created namespace {}", ns.name);
            }
            Ok(0)
        }
    }
}

fn print_line(l: &LogLineView, output: Output) {
    match output {
        Output::Table | Output::Csv => {
            let marker = if l.continued { " …" } else { "" };
            println!("{} {} {} {}{marker}", l.time, l.instance, l.stream, l.line);
        }
        _ => println!("{}", serde_json::to_string(l).unwrap_or_default()),
    }
}

/// Prints server-sent log events as they come, until the stream ends or Ctrl-C.
async fn follow_logs(client: &ApiClient, path: &str, output: Output) -> Result<u8, CliError> {
    use http_body_util::BodyExt;
    use std::io::Write;
    let mut body = client.stream(path).await?;
    let mut pending = String::new();
    loop {
        let frame = tokio::select! {
            frame = body.frame() => frame,
            _ = tokio::signal::ctrl_c() => return Ok(0),
        };
        let Some(frame) = frame else { return Ok(0) };
        let frame = frame.map_err(|e| CliError::failed(format!("the log stream broke: {e}")))?;
        let Some(data) = frame.data_ref() else { continue };
        pending.push_str(&String::from_utf8_lossy(data));
        while let Some(end) = pending.find("\n\n") {
            let event: String = pending.drain(..end + 2).collect();
            let kind = event.lines().find_map(|l| l.strip_prefix("event:")).map(str::trim);
            let data: String = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            match kind {
                Some("line") => {
                    if let Ok(line) = serde_json::from_str::<LogLineView>(&data) {
                        print_line(&line, output);
                    }
                }
                Some("dropped") => eprintln!("({data} lines dropped: this follower fell behind)"),
                _ => {}
            }
        }
        let _ = std::io::stdout().flush();
    }
}

/// Refuses an upload the server would refuse for its size, before sending it: a server
/// answering 413 closes the connection while the body is still on its way, and the
/// client would then see a broken connection instead of the answer.
pub async fn check_upload_size(
    client: &ApiClient,
    file: &std::path::Path,
    what: &str,
    limit: impl Fn(&InfoView) -> (u64, &'static str),
) -> Result<(), CliError> {
    let info: InfoView = client.json(Method::GET, "/v1/info", None::<&()>).await?;
    let (max, flag) = limit(&info);
    let size = std::fs::metadata(file)
        .map_err(|e| CliError::failed(format!("{}: {e}", file.display())))?
        .len();
    if size > max {
        return Err(CliError::failed(format!(
            "{what}: the upload is {size} bytes, larger than the limit of {max} bytes (server flag {flag})"
        )));
    }
    Ok(())
}

/// Uploads a folder or archive, checking the server's size limit first; returns the digest.
pub async fn upload_package(client: &ApiClient, path: &std::path::Path) -> Result<String, CliError> {
    let package = pack::prepare(path).map_err(|e| CliError::failed(format!("{e:#}")))?;
    check_upload_size(client, package.path(), "package", |i| {
        (i.max_package_bytes, "--max-package-size")
    })
    .await?;
    let uploaded: PackageView = client.upload("/v1/packages", package.path()).await?;
    Ok(uploaded.digest)
}

/// A function's package and its handler inside it: a folder is the package (the
/// runtime finds its entry file); a single file is packed alone.
fn function_package(path: &std::path::Path) -> Result<(FunctionPackage, String), CliError> {
    if path.is_dir() {
        return Ok((FunctionPackage::Folder(path.to_path_buf()), ".".to_string()));
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| CliError::failed(format!("{}: not a file or folder", path.display())))?
        .to_string();
    let dir = tempfile::tempdir().map_err(|e| CliError::failed(e.to_string()))?;
    std::fs::copy(path, dir.path().join(&name)).map_err(|e| CliError::failed(format!("{}: {e}", path.display())))?;
    Ok((FunctionPackage::File(dir), name))
}

/// Where a function's package is, kept alive until it is uploaded.
enum FunctionPackage {
    Folder(PathBuf),
    File(tempfile::TempDir),
}

impl AsRef<std::path::Path> for FunctionPackage {
    fn as_ref(&self) -> &std::path::Path {
        match self {
            FunctionPackage::Folder(path) => path,
            FunctionPackage::File(dir) => dir.path(),
        }
    }
}

/// Uploads a component file as it is; the server checks it at deploy.
pub async fn upload_component(client: &ApiClient, path: &std::path::Path) -> Result<String, CliError> {
    let bytes = std::fs::read(path).map_err(|e| CliError::failed(format!("{}: {e}", path.display())))?;
    if !bytes.starts_with(b"\0asm") {
        return Err(CliError::failed(format!(
            "{}: is not a WebAssembly binary (it does not start with \\0asm)",
            path.display()
        )));
    }
    check_upload_size(client, path, "wasm", |i| (i.max_package_bytes, "--max-package-size")).await?;
    let uploaded: PackageView = client.upload("/v1/packages", path).await?;
    Ok(uploaded.digest)
}

async fn deploy(args: DeployArgs, client: &ApiClient, output: Output) -> Result<u8, CliError> {
    let started = Instant::now();
    // Bad settings are refused before the upload.
    let mut spec = args.settings.spec(None, Vec::new())?;
    if let Some(image) = &args.image {
        if let Some(username) = &args.registry_username {
            let mut password = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut password)
                .map_err(|e| CliError::failed(format!("reading the registry password: {e}")))?;
            let registry = image.split('/').next().unwrap_or_default();
            crate::images::login(client, registry, username, password.trim_end_matches(['\n', '\r'])).await?;
        }
        spec.image = Some(crate::images::resolve(client, image, std::path::Path::new(".")).await?);
    }
    match (&args.path, &args.wasm, &args.function) {
        _ if args.image.is_some() => {}
        (_, Some(component), _) => spec.wasm = Some(upload_component(client, component).await?),
        (_, None, Some(function)) => {
            let (package, handler) = function_package(function)?;
            spec.package = Some(upload_package(client, package.as_ref()).await?);
            spec.function_runtime = args.runtime.clone();
            spec.function_handler = Some(handler);
            if args.debug {
                spec.env.insert("UPDRAFT_DEBUG".into(), "1".into());
            }
        }
        (Some(path), None, None) => spec.package = Some(upload_package(client, path).await?),
        (None, None, None) => unreachable!("clap requires a path, --wasm, --function or --image"),
    }
    let service: ServiceView = client
        .json(Method::PUT, &service_path(&args.ns, &args.name), Some(&spec))
        .await?;
    if !print_structured(&service, output) {
        println!(
            "Deployed {} (revision {}) in {:.1}s",
            service.name,
            service.latest_revision,
            started.elapsed().as_secs_f64()
        );
        println!("URL: {}", service.url);
        print_deploy_traffic(&service);
    }
    Ok(0)
}

/// Says where traffic went when the new revision did not get it all.
pub fn print_deploy_traffic(service: &ServiceView) {
    let serving = service
        .routes
        .iter()
        .find(|r| r.revision == service.latest_revision)
        .map_or(0, |r| r.percent);
    if let Some(rollout) = &service.rollout {
        println!(
            "Rolling out: {} gets {}% of latest traffic now, all of it after {}",
            rollout.to, rollout.percent, rollout.duration
        );
    } else if serving < 100 {
        println!(
            "Traffic: {} gets {serving}% (the table is pinned; `updraft traffic {} --to latest=100` sends it all)",
            service.latest_revision, service.name
        );
    }
}

async fn invoke(args: InvokeArgs, client: &ApiClient, output: Output) -> Result<u8, CliError> {
    let method = Method::from_bytes(args.method.to_ascii_uppercase().as_bytes()).map_err(|_| CliError {
        code: crate::exit::USAGE,
        message: format!("--method {:?} is not an HTTP method", args.method),
    })?;
    let mut headers = Vec::new();
    for h in &args.headers {
        let (k, v) = h.split_once(':').ok_or_else(|| CliError {
            code: crate::exit::USAGE,
            message: format!("--header {h:?}: expected 'Name: value'"),
        })?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let body = match (&args.data, &args.data_file) {
        (Some(data), _) => full(data.clone().into_bytes()),
        (None, Some(file)) => {
            full(std::fs::read(file).map_err(|e| CliError::failed(format!("{}: {e}", file.display())))?)
        }
        (None, None) => crate::client::empty(),
    };
    let path = format!(
        "{}/invoke/{}",
        service_path(&args.ns, &args.name),
        args.path.trim_start_matches('/')
    );
    let started = Instant::now();
    let reply = client.send(method, &path, &headers, body).await?;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    // An API error about the service itself (unknown name) comes back as JSON with a code.
    if reply.status == http::StatusCode::NOT_FOUND
        && reply
            .headers
            .get("content-type")
            .is_some_and(|v| v == "application/json")
    {
        return crate::client::decode::<()>(reply).map(|_| 0);
    }
    match output {
        Output::Json | Output::Yaml => {
            print_structured(
                &serde_json::json!({
                    "status": reply.status.as_u16(),
                    "headers": reply.headers.iter().map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect::<std::collections::BTreeMap<_, _>>(),
                    "body": String::from_utf8_lossy(&reply.body),
                    "duration_ms": elapsed_ms,
                }),
                output,
            );
        }
        Output::Table | Output::Csv => {
            if args.include {
                println!("HTTP {}", reply.status);
                for (k, v) in &reply.headers {
                    println!("{k}: {}", String::from_utf8_lossy(v.as_bytes()));
                }
                println!();
            }
            use std::io::Write;
            let mut out = std::io::stdout();
            let _ = out.write_all(&reply.body);
            let _ = out.flush();
        }
    }
    Ok(if reply.status.as_u16() >= 400 {
        crate::exit::FAILED
    } else {
        0
    })
}
