//! The tables of the event side: triggers, brokers, accepted events, deliveries, and
//! the delivery ids webhooks have taken.

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS triggers (
    namespace TEXT NOT NULL REFERENCES namespaces(name),
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    spec TEXT NOT NULL,
    created_at_us INTEGER NOT NULL,
    updated_at_us INTEGER NOT NULL,
    cursor_us INTEGER,
    PRIMARY KEY (namespace, name)
);
CREATE TABLE IF NOT EXISTS brokers (
    namespace TEXT NOT NULL REFERENCES namespaces(name),
    name TEXT NOT NULL,
    delivery TEXT,
    created_at_us INTEGER NOT NULL,
    PRIMARY KEY (namespace, name)
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace TEXT NOT NULL,
    broker TEXT NOT NULL,
    event TEXT NOT NULL,
    received_at_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace TEXT NOT NULL,
    trigger TEXT NOT NULL,
    dead_letter INTEGER NOT NULL DEFAULT 0,
    event TEXT NOT NULL,
    target TEXT NOT NULL,
    policy TEXT NOT NULL,
    scheduled_at_us INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    next_at_us INTEGER NOT NULL,
    last_error TEXT,
    created_at_us INTEGER NOT NULL,
    updated_at_us INTEGER NOT NULL,
    broker TEXT
);
CREATE TABLE IF NOT EXISTS webhook_receipts (
    namespace TEXT NOT NULL,
    source TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    received_at_us INTEGER NOT NULL,
    PRIMARY KEY (namespace, source, delivery_id)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(status, next_at_us);
CREATE INDEX IF NOT EXISTS deliveries_by_trigger ON deliveries(namespace, trigger, id);
";
