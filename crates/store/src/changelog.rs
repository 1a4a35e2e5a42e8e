//! The SQLite change log behind [`crate::Store::changes_after`]: one row per changed
//! resource, numbered by the store revision of its write, trimmed to a bound.

use rusqlite::{params, Connection, OptionalExtension};

use crate::watch::{Change, ChangePage, Kind, Resource, WatchEvent, WatchFilter};
use crate::{Result, StoreError};

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS store_meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO store_meta (key, value) VALUES ('revision', 0), ('compacted', 0);
CREATE TABLE IF NOT EXISTS changes (
    revision INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT,
    PRIMARY KEY (revision, seq)
);
";

/// Changes kept by default: a follower more than this many writes behind lists again.
pub const DEFAULT_CHANGE_LOG_LIMIT: u64 = 10_000;

fn meta(conn: &Connection, key: &str) -> Result<u64> {
    Ok(
        conn.query_row("SELECT value FROM store_meta WHERE key = ?1", [key], |row| {
            row.get::<_, i64>(0)
        })? as u64,
    )
}

pub(crate) fn current_revision(conn: &Connection) -> Result<u64> {
    meta(conn, "revision")
}

/// The changes of one write transaction, all under the revision it will have.
pub(crate) struct Changes {
    /// The write's store revision, for the resources' `resource_version`.
    pub(crate) revision: u64,
    changes: Vec<Change>,
}

impl Changes {
    /// Starts the changes of a write inside the caller's transaction.
    pub(crate) fn begin(conn: &Connection) -> Result<Self> {
        Ok(Changes {
            revision: current_revision(conn)? + 1,
            changes: Vec::new(),
        })
    }

    pub(crate) fn put(&mut self, resource: Resource) {
        self.changes.push(Change::Put(resource));
    }

    pub(crate) fn delete(&mut self, kind: Kind, namespace: &str, name: &str) {
        self.changes.push(Change::Delete {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
        });
    }

    /// Writes the changes under their revision, inside the transaction they began in,
    /// and trims the log to `limit` revisions.
    pub(crate) fn commit(self, conn: &Connection, limit: u64) -> Result<u64> {
        let revision = self.revision;
        conn.execute(
            "UPDATE store_meta SET value = ?1 WHERE key = 'revision'",
            [revision as i64],
        )?;
        for (seq, change) in self.changes.iter().enumerate() {
            let (kind, namespace, name, value) = match change {
                Change::Put(resource) => {
                    let (namespace, name) = identity(resource);
                    (resource.kind(), namespace, name, Some(resource.to_json()?))
                }
                Change::Delete { kind, namespace, name } => (*kind, namespace.as_str(), name.as_str(), None),
            };
            conn.execute(
                "INSERT INTO changes (revision, seq, kind, namespace, name, value) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![revision as i64, seq as i64, kind.as_str(), namespace, name, value],
            )?;
        }
        if revision > limit {
            let compacted = revision - limit;
            conn.execute("DELETE FROM changes WHERE revision <= ?1", [compacted as i64])?;
            conn.execute(
                "UPDATE store_meta SET value = ?1 WHERE key = 'compacted'",
                [compacted as i64],
            )?;
        }
        Ok(revision)
    }
}

fn identity(resource: &Resource) -> (&str, &str) {
    match resource {
        Resource::Namespace(r) => ("", r.name.as_str()),
        Resource::Service(r) => (r.namespace.as_str(), r.name.as_str()),
        Resource::Revision(r) => (r.namespace.as_str(), r.name.as_str()),
        Resource::Staged(r) => (r.revision.namespace.as_str(), r.revision.name.as_str()),
        Resource::Trigger(r) => (r.namespace.as_str(), r.name.as_str()),
        Resource::Broker(r) => (r.namespace.as_str(), r.name.as_str()),
        Resource::DomainMapping(r) => (r.namespace.as_str(), r.domain.as_str()),
    }
}

pub(crate) fn read(conn: &Connection, after: u64, filter: &WatchFilter, limit: usize) -> Result<ChangePage> {
    let compacted = meta(conn, "compacted")?;
    if after < compacted {
        return Err(StoreError::Compacted {
            requested: after,
            compacted,
        });
    }
    // Whole revisions only, so a write's changes are never split between pages.
    let last: Option<i64> = conn
        .query_row(
            "SELECT max(revision) FROM (SELECT DISTINCT revision FROM changes WHERE revision > ?1
             ORDER BY revision LIMIT ?2)",
            params![after as i64, limit.max(1) as i64],
            |row| row.get(0),
        )
        .optional()?
        .flatten();
    let Some(through) = last else {
        return Ok(ChangePage {
            events: Vec::new(),
            through: after,
        });
    };
    let mut stmt = conn.prepare_cached(
        "SELECT revision, kind, namespace, name, value FROM changes
         WHERE revision > ?1 AND revision <= ?2
           AND (?3 IS NULL OR namespace = ?3 OR kind = 'namespace' AND name = ?3)
         ORDER BY revision, seq",
    )?;
    let rows = stmt.query_map(params![after as i64, through, filter.namespace.as_deref()], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, String>(3)?,
            row.get::<_, Option<String>>(4)?,
        ))
    })?;
    let mut events = Vec::new();
    for row in rows {
        let (revision, kind, namespace, name, value) = row?;
        let kind = Kind::parse(&kind)
            .ok_or_else(|| StoreError::Unavailable(format!("unknown kind {kind:?} in the change log")))?;
        // Filtered here rather than in SQL: a set of kinds, and no JSON is parsed for
        // the changes left out.
        if !filter.wants(kind) {
            continue;
        }
        let change = match value {
            Some(value) => Change::Put(Resource::from_json(kind, &value)?),
            None => Change::Delete { kind, namespace, name },
        };
        events.push(WatchEvent {
            revision: revision as u64,
            change,
        });
    }
    Ok(ChangePage {
        events,
        through: through as u64,
    })
}
