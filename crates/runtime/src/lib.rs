//! What makes instances: the [`Runtime`] trait and its drivers.
//!
//! A driver starts an instance of a revision listening on an assigned port, captures
//! its output, reports its exit at once, and stops it (graceful signal, then kill).
//! Instances live in per-instance cgroups with the revision's limits. The `process`
//! driver runs code packages as child processes, and OCI images as runc containers
//! (the `oci` module); the `wasm` driver runs `wasi:http` components in this process;
//! [`Runtimes`] sends each spec to its driver.

pub mod cgroup;
pub mod clock;
pub mod image;
mod instance;
mod listeners;
pub mod logs;
pub mod oci;
pub mod package;
mod ports;
mod probe;
mod process;
pub mod sandbox;
mod seccomp;
mod spawner;
pub mod wasm;
pub mod wasm_threads;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

pub use instance::{ExitInfo, Instance, InstanceControl};
pub use ports::{PortAllocator, PortLease};
pub use probe::{probe_once, wait_ready, NotReady, Probe, Streak, TimedProbe, Verdict};
pub use process::{inherited_env, FunctionSpec, ProcessRuntime, StemOrder, INHERITED_ENV};
pub use spawner::spawn_child;
pub use updraft_model::Language;

/// Forking while this process holds a file open for writing would give the child a
/// copy of that descriptor until its exec, and exec'ing that file anywhere then fails
/// with "text file busy". Writers of package files hold this shared from create to
/// close; spawning holds it exclusively across fork and exec.
pub(crate) static FORK_LOCK: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Everything a driver needs to start one instance.
#[derive(Debug, Clone)]
pub struct InstanceSpec {
    pub id: String,
    pub namespace: String,
    pub service: String,
    pub revision: String,
    pub command: Vec<String>,
    /// The user's variables; the driver adds the instance contract's own.
    pub env: BTreeMap<String, String>,
    pub workdir: PathBuf,
    pub limits: cgroup::Limits,
    pub workload: Workload,
}

/// What an instance runs, with what its driver needs for it.
#[derive(Debug, Clone)]
pub enum Workload {
    /// The package's own `command`.
    Process,
    /// A Python or Node handler a shim serves (from a stem cell when one is warm);
    /// `command` is then the shim's.
    Function(FunctionSpec),
    /// A WebAssembly component, which the wasm driver runs in process.
    Wasm(wasm::WasmSpec),
    /// An OCI image, which runc runs from the image's shared rootfs.
    Container(oci::ContainerSpec),
}

impl InstanceSpec {
    /// The variables of the instance contract (Knative's and Updraft's names).
    pub fn contract_env(&self, port: u16) -> Vec<(&'static str, String)> {
        vec![
            ("PORT", port.to_string()),
            ("K_SERVICE", self.service.clone()),
            ("K_REVISION", self.revision.clone()),
            ("K_CONFIGURATION", self.service.clone()),
            ("UPDRAFT_SERVICE", self.service.clone()),
            ("UPDRAFT_REVISION", self.revision.clone()),
            ("UPDRAFT_NAMESPACE", self.namespace.clone()),
        ]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot start {command:?}: {source}")]
    Spawn { command: String, source: std::io::Error },
    #[error("instance set-up failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot build the container: {0}")]
    Bundle(String),
    #[error("this driver does not run {0} workloads")]
    Unsupported(&'static str),
}

pub trait Runtime: Send + Sync + 'static {
    /// Starts an instance on a port the driver chooses; returns once it exists, before
    /// it is ready.
    fn start(&self, spec: InstanceSpec) -> Result<Instance, RuntimeError>;
    /// Kills whatever instances an earlier run of this server left behind.
    fn reap_leftovers(&self) -> usize;
    /// Pre-warmed generic instances ready now, and the memory they hold in bytes.
    fn pool(&self) -> (usize, u64) {
        (0, 0)
    }
    /// Starts or stops pre-warmed instances until `target` are ready; returns how many
    /// there are. Drivers without a pool keep none.
    fn resize_pool(&self, _target: usize) -> usize {
        0
    }
}

/// The drivers together: a spec with a component goes to `wasm`, any other to
/// `process`. The pool is the process driver's.
pub struct Runtimes {
    pub process: Arc<dyn Runtime>,
    pub wasm: Arc<wasm::WasmRuntime>,
}

impl Runtime for Runtimes {
    fn start(&self, mut spec: InstanceSpec) -> Result<Instance, RuntimeError> {
        match std::mem::replace(&mut spec.workload, Workload::Process) {
            Workload::Wasm(wasm) => self.wasm.start(spec, wasm),
            other => {
                spec.workload = other;
                self.process.start(spec)
            }
        }
    }

    fn reap_leftovers(&self) -> usize {
        self.process.reap_leftovers()
    }

    fn pool(&self) -> (usize, u64) {
        self.process.pool()
    }

    fn resize_pool(&self, target: usize) -> usize {
        self.process.resize_pool(target)
    }
}
