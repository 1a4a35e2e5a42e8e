//! The API's reading of what runs: Prometheus metrics, metered usage, each service's
//! load (`updraft top`) and its logs, stored or followed.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use updraft_api::requests::{LogsQuery, UsageQuery};
use updraft_model::auth::{Action, Caller};
use updraft_telemetry::logs::{read_access, read_logs, service_log_dir, LogQuery};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::authz::Need;
use crate::extract::{NamedPath, NamespacePath, Path, Query};
use crate::platform::Platform;
use crate::views::{rfc3339_us, AccessLineView, LogLineView, TopView, UsageView};
use crate::ApiError;

type Shared = State<Arc<Platform>>;

pub fn routes() -> OpenApiRouter<Arc<Platform>> {
    OpenApiRouter::new()
        .routes(routes!(metrics))
        .routes(routes!(usage))
        .routes(routes!(top))
        .routes(routes!(logs))
}

/// The Prometheus scrape: gauges are read from the live state, then all is encoded in
/// the format the scraper asks for.
#[utoipa::path(get, path = "/metrics", tag = "observe",
    responses((status = 200, description = "Prometheus text, or OpenMetrics when the scraper asks for it",
        body = String, content_type = "text/plain"), ApiError))]
async fn metrics(State(p): Shared, Extension(caller): Extension<Caller>, headers: axum::http::HeaderMap) -> Response {
    let m = &p.metrics;
    m.in_flight.clear();
    m.activator_waiting.clear();
    m.instances.clear();
    for state in p.registry.all() {
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
    let (content_type, mut text) = m.encode_for(accept);
    if let Some(allowed) = caller.namespaces(Action::Read) {
        text = updraft_telemetry::only_namespaces(&text, &allowed);
    }
    ([(header::CONTENT_TYPE, content_type)], text).into_response()
}

#[utoipa::path(get, path = "/v1/usage", tag = "observe", params(UsageQuery),
    responses((status = 200, description = "Usage summed by the grouping asked for", body = Vec<UsageView>), ApiError))]
async fn usage(
    State(p): Shared,
    Extension(caller): Extension<Caller>,
    Query(params): Query<UsageQuery>,
) -> Result<Json<Vec<UsageView>>, ApiError> {
    if let Some(ns) = &params.namespace {
        if let Some(refusal) = crate::authz::refuse(&caller, Need::In(Action::Read), Some(ns)) {
            return Err(refusal);
        }
        p.require_namespace(ns).await?;
    }
    let allowed = caller.namespaces(Action::Read);
    let by = params.by.as_deref().unwrap_or("service");
    if !updraft_api::schema::USAGE_GROUPINGS.contains(&by) {
        return Err(ApiError::bad_request(
            "by",
            format!("{by:?} is not a grouping; use service, revision, day or hour"),
        ));
    }
    let since = params.since.as_deref().map(|t| time_param("since", t)).transpose()?;
    // What accrued since the last write is written first, so the answer is current.
    p.meter.meter().await;
    let mut rows = p.store.usage(params.namespace.as_deref(), since.unwrap_or(0)).await?;
    if let Some(allowed) = &allowed {
        rows.retain(|row| allowed.contains(&row.namespace.as_str()));
    }
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

#[utoipa::path(get, path = "/v1/namespaces/{ns}/top", tag = "observe", params(NamespacePath),
    responses((status = 200, description = "Each service's load", body = Vec<TopView>), ApiError))]
async fn top(
    State(p): Shared,
    Path(NamespacePath { ns }): Path<NamespacePath>,
) -> Result<Json<Vec<TopView>>, ApiError> {
    p.require_namespace(&ns).await?;
    let now = updraft_runtime::clock::now_us();
    let mut rows = Vec::new();
    for svc in p.store.services(Some(&ns)).await? {
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
        for revision in p.store.revisions(&ns, &svc.name).await? {
            let Some(state) = p.registry.get(&ns, &revision.name) else {
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

/// A point in time given as RFC 3339 or as an age before now.
pub(crate) fn time_param(field: &str, text: &str) -> Result<i64, ApiError> {
    if let Ok(at) = humantime::parse_rfc3339_weak(text) {
        let since_epoch = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        return Ok(since_epoch.as_micros() as i64);
    }
    match humantime::parse_duration(text) {
        Ok(age) => Ok(updraft_runtime::clock::now_us() - age.as_micros() as i64),
        Err(_) => Err(ApiError::bad_request(
            field,
            format!("{text:?} is neither a time (2026-11-23T10:00:00Z) nor an age (10m, 2h)"),
        )),
    }
}

fn line_view(r: updraft_telemetry::logs::LogRecord) -> LogLineView {
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

/// Stored lines as JSON; with `follow=true`, server-sent events (`line`, and `dropped`
/// when a slow reader missed some).
#[utoipa::path(get, path = "/v1/namespaces/{ns}/services/{name}/logs", tag = "observe",
    params(NamedPath, LogsQuery),
    responses((status = 200, description = "log lines, or access records with `requests=true`", content(
        (Vec<LogLineView> = "application/json"), (String = "text/event-stream"))), ApiError))]
async fn logs(
    State(p): Shared,
    Path(NamedPath { ns, name }): Path<NamedPath>,
    Query(params): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    p.find_service(&ns, &name).await?;
    let dir = service_log_dir(&p.paths.logs, &ns, &name);
    let query = LogQuery {
        revision: params.revision,
        instance: params.instance,
        // A follow starts with the last few lines, as `tail -f` does.
        tail: params.tail.map(|n| n as usize).or(params.follow.then_some(10)),
        since_us: params.since.as_deref().map(|t| time_param("since", t)).transpose()?,
        until_us: params.until.as_deref().map(|t| time_param("until", t)).transpose()?,
        grep: params.grep,
        build: params.build,
    };
    if params.requests {
        if params.build {
            return Err(ApiError::bad_request(
                "build",
                "the access log has no build records; ask for one of the two",
            ));
        }
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
