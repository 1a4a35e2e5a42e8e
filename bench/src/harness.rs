//! The `updraft` server as a benchmark drives it: started on free loopback ports with
//! its own data directory, and its CLI.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// One HTTP/1.0 GET; returns the status.
pub fn get(addr: SocketAddr, host: &str, path: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(600)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    let text = String::from_utf8_lossy(&reply);
    Ok(text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0))
}

pub struct Server {
    child: Child,
    pub api: String,
    pub gateway: SocketAddr,
    /// The admin token the server wrote at its start; none from a server older than
    /// tokens, which takes requests without one.
    token: Option<String>,
    _data: tempfile::TempDir,
    logs: tempfile::TempDir,
}

/// How a benchmark starts a server beyond its defaults.
#[derive(Default)]
pub struct ServerOptions<'a> {
    /// Server flags by their env names.
    pub env: &'a [(&'a str, &'a str)],
    /// The open-file limit (soft and hard) the server starts under, as `ulimit -n`.
    pub open_files: Option<u64>,
}

impl Server {
    pub fn start(updraft: &Path) -> anyhow::Result<Server> {
        Self::start_with(updraft, ServerOptions::default())
    }

    /// A server with extra environment (server flags by their env names).
    pub fn start_with_env(updraft: &Path, env: &[(&str, &str)]) -> anyhow::Result<Server> {
        Self::start_with(updraft, ServerOptions { env, open_files: None })
    }

    pub fn start_with(updraft: &Path, options: ServerOptions) -> anyhow::Result<Server> {
        use std::os::unix::process::CommandExt;
        let data = tempfile::tempdir()?;
        let logs = tempfile::tempdir()?;
        let log = std::fs::File::create(logs.path().join("server.log"))?;
        let gateway: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let api_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let mut command = Command::new(updraft);
        if let Some(limit) = options.open_files {
            // SAFETY: setrlimit is async-signal-safe.
            unsafe {
                command.pre_exec(move || {
                    let limit = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = command
            .args(["server", "--data-dir"])
            .arg(data.path())
            .args([
                "--gateway-addr",
                &gateway.to_string(),
                "--api-addr",
                &api_addr.to_string(),
            ])
            .args([
                "--activator-timeout",
                "600s",
                "--ready-timeout",
                "600s",
                "--stop-grace",
                "2s",
            ])
            .env("UPDRAFT_LOG", "warn")
            .envs(options.env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", updraft.display()))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while get(api_addr, "api", "/healthz").ok() != Some(200) {
            if Instant::now() > deadline {
                bail!(
                    "updraft server did not come up: {}",
                    std::fs::read_to_string(logs.path().join("server.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Written before the API answers its first request.
        let token = std::fs::read_to_string(data.path().join("admin.token"))
            .ok()
            .map(|t| t.trim().to_string());
        Ok(Server {
            child,
            api: format!("http://{api_addr}"),
            gateway,
            token,
            _data: data,
            logs,
        })
    }

    /// Where the server's log (its stderr) goes.
    pub fn log_path(&self) -> std::path::PathBuf {
        self.logs.path().join("server.log")
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &Path {
        self._data.path()
    }

    pub fn token(&self) -> Option<String> {
        self.token.clone()
    }

    /// The header line that authenticates a raw request, or nothing.
    pub fn authorization(&self) -> String {
        self.token()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default()
    }

    /// A CLI command pointed at this server, with its token.
    pub fn command(&self, updraft: &Path) -> Command {
        let mut command = Command::new(updraft);
        command.env("UPDRAFT_API", &self.api);
        if let Some(token) = self.token() {
            command.env("UPDRAFT_TOKEN", token);
        }
        command
    }

    pub fn cli(&self, updraft: &Path, args: &[&str]) -> anyhow::Result<String> {
        let out = self.command(updraft).args(args).output()?;
        if !out.status.success() {
            bail!("updraft {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Stops the server on every way out, errors included: a benchmark that fails must
/// not leave it running.
impl Drop for Server {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}
