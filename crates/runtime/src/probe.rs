use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
pub use updraft_model::template::ProbeTiming;

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
    /// Its startup probe failed as many times in a row as it may.
    StartupFailed {
        failures: u32,
        last: String,
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
            NotReady::StartupFailed {
                failures,
                last,
                last_lines,
            } => (
                format!("instance failed its startup probe {failures} times in a row (the last: {last})"),
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

impl std::fmt::Display for Probe<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Probe::Tcp => write!(f, "TCP connect"),
            Probe::Http { path } => write!(f, "GET {path}"),
        }
    }
}

/// A probe with its timing, as the template gave it.
#[derive(Debug, Clone, Copy)]
pub struct TimedProbe<'a> {
    pub probe: Probe<'a>,
    pub timing: ProbeTiming,
}

/// Probes `port` once: `Err` says what failed (refused, the status, no answer in time).
pub async fn probe_once(port: u16, probe: Probe<'_>, timeout: Duration) -> Result<(), String> {
    let attempt = async {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("{probe}: {e}"))?;
        match probe {
            Probe::Tcp => Ok(()),
            Probe::Http { path } => match http_status(stream, port, path).await {
                Ok(200..=399) => Ok(()),
                Ok(status) => Err(format!("{probe}: status {status}")),
                Err(e) => Err(format!("{probe}: {e}")),
            },
        }
    };
    tokio::time::timeout(timeout, attempt).await.unwrap_or_else(|_| {
        Err(format!(
            "{probe}: no answer within {}",
            humantime::format_duration(timeout)
        ))
    })
}

/// Consecutive results of a probe, against its thresholds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Streak {
    pub successes: u32,
    pub failures: u32,
}

/// What a run of probe results has decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Passing,
    Failing,
    Undecided,
}

impl Streak {
    /// Counts one result; the verdict once a threshold is reached.
    pub fn observe(&mut self, ok: bool, timing: &ProbeTiming) -> Verdict {
        if ok {
            self.successes += 1;
            self.failures = 0;
        } else {
            self.failures += 1;
            self.successes = 0;
        }
        if self.successes >= timing.success_threshold() {
            Verdict::Passing
        } else if self.failures >= timing.failure_threshold() {
            Verdict::Failing
        } else {
            Verdict::Undecided
        }
    }
}

/// Waits until the instance accepts a TCP connection on its port, from a socket one of
/// its own processes holds, then passes its startup probe (if any) and its readiness
/// probe; or exits; or the timeout passes. Returns how long it took.
///
/// Without timing fields the readiness probe runs as fast as the app answers
/// (Knative's aggressive probing), so the platform adds little to the app's own start.
pub async fn wait_ready(
    instance: &Instance,
    startup: Option<TimedProbe<'_>>,
    readiness: TimedProbe<'_>,
    timeout: Duration,
) -> Result<Duration, NotReady> {
    let start = Instant::now();
    let not_ready = |path| NotReady::Timeout {
        after: timeout,
        path,
        last_lines: instance.recent_logs(),
    };
    wait_listening(instance, start, timeout).await?;
    if let Some(startup) = startup {
        let mut streak = Streak::default();
        let mut at = start + startup.timing.initial_delay();
        loop {
            alive(instance, at, start + timeout, || not_ready(None)).await?;
            let result = probe_once(instance.port, startup.probe, startup.timing.timeout()).await;
            match streak.observe(result.is_ok(), &startup.timing) {
                Verdict::Passing => break,
                Verdict::Failing => {
                    return Err(NotReady::StartupFailed {
                        failures: streak.failures,
                        last: result.err().unwrap_or_default(),
                        last_lines: instance.recent_logs(),
                    })
                }
                Verdict::Undecided => at = Instant::now() + startup.timing.period(),
            }
        }
    }
    let path = match readiness.probe {
        Probe::Http { path } => Some(path.to_string()),
        Probe::Tcp => None,
    };
    let period = match readiness.timing.period_seconds {
        None | Some(0) if matches!(readiness.probe, Probe::Tcp) => PROBE_INTERVAL,
        None | Some(0) => HTTP_PROBE_INTERVAL,
        Some(_) => readiness.timing.period(),
    };
    let probe_timeout = match readiness.timing.timeout_seconds {
        None => HTTP_PROBE_TIMEOUT,
        Some(_) => readiness.timing.timeout(),
    };
    let mut streak = Streak::default();
    let mut at = start + readiness.timing.initial_delay();
    loop {
        alive(instance, at, start + timeout, || not_ready(path.clone())).await?;
        let ok = probe_once(instance.port, readiness.probe, probe_timeout).await.is_ok();
        // Failures do not fail a start: the progress deadline does.
        if streak.observe(ok, &readiness.timing) == Verdict::Passing {
            return Ok(start.elapsed());
        }
        at = Instant::now() + period;
    }
}

/// Sleeps until `at`, failing early if the instance exits or `deadline` passes first.
async fn alive(
    instance: &Instance,
    at: Instant,
    deadline: Instant,
    timed_out: impl Fn() -> NotReady,
) -> Result<(), NotReady> {
    let mut exit = instance.exit_watch();
    loop {
        still_running(instance).await?;
        let now = Instant::now();
        if now >= deadline {
            return Err(timed_out());
        }
        if now >= at {
            return Ok(());
        }
        tokio::select! {
            _ = exit.changed() => {}
            _ = tokio::time::sleep(at.min(deadline) - now) => {}
        }
    }
}

/// `Err` once the instance has exited, with its last words.
async fn still_running(instance: &Instance) -> Result<(), NotReady> {
    match instance.exited() {
        None => Ok(()),
        Some(exit) => {
            // Its last words explain the exit: wait until they are captured.
            instance.logs_drained().await;
            Err(NotReady::Exited {
                exit,
                last_lines: instance.recent_logs(),
            })
        }
    }
}

/// Until the instance's own process accepts connections on its port.
async fn wait_listening(instance: &Instance, start: Instant, timeout: Duration) -> Result<(), NotReady> {
    let mut exit = instance.exit_watch();
    let mut port_checked = start;
    let mut elsewhere_since: Option<Instant> = None;
    loop {
        still_running(instance).await?;
        if TcpStream::connect(("127.0.0.1", instance.port)).await.is_ok() && instance.listens() {
            return Ok(());
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
                path: None,
                last_lines: instance.recent_logs(),
            });
        }
        tokio::select! {
            _ = exit.changed() => {}
            _ = tokio::time::sleep(PROBE_INTERVAL) => {}
        }
    }
}

/// One HTTP/1.1 GET on an open connection: the response's status.
async fn http_status(mut stream: TcpStream, port: u16, path: &str) -> std::io::Result<u16> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: updraft-probe\r\nConnection: close\r\n\r\n"
    );
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
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no HTTP status line"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streak_decides_at_its_thresholds_and_a_result_the_other_way_starts_it_over() {
        let timing = ProbeTiming {
            success_threshold: Some(2),
            failure_threshold: Some(3),
            ..Default::default()
        };
        let mut streak = Streak::default();
        let seen: Vec<Verdict> = [false, false, true, false, false, false, true, true]
            .into_iter()
            .map(|ok| streak.observe(ok, &timing))
            .collect();
        use Verdict::*;
        assert_eq!(
            seen,
            [Undecided, Undecided, Undecided, Undecided, Undecided, Failing, Undecided, Passing]
        );
        let defaults = ProbeTiming::default();
        let mut streak = Streak::default();
        assert_eq!(streak.observe(true, &defaults), Passing);
        assert_eq!(streak.observe(false, &defaults), Undecided);
        assert_eq!(streak.observe(false, &defaults), Undecided);
        assert_eq!(streak.observe(false, &defaults), Failing);
    }

    #[tokio::test]
    async fn one_probe_names_what_failed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let answers = tokio::spawn(async move {
            for status in ["204 No Content", "503 Service Unavailable"] {
                let (mut conn, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 512];
                let _ = conn.read(&mut buf).await.unwrap();
                let reply = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
                conn.write_all(reply.as_bytes()).await.unwrap();
            }
            // Accepted and never answered: the probe's own timeout decides.
            let held = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(held);
        });
        let get = Probe::Http { path: "/healthz" };
        let second = Duration::from_secs(1);
        assert_eq!(probe_once(port, get, second).await, Ok(()));
        assert_eq!(
            probe_once(port, get, second).await,
            Err("GET /healthz: status 503".to_string())
        );
        let silent = probe_once(port, get, Duration::from_millis(200)).await.unwrap_err();
        assert!(silent.contains("no answer within 200ms"), "{silent}");
        answers.abort();
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let free = closed.local_addr().unwrap().port();
        drop(closed);
        let refused = probe_once(free, Probe::Tcp, second).await.unwrap_err();
        assert!(refused.starts_with("TCP connect: "), "{refused}");
    }
}
