//! HTTPS on the gateway and the API with the operator's certificate: HTTP/2 by ALPN,
//! the CLI trusting the certificate it is given and no other, and an API that other
//! machines could reach refused in the clear.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use common::*;

/// A private CA, and a certificate it signed for the loopback address and the
/// services' hosts: the server gets the certificate and key, clients the CA.
fn certificate(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let path = |name: &str| dir.join(name);
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    openssl(
        &[
            &["req", "-x509"][..],
            &new_key,
            &[
                "-days",
                "2",
                "-subj",
                "/CN=test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &new_key,
            &["-subj", "/CN=localhost", "-keyout", "key.pem", "-out", "leaf.csr"],
        ]
        .concat(),
    );
    std::fs::write(
        path("leaf.ext"),
        "subjectAltName=DNS:localhost,DNS:*.default.localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
        "-out",
        "cert.pem",
    ]);
    (path("ca.pem"), path("cert.pem"), path("key.pem"))
}

fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .unwrap()
}

struct TlsServer {
    child: Child,
    dir: tempfile::TempDir,
    api: String,
    gateway: u16,
    /// The CA clients are to trust.
    cert: PathBuf,
}

impl TlsServer {
    fn start() -> TlsServer {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = certificate(dir.path());
        let (gateway, api) = (free_port(), free_port());
        let child = Command::new(BIN)
            .args(["server", "--data-dir", "data"])
            .args(["--gateway-addr", &format!("127.0.0.1:{gateway}")])
            .args(["--api-addr", &format!("127.0.0.1:{api}")])
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .current_dir(dir.path())
            .stdout(std::fs::File::create(dir.path().join("out.log")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("err.log")).unwrap())
            .spawn()
            .unwrap();
        let server = TlsServer {
            child,
            api: format!("https://127.0.0.1:{api}"),
            gateway,
            cert: ca,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let health = curl(&[
                "--cacert",
                server.cert.to_str().unwrap(),
                &format!("{}/healthz", server.api),
            ]);
            // Up once it answers and has said so (it says so just after its listeners start).
            if health.stdout == b"ok\n" && server.log().contains("updraft is up") {
                return server;
            }
            assert!(Instant::now() < deadline, "no HTTPS health: {}", server.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        format!("{}{}", read("out.log"), read("err.log"))
    }

    fn token(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("data/admin.token"))
            .unwrap()
            .trim()
            .to_string()
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("UPDRAFT_API", &self.api)
            .env("UPDRAFT_TOKEN", self.token())
            .env("UPDRAFT_CONFIG", self.dir.path().join("contexts.yaml"))
            .output()
            .unwrap()
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- server log ----\n{}", self.log());
        }
    }
}

#[test]
fn the_gateway_and_the_api_serve_https_and_http2_with_the_given_certificate() {
    let server = TlsServer::start();
    let cert = server.cert.to_str().unwrap();
    let printed = server.log();
    assert!(printed.contains(&format!("API {}", server.api)), "{printed}");

    // The API speaks HTTP/2 to a client that offers it, HTTP/1.1 to one that does not.
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let out = curl(&[
            "--cacert",
            cert,
            flag,
            "-w",
            "%{http_version}",
            "-o",
            "/dev/null",
            &format!("{}/healthz", server.api),
        ]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            version,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The CLI trusts the certificate it is told to, and answers with https URLs.
    let component = wasm_component(server.dir.path());
    let out = server.cli(&[
        "deploy",
        "hello",
        "--wasm",
        component.to_str().unwrap(),
        "--ca-cert",
        cert,
        "-o",
        "json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let deployed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let url = deployed["url"].as_str().unwrap();
    assert_eq!(url, format!("https://hello.default.localhost:{}", server.gateway));

    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let out = curl(&[
            "--cacert",
            cert,
            flag,
            "--resolve",
            &format!("hello.default.localhost:{}:127.0.0.1", server.gateway),
            "-w",
            " %{http_version}",
            url,
        ]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("hello from wasm\n {version}"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Without the certificate the CLI does not trust the server, and says why.
    let out = server.cli(&["services"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
    // Plain HTTP gets no answer on a TLS port.
    let api_port = server.api.rsplit(':').next().unwrap();
    let plain = http(
        ([127, 0, 0, 1], api_port.parse().unwrap()).into(),
        "GET",
        "api",
        "/healthz",
        &[],
        b"",
    );
    assert!(plain.map(|r| r.status != 200).unwrap_or(true), "answered in the clear");

    // A context keeps the certificate it logged in with.
    let token_file = server.dir.path().join("data/admin.token");
    // Nothing but the saved context says where the API is and with which token.
    let config = server.dir.path().join("contexts.yaml");
    let bare = |args: &[&str]| cli_with_contexts(&config, server.dir.path(), args);
    let login = bare(&[
        "login",
        "--api",
        &server.api,
        "--token-file",
        token_file.to_str().unwrap(),
        "--ca-cert",
        cert,
    ]);
    assert!(login.status.success(), "{}", String::from_utf8_lossy(&login.stderr));
    let listed = bare(&["services", "-o", "json"]);
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
}

#[test]
fn an_api_other_machines_could_reach_is_not_served_in_the_clear() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["server", "--data-dir", "data"])
        .args(["--gateway-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--api-addr", &format!("0.0.0.0:{}", free_port())])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("without TLS") && stderr.contains("--tls-cert") && stderr.contains("--insecure"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("data/admin.token").exists(),
        "it stopped before writing anything"
    );

    let out = Command::new(BIN)
        .args([
            "server",
            "--tls-cert",
            "/nonexistent/cert.pem",
            "--tls-key",
            "/nonexistent/key.pem",
        ])
        .args(["--gateway-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--api-addr", &format!("127.0.0.1:{}", free_port())])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-cert /nonexistent/cert.pem"));
}

#[test]
fn a_custom_domain_is_served_with_the_certificate_from_its_secret() {
    let server = TlsServer::start();
    let ca = server.cert.to_str().unwrap();
    let dir = server.dir.path();
    // The domain's own certificate, self-signed: a client trusting only it can
    // connect only if the gateway presents it for that name.
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args(["-days", "2", "-subj", "/CN=secure.example.com"])
        .args(["-addext", "subjectAltName=DNS:secure.example.com"])
        .args(["-keyout", "site.key", "-out", "site.pem"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let ok = |out: Output| {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        out
    };
    let component = wasm_component(dir);
    ok(server.cli(&[
        "deploy",
        "hello",
        "--wasm",
        component.to_str().unwrap(),
        "--ca-cert",
        ca,
    ]));

    // A secret that is no certificate is refused when mapped.
    ok(server.cli(&[
        "secret",
        "create",
        "junk",
        "--from-literal",
        "tls.crt=x",
        "--from-literal",
        "tls.key=y",
        "--ca-cert",
        ca,
    ]));
    let junk = server.cli(&[
        "domain",
        "map",
        "secure.example.com",
        "--to",
        "hello",
        "--tls-secret",
        "junk",
        "--ca-cert",
        ca,
    ]);
    assert!(!junk.status.success());
    assert!(String::from_utf8_lossy(&junk.stderr).contains("tls_secret"), "{junk:?}");

    let site_pem = format!("tls.crt={}", dir.join("site.pem").display());
    let site_key = format!("tls.key={}", dir.join("site.key").display());
    ok(server.cli(&[
        "secret",
        "create",
        "site-cert",
        "--from-file",
        &site_pem,
        "--from-file",
        &site_key,
        "--ca-cert",
        ca,
    ]));
    ok(server.cli(&[
        "domain",
        "map",
        "secure.example.com",
        "--to",
        "hello",
        "--tls-secret",
        "site-cert",
        "--ca-cert",
        ca,
    ]));

    let resolve = format!("secure.example.com:{}:127.0.0.1", server.gateway);
    let url = format!("https://secure.example.com:{}/", server.gateway);
    let site = dir.join("site.pem");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = curl(&["--cacert", site.to_str().unwrap(), "--resolve", &resolve, &url]);
        if out.stdout == b"hello from wasm\n" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The server's own certificate is not what that name gets.
    let with_server_ca = curl(&["--cacert", ca, "--resolve", &resolve, &url]);
    assert!(!with_server_ca.status.success(), "{with_server_ca:?}");
}
