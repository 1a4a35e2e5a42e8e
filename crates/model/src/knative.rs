//! Knative `serving.knative.dev/v1` Service manifests, read and written.
//!
//! Reading is strict: every field Updraft does not honour is rejected with its path,
//! never dropped, so a manifest that applies here means what it says. `status` is
//! output-only and ignored on the way in, as `kubectl apply` does.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::annotations::validate_service_annotations;
use crate::names::{validate_namespace_name, validate_service_name, MAX_NAMESPACE_NAME};
use crate::quantity::{format_cpu, format_memory, parse_cpu, parse_memory};
use crate::secret::SecretKeyRef;
use crate::template::{
    ProbeTiming, Readiness, Resources, RevisionTemplate, DEFAULT_TIMEOUT_SECONDS, PACKAGE_IMAGE_PREFIX,
};
use crate::traffic::{validate_traffic, TrafficTarget};
use crate::FieldError;
use crate::Problems;

pub const API_VERSION: &str = "serving.knative.dev/v1";
pub const KIND: &str = "Service";
/// The port Knative gives `$PORT` when a container names none.
const DEFAULT_CONTAINER_PORT: u16 = 8080;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KService {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: ServiceSpec,
    /// Output only: what the platform reports. Ignored when applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub template: Template,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<Vec<Traffic>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ObjectMeta>,
    pub spec: RevisionSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RevisionSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_concurrency: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_start_timeout_seconds: Option<u32>,
    /// The secret holding the registry credentials the image is pulled with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    pub containers: Vec<Container>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalObjectReference {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Container {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_probe: Option<Probe>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvVar {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, rename = "valueFrom", skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSource>,
}

/// Only `secretKeyRef`: config maps and field references have nothing to point at here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvVarSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Port {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceRequirements {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ResourceList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<ResourceList>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceList {
    #[serde(default, deserialize_with = "quantity", skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, deserialize_with = "quantity", skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

/// Kubernetes quantities may be written as YAML numbers (`cpu: 1`) or strings.
fn quantity<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Q {
        Text(String),
        Int(u64),
        Float(f64),
    }
    Ok(Option::<Q>::deserialize(d)?.map(|q| match q {
        Q::Text(s) => s,
        Q::Int(n) => n.to_string(),
        Q::Float(f) => f.to_string(),
    }))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Probe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpSocket>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<u32>,
}

impl Probe {
    fn timing(&self) -> ProbeTiming {
        ProbeTiming {
            initial_delay_seconds: self.initial_delay_seconds,
            period_seconds: self.period_seconds,
            timeout_seconds: self.timeout_seconds,
            success_threshold: self.success_threshold,
            failure_threshold: self.failure_threshold,
        }
    }

    fn of(check: &Readiness, timing: &ProbeTiming) -> Probe {
        let (http_get, tcp_socket) = match check {
            Readiness::TcpSocket => (None, Some(TcpSocket { port: None })),
            Readiness::HttpGet { path } => (
                Some(HttpGet {
                    path: Some(path.clone()),
                    port: None,
                }),
                None,
            ),
        };
        Probe {
            http_get,
            tcp_socket,
            initial_delay_seconds: timing.initial_delay_seconds,
            period_seconds: timing.period_seconds,
            timeout_seconds: timing.timeout_seconds,
            success_threshold: timing.success_threshold,
            failure_threshold: timing.failure_threshold,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpGet {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpSocket {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Traffic {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_revision: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Output only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A service as a manifest describes it, checked and in Updraft's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredService {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub template: RevisionTemplate,
    /// `None` when the manifest has no `spec.traffic`: everything to the latest.
    pub traffic: Option<Vec<TrafficTarget>>,
}

/// Splits a file into its YAML documents, skipping empty ones; each comes with its
/// position (1-based) in the file, which an error carries too.
pub fn yaml_documents(text: &str) -> Result<Vec<(usize, serde_yaml_ng::Value)>, (usize, FieldError)> {
    crate::yaml::check_nesting("(document)", text).map_err(|e| (1, e))?;
    let mut out = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = serde_yaml_ng::Value::deserialize(doc)
            .map_err(|e| (i + 1, FieldError::new("(document)", format!("is not valid YAML: {e}"))))?;
        if !value.is_null() {
            out.push((i + 1, value));
        }
    }
    Ok(out)
}

/// Most unknown fields one document reports; past them the reading stops.
const MAX_UNKNOWN_FIELDS: usize = 32;

/// Reads a manifest strictly: an unknown field is an error naming its path, and every
/// unknown field is reported at once.
pub fn strict<T: serde::de::DeserializeOwned>(value: serde_yaml_ng::Value) -> Result<T, FieldError> {
    let mut problems = Problems::default();
    let read = read_strictly(value, &mut problems);
    problems.finish(|| read.expect("no problem means a value"))
}

/// Reads `value` as a `T`, recording each unknown field in `problems` and reading on
/// without it; `None` when something else (a wrong type, a missing field) stops it.
fn read_strictly<T: serde::de::DeserializeOwned>(
    mut value: serde_yaml_ng::Value,
    problems: &mut Problems,
) -> Option<T> {
    for _ in 0..MAX_UNKNOWN_FIELDS {
        match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(read) => return Some(read),
            Err(e) => {
                let path = e.path().to_string();
                let inner = e.into_inner().to_string();
                let Some(rest) = inner.strip_prefix("unknown field ") else {
                    problems.push(FieldError::new(path, inner));
                    return None;
                };
                problems.push(FieldError::new(
                    path.clone(),
                    format!("unknown or unsupported field {rest}"),
                ));
                if !remove_at(&mut value, &path) {
                    return None;
                }
            }
        }
    }
    None
}

/// Removes the node at a `serde_path_to_error` path (`a.b[0].c`); false if absent.
fn remove_at(value: &mut serde_yaml_ng::Value, path: &str) -> bool {
    let mut steps = Vec::new();
    for segment in path.split('.') {
        let (key, indexes) = segment.split_once('[').map_or((segment, ""), |(k, rest)| (k, rest));
        if !key.is_empty() {
            steps.push(Err(key));
        }
        for index in indexes.split('[').filter(|i| !i.is_empty()) {
            match index.trim_end_matches(']').parse::<usize>() {
                Ok(i) => steps.push(Ok(i)),
                Err(_) => return false,
            }
        }
    }
    let Some((last, parents)) = steps.split_last() else {
        return false;
    };
    let mut node = value;
    for step in parents {
        let next = match step {
            Ok(i) => node.get_mut(*i),
            Err(key) => node.get_mut(*key),
        };
        match next {
            Some(next) => node = next,
            None => return false,
        }
    }
    match (last, node.as_mapping_mut()) {
        (Err(key), Some(map)) => map.remove(*key).is_some(),
        _ => false,
    }
}

/// A Service manifest, checked whole: every unknown field and, when the rest could be
/// read, every invalid value, in one error.
pub fn parse_manifest_value(value: serde_yaml_ng::Value) -> Result<KService, FieldError> {
    let text_at = |key: &str| value.get(key).and_then(|v| v.as_str()).unwrap_or("").to_string();
    let (api_version, kind) = (text_at("apiVersion"), text_at("kind"));
    if api_version != API_VERSION || kind != KIND {
        return Err(FieldError::new(
            "apiVersion/kind",
            format!("{api_version:?}/{kind:?} is not supported; updraft apply takes {API_VERSION} {KIND}"),
        ));
    }
    let mut problems = Problems::default();
    let read: Option<KService> = read_strictly(value, &mut problems);
    if let Some(service) = &read {
        if !problems.is_empty() {
            // Where it will be applied is not known here; any valid namespace checks
            // the rest the same.
            problems.check(service.desired("default"));
        }
    }
    problems.finish(|| read.expect("no problem means a manifest"))
}

impl KService {
    /// Checks everything Updraft needs and turns the manifest into a [`DesiredService`].
    /// A namespace the manifest does not name is `default_namespace`.
    pub fn desired(&self, default_namespace: &str) -> Result<DesiredService, FieldError> {
        let name = self
            .metadata
            .name
            .clone()
            .ok_or_else(|| FieldError::new("metadata.name", "is missing; every service needs a name"))?;
        let mut problems = Problems::default();
        problems.check(validate_service_name("metadata.name", &name));
        let namespace = self
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| default_namespace.to_string());
        problems.check(validate_namespace_name("metadata.namespace", &namespace));
        problems.check(validate_service_annotations(
            "metadata.annotations",
            &self.metadata.annotations,
        ));
        let template = problems.check(self.template(&name));
        let traffic = self.spec.traffic.as_ref().map(|rows| {
            rows.iter()
                .enumerate()
                .filter_map(|(i, t)| problems.check(traffic_row(i, t)))
                .collect::<Vec<_>>()
        });
        if let Some(rows) = &traffic {
            if problems.is_empty() {
                // Which revisions exist is the server's to check.
                problems.check(validate_traffic("spec.traffic", &name, rows, None));
            }
        }
        problems.check(crate::annotations::validate_visibility(
            "metadata.labels",
            &self.metadata.labels,
        ));
        problems.finish(|| DesiredService {
            namespace,
            name,
            labels: self.metadata.labels.clone(),
            annotations: self.metadata.annotations.clone(),
            template: template.expect("no problem means a template"),
            traffic,
        })
    }

    fn template(&self, service: &str) -> Result<RevisionTemplate, FieldError> {
        let mut problems = Problems::default();
        let meta = self.spec.template.metadata.clone().unwrap_or_default();
        if meta.namespace.is_some() {
            problems.push(FieldError::new(
                "spec.template.metadata.namespace",
                "is not allowed; a revision lives in its service's namespace",
            ));
        }
        if let Some(rev) = &meta.name {
            let prefix = format!("{service}-");
            let label_ok = rev.len() <= MAX_NAMESPACE_NAME
                && rev
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !rev.ends_with('-');
            if !rev.starts_with(&prefix) || rev.len() == prefix.len() || !label_ok {
                problems.push(FieldError::new(
                    "spec.template.metadata.name",
                    format!(
                        "{rev:?} must be {prefix}<suffix>: the service name, '-', then lower-case letters, digits and '-' (63 characters at most)"
                    ),
                ));
            }
        }
        let spec = &self.spec.template.spec;
        let containers = "spec.template.spec.containers";
        let c = match spec.containers.as_slice() {
            [one] => one,
            [] => {
                problems.push(FieldError::new(containers, "is empty; give exactly one container"));
                return problems.finish(|| unreachable!("a problem was pushed"));
            }
            _ => {
                problems.push(FieldError::new(
                    containers,
                    format!(
                        "has {} containers; Updraft runs exactly one per revision",
                        spec.containers.len()
                    ),
                ));
                return problems.finish(|| unreachable!("a problem was pushed"));
            }
        };
        let at = |field: &str| format!("{containers}[0].{field}");
        let image_pull_secret = match spec.image_pull_secrets.as_slice() {
            [] => None,
            [one] => Some(one.name.clone()),
            _ => {
                problems.push(FieldError::new(
                    "spec.template.spec.imagePullSecrets",
                    "has more than one secret; give the one holding the image's registry credentials",
                ));
                None
            }
        };
        let mut env = BTreeMap::new();
        let mut env_secrets = BTreeMap::new();
        for (i, var) in c.env.iter().enumerate() {
            let field = at(&format!("env[{i}]"));
            let set_twice = match (&var.value, &var.value_from) {
                (Some(_), Some(_)) => {
                    problems.push(FieldError::new(field, "has both value and valueFrom; give one"));
                    continue;
                }
                (_, Some(EnvVarSource { secret_key_ref: None })) => {
                    problems.push(FieldError::new(
                        format!("{field}.valueFrom"),
                        "needs secretKeyRef, the only source supported",
                    ));
                    continue;
                }
                (
                    _,
                    Some(EnvVarSource {
                        secret_key_ref: Some(reference),
                    }),
                ) => {
                    if problems
                        .check(reference.validate(&format!("{field}.valueFrom.secretKeyRef")))
                        .is_none()
                    {
                        continue;
                    }
                    env.contains_key(&var.name) || env_secrets.insert(var.name.clone(), reference.clone()).is_some()
                }
                (value, None) => {
                    env_secrets.contains_key(&var.name)
                        || env
                            .insert(var.name.clone(), value.clone().unwrap_or_default())
                            .is_some()
                }
            };
            if set_twice {
                problems.push(FieldError::new(
                    format!("{field}.name"),
                    format!("{:?} is set more than once", var.name),
                ));
            }
        }
        let mut h2c = false;
        let container_port = match c.ports.as_slice() {
            [] => None,
            [port] => {
                h2c = match port.name.as_deref() {
                    None | Some("http1") => false,
                    Some("h2c") => true,
                    Some(name) => {
                        problems.push(FieldError::new(
                            at("ports[0].name"),
                            format!("{name:?} is not one of http1 (HTTP/1.1, the default) or h2c (HTTP/2 without TLS, for gRPC)"),
                        ));
                        false
                    }
                };
                if let Some(protocol) = port.protocol.as_deref().filter(|p| *p != "TCP") {
                    problems.push(FieldError::new(
                        at("ports[0].protocol"),
                        format!("{protocol:?} is not supported; only TCP"),
                    ));
                }
                port.container_port
            }
            _ => {
                problems.push(FieldError::new(
                    at("ports"),
                    "has more than one port; Knative allows one",
                ));
                None
            }
        };
        let resources = problems
            .check(resources(&at("resources"), c.resources.as_ref()))
            .unwrap_or_default();
        let readiness = c
            .readiness_probe
            .as_ref()
            .and_then(|probe| problems.check(probe_check(&at("readinessProbe"), probe, container_port)));
        let readiness_timing = c.readiness_probe.as_ref().map(Probe::timing).unwrap_or_default();
        let probe = |name: &str, given: &Option<Probe>| -> Result<Option<crate::template::Probe>, FieldError> {
            given
                .as_ref()
                .map(|p| {
                    Ok(crate::template::Probe {
                        check: probe_check(&at(name), p, container_port)?,
                        timing: p.timing(),
                    })
                })
                .transpose()
        };
        let liveness = problems.check(probe("livenessProbe", &c.liveness_probe)).flatten();
        let startup = problems.check(probe("startupProbe", &c.startup_probe)).flatten();
        let template = RevisionTemplate {
            name: meta.name,
            annotations: meta.annotations,
            labels: meta.labels,
            container_name: c.name.clone(),
            image: c.image.clone(),
            command: c.command.clone(),
            args: c.args.clone(),
            env,
            env_secrets,
            image_pull_secret,
            container_port,
            h2c,
            resources,
            readiness,
            readiness_timing,
            liveness,
            startup,
            container_concurrency: spec.container_concurrency.unwrap_or(0),
            timeout_seconds: spec.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS),
            response_start_timeout_seconds: spec.response_start_timeout_seconds,
        };
        problems.check(template.validate("spec.template"));
        problems.finish(|| template)
    }

    /// The manifest of a service as stored: `apply` of it changes nothing.
    pub fn from_desired(desired: &DesiredService, traffic: &[TrafficTarget]) -> KService {
        let t = &desired.template;
        let limits = ResourceList {
            cpu: t.resources.cpu_limit_millis.map(format_cpu),
            memory: t.resources.memory_limit_bytes.map(format_memory),
        };
        let requests = ResourceList {
            cpu: t.resources.cpu_request_millis.map(format_cpu),
            memory: t.resources.memory_request_bytes.map(format_memory),
        };
        let list = |l: ResourceList| (l != ResourceList::default()).then_some(l);
        let resources = ResourceRequirements {
            limits: list(limits),
            requests: list(requests),
        };
        let container = Container {
            name: t.container_name.clone(),
            image: t.image.clone(),
            command: t.command.clone(),
            args: t.args.clone(),
            env: t
                .env
                .iter()
                .map(|(name, value)| EnvVar {
                    name: name.clone(),
                    value: Some(value.clone()),
                    value_from: None,
                })
                .chain(t.env_secrets.iter().map(|(name, reference)| EnvVar {
                    name: name.clone(),
                    value: None,
                    value_from: Some(EnvVarSource {
                        secret_key_ref: Some(reference.clone()),
                    }),
                }))
                .collect(),
            ports: (t.container_port.is_some() || t.h2c)
                .then(|| Port {
                    container_port: t.container_port,
                    name: t.h2c.then(|| "h2c".to_string()),
                    protocol: None,
                })
                .into_iter()
                .collect(),
            resources: (resources != ResourceRequirements::default()).then_some(resources),
            readiness_probe: t.readiness.as_ref().map(|r| Probe::of(r, &t.readiness_timing)),
            liveness_probe: t.liveness.as_ref().map(|p| Probe::of(&p.check, &p.timing)),
            startup_probe: t.startup.as_ref().map(|p| Probe::of(&p.check, &p.timing)),
        };
        KService {
            api_version: API_VERSION.into(),
            kind: KIND.into(),
            metadata: ObjectMeta {
                name: Some(desired.name.clone()),
                namespace: Some(desired.namespace.clone()),
                labels: desired.labels.clone(),
                annotations: desired.annotations.clone(),
            },
            spec: ServiceSpec {
                template: Template {
                    metadata: Some(ObjectMeta {
                        name: t.name.clone(),
                        namespace: None,
                        labels: t.labels.clone(),
                        annotations: t.annotations.clone(),
                    }),
                    spec: RevisionSpec {
                        container_concurrency: Some(t.container_concurrency),
                        timeout_seconds: Some(t.timeout_seconds),
                        response_start_timeout_seconds: t.response_start_timeout_seconds,
                        image_pull_secrets: t
                            .image_pull_secret
                            .iter()
                            .map(|name| LocalObjectReference { name: name.clone() })
                            .collect(),
                        containers: vec![container],
                    },
                },
                traffic: Some(
                    traffic
                        .iter()
                        .map(|row| Traffic {
                            revision_name: row.revision.clone(),
                            latest_revision: Some(row.latest),
                            percent: Some(row.percent),
                            tag: row.tag.clone(),
                            url: None,
                        })
                        .collect(),
                ),
            },
            status: None,
        }
    }

    /// Whether the manifest's image names a code package, which a Knative cluster
    /// cannot run until it is built into an image.
    pub fn runs_code_package(&self) -> bool {
        self.spec
            .template
            .spec
            .containers
            .iter()
            .any(|c| c.image.starts_with(PACKAGE_IMAGE_PREFIX))
    }
}

fn traffic_row(i: usize, t: &Traffic) -> Result<TrafficTarget, FieldError> {
    let latest = t.latest_revision.unwrap_or(t.revision_name.is_none());
    if latest && t.revision_name.is_some() {
        return Err(FieldError::new(
            format!("spec.traffic[{i}]"),
            "names a revision and sets latestRevision: true; give one of them",
        ));
    }
    Ok(TrafficTarget {
        revision: t.revision_name.clone(),
        latest,
        percent: t.percent.unwrap_or(0),
        tag: t.tag.clone(),
    })
}

fn resources(path: &str, r: Option<&ResourceRequirements>) -> Result<Resources, FieldError> {
    let Some(r) = r else { return Ok(Resources::default()) };
    let memory = |list: &Option<ResourceList>, which: &str| {
        list.as_ref()
            .and_then(|l| l.memory.as_deref())
            .map(|m| parse_memory(&format!("{path}.{which}.memory"), m))
            .transpose()
    };
    let cpu = |list: &Option<ResourceList>, which: &str| {
        list.as_ref()
            .and_then(|l| l.cpu.as_deref())
            .map(|c| parse_cpu(&format!("{path}.{which}.cpu"), c))
            .transpose()
    };
    let resources = Resources {
        memory_limit_bytes: memory(&r.limits, "limits")?,
        cpu_limit_millis: cpu(&r.limits, "limits")?,
        memory_request_bytes: memory(&r.requests, "requests")?,
        cpu_request_millis: cpu(&r.requests, "requests")?,
    };
    let over = |request: Option<u64>, limit: Option<u64>| matches!((request, limit), (Some(r), Some(l)) if r > l);
    if over(resources.memory_request_bytes, resources.memory_limit_bytes) {
        return Err(FieldError::new(
            format!("{path}.requests.memory"),
            "is above limits.memory",
        ));
    }
    if over(
        resources.cpu_request_millis.map(u64::from),
        resources.cpu_limit_millis.map(u64::from),
    ) {
        return Err(FieldError::new(format!("{path}.requests.cpu"), "is above limits.cpu"));
    }
    Ok(resources)
}

fn probe_check(path: &str, probe: &Probe, container_port: Option<u16>) -> Result<Readiness, FieldError> {
    let port = container_port.unwrap_or(DEFAULT_CONTAINER_PORT);
    let check_port = |field: String, given: Option<u16>| match given {
        Some(p) if p != port => Err(FieldError::new(
            field,
            format!("{p} is not the container's port {port}; leave it out or use the container port"),
        )),
        _ => Ok(()),
    };
    match (&probe.http_get, &probe.tcp_socket) {
        (Some(get), None) => {
            check_port(format!("{path}.httpGet.port"), get.port)?;
            Ok(Readiness::HttpGet {
                path: get.path.clone().unwrap_or_else(|| "/".into()),
            })
        }
        (None, Some(tcp)) => {
            check_port(format!("{path}.tcpSocket.port"), tcp.port)?;
            Ok(Readiness::TcpSocket)
        }
        _ => Err(FieldError::new(path, "must have exactly one of httpGet or tcpSocket")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_manifests(text: &str) -> Result<Vec<KService>, (usize, FieldError)> {
        yaml_documents(text)?
            .into_iter()
            .map(|(i, value)| parse_manifest_value(value).map_err(|e| (i, e)))
            .collect()
    }

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn manifest(body: &str) -> String {
        format!("apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: hello\n{body}")
    }

    fn err(text: &str) -> FieldError {
        let docs = parse_manifests(text).map_err(|(_, e)| e);
        match docs.and_then(|d| d[0].desired("default")) {
            Ok(d) => panic!("accepted: {d:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn a_full_manifest_reads_and_round_trips() {
        let text = manifest(&format!(
            "  annotations:
    serving.knative.dev/rollout-duration: 60s
spec:
  template:
    metadata:
      name: hello-world
      annotations:
        autoscaling.knative.dev/min-scale: \"1\"
    spec:
      containerConcurrency: 10
      timeoutSeconds: 30
      imagePullSecrets: [{{name: reg}}]
      containers:
        - image: package:{DIGEST}
          command: [python3]
          args: [main.py]
          env:
            - name: TARGET
              value: World
            - name: DB_PASSWORD
              valueFrom:
                secretKeyRef: {{name: db, key: password}}
          ports:
            - containerPort: 8080
          resources:
            limits: {{cpu: 1, memory: 128Mi}}
            requests: {{cpu: 250m}}
          readinessProbe:
            httpGet:
              path: /ready
            periodSeconds: 2
            successThreshold: 2
          livenessProbe:
            httpGet:
              path: /healthz
            initialDelaySeconds: 3
            periodSeconds: 5
            timeoutSeconds: 2
            failureThreshold: 2
          startupProbe:
            tcpSocket: {{}}
            periodSeconds: 1
            failureThreshold: 30
  traffic:
    - latestRevision: true
      percent: 100
      tag: current
"
        ));
        let docs = parse_manifests(&text).unwrap();
        let desired = docs[0].desired("default").unwrap();
        assert_eq!(desired.template.name.as_deref(), Some("hello-world"));
        assert_eq!(desired.template.resources.cpu_limit_millis, Some(1000));
        assert_eq!(desired.template.resources.cpu_request_millis, Some(250));
        assert_eq!(desired.template.container_concurrency, 10);
        assert_eq!(desired.template.image_pull_secret.as_deref(), Some("reg"));
        assert_eq!(
            desired.template.env_secrets["DB_PASSWORD"],
            SecretKeyRef {
                name: "db".into(),
                key: "password".into()
            }
        );
        assert_eq!(
            desired.template.readiness,
            Some(Readiness::HttpGet { path: "/ready".into() })
        );
        assert_eq!(desired.template.readiness_timing.success_threshold(), 2);
        let liveness = desired.template.liveness.clone().unwrap();
        assert_eq!(
            liveness.check,
            Readiness::HttpGet {
                path: "/healthz".into()
            }
        );
        assert_eq!(liveness.timing.failure_threshold(), 2);
        assert_eq!(liveness.timing.period(), std::time::Duration::from_secs(5));
        assert_eq!(desired.template.startup.clone().unwrap().timing.failure_threshold(), 30);
        let traffic = desired.traffic.clone().unwrap();
        let back = KService::from_desired(&desired, &traffic);
        let text = serde_yaml_ng::to_string(&back).unwrap();
        let again = parse_manifests(&text).unwrap()[0].desired("default").unwrap();
        assert_eq!(again, desired);
    }

    #[test]
    fn a_port_named_h2c_makes_the_gateway_speak_http2_and_survives_the_round_trip() {
        let text = manifest(&format!(
            "spec:\n  template:\n    spec:\n      containers:\n        - image: package:{DIGEST}\n          ports:\n            - name: h2c\n              containerPort: 50051\n"
        ));
        let desired = parse_manifests(&text).unwrap()[0].desired("default").unwrap();
        assert!(desired.template.h2c);
        assert_eq!(desired.template.container_port, Some(50051));
        let mut back = KService::from_desired(&desired, &[]);
        back.spec.traffic = None;
        let again = parse_manifests(&serde_yaml_ng::to_string(&back).unwrap()).unwrap()[0]
            .desired("default")
            .unwrap();
        assert!(again.template.h2c);

        let e = err(&manifest(&format!(
            "spec:\n  template:\n    spec:\n      containers:\n        - image: package:{DIGEST}\n          ports:\n            - name: grpc\n"
        )));
        assert_eq!(e.field, "spec.template.spec.containers[0].ports[0].name");
        assert!(e.message.contains("h2c"), "{e}");
        let e = err(&manifest(&format!(
            "spec:\n  template:\n    spec:\n      containers:\n        - image: wasm:{DIGEST}\n          ports:\n            - name: h2c\n"
        )));
        assert_eq!(e.field, "spec.template.spec.containers[0].ports[0].name");
    }

    #[test]
    fn every_invalid_field_of_a_document_is_reported_at_once() {
        let text = manifest(&format!(
            "spec:
  template:
    spec:
      timeoutSeconds: 900
      containers:
        - image: package:{DIGEST}
          stdin: true
          env: [{{name: A, value: x, valueFrom: {{secretKeyRef: {{name: s, key: k}}}}}}]
          resources: {{limits: {{memory: lots}}}}
          livenessProbe: {{tcpSocket: {{}}, periodSeconds: 0, exec: {{command: [true]}}}}
  traffic:
    - latestRevision: true
      percent: 100
      colour: blue
"
        ));
        let e = match parse_manifests(&text) {
            Err((_, e)) => e,
            Ok(docs) => docs[0].desired("default").unwrap_err(),
        };
        let fields: Vec<String> = e.all().into_iter().map(|e| e.field).collect();
        let c = "spec.template.spec.containers[0]";
        assert_eq!(
            fields,
            [
                format!("{c}.stdin"),
                format!("{c}.livenessProbe.exec"),
                "spec.traffic[0].colour".to_string(),
                format!("{c}.env[0]"),
                format!("{c}.resources.limits.memory"),
                format!("{c}.livenessProbe.periodSeconds"),
                "spec.template.spec.timeoutSeconds".to_string(),
            ]
        );
    }

    #[test]
    fn unsupported_fields_are_rejected_with_their_path() {
        let base = |container_extra: &str, spec_extra: &str| {
            manifest(&format!(
                "spec:\n  template:\n    spec:\n{spec_extra}      containers:\n        - image: package:{DIGEST}\n{container_extra}"
            ))
        };
        let e = err(&base(
            "          livenessProbe:\n            exec: {command: [true]}\n",
            "",
        ));
        assert_eq!(e.field, "spec.template.spec.containers[0].livenessProbe.exec");
        assert!(e.message.contains("unknown or unsupported"), "{e}");
        let e = err(&base(
            "          env:\n            - name: A\n              valueFrom: {}\n",
            "",
        ));
        assert_eq!(e.field, "spec.template.spec.containers[0].env[0].valueFrom");
        for (env, field) in [
            (
                "            - name: A\n              value: x\n              valueFrom: {secretKeyRef: {name: s, key: k}}\n",
                "env[0]",
            ),
            (
                "            - name: A\n              valueFrom: {secretKeyRef: {name: S, key: k}}\n",
                "env[0].valueFrom.secretKeyRef.name",
            ),
            (
                "            - name: A\n              value: x\n            - name: A\n              valueFrom: {secretKeyRef: {name: s, key: k}}\n",
                "env[1].name",
            ),
        ] {
            let e = err(&base(&format!("          env:\n{env}"), ""));
            assert_eq!(e.field, format!("spec.template.spec.containers[0].{field}"), "{e}");
        }
        let e = err(&base("", "      timeoutSeconds: 900\n"));
        assert_eq!(e.field, "spec.template.spec.timeoutSeconds");
        let e = err(&base("          ports:\n            - containerPort: 70000\n", ""));
        assert_eq!(e.field, "spec.template.spec.containers[0].ports[0].containerPort");
        let e = err(&base("          resources:\n            limits: {memory: lots}\n", ""));
        assert_eq!(e.field, "spec.template.spec.containers[0].resources.limits.memory");
        for (probe, field) in [
            (
                "readinessProbe:\n            httpGet: {path: /}\n            periodSeconds: 7200\n",
                "readinessProbe.periodSeconds",
            ),
            (
                "livenessProbe:\n            tcpSocket: {}\n            periodSeconds: 0\n",
                "livenessProbe.periodSeconds",
            ),
            (
                "livenessProbe:\n            tcpSocket: {}\n            successThreshold: 2\n",
                "livenessProbe.successThreshold",
            ),
            (
                "startupProbe:\n            httpGet: {path: /}\n            failureThreshold: 0\n",
                "startupProbe.failureThreshold",
            ),
            (
                "startupProbe:\n            httpGet: {path: up}\n",
                "startupProbe.httpGet.path",
            ),
            (
                "livenessProbe:\n            httpGet: {path: /, port: 9}\n",
                "livenessProbe.httpGet.port",
            ),
            ("livenessProbe:\n            periodSeconds: 5\n", "livenessProbe"),
        ] {
            let e = err(&base(&format!("          {probe}"), ""));
            assert_eq!(e.field, format!("spec.template.spec.containers[0].{field}"), "{e}");
        }
        let e = err(&manifest(
            "spec:\n  template:\n    spec:\n      containers:\n        - image: ghcr.io/knative/helloworld-go:latest@sha256:abc\n",
        ));
        assert!(e.message.contains("is not an image reference"), "{e}");
        let e = err("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n");
        assert!(e.message.contains("not supported"), "{e}");
        let e = err(&manifest(&format!(
            "spec:\n  template:\n    metadata: {{name: other-v1}}\n    spec:\n      containers:\n        - image: package:{DIGEST}\n"
        )));
        assert_eq!(e.field, "spec.template.metadata.name");
        let e = err(&manifest(&format!(
            "spec:\n  template:\n    spec:\n      containers:\n        - image: package:{DIGEST}\n  traffic:\n    - revisionName: hello-00001\n      latestRevision: true\n      percent: 100\n"
        )));
        assert_eq!(e.field, "spec.traffic[0]");
    }

    #[test]
    fn several_documents_and_empty_ones() {
        let one = manifest(&format!(
            "spec:\n  template:\n    spec:\n      containers:\n        - image: package:{DIGEST}\n"
        ));
        let text = format!("---\n{one}---\n{}\n---\n", one.replace("name: hello", "name: other"));
        let docs = parse_manifests(&text).unwrap();
        assert_eq!(docs.len(), 2);
        let bad = format!("{one}---\n{}", one.replace("image:", "imagee:"));
        let (index, e) = parse_manifests(&bad).unwrap_err();
        assert_eq!(index, 2);
        assert!(e.field.contains("containers[0]"), "{e}");
    }
}
