use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::{ExitInfo, Instance};

/// Why an instance never became ready.
#[derive(Debug, Clone)]
pub enum NotReady {
    Exited { exit: ExitInfo, last_lines: Vec<String> },
    Timeout { after: Duration, last_lines: Vec<String> },
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (what, lines) = match self {
            NotReady::Exited { exit, last_lines } => {
                (format!("instance {exit} before it listened on $PORT"), last_lines)
            }
            NotReady::Timeout { after, last_lines } => (
                format!(
                    "instance did not listen on $PORT within {}",
                    humantime::format_duration(*after)
                ),
                last_lines,
            ),
        };
        write!(f, "{what}")?;
        if !lines.is_empty() {
            write!(f, "; its last log lines:\n{}", lines.join("\n"))?;
        }
        Ok(())
    }
}

/// Time between connection attempts: short, so the platform adds little to the
/// application's own start time.
const PROBE_INTERVAL: Duration = Duration::from_micros(500);

/// Waits until the instance accepts a TCP connection on its port, from a socket one of
/// its own processes holds, or exits, or the timeout passes. Returns how long it took.
pub async fn wait_ready(instance: &Instance, timeout: Duration) -> Result<Duration, NotReady> {
    let start = Instant::now();
    let mut exit = instance.exit_watch();
    loop {
        if let Some(exit) = instance.exited() {
            // Its last words explain the exit: wait until they are captured.
            instance.logs_drained().await;
            return Err(NotReady::Exited {
                exit,
                last_lines: instance.recent_logs(),
            });
        }
        if TcpStream::connect(("127.0.0.1", instance.port)).await.is_ok() && instance.listens() {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return Err(NotReady::Timeout {
                after: timeout,
                last_lines: instance.recent_logs(),
            });
        }
        tokio::select! {
            _ = exit.changed() => {}
            _ = tokio::time::sleep(PROBE_INTERVAL) => {}
        }
    }
}
