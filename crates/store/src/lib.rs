//! The one source of truth: namespaces, services, revisions and package blobs.
//!
//! [`Store`] is the seam; [`SqliteStore`] is the embedded implementation. Every other
//! piece of state (route tables, endpoint sets) is derived from what is here and is
//! rebuilt from it after a crash. Writers bump a version that [`Store::subscribe`]
//! exposes, so derived state can be refreshed on change instead of polled.

pub mod events;
mod sqlite;

use updraft_model::{
    Namespace, NamespaceLimits, Revision, RevisionConfig, RevisionTemplate, Service, ServiceConfig, Usage,
};

pub use events::EventStore;
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

/// A new revision to write, with the service settings that go with it.
pub struct NewRevision<'a> {
    pub namespace: &'a str,
    pub service: &'a str,
    /// The revision's name, from [`Store::next_revision_name`] or the user's template.
    pub name: &'a str,
    pub template: &'a RevisionTemplate,
    pub config: &'a RevisionConfig,
    /// The service's settings once the revision exists (traffic may name it).
    pub service_config: &'a ServiceConfig,
}

pub trait Store: Send + Sync + 'static {
    fn create_namespace(&self, name: &str, now_us: i64) -> Result<Namespace>;
    fn namespaces(&self) -> Result<Vec<Namespace>>;
    fn namespace(&self, name: &str) -> Result<Option<Namespace>>;
    fn set_namespace_limits(&self, name: &str, limits: &NamespaceLimits) -> Result<Namespace>;

    /// Records a package archive that is fully written to the blob directory.
    fn put_blob(&self, digest: &str, size: u64, now_us: i64) -> Result<()>;
    fn blob_exists(&self, digest: &str) -> Result<bool>;
    /// Digests stored before `created_before_us` that no revision refers to, for
    /// garbage collection (a fresh upload waits for its deploy).
    fn unreferenced_blobs(&self, created_before_us: i64) -> Result<Vec<String>>;
    fn delete_blob(&self, digest: &str) -> Result<()>;

    /// Creates the service if needed and the revision, makes the revision the latest
    /// and stores the service's settings, all in one transaction.
    fn create_revision(&self, new: NewRevision<'_>, now_us: i64) -> Result<(Service, Revision)>;
    /// The name a service's next revision gets unless its template names one.
    fn next_revision_name(&self, namespace: &str, service: &str) -> Result<String>;
    /// Replaces a service's settings (traffic, metadata, rollout).
    fn update_service_config(
        &self,
        namespace: &str,
        name: &str,
        config: &ServiceConfig,
        now_us: i64,
    ) -> Result<Service>;

    fn services(&self, namespace: Option<&str>) -> Result<Vec<Service>>;
    fn service(&self, namespace: &str, name: &str) -> Result<Option<Service>>;
    fn revisions(&self, namespace: &str, service: &str) -> Result<Vec<Revision>>;
    fn revision(&self, namespace: &str, name: &str) -> Result<Option<Revision>>;
    fn all_revisions(&self) -> Result<Vec<Revision>>;
    /// Deletes one revision; the caller has checked that nothing routes to it.
    fn delete_revision(&self, namespace: &str, name: &str) -> Result<Revision>;
    /// Deletes a service with its revisions and returns the revisions removed.
    fn delete_service(&self, namespace: &str, name: &str) -> Result<Vec<Revision>>;

    /// Adds metered usage to its hours, all rows in one transaction.
    fn add_usage(&self, rows: &[Usage]) -> Result<()>;
    /// Hourly usage since `since_us`, of one namespace or all.
    fn usage(&self, namespace: Option<&str>, since_us: i64) -> Result<Vec<Usage>>;

    /// A counter bumped by every write.
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64>;
}
