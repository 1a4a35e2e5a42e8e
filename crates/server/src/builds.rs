//! Builds from source. A revision's dependencies go into a layer beside the packages
//! (`layers/<namespace>/<key>`), keyed by what decides its content and by the
//! interpreter's version, so an unchanged app's next deploy reuses it; `updraft.yaml`'s
//! `build:` command runs in the revision's own folder. Each build runs confined as its
//! namespace's uid, like the instances, bounded in time and size, and its output goes to
//! the service's logs (`updraft logs NAME --build`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use updraft_model::build::Dependencies;
use updraft_runtime::cgroup::{Cgroups, InstanceCgroup, Limits};
use updraft_runtime::sandbox::{Identity, Sandbox};
use updraft_telemetry::logs::{service_log_dir, LogFeed, LogFile, BUILD_STREAM};

use crate::{ApiError, Paths};

/// What one build may take.
#[derive(Debug, Clone, Copy)]
pub struct BuildLimits {
    pub timeout: Duration,
    /// The most a layer, or what a `build:` command adds, may hold on disk.
    pub max_bytes: u64,
    /// The memory a build's processes may use together.
    pub memory_bytes: u64,
    /// Whether builds may reach the network (to fetch packages); without it they run
    /// in a network namespace of their own, with no interface but a down loopback.
    pub network: bool,
}

impl Default for BuildLimits {
    fn default() -> Self {
        BuildLimits {
            timeout: Duration::from_secs(600),
            max_bytes: 2 << 30,
            memory_bytes: 2 << 30,
            network: true,
        }
    }
}

pub struct Builds {
    paths: Paths,
    sandbox: Option<Arc<Sandbox>>,
    cgroups: Option<Cgroups>,
    limits: BuildLimits,
    feed: LogFeed,
    /// `--version` of each interpreter, asked once.
    versions: Mutex<HashMap<&'static str, String>>,
}

/// The revision a build is for.
pub struct Target<'a> {
    pub namespace: &'a str,
    pub service: &'a str,
    pub revision: &'a str,
    pub workdir: &'a Path,
}

/// What the revision's instances need from its builds.
#[derive(Debug, Default)]
pub struct Built {
    pub env: BTreeMap<String, String>,
    pub layers: Vec<String>,
}

/// Lines of a failed build's output the deploy's error shows.
const SHOWN_LINES: usize = 20;

/// Output lines that mean the build could not reach the network.
const OFFLINE_SIGNS: &[&str] = &[
    "Temporary failure in name resolution",
    "Network is unreachable",
    "getaddrinfo EAI_AGAIN",
    "getaddrinfo ENOTFOUND",
    "Failed to establish a new connection",
    "ECONNREFUSED",
    "ENOTCACHED",
];

/// Output lines of a Go build that wanted to fetch a module.
const GO_FETCH_SIGNS: &[&str] = &["missing go.sum entry", "disabled by GOPROXY=off"];

/// One build step's run: its output kept for the error, written to the log.
struct Step<'a> {
    log: &'a LogFile,
    tail: Arc<Mutex<VecDeque<String>>>,
}

impl Builds {
    pub fn new(
        paths: Paths,
        sandbox: Option<Arc<Sandbox>>,
        cgroups: Option<Cgroups>,
        limits: BuildLimits,
        feed: LogFeed,
    ) -> Builds {
        Builds {
            paths,
            sandbox,
            cgroups,
            limits,
            feed,
            versions: Mutex::default(),
        }
    }

    /// Installs the dependencies and runs the build command; blocking.
    pub fn run(
        &self,
        target: &Target,
        dependencies: &[Dependencies],
        command: Option<&str>,
    ) -> Result<Built, ApiError> {
        let mut built = Built::default();
        if dependencies.is_empty() && command.is_none() {
            return Ok(built);
        }
        let log = LogFile::create(
            &service_log_dir(&self.paths.logs, target.namespace, target.service),
            target.revision,
            &format!("{}-build", target.revision),
            Some((
                self.feed.clone(),
                target.namespace.to_string(),
                target.service.to_string(),
            )),
        )
        .map_err(ApiError::internal)?;
        let identity = match &self.sandbox {
            Some(sandbox) => {
                let identity = sandbox.identity(target.namespace).map_err(ApiError::internal)?;
                sandbox
                    .hand_over(identity, target.workdir)
                    .map_err(ApiError::internal)?;
                Some(identity)
            }
            None => None,
        };
        for dependencies in dependencies {
            let layer = self.layer(target, dependencies, identity, &log)?;
            match dependencies {
                Dependencies::Python { .. } => {
                    built
                        .env
                        .insert("PYTHONPATH".into(), layer.join("python").display().to_string());
                }
                Dependencies::Node { .. } => {
                    std::os::unix::fs::symlink(layer.join("node_modules"), target.workdir.join("node_modules"))
                        .map_err(ApiError::internal)?;
                }
            }
            built
                .layers
                .push(layer.file_name().unwrap_or_default().to_string_lossy().into_owned());
        }
        if let Some(line) = command {
            log.write(BUILD_STREAM, format!("running the build command: {line}"), false);
            let program = ["/bin/sh".to_string(), "-c".to_string(), line.to_string()];
            let before = disk_usage(target.workdir);
            // Go compiles each revision again from its cache; kept per namespace, a
            // changed source recompiles only what changed.
            let cache = self.namespace_dir(&self.paths.build_cache, target.namespace, identity)?;
            let mut env = built.env.clone();
            env.insert("GOCACHE".into(), cache.join("go").display().to_string());
            self.step(target, &program, (target.workdir, Some(&cache)), identity, &env, &log)
                .map_err(|failure| failure.into_error("build", &self.limits))?;
            if disk_usage(target.workdir).saturating_sub(before) > self.limits.max_bytes {
                return Err(too_big("build", self.limits.max_bytes));
            }
        }
        log.write(BUILD_STREAM, "build finished".to_string(), false);
        Ok(built)
    }

    /// The layer of these dependencies: the cached one, or a new one built now.
    fn layer(
        &self,
        target: &Target,
        dependencies: &Dependencies,
        identity: Option<Identity>,
        log: &LogFile,
    ) -> Result<PathBuf, ApiError> {
        let version = self.version(dependencies.interpreter())?;
        let key = hex::encode(&Sha256::digest(format!("{version}\n{}", dependencies.cache_input()))[..16]);
        let layers = self.namespace_layers(target.namespace, identity)?;
        let layer = layers.join(&key);
        if layer.is_dir() {
            log.write(
                BUILD_STREAM,
                format!("{}: cached layer {key} ({version})", dependencies.describe()),
                false,
            );
            return Ok(layer);
        }
        log.write(
            BUILD_STREAM,
            format!("{}: building layer {key} ({version})", dependencies.describe()),
            false,
        );
        let started = Instant::now();
        let scratch = tempfile::Builder::new()
            .prefix(&format!(".{key}."))
            .tempdir_in(&layers)
            .map_err(ApiError::internal)?;
        let program: Vec<String> = match dependencies {
            Dependencies::Python { requirements, .. } => {
                write_file(scratch.path(), "requirements.txt", requirements)?;
                [
                    "python3",
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "--no-input",
                    "--no-cache-dir",
                    "--target",
                    "python",
                    "-r",
                    "requirements.txt",
                ]
                .map(String::from)
                .to_vec()
            }
            Dependencies::Node { manifest, lockfile } => {
                write_file(scratch.path(), "package.json", manifest)?;
                let install = match lockfile {
                    Some(lockfile) => {
                        write_file(scratch.path(), "package-lock.json", lockfile)?;
                        "ci"
                    }
                    None => "install",
                };
                ["npm", install, "--omit=dev", "--no-audit", "--no-fund"]
                    .map(String::from)
                    .to_vec()
            }
        };
        if let Some(identity) = identity {
            give(scratch.path(), identity)?;
        }
        self.step(
            target,
            &program,
            (scratch.path(), None),
            identity,
            &BTreeMap::new(),
            log,
        )
        .map_err(|failure| failure.into_error("dependencies", &self.limits))?;
        if disk_usage(scratch.path()) > self.limits.max_bytes {
            return Err(too_big("dependencies", self.limits.max_bytes));
        }
        // Two deploys may build one layer at once: the first rename wins, and the
        // other's copy goes with its scratch folder.
        let built = scratch.keep();
        if std::fs::rename(&built, &layer).is_err() {
            let _ = std::fs::remove_dir_all(&built);
        }
        log.write(
            BUILD_STREAM,
            format!("layer {key} built in {:.1}s", started.elapsed().as_secs_f64()),
            false,
        );
        Ok(layer)
    }

    /// `layers/<namespace>`, its namespace's alone.
    fn namespace_layers(&self, namespace: &str, identity: Option<Identity>) -> Result<PathBuf, ApiError> {
        self.namespace_dir(&self.paths.layers, namespace, identity)
    }

    /// `<parent>/<namespace>`, made if needed, its namespace's alone.
    fn namespace_dir(&self, parent: &Path, namespace: &str, identity: Option<Identity>) -> Result<PathBuf, ApiError> {
        let dir = parent.join(namespace);
        std::fs::create_dir_all(&dir).map_err(ApiError::internal)?;
        if let Some(identity) = identity {
            std::os::unix::fs::chown(&dir, Some(identity.uid), Some(identity.gid)).map_err(ApiError::internal)?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(ApiError::internal)?;
        }
        Ok(dir)
    }

    fn version(&self, interpreter: &'static str) -> Result<String, ApiError> {
        let mut versions = self.versions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(version) = versions.get(interpreter) {
            return Ok(version.clone());
        }
        let path = match &self.sandbox {
            Some(sandbox) => sandbox.path().to_string(),
            None => std::env::var("PATH").unwrap_or_default(),
        };
        let output = Command::new(interpreter)
            .arg("--version")
            .env("PATH", path)
            .output()
            .map_err(|e| {
                ApiError::bad_request(
                    "build",
                    format!("the package's dependencies need {interpreter}, which this machine lacks: {e}"),
                )
            })?;
        let text = String::from_utf8_lossy(if output.stdout.is_empty() {
            &output.stderr
        } else {
            &output.stdout
        })
        .trim()
        .to_string();
        let version = format!("{interpreter} {text}");
        versions.insert(interpreter, version.clone());
        Ok(version)
    }

    /// Runs one program of a build in `dir`, confined, bounded in time, able to write
    /// there and in `cache`.
    fn step(
        &self,
        target: &Target,
        program: &[String],
        (dir, cache): (&Path, Option<&Path>),
        identity: Option<Identity>,
        env: &BTreeMap<String, String>,
        log: &LogFile,
    ) -> Result<(), Failure> {
        let mut command = match (&self.sandbox, identity) {
            (Some(sandbox), Some(identity)) => {
                sandbox.build_command(program, identity, dir, cache, self.limits.network)
            }
            _ => {
                let mut command = Command::new(&program[0]);
                command.args(&program[1..]).current_dir(dir);
                command
            }
        };
        command
            .env_clear()
            .envs(updraft_runtime::inherited_env(self.sandbox.as_deref()));
        // Confined, home is the sandbox's private /tmp; unconfined, a folder of the
        // server's, gone with the step, so nothing of it lands in what is built.
        let home = match self.sandbox {
            Some(_) => None,
            None => Some(tempfile::tempdir_in(&self.paths.tmp).map_err(|e| Failure::Spawn(e.to_string()))?),
        };
        if let Some(home) = &home {
            command.env("HOME", home.path()).env("TMPDIR", home.path());
        }
        if self.limits.network {
            // Builds fetch packages, through the machine's proxy where it has one.
            for name in [
                "HTTP_PROXY",
                "HTTPS_PROXY",
                "NO_PROXY",
                "http_proxy",
                "https_proxy",
                "no_proxy",
            ] {
                if let Ok(value) = std::env::var(name) {
                    command.env(name, value);
                }
            }
        } else {
            // Without a network, retrying only delays the answer.
            command
                .env("PIP_RETRIES", "0")
                .env("npm_config_fetch_retries", "0")
                .env("npm_config_offline", "true");
        }
        command
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let group = match &self.cgroups {
            Some(cgroups) => {
                let limits = Limits {
                    memory_bytes: Some(self.limits.memory_bytes),
                    cpu_millis: None,
                };
                let name = format!("{}-build", target.revision);
                Some(
                    cgroups
                        .create(&name, Some(target.namespace), limits)
                        .map_err(|e| Failure::Spawn(format!("making its cgroup: {e}")))?,
                )
            }
            None => None,
        };
        let result = self.watch(command, group.as_ref(), log);
        if let Some(group) = group {
            group.kill_all();
            group.remove();
        }
        result
    }

    /// Runs the command to its end or its time limit, its output captured.
    fn watch(&self, command: Command, group: Option<&InstanceCgroup>, log: &LogFile) -> Result<(), Failure> {
        let mut child = updraft_runtime::spawn_child(command, group).map_err(|e| Failure::Spawn(e.to_string()))?;
        let step = Step {
            log,
            tail: Arc::default(),
        };
        let timeout = self.limits.timeout;
        let status = std::thread::scope(|scope| {
            let stdout = child.stdout.take().map(|s| scope.spawn(|| step.capture(s)));
            let stderr = child.stderr.take().map(|s| scope.spawn(|| step.capture(s)));
            let deadline = Instant::now() + timeout;
            let status = loop {
                match child.try_wait() {
                    Ok(Some(status)) => break Some(status),
                    Ok(None) if Instant::now() >= deadline => {
                        let _ = nix::sys::signal::killpg(
                            nix::unistd::Pid::from_raw(child.id() as i32),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                        let _ = child.wait();
                        break None;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                    Err(_) => break None,
                }
            };
            for reader in [stdout, stderr].into_iter().flatten() {
                let _ = reader.join();
            }
            status
        });
        let tail: Vec<String> = step.tail.lock().unwrap_or_else(|p| p.into_inner()).drain(..).collect();
        match status {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(Failure::Exit(status, tail)),
            None => Err(Failure::Timeout(timeout, tail)),
        }
    }
}

impl Step<'_> {
    fn capture(&self, stream: impl Read) {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let mut tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
            if tail.len() == SHOWN_LINES {
                tail.pop_front();
            }
            tail.push_back(line.clone());
            drop(tail);
            self.log.write(BUILD_STREAM, line, false);
        }
    }
}

enum Failure {
    Spawn(String),
    Exit(std::process::ExitStatus, Vec<String>),
    Timeout(Duration, Vec<String>),
}

impl Failure {
    /// The deploy's error, with the likely reason: `limits` are what the build had.
    fn into_error(self, field: &str, limits: &BuildLimits) -> ApiError {
        let (what, tail, killed) = match self {
            Failure::Spawn(e) => (format!("the build could not start: {e}"), Vec::new(), false),
            Failure::Exit(status, tail) => {
                // A shell reports a child killed by SIGKILL as 128 + 9.
                let killed = status.signal() == Some(libc::SIGKILL) || status.code() == Some(137);
                (format!("the build failed ({status})"), tail, killed)
            }
            Failure::Timeout(limit, tail) => (format!("the build ran past its limit of {limit:?}"), tail, false),
        };
        let says = |signs: &[&str]| tail.iter().any(|l| signs.iter().any(|sign| l.contains(sign)));
        let offline = says(OFFLINE_SIGNS);
        let hint = if killed {
            format!(
                "; it was killed, most likely for using more than the builds' memory limit of {} bytes (server flag --build-memory)",
                limits.memory_bytes
            )
        } else if says(GO_FETCH_SIGNS) {
            "; Go modules are never fetched here: ship them in the package's vendor/ folder (go mod vendor)".to_string()
        } else if !limits.network {
            "; builds on this server have no network (server flag --build-network off), so one that needs the network to fetch packages fails: ship the dependencies in the package".to_string()
        } else if offline {
            "; it needs the network to fetch packages and could not reach it: check the machine's connection or proxy, or ship the dependencies in the package".to_string()
        } else {
            String::new()
        };
        let mut message = format!("{what}{hint}; its last lines (all of them: updraft logs NAME --build):");
        for line in tail {
            message.push_str("\n  ");
            message.push_str(&line);
        }
        ApiError::bad_request(field, message)
    }
}

fn too_big(field: &str, limit: u64) -> ApiError {
    ApiError::bad_request(
        field,
        format!("the build's output holds more than the limit of {limit} bytes"),
    )
}

fn write_file(dir: &Path, name: &str, text: &str) -> Result<(), ApiError> {
    std::fs::write(dir.join(name), text).map_err(ApiError::internal)
}

/// Gives a folder the server made, and what is in it, to the namespace's uid.
fn give(dir: &Path, identity: Identity) -> Result<(), ApiError> {
    for entry in walkdir::WalkDir::new(dir) {
        let entry = entry.map_err(ApiError::internal)?;
        std::os::unix::fs::lchown(entry.path(), Some(identity.uid), Some(identity.gid)).map_err(ApiError::internal)?;
    }
    Ok(())
}

/// Bytes of the regular files under `dir`.
fn disk_usage(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}
