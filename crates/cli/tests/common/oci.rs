//! OCI images built by the tests themselves (an image layout written byte by byte),
//! and a real registry (Debian's `docker-registry`) to push them to with `skopeo`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{fixtures, free_port, http, run};

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// One entry of a layer tar.
pub enum Item<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    /// A path written into the header as is, bypassing tar's own checks.
    RawFile(&'a str),
}

pub fn layer(items: &[Item]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for item in items {
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_700_000_000);
        match item {
            Item::File(path, body, mode) => {
                header.set_size(body.len() as u64);
                header.set_mode(*mode);
                header.set_entry_type(tar::EntryType::Regular);
                builder.append_data(&mut header, path, *body).unwrap();
            }
            Item::Dir(path) => {
                header.set_size(0);
                header.set_mode(0o755);
                header.set_entry_type(tar::EntryType::Directory);
                builder.append_data(&mut header, path, &b""[..]).unwrap();
            }
            Item::Symlink(path, target) => {
                header.set_size(0);
                header.set_mode(0o777);
                header.set_entry_type(tar::EntryType::Symlink);
                builder.append_link(&mut header, path, target).unwrap();
            }
            Item::RawFile(path) => {
                header.set_size(1);
                header.set_mode(0o644);
                header.set_entry_type(tar::EntryType::Regular);
                let name = &mut header.as_gnu_mut().unwrap().name;
                name[..path.len()].copy_from_slice(path.as_bytes());
                header.set_cksum();
                builder.append(&header, &b"x"[..]).unwrap();
            }
        }
    }
    builder.into_inner().unwrap()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// What goes into an image layout.
pub struct ImageSpec {
    /// Uncompressed layer tars, lowest first.
    pub layers: Vec<Vec<u8>>,
    /// The config's `config` section (Entrypoint, Cmd, Env, WorkingDir, User).
    pub config: serde_json::Value,
    pub architecture: String,
    /// The media type written for every layer, compressed as its suffix says.
    pub layer_media_type: String,
    /// Replaces each stored layer blob after hashing (to fake a corrupt registry).
    pub tamper: Option<fn(Vec<u8>) -> Vec<u8>>,
    /// Hashes the tampered bytes instead, so the digest matches a damaged layer.
    pub digest_after_tamper: bool,
}

impl ImageSpec {
    pub fn new(layers: Vec<Vec<u8>>, config: serde_json::Value) -> Self {
        ImageSpec {
            layers,
            config,
            architecture: "amd64".into(),
            layer_media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            tamper: None,
            digest_after_tamper: false,
        }
    }
}

fn write_blob(dir: &Path, bytes: &[u8], digest: &str) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(blobs.join(digest.trim_start_matches("sha256:")), bytes).unwrap();
}

/// Writes an OCI image layout into `dir`; returns the manifest digest.
pub fn write_layout(dir: &Path, spec: &ImageSpec) -> String {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    for raw in &spec.layers {
        diff_ids.push(sha256(raw));
        let stored = if spec.layer_media_type.ends_with("+gzip") {
            gzip(raw)
        } else if spec.layer_media_type.ends_with("+zstd") {
            ruzstd::encoding::compress_to_vec(&raw[..], ruzstd::encoding::CompressionLevel::Fastest)
        } else {
            raw.clone()
        };
        let (hashed, written) = match spec.tamper {
            Some(tamper) if spec.digest_after_tamper => {
                let t = tamper(stored);
                (t.clone(), t)
            }
            Some(tamper) => (stored.clone(), tamper(stored)),
            None => (stored.clone(), stored),
        };
        let digest = sha256(&hashed);
        write_blob(dir, &written, &digest);
        descriptors.push(serde_json::json!({
            "mediaType": spec.layer_media_type, "digest": digest, "size": hashed.len()
        }));
    }
    let config = serde_json::json!({
        "architecture": spec.architecture,
        "os": "linux",
        "config": spec.config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_digest = sha256(&config_bytes);
    write_blob(dir, &config_bytes, &config_digest);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_bytes.len()},
        "layers": descriptors,
    });
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    let manifest_digest = sha256(&manifest_bytes);
    write_blob(dir, &manifest_bytes, &manifest_digest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_bytes.len(),
            "platform": {"architecture": spec.architecture, "os": "linux"},
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    manifest_digest
}

/// A multi-platform image: `index.json` names an image index holding an arm64 and an
/// amd64 manifest, as `docker buildx` writes them. Returns the amd64 manifest's digest.
pub fn write_multi_platform_layout(dir: &Path) -> String {
    let read_entry = || -> serde_json::Value {
        let index: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
        index["manifests"][0].clone()
    };
    let mut arm = ImageSpec::new(test_layers(), test_config());
    arm.architecture = "arm64".into();
    write_layout(dir, &arm);
    let arm_entry = read_entry();
    let amd64 = write_layout(dir, &ImageSpec::new(test_layers(), test_config()));
    let amd64_entry = read_entry();
    let nested = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [arm_entry, amd64_entry],
    });
    let bytes = serde_json::to_vec(&nested).unwrap();
    let digest = sha256(&bytes);
    write_blob(dir, &bytes, &digest);
    let top = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": digest,
            "size": bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    amd64
}

/// The container fixture (`fixtures/container/server.c`) built once as a static binary.
pub fn server_binary() -> &'static [u8] {
    static BINARY: OnceLock<Vec<u8>> = OnceLock::new();
    BINARY.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("server");
        run(Command::new("gcc")
            .args(["-static", "-O2", "-o"])
            .arg(&out)
            .arg(fixtures().join("container/server.c")));
        std::fs::read(out).unwrap()
    })
}

/// The test image's layers: a base with users and files the top layer deletes (a
/// whiteout and an opaque directory), then the server.
pub fn test_layers() -> Vec<Vec<u8>> {
    let base = layer(&[
        Item::Dir("etc"),
        Item::File(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
            0o644,
        ),
        Item::File("etc/group", b"root:x:0:\napp:x:1000:\n", 0o644),
        Item::File("etc/removed", b"deleted by the next layer", 0o644),
        Item::Dir("opt"),
        Item::Dir("opt/old"),
        Item::File("opt/old/file", b"hidden by an opaque directory", 0o644),
        Item::Dir("home"),
        Item::Dir("home/app"),
    ]);
    let top = layer(&[
        Item::File("server", server_binary(), 0o755),
        Item::File("etc/.wh.removed", b"", 0o644),
        Item::Dir("opt/old"),
        Item::File("opt/old/.wh..wh..opq", b"", 0o644),
        Item::File("opt/old/new", b"new", 0o644),
    ]);
    vec![base, top]
}

pub fn test_config() -> serde_json::Value {
    serde_json::json!({
        "Entrypoint": ["/server"],
        "Cmd": ["from-cmd"],
        "Env": ["GREETING=from-image", "PATH=/usr/bin:/bin"],
        "WorkingDir": "/opt",
        "User": "app",
    })
}

/// The test image as a layout in `dir`; returns its manifest digest.
pub fn test_image(dir: &Path) -> String {
    write_layout(dir, &ImageSpec::new(test_layers(), test_config()))
}

/// How a test registry authenticates.
pub enum Auth<'a> {
    None,
    /// HTTP basic auth against an htpasswd file.
    Basic(&'a str, &'a str),
    /// Docker's token auth: a token service (`fixtures/container/token_server.py`) checks
    /// the credentials and signs bearer tokens the registry verifies.
    Bearer(&'a str, &'a str),
}

/// A real registry on a free loopback port.
pub struct Registry {
    child: Child,
    token_service: Option<Child>,
    dir: tempfile::TempDir,
    pub host: String,
    credentials: Option<(String, String)>,
}

fn wait_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Registry {
    pub fn start(auth: Auth) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {host}\n",
            dir.path().join("storage").display()
        );
        let mut token_service = None;
        let credentials = match auth {
            Auth::None => None,
            Auth::Basic(user, password) => {
                let htpasswd = Command::new("htpasswd")
                    .args(["-Bbn", user, password])
                    .output()
                    .unwrap();
                assert!(htpasswd.status.success(), "htpasswd (apache2-utils) failed");
                std::fs::write(dir.path().join("htpasswd"), htpasswd.stdout).unwrap();
                config.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: updraft-test\n    path: {}\n",
                    dir.path().join("htpasswd").display()
                ));
                Some((user.to_string(), password.to_string()))
            }
            Auth::Bearer(user, password) => {
                let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
                run(Command::new("openssl")
                    .args([
                        "req",
                        "-x509",
                        "-newkey",
                        "rsa:2048",
                        "-nodes",
                        "-days",
                        "1",
                        "-subj",
                        "/CN=token",
                    ])
                    .arg("-keyout")
                    .arg(&key)
                    .arg("-out")
                    .arg(&cert));
                let token_port = free_port();
                token_service = Some(
                    Command::new("python3")
                        .arg(fixtures().join("container/token_server.py"))
                        .arg(token_port.to_string())
                        .args([&key, &cert])
                        .args([user, password, "updraft-test", "updraft-test-issuer"])
                        .stdout(Stdio::null())
                        .spawn()
                        .unwrap(),
                );
                wait_listening(token_port, "the token service");
                config.push_str(&format!(
                    "auth:\n  token:\n    realm: http://127.0.0.1:{token_port}/token\n    service: updraft-test\n    issuer: updraft-test-issuer\n    rootcertbundle: {}\n",
                    cert.display()
                ));
                Some((user.to_string(), password.to_string()))
            }
        };
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("registry.log")).unwrap())
            .spawn()
            .expect("start docker-registry (the test script installs Debian's docker-registry)");
        let addr: SocketAddr = host.parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http(addr, "GET", &host, "/v2/", &[], b"") {
                if r.status == 200 || r.status == 401 {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "docker-registry did not come up on {host}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry {
            child,
            token_service,
            dir,
            host,
            credentials,
        }
    }

    /// Pushes an image layout to `name:tag` with skopeo.
    pub fn push(&self, layout: &Path, name_tag: &str) {
        let policy = self.dir.path().join("policy.json");
        std::fs::write(&policy, r#"{"default":[{"type":"insecureAcceptAnything"}]}"#).unwrap();
        let mut cmd = Command::new("skopeo");
        cmd.arg("--policy")
            .arg(&policy)
            .args(["copy", "--all", "--quiet", "--dest-tls-verify=false"]);
        if let Some((user, password)) = &self.credentials {
            cmd.arg("--dest-creds").arg(format!("{user}:{password}"));
        }
        cmd.arg(format!("oci:{}", layout.display()))
            .arg(format!("docker://{}/{name_tag}", self.host));
        run(&mut cmd);
    }

    pub fn reference(&self, name_tag: &str) -> String {
        format!("{}/{name_tag}", self.host)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        for child in std::iter::once(&mut self.child).chain(self.token_service.as_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Containers runc lists under a server's data directory: (id, init pid).
pub fn runc_containers(data: &Path) -> Vec<(String, u32)> {
    let out = Command::new("runc")
        .arg("--root")
        .arg(data.join("containers/state"))
        .args(["list", "--format", "json"])
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    listed
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["status"] == "running")
        .map(|c| (c["id"].as_str().unwrap().to_string(), c["pid"].as_u64().unwrap() as u32))
        .collect()
}

/// Unpacked images and staging left in a server's image store.
pub fn image_store_entries(data: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let list = |dir: PathBuf| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    (list(data.join("images/images")), list(data.join("images/tmp")))
}
