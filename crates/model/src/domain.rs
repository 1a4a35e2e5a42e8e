//! Custom domains: Knative's `DomainMapping`, a host of the user's own routed to a
//! service (or one of its tags) of a namespace.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::knative::{strict, ObjectMeta};
use crate::names::{validate_namespace_name, validate_service_name};
use crate::secret::validate_secret_name;
use crate::FieldError;

pub const API_VERSION: &str = "serving.knative.dev/v1beta1";
pub const KIND: &str = "DomainMapping";
/// Updraft's annotation that maps the domain to a tag's revision instead of the
/// service's traffic split (Knative maps to a Service only).
pub const TAG_ANNOTATION: &str = "updraft.dev/tag";

/// A domain routed to a service of a namespace. A domain is mapped in one namespace
/// at a time: the first to map it holds it until it unmaps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainMapping {
    pub namespace: String,
    pub domain: String,
    pub service: String,
    /// A tag of the service: the domain leads to that tag's revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// A secret of the namespace with `tls.crt` and `tls.key` (PEM), Kubernetes' TLS
    /// secret layout: the gateway presents it for this domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret: Option<String>,
    #[serde(default)]
    pub created_at_us: i64,
}

impl DomainMapping {
    /// Checks every field; errors name them as the API's request does.
    pub fn validate(&self) -> Result<(), FieldError> {
        validate_namespace_name("namespace", &self.namespace)?;
        validate_domain("domain", &self.domain)?;
        validate_service_name("service", &self.service)?;
        if let Some(tag) = &self.tag {
            validate_namespace_name("tag", tag)?;
        }
        if let Some(secret) = &self.tls_secret {
            validate_secret_name("tls_secret", secret)?;
        }
        Ok(())
    }
}

/// `DomainMapping` as Knative writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KDomainMapping {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: KDomainMappingSpec,
    /// Output only; ignored when applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_yaml_ng::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KDomainMappingSpec {
    #[serde(rename = "ref")]
    pub reference: KReference,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<KSecretTls>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KReference {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KSecretTls {
    pub secret_name: String,
}

/// A mapping read from a manifest: its namespace when the manifest gives one.
#[derive(Debug, Clone, PartialEq)]
pub struct MappingDocument {
    pub namespace: Option<String>,
    pub mapping: DomainMapping,
}

/// Reads and checks a `DomainMapping` manifest; the name is the domain, the ref a
/// Service of the same namespace (as Knative requires).
pub fn from_manifest(value: serde_yaml_ng::Value) -> Result<MappingDocument, FieldError> {
    let k: KDomainMapping = strict(value)?;
    let domain = k
        .metadata
        .name
        .clone()
        .ok_or_else(|| FieldError::new("metadata.name", "is missing; a DomainMapping is named by its domain"))?;
    validate_domain("metadata.name", &domain)?;
    let r = &k.spec.reference;
    if r.kind.as_deref().is_some_and(|kind| kind != "Service") {
        return Err(FieldError::new("spec.ref.kind", "must be Service"));
    }
    if r.api_version
        .as_deref()
        .is_some_and(|v| v != crate::knative::API_VERSION)
    {
        return Err(FieldError::new(
            "spec.ref.apiVersion",
            format!("must be {}", crate::knative::API_VERSION),
        ));
    }
    if r.namespace.is_some() && r.namespace != k.metadata.namespace {
        return Err(FieldError::new(
            "spec.ref.namespace",
            "must be the mapping's own namespace",
        ));
    }
    validate_service_name("spec.ref.name", &r.name)?;
    let mut annotations = k.metadata.annotations.clone();
    let tag = annotations.remove(TAG_ANNOTATION);
    if let Some(tag) = &tag {
        validate_namespace_name(&format!("metadata.annotations[{TAG_ANNOTATION}]"), tag)?;
    }
    if let Some(key) = annotations.keys().next() {
        return Err(FieldError::new(
            format!("metadata.annotations[{key}]"),
            format!("is not supported; a DomainMapping takes {TAG_ANNOTATION}"),
        ));
    }
    let tls_secret = k.spec.tls.as_ref().map(|t| t.secret_name.clone());
    if let Some(secret) = &tls_secret {
        validate_secret_name("spec.tls.secretName", secret)?;
    }
    Ok(MappingDocument {
        namespace: k.metadata.namespace,
        mapping: DomainMapping {
            namespace: String::new(),
            domain,
            service: r.name.clone(),
            tag,
            tls_secret,
            created_at_us: 0,
        },
    })
}

impl DomainMapping {
    /// The mapping as a Knative manifest: `apply` of it changes nothing.
    pub fn to_manifest(&self) -> KDomainMapping {
        KDomainMapping {
            api_version: API_VERSION.into(),
            kind: KIND.into(),
            metadata: ObjectMeta {
                name: Some(self.domain.clone()),
                namespace: Some(self.namespace.clone()),
                labels: BTreeMap::new(),
                annotations: self
                    .tag
                    .iter()
                    .map(|t| (TAG_ANNOTATION.to_string(), t.clone()))
                    .collect(),
            },
            spec: KDomainMappingSpec {
                reference: KReference {
                    name: self.service.clone(),
                    kind: Some("Service".into()),
                    api_version: Some(crate::knative::API_VERSION.into()),
                    namespace: None,
                },
                tls: self.tls_secret.as_ref().map(|s| KSecretTls { secret_name: s.clone() }),
            },
            status: None,
        }
    }
}

/// The longest DNS name (RFC 1035), less the trailing dot.
pub const MAX_DOMAIN: usize = 253;
/// [`validate_domain`]'s rule as a pattern, for the API's schema.
pub const DOMAIN_PATTERN: &str = "^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\\.)+[a-z]([-a-z0-9]{0,61}[a-z0-9])?$";

/// A fully qualified DNS name of the user's: lower-case labels of letters, digits and
/// '-' (1 to 63 characters, not starting or ending with '-'), at least two of them,
/// the last starting with a letter (so never an IP address).
pub fn validate_domain(field: &str, domain: &str) -> Result<(), FieldError> {
    let rule = "must be a lower-case DNS name of at least two labels (letters, digits and '-', each 1 to 63 characters, not starting or ending with '-', the last starting with a letter), like api.example.com";
    if domain.is_empty() || domain.len() > MAX_DOMAIN {
        return Err(FieldError::new(
            field,
            format!(
                "is {} characters long; it {rule}, at most {MAX_DOMAIN} characters",
                domain.len()
            ),
        ));
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    // Top-level domains start with a letter, which also tells a name from an IPv4 address.
    let top_ok = labels
        .last()
        .is_some_and(|l| l.starts_with(|c: char| c.is_ascii_lowercase()));
    if labels.len() < 2 || !labels.iter().all(label_ok) || !top_ok {
        return Err(FieldError::new(field, format!("{domain:?} {rule}")));
    }
    Ok(())
}

/// Whether `domain` is one of the platform's own hosts (`*.{platform_domain}`), which
/// name services by their namespace and cannot be claimed.
pub fn is_platform_host(domain: &str, platform_domain: &str) -> bool {
    domain == platform_domain || domain.ends_with(&format!(".{platform_domain}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_dns_names_of_two_labels_or_more() {
        for good in [
            "api.example.com",
            "a.b",
            "x-1.example.co.uk",
            "1api.example.com",
            "a.xn--p1ai",
        ] {
            validate_domain("domain", good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        let long = format!("{}.com", "a".repeat(64));
        let longest = format!("{}.com", vec!["a".repeat(63); 4].join("."));
        for bad in [
            "",
            "localhost",
            "API.example.com",
            "-a.example.com",
            "a-.example.com",
            "a..b",
            ".a.b",
            "a.b.",
            "10.0.0.1",
            "a_b.example.com",
            "a.b:80",
            "*.example.com",
            &long,
            &longest,
        ] {
            let e = validate_domain("domain", bad).expect_err(bad);
            assert_eq!(e.field, "domain");
        }
    }

    #[test]
    fn a_knative_domain_mapping_round_trips_and_bad_ones_name_their_field() {
        let text = "apiVersion: serving.knative.dev/v1beta1
kind: DomainMapping
metadata:
  name: api.example.com
  namespace: team
  annotations: {updraft.dev/tag: canary}
spec:
  ref: {name: hello, kind: Service, apiVersion: serving.knative.dev/v1}
  tls: {secretName: api-cert}
";
        let doc = from_manifest(serde_yaml_ng::from_str(text).unwrap()).unwrap();
        assert_eq!(doc.namespace.as_deref(), Some("team"));
        let mapping = DomainMapping {
            namespace: "team".into(),
            ..doc.mapping.clone()
        };
        assert_eq!(
            (
                mapping.service.as_str(),
                mapping.tag.as_deref(),
                mapping.tls_secret.as_deref()
            ),
            ("hello", Some("canary"), Some("api-cert"))
        );
        let back = serde_yaml_ng::to_value(mapping.to_manifest()).unwrap();
        assert_eq!(from_manifest(back).unwrap(), doc);

        for (change, field) in [
            (("name: api.example.com", "name: API"), "metadata.name"),
            (("kind: Service,", "kind: Route,"), "spec.ref.kind"),
            (("name: hello", "name: Hello"), "spec.ref.name"),
            (("updraft.dev/tag: canary", "other: x"), "metadata.annotations[other]"),
            (("secretName: api-cert", "secretName: a/b"), "spec.tls.secretName"),
            (("tls: {", "extra: 1\n  tls: {"), "spec.extra"),
        ] {
            let bad = text.replace(change.0, change.1);
            let e = from_manifest(serde_yaml_ng::from_str(&bad).unwrap()).expect_err(&bad);
            assert_eq!(e.field, field, "{e}");
        }
    }

    #[test]
    fn the_platforms_own_hosts_are_not_custom_domains() {
        assert!(is_platform_host("hello.default.localhost", "localhost"));
        assert!(is_platform_host("localhost", "localhost"));
        assert!(!is_platform_host("mylocalhost", "localhost"));
        assert!(!is_platform_host("api.example.com", "example.org"));
    }
}
