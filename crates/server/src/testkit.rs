//! What the server's unit tests run on: a data directory with the test component
//! stored, SQLite, and instances over the real wasm runtime (a wasm instance runs
//! inside the test's own process, so nothing is faked).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use updraft_gateway::RevisionKey;
use updraft_model::{Revision, RevisionConfig, RevisionTemplate, RuntimeKind};
use updraft_runtime::image::ImageStore;
use updraft_runtime::wasm::{WasmPoolConfig, WasmRuntime};
use updraft_runtime::{Instance, InstanceSpec, Runtime, RuntimeError, Runtimes};
use updraft_store::{SqliteStore, Store};
use updraft_telemetry::Metrics;

use crate::instances::Instances;
use crate::meter::Meter;
use crate::revision_state::{Registry, RequestLedger};
use crate::{Paths, ServerConfig};

/// The stored test component's digest.
pub const COMPONENT: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";

/// These tests run components only; a process start is refused, never faked.
struct NoProcesses;

impl Runtime for NoProcesses {
    fn start(&self, _spec: InstanceSpec) -> Result<Instance, RuntimeError> {
        Err(RuntimeError::Unsupported("process"))
    }

    fn reap_leftovers(&self) -> usize {
        0
    }
}

pub struct Kit {
    /// Holds the data directory for the test's life.
    pub _dir: tempfile::TempDir,
    pub paths: Paths,
    pub store: Arc<SqliteStore>,
    pub registry: Arc<Registry>,
    pub instances: Arc<Instances>,
    pub wasm: Arc<WasmRuntime>,
    pub images: Arc<ImageStore>,
    pub pokes: mpsc::UnboundedReceiver<RevisionKey>,
}

pub async fn kit() -> Kit {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::new(dir.path());
    std::fs::create_dir_all(&paths.blobs).unwrap();
    let built = updraft_wasm_fixture::write_handler_component(dir.path()).unwrap();
    std::fs::rename(&built, paths.blob(COMPONENT)).unwrap();
    let store = Arc::new(SqliteStore::open(&paths.db, 1).unwrap());
    store.put_blob(COMPONENT, 1, 1).await.unwrap();
    let logs = Arc::new(crate::instance_logs::InstanceLogs {
        dir: paths.logs.clone(),
        feed: tokio::sync::broadcast::channel(16).0,
    });
    let wasm = Arc::new(WasmRuntime::new(paths.root.join("wasm-cache"), logs, WasmPoolConfig::default()).unwrap());
    let runtime: Arc<dyn Runtime> = Arc::new(Runtimes {
        process: Arc::new(NoProcesses),
        wasm: wasm.clone(),
    });
    let registry = Arc::new(Registry::default());
    let meter = Arc::new(Meter::new(
        store.clone(),
        registry.clone(),
        Arc::new(RequestLedger::default()),
    ));
    let (tx, pokes) = mpsc::unbounded_channel();
    let images = Arc::new(
        ImageStore::open(
            dir.path().join("images"),
            Arc::new(crate::secrets::SecretKey::load(&dir.path().join("secret.key"), true).unwrap()),
        )
        .unwrap(),
    );
    let config = ServerConfig {
        drain_timeout: Duration::from_secs(5),
        ..ServerConfig::default()
    };
    let instances = Arc::new(Instances::new(
        runtime,
        images.clone(),
        &config,
        paths.clone(),
        Arc::new(Metrics::new()),
        meter,
        tx,
    ));
    Kit {
        _dir: dir,
        paths,
        store,
        registry,
        instances,
        wasm,
        images,
        pokes,
    }
}

/// A revision of the test component.
pub fn component_revision(service: &str, name: &str) -> Revision {
    Revision {
        namespace: "default".into(),
        service: service.into(),
        name: name.into(),
        generation: 1,
        created_at_us: 1,
        template: RevisionTemplate::for_package(COMPONENT),
        config: RevisionConfig {
            package_digest: COMPONENT.into(),
            command: Vec::new(),
            command_source: "component".into(),
            env: Default::default(),
            env_secrets: Default::default(),
            memory_bytes: None,
            cpu_millis: None,
            scale_to_zero_after_ms: 60_000,
            readiness: None,
            runtime: RuntimeKind::Wasm,
            allowed_hosts: Vec::new(),
            layers: Vec::new(),
        },
        resource_version: 1,
    }
}

/// A plain HTTP/1.1 GET, answered whole.
pub fn get(address: std::net::SocketAddr, host: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}
