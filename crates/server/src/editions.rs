//! Shared and exclusive editions on this machine: `Editions` takes the namespaces'
//! `exclusive` settings (from `quota::LimitsFollower`), places them
//! (`model::exclusive::place`, pure) and gives the runtime's partitions their CPUs
//! and memory, and the wasm threads theirs, before any instance is launched.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use updraft_model::exclusive::{format_cpu_list, place, Exclusive, Machine, Placement};
use updraft_model::FieldError;
use updraft_runtime::cgroup::Cgroups;
use updraft_runtime::wasm_threads::WasmThreads;

pub struct Editions {
    machine: Machine,
    cgroups: Cgroups,
    wasm_threads: Arc<WasmThreads>,
    /// What each exclusive namespace asks, and where that put everyone.
    state: Mutex<(BTreeMap<String, Exclusive>, Option<Placement>)>,
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn memory_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

impl Editions {
    pub fn new(cgroups: Cgroups, wasm_threads: Arc<WasmThreads>) -> Editions {
        let machine = Machine {
            cpus: cgroups.cpus().unwrap_or_default(),
            memory_bytes: memory_total(),
        };
        Editions {
            machine,
            cgroups,
            wasm_threads,
            state: Mutex::default(),
        }
    }

    /// Whether this exclusive setting for `namespace` fits beside the others'.
    pub fn check(&self, namespace: &str, exclusive: Option<&Exclusive>) -> Result<(), FieldError> {
        let Some(exclusive) = exclusive else { return Ok(()) };
        if self.cgroups.version() == "none" {
            return Err(FieldError::new(
                "exclusive",
                "this machine has no cgroups for the server to give CPUs and memory with",
            ));
        }
        let mut wanted = self.state.lock().unwrap_or_else(|p| p.into_inner()).0.clone();
        wanted.insert(namespace.to_string(), *exclusive);
        place(&self.machine, &wanted).map(|_| ())
    }

    /// The CPUs the namespace's instances run on, as the kernel writes them.
    pub fn cpus_of(&self, namespace: &str) -> Option<String> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let placement = state.1.as_ref()?;
        let partition = placement.exclusive.get(namespace).unwrap_or(&placement.shared);
        Some(format_cpu_list(&partition.cpus))
    }

    /// Takes one namespace's new setting at once, so the next check counts it.
    pub fn set(&self, namespace: &str, exclusive: Option<Exclusive>) {
        let mut wanted = self.state.lock().unwrap_or_else(|p| p.into_inner()).0.clone();
        match exclusive {
            Some(exclusive) => wanted.insert(namespace.to_string(), exclusive),
            None => wanted.remove(namespace),
        };
        self.reset(wanted);
    }

    /// Places the exclusive namespaces as `wanted` says, unless they are placed so.
    pub fn reset(&self, wanted: BTreeMap<String, Exclusive>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.1.is_some() && state.0 == wanted {
            return;
        }
        match place(&self.machine, &wanted) {
            Ok(placement) => {
                if let Err(e) = self.cgroups.apply(&placement) {
                    tracing::error!(error = %e, "cannot give the namespaces their CPUs and memory");
                }
                self.wasm_threads.apply(&placement);
                for (namespace, partition) in &placement.exclusive {
                    tracing::info!(
                        namespace,
                        cpus = %format_cpu_list(&partition.cpus),
                        memory_bytes = partition.memory_bytes,
                        "exclusive namespace placed"
                    );
                }
                *state = (wanted, Some(placement));
            }
            // Only a machine with fewer CPUs or less memory than when the settings were
            // accepted gets here: the namespaces keep what they had.
            Err(e) => tracing::error!(error = %e, "the exclusive namespaces no longer fit this machine"),
        }
    }
}
