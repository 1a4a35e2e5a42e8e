//! Metering: what each revision's instances and requests cost, written to the store
//! as it accrues (every few seconds, when an instance stops, and before usage is
//! read), so a crash loses at most a few seconds and nothing is counted twice.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use updraft_model::Usage;
use updraft_runtime::clock::now_us;
use updraft_telemetry::metering::{accrue, hour_of, size};

use updraft_store::Store;

use crate::revision_state::{ManagedInstance, Registry, RequestLedger, RevisionState};

/// How often accrued usage is written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);

fn sizes(state: &RevisionState) -> (f64, f64) {
    let config = &state.revision.config;
    size(config.cpu_millis, config.memory_bytes)
}

fn row(state: &RevisionState, now_us: i64) -> Usage {
    let key = &state.endpoints.key;
    Usage {
        namespace: key.namespace.clone(),
        service: key.service.clone(),
        revision: key.revision.clone(),
        hour_us: hour_of(now_us),
        ..Default::default()
    }
}

/// Adds an instance's time and CPU since it was last metered to `usage`.
fn accrue_instance(state: &RevisionState, managed: &ManagedInstance, now_us: i64, usage: &mut Usage) {
    let cpu_ns = managed.instance.cgroup.as_ref().and_then(|c| c.usage().cpu_ns);
    let mut metered = managed.metered.lock().unwrap_or_else(|p| p.into_inner());
    accrue(&mut metered, sizes(state), cpu_ns, now_us, usage);
}

/// Writes usage to the store: of the registry's revisions, and of the requests the
/// gateway answered.
pub struct Meter {
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    requests: Arc<RequestLedger>,
}

impl Meter {
    pub fn new(store: Arc<dyn Store>, registry: Arc<Registry>, requests: Arc<RequestLedger>) -> Meter {
        Meter {
            store,
            registry,
            requests,
        }
    }

    /// Writes what every live instance and every answered request used since the last
    /// write.
    pub async fn meter(self: &Arc<Self>) {
        let meter = self.clone();
        // Reading every instance's cgroup is file I/O: off the async workers.
        let rows = match tokio::task::spawn_blocking(move || meter.accrued_usage()).await {
            Ok(rows) => rows,
            Err(e) => return tracing::error!(error = %e, "cannot meter usage"),
        };
        if let Err(e) = self.store.add_usage(&rows).await {
            tracing::error!(error = %e, "cannot write metered usage");
        }
    }

    /// What every live instance and every answered request used since the last call.
    fn accrued_usage(&self) -> Vec<Usage> {
        let now = now_us();
        let requests = self.requests.take();
        let mut rows = Vec::new();
        for state in self.registry.all() {
            let mut usage = row(&state, now);
            for managed in state.instances() {
                if !managed.stopped.load(Ordering::Relaxed) {
                    accrue_instance(&state, &managed, now, &mut usage);
                }
            }
            if let Some((count, seconds)) = requests.get(&state.endpoints.key) {
                usage.invocations += count;
                usage.request_gb_seconds += seconds * sizes(&state).1;
            }
            if usage.vcpu_seconds > 0.0 || usage.invocations > 0 {
                rows.push(usage);
            }
        }
        rows
    }

    /// Writes an instance's last usage as it stops; it is metered no more after.
    pub async fn meter_stopping(&self, state: &RevisionState, managed: &ManagedInstance) {
        if managed.stopped.swap(true, Ordering::Relaxed) {
            return;
        }
        let key = &state.endpoints.key;
        // A revision that was never stored (a failed deploy) costs its user nothing.
        if self.registry.get(&key.namespace, &key.revision).is_none() {
            return;
        }
        let now = now_us();
        let mut usage = row(state, now);
        accrue_instance(state, managed, now, &mut usage);
        if let Err(e) = self.store.add_usage(&[usage]).await {
            tracing::error!(error = %e, "cannot write metered usage");
        }
    }
}

/// Writes accrued usage every [`FLUSH_EVERY`] until `stop`.
pub async fn run(meter: Arc<Meter>, stop: impl std::future::Future<Output = ()>) {
    crate::ticks::every(FLUSH_EVERY, stop, || meter.meter()).await
}
