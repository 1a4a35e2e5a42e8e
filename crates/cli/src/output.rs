//! Tables for people, JSON for scripts.

use serde::Serialize;
use updraft_server::views::ServiceView;

pub fn print_json(value: &impl Serialize) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

pub fn print_services(services: &[ServiceView]) {
    println!("{:<24} {:<48} {:<24} READY", "NAME", "URL", "LATEST");
    for s in services {
        println!(
            "{:<24} {:<48} {:<24} {}",
            s.name, s.url, s.latest_revision, s.ready_instances
        );
    }
}

pub fn print_service(s: &ServiceView) {
    println!("Service:    {} (namespace {})", s.name, s.namespace);
    println!("URL:        {}", s.url);
    println!("Latest:     {}", s.latest_revision);
    println!("Ready:      {} instance(s)", s.ready_instances);
    match &s.last_cold_start {
        Some(c) => println!(
            "Cold start: {:.1} ms at {} ({}, {})",
            c.ready_ms, c.at, c.cause, c.instance
        ),
        None => println!("Cold start: none yet"),
    }
    println!("Revisions:");
    for r in &s.revisions {
        let routed = if r.routed { " (serving)" } else { "" };
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
        println!("    to zero after {} idle", r.scale_to_zero_after);
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
