//! The `process` driver: each instance is a child process in its own process group
//! and cgroup, with the instance contract's environment.

use std::ffi::CString;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::SystemTime;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::watch;

use crate::cgroup::{Cgroups, InstanceCgroup, Layout};
use crate::instance::{ExitInfo, Instance, InstanceControl};
use crate::logs::{capture, service_log_dir, LogFile, LogTail};
use crate::{InstanceSpec, PortAllocator, Runtime, RuntimeError};

/// Variables passed from the server's environment to instances, so interpreters are
/// found and behave; everything else (credentials above all) stays with the server.
pub const INHERITED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
    "JAVA_HOME",
    "PYENV_ROOT",
    "PYENV_VERSION",
];

pub struct ProcessRuntime {
    cgroups: Cgroups,
    ports: PortAllocator,
    logs_dir: PathBuf,
    /// Holds one file per live instance naming its process group, for reaping.
    run_dir: PathBuf,
}

impl ProcessRuntime {
    /// `cgroup_parent` names this server's group; derive it from the data directory so
    /// two servers on one machine never reap each other's instances.
    pub fn new(logs_dir: PathBuf, run_dir: PathBuf, cgroup_parent: &str) -> std::io::Result<Self> {
        fs::create_dir_all(&logs_dir)?;
        fs::create_dir_all(&run_dir)?;
        Ok(ProcessRuntime {
            cgroups: Cgroups::detect(cgroup_parent),
            ports: PortAllocator::default(),
            logs_dir,
            run_dir,
        })
    }

    pub fn cgroups(&self) -> &Cgroups {
        &self.cgroups
    }
}

struct ProcessControl {
    pgid: Pid,
    cgroup: Option<InstanceCgroup>,
    pid_file: PathBuf,
}

impl InstanceControl for ProcessControl {
    fn terminate(&self) {
        let _ = killpg(self.pgid, Signal::SIGTERM);
    }

    fn kill(&self) {
        let _ = killpg(self.pgid, Signal::SIGKILL);
        if let Some(cgroup) = &self.cgroup {
            cgroup.kill_all();
        }
    }

    fn cleanup(&self) {
        if let Some(cgroup) = &self.cgroup {
            cgroup.remove();
        }
        let _ = fs::remove_file(&self.pid_file);
    }

    fn pids(&self) -> Vec<i32> {
        match &self.cgroup {
            Some(cgroup) => cgroup.pids(),
            None => process_group_members(self.pgid.as_raw()),
        }
    }
}

/// Processes whose process group is `pgid` (field 5 of `/proc/PID/stat`).
fn process_group_members(pgid: i32) -> Vec<i32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| stat[stat.rfind(')')? + 2..].split(' ').nth(2)?.parse::<i32>().ok())
                == Some(pgid)
        })
        .collect()
}

/// Process start time in clock ticks since boot (field 22 of `/proc/PID/stat`), which
/// tells a live process from a later one that reused its pid.
fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    after_name.split(' ').nth(19)?.parse().ok()
}

fn resolve_program(program: &str, workdir: &Path) -> PathBuf {
    if program.contains('/') && !program.starts_with('/') {
        workdir.join(program)
    } else {
        PathBuf::from(program)
    }
}

impl Runtime for ProcessRuntime {
    fn kind(&self) -> &'static str {
        "process"
    }

    fn start(&self, spec: InstanceSpec) -> Result<Instance, RuntimeError> {
        let port = self.ports.allocate()?;
        let cgroup = match self.cgroups.layout() {
            Layout::None => None,
            _ => match self.cgroups.create(&spec.id, spec.limits) {
                Ok(group) => Some(group),
                Err(e) => {
                    tracing::warn!(instance = %spec.id, error = %e, "cannot create cgroup; running without limits");
                    None
                }
            },
        };
        let procs: Vec<CString> = cgroup.as_ref().map(|c| c.procs_files()).unwrap_or_default();

        let program = resolve_program(&spec.command[0], &spec.workdir);
        let mut cmd = std::process::Command::new(&program);
        cmd.args(&spec.command[1..])
            .current_dir(&spec.workdir)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        for name in INHERITED_ENV {
            if let Some(value) = std::env::var_os(name) {
                cmd.env(name, value);
            }
        }
        cmd.envs(&spec.env);
        cmd.envs(spec.contract_env(port.port));
        // SAFETY: only async-signal-safe calls (prctl, open, write, close) on
        // memory prepared before fork.
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                for path in &procs {
                    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd >= 0 {
                        libc::write(fd, b"0".as_ptr().cast(), 1);
                        libc::close(fd);
                    }
                }
                Ok(())
            });
        }
        let spawned = {
            let _exclusive = crate::FORK_LOCK.write().unwrap_or_else(|p| p.into_inner());
            tokio::process::Command::from(cmd).spawn()
        };
        let mut child = match spawned {
            Ok(child) => child,
            Err(source) => {
                if let Some(c) = &cgroup {
                    c.remove();
                }
                return Err(RuntimeError::Spawn {
                    command: spec.command.join(" "),
                    source,
                });
            }
        };
        let pid = child.id().unwrap_or(0);
        let pid_file = self.run_dir.join(format!("{}.pid", spec.id));
        let stamp = start_time(pid as i32).unwrap_or(0);
        fs::write(&pid_file, format!("{pid} {stamp}\n"))?;

        let log = Arc::new(LogFile::create(
            &service_log_dir(&self.logs_dir, &spec.namespace, &spec.service),
            &spec.revision,
            &spec.id,
        )?);
        let tail = Arc::new(LogTail::default());
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let readers = [
            tokio::spawn(capture(stdout, "stdout", log.clone(), tail.clone())),
            tokio::spawn(capture(stderr, "stderr", log.clone(), tail.clone())),
        ];
        let (exit_tx, exit_rx) = watch::channel(None);
        let (drained_tx, drained_rx) = watch::channel(false);
        let id = spec.id.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            let info = match status {
                Ok(s) => {
                    use std::os::unix::process::ExitStatusExt;
                    ExitInfo {
                        code: s.code(),
                        signal: s.signal(),
                    }
                }
                Err(_) => ExitInfo {
                    code: None,
                    signal: None,
                },
            };
            tracing::debug!(instance = %id, "instance {info}");
            // Reported at once: the instance must leave rotation before another request
            // is sent to it.
            let _ = exit_tx.send(Some(info));
            // Output written just before exit is still in the pipes. A grandchild holding
            // them open must not delay this for long.
            let _ = tokio::time::timeout(std::time::Duration::from_millis(100), futures_join(readers)).await;
            let _ = drained_tx.send(true);
        });

        Ok(Instance {
            id: spec.id,
            port: port.port,
            pid,
            started_at: SystemTime::now(),
            cgroup: cgroup.clone(),
            exit: exit_rx,
            logs_drained: drained_rx,
            tail,
            control: Box::new(ProcessControl {
                pgid: Pid::from_raw(pid as i32),
                cgroup,
                pid_file,
            }),
            _port: port,
        })
    }

    fn reap_leftovers(&self) -> usize {
        let mut reaped = 0;
        for entry in fs::read_dir(&self.run_dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let text = fs::read_to_string(&path).unwrap_or_default();
            let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
            if let (Some(Some(pid)), Some(Some(stamp))) = (fields.next(), fields.next()) {
                if pid > 0 && start_time(pid as i32) == Some(stamp) {
                    let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
                    reaped += 1;
                }
            }
            let _ = fs::remove_file(&path);
        }
        reaped.max(self.cgroups.reap_all())
    }
}

async fn futures_join(handles: [tokio::task::JoinHandle<()>; 2]) {
    for handle in handles {
        let _ = handle.await;
    }
}
