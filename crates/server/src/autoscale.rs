//! The autoscale reconciler: samples every registered revision's load each second into
//! its autoscaler, and brings a revision's instance count to what the autoscaler wants,
//! every tick and at once when the gateway pokes it. What to do is `plan`, a pure
//! function; `Instances` does it.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use updraft_events::announce::SERVICE_SCALED;

use tokio::sync::mpsc;
use updraft_gateway::RevisionKey;
use updraft_runtime::Runtime;
use updraft_scaling::{LoadPoint, PoolSizer, RevisionLoad, ScaleDecision, Why};
use updraft_telemetry::{Metrics, ScaleLabels};

use crate::config::PoolConfig;
use crate::instances::Instances;
use crate::revision_state::{EventKind, ManagedInstance, Registry, RevisionState, ScaleEvent};

/// How often each revision's load is sampled into its autoscaler.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// A live instance as the plan sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Live {
    pub ready: bool,
    pub in_flight: u32,
}

/// What a revision's instances should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The count is what is wanted, or starts are held back by the crash loop.
    Keep,
    Launch {
        count: u32,
        cause: &'static str,
    },
    /// Stop these instances (indices into the live list): starting ones first, as
    /// they serve nobody yet, then the least busy.
    Stop {
        victims: Vec<usize>,
    },
}

/// The plan for a revision with `live` instances when the autoscaler wants
/// `decision`, starts being held back while `crash_loop_waiting`.
pub fn plan(live: &[Live], decision: &ScaleDecision, crash_loop_waiting: bool) -> Plan {
    let current = live.len() as u32;
    if decision.desired > current {
        if crash_loop_waiting {
            return Plan::Keep;
        }
        let cause = if decision.why == Why::Prewarm {
            "pre-warm"
        } else {
            "request"
        };
        return Plan::Launch {
            count: decision.desired - current,
            cause,
        };
    }
    if decision.desired == current {
        return Plan::Keep;
    }
    let mut order: Vec<usize> = (0..live.len()).collect();
    order.sort_by_key(|&i| (live[i].ready, live[i].in_flight));
    order.truncate((current - decision.desired) as usize);
    Plan::Stop { victims: order }
}

pub struct Autoscale {
    registry: Arc<Registry>,
    instances: Arc<Instances>,
    metrics: Arc<Metrics>,
    /// How often every revision is reconciled.
    tick: Duration,
    /// µs since the epoch.
    clock: fn() -> i64,
}

impl Autoscale {
    pub fn new(
        registry: Arc<Registry>,
        instances: Arc<Instances>,
        metrics: Arc<Metrics>,
        tick: Duration,
        clock: fn() -> i64,
    ) -> Autoscale {
        Autoscale {
            registry,
            instances,
            metrics,
            tick,
            clock,
        }
    }

    /// Runs until `stop`: samples load every second, reconciles a revision at once
    /// when poked, and all of them every tick.
    pub async fn run(self, mut pokes: mpsc::UnboundedReceiver<RevisionKey>, stop: impl Future<Output = ()>) {
        let mut tick = tokio::time::interval(self.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sample = tokio::time::interval(SAMPLE_INTERVAL);
        sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                Some(key) = pokes.recv() => {
                    if let Some(state) = self.registry.get(&key.namespace, &key.revision) {
                        self.reconcile(&state);
                    }
                }
                _ = sample.tick() => self.sample(),
                _ = tick.tick() => {
                    for state in self.registry.all() {
                        self.reconcile(&state);
                    }
                }
                _ = &mut stop => return,
            }
        }
    }

    fn sample(&self) {
        let now = (self.clock)();
        for state in self.registry.all() {
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

    pub fn reconcile(&self, state: &Arc<RevisionState>) {
        let live: Vec<Arc<ManagedInstance>> = state
            .instances()
            .into_iter()
            .filter(|m| !m.stopping.load(Ordering::Relaxed))
            .collect();
        let seen: Vec<Live> = live
            .iter()
            .map(|m| Live {
                ready: m.is_ready(),
                in_flight: m.endpoint.in_flight.load(Ordering::Relaxed),
            })
            .collect();
        let starting = seen.iter().filter(|l| !l.ready).count() as u32;
        let current = seen.len() as u32;
        let load = RevisionLoad {
            in_flight: state.endpoints.in_flight(),
            waiting: state.endpoints.waiting(),
            instances: current,
            starting,
            last_active_us: state.endpoints.last_active_us(),
            routable: state.routable.load(Ordering::Relaxed),
        };
        let now = (self.clock)();
        let (decision, metric) = {
            let mut autoscaler = state.autoscaler.lock().unwrap_or_else(|p| p.into_inner());
            (autoscaler.decide(load, current - starting, now), autoscaler.spec.metric)
        };
        let crash_loop_waiting = state
            .crash_loop
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .waiting_us(now)
            .is_some();
        let plan = plan(&seen, &decision, crash_loop_waiting);
        if plan == Plan::Keep {
            return;
        }
        self.record(state, current, &decision, metric, now);
        match plan {
            Plan::Keep => {}
            Plan::Launch { count, cause } => {
                for _ in 0..count {
                    let Ok(managed) = self.instances.launch(state) else {
                        break;
                    };
                    let (instances, state) = (self.instances.clone(), state.clone());
                    tokio::spawn(async move {
                        let _ = instances.await_ready(&state, &managed, cause).await;
                    });
                }
            }
            Plan::Stop { victims } => {
                for managed in victims.into_iter().map(|i| live[i].clone()) {
                    // Marked now so the next reconcile does not pick it again.
                    managed.stopping.store(true, Ordering::Relaxed);
                    if managed.is_ready() {
                        // It served until the platform no longer needed it: the app works.
                        state.crash_loop.lock().unwrap_or_else(|p| p.into_inner()).recovered();
                    }
                    let (instances, state) = (self.instances.clone(), state.clone());
                    tokio::spawn(async move { instances.stop_instance(&state, &managed).await });
                }
            }
        }
    }

    /// Logs, counts and keeps a decision that changes the count.
    fn record(
        &self,
        state: &RevisionState,
        current: u32,
        decision: &ScaleDecision,
        metric: updraft_scaling::Metric,
        now: i64,
    ) {
        tracing::info!(
            revision = %state.revision.name,
            from = current,
            to = decision.desired,
            reason = decision.why.name(),
            stable = decision.stable,
            panic = decision.panic,
            panicking = decision.panicking,
            "scaling"
        );
        self.instances.announce(
            state,
            SERVICE_SCALED,
            serde_json::json!({"from": current, "to": decision.desired, "reason": decision.why.name()}),
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
        state.push_event(ScaleEvent {
            at_us: now,
            from: current,
            to: decision.desired,
            what: EventKind::Scaled {
                decision: *decision,
                metric,
            },
        });
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

/// Keeps the pool of stem cells at the size demand asks for ("fast expand, slow
/// shrink"): each second, capacity = max(instances launched in that second, the last
/// capacity decayed by the half-life), at least the minimum and within the memory cap.
pub async fn keep_pool(
    runtime: Arc<dyn Runtime>,
    instances: Arc<Instances>,
    config: PoolConfig,
    stop: impl Future<Output = ()>,
) {
    if config.stem_command.is_empty() || config.max_memory_bytes == 0 {
        return;
    }
    let mut sizer = PoolSizer::new(config.half_life.as_secs_f64(), config.min as f64, f64::MAX);
    crate::ticks::every(Duration::from_secs(1), stop, || {
        let demand = instances.launches.swap(0, Ordering::Relaxed) as f64;
        let wanted = sizer.update(demand, 1.0).ceil() as usize;
        let runtime = runtime.clone();
        let max_memory_bytes = config.max_memory_bytes;
        async move {
            let _ = tokio::task::spawn_blocking(move || {
                let (size, memory) = runtime.pool();
                // A stem cell's size is measured on the ones running; 8 MiB until there are.
                let each = if size > 0 {
                    (memory / size as u64).max(1 << 20)
                } else {
                    8 << 20
                };
                let fits = (max_memory_bytes / each) as usize;
                runtime.resize_pool(wanted.min(fits))
            })
            .await;
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(desired: u32, why: Why) -> ScaleDecision {
        ScaleDecision {
            desired,
            why,
            stable: 0.0,
            panic: 0.0,
            panicking: false,
        }
    }

    const STARTING: Live = Live {
        ready: false,
        in_flight: 0,
    };

    fn ready(in_flight: u32) -> Live {
        Live { ready: true, in_flight }
    }

    #[test]
    fn the_plan_follows_the_decision() {
        let cases: Vec<(&str, Vec<Live>, ScaleDecision, bool, Plan)> = vec![
            (
                "at the count",
                vec![ready(1)],
                decision(1, Why::Stable),
                false,
                Plan::Keep,
            ),
            (
                "from zero on a request",
                vec![],
                decision(1, Why::Activation),
                false,
                Plan::Launch {
                    count: 1,
                    cause: "request",
                },
            ),
            (
                "up by the difference",
                vec![ready(3), STARTING],
                decision(5, Why::Panic),
                false,
                Plan::Launch {
                    count: 3,
                    cause: "request",
                },
            ),
            (
                "ahead of a predicted call",
                vec![],
                decision(1, Why::Prewarm),
                false,
                Plan::Launch {
                    count: 1,
                    cause: "pre-warm",
                },
            ),
            (
                "a crash loop holds starts back",
                vec![],
                decision(1, Why::Activation),
                true,
                Plan::Keep,
            ),
            (
                "but never a scale-down",
                vec![ready(0), ready(0)],
                decision(1, Why::Stable),
                true,
                Plan::Stop { victims: vec![0] },
            ),
            (
                "starting instances go first, then the least busy",
                vec![ready(2), ready(0), STARTING, ready(1)],
                decision(1, Why::Stable),
                false,
                Plan::Stop { victims: vec![2, 1, 3] },
            ),
            (
                "to zero when idle",
                vec![ready(0), ready(0)],
                decision(0, Why::Idle),
                false,
                Plan::Stop { victims: vec![0, 1] },
            ),
        ];
        for (what, live, decision, waiting, expected) in cases {
            assert_eq!(plan(&live, &decision, waiting), expected, "{what}");
        }
    }
}
