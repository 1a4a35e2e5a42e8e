use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{ExitInfo, Instance};

/// Why an instance never became ready.
#[derive(Debug, Clone)]
pub enum NotReady {
    Exited {
        exit: ExitInfo,
        last_lines: Vec<String>,
    },
    /// It listens, but not on the port it was given.
    WrongPort {
        port: u16,
        listening: Vec<u16>,
        last_lines: Vec<String>,
    },
    Timeout {
        after: Duration,
        /// The readiness path it was asked, when the probe is HTTP.
        path: Option<String>,
        last_lines: Vec<String>,
    },
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (what, lines) = match self {
            NotReady::Exited { exit, last_lines } => {
                (format!("instance {exit} before it listened on $PORT"), last_lines)
            }
            NotReady::WrongPort {
                port,
                listening,
                last_lines,
            } => {
                let ports: Vec<String> = listening.iter().map(u16::to_string).collect();
                (
                    format!(
                        "instance is listening on {}, not on $PORT ({port}): read the port to listen on from $PORT",
                        ports.join(", ")
                    ),
                    last_lines,
                )
            }
            NotReady::Timeout {
                after,
                path: None,
                last_lines,
            } => (
                format!(
                    "instance did not listen on $PORT within {}",
                    humantime::format_duration(*after)
                ),
                last_lines,
            ),
            NotReady::Timeout {
                after,
                path: Some(path),
                last_lines,
            } => (
                format!(
                    "instance did not answer its readiness probe GET {path} with 2xx or 3xx within {}",
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
/// Time between HTTP probes, which cost the application a request each.
const HTTP_PROBE_INTERVAL: Duration = Duration::from_millis(5);
const HTTP_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a starting instance's listening ports are looked at, and how long it may
/// listen elsewhere only before that counts as the wrong port (an app may open an
/// admin port first).
const PORT_CHECK_INTERVAL: Duration = Duration::from_millis(250);
const WRONG_PORT_GRACE: Duration = Duration::from_secs(1);

/// How an instance shows it is ready, after it listens on its port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe<'a> {
    /// Listening is enough.
    Tcp,
    /// `GET path` must answer 2xx or 3xx, as a Kubernetes HTTP probe.
    Http { path: &'a str },
}

/// Waits until the instance accepts a TCP connection on its port, from a socket one of
/// its own processes holds, and passes its probe; or exits; or the timeout passes.
/// Returns how long it took.
pub async fn wait_ready(instance: &Instance, probe: Probe<'_>, timeout: Duration) -> Result<Duration, NotReady> {
    let start = Instant::now();
    let mut exit = instance.exit_watch();
    let mut port_checked = start;
    let mut elsewhere_since: Option<Instant> = None;
    loop {
        if let Some(exit) = instance.exited() {
            // Its last words explain the exit: wait until they are captured.
            instance.logs_drained().await;
            return Err(NotReady::Exited {
                exit,
                last_lines: instance.recent_logs(),
            });
        }
        let mut interval = PROBE_INTERVAL;
        if let Ok(stream) = TcpStream::connect(("127.0.0.1", instance.port)).await {
            if instance.listens() {
                match probe {
                    Probe::Tcp => return Ok(start.elapsed()),
                    Probe::Http { path } => {
                        if http_ok(stream, instance.port, path).await {
                            return Ok(start.elapsed());
                        }
                        interval = HTTP_PROBE_INTERVAL;
                    }
                }
            }
        }
        if port_checked.elapsed() >= PORT_CHECK_INTERVAL {
            port_checked = Instant::now();
            let listening = instance.listening_ports();
            if listening.is_empty() || listening.contains(&instance.port) {
                elsewhere_since = None;
            } else if elsewhere_since.get_or_insert(port_checked).elapsed() >= WRONG_PORT_GRACE {
                return Err(NotReady::WrongPort {
                    port: instance.port,
                    listening,
                    last_lines: instance.recent_logs(),
                });
            }
        }
        if start.elapsed() >= timeout {
            return Err(NotReady::Timeout {
                after: timeout,
                path: match probe {
                    Probe::Tcp => None,
                    Probe::Http { path } => Some(path.to_string()),
                },
                last_lines: instance.recent_logs(),
            });
        }
        tokio::select! {
            _ = exit.changed() => {}
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// One HTTP/1.1 GET on an open connection; true for a 2xx or 3xx status.
async fn http_ok(mut stream: TcpStream, port: u16, path: &str) -> bool {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: updraft-probe\r\nConnection: close\r\n\r\n"
    );
    let exchange = async {
        stream.write_all(request.as_bytes()).await?;
        let mut head = Vec::with_capacity(64);
        let mut buf = [0u8; 64];
        while !head.contains(&b'\n') && head.len() < 1024 {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(head)
    };
    let Ok(Ok(head)) = tokio::time::timeout(HTTP_PROBE_TIMEOUT, exchange).await else {
        return false;
    };
    let line = String::from_utf8_lossy(&head);
    let status = line.split_whitespace().nth(1).and_then(|s| s.parse::<u16>().ok());
    matches!(status, Some(200..=399))
}
