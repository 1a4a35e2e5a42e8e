//! Log retention per namespace: instance log files (and rotated access logs) past the
//! namespace's age go, then the oldest until its logs fit its size. Files of live
//! instances stay: deleting one would lose what the instance writes next.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use updraft_model::NamespaceLimits;

use crate::logs::ACCESS_LOG_ROTATED;

#[derive(Debug, Clone, PartialEq)]
pub struct LogFileInfo {
    pub path: PathBuf,
    pub modified: SystemTime,
    pub bytes: u64,
}

/// Which of a namespace's log files to delete under `limits` at `now`: the decision
/// alone, oldest first.
pub fn expired(mut files: Vec<LogFileInfo>, limits: &NamespaceLimits, now: SystemTime) -> Vec<LogFileInfo> {
    files.sort_by_key(|f| f.modified);
    let max_age = limits.log_max_age_seconds.map(Duration::from_secs);
    let mut total: u64 = files.iter().map(|f| f.bytes).sum();
    let mut doomed = Vec::new();
    for file in files {
        let too_old = max_age.is_some_and(|age| now.duration_since(file.modified).unwrap_or_default() > age);
        let too_big = limits.log_max_bytes.is_some_and(|max| total > max);
        if too_old || too_big {
            total -= file.bytes;
            doomed.push(file);
        }
    }
    doomed
}

/// The log files of a namespace that retention may delete: every service's stopped
/// instances' logs and its rotated access log, not the logs of `live` instances.
pub fn namespace_log_files(logs: &Path, namespace: &str, live: &HashSet<String>) -> Vec<LogFileInfo> {
    std::fs::read_dir(logs.join(namespace))
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|service| std::fs::read_dir(service.path()).into_iter().flatten().flatten())
        .filter(|f| {
            let path = f.path();
            path.extension().is_some_and(|e| e == "log") || path.file_name().is_some_and(|n| n == ACCESS_LOG_ROTATED)
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
        .collect()
}

/// Applies `limits` to a namespace's logs now; returns how many files went.
pub fn apply(logs: &Path, namespace: &str, limits: &NamespaceLimits, live: &HashSet<String>) -> usize {
    if limits.log_max_age_seconds.is_none() && limits.log_max_bytes.is_none() {
        return 0;
    }
    let files = namespace_log_files(logs, namespace, live);
    expired(files, limits, SystemTime::now())
        .iter()
        .filter(|f| std::fs::remove_file(&f.path).is_ok())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, age_s: u64, bytes: u64, now: SystemTime) -> LogFileInfo {
        LogFileInfo {
            path: PathBuf::from(name),
            modified: now - Duration::from_secs(age_s),
            bytes,
        }
    }

    fn names(files: &[LogFileInfo]) -> Vec<&str> {
        files.iter().map(|f| f.path.to_str().unwrap()).collect()
    }

    #[test]
    fn files_past_the_age_go_then_the_oldest_until_the_rest_fits() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let files = vec![
            file("new", 10, 100, now),
            file("old", 7_200, 100, now),
            file("middle", 600, 300, now),
        ];
        let by_age = NamespaceLimits {
            log_max_age_seconds: Some(3_600),
            ..Default::default()
        };
        assert_eq!(names(&expired(files.clone(), &by_age, now)), ["old"]);
        let by_size = NamespaceLimits {
            log_max_bytes: Some(150),
            ..Default::default()
        };
        assert_eq!(names(&expired(files.clone(), &by_size, now)), ["old", "middle"]);
        let both = NamespaceLimits {
            log_max_age_seconds: Some(3_600),
            log_max_bytes: Some(400),
            ..Default::default()
        };
        assert_eq!(names(&expired(files, &both, now)), ["old"]);
    }

    #[test]
    fn live_instances_keep_their_logs() {
        let dir = tempfile::tempdir().unwrap();
        let service = dir.path().join("ns").join("svc");
        std::fs::create_dir_all(&service).unwrap();
        for name in ["live.log", "gone.log", ACCESS_LOG_ROTATED, "requests.access"] {
            std::fs::write(service.join(name), "x").unwrap();
        }
        let live = HashSet::from(["live".to_string()]);
        let limits = NamespaceLimits {
            log_max_bytes: Some(0),
            ..Default::default()
        };
        assert_eq!(apply(dir.path(), "ns", &limits, &live), 2);
        let mut left: Vec<_> = std::fs::read_dir(&service)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["live.log", "requests.access"]);
    }
}
