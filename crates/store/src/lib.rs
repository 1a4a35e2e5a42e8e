//! The one source of truth: namespaces, services, revisions and package blobs.
//!
//! [`Store`] is the seam; [`SqliteStore`] is the embedded implementation. Every other
//! piece of state (route tables, endpoint sets) is derived from what is here and is
//! rebuilt from it after a crash. Writers bump a version that [`Store::subscribe`]
//! exposes, so derived state can be refreshed on change instead of polled.

mod sqlite;

use updraft_model::{Namespace, Revision, RevisionConfig, Service};

pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("namespace {0:?} does not exist; create it with `updraft namespace create {0}`")]
    NoSuchNamespace(String),
    #[error("{kind} {name:?} does not exist in namespace {namespace:?}")]
    NotFound {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("store: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("store: corrupt record: {0}")]
    Corrupt(#[from] serde_json::Error),
}

pub type Result<T> = std::result::Result<T, StoreError>;

pub trait Store: Send + Sync + 'static {
    fn create_namespace(&self, name: &str, now_us: i64) -> Result<Namespace>;
    fn namespaces(&self) -> Result<Vec<Namespace>>;
    fn namespace(&self, name: &str) -> Result<Option<Namespace>>;

    /// Records a package archive that is fully written to the blob directory.
    fn put_blob(&self, digest: &str, size: u64, now_us: i64) -> Result<()>;
    fn blob_exists(&self, digest: &str) -> Result<bool>;
    /// Digests stored before `created_before_us` that no revision refers to, for
    /// garbage collection (a fresh upload waits for its deploy).
    fn unreferenced_blobs(&self, created_before_us: i64) -> Result<Vec<String>>;
    fn delete_blob(&self, digest: &str) -> Result<()>;

    /// Creates the service if needed and its next revision, and makes that revision
    /// the latest, all in one transaction.
    fn create_revision(
        &self,
        namespace: &str,
        service: &str,
        config: &RevisionConfig,
        now_us: i64,
    ) -> Result<(Service, Revision)>;
    /// The name the next revision of a service will get.
    fn next_revision_generation(&self, namespace: &str, service: &str) -> Result<u32>;

    fn services(&self, namespace: Option<&str>) -> Result<Vec<Service>>;
    fn service(&self, namespace: &str, name: &str) -> Result<Option<Service>>;
    fn revisions(&self, namespace: &str, service: &str) -> Result<Vec<Revision>>;
    fn all_revisions(&self) -> Result<Vec<Revision>>;
    /// Deletes a service with its revisions and returns the revisions removed.
    fn delete_service(&self, namespace: &str, name: &str) -> Result<Vec<Revision>>;

    /// A counter bumped by every write.
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64>;
}
