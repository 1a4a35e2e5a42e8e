//! Deleting a namespace with what belongs to it, in one write.

use rusqlite::{params, TransactionBehavior};
use updraft_model::auth::TokenRecord;
use updraft_model::Namespace;

use crate::changelog::Changes;
use crate::sqlite::{query_namespace, Database};
use crate::watch::Kind;
use crate::{Result, StoreError};

impl Database {
    /// Deletes a namespace that holds no service: its triggers, brokers and domain
    /// mappings through the change log, its secrets, pending events and deliveries,
    /// and its grants from every token (a token left with none goes), so a namespace
    /// made again later under the name starts with nothing of the old one's.
    pub(crate) fn delete_namespace(&self, name: &str) -> Result<Namespace> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let Some(namespace) = query_namespace(&tx, name)? else {
            return Err(StoreError::NoSuchNamespace(name.to_string()));
        };
        let count = |sql: &str| -> Result<i64> { Ok(tx.query_row(sql, params![name], |row| row.get(0))?) };
        let services = count("SELECT COUNT(*) FROM services WHERE namespace = ?1")?;
        let staged = count("SELECT COUNT(*) FROM staged_revisions WHERE namespace = ?1")?;
        if services + staged > 0 {
            return Err(StoreError::NotEmpty(format!(
                "namespace {name:?} holds {services} services and {staged} deploys under way; delete them first"
            )));
        }
        let names = |sql: &str| -> Result<Vec<String>> {
            let mut stmt = tx.prepare(sql)?;
            let rows = stmt.query_map(params![name], |row| row.get::<_, String>(0))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        };
        let triggers = names("SELECT name FROM triggers WHERE namespace = ?1")?;
        let brokers = names("SELECT name FROM brokers WHERE namespace = ?1")?;
        let domains = names("SELECT domain FROM domain_mappings WHERE namespace = ?1")?;
        for sql in [
            "DELETE FROM triggers WHERE namespace = ?1",
            "DELETE FROM brokers WHERE namespace = ?1",
            "DELETE FROM domain_mappings WHERE namespace = ?1",
            "DELETE FROM secrets WHERE namespace = ?1",
            "DELETE FROM events WHERE namespace = ?1",
            "DELETE FROM deliveries WHERE namespace = ?1",
            "DELETE FROM webhook_receipts WHERE namespace = ?1",
            "DELETE FROM namespaces WHERE name = ?1",
        ] {
            tx.execute(sql, params![name])?;
        }
        let tokens: Vec<TokenRecord> = {
            let mut stmt = tx.prepare("SELECT record FROM tokens")?;
            let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
            let mut tokens = Vec::new();
            for text in rows {
                tokens.push(serde_json::from_str(&text?)?);
            }
            tokens
        };
        for mut token in tokens {
            let before = token.grants.len();
            token.grants.retain(|g| g.namespace.as_deref() != Some(name));
            if token.grants.len() == before {
                continue;
            }
            if token.grants.is_empty() {
                tx.execute("DELETE FROM tokens WHERE id = ?1", params![token.id])?;
            } else {
                tx.execute(
                    "UPDATE tokens SET record = ?2 WHERE id = ?1",
                    params![token.id, serde_json::to_string(&token)?],
                )?;
            }
        }
        let mut changes = Changes::begin(&tx)?;
        for (kind, resources) in [
            (Kind::Trigger, &triggers),
            (Kind::Broker, &brokers),
            (Kind::DomainMapping, &domains),
        ] {
            for resource in resources {
                changes.delete(kind, name, resource);
            }
        }
        changes.delete(Kind::Namespace, "", name);
        self.commit_write(tx, changes)?;
        Ok(namespace)
    }
}
