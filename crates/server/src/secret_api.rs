//! The REST API of secrets: written whole, read back as their keys only.
//!
//! | method and path | what it does |
//! |---|---|
//! | `GET, POST /v1/namespaces/{ns}/secrets` | list; create `{"name", "data": {key: base64}}` (409 if it exists) |
//! | `GET, PUT, DELETE /v1/namespaces/{ns}/secrets/{name}` | its keys; replace its data; delete it (409 while a service's latest revision reads it) |

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use base64::Engine;
use serde::Deserialize;
use updraft_api::requests::{CreateSecretRequest, SecretDataRequest};
use updraft_api::schema;
use updraft_model::secret::{validate_secret_data, validate_secret_name};
use updraft_runtime::clock::now_us;
use updraft_store::{SecretRecord, StoreError};
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::{path_param, JsonBody, NamespacePath, Path};
use crate::platform::Platform;
use crate::views::{rfc3339_us, SecretView};
use crate::ApiError;

type Shared = State<Arc<Platform>>;

pub fn routes() -> OpenApiRouter<Arc<Platform>> {
    OpenApiRouter::new()
        .routes(routes!(list_secrets, create_secret))
        .routes(routes!(describe_secret, replace_secret, delete_secret))
}

#[derive(Deserialize)]
struct SecretPath {
    ns: String,
    name: String,
}

impl IntoParams for SecretPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            path_param("ns", schema::namespace_name()),
            path_param("name", schema::secret_name()),
        ]
    }
}

fn decode(data: &BTreeMap<String, String>) -> Result<BTreeMap<String, Vec<u8>>, ApiError> {
    let decoded = data
        .iter()
        .map(|(key, value)| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(value)
                .map_err(|_| ApiError::bad_request(&format!("data[{key}]"), "is not base64 (RFC 4648, padded)"))?;
            Ok((key.clone(), bytes))
        })
        .collect::<Result<_, ApiError>>()?;
    validate_secret_data(&decoded)?;
    Ok(decoded)
}

impl Platform {
    fn secret_view(&self, record: &SecretRecord) -> Result<SecretView, ApiError> {
        let data = self
            .secrets
            .key()
            .open(&record.namespace, &record.name, &record.sealed)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
        Ok(SecretView {
            namespace: record.namespace.clone(),
            name: record.name.clone(),
            keys: data.into_keys().collect(),
            created_at: rfc3339_us(record.created_at_us),
            updated_at: rfc3339_us(record.updated_at_us),
        })
    }

    async fn write_secret(
        &self,
        namespace: &str,
        name: &str,
        data: &BTreeMap<String, String>,
        create_only: bool,
    ) -> Result<SecretRecord, ApiError> {
        validate_secret_name("name", name)?;
        let data = decode(data)?;
        let now = now_us();
        let record = SecretRecord {
            namespace: namespace.to_string(),
            name: name.to_string(),
            sealed: self.secrets.key().seal(namespace, name, &data),
            created_at_us: now,
            updated_at_us: now,
        };
        let written = self.store.put_secret(&record, create_only).await?;
        self.secrets.written(written.clone());
        Ok(written)
    }

    /// The services whose latest revision takes a variable from the secret.
    async fn services_reading(&self, namespace: &str, secret: &str) -> Result<Vec<String>, ApiError> {
        let mut readers = Vec::new();
        for service in self.store.services(Some(namespace)).await? {
            let latest = self.store.revision(namespace, &service.latest_revision).await?;
            if latest.is_some_and(|r| r.config.env_secrets.values().any(|s| s.name == secret)) {
                readers.push(service.name);
            }
        }
        Ok(readers)
    }
}

#[utoipa::path(get, path = "/v1/namespaces/{ns}/secrets", tag = "secrets", params(NamespacePath),
    responses((status = 200, description = "The namespace's secrets, keys only", body = Vec<SecretView>), ApiError))]
async fn list_secrets(
    State(p): Shared,
    Path(NamespacePath { ns }): Path<NamespacePath>,
) -> Result<Json<Vec<SecretView>>, ApiError> {
    p.require_namespace(&ns).await?;
    let records = p.store.secrets(Some(&ns)).await?;
    Ok(Json(
        records.iter().map(|r| p.secret_view(r)).collect::<Result<_, _>>()?,
    ))
}

#[utoipa::path(post, path = "/v1/namespaces/{ns}/secrets", tag = "secrets", params(NamespacePath),
    request_body = CreateSecretRequest,
    responses((status = 201, description = "Created", body = SecretView), ApiError))]
async fn create_secret(
    State(p): Shared,
    Path(NamespacePath { ns }): Path<NamespacePath>,
    JsonBody(body): JsonBody<CreateSecretRequest>,
) -> Result<(StatusCode, Json<SecretView>), ApiError> {
    let written = p.write_secret(&ns, &body.name, &body.data, true).await?;
    Ok((StatusCode::CREATED, Json(p.secret_view(&written)?)))
}

#[utoipa::path(get, path = "/v1/namespaces/{ns}/secrets/{name}", tag = "secrets", params(SecretPath),
    responses((status = 200, description = "The secret's keys", body = SecretView), ApiError))]
async fn describe_secret(
    State(p): Shared,
    Path(SecretPath { ns, name }): Path<SecretPath>,
) -> Result<Json<SecretView>, ApiError> {
    p.require_namespace(&ns).await?;
    let record = p.store.secret(&ns, &name).await?.ok_or_else(|| StoreError::NotFound {
        kind: "secret",
        namespace: ns.clone(),
        name: name.clone(),
    })?;
    Ok(Json(p.secret_view(&record)?))
}

#[utoipa::path(put, path = "/v1/namespaces/{ns}/secrets/{name}", tag = "secrets", params(SecretPath),
    request_body = SecretDataRequest,
    responses((status = 200, description = "Replaced or created; instances started from now on read it", body = SecretView), ApiError))]
async fn replace_secret(
    State(p): Shared,
    Path(SecretPath { ns, name }): Path<SecretPath>,
    JsonBody(body): JsonBody<SecretDataRequest>,
) -> Result<Json<SecretView>, ApiError> {
    let written = p.write_secret(&ns, &name, &body.data, false).await?;
    Ok(Json(p.secret_view(&written)?))
}

#[utoipa::path(delete, path = "/v1/namespaces/{ns}/secrets/{name}", tag = "secrets", params(SecretPath),
    responses((status = 204, description = "Deleted"), ApiError))]
async fn delete_secret(
    State(p): Shared,
    Path(SecretPath { ns, name }): Path<SecretPath>,
) -> Result<StatusCode, ApiError> {
    p.require_namespace(&ns).await?;
    let readers = p.services_reading(&ns, &name).await?;
    if !readers.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "secret {name:?} is read by service {}; deploy without it (--env-remove) or delete the service first",
                readers.join(", ")
            ),
        ));
    }
    p.store.delete_secret(&ns, &name).await?;
    p.secrets.deleted(&ns, &name);
    Ok(StatusCode::NO_CONTENT)
}
