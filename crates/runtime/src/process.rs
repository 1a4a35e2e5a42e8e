//! The `process` driver: each instance is a child process in its own process group
//! and cgroup, with the instance contract's environment.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::watch;

use crate::cgroup::{Cgroups, InstanceCgroup, Layout};
use crate::instance::{ExitInfo, Instance, InstanceControl};
use crate::logs::{capture, LogSink, LogTail};
use crate::oci::{ContainerControl, ContainerSpec, Containers};
use crate::sandbox::{Identity, Sandbox};
use crate::{InstanceSpec, Language, PortAllocator, Runtime, RuntimeError, Workload};

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

/// The server's variables a confined program gets; a sandboxed one has its home and
/// temporary files in its private `/tmp`, and only the `PATH` it can use.
pub fn inherited_env(sandbox: Option<&Sandbox>) -> Vec<(String, String)> {
    INHERITED_ENV
        .iter()
        .filter_map(|name| match (*name, sandbox) {
            ("HOME" | "TMPDIR", Some(_)) => Some((name.to_string(), "/tmp".to_string())),
            ("PATH", Some(sandbox)) => Some((name.to_string(), sandbox.path().to_string())),
            _ => std::env::var(name).ok().map(|v| (name.to_string(), v)),
        })
        .collect()
}

pub struct ProcessRuntime {
    cgroups: Cgroups,
    ports: PortAllocator,
    /// Where instance output goes.
    logs: Arc<dyn LogSink>,
    /// Holds one file per live instance naming its process group, for reaping.
    run_dir: PathBuf,
    /// The command that starts a stem cell (`updraft stem`), when the pool is on.
    stem_command: Option<Vec<PathBuf>>,
    /// Pre-forked processes, each in its own cgroup, waiting to become an instance.
    stems: Mutex<Vec<Stem>>,
    /// Where the function runtimes' shims are written, once function stems are on.
    shims: Option<PathBuf>,
    /// Started interpreters with the shim loaded, per language, waiting for a handler.
    function_stems: Mutex<HashMap<Language, Vec<Stem>>>,
    /// Languages deployed since start: only their pools are kept warm.
    languages: Mutex<HashSet<Language>>,
    /// runc and its directories, once OCI images are on.
    containers: Option<Containers>,
    /// Confines code packages and function runtimes, once on.
    sandbox: Option<Arc<Sandbox>>,
}

/// A pre-warmed generic instance: a process already started in its process group and
/// cgroup, with its output piped, blocked reading the command it is to run.
struct Stem {
    id: String,
    child: tokio::process::Child,
    /// Where its order is written.
    orders: std::io::PipeWriter,
    cgroup: Option<InstanceCgroup>,
    pid_file: PathBuf,
}

fn interpreter(language: Language) -> &'static [&'static str] {
    match language {
        Language::Python => &["python3", "-u"],
        Language::Node => &["node"],
    }
}

fn shim_name(language: Language) -> &'static str {
    match language {
        Language::Python => "updraft_function.py",
        Language::Node => "updraft_function.mjs",
    }
}

fn shim(language: Language) -> &'static str {
    match language {
        Language::Python => include_str!("shims/python.py"),
        Language::Node => include_str!("shims/node.mjs"),
    }
}

/// A function revision's handler: a file or folder inside its unpacked package.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    pub language: Language,
    pub handler: PathBuf,
}

/// What a stem cell reads on its standard input, one JSON line, before it execs.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct StemOrder {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// Who to become first: a sandboxed stem cell is root until it is bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

impl ProcessRuntime {
    /// `cgroup_parent` names this server's group; derive it from the data directory so
    /// two servers on one machine never reap each other's instances.
    pub fn new(logs: Arc<dyn LogSink>, run_dir: PathBuf, cgroup_parent: &str) -> std::io::Result<Self> {
        fs::create_dir_all(&run_dir)?;
        Ok(ProcessRuntime {
            cgroups: Cgroups::detect(cgroup_parent),
            ports: PortAllocator::default(),
            logs,
            run_dir,
            stem_command: None,
            stems: Mutex::new(Vec::new()),
            shims: None,
            function_stems: Mutex::new(HashMap::new()),
            languages: Mutex::new(HashSet::new()),
            containers: None,
            sandbox: None,
        })
    }

    /// Runs code packages, function runtimes and stem cells inside `sandbox`.
    pub fn with_sandbox(mut self, sandbox: Arc<Sandbox>) -> Self {
        self.sandbox = Some(sandbox);
        self
    }

    /// The sandboxed identity of `spec`'s namespace, with its revision handed to it.
    fn identity(&self, spec: &InstanceSpec) -> Result<Option<Identity>, RuntimeError> {
        let Some(sandbox) = &self.sandbox else {
            return Ok(None);
        };
        let identity = sandbox.identity(&spec.namespace)?;
        sandbox.hand_over(identity, &spec.workdir)?;
        Ok(Some(identity))
    }

    /// `command` as a process, inside the sandbox when there is one.
    fn command(&self, command: &[String], identity: Option<Identity>, workdir: Option<&Path>) -> std::process::Command {
        match &self.sandbox {
            Some(sandbox) => sandbox.command(command, identity, workdir),
            None => {
                let mut cmd = std::process::Command::new(&command[0]);
                cmd.args(&command[1..]);
                if let Some(dir) = workdir {
                    cmd.current_dir(dir);
                }
                cmd
            }
        }
    }

    /// Writes the Python and Node shims under `dir` and turns the function pools on.
    pub fn with_function_runtimes(mut self, dir: PathBuf) -> std::io::Result<Self> {
        fs::create_dir_all(&dir)?;
        // Read by instances, which run as other users in a sandbox.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
        for language in [Language::Python, Language::Node] {
            let path = dir.join(shim_name(language));
            fs::write(&path, shim(language))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644))?;
        }
        self.shims = Some(dir);
        Ok(self)
    }

    fn shim_command(&self, language: Language) -> Vec<String> {
        let shim = self
            .shims
            .as_ref()
            .map(|d| d.join(shim_name(language)))
            .unwrap_or_default();
        let mut command: Vec<String> = interpreter(language).iter().map(|s| s.to_string()).collect();
        command.push(shim.display().to_string());
        command
    }

    fn resize_function_stems(&self, target: usize) {
        let languages: Vec<Language> = self
            .languages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect();
        for language in languages {
            loop {
                let size = self.function_stems_of(language);
                if size > target {
                    let extra = self
                        .function_stems
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_mut(&language)
                        .and_then(Vec::pop);
                    if let Some(stem) = extra {
                        stem.discard();
                    }
                } else if size < target {
                    let mut command = self.shim_command(language);
                    command.push("--stem".into());
                    match self.spawn_stem(&command) {
                        Ok(stem) => self
                            .function_stems
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .entry(language)
                            .or_default()
                            .push(stem),
                        Err(e) => {
                            tracing::warn!(error = %e, ?language, "cannot start a function stem cell");
                            break;
                        }
                    }
                } else {
                    break;
                }
            }
        }
    }

    fn function_stems_of(&self, language: Language) -> usize {
        self.function_stems
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&language)
            .map_or(0, Vec::len)
    }

    /// Runs OCI image instances with `containers`' runc.
    pub fn with_containers(mut self, containers: Containers) -> Self {
        self.containers = Some(containers);
        self
    }

    /// Turns the pool on: `command` starts a stem cell (the `updraft stem` command),
    /// which waits for a [`StemOrder`] on its standard input and execs it.
    pub fn with_stems(mut self, command: Vec<PathBuf>) -> Self {
        self.stem_command = Some(command);
        self
    }

    fn pool_size(&self) -> usize {
        self.stems.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn resize_stems(&self, target: usize) -> usize {
        if self.stem_command.is_none() {
            return 0;
        }
        loop {
            let size = self.pool_size();
            if size > target {
                let extra = self.stems.lock().unwrap_or_else(|p| p.into_inner()).pop();
                if let Some(stem) = extra {
                    stem.discard();
                }
            } else if size < target {
                let command: Vec<String> = self
                    .stem_command
                    .iter()
                    .flatten()
                    .map(|p| p.display().to_string())
                    .collect();
                match self.spawn_stem(&command) {
                    Ok(stem) => self.stems.lock().unwrap_or_else(|p| p.into_inner()).push(stem),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot start a stem cell");
                        return size;
                    }
                }
            } else {
                return size;
            }
        }
    }

    fn spawn_stem(&self, command: &[String]) -> Result<Stem, RuntimeError> {
        let id = format!("stem-{:08x}", random_u32());
        let cgroup = match self.cgroups.layout() {
            Layout::None => None,
            _ => Some(self.cgroups.create(&id, None, crate::cgroup::Limits::default())?),
        };
        let (orders_in, orders) = std::io::pipe()?;
        let mut cmd = self.command(command, None, None);
        cmd.env_clear()
            .envs(inherited_env(self.sandbox.as_deref()))
            .stdin(orders_in)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = match crate::spawner::fork(cmd, cgroup.as_ref()) {
            Ok(child) => child,
            Err(source) => {
                if let Some(c) = &cgroup {
                    c.remove();
                }
                return Err(RuntimeError::Spawn {
                    command: format!("{} (stem cell)", command[0]),
                    source,
                });
            }
        };
        let pid = child.id().unwrap_or(0);
        let pid_file = self.run_dir.join(format!("{id}.pid"));
        fs::write(&pid_file, format!("{pid} {}\n", start_time(pid as i32).unwrap_or(0)))?;
        Ok(Stem {
            id,
            child,
            orders,
            cgroup,
            pid_file,
        })
    }

    /// The instance's environment: the inherited allowlist, the user's, the contract's.
    fn environment(&self, spec: &InstanceSpec, port: u16) -> Vec<(String, String)> {
        let mut env = inherited_env(self.sandbox.as_deref());
        env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.extend(spec.contract_env(port).into_iter().map(|(k, v)| (k.to_string(), v)));
        env
    }

    /// Makes a stem cell the instance `spec` asks for: its limits, then its command.
    fn bind(&self, mut stem: Stem, spec: &InstanceSpec, port: u16) -> Result<Started, RuntimeError> {
        if let Some(cgroup) = stem.cgroup.take() {
            let named = cgroup.rename(&spec.id).unwrap_or_else(|e| {
                tracing::warn!(stem = %stem.id, error = %e, "cannot rename the stem cell's cgroup");
                cgroup
            });
            let limited = named.set_limits(spec.limits);
            stem.cgroup = Some(named);
            if let Err(e) = limited {
                stem.discard();
                return Err(e.into());
            }
        }
        let identity = match self.identity(spec) {
            Ok(identity) => identity,
            Err(e) => {
                stem.discard();
                return Err(e);
            }
        };
        let order = StemOrder {
            program: resolve_program(&spec.command[0], &spec.workdir),
            args: spec.command[1..].to_vec(),
            env: self.environment(spec, port),
            cwd: spec.workdir.clone(),
            uid: identity.map(|id| id.uid),
            gid: identity.map(|id| id.gid),
        };
        let mut line = serde_json::to_vec(&order).map_err(std::io::Error::other)?;
        line.push(b'\n');
        // The stem is blocked reading: the write returns as soon as it is taken in.
        use std::io::Write;
        if let Err(e) = stem.orders.write_all(&line) {
            stem.discard();
            return Err(e.into());
        }
        let pid_file = self.run_dir.join(format!("{}.pid", spec.id));
        let _ = fs::rename(&stem.pid_file, &pid_file);
        tracing::debug!(stem = %stem.id, instance = %spec.id, "stem cell bound");
        Ok(Started {
            pid: self.program_pid(&stem.child),
            child: stem.child,
            cgroup: stem.cgroup,
            pid_file,
            from_pool: true,
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
    fn start(&self, mut spec: InstanceSpec) -> Result<Instance, RuntimeError> {
        let port = self.ports.allocate()?;
        let function = match spec.workload.clone() {
            Workload::Container(container) => return self.start_container(spec, container, port),
            Workload::Wasm(_) => return Err(RuntimeError::Unsupported("wasm")),
            Workload::Function(function) => Some(function),
            Workload::Process => None,
        };
        if let Some(function) = function {
            // A function stem is an interpreter with the shim loaded: its order names
            // the handler; without one, the shim starts with the handler as argument.
            self.languages
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(function.language);
            let handler = function.handler.display().to_string();
            let stem = self
                .may_use_stems(&spec)
                .then(|| {
                    self.function_stems
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_mut(&function.language)
                        .and_then(Vec::pop)
                })
                .flatten();
            let started = match stem {
                Some(stem) => {
                    spec.command = vec![interpreter(function.language)[0].to_string(), handler];
                    self.bind(stem, &spec, port.port)?
                }
                None => {
                    spec.command = self.shim_command(function.language);
                    spec.command.push(handler);
                    self.spawn(&spec, port.port)?
                }
            };
            return self.adopt(started, spec, port);
        }
        let stem = self
            .may_use_stems(&spec)
            .then(|| self.stems.lock().unwrap_or_else(|p| p.into_inner()).pop())
            .flatten();
        let started = match stem {
            Some(stem) => self.bind(stem, &spec, port.port)?,
            None => self.spawn(&spec, port.port)?,
        };
        self.adopt(started, spec, port)
    }

    fn pool(&self) -> (usize, u64) {
        let stems = self.stems.lock().unwrap_or_else(|p| p.into_inner());
        let functions = self.function_stems.lock().unwrap_or_else(|p| p.into_inner());
        let all: Vec<&Stem> = stems.iter().chain(functions.values().flatten()).collect();
        let memory = all.iter().map(|s| s.resident_bytes()).sum();
        (all.len(), memory)
    }

    fn resize_pool(&self, target: usize) -> usize {
        let generic = self.resize_stems(target);
        if self.shims.is_some() && self.stem_command.is_some() {
            self.resize_function_stems(target);
        }
        generic
    }

    fn reap_leftovers(&self) -> usize {
        // Containers first: `runc delete` removes their groups in every hierarchy.
        let mut reaped = self.containers.as_ref().map_or(0, Containers::reap_leftovers);
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

/// A process that is to be an instance, however it was started.
struct Started {
    child: tokio::process::Child,
    /// The program's pid: in a sandbox not the child's, which is the sandbox's waiter.
    pid: u32,
    cgroup: Option<InstanceCgroup>,
    pid_file: PathBuf,
    from_pool: bool,
}

impl Stem {
    /// The memory of every process of the stem cell: in a sandbox, the one the server
    /// forked is only the sandbox's waiter.
    fn resident_bytes(&self) -> u64 {
        match &self.cgroup {
            Some(cgroup) => cgroup.pids().into_iter().map(resident_bytes).sum(),
            None => self.child.id().map_or(0, |pid| resident_bytes(pid as i32)),
        }
    }

    /// Stops an unused stem cell and removes its group.
    fn discard(mut self) {
        let _ = self.child.start_kill();
        if let Some(pid) = self.child.id() {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        if let Some(cgroup) = &self.cgroup {
            cgroup.kill_all();
            let cgroup = cgroup.clone();
            tokio::spawn(async move {
                let _ = self.child.wait().await;
                cgroup.remove();
            });
        }
        let _ = fs::remove_file(&self.pid_file);
    }
}

/// A process's resident memory (`VmRSS` of `/proc/PID/status`), in bytes.
fn resident_bytes(pid: i32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Stem cell names need only differ from each other.
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish() as u32
}

impl ProcessRuntime {
    /// Stem cells wait in the shared partition: an exclusive namespace's instance
    /// starts afresh on its own CPUs instead.
    fn may_use_stems(&self, spec: &InstanceSpec) -> bool {
        !self.cgroups.is_exclusive(&spec.namespace)
    }

    /// Forks the instance's command directly.
    fn spawn(&self, spec: &InstanceSpec, port: u16) -> Result<Started, RuntimeError> {
        let cgroup = match self.cgroups.layout() {
            Layout::None => None,
            _ => match self.cgroups.create(&spec.id, Some(&spec.namespace), spec.limits) {
                Ok(group) => Some(group),
                Err(e) => {
                    tracing::warn!(instance = %spec.id, error = %e, "cannot create cgroup; running without limits");
                    None
                }
            },
        };
        let identity = match self.identity(spec) {
            Ok(identity) => identity,
            Err(e) => {
                if let Some(c) = &cgroup {
                    c.remove();
                }
                return Err(e);
            }
        };
        let mut command = spec.command.clone();
        command[0] = resolve_program(&spec.command[0], &spec.workdir).display().to_string();
        let mut cmd = self.command(&command, identity, Some(&spec.workdir));
        cmd.env_clear()
            .envs(self.environment(spec, port))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = match crate::spawner::fork(cmd, cgroup.as_ref()) {
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
        fs::write(&pid_file, format!("{pid} {}\n", start_time(pid as i32).unwrap_or(0)))?;
        Ok(Started {
            pid: self.program_pid(&child),
            child,
            cgroup,
            pid_file,
            from_pool: false,
        })
    }

    fn program_pid(&self, child: &tokio::process::Child) -> u32 {
        let forked = child.id().unwrap_or(0);
        match &self.sandbox {
            Some(_) => crate::sandbox::program_pid(forked).unwrap_or(forked),
            None => forked,
        }
    }

    /// Captures a started process's output and watches its exit.
    fn adopt(&self, started: Started, spec: InstanceSpec, port: crate::PortLease) -> Result<Instance, RuntimeError> {
        let pid = started.child.id().unwrap_or(0);
        let control = Box::new(ProcessControl {
            pgid: Pid::from_raw(pid as i32),
            cgroup: started.cgroup.clone(),
            pid_file: started.pid_file.clone(),
        });
        self.watch(started, spec, port, control)
    }

    /// Starts an image's container: `runc run` of a bundle written for this instance,
    /// in the group runc creates where a process instance's would be.
    fn start_container(
        &self,
        spec: InstanceSpec,
        container: ContainerSpec,
        port: crate::PortLease,
    ) -> Result<Instance, RuntimeError> {
        let containers = self
            .containers
            .clone()
            .ok_or_else(|| RuntimeError::Bundle("OCI images are not enabled on this server".into()))?;
        let (cgroups_path, cgroup) = self.cgroups.planned(&spec.id, &spec.namespace);
        let bundle = containers.write_bundle(&spec, &container, port.port, &cgroups_path)?;
        let mut cmd = containers.command();
        cmd.arg("run")
            .arg("--bundle")
            .arg(&bundle)
            .arg(&spec.id)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = crate::spawner::fork(cmd, None).map_err(|source| {
            let _ = fs::remove_dir_all(&bundle);
            RuntimeError::Spawn {
                command: format!("{} run", containers.runc.display()),
                source,
            }
        })?;
        let pid = child.id().unwrap_or(0);
        let pid_file = self.run_dir.join(format!("{}.pid", spec.id));
        fs::write(&pid_file, format!("{pid} {}\n", start_time(pid as i32).unwrap_or(0)))?;
        let control = Box::new(ContainerControl {
            containers,
            id: spec.id.clone(),
            runc_pgid: Pid::from_raw(pid as i32),
            cgroup: cgroup.clone(),
            pid_file: pid_file.clone(),
        });
        let started = Started {
            child,
            pid,
            cgroup: Some(cgroup),
            pid_file,
            from_pool: false,
        };
        self.watch(started, spec, port, control)
    }

    /// Captures a started instance's output and watches its exit; `control` stops it.
    fn watch(
        &self,
        started: Started,
        spec: InstanceSpec,
        port: crate::PortLease,
        control: Box<dyn InstanceControl>,
    ) -> Result<Instance, RuntimeError> {
        let Started {
            mut child,
            cgroup,
            from_pool,
            pid,
            ..
        } = started;
        let log = self.logs.open(&spec)?;
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
            from_pool,
            cgroup,
            exit: exit_rx,
            logs_drained: drained_rx,
            tail,
            control,
            _port: port,
        })
    }
}

async fn futures_join(handles: [tokio::task::JoinHandle<()>; 2]) {
    for handle in handles {
        let _ = handle.await;
    }
}
