//! Reconciles each revision's instances to the count the decider wants, and owns each
//! instance's life: ready → in rotation; exit → out of rotation at once; scale-down →
//! out of rotation, drained, then stopped.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use updraft_gateway::{Endpoint, RevisionKey};
use updraft_model::template::Readiness;
use updraft_model::RuntimeKind;
use updraft_runtime::clock::now_us;
use updraft_runtime::oci::ContainerSpec;
use updraft_runtime::wasm::WasmSpec;
use updraft_runtime::{cgroup::Limits, wait_ready, FunctionSpec, InstanceSpec, Probe, Workload};
use updraft_scaling::{LoadPoint, PoolSizer, RevisionLoad, Why};
use updraft_telemetry::{ColdStartLabels, ScaleLabels};

use crate::platform::Platform;
use crate::revision_state::{ColdStart, EventKind, ManagedInstance, RevisionState, ScaleEvent};

/// Instance ids like Kubernetes pod names: the revision and a short random suffix.
fn instance_id(revision: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_i64(now_us());
    format!("{revision}-{:06x}", hasher.finish() & 0xff_ffff)
}

fn push_event(state: &RevisionState, event: ScaleEvent) {
    let mut events = state.events.lock().unwrap_or_else(|p| p.into_inner());
    if events.len() == EVENTS_KEPT {
        events.pop_front();
    }
    events.push_back(event);
}

/// Scale events kept per revision.
const EVENTS_KEPT: usize = 100;
/// How often each revision's load is sampled into its autoscaler.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// Keeps the pool of stem cells at the size demand asks for ("fast expand, slow
/// shrink"): each second, capacity = max(instances launched in that second, the last
/// capacity decayed by the half-life), at least the minimum and within the memory cap.
pub async fn keep_pool(platform: Arc<Platform>, stop: impl Future<Output = ()>) {
    let config = platform.config.pool.clone();
    if config.stem_command.is_empty() || config.max_memory_bytes == 0 {
        return;
    }
    let mut sizer = PoolSizer::new(config.half_life.as_secs_f64(), config.min as f64, f64::MAX);
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = &mut stop => return,
        }
        let demand = platform.launches.swap(0, Ordering::Relaxed) as f64;
        let wanted = sizer.update(demand, 1.0).ceil() as usize;
        let runtime = platform.runtime.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let (size, memory) = runtime.pool();
            // A stem cell's size is measured on the ones running; 8 MiB until there are.
            let each = if size > 0 {
                (memory / size as u64).max(1 << 20)
            } else {
                8 << 20
            };
            let fits = (config.max_memory_bytes / each) as usize;
            runtime.resize_pool(wanted.min(fits))
        })
        .await;
    }
}

/// Runs until `stop`: samples load every second, reconciles a revision at once when
/// poked, and all of them every tick.
pub async fn run(
    platform: Arc<Platform>,
    mut pokes: mpsc::UnboundedReceiver<RevisionKey>,
    stop: impl Future<Output = ()>,
) {
    let mut tick = tokio::time::interval(platform.config.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sample = tokio::time::interval(SAMPLE_INTERVAL);
    sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            Some(key) = pokes.recv() => {
                if let Some(state) = platform.revision(&key.namespace, &key.revision) {
                    platform.reconcile(&state);
                }
            }
            _ = sample.tick() => {
                let now = now_us();
                for state in platform.all_revision_states() {
                    let requests = state.endpoints.sample();
                    let mut autoscaler = state.autoscaler.lock().unwrap_or_else(|p| p.into_inner());
                    // Cgroup files are read only for revisions that scale on them.
                    let (cpu_millis, memory_mib) = if autoscaler.spec.hpa {
                        resource_usage(&state)
                    } else {
                        (0.0, 0.0)
                    };
                    autoscaler.record(
                        now,
                        LoadPoint {
                            concurrency: requests.concurrency,
                            rps: requests.requests_per_second,
                            cpu_millis,
                            memory_mib,
                        },
                    );
                }
            }
            _ = tick.tick() => {
                for state in platform.all_revision_states() {
                    platform.reconcile(&state);
                }
            }
            _ = &mut stop => return,
        }
    }
}

/// CPU (millicores, since the last sample) and memory (MiB) of a revision's ready
/// instances together.
fn resource_usage(state: &RevisionState) -> (f64, f64) {
    let mut cpu_millis = 0.0;
    let mut memory_mib = 0.0;
    for managed in state.instances() {
        if !managed.is_ready() {
            continue;
        }
        let Some(cgroup) = &managed.instance.cgroup else {
            continue;
        };
        let usage = cgroup.usage();
        if let Some(bytes) = usage.memory_bytes {
            memory_mib += bytes as f64 / (1024.0 * 1024.0);
        }
        if let Some(cpu_ns) = usage.cpu_ns {
            let now = Instant::now();
            let mut seen = managed.cpu_seen.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, before)) = *seen {
                let wall_ns = now.duration_since(at).as_nanos().max(1) as f64;
                cpu_millis += cpu_ns.saturating_sub(before) as f64 / wall_ns * 1000.0;
            }
            *seen = Some((now, cpu_ns));
        }
    }
    (cpu_millis, memory_mib)
}

impl Platform {
    pub fn reconcile(self: &Arc<Self>, state: &Arc<RevisionState>) {
        let live: Vec<Arc<ManagedInstance>> = state
            .instances()
            .into_iter()
            .filter(|m| !m.stopping.load(Ordering::Relaxed))
            .collect();
        let starting = live.iter().filter(|m| !m.is_ready()).count() as u32;
        let current = live.len() as u32;
        let load = RevisionLoad {
            in_flight: state.endpoints.in_flight(),
            waiting: state.endpoints.waiting(),
            instances: current,
            starting,
            last_active_us: state.endpoints.last_active_us(),
            routable: state.routable.load(Ordering::Relaxed),
        };
        let now = now_us();
        let (decision, metric) = {
            let mut autoscaler = state.autoscaler.lock().unwrap_or_else(|p| p.into_inner());
            (autoscaler.decide(load, current - starting, now), autoscaler.spec.metric)
        };
        if decision.desired == current {
            return;
        }
        if decision.desired > current {
            let crash_loop = state.crash_loop.lock().unwrap_or_else(|p| p.into_inner());
            if crash_loop.waiting_us(now).is_some() {
                return;
            }
        }
        let revision = &state.revision.name;
        tracing::info!(
            revision = %revision,
            from = current,
            to = decision.desired,
            reason = decision.why.name(),
            stable = decision.stable,
            panic = decision.panic,
            panicking = decision.panicking,
            "scaling"
        );
        let key = &state.endpoints.key;
        self.metrics
            .scale_decisions
            .get_or_create(&ScaleLabels {
                namespace: key.namespace.clone(),
                service: key.service.clone(),
                revision: key.revision.clone(),
                direction: if decision.desired > current { "up" } else { "down" }.into(),
                reason: decision.why.name().into(),
            })
            .inc();
        push_event(
            state,
            ScaleEvent {
                at_us: now,
                from: current,
                to: decision.desired,
                what: EventKind::Scaled { decision, metric },
            },
        );
        if decision.desired > current {
            let cause = if decision.why == Why::Prewarm {
                "pre-warm"
            } else {
                "request"
            };
            for _ in current..decision.desired {
                let Ok(managed) = self.launch(state) else { break };
                let platform = self.clone();
                let state = state.clone();
                tokio::spawn(async move {
                    let _ = platform.await_ready(&state, &managed, cause).await;
                });
            }
        } else {
            // Starting instances go first (they serve nobody yet), then the least busy.
            let mut victims = live;
            victims.sort_by_key(|m| (m.is_ready(), m.endpoint.in_flight.load(Ordering::Relaxed)));
            for managed in victims.into_iter().take((current - decision.desired) as usize) {
                // Marked now so the next reconcile does not pick it again.
                managed.stopping.store(true, Ordering::Relaxed);
                if managed.is_ready() {
                    // It served until the platform no longer needed it: the app works.
                    state.crash_loop.lock().unwrap_or_else(|p| p.into_inner()).recovered();
                }
                let platform = self.clone();
                let state = state.clone();
                tokio::spawn(async move { platform.stop_instance(&state, &managed).await });
            }
        }
    }

    /// Starts one instance's process and counts it at once, so a burst of pokes
    /// before it is ready does not start more.
    pub fn launch(self: &Arc<Self>, state: &Arc<RevisionState>) -> Result<Arc<ManagedInstance>, String> {
        let began = Instant::now();
        let revision = &state.revision;
        let config = &revision.config;
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
        let spec = InstanceSpec {
            id: instance_id(&revision.name),
            namespace: revision.namespace.clone(),
            service: revision.service.clone(),
            revision: revision.name.clone(),
            command: config.command.clone(),
            env: config.env.clone(),
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
        let probe = match &state.revision.config.readiness {
            Some(Readiness::HttpGet { path }) => Probe::Http { path },
            Some(Readiness::TcpSocket) | None => Probe::Tcp,
        };
        match wait_ready(&managed.instance, probe, self.config.ready_timeout).await {
            Ok(_) => {
                let ready = managed.began.elapsed();
                managed.ready_at_us.store(now_us(), Ordering::Relaxed);
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
                let platform = self.clone();
                let state = state.clone();
                let watched = managed.clone();
                tokio::spawn(async move { platform.watch_exit(&state, &watched).await });
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
        if managed.stopping.swap(true, Ordering::Relaxed) {
            return;
        }
        tracing::warn!(instance = %managed.instance.id, "instance {exit} unexpectedly");
        state.endpoints.remove(&managed.instance.id);
        self.instance_failed(state, managed, &format!("instance {exit} while serving"));
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
        push_event(
            state,
            ScaleEvent {
                at_us: now,
                from: live + 1,
                to: live,
                what: EventKind::Failed {
                    message: format!("{} {what}{next}", managed.instance.id),
                },
            },
        );
    }

    /// Out of rotation, wait for its requests to finish, SIGTERM, SIGKILL after the grace.
    pub async fn stop_instance(&self, state: &RevisionState, managed: &Arc<ManagedInstance>) {
        managed.stopping.store(true, Ordering::Relaxed);
        state.endpoints.remove(&managed.instance.id);
        let deadline = Instant::now() + self.config.drain_timeout;
        let now = || self.stopping_now.load(Ordering::Relaxed);
        while managed.endpoint.in_flight.load(Ordering::Relaxed) > 0
            && Instant::now() < deadline
            && managed.instance.exited().is_none()
            && !now()
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.meter_stopping(state, managed);
        let grace = if now() { Duration::ZERO } else { self.config.stop_grace };
        managed.instance.stop(grace).await;
        state
            .instances
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|m| !Arc::ptr_eq(m, managed));
    }

    /// Starts a first instance for a deploy and reports how it went.
    pub async fn start_for_deploy(
        self: &Arc<Self>,
        state: &Arc<RevisionState>,
    ) -> Result<Arc<ManagedInstance>, String> {
        let managed = self.launch(state)?;
        let (tx, rx) = oneshot::channel();
        let platform = self.clone();
        let state = state.clone();
        // Detached, so a client that hangs up mid-deploy cannot leave a half-started instance.
        tokio::spawn(async move {
            let result = platform.await_ready(&state, &managed, "deploy").await.map(|_| managed);
            let _ = tx.send(result);
        });
        rx.await.map_err(|_| "instance start was abandoned".to_string())?
    }
}
