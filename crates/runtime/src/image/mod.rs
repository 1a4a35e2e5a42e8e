//! OCI images: pulled from registries or imported from an OCI layout or archive, their
//! blobs verified against their digests and stored content-addressed (shared between
//! images), their layers unpacked once per image digest into a root filesystem that
//! every container of that image shares read-only.
//!
//! Nothing is half-written: blobs land under their digest only once verified, and an
//! image's directory appears by one rename once every layer is applied.

mod fetch;
pub mod unpack;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use fetch::{BlobSource, Progress};
use unpack::{apply_layer, prepare_mount_points, Compression};

pub use updraft_model::image_ref::STORED_IMAGE_PREFIX;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const CONFIG_TYPES: &[&str] = &[
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// The platform instances run on.
pub const OS: &str = "linux";
pub const ARCHITECTURE: &str = "amd64";

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{reference:?} is not an image reference: {reason}")]
    BadReference { reference: String, reason: String },
    #[error("image {reference} was not found: {reason}")]
    NotFound { reference: String, reason: String },
    #[error("registry {registry} is unreachable after {attempts} attempts: {reason}")]
    Unreachable {
        registry: String,
        attempts: u32,
        reason: String,
    },
    #[error("registry {registry} refused the credentials: {reason} (log in with `updraft registry login {registry}`)")]
    Unauthorized { registry: String, reason: String },
    #[error("{what} has digest {actual}, not the {expected} it was named by")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{what} has media type {media_type:?}, which is not supported (supported: {supported})")]
    UnsupportedMediaType {
        what: String,
        media_type: String,
        supported: String,
    },
    #[error("the image is for {found}, not {OS}/{ARCHITECTURE}")]
    WrongPlatform { found: String },
    #[error("layer {digest} is corrupt: {reason}")]
    CorruptLayer { digest: String, reason: String },
    #[error("layer {layer} would write outside the image's root at {path:?}: {reason}")]
    LayerEscapes {
        layer: String,
        path: String,
        reason: String,
    },
    #[error("not a valid image: {0}")]
    Invalid(String),
    #[error("registry {registry}: {reason}")]
    Registry { registry: String, reason: String },
    #[error("image store: {0}")]
    Io(#[from] io::Error),
}

impl ImageError {
    /// Whether the user's input is at fault (as opposed to this server's disk).
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, ImageError::Io(_))
    }
}

/// What an image asks of its containers, from its config blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// `sha256:<hex>` of the image manifest.
    pub digest: String,
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    /// `KEY=value` entries.
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub working_dir: String,
    #[serde(default)]
    pub user: String,
    /// Bytes of the (compressed) layers.
    pub size: u64,
}

/// An image ready to run: its info and its unpacked root.
#[derive(Debug, Clone)]
pub struct Image {
    pub info: ImageInfo,
    pub rootfs: PathBuf,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Credential {
    username: String,
    password: String,
}

/// Encrypts what the image store keeps at rest (registry credentials) under a key
/// its caller holds, bound to `context`.
pub trait Sealer: Send + Sync {
    fn seal(&self, context: &str, plain: &[u8]) -> Vec<u8>;
    fn open(&self, context: &str, sealed: &[u8]) -> Option<Vec<u8>>;
}

/// The sealed credentials' file, and the context they are bound to.
const CREDENTIALS_FILE: &str = "auth.sealed";
const CREDENTIALS_CONTEXT: &str = "registry credentials";
/// Where credentials were kept in the clear before they were sealed.
const LEGACY_CREDENTIALS_FILE: &str = "auth.json";

pub struct ImageStore {
    root: PathBuf,
    /// Registry host → credential, kept sealed in `auth.sealed` (mode 0600).
    credentials: Mutex<BTreeMap<String, Credential>>,
    sealer: Arc<dyn Sealer>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The hex part of a `sha256:` digest; other algorithms are refused.
fn digest_hex(digest: &str) -> Result<&str, ImageError> {
    match digest.strip_prefix("sha256:") {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) => {
            Ok(hex)
        }
        _ => Err(ImageError::Invalid(format!(
            "digest {digest:?} is not sha256:<64 lowercase hex digits>"
        ))),
    }
}

impl ImageStore {
    /// Opens (creating) the store under `root`; staging left by a crash is removed.
    /// Credentials kept in the clear by an earlier version are sealed now.
    pub fn open(root: PathBuf, sealer: Arc<dyn Sealer>) -> io::Result<Self> {
        let _ = fs::remove_dir_all(root.join("tmp"));
        for dir in ["blobs/sha256", "images", "tmp"] {
            fs::create_dir_all(root.join(dir))?;
        }
        let credentials = match fs::read(root.join(CREDENTIALS_FILE)) {
            Ok(sealed) => {
                let plain = sealer.open(CREDENTIALS_CONTEXT, &sealed).ok_or_else(|| {
                    io::Error::other(format!(
                        "{} does not open with this server's secret key (--secret-key-file)",
                        root.join(CREDENTIALS_FILE).display()
                    ))
                })?;
                serde_json::from_slice(&plain).map_err(io::Error::other)?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::read(root.join(LEGACY_CREDENTIALS_FILE))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default(),
            Err(e) => return Err(e),
        };
        let store = ImageStore {
            root,
            credentials: Mutex::new(credentials),
            sealer,
        };
        if store.root.join(LEGACY_CREDENTIALS_FILE).exists() {
            let credentials = store.credentials.lock().unwrap_or_else(|p| p.into_inner()).clone();
            store.save_credentials(&credentials)?;
            fs::remove_file(store.root.join(LEGACY_CREDENTIALS_FILE))?;
        }
        Ok(store)
    }

    fn save_credentials(&self, credentials: &BTreeMap<String, Credential>) -> io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let plain = serde_json::to_vec(credentials).map_err(io::Error::other)?;
        let staged = self.root.join("tmp").join(CREDENTIALS_FILE);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&staged)?;
        file.write_all(&self.sealer.seal(CREDENTIALS_CONTEXT, &plain))?;
        file.sync_all()?;
        fs::rename(staged, self.root.join(CREDENTIALS_FILE))
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, ImageError> {
        Ok(self.root.join("blobs/sha256").join(digest_hex(digest)?))
    }

    fn image_dir(&self, digest: &str) -> Result<PathBuf, ImageError> {
        Ok(self.root.join("images").join(digest_hex(digest)?))
    }

    fn staging(&self, prefix: &str) -> io::Result<tempfile::TempDir> {
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(self.root.join("tmp"))
    }

    /// The unpacked image with this manifest digest, if it is stored.
    pub fn get(&self, digest: &str) -> Option<Image> {
        let dir = self.image_dir(digest).ok()?;
        let info: ImageInfo = serde_json::from_slice(&fs::read(dir.join("image.json")).ok()?).ok()?;
        Some(Image {
            info,
            rootfs: dir.join("rootfs"),
        })
    }

    /// Removes an image's unpacked root (its blobs stay, shared and cached). It is
    /// moved aside first, so a half-removed root is never taken for an image.
    pub fn remove(&self, digest: &str) {
        let Ok(dir) = self.image_dir(digest) else { return };
        if let Ok(staging) = self.staging("remove-") {
            if fs::rename(&dir, staging.path().join("image")).is_ok() {
                drop(staging);
            }
        }
    }

    /// Stores credentials for a registry host (`127.0.0.1:5000`, `ghcr.io`).
    pub fn login(&self, registry: &str, username: &str, password: &str) -> io::Result<()> {
        let mut credentials = self.credentials.lock().unwrap_or_else(|p| p.into_inner());
        credentials.insert(
            registry.to_string(),
            Credential {
                username: username.to_string(),
                password: password.to_string(),
            },
        );
        self.save_credentials(&credentials)
    }

    /// Forgets a registry's credentials; false when there were none.
    pub fn logout(&self, registry: &str) -> io::Result<bool> {
        let mut credentials = self.credentials.lock().unwrap_or_else(|p| p.into_inner());
        if credentials.remove(registry).is_none() {
            return Ok(false);
        }
        self.save_credentials(&credentials)?;
        Ok(true)
    }

    /// Registries with stored credentials.
    pub fn logins(&self) -> Vec<(String, String)> {
        let credentials = self.credentials.lock().unwrap_or_else(|p| p.into_inner());
        credentials
            .iter()
            .map(|(r, c)| (r.clone(), c.username.clone()))
            .collect()
    }

    fn credential(&self, registry: &str) -> Option<(String, String)> {
        let credentials = self.credentials.lock().unwrap_or_else(|p| p.into_inner());
        credentials
            .get(registry)
            .map(|c| (c.username.clone(), c.password.clone()))
    }

    /// Imports an OCI image layout directory (or a `docker save` tree unpacked); `tag`
    /// picks one image of several.
    pub async fn import_layout(
        &self,
        dir: &Path,
        tag: Option<&str>,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<Image, ImageError> {
        let (manifest, digest, source) = fetch::read_layout(dir, tag)?;
        self.materialize(manifest, digest, &source, progress).await
    }

    /// Imports an OCI archive (a tar of an image layout, also what `docker save` writes),
    /// plain or gzipped.
    pub async fn import_archive(
        &self,
        archive: &Path,
        tag: Option<&str>,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<Image, ImageError> {
        let staging = self.staging("archive-")?;
        let dir = staging.path().join("layout");
        let path = archive.to_path_buf();
        let target = dir.clone();
        tokio::task::spawn_blocking(move || fetch::extract_archive(&path, &target))
            .await
            .map_err(io::Error::other)??;
        self.import_layout(&dir, tag, progress).await
    }

    /// Fetches what the manifest names that is not stored yet, verifies it, and unpacks
    /// the layers into the image's root.
    async fn materialize(
        &self,
        manifest_bytes: Vec<u8>,
        digest: String,
        source: &BlobSource<'_>,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<Image, ImageError> {
        if let Some(image) = self.get(&digest) {
            return Ok(image);
        }
        let manifest: serde_json::Value =
            serde_json::from_slice(&manifest_bytes).map_err(|e| ImageError::Invalid(format!("manifest: {e}")))?;
        let media_type = manifest["mediaType"].as_str().unwrap_or(OCI_MANIFEST);
        if media_type != OCI_MANIFEST && media_type != DOCKER_MANIFEST {
            return Err(ImageError::UnsupportedMediaType {
                what: format!("manifest {digest}"),
                media_type: media_type.to_string(),
                supported: format!("{OCI_MANIFEST}, {DOCKER_MANIFEST}"),
            });
        }
        let manifest = oci_spec::image::ImageManifest::from_reader(&manifest_bytes[..])
            .map_err(|e| ImageError::Invalid(format!("manifest {digest}: {e}")))?;
        let config_desc = manifest.config();
        let config_type = config_desc.media_type().to_string();
        if !CONFIG_TYPES.contains(&config_type.as_str()) {
            return Err(ImageError::UnsupportedMediaType {
                what: "the image config".into(),
                media_type: config_type,
                supported: CONFIG_TYPES.join(", "),
            });
        }
        let mut layers = Vec::new();
        for (i, layer) in manifest.layers().iter().enumerate() {
            let media_type = layer.media_type().to_string();
            let compression =
                Compression::of_media_type(&media_type).ok_or_else(|| ImageError::UnsupportedMediaType {
                    what: format!("layer {i} ({})", layer.digest()),
                    media_type: media_type.clone(),
                    supported: "tar, tar+gzip and tar+zstd layers (OCI or Docker)".into(),
                })?;
            layers.push((layer.digest().to_string(), layer.size(), compression));
        }

        let config_digest = config_desc.digest().to_string();
        let config_path = self
            .fetch(source, &config_digest, config_desc.size(), "config", progress)
            .await?;
        let config = oci_spec::image::ImageConfiguration::from_file(&config_path)
            .map_err(|e| ImageError::Invalid(format!("config {config_digest}: {e}")))?;
        let platform = format!("{}/{}", config.os(), config.architecture());
        if platform != format!("{OS}/{ARCHITECTURE}") {
            return Err(ImageError::WrongPlatform { found: platform });
        }
        let diff_ids = config.rootfs().diff_ids().clone();
        if diff_ids.len() != layers.len() {
            return Err(ImageError::Invalid(format!(
                "the config lists {} layer diff_ids for {} layers",
                diff_ids.len(),
                layers.len()
            )));
        }
        for (i, (layer, size, _)) in layers.iter().enumerate() {
            self.fetch(
                source,
                layer,
                *size,
                &format!("layer {}/{}", i + 1, layers.len()),
                progress,
            )
            .await?;
        }

        let runtime = config.config().clone().unwrap_or_default();
        let info = ImageInfo {
            digest: digest.clone(),
            entrypoint: runtime.entrypoint().clone().unwrap_or_default(),
            cmd: runtime.cmd().clone().unwrap_or_default(),
            env: runtime.env().clone().unwrap_or_default(),
            working_dir: runtime.working_dir().clone().unwrap_or_default(),
            user: runtime.user().clone().unwrap_or_default(),
            size: layers.iter().map(|(_, s, _)| s).sum(),
        };
        let staging = self.staging("unpack-")?;
        let work = staging.path().to_path_buf();
        let blobs: Vec<(PathBuf, Compression, String, String)> = layers
            .iter()
            .zip(diff_ids)
            .map(|((d, _, c), diff)| Ok((self.blob_path(d)?, *c, d.clone(), diff)))
            .collect::<Result<_, ImageError>>()?;
        let final_dir = self.image_dir(&digest)?;
        let info_json = serde_json::to_vec_pretty(&info).map_err(io::Error::other)?;
        tokio::task::spawn_blocking(move || {
            let rootfs = work.join("rootfs");
            unpack::create_public_dir(&rootfs)?;
            for (blob, compression, layer, diff_id) in blobs {
                let actual = apply_layer(&rootfs, &blob, compression, &layer)?;
                if actual != diff_id {
                    return Err(ImageError::DigestMismatch {
                        what: format!("the uncompressed layer {layer}"),
                        expected: diff_id,
                        actual,
                    });
                }
            }
            prepare_mount_points(&rootfs)?;
            fs::write(work.join("image.json"), info_json)?;
            match fs::rename(&work, &final_dir) {
                Ok(()) => Ok(()),
                // Another deploy of the same image finished first: same content.
                Err(_) if final_dir.join("image.json").exists() => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
        .await
        .map_err(io::Error::other)??;
        drop(staging);
        self.get(&digest)
            .ok_or_else(|| ImageError::Io(io::Error::other("the unpacked image vanished")))
    }

    /// The blob's path in the store, fetched and verified first when it is missing.
    async fn fetch(
        &self,
        source: &BlobSource<'_>,
        digest: &str,
        size: u64,
        what: &str,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<PathBuf, ImageError> {
        let path = self.blob_path(digest)?;
        if path.exists() {
            progress(Progress {
                what: what.to_string(),
                digest: digest.to_string(),
                done: size,
                total: size,
                cached: true,
            });
            return Ok(path);
        }
        // A name of its own: two deploys may fetch the same blob at once. Removed on
        // drop unless it was verified and moved into place.
        let staged = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(self.root.join("tmp"))?
            .into_temp_path();
        let actual = source.fetch(digest, size, what, &staged, progress).await?;
        if actual != digest {
            return Err(ImageError::DigestMismatch {
                what: format!("blob ({what})"),
                expected: digest.to_string(),
                actual,
            });
        }
        staged.persist(&path).map_err(|e| ImageError::Io(e.error))?;
        Ok(path)
    }
}

/// What `image` names: a registry reference, or a stored image (`oci:sha256:…`).
pub fn stored_digest(image: &str) -> Option<&str> {
    image.strip_prefix(STORED_IMAGE_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sha256_digests_name_blobs() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert!(digest_hex(&good).is_ok());
        for bad in ["sha512:abc", "sha256:../../etc", "sha256:ABC", ""] {
            assert!(digest_hex(bad).is_err(), "{bad}");
        }
        assert_eq!(sha256_hex(b"").len(), 71);
    }
}
