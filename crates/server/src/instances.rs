//! The life of each instance, for any revision: launched; ready (its own process
//! accepts on `$PORT`) and then in rotation; out of rotation at once when it exits on
//! its own, counted against its revision's crash loop; or, when scaled down or
//! retired, out of rotation, drained, then stopped.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use updraft_events::announce::{COLD_START, INSTANCE_CRASHED, QUOTA_EXCEEDED};

use tokio::sync::mpsc;
use updraft_gateway::{Endpoint, RevisionEndpoints, RevisionKey};
use updraft_model::annotations::progress_deadline;
use updraft_model::template::Readiness;
use updraft_model::{RunningUse, RuntimeKind};
use updraft_runtime::clock::now_us;
use updraft_runtime::image::ImageStore;
use updraft_runtime::oci::ContainerSpec;
use updraft_runtime::wasm::WasmSpec;
use updraft_runtime::{
    cgroup::Limits, probe_once, wait_ready, FunctionSpec, InstanceSpec, Probe, Runtime, Streak, TimedProbe, Verdict,
    Workload,
};
use updraft_telemetry::{ColdStartLabels, Metrics};

use crate::meter::Meter;
use crate::quota::Quotas;
use crate::revision_state::{ColdStart, EventKind, ManagedInstance, Registry, RevisionState, ScaleEvent};
use crate::routes::RouteTargets;
use crate::secrets::Secrets;
use crate::{Paths, ServerConfig};

/// Instance ids like Kubernetes pod names: the revision and a short random suffix.
fn instance_id(revision: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_i64(now_us());
    format!("{revision}-{:06x}", hasher.finish() & 0xff_ffff)
}

pub struct Instances {
    runtime: Arc<dyn Runtime>,
    images: Arc<ImageStore>,
    paths: Paths,
    metrics: Arc<Metrics>,
    meter: Arc<Meter>,
    /// Asks the autoscaler to look at a revision now.
    pokes: mpsc::UnboundedSender<RevisionKey>,
    ready_timeout: Duration,
    drain_timeout: Duration,
    stop_grace: Duration,
    /// Instances launched since the pool was last sized: the demand it follows.
    pub launches: AtomicU64,
    /// Set by a second stop signal: instances are stopped without waiting for their
    /// requests or their grace.
    pub stopping_now: AtomicBool,
    /// What runs, counted against the namespaces' quotas on it.
    registry: Arc<Registry>,
    quotas: Arc<Quotas>,
    /// Held from a quota's check to the launch it admits, so two launches cannot
    /// both take the last instance a quota allows.
    quota_launches: Mutex<()>,
    /// Where variables from secrets are read when an instance starts.
    secrets: Option<Arc<Secrets>>,
    /// Crashes, cold starts, scaling and refusals, for the platform sources.
    pub(crate) announcer: Option<Arc<crate::announce::Announcer>>,
}

impl Instances {
    pub fn new(
        runtime: Arc<dyn Runtime>,
        images: Arc<ImageStore>,
        config: &ServerConfig,
        paths: Paths,
        metrics: Arc<Metrics>,
        meter: Arc<Meter>,
        pokes: mpsc::UnboundedSender<RevisionKey>,
    ) -> Instances {
        Instances {
            runtime,
            images,
            paths,
            metrics,
            meter,
            pokes,
            ready_timeout: config.ready_timeout,
            drain_timeout: config.drain_timeout,
            stop_grace: config.stop_grace,
            launches: AtomicU64::new(0),
            stopping_now: AtomicBool::new(false),
            registry: Arc::default(),
            quotas: Arc::default(),
            quota_launches: Mutex::new(()),
            secrets: None,
            announcer: None,
        }
    }

    pub fn announcing(mut self, announcer: Arc<crate::announce::Announcer>) -> Instances {
        self.announcer = Some(announcer);
        self
    }

    /// Tells the platform sources of `state`'s namespace, if there are any.
    pub(crate) fn announce(&self, state: &RevisionState, ty: &'static str, mut data: serde_json::Value) {
        let Some(announcer) = &self.announcer else {
            return;
        };
        let key = &state.endpoints.key;
        data["service"] = key.service.clone().into();
        data["revision"] = key.revision.clone().into();
        announcer.announce(&key.namespace, ty, &key.service, data);
    }

    pub fn with_secrets(mut self, secrets: Arc<Secrets>) -> Instances {
        self.secrets = Some(secrets);
        self
    }

    /// The revision's variables, those from its namespace's secrets last (they win
    /// over a package's own defaults).
    fn env(&self, revision: &updraft_model::Revision) -> Result<std::collections::BTreeMap<String, String>, String> {
        let config = &revision.config;
        let mut env = config.env.clone();
        if config.env_secrets.is_empty() {
            return Ok(env);
        }
        let secrets = self
            .secrets
            .as_ref()
            .ok_or("this server keeps no secrets for variables to come from")?;
        env.extend(secrets.env(&revision.namespace, &config.env_secrets)?);
        Ok(env)
    }

    /// Holds launches to the namespaces' `quotas` on what runs, counted in `registry`.
    pub fn counting(mut self, registry: Arc<Registry>, quotas: Arc<Quotas>) -> Instances {
        self.registry = registry;
        self.quotas = quotas;
        self
    }

    /// What the namespace's instances hold now, stopping ones included.
    pub fn running_in(&self, namespace: &str) -> RunningUse {
        let mut running = RunningUse::default();
        for state in self.registry.all() {
            if state.revision.namespace != namespace {
                continue;
            }
            let count = state.instances().len() as u64;
            let config = &state.revision.config;
            running.instances += count as u32;
            running.memory_bytes += count * config.memory_bytes.unwrap_or(0);
            running.cpu_millis += count * u64::from(config.cpu_millis.unwrap_or(0));
        }
        running
    }

    /// Weighs one more instance of `state` against its namespace's quotas on what
    /// runs; the guard it gives is held until the launch is counted.
    fn admit(&self, state: &RevisionState) -> Result<Option<MutexGuard<'_, ()>>, String> {
        let revision = &state.revision;
        let quota = self.quotas.of(&revision.namespace);
        if !quota.caps_running() {
            return Ok(None);
        }
        let admitted = self.quota_launches.lock().unwrap_or_else(|p| p.into_inner());
        let config = &revision.config;
        quota
            .admit_instance(
                &revision.namespace,
                self.running_in(&revision.namespace),
                config.memory_bytes,
                config.cpu_millis,
            )
            .inspect_err(|reason| {
                state.endpoints.start_over_quota(reason.clone());
                self.announce(state, QUOTA_EXCEEDED, serde_json::json!({"reason": reason}));
            })?;
        Ok(Some(admitted))
    }

    pub fn poke(&self, state: &RevisionState) {
        let _ = self.pokes.send(state.endpoints.key.clone());
    }

    /// Starts one instance's process and counts it at once, so a burst of pokes
    /// before it is ready does not start more.
    pub fn launch(self: &Arc<Self>, state: &Arc<RevisionState>) -> Result<Arc<ManagedInstance>, String> {
        let began = Instant::now();
        let revision = &state.revision;
        let config = &revision.config;
        let _admitted = self.admit(state)?;
        let workload = match config.runtime {
            RuntimeKind::Process => Workload::Process,
            RuntimeKind::Oci => {
                let image = self.images.get(&config.package_digest).ok_or_else(|| {
                    let reason = format!("image {} is no longer in the image store", config.package_digest);
                    state.endpoints.start_failed(reason.clone());
                    reason
                })?;
                Workload::Container(ContainerSpec {
                    rootfs: image.rootfs,
                    image: image.info,
                })
            }
            RuntimeKind::Wasm => Workload::Wasm(WasmSpec {
                digest: config.package_digest.clone(),
                component: self.paths.blob(&config.package_digest),
                allowed_hosts: config.allowed_hosts.clone(),
                request_timeout: revision.template.timeout(),
            }),
            RuntimeKind::Function(language) => Workload::Function(FunctionSpec {
                language,
                handler: config.command.first().cloned().unwrap_or_default().into(),
            }),
        };
        let env = self
            .env(revision)
            .inspect_err(|reason| state.endpoints.start_failed(reason.clone()))?;
        let spec = InstanceSpec {
            id: instance_id(&revision.name),
            namespace: revision.namespace.clone(),
            service: revision.service.clone(),
            revision: revision.name.clone(),
            command: config.command.clone(),
            env,
            workdir: self.paths.revision_dir(&revision.namespace, &revision.name),
            limits: Limits {
                memory_bytes: config.memory_bytes,
                cpu_millis: config.cpu_millis,
            },
            workload,
        };
        self.launches.fetch_add(1, Ordering::Relaxed);
        let instance = self.runtime.start(spec).map_err(|e| {
            state.endpoints.start_failed(e.to_string());
            e.to_string()
        })?;
        let managed = Arc::new(ManagedInstance {
            endpoint: Arc::new(Endpoint {
                instance: instance.id.clone(),
                // Instances listen on the loopback of the machine that runs them.
                address: std::net::SocketAddr::from(([127, 0, 0, 1], instance.port)),
                in_flight: Default::default(),
            }),
            began,
            spawned: began.elapsed(),
            instance,
            ready_at_us: AtomicI64::new(0),
            stopping: AtomicBool::new(false),
            cpu_seen: std::sync::Mutex::new(None),
            metered: std::sync::Mutex::new(updraft_telemetry::metering::Metered::from(now_us())),
            stopped: AtomicBool::new(false),
        });
        state
            .instances
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(managed.clone());
        Ok(managed)
    }

    /// Waits until a launched instance is ready (then it takes traffic) or fails (then
    /// held requests are told, and it is cleaned away).
    pub async fn await_ready(
        self: &Arc<Self>,
        state: &Arc<RevisionState>,
        managed: &Arc<ManagedInstance>,
        cause: &'static str,
    ) -> Result<(), String> {
        let template = &state.revision.template;
        let readiness = TimedProbe {
            probe: state.revision.config.readiness.as_ref().map_or(Probe::Tcp, probe_of),
            timing: template.readiness_timing,
        };
        let startup = template.startup.as_ref().map(|p| TimedProbe {
            probe: probe_of(&p.check),
            timing: p.timing,
        });
        let timeout = progress_deadline(&template.annotations).unwrap_or(self.ready_timeout);
        match wait_ready(&managed.instance, startup, readiness, timeout).await {
            Ok(_) => {
                let ready = managed.began.elapsed();
                let key = &state.endpoints.key;
                self.metrics.cold_start(
                    ColdStartLabels {
                        namespace: key.namespace.clone(),
                        service: key.service.clone(),
                        revision: key.revision.clone(),
                        runtime: state.revision.config.runtime.to_string(),
                    },
                    ready,
                );
                *state.last_cold_start.lock().unwrap_or_else(|p| p.into_inner()) = Some(ColdStart {
                    at_us: now_us(),
                    instance: managed.instance.id.clone(),
                    ready,
                    cause,
                    from_pool: managed.instance.from_pool,
                });
                self.announce(
                    state,
                    COLD_START,
                    serde_json::json!({
                        "instance": managed.instance.id,
                        "durationMs": ready.as_secs_f64() * 1000.0,
                        "cause": cause,
                        "fromPool": managed.instance.from_pool,
                    }),
                );
                tracing::info!(
                    instance = %managed.instance.id,
                    ready_ms = ready.as_secs_f64() * 1000.0,
                    spawn_ms = managed.spawned.as_secs_f64() * 1000.0,
                    from_pool = managed.instance.from_pool,
                    "instance ready"
                );
                if !managed.stopping.load(Ordering::Relaxed) {
                    state.endpoints.add_ready(managed.endpoint.clone());
                }
                // After it takes traffic, so a view that calls it ready counts it too.
                managed.ready_at_us.store(now_us(), Ordering::Relaxed);
                let instances = self.clone();
                let state = state.clone();
                let watched = managed.clone();
                tokio::spawn(async move {
                    tokio::join!(
                        instances.watch_exit(&state, &watched),
                        instances.watch_health(&state, &watched)
                    )
                });
                Ok(())
            }
            Err(not_ready) => {
                let reason = not_ready.to_string();
                // An instance the scaler itself stopped while it started is no failure.
                if !managed.stopping.swap(true, Ordering::Relaxed) {
                    tracing::warn!(instance = %managed.instance.id, "{reason}");
                    self.instance_failed(state, managed, &reason);
                    state.endpoints.start_failed(reason.clone());
                }
                self.stop_instance(state, managed).await;
                Err(reason)
            }
        }
    }

    /// Notices an instance that exits on its own, takes it out of rotation at once and
    /// lets the scaler replace it if requests still need it.
    async fn watch_exit(self: &Arc<Self>, state: &Arc<RevisionState>, managed: &Arc<ManagedInstance>) {
        let exit = managed.instance.wait_exit().await;
        if !managed.stopping.load(Ordering::Relaxed) {
            self.announce(
                state,
                INSTANCE_CRASHED,
                serde_json::json!({
                    "instance": managed.instance.id,
                    "exitCode": exit.code,
                    "signal": exit.signal,
                    "exit": exit.to_string(),
                }),
            );
        }
        self.restart(state, managed, &format!("{exit} while serving")).await;
    }

    /// Probes a ready instance on its template's schedule, as the kubelet does. A
    /// readiness probe past its failure threshold takes the instance out of rotation
    /// until it passes its success threshold again; a liveness probe past its failure
    /// threshold restarts it: it is stopped and the scaler starts a replacement.
    async fn watch_health(self: &Arc<Self>, state: &Arc<RevisionState>, managed: &Arc<ManagedInstance>) {
        let template = &state.revision.template;
        let liveness = template.liveness.as_ref().map(|p| (probe_of(&p.check), p.timing));
        // Only a declared readiness probe keeps running once the instance is ready.
        let readiness = state
            .revision
            .config
            .readiness
            .as_ref()
            .map(|r| (probe_of(r), template.readiness_timing));
        if liveness.is_none() && readiness.is_none() {
            return;
        }
        let began = tokio::time::Instant::from_std(managed.began);
        let now = tokio::time::Instant::now();
        let mut next_live = liveness.map(|(_, t)| (began + t.initial_delay()).max(now));
        let mut next_ready = readiness.map(|(_, t)| now + t.period_once_ready());
        let (mut live, mut ready) = (Streak::default(), Streak::default());
        let mut in_rotation = true;
        let port = managed.instance.port;
        loop {
            let Some(at) = next_live.into_iter().chain(next_ready).min() else {
                return;
            };
            tokio::time::sleep_until(at).await;
            if managed.stopping.load(Ordering::Relaxed) || managed.instance.exited().is_some() {
                return;
            }
            let now = tokio::time::Instant::now();
            if let (Some((probe, timing)), Some(due)) = (liveness, next_live) {
                if due <= now {
                    let result = probe_once(port, probe, timing.timeout()).await;
                    if live.observe(result.is_ok(), &timing) == Verdict::Failing {
                        let why = format!(
                            "failed its liveness probe {} times in a row (the last: {}); restarted",
                            live.failures,
                            result.err().unwrap_or_default()
                        );
                        self.restart(state, managed, &why).await;
                        return;
                    }
                    next_live = Some(tokio::time::Instant::now() + timing.period());
                }
            }
            if let (Some((probe, timing)), Some(due)) = (readiness, next_ready) {
                if due <= now {
                    let result = probe_once(port, probe, timing.timeout()).await;
                    match ready.observe(result.is_ok(), &timing) {
                        Verdict::Failing if in_rotation => {
                            in_rotation = false;
                            state.endpoints.remove(&managed.instance.id);
                            tracing::warn!(instance = %managed.instance.id, failures = ready.failures, "out of rotation: readiness probe failing ({})", result.err().unwrap_or_default());
                        }
                        Verdict::Passing if !in_rotation => {
                            in_rotation = true;
                            if !managed.stopping.load(Ordering::Relaxed) {
                                state.endpoints.add_ready(managed.endpoint.clone());
                            }
                            tracing::info!(instance = %managed.instance.id, "back in rotation: readiness probe passing");
                        }
                        _ => {}
                    }
                    next_ready = Some(tokio::time::Instant::now() + timing.period_once_ready());
                }
            }
        }
    }

    /// Replaces an instance that failed (exited, or alive but failing its liveness
    /// probe): out of rotation, counted as a failure, stopped, and the scaler told to
    /// start another if it is still needed. Nothing when it is already stopping.
    async fn restart(self: &Arc<Self>, state: &Arc<RevisionState>, managed: &Arc<ManagedInstance>, why: &str) {
        if managed.stopping.swap(true, Ordering::Relaxed) {
            return;
        }
        tracing::warn!(instance = %managed.instance.id, "instance {why}");
        state.endpoints.remove(&managed.instance.id);
        self.instance_failed(state, managed, &format!("instance {why}"));
        self.stop_instance(state, managed).await;
        self.poke(state);
    }

    /// Counts a failed instance against its revision's crash loop. From the second
    /// failure in a row, no instance starts until the back-off has passed, and requests
    /// are told why meanwhile instead of waiting.
    fn instance_failed(&self, state: &RevisionState, managed: &ManagedInstance, what: &str) {
        let now = now_us();
        let ready_at = managed.ready_at_us.load(Ordering::Relaxed);
        let ready_for = if ready_at > 0 { now - ready_at } else { 0 };
        let (delay, failures) = {
            let mut crash_loop = state.crash_loop.lock().unwrap_or_else(|p| p.into_inner());
            let delay = crash_loop.failed(now, ready_for, what.to_string());
            (delay, crash_loop.failures)
        };
        let revision = &state.revision.name;
        let next = if delay > 0 {
            let wait = humantime::format_duration(Duration::from_secs((delay / 1_000_000) as u64));
            state.endpoints.back_off(
                now + delay,
                format!("revision {revision} is crash-looping ({failures} failures in a row; the last: {what}); the next start is in {wait}"),
            );
            format!("; back-off {wait} after {failures} failures in a row")
        } else {
            "; retried at once".to_string()
        };
        tracing::warn!(%revision, instance = %managed.instance.id, failures, backoff_s = delay / 1_000_000, "instance failed: {what}");
        let live = state
            .instances()
            .iter()
            .filter(|m| !m.stopping.load(Ordering::Relaxed))
            .count() as u32;
        state.push_event(ScaleEvent {
            at_us: now,
            from: live + 1,
            to: live,
            what: EventKind::Failed {
                message: format!("{} {what}{next}", managed.instance.id),
            },
        });
    }

    /// Out of rotation, wait for its requests to finish, SIGTERM, SIGKILL after the grace.
    pub async fn stop_instance(&self, state: &RevisionState, managed: &Arc<ManagedInstance>) {
        managed.stopping.store(true, Ordering::Relaxed);
        state.endpoints.remove(&managed.instance.id);
        let deadline = Instant::now() + self.drain_timeout;
        let now = || self.stopping_now.load(Ordering::Relaxed);
        while managed.endpoint.in_flight.load(Ordering::Relaxed) > 0
            && Instant::now() < deadline
            && managed.instance.exited().is_none()
            && !now()
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.meter.meter_stopping(state, managed).await;
        let grace = if now() { Duration::ZERO } else { self.stop_grace };
        managed.instance.stop(grace).await;
        state
            .instances
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|m| !Arc::ptr_eq(m, managed));
    }

    /// Starts a staged revision's first instance and waits until it is ready or failed.
    pub async fn start_first(self: &Arc<Self>, state: &Arc<RevisionState>) -> Result<(), String> {
        let managed = self.launch(state)?;
        self.await_ready(state, &managed, "deploy").await
    }

    /// Stops every instance of the given revisions, all at once.
    pub(crate) async fn stop_revisions(&self, states: Vec<Arc<RevisionState>>) {
        let stops = states
            .iter()
            .flat_map(|state| state.instances().into_iter().map(move |managed| (state, managed)))
            .map(|(state, managed)| async move { self.stop_instance(state, &managed).await });
        futures_util::future::join_all(stops).await;
    }
}

fn probe_of(check: &Readiness) -> Probe<'_> {
    match check {
        Readiness::HttpGet { path } => Probe::Http { path },
        Readiness::TcpSocket => Probe::Tcp,
    }
}

/// The gateway's targets: the registry's revisions, whose instances drain when no
/// route reaches them any more.
pub struct RoutedRevisions {
    pub registry: Arc<Registry>,
    pub instances: Arc<Instances>,
}

impl RouteTargets for RoutedRevisions {
    fn endpoints(&self, namespace: &str, revision: &str) -> Option<Arc<RevisionEndpoints>> {
        self.registry
            .get(namespace, revision)
            .map(|state| state.endpoints.clone())
    }

    fn set_routed(&self, namespace: &str, revision: &str, routed: bool) {
        if let Some(state) = self.registry.get(namespace, revision) {
            if state.routable.swap(routed, Ordering::Relaxed) && !routed {
                self.instances.poke(&state);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use updraft_scaling::ScalingSpec;

    use super::*;
    use crate::testkit::{component_revision, get, kit, Kit};

    async fn setup() -> (Kit, Arc<RevisionState>) {
        let kit = kit().await;
        let state = RevisionState::new(component_revision("hello", "hello-00001"), &ScalingSpec::default());
        kit.registry.register(state.clone());
        (kit, state)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_launched_instance_serves_once_ready_and_leaves_rotation_before_it_stops() {
        let (kit, state) = setup().await;
        let instances = &kit.instances;
        let managed = instances.launch(&state).unwrap();
        assert_eq!(instances.launches.load(Ordering::Relaxed), 1, "counted as it starts");
        assert_eq!(state.endpoints.ready_count(), 0, "not in rotation before it is ready");
        instances.await_ready(&state, &managed, "request").await.unwrap();
        assert_eq!(state.endpoints.ready_count(), 1);
        let cold = state.last_cold_start.lock().unwrap().as_ref().map(|c| c.cause);
        assert_eq!(cold, Some("request"));
        let address = managed.endpoint.address;
        let answer = tokio::task::spawn_blocking(move || get(address, "hello", "/"))
            .await
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.contains("hello from wasm\n"), "{answer}");

        instances.stop_instance(&state, &managed).await;
        assert_eq!(state.endpoints.ready_count(), 0);
        assert!(managed.instance.exited().is_some(), "stopped");
        assert!(state.instances().is_empty(), "forgotten once stopped");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_instance_that_dies_leaves_rotation_counts_as_a_failure_and_asks_for_another() {
        let (mut kit, state) = setup().await;
        let managed = kit.instances.launch(&state).unwrap();
        kit.instances.await_ready(&state, &managed, "request").await.unwrap();
        managed.instance.kill();
        let poked = tokio::time::timeout(Duration::from_secs(10), kit.pokes.recv())
            .await
            .expect("the autoscaler is asked to look again")
            .unwrap();
        assert_eq!(poked.revision, "hello-00001");
        assert_eq!(state.endpoints.ready_count(), 0);
        assert_eq!(state.crash_loop.lock().unwrap().failures, 1);
        let events = state.events.lock().unwrap();
        assert!(
            matches!(&events.back().unwrap().what, EventKind::Failed { message } if message.contains("while serving")),
            "the failure is kept as an event"
        );
    }

    /// The gateway keeps idle connections to instances; a stop must not wait on them
    /// for its whole grace and then kill.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_component_stops_at_once_with_an_idle_connection_open() {
        use std::io::{Read, Write};
        let (kit, state) = setup().await;
        let managed = kit.instances.launch(&state).unwrap();
        kit.instances.await_ready(&state, &managed, "request").await.unwrap();
        let address = managed.endpoint.address;
        let idle = tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(address).unwrap();
            stream.write_all(b"GET / HTTP/1.1\r\nHost: hello\r\n\r\n").unwrap();
            let mut head = [0u8; 64];
            let n = stream.read(&mut head).unwrap();
            assert!(head[..n].starts_with(b"HTTP/1.1 200"));
            stream
        })
        .await
        .unwrap();
        let exit = tokio::time::timeout(Duration::from_secs(30), managed.instance.stop(Duration::from_secs(600)))
            .await
            .expect("stopped without waiting out its grace");
        assert_eq!(
            (exit.code, exit.signal),
            (Some(0), None),
            "it ended by itself, not killed"
        );
        drop(idle);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_revision_whose_start_fails_says_why() {
        let (kit, state) = setup().await;
        std::fs::remove_file(kit.paths.blob(&state.revision.config.package_digest)).unwrap();
        let failed = kit.instances.start_first(&state).await;
        assert!(failed.is_err());
        assert!(state.instances().is_empty());
    }
}
