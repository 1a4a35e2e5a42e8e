//! API tokens (only the hash of each secret) and the audit log of what they did.
//! Neither goes through the change log: nothing reconciles them, and a token's hash
//! has no business in a watch stream.

use rusqlite::{params, Connection, OptionalExtension};
use updraft_model::auth::{AuditEntry, TokenRecord};

use crate::sqlite::Database;
use crate::{Result, StoreError};

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at_us INTEGER NOT NULL,
    token_id TEXT,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    namespace TEXT,
    status INTEGER NOT NULL
);
";

/// The audit log keeps this many entries; older ones are dropped as new ones come.
pub const AUDIT_LIMIT: i64 = 100_000;

fn read_token(conn: &Connection, id: &str) -> Result<Option<TokenRecord>> {
    let text: Option<String> = conn
        .query_row("SELECT record FROM tokens WHERE id = ?1", [id], |row| row.get(0))
        .optional()?;
    Ok(text.map(|t| serde_json::from_str(&t)).transpose()?)
}

impl Database {
    pub(crate) fn create_token(&self, record: &TokenRecord) -> Result<()> {
        let conn = self.conn();
        let inserted = conn.execute(
            "INSERT OR IGNORE INTO tokens (id, record) VALUES (?1, ?2)",
            params![record.id, serde_json::to_string(record)?],
        )?;
        if inserted == 0 {
            return Err(StoreError::AlreadyExists(format!("token {:?}", record.id)));
        }
        Ok(())
    }

    pub(crate) fn token(&self, id: &str) -> Result<Option<TokenRecord>> {
        read_token(&self.conn(), id)
    }

    pub(crate) fn tokens(&self) -> Result<Vec<TokenRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT record FROM tokens ORDER BY id")?;
        let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
        let mut tokens = Vec::new();
        for text in rows {
            tokens.push(serde_json::from_str(&text?)?);
        }
        Ok(tokens)
    }

    pub(crate) fn revoke_token(&self, id: &str) -> Result<TokenRecord> {
        let conn = self.conn();
        let record = read_token(&conn, id)?.ok_or_else(|| StoreError::NotFound {
            kind: "token",
            namespace: String::new(),
            name: id.to_string(),
        })?;
        conn.execute("DELETE FROM tokens WHERE id = ?1", [id])?;
        Ok(record)
    }

    pub(crate) fn append_audit(&self, entry: &AuditEntry) -> Result<i64> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO audit (at_us, token_id, method, path, namespace, status) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                entry.at_us,
                entry.token_id,
                entry.method,
                entry.path,
                entry.namespace,
                entry.status
            ],
        )?;
        let seq = conn.last_insert_rowid();
        if seq % 1000 == 0 {
            conn.execute("DELETE FROM audit WHERE seq <= ?1", [seq - AUDIT_LIMIT])?;
        }
        Ok(seq)
    }

    pub(crate) fn audit(&self, since_us: i64, token_id: Option<&str>, limit: usize) -> Result<Vec<AuditEntry>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT seq, at_us, token_id, method, path, namespace, status FROM (
                SELECT * FROM audit WHERE at_us >= ?1 AND (?2 IS NULL OR token_id = ?2)
                ORDER BY seq DESC LIMIT ?3
             ) ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![since_us, token_id, limit as i64], |row| {
            Ok(AuditEntry {
                seq: row.get(0)?,
                at_us: row.get(1)?,
                token_id: row.get(2)?,
                method: row.get(3)?,
                path: row.get(4)?,
                namespace: row.get(5)?,
                status: row.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}
