//! Triggers, brokers, accepted events and their deliveries.
//!
//! Specs and events are stored as the JSON the events crate writes; this layer keeps
//! the durability rules: an accepted event and its deliveries are written in one
//! transaction, a cron firing moves its cursor in the same transaction that queues its
//! delivery, and a delivery's outcome (with the reply or dead letter it starts) is one
//! transaction too. A crash at any point leaves each delivery pending or finished.

use rusqlite::{params, OptionalExtension, TransactionBehavior};
use serde::Serialize;

use crate::changelog::Changes;
pub use crate::records::{BrokerRecord, TriggerRecord};
use crate::sqlite::SqliteStore;
use crate::watch::{Kind, Resource};
use crate::{Result, StoreError};

pub const PENDING: &str = "pending";
pub const DELIVERED: &str = "delivered";
pub const DEAD_LETTERED: &str = "dead-lettered";
pub const FAILED: &str = "failed";

/// A delivery to queue: one event to one destination under one policy.
#[derive(Clone, Debug)]
pub struct NewDelivery {
    pub trigger: String,
    pub event: String,
    pub target: String,
    pub policy: String,
    pub dead_letter: bool,
    /// The broker a reply goes back into (event triggers only).
    pub broker: Option<String>,
    pub scheduled_at_us: Option<i64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DeliveryRecord {
    pub id: i64,
    pub namespace: String,
    pub trigger: String,
    pub dead_letter: bool,
    pub event: String,
    pub target: String,
    pub policy: String,
    pub broker: Option<String>,
    pub scheduled_at_us: Option<i64>,
    pub attempts: u32,
    pub status: String,
    pub next_at_us: i64,
    pub last_error: Option<String>,
    pub created_at_us: i64,
    pub updated_at_us: i64,
}

/// Events accepted into a broker, each with the deliveries its triggers want.
pub struct Accepted {
    pub event: String,
    pub deliveries: Vec<NewDelivery>,
}

/// One write of a group commit.
pub enum Write {
    Accept {
        namespace: String,
        broker: String,
        events: Vec<Accepted>,
    },
    Finish {
        id: i64,
        namespace: String,
        outcome: Outcome,
    },
}

pub enum Outcome {
    Delivered { reply: Option<Accepted> },
    Retry { next_at_us: i64, error: String },
    Failed { error: String },
    DeadLettered { error: String, dead_letter: NewDelivery },
}

pub trait EventStore: Send + Sync + 'static {
    /// Creates or replaces a trigger; returns whether it is new. A replaced cron
    /// trigger keeps its cursor, so editing it does not fire a tick twice.
    fn put_trigger(&self, namespace: &str, name: &str, kind: &str, spec: &str, now_us: i64) -> Result<bool>;
    fn triggers(&self, namespace: Option<&str>) -> Result<Vec<TriggerRecord>>;
    fn trigger(&self, namespace: &str, name: &str) -> Result<Option<TriggerRecord>>;
    /// Deletes a trigger and its pending deliveries; its history stays.
    fn delete_trigger(&self, namespace: &str, name: &str) -> Result<()>;

    fn put_broker(&self, namespace: &str, name: &str, delivery: Option<&str>, now_us: i64) -> Result<bool>;
    fn brokers(&self, namespace: Option<&str>) -> Result<Vec<BrokerRecord>>;
    fn delete_broker(&self, namespace: &str, name: &str) -> Result<()>;

    /// Stores accepted events and their deliveries in one transaction.
    fn accept(&self, namespace: &str, broker: &str, events: Vec<Accepted>, now_us: i64) -> Result<()>;
    /// Moves a cron trigger's cursor forward and queues its firing, atomically. Returns
    /// false (and does nothing) when the cursor is already there, or the trigger is gone.
    fn fire(
        &self,
        namespace: &str,
        name: &str,
        cursor_us: i64,
        firing: Option<NewDelivery>,
        now_us: i64,
    ) -> Result<bool>;

    /// Queues a webhook's event unless its delivery id was taken before, atomically;
    /// false (and nothing queued) for a replay.
    fn receive_once(
        &self,
        namespace: &str,
        source: &str,
        delivery_id: &str,
        delivery: &NewDelivery,
        now_us: i64,
    ) -> Result<bool>;

    /// Pending deliveries due by `now_us`, oldest first.
    fn due_deliveries(&self, now_us: i64, limit: usize) -> Result<Vec<DeliveryRecord>>;
    /// When the earliest pending delivery is due.
    fn next_due_us(&self) -> Result<Option<i64>>;
    /// Records one attempt's outcome, with the reply or dead letter it starts.
    fn finish(&self, id: i64, namespace: &str, outcome: Outcome, now_us: i64) -> Result<()>;
    /// Several accepts and outcomes in one transaction: one sync to disk for all, so
    /// writers that arrive together share it (group commit).
    fn write(&self, writes: Vec<Write>, now_us: i64) -> Result<()>;
    /// A trigger's deliveries, newest first.
    fn deliveries(&self, namespace: &str, trigger: &str, limit: usize) -> Result<Vec<DeliveryRecord>>;
    /// Deliveries by status of each trigger of a namespace: (trigger, status, count).
    fn delivery_counts(&self, namespace: &str) -> Result<Vec<(String, String, u64)>>;
    /// Keeps a delivery made outside the queue (a queue message, acknowledged at its
    /// source) in its trigger's history.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        namespace: &str,
        delivery: &NewDelivery,
        status: &str,
        attempts: u32,
        error: Option<&str>,
        now_us: i64,
    ) -> Result<()>;
    /// Forgets finished deliveries and accepted events older than `before_us`.
    fn prune_events(&self, before_us: i64) -> Result<usize>;
}

const TRIGGER_COLUMNS: &str = "namespace, name, kind, spec, created_at_us, updated_at_us, cursor_us";

fn read_trigger(row: &rusqlite::Row<'_>) -> rusqlite::Result<TriggerRecord> {
    Ok(TriggerRecord {
        namespace: row.get(0)?,
        name: row.get(1)?,
        kind: row.get(2)?,
        spec: row.get(3)?,
        created_at_us: row.get(4)?,
        updated_at_us: row.get(5)?,
        cursor_us: row.get(6)?,
    })
}

const DELIVERY_COLUMNS: &str = "id, namespace, trigger, dead_letter, event, target, policy, broker, scheduled_at_us,
    attempts, status, next_at_us, last_error, created_at_us, updated_at_us";

fn read_delivery(row: &rusqlite::Row<'_>) -> rusqlite::Result<DeliveryRecord> {
    Ok(DeliveryRecord {
        id: row.get(0)?,
        namespace: row.get(1)?,
        trigger: row.get(2)?,
        dead_letter: row.get::<_, i64>(3)? != 0,
        event: row.get(4)?,
        target: row.get(5)?,
        policy: row.get(6)?,
        broker: row.get(7)?,
        scheduled_at_us: row.get(8)?,
        attempts: row.get::<_, i64>(9)? as u32,
        status: row.get(10)?,
        next_at_us: row.get(11)?,
        last_error: row.get(12)?,
        created_at_us: row.get(13)?,
        updated_at_us: row.get(14)?,
    })
}

fn insert_delivery(tx: &rusqlite::Transaction<'_>, namespace: &str, d: &NewDelivery, now_us: i64) -> Result<()> {
    tx.execute(
        "INSERT INTO deliveries (namespace, trigger, dead_letter, event, target, policy, broker, scheduled_at_us,
            status, next_at_us, created_at_us, updated_at_us)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?10)",
        params![
            namespace,
            d.trigger,
            d.dead_letter as i64,
            d.event,
            d.target,
            d.policy,
            d.broker,
            d.scheduled_at_us,
            PENDING,
            now_us
        ],
    )?;
    Ok(())
}

fn insert_accepted(
    tx: &rusqlite::Transaction<'_>,
    namespace: &str,
    broker: &str,
    accepted: &Accepted,
    now_us: i64,
) -> Result<()> {
    tx.execute(
        "INSERT INTO events (namespace, broker, event, received_at_us) VALUES (?1, ?2, ?3, ?4)",
        params![namespace, broker, accepted.event, now_us],
    )?;
    for d in &accepted.deliveries {
        insert_delivery(tx, namespace, d, now_us)?;
    }
    Ok(())
}

/// Records one attempt's outcome inside `tx`; a delivery already finished is left as
/// it is.
fn finish_in(tx: &rusqlite::Transaction<'_>, id: i64, namespace: &str, outcome: &Outcome, now_us: i64) -> Result<()> {
    let (status, next_at, error) = match outcome {
        Outcome::Delivered { .. } => (DELIVERED, None, None),
        Outcome::Retry { next_at_us, error } => (PENDING, Some(*next_at_us), Some(error.as_str())),
        Outcome::Failed { error } => (FAILED, None, Some(error.as_str())),
        Outcome::DeadLettered { error, .. } => (DEAD_LETTERED, None, Some(error.as_str())),
    };
    let updated = tx.execute(
        "UPDATE deliveries SET attempts = attempts + 1, status = ?2, next_at_us = coalesce(?3, next_at_us),
            last_error = coalesce(?4, last_error), updated_at_us = ?5
         WHERE id = ?1 AND status = ?6",
        params![id, status, next_at, error, now_us, PENDING],
    )?;
    if updated == 1 {
        match outcome {
            Outcome::Delivered { reply: Some(reply) } => {
                let broker: Option<String> =
                    tx.query_row("SELECT broker FROM deliveries WHERE id = ?1", params![id], |row| {
                        row.get(0)
                    })?;
                if let Some(broker) = broker {
                    insert_accepted(tx, namespace, &broker, reply, now_us)?;
                }
            }
            Outcome::DeadLettered { dead_letter, .. } => insert_delivery(tx, namespace, dead_letter, now_us)?,
            _ => {}
        }
    }
    Ok(())
}

const BROKER_COLUMNS: &str = "namespace, name, delivery, created_at_us";

fn read_broker(row: &rusqlite::Row<'_>) -> rusqlite::Result<BrokerRecord> {
    Ok(BrokerRecord {
        namespace: row.get(0)?,
        name: row.get(1)?,
        delivery: row.get(2)?,
        created_at_us: row.get(3)?,
    })
}

fn not_found(kind: &'static str, namespace: &str, name: &str) -> StoreError {
    StoreError::NotFound {
        kind,
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}

impl EventStore for SqliteStore {
    fn put_trigger(&self, namespace: &str, name: &str, kind: &str, spec: &str, now_us: i64) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if !crate::sqlite::namespace_exists(&tx, namespace)? {
            return Err(StoreError::NoSuchNamespace(namespace.to_string()));
        }
        let old_kind: Option<String> = tx
            .query_row(
                "SELECT kind FROM triggers WHERE namespace = ?1 AND name = ?2",
                params![namespace, name],
                |row| row.get(0),
            )
            .optional()?;
        match &old_kind {
            Some(old) => {
                // A trigger that changes kind starts afresh: a cron cursor means nothing to it.
                let keep_cursor = old == kind;
                tx.execute(
                    "UPDATE triggers SET kind = ?3, spec = ?4, updated_at_us = ?5,
                        cursor_us = CASE WHEN ?6 THEN cursor_us ELSE ?5 END
                     WHERE namespace = ?1 AND name = ?2",
                    params![namespace, name, kind, spec, now_us, keep_cursor],
                )?;
            }
            None => {
                tx.execute(
                    "INSERT INTO triggers (namespace, name, kind, spec, created_at_us, updated_at_us, cursor_us)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?5)",
                    params![namespace, name, kind, spec, now_us],
                )?;
            }
        }
        let written = tx.query_row(
            &format!("SELECT {TRIGGER_COLUMNS} FROM triggers WHERE namespace = ?1 AND name = ?2"),
            params![namespace, name],
            read_trigger,
        )?;
        let mut changes = Changes::begin(&tx)?;
        changes.put(Resource::Trigger(written));
        self.commit_write(tx, changes)?;
        Ok(old_kind.is_none())
    }

    fn triggers(&self, namespace: Option<&str>) -> Result<Vec<TriggerRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {TRIGGER_COLUMNS} FROM triggers WHERE (?1 IS NULL OR namespace = ?1) ORDER BY namespace, name"
        ))?;
        let rows = stmt.query_map(params![namespace], read_trigger)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn trigger(&self, namespace: &str, name: &str) -> Result<Option<TriggerRecord>> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                &format!("SELECT {TRIGGER_COLUMNS} FROM triggers WHERE namespace = ?1 AND name = ?2"),
                params![namespace, name],
                read_trigger,
            )
            .optional()?)
    }

    fn delete_trigger(&self, namespace: &str, name: &str) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let removed = tx.execute(
            "DELETE FROM triggers WHERE namespace = ?1 AND name = ?2",
            params![namespace, name],
        )?;
        if removed == 0 {
            return Err(not_found("trigger", namespace, name));
        }
        tx.execute(
            "DELETE FROM deliveries WHERE namespace = ?1 AND trigger = ?2 AND status = ?3",
            params![namespace, name, PENDING],
        )?;
        let mut changes = Changes::begin(&tx)?;
        changes.delete(Kind::Trigger, namespace, name);
        self.commit_write(tx, changes)?;
        Ok(())
    }

    fn put_broker(&self, namespace: &str, name: &str, delivery: Option<&str>, now_us: i64) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if !crate::sqlite::namespace_exists(&tx, namespace)? {
            return Err(StoreError::NoSuchNamespace(namespace.to_string()));
        }
        let existing = tx
            .query_row(
                &format!("SELECT {BROKER_COLUMNS} FROM brokers WHERE namespace = ?1 AND name = ?2"),
                params![namespace, name],
                read_broker,
            )
            .optional()?;
        tx.execute(
            "INSERT INTO brokers (namespace, name, delivery, created_at_us) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (namespace, name) DO UPDATE SET delivery = excluded.delivery",
            params![namespace, name, delivery, now_us],
        )?;
        let written = BrokerRecord {
            namespace: namespace.to_string(),
            name: name.to_string(),
            delivery: delivery.map(str::to_string),
            created_at_us: existing.as_ref().map_or(now_us, |b| b.created_at_us),
        };
        let mut changes = Changes::begin(&tx)?;
        changes.put(Resource::Broker(written));
        self.commit_write(tx, changes)?;
        Ok(existing.is_none())
    }

    fn brokers(&self, namespace: Option<&str>) -> Result<Vec<BrokerRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {BROKER_COLUMNS} FROM brokers WHERE (?1 IS NULL OR namespace = ?1) ORDER BY namespace, name"
        ))?;
        let rows = stmt.query_map(params![namespace], read_broker)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn delete_broker(&self, namespace: &str, name: &str) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let removed = tx.execute(
            "DELETE FROM brokers WHERE namespace = ?1 AND name = ?2",
            params![namespace, name],
        )?;
        if removed == 0 {
            return Err(not_found("broker", namespace, name));
        }
        let mut changes = Changes::begin(&tx)?;
        changes.delete(Kind::Broker, namespace, name);
        self.commit_write(tx, changes)?;
        Ok(())
    }

    fn accept(&self, namespace: &str, broker: &str, events: Vec<Accepted>, now_us: i64) -> Result<()> {
        self.write(
            vec![Write::Accept {
                namespace: namespace.to_string(),
                broker: broker.to_string(),
                events,
            }],
            now_us,
        )
    }

    fn fire(
        &self,
        namespace: &str,
        name: &str,
        cursor_us: i64,
        firing: Option<NewDelivery>,
        now_us: i64,
    ) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let moved = tx.execute(
            "UPDATE triggers SET cursor_us = ?3
             WHERE namespace = ?1 AND name = ?2 AND (cursor_us IS NULL OR cursor_us < ?3)",
            params![namespace, name, cursor_us],
        )?;
        if moved == 0 {
            return Ok(false);
        }
        if let Some(firing) = &firing {
            insert_delivery(&tx, namespace, firing, now_us)?;
        }
        tx.commit()?;
        Ok(true)
    }

    fn receive_once(
        &self,
        namespace: &str,
        source: &str,
        delivery_id: &str,
        delivery: &NewDelivery,
        now_us: i64,
    ) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let new = tx.execute(
            "INSERT OR IGNORE INTO webhook_receipts (namespace, source, delivery_id, received_at_us)
             VALUES (?1, ?2, ?3, ?4)",
            params![namespace, source, delivery_id, now_us],
        )?;
        if new == 0 {
            return Ok(false);
        }
        insert_delivery(&tx, namespace, delivery, now_us)?;
        tx.commit()?;
        Ok(true)
    }

    fn due_deliveries(&self, now_us: i64, limit: usize) -> Result<Vec<DeliveryRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE status = ?1 AND next_at_us <= ?2
             ORDER BY next_at_us, id LIMIT ?3"
        ))?;
        let rows = stmt.query_map(params![PENDING, now_us, limit as i64], read_delivery)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn next_due_us(&self) -> Result<Option<i64>> {
        let conn = self.conn();
        Ok(conn.query_row(
            "SELECT min(next_at_us) FROM deliveries WHERE status = ?1",
            params![PENDING],
            |row| row.get(0),
        )?)
    }

    fn finish(&self, id: i64, namespace: &str, outcome: Outcome, now_us: i64) -> Result<()> {
        self.write(
            vec![Write::Finish {
                id,
                namespace: namespace.to_string(),
                outcome,
            }],
            now_us,
        )
    }

    fn write(&self, writes: Vec<Write>, now_us: i64) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for write in &writes {
            match write {
                Write::Accept {
                    namespace,
                    broker,
                    events,
                } => {
                    for accepted in events {
                        insert_accepted(&tx, namespace, broker, accepted, now_us)?;
                    }
                }
                Write::Finish { id, namespace, outcome } => finish_in(&tx, *id, namespace, outcome, now_us)?,
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn deliveries(&self, namespace: &str, trigger: &str, limit: usize) -> Result<Vec<DeliveryRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE namespace = ?1 AND trigger = ?2
             ORDER BY id DESC LIMIT ?3"
        ))?;
        let rows = stmt.query_map(params![namespace, trigger, limit as i64], read_delivery)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn delivery_counts(&self, namespace: &str) -> Result<Vec<(String, String, u64)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT trigger, status, count(*) FROM deliveries WHERE namespace = ?1 AND dead_letter = 0
             GROUP BY trigger, status",
        )?;
        let rows = stmt.query_map(params![namespace], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get::<_, i64>(2)? as u64))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn record(
        &self,
        namespace: &str,
        d: &NewDelivery,
        status: &str,
        attempts: u32,
        error: Option<&str>,
        now_us: i64,
    ) -> Result<()> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO deliveries (namespace, trigger, dead_letter, event, target, policy, broker, scheduled_at_us,
                attempts, status, next_at_us, last_error, created_at_us, updated_at_us)
             VALUES (?1, ?2, 0, ?3, ?4, ?5, NULL, NULL, ?6, ?7, ?8, ?9, ?8, ?8)",
            params![
                namespace,
                d.trigger,
                d.event,
                d.target,
                d.policy,
                attempts as i64,
                status,
                now_us,
                error
            ],
        )?;
        Ok(())
    }

    fn prune_events(&self, before_us: i64) -> Result<usize> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut removed = tx.execute(
            "DELETE FROM deliveries WHERE status != ?1 AND updated_at_us < ?2",
            params![PENDING, before_us],
        )?;
        removed += tx.execute("DELETE FROM events WHERE received_at_us < ?1", params![before_us])?;
        // A delivery id is refused as a replay for as long as history is kept.
        removed += tx.execute(
            "DELETE FROM webhook_receipts WHERE received_at_us < ?1",
            params![before_us],
        )?;
        tx.commit()?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db"), 1).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn trigger_and_broker_changes_are_in_the_change_log() {
        use crate::watch::{Change, Kind, Resource, WatchFilter};
        use crate::Store;

        let (_dir, store) = store();
        let start = store.current_revision().await.unwrap();
        store.put_trigger("default", "tick", "cron", "{}", 1).unwrap();
        store.put_trigger("default", "tick", "cron", "{\"x\":1}", 2).unwrap();
        store.put_broker("default", "orders", None, 3).unwrap();
        store.delete_trigger("default", "tick").unwrap();
        store.delete_broker("default", "orders").unwrap();
        assert!(store.delete_broker("default", "orders").is_err());
        let page = store.changes_after(start, &WatchFilter::default(), 100).await.unwrap();
        let seen: Vec<(u64, Kind, bool)> = page
            .events
            .iter()
            .map(|e| (e.revision - start, e.change.kind(), matches!(e.change, Change::Put(_))))
            .collect();
        assert_eq!(
            seen,
            [
                (1, Kind::Trigger, true),
                (2, Kind::Trigger, true),
                (3, Kind::Broker, true),
                (4, Kind::Trigger, false),
                (5, Kind::Broker, false),
            ],
            "one revision per write, and a refused delete writes none"
        );
        assert!(
            matches!(&page.events[1].change, Change::Put(Resource::Trigger(t)) if t.spec == "{\"x\":1}" && t.created_at_us == 1),
            "a put carries the record as written"
        );
        let brokers = store
            .changes_after(start, &WatchFilter::kind(Kind::Broker), 100)
            .await
            .unwrap();
        assert_eq!(brokers.events.len(), 2);
    }

    fn delivery(trigger: &str) -> NewDelivery {
        NewDelivery {
            trigger: trigger.into(),
            event: "{}".into(),
            target: "{}".into(),
            policy: "{}".into(),
            dead_letter: false,
            broker: Some("default".into()),
            scheduled_at_us: None,
        }
    }

    #[test]
    fn a_cron_cursor_fires_each_time_once() {
        let (_dir, store) = store();
        assert!(store.put_trigger("default", "tick", "cron", "{}", 10).unwrap());
        assert!(store.fire("default", "tick", 20, Some(delivery("tick")), 21).unwrap());
        assert!(
            !store.fire("default", "tick", 20, Some(delivery("tick")), 22).unwrap(),
            "same time twice"
        );
        assert!(
            !store.fire("default", "tick", 15, Some(delivery("tick")), 22).unwrap(),
            "backwards"
        );
        assert_eq!(store.deliveries("default", "tick", 10).unwrap().len(), 1);
        assert!(!store.put_trigger("default", "tick", "cron", "{\"x\":1}", 30).unwrap());
        assert_eq!(
            store.trigger("default", "tick").unwrap().unwrap().cursor_us,
            Some(20),
            "kept on edit"
        );
        assert!(matches!(
            store.put_trigger("nope", "t", "cron", "{}", 1),
            Err(StoreError::NoSuchNamespace(_))
        ));
    }

    #[test]
    fn outcomes_move_deliveries_and_start_replies_and_dead_letters() {
        let (_dir, store) = store();
        store.put_trigger("default", "t", "event", "{}", 1).unwrap();
        let accepted = Accepted {
            event: "{\"id\":\"1\"}".into(),
            deliveries: vec![delivery("t"), delivery("t")],
        };
        store.accept("default", "default", vec![accepted], 5).unwrap();
        let due = store.due_deliveries(5, 10).unwrap();
        assert_eq!(due.len(), 2);
        store
            .finish(
                due[0].id,
                "default",
                Outcome::Retry {
                    next_at_us: 100,
                    error: "503".into(),
                },
                6,
            )
            .unwrap();
        assert_eq!(store.due_deliveries(50, 10).unwrap().len(), 1);
        assert_eq!(store.next_due_us().unwrap(), Some(5));
        let reply = Accepted {
            event: "{\"id\":\"r\"}".into(),
            deliveries: vec![delivery("t")],
        };
        store
            .finish(due[1].id, "default", Outcome::Delivered { reply: Some(reply) }, 7)
            .unwrap();
        let mut dl = delivery("t");
        dl.dead_letter = true;
        store
            .finish(
                due[0].id,
                "default",
                Outcome::DeadLettered {
                    error: "gave up".into(),
                    dead_letter: dl,
                },
                101,
            )
            .unwrap();
        // A second outcome for a finished delivery changes nothing.
        store
            .finish(due[0].id, "default", Outcome::Failed { error: "late".into() }, 102)
            .unwrap();
        let history = store.deliveries("default", "t", 10).unwrap();
        let statuses: Vec<_> = history
            .iter()
            .map(|d| (d.status.as_str(), d.attempts, d.dead_letter))
            .collect();
        assert_eq!(
            statuses,
            vec![
                (PENDING, 0, true),
                (PENDING, 0, false),
                (DELIVERED, 1, false),
                (DEAD_LETTERED, 2, false)
            ]
        );
        assert_eq!(history[3].last_error.as_deref(), Some("gave up"));
        store.delete_trigger("default", "t").unwrap();
        assert_eq!(
            store.due_deliveries(i64::MAX, 10).unwrap().len(),
            0,
            "pending ones go with the trigger"
        );
        assert_eq!(store.deliveries("default", "t", 10).unwrap().len(), 2, "history stays");
        assert!(matches!(
            store.delete_trigger("default", "t"),
            Err(StoreError::NotFound { .. })
        ));
        assert_eq!(store.prune_events(i64::MAX).unwrap(), 4);
    }

    #[test]
    fn a_group_commit_writes_all_or_nothing() {
        let (_dir, store) = store();
        store.put_trigger("default", "t", "event", "{}", 1).unwrap();
        let accept = |id: &str| Write::Accept {
            namespace: "default".into(),
            broker: "default".into(),
            events: vec![Accepted {
                event: format!("{{\"id\":\"{id}\"}}"),
                deliveries: vec![delivery("t")],
            }],
        };
        store.write(vec![accept("a"), accept("b")], 2).unwrap();
        assert_eq!(store.due_deliveries(2, 10).unwrap().len(), 2);
        // One bad write fails the group: nothing of it is kept.
        let bad = Write::Accept {
            namespace: "default".into(),
            broker: "default".into(),
            events: vec![Accepted {
                event: "{}".into(),
                deliveries: vec![NewDelivery {
                    event: String::new(),
                    ..delivery("t")
                }],
            }],
        };
        let conn = store.conn();
        conn.execute_batch("CREATE TRIGGER no_empty BEFORE INSERT ON deliveries WHEN NEW.event = '' BEGIN SELECT RAISE(ABORT, 'empty'); END;")
            .unwrap();
        drop(conn);
        assert!(store.write(vec![accept("c"), bad], 3).is_err());
        assert_eq!(
            store.due_deliveries(3, 10).unwrap().len(),
            2,
            "c was rolled back with the bad write"
        );
    }
}
