//! What the REST API takes in request bodies, beside the `updraft_model` and
//! `updraft_events` specs it takes whole (`DeploySpec`, `TriggerSpec`, limits).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use updraft_events::delivery::DeliverySpec;
use updraft_model::auth::Grant;
use updraft_model::TrafficTarget;
use utoipa::ToSchema;

/// `POST /v1/namespaces`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNamespace {
    #[schema(schema_with = crate::schema::namespace_name)]
    pub name: String,
}

/// `PUT …/traffic`: the whole table, replacing the one set.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrafficRequest {
    pub traffic: Vec<TrafficTarget>,
}

/// `POST …/rollback`; an empty body means the revision before the latest.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// `PUT …/brokers/{name}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BrokerRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
}

/// `PUT …/domainmappings/{domain}`: where a custom domain leads.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DomainMappingRequest {
    /// A service of the namespace.
    #[schema(schema_with = crate::schema::service_name)]
    pub service: String,
    /// One of its tags: the domain leads to that tag's revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::schema::optional_tag)]
    pub tag: Option<String>,
    /// A secret of the namespace with `tls.crt` and `tls.key` (PEM), presented for
    /// this domain when the gateway serves TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::schema::optional_secret_name)]
    pub tls_secret: Option<String>,
}

/// `POST …/secrets`: a new secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSecretRequest {
    #[schema(schema_with = crate::schema::secret_name)]
    pub name: String,
    /// Key → value, base64-encoded (as Kubernetes' `data`).
    #[schema(schema_with = crate::schema::secret_data)]
    pub data: BTreeMap<String, String>,
}

/// `PUT …/secrets/{name}`: every key and value, replacing what the secret held.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretDataRequest {
    /// Key → value, base64-encoded (as Kubernetes' `data`).
    #[schema(schema_with = crate::schema::secret_data)]
    pub data: BTreeMap<String, String>,
}

/// `POST /v1/images/pull`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PullRequest {
    /// A registry reference: `registry/repository:tag` or `…@sha256:…`.
    pub reference: String,
}

/// `POST /v1/registries`. No `Debug`: it holds a password.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// `host` or `host:port`.
    pub registry: String,
    pub username: String,
    pub password: String,
}

/// `GET …/services/{name}/logs`: which lines, from when, and whether to follow.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The last this many lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<u32>,
    /// A time (RFC 3339) or an age (`10m`: that long ago).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Lines containing this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grep: Option<String>,
    /// Keep the response open and send new lines as server-sent events.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub follow: bool,
    /// The access log (one record per request) instead of the instances' output.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub requests: bool,
    /// The output of the revisions' builds (dependencies, `build:`) instead of the
    /// instances'.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub build: bool,
}

/// `PUT /v1/namespaces/{ns}/services/{name}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeployQuery {
    /// Answer with the deploy's steps as JSON lines (`application/x-ndjson`) while it
    /// runs: the last is `done` with the service or `failed` with the error.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub watch: bool,
}

/// `GET /v1/usage`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// Only this namespace's usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(schema_with = crate::schema::namespace_name)]
    pub namespace: Option<String>,
    /// A time (RFC 3339) or an age (`24h`: that long ago).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(schema_with = crate::schema::usage_grouping)]
    pub by: Option<String>,
}

/// `POST /v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// What its owner calls it (`ci`, `alice-laptop`): letters, digits, `-_.@`, at most 63.
    pub name: String,
    /// `[{"role": "admin"}]`, or roles in namespaces: `[{"role": "developer", "namespace": "team-a"}]`.
    pub grants: Vec<Grant>,
    /// How long it is valid (`30d`, `12h`); valid until revoked if not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<String>,
}

/// `GET /v1/audit`: which entries.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Entries at or after this time: RFC 3339 or a duration back from now (`1h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Only what this token id did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// At most this many of the latest entries (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<usize>,
}
