//! What the REST API returns; the CLI reads the same types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use updraft_model::{NamespaceLimits, TrafficTarget};
use utoipa::ToSchema;

/// What a client may want to know about the server before it sends work.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InfoView {
    pub version: String,
    pub domain: String,
    pub gateway: String,
    pub max_package_bytes: u64,
    pub max_unpacked_bytes: u64,
    /// Largest image archive `POST /v1/images` takes.
    #[serde(default)]
    pub max_image_bytes: u64,
    pub cgroup: String,
    /// Pre-warmed stem cells ready now, and the memory they hold.
    pub pool_size: usize,
    pub pool_memory_bytes: u64,
    /// Access records the log writer could not keep up with.
    pub access_log_dropped: u64,
    /// WebAssembly components with compiled state in memory (revisions not at zero).
    #[serde(default)]
    pub wasm_components_loaded: usize,
    /// Whether wasm instances come from the pooling allocator (else on demand).
    #[serde(default)]
    pub wasm_pooling: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PackageView {
    pub digest: String,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NamespaceView {
    pub name: String,
    pub created_at: String,
    #[serde(default)]
    pub limits: NamespaceLimits,
    /// What it uses of its quotas; given when one namespace is asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<NamespaceUsage>,
}

/// A namespace's use, against its quotas.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct NamespaceUsage {
    pub services: usize,
    /// The largest package or component its revisions run, in bytes.
    pub largest_package_bytes: u64,
    /// What its instances running now hold, against the quotas on them.
    #[serde(default)]
    pub running: updraft_model::RunningUse,
    /// The CPUs its instances run on: its own when exclusive, else the shared ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CgroupView {
    pub version: String,
    pub paths: Vec<String>,
    /// The memory limit as the kernel holds it, in bytes or `max`.
    pub memory_limit: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ColdStartView {
    pub at: String,
    pub instance: String,
    /// From starting the process to its first accepted connection.
    pub ready_ms: f64,
    /// What asked for the instance: `request`, `deploy` or `pre-warm`.
    pub cause: String,
    /// Whether a pre-warmed stem cell became the instance.
    #[serde(default)]
    pub from_pool: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RevisionView {
    pub name: String,
    pub generation: u32,
    pub created_at: String,
    /// What runs it: `process`, `python3`, `node`, `wasm` or `oci`.
    pub runtime: String,
    /// The template's image: a package, component, registry reference or `oci:` digest.
    pub image: String,
    /// The digest of what runs: a package archive, a component, or an image manifest.
    pub package: String,
    pub command: Vec<String>,
    pub command_source: String,
    pub env: BTreeMap<String, String>,
    pub memory: Option<String>,
    pub cpu: Option<String>,
    pub scale_to_zero_after: String,
    /// Requests one instance takes at once; 0 means no limit.
    pub container_concurrency: u32,
    pub timeout_seconds: u32,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Share of the service's requests it gets now.
    pub traffic_percent: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Whether any request can reach it (by share or by tag).
    pub routed: bool,
    pub ready_instances: usize,
    /// Requests being answered by its instances now.
    pub in_flight: u32,
    /// Requests held in the gateway for an instance or a free slot.
    pub waiting: u32,
    pub instances: Vec<InstanceView>,
    pub last_cold_start: Option<ColdStartView>,
    /// Its latest scale events, newest last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scale_events: Vec<ScaleEventView>,
    /// Set while its instances fail in a row (Kubernetes' CrashLoopBackOff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash_loop: Option<CrashLoopView>,
}

/// A revision whose instances keep failing.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CrashLoopView {
    /// Failures in a row.
    pub failures: u32,
    /// How the last one went: its exit code or signal, and when in its life.
    pub last_failure: String,
    pub last_failure_at: String,
    /// No instance starts before this time, when starts are held back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_start_at: Option<String>,
}

/// A decision that changed a revision's instance count.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScaleEventView {
    pub at: String,
    pub revision: String,
    pub from: u32,
    pub to: u32,
    /// `activation`, `stable window`, `panic window`, `scale-down delay`, `min/max scale`,
    /// `initial scale`, `idle`, `unrouted` or `starting`.
    pub reason: String,
    /// `concurrency` or `rps`.
    pub metric: String,
    /// The metric averaged over the stable and panic windows when deciding.
    pub stable: f64,
    pub panic: f64,
    pub panicking: bool,
    /// What happened, for an instance that failed (`reason` is `instance failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Where requests go now: one row per revision with a share or a tag.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RouteView {
    pub revision: String,
    pub percent: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The tags' own URLs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RolloutView {
    pub from: String,
    pub to: String,
    /// The new revision's share of the `latest` rows now.
    pub percent: u32,
    pub started_at: String,
    pub duration: String,
}

/// One step of a deploy a client watches (`PUT …/services/{name}?watch=true`): one
/// JSON object per line, as the steps happen.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeployEventView {
    /// `accepted` (names and settings hold; refusals before it are the request's
    /// answer), `build`, `output` (a line the build printed), `pull`, `compile`,
    /// `start`, `ready`, then `done` or `failed`.
    pub phase: String,
    /// What the step is about, or one line of the build's output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// `pull`: bytes fetched so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Milliseconds since the deploy began.
    pub elapsed_ms: f64,
    /// `done`: the service as deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<Box<ServiceView>>,
    /// `failed`: the error the deploy answers with when not watched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServiceView {
    pub namespace: String,
    pub name: String,
    pub url: String,
    pub latest_revision: String,
    pub ready_instances: usize,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The traffic table as set.
    pub traffic: Vec<TrafficTarget>,
    /// The table resolved: `latest` and any rollout turned into revision names.
    pub routes: Vec<RouteView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutView>,
    /// Filled in when one service is described; empty in listings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revisions: Vec<RevisionView>,
    pub last_cold_start: Option<ColdStartView>,
}

/// What an apply did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApplyView {
    /// `created`, `configured` or `unchanged`, as kubectl says.
    pub result: String,
    /// The revision the apply made, if it made one.
    pub revision: Option<String>,
    pub service: ServiceView,
}

/// What `POST /v1/apply` answers, by the kind of document applied.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ApplyResult {
    Service(Box<ApplyView>),
    /// A PingSource, Trigger or Broker.
    Other(AppliedView),
}

/// One request through the gateway.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AccessLineView {
    pub time: String,
    pub revision: String,
    pub instance: Option<String>,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub duration_ms: f64,
    /// It waited for an instance to start.
    pub cold: bool,
    pub traceparent: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LogLineView {
    pub time: String,
    pub revision: String,
    pub instance: String,
    pub stream: String,
    pub line: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub continued: bool,
    /// The line's fields, when it is a JSON object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// An image in the server's store.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ImageView {
    /// `sha256:…` of the image manifest.
    pub digest: String,
    /// How a deploy names it: `oci:sha256:…`.
    pub reference: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    /// Bytes of its (compressed) layers.
    pub size: u64,
}

/// How far one blob of a pull has come, for progress bars.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PullProgress {
    /// `config`, `layer 2/5`.
    pub what: String,
    pub digest: String,
    pub done: u64,
    pub total: u64,
    /// Already in the store: nothing was transferred.
    pub cached: bool,
}

/// One line of `POST /v1/images/pull`'s answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PullLine {
    Progress(PullProgress),
    Image(ImageView),
    Error(ErrorBody),
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RegistryView {
    pub registry: String,
    pub username: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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

/// One row of `updraft top`: a service's load over the last seconds.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TopView {
    pub namespace: String,
    pub service: String,
    pub requests_per_second: f64,
    /// Requests answered in the window, and their latency.
    pub requests: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub in_flight: u32,
    pub waiting: u32,
    pub instances: usize,
    pub ready: usize,
    /// Since the server started.
    pub cold_starts: u64,
}

/// Metered usage, summed by the key asked for.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct UsageView {
    pub namespace: String,
    /// Set when summed by service or revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Set when summed by day (UTC, `YYYY-MM-DD`) or hour (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    pub vcpu_seconds: f64,
    pub gib_seconds: f64,
    pub cpu_seconds: f64,
    pub invocations: u64,
    pub request_gb_seconds: f64,
}

/// A trigger: a cron schedule, a broker filter or a queue source.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TriggerView {
    pub namespace: String,
    pub name: String,
    /// `cron`, `event` or `nats`.
    pub kind: String,
    /// What it fires: the schedule, the broker and filter, or the subject.
    pub source: String,
    /// Where events go: a service (with its path) or a URI.
    pub target: String,
    /// Cron only: the next scheduled time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_fire: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fired: Option<String>,
    pub created_at: String,
    /// Deliveries by status: pending, delivered, dead-lettered, failed.
    pub deliveries: BTreeMap<String, u64>,
    pub spec: serde_json::Value,
}

/// One event's delivery by a trigger: a cron firing, a broker event, a dead letter.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryView {
    pub id: i64,
    pub event_id: String,
    pub event_type: String,
    /// Cron only: the scheduled time this firing is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled: Option<String>,
    /// `pending`, `retrying`, `delivered`, `dead-lettered` or `failed`.
    pub status: String,
    pub attempts: u32,
    /// A dead letter: the event sent to the dead-letter sink after the retries.
    pub dead_letter: bool,
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Cron only, once delivered: from the scheduled time to the answer, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_after_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TriggerDetailView {
    pub trigger: TriggerView,
    pub history: Vec<DeliveryView>,
}

/// A secret as the API shows it: its keys, never its values.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SecretView {
    pub namespace: String,
    pub name: String,
    pub keys: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BrokerView {
    pub namespace: String,
    pub name: String,
    /// Where to POST CloudEvents (binary, structured or batched mode).
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AcceptedView {
    /// Events stored, all of them, before this answer.
    pub accepted: usize,
    /// Deliveries queued for the triggers they matched.
    pub deliveries: usize,
}

/// A custom domain and where it leads.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DomainMappingView {
    pub namespace: String,
    pub domain: String,
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret: Option<String>,
    /// The domain's URL through the gateway (its DNS must point at the gateway).
    pub url: String,
    pub created: String,
}

/// The result of applying a trigger or broker manifest.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AppliedView {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// `created`, `updated` or `unchanged`.
    pub result: String,
}

/// A token as `updraft token list` shows it: never its secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub grants: Vec<updraft_model::auth::Grant>,
    pub created_at: String,
    /// The id of the token that created it; none for the server's first admin token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    pub expired: bool,
}

/// `POST /v1/tokens`: the token itself, shown this once.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedTokenView {
    /// `updraft_<id>_<secret>`; the server keeps only a hash of the secret.
    pub token: String,
    pub details: TokenView,
}

/// One audited request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditView {
    pub seq: i64,
    pub at: String,
    /// The token that made the request; none when it carried no valid token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    pub method: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub status: u16,
}
