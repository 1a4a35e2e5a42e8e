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
use axum::response::sse::{Event, KeepAlive, Sse};
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
use updraft_runtime::logs::{read_access, read_logs, service_log_dir, LogQuery};

use crate::platform::Platform;
use crate::views::{
    rfc3339_us, AccessLineView, InfoView, LogLineView, NamespaceView, PackageView, RevisionView, ScaleEventView,
    ServiceView, TopView, UsageView,
};
use crate::ApiError;

type Shared = State<Arc<Platform>>;

pub fn router(platform: Arc<Platform>) -> Router {
    let budget = platform.config.api_timeout;
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/v1/info", get(info))
        .route("/v1/namespaces", get(list_namespaces).post(create_namespace))
        .route("/v1/namespaces/{ns}", put(set_namespace_limits))
        .route("/v1/packages", post(upload_package))
        .route(
            "/v1/apply",
            post(apply).layer(axum::extract::DefaultBodyLimit::max(MAX_MANIFEST_BYTES)),
        )
        .route("/v1/usage", get(usage))
        .route("/v1/namespaces/{ns}/services", get(list_services))
        .route("/v1/namespaces/{ns}/top", get(top))
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
        .route("/v1/namespaces/{ns}/services/{name}/logs", get(logs))
        .route("/v1/namespaces/{ns}/services/{name}/invoke", any(invoke))
        .route("/v1/namespaces/{ns}/services/{name}/invoke/", any(invoke))
        .route("/v1/namespaces/{ns}/services/{name}/invoke/{*path}", any(invoke))
        .merge(crate::trigger_api::routes())
        .merge(crate::image_api::routes())
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

/// The Prometheus scrape: gauges are read from the live state, then all is encoded in
/// the format the scraper asks for.
async fn metrics(State(p): Shared, headers: axum::http::HeaderMap) -> Response {
    let m = &p.metrics;
    m.in_flight.clear();
    m.activator_waiting.clear();
    m.instances.clear();
    for state in p.all_revision_states() {
        let labels = crate::platform::revision_labels(&state.endpoints.key);
        m.in_flight
            .get_or_create(&labels)
            .set(i64::from(state.endpoints.in_flight()));
        m.activator_waiting
            .get_or_create(&labels)
            .set(i64::from(state.endpoints.waiting()));
        for instance in state.instances() {
            let view = instance.view(p.cgroup_version);
            m.instances
                .get_or_create(&updraft_telemetry::InstanceLabels {
                    namespace: labels.namespace.clone(),
                    service: labels.service.clone(),
                    revision: labels.revision.clone(),
                    state: view.state,
                })
                .inc();
        }
    }
    let (size, memory) = p.runtime.pool();
    m.pool_size.set(size as i64);
    m.pool_memory_bytes.set(memory as i64);
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (content_type, text) = m.encode_for(accept);
    ([(header::CONTENT_TYPE, content_type)], text).into_response()
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
        .create_namespace(&request.name, updraft_runtime::logs::now_us())?;
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

fn find_service(p: &Platform, ns: &str, name: &str) -> Result<updraft_model::Service, ApiError> {
    p.require_namespace(ns)?;
    p.existing_service(ns, name)
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
    let svc = find_service(&p, &ns, &name)?;
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
    let svc = find_service(&p, &ns, &name)?;
    let routing = p.routing(&svc, updraft_runtime::logs::now_us());
    Ok(Json(p.revision_views(&svc, &routing).map_err(ApiError::internal)?))
}

async fn list_events(
    State(p): Shared,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Vec<ScaleEventView>>, ApiError> {
    let svc = find_service(&p, &ns, &name)?;
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
    find_service(&p, &ns, &name)?;
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
    find_service(&p, &ns, &name)?;
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageParams {
    namespace: Option<String>,
    since: Option<String>,
    by: Option<String>,
}

async fn usage(State(p): Shared, Query(params): Query<UsageParams>) -> Result<Json<Vec<UsageView>>, ApiError> {
    if let Some(ns) = &params.namespace {
        p.require_namespace(ns)?;
    }
    let by = params.by.as_deref().unwrap_or("service");
    if !["service", "revision", "day", "hour"].contains(&by) {
        return Err(ApiError::bad_request(
            "by",
            format!("{by:?} is not a grouping; use service, revision, day or hour"),
        ));
    }
    let since = params.since.as_deref().map(|t| time_param("since", t)).transpose()?;
    // What accrued since the last write is written first, so the answer is current.
    let platform = p.clone();
    tokio::task::spawn_blocking(move || platform.meter())
        .await
        .map_err(ApiError::internal)?;
    let rows = p.store.usage(params.namespace.as_deref(), since.unwrap_or(0))?;
    let mut sums: Vec<UsageView> = Vec::new();
    for row in rows {
        let (service, revision, period) = match by {
            "revision" => (Some(row.service), Some(row.revision), None),
            "day" => (None, None, Some(rfc3339_us(row.hour_us)[..10].to_string())),
            "hour" => (None, None, Some(rfc3339_us(row.hour_us))),
            _ => (Some(row.service), None, None),
        };
        let index = match sums.iter().position(|s| {
            s.namespace == row.namespace && s.service == service && s.revision == revision && s.period == period
        }) {
            Some(i) => i,
            None => {
                sums.push(UsageView {
                    namespace: row.namespace.clone(),
                    service,
                    revision,
                    period,
                    ..Default::default()
                });
                sums.len() - 1
            }
        };
        let sum = &mut sums[index];
        sum.vcpu_seconds += row.vcpu_seconds;
        sum.gib_seconds += row.gib_seconds;
        sum.cpu_seconds += row.cpu_seconds;
        sum.invocations += row.invocations;
        sum.request_gb_seconds += row.request_gb_seconds;
    }
    Ok(Json(sums))
}

/// The window `top` reports on.
const TOP_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

async fn top(State(p): Shared, Path(ns): Path<String>) -> Result<Json<Vec<TopView>>, ApiError> {
    p.require_namespace(&ns)?;
    let now = updraft_runtime::logs::now_us();
    let mut rows = Vec::new();
    for svc in p.store.services(Some(&ns))? {
        let mut row = TopView {
            namespace: ns.clone(),
            service: svc.name.clone(),
            requests_per_second: 0.0,
            requests: 0,
            p50_ms: 0.0,
            p99_ms: 0.0,
            in_flight: 0,
            waiting: 0,
            instances: 0,
            ready: 0,
            cold_starts: 0,
        };
        let mut latencies = Vec::new();
        for revision in p.store.revisions(&ns, &svc.name)? {
            let Some(state) = p.revision(&ns, &revision.name) else {
                continue;
            };
            let labels = crate::platform::revision_labels(&state.endpoints.key);
            row.requests_per_second += state
                .autoscaler
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .recent_rps(now, TOP_WINDOW.as_micros() as i64);
            row.in_flight += state.endpoints.in_flight();
            row.waiting += state.endpoints.waiting();
            row.instances += state.instances().len();
            row.ready += state.endpoints.ready_count();
            row.cold_starts += p.metrics.cold_starts_of(&labels, state.revision.config.runtime.name());
            let (n, p50, p99) = p.metrics.recent.percentiles(&labels, TOP_WINDOW);
            if n > 0 {
                latencies.push((n, p50, p99));
            }
        }
        // Across revisions: the busiest revision's percentiles stand for the service.
        if let Some((_, p50, p99)) = latencies.iter().copied().max_by_key(|(n, _, _)| *n) {
            row.requests = latencies.iter().map(|(n, _, _)| n).sum();
            row.p50_ms = p50 * 1000.0;
            row.p99_ms = p99 * 1000.0;
        }
        rows.push(row);
    }
    Ok(Json(rows))
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
    p.require_namespace(&ns)?;
    p.delete_service(&ns, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogParams {
    revision: Option<String>,
    instance: Option<String>,
    tail: Option<usize>,
    /// A time (RFC 3339) or an age (`10m`: that long ago).
    since: Option<String>,
    until: Option<String>,
    grep: Option<String>,
    /// Keep the response open and send new lines as server-sent events.
    #[serde(default)]
    follow: bool,
    /// The access log (one record per request) instead of the instances' output.
    #[serde(default)]
    requests: bool,
}

/// A point in time given as RFC 3339 or as an age before now.
fn time_param(field: &str, text: &str) -> Result<i64, ApiError> {
    if let Ok(at) = humantime::parse_rfc3339_weak(text) {
        let since_epoch = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        return Ok(since_epoch.as_micros() as i64);
    }
    match humantime::parse_duration(text) {
        Ok(age) => Ok(updraft_runtime::logs::now_us() - age.as_micros() as i64),
        Err(_) => Err(ApiError::bad_request(
            field,
            format!("{text:?} is neither a time (2026-11-23T10:00:00Z) nor an age (10m, 2h)"),
        )),
    }
}

fn line_view(r: updraft_runtime::logs::LogRecord) -> LogLineView {
    LogLineView {
        time: rfc3339_us(r.ts_us),
        revision: r.revision,
        instance: r.instance,
        stream: r.stream,
        line: r.line,
        continued: r.continued,
        fields: r.fields,
    }
}

async fn logs(
    State(p): Shared,
    Path((ns, name)): Path<(String, String)>,
    Query(params): Query<LogParams>,
) -> Result<Response, ApiError> {
    find_service(&p, &ns, &name)?;
    let dir = service_log_dir(&p.paths.logs, &ns, &name);
    let query = LogQuery {
        revision: params.revision,
        instance: params.instance,
        // A follow starts with the last few lines, as `tail -f` does.
        tail: params.tail.or(params.follow.then_some(10)),
        since_us: params.since.as_deref().map(|t| time_param("since", t)).transpose()?,
        until_us: params.until.as_deref().map(|t| time_param("until", t)).transpose()?,
        grep: params.grep,
    };
    if params.requests {
        if params.follow {
            return Err(ApiError::bad_request(
                "follow",
                "follows instance output; read the access log without it",
            ));
        }
        let records = tokio::task::spawn_blocking(move || read_access(&dir, &query))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?;
        let views: Vec<AccessLineView> = records
            .into_iter()
            .map(|r| AccessLineView {
                time: rfc3339_us(r.ts_us),
                revision: r.revision,
                instance: r.instance,
                method: r.method,
                path: r.path,
                status: r.status,
                duration_ms: r.duration_ms,
                cold: r.cold,
                traceparent: r.traceparent,
            })
            .collect();
        return Ok(Json(views).into_response());
    }
    // Subscribed before the stored lines are read, so none falls between the two.
    let live = params.follow.then(|| p.log_feed.subscribe());
    let stored = query.clone();
    let records = tokio::task::spawn_blocking(move || read_logs(&dir, &stored))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let Some(live) = live else {
        return Ok(Json(records.into_iter().map(line_view).collect::<Vec<_>>()).into_response());
    };
    let last_seen = records.last().map_or(i64::MIN, |r| r.ts_us);
    let history = futures_util::stream::iter(
        records
            .into_iter()
            .map(|r| Ok::<_, std::convert::Infallible>(line_event(line_view(r)))),
    );
    let follow = futures_util::stream::unfold(live, move |mut live| {
        let (ns, name, query) = (ns.clone(), name.clone(), query.clone());
        async move {
            loop {
                match live.recv().await {
                    Ok(r) if r.namespace == ns && r.service == name && r.record.ts_us > last_seen => {
                        if query.matches(&r.record) {
                            return Some((Ok(line_event(line_view(r.record.clone()))), live));
                        }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        let event = Event::default().event("dropped").data(n.to_string());
                        return Some((Ok(event), live));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    });
    use futures_util::StreamExt;
    Ok(Sse::new(history.chain(follow))
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn line_event(view: LogLineView) -> Event {
    Event::default()
        .event("line")
        .json_data(view)
        .unwrap_or_else(|_| Event::default().event("line"))
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
