//! Tables for people, JSON for scripts.

use std::io::Write;

use serde::Serialize;
use updraft_api::views::{RevisionView, ServiceView};
use updraft_model::annotations::{AUTOSCALING_PREFIX, SCALE_TO_ZERO_RETENTION};

use crate::Output;

pub fn print_json(value: &impl Serialize) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

/// Prints JSON or YAML and says so; a table is the caller's to print.
pub fn print_structured(value: &impl Serialize, output: Output) -> bool {
    match output {
        Output::Json => print_json(value),
        Output::Yaml => print!("{}", serde_yaml_ng::to_string(value).unwrap_or_default()),
        Output::Table | Output::Csv => return false,
    }
    true
}

/// A table whose columns are as wide as their widest cell, two spaces apart, as
/// kubectl prints them.
pub fn print_table(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) {
    let mut text = header.join("\t");
    for row in rows {
        text.push('\n');
        text.push_str(&row.join("\t"));
    }
    text.push('\n');
    let mut writer = tabwriter::TabWriter::new(std::io::stdout()).padding(2);
    let _ = writer.write_all(text.as_bytes()).and_then(|()| writer.flush());
}

/// A listing's table, with a NAMESPACE column first when it spans namespaces.
pub fn print_listing(all_namespaces: bool, header: &[&str], rows: impl IntoIterator<Item = (String, Vec<String>)>) {
    if !all_namespaces {
        print_table(header, rows.into_iter().map(|(_, row)| row));
        return;
    }
    let header: Vec<&str> = std::iter::once("NAMESPACE").chain(header.iter().copied()).collect();
    print_table(
        &header,
        rows.into_iter()
            .map(|(ns, row)| std::iter::once(ns).chain(row).collect()),
    );
}

pub fn print_revisions(revisions: &[RevisionView]) {
    print_table(
        &["NAME", "CREATED", "PACKAGE", "TRAFFIC", "TAGS", "READY"],
        revisions.iter().rev().map(|r| {
            vec![
                r.name.clone(),
                r.created_at.clone(),
                r.package.chars().take(19).collect(),
                format!("{}%", r.traffic_percent),
                r.tags.join(","),
                r.ready_instances.to_string(),
            ]
        }),
    );
}

pub fn print_routes(s: &ServiceView) {
    println!("Traffic:");
    for route in &s.routes {
        let tags = route
            .tags
            .iter()
            .zip(&route.urls)
            .map(|(t, u)| format!(" #{t} {u}"))
            .collect::<String>();
        println!("  {:>3}% {}{tags}", route.percent, route.revision);
    }
    if let Some(r) = &s.rollout {
        println!(
            "Rollout: {} → {} at {}% of latest (over {}, since {})",
            r.from, r.to, r.percent, r.duration, r.started_at
        );
    }
}

pub fn print_services(services: &[ServiceView], all_namespaces: bool) {
    print_listing(
        all_namespaces,
        &["NAME", "URL", "LATEST", "READY"],
        services.iter().map(|s| {
            (
                s.namespace.clone(),
                vec![
                    s.name.clone(),
                    s.url.clone(),
                    s.latest_revision.clone(),
                    s.ready_instances.to_string(),
                ],
            )
        }),
    );
}

pub fn print_service(s: &ServiceView) {
    println!("Service:    {} (namespace {})", s.name, s.namespace);
    let private = updraft_model::annotations::is_private(&s.labels);
    let visibility = if private {
        " (private: invoker tokens of the namespace only)"
    } else {
        ""
    };
    println!("URL:        {}{visibility}", s.url);
    println!("Latest:     {}", s.latest_revision);
    println!("Ready:      {} instance(s)", s.ready_instances);
    match &s.last_cold_start {
        Some(c) => println!(
            "Cold start: {:.1} ms at {} ({}, {})",
            c.ready_ms, c.at, c.cause, c.instance
        ),
        None => println!("Cold start: none yet"),
    }
    print_routes(s);
    let mut events: Vec<_> = s.revisions.iter().flat_map(|r| r.scale_events.iter()).collect();
    events.sort_by(|a, b| a.at.cmp(&b.at));
    if !events.is_empty() {
        println!("Scale events:");
        for e in events.iter().rev().take(5).rev() {
            match &e.message {
                Some(message) => println!("  {} {} {}: {message}", e.at, e.revision, e.reason),
                None => {
                    let panic = if e.panicking { ", panicking" } else { "" };
                    println!(
                        "  {} {} {} → {} ({}; {} stable {:.2}, panic {:.2}{panic})",
                        e.at, e.revision, e.from, e.to, e.reason, e.metric, e.stable, e.panic
                    );
                }
            }
        }
    }
    println!("Revisions:");
    for r in &s.revisions {
        let routed = if r.routed {
            format!(" ({}% of traffic{})", r.traffic_percent, tag_list(&r.tags))
        } else {
            String::new()
        };
        println!("  {}{routed}  created {}", r.name, r.created_at);
        println!("    command:  {} (from {})", r.command.join(" "), r.command_source);
        println!("    package:  {}", r.package);
        let limits = [
            r.memory.as_ref().map(|m| format!("memory {m}")),
            r.cpu.as_ref().map(|c| format!("cpu {c}")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>();
        if !limits.is_empty() {
            println!("    limits:   {}", limits.join(", "));
        }
        if !r.env.is_empty() {
            // Names only: values may be secrets (`-o json` has them).
            let names: Vec<&str> = r.env.keys().map(String::as_str).collect();
            println!("    env:      {}", names.join(", "));
        }
        let scaling: Vec<String> = r
            .annotations
            .iter()
            .filter(|(k, _)| k.as_str() != SCALE_TO_ZERO_RETENTION)
            .filter_map(|(k, v)| k.strip_prefix(AUTOSCALING_PREFIX).map(|k| format!("{k} {v}")))
            .collect();
        if !scaling.is_empty() {
            println!("    scaling:  {}", scaling.join(", "));
        }
        let concurrency = match r.container_concurrency {
            0 => "no concurrency limit".to_string(),
            n => format!("{n} request(s) at once per instance"),
        };
        println!(
            "    {concurrency}, timeout {}s, to zero after {} idle",
            r.timeout_seconds, r.scale_to_zero_after
        );
        if let Some(c) = &r.crash_loop {
            let next = c
                .next_start_at
                .as_ref()
                .map_or(String::new(), |at| format!("; no start before {at}"));
            println!(
                "    failing:  {} failure(s) in a row, the last at {}: {}{next}",
                c.failures, c.last_failure_at, c.last_failure
            );
        }
        for i in &r.instances {
            let cgroup = i
                .cgroup
                .as_ref()
                .map_or("no cgroup".to_string(), |c| format!("cgroup {}", c.version));
            println!(
                "    instance {} {} pid {} port {} in-flight {} ({cgroup})",
                i.id, i.state, i.pid, i.port, i.in_flight
            );
        }
    }
}

fn tag_list(tags: &[String]) -> String {
    if tags.is_empty() {
        String::new()
    } else {
        format!(", tags {}", tags.join(","))
    }
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
