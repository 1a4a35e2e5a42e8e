//! The resources the store keeps: namespaces, services and their immutable revisions.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::annotations::{
    validate_service_annotations, RateLimit, AUTOSCALING_PREFIX, KEEP_ALIVE, PROGRESS_DEADLINE, RATE_LIMIT,
    RATE_LIMIT_BURST, ROLLOUT_DURATION, SCALE_TO_ZERO_RETENTION,
};
use crate::exclusive::Exclusive;
use crate::names::{validate_digest, validate_env_name, validate_env_var};
use crate::quantity::{parse_cpu, parse_duration, parse_memory};
use crate::runtime_kind::RuntimeKind;
use crate::secret::SecretKeyRef;
use crate::template::{Readiness, RevisionTemplate, MAX_TIMEOUT_SECONDS};
use crate::traffic::{default_traffic, Rollout, TrafficTarget};
use crate::FieldError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    pub name: String,
    pub created_at_us: i64,
    #[serde(default)]
    pub limits: NamespaceLimits,
    /// The store revision that last wrote this resource; updates compare it.
    #[serde(default)]
    pub resource_version: u64,
}

/// Everything needed to start an instance of a revision, resolved from its template
/// and package. Never changes once stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionConfig {
    /// `sha256:<hex>` of the package archive.
    pub package_digest: String,
    pub command: Vec<String>,
    /// Where the command came from (`updraft.yaml`, `Procfile`, `main.py`, the template, …).
    pub command_source: String,
    pub env: BTreeMap<String, String>,
    /// Variables read from the namespace's secrets when an instance starts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env_secrets: BTreeMap<String, SecretKeyRef>,
    pub memory_bytes: Option<u64>,
    pub cpu_millis: Option<u32>,
    pub scale_to_zero_after_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<Readiness>,
    /// The driver that runs it; stored revisions from before it had one are packages.
    #[serde(default, skip_serializing_if = "is_process")]
    pub runtime: RuntimeKind,
    /// Wasm only: hosts its outbound HTTP may reach.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_hosts: Vec<String>,
    /// The dependency layers its instances use (`layers/<namespace>/<key>`), built
    /// from the package's requirements and kept while a revision uses them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<String>,
}

fn is_process(runtime: &RuntimeKind) -> bool {
    *runtime == RuntimeKind::Process
}

impl RevisionConfig {
    pub fn scale_to_zero_after(&self) -> Duration {
        Duration::from_millis(self.scale_to_zero_after_ms)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    pub namespace: String,
    pub service: String,
    pub name: String,
    pub generation: u32,
    pub created_at_us: i64,
    /// What the user asked for.
    pub template: RevisionTemplate,
    /// What runs.
    pub config: RevisionConfig,
    /// The store revision that last wrote this resource; updates compare it.
    #[serde(default)]
    pub resource_version: u64,
}

/// A revision written before its first instance has answered, so nothing routes to
/// it. Its deploy promotes it, with the service settings it carries, once that
/// instance is ready, or withdraws it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedRevision {
    pub revision: Revision,
    /// The service's settings once the revision is promoted.
    pub service_config: ServiceConfig,
}

/// A service's own settings: metadata, traffic table and any rollout under way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceConfig {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    pub traffic: Vec<TrafficTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            traffic: default_traffic(),
            rollout: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    pub latest_revision: String,
    pub generation: u32,
    pub created_at_us: i64,
    pub updated_at_us: i64,
    pub config: ServiceConfig,
    /// The store revision that last wrote this resource; updates compare it.
    #[serde(default)]
    pub resource_version: u64,
}

/// What a revision used within one hour, as metered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub namespace: String,
    pub service: String,
    pub revision: String,
    /// Start of the hour, µs since the epoch.
    pub hour_us: i64,
    /// Instances' CPU limits × time alive.
    pub vcpu_seconds: f64,
    /// Instances' memory limits (GiB) × time alive.
    pub gib_seconds: f64,
    /// CPU time actually used, from the instances' cgroups.
    pub cpu_seconds: f64,
    pub invocations: u64,
    /// Request durations × the revision's memory in GiB (Lambda's GB-seconds, where a
    /// GB is 1024 MB).
    pub request_gb_seconds: f64,
}

/// Limits a namespace puts on all its services together.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NamespaceLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Instance logs older than this are deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_max_age_seconds: Option<u64>,
    /// Instance logs past this total size are deleted, oldest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_max_bytes: Option<u64>,
    /// Written out even when empty, so that what was read can be held to what was sent
    /// (a struct read from an array is refused).
    #[serde(default)]
    pub quota: NamespaceQuota,
    /// The exclusive (dedicated) edition: CPUs and memory of this machine held for the
    /// namespace alone. None: the namespace is shared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclusive: Option<Exclusive>,
}

/// Caps on what a namespace holds and does, with OpenWhisk's names where it has them;
/// an absent cap is no cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NamespaceQuota {
    /// Services at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 2147483647)]
    pub services: Option<u32>,
    /// Requests the gateway takes for the namespace's services per minute, all
    /// together (OpenWhisk's `invocationsPerMinute`); more get 429.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 2147483647)]
    pub invocations_per_minute: Option<u32>,
    /// Events the namespace's brokers take per minute (OpenWhisk's `firesPerMinute`);
    /// more get 429.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 2147483647)]
    pub fires_per_minute: Option<u32>,
    /// The largest package, component or image a deploy may use, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 9223372036854775807_i64)]
    pub package_bytes: Option<u64>,
    /// Instances running at once, of every kind (Kubernetes' `pods`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 2147483647)]
    pub instances: Option<u32>,
    /// What the memory limits of the instances running at once add up to, in bytes
    /// (Kubernetes' `limits.memory`); with it, every instance needs a memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 9223372036854775807_i64)]
    pub memory_bytes: Option<u64>,
    /// What the CPU limits of the instances running at once add up to, in thousandths
    /// of a CPU (Kubernetes' `limits.cpu`); with it, every instance needs a CPU limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 2147483647)]
    pub cpu_millis: Option<u32>,
}

/// What a namespace's running instances hold, against its quotas on them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunningUse {
    pub instances: u32,
    /// Their memory limits, added up.
    pub memory_bytes: u64,
    /// Their CPU limits, added up (thousandths of a CPU).
    pub cpu_millis: u64,
}

impl NamespaceQuota {
    pub fn is_empty(&self) -> bool {
        *self == NamespaceQuota::default()
    }

    fn validate(&self) -> Result<(), FieldError> {
        for (field, n) in [
            ("quota.services", self.services),
            ("quota.invocations_per_minute", self.invocations_per_minute),
            ("quota.fires_per_minute", self.fires_per_minute),
            ("quota.instances", self.instances),
            ("quota.cpu_millis", self.cpu_millis),
        ] {
            if let Some(n) = n.filter(|n| *n == 0 || *n > i32::MAX as u32) {
                return Err(FieldError::new(
                    field,
                    format!("{n} is out of range: from 1 to {}; leave it out for no quota", i32::MAX),
                ));
            }
        }
        for (field, n) in [
            ("quota.package_bytes", self.package_bytes),
            ("quota.memory_bytes", self.memory_bytes),
        ] {
            if let Some(n) = n.filter(|n| *n == 0 || *n > i64::MAX as u64) {
                return Err(FieldError::new(
                    field,
                    format!("{n} is out of range: from 1 to {}; leave it out for no quota", i64::MAX),
                ));
            }
        }
        Ok(())
    }

    /// Whether a quota caps what runs at once, so launches must be counted.
    pub fn caps_running(&self) -> bool {
        self.instances.is_some() || self.memory_bytes.is_some() || self.cpu_millis.is_some()
    }

    /// Whether one more instance with these limits fits beside what runs now.
    pub fn admit_instance(
        &self,
        namespace: &str,
        running: RunningUse,
        memory_bytes: Option<u64>,
        cpu_millis: Option<u32>,
    ) -> Result<(), String> {
        if let Some(max) = self.instances.filter(|max| running.instances >= *max) {
            return Err(format!(
                "namespace {namespace:?} runs {} instances, its quota (quota.instances = {max})",
                running.instances
            ));
        }
        if let Some(max) = self.memory_bytes {
            let Some(bytes) = memory_bytes else {
                return Err(format!(
                    "namespace {namespace:?} has a memory quota (quota.memory_bytes = {max}): its services need a memory limit (--memory)"
                ));
            };
            if running.memory_bytes.saturating_add(bytes) > max {
                return Err(format!(
                    "namespace {namespace:?} has instances with {} bytes of memory limits running; {bytes} more is past its quota (quota.memory_bytes = {max})",
                    running.memory_bytes
                ));
            }
        }
        if let Some(max) = self.cpu_millis {
            let Some(millis) = cpu_millis else {
                return Err(format!(
                    "namespace {namespace:?} has a CPU quota (quota.cpu_millis = {max}): its services need a CPU limit (--cpu)"
                ));
            };
            if running.cpu_millis + u64::from(millis) > u64::from(max) {
                return Err(format!(
                    "namespace {namespace:?} has instances with {}m of CPU limits running; {millis}m more is past its quota (quota.cpu_millis = {max})",
                    running.cpu_millis
                ));
            }
        }
        Ok(())
    }

    /// Whether one more service fits, with `services` there now.
    pub fn admit_service(&self, namespace: &str, services: usize) -> Result<(), String> {
        match self.services {
            Some(max) if services >= max as usize => Err(format!(
                "namespace {namespace:?} has {services} services, its quota (quota.services = {max}); delete one, or ask an admin to raise it"
            )),
            _ => Ok(()),
        }
    }

    /// Whether a package of `bytes` fits.
    pub fn admit_package(&self, namespace: &str, bytes: u64) -> Result<(), String> {
        match self.package_bytes {
            Some(max) if bytes > max => Err(format!(
                "the package is {bytes} bytes, more than namespace {namespace:?} allows (quota.package_bytes = {max})"
            )),
            _ => Ok(()),
        }
    }
}

impl NamespaceLimits {
    /// The ranges the API's schema gives (`int32` rates, `int64` sizes and ages), so a
    /// client that follows the document is never surprised.
    pub fn validate(&self) -> Result<(), FieldError> {
        if let Some(exclusive) = &self.exclusive {
            exclusive.validate()?;
        }
        if let Some(limit) = self.rate_limit {
            for (field, n) in [
                ("rate_limit.per_second", limit.per_second),
                ("rate_limit.burst", limit.burst),
            ] {
                if n == 0 || n > i32::MAX as u32 {
                    return Err(FieldError::new(
                        field,
                        format!(
                            "{n} is out of range: from 1 to {}; send no rate_limit to remove it",
                            i32::MAX
                        ),
                    ));
                }
            }
        }
        for (field, n) in [
            ("log_max_age_seconds", self.log_max_age_seconds),
            ("log_max_bytes", self.log_max_bytes),
        ] {
            if let Some(n) = n.filter(|n| *n > i64::MAX as u64) {
                return Err(FieldError::new(field, format!("{n} is more than {}", i64::MAX)));
            }
        }
        self.quota.validate()
    }
}

/// A deploy as the REST API receives it: a stored package (or none, to change the
/// latest revision's settings) plus the user's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    /// A stored WebAssembly component's digest, instead of a package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasm: Option<String>,
    /// An OCI image instead of a package: a registry reference, or `oci:sha256:…` for
    /// one imported through `POST /v1/images`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// With a package: serve its handler with the `python3` or `node` function runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_runtime: Option<String>,
    /// The handler file or folder inside the package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_handler: Option<String>,
    /// Wasm only: hosts outbound requests may go to (`updraft.dev/allowed-outbound-hosts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_hosts: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Variables set from a key of a secret of the namespace: `NAME` → `secret/key`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env_secrets: BTreeMap<String, String>,
    /// The secret (keys `username`, `password`) an image is pulled with; empty: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_secret: Option<String>,
    /// Variables to drop from the latest revision's (only without a package).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_remove: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_to_zero_after: Option<String>,
    /// The program to run instead of the detected one (Knative's `command`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Arguments appended to the command (Knative's `args`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Requests one instance handles at once (`containerConcurrency`); 0 = no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Autoscaling settings by Knative's annotation names without their prefix
    /// (`min-scale`, `target`, `window`, …); an empty value removes one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub autoscaling: BTreeMap<String, String>,
    /// How an idle revision is kept: `fixed` or `hybrid-histogram`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<String>,
    /// Request timeout (`timeoutSeconds`), e.g. `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// How long a new instance may take to become ready (Knative's progress deadline),
    /// e.g. `5m`; `''` goes back to the server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timeout: Option<String>,
    /// What the instances speak: `http1` (HTTP/1.1) or `h2c` (HTTP/2 without TLS, for
    /// gRPC), Knative's port names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Create the revision without sending it traffic.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_traffic: bool,
    /// Move traffic to new revisions gradually over this time; `0s` turns it off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_duration: Option<String>,
    /// Requests per second for the whole service; 0 removes the limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_burst: Option<u32>,
    /// `true`: private (`networking.knative.dev/visibility: cluster-local`), answered
    /// only to invoker tokens of the namespace; `false`: public again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private: Option<bool>,
}

impl DeploySpec {
    /// Whether this deploy brings something new to run (and so always makes a revision).
    pub fn is_fresh(&self) -> bool {
        self.package.is_some() || self.wasm.is_some() || self.image.is_some()
    }

    /// The revision template this deploy asks for. It starts from `latest` (the
    /// service's latest revision): a new package, component or image replaces what
    /// runs and keeps the settings (env, limits, scaling, concurrency, timeouts) this
    /// deploy does not change, as `kn service update`, Cloud Run and Heroku do.
    pub fn template(&self, latest: Option<&RevisionTemplate>) -> Result<RevisionTemplate, FieldError> {
        let given = [self.package.is_some(), self.wasm.is_some(), self.image.is_some()];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(FieldError::new("package", "package, wasm and image: give only one"));
        }
        let fresh = if let Some(package) = &self.package {
            Some(RevisionTemplate::for_package(&validate_digest("package", package)?))
        } else if let Some(wasm) = &self.wasm {
            Some(RevisionTemplate::for_wasm(&validate_digest("wasm", wasm)?))
        } else if let Some(image) = &self.image {
            crate::template::parse_image("image", image)?;
            Some(RevisionTemplate::for_image(image))
        } else {
            None
        };
        let function = match (&self.function_runtime, &self.function_handler) {
            (Some(runtime), Some(handler)) if self.package.is_some() => Some((runtime, handler)),
            (Some(_), Some(_)) => {
                return Err(FieldError::new(
                    "function_runtime",
                    "needs a package holding the handler",
                ))
            }
            _ => None,
        };
        let mut template = match (fresh, latest) {
            (Some(mut fresh), latest) => {
                if let Some((runtime, handler)) = function {
                    fresh
                        .annotations
                        .insert(crate::annotations::FUNCTION_RUNTIME.to_string(), runtime.clone());
                    fresh
                        .annotations
                        .insert(crate::annotations::FUNCTION_HANDLER.to_string(), handler.clone());
                }
                match latest {
                    Some(latest) => latest.carry_settings_to(fresh),
                    None => fresh,
                }
            }
            (None, Some(latest)) => RevisionTemplate {
                name: None,
                ..latest.clone()
            },
            (None, None) => {
                return Err(FieldError::new(
                    "package",
                    "is missing; a new service needs a code package",
                ))
            }
        };
        if let Some(hosts) = &self.allow_hosts {
            if hosts.is_empty() {
                template.annotations.remove(crate::annotations::ALLOWED_OUTBOUND_HOSTS);
            } else {
                template
                    .annotations
                    .insert(crate::annotations::ALLOWED_OUTBOUND_HOSTS.to_string(), hosts.join(","));
            }
        }
        for name in &self.env_remove {
            if template.env.remove(name).is_none() && template.env_secrets.remove(name).is_none() {
                return Err(FieldError::new(
                    format!("env_remove.{name}"),
                    "is not set on the latest revision",
                ));
            }
        }
        for (name, value) in &self.env {
            validate_env_var(&format!("env.{name}"), name, value)?;
            template.env_secrets.remove(name);
            template.env.insert(name.clone(), value.clone());
        }
        for (name, reference) in &self.env_secrets {
            let field = format!("env_secrets.{name}");
            validate_env_name(&field, name)?;
            if self.env.contains_key(name) {
                return Err(FieldError::new(field, "is set both to a value (env) and from a secret"));
            }
            template.env.remove(name);
            template
                .env_secrets
                .insert(name.clone(), SecretKeyRef::parse(&field, reference)?);
        }
        if let Some(secret) = &self.registry_secret {
            template.image_pull_secret = match secret.as_str() {
                "" => None,
                name => {
                    crate::secret::validate_secret_name("registry_secret", name)?;
                    Some(name.to_string())
                }
            };
        }
        if let Some(m) = &self.memory {
            template.resources.memory_limit_bytes = Some(parse_memory("memory", m)?);
        }
        if let Some(c) = &self.cpu {
            template.resources.cpu_limit_millis = Some(parse_cpu("cpu", c)?);
        }
        if let Some(d) = &self.scale_to_zero_after {
            let d = parse_duration("scale_to_zero_after", d)?;
            template.annotations.insert(
                SCALE_TO_ZERO_RETENTION.into(),
                humantime::format_duration(d).to_string(),
            );
        }
        if let Some(command) = &self.command {
            template.command = Some(command.clone());
        }
        if let Some(args) = &self.args {
            template.args = Some(args.clone());
        }
        if let Some(c) = self.concurrency {
            template.container_concurrency = c;
        }
        match self.start_timeout.as_deref() {
            Some("") => {
                template.annotations.remove(PROGRESS_DEADLINE);
            }
            Some(t) => {
                template.annotations.insert(PROGRESS_DEADLINE.into(), t.to_string());
            }
            None => {}
        }
        match self.protocol.as_deref() {
            None => {}
            Some("http1") => template.h2c = false,
            Some("h2c") => template.h2c = true,
            Some(other) => {
                return Err(FieldError::new(
                    "protocol",
                    format!("{other:?} is not one of http1 (HTTP/1.1) or h2c (HTTP/2 without TLS, for gRPC)"),
                ))
            }
        }
        if let Some(policy) = &self.keep_alive {
            template.annotations.insert(KEEP_ALIVE.into(), policy.clone());
        }
        for (name, value) in &self.autoscaling {
            let key = format!("{AUTOSCALING_PREFIX}{name}");
            if value.is_empty() {
                template.annotations.remove(&key);
            } else {
                template.annotations.insert(key, value.clone());
            }
        }
        if let Some(t) = &self.timeout {
            let d = parse_duration("timeout", t)?;
            if d.subsec_nanos() != 0 || d.is_zero() || d.as_secs() > u64::from(MAX_TIMEOUT_SECONDS) {
                return Err(FieldError::new(
                    "timeout",
                    format!("{t:?} must be whole seconds from 1s to {MAX_TIMEOUT_SECONDS}s"),
                ));
            }
            template.timeout_seconds = d.as_secs() as u32;
            if template
                .response_start_timeout_seconds
                .is_some_and(|s| s > template.timeout_seconds)
            {
                template.response_start_timeout_seconds = None;
            }
        }
        template.validate("template")?;
        Ok(template)
    }

    /// The service annotations after this deploy's rollout and rate settings.
    pub fn service_annotations(
        &self,
        current: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, FieldError> {
        let mut annotations = current.clone();
        if let Some(d) = &self.rollout_duration {
            let d = parse_duration("rollout_duration", d)?;
            if d.is_zero() {
                annotations.remove(ROLLOUT_DURATION);
            } else {
                annotations.insert(ROLLOUT_DURATION.into(), humantime::format_duration(d).to_string());
            }
        }
        match (self.rate_limit, self.rate_limit_burst) {
            (Some(0), _) => {
                annotations.remove(RATE_LIMIT);
                annotations.remove(RATE_LIMIT_BURST);
            }
            (Some(rate), burst) => {
                annotations.insert(RATE_LIMIT.into(), rate.to_string());
                match burst {
                    Some(b) => annotations.insert(RATE_LIMIT_BURST.into(), b.to_string()),
                    None => annotations.remove(RATE_LIMIT_BURST),
                };
            }
            (None, Some(b)) => {
                annotations.insert(RATE_LIMIT_BURST.into(), b.to_string());
            }
            (None, None) => {}
        }
        validate_service_annotations("annotations", &annotations)?;
        Ok(annotations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_limits_stay_in_the_documented_ranges() {
        let rate = |per_second, burst| NamespaceLimits {
            rate_limit: Some(RateLimit { per_second, burst }),
            ..Default::default()
        };
        assert!(rate(1, 1).validate().is_ok());
        assert!(rate(i32::MAX as u32, 1).validate().is_ok());
        assert_eq!(rate(0, 1).validate().unwrap_err().field, "rate_limit.per_second");
        assert_eq!(rate(5, 1 << 31).validate().unwrap_err().field, "rate_limit.burst");
        let bytes = |n| NamespaceLimits {
            log_max_bytes: Some(n),
            ..Default::default()
        };
        assert!(bytes(i64::MAX as u64).validate().is_ok());
        assert_eq!(bytes(1 << 63).validate().unwrap_err().field, "log_max_bytes");
    }
    use crate::annotations::{ALLOWED_OUTBOUND_HOSTS, FUNCTION_RUNTIME};

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_start_timeout_is_knatives_progress_deadline_kept_until_cleared() {
        let spec = DeploySpec {
            package: Some(DIGEST.into()),
            start_timeout: Some("5m".into()),
            ..Default::default()
        };
        let t = spec.template(None).unwrap();
        assert_eq!(
            crate::annotations::progress_deadline(&t.annotations),
            Some(Duration::from_secs(300))
        );
        let kept = DeploySpec::default().template(Some(&t)).unwrap();
        assert_eq!(kept.annotations[PROGRESS_DEADLINE], "5m");
        let cleared = DeploySpec {
            start_timeout: Some(String::new()),
            ..Default::default()
        };
        assert!(!cleared
            .template(Some(&t))
            .unwrap()
            .annotations
            .contains_key(PROGRESS_DEADLINE));
        for bad in ["soon", "0s", "2h"] {
            let err = DeploySpec {
                start_timeout: Some(bad.into()),
                ..Default::default()
            }
            .template(Some(&t))
            .unwrap_err();
            assert!(err.field.contains(PROGRESS_DEADLINE), "{bad}: {}", err.field);
        }
    }

    #[test]
    fn deploy_spec_builds_a_template() {
        let mut spec = DeploySpec {
            package: Some(DIGEST.into()),
            memory: Some("128Mi".into()),
            cpu: Some("500m".into()),
            scale_to_zero_after: Some("5s".into()),
            concurrency: Some(4),
            timeout: Some("30s".into()),
            ..Default::default()
        };
        spec.env.insert("GREETING".into(), "hi".into());
        let t = spec.template(None).unwrap();
        assert_eq!(t.resources.memory_limit_bytes, Some(128 << 20));
        assert_eq!(t.command, None, "detected from the package unless given");
        assert_eq!(t.resources.cpu_limit_millis, Some(500));
        assert_eq!(t.scale_to_zero_after(), Duration::from_secs(5));
        assert_eq!((t.container_concurrency, t.timeout_seconds), (4, 30));

        let update = DeploySpec {
            env_remove: vec!["GREETING".into()],
            memory: Some("64Mi".into()),
            ..Default::default()
        };
        let changed = update.template(Some(&t)).unwrap();
        assert!(changed.env.is_empty());
        assert_eq!(changed.resources.memory_limit_bytes, Some(64 << 20));
        assert_eq!(changed.container_concurrency, 4, "unchanged settings carry over");
        let with_command = DeploySpec {
            command: Some(vec!["python3".into(), "app.py".into()]),
            args: Some(vec!["--fast".into()]),
            ..Default::default()
        };
        let changed = with_command.template(Some(&t)).unwrap();
        assert_eq!(changed.command.unwrap(), ["python3", "app.py"]);
        assert_eq!(changed.args.unwrap(), ["--fast"]);
        let scaled = DeploySpec {
            autoscaling: [("min-scale", "2"), ("window", "")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        let changed = scaled.template(Some(&t)).unwrap();
        assert_eq!(changed.annotations["autoscaling.knative.dev/min-scale"], "2");
        let bad = DeploySpec {
            autoscaling: [("max-scal".to_string(), "2".to_string())].into(),
            ..Default::default()
        };
        assert!(bad
            .template(Some(&t))
            .unwrap_err()
            .message
            .contains("unknown autoscaling"));
        let empty = DeploySpec {
            command: Some(vec![]),
            ..Default::default()
        };
        assert!(empty.template(Some(&t)).unwrap_err().field.ends_with("command"));
        assert_eq!(update.template(None).unwrap_err().field, "package");

        for (bad, field) in [
            (
                DeploySpec {
                    package: Some("sha256:xyz".into()),
                    ..Default::default()
                },
                "package",
            ),
            (
                DeploySpec {
                    scale_to_zero_after: Some("soon".into()),
                    ..spec.clone()
                },
                "scale_to_zero_after",
            ),
            (
                DeploySpec {
                    timeout: Some("601s".into()),
                    ..spec.clone()
                },
                "timeout",
            ),
            (
                DeploySpec {
                    timeout: Some("1.5s".into()),
                    ..spec.clone()
                },
                "timeout",
            ),
        ] {
            assert_eq!(bad.template(None).unwrap_err().field, field);
        }
        let mut bad = spec.clone();
        bad.env.insert("PORT".into(), "1".into());
        assert_eq!(bad.template(None).unwrap_err().field, "env.PORT");
    }

    #[test]
    fn a_new_package_keeps_the_settings_it_does_not_change() {
        let first = DeploySpec {
            package: Some(DIGEST.into()),
            env: [("A".to_string(), "1".to_string()), ("B".to_string(), "2".to_string())].into(),
            memory: Some("256Mi".into()),
            concurrency: Some(4),
            timeout: Some("30s".into()),
            command: Some(vec!["./server".into()]),
            autoscaling: [("min-scale".to_string(), "1".to_string())].into(),
            ..Default::default()
        }
        .template(None)
        .unwrap();
        let other = format!("sha256:{}", "b".repeat(64));
        let redeploy = DeploySpec {
            package: Some(other.clone()),
            env_remove: vec!["A".into()],
            cpu: Some("0.5".into()),
            ..Default::default()
        };
        let t = redeploy.template(Some(&first)).unwrap();
        assert_eq!(t.image, format!("package:{other}"));
        assert_eq!(t.env, [("B".to_string(), "2".to_string())].into());
        assert_eq!(t.resources.memory_limit_bytes, Some(256 << 20));
        assert_eq!(t.resources.cpu_limit_millis, Some(500), "what it changes, changes");
        assert_eq!((t.container_concurrency, t.timeout_seconds), (4, 30));
        assert_eq!(t.annotations["autoscaling.knative.dev/min-scale"], "1");
        assert_eq!(
            t.command,
            Some(vec!["./server".to_string()]),
            "the same kind keeps its command"
        );

        // Another kind keeps the shared settings, not those of the kind it was.
        let component = DeploySpec {
            wasm: Some(other.clone()),
            allow_hosts: Some(vec!["api.example.com".into()]),
            ..Default::default()
        }
        .template(Some(&t))
        .unwrap();
        assert_eq!(component.command, None);
        assert_eq!(component.resources.memory_limit_bytes, Some(256 << 20));
        assert_eq!(component.annotations[ALLOWED_OUTBOUND_HOSTS], "api.example.com");
        let back = DeploySpec {
            package: Some(DIGEST.into()),
            function_runtime: Some("python3".into()),
            function_handler: Some("main.py".into()),
            ..Default::default()
        }
        .template(Some(&component))
        .unwrap();
        assert!(!back.annotations.contains_key(ALLOWED_OUTBOUND_HOSTS), "{back:?}");
        assert_eq!(back.annotations[FUNCTION_RUNTIME], "python3");
        assert_eq!(back.env, t.env);
        let plain = DeploySpec {
            package: Some(DIGEST.into()),
            ..Default::default()
        }
        .template(Some(&back))
        .unwrap();
        assert!(
            !plain.annotations.contains_key(FUNCTION_RUNTIME),
            "a plain package is no function"
        );

        let missing = DeploySpec {
            package: Some(DIGEST.into()),
            env_remove: vec!["NEVER".into()],
            ..Default::default()
        };
        assert_eq!(missing.template(Some(&first)).unwrap_err().field, "env_remove.NEVER");
    }

    #[test]
    fn deploy_spec_sets_and_clears_service_annotations() {
        let spec = DeploySpec {
            rollout_duration: Some("60s".into()),
            rate_limit: Some(10),
            ..Default::default()
        };
        let a = spec.service_annotations(&BTreeMap::new()).unwrap();
        assert_eq!(a[ROLLOUT_DURATION], "1m");
        assert_eq!(a[RATE_LIMIT], "10");
        let clear = DeploySpec {
            rollout_duration: Some("0s".into()),
            rate_limit: Some(0),
            ..Default::default()
        };
        assert!(clear.service_annotations(&a).unwrap().is_empty());
    }

    #[test]
    fn deploy_spec_refuses_unknown_fields() {
        let err = serde_json::from_str::<DeploySpec>(r#"{"package":"x","replicas":3}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("replicas"), "{err}");
    }
}

#[cfg(test)]
mod quota_tests {
    use super::*;

    #[test]
    fn quotas_admit_up_to_their_value_and_name_themselves() {
        let quota = NamespaceQuota {
            services: Some(2),
            package_bytes: Some(100),
            ..Default::default()
        };
        assert!(quota.admit_service("t", 1).is_ok());
        let full = quota.admit_service("t", 2).unwrap_err();
        assert!(full.contains("quota.services = 2"), "{full}");
        assert!(quota.admit_package("t", 100).is_ok());
        assert!(quota
            .admit_package("t", 101)
            .unwrap_err()
            .contains("quota.package_bytes = 100"));
        let none = NamespaceQuota::default();
        assert!(none.is_empty() && none.admit_service("t", 1_000_000).is_ok());
    }

    #[test]
    fn running_quotas_count_instances_and_their_limits() {
        let quota = NamespaceQuota {
            instances: Some(3),
            memory_bytes: Some(256 << 20),
            cpu_millis: Some(1000),
            ..Default::default()
        };
        assert!(quota.caps_running() && !NamespaceQuota::default().caps_running());
        let running = RunningUse {
            instances: 2,
            memory_bytes: 128 << 20,
            cpu_millis: 500,
        };
        assert!(quota.admit_instance("t", running, Some(128 << 20), Some(500)).is_ok());
        let cases = [
            (
                RunningUse {
                    instances: 3,
                    ..running
                },
                Some(1),
                Some(1),
                "quota.instances = 3",
            ),
            (
                running,
                Some((128 << 20) + 1),
                Some(1),
                "quota.memory_bytes = 268435456",
            ),
            (running, None, Some(1), "need a memory limit (--memory)"),
            (running, Some(1), Some(501), "quota.cpu_millis = 1000"),
            (running, Some(1), None, "need a CPU limit (--cpu)"),
        ];
        for (running, memory, cpu, reason) in cases {
            let refused = quota.admit_instance("t", running, memory, cpu).unwrap_err();
            assert!(refused.contains(reason), "{refused}");
        }
        // Without a cap on it, a limit is not needed.
        let count_only = NamespaceQuota {
            instances: Some(1),
            ..Default::default()
        };
        assert!(count_only
            .admit_instance("t", RunningUse::default(), None, None)
            .is_ok());
    }

    #[test]
    fn quota_values_are_checked_with_their_field() {
        for (quota, field) in [
            (
                NamespaceQuota {
                    services: Some(0),
                    ..Default::default()
                },
                "quota.services",
            ),
            (
                NamespaceQuota {
                    fires_per_minute: Some(u32::MAX),
                    ..Default::default()
                },
                "quota.fires_per_minute",
            ),
            (
                NamespaceQuota {
                    package_bytes: Some(0),
                    ..Default::default()
                },
                "quota.package_bytes",
            ),
            (
                NamespaceQuota {
                    instances: Some(0),
                    ..Default::default()
                },
                "quota.instances",
            ),
            (
                NamespaceQuota {
                    memory_bytes: Some(u64::MAX),
                    ..Default::default()
                },
                "quota.memory_bytes",
            ),
            (
                NamespaceQuota {
                    cpu_millis: Some(0),
                    ..Default::default()
                },
                "quota.cpu_millis",
            ),
        ] {
            let limits = NamespaceLimits {
                quota,
                ..Default::default()
            };
            assert_eq!(limits.validate().unwrap_err().field, field);
        }
    }
}
