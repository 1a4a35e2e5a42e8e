//! The running platform: the store, the revision registry derived from it, the route
//! table, and the start-up and shutdown sequences.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use anyhow::Context;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use updraft_gateway::{Access, Gateway, Poke, RequestObserver, RevisionEndpoints, RevisionKey, RouteTable};
use updraft_runtime::clock::now_us;
use updraft_runtime::image::ImageStore;
use updraft_runtime::oci::Containers;
use updraft_runtime::sandbox::Sandbox;
use updraft_runtime::wasm::WasmRuntime;
use updraft_runtime::{ProcessRuntime, Runtime, Runtimes};
use updraft_store::{EventStore, Snapshot, SqliteStore, Store};
use updraft_telemetry::logs::AccessRecord;
use updraft_telemetry::{Metrics, RevisionLabels};

use crate::builds::Builds;
use crate::deploy::Deployer;
use crate::editions::Editions;
use crate::instances::Instances;
use crate::locks::ServiceLocks;
use crate::meter::Meter;
use crate::node_revisions::{discard_revision_logs, NodeRevisions};
use crate::quota::Quotas;
use crate::reconcile::Applied;
use crate::revision_build::RevisionBuilder;
use crate::revision_state::{Registry, RequestLedger};
use crate::revisions::RevisionHost;
use crate::secrets::{SecretKey, Secrets, SECRET_KEY_FILE};
use crate::{Paths, ServerConfig};
use updraft_events::dispatch::Signals;
use updraft_events::queue::{DeliveryQueue, GroupCommit};
use updraft_events::routing::RoutingCache;
use updraft_telemetry::access::AccessLog;

/// Unreferenced packages younger than this are kept: their deploy may be on its way.
const BLOB_GRACE_US: i64 = 3600 * 1_000_000;

/// A platform just opened, with the ends of its channels its loops take.
pub(crate) struct Opened {
    pub platform: Arc<Platform>,
    pub pokes: mpsc::UnboundedReceiver<RevisionKey>,
    pub routes_applied: watch::Sender<u64>,
    pub revisions_applied: watch::Sender<u64>,
    /// What the store held when it opened.
    pub snapshot: Snapshot,
    /// The registry's side of the revision reconciler.
    pub node_revisions: Arc<NodeRevisions>,
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
    /// Custom domains with a certificate of their own, for the TLS acceptor.
    pub tls_domains: Arc<crate::tls::TlsDomains>,
    pub gateway: Arc<Gateway>,
    pub cgroup_version: &'static str,
    pub registry: Arc<Registry>,
    /// Held for the server's life: a second server on the same data directory would
    /// reap this one's instances at its start.
    _data_dir_lock: fs::File,
    /// Confines code packages and function runtimes, when on.
    pub sandbox: Option<Arc<Sandbox>>,
    /// Every namespace's quota, for launches to be checked against.
    pub quotas: Arc<Quotas>,
    pub secrets: Arc<Secrets>,
    /// Which CPUs and memory the exclusive namespaces hold.
    pub editions: Arc<Editions>,
    /// Held from checking a namespace's new limits to writing them, so two changes
    /// cannot both take the last CPU the machine had to give.
    pub(crate) limits_writes: tokio::sync::Mutex<()>,
    pub(crate) locks: Arc<ServiceLocks>,
    pub deployer: Arc<Deployer>,
    pub instances: Arc<Instances>,
    /// How far the route and revision reconcilers are current.
    pub(crate) applied: Applied,
    pub metrics: Arc<Metrics>,
    /// New instance output, for `logs --follow`.
    pub log_feed: updraft_telemetry::logs::LogFeed,
    pub(crate) meter: Arc<Meter>,
    pub(crate) access_log: Arc<AccessLog>,
    /// The same store, seen as triggers, brokers and the delivery queue.
    pub events: Arc<dyn EventStore>,
    pub(crate) signals: Arc<Signals>,
    pub(crate) event_queue: Arc<dyn DeliveryQueue>,
    /// Namespaces, brokers and triggers as of the store's last version, for routing.
    pub(crate) routing: Arc<RoutingCache>,
    pub(crate) fire_quotas: crate::fire_quotas::FireQuotas,
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
    pub(crate) async fn open(config: ServerConfig) -> anyhow::Result<Opened> {
        crate::data_dir::private_umask();
        fs::create_dir_all(&config.data_dir).with_context(|| format!("creating {}", config.data_dir.display()))?;
        // Absolute from here on: instances run with their revision directory as working
        // directory, where a relative path would point somewhere else.
        let root = fs::canonicalize(&config.data_dir)?;
        let paths = Paths::new(&root);
        for dir in [
            &paths.root,
            &paths.blobs,
            &paths.revisions,
            &paths.layers,
            &paths.build_cache,
            &paths.logs,
            &paths.run,
        ] {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        // Passed through but not listed: a namespace's instances find only its layers.
        for dir in [&paths.layers, &paths.build_cache] {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o711))?;
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
        let secret_key = Arc::new(match &config.secret_key_file {
            Some(path) => SecretKey::load(path, false),
            None => SecretKey::load(&paths.root.join(SECRET_KEY_FILE), true),
        }?);
        let secrets = Arc::new(Secrets::load(secret_key.clone(), &*store).await?);
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
        let sandbox = match &config.sandbox {
            Some(command) => {
                let mut shown = vec![paths.revisions.clone(), paths.layers.clone(), paths.root.join("shims")];
                // The sandbox's /tmp is its own: a server run from there needs its
                // binary shown for the stem cells to start.
                shown.extend(
                    config
                        .pool
                        .stem_command
                        .first()
                        .filter(|p| p.starts_with("/tmp"))
                        .cloned(),
                );
                let sandbox = Sandbox::new(command.clone(), &paths.root, shown, &config.sandbox_slots)
                    .context("preparing the sandbox")?;
                Some(Arc::new(sandbox))
            }
            None => None,
        };
        if let Some(sandbox) = &sandbox {
            process = process.with_sandbox(sandbox.clone());
        }
        let containers = Containers::new(config.runc.clone(), &paths.root.join("containers"))?;
        let process = process
            .with_function_runtimes(paths.root.join("shims"))?
            .with_containers(containers);
        let images =
            Arc::new(ImageStore::open(paths.root.join("images"), secret_key).context("opening the image store")?);
        let cgroup_version = process.cgroups().version();
        let wasm = Arc::new(
            WasmRuntime::new(paths.root.join("wasm-cache"), logs, config.wasm_pool)
                .context("starting the wasm runtime")?,
        );
        let editions = Arc::new(Editions::new(process.cgroups().clone(), wasm.threads()));
        let build_cgroups = process.cgroups().clone();
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
        let (revisions_applied_tx, revisions_applied) = watch::channel(0);
        let routes = Arc::new(RouteTable::default());
        let metrics = Arc::new(Metrics::new());
        let requests = Arc::new(RequestLedger::default());
        let registry = Arc::new(Registry::default());
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
                )))
                .with_guard(Arc::new(crate::authz::TokenGuard(store.clone()))),
        );
        let meter = Arc::new(Meter::new(store.clone(), registry.clone(), requests));
        let quotas = Arc::new(Quotas::default());
        let event_queue: Arc<dyn DeliveryQueue> = Arc::new(GroupCommit::start(events.clone(), now_us)?);
        let routing = Arc::new(RoutingCache::new(store.clone(), events.clone()));
        let signals: Arc<Signals> = Arc::default();
        let announcer = Arc::new(crate::announce::Announcer {
            routing: routing.clone(),
            queue: event_queue.clone(),
            signals: signals.clone(),
        });
        let instances = Arc::new(
            Instances::new(
                runtime.clone(),
                images.clone(),
                &config,
                paths.clone(),
                metrics.clone(),
                meter.clone(),
                tx,
            )
            .counting(registry.clone(), quotas.clone())
            .with_secrets(secrets.clone())
            .announcing(announcer.clone()),
        );
        let locks = Arc::new(ServiceLocks::default());
        let applied = Applied {
            routes: routes_applied,
            revisions: revisions_applied,
        };
        let deployer = Arc::new(Deployer {
            store: store.clone(),
            registry: registry.clone(),
            build: RevisionBuilder {
                store: store.clone(),
                images: images.clone(),
                wasm: wasm.clone(),
                paths: paths.clone(),
                unpack_limits: unpack_limits(&config),
                secrets: secrets.clone(),
                builds: Arc::new(Builds::new(
                    paths.clone(),
                    sandbox.clone(),
                    Some(build_cgroups),
                    config.build_limits,
                    log_feed.clone(),
                )),
            },
            locks: locks.clone(),
            applied: applied.clone(),
            announcer,
        });
        let node_revisions = Arc::new(NodeRevisions {
            registry: registry.clone(),
            instances: instances.clone(),
            paths: paths.clone(),
            scaling: config.scaling.clone(),
            unpack_limits: unpack_limits(&config),
        });
        let platform = Arc::new(Platform {
            config,
            paths,
            store: store.clone(),
            runtime,
            wasm,
            images,
            routes,
            tls_domains: Arc::default(),
            gateway,
            cgroup_version,
            _data_dir_lock: data_dir_lock,
            sandbox,
            quotas,
            secrets,
            editions,
            limits_writes: tokio::sync::Mutex::new(()),
            locks,
            deployer,
            instances,
            applied,
            metrics,
            log_feed,
            meter,
            registry,
            access_log,
            event_queue,
            routing,
            fire_quotas: Default::default(),
            events,
            signals,
        });
        // Deploys under way when the last run ended were never answered: withdrawn.
        for staged in platform.store.staged_revisions().await? {
            let r = &staged.revision;
            platform.store.withdraw_staged(&r.namespace, &r.name).await?;
            discard_revision_logs(&platform.paths, &r.namespace, &r.service, &r.name);
        }
        // One list at start: the registry and the route table follow the store from
        // the revision it was read at.
        let snapshot = platform.store.snapshot().await?;
        for revision in &snapshot.revisions {
            node_revisions.ensure(revision.clone()).map_err(anyhow::Error::msg)?;
        }
        platform.collect_garbage().await;
        Ok(Opened {
            snapshot,
            node_revisions,
            platform,
            pokes: rx,
            routes_applied: routes_applied_tx,
            revisions_applied: revisions_applied_tx,
        })
    }

    /// Removes unpacked trees no revision owns, and packages and dependency layers no
    /// revision uses.
    pub(crate) async fn collect_garbage(&self) {
        let known: Vec<std::path::PathBuf> = self
            .registry
            .all()
            .iter()
            .map(|s| self.paths.revision_dir(&s.revision.namespace, &s.revision.name))
            .collect();
        for ns in fs::read_dir(&self.paths.revisions).into_iter().flatten().flatten() {
            for rev in fs::read_dir(ns.path()).into_iter().flatten().flatten() {
                if !known.contains(&rev.path()) {
                    let _ = fs::remove_dir_all(rev.path());
                }
            }
        }
        let used: std::collections::HashSet<std::path::PathBuf> = self
            .registry
            .all()
            .iter()
            .flat_map(|s| {
                let dir = self.paths.layers.join(&s.revision.namespace);
                s.revision.config.layers.iter().map(move |key| dir.join(key))
            })
            .collect();
        let grace = std::time::SystemTime::now() - std::time::Duration::from_micros(BLOB_GRACE_US as u64);
        for ns in fs::read_dir(&self.paths.layers).into_iter().flatten().flatten() {
            for layer in fs::read_dir(ns.path()).into_iter().flatten().flatten() {
                // A layer built for a deploy still under way has no revision yet.
                let recent = layer.metadata().and_then(|m| m.modified()).is_ok_and(|t| t > grace);
                if !recent && !used.contains(&layer.path()) {
                    let _ = fs::remove_dir_all(layer.path());
                }
            }
        }
        if let Ok(digests) = self.store.unreferenced_blobs(now_us() - BLOB_GRACE_US).await {
            for digest in digests {
                let _ = fs::remove_file(self.paths.blob(&digest));
                // An image's unpacked root goes too; its layer blobs stay as the cache
                // the next pull of a related image starts from.
                self.images.remove(&digest);
                let _ = self.store.delete_blob(&digest).await;
            }
        }
    }

    pub fn unpack_limits(&self) -> updraft_runtime::package::UnpackLimits {
        unpack_limits(&self.config)
    }

    pub async fn require_namespace(&self, namespace: &str) -> Result<updraft_model::Namespace, crate::ApiError> {
        crate::deploy::require_namespace(&*self.store, namespace).await
    }

    /// Deletes a service; the reconcilers take its routes, instances and files away,
    /// and its logs go once they have.
    pub async fn delete_service(self: &Arc<Self>, namespace: &str, name: &str) -> Result<(), crate::ApiError> {
        let lock = self.locks.service(namespace, name);
        let _held = lock.lock().await;
        self.store.delete_service(namespace, name).await?;
        self.applied.all(&*self.store).await;
        if let Some(announcer) = &self.instances.announcer {
            announcer.announce(
                namespace,
                updraft_events::announce::SERVICE_DELETED,
                name,
                serde_json::json!({"service": name}),
            );
        }
        let _ = fs::remove_dir_all(updraft_telemetry::logs::service_log_dir(
            &self.paths.logs,
            namespace,
            name,
        ));
        self.collect_garbage().await;
        Ok(())
    }

    /// Deletes a namespace and what it holds; with `force` its services first.
    pub async fn delete_namespace(self: &Arc<Self>, namespace: &str, force: bool) -> Result<(), crate::ApiError> {
        if namespace == updraft_model::DEFAULT_NAMESPACE {
            return Err(crate::ApiError::new(
                axum::http::StatusCode::CONFLICT,
                format!("namespace {namespace:?} is where commands go by default; it cannot be deleted"),
            ));
        }
        self.require_namespace(namespace).await?;
        let services = self.store.services(Some(namespace)).await?;
        if !services.is_empty() && !force {
            let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
            return Err(crate::ApiError::new(
                axum::http::StatusCode::CONFLICT,
                format!(
                    "namespace {namespace:?} holds {} services ({}); delete them, or delete the namespace with force (--force) to delete them too",
                    names.len(),
                    names.join(", ")
                ),
            ));
        }
        // The services' folders go with the namespace's, and one collection after
        // the reconcilers have caught up serves them all.
        for service in &services {
            let lock = self.locks.service(namespace, &service.name);
            let _held = lock.lock().await;
            self.store.delete_service(namespace, &service.name).await?;
        }
        self.store.delete_namespace(namespace).await?;
        self.secrets.namespace_deleted(namespace);
        self.applied.all(&*self.store).await;
        for dir in [
            &self.paths.logs,
            &self.paths.layers,
            &self.paths.build_cache,
            &self.paths.revisions,
        ] {
            let _ = fs::remove_dir_all(dir.join(namespace));
        }
        self.collect_garbage().await;
        Ok(())
    }
}

fn unpack_limits(config: &ServerConfig) -> updraft_runtime::package::UnpackLimits {
    updraft_runtime::package::UnpackLimits {
        max_bytes: config.max_unpacked_bytes,
        ..Default::default()
    }
}
