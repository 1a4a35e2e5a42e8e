//! Commands that change a service without a new package: settings, revisions,
//! traffic, rollback, and namespace limits.

use clap::{Args, Subcommand};
use updraft_api::requests::UsageQuery;
use updraft_api::views::{TopView, UsageView};
use updraft_model::annotations::RateLimit;
use updraft_model::exclusive::Exclusive;
use updraft_model::traffic::{edit, Target};
use updraft_model::NamespaceLimits;

use crate::client::{ApiClient, CliError};
use crate::output::{print_deploy_traffic, print_revisions, print_routes, print_structured};
use crate::settings::SettingsArgs;
use crate::{exit, NamespaceArg, Output};

#[derive(Args)]
pub struct UpdateArgs {
    name: String,
    #[command(flatten)]
    ns: NamespaceArg,
    #[command(flatten)]
    settings: SettingsArgs,
    /// Remove an environment variable (repeatable).
    #[arg(long, value_name = "KEY")]
    env_remove: Vec<String>,
}

#[derive(Args)]
pub struct TopArgs {
    #[command(flatten)]
    ns: NamespaceArg,
    /// Print one table and exit (as when the output is not a terminal).
    #[arg(long)]
    once: bool,
    /// Time between refreshes.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: std::time::Duration,
}

#[derive(Args)]
pub struct UsageArgs {
    /// Only this namespace (all by default).
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// From this time (RFC 3339) or age (7d, 24h) on.
    #[arg(long, value_name = "TIME|AGE")]
    since: Option<String>,
    /// Sum by service, revision, day or hour.
    #[arg(long, default_value = "service")]
    by: String,
}

#[derive(Subcommand)]
pub enum RevisionCommand {
    /// Delete a revision that has no traffic and is not the latest.
    Delete {
        name: String,
        #[command(flatten)]
        ns: NamespaceArg,
    },
}

#[derive(Args)]
pub struct TrafficArgs {
    name: String,
    #[command(flatten)]
    ns: NamespaceArg,
    /// A share: REVISION=PERCENT, or latest=PERCENT to follow new deploys (repeatable;
    /// replaces all shares; they must add up to 100).
    #[arg(long = "to", value_name = "REVISION=PERCENT")]
    to: Vec<String>,
    /// Give a revision (or latest) its own URL {tag}-{service}.{namespace}.{domain}.
    #[arg(long = "tag", value_name = "REVISION=TAG")]
    tag: Vec<String>,
    /// Remove a tag (repeatable).
    #[arg(long = "untag", value_name = "TAG")]
    untag: Vec<String>,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("change").required(true).multiple(true)
    .args(["rate_limit", "log_max_age", "log_max_size", "quota_services", "quota_invocations_per_minute",
        "quota_fires_per_minute", "quota_package_size", "quota_instances", "quota_memory", "quota_cpu",
        "exclusive_cpus", "shared", "clear"])))]
pub struct NamespaceLimitsArgs {
    name: String,
    /// Requests per second all the namespace's services take together (0 removes it).
    #[arg(long, value_name = "N")]
    rate_limit: Option<u32>,
    /// Requests accepted at once above the rate (default: the rate).
    #[arg(long, value_name = "N", requires = "rate_limit")]
    rate_limit_burst: Option<u32>,
    /// Delete instance logs older than this (e.g. 7d; 0s removes the limit).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    log_max_age: Option<std::time::Duration>,
    /// Delete the oldest instance logs past this total (e.g. 1Gi; 0 removes the limit).
    #[arg(long, value_name = "SIZE")]
    log_max_size: Option<String>,
    /// Quota: services at once (0 removes it).
    #[arg(long, value_name = "N")]
    quota_services: Option<u32>,
    /// Quota: requests a minute to all its services together; more get 429 (0 removes it).
    #[arg(long, value_name = "N")]
    quota_invocations_per_minute: Option<u32>,
    /// Quota: events a minute its brokers take; more get 429 (0 removes it).
    #[arg(long, value_name = "N")]
    quota_fires_per_minute: Option<u32>,
    /// Quota: the largest package, component or imported image a deploy may use (e.g.
    /// 50Mi; 0 removes it).
    #[arg(long, value_name = "SIZE")]
    quota_package_size: Option<String>,
    /// Quota: instances running at once, of all its services (0 removes it).
    #[arg(long, value_name = "N")]
    quota_instances: Option<u32>,
    /// Quota: the memory limits of its running instances, added up (e.g. 2Gi; 0
    /// removes it). With it, every service needs --memory.
    #[arg(long, value_name = "SIZE")]
    quota_memory: Option<String>,
    /// Quota: the CPU limits of its running instances, added up (e.g. 2 or 500m; 0
    /// removes it). With it, every service needs --cpu.
    #[arg(long, value_name = "CPU")]
    quota_cpu: Option<String>,
    /// Exclusive edition: CPUs of this machine only the namespace's instances run on
    /// (with --exclusive-memory).
    #[arg(long, value_name = "N", requires = "exclusive_memory", conflicts_with = "shared")]
    exclusive_cpus: Option<u32>,
    /// Exclusive edition: memory reserved for the namespace's instances, which shared
    /// namespaces cannot take (e.g. 2Gi).
    #[arg(long, value_name = "SIZE", requires = "exclusive_cpus")]
    exclusive_memory: Option<String>,
    /// Back to the shared edition: the namespace gives up its CPUs and memory.
    #[arg(long)]
    shared: bool,
    /// Remove all of the namespace's limits.
    #[arg(long, conflicts_with_all = ["rate_limit", "log_max_age", "log_max_size", "quota_services",
        "quota_invocations_per_minute", "quota_fires_per_minute", "quota_package_size", "quota_instances",
        "quota_memory", "quota_cpu", "exclusive_cpus", "shared"])]
    clear: bool,
}

pub async fn update(args: UpdateArgs, client: &ApiClient, output: Output) -> Result<u8, CliError> {
    let spec = args.settings.spec(None, args.env_remove)?;
    let before = client.service(&args.ns.namespace, &args.name).await?;
    let events = client.deploy_watched(&args.ns.namespace, &args.name, &spec).await?;
    let service = crate::progress::follow_deploy(events, output, false).await?;
    if !print_structured(&service, output) {
        if service.latest_revision == before.latest_revision {
            println!(
                "Updated {} (no new revision: the revision template is unchanged)",
                service.name
            );
        } else {
            println!("Updated {} (revision {})", service.name, service.latest_revision);
            print_deploy_traffic(&service);
        }
    }
    Ok(0)
}

pub async fn revisions(name: &str, ns: &NamespaceArg, client: &ApiClient, output: Output) -> Result<u8, CliError> {
    let revisions = client.revisions(&ns.namespace, name).await?;
    if !print_structured(&revisions, output) {
        print_revisions(&revisions);
    }
    Ok(0)
}

pub async fn revision(command: RevisionCommand, client: &ApiClient, output: Output) -> Result<u8, CliError> {
    match command {
        RevisionCommand::Delete { name, ns } => {
            client.delete_revision(&ns.namespace, &name).await?;
            if !print_structured(&serde_json::json!({"deleted": name, "namespace": ns.namespace}), output) {
                println!("Deleted revision {name}");
            }
            Ok(0)
        }
    }
}

fn pair(flag: &str, text: &str) -> Result<(Target, String), CliError> {
    let (target, value) = text
        .split_once('=')
        .ok_or_else(|| CliError::usage(format!("--{flag} {text:?}: expected REVISION={}", flag.to_uppercase())))?;
    Ok((Target::parse(target.trim()), value.trim().to_string()))
}

pub async fn traffic(args: TrafficArgs, client: &ApiClient, output: Output) -> Result<u8, CliError> {
    let mut shares = Vec::new();
    for text in &args.to {
        let (target, percent) = pair("to", text)?;
        let percent = percent.trim_end_matches('%').parse::<u32>().map_err(|_| {
            CliError::usage(format!(
                "--to {text:?}: the percent must be a whole number from 0 to 100"
            ))
        })?;
        shares.push((target, percent));
    }
    let tags = args.tag.iter().map(|t| pair("tag", t)).collect::<Result<Vec<_>, _>>()?;
    let current = client.service(&args.ns.namespace, &args.name).await?;
    let table = edit(&current.traffic, &shares, &tags, &args.untag).map_err(CliError::usage)?;
    let service = client.set_traffic(&args.ns.namespace, &args.name, table).await?;
    if !print_structured(&service, output) {
        print_routes(&service);
    }
    Ok(0)
}

pub async fn rollback(
    name: &str,
    ns: &NamespaceArg,
    to: Option<String>,
    client: &ApiClient,
    output: Output,
) -> Result<u8, CliError> {
    let service = client.rollback(&ns.namespace, name, to).await?;
    if !print_structured(&service, output) {
        let to = service
            .routes
            .iter()
            .max_by_key(|r| r.percent)
            .map_or("", |r| r.revision.as_str());
        println!("Rolled back {name}: all traffic to {to}");
        print_routes(&service);
    }
    Ok(0)
}

pub async fn namespace_limits(args: NamespaceLimitsArgs, client: &ApiClient, output: Output) -> Result<u8, CliError> {
    // The API replaces the limits whole: start from the current ones.
    let namespaces = client.namespaces().await?;
    let mut limits = match namespaces.into_iter().find(|n| n.name == args.name) {
        Some(ns) if !args.clear => ns.limits,
        Some(_) => NamespaceLimits::default(),
        None => {
            return Err(CliError {
                code: exit::NOT_FOUND,
                message: format!("namespace {:?} does not exist", args.name),
            })
        }
    };
    if let Some(rate) = args.rate_limit {
        limits.rate_limit = (rate > 0).then(|| RateLimit {
            per_second: rate,
            burst: args.rate_limit_burst.unwrap_or(rate),
        });
    }
    if let Some(age) = args.log_max_age {
        limits.log_max_age_seconds = (!age.is_zero()).then(|| age.as_secs().max(1));
    }
    if let Some(size) = &args.log_max_size {
        let bytes =
            updraft_model::quantity::parse_bytes("--log-max-size", size).map_err(|e| CliError::usage(e.to_string()))?;
        limits.log_max_bytes = (bytes > 0).then_some(bytes);
    }
    let quota = &mut limits.quota;
    for (cap, given) in [
        (&mut quota.services, args.quota_services),
        (&mut quota.invocations_per_minute, args.quota_invocations_per_minute),
        (&mut quota.fires_per_minute, args.quota_fires_per_minute),
        (&mut quota.instances, args.quota_instances),
    ] {
        if let Some(n) = given {
            *cap = (n > 0).then_some(n);
        }
    }
    if let Some(size) = &args.quota_package_size {
        let bytes = updraft_model::quantity::parse_bytes("--quota-package-size", size)
            .map_err(|e| CliError::usage(e.to_string()))?;
        quota.package_bytes = (bytes > 0).then_some(bytes);
    }
    if let Some(size) = &args.quota_memory {
        let bytes =
            updraft_model::quantity::parse_bytes("--quota-memory", size).map_err(|e| CliError::usage(e.to_string()))?;
        quota.memory_bytes = (bytes > 0).then_some(bytes);
    }
    if let Some(cpu) = &args.quota_cpu {
        quota.cpu_millis = match cpu.trim() {
            "0" => None,
            text => Some(
                updraft_model::quantity::parse_cpu("--quota-cpu", text).map_err(|e| CliError::usage(e.to_string()))?,
            ),
        };
    }
    if let (Some(cpus), Some(memory)) = (args.exclusive_cpus, &args.exclusive_memory) {
        let memory_bytes = updraft_model::quantity::parse_bytes("--exclusive-memory", memory)
            .map_err(|e| CliError::usage(e.to_string()))?;
        limits.exclusive = Some(Exclusive { cpus, memory_bytes });
    }
    if args.shared {
        limits.exclusive = None;
    }
    let ns = client.set_namespace_limits(&args.name, &limits).await?;
    if !print_structured(&ns, output) {
        match ns.limits.rate_limit {
            Some(r) => println!(
                "Namespace {}: {} requests/s, burst {}, across its services",
                ns.name, r.per_second, r.burst
            ),
            None => println!("Namespace {}: no rate limit", ns.name),
        }
        if let Some(age) = ns.limits.log_max_age_seconds {
            println!(
                "  logs kept {}",
                humantime::format_duration(std::time::Duration::from_secs(age))
            );
        }
        if let Some(bytes) = ns.limits.log_max_bytes {
            println!("  logs kept up to {}", updraft_model::quantity::format_memory(bytes));
        }
    }
    Ok(0)
}

/// The busiest services first: by requests per second, then requests in flight or
/// waiting, then ready instances; ties by name.
fn by_activity(rows: &mut [TopView]) {
    rows.sort_by(|a, b| {
        b.requests_per_second
            .total_cmp(&a.requests_per_second)
            .then((b.in_flight + b.waiting).cmp(&(a.in_flight + a.waiting)))
            .then(b.ready.cmp(&a.ready))
            .then(a.service.cmp(&b.service))
    });
}

pub async fn top(args: TopArgs, client: &ApiClient, output: Output) -> Result<u8, CliError> {
    use std::io::IsTerminal;
    let live = !args.once && output == Output::Table && std::io::stdout().is_terminal();
    loop {
        let mut rows = client.top(&args.ns.namespace).await?;
        by_activity(&mut rows);
        if print_structured(&rows, output) {
            return Ok(0);
        }
        // Live, only the rows that fit under the header (and a line saying how many
        // more), so the header stays on screen.
        let room = if live {
            // Home and clear: redraw in place.
            print!("\x1b[H\x1b[2J");
            usize::from(console::Term::stdout().size().0).saturating_sub(2)
        } else {
            usize::MAX
        };
        let more = rows.len().saturating_sub(room);
        rows.truncate(room);
        println!(
            "{:<24} {:>9} {:>9} {:>9} {:>9} {:>8} {:>11} {:>6}",
            "SERVICE", "REQ/S", "P50 MS", "P99 MS", "IN-FLIGHT", "WAITING", "INSTANCES", "COLD"
        );
        for r in &rows {
            println!(
                "{:<24} {:>9.1} {:>9.2} {:>9.2} {:>9} {:>8} {:>11} {:>6}",
                r.service,
                r.requests_per_second,
                r.p50_ms,
                r.p99_ms,
                r.in_flight,
                r.waiting,
                format!("{}/{}", r.ready, r.instances),
                r.cold_starts
            );
        }
        if more > 0 {
            println!("… {more} quieter service(s) below; a taller terminal shows them");
        }
        if !live {
            return Ok(0);
        }
        tokio::select! {
            _ = tokio::time::sleep(args.interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(0),
        }
    }
}

pub async fn usage(args: UsageArgs, client: &ApiClient, output: Output) -> Result<u8, CliError> {
    let query = UsageQuery {
        namespace: args.namespace.clone(),
        since: args.since.clone(),
        by: Some(args.by.to_string()),
    };
    let rows = client.usage(&query).await?;
    if print_structured(&rows, output) {
        return Ok(0);
    }
    let key = |r: &UsageView| {
        [
            Some(r.namespace.clone()),
            r.service.clone(),
            r.revision.clone(),
            r.period.clone(),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("/")
    };
    if output == Output::Csv {
        println!(
            "namespace,service,revision,period,vcpu_seconds,gib_seconds,cpu_seconds,invocations,request_gb_seconds"
        );
        for r in &rows {
            println!(
                "{},{},{},{},{:.3},{:.3},{:.3},{},{:.3}",
                r.namespace,
                r.service.as_deref().unwrap_or(""),
                r.revision.as_deref().unwrap_or(""),
                r.period.as_deref().unwrap_or(""),
                r.vcpu_seconds,
                r.gib_seconds,
                r.cpu_seconds,
                r.invocations,
                r.request_gb_seconds
            );
        }
        return Ok(0);
    }
    println!(
        "{:<40} {:>12} {:>12} {:>10} {:>11} {:>12}",
        "KEY", "vCPU-s", "GiB-s", "CPU-s", "REQUESTS", "GB-s (req)"
    );
    for r in &rows {
        println!(
            "{:<40} {:>12.1} {:>12.1} {:>10.2} {:>11} {:>12.3}",
            key(r),
            r.vcpu_seconds,
            r.gib_seconds,
            r.cpu_seconds,
            r.invocations,
            r.request_gb_seconds
        );
    }
    Ok(0)
}

/// `updraft namespace show NS`: limits, and each quota beside what is used of it.
pub async fn namespace_show(name: &str, client: &ApiClient, output: Output) -> Result<u8, CliError> {
    let ns = client.namespace(name).await?;
    if print_structured(&ns, output) {
        return Ok(0);
    }
    let usage = ns.usage.clone().unwrap_or_default();
    let quota = &ns.limits.quota;
    let cap = |n: Option<u64>| n.map_or_else(|| "no quota".to_string(), |n| n.to_string());
    println!("Namespace:  {} (created {})", ns.name, ns.created_at);
    match ns.limits.rate_limit {
        Some(r) => println!("Rate limit: {} requests/s, burst {}", r.per_second, r.burst),
        None => println!("Rate limit: none"),
    }
    match (&ns.limits.exclusive, &usage.cpus) {
        (Some(e), cpus) => println!(
            "Edition:    exclusive: CPUs {}, {} reserved",
            cpus.as_deref().unwrap_or("-"),
            updraft_model::quantity::format_memory(e.memory_bytes)
        ),
        (None, cpus) => println!("Edition:    shared: CPUs {}", cpus.as_deref().unwrap_or("-")),
    }
    println!("{:<24} {:>12} {:>12}", "QUOTA", "USED", "OF");
    println!(
        "{:<24} {:>12} {:>12}",
        "services",
        usage.services,
        cap(quota.services.map(u64::from))
    );
    println!(
        "{:<24} {:>12} {:>12}",
        "package_bytes",
        usage.largest_package_bytes,
        cap(quota.package_bytes)
    );
    let running = usage.running;
    for (name, used, quota) in [
        (
            "instances",
            u64::from(running.instances),
            quota.instances.map(u64::from),
        ),
        ("memory_bytes", running.memory_bytes, quota.memory_bytes),
        ("cpu_millis", running.cpu_millis, quota.cpu_millis.map(u64::from)),
    ] {
        println!("{:<24} {:>12} {:>12}", name, used, cap(quota));
    }
    println!(
        "{:<24} {:>12} {:>12}",
        "invocations_per_minute",
        "-",
        cap(quota.invocations_per_minute.map(u64::from))
    );
    println!(
        "{:<24} {:>12} {:>12}",
        "fires_per_minute",
        "-",
        cap(quota.fires_per_minute.map(u64::from))
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(service: &str, rps: f64, in_flight: u32, ready: usize) -> TopView {
        TopView {
            namespace: "default".into(),
            service: service.into(),
            requests_per_second: rps,
            requests: 0,
            p50_ms: 0.0,
            p99_ms: 0.0,
            in_flight,
            waiting: 0,
            instances: ready,
            ready,
            cold_starts: 0,
        }
    }

    #[test]
    fn the_busiest_services_come_first() {
        let mut rows = vec![
            row("idle", 0.0, 0, 0),
            row("warm", 0.0, 0, 2),
            row("busy", 40.0, 3, 2),
            row("slow", 0.0, 5, 1),
            row("calm", 2.5, 0, 1),
            row("also-idle", 0.0, 0, 0),
        ];
        by_activity(&mut rows);
        let order: Vec<&str> = rows.iter().map(|r| r.service.as_str()).collect();
        assert_eq!(order, ["busy", "calm", "slow", "warm", "also-idle", "idle"]);
    }
}
