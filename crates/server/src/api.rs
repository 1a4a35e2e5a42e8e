//! The REST API (JSON over HTTP on the API port).
//!
//! | method and path | what |
//! |---|---|
//! | `GET /healthz` | liveness |
//! | `GET /v1/info` | version, domain, limits |
//! | `GET, POST /v1/namespaces` | list; create `{"name": …}` |
//! | `POST /v1/packages` | upload an archive (body); returns its digest |
//! | `GET /v1/namespaces/{ns}/services` | list services |
//! | `PUT /v1/namespaces/{ns}/services/{name}` | deploy a [`DeploySpec`] |
//! | `GET, DELETE /v1/namespaces/{ns}/services/{name}` | describe; delete |
//! | `GET /v1/namespaces/{ns}/services/{name}/logs` | instance output (`revision`, `instance`, `tail`) |
//! | `ANY /v1/namespaces/{ns}/services/{name}/invoke/{path}` | a request through the gateway |

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use updraft_gateway::host_for;
use updraft_model::names::validate_namespace_name;
use updraft_model::DeploySpec;
use updraft_runtime::logs::{read_logs, service_log_dir, LogQuery};

use crate::platform::Platform;
use crate::views::{rfc3339_us, InfoView, LogLineView, NamespaceView, PackageView, ServiceView};
use crate::ApiError;

type Shared = State<Arc<Platform>>;

pub fn router(platform: Arc<Platform>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/v1/info", get(info))
        .route("/v1/namespaces", get(list_namespaces).post(create_namespace))
        .route("/v1/packages", post(upload_package))
        .route("/v1/namespaces/{ns}/services", get(list_services))
        .route(
            "/v1/namespaces/{ns}/services/{name}",
            get(describe_service).put(deploy).delete(delete_service),
        )
        .route("/v1/namespaces/{ns}/services/{name}/logs", get(logs))
        .route("/v1/namespaces/{ns}/services/{name}/invoke", any(invoke))
        .route("/v1/namespaces/{ns}/services/{name}/invoke/", any(invoke))
        .route("/v1/namespaces/{ns}/services/{name}/invoke/{*path}", any(invoke))
        .with_state(platform)
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
        cgroup: p.cgroup_version.to_string(),
    })
}

async fn list_namespaces(State(p): Shared) -> Result<Json<Vec<NamespaceView>>, ApiError> {
    let namespaces = p.store.namespaces()?;
    Ok(Json(
        namespaces
            .into_iter()
            .map(|n| NamespaceView {
                name: n.name,
                created_at: rfc3339_us(n.created_at_us),
            })
            .collect(),
    ))
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
        .create_namespace(&request.name, updraft_runtime::logs::now_us())?;
    Ok((
        StatusCode::CREATED,
        Json(NamespaceView {
            name: ns.name,
            created_at: rfc3339_us(ns.created_at_us),
        }),
    ))
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

fn require_namespace(p: &Platform, ns: &str) -> Result<(), ApiError> {
    validate_namespace_name("namespace", ns)?;
    match p.store.namespace(ns)? {
        Some(_) => Ok(()),
        None => Err(updraft_store::StoreError::NoSuchNamespace(ns.to_string()).into()),
    }
}

fn find_service(p: &Platform, ns: &str, name: &str) -> Result<updraft_model::Service, ApiError> {
    require_namespace(p, ns)?;
    p.store
        .service(ns, name)?
        .ok_or_else(|| ApiError::not_found(format!("service {name:?} does not exist in namespace {ns:?}")))
}

async fn list_services(State(p): Shared, Path(ns): Path<String>) -> Result<Json<Vec<ServiceView>>, ApiError> {
    require_namespace(&p, &ns)?;
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
    let svc = find_service(&p, &ns, &name)?;
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
    require_namespace(&p, &ns)?;
    p.delete_service(&ns, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogParams {
    revision: Option<String>,
    instance: Option<String>,
    tail: Option<usize>,
}

async fn logs(
    State(p): Shared,
    Path((ns, name)): Path<(String, String)>,
    Query(params): Query<LogParams>,
) -> Result<Json<Vec<LogLineView>>, ApiError> {
    find_service(&p, &ns, &name)?;
    let dir = service_log_dir(&p.paths.logs, &ns, &name);
    let query = LogQuery {
        revision: params.revision,
        instance: params.instance,
        tail: params.tail,
    };
    let records = tokio::task::spawn_blocking(move || read_logs(&dir, &query))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(Json(
        records
            .into_iter()
            .map(|r| LogLineView {
                time: rfc3339_us(r.ts_us),
                revision: r.revision,
                instance: r.instance,
                stream: r.stream,
                line: r.line,
                continued: r.continued,
            })
            .collect(),
    ))
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
    find_service(&p, &ns, &name)?;
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
