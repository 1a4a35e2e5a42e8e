//! Log retention per namespace: instance log files (and rotated access logs) past the
//! namespace's age are deleted, then the oldest until its logs fit its size. Files of
//! live instances are kept: deleting one would lose what the instance writes next.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use updraft_telemetry::logs::ACCESS_LOG_ROTATED;

use crate::platform::Platform;

/// How often retention runs (it also runs when a namespace's limits change).
pub const EVERY: Duration = Duration::from_secs(30);

struct LogFileInfo {
    path: std::path::PathBuf,
    modified: SystemTime,
    bytes: u64,
}

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
        let mut deleted = 0;
        for ns in namespaces {
            let limits = &ns.limits;
            if limits.log_max_age_seconds.is_none() && limits.log_max_bytes.is_none() {
                continue;
            }
            let mut files: Vec<LogFileInfo> = std::fs::read_dir(self.paths.logs.join(&ns.name))
                .into_iter()
                .flatten()
                .flatten()
                .flat_map(|service| std::fs::read_dir(service.path()).into_iter().flatten().flatten())
                .filter(|f| {
                    let path = f.path();
                    path.extension().is_some_and(|e| e == "log")
                        || path.file_name().is_some_and(|n| n == ACCESS_LOG_ROTATED)
                })
                .filter(|f| {
                    f.path()
                        .file_stem()
                        .is_none_or(|stem| !live.contains(stem.to_string_lossy().as_ref()))
                })
                .filter_map(|f| {
                    let meta = f.metadata().ok()?;
                    Some(LogFileInfo {
                        path: f.path(),
                        modified: meta.modified().ok()?,
                        bytes: meta.len(),
                    })
                })
                .collect();
            files.sort_by_key(|f| f.modified);
            let now = SystemTime::now();
            let max_age = limits.log_max_age_seconds.map(Duration::from_secs);
            let mut total: u64 = files.iter().map(|f| f.bytes).sum();
            for file in files {
                let too_old = max_age.is_some_and(|age| now.duration_since(file.modified).unwrap_or_default() > age);
                let too_big = limits.log_max_bytes.is_some_and(|max| total > max);
                if (too_old || too_big) && std::fs::remove_file(&file.path).is_ok() {
                    total -= file.bytes;
                    deleted += 1;
                }
            }
        }
        deleted
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
