use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::watch;
use updraft_model::names::revision_name;
use updraft_model::{Namespace, Revision, RevisionConfig, Service, DEFAULT_NAMESPACE};

use crate::{Result, Store, StoreError};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS namespaces (
    name TEXT PRIMARY KEY,
    created_at_us INTEGER NOT NULL
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
    PRIMARY KEY (namespace, name),
    FOREIGN KEY (namespace, service) REFERENCES services(namespace, name)
);
CREATE INDEX IF NOT EXISTS revisions_by_service ON revisions(namespace, service);
";

/// The embedded store: one SQLite file in the data directory.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    version: watch::Sender<u64>,
}

impl SqliteStore {
    pub fn open(path: &Path, now_us: i64) -> Result<Self> {
        let conn = Connection::open(path)?;
        // WAL with full sync: a deploy that was answered survives kill -9 and power loss.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        conn.execute(
            "INSERT OR IGNORE INTO namespaces (name, created_at_us) VALUES (?1, ?2)",
            params![DEFAULT_NAMESPACE, now_us],
        )?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            version: watch::Sender::new(0),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions
        // roll back on drop), so a poisoned lock is still safe to use.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn changed(&self) {
        self.version.send_modify(|v| *v += 1);
    }
}

fn namespace_exists(conn: &Connection, name: &str) -> Result<bool> {
    Ok(conn
        .query_row("SELECT 1 FROM namespaces WHERE name = ?1", [name], |_| Ok(()))
        .optional()?
        .is_some())
}

fn row_to_service(row: &rusqlite::Row<'_>) -> rusqlite::Result<Service> {
    Ok(Service {
        namespace: row.get(0)?,
        name: row.get(1)?,
        latest_revision: row.get(2)?,
        generation: row.get(3)?,
        created_at_us: row.get(4)?,
        updated_at_us: row.get(5)?,
    })
}

const SERVICE_COLUMNS: &str = "namespace, name, latest_revision, generation, created_at_us, updated_at_us";
const REVISION_COLUMNS: &str = "namespace, service, name, generation, created_at_us, config";

fn collect_revisions(stmt: &mut rusqlite::Statement<'_>, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<Revision>> {
    let rows = stmt.query_map(args, |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, u32>(3)?,
            row.get::<_, i64>(4)?,
            row.get::<_, String>(5)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (namespace, service, name, generation, created_at_us, config) = row?;
        out.push(Revision {
            namespace,
            service,
            name,
            generation,
            created_at_us,
            config: serde_json::from_str::<RevisionConfig>(&config)?,
        });
    }
    Ok(out)
}

impl Store for SqliteStore {
    fn create_namespace(&self, name: &str, now_us: i64) -> Result<Namespace> {
        let conn = self.conn();
        let inserted = conn.execute(
            "INSERT OR IGNORE INTO namespaces (name, created_at_us) VALUES (?1, ?2)",
            params![name, now_us],
        )?;
        if inserted == 0 {
            return Err(StoreError::AlreadyExists(format!("namespace {name:?}")));
        }
        drop(conn);
        self.changed();
        Ok(Namespace {
            name: name.to_string(),
            created_at_us: now_us,
        })
    }

    fn namespaces(&self) -> Result<Vec<Namespace>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name, created_at_us FROM namespaces ORDER BY name")?;
        let rows = stmt.query_map([], |row| {
            Ok(Namespace {
                name: row.get(0)?,
                created_at_us: row.get(1)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn namespace(&self, name: &str) -> Result<Option<Namespace>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT name, created_at_us FROM namespaces WHERE name = ?1",
                [name],
                |row| {
                    Ok(Namespace {
                        name: row.get(0)?,
                        created_at_us: row.get(1)?,
                    })
                },
            )
            .optional()?)
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
             AND digest NOT IN (SELECT package_digest FROM revisions)",
        )?;
        let rows = stmt.query_map([created_before_us], |row| row.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn delete_blob(&self, digest: &str) -> Result<()> {
        self.conn().execute("DELETE FROM blobs WHERE digest = ?1", [digest])?;
        Ok(())
    }

    fn next_revision_generation(&self, namespace: &str, service: &str) -> Result<u32> {
        let current: Option<u32> = self
            .conn()
            .query_row(
                "SELECT generation FROM services WHERE namespace = ?1 AND name = ?2",
                [namespace, service],
                |row| row.get(0),
            )
            .optional()?;
        Ok(current.unwrap_or(0) + 1)
    }

    fn create_revision(
        &self,
        namespace: &str,
        service: &str,
        config: &RevisionConfig,
        now_us: i64,
    ) -> Result<(Service, Revision)> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if !namespace_exists(&tx, namespace)? {
            return Err(StoreError::NoSuchNamespace(namespace.to_string()));
        }
        let existing = tx
            .query_row(
                &format!("SELECT {SERVICE_COLUMNS} FROM services WHERE namespace = ?1 AND name = ?2"),
                [namespace, service],
                row_to_service,
            )
            .optional()?;
        let generation = existing.as_ref().map_or(0, |s| s.generation) + 1;
        let name = revision_name(service, generation);
        let svc = Service {
            namespace: namespace.to_string(),
            name: service.to_string(),
            latest_revision: name.clone(),
            generation,
            created_at_us: existing.as_ref().map_or(now_us, |s| s.created_at_us),
            updated_at_us: now_us,
        };
        tx.execute(
            "INSERT INTO services (namespace, name, latest_revision, generation, created_at_us, updated_at_us)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (namespace, name) DO UPDATE SET
                latest_revision = excluded.latest_revision,
                generation = excluded.generation,
                updated_at_us = excluded.updated_at_us",
            params![
                svc.namespace,
                svc.name,
                svc.latest_revision,
                svc.generation,
                svc.created_at_us,
                svc.updated_at_us
            ],
        )?;
        tx.execute(
            "INSERT INTO revisions (namespace, name, service, generation, created_at_us, package_digest, config)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                namespace,
                name,
                service,
                generation,
                now_us,
                config.package_digest,
                serde_json::to_string(config)?
            ],
        )?;
        tx.commit()?;
        drop(conn);
        self.changed();
        let revision = Revision {
            namespace: namespace.to_string(),
            service: service.to_string(),
            name,
            generation,
            created_at_us: now_us,
            config: config.clone(),
        };
        Ok((svc, revision))
    }

    fn services(&self, namespace: Option<&str>) -> Result<Vec<Service>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {SERVICE_COLUMNS} FROM services WHERE ?1 IS NULL OR namespace = ?1 ORDER BY namespace, name"
        ))?;
        let rows = stmt.query_map([namespace], row_to_service)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn service(&self, namespace: &str, name: &str) -> Result<Option<Service>> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {SERVICE_COLUMNS} FROM services WHERE namespace = ?1 AND name = ?2"),
                [namespace, name],
                row_to_service,
            )
            .optional()?)
    }

    fn revisions(&self, namespace: &str, service: &str) -> Result<Vec<Revision>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {REVISION_COLUMNS} FROM revisions WHERE namespace = ?1 AND service = ?2 ORDER BY generation"
        ))?;
        collect_revisions(&mut stmt, &[&namespace, &service])
    }

    fn all_revisions(&self) -> Result<Vec<Revision>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {REVISION_COLUMNS} FROM revisions ORDER BY namespace, service, generation"
        ))?;
        collect_revisions(&mut stmt, &[])
    }

    fn delete_service(&self, namespace: &str, name: &str) -> Result<Vec<Revision>> {
        let revisions = self.revisions(namespace, name)?;
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "DELETE FROM revisions WHERE namespace = ?1 AND service = ?2",
            [namespace, name],
        )?;
        let deleted = tx.execute(
            "DELETE FROM services WHERE namespace = ?1 AND name = ?2",
            [namespace, name],
        )?;
        if deleted == 0 {
            return Err(StoreError::NotFound {
                kind: "service",
                namespace: namespace.to_string(),
                name: name.to_string(),
            });
        }
        tx.commit()?;
        drop(conn);
        self.changed();
        Ok(revisions)
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    fn config() -> RevisionConfig {
        RevisionConfig {
            package_digest: DIGEST.into(),
            command: vec!["python3".into(), "main.py".into()],
            command_source: "main.py".into(),
            env: Default::default(),
            memory_bytes: Some(64 << 20),
            cpu_millis: None,
            scale_to_zero_after_ms: 60_000,
        }
    }

    #[test]
    fn revisions_survive_reopen_and_number_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("updraft.db");
        {
            let store = SqliteStore::open(&path, 1).unwrap();
            let mut rx = store.subscribe();
            store.put_blob(DIGEST, 10, 1).unwrap();
            let (svc, rev) = store.create_revision("default", "hello", &config(), 2).unwrap();
            assert_eq!(rev.name, "hello-00001");
            assert_eq!(svc.latest_revision, "hello-00001");
            assert!(rx.has_changed().unwrap());
            rx.mark_unchanged();
            let (svc, rev) = store.create_revision("default", "hello", &config(), 3).unwrap();
            assert_eq!(rev.name, "hello-00002");
            assert_eq!(svc.created_at_us, 2);
            assert_eq!(store.next_revision_generation("default", "hello").unwrap(), 3);
        }
        let store = SqliteStore::open(&path, 9).unwrap();
        let revs = store.revisions("default", "hello").unwrap();
        assert_eq!(revs.len(), 2);
        assert_eq!(revs[1].config, config());
        assert_eq!(
            store.service("default", "hello").unwrap().unwrap().latest_revision,
            "hello-00002"
        );
    }

    #[test]
    fn unknown_namespace_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db"), 1).unwrap();
        store.put_blob(DIGEST, 10, 1).unwrap();
        let err = store.create_revision("nope", "hello", &config(), 2).unwrap_err();
        assert!(matches!(err, StoreError::NoSuchNamespace(_)));
        assert!(store.services(None).unwrap().is_empty());
    }

    #[test]
    fn revision_needs_its_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db"), 1).unwrap();
        assert!(store.create_revision("default", "hello", &config(), 2).is_err());
        assert!(store.service("default", "hello").unwrap().is_none());
    }

    #[test]
    fn delete_frees_blob_for_collection() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db"), 1).unwrap();
        store.put_blob(DIGEST, 10, 1).unwrap();
        store.create_revision("default", "hello", &config(), 2).unwrap();
        assert!(store.unreferenced_blobs(10).unwrap().is_empty());
        assert_eq!(store.delete_service("default", "hello").unwrap().len(), 1);
        assert!(
            store.unreferenced_blobs(1).unwrap().is_empty(),
            "fresh uploads are kept"
        );
        assert_eq!(store.unreferenced_blobs(10).unwrap(), vec![DIGEST.to_string()]);
        assert!(matches!(
            store.delete_service("default", "hello"),
            Err(StoreError::NotFound { .. })
        ));
        store.create_namespace("team", 3).unwrap();
        assert!(store.create_namespace("team", 3).is_err());
        assert_eq!(store.namespaces().unwrap().len(), 2);
    }
}
