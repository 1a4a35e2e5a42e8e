use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::cgroup::InstanceCgroup;
use crate::logs::LogTail;

/// How an instance ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exited with code {code}"),
            (None, Some(signal)) => write!(f, "was killed by signal {signal}"),
            (None, None) => write!(f, "exited"),
        }
    }
}

/// How a driver signals its instances.
pub trait InstanceControl: Send + Sync {
    /// Asks the instance to stop (SIGTERM).
    fn terminate(&self);
    /// Stops it now, with everything it started.
    fn kill(&self);
    /// Releases what the instance held once it has exited.
    fn cleanup(&self);
    /// The processes that belong to the instance now.
    fn pids(&self) -> Vec<i32>;
}

/// One running copy of a revision.
pub struct Instance {
    pub id: String,
    pub port: u16,
    pub pid: u32,
    pub started_at: SystemTime,
    /// Whether a pre-warmed stem cell became this instance.
    pub from_pool: bool,
    pub cgroup: Option<InstanceCgroup>,
    pub(crate) exit: watch::Receiver<Option<ExitInfo>>,
    /// Turns true once the output written before exit has been captured.
    pub(crate) logs_drained: watch::Receiver<bool>,
    pub(crate) tail: Arc<LogTail>,
    pub(crate) control: Box<dyn InstanceControl>,
    pub(crate) _port: crate::PortLease,
}

impl Instance {
    pub fn exited(&self) -> Option<ExitInfo> {
        *self.exit.borrow()
    }

    /// A receiver that changes once, when the instance exits.
    pub fn exit_watch(&self) -> watch::Receiver<Option<ExitInfo>> {
        self.exit.clone()
    }

    pub async fn wait_exit(&self) -> ExitInfo {
        let mut rx = self.exit.clone();
        let exit = rx.wait_for(|e| e.is_some()).await.map(|e| *e);
        exit.ok().flatten().unwrap_or(ExitInfo {
            code: None,
            signal: None,
        })
    }

    /// Whether one of the instance's own processes listens on its port (and not some
    /// other process that took the port first).
    pub fn listens(&self) -> bool {
        crate::listeners::port_owned_by(self.port, &self.control.pids())
    }

    /// The ports the instance's own processes listen on; none for one that runs in
    /// the server's process (a wasm component), whose listeners are the server's.
    pub fn listening_ports(&self) -> Vec<u16> {
        let pids = self.control.pids();
        if pids.contains(&(std::process::id() as i32)) {
            return Vec::new();
        }
        crate::listeners::ports_listened_by(&pids)
    }

    /// Waits until the output of an exited instance has been captured.
    pub async fn logs_drained(&self) {
        let mut rx = self.logs_drained.clone();
        let _ = rx.wait_for(|done| *done).await;
    }

    /// The last lines the instance wrote, oldest first.
    pub fn recent_logs(&self) -> Vec<String> {
        self.tail.lines()
    }

    /// SIGKILL now, with everything it started; [`Self::stop`] still cleans up after.
    pub fn kill(&self) {
        self.control.kill();
    }

    /// SIGTERM, then SIGKILL after `grace`; returns once everything is gone.
    pub async fn stop(&self, grace: Duration) -> ExitInfo {
        if self.exited().is_none() {
            self.control.terminate();
            if tokio::time::timeout(grace, self.wait_exit()).await.is_err() {
                self.control.kill();
            }
        }
        let exit = self.wait_exit().await;
        // Children may outlive the main process; they go with the group.
        self.control.kill();
        self.control.cleanup();
        exit
    }
}
