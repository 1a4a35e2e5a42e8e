//! Revisions whose deploys wait for a first ready instance. A staged revision is in
//! the store, so the reconcilers that start instances see it through the watch, but
//! no service refers to it and nothing routes to it until its deploy promotes it
//! ([`crate::Store::create_revision`]) or withdraws it.

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use updraft_model::StagedRevision;

use crate::changelog::Changes;
use crate::sqlite::{namespace_exists, not_found, Database};
use crate::watch::{Kind, Resource};
use crate::{Result, StoreError};

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS staged_revisions (
    namespace TEXT NOT NULL REFERENCES namespaces(name),
    name TEXT NOT NULL,
    service TEXT NOT NULL,
    package_digest TEXT NOT NULL REFERENCES blobs(digest),
    staged TEXT NOT NULL,
    PRIMARY KEY (namespace, name)
);
";

pub(crate) fn query_staged(conn: &Connection) -> Result<Vec<StagedRevision>> {
    let mut stmt = conn.prepare_cached("SELECT staged FROM staged_revisions ORDER BY namespace, name")?;
    let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
    let mut staged = Vec::new();
    for text in rows {
        staged.push(serde_json::from_str(&text?)?);
    }
    Ok(staged)
}

/// Removes a staged revision inside a write, recording the delete; whether there was one.
pub(crate) fn remove_staged(conn: &Connection, changes: &mut Changes, namespace: &str, name: &str) -> Result<bool> {
    let removed = conn.execute(
        "DELETE FROM staged_revisions WHERE namespace = ?1 AND name = ?2",
        [namespace, name],
    )?;
    if removed > 0 {
        changes.delete(Kind::Staged, namespace, name);
    }
    Ok(removed > 0)
}

/// Refuses a revision name that a revision has, or that a deploy has staged; a
/// promotion passes its service, whose own staged record it replaces.
pub(crate) fn refuse_taken_name(conn: &Connection, namespace: &str, name: &str, promoting: Option<&str>) -> Result<()> {
    let owner = conn
        .query_row(
            "SELECT service FROM revisions WHERE namespace = ?1 AND name = ?2
             UNION ALL
             SELECT service FROM staged_revisions
             WHERE namespace = ?1 AND name = ?2 AND service IS NOT ?3",
            params![namespace, name, promoting],
            |row| row.get::<_, String>(0),
        )
        .optional()?;
    match owner {
        Some(owner) => Err(StoreError::AlreadyExists(format!(
            "revision {name:?} (of service {owner:?}); a changed template needs a new name"
        ))),
        None => Ok(()),
    }
}

impl Database {
    pub(crate) fn stage_revision(&self, staged: &StagedRevision) -> Result<StagedRevision> {
        let revision = &staged.revision;
        let (namespace, name) = (revision.namespace.as_str(), revision.name.as_str());
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if !namespace_exists(&tx, namespace)? {
            return Err(StoreError::NoSuchNamespace(namespace.to_string()));
        }
        refuse_taken_name(&tx, namespace, name, None)?;
        let mut changes = Changes::begin(&tx)?;
        let mut stored = staged.clone();
        stored.revision.resource_version = changes.revision;
        tx.execute(
            "INSERT INTO staged_revisions (namespace, name, service, package_digest, staged)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                namespace,
                name,
                revision.service,
                revision.config.package_digest,
                serde_json::to_string(&stored)?
            ],
        )?;
        changes.put(Resource::Staged(Box::new(stored.clone())));
        self.commit_write(tx, changes)?;
        Ok(stored)
    }

    pub(crate) fn withdraw_staged(&self, namespace: &str, name: &str) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut changes = Changes::begin(&tx)?;
        if !remove_staged(&tx, &mut changes, namespace, name)? {
            return Err(not_found("staged revision", namespace, name));
        }
        self.commit_write(tx, changes)
    }

    pub(crate) fn staged_revisions(&self) -> Result<Vec<StagedRevision>> {
        query_staged(&self.conn())
    }
}
