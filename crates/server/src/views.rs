//! What the REST API returns; the CLI reads the same types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a client may want to know about the server before it sends work.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InfoView {
    pub version: String,
    pub domain: String,
    pub gateway: String,
    pub max_package_bytes: u64,
    pub max_unpacked_bytes: u64,
    pub cgroup: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PackageView {
    pub digest: String,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NamespaceView {
    pub name: String,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CgroupView {
    pub version: String,
    pub paths: Vec<String>,
    /// The memory limit as the kernel holds it, in bytes or `max`.
    pub memory_limit: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceView {
    pub id: String,
    pub pid: u32,
    pub port: u16,
    /// `starting`, `ready` or `stopping`.
    pub state: String,
    pub started_at: String,
    pub in_flight: u32,
    pub cgroup: Option<CgroupView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ColdStartView {
    pub at: String,
    pub instance: String,
    /// From starting the process to its first accepted connection.
    pub ready_ms: f64,
    /// What asked for the instance: `request` or `deploy`.
    pub cause: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevisionView {
    pub name: String,
    pub created_at: String,
    pub package: String,
    pub command: Vec<String>,
    pub command_source: String,
    pub env: BTreeMap<String, String>,
    pub memory: Option<String>,
    pub cpu: Option<String>,
    pub scale_to_zero_after: String,
    pub routed: bool,
    pub instances: Vec<InstanceView>,
    pub last_cold_start: Option<ColdStartView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceView {
    pub namespace: String,
    pub name: String,
    pub url: String,
    pub latest_revision: String,
    pub ready_instances: usize,
    pub created_at: String,
    pub updated_at: String,
    /// Filled in when one service is described; empty in listings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revisions: Vec<RevisionView>,
    pub last_cold_start: Option<ColdStartView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogLineView {
    pub time: String,
    pub revision: String,
    pub instance: String,
    pub stream: String,
    pub line: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub continued: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: u16,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

pub fn rfc3339_us(us: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(us.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}
