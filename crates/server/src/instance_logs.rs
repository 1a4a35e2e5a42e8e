//! The runtime's capture joined to the telemetry's logs: each instance's output goes
//! to its file under `logs/{namespace}/{service}/` and to live followers.

use std::path::PathBuf;
use std::sync::Arc;

use updraft_runtime::logs::{InstanceLog, LogSink};
use updraft_runtime::InstanceSpec;
use updraft_telemetry::logs::{service_log_dir, LogFeed, LogFile};

pub struct InstanceLogs {
    pub dir: PathBuf,
    pub feed: LogFeed,
}

struct Kept(LogFile);

impl InstanceLog for Kept {
    fn write(&self, stream: &str, line: String, continued: bool) {
        self.0.write(stream, line, continued);
    }
}

impl LogSink for InstanceLogs {
    fn open(&self, spec: &InstanceSpec) -> std::io::Result<Arc<dyn InstanceLog>> {
        let file = LogFile::create(
            &service_log_dir(&self.dir, &spec.namespace, &spec.service),
            &spec.revision,
            &spec.id,
            Some((self.feed.clone(), spec.namespace.clone(), spec.service.clone())),
        )?;
        Ok(Arc::new(Kept(file)))
    }
}
