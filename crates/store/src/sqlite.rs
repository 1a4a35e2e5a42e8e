use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use tokio::sync::watch;
use updraft_model::annotations::SCALE_TO_ZERO_RETENTION;
use updraft_model::auth::{AuditEntry, TokenRecord};
use updraft_model::domain::DomainMapping;
use updraft_model::names::revision_name;
use updraft_model::template::{Resources, RevisionTemplate};
use updraft_model::{
    Namespace, NamespaceLimits, Revision, RevisionConfig, Service, ServiceConfig, StagedRevision, Usage,
    DEFAULT_NAMESPACE,
};

use crate::changelog::{self, Changes, DEFAULT_CHANGE_LOG_LIMIT};
use crate::watch::{ChangePage, Kind, Resource, Snapshot, WatchFilter};
use crate::{NewRevision, Result, SecretRecord, Store, StoreError};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS namespaces (
    name TEXT PRIMARY KEY,
    created_at_us INTEGER NOT NULL,
    limits TEXT
);
CREATE TABLE IF NOT EXISTS blobs (
    digest TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    created_at_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS services (
    namespace TEXT NOT NULL REFERENCES namespaces(name),
    name TEXT NOT NULL,
    latest_revision TEXT NOT NULL,
    generation INTEGER NOT NULL,
    created_at_us INTEGER NOT NULL,
    updated_at_us INTEGER NOT NULL,
    config TEXT,
    PRIMARY KEY (namespace, name)
);
CREATE TABLE IF NOT EXISTS revisions (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    service TEXT NOT NULL,
    generation INTEGER NOT NULL,
    created_at_us INTEGER NOT NULL,
    package_digest TEXT NOT NULL REFERENCES blobs(digest),
    config TEXT NOT NULL,
    template TEXT,
    PRIMARY KEY (namespace, name),
    FOREIGN KEY (namespace, service) REFERENCES services(namespace, name)
);
CREATE INDEX IF NOT EXISTS revisions_by_service ON revisions(namespace, service);
CREATE TABLE IF NOT EXISTS usage (
    namespace TEXT NOT NULL,
    service TEXT NOT NULL,
    revision TEXT NOT NULL,
    hour_us INTEGER NOT NULL,
    vcpu_seconds REAL NOT NULL,
    gib_seconds REAL NOT NULL,
    cpu_seconds REAL NOT NULL,
    invocations INTEGER NOT NULL,
    request_gb_seconds REAL NOT NULL,
    PRIMARY KEY (namespace, service, revision, hour_us)
);
";

/// Columns added after the first release, with their types; a store from then gets
/// them on open, and a NULL in one reads as its default.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("namespaces", "limits", "TEXT"),
    ("services", "config", "TEXT"),
    ("revisions", "template", "TEXT"),
    ("namespaces", "resource_version", "INTEGER"),
    ("services", "resource_version", "INTEGER"),
    ("revisions", "resource_version", "INTEGER"),
];

/// The embedded store: one SQLite file in the data directory.
///
/// Its [`Store`] methods run their SQLite work on tokio's blocking pool, so an
/// fsync never holds up an async worker.
#[derive(Clone)]
pub struct SqliteStore {
    db: Arc<Database>,
}

/// The connection and its synchronous operations, which the async surface hands to
/// the blocking pool.
pub(crate) struct Database {
    conn: Mutex<Connection>,
    /// The store revision of the last write, for followers to wait on.
    revision: watch::Sender<u64>,
    change_log_limit: u64,
}

fn add_missing_columns(conn: &Connection) -> rusqlite::Result<()> {
    for (table, column, kind) in ADDED_COLUMNS {
        let present: bool = conn.query_row(
            &format!("SELECT count(*) FROM pragma_table_info('{table}') WHERE name = ?1"),
            [column],
            |row| row.get::<_, i64>(0).map(|n| n > 0),
        )?;
        if !present {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"))?;
        }
    }
    Ok(())
}

impl SqliteStore {
    pub fn open(path: &Path, now_us: i64) -> Result<Self> {
        Self::open_with_change_log(path, now_us, DEFAULT_CHANGE_LOG_LIMIT)
    }

    /// Opens the store keeping the changes of the last `change_log_limit` revisions.
    pub fn open_with_change_log(path: &Path, now_us: i64, change_log_limit: u64) -> Result<Self> {
        let conn = Connection::open(path)?;
        // WAL with full sync: a deploy that was answered survives kill -9 and power loss.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(crate::event_schema::SCHEMA)?;
        conn.execute_batch(changelog::SCHEMA)?;
        conn.execute_batch(crate::staged::SCHEMA)?;
        conn.execute_batch(crate::access::SCHEMA)?;
        conn.execute_batch(crate::domains::SCHEMA)?;
        conn.execute_batch(crate::secrets::SCHEMA)?;
        add_missing_columns(&conn)?;
        conn.execute(
            "INSERT OR IGNORE INTO namespaces (name, created_at_us) VALUES (?1, ?2)",
            params![DEFAULT_NAMESPACE, now_us],
        )?;
        let revision = watch::Sender::new(changelog::current_revision(&conn)?);
        Ok(SqliteStore {
            db: Arc::new(Database {
                conn: Mutex::new(conn),
                revision,
                change_log_limit: change_log_limit.max(1),
            }),
        })
    }

    pub(crate) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.conn()
    }

    pub(crate) fn commit_write(&self, tx: Transaction<'_>, changes: Changes) -> Result<()> {
        self.db.commit_write(tx, changes)
    }

    /// Runs `work` on the blocking pool with the database.
    async fn run<T: Send + 'static>(&self, work: impl FnOnce(&Database) -> Result<T> + Send + 'static) -> Result<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || work(&db))
            .await
            .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }
}

impl Database {
    pub(crate) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions
        // roll back on drop), so a poisoned lock is still safe to use.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Logs a write's changes, commits it, and tells followers the store's new
    /// revision.
    pub(crate) fn commit_write(&self, tx: Transaction<'_>, changes: Changes) -> Result<()> {
        let revision = changes.commit(&tx, self.change_log_limit)?;
        tx.commit()?;
        self.revision.send_replace(revision);
        Ok(())
    }
}

pub(crate) fn namespace_exists(conn: &Connection, name: &str) -> Result<bool> {
    Ok(conn
        .query_row("SELECT 1 FROM namespaces WHERE name = ?1", [name], |_| Ok(()))
        .optional()?
        .is_some())
}

fn json_or_default<T: serde::de::DeserializeOwned + Default>(text: Option<String>) -> Result<T> {
    match text {
        Some(text) => Ok(serde_json::from_str(&text)?),
        None => Ok(T::default()),
    }
}

const NAMESPACE_COLUMNS: &str = "name, created_at_us, limits, resource_version";

type NamespaceRow = (String, i64, Option<String>, Option<i64>);

fn read_namespace(row: &rusqlite::Row<'_>) -> rusqlite::Result<NamespaceRow> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
}

fn to_namespace((name, created_at_us, limits, resource_version): NamespaceRow) -> Result<Namespace> {
    Ok(Namespace {
        name,
        created_at_us,
        limits: json_or_default(limits)?,
        resource_version: resource_version.unwrap_or(0) as u64,
    })
}

pub(crate) fn query_namespace(conn: &Connection, name: &str) -> Result<Option<Namespace>> {
    conn.query_row(
        &format!("SELECT {NAMESPACE_COLUMNS} FROM namespaces WHERE name = ?1"),
        [name],
        read_namespace,
    )
    .optional()?
    .map(to_namespace)
    .transpose()
}

const SERVICE_COLUMNS: &str =
    "namespace, name, latest_revision, generation, created_at_us, updated_at_us, config, resource_version";

type ServiceRow = (String, String, String, u32, i64, i64, Option<String>, Option<i64>);

fn read_service(row: &rusqlite::Row<'_>) -> rusqlite::Result<ServiceRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
    ))
}

fn to_service(row: ServiceRow) -> Result<Service> {
    let (namespace, name, latest_revision, generation, created_at_us, updated_at_us, config, resource_version) = row;
    Ok(Service {
        namespace,
        name,
        latest_revision,
        generation,
        created_at_us,
        updated_at_us,
        config: json_or_default::<ServiceConfig>(config)?,
        resource_version: resource_version.unwrap_or(0) as u64,
    })
}

fn query_service(conn: &Connection, namespace: &str, name: &str) -> Result<Option<Service>> {
    conn.query_row(
        &format!("SELECT {SERVICE_COLUMNS} FROM services WHERE namespace = ?1 AND name = ?2"),
        [namespace, name],
        read_service,
    )
    .optional()?
    .map(to_service)
    .transpose()
}

const REVISION_COLUMNS: &str =
    "namespace, service, name, generation, created_at_us, config, template, resource_version";

/// The template of a revision stored before templates were: its package and the
/// settings its config kept.
fn legacy_template(config: &RevisionConfig) -> RevisionTemplate {
    let mut template = RevisionTemplate::for_package(&config.package_digest);
    template.env = config.env.clone();
    template.resources = Resources {
        memory_limit_bytes: config.memory_bytes,
        cpu_limit_millis: config.cpu_millis,
        ..Default::default()
    };
    template.annotations.insert(
        SCALE_TO_ZERO_RETENTION.into(),
        humantime::format_duration(config.scale_to_zero_after()).to_string(),
    );
    template
}

fn collect_revisions(stmt: &mut rusqlite::Statement<'_>, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<Revision>> {
    let rows = stmt.query_map(args, |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, u32>(3)?,
            row.get::<_, i64>(4)?,
            row.get::<_, String>(5)?,
            row.get::<_, Option<String>>(6)?,
            row.get::<_, Option<i64>>(7)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (namespace, service, name, generation, created_at_us, config, template, resource_version) = row?;
        let config = serde_json::from_str::<RevisionConfig>(&config)?;
        let template = match template {
            Some(t) => serde_json::from_str(&t)?,
            None => legacy_template(&config),
        };
        out.push(Revision {
            namespace,
            service,
            name,
            generation,
            created_at_us,
            template,
            config,
            resource_version: resource_version.unwrap_or(0) as u64,
        });
    }
    Ok(out)
}

fn conflict(kind: &'static str, namespace: &str, name: &str, expected: u64, actual: u64) -> StoreError {
    StoreError::Conflict {
        kind,
        namespace: namespace.to_string(),
        name: name.to_string(),
        expected,
        actual,
    }
}

fn query_namespaces(conn: &Connection) -> Result<Vec<Namespace>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {NAMESPACE_COLUMNS} FROM namespaces ORDER BY name"))?;
    let rows = stmt.query_map([], read_namespace)?;
    rows.map(|r| to_namespace(r?)).collect()
}

fn query_services(conn: &Connection, namespace: Option<&str>) -> Result<Vec<Service>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {SERVICE_COLUMNS} FROM services WHERE ?1 IS NULL OR namespace = ?1 ORDER BY namespace, name"
    ))?;
    let rows = stmt.query_map([namespace], read_service)?;
    rows.map(|r| to_service(r?)).collect()
}

fn query_all_revisions(conn: &Connection) -> Result<Vec<Revision>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {REVISION_COLUMNS} FROM revisions ORDER BY namespace, service, generation"
    ))?;
    collect_revisions(&mut stmt, &[])
}

fn query_revisions(conn: &Connection, namespace: &str, service: &str) -> Result<Vec<Revision>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {REVISION_COLUMNS} FROM revisions WHERE namespace = ?1 AND service = ?2 ORDER BY generation"
    ))?;
    collect_revisions(&mut stmt, &[&namespace, &service])
}

pub(crate) fn not_found(kind: &'static str, namespace: &str, name: &str) -> StoreError {
    StoreError::NotFound {
        kind,
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}

impl Database {
    fn create_namespace(&self, name: &str, now_us: i64) -> Result<Namespace> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut changes = Changes::begin(&tx)?;
        let namespace = Namespace {
            name: name.to_string(),
            created_at_us: now_us,
            limits: NamespaceLimits::default(),
            resource_version: changes.revision,
        };
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO namespaces (name, created_at_us, resource_version) VALUES (?1, ?2, ?3)",
            params![name, now_us, namespace.resource_version as i64],
        )?;
        if inserted == 0 {
            return Err(StoreError::AlreadyExists(format!("namespace {name:?}")));
        }
        changes.put(Resource::Namespace(namespace.clone()));
        self.commit_write(tx, changes)?;
        Ok(namespace)
    }

    fn namespaces(&self) -> Result<Vec<Namespace>> {
        query_namespaces(&self.conn())
    }

    fn namespace(&self, name: &str) -> Result<Option<Namespace>> {
        query_namespace(&self.conn(), name)
    }

    fn set_namespace_limits(&self, name: &str, limits: &NamespaceLimits) -> Result<Namespace> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut changes = Changes::begin(&tx)?;
        let updated = tx.execute(
            "UPDATE namespaces SET limits = ?2, resource_version = ?3 WHERE name = ?1",
            params![name, serde_json::to_string(limits)?, changes.revision as i64],
        )?;
        if updated == 0 {
            return Err(StoreError::NoSuchNamespace(name.to_string()));
        }
        let namespace = query_namespace(&tx, name)?.ok_or_else(|| StoreError::NoSuchNamespace(name.to_string()))?;
        changes.put(Resource::Namespace(namespace.clone()));
        self.commit_write(tx, changes)?;
        Ok(namespace)
    }

    fn put_blob(&self, digest: &str, size: u64, now_us: i64) -> Result<()> {
        self.conn().execute(
            "INSERT OR IGNORE INTO blobs (digest, size, created_at_us) VALUES (?1, ?2, ?3)",
            params![digest, size, now_us],
        )?;
        Ok(())
    }

    fn blob_exists(&self, digest: &str) -> Result<bool> {
        Ok(self
            .conn()
            .query_row("SELECT 1 FROM blobs WHERE digest = ?1", [digest], |_| Ok(()))
            .optional()?
            .is_some())
    }

    fn unreferenced_blobs(&self, created_before_us: i64) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT digest FROM blobs WHERE created_at_us < ?1
             AND digest NOT IN (SELECT package_digest FROM revisions)
             AND digest NOT IN (SELECT package_digest FROM staged_revisions)",
        )?;
        let rows = stmt.query_map([created_before_us], |row| row.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn delete_blob(&self, digest: &str) -> Result<()> {
        self.conn().execute("DELETE FROM blobs WHERE digest = ?1", [digest])?;
        Ok(())
    }

    fn next_revision_name(&self, namespace: &str, service: &str) -> Result<String> {
        let current: Option<u32> = self
            .conn()
            .query_row(
                "SELECT generation FROM services WHERE namespace = ?1 AND name = ?2",
                [namespace, service],
                |row| row.get(0),
            )
            .optional()?;
        Ok(revision_name(service, current.unwrap_or(0) + 1))
    }

    fn create_revision(&self, new: NewRevision<'_>, now_us: i64) -> Result<(Service, Revision)> {
        let NewRevision {
            namespace,
            service,
            name,
            template,
            config,
            service_config,
            expected_service_version,
        } = new;
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if !namespace_exists(&tx, namespace)? {
            return Err(StoreError::NoSuchNamespace(namespace.to_string()));
        }
        crate::staged::refuse_taken_name(&tx, namespace, name, Some(service))?;
        let existing = query_service(&tx, namespace, service)?;
        let actual = existing.as_ref().map(|s| s.resource_version);
        if actual != expected_service_version {
            return Err(conflict(
                "service",
                namespace,
                service,
                expected_service_version.unwrap_or(0),
                actual.unwrap_or(0),
            ));
        }
        let mut changes = Changes::begin(&tx)?;
        // Promotes the revision if its deploy staged it.
        crate::staged::remove_staged(&tx, &mut changes, namespace, name)?;
        let resource_version = changes.revision;
        let generation = existing.as_ref().map_or(0, |s| s.generation) + 1;
        let svc = Service {
            namespace: namespace.to_string(),
            name: service.to_string(),
            latest_revision: name.to_string(),
            generation,
            created_at_us: existing.as_ref().map_or(now_us, |s| s.created_at_us),
            updated_at_us: now_us,
            config: service_config.clone(),
            resource_version,
        };
        tx.execute(
            "INSERT INTO services (namespace, name, latest_revision, generation, created_at_us, updated_at_us, config,
                resource_version)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (namespace, name) DO UPDATE SET
                latest_revision = excluded.latest_revision,
                generation = excluded.generation,
                updated_at_us = excluded.updated_at_us,
                config = excluded.config,
                resource_version = excluded.resource_version",
            params![
                svc.namespace,
                svc.name,
                svc.latest_revision,
                svc.generation,
                svc.created_at_us,
                svc.updated_at_us,
                serde_json::to_string(service_config)?,
                resource_version as i64
            ],
        )?;
        tx.execute(
            "INSERT INTO revisions (namespace, name, service, generation, created_at_us, package_digest, config, template,
                resource_version)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                namespace,
                name,
                service,
                generation,
                now_us,
                config.package_digest,
                serde_json::to_string(config)?,
                serde_json::to_string(template)?,
                resource_version as i64
            ],
        )?;
        let revision = Revision {
            namespace: namespace.to_string(),
            service: service.to_string(),
            name: name.to_string(),
            generation,
            created_at_us: now_us,
            template: template.clone(),
            config: config.clone(),
            resource_version,
        };
        // The revision first: a follower that sees the service already knows its latest.
        changes.put(Resource::Revision(Box::new(revision.clone())));
        changes.put(Resource::Service(Box::new(svc.clone())));
        self.commit_write(tx, changes)?;
        Ok((svc, revision))
    }

    fn update_service_config(
        &self,
        namespace: &str,
        name: &str,
        config: &ServiceConfig,
        expected_version: u64,
        now_us: i64,
    ) -> Result<Service> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current = query_service(&tx, namespace, name)?.ok_or_else(|| not_found("service", namespace, name))?;
        if current.resource_version != expected_version {
            return Err(conflict(
                "service",
                namespace,
                name,
                expected_version,
                current.resource_version,
            ));
        }
        let mut changes = Changes::begin(&tx)?;
        let service = Service {
            config: config.clone(),
            updated_at_us: now_us,
            resource_version: changes.revision,
            ..current
        };
        tx.execute(
            "UPDATE services SET config = ?3, updated_at_us = ?4, resource_version = ?5
             WHERE namespace = ?1 AND name = ?2",
            params![
                namespace,
                name,
                serde_json::to_string(config)?,
                now_us,
                service.resource_version as i64
            ],
        )?;
        changes.put(Resource::Service(Box::new(service.clone())));
        self.commit_write(tx, changes)?;
        Ok(service)
    }

    fn services(&self, namespace: Option<&str>) -> Result<Vec<Service>> {
        query_services(&self.conn(), namespace)
    }

    fn service(&self, namespace: &str, name: &str) -> Result<Option<Service>> {
        query_service(&self.conn(), namespace, name)
    }

    fn revisions(&self, namespace: &str, service: &str) -> Result<Vec<Revision>> {
        query_revisions(&self.conn(), namespace, service)
    }

    fn revision(&self, namespace: &str, name: &str) -> Result<Option<Revision>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {REVISION_COLUMNS} FROM revisions WHERE namespace = ?1 AND name = ?2"
        ))?;
        Ok(collect_revisions(&mut stmt, &[&namespace, &name])?.pop())
    }

    fn all_revisions(&self) -> Result<Vec<Revision>> {
        query_all_revisions(&self.conn())
    }

    fn delete_revision(&self, namespace: &str, name: &str) -> Result<Revision> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let revision = {
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT {REVISION_COLUMNS} FROM revisions WHERE namespace = ?1 AND name = ?2"
            ))?;
            collect_revisions(&mut stmt, &[&namespace, &name])?.pop()
        }
        .ok_or_else(|| not_found("revision", namespace, name))?;
        tx.execute(
            "DELETE FROM revisions WHERE namespace = ?1 AND name = ?2",
            [namespace, name],
        )?;
        let mut changes = Changes::begin(&tx)?;
        changes.delete(Kind::Revision, namespace, name);
        self.commit_write(tx, changes)?;
        Ok(revision)
    }

    fn delete_service(&self, namespace: &str, name: &str) -> Result<Vec<Revision>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let revisions = query_revisions(&tx, namespace, name)?;
        tx.execute(
            "DELETE FROM revisions WHERE namespace = ?1 AND service = ?2",
            [namespace, name],
        )?;
        let deleted = tx.execute(
            "DELETE FROM services WHERE namespace = ?1 AND name = ?2",
            [namespace, name],
        )?;
        if deleted == 0 {
            return Err(not_found("service", namespace, name));
        }
        // The service first: a follower never sees a service whose revisions are gone.
        let mut changes = Changes::begin(&tx)?;
        changes.delete(Kind::Service, namespace, name);
        for revision in &revisions {
            changes.delete(Kind::Revision, namespace, &revision.name);
        }
        self.commit_write(tx, changes)?;
        Ok(revisions)
    }

    fn add_usage(&self, rows: &[Usage]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for u in rows {
            tx.execute(
                "INSERT INTO usage (namespace, service, revision, hour_us, vcpu_seconds, gib_seconds,
                    cpu_seconds, invocations, request_gb_seconds)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (namespace, service, revision, hour_us) DO UPDATE SET
                    vcpu_seconds = vcpu_seconds + excluded.vcpu_seconds,
                    gib_seconds = gib_seconds + excluded.gib_seconds,
                    cpu_seconds = cpu_seconds + excluded.cpu_seconds,
                    invocations = invocations + excluded.invocations,
                    request_gb_seconds = request_gb_seconds + excluded.request_gb_seconds",
                params![
                    u.namespace,
                    u.service,
                    u.revision,
                    u.hour_us,
                    u.vcpu_seconds,
                    u.gib_seconds,
                    u.cpu_seconds,
                    u.invocations as i64,
                    u.request_gb_seconds
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn usage(&self, namespace: Option<&str>, since_us: i64) -> Result<Vec<Usage>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT namespace, service, revision, hour_us, vcpu_seconds, gib_seconds, cpu_seconds,
                    invocations, request_gb_seconds
             FROM usage WHERE (?1 IS NULL OR namespace = ?1) AND hour_us >= ?2
             ORDER BY hour_us, namespace, service, revision",
        )?;
        let rows = stmt.query_map(params![namespace, since_us], |row| {
            Ok(Usage {
                namespace: row.get(0)?,
                service: row.get(1)?,
                revision: row.get(2)?,
                hour_us: row.get(3)?,
                vcpu_seconds: row.get(4)?,
                gib_seconds: row.get(5)?,
                cpu_seconds: row.get(6)?,
                invocations: row.get::<_, i64>(7)? as u64,
                request_gb_seconds: row.get(8)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn current_revision(&self) -> Result<u64> {
        changelog::current_revision(&self.conn())
    }

    fn snapshot(&self) -> Result<Snapshot> {
        let mut conn = self.conn();
        // One read transaction, so the lists and the revision agree.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        let revision = changelog::current_revision(&tx)?;
        let namespaces = query_namespaces(&tx)?;
        let services = query_services(&tx, None)?;
        let revisions = query_all_revisions(&tx)?;
        let staged = crate::staged::query_staged(&tx)?;
        let domain_mappings = crate::domains::query_domain_mappings(&tx, None)?;
        tx.commit()?;
        Ok(Snapshot {
            revision,
            namespaces,
            services,
            revisions,
            staged,
            domain_mappings,
        })
    }

    fn changes_after(&self, after: u64, filter: &WatchFilter, limit: usize) -> Result<ChangePage> {
        changelog::read(&self.conn(), after, filter, limit)
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn create_namespace(&self, name: &str, now_us: i64) -> Result<Namespace> {
        let name = name.to_owned();
        self.run(move |db| db.create_namespace(&name, now_us)).await
    }

    async fn namespaces(&self) -> Result<Vec<Namespace>> {
        self.run(|db| db.namespaces()).await
    }

    async fn namespace(&self, name: &str) -> Result<Option<Namespace>> {
        let name = name.to_owned();
        self.run(move |db| db.namespace(&name)).await
    }

    async fn set_namespace_limits(&self, name: &str, limits: &NamespaceLimits) -> Result<Namespace> {
        let (name, limits) = (name.to_owned(), limits.clone());
        self.run(move |db| db.set_namespace_limits(&name, &limits)).await
    }

    async fn put_blob(&self, digest: &str, size: u64, now_us: i64) -> Result<()> {
        let digest = digest.to_owned();
        self.run(move |db| db.put_blob(&digest, size, now_us)).await
    }

    async fn blob_exists(&self, digest: &str) -> Result<bool> {
        let digest = digest.to_owned();
        self.run(move |db| db.blob_exists(&digest)).await
    }

    async fn unreferenced_blobs(&self, created_before_us: i64) -> Result<Vec<String>> {
        self.run(move |db| db.unreferenced_blobs(created_before_us)).await
    }

    async fn delete_blob(&self, digest: &str) -> Result<()> {
        let digest = digest.to_owned();
        self.run(move |db| db.delete_blob(&digest)).await
    }

    async fn create_revision(&self, new: NewRevision<'_>, now_us: i64) -> Result<(Service, Revision)> {
        let namespace = new.namespace.to_owned();
        let service = new.service.to_owned();
        let name = new.name.to_owned();
        let template = new.template.clone();
        let config = new.config.clone();
        let service_config = new.service_config.clone();
        let expected_service_version = new.expected_service_version;
        self.run(move |db| {
            db.create_revision(
                NewRevision {
                    namespace: &namespace,
                    service: &service,
                    name: &name,
                    template: &template,
                    config: &config,
                    service_config: &service_config,
                    expected_service_version,
                },
                now_us,
            )
        })
        .await
    }

    async fn next_revision_name(&self, namespace: &str, service: &str) -> Result<String> {
        let (namespace, service) = (namespace.to_owned(), service.to_owned());
        self.run(move |db| db.next_revision_name(&namespace, &service)).await
    }

    async fn update_service_config(
        &self,
        namespace: &str,
        name: &str,
        config: &ServiceConfig,
        expected_version: u64,
        now_us: i64,
    ) -> Result<Service> {
        let (namespace, name, config) = (namespace.to_owned(), name.to_owned(), config.clone());
        self.run(move |db| db.update_service_config(&namespace, &name, &config, expected_version, now_us))
            .await
    }

    async fn services(&self, namespace: Option<&str>) -> Result<Vec<Service>> {
        let namespace = namespace.map(str::to_owned);
        self.run(move |db| db.services(namespace.as_deref())).await
    }

    async fn service(&self, namespace: &str, name: &str) -> Result<Option<Service>> {
        let (namespace, name) = (namespace.to_owned(), name.to_owned());
        self.run(move |db| db.service(&namespace, &name)).await
    }

    async fn revisions(&self, namespace: &str, service: &str) -> Result<Vec<Revision>> {
        let (namespace, service) = (namespace.to_owned(), service.to_owned());
        self.run(move |db| db.revisions(&namespace, &service)).await
    }

    async fn revision(&self, namespace: &str, name: &str) -> Result<Option<Revision>> {
        let (namespace, name) = (namespace.to_owned(), name.to_owned());
        self.run(move |db| db.revision(&namespace, &name)).await
    }

    async fn all_revisions(&self) -> Result<Vec<Revision>> {
        self.run(|db| db.all_revisions()).await
    }

    async fn delete_revision(&self, namespace: &str, name: &str) -> Result<Revision> {
        let (namespace, name) = (namespace.to_owned(), name.to_owned());
        self.run(move |db| db.delete_revision(&namespace, &name)).await
    }

    async fn delete_service(&self, namespace: &str, name: &str) -> Result<Vec<Revision>> {
        let (namespace, name) = (namespace.to_owned(), name.to_owned());
        self.run(move |db| db.delete_service(&namespace, &name)).await
    }

    async fn add_usage(&self, rows: &[Usage]) -> Result<()> {
        let rows = rows.to_vec();
        self.run(move |db| db.add_usage(&rows)).await
    }

    async fn usage(&self, namespace: Option<&str>, since_us: i64) -> Result<Vec<Usage>> {
        let namespace = namespace.map(str::to_owned);
        self.run(move |db| db.usage(namespace.as_deref(), since_us)).await
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.db.revision.subscribe()
    }

    async fn current_revision(&self) -> Result<u64> {
        self.run(|db| db.current_revision()).await
    }

    async fn snapshot(&self) -> Result<Snapshot> {
        self.run(|db| db.snapshot()).await
    }

    async fn stage_revision(&self, staged: &StagedRevision) -> Result<StagedRevision> {
        let staged = staged.clone();
        self.run(move |db| db.stage_revision(&staged)).await
    }

    async fn withdraw_staged(&self, namespace: &str, name: &str) -> Result<()> {
        let (namespace, name) = (namespace.to_owned(), name.to_owned());
        self.run(move |db| db.withdraw_staged(&namespace, &name)).await
    }

    async fn staged_revisions(&self) -> Result<Vec<StagedRevision>> {
        self.run(|db| db.staged_revisions()).await
    }

    async fn changes_after(&self, after: u64, filter: &WatchFilter, limit: usize) -> Result<ChangePage> {
        let filter = filter.clone();
        self.run(move |db| db.changes_after(after, &filter, limit)).await
    }

    async fn create_token(&self, record: &TokenRecord) -> Result<()> {
        let record = record.clone();
        self.run(move |db| db.create_token(&record)).await
    }

    async fn token(&self, id: &str) -> Result<Option<TokenRecord>> {
        let id = id.to_owned();
        self.run(move |db| db.token(&id)).await
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>> {
        self.run(|db| db.tokens()).await
    }

    async fn revoke_token(&self, id: &str) -> Result<TokenRecord> {
        let id = id.to_owned();
        self.run(move |db| db.revoke_token(&id)).await
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<i64> {
        let entry = entry.clone();
        self.run(move |db| db.append_audit(&entry)).await
    }

    async fn audit(&self, since_us: i64, token_id: Option<&str>, limit: usize) -> Result<Vec<AuditEntry>> {
        let token_id = token_id.map(str::to_owned);
        self.run(move |db| db.audit(since_us, token_id.as_deref(), limit)).await
    }

    async fn put_secret(&self, record: &SecretRecord, create_only: bool) -> Result<SecretRecord> {
        let record = record.clone();
        self.run(move |db| db.put_secret(&record, create_only)).await
    }

    async fn secret(&self, namespace: &str, name: &str) -> Result<Option<SecretRecord>> {
        let (namespace, name) = (namespace.to_owned(), name.to_owned());
        self.run(move |db| db.secret(&namespace, &name)).await
    }

    async fn secrets(&self, namespace: Option<&str>) -> Result<Vec<SecretRecord>> {
        let namespace = namespace.map(str::to_owned);
        self.run(move |db| db.secrets(namespace.as_deref())).await
    }

    async fn delete_secret(&self, namespace: &str, name: &str) -> Result<()> {
        let (namespace, name) = (namespace.to_owned(), name.to_owned());
        self.run(move |db| db.delete_secret(&namespace, &name)).await
    }

    async fn delete_namespace(&self, name: &str) -> Result<Namespace> {
        let name = name.to_owned();
        self.run(move |db| db.delete_namespace(&name)).await
    }

    async fn put_domain_mapping(&self, mapping: &DomainMapping) -> Result<(DomainMapping, bool)> {
        let mapping = mapping.clone();
        self.run(move |db| db.put_domain_mapping(&mapping)).await
    }

    async fn domain_mappings(&self, namespace: Option<&str>) -> Result<Vec<DomainMapping>> {
        let namespace = namespace.map(str::to_owned);
        self.run(move |db| crate::domains::query_domain_mappings(&db.conn(), namespace.as_deref()))
            .await
    }

    async fn delete_domain_mapping(&self, namespace: &str, domain: &str) -> Result<DomainMapping> {
        let (namespace, domain) = (namespace.to_owned(), domain.to_owned());
        self.run(move |db| db.delete_domain_mapping(&namespace, &domain)).await
    }
}

#[cfg(test)]
mod tests {
    use updraft_model::traffic::{Target, TrafficTarget};

    use super::*;

    const DIGEST: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    fn config() -> RevisionConfig {
        RevisionConfig {
            package_digest: DIGEST.into(),
            command: vec!["python3".into(), "main.py".into()],
            command_source: "main.py".into(),
            env: Default::default(),
            env_secrets: Default::default(),
            memory_bytes: Some(64 << 20),
            cpu_millis: None,
            scale_to_zero_after_ms: 60_000,
            readiness: None,
            runtime: updraft_model::RuntimeKind::Process,
            allowed_hosts: Vec::new(),
            layers: Vec::new(),
        }
    }

    /// Creates the service's next revision under its generated name.
    async fn create(store: &SqliteStore, namespace: &str, service: &str, now: i64) -> Result<(Service, Revision)> {
        crate::contract::write_next_revision(store, namespace, service, &config(), now).await
    }

    #[tokio::test]
    async fn keeps_the_store_contract() {
        let dir = tempfile::tempdir().unwrap();
        let opened = std::sync::atomic::AtomicUsize::new(0);
        let open = |limit| {
            let n = opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let store = SqliteStore::open_with_change_log(&dir.path().join(format!("{n}.db")), 1, limit).unwrap();
            std::sync::Arc::new(store) as std::sync::Arc<dyn Store>
        };
        crate::contract::all(&open).await;
    }

    #[tokio::test]
    async fn the_change_log_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let before = {
            let store = SqliteStore::open(&path, 1).unwrap();
            store.put_blob(DIGEST, 10, 1).await.unwrap();
            create(&store, "default", "hello", 2).await.unwrap();
            store.current_revision().await.unwrap()
        };
        let store = SqliteStore::open(&path, 3).unwrap();
        assert_eq!(store.current_revision().await.unwrap(), before);
        let page = store.changes_after(0, &WatchFilter::default(), 10).await.unwrap();
        assert_eq!(page.through, before);
        let (svc, _) = create(&store, "default", "hello", 4).await.unwrap();
        assert_eq!(svc.resource_version, before + 1, "numbering goes on after a restart");
    }

    #[tokio::test]
    async fn revisions_survive_reopen_and_number_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("updraft.db");
        {
            let store = SqliteStore::open(&path, 1).unwrap();
            let mut rx = store.subscribe();
            store.put_blob(DIGEST, 10, 1).await.unwrap();
            let (svc, rev) = create(&store, "default", "hello", 2).await.unwrap();
            assert_eq!(rev.name, "hello-00001");
            assert_eq!(svc.latest_revision, "hello-00001");
            assert!(rx.has_changed().unwrap());
            rx.mark_unchanged();
            let (svc, rev) = create(&store, "default", "hello", 3).await.unwrap();
            assert_eq!(rev.name, "hello-00002");
            assert_eq!(svc.created_at_us, 2);
            assert_eq!(
                store.next_revision_name("default", "hello").await.unwrap(),
                "hello-00003"
            );
        }
        let store = SqliteStore::open(&path, 9).unwrap();
        let revs = store.revisions("default", "hello").await.unwrap();
        assert_eq!(revs.len(), 2);
        assert_eq!(revs[1].config, config());
        assert_eq!(revs[1].template, RevisionTemplate::for_package(DIGEST));
        assert_eq!(
            store
                .service("default", "hello")
                .await
                .unwrap()
                .unwrap()
                .latest_revision,
            "hello-00002"
        );
    }

    #[tokio::test]
    async fn a_named_revision_cannot_be_taken_twice() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db"), 1).unwrap();
        store.put_blob(DIGEST, 10, 1).await.unwrap();
        let (template, config, service_config) = (
            RevisionTemplate::for_package(DIGEST),
            config(),
            ServiceConfig::default(),
        );
        let new = |name, expected_service_version| NewRevision {
            namespace: "default",
            service: "hello",
            name,
            template: &template,
            config: &config,
            service_config: &service_config,
            expected_service_version,
        };
        store.create_revision(new("hello-v1", None), 2).await.unwrap();
        let read = store
            .service("default", "hello")
            .await
            .unwrap()
            .map(|s| s.resource_version);
        let err = store.create_revision(new("hello-v1", read), 3).await.unwrap_err();
        assert!(matches!(err, StoreError::AlreadyExists(_)), "{err}");
        assert_eq!(store.revisions("default", "hello").await.unwrap().len(), 1);
        assert_eq!(store.service("default", "hello").await.unwrap().unwrap().generation, 1);
    }

    #[tokio::test]
    async fn service_config_and_revision_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db"), 1).unwrap();
        store.put_blob(DIGEST, 10, 1).await.unwrap();
        create(&store, "default", "hello", 2).await.unwrap();
        create(&store, "default", "hello", 3).await.unwrap();
        let pinned = ServiceConfig {
            traffic: vec![TrafficTarget::new(Target::Revision("hello-00002".into()), 100, None)],
            ..Default::default()
        };
        let version = store
            .service("default", "hello")
            .await
            .unwrap()
            .unwrap()
            .resource_version;
        let svc = store
            .update_service_config("default", "hello", &pinned, version, 4)
            .await
            .unwrap();
        assert_eq!(svc.config, pinned);
        assert_eq!(svc.updated_at_us, 4);
        assert!(store
            .update_service_config("default", "nope", &pinned, 0, 4)
            .await
            .is_err());
        let gone = store.delete_revision("default", "hello-00001").await.unwrap();
        assert_eq!(gone.generation, 1);
        assert!(store.revision("default", "hello-00001").await.unwrap().is_none());
        assert!(matches!(
            store.delete_revision("default", "hello-00001").await,
            Err(StoreError::NotFound { .. })
        ));
        assert_eq!(store.revisions("default", "hello").await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_store_from_before_templates_opens_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&format!(
                "CREATE TABLE namespaces (name TEXT PRIMARY KEY, created_at_us INTEGER NOT NULL);
                 CREATE TABLE blobs (digest TEXT PRIMARY KEY, size INTEGER NOT NULL, created_at_us INTEGER NOT NULL);
                 CREATE TABLE services (namespace TEXT NOT NULL, name TEXT NOT NULL, latest_revision TEXT NOT NULL,
                    generation INTEGER NOT NULL, created_at_us INTEGER NOT NULL, updated_at_us INTEGER NOT NULL,
                    PRIMARY KEY (namespace, name));
                 CREATE TABLE revisions (namespace TEXT NOT NULL, name TEXT NOT NULL, service TEXT NOT NULL,
                    generation INTEGER NOT NULL, created_at_us INTEGER NOT NULL, package_digest TEXT NOT NULL,
                    config TEXT NOT NULL, PRIMARY KEY (namespace, name));
                 INSERT INTO namespaces VALUES ('default', 1);
                 INSERT INTO blobs VALUES ('{DIGEST}', 10, 1);
                 INSERT INTO services VALUES ('default', 'hello', 'hello-00001', 1, 1, 1);
                 INSERT INTO revisions VALUES ('default', 'hello-00001', 'hello', 1, 1, '{DIGEST}', '{}');",
                serde_json::to_string(&config())
                    .unwrap()
                    .replace(",\"readiness\":null", "")
            ))
            .unwrap();
        }
        let store = SqliteStore::open(&path, 2).unwrap();
        let svc = store.service("default", "hello").await.unwrap().unwrap();
        assert_eq!(svc.config, ServiceConfig::default());
        let rev = store.revision("default", "hello-00001").await.unwrap().unwrap();
        assert_eq!(rev.template.image, format!("package:{DIGEST}"));
        assert_eq!(rev.template.resources.memory_limit_bytes, Some(64 << 20));
        assert_eq!(
            store.namespace("default").await.unwrap().unwrap().limits,
            NamespaceLimits::default()
        );
    }

    #[tokio::test]
    async fn usage_adds_up_per_hour() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db"), 1).unwrap();
        let row = |hour_us, vcpu| Usage {
            namespace: "default".into(),
            service: "hello".into(),
            revision: "hello-00001".into(),
            hour_us,
            vcpu_seconds: vcpu,
            invocations: 2,
            ..Default::default()
        };
        store
            .add_usage(&[row(0, 1.5), row(0, 2.5), row(3_600_000_000, 1.0)])
            .await
            .unwrap();
        let all = store.usage(None, 0).await.unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!((all[0].vcpu_seconds, all[0].invocations), (4.0, 4));
        assert_eq!(store.usage(Some("default"), 1).await.unwrap().len(), 1);
        assert!(store.usage(Some("other"), 0).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn unknown_namespace_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db"), 1).unwrap();
        store.put_blob(DIGEST, 10, 1).await.unwrap();
        let err = create(&store, "nope", "hello", 2).await.unwrap_err();
        assert!(matches!(err, StoreError::NoSuchNamespace(_)));
        assert!(store.services(None).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn revision_needs_its_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db"), 1).unwrap();
        assert!(create(&store, "default", "hello", 2).await.is_err());
        assert!(store.service("default", "hello").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn delete_frees_blob_for_collection() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db"), 1).unwrap();
        store.put_blob(DIGEST, 10, 1).await.unwrap();
        create(&store, "default", "hello", 2).await.unwrap();
        assert!(store.unreferenced_blobs(10).await.unwrap().is_empty());
        assert_eq!(store.delete_service("default", "hello").await.unwrap().len(), 1);
        assert!(
            store.unreferenced_blobs(1).await.unwrap().is_empty(),
            "fresh uploads are kept"
        );
        assert_eq!(store.unreferenced_blobs(10).await.unwrap(), vec![DIGEST.to_string()]);
        assert!(matches!(
            store.delete_service("default", "hello").await,
            Err(StoreError::NotFound { .. })
        ));
        store.create_namespace("team", 3).await.unwrap();
        assert!(store.create_namespace("team", 3).await.is_err());
        assert_eq!(store.namespaces().await.unwrap().len(), 2);
        let limits = NamespaceLimits {
            rate_limit: Some(updraft_model::annotations::RateLimit {
                per_second: 5,
                burst: 5,
            }),
            log_max_age_seconds: Some(60),
            log_max_bytes: None,
            quota: updraft_model::NamespaceQuota {
                services: Some(3),
                ..Default::default()
            },
            exclusive: Some(updraft_model::exclusive::Exclusive {
                cpus: 1,
                memory_bytes: 256 << 20,
            }),
        };
        assert_eq!(
            store.set_namespace_limits("team", &limits).await.unwrap().limits,
            limits
        );
        assert!(store.set_namespace_limits("nope", &limits).await.is_err());
    }
}
