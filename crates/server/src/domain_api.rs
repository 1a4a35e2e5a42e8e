//! The REST API of custom domains (Knative's `DomainMapping`).
//!
//! | method and path | what it does |
//! |---|---|
//! | `GET /v1/namespaces/{ns}/domainmappings` | the namespace's domains and where they lead |
//! | `GET, PUT, DELETE /v1/namespaces/{ns}/domainmappings/{name}` | one domain: describe; map (`{"service", "tag", "tls_secret"}`, 409 while another namespace holds it); unmap |

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use updraft_api::requests::DomainMappingRequest;
use updraft_api::schema;
use updraft_model::domain::{is_platform_host, DomainMapping};
use updraft_runtime::clock::now_us;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::{path_param, JsonBody, NamespacePath, Path};
use crate::platform::Platform;
use crate::routing::host_url;
use crate::views::{rfc3339_us, AppliedView, DomainMappingView};
use crate::ApiError;

type Shared = State<Arc<Platform>>;

#[derive(Deserialize)]
struct DomainPath {
    ns: String,
    name: String,
}

impl IntoParams for DomainPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            path_param("ns", schema::namespace_name()),
            path_param("name", schema::domain_name()),
        ]
    }
}

pub fn routes() -> OpenApiRouter<Arc<Platform>> {
    OpenApiRouter::new()
        .routes(routes!(list_domain_mappings))
        .routes(routes!(get_domain_mapping, put_domain_mapping, delete_domain_mapping))
}

impl Platform {
    /// Maps `mapping.domain` in `ns` (the mapping's own namespace is ignored).
    pub(crate) async fn put_domain_mapping(&self, ns: &str, mapping: DomainMapping) -> Result<AppliedView, ApiError> {
        self.require_namespace(ns).await?;
        let mapping = DomainMapping {
            namespace: ns.to_string(),
            created_at_us: now_us(),
            ..mapping
        };
        mapping.validate()?;
        if is_platform_host(&mapping.domain, &self.config.domain) {
            // Held by the platform, as a domain mapped elsewhere is held by its namespace.
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "domain: {:?} is under the platform's own domain {:?}, whose hosts name services by namespace; map a domain of your own",
                    mapping.domain, self.config.domain
                ),
            ));
        }
        if let Some(secret) = &mapping.tls_secret {
            self.check_tls_secret(ns, secret).await?;
        }
        let existing = self
            .store
            .domain_mappings(Some(ns))
            .await?
            .into_iter()
            .find(|m| m.domain == mapping.domain);
        let result = match existing {
            Some(old)
                if old.service == mapping.service && old.tag == mapping.tag && old.tls_secret == mapping.tls_secret =>
            {
                "unchanged"
            }
            _ => {
                if self.store.put_domain_mapping(&mapping).await?.1 {
                    "created"
                } else {
                    "updated"
                }
            }
        };
        Ok(AppliedView {
            kind: "domainmapping".into(),
            namespace: ns.to_string(),
            name: mapping.domain,
            result: result.into(),
        })
    }

    /// A domain's certificate must be one the gateway can present, and the gateway
    /// must serve TLS at all.
    async fn check_tls_secret(&self, ns: &str, secret: &str) -> Result<(), ApiError> {
        if self.config.tls.is_none() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "tls_secret: the gateway serves no TLS (the server runs without --tls-cert and --tls-key); leave it out",
            ));
        }
        if self.secrets.version(ns, secret).is_none() {
            return Err(ApiError::not_found(format!(
                "tls_secret: namespace {ns:?} has no secret {secret:?}"
            )));
        }
        let (cert, key) = self
            .secrets
            .tls_pair(ns, secret)
            .map_err(|why| ApiError::bad_request("tls_secret", why))?;
        crate::tls::check_tls_secret(&cert, &key)
            .map_err(|why| ApiError::bad_request("tls_secret", format!("secret {secret:?}: tls.crt and tls.key {why}")))
    }

    fn domain_mapping_view(&self, m: &DomainMapping) -> DomainMappingView {
        DomainMappingView {
            namespace: m.namespace.clone(),
            domain: m.domain.clone(),
            service: m.service.clone(),
            tag: m.tag.clone(),
            tls_secret: m.tls_secret.clone(),
            url: host_url(self.config.scheme(), &m.domain, self.config.gateway_addr.port()),
            created: rfc3339_us(m.created_at_us),
        }
    }
}

#[utoipa::path(get, path = "/v1/namespaces/{ns}/domainmappings", tag = "domains", params(NamespacePath),
    responses((status = 200, description = "The namespace's custom domains", body = Vec<DomainMappingView>), ApiError))]
async fn list_domain_mappings(
    State(p): Shared,
    Path(NamespacePath { ns }): Path<NamespacePath>,
) -> Result<Json<Vec<DomainMappingView>>, ApiError> {
    p.require_namespace(&ns).await?;
    let mappings = p.store.domain_mappings(Some(&ns)).await?;
    Ok(Json(mappings.iter().map(|m| p.domain_mapping_view(m)).collect()))
}

#[utoipa::path(get, path = "/v1/namespaces/{ns}/domainmappings/{name}", tag = "domains", params(DomainPath),
    responses((status = 200, description = "The domain and where it leads", body = DomainMappingView), ApiError))]
async fn get_domain_mapping(
    State(p): Shared,
    Path(DomainPath { ns, name }): Path<DomainPath>,
) -> Result<Json<DomainMappingView>, ApiError> {
    p.require_namespace(&ns).await?;
    let mapping = p
        .store
        .domain_mappings(Some(&ns))
        .await?
        .into_iter()
        .find(|m| m.domain == name)
        .ok_or_else(|| ApiError::not_found(format!("domain {name:?} is not mapped in namespace {ns:?}")))?;
    Ok(Json(p.domain_mapping_view(&mapping)))
}

#[utoipa::path(put, path = "/v1/namespaces/{ns}/domainmappings/{name}", tag = "domains",
    params(DomainPath), request_body = DomainMappingRequest,
    responses((status = 200, description = "updated or unchanged", body = AppliedView),
        (status = 201, description = "created", body = AppliedView), ApiError))]
async fn put_domain_mapping(
    State(p): Shared,
    Path(DomainPath { ns, name }): Path<DomainPath>,
    JsonBody(body): JsonBody<DomainMappingRequest>,
) -> Result<(StatusCode, Json<AppliedView>), ApiError> {
    let mapping = DomainMapping {
        namespace: ns.clone(),
        domain: name,
        service: body.service,
        tag: body.tag,
        tls_secret: body.tls_secret,
        created_at_us: 0,
    };
    let applied = p.put_domain_mapping(&ns, mapping).await?;
    let status = if applied.result == "created" {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(applied)))
}

#[utoipa::path(delete, path = "/v1/namespaces/{ns}/domainmappings/{name}", tag = "domains",
    params(DomainPath), responses((status = 204, description = "unmapped"), ApiError))]
async fn delete_domain_mapping(
    State(p): Shared,
    Path(DomainPath { ns, name }): Path<DomainPath>,
) -> Result<StatusCode, ApiError> {
    p.require_namespace(&ns).await?;
    p.store.delete_domain_mapping(&ns, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
