use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use updraft_gateway::{ActivatorConfig, ConnectionLimits, UpstreamPool};
use updraft_runtime::wasm::WasmPoolConfig;
use updraft_scaling::ScalingSpec;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub gateway_addr: SocketAddr,
    pub api_addr: SocketAddr,
    /// Services answer at `{service}.{namespace}.{domain}`.
    pub domain: String,
    /// Largest package archive accepted.
    pub max_package_bytes: u64,
    /// Most a package may expand to when unpacked.
    pub max_unpacked_bytes: u64,
    /// What a build from source (dependencies, `build:`) may take.
    pub build_limits: crate::builds::BuildLimits,
    pub activator: ActivatorConfig,
    /// How long a new instance may take to listen on its port.
    pub ready_timeout: Duration,
    /// Time between SIGTERM and SIGKILL when stopping an instance.
    pub stop_grace: Duration,
    /// How long shutdown and scale-down wait for requests in flight.
    pub drain_timeout: Duration,
    /// How often every revision's autoscaler decides (Knative's tick, 2 s).
    pub tick: Duration,
    /// Autoscaling defaults; a revision's annotations override them.
    pub scaling: ScalingSpec,
    pub pool: PoolConfig,
    /// The wasm driver's pooling allocator (0 instances: allocate on demand).
    pub wasm_pool: WasmPoolConfig,
    /// The runc binary that runs OCI images.
    pub runc: PathBuf,
    /// Largest image archive accepted by `POST /v1/images`.
    pub max_image_bytes: u64,
    /// How long an API request may take before it is answered 503.
    pub api_timeout: Duration,
    /// The gateway's connections: cap, head and idle time limits.
    pub gateway_connections: ConnectionLimits,
    /// The API's connections, apart from the gateway's so a flood of one cannot take
    /// the other down.
    pub api_connections: ConnectionLimits,
    /// The connections the gateway keeps open to instances.
    pub upstream: UpstreamPool,
    /// HTTPS on both listeners.
    pub tls: Option<crate::tls::TlsFiles>,
    /// Serve the API in the clear on a non-loopback address all the same.
    pub insecure: bool,
    /// The command (`updraft-sandbox`) code packages and function runtimes run in;
    /// none runs them as the server's user, unconfined.
    pub sandbox: Option<Vec<PathBuf>>,
    /// Where servers of this machine lock their block of sandbox uids.
    pub sandbox_slots: PathBuf,
    /// The key secrets are sealed with; none keeps (and first makes) one in the data
    /// directory.
    pub secret_key_file: Option<PathBuf>,
}

impl ServerConfig {
    /// `https` when the listeners serve TLS.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            data_dir: PathBuf::from(".updraft"),
            gateway_addr: ([127, 0, 0, 1], 8080).into(),
            api_addr: ([127, 0, 0, 1], 8081).into(),
            domain: "localhost".into(),
            max_package_bytes: 512 << 20,
            max_unpacked_bytes: 2 << 30,
            build_limits: crate::builds::BuildLimits::default(),
            activator: ActivatorConfig::default(),
            ready_timeout: Duration::from_secs(60),
            stop_grace: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
            tick: Duration::from_secs(2),
            scaling: ScalingSpec::default(),
            pool: PoolConfig::default(),
            wasm_pool: WasmPoolConfig::default(),
            runc: PathBuf::from("runc"),
            max_image_bytes: 8 << 30,
            api_timeout: Duration::from_secs(600),
            gateway_connections: ConnectionLimits::default(),
            api_connections: ConnectionLimits {
                max_connections: 1024,
                ..ConnectionLimits::default()
            },
            upstream: UpstreamPool::default(),
            tls: None,
            insecure: false,
            sandbox: None,
            sandbox_slots: PathBuf::from("/run/updraft/uid-blocks"),
            secret_key_file: None,
        }
    }
}

/// The pre-warmed pool of stem cells: generic processes already in their own cgroup,
/// waiting to become an instance.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// The command that starts a stem cell (`updraft stem`); none turns the pool off.
    pub stem_command: Vec<PathBuf>,
    /// Stem cells kept even without demand.
    pub min: usize,
    /// Most memory the pool may hold.
    pub max_memory_bytes: u64,
    /// Without demand, capacity halves this often.
    pub half_life: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            stem_command: Vec::new(),
            min: 1,
            max_memory_bytes: 256 << 20,
            half_life: Duration::from_secs(300),
        }
    }
}

/// Where things live in the data directory.
#[derive(Debug, Clone)]
pub struct Paths {
    pub root: PathBuf,
    pub db: PathBuf,
    /// Package archives, by digest: `blobs/sha256/{hex}`.
    pub blobs: PathBuf,
    /// Unpacked packages, one per revision: `revisions/{namespace}/{revision}`.
    pub revisions: PathBuf,
    /// Dependency layers built from packages: `layers/{namespace}/{key}`.
    pub layers: PathBuf,
    /// What build tools keep between builds, per namespace: `build-cache/{namespace}`
    /// (Go's `GOCACHE`).
    pub build_cache: PathBuf,
    pub logs: PathBuf,
    pub run: PathBuf,
    pub tmp: PathBuf,
}

impl Paths {
    pub fn new(root: &Path) -> Self {
        Paths {
            root: root.to_path_buf(),
            db: root.join("updraft.db"),
            blobs: root.join("blobs").join("sha256"),
            revisions: root.join("revisions"),
            layers: root.join("layers"),
            build_cache: root.join("build-cache"),
            logs: root.join("logs"),
            run: root.join("run"),
            tmp: root.join("tmp"),
        }
    }

    pub fn blob(&self, digest: &str) -> PathBuf {
        self.blobs.join(digest.trim_start_matches("sha256:"))
    }

    pub fn revision_dir(&self, namespace: &str, revision: &str) -> PathBuf {
        self.revisions.join(namespace).join(revision)
    }
}
