//! The client commands.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use http::Method;
use updraft_api::client::{decode, empty, full};
use updraft_api::requests::LogsQuery;
use updraft_api::views::LogLineView;

use crate::client::{ApiClient, CliError};
use crate::output::{print_deploy_traffic, print_service, print_services, print_structured, print_table};
use crate::settings::SettingsArgs;
use crate::uploads::{function_package, upload_component, upload_package};
use crate::{Command, NamespaceArg, NamespaceCommand, Output};

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
    #[arg(long, value_name = "PATH")]
    function: Option<PathBuf>,
    /// The function runtime: python3 or node (default: from the handler's extension,
    /// or a folder's main.py, handler.py, index.js or index.mjs).
    #[arg(long, value_name = "RUNTIME", requires = "function", value_parser = ["python3", "node"])]
    runtime: Option<String>,
    /// Functions: put an exception's traceback in the 500 response, not only in the logs.
    #[arg(long, requires = "function")]
    debug: bool,
    /// Say what the ignore rules (.updraftignore, .gitignore, the defaults) left out of
    /// the folder.
    #[arg(long, short = 'v')]
    verbose: bool,
    #[command(flatten)]
    ns: NamespaceArg,
    #[command(flatten)]
    settings: SettingsArgs,
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
    tail: Option<u32>,
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
    /// What the revisions' builds printed (installing dependencies, `build:`).
    #[arg(long, conflicts_with = "requests")]
    build: bool,
}

pub async fn run(command: Command, target: &crate::access::Target, output: Output) -> anyhow::Result<u8> {
    let outcome = match command {
        Command::Login(args) => crate::access::login(args, target.ca_cert.clone(), output).await,
        Command::Contexts { select } => crate::access::contexts(select, output),
        command => match crate::access::client(target) {
            Ok(client) => execute(command, &client, output).await,
            Err(e) => Err(e),
        },
    };
    match outcome {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("error: {}", e.message);
            Ok(e.code)
        }
    }
}

async fn execute(command: Command, client: &ApiClient, output: Output) -> Result<u8, CliError> {
    match command {
        Command::Server(_)
        | Command::Sim(_)
        | Command::Stem
        | Command::Completion { .. }
        | Command::Login(_)
        | Command::Contexts { .. } => {
            unreachable!("handled before a client is made")
        }
        Command::Token(command) => crate::access::token(command, client, output).await,
        Command::Audit(args) => crate::access::audit(args, client, output).await,
        Command::Deploy(args) => deploy(args, client, output).await,
        Command::Update(args) => crate::manage::update(args, client, output).await,
        Command::Top(args) => crate::manage::top(args, client, output).await,
        Command::Usage(args) => crate::manage::usage(args, client, output).await,
        Command::Apply(args) => crate::apply::apply(args, client, output).await,
        Command::Registry(command) => crate::images::registry(command, client, output).await,
        Command::Trigger(command) => crate::triggers::trigger(command, client, output).await,
        Command::Source(command) => crate::triggers::source(command, client, output).await,
        Command::Triggers { scope } => crate::triggers::list(&scope, client, output).await,
        Command::Brokers { scope } => crate::triggers::brokers(&scope, client, output).await,
        Command::Broker(command) => crate::triggers::broker(command, client, output).await,
        Command::Domain(command) => crate::domains::domain(command, client, output).await,
        Command::Secret(command) => crate::secrets::secret(command, client, output).await,
        Command::Event(command) => crate::triggers::event(command, client, output).await,
        Command::Get(get) => crate::apply::get(get, client, output).await,
        Command::Revisions { name, ns } => crate::manage::revisions(&name, &ns, client, output).await,
        Command::Revision(command) => crate::manage::revision(command, client, output).await,
        Command::Traffic(args) => crate::manage::traffic(args, client, output).await,
        Command::Rollback { name, ns, to } => crate::manage::rollback(&name, &ns, to, client, output).await,
        Command::Namespace(NamespaceCommand::Show { name }) => {
            crate::manage::namespace_show(&name, client, output).await
        }
        Command::Namespace(NamespaceCommand::Limits(args)) => {
            crate::manage::namespace_limits(args, client, output).await
        }
        Command::Services { scope } => {
            let services = scope.list(client, async |ns| client.services(ns).await).await?;
            if !print_structured(&services, output) {
                print_services(&services, scope.all_namespaces);
            }
            Ok(0)
        }
        Command::Service { name, ns } => {
            let service = client.service(&ns.namespace, &name).await?;
            if !print_structured(&service, output) {
                print_service(&service);
            }
            Ok(0)
        }
        Command::Invoke(args) => invoke(args, client, output).await,
        Command::Logs(args) => {
            let query = LogsQuery {
                revision: args.revision.clone(),
                instance: args.instance.clone(),
                tail: args.tail,
                since: args.since.clone(),
                until: args.until.clone(),
                grep: args.grep.clone(),
                build: args.build,
                ..Default::default()
            };
            let (ns, name) = (&args.ns.namespace, &args.name);
            if args.requests {
                let lines = client.access_log(ns, name, &query).await?;
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
                return follow_logs(client.follow_logs(ns, name, &query).await?, output).await;
            }
            let lines = client.logs(ns, name, &query).await?;
            if !print_structured(&lines, output) {
                for l in &lines {
                    print_line(l, output);
                }
            }
            Ok(0)
        }
        Command::Delete { name, ns } => {
            client.delete_service(&ns.namespace, &name).await?;
            if !print_structured(&serde_json::json!({"deleted": name, "namespace": ns.namespace}), output) {
                println!("Deleted service {name} from namespace {}", ns.namespace);
            }
            Ok(0)
        }
        Command::Namespaces => {
            let namespaces = client.namespaces().await?;
            if !print_structured(&namespaces, output) {
                print_table(
                    &["NAME", "CREATED", "RATE LIMIT"],
                    namespaces.iter().map(|n| {
                        let rate = n
                            .limits
                            .rate_limit
                            .map_or("-".to_string(), |r| format!("{}/s burst {}", r.per_second, r.burst));
                        vec![n.name.clone(), n.created_at.clone(), rate]
                    }),
                );
            }
            Ok(0)
        }
        Command::Namespace(NamespaceCommand::Delete { name, force }) => {
            client.delete_namespace(&name, force).await?;
            if !print_structured(&serde_json::json!({ "deleted": name }), output) {
                println!("Deleted namespace {name}");
            }
            Ok(0)
        }
        Command::Namespace(NamespaceCommand::Create { name }) => {
            let ns = client.create_namespace(&name).await?;
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
async fn follow_logs(mut body: hyper::body::Incoming, output: Output) -> Result<u8, CliError> {
    use http_body_util::BodyExt;
    use std::io::Write;
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

/// The runtime a handler file's extension, or a folder's entry file, names.
fn function_runtime_of(handler: &std::path::Path) -> Result<String, CliError> {
    let by_extension = |path: &std::path::Path| match path.extension().and_then(|e| e.to_str()) {
        Some("py") => Some("python3"),
        Some("js" | "mjs" | "cjs") => Some("node"),
        _ => None,
    };
    let found = if handler.is_dir() {
        ["main.py", "handler.py", "index.js", "index.mjs", "handler.js"]
            .iter()
            .map(|entry| handler.join(entry))
            .find(|entry| entry.is_file())
            .and_then(|entry| by_extension(&entry))
    } else {
        by_extension(handler)
    };
    found.map(str::to_string).ok_or_else(|| {
        CliError::usage(format!(
            "--function {}: cannot tell its runtime from its name; give --runtime python3 or node",
            handler.display()
        ))
    })
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
        let pull_first = spec.registry_secret.as_deref().unwrap_or_default().is_empty();
        spec.image = Some(crate::images::resolve(client, image, std::path::Path::new("."), pull_first).await?);
    }
    match (&args.path, &args.wasm, &args.function) {
        _ if args.image.is_some() => {}
        (_, Some(component), _) => spec.wasm = Some(upload_component(client, component).await?),
        (_, None, Some(function)) => {
            let (package, handler) = function_package(function)?;
            spec.package = Some(upload_package(client, package.as_ref(), args.verbose).await?);
            spec.function_runtime = Some(match &args.runtime {
                Some(runtime) => runtime.clone(),
                None => function_runtime_of(function)?,
            });
            spec.function_handler = Some(handler);
            if args.debug {
                spec.env.insert("UPDRAFT_DEBUG".into(), "1".into());
            }
        }
        (Some(path), None, None) => spec.package = Some(upload_package(client, path, args.verbose).await?),
        (None, None, None) => unreachable!("clap requires a path, --wasm, --function or --image"),
    }
    let events = client.deploy_watched(&args.ns.namespace, &args.name, &spec).await?;
    let service = crate::progress::follow_deploy(events, output, args.verbose).await?;
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
        (None, None) => empty(),
    };
    let started = Instant::now();
    let reply = client
        .invoke(&args.ns.namespace, &args.name, method, &args.path, &headers, body)
        .await?;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    // An API error about the service itself (unknown name) comes back as JSON with a code.
    if reply.status == http::StatusCode::NOT_FOUND
        && reply
            .headers
            .get("content-type")
            .is_some_and(|v| v == "application/json")
    {
        return Ok(decode::<()>(reply).map(|_| 0)?);
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
