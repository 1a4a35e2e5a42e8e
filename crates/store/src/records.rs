//! The event side's configuration as stored: triggers and brokers.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TriggerRecord {
    pub namespace: String,
    pub name: String,
    pub kind: String,
    pub spec: String,
    pub created_at_us: i64,
    pub updated_at_us: i64,
    /// For cron: the latest scheduled time fired or skipped.
    pub cursor_us: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BrokerRecord {
    pub namespace: String,
    pub name: String,
    pub delivery: Option<String>,
    pub created_at_us: i64,
}
