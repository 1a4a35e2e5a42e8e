//! Secrets sealed with XChaCha20-Poly1305 under the server's key, so the store, its
//! backups and its change log hold only ciphertext. Each is bound to its namespace and
//! name (the associated data): a sealed value copied under another name does not open.
//!
//! The sealed records are kept in memory beside the store, so an instance's launch
//! (synchronous, on the scaler's path) opens the ones it needs without a store read.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, RwLock};

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use updraft_model::secret::SecretKeyRef;
use updraft_runtime::image::Sealer;
use updraft_store::{SecretRecord, Store};

/// The key file's name in the data directory, unless `--secret-key-file` names one.
pub const SECRET_KEY_FILE: &str = "secret.key";
const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 24;
/// Leads every sealed value, so another format or key scheme can follow.
const FORMAT: &[u8; 4] = b"uds1";

pub struct SecretKey(XChaCha20Poly1305);

/// Never the key itself, wherever a key ends up printed.
impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    /// Reads the key: 32 bytes, raw or base64 (`openssl rand -base64 32`). A missing
    /// file is created with a new random key when `create` (the data directory's
    /// own); a file others may read is refused, as ssh refuses such a private key.
    pub fn load(path: &Path, create: bool) -> anyhow::Result<SecretKey> {
        if create && !path.exists() {
            let mut key = [0u8; KEY_BYTES];
            getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("no randomness for the secret key: {e}"))?;
            // Written aside and renamed, so a crash never leaves a half-written key.
            let staged = path.with_extension("new");
            let _ = fs::remove_file(&staged);
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&staged)?;
            file.write_all(&key)?;
            file.sync_all()?;
            fs::rename(&staged, path)?;
        }
        let mode = fs::metadata(path)
            .map_err(|e| anyhow::anyhow!("reading the secret key {}: {e}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            anyhow::bail!(
                "the secret key {} may be read by others (mode {:o}); chmod 600 it",
                path.display(),
                mode & 0o777
            );
        }
        let text = fs::read(path)?;
        let key = match text.len() {
            KEY_BYTES => text,
            _ => base64::engine::general_purpose::STANDARD
                .decode(text.trim_ascii())
                .ok()
                .filter(|k| k.len() == KEY_BYTES)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "the secret key {} holds neither 32 bytes nor 32 bytes in base64",
                        path.display()
                    )
                })?,
        };
        Ok(SecretKey(XChaCha20Poly1305::new_from_slice(&key).expect("32 bytes")))
    }

    /// `FORMAT`, a random nonce, then `plain` encrypted and bound to `context`.
    fn seal_bytes(&self, context: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).expect("randomness for a nonce");
        let sealed = self
            .0
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: context,
                },
            )
            .expect("sealing");
        [&FORMAT[..], &nonce, &sealed].concat()
    }

    fn open_bytes(&self, context: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        let body = sealed.strip_prefix(&FORMAT[..])?;
        if body.len() < NONCE_BYTES {
            return None;
        }
        let (nonce, ciphertext) = body.split_at(NONCE_BYTES);
        self.0
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context,
                },
            )
            .ok()
    }

    pub fn seal(&self, namespace: &str, name: &str, data: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
        let encoded: BTreeMap<&str, String> = data
            .iter()
            .map(|(k, v)| (k.as_str(), base64::engine::general_purpose::STANDARD.encode(v)))
            .collect();
        let plain = serde_json::to_vec(&encoded).expect("a map of strings");
        self.seal_bytes(&associated_data(namespace, name), &plain)
    }

    pub fn open(&self, namespace: &str, name: &str, sealed: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, String> {
        let unreadable = || {
            format!(
                "secret {name:?} of namespace {namespace:?} does not open with this server's key (--secret-key-file)"
            )
        };
        let plain = self
            .open_bytes(&associated_data(namespace, name), sealed)
            .ok_or_else(unreadable)?;
        let encoded: BTreeMap<String, String> = serde_json::from_slice(&plain).map_err(|_| unreadable())?;
        encoded
            .into_iter()
            .map(|(k, v)| {
                let value = base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .map_err(|_| unreadable())?;
                Ok((k, value))
            })
            .collect()
    }
}

/// Registry credentials are sealed under the same key, bound to their own context.
impl Sealer for SecretKey {
    fn seal(&self, context: &str, plain: &[u8]) -> Vec<u8> {
        self.seal_bytes(format!("updraft {context}").as_bytes(), plain)
    }

    fn open(&self, context: &str, sealed: &[u8]) -> Option<Vec<u8>> {
        self.open_bytes(format!("updraft {context}").as_bytes(), sealed)
    }
}

fn associated_data(namespace: &str, name: &str) -> Vec<u8> {
    format!("updraft secret {namespace}/{name}").into_bytes()
}

/// Every secret, sealed, as the store has it; written through by the API.
pub struct Secrets {
    key: Arc<SecretKey>,
    sealed: RwLock<HashMap<(String, String), SecretRecord>>,
}

impl Secrets {
    pub async fn load(key: Arc<SecretKey>, store: &dyn Store) -> anyhow::Result<Secrets> {
        let sealed = store
            .secrets(None)
            .await?
            .into_iter()
            .map(|r| ((r.namespace.clone(), r.name.clone()), r))
            .collect();
        Ok(Secrets {
            key,
            sealed: RwLock::new(sealed),
        })
    }

    /// When a secret was last written, if the namespace has it: a parsed copy of it
    /// is stale when this changes.
    pub fn version(&self, namespace: &str, name: &str) -> Option<i64> {
        let sealed = self.sealed.read().unwrap_or_else(|p| p.into_inner());
        sealed
            .get(&(namespace.to_string(), name.to_string()))
            .map(|r| r.updated_at_us)
    }

    /// A TLS secret's `tls.crt` and `tls.key` (Kubernetes' layout).
    pub fn tls_pair(&self, namespace: &str, name: &str) -> Result<(Vec<u8>, Vec<u8>), String> {
        let sealed = self.sealed.read().unwrap_or_else(|p| p.into_inner());
        let record = sealed
            .get(&(namespace.to_string(), name.to_string()))
            .ok_or_else(|| format!("namespace {namespace:?} has no secret {name:?}"))?;
        let mut data = self.key.open(namespace, name, &record.sealed)?;
        let mut take = |key: &str| {
            data.remove(key)
                .ok_or_else(|| format!("secret {name:?} has no key {key:?}; a TLS secret has tls.crt and tls.key"))
        };
        Ok((take("tls.crt")?, take("tls.key")?))
    }

    pub fn key(&self) -> &SecretKey {
        &self.key
    }

    /// Records a write the store has taken.
    pub fn written(&self, record: SecretRecord) {
        let mut sealed = self.sealed.write().unwrap_or_else(|p| p.into_inner());
        sealed.insert((record.namespace.clone(), record.name.clone()), record);
    }

    pub fn deleted(&self, namespace: &str, name: &str) {
        let mut sealed = self.sealed.write().unwrap_or_else(|p| p.into_inner());
        sealed.remove(&(namespace.to_string(), name.to_string()));
    }

    pub fn namespace_deleted(&self, namespace: &str) {
        let mut sealed = self.sealed.write().unwrap_or_else(|p| p.into_inner());
        sealed.retain(|(ns, _), _| ns != namespace);
    }

    /// The variables a revision takes from its namespace's secrets, as text.
    pub fn env(
        &self,
        namespace: &str,
        references: &BTreeMap<String, SecretKeyRef>,
    ) -> Result<Vec<(String, String)>, String> {
        references
            .iter()
            .map(|(variable, reference)| Ok((variable.clone(), self.text(namespace, reference, variable)?)))
            .collect()
    }

    /// One key of one of the namespace's secrets as text, for `reader` (a variable,
    /// a registry login's field), which refusals name.
    pub fn text(&self, namespace: &str, reference: &SecretKeyRef, reader: &str) -> Result<String, String> {
        let sealed = self.sealed.read().unwrap_or_else(|p| p.into_inner());
        let record = sealed
            .get(&(namespace.to_string(), reference.name.clone()))
            .ok_or_else(|| {
                format!(
                    "{reader} comes from secret {:?}, which namespace {namespace:?} does not have",
                    reference.name
                )
            })?;
        let mut data = self.key.open(namespace, &reference.name, &record.sealed)?;
        let value = data.remove(&reference.key).ok_or_else(|| {
            format!(
                "{reader} comes from key {:?} of secret {:?}, which has no such key",
                reference.key, reference.name
            )
        })?;
        String::from_utf8(value)
            .ok()
            .filter(|t| !t.contains('\0'))
            .ok_or_else(|| {
                format!(
                    "{reader} comes from key {:?} of secret {:?}, which is not text without NUL bytes",
                    reference.key, reference.name
                )
            })
    }
}

impl updraft_events::sources::SecretLookup for Secrets {
    fn text(&self, namespace: &str, reference: &SecretKeyRef, reader: &str) -> Result<String, String> {
        Secrets::text(self, namespace, reference, reader)
    }
}

#[cfg(test)]
mod tests {
    use updraft_runtime::image::ImageStore;

    use super::*;

    fn key(dir: &Path) -> SecretKey {
        SecretKey::load(&dir.join(SECRET_KEY_FILE), true).unwrap()
    }

    #[test]
    fn sealed_secrets_open_only_under_their_name_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = key(dir.path());
        let mode = fs::metadata(dir.path().join(SECRET_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let data = BTreeMap::from([("password".to_string(), b"hunter2".to_vec())]);
        let sealed = key.seal("team", "db", &data);
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(key.open("team", "db", &sealed).unwrap(), data);
        assert!(key.open("team", "other", &sealed).is_err());
        assert!(key.open("elsewhere", "db", &sealed).is_err());
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(key.open("team", "db", &tampered).is_err());
        let other = SecretKey::load(&tempfile::tempdir().unwrap().path().join("k"), true).unwrap();
        assert!(other
            .open("team", "db", &sealed)
            .unwrap_err()
            .contains("--secret-key-file"));
        // Loaded again, the same key opens what it sealed.
        assert!(SecretKey::load(&dir.path().join(SECRET_KEY_FILE), false)
            .unwrap()
            .open("team", "db", &sealed)
            .is_ok());
    }

    #[test]
    fn registry_credentials_are_sealed_and_old_clear_ones_moved_in() {
        let dir = tempfile::tempdir().unwrap();
        let key = Arc::new(key(dir.path()));
        let images = dir.path().join("images");
        fs::create_dir_all(&images).unwrap();
        fs::write(
            images.join("auth.json"),
            r#"{"ghcr.io": {"username": "me", "password": "pa55word"}}"#,
        )
        .unwrap();
        let store = ImageStore::open(images.clone(), key.clone()).unwrap();
        assert_eq!(store.logins(), [("ghcr.io".to_string(), "me".to_string())]);
        assert!(!images.join("auth.json").exists(), "the clear copy is gone");
        let sealed = fs::read(images.join("auth.sealed")).unwrap();
        assert!(!sealed.windows(8).any(|w| w == b"pa55word"));
        drop(store);
        let again = ImageStore::open(images.clone(), key).unwrap();
        assert_eq!(again.logins().len(), 1);
        drop(again);
        let other = Arc::new(SecretKey::load(&dir.path().join("other.key"), true).unwrap());
        let refused = ImageStore::open(images, other).err().unwrap();
        assert!(refused.to_string().contains("--secret-key-file"), "{refused}");
    }

    #[test]
    fn key_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("given.key");
        assert!(SecretKey::load(&path, false).is_err(), "a named key must exist");
        fs::write(&path, "c2hvcnQ=\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(SecretKey::load(&path, false)
            .unwrap_err()
            .to_string()
            .contains("32 bytes"));
        fs::write(
            &path,
            format!("{}\n", base64::engine::general_purpose::STANDARD.encode([7u8; 32])),
        )
        .unwrap();
        assert!(SecretKey::load(&path, false).is_ok());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(SecretKey::load(&path, false)
            .unwrap_err()
            .to_string()
            .contains("chmod 600"));
    }

    #[test]
    fn variables_name_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = Secrets {
            key: Arc::new(key(dir.path())),
            sealed: RwLock::default(),
        };
        let data = BTreeMap::from([
            ("user".to_string(), b"app".to_vec()),
            ("blob".to_string(), vec![0, 159]),
        ]);
        secrets.written(SecretRecord {
            namespace: "team".into(),
            name: "db".into(),
            sealed: secrets.key().seal("team", "db", &data),
            created_at_us: 1,
            updated_at_us: 1,
        });
        let reference = |name: &str, key: &str| SecretKeyRef {
            name: name.into(),
            key: key.into(),
        };
        let env = secrets
            .env(
                "team",
                &BTreeMap::from([("DB_USER".to_string(), reference("db", "user"))]),
            )
            .unwrap();
        assert_eq!(env, [("DB_USER".to_string(), "app".to_string())]);
        for (r, reason) in [
            (reference("db", "nope"), "no such key"),
            (reference("cache", "user"), "does not have"),
            (reference("db", "blob"), "not text"),
        ] {
            let e = secrets
                .env("team", &BTreeMap::from([("V".to_string(), r)]))
                .unwrap_err();
            assert!(e.contains(reason), "{e}");
        }
        let e = secrets
            .env("other", &BTreeMap::from([("V".to_string(), reference("db", "user"))]))
            .unwrap_err();
        assert!(
            e.contains("does not have"),
            "another namespace's secret is not there: {e}"
        );
        secrets.deleted("team", "db");
        assert!(secrets
            .env("team", &BTreeMap::from([("V".to_string(), reference("db", "user"))]))
            .is_err());
    }
}
