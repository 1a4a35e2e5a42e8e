//! The REST API (JSON over HTTP on the API port).
//!
//! | method and path | what |
//! |---|---|
//! | `GET /healthz` | liveness |
//! | `GET /metrics` | Prometheus metrics (`updraft_*`) |
//! | `GET /v1/info` | version, domain, limits |
//! | `GET, POST /v1/namespaces` | list; create `{"name": …}` |
//! | `GET /v1/namespaces/{ns}` | one namespace, with what it uses of its quotas |
//! | `PUT /v1/namespaces/{ns}` | set its limits (`{"rate_limit": {"per_second": …, "burst": …}}`) |
//! | `POST /v1/packages` | upload an archive (body); returns its digest |
//! | `GET /v1/usage` | metered usage (`namespace`, `since`, `by=service\|revision\|day\|hour`) |
//! | `POST /v1/apply` | apply one Knative Service, PingSource, Trigger or Broker (YAML or JSON body; `?namespace=` default) |
//! | `GET /v1/namespaces/{ns}/services` | list services |
//! | `GET /v1/namespaces/{ns}/top` | each service's load over the last 10 s (`updraft top`) |
//! | `PUT /v1/namespaces/{ns}/services/{name}` | deploy a [`DeploySpec`] (no package: change settings) |
//! | `GET, DELETE /v1/namespaces/{ns}/services/{name}` | describe; delete |
//! | `GET /v1/namespaces/{ns}/services/{name}/manifest` | as a Knative manifest (`format=yaml\|json`, `knative=true`) |
//! | `GET /v1/namespaces/{ns}/services/{name}/revisions` | its revisions with traffic and instances |
//! | `GET /v1/namespaces/{ns}/services/{name}/events` | its revisions' scale events, oldest first |
//! | `PUT /v1/namespaces/{ns}/services/{name}/traffic` | replace the traffic table (`{"traffic": [...]}`) |
//! | `POST /v1/namespaces/{ns}/services/{name}/rollback` | all traffic to the previous revision (`{"to": …}` optional) |
//! | `DELETE /v1/namespaces/{ns}/revisions/{revision}` | delete a revision without traffic |
//! | `GET /v1/namespaces/{ns}/services/{name}/logs` | instance output (`revision`, `instance`, `tail`, `since`, `until`, `grep`; `follow=true`: server-sent events) |
//! | `ANY /v1/namespaces/{ns}/services/{name}/invoke/{path}` | a request through the gateway |

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Extension, Json, Router};
use serde::Deserialize;
use updraft_api::requests::{CreateNamespace, DeployQuery, RollbackRequest, TrafficRequest};
use updraft_api::views::DeployEventView;
use updraft_events::manifest::{parse_documents, Document};
use updraft_gateway::host_for;
use updraft_model::auth::{Action, Caller};
use updraft_model::names::validate_namespace_name;
use updraft_model::template::PACKAGE_IMAGE_PREFIX;
use updraft_model::yaml::MAX_MANIFEST_BYTES;
use updraft_model::{DeploySpec, Namespace, NamespaceLimits, DEFAULT_NAMESPACE};
use utoipa::IntoParams;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::extract::{json_body, JsonBody, NamedPath, NamespacePath, Path, Query, RevisionPath};
use crate::openapi::ApiDoc;
use crate::platform::Platform;
use crate::views::{
    rfc3339_us, ApplyResult, ApplyView, InfoView, NamespaceUsage, NamespaceView, PackageView, RevisionView,
    ScaleEventView, ServiceView,
};
use crate::ApiError;

type Shared = State<Arc<Platform>>;

/// The documented routes, and the document they make.
pub(crate) fn documented_routes() -> (Router<Arc<Platform>>, utoipa::openapi::OpenApi) {
    OpenApiRouter::<Arc<Platform>>::with_openapi(<ApiDoc as utoipa::OpenApi>::openapi())
        .routes(routes!(healthz))
        .routes(routes!(info))
        .routes(routes!(list_namespaces, create_namespace))
        .routes(routes!(set_namespace_limits, describe_namespace, delete_namespace))
        .routes(routes!(upload_package))
        .routes(routes!(apply).layer(axum::extract::DefaultBodyLimit::max(MAX_MANIFEST_BYTES)))
        .routes(routes!(list_services))
        .routes(routes!(describe_service, deploy, delete_service))
        .routes(routes!(manifest))
        .routes(routes!(list_revisions))
        .routes(routes!(list_events))
        .routes(routes!(set_traffic))
        .routes(routes!(rollback))
        .routes(routes!(delete_revision))
        .routes(routes!(invoke))
        .merge(crate::trigger_api::routes())
        .merge(crate::image_api::routes())
        .merge(crate::observe_api::routes())
        .merge(crate::token_api::routes())
        .merge(crate::secret_api::routes())
        .merge(crate::domain_api::routes())
        .merge(crate::webhook_api::routes())
        .split_for_parts()
}

pub fn router(platform: Arc<Platform>) -> Router {
    let budget = platform.config.api_timeout;
    let (router, doc) = documented_routes();
    let document = crate::openapi::document_json(&doc);
    router
        .route("/v1/namespaces/{ns}/services/{name}/invoke/", any(invoke_path))
        .route("/v1/namespaces/{ns}/services/{name}/invoke/{*path}", any(invoke_path))
        .route(
            "/v1/openapi.json",
            axum::routing::get(move || async move { ([(header::CONTENT_TYPE, "application/json")], document) }),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            platform.store.clone(),
            crate::authz::authorise,
        ))
        .fallback(|method: axum::http::Method, uri: axum::http::Uri| async move {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "the API has no route {method} {}; GET /v1/openapi.json lists its routes",
                    uri.path()
                ),
            )
        })
        .with_state(platform)
        .layer(axum::middleware::from_fn_with_state(budget, time_budget))
}

/// Every request answers within the API's time budget (`--api-timeout`), or gets a
/// 503 saying so. A streamed answer (logs, pulls) counts until its head is sent; a
/// deploy cut off here goes on in its own task and shows up in `updraft service`.
async fn time_budget(
    State(budget): State<std::time::Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(budget, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the request took longer than the API's time budget of {} (--api-timeout); a deploy carries on, see `updraft service`",
                humantime::format_duration(budget)
            ),
        )
        .into_response(),
    }
}

#[utoipa::path(get, path = "/healthz", tag = "platform", security(()),
    responses((status = 200, description = "The server is up", body = String, content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok\n"
}

#[utoipa::path(get, path = "/v1/info", tag = "platform",
    responses((status = 200, description = "Version, domain and limits", body = InfoView), ApiError))]
async fn info(State(p): Shared) -> Json<InfoView> {
    Json(InfoView {
        version: env!("CARGO_PKG_VERSION").to_string(),
        domain: p.config.domain.clone(),
        gateway: p.config.gateway_addr.to_string(),
        max_package_bytes: p.config.max_package_bytes,
        max_unpacked_bytes: p.config.max_unpacked_bytes,
        max_image_bytes: p.config.max_image_bytes,
        cgroup: p.cgroup_version.to_string(),
        pool_size: p.runtime.pool().0,
        pool_memory_bytes: p.runtime.pool().1,
        access_log_dropped: p.access_log.dropped.load(std::sync::atomic::Ordering::Relaxed),
        wasm_components_loaded: p.wasm.loaded(),
        wasm_pooling: p.wasm.pooling(),
    })
}

#[utoipa::path(get, path = "/v1/namespaces", tag = "namespaces",
    responses((status = 200, description = "Every namespace", body = Vec<NamespaceView>), ApiError))]
async fn list_namespaces(
    State(p): Shared,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Vec<NamespaceView>>, ApiError> {
    let mut namespaces = p.store.namespaces().await?;
    if !caller.is_admin() {
        namespaces.retain(|ns| caller.grants.iter().any(|g| g.namespace.as_deref() == Some(&ns.name)));
    }
    Ok(Json(namespaces.into_iter().map(namespace_view).collect()))
}

#[utoipa::path(post, path = "/v1/namespaces", tag = "namespaces", request_body = CreateNamespace,
    responses((status = 201, description = "Created", body = NamespaceView), ApiError))]
async fn create_namespace(
    State(p): Shared,
    JsonBody(request): JsonBody<CreateNamespace>,
) -> Result<(StatusCode, Json<NamespaceView>), ApiError> {
    validate_namespace_name("name", &request.name)?;
    let ns = p
        .store
        .create_namespace(&request.name, updraft_runtime::clock::now_us())
        .await?;
    Ok((StatusCode::CREATED, Json(namespace_view(ns))))
}

/// The body is the archive itself (tar, tar.gz or zip), streamed to the package store.
#[utoipa::path(post, path = "/v1/packages", tag = "services",
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "a tar, tar.gz or zip archive"),
    responses((status = 201, description = "Stored; deploy it by its digest", body = PackageView), ApiError))]
async fn upload_package(State(p): Shared, request: Request) -> Result<(StatusCode, Json<PackageView>), ApiError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let view = p.upload_package(declared, request.into_body()).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

fn namespace_view(ns: Namespace) -> NamespaceView {
    NamespaceView {
        name: ns.name,
        created_at: rfc3339_us(ns.created_at_us),
        limits: ns.limits,
        usage: None,
    }
}

#[utoipa::path(get, path = "/v1/namespaces/{ns}", tag = "namespaces", params(NamespacePath),
    responses((status = 200, description = "The namespace, its limits and quotas, and what it uses of them", body = NamespaceView), ApiError))]
async fn describe_namespace(
    State(p): Shared,
    Path(NamespacePath { ns }): Path<NamespacePath>,
) -> Result<Json<NamespaceView>, ApiError> {
    let namespace = p.require_namespace(&ns).await?;
    let services = p.store.services(Some(&ns)).await?;
    let mut largest_package_bytes = 0;
    for svc in &services {
        for revision in p.store.revisions(&ns, &svc.name).await? {
            if let Ok(meta) = std::fs::metadata(p.paths.blob(&revision.config.package_digest)) {
                largest_package_bytes = largest_package_bytes.max(meta.len());
            }
        }
    }
    let mut view = namespace_view(namespace);
    view.usage = Some(NamespaceUsage {
        services: services.len(),
        largest_package_bytes,
        running: p.instances.running_in(&ns),
        cpus: p.editions.cpus_of(&ns),
    });
    Ok(Json(view))
}

#[utoipa::path(put, path = "/v1/namespaces/{ns}", tag = "namespaces", params(NamespacePath),
    request_body = NamespaceLimits, responses((status = 200, description = "The namespace with its new limits", body = NamespaceView), ApiError))]
async fn set_namespace_limits(
    State(p): Shared,
    Path(NamespacePath { ns }): Path<NamespacePath>,
    JsonBody(limits): JsonBody<NamespaceLimits>,
) -> Result<Json<NamespaceView>, ApiError> {
    limits.validate()?;
    p.require_namespace(&ns).await?;
    let _writing = p.limits_writes.lock().await;
    p.editions.check(&ns, limits.exclusive.as_ref())?;
    let updated = p.store.set_namespace_limits(&ns, &limits).await?;
    p.editions.set(&ns, limits.exclusive);
    p.applied.routes(&*p.store).await;
    p.apply_log_retention().await;
    Ok(Json(namespace_view(updated)))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DeleteNamespaceParams {
    /// Delete its services too (their instances stopped, their logs removed).
    #[serde(default)]
    force: bool,
}

/// Deletes a namespace with its triggers, brokers, domains, secrets and its grants on
/// tokens; refused while it holds services unless `force`.
#[utoipa::path(delete, path = "/v1/namespaces/{ns}", tag = "namespaces", params(NamespacePath, DeleteNamespaceParams),
    responses((status = 204, description = "deleted"), ApiError))]
async fn delete_namespace(
    State(p): Shared,
    Path(NamespacePath { ns }): Path<NamespacePath>,
    Query(params): Query<DeleteNamespaceParams>,
) -> Result<StatusCode, ApiError> {
    p.delete_namespace(&ns, params.force).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ApplyParams {
    /// Where documents without their own namespace go (`default` if not given).
    #[param(schema_with = updraft_api::schema::namespace_name)]
    namespace: Option<String>,
}

/// Applies one document: a Service answers with an `ApplyView`, a PingSource,
/// Trigger, Broker or DomainMapping with an `AppliedView`.
#[utoipa::path(post, path = "/v1/apply", tag = "services", params(ApplyParams),
    request_body(content = String, content_type = "application/yaml",
        description = "one Knative Service, DomainMapping, PingSource, Trigger or Broker, as YAML or JSON"),
    responses((status = 200, description = "What the apply did", body = ApplyResult), ApiError))]
async fn apply(
    State(p): Shared,
    Extension(caller): Extension<Caller>,
    Query(params): Query<ApplyParams>,
    body: Bytes,
) -> Result<Json<ApplyResult>, ApiError> {
    // Parsing is bounded (size, nesting) and still kept off the async workers, which
    // serve the gateway too.
    let mut docs = tokio::task::spawn_blocking(move || {
        let text = std::str::from_utf8(&body).map_err(|_| ApiError::bad_request("body", "is not UTF-8 text"))?;
        parse_documents(text).map_err(|(_, e)| ApiError::from(e))
    })
    .await
    .map_err(ApiError::internal)??;
    if docs.len() != 1 {
        return Err(ApiError::bad_request(
            "body",
            format!("has {} documents; send one per request", docs.len()),
        ));
    }
    let namespace = params.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
    let document = docs.remove(0);
    let target = match &document {
        Document::Service(service) => service.metadata.namespace.as_deref(),
        Document::Trigger(t) => t.namespace.as_deref(),
        Document::Broker(b) => b.namespace.as_deref(),
        Document::DomainMapping(m) => m.namespace.as_deref(),
    }
    .unwrap_or(namespace);
    if let Some(refusal) = crate::authz::refuse(&caller, crate::authz::Need::In(Action::Write), Some(target)) {
        return Err(refusal);
    }
    match document {
        Document::Service(service) => {
            let desired = service.desired(namespace)?;
            let changed = p.deployer.apply(desired).await?;
            Ok(Json(ApplyResult::Service(Box::new(ApplyView {
                result: changed.result.into(),
                revision: changed.revision,
                service: p
                    .service_view(&changed.service, true)
                    .await
                    .map_err(ApiError::internal)?,
            }))))
        }
        Document::Trigger(t) => {
            let ns = t.namespace.as_deref().unwrap_or(namespace);
            Ok(Json(ApplyResult::Other(p.put_trigger(ns, &t.name, &t.spec).await?)))
        }
        Document::Broker(b) => {
            let ns = b.namespace.as_deref().unwrap_or(namespace);
            Ok(Json(ApplyResult::Other(
                p.put_broker(ns, &b.name, b.delivery.as_ref()).await?,
            )))
        }
        Document::DomainMapping(m) => {
            let ns = m.namespace.as_deref().unwrap_or(namespace);
            Ok(Json(ApplyResult::Other(p.put_domain_mapping(ns, m.mapping).await?)))
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ManifestParams {
    /// `yaml` (the default) or `json`.
    format: Option<String>,
    /// For a Knative cluster: a code package's image becomes a reference to build.
    #[serde(default)]
    knative: bool,
}

#[utoipa::path(get, path = "/v1/namespaces/{ns}/services/{name}/manifest", tag = "services",
    params(NamedPath, ManifestParams),
    responses((status = 200, description = "a Knative Service", content(
        (Object = "application/json"), (String = "application/yaml"))), ApiError))]
async fn manifest(
    State(p): Shared,
    Path(NamedPath { ns, name }): Path<NamedPath>,
    Query(params): Query<ManifestParams>,
) -> Result<Response, ApiError> {
    let svc = p.find_service(&ns, &name).await?;
    let manifest = p.manifest(&svc, params.knative).await?;
    match params.format.as_deref().unwrap_or("yaml") {
        "json" => Ok(Json(manifest).into_response()),
        "yaml" => {
            let mut text = serde_yaml_ng::to_string(&manifest).map_err(ApiError::internal)?;
            if params.knative && manifest.runs_code_package() {
                text = knative_image_note(&text, &svc);
            }
            Ok(([(header::CONTENT_TYPE, "application/yaml")], text).into_response())
        }
        other => Err(ApiError::bad_request(
            "format",
            format!("{other:?} is not a format; use yaml or json"),
        )),
    }
}

/// A Knative cluster runs images, not code packages: the image line gets a stand-in
/// reference and a comment saying which package to build it from.
fn knative_image_note(text: &str, svc: &updraft_model::Service) -> String {
    let mut out = String::with_capacity(text.len() + 200);
    for line in text.lines() {
        let trimmed = line.trim_start().trim_start_matches("- ");
        if let Some(digest) = trimmed
            .strip_prefix("image: ")
            .and_then(|i| i.strip_prefix(PACKAGE_IMAGE_PREFIX))
        {
            let indent = &line[..line.len() - line.trim_start().len()];
            out.push_str(&format!(
                "{indent}# {} runs Updraft code package {digest}: build an image from that package and put its reference here\n",
                svc.latest_revision
            ));
            out.push_str(&line.replace(
                &format!("{PACKAGE_IMAGE_PREFIX}{digest}"),
                &format!(
                    "registry.example.com/{}/{}:{}",
                    svc.namespace, svc.name, svc.latest_revision
                ),
            ));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

#[utoipa::path(get, path = "/v1/namespaces/{ns}/services/{name}/revisions", tag = "services",
    params(NamedPath), responses((status = 200, description = "Its revisions with their traffic and instances", body = Vec<RevisionView>), ApiError))]
async fn list_revisions(
    State(p): Shared,
    Path(NamedPath { ns, name }): Path<NamedPath>,
) -> Result<Json<Vec<RevisionView>>, ApiError> {
    let svc = p.find_service(&ns, &name).await?;
    let routing = p.routing(&svc, updraft_runtime::clock::now_us());
    Ok(Json(
        p.revision_views(&svc, &routing).await.map_err(ApiError::internal)?,
    ))
}

#[utoipa::path(get, path = "/v1/namespaces/{ns}/services/{name}/events", tag = "services",
    params(NamedPath), responses((status = 200, description = "Its scale events, oldest first", body = Vec<ScaleEventView>), ApiError))]
async fn list_events(
    State(p): Shared,
    Path(NamedPath { ns, name }): Path<NamedPath>,
) -> Result<Json<Vec<ScaleEventView>>, ApiError> {
    let svc = p.find_service(&ns, &name).await?;
    Ok(Json(p.service_events(&svc).await.map_err(ApiError::internal)?))
}

#[utoipa::path(put, path = "/v1/namespaces/{ns}/services/{name}/traffic", tag = "services",
    params(NamedPath), request_body = TrafficRequest,
    responses((status = 200, description = "The service with its new traffic", body = ServiceView), ApiError))]
async fn set_traffic(
    State(p): Shared,
    Path(NamedPath { ns, name }): Path<NamedPath>,
    JsonBody(request): JsonBody<TrafficRequest>,
) -> Result<Json<ServiceView>, ApiError> {
    p.find_service(&ns, &name).await?;
    Ok(Json(p.set_traffic(&ns, &name, request.traffic).await?))
}

#[utoipa::path(post, path = "/v1/namespaces/{ns}/services/{name}/rollback", tag = "services",
    params(NamedPath), request_body(content = Option<RollbackRequest>, description = "empty or null: the revision before the latest"),
    responses((status = 200, description = "The service after the rollback", body = ServiceView), ApiError))]
async fn rollback(
    State(p): Shared,
    Path(NamedPath { ns, name }): Path<NamedPath>,
    body: Bytes,
) -> Result<Json<ServiceView>, ApiError> {
    // No body, or JSON `null`, asks for the revision before the latest.
    let request =
        json_body::<Option<RollbackRequest>>(if body.is_empty() { b"null" } else { &body })?.unwrap_or_default();
    p.find_service(&ns, &name).await?;
    Ok(Json(p.rollback(&ns, &name, request.to).await?))
}

#[utoipa::path(delete, path = "/v1/namespaces/{ns}/revisions/{revision}", tag = "services",
    params(RevisionPath), responses((status = 204, description = "deleted"), ApiError))]
async fn delete_revision(
    State(p): Shared,
    Path(RevisionPath { ns, revision }): Path<RevisionPath>,
) -> Result<StatusCode, ApiError> {
    p.require_namespace(&ns).await?;
    p.delete_revision(&ns, &revision).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/namespaces/{ns}/services", tag = "services",
    params(NamespacePath), responses((status = 200, description = "The namespace's services", body = Vec<ServiceView>), ApiError))]
async fn list_services(
    State(p): Shared,
    Path(NamespacePath { ns }): Path<NamespacePath>,
) -> Result<Json<Vec<ServiceView>>, ApiError> {
    p.require_namespace(&ns).await?;
    let services = p.store.services(Some(&ns)).await?;
    let mut views = Vec::with_capacity(services.len());
    for service in &services {
        views.push(p.service_view(service, false).await.map_err(ApiError::internal)?);
    }
    Ok(Json(views))
}

#[utoipa::path(get, path = "/v1/namespaces/{ns}/services/{name}", tag = "services",
    params(NamedPath), responses((status = 200, description = "The service and its revisions", body = ServiceView), ApiError))]
async fn describe_service(
    State(p): Shared,
    Path(NamedPath { ns, name }): Path<NamedPath>,
) -> Result<Json<ServiceView>, ApiError> {
    let svc = p.find_service(&ns, &name).await?;
    Ok(Json(p.service_view(&svc, true).await.map_err(ApiError::internal)?))
}

/// Deploys a new revision from a stored package, component or image, or with no
/// package changes the latest revision's settings; answers once it is ready.
#[utoipa::path(put, path = "/v1/namespaces/{ns}/services/{name}", tag = "services",
    params(NamedPath, DeployQuery), request_body = DeploySpec,
    responses((status = 200, description = "Deployed and ready; with `watch=true`, the steps as JSON lines", content(
        (ServiceView = "application/json"), (DeployEventView = "application/x-ndjson"))), ApiError))]
async fn deploy(
    State(p): Shared,
    Path(NamedPath { ns, name }): Path<NamedPath>,
    Query(query): Query<DeployQuery>,
    JsonBody(spec): JsonBody<DeploySpec>,
) -> Result<Response, ApiError> {
    if query.watch {
        return crate::deploy_watch::watch(p, ns, name, spec).await;
    }
    let service = p.deployer.deploy(&ns, &name, spec).await?;
    Ok(Json(p.service_view(&service, true).await.map_err(ApiError::internal)?).into_response())
}

#[utoipa::path(delete, path = "/v1/namespaces/{ns}/services/{name}", tag = "services",
    params(NamedPath), responses((status = 204, description = "deleted"), ApiError))]
async fn delete_service(
    State(p): Shared,
    Path(NamedPath { ns, name }): Path<NamedPath>,
) -> Result<StatusCode, ApiError> {
    p.require_namespace(&ns).await?;
    p.delete_service(&ns, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A request through the gateway to the service's root path; any method. Longer
/// paths (`…/invoke/{path}`) go to that path of the service.
#[utoipa::path(method(get, post, put, delete, patch), path = "/v1/namespaces/{ns}/services/{name}/invoke",
    tag = "services", params(NamedPath),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "sent to the service as it is"),
    responses((status = "default", description = "what the service answered", body = Vec<u8>, content_type = "application/octet-stream"), ApiError))]
async fn invoke(
    State(p): Shared,
    Path(NamedPath { ns, name }): Path<NamedPath>,
    request: Request,
) -> Result<Response, ApiError> {
    forward(&p, &ns, &name, "", request).await
}

#[derive(Deserialize)]
struct InvokePath {
    ns: String,
    name: String,
    #[serde(default)]
    path: String,
}

async fn invoke_path(
    State(p): Shared,
    Path(InvokePath { ns, name, path }): Path<InvokePath>,
    request: Request,
) -> Result<Response, ApiError> {
    forward(&p, &ns, &name, &path, request).await
}

/// Sends a request through the gateway as if it came to the service's URL, so a test
/// exercises the same path (activator, cold start) a real client does.
async fn forward(p: &Platform, ns: &str, name: &str, path: &str, request: Request) -> Result<Response, ApiError> {
    p.find_service(ns, name).await?;
    let (mut parts, body) = request.into_parts();
    let query = parts.uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    parts.uri = format!("/{path}{query}")
        .parse()
        .map_err(|e| ApiError::bad_request("path", format!("{e}")))?;
    let host = host_for(name, ns, &p.config.domain);
    parts
        .headers
        .insert(header::HOST, HeaderValue::try_from(host).map_err(ApiError::internal)?);
    // The caller's token was for the API, which authorised the invocation already.
    parts.headers.remove(header::AUTHORIZATION);
    parts.extensions.insert(updraft_gateway::Trusted);
    let response = p.gateway.handle(Request::from_parts(parts, body), None).await;
    Ok(response.map(Body::new).into_response())
}
