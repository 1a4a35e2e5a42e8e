//! The running platform: the store, the revision registry derived from it, the route
//! table, and the start-up and shutdown sequences.

use std::collections::HashMap;
use std::fs;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::Context;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use updraft_gateway::{Access, Gateway, Poke, RequestObserver, RevisionEndpoints, RevisionKey, RouteTable};
use updraft_model::Revision;
use updraft_runtime::clock::now_us;
use updraft_runtime::image::ImageStore;
use updraft_runtime::oci::Containers;
use updraft_runtime::wasm::WasmRuntime;
use updraft_runtime::{ProcessRuntime, Runtime, Runtimes};
use updraft_store::{EventStore, Snapshot, SqliteStore, Store};
use updraft_telemetry::logs::AccessRecord;
use updraft_telemetry::{Metrics, RevisionLabels};

use crate::event_io::{SinkClient, TriggerSignals};
use crate::revision_state::{RequestLedger, RevisionState};
use crate::routes::RouteTargets;
use crate::{Paths, ServerConfig};
use updraft_events::queue::{DeliveryQueue, GroupCommit};
use updraft_events::routing::RoutingSnapshot;
use updraft_telemetry::access::AccessLog;

/// Unreferenced packages younger than this are kept: their deploy may be on its way.
const BLOB_GRACE_US: i64 = 3600 * 1_000_000;

type RevisionId = (String, String);

pub struct PackageInUse {
    platform: Arc<Platform>,
    digest: String,
}

impl Drop for PackageInUse {
    fn drop(&mut self) {
        let mut in_use = self.platform.packages_in_use.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = in_use.get_mut(&self.digest) {
            *count -= 1;
            if *count == 0 {
                in_use.remove(&self.digest);
            }
        }
    }
}

/// A platform just opened, with the ends of its channels its loops take.
pub(crate) struct Opened {
    pub platform: Arc<Platform>,
    pub pokes: mpsc::UnboundedReceiver<RevisionKey>,
    pub routes_applied: watch::Sender<u64>,
    /// What the store held when it opened.
    pub snapshot: Snapshot,
}

pub struct Platform {
    pub config: ServerConfig,
    pub paths: Paths,
    pub store: Arc<dyn Store>,
    pub runtime: Arc<dyn Runtime>,
    /// The wasm driver, also inside `runtime`, for checking components at deploy.
    pub wasm: Arc<WasmRuntime>,
    /// Pulled and imported OCI images, unpacked.
    pub images: Arc<ImageStore>,
    pub routes: Arc<RouteTable>,
    pub gateway: Arc<Gateway>,
    pub cgroup_version: &'static str,
    revisions: RwLock<HashMap<RevisionId, Arc<RevisionState>>>,
    /// Held for the server's life: a second server on the same data directory would
    /// reap this one's instances at its start.
    _data_dir_lock: fs::File,
    deploy_locks: Mutex<HashMap<RevisionId, Arc<tokio::sync::Mutex<()>>>>,
    /// Package digests that deploys under way are using, with how many use each.
    packages_in_use: Mutex<HashMap<String, usize>>,
    pokes: mpsc::UnboundedSender<RevisionKey>,
    /// The store revision the route table reflects, from the route reconciler.
    routes_applied: watch::Receiver<u64>,
    /// Instances launched since the pool was last sized: the demand it follows.
    pub(crate) launches: AtomicU64,
    /// Set by a second stop signal: instances are stopped without waiting for their
    /// requests or their grace.
    pub(crate) stopping_now: AtomicBool,
    pub metrics: Arc<Metrics>,
    /// New instance output, for `logs --follow`.
    pub log_feed: updraft_telemetry::logs::LogFeed,
    /// Requests answered since metering last wrote.
    pub(crate) requests: Arc<RequestLedger>,
    pub(crate) access_log: Arc<AccessLog>,
    /// The same store, seen as triggers, brokers and the delivery queue.
    pub events: Arc<dyn EventStore>,
    pub(crate) signals: TriggerSignals,
    pub(crate) event_queue: Box<dyn DeliveryQueue>,
    /// Namespaces, brokers and triggers as of the store's last version, for routing.
    pub(crate) routing_cache: Mutex<Option<Arc<RoutingSnapshot>>>,
    pub(crate) sink_client: SinkClient,
}

/// The gateway's reports, counted into the platform's metrics, metering and access log.
struct MetricsObserver(Arc<Metrics>, Arc<RequestLedger>, Arc<AccessLog>);

pub fn revision_labels(key: &RevisionKey) -> RevisionLabels {
    RevisionLabels {
        namespace: key.namespace.clone(),
        service: key.service.clone(),
        revision: key.revision.clone(),
    }
}

impl RequestObserver for MetricsObserver {
    fn answered(&self, revision: &RevisionKey, access: Access) {
        self.0.request(revision_labels(revision), access.status, access.took);
        self.1.add(revision, access.took.as_secs_f64());
        self.2.record(
            &revision.namespace,
            &revision.service,
            AccessRecord {
                ts_us: now_us(),
                revision: revision.revision.clone(),
                instance: access.instance,
                method: access.method,
                path: access.path,
                status: access.status,
                duration_ms: access.took.as_secs_f64() * 1000.0,
                cold: access.cold,
                traceparent: access.traceparent,
            },
        );
    }

    fn held(&self, revision: &RevisionKey, waited: std::time::Duration) {
        self.0
            .activator_wait
            .get_or_create(&revision_labels(revision))
            .observe(waited.as_secs_f64());
    }
}

struct ScalerPoke(mpsc::UnboundedSender<RevisionKey>);

impl Poke for ScalerPoke {
    fn poke(&self, revision: &Arc<RevisionEndpoints>) {
        let _ = self.0.send(revision.key.clone());
    }
}

fn lock_data_dir(paths: &Paths) -> anyhow::Result<fs::File> {
    use std::os::fd::AsRawFd;
    let path = paths.root.join("lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    // The kernel drops the lock when the process dies, kill -9 included.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        anyhow::bail!(
            "another updraft server is using the data directory {}; stop it or pass another --data-dir",
            paths.root.display()
        );
    }
    Ok(file)
}

/// The cgroup of one data directory, so servers sharing a machine keep apart.
fn cgroup_parent(paths: &Paths) -> String {
    let canonical = fs::canonicalize(&paths.root).unwrap_or_else(|_| paths.root.clone());
    let digest = Sha256::digest(canonical.as_os_str().as_encoded_bytes());
    format!("updraft-{}", &hex::encode(digest)[..12])
}

impl Platform {
    pub(crate) fn open(config: ServerConfig) -> anyhow::Result<Opened> {
        crate::data_dir::private_umask();
        fs::create_dir_all(&config.data_dir).with_context(|| format!("creating {}", config.data_dir.display()))?;
        // Absolute from here on: instances run with their revision directory as working
        // directory, where a relative path would point somewhere else.
        let root = fs::canonicalize(&config.data_dir)?;
        let paths = Paths::new(&root);
        for dir in [&paths.root, &paths.blobs, &paths.revisions, &paths.logs, &paths.run] {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let data_dir_lock = lock_data_dir(&paths)?;
        crate::data_dir::restrict(&root).with_context(|| format!("making {} private", root.display()))?;
        // Half-written uploads and unpacks from a crashed run.
        let _ = fs::remove_dir_all(&paths.tmp);
        fs::create_dir_all(&paths.tmp)?;
        let sqlite = Arc::new(
            SqliteStore::open(&paths.db, now_us()).with_context(|| format!("opening {}", paths.db.display()))?,
        );
        let store: Arc<dyn Store> = sqlite.clone();
        let events: Arc<dyn EventStore> = sqlite;
        let (log_feed, _) = tokio::sync::broadcast::channel(updraft_telemetry::logs::FEED_CAPACITY);
        fs::create_dir_all(&paths.logs)?;
        let logs = Arc::new(crate::instance_logs::InstanceLogs {
            dir: paths.logs.clone(),
            feed: log_feed.clone(),
        });
        let mut process = ProcessRuntime::new(logs.clone(), paths.run.clone(), &cgroup_parent(&paths))?;
        if !config.pool.stem_command.is_empty() && config.pool.max_memory_bytes > 0 {
            process = process.with_stems(config.pool.stem_command.clone());
        }
        let containers = Containers::new(config.runc.clone(), &paths.root.join("containers"))?;
        let process = process
            .with_function_runtimes(paths.root.join("shims"))?
            .with_containers(containers);
        let images = Arc::new(ImageStore::open(paths.root.join("images")).context("opening the image store")?);
        let cgroup_version = process.cgroups().version();
        let wasm = Arc::new(
            WasmRuntime::new(paths.root.join("wasm-cache"), logs, config.wasm_pool)
                .context("starting the wasm runtime")?,
        );
        let runtime: Arc<dyn Runtime> = Arc::new(Runtimes {
            process: Arc::new(process),
            wasm: wasm.clone(),
        });
        let reaped = runtime.reap_leftovers();
        if reaped > 0 {
            tracing::info!(reaped, "stopped instances left by an earlier run");
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let (routes_applied_tx, routes_applied) = watch::channel(0);
        let routes = Arc::new(RouteTable::default());
        let metrics = Arc::new(Metrics::new());
        let requests = Arc::new(RequestLedger::default());
        let (access_log, access_writer) = AccessLog::new(&paths.logs);
        tokio::spawn(access_writer);
        let access_log = Arc::new(access_log);
        let gateway = Arc::new(
            Gateway::new(routes.clone(), Arc::new(ScalerPoke(tx.clone())), config.activator)
                .with_upstream_pool(config.upstream)
                .with_observer(Arc::new(MetricsObserver(
                    metrics.clone(),
                    requests.clone(),
                    access_log.clone(),
                ))),
        );
        let platform = Arc::new(Platform {
            config,
            paths,
            store,
            runtime,
            wasm,
            images,
            routes,
            gateway,
            cgroup_version,
            revisions: RwLock::new(HashMap::new()),
            _data_dir_lock: data_dir_lock,
            deploy_locks: Mutex::new(HashMap::new()),
            packages_in_use: Mutex::new(HashMap::new()),
            pokes: tx,
            routes_applied,
            launches: AtomicU64::new(0),
            stopping_now: AtomicBool::new(false),
            metrics,
            log_feed,
            requests,
            access_log,
            event_queue: Box::new(GroupCommit::start(events.clone(), now_us)?),
            events,
            signals: TriggerSignals::default(),
            routing_cache: Mutex::new(None),
            sink_client: crate::event_io::sink_client(),
        });
        // One list at start: the registry and the route table follow the store from
        // the revision it was read at.
        let snapshot = platform.store.snapshot()?;
        platform.load_revisions(&snapshot.revisions)?;
        platform.collect_garbage();
        Ok(Opened {
            snapshot,
            platform,
            pokes: rx,
            routes_applied: routes_applied_tx,
        })
    }

    fn load_revisions(&self, revisions: &[Revision]) -> anyhow::Result<()> {
        let mut registry = self.revisions.write().unwrap_or_else(|p| p.into_inner());
        for revision in revisions.iter().cloned() {
            let dir = self.paths.revision_dir(&revision.namespace, &revision.name);
            // Components and images run from their own stores; only packages are unpacked.
            if !dir.exists() && revision.config.runtime.runs_from_package() {
                // Unpacked trees are derived state; rebuild one that went missing.
                let blob = self.paths.blob(&revision.config.package_digest);
                updraft_runtime::package::unpack(&blob, &dir, self.unpack_limits())
                    .with_context(|| format!("unpacking revision {}", revision.name))?;
            }
            registry.insert(
                (revision.namespace.clone(), revision.name.clone()),
                RevisionState::new(revision, &self.config.scaling),
            );
        }
        Ok(())
    }

    /// Removes unpacked trees no revision owns and packages no revision uses.
    pub(crate) fn collect_garbage(&self) {
        let known: Vec<std::path::PathBuf> = self
            .revisions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .map(|(ns, rev)| self.paths.revision_dir(ns, rev))
            .collect();
        for ns in fs::read_dir(&self.paths.revisions).into_iter().flatten().flatten() {
            for rev in fs::read_dir(ns.path()).into_iter().flatten().flatten() {
                if !known.contains(&rev.path()) {
                    let _ = fs::remove_dir_all(rev.path());
                }
            }
        }
        if let Ok(digests) = self.store.unreferenced_blobs(now_us() - BLOB_GRACE_US) {
            for digest in digests {
                let _ = fs::remove_file(self.paths.blob(&digest));
                // An image's unpacked root goes too; its layer blobs stay as the cache
                // the next pull of a related image starts from.
                self.images.remove(&digest);
                let _ = self.store.delete_blob(&digest);
            }
        }
    }

    pub fn unpack_limits(&self) -> updraft_runtime::package::UnpackLimits {
        updraft_runtime::package::UnpackLimits {
            max_bytes: self.config.max_unpacked_bytes,
            ..Default::default()
        }
    }

    pub fn revision(&self, namespace: &str, name: &str) -> Option<Arc<RevisionState>> {
        self.revisions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    pub fn all_revision_states(&self) -> Vec<Arc<RevisionState>> {
        self.revisions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn register(&self, state: Arc<RevisionState>) {
        let key = (state.revision.namespace.clone(), state.revision.name.clone());
        self.revisions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, state);
    }

    /// Forgets a deleted revision; requests held for it are answered with `reason`.
    pub(crate) fn unregister(&self, namespace: &str, name: &str, reason: &str) -> Option<Arc<RevisionState>> {
        let state = self
            .revisions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(namespace.to_string(), name.to_string()))?;
        state.endpoints.retire(reason.to_string());
        Some(state)
    }

    pub fn deploy_lock(&self, namespace: &str, service: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.deploy_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((namespace.to_string(), service.to_string()))
            .or_default()
            .clone()
    }

    /// Marks a package as used by a deploy until the guard drops.
    pub fn use_package(self: &Arc<Self>, digest: &str) -> PackageInUse {
        *self
            .packages_in_use
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(digest.to_string())
            .or_default() += 1;
        PackageInUse {
            platform: self.clone(),
            digest: digest.to_string(),
        }
    }

    /// Drops a package that no revision and no deploy under way uses: a failed deploy
    /// leaves nothing behind.
    pub fn discard_package_if_unused(&self, digest: &str) {
        let in_use = self.packages_in_use.lock().unwrap_or_else(|p| p.into_inner());
        if in_use.contains_key(digest) {
            return;
        }
        if let Ok(unused) = self.store.unreferenced_blobs(i64::MAX) {
            if unused.iter().any(|d| d == digest) {
                let _ = fs::remove_file(self.paths.blob(digest));
                let _ = self.store.delete_blob(digest);
            }
        }
    }

    pub fn poke(&self, state: &RevisionState) {
        let _ = self.pokes.send(state.endpoints.key.clone());
    }

    /// Waits until the route table reflects every write to the store so far, so an
    /// answer to a write is true of the gateway too.
    pub(crate) async fn routes_caught_up(&self) -> Result<(), crate::ApiError> {
        let written = self.store.current_revision()?;
        let mut applied = self.routes_applied.clone();
        // An error means the reconciler stopped with the server: nothing to wait for.
        let _ = applied.wait_for(|at| *at >= written).await;
        Ok(())
    }

    /// Deletes a service: routes first, then its instances, files and logs.
    pub async fn delete_service(self: &Arc<Self>, namespace: &str, name: &str) -> Result<(), crate::ApiError> {
        let lock = self.deploy_lock(namespace, name);
        let _held = lock.lock().await;
        let revisions = self.store.delete_service(namespace, name)?;
        self.routes_caught_up().await?;
        let reason = format!("service {name} in namespace {namespace} was deleted");
        let states = revisions
            .iter()
            .filter_map(|r| self.unregister(namespace, &r.name, &reason))
            .collect();
        self.stop_revisions(states).await;
        for revision in &revisions {
            let _ = fs::remove_dir_all(self.paths.revision_dir(namespace, &revision.name));
        }
        let _ = fs::remove_dir_all(updraft_telemetry::logs::service_log_dir(
            &self.paths.logs,
            namespace,
            name,
        ));
        self.collect_garbage();
        Ok(())
    }

    /// Stops every instance of the given revisions, all at once.
    pub(crate) async fn stop_revisions(self: &Arc<Self>, states: Vec<Arc<RevisionState>>) {
        let mut stops = Vec::new();
        for state in states {
            for managed in state.instances() {
                let platform = self.clone();
                let state = state.clone();
                stops.push(tokio::spawn(
                    async move { platform.stop_instance(&state, &managed).await },
                ));
            }
        }
        for stop in stops {
            let _ = stop.await;
        }
    }
}

impl RouteTargets for Platform {
    fn endpoints(&self, namespace: &str, revision: &str) -> Option<Arc<RevisionEndpoints>> {
        self.revision(namespace, revision).map(|state| state.endpoints.clone())
    }

    fn set_routed(&self, namespace: &str, revision: &str, routed: bool) {
        if let Some(state) = self.revision(namespace, revision) {
            if state.routable.swap(routed, std::sync::atomic::Ordering::Relaxed) && !routed {
                self.poke(&state);
            }
        }
    }
}
