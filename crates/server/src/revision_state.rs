//! What the platform knows of each revision it runs and of each instance: the state
//! the scaler, the meter and the API share, kept apart from the loops that change it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use updraft_gateway::{Endpoint, RevisionEndpoints, RevisionKey, RevisionLimits};
use updraft_model::annotations::Autoscaling;
use updraft_model::Revision;
use updraft_runtime::Instance;
use updraft_scaling::{Autoscaler, CrashLoop, Metric, ScaleDecision, ScalingSpec};

use crate::views::{rfc3339_us, CgroupView, ColdStartView, InstanceView, ScaleEventView};

/// Scale events kept per revision.
const EVENTS_KEPT: usize = 100;

/// One revision known to the platform, with its live instances.
pub struct RevisionState {
    pub revision: Revision,
    pub endpoints: Arc<RevisionEndpoints>,
    pub instances: Mutex<Vec<Arc<ManagedInstance>>>,
    pub last_cold_start: Mutex<Option<ColdStart>>,
    pub routable: AtomicBool,
    pub autoscaler: Mutex<Autoscaler>,
    /// The latest scaling decisions that changed the count, and instance failures,
    /// oldest first.
    pub events: Mutex<VecDeque<ScaleEvent>>,
    /// Its instances' failures in a row, which hold the next start back.
    pub crash_loop: Mutex<CrashLoop>,
    /// How the first instance of a staged revision came up; its deploy waits on it.
    pub first_start: tokio::sync::watch::Sender<FirstStart>,
}

/// Where a staged revision's first instance is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstStart {
    Pending,
    Ready,
    Failed(String),
}

impl RevisionState {
    pub fn new(revision: Revision, defaults: &ScalingSpec) -> Arc<Self> {
        let key = RevisionKey {
            namespace: revision.namespace.clone(),
            service: revision.service.clone(),
            revision: revision.name.clone(),
        };
        let template = &revision.template;
        let limits = RevisionLimits {
            container_concurrency: template.container_concurrency,
            timeout: template.timeout(),
            response_start_timeout: template.response_start_timeout(),
            h2c: template.h2c,
        };
        let spec = ScalingSpec::for_revision(
            defaults,
            &Autoscaling::from_annotations(&template.annotations),
            template.container_concurrency,
            template.resources.cpu_request_millis.or(revision.config.cpu_millis),
            revision.config.scale_to_zero_after_ms as i64 * 1000,
        );
        Arc::new(RevisionState {
            endpoints: RevisionEndpoints::new(key, limits),
            autoscaler: Mutex::new(Autoscaler::new(spec, revision.created_at_us)),
            events: Mutex::new(VecDeque::new()),
            crash_loop: Mutex::new(CrashLoop::default()),
            revision,
            instances: Mutex::new(Vec::new()),
            last_cold_start: Mutex::new(None),
            routable: AtomicBool::new(false),
            first_start: tokio::sync::watch::Sender::new(FirstStart::Pending),
        })
    }

    /// Waits until the first instance is ready (`Ok`) or could not start (`Err`, why).
    pub async fn first_started(&self) -> Result<(), String> {
        let mut outcome = self.first_start.subscribe();
        let settled = outcome.wait_for(|s| *s != FirstStart::Pending).await;
        match settled.as_deref() {
            Ok(FirstStart::Ready) => Ok(()),
            Ok(FirstStart::Failed(reason)) => Err(reason.clone()),
            Ok(FirstStart::Pending) | Err(_) => Err("the instance start was abandoned".into()),
        }
    }

    /// Records how the first start ended, unless it already has an outcome.
    pub fn settle_first_start(&self, outcome: FirstStart) {
        self.first_start.send_if_modified(|start| {
            let pending = *start == FirstStart::Pending;
            if pending {
                *start = outcome;
            }
            pending
        });
    }

    pub fn instances(&self) -> Vec<Arc<ManagedInstance>> {
        self.instances.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Keeps a scale event, dropping the oldest past [`EVENTS_KEPT`].
    pub fn push_event(&self, event: ScaleEvent) {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if events.len() == EVENTS_KEPT {
            events.pop_front();
        }
        events.push_back(event);
    }
}

/// The revisions this node can run, by namespace and name: derived from the store
/// (`revisions::RevisionReconciler`), and shared by the gateway's targets, the
/// autoscaler, the meter and the API.
#[derive(Default)]
pub struct Registry {
    revisions: RwLock<HashMap<(String, String), Arc<RevisionState>>>,
}

impl Registry {
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<RevisionState>> {
        self.revisions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    pub fn all(&self) -> Vec<Arc<RevisionState>> {
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

    /// Forgets a revision; requests held for it are answered with `reason`.
    pub fn unregister(&self, namespace: &str, name: &str, reason: &str) -> Option<Arc<RevisionState>> {
        let state = self
            .revisions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(namespace.to_string(), name.to_string()))?;
        state.endpoints.retire(reason.to_string());
        state.settle_first_start(FirstStart::Failed(reason.to_string()));
        Some(state)
    }
}

pub struct ColdStart {
    pub at_us: i64,
    pub instance: String,
    pub ready: Duration,
    pub cause: &'static str,
    pub from_pool: bool,
}

impl ColdStart {
    pub fn view(&self) -> ColdStartView {
        ColdStartView {
            at: rfc3339_us(self.at_us),
            instance: self.instance.clone(),
            ready_ms: self.ready.as_secs_f64() * 1000.0,
            cause: self.cause.to_string(),
            from_pool: self.from_pool,
        }
    }
}

pub struct ManagedInstance {
    pub instance: Instance,
    /// When the platform asked for it, for the cold-start time.
    pub began: Instant,
    /// How long the runtime took to create it (cgroup, process), within the cold start.
    pub spawned: Duration,
    pub endpoint: Arc<Endpoint>,
    /// When it became ready (µs since the epoch; 0 until then).
    pub ready_at_us: AtomicI64,
    pub stopping: AtomicBool,
    /// The instance's CPU time at the last sample, for the HPA class.
    pub cpu_seen: std::sync::Mutex<Option<(Instant, u64)>>,
    /// How far its usage has been metered.
    pub metered: std::sync::Mutex<updraft_telemetry::metering::Metered>,
    /// Set once its last usage is metered.
    pub stopped: AtomicBool,
}

impl ManagedInstance {
    pub fn is_ready(&self) -> bool {
        self.ready_at_us.load(Ordering::Relaxed) != 0
    }

    pub fn view(&self, cgroup_version: &str) -> InstanceView {
        let state = if self.stopping.load(Ordering::Relaxed) {
            "stopping"
        } else if self.is_ready() {
            "ready"
        } else {
            "starting"
        };
        InstanceView {
            id: self.instance.id.clone(),
            pid: self.instance.pid,
            port: self.instance.port,
            state: state.into(),
            started_at: humantime::format_rfc3339_millis(self.instance.started_at).to_string(),
            in_flight: self.endpoint.in_flight.load(Ordering::Relaxed),
            cgroup: self.instance.cgroup.as_ref().map(|c| CgroupView {
                version: cgroup_version.to_string(),
                paths: c.dirs.iter().map(|d| d.display().to_string()).collect(),
                memory_limit: c
                    .memory_limit_file()
                    .and_then(|f| std::fs::read_to_string(f).ok())
                    .map(|s| s.trim().to_string()),
            }),
        }
    }
}

/// A decision that changed a revision's instance count, or an instance that failed.
#[derive(Debug, Clone)]
pub struct ScaleEvent {
    pub at_us: i64,
    pub from: u32,
    pub to: u32,
    pub what: EventKind,
}

#[derive(Debug, Clone)]
pub enum EventKind {
    Scaled {
        decision: ScaleDecision,
        metric: Metric,
    },
    /// An instance exited before it was ready or on its own; the message says how and
    /// when the next one may start.
    Failed {
        message: String,
    },
}

impl ScaleEvent {
    pub fn view(&self, revision: &str) -> ScaleEventView {
        let (reason, metric, stable, panic, panicking, message) = match &self.what {
            EventKind::Scaled { decision, metric } => (
                decision.why.name(),
                metric.name(),
                decision.stable,
                decision.panic,
                decision.panicking,
                None,
            ),
            EventKind::Failed { message } => ("instance failed", "", 0.0, 0.0, false, Some(message.clone())),
        };
        ScaleEventView {
            at: rfc3339_us(self.at_us),
            revision: revision.to_string(),
            from: self.from,
            to: self.to,
            reason: reason.to_string(),
            metric: metric.to_string(),
            stable,
            panic,
            panicking,
            message,
        }
    }
}

/// Requests answered per revision since the last flush: how many, and their seconds.
#[derive(Default)]
pub struct RequestLedger(Mutex<HashMap<RevisionKey, (u64, f64)>>);

impl RequestLedger {
    pub fn add(&self, revision: &RevisionKey, seconds: f64) {
        let mut ledger = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let entry = ledger.entry(revision.clone()).or_default();
        entry.0 += 1;
        entry.1 += seconds;
    }

    pub(crate) fn take(&self) -> HashMap<RevisionKey, (u64, f64)> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}
