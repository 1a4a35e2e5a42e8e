//! The REST API (JSON over HTTP on the API port).
//!
//! | method and path | what |
//! |---|---|
//! | `GET /healthz` | liveness |
//! | `GET /metrics` | Prometheus metrics (`updraft_*`) |
//! | `GET /v1/info` | version, domain, limits |
//! | `GET, POST /v1/namespaces` | list; create `{"name": …}` |
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
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use updraft_events::manifest::{parse_documents, Document};
use updraft_gateway::host_for;
use updraft_model::names::validate_namespace_name;
use updraft_model::template::PACKAGE_IMAGE_PREFIX;
use updraft_model::yaml::MAX_MANIFEST_BYTES;
use updraft_model::{DeploySpec, Namespace, NamespaceLimits, TrafficTarget, DEFAULT_NAMESPACE};

use crate::platform::Platform;
use crate::views::{rfc3339_us, InfoView, NamespaceView, PackageView, RevisionView, ScaleEventView, ServiceView};
use crate::ApiError;

type Shared = State<Arc<Platform>>;

pub fn router(platform: Arc<Platform>) -> Router {
    let budget = platform.config.api_timeout;
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/v1/info", get(info))
        .route("/v1/namespaces", get(list_namespaces).post(create_namespace))
        .route("/v1/namespaces/{ns}", put(set_namespace_limits))
        .route("/v1/packages", post(upload_package))
        .route(
            "/v1/apply",
            post(apply).layer(axum::extract::DefaultBodyLimit::max(MAX_MANIFEST_BYTES)),
        )
        .route("/v1/namespaces/{ns}/services", get(list_services))
        .route(
            "/v1/namespaces/{ns}/services/{name}",
            get(describe_service).put(deploy).delete(delete_service),
        )
        .route("/v1/namespaces/{ns}/services/{name}/manifest", get(manifest))
        .route("/v1/namespaces/{ns}/services/{name}/revisions", get(list_revisions))
        .route("/v1/namespaces/{ns}/services/{name}/events", get(list_events))
        .route("/v1/namespaces/{ns}/services/{name}/traffic", put(set_traffic))
        .route("/v1/namespaces/{ns}/services/{name}/rollback", post(rollback))
        .route("/v1/namespaces/{ns}/revisions/{revision}", delete(delete_revision))
        .route("/v1/namespaces/{ns}/services/{name}/invoke", any(invoke))
        .route("/v1/namespaces/{ns}/services/{name}/invoke/", any(invoke))
        .route("/v1/namespaces/{ns}/services/{name}/invoke/{*path}", any(invoke))
        .merge(crate::trigger_api::routes())
        .merge(crate::image_api::routes())
        .merge(crate::observe_api::routes())
        .fallback(|method: axum::http::Method, uri: axum::http::Uri| async move {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "the API has no route {method} {}; the README lists its routes",
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

/// Parses a JSON body so that errors name the field, unlike the stock extractor.
fn json_body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request("body", format!("invalid JSON body: {e}")))
}

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

async fn list_namespaces(State(p): Shared) -> Result<Json<Vec<NamespaceView>>, ApiError> {
    let namespaces = p.store.namespaces()?;
    Ok(Json(namespaces.into_iter().map(namespace_view).collect()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateNamespace {
    name: String,
}

async fn create_namespace(State(p): Shared, body: Bytes) -> Result<(StatusCode, Json<NamespaceView>), ApiError> {
    let request: CreateNamespace = json_body(&body)?;
    validate_namespace_name("name", &request.name)?;
    let ns = p
        .store
        .create_namespace(&request.name, updraft_runtime::clock::now_us())?;
    Ok((StatusCode::CREATED, Json(namespace_view(ns))))
}

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
    }
}

async fn set_namespace_limits(
    State(p): Shared,
    Path(ns): Path<String>,
    body: Bytes,
) -> Result<Json<NamespaceView>, ApiError> {
    let limits: NamespaceLimits = json_body(&body)?;
    if let Some(limit) = limits.rate_limit {
        if limit.per_second == 0 || limit.burst == 0 {
            return Err(ApiError::bad_request(
                "rate_limit",
                "per_second and burst must be at least 1; send no rate_limit to remove it",
            ));
        }
    }
    p.require_namespace(&ns)?;
    let updated = p.store.set_namespace_limits(&ns, &limits)?;
    p.routes_caught_up().await?;
    let platform = p.clone();
    let _ = tokio::task::spawn_blocking(move || platform.apply_log_retention()).await;
    Ok(Json(namespace_view(updated)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplyParams {
    namespace: Option<String>,
}

/// Applies one document: a Service answers with an [`ApplyView`](crate::views::ApplyView), a PingSource,
/// Trigger or Broker with an [`AppliedView`](crate::views::AppliedView).
async fn apply(State(p): Shared, Query(params): Query<ApplyParams>, body: Bytes) -> Result<Response, ApiError> {
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
    match docs.remove(0) {
        Document::Service(service) => {
            let desired = service.desired(namespace)?;
            Ok(Json(p.apply(desired).await?).into_response())
        }
        Document::Trigger(t) => {
            let ns = t.namespace.as_deref().unwrap_or(namespace);
            Ok(Json(p.put_trigger(ns, &t.name, &t.spec)?).into_response())
        }
        Document::Broker(b) => {
            let ns = b.namespace.as_deref().unwrap_or(namespace);
            Ok(Json(p.put_broker(ns, &b.name, b.delivery.as_ref())?).into_response())
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestParams {
    format: Option<String>,
    #[serde(default)]
    knative: bool,
}

async fn manifest(
    State(p): Shared,
    Path((ns, name)): Path<(String, String)>,
    Query(params): Query<ManifestParams>,
) -> Result<Response, ApiError> {
    let svc = p.find_service(&ns, &name)?;
    let manifest = p.manifest(&svc, params.knative)?;
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

async fn list_revisions(
    State(p): Shared,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Vec<RevisionView>>, ApiError> {
    let svc = p.find_service(&ns, &name)?;
    let routing = p.routing(&svc, updraft_runtime::clock::now_us());
    Ok(Json(p.revision_views(&svc, &routing).map_err(ApiError::internal)?))
}

async fn list_events(
    State(p): Shared,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Vec<ScaleEventView>>, ApiError> {
    let svc = p.find_service(&ns, &name)?;
    Ok(Json(p.service_events(&svc).map_err(ApiError::internal)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TrafficBody {
    traffic: Vec<TrafficTarget>,
}

async fn set_traffic(
    State(p): Shared,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<ServiceView>, ApiError> {
    let request: TrafficBody = json_body(&body)?;
    p.find_service(&ns, &name)?;
    Ok(Json(p.set_traffic(&ns, &name, request.traffic).await?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    to: Option<String>,
}

async fn rollback(
    State(p): Shared,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<ServiceView>, ApiError> {
    let request: RollbackBody = if body.is_empty() {
        RollbackBody::default()
    } else {
        json_body(&body)?
    };
    p.find_service(&ns, &name)?;
    Ok(Json(p.rollback(&ns, &name, request.to).await?))
}

async fn delete_revision(
    State(p): Shared,
    Path((ns, revision)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    p.require_namespace(&ns)?;
    p.delete_revision(&ns, &revision).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_services(State(p): Shared, Path(ns): Path<String>) -> Result<Json<Vec<ServiceView>>, ApiError> {
    p.require_namespace(&ns)?;
    let services = p.store.services(Some(&ns))?;
    let views = services
        .iter()
        .map(|s| p.service_view(s, false))
        .collect::<anyhow::Result<_>>()
        .map_err(ApiError::internal)?;
    Ok(Json(views))
}

async fn describe_service(
    State(p): Shared,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<ServiceView>, ApiError> {
    let svc = p.find_service(&ns, &name)?;
    Ok(Json(p.service_view(&svc, true).map_err(ApiError::internal)?))
}

async fn deploy(
    State(p): Shared,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<ServiceView>, ApiError> {
    let spec: DeploySpec = json_body(&body)?;
    Ok(Json(p.deploy(&ns, &name, spec).await?))
}

async fn delete_service(State(p): Shared, Path((ns, name)): Path<(String, String)>) -> Result<StatusCode, ApiError> {
    p.require_namespace(&ns)?;
    p.delete_service(&ns, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sends a request through the gateway as if it came to the service's URL, so a test
/// exercises the same path (activator, cold start) a real client does.
async fn invoke(
    State(p): Shared,
    Path(params): Path<Vec<(String, String)>>,
    request: Request,
) -> Result<Response, ApiError> {
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let (ns, name, path) = (get("ns"), get("name"), get("path"));
    p.find_service(&ns, &name)?;
    let (mut parts, body) = request.into_parts();
    let query = parts.uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    parts.uri = format!("/{path}{query}")
        .parse()
        .map_err(|e| ApiError::bad_request("path", format!("{e}")))?;
    let host = host_for(&name, &ns, &p.config.domain);
    parts
        .headers
        .insert(header::HOST, HeaderValue::try_from(host).map_err(ApiError::internal)?);
    let response = p.gateway.handle(Request::from_parts(parts, body), None).await;
    Ok(response.map(Body::new).into_response())
}
