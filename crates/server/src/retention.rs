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
    pub async fn apply_log_retention(self: &Arc<Self>) -> usize {
        let Ok(namespaces) = self.store.namespaces().await else {
            return 0;
        };
        let live: HashSet<String> = self
            .registry
            .all()
            .iter()
            .flat_map(|s| s.instances())
            .map(|m| m.instance.id.clone())
            .collect();
        let logs = self.paths.logs.clone();
        tokio::task::spawn_blocking(move || {
            namespaces
                .iter()
                .map(|ns| updraft_telemetry::retention::apply(&logs, &ns.name, &ns.limits, &live))
                .sum()
        })
        .await
        .unwrap_or(0)
    }
}

/// Applies retention every [`EVERY`] until `stop`.
pub async fn run(platform: Arc<Platform>, stop: impl std::future::Future<Output = ()>) {
    crate::ticks::every(EVERY, stop, || async {
        platform.apply_log_retention().await;
        let platform = platform.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let before = updraft_runtime::clock::now_us() - crate::triggers::HISTORY_US;
            if let Err(e) = platform.events.prune_events(before) {
                tracing::warn!("cannot prune delivered events: {e}");
            }
        })
        .await;
    })
    .await
}
