//! Secrets as stored: sealed by the server before they get here, so the database and
//! its backups hold only ciphertext. Like tokens they stay out of the change log.

use rusqlite::{params, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};

use crate::sqlite::{namespace_exists, not_found, Database};
use crate::{Result, StoreError};

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS secrets (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    sealed BLOB NOT NULL,
    created_at_us INTEGER NOT NULL,
    updated_at_us INTEGER NOT NULL,
    PRIMARY KEY (namespace, name)
);
";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SecretRecord {
    pub namespace: String,
    pub name: String,
    /// The keys and values, encrypted and authenticated by the server's key.
    pub sealed: Vec<u8>,
    pub created_at_us: i64,
    pub updated_at_us: i64,
}

fn read_secret(row: &rusqlite::Row<'_>) -> rusqlite::Result<SecretRecord> {
    Ok(SecretRecord {
        namespace: row.get(0)?,
        name: row.get(1)?,
        sealed: row.get(2)?,
        created_at_us: row.get(3)?,
        updated_at_us: row.get(4)?,
    })
}

const COLUMNS: &str = "namespace, name, sealed, created_at_us, updated_at_us";

impl Database {
    pub(crate) fn put_secret(&self, record: &SecretRecord, create_only: bool) -> Result<SecretRecord> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if !namespace_exists(&tx, &record.namespace)? {
            return Err(StoreError::NoSuchNamespace(record.namespace.clone()));
        }
        let created: Option<i64> = tx
            .query_row(
                "SELECT created_at_us FROM secrets WHERE namespace = ?1 AND name = ?2",
                params![record.namespace, record.name],
                |row| row.get(0),
            )
            .optional()?;
        if create_only && created.is_some() {
            return Err(StoreError::AlreadyExists(format!(
                "secret {:?} in namespace {:?}",
                record.name, record.namespace
            )));
        }
        let written = SecretRecord {
            created_at_us: created.unwrap_or(record.updated_at_us),
            ..record.clone()
        };
        tx.execute(
            "INSERT INTO secrets (namespace, name, sealed, created_at_us, updated_at_us) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (namespace, name) DO UPDATE SET sealed = excluded.sealed, updated_at_us = excluded.updated_at_us",
            params![
                written.namespace,
                written.name,
                written.sealed,
                written.created_at_us,
                written.updated_at_us
            ],
        )?;
        tx.commit()?;
        Ok(written)
    }

    pub(crate) fn secret(&self, namespace: &str, name: &str) -> Result<Option<SecretRecord>> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM secrets WHERE namespace = ?1 AND name = ?2"),
                params![namespace, name],
                read_secret,
            )
            .optional()?)
    }

    pub(crate) fn secrets(&self, namespace: Option<&str>) -> Result<Vec<SecretRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM secrets WHERE (?1 IS NULL OR namespace = ?1) ORDER BY namespace, name"
        ))?;
        let rows = stmt.query_map(params![namespace], read_secret)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub(crate) fn delete_secret(&self, namespace: &str, name: &str) -> Result<()> {
        let removed = self.conn().execute(
            "DELETE FROM secrets WHERE namespace = ?1 AND name = ?2",
            params![namespace, name],
        )?;
        if removed == 0 {
            return Err(not_found("secret", namespace, name));
        }
        Ok(())
    }
}
