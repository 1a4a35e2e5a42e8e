//! The REST API's OpenAPI 3.1 document, as `GET /v1/openapi.json` serves it. The
//! operations come from the handlers' annotations as the routers are built, the schemas
//! from the wire types in `updraft_api`, `updraft_model` and `updraft_events`.

use std::collections::BTreeMap;

use updraft_api::views::{ErrorBody, ErrorDetail};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::OpenApi;

use crate::ApiError;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Updraft",
        description = "Deploy, invoke and operate serverless services, triggers and brokers. Every error answers with one shape: `{\"error\": {\"code\", \"message\", \"field\"}}`, where `field` names the input that was refused.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&BearerTokens),
    security(("token" = [])),
    tags(
        (name = "platform", description = "The server itself"),
        (name = "namespaces", description = "Namespaces and their limits"),
        (name = "services", description = "Deploys, revisions, traffic and invocation"),
        (name = "triggers", description = "Cron schedules, broker triggers and queue sources"),
        (name = "brokers", description = "CloudEvents brokers and their ingress"),
        (name = "secrets", description = "Secrets: written whole, read back as their keys only"),
        (name = "images", description = "OCI images and registry credentials"),
        (name = "observe", description = "Logs, metrics, usage and load"),
        (name = "tokens", description = "API tokens, who holds them, and the audit log"),
    )
)]
pub struct ApiDoc;

/// Every operation but `/healthz` and the document itself takes a bearer token.
struct BearerTokens;

impl utoipa::Modify for BearerTokens {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "`updraft_<id>_<secret>`, from `updraft token create` or the server's data directory",
            ))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("token", SecurityScheme::Http(scheme));
    }
}

/// Every operation may refuse its input (4XX) or fail (5XX), always with an [`ErrorBody`].
impl utoipa::IntoResponses for ApiError {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
                .into()
        };
        BTreeMap::from([
            (
                "4XX".to_string(),
                error("The request was refused; `field` names the input at fault"),
            ),
            ("5XX".to_string(), error("The server failed or ran out of time")),
        ])
    }
}

/// The document as JSON, built once: it describes the code, which does not change.
pub fn document_json(doc: &utoipa::openapi::OpenApi) -> axum::body::Bytes {
    let mut doc = doc.clone();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    let mut value = serde_json::to_value(&doc).expect("an OpenAPI document serializes");
    unique_operation_ids(&mut value);
    serde_json::to_vec_pretty(&value)
        .expect("a JSON value serializes")
        .into()
}

/// OpenAPI wants an operationId once in the document; a handler that serves several
/// methods (invoke) gets one per method: `invoke_get`, `invoke_post`.
fn unique_operation_ids(doc: &mut serde_json::Value) {
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for item in paths.values() {
        for op in item.as_object().into_iter().flat_map(|m| m.values()) {
            if let Some(id) = op.get("operationId").and_then(|i| i.as_str()) {
                *seen.entry(id.to_string()).or_default() += 1;
            }
        }
    }
    for item in paths.values_mut() {
        for (method, op) in item.as_object_mut().into_iter().flat_map(|m| m.iter_mut()) {
            let Some(id) = op.get("operationId").and_then(|i| i.as_str()) else {
                continue;
            };
            if seen.get(id).copied().unwrap_or(0) > 1 {
                op["operationId"] = format!("{id}_{method}").into();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_ids_shared_by_methods_get_the_method() {
        let mut doc = serde_json::json!({"paths": {
            "/a": {"get": {"operationId": "invoke"}, "post": {"operationId": "invoke"}},
            "/b": {"get": {"operationId": "list"}},
        }});
        unique_operation_ids(&mut doc);
        assert_eq!(doc["paths"]["/a"]["get"]["operationId"], "invoke_get");
        assert_eq!(doc["paths"]["/a"]["post"]["operationId"], "invoke_post");
        assert_eq!(doc["paths"]["/b"]["get"]["operationId"], "list");
    }
}
