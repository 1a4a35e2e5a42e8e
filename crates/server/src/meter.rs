//! Metering: what each revision's instances and requests cost, written to the store
//! as it accrues (every few seconds, when an instance stops, and before usage is
//! read), so a crash loses at most a few seconds and nothing is counted twice.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use updraft_model::Usage;
use updraft_runtime::clock::now_us;

use crate::platform::Platform;
use crate::revision_state::{ManagedInstance, RevisionState};

/// How often accrued usage is written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);
/// The size an instance without a limit is metered at.
pub const UNLIMITED_VCPU: f64 = 1.0;
pub const UNLIMITED_GIB: f64 = 0.5;
const HOUR_US: i64 = 3_600_000_000;
const GIB: f64 = (1u64 << 30) as f64;

fn sizes(state: &RevisionState) -> (f64, f64) {
    let config = &state.revision.config;
    (
        config.cpu_millis.map_or(UNLIMITED_VCPU, |m| f64::from(m) / 1000.0),
        config.memory_bytes.map_or(UNLIMITED_GIB, |b| b as f64 / GIB),
    )
}

fn row(state: &RevisionState, now_us: i64) -> Usage {
    let key = &state.endpoints.key;
    Usage {
        namespace: key.namespace.clone(),
        service: key.service.clone(),
        revision: key.revision.clone(),
        hour_us: now_us - now_us.rem_euclid(HOUR_US),
        ..Default::default()
    }
}

/// Adds an instance's time and CPU since it was last metered to `usage`.
fn accrue(state: &RevisionState, managed: &ManagedInstance, now_us: i64, usage: &mut Usage) {
    let (vcpu, gib) = sizes(state);
    let mut metered = managed.metered.lock().unwrap_or_else(|p| p.into_inner());
    let seconds = (now_us - metered.until_us).max(0) as f64 / 1e6;
    usage.vcpu_seconds += vcpu * seconds;
    usage.gib_seconds += gib * seconds;
    metered.until_us = now_us;
    let cpu_ns = managed
        .instance
        .cgroup
        .as_ref()
        .and_then(|c| c.usage().cpu_ns)
        .unwrap_or(metered.cpu_ns);
    usage.cpu_seconds += cpu_ns.saturating_sub(metered.cpu_ns) as f64 / 1e9;
    metered.cpu_ns = metered.cpu_ns.max(cpu_ns);
}

impl Platform {
    /// Writes what every live instance and every answered request used since the last
    /// write.
    pub fn meter(&self) {
        let now = now_us();
        let requests = self.requests.take();
        let mut rows = Vec::new();
        for state in self.all_revision_states() {
            let mut usage = row(&state, now);
            for managed in state.instances() {
                if !managed.stopped.load(Ordering::Relaxed) {
                    accrue(&state, &managed, now, &mut usage);
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
        if let Err(e) = self.store.add_usage(&rows) {
            tracing::error!(error = %e, "cannot write metered usage");
        }
    }

    /// Writes an instance's last usage as it stops; it is metered no more after.
    pub fn meter_stopping(&self, state: &RevisionState, managed: &ManagedInstance) {
        if managed.stopped.swap(true, Ordering::Relaxed) {
            return;
        }
        let key = &state.endpoints.key;
        // A revision that was never stored (a failed deploy) costs its user nothing.
        if self.revision(&key.namespace, &key.revision).is_none() {
            return;
        }
        let now = now_us();
        let mut usage = row(state, now);
        accrue(state, managed, now, &mut usage);
        if let Err(e) = self.store.add_usage(&[usage]) {
            tracing::error!(error = %e, "cannot write metered usage");
        }
    }
}

/// Writes accrued usage every [`FLUSH_EVERY`] until `stop`.
pub async fn run(platform: Arc<Platform>, stop: impl std::future::Future<Output = ()>) {
    let mut every = tokio::time::interval(FLUSH_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = &mut stop => return,
        }
        let platform = platform.clone();
        let _ = tokio::task::spawn_blocking(move || platform.meter()).await;
    }
}
