//! The one source of truth: namespaces, services, revisions and package blobs.
//!
//! [`Store`] is the seam; [`SqliteStore`] is the embedded implementation. Every other
//! piece of state (route tables, endpoint sets) is derived from what is here and is
//! rebuilt from it after a crash.
//!
//! Like etcd, every write bumps a store-wide revision, each resource carries the
//! revision that last wrote it (`resource_version`), updates compare it, and the
//! changes after any revision can be read back in order ([`Watch`]), so followers
//! list once and then apply what changed.

mod access;
mod changelog;
#[cfg(any(test, feature = "contract"))]
pub mod contract;
mod domains;
mod event_schema;
pub mod events;
mod namespaces;
mod records;
mod secrets;
mod sqlite;
mod staged;
pub mod watch;

use updraft_model::auth::{AuditEntry, TokenRecord};
use updraft_model::domain::DomainMapping;
use updraft_model::{
    Namespace, NamespaceLimits, Revision, RevisionConfig, RevisionTemplate, Service, ServiceConfig, StagedRevision,
    Usage,
};

pub use access::AUDIT_LIMIT;
pub use changelog::DEFAULT_CHANGE_LOG_LIMIT;
pub use events::EventStore;
pub use secrets::SecretRecord;
pub use sqlite::SqliteStore;
pub use watch::{Change, ChangePage, Kind, Resource, Snapshot, Watch, WatchEvent, WatchFilter, WatchStep};

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
    #[error("{0}")]
    NotEmpty(String),
    #[error("{kind} {name:?} in namespace {namespace:?} was changed meanwhile (version {actual}, expected {expected}); read it again and retry")]
    Conflict {
        kind: &'static str,
        namespace: String,
        name: String,
        expected: u64,
        actual: u64,
    },
    #[error("the change log starts after revision {compacted}; revision {requested} is gone: list again")]
    Compacted { requested: u64, compacted: u64 },
    #[error("store: {0}")]
    Unavailable(String),
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
    /// The `resource_version` of the service this deploy read, or `None` when it read
    /// none: the write fails with [`StoreError::Conflict`] if that changed meanwhile.
    pub expected_service_version: Option<u64>,
}

#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    async fn create_namespace(&self, name: &str, now_us: i64) -> Result<Namespace>;
    async fn namespaces(&self) -> Result<Vec<Namespace>>;
    async fn namespace(&self, name: &str) -> Result<Option<Namespace>>;
    async fn set_namespace_limits(&self, name: &str, limits: &NamespaceLimits) -> Result<Namespace>;
    /// Deletes a namespace that holds no service nor deploy under way, with its
    /// triggers, brokers, domain mappings, secrets, pending events and its grants on
    /// every token; fails with [`StoreError::NotEmpty`] otherwise.
    async fn delete_namespace(&self, name: &str) -> Result<Namespace>;

    /// Records a package archive that is fully written to the blob directory.
    async fn put_blob(&self, digest: &str, size: u64, now_us: i64) -> Result<()>;
    async fn blob_exists(&self, digest: &str) -> Result<bool>;
    /// Digests stored before `created_before_us` that no revision refers to, for
    /// garbage collection (a fresh upload waits for its deploy).
    async fn unreferenced_blobs(&self, created_before_us: i64) -> Result<Vec<String>>;
    async fn delete_blob(&self, digest: &str) -> Result<()>;

    /// Creates the service if needed and the revision, makes the revision the latest
    /// and stores the service's settings, all in one transaction. A staged revision of
    /// that name is promoted: its staged record goes in the same write.
    async fn create_revision(&self, new: NewRevision<'_>, now_us: i64) -> Result<(Service, Revision)>;
    /// The name a service's next revision gets unless its template names one.
    async fn next_revision_name(&self, namespace: &str, service: &str) -> Result<String>;
    /// Replaces a service's settings (traffic, metadata, rollout) if its
    /// `resource_version` is still `expected_version`.
    async fn update_service_config(
        &self,
        namespace: &str,
        name: &str,
        config: &ServiceConfig,
        expected_version: u64,
        now_us: i64,
    ) -> Result<Service>;

    async fn services(&self, namespace: Option<&str>) -> Result<Vec<Service>>;
    async fn service(&self, namespace: &str, name: &str) -> Result<Option<Service>>;
    async fn revisions(&self, namespace: &str, service: &str) -> Result<Vec<Revision>>;
    async fn revision(&self, namespace: &str, name: &str) -> Result<Option<Revision>>;
    async fn all_revisions(&self) -> Result<Vec<Revision>>;
    /// Writes a revision whose deploy waits for its first instance: no service changes
    /// and nothing routes to it. Refused if the name is taken, staged or not.
    async fn stage_revision(&self, staged: &StagedRevision) -> Result<StagedRevision>;
    /// Removes a staged revision whose deploy failed.
    async fn withdraw_staged(&self, namespace: &str, name: &str) -> Result<()>;
    async fn staged_revisions(&self) -> Result<Vec<StagedRevision>>;
    /// Deletes one revision; the caller has checked that nothing routes to it.
    async fn delete_revision(&self, namespace: &str, name: &str) -> Result<Revision>;
    /// Deletes a service with its revisions and returns the revisions removed.
    async fn delete_service(&self, namespace: &str, name: &str) -> Result<Vec<Revision>>;

    /// Adds metered usage to its hours, all rows in one transaction.
    async fn add_usage(&self, rows: &[Usage]) -> Result<()>;
    /// Hourly usage since `since_us`, of one namespace or all.
    async fn usage(&self, namespace: Option<&str>, since_us: i64) -> Result<Vec<Usage>>;

    /// The store revision of the last write, as it changes.
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64>;

    /// The store revision of the last write.
    async fn current_revision(&self) -> Result<u64>;
    /// Namespaces, services and revisions as of one revision, for list-then-watch.
    async fn snapshot(&self) -> Result<Snapshot>;
    /// Changes after revision `after` that `filter` matches, whole writes of at most
    /// `limit` revisions; [`StoreError::Compacted`] when the log no longer reaches back
    /// to `after`.
    async fn changes_after(&self, after: u64, filter: &WatchFilter, limit: usize) -> Result<ChangePage>;

    /// Fails with [`StoreError::AlreadyExists`] when the id is taken.
    async fn create_token(&self, record: &TokenRecord) -> Result<()>;
    async fn token(&self, id: &str) -> Result<Option<TokenRecord>>;
    async fn tokens(&self) -> Result<Vec<TokenRecord>>;
    /// Removes the token, so it authenticates nothing from then on; returns what it was.
    async fn revoke_token(&self, id: &str) -> Result<TokenRecord>;
    /// Appends to the audit log (the last [`AUDIT_LIMIT`] entries are kept); the
    /// entry's sequence number.
    async fn append_audit(&self, entry: &AuditEntry) -> Result<i64>;
    /// The latest `limit` entries at or after `since_us`, oldest first.
    async fn audit(&self, since_us: i64, token_id: Option<&str>, limit: usize) -> Result<Vec<AuditEntry>>;

    /// Writes a sealed secret; with `create_only`, fails with
    /// [`StoreError::AlreadyExists`] when it exists. Returns it as written.
    async fn put_secret(&self, record: &SecretRecord, create_only: bool) -> Result<SecretRecord>;
    async fn secret(&self, namespace: &str, name: &str) -> Result<Option<SecretRecord>>;
    async fn secrets(&self, namespace: Option<&str>) -> Result<Vec<SecretRecord>>;
    async fn delete_secret(&self, namespace: &str, name: &str) -> Result<()>;

    /// Maps a domain to a service of the mapping's namespace, or changes where it
    /// leads; fails with [`StoreError::AlreadyExists`] while another namespace holds
    /// the domain. Returns it as written and whether it is new.
    async fn put_domain_mapping(&self, mapping: &DomainMapping) -> Result<(DomainMapping, bool)>;
    async fn domain_mappings(&self, namespace: Option<&str>) -> Result<Vec<DomainMapping>>;
    /// Unmaps a domain of the namespace; returns what it was.
    async fn delete_domain_mapping(&self, namespace: &str, domain: &str) -> Result<DomainMapping>;
}
