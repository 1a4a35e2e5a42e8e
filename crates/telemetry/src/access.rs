//! The access log: one record per request through the gateway, kept apart from the
//! instances' output. The gateway hands records over a bounded channel and never
//! waits: when the writer falls behind, records are counted as dropped instead.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::logs::{service_log_dir, AccessRecord, ACCESS_LOG, ACCESS_LOG_ROTATED, ACCESS_LOG_ROTATE_BYTES};
use tokio::sync::mpsc;

/// Records waiting to be written before new ones are dropped.
const BUFFER: usize = 16 * 1024;

pub struct AccessLog {
    tx: mpsc::Sender<(String, String, AccessRecord)>,
    pub dropped: AtomicU64,
}

impl AccessLog {
    /// The log and the writer task's half; the task runs until every sender is gone.
    pub fn new(logs_dir: &Path) -> (Self, impl std::future::Future<Output = ()>) {
        let (tx, rx) = mpsc::channel(BUFFER);
        let writer = write_all(logs_dir.to_path_buf(), rx);
        (
            AccessLog {
                tx,
                dropped: AtomicU64::new(0),
            },
            writer,
        )
    }

    pub fn record(&self, namespace: &str, service: &str, record: AccessRecord) {
        if self
            .tx
            .try_send((namespace.to_string(), service.to_string(), record))
            .is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn write_all(logs_dir: PathBuf, mut rx: mpsc::Receiver<(String, String, AccessRecord)>) {
    let mut files: HashMap<(String, String), File> = HashMap::new();
    while let Some(first) = rx.recv().await {
        // Whatever else is waiting goes in the same pass.
        let mut batch = vec![first];
        while let Ok(next) = rx.try_recv() {
            batch.push(next);
        }
        let dir = logs_dir.clone();
        let mut owned = std::mem::take(&mut files);
        files = tokio::task::spawn_blocking(move || {
            // A deleted service's log was unlinked with its folder; a new service of the
            // same name must not write into the deleted file.
            owned.retain(|_, file| file.metadata().is_ok_and(|m| m.nlink() > 0));
            for (namespace, service, record) in batch {
                let Ok(mut line) = serde_json::to_string(&record) else {
                    continue;
                };
                line.push('\n');
                let key = (namespace, service);
                if !owned.contains_key(&key) {
                    let dir = service_log_dir(&dir, &key.0, &key.1);
                    let opened = std::fs::create_dir_all(&dir)
                        .and_then(|_| OpenOptions::new().create(true).append(true).open(dir.join(ACCESS_LOG)));
                    match opened {
                        Ok(file) => {
                            owned.insert(key.clone(), file);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot open an access log");
                            continue;
                        }
                    }
                }
                if let Some(file) = owned.get_mut(&key) {
                    let _ = file.write_all(line.as_bytes());
                    // Past its size the log moves aside, for retention to delete.
                    if file.metadata().is_ok_and(|m| m.len() > ACCESS_LOG_ROTATE_BYTES) {
                        let dir = service_log_dir(&dir, &key.0, &key.1);
                        let _ = std::fs::rename(dir.join(ACCESS_LOG), dir.join(ACCESS_LOG_ROTATED));
                        owned.remove(&key);
                    }
                }
            }
            owned
        })
        .await
        .unwrap_or_default();
    }
}
