//! Shared and exclusive editions on one machine: an exclusive namespace's instances
//! run on CPUs no other namespace's do, within memory reserved for it that the shared
//! namespaces cannot take; asking for more than the machine has is refused by name.

mod common;

use common::*;

/// Answers with the CPUs it may run on, after asking for all of them.
const AFFINITY_APP: &str = r#"
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        try:
            os.sched_setaffinity(0, range(os.cpu_count()))
        except OSError:
            pass
        body = ",".join(str(c) for c in sorted(os.sched_getaffinity(0))).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#;

fn cpus_of(server: &Server, namespace: &str) -> String {
    let shown = server.json(&["namespace", "show", namespace]);
    shown["usage"]["cpus"]
        .as_str()
        .unwrap_or_else(|| panic!("{shown}"))
        .to_string()
}

/// The memory cap of the partition holding the process: the parent of its group.
fn partition_memory_limit(pid: u32) -> u64 {
    let groups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for line in groups.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next(), fields.next().unwrap(), fields.next().unwrap());
        let (dir, file) = match controllers {
            c if c.split(',').any(|c| c == "memory") => {
                (format!("/sys/fs/cgroup/memory{path}"), "memory.limit_in_bytes")
            }
            "" if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() => {
                (format!("/sys/fs/cgroup{path}"), "memory.max")
            }
            _ => continue,
        };
        let partition = std::path::Path::new(&dir).parent().unwrap().join(file);
        let text = std::fs::read_to_string(&partition).unwrap_or_else(|e| panic!("{}: {e}", partition.display()));
        return text.trim().parse().unwrap_or(u64::MAX);
    }
    panic!("no memory group for {pid}: {groups}");
}

/// The CPUs the namespace's `app` says it runs on.
fn app_cpus(server: &Server, namespace: &str) -> String {
    let r = server
        .request("GET", &format!("app.{namespace}.localhost"), "/", &[], b"")
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

fn memory_total() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kb * 1024
}

#[test]
fn an_exclusive_namespace_holds_its_cpus_and_memory() {
    let mut server = Server::start(&[]);
    let (_app_dir, app) = app_of(&[("main.py", AFFINITY_APP)]);
    server.json(&["namespace", "create", "gold"]);
    let all = cpus_of(&server, "gold");
    let cpu_count = all.split(',').count();
    assert!(cpu_count >= 2, "the test needs two CPUs: {all}");

    server.json(&[
        "namespace",
        "limits",
        "gold",
        "--exclusive-cpus",
        "1",
        "--exclusive-memory",
        "256Mi",
    ]);
    let gold = cpus_of(&server, "gold");
    let shared = cpus_of(&server, "default");
    assert_eq!(gold.split(',').count(), 1, "{gold}");
    assert!(!shared.split(',').any(|c| c == gold), "{shared} holds {gold}");
    assert_eq!(shared.split(',').count(), cpu_count - 1);
    let table = server.cli(&["namespace", "show", "gold"]).stdout;
    assert!(
        table.contains(&format!("exclusive: CPUs {gold}, 256Mi reserved")),
        "{table}"
    );

    // Each instance runs where its namespace is placed, and cannot leave it.
    let gold_service = server.json(&["deploy", "app", app.to_str().unwrap(), "-n", "gold"]);
    server.deploy("app", &app, &[]);
    assert_eq!(app_cpus(&server, "gold"), gold);
    assert_eq!(app_cpus(&server, "default"), shared);

    // The reservation is the exclusive namespace's cap, and is taken off the shared one.
    let gold_pid = instance_pids(&gold_service)[0];
    assert_eq!(partition_memory_limit(gold_pid), 256 << 20);
    let shared_pid = instance_pids(&server.json(&["service", "app"]))[0];
    assert_eq!(partition_memory_limit(shared_pid), memory_total() - (256 << 20));

    // More than the machine has is refused, naming the field, and changes nothing.
    server.json(&["namespace", "create", "silver"]);
    let out = server.cli(&[
        "namespace",
        "limits",
        "silver",
        "--exclusive-cpus",
        &(cpu_count - 1).to_string(),
        "--exclusive-memory",
        "64Mi",
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("exclusive.cpus") && out.stderr.contains("shared namespaces keep one"),
        "{}",
        out.stderr
    );
    let out = server.cli(&[
        "namespace",
        "limits",
        "gold",
        "--exclusive-cpus",
        "1",
        "--exclusive-memory",
        "100Ti",
    ]);
    assert!(out.stderr.contains("exclusive.memory_bytes"), "{}", out.stderr);
    assert_eq!(
        server.json(&["namespace", "show", "gold"])["limits"]["exclusive"]["memory_bytes"],
        256 << 20
    );
    let out = server.cli(&["namespace", "limits", "silver", "--exclusive-cpus", "1"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(server.json(&["namespace", "show", "silver"])["limits"]["exclusive"].is_null());
    assert_eq!(cpus_of(&server, "silver"), shared);

    // After kill -9 the placement comes back with the store.
    server.kill9();
    server.restart();
    assert_eq!(cpus_of(&server, "gold"), gold);
    assert_eq!(app_cpus(&server, "gold"), gold);

    // Back to shared: the next instances run on the shared CPUs, all of them again.
    server.json(&["namespace", "limits", "gold", "--shared"]);
    assert_eq!(cpus_of(&server, "default"), all);
    server.json(&["update", "app", "-n", "gold", "--env", "AGAIN=1"]);
    assert_eq!(app_cpus(&server, "gold"), all);
}

/// The CPUs of a kernel CPU list such as `0-2,5`.
fn cpu_set(list: &str) -> std::collections::BTreeSet<u32> {
    list.trim()
        .split(',')
        .filter(|part| !part.is_empty())
        .flat_map(|part| match part.split_once('-') {
            Some((from, to)) => from.parse().unwrap()..=to.parse().unwrap(),
            None => part.parse().unwrap()..=part.parse().unwrap(),
        })
        .collect()
}

/// Each thread of the process: its CPU time so far (ticks), the CPUs it may run on,
/// and the CPU it last ran on.
fn threads_of(pid: u32) -> std::collections::BTreeMap<u32, (u64, String, u32)> {
    let mut threads = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let dir = entry.path();
        let (Ok(stat), Ok(status)) = (
            std::fs::read_to_string(dir.join("stat")),
            std::fs::read_to_string(dir.join("status")),
        ) else {
            continue;
        };
        // Fields after the name, which may hold spaces: state is the 3rd field.
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        let ticks = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        let allowed = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim()
            .to_string();
        let tid = entry.file_name().to_str().unwrap().parse().unwrap();
        threads.insert(tid, (ticks, allowed, fields[36].parse().unwrap()));
    }
    threads
}

/// While `busy` in the namespace spins on a request, the server thread that runs it:
/// the CPUs it may use and the CPU it ran on.
fn spinning_thread(server: &Server, namespace: &str) -> (String, u32) {
    let gateway = server.gateway;
    let host = format!("busy.{namespace}.localhost");
    let looping = std::thread::spawn(move || common::http(gateway, "GET", &host, "/loop", &[], b"").unwrap());
    std::thread::sleep(std::time::Duration::from_millis(300));
    let before = threads_of(server.pid());
    std::thread::sleep(std::time::Duration::from_millis(700));
    let after = threads_of(server.pid());
    let (_, allowed, cpu) = after
        .iter()
        .max_by_key(|(tid, (ticks, _, _))| ticks - before.get(tid).map_or(0, |b| b.0))
        .map(|(_, thread)| thread.clone())
        .unwrap();
    assert_eq!(looping.join().unwrap().status, 504, "the loop ends at its timeout");
    (allowed, cpu)
}

#[test]
fn an_exclusive_namespaces_wasm_components_run_on_its_cpus_and_the_shared_ones_off_them() {
    let server = Server::start(&[]);
    let component = wasm_component(server.dir.path());
    server.json(&["namespace", "create", "gold"]);
    server.json(&[
        "namespace",
        "limits",
        "gold",
        "--exclusive-cpus",
        "1",
        "--exclusive-memory",
        "128Mi",
    ]);
    let gold = cpu_set(&cpus_of(&server, "gold"));
    let shared = cpu_set(&cpus_of(&server, "default"));
    for namespace in ["gold", "default"] {
        server.json(&[
            "deploy",
            "busy",
            "--wasm",
            component.to_str().unwrap(),
            "--timeout",
            "2s",
            "-n",
            namespace,
        ]);
    }

    // Components run in the server process; the thread a spinning guest runs on is
    // held to its namespace's CPUs.
    for (namespace, cpus) in [("gold", &gold), ("default", &shared)] {
        let (allowed, cpu) = spinning_thread(&server, namespace);
        assert_eq!(&cpu_set(&allowed), cpus, "{namespace}'s guest may run on {allowed}");
        assert!(cpus.contains(&cpu), "{namespace}'s guest ran on CPU {cpu}");
    }

    // Back to shared, the next instance's guest runs on every CPU.
    server.json(&["namespace", "limits", "gold", "--shared"]);
    server.json(&["update", "busy", "-n", "gold", "--env", "AGAIN=1"]);
    let (allowed, _) = spinning_thread(&server, "gold");
    assert_eq!(cpu_set(&allowed), cpu_set(&cpus_of(&server, "default")));
    assert_eq!(cpu_set(&allowed).len(), gold.len() + shared.len());
}
