//! Custom domains as stored: one row per domain, so a domain belongs to one namespace
//! at a time, written through the change log for the route table to follow.

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use updraft_model::domain::DomainMapping;

use crate::changelog::Changes;
use crate::sqlite::{namespace_exists, not_found, Database};
use crate::watch::{Kind, Resource};
use crate::{Result, StoreError};

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS domain_mappings (
    domain TEXT PRIMARY KEY,
    namespace TEXT NOT NULL REFERENCES namespaces(name),
    record TEXT NOT NULL
);
";

pub(crate) fn query_domain_mappings(conn: &Connection, namespace: Option<&str>) -> Result<Vec<DomainMapping>> {
    let mut stmt =
        conn.prepare("SELECT record FROM domain_mappings WHERE (?1 IS NULL OR namespace = ?1) ORDER BY domain")?;
    let rows = stmt.query_map(params![namespace], |row| row.get::<_, String>(0))?;
    let mut mappings = Vec::new();
    for row in rows {
        mappings.push(serde_json::from_str(&row?)?);
    }
    Ok(mappings)
}

impl Database {
    pub(crate) fn put_domain_mapping(&self, mapping: &DomainMapping) -> Result<(DomainMapping, bool)> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if !namespace_exists(&tx, &mapping.namespace)? {
            return Err(StoreError::NoSuchNamespace(mapping.namespace.clone()));
        }
        let existing: Option<(String, String)> = tx
            .query_row(
                "SELECT namespace, record FROM domain_mappings WHERE domain = ?1",
                params![mapping.domain],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        let created_at_us = match &existing {
            // Which namespace holds it is that namespace's business.
            Some((holder, _)) if *holder != mapping.namespace => {
                return Err(StoreError::AlreadyExists(format!(
                    "domain {:?}, mapped in another namespace,",
                    mapping.domain
                )))
            }
            Some((_, record)) => serde_json::from_str::<DomainMapping>(record)?.created_at_us,
            None => mapping.created_at_us,
        };
        let written = DomainMapping {
            created_at_us,
            ..mapping.clone()
        };
        tx.execute(
            "INSERT INTO domain_mappings (domain, namespace, record) VALUES (?1, ?2, ?3)
             ON CONFLICT (domain) DO UPDATE SET record = excluded.record",
            params![written.domain, written.namespace, serde_json::to_string(&written)?],
        )?;
        let mut changes = Changes::begin(&tx)?;
        changes.put(Resource::DomainMapping(written.clone()));
        self.commit_write(tx, changes)?;
        Ok((written, existing.is_none()))
    }

    pub(crate) fn delete_domain_mapping(&self, namespace: &str, domain: &str) -> Result<DomainMapping> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let record: Option<String> = tx
            .query_row(
                "SELECT record FROM domain_mappings WHERE domain = ?1 AND namespace = ?2",
                params![domain, namespace],
                |row| row.get(0),
            )
            .optional()?;
        let Some(record) = record else {
            return Err(not_found("domain mapping", namespace, domain));
        };
        tx.execute("DELETE FROM domain_mappings WHERE domain = ?1", params![domain])?;
        let mut changes = Changes::begin(&tx)?;
        changes.delete(Kind::DomainMapping, namespace, domain);
        self.commit_write(tx, changes)?;
        Ok(serde_json::from_str(&record)?)
    }
}
