//! Test harness: the real `updraft` binary on free loopback ports with its own data
//! directory, a plain HTTP/1.0 client, and builders for the fixture apps.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_updraft");

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Server {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    pub gateway: SocketAddr,
    pub api: String,
    extra: Vec<String>,
    port_retries: u32,
}

pub struct CliOut {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Server {
    pub fn start(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut server = Server {
            child: None,
            dir,
            data,
            gateway: SocketAddr::from(([127, 0, 0, 1], free_port())),
            api: format!("http://127.0.0.1:{}", free_port()),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            port_retries: 0,
        };
        server.launch();
        server
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .unwrap();
        let api_addr = self.api.trim_start_matches("http://").to_string();
        // Relative, as `updraft server` is used by default (`.updraft`).
        let child = Command::new(BIN)
            .current_dir(self.dir.path())
            .args(["server", "--data-dir", "data"])
            .args([
                "--gateway-addr",
                &self.gateway.to_string(),
                "--api-addr",
                &api_addr,
                "--stop-grace",
                "2s",
            ])
            .args(&self.extra)
            .env("UPDRAFT_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start updraft server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let api: SocketAddr = api_addr.parse().unwrap();
        loop {
            if let Ok(r) = http(api, "GET", "ignored", "/healthz", &[], b"") {
                if r.status == 200 {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                // A free port can be taken by another test between finding it and the
                // server binding it: pick new ones and start again.
                if self.log().contains("Address already in use") && self.port_retries < 3 {
                    self.port_retries += 1;
                    self.gateway = SocketAddr::from(([127, 0, 0, 1], free_port()));
                    self.api = format!("http://127.0.0.1:{}", free_port());
                    return self.launch();
                }
                panic!("server exited with {status}: {}", self.log());
            }
            assert!(Instant::now() < deadline, "server did not come up: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Waits (bounded) until the server's log contains `text`.
    pub fn wait_log(&self, text: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(text) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn kill9(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, and wait (bounded) for the server to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("server did not exit after SIGTERM: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn restart(&mut self) {
        self.launch();
    }

    /// The admin token the server wrote at its first start.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data.join("admin.token"))
            .unwrap_or_else(|e| panic!("no admin token: {e}\n{}", self.log()))
            .trim()
            .to_string()
    }

    /// A CLI command, pointed at this server with its admin token; the user's own
    /// contexts are kept out.
    pub fn command(&self) -> Command {
        let mut command = Command::new(BIN);
        command
            .env("UPDRAFT_API", &self.api)
            .env("UPDRAFT_TOKEN", self.admin_token())
            .env("UPDRAFT_CONFIG", self.dir.path().join("contexts.yaml"));
        command
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api.trim_start_matches("http://").parse().unwrap()
    }

    /// One request to the API with the admin token.
    pub fn api_call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        self.api_as(&self.admin_token(), method, path, headers, body)
    }

    /// One request to the API with `token` (empty: none).
    pub fn api_as(&self, token: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        let bearer = format!("Bearer {token}");
        let mut all = headers.to_vec();
        if !token.is_empty() {
            all.push(("Authorization", &bearer));
        }
        http(self.api_addr(), method, "api", path, &all, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log()))
    }

    pub fn cli(&self, args: &[&str]) -> CliOut {
        let out = self.command().args(args).stdin(Stdio::null()).output().unwrap();
        CliOut {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs a command that must succeed and prints JSON.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.cli(&all);
        assert_eq!(out.code, 0, "updraft {args:?} failed: {}\n{}", out.stderr, self.log());
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", out.stdout))
    }

    pub fn deploy(&self, name: &str, path: &Path, extra: &[&str]) -> serde_json::Value {
        let mut args = vec!["deploy", name, path.to_str().unwrap()];
        args.extend(extra);
        self.json(&args)
    }

    pub fn host(service: &str) -> String {
        format!("{service}.default.localhost")
    }

    pub fn get(&self, service: &str, path: &str) -> Resp {
        http(self.gateway, "GET", &Self::host(service), path, &[], b"")
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.log()))
    }

    pub fn request(
        &self,
        method: &str,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Resp> {
        http(self.gateway, method, host, path, headers, body)
    }

    /// Polls `updraft service NAME` until `done` holds, also while the service does
    /// not exist yet (bounded).
    pub fn wait_service(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.cli(&["service", name, "--output", "json"]);
            if out.code == 0 {
                let service: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
                if done(&service) {
                    return service;
                }
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {} {}\n{}",
                out.stdout,
                out.stderr,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.terminate();
        }
        if std::thread::panicking() {
            eprintln!("---- server log ----\n{}", self.log());
        }
    }
}

/// One HTTP/1.0 exchange: the server closes the connection after the response, so the
/// body is everything up to EOF.
pub fn http(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Resp> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(90)))?;
    let mut request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {host}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("malformed response: {text:?}")))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Resp {
        status,
        headers,
        body: body.to_string(),
    })
}

/// The CLI with nothing but the contexts file at `config` to say which API and token
/// to use (no `UPDRAFT_API`, no `UPDRAFT_TOKEN`), run in `cwd`.
pub fn cli_with_contexts(config: &Path, cwd: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env_remove("UPDRAFT_API")
        .env_remove("UPDRAFT_TOKEN")
        .env("UPDRAFT_CONFIG", config)
        .current_dir(cwd)
        .output()
        .unwrap()
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A copy of a fixture app in a fresh directory, which the test may change.
pub fn fixture(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join(name);
    copy_dir(&fixtures().join(name), &app);
    (dir, app)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

pub fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Java fixture compiled into a folder holding only `app.jar`.
pub fn java_app() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let classes = dir.path().join("classes");
    run(Command::new("javac")
        .arg("-d")
        .arg(&classes)
        .arg(fixtures().join("java/Hello.java")));
    let app = dir.path().join("app");
    std::fs::create_dir(&app).unwrap();
    run(Command::new("jar")
        .args(["--create", "--file"])
        .arg(app.join("app.jar"))
        .args(["--main-class", "Hello", "-C"])
        .arg(&classes)
        .arg("."));
    (dir, app)
}

/// The C fixture built as a static binary, with its updraft.yaml.
pub fn static_app() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app");
    std::fs::create_dir(&app).unwrap();
    run(Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(app.join("server"))
        .arg(fixtures().join("static/server.c")));
    std::fs::copy(fixtures().join("static/updraft.yaml"), app.join("updraft.yaml")).unwrap();
    (dir, app)
}

/// Whether a process is alive: one of its threads exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    // Alive while any thread is: a process's leader turns zombie before its other
    // threads finish exiting, and the sockets they share (its listener) close only
    // with the last of them.
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    threads.flatten().any(|thread| {
        std::fs::read_to_string(thread.path().join("stat"))
            .is_ok_and(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
    })
}

/// Waits (bounded) until none of the pids is alive.
pub fn wait_dead(pids: &[u32], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if pids.iter().all(|p| !alive(*p)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Pids of the instances a service description lists.
pub fn instance_pids(service: &serde_json::Value) -> Vec<u32> {
    service["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r["instances"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["pid"].as_u64().unwrap() as u32)
        })
        .collect()
}

pub fn ready(service: &serde_json::Value) -> u64 {
    service["ready_instances"].as_u64().unwrap()
}

/// The `EVENTS_SOCKET` for an app that is to record what it receives in `file`: the
/// name of an abstract Unix socket this test listens on. A sandboxed app can write no
/// file the test could read, and reach no loopback port but the gateway's, so it
/// sends each record here and waits for the test to have appended it.
pub fn record_events(file: &Path) -> String {
    use std::os::linux::net::SocketAddrExt;
    static RECORDERS: std::sync::Mutex<Vec<(PathBuf, String)>> = std::sync::Mutex::new(Vec::new());
    let mut recorders = RECORDERS.lock().unwrap();
    if let Some((_, name)) = recorders.iter().find(|(f, _)| f == file) {
        return name.clone();
    }
    let name = format!("updraft-test-events-{}-{}", std::process::id(), recorders.len());
    let address = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
    let listener = std::os::unix::net::UnixListener::bind_addr(&address).unwrap();
    let path = file.to_path_buf();
    std::thread::spawn(move || {
        for connection in listener.incoming() {
            let Ok(mut connection) = connection else { continue };
            let mut record = Vec::new();
            let mut byte = [0u8; 1];
            // One line per connection; the reply says it is on disk.
            while connection.read(&mut byte).is_ok_and(|n| n == 1) && byte[0] != b'\n' {
                record.push(byte[0]);
            }
            record.push(b'\n');
            let mut out = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap();
            out.write_all(&record).unwrap();
            let _ = connection.write_all(b"ok\n");
        }
    });
    recorders.push((file.to_path_buf(), name.clone()));
    name
}

/// CloudEvents the python fixture recorded through [`record_events`], one JSON object
/// each.
pub fn recorded_events(file: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Waits (bounded) until the recorded events satisfy `done`; returns them.
pub fn wait_events(
    file: &Path,
    what: &str,
    timeout: Duration,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let events = recorded_events(file);
        if done(&events) {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; recorded: {events:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A real `nats-server` with JetStream on a free loopback port, stopped on drop.
pub struct Nats {
    child: Child,
    _dir: tempfile::TempDir,
    pub url: String,
}

impl Nats {
    pub fn start() -> Nats {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server (the test script installs Debian's nats-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Nats {
            child,
            _dir: dir,
            url: format!("nats://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test component (`crates/wasm-fixture`) written into `dir`.
pub fn wasm_component(dir: &Path) -> PathBuf {
    updraft_wasm_fixture::write_handler_component(dir).unwrap_or_else(|e| panic!("building the test component: {e}"))
}
pub mod oci;

/// Pids of the processes whose environment holds `KEY=VALUE` (instances carry
/// `UPDRAFT_SERVICE` and `UPDRAFT_REVISION`), wherever they came from.
pub fn processes_with_env(pair: &str) -> Vec<u32> {
    let needle = pair.as_bytes();
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == needle))
        })
        .filter(|pid| alive(*pid))
        .collect();
    pids.sort();
    pids
}

/// An app made of the given files (name, contents) in a fresh directory.
pub fn app_of(files: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app");
    std::fs::create_dir(&app).unwrap();
    for (name, contents) in files {
        std::fs::write(app.join(name), contents).unwrap();
    }
    (dir, app)
}

/// The folder `scripts/test` installs the tests' Python packages into (the CloudEvents
/// SDK, prometheus-client), for `PYTHONPATH`.
pub fn python_test_deps() -> PathBuf {
    let deps = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.test-deps/python");
    assert!(
        deps.join(".requirements").exists(),
        "{} is missing: scripts/test installs the Python packages the tests use (scripts/test-requirements.txt)",
        deps.display()
    );
    deps.canonicalize().unwrap()
}

/// A message system's server from Debian's packages, on free loopback ports, killed
/// (with its process group) on drop.
pub struct Daemon {
    child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
    on_drop: Vec<String>,
}

impl Daemon {
    fn spawn(mut command: Command, what: &str, port: u16, dir: tempfile::TempDir, timeout: Duration) -> Daemon {
        use std::os::unix::process::CommandExt;
        let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
        let child = command
            .process_group(0)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {what} (the test script installs it): {e}"));
        let deadline = Instant::now() + timeout;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
            assert!(Instant::now() < deadline, "{what} did not listen on {port}: {log}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Daemon {
            child,
            dir,
            port,
            on_drop: Vec::new(),
        }
    }

    /// RabbitMQ with its own node name, Erlang port mapper and data folder.
    pub fn rabbitmq() -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let (port, dist, epmd) = (free_port(), free_port(), free_port());
        std::fs::write(dir.path().join("plugins"), "[].").unwrap();
        let root = dir.path().to_str().unwrap().to_string();
        let mut command = Command::new("/usr/lib/rabbitmq/bin/rabbitmq-server");
        command
            .env("HOME", &root)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", dist.to_string())
            .env("ERL_EPMD_PORT", epmd.to_string())
            .env("RABBITMQ_NODENAME", format!("rabbit-{port}@localhost"))
            .env("RABBITMQ_MNESIA_BASE", format!("{root}/mnesia"))
            .env("RABBITMQ_LOG_BASE", format!("{root}/log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", format!("{root}/plugins"))
            .env("RABBITMQ_CONFIG_FILE", format!("{root}/rabbitmq"))
            .env("RABBITMQ_PID_FILE", format!("{root}/pid"));
        let mut daemon = Daemon::spawn(command, "rabbitmq-server", port, dir, Duration::from_secs(90));
        // The Erlang port mapper detaches from the server; stop it by its port.
        daemon.on_drop.push(format!("epmd -port {epmd} -kill"));
        daemon
    }

    pub fn redis() -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut command = Command::new("redis-server");
        command
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir.path());
        Daemon::spawn(command, "redis-server", port, dir, Duration::from_secs(20))
    }

    pub fn mosquitto() -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("mosquitto.conf");
        std::fs::write(
            &config,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 10000\nlog_dest stderr\nlog_type notice\nlog_type information\n"),
        )
        .unwrap();
        let mut command = Command::new("/usr/sbin/mosquitto");
        command.arg("-c").arg(&config);
        Daemon::spawn(command, "mosquitto", port, dir, Duration::from_secs(20))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.wait();
        for command in &self.on_drop {
            let _ = Command::new("sh")
                .args(["-c", command])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
