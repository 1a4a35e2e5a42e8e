//! Where blobs come from: a registry (through `oci-client`), an OCI image layout on
//! disk, or the files of a `docker save` archive. Every byte is hashed on its way
//! into the store.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWrite;

use super::{
    sha256_hex, Image, ImageError, ImageStore, ARCHITECTURE, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, OS,
};

/// Attempts at a registry that does not answer, with doubling pauses from 200 ms.
const REGISTRY_ATTEMPTS: u32 = 3;

/// How far one blob has come, for progress bars.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    /// `config`, `layer 2/5`.
    pub what: String,
    pub digest: String,
    pub done: u64,
    pub total: u64,
    /// Already in the store: nothing was transferred.
    pub cached: bool,
}

pub enum BlobSource<'a> {
    Registry {
        client: Client,
        reference: &'a Reference,
    },
    /// An OCI image layout: `blobs/<algorithm>/<hex>`.
    Layout(&'a Path),
    /// Blobs by digest, as a `docker save` archive holds them.
    Files(HashMap<String, PathBuf>),
}

/// Writes to a file while hashing and reporting progress.
struct Verifying<'p> {
    file: tokio::fs::File,
    hasher: Sha256,
    done: u64,
    total: u64,
    what: &'p str,
    digest: &'p str,
    progress: &'p (dyn Fn(Progress) + Send + Sync),
    last_report: u64,
}

impl Verifying<'_> {
    fn report(&mut self, force: bool) {
        // Every 256 KiB is plenty for a progress bar.
        if force || self.done - self.last_report >= 256 * 1024 {
            self.last_report = self.done;
            (self.progress)(Progress {
                what: self.what.to_string(),
                digest: self.digest.to_string(),
                done: self.done,
                total: self.total,
                cached: false,
            });
        }
    }

    fn finish(mut self) -> String {
        self.report(true);
        format!("sha256:{}", hex::encode(self.hasher.finalize()))
    }
}

impl AsyncWrite for Verifying<'_> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.file).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                this.hasher.update(&buf[..n]);
                this.done += n as u64;
                this.report(false);
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.file).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.file).poll_shutdown(cx)
    }
}

impl BlobSource<'_> {
    /// Writes the blob to `staged`; returns the digest of what was written.
    pub(super) async fn fetch(
        &self,
        digest: &str,
        size: u64,
        what: &str,
        staged: &Path,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<String, ImageError> {
        let mut out = Verifying {
            file: tokio::fs::File::create(staged).await?,
            hasher: Sha256::new(),
            done: 0,
            total: size,
            what,
            digest,
            progress,
            last_report: 0,
        };
        match self {
            BlobSource::Registry { client, reference } => {
                let registry = reference.resolve_registry().to_string();
                // The manifest just came from this registry, so a blob is not retried:
                // a failure now is the registry's answer, not a missing route to it.
                client
                    .pull_blob(reference, digest, &mut out)
                    .await
                    .map_err(|e| registry_error(&registry, reference, e))?;
            }
            BlobSource::Layout(dir) => {
                let (algorithm, hex) = digest.split_once(':').unwrap_or(("", digest));
                copy_into(&dir.join("blobs").join(algorithm).join(hex), digest, &mut out).await?;
            }
            BlobSource::Files(files) => {
                let path = files
                    .get(digest)
                    .ok_or_else(|| ImageError::Invalid(format!("blob {digest} is not in the archive")))?;
                copy_into(path, digest, &mut out).await?;
            }
        }
        use tokio::io::AsyncWriteExt;
        out.flush().await?;
        out.file.sync_all().await?;
        Ok(out.finish())
    }
}

async fn copy_into(path: &Path, digest: &str, out: &mut Verifying<'_>) -> Result<(), ImageError> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| ImageError::Invalid(format!("blob {digest} is missing from the layout: {e}")))?;
    tokio::io::copy(&mut file, out).await?;
    Ok(())
}

/// Runs a registry call, again after a pause when the registry cannot be reached.
async fn retry<T, F, Fut>(registry: &str, reference: &Reference, call: F) -> Result<T, ImageError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, OciDistributionError>>,
{
    let mut call = call;
    let mut pause = Duration::from_millis(200);
    for attempt in 1..=REGISTRY_ATTEMPTS {
        match call().await {
            Ok(value) => return Ok(value),
            Err(OciDistributionError::RequestError(e)) if e.is_connect() || e.is_timeout() => {
                if attempt == REGISTRY_ATTEMPTS {
                    return Err(ImageError::Unreachable {
                        registry: registry.to_string(),
                        attempts: REGISTRY_ATTEMPTS,
                        reason: error_chain(&e),
                    });
                }
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            Err(e) => return Err(registry_error(registry, reference, e)),
        }
    }
    unreachable!("the last attempt returns")
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

fn registry_error(registry: &str, reference: &Reference, e: OciDistributionError) -> ImageError {
    let not_found = |reason: String| ImageError::NotFound {
        reference: reference.whole(),
        reason,
    };
    let unauthorized = |reason: String| ImageError::Unauthorized {
        registry: registry.to_string(),
        reason,
    };
    match e {
        OciDistributionError::ImageManifestNotFoundError(reason) => not_found(reason),
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            let reason = envelope.to_string();
            if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown | OciErrorCode::NotFound
                )
            }) {
                not_found(reason)
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                unauthorized(reason)
            } else {
                ImageError::Registry {
                    registry: registry.to_string(),
                    reason,
                }
            }
        }
        OciDistributionError::ServerError { code: 404, message, .. } => not_found(message),
        OciDistributionError::UnauthorizedError { url } => unauthorized(format!("401 from {url}")),
        OciDistributionError::AuthenticationFailure(reason) => unauthorized(reason),
        OciDistributionError::DigestError(e) => ImageError::DigestMismatch {
            what: format!("a blob of {}", reference.whole()),
            expected: String::new(),
            actual: e.to_string(),
        },
        other => ImageError::Registry {
            registry: registry.to_string(),
            reason: error_chain(&other),
        },
    }
}

/// Loopback registries are spoken to over plain HTTP; every other over HTTPS.
fn is_loopback(registry: &str) -> bool {
    let host = registry
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(registry, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The manifest for this platform among an index's entries.
fn choose_platform(index: &oci_spec::image::ImageIndex) -> Result<oci_spec::image::Descriptor, ImageError> {
    let mut seen = Vec::new();
    for entry in index.manifests() {
        match entry.platform() {
            Some(p) => {
                let name = format!("{}/{}", p.os(), p.architecture());
                if name == format!("{OS}/{ARCHITECTURE}") {
                    return Ok(entry.clone());
                }
                seen.push(name);
            }
            None => return Ok(entry.clone()),
        }
    }
    Err(ImageError::WrongPlatform {
        found: if seen.is_empty() {
            "no platform (the index is empty)".into()
        } else {
            seen.join(", ")
        },
    })
}

fn parse_index(bytes: &[u8], what: &str) -> Result<oci_spec::image::ImageIndex, ImageError> {
    oci_spec::image::ImageIndex::from_reader(bytes).map_err(|e| ImageError::Invalid(format!("{what}: {e}")))
}

fn is_index(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(bytes).is_ok_and(|v| {
        matches!(v["mediaType"].as_str(), Some(OCI_INDEX | DOCKER_LIST))
            || (v.get("manifests").is_some() && v.get("layers").is_none())
    })
}

impl ImageStore {
    /// Pulls `reference` (`127.0.0.1:5000/web:1.2`, `ghcr.io/org/app@sha256:…`):
    /// through an index to the linux/amd64 manifest, then what is not stored yet.
    pub async fn pull(
        &self,
        reference: &str,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<Image, ImageError> {
        self.pull_with(reference, None, progress).await
    }

    /// [`ImageStore::pull`] with these credentials (user, password) instead of the
    /// stored ones for its registry.
    pub async fn pull_with(
        &self,
        reference: &str,
        credential: Option<(String, String)>,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<Image, ImageError> {
        let parsed: Reference = reference
            .parse()
            .map_err(|e: oci_client::ParseError| ImageError::BadReference {
                reference: reference.to_string(),
                reason: e.to_string(),
            })?;
        let registry = parsed.resolve_registry().to_string();
        let config = ClientConfig {
            protocol: if is_loopback(&registry) {
                ClientProtocol::HttpsExcept(vec![registry.clone()])
            } else {
                ClientProtocol::Https
            },
            connect_timeout: Some(Duration::from_secs(5)),
            read_timeout: Some(Duration::from_secs(60)),
            ..Default::default()
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = Client::new(config);
        let auth = match credential.or_else(|| self.credential(&registry)) {
            Some((user, password)) => RegistryAuth::Basic(user, password),
            None => RegistryAuth::Anonymous,
        };
        let accepted = [OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST];
        let (mut bytes, _) = retry(&registry, &parsed, || {
            client.pull_manifest_raw(&parsed, &auth, &accepted)
        })
        .await?;
        let mut digest = sha256_hex(&bytes);
        if let Some(named) = parsed.digest() {
            if named != digest {
                return Err(ImageError::DigestMismatch {
                    what: format!("the manifest of {reference}"),
                    expected: named.to_string(),
                    actual: digest,
                });
            }
        }
        if is_index(&bytes) {
            let chosen = choose_platform(&parse_index(&bytes, "the image index")?)?;
            let wanted = chosen.digest().to_string();
            let child = parsed.clone_with_digest(wanted.clone());
            (bytes, _) = retry(&registry, &parsed, || {
                client.pull_manifest_raw(&child, &auth, &accepted)
            })
            .await?;
            digest = sha256_hex(&bytes);
            if digest != wanted {
                return Err(ImageError::DigestMismatch {
                    what: format!("the {OS}/{ARCHITECTURE} manifest of {reference}"),
                    expected: wanted,
                    actual: digest,
                });
            }
        }
        let source = BlobSource::Registry {
            client,
            reference: &parsed,
        };
        self.materialize(bytes.to_vec(), digest, &source, progress).await
    }
}

impl ImageStore {
    /// Checks credentials against the registry before they are stored: its `/v2/`
    /// endpoint with basic auth, or its token service when it asks for a bearer token.
    pub async fn check_login(&self, registry: &str, username: &str, password: &str) -> Result<(), ImageError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let scheme = if is_loopback(registry) { "http" } else { "https" };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ImageError::Registry {
                registry: registry.to_string(),
                reason: e.to_string(),
            })?;
        let unreachable = |e: reqwest::Error| ImageError::Unreachable {
            registry: registry.to_string(),
            attempts: 1,
            reason: error_chain(&e),
        };
        let answer = http
            .get(format!("{scheme}://{registry}/v2/"))
            .basic_auth(username, Some(password))
            .send()
            .await
            .map_err(unreachable)?;
        if answer.status().is_success() {
            return Ok(());
        }
        let challenge = answer
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if answer.status() != reqwest::StatusCode::UNAUTHORIZED || !challenge.to_ascii_lowercase().starts_with("bearer")
        {
            return Err(ImageError::Unauthorized {
                registry: registry.to_string(),
                reason: format!("{} from /v2/", answer.status()),
            });
        }
        let reference: Reference =
            format!("{registry}/library/login-check:latest")
                .parse()
                .map_err(|e: oci_client::ParseError| ImageError::BadReference {
                    reference: registry.to_string(),
                    reason: e.to_string(),
                })?;
        let client = Client::new(ClientConfig {
            protocol: if is_loopback(registry) {
                ClientProtocol::HttpsExcept(vec![registry.to_string()])
            } else {
                ClientProtocol::Https
            },
            ..Default::default()
        });
        client
            .auth(
                &reference,
                &RegistryAuth::Basic(username.to_string(), password.to_string()),
                oci_client::RegistryOperation::Pull,
            )
            .await
            .map(|_| ())
            .map_err(|e| match registry_error(registry, &reference, e) {
                ImageError::Registry { reason, .. } => ImageError::Unauthorized {
                    registry: registry.to_string(),
                    reason,
                },
                other => other,
            })
    }
}

/// The annotation naming an image in a layout (its tag), as skopeo and umoci write it.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The top-level entries of a layout's index that are the image asked for: those
/// tagged `tag`, or all of them when they are one image (one name, or none).
fn select_tagged(index: &mut oci_spec::image::ImageIndex, tag: Option<&str>) -> Result<(), ImageError> {
    let name_of = |d: &oci_spec::image::Descriptor| d.annotations().as_ref().and_then(|a| a.get(REF_NAME).cloned());
    let mut names: Vec<String> = index.manifests().iter().filter_map(name_of).collect();
    names.sort();
    names.dedup();
    match tag {
        Some(tag) => {
            let chosen: Vec<_> = index
                .manifests()
                .iter()
                .filter(|d| name_of(d).as_deref() == Some(tag))
                .cloned()
                .collect();
            if chosen.is_empty() {
                return Err(ImageError::Invalid(format!(
                    "no image is tagged {tag:?} in the layout (its tags: {})",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                )));
            }
            index.set_manifests(chosen);
        }
        None if names.len() > 1 => {
            return Err(ImageError::Invalid(format!(
                "the layout holds several images ({}); name one as oci-layout:DIR:TAG or oci-archive:FILE:TAG",
                names.join(", ")
            )))
        }
        None => {}
    }
    Ok(())
}

/// The manifest an image layout (or unpacked `docker save`) holds, the one tagged
/// `tag` when it holds several, and where its blobs are.
pub(super) fn read_layout<'a>(
    dir: &'a Path,
    tag: Option<&str>,
) -> Result<(Vec<u8>, String, BlobSource<'a>), ImageError> {
    let index_path = dir.join("index.json");
    if !index_path.exists() {
        if dir.join("manifest.json").exists() {
            return read_docker_save(dir, tag);
        }
        return Err(ImageError::Invalid(
            "there is no index.json (an OCI image layout) nor manifest.json (docker save)".into(),
        ));
    }
    let blob = |digest: &str| -> Result<Vec<u8>, ImageError> {
        let (algorithm, hex) = digest.split_once(':').unwrap_or(("", digest));
        let bytes = fs::read(dir.join("blobs").join(algorithm).join(hex))
            .map_err(|e| ImageError::Invalid(format!("blob {digest} is missing from the layout: {e}")))?;
        let actual = sha256_hex(&bytes);
        if actual != digest {
            return Err(ImageError::DigestMismatch {
                what: "a manifest in the layout".into(),
                expected: digest.to_string(),
                actual,
            });
        }
        Ok(bytes)
    };
    let mut index = parse_index(&fs::read(&index_path)?, "index.json")?;
    select_tagged(&mut index, tag)?;
    // An index may point at a nested index (a multi-platform image).
    for _ in 0..4 {
        let chosen = choose_platform(&index)?;
        let digest = chosen.digest().to_string();
        let bytes = blob(&digest)?;
        if is_index(&bytes) {
            index = parse_index(&bytes, "a nested index")?;
            continue;
        }
        return Ok((bytes, digest, BlobSource::Layout(dir)));
    }
    Err(ImageError::Invalid("image indexes nest too deeply".into()))
}

/// `docker save`'s own format: `manifest.json` naming a config file and layer tars.
/// Its blobs are hashed here and an OCI manifest is written for them.
fn read_docker_save<'a>(dir: &'a Path, tag: Option<&str>) -> Result<(Vec<u8>, String, BlobSource<'a>), ImageError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Entry {
        config: String,
        layers: Vec<String>,
        #[serde(default)]
        repo_tags: Option<Vec<String>>,
    }
    let entries: Vec<Entry> = serde_json::from_slice(&fs::read(dir.join("manifest.json"))?)
        .map_err(|e| ImageError::Invalid(format!("manifest.json: {e}")))?;
    // `docker save` tags read `repo:tag`; either the whole or the tag selects.
    let tagged = |e: &Entry| {
        e.repo_tags
            .iter()
            .flatten()
            .any(|t| Some(t.as_str()) == tag || t.rsplit_once(':').map(|(_, t)| t) == tag)
    };
    let entry = match tag {
        Some(tag) => entries
            .into_iter()
            .find(tagged)
            .ok_or_else(|| ImageError::Invalid(format!("no image is tagged {tag:?} in the archive")))?,
        None if entries.len() > 1 => {
            return Err(ImageError::Invalid(
                "the archive holds several images; name one as oci-archive:FILE:TAG".into(),
            ))
        }
        None => entries
            .into_iter()
            .next()
            .ok_or_else(|| ImageError::Invalid("manifest.json names no image".into()))?,
    };
    let root = dir.canonicalize()?;
    let mut files = HashMap::new();
    let mut describe = |name: &str, media_type: &str| -> Result<serde_json::Value, ImageError> {
        let path = root.join(name).canonicalize()?;
        if !path.starts_with(&root) {
            return Err(ImageError::Invalid(format!("{name} points outside the archive")));
        }
        let mut hasher = Sha256::new();
        let mut file = fs::File::open(&path)?;
        let size = io::copy(&mut file, &mut hasher)?;
        let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
        files.insert(digest.clone(), path);
        Ok(serde_json::json!({"mediaType": media_type, "digest": digest, "size": size}))
    };
    let config = describe(&entry.config, "application/vnd.docker.container.image.v1+json")?;
    let layers = entry
        .layers
        .iter()
        .map(|l| describe(l, "application/vnd.docker.image.rootfs.diff.tar"))
        .collect::<Result<Vec<_>, _>>()?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": config,
        "layers": layers,
    });
    let bytes = serde_json::to_vec(&manifest).map_err(io::Error::other)?;
    let digest = sha256_hex(&bytes);
    Ok((bytes, digest, BlobSource::Files(files)))
}

/// Extracts an OCI archive (or `docker save` tar), gzipped or not, into `dir`; tar's
/// own checks keep every entry inside it.
pub(super) fn extract_archive(archive: &Path, dir: &Path) -> Result<(), ImageError> {
    fs::create_dir_all(dir)?;
    let mut magic = [0u8; 2];
    let _ = fs::File::open(archive)?.read(&mut magic)?;
    let file = io::BufReader::new(fs::File::open(archive)?);
    let reader: Box<dyn Read> = if magic == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut tar = tar::Archive::new(reader);
    tar.set_preserve_permissions(false);
    tar.unpack(dir)
        .map_err(|e| ImageError::Invalid(format!("the archive cannot be read as a tar: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_plain_http() {
        for host in ["127.0.0.1:5000", "localhost:5000", "[::1]:5000", "localhost"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["ghcr.io", "10.0.0.1:5000", "registry.example.com:443"] {
            assert!(!is_loopback(host), "{host}");
        }
    }
}
