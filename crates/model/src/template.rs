//! A revision template: what the user asked a revision to be, in Knative's terms
//! (`spec.template` of a Service). Every revision stores its template; a change to it
//! makes a new revision, and an unchanged one does not.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::annotations::{
    scale_to_zero_after, validate_template_annotations, ALLOWED_OUTBOUND_HOSTS, FUNCTION_HANDLER, FUNCTION_RUNTIME,
};
use crate::image_ref::{validate_image_reference, STORED_IMAGE_PREFIX};
use crate::names::validate_digest;
use crate::names::{validate_env_name, validate_env_var};
use crate::secret::{validate_secret_name, SecretKeyRef};
use crate::{FieldError, Problems};

/// Knative's default and ceiling for `timeoutSeconds`.
pub const DEFAULT_TIMEOUT_SECONDS: u32 = 300;
pub const MAX_TIMEOUT_SECONDS: u32 = 600;

/// The `image` prefix that names a stored code package instead of an OCI image.
pub const PACKAGE_IMAGE_PREFIX: &str = "package:";

/// The `image` prefix that names a WebAssembly component (`wasm:sha256:…`).
pub const WASM_IMAGE_PREFIX: &str = "wasm:";

/// What a revision runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A code package stored by digest (`package:sha256:…`).
    Package { digest: String },
    /// A `wasi:http/incoming-handler` component stored by digest (`wasm:sha256:…`).
    Wasm { digest: String },
    /// An OCI image: a registry reference, or `oci:sha256:…` for one imported from an
    /// archive or layout.
    Image { reference: String },
}

impl Source {
    /// The digest of the uploaded blob this source needs, if it runs one.
    pub fn uploaded_blob(&self) -> Option<&str> {
        match self {
            Source::Package { digest } | Source::Wasm { digest } => Some(digest),
            Source::Image { .. } => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Process,
    Function,
    Wasm,
    Image,
}

/// How readiness is decided once the instance listens on its port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Readiness {
    /// Ready once the port accepts connections (the default).
    TcpSocket,
    /// Ready once `GET path` answers 2xx or 3xx.
    HttpGet { path: String },
}

/// When and how often a probe runs and how many results decide it, Kubernetes'
/// fields; unset ones take their defaults (see the accessors).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeTiming {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<u32>,
    /// 0 (readiness only): probe as fast as it answers until ready, Knative's
    /// aggressive probing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<u32>,
}

/// Bounds on the timing fields, so a typo cannot park a probe for a day.
pub const MAX_PROBE_SECONDS: u32 = 3600;
pub const MAX_PROBE_THRESHOLD: u32 = 100;

impl ProbeTiming {
    pub fn is_unset(&self) -> bool {
        *self == ProbeTiming::default()
    }

    pub fn initial_delay(&self) -> Duration {
        Duration::from_secs(self.initial_delay_seconds.unwrap_or(0).into())
    }

    /// Kubernetes' default period is 10 s.
    pub fn period(&self) -> Duration {
        Duration::from_secs(self.period_seconds.unwrap_or(10).into())
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds.unwrap_or(1).into())
    }

    /// How often a readiness probe runs once the instance is ready: its period, or
    /// Kubernetes' 10 s where it probed as fast as it could (0 or unset) to start.
    pub fn period_once_ready(&self) -> Duration {
        match self.period_seconds {
            None | Some(0) => Duration::from_secs(10),
            Some(_) => self.period(),
        }
    }

    pub fn success_threshold(&self) -> u32 {
        self.success_threshold.unwrap_or(1)
    }

    pub fn failure_threshold(&self) -> u32 {
        self.failure_threshold.unwrap_or(3)
    }

    /// `path` names the probe (`…livenessProbe`); `zero_period` and `successes` say
    /// what this kind of probe allows (only readiness may probe at once and ask for
    /// more than one success, as in Kubernetes).
    fn validate(&self, path: &str, zero_period: bool, successes: bool) -> Result<(), FieldError> {
        let seconds = [
            ("initialDelaySeconds", self.initial_delay_seconds, 0),
            ("periodSeconds", self.period_seconds, if zero_period { 0 } else { 1 }),
            ("timeoutSeconds", self.timeout_seconds, 1),
        ];
        for (name, value, least) in seconds {
            if let Some(v) = value.filter(|v| *v < least || *v > MAX_PROBE_SECONDS) {
                return Err(FieldError::new(
                    format!("{path}.{name}"),
                    format!("{v} is out of range; must be between {least} and {MAX_PROBE_SECONDS}"),
                ));
            }
        }
        let thresholds = [
            (
                "successThreshold",
                self.success_threshold,
                if successes { MAX_PROBE_THRESHOLD } else { 1 },
            ),
            ("failureThreshold", self.failure_threshold, MAX_PROBE_THRESHOLD),
        ];
        for (name, value, most) in thresholds {
            if let Some(v) = value.filter(|v| *v < 1 || *v > most) {
                return Err(FieldError::new(
                    format!("{path}.{name}"),
                    format!("{v} is out of range; must be between 1 and {most}"),
                ));
            }
        }
        Ok(())
    }
}

/// A liveness or startup probe: its check and its timing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    pub check: Readiness,
    #[serde(default, skip_serializing_if = "ProbeTiming::is_unset")]
    pub timing: ProbeTiming,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_limit_millis: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_request_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_request_millis: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionTemplate {
    /// `spec.template.metadata.name`: the revision's name, when the user chose one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    /// `package:sha256:<hex>`, `wasm:sha256:<hex>`, an OCI image reference, or
    /// `oci:sha256:<hex>` for an imported image.
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Variables whose values come from the namespace's secrets, read when an
    /// instance starts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env_secrets: BTreeMap<String, SecretKeyRef>,
    /// An image's registry credentials: a secret of the namespace with the keys
    /// `username` and `password` (Kubernetes' `imagePullSecrets`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_port: Option<u16>,
    /// The instance speaks HTTP/2 without TLS (Knative: a port named `h2c`), as gRPC
    /// servers do; otherwise HTTP/1.1.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub h2c: bool,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<Readiness>,
    #[serde(default, skip_serializing_if = "ProbeTiming::is_unset")]
    pub readiness_timing: ProbeTiming,
    /// Restarts an instance that stops passing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<Probe>,
    /// Holds the other probes back until it passes once; fails a start that never does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup: Option<Probe>,
    /// Requests one instance handles at once; 0 means no limit.
    #[serde(default)]
    pub container_concurrency: u32,
    pub timeout_seconds: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_start_timeout_seconds: Option<u32>,
}

impl RevisionTemplate {
    /// A template running a stored package with every setting at its default.
    pub fn for_package(digest: &str) -> Self {
        RevisionTemplate {
            name: None,
            annotations: BTreeMap::new(),
            labels: BTreeMap::new(),
            container_name: None,
            image: format!("{PACKAGE_IMAGE_PREFIX}{digest}"),
            command: None,
            args: None,
            env: BTreeMap::new(),
            env_secrets: BTreeMap::new(),
            image_pull_secret: None,
            container_port: None,
            h2c: false,
            resources: Resources::default(),
            readiness: None,
            readiness_timing: ProbeTiming::default(),
            liveness: None,
            startup: None,
            container_concurrency: 0,
            timeout_seconds: DEFAULT_TIMEOUT_SECONDS,
            response_start_timeout_seconds: None,
        }
    }

    /// A template running a stored component with every setting at its default.
    pub fn for_wasm(digest: &str) -> Self {
        RevisionTemplate {
            image: format!("{WASM_IMAGE_PREFIX}{digest}"),
            ..Self::for_package(digest)
        }
    }

    /// A template running an OCI image with every setting at its default.
    pub fn for_image(reference: &str) -> Self {
        RevisionTemplate {
            image: reference.to_string(),
            ..Self::for_package("")
        }
    }

    /// Checks every field; `path` is where the template sits in the caller's document
    /// (`spec.template` in a manifest), so errors name the field as the user wrote it.
    pub fn validate(&self, path: &str) -> Result<Source, FieldError> {
        let spec = format!("{path}.spec");
        let container = format!("{spec}.containers[0]");
        let mut problems = Problems::default();
        problems.check(validate_template_annotations(
            &format!("{path}.metadata.annotations"),
            &self.annotations,
        ));
        for (name, value) in &self.env {
            problems.check(validate_env_var(&format!("{container}.env[{name}]"), name, value));
        }
        for (name, reference) in &self.env_secrets {
            let field = format!("{container}.env[{name}]");
            problems.check(validate_env_name(&field, name));
            if self.env.contains_key(name) {
                problems.push(FieldError::new(
                    field.clone(),
                    "is set both to a value and from a secret",
                ));
            }
            problems.check(reference.validate(&format!("{field}.valueFrom.secretKeyRef")));
        }
        if let Some(secret) = &self.image_pull_secret {
            problems.check(validate_secret_name(
                &format!("{spec}.imagePullSecrets[0].name"),
                secret,
            ));
        }
        if self.container_port == Some(0) {
            problems.push(FieldError::new(
                format!("{container}.ports[0].containerPort"),
                "must be between 1 and 65535",
            ));
        }
        if !self.readiness_timing.is_unset() && self.readiness.is_none() {
            problems.push(FieldError::new(
                format!("{container}.readinessProbe"),
                "has timing fields but no httpGet or tcpSocket",
            ));
        }
        let probes = [
            ("readinessProbe", self.readiness.as_ref(), Some(&self.readiness_timing)),
            (
                "livenessProbe",
                self.liveness.as_ref().map(|p| &p.check),
                self.liveness.as_ref().map(|p| &p.timing),
            ),
            (
                "startupProbe",
                self.startup.as_ref().map(|p| &p.check),
                self.startup.as_ref().map(|p| &p.timing),
            ),
        ];
        for (name, check, timing) in probes {
            let field = format!("{container}.{name}");
            if let Some(timing) = timing {
                let readiness = name == "readinessProbe";
                problems.check(timing.validate(&field, readiness, readiness));
            }
            if let Some(Readiness::HttpGet { path: probe }) = check {
                if self.h2c {
                    problems.push(FieldError::new(
                        format!("{field}.httpGet"),
                        "speaks HTTP/1.1, which an h2c port does not; use tcpSocket",
                    ));
                }
                if !probe.starts_with('/') {
                    problems.push(FieldError::new(
                        format!("{field}.httpGet.path"),
                        format!("{probe:?} must start with '/'"),
                    ));
                }
            }
        }
        if self.timeout_seconds == 0 || self.timeout_seconds > MAX_TIMEOUT_SECONDS {
            problems.push(FieldError::new(
                format!("{spec}.timeoutSeconds"),
                format!(
                    "{} is out of range; must be between 1 and {MAX_TIMEOUT_SECONDS}",
                    self.timeout_seconds
                ),
            ));
        }
        if let Some(start) = self.response_start_timeout_seconds {
            if start == 0 || start > self.timeout_seconds {
                problems.push(FieldError::new(
                    format!("{spec}.responseStartTimeoutSeconds"),
                    format!(
                        "{start} is out of range; must be between 1 and timeoutSeconds ({})",
                        self.timeout_seconds
                    ),
                ));
            }
        }
        if self.command.as_ref().is_some_and(|c| c.is_empty()) {
            problems.push(FieldError::new(
                format!("{container}.command"),
                "is empty; give the program to run, or leave the field out to detect it from the package",
            ));
        }
        let Some(source) = problems.check(parse_image(&format!("{container}.image"), &self.image)) else {
            return problems.finish(|| unreachable!("a problem was found"));
        };
        if self.annotations.contains_key(crate::annotations::FUNCTION_RUNTIME) {
            if !matches!(source, Source::Package { .. }) {
                problems.push(FieldError::new(
                    format!("{path}.metadata.annotations[{}]", crate::annotations::FUNCTION_RUNTIME),
                    "is for code packages; a component or an image is its own runtime",
                ));
            }
            let refused = [
                ("command", self.command.is_some()),
                ("readinessProbe", self.readiness.is_some()),
                ("livenessProbe", self.liveness.is_some()),
                ("startupProbe", self.startup.is_some()),
            ];
            if let Some((name, _)) = refused.iter().find(|(_, set)| *set) {
                problems.push(FieldError::new(
                    format!("{container}.{name}"),
                    "does not apply to a function: the function runtime runs the handler",
                ));
            }
            if self.h2c {
                problems.push(FieldError::new(
                    format!("{container}.ports[0].name"),
                    "h2c does not apply to a function: its runtime serves HTTP/1.1",
                ));
            }
        }
        if matches!(source, Source::Wasm { .. }) {
            let refused = [
                ("command", self.command.is_some()),
                ("args", self.args.is_some()),
                ("readinessProbe", self.readiness.is_some()),
                ("livenessProbe", self.liveness.is_some()),
                ("startupProbe", self.startup.is_some()),
                ("ports[0].name", self.h2c),
            ];
            if let Some((name, _)) = refused.iter().find(|(_, set)| *set) {
                problems.push(FieldError::new(
                    format!("{container}.{name}"),
                    "does not apply to a WebAssembly component: Updraft runs it and serves its HTTP itself",
                ));
            }
        }
        problems.finish(|| source)
    }

    /// What a revision of this template runs from, as far as settings go: settings of
    /// one kind (a command, a component's outbound hosts) mean nothing to another.
    fn kind(&self) -> Kind {
        if self.image.starts_with(WASM_IMAGE_PREFIX) {
            Kind::Wasm
        } else if !self.image.starts_with(PACKAGE_IMAGE_PREFIX) {
            Kind::Image
        } else if self.annotations.contains_key(FUNCTION_RUNTIME) {
            Kind::Function
        } else {
            Kind::Process
        }
    }

    /// The template of a new deploy: `fresh` names what runs now, and every other
    /// setting of this (the latest) template carries over. Those that belong to one
    /// kind of revision (command, args and probes; a component's outbound
    /// hosts; a function's runtime and handler) carry over only when the kind stays.
    pub fn carry_settings_to(&self, fresh: RevisionTemplate) -> RevisionTemplate {
        let same_kind = self.kind() == fresh.kind();
        let mut annotations = self.annotations.clone();
        if !same_kind {
            for key in [ALLOWED_OUTBOUND_HOSTS, FUNCTION_RUNTIME, FUNCTION_HANDLER] {
                annotations.remove(key);
            }
        }
        annotations.extend(fresh.annotations);
        RevisionTemplate {
            name: None,
            image: fresh.image,
            annotations,
            command: self.command.clone().filter(|_| same_kind),
            args: self.args.clone().filter(|_| same_kind),
            readiness: self.readiness.clone().filter(|_| same_kind),
            readiness_timing: if same_kind {
                self.readiness_timing
            } else {
                ProbeTiming::default()
            },
            liveness: self.liveness.clone().filter(|_| same_kind),
            startup: self.startup.clone().filter(|_| same_kind),
            h2c: self.h2c && same_kind,
            ..self.clone()
        }
    }

    pub fn scale_to_zero_after(&self) -> Duration {
        scale_to_zero_after(&self.annotations)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds.into())
    }

    pub fn response_start_timeout(&self) -> Duration {
        Duration::from_secs(
            self.response_start_timeout_seconds
                .unwrap_or(self.timeout_seconds)
                .into(),
        )
    }

    /// Whether two templates make the same revision; the requested name only counts
    /// when both name one.
    pub fn same_revision(&self, other: &RevisionTemplate) -> bool {
        let mut a = self.clone();
        let mut b = other.clone();
        if a.name.is_none() || b.name.is_none() {
            a.name = None;
            b.name = None;
        }
        a == b
    }
}

/// Reads an `image` value: `package:sha256:<hex>` names a stored package,
/// `wasm:sha256:<hex>` a stored WebAssembly component, `oci:sha256:<hex>` an imported
/// image, and anything else must be an OCI image reference.
pub fn parse_image(field: &str, image: &str) -> Result<Source, FieldError> {
    if let Some(digest) = image.strip_prefix(WASM_IMAGE_PREFIX) {
        return Ok(Source::Wasm {
            digest: validate_digest(field, digest)?,
        });
    }
    if let Some(digest) = image.strip_prefix(STORED_IMAGE_PREFIX) {
        validate_digest(field, digest)?;
        return Ok(Source::Image {
            reference: image.to_string(),
        });
    }
    match image.strip_prefix(PACKAGE_IMAGE_PREFIX) {
        Some(digest) => Ok(Source::Package {
            digest: validate_digest(field, digest)?,
        }),
        None if image.trim().is_empty() => Err(FieldError::new(
            field,
            "is empty; name a code package as package:<folder, archive or sha256 digest>, or a component as wasm:<file or sha256 digest>",
        )),
        None => {
            validate_image_reference(field, image)?;
            Ok(Source::Image {
                reference: image.to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn components_are_named_wasm_and_take_no_command() {
        let t = RevisionTemplate::for_wasm(DIGEST);
        assert_eq!(
            t.validate("spec.template").unwrap(),
            Source::Wasm { digest: DIGEST.into() }
        );
        let with_command = RevisionTemplate {
            command: Some(vec!["python3".into()]),
            ..t.clone()
        };
        let err = with_command.validate("spec.template").unwrap_err();
        assert_eq!(err.field, "spec.template.spec.containers[0].command");
        let bad = RevisionTemplate {
            image: "wasm:sha256:nothex".into(),
            ..t.clone()
        };
        assert_eq!(bad.validate("t").unwrap_err().field, "t.spec.containers[0].image");
        let mut hosts = t;
        hosts.annotations.insert(
            crate::annotations::ALLOWED_OUTBOUND_HOSTS.into(),
            "api.example.com, *:8080 x".into(),
        );
        let err = hosts.validate("t").unwrap_err();
        assert!(err.message.contains("\"*:8080 x\" is not a host"), "{err}");
    }

    #[test]
    fn defaults_validate_and_bad_fields_are_named() {
        let t = RevisionTemplate::for_package(DIGEST);
        assert_eq!(
            t.validate("spec.template").unwrap(),
            Source::Package { digest: DIGEST.into() }
        );
        let bad = RevisionTemplate {
            timeout_seconds: 601,
            ..t.clone()
        };
        assert_eq!(
            bad.validate("spec.template").unwrap_err().field,
            "spec.template.spec.timeoutSeconds"
        );
        let bad = RevisionTemplate {
            response_start_timeout_seconds: Some(400),
            ..t.clone()
        };
        assert_eq!(
            bad.validate("spec.template").unwrap_err().field,
            "spec.template.spec.responseStartTimeoutSeconds"
        );
        let bad = RevisionTemplate {
            image: "ghcr.io/knative/helloworld-go:".into(),
            ..t.clone()
        };
        let err = bad.validate("spec.template").unwrap_err();
        assert_eq!(err.field, "spec.template.spec.containers[0].image");
        assert!(err.message.contains("is not an image reference"), "{err}");
        let image = RevisionTemplate {
            image: "ghcr.io/knative/helloworld-go:latest".into(),
            ..t.clone()
        };
        assert_eq!(
            image.validate("spec.template").unwrap(),
            Source::Image {
                reference: "ghcr.io/knative/helloworld-go:latest".into()
            }
        );
        let bad = RevisionTemplate {
            readiness: Some(Readiness::HttpGet { path: "ready".into() }),
            ..t.clone()
        };
        assert!(bad
            .validate("spec.template")
            .unwrap_err()
            .field
            .ends_with("httpGet.path"));
    }

    #[test]
    fn a_name_alone_does_not_make_a_new_revision() {
        let a = RevisionTemplate::for_package(DIGEST);
        let named = RevisionTemplate {
            name: Some("hello-v1".into()),
            ..a.clone()
        };
        assert!(a.same_revision(&named));
        let renamed = RevisionTemplate {
            name: Some("hello-v2".into()),
            ..a.clone()
        };
        assert!(!named.same_revision(&renamed));
        let changed = RevisionTemplate {
            container_concurrency: 1,
            ..a.clone()
        };
        assert!(!a.same_revision(&changed));
    }
}
