//! Log retention on a timer, with the namespaces' limits and the live instances of
//! the moment; `telemetry::retention` decides which files go.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::platform::Platform;

/// How often retention runs (it also runs when a namespace's limits change).
pub const EVERY: Duration = Duration::from_secs(30);

impl Platform {
    /// Applies every namespace's log limits; returns the files deleted.
    pub fn apply_log_retention(&self) -> usize {
        let Ok(namespaces) = self.store.namespaces() else {
            return 0;
        };
        let live: HashSet<String> = self
            .all_revision_states()
            .iter()
            .flat_map(|s| s.instances())
            .map(|m| m.instance.id.clone())
            .collect();
        namespaces
            .iter()
            .map(|ns| updraft_telemetry::retention::apply(&self.paths.logs, &ns.name, &ns.limits, &live))
            .sum()
    }
}

/// Applies retention every [`EVERY`] until `stop`.
pub async fn run(platform: Arc<Platform>, stop: impl std::future::Future<Output = ()>) {
    let mut every = tokio::time::interval(EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = &mut stop => return,
        }
        let platform = platform.clone();
        let _ = tokio::task::spawn_blocking(move || {
            platform.apply_log_retention();
            let before = updraft_runtime::clock::now_us() - crate::triggers::HISTORY_US;
            if let Err(e) = platform.events.prune_events(before) {
                tracing::warn!("cannot prune delivered events: {e}");
            }
        })
        .await;
    }
}
