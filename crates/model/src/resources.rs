//! The resources the store keeps: namespaces, services and their immutable revisions.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::names::validate_env_name;
use crate::quantity::{parse_cpu, parse_memory};
use crate::FieldError;

/// Idle time after which a revision's instances are stopped, unless the service says
/// otherwise.
pub const DEFAULT_SCALE_TO_ZERO_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    pub name: String,
    pub created_at_us: i64,
}

/// Everything needed to start an instance of a revision. Never changes once stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionConfig {
    /// `sha256:<hex>` of the package archive.
    pub package_digest: String,
    pub command: Vec<String>,
    /// Where the command came from (`updraft.yaml`, `Procfile`, `main.py`, …).
    pub command_source: String,
    pub env: BTreeMap<String, String>,
    pub memory_bytes: Option<u64>,
    pub cpu_millis: Option<u32>,
    pub scale_to_zero_after_ms: u64,
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
    pub config: RevisionConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    pub latest_revision: String,
    pub generation: u32,
    pub created_at_us: i64,
    pub updated_at_us: i64,
}

/// A deploy as the REST API receives it: a stored package plus the user's overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploySpec {
    pub package: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_to_zero_after: Option<String>,
}

/// A [`DeploySpec`] whose fields have been checked and parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployOverrides {
    pub package_digest: String,
    pub env: BTreeMap<String, String>,
    pub memory_bytes: Option<u64>,
    pub cpu_millis: Option<u32>,
    pub scale_to_zero_after: Option<Duration>,
}

impl DeploySpec {
    pub fn validate(&self) -> Result<DeployOverrides, FieldError> {
        let package_digest = validate_digest("package", &self.package)?;
        for name in self.env.keys() {
            validate_env_name(&format!("env.{name}"), name)?;
        }
        let memory_bytes = self.memory.as_deref().map(|m| parse_memory("memory", m)).transpose()?;
        let cpu_millis = self.cpu.as_deref().map(|c| parse_cpu("cpu", c)).transpose()?;
        let scale_to_zero_after = self
            .scale_to_zero_after
            .as_deref()
            .map(|d| parse_duration("scale_to_zero_after", d))
            .transpose()?;
        Ok(DeployOverrides {
            package_digest,
            env: self.env.clone(),
            memory_bytes,
            cpu_millis,
            scale_to_zero_after,
        })
    }
}

/// Accepts `sha256:` followed by 64 lower-case hex digits.
pub fn validate_digest(field: &str, digest: &str) -> Result<String, FieldError> {
    let hex = digest.strip_prefix("sha256:").unwrap_or("");
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(digest.to_string())
    } else {
        Err(FieldError::new(
            field,
            format!(
                "{digest:?} is not a package digest; expected sha256:<64 hex digits> as returned by the package upload"
            ),
        ))
    }
}

/// Durations like `5s`, `10m`, `1h30m`.
pub fn parse_duration(field: &str, text: &str) -> Result<Duration, FieldError> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        FieldError::new(
            field,
            format!("{text:?} is not a duration ({e}); use e.g. 500ms, 5s, 10m"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn deploy_spec_validates_each_field() {
        let mut spec = DeploySpec {
            package: DIGEST.into(),
            memory: Some("128Mi".into()),
            cpu: Some("500m".into()),
            scale_to_zero_after: Some("5s".into()),
            ..Default::default()
        };
        spec.env.insert("GREETING".into(), "hi".into());
        let ok = spec.validate().unwrap();
        assert_eq!(ok.memory_bytes, Some(128 << 20));
        assert_eq!(ok.cpu_millis, Some(500));
        assert_eq!(ok.scale_to_zero_after, Some(Duration::from_secs(5)));

        let bad = DeploySpec {
            package: "sha256:xyz".into(),
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().field, "package");
        let bad = DeploySpec {
            scale_to_zero_after: Some("soon".into()),
            ..spec.clone()
        };
        assert_eq!(bad.validate().unwrap_err().field, "scale_to_zero_after");
        let mut bad = spec.clone();
        bad.env.insert("PORT".into(), "1".into());
        assert_eq!(bad.validate().unwrap_err().field, "env.PORT");
    }

    #[test]
    fn deploy_spec_refuses_unknown_fields() {
        let err = serde_json::from_str::<DeploySpec>(r#"{"package":"x","replicas":3}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("replicas"), "{err}");
    }
}
