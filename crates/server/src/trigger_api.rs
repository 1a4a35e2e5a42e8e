//! The REST API of triggers and brokers.
//!
//! | method and path | what it does |
//! |---|---|
//! | `GET /v1/namespaces/{ns}/triggers` | triggers with their next fire times and delivery counts |
//! | `PUT /v1/namespaces/{ns}/triggers/{name}` | create or replace a trigger (a [`TriggerSpec`]) |
//! | `GET, DELETE /v1/namespaces/{ns}/triggers/{name}` | describe with its history (`limit`); delete |
//! | `GET /v1/namespaces/{ns}/triggers/{name}/manifest` | as a Knative PingSource or Trigger (`format=yaml\|json`) |
//! | `GET /v1/namespaces/{ns}/brokers` | brokers and their ingress URLs |
//! | `PUT, DELETE /v1/namespaces/{ns}/brokers/{name}` | set a broker's delivery spec (`{"delivery": …}`); delete |
//! | `POST /v1/namespaces/{ns}/brokers/{name}/events` | CloudEvents ingress: binary, structured or batched; 202 once stored |

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use updraft_events::cloudevent::read_request;
use updraft_events::delivery::DeliverySpec;
use updraft_events::manifest::to_manifest;
use updraft_events::trigger::{validate_trigger_name, TriggerSpec, DEFAULT_BROKER};
use updraft_model::names::validate_service_name;

use crate::platform::Platform;
use crate::triggers::delivery_view;
use crate::views::{AcceptedView, AppliedView, BrokerView, TriggerDetailView, TriggerView};
use crate::ApiError;

type Shared = State<Arc<Platform>>;

/// History shown with a trigger unless the caller asks for more.
const DEFAULT_HISTORY: usize = 50;
const MAX_HISTORY: usize = 1000;

pub fn routes() -> Router<Arc<Platform>> {
    Router::new()
        .route("/v1/namespaces/{ns}/triggers", get(list_triggers))
        .route(
            "/v1/namespaces/{ns}/triggers/{name}",
            get(get_trigger).put(put_trigger).delete(delete_trigger),
        )
        .route("/v1/namespaces/{ns}/triggers/{name}/manifest", get(trigger_manifest))
        .route("/v1/namespaces/{ns}/brokers", get(list_brokers))
        .route(
            "/v1/namespaces/{ns}/brokers/{name}",
            put(put_broker).delete(delete_broker),
        )
        .route("/v1/namespaces/{ns}/brokers/{name}/events", post(ingest))
}

fn json_body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "body".to_string() } else { path };
        ApiError::bad_request(&field, e.into_inner().to_string())
    })
}

async fn list_triggers(State(p): Shared, Path(ns): Path<String>) -> Result<Json<Vec<TriggerView>>, ApiError> {
    p.require_namespace(&ns)?;
    let counts = p.events.delivery_counts(&ns)?;
    let views = p
        .events
        .triggers(Some(&ns))?
        .iter()
        .map(|t| p.trigger_view(t, &counts))
        .collect();
    Ok(Json(views))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryParams {
    limit: Option<usize>,
}

async fn get_trigger(
    State(p): Shared,
    Path((ns, name)): Path<(String, String)>,
    Query(params): Query<HistoryParams>,
) -> Result<Json<TriggerDetailView>, ApiError> {
    let record = find_trigger(&p, &ns, &name)?;
    let counts = p.events.delivery_counts(&ns)?;
    let limit = params.limit.unwrap_or(DEFAULT_HISTORY).min(MAX_HISTORY);
    let history = p
        .events
        .deliveries(&ns, &name, limit)?
        .iter()
        .map(delivery_view)
        .collect();
    Ok(Json(TriggerDetailView {
        trigger: p.trigger_view(&record, &counts),
        history,
    }))
}

fn find_trigger(p: &Platform, ns: &str, name: &str) -> Result<updraft_store::events::TriggerRecord, ApiError> {
    p.require_namespace(ns)?;
    p.events
        .trigger(ns, name)?
        .ok_or_else(|| ApiError::not_found(format!("trigger {name:?} does not exist in namespace {ns:?}")))
}

async fn put_trigger(
    State(p): Shared,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<(StatusCode, Json<AppliedView>), ApiError> {
    let spec: TriggerSpec = json_body(&body)?;
    let applied = p.put_trigger(&ns, &name, &spec)?;
    let status = if applied.result == "created" {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(applied)))
}

impl Platform {
    /// Checks and stores a trigger; the scheduler and sources pick it up at once.
    pub(crate) fn put_trigger(&self, ns: &str, name: &str, spec: &TriggerSpec) -> Result<AppliedView, ApiError> {
        self.require_namespace(ns)?;
        validate_trigger_name("name", name)?;
        spec.validate("spec", ns)?;
        if let TriggerSpec::Event(e) = spec {
            self.broker(ns, &e.broker)?;
        }
        let text = serde_json::to_string(spec).map_err(ApiError::internal)?;
        let existing = self.events.trigger(ns, name)?;
        let result = match &existing {
            Some(old) if old.spec == text => "unchanged",
            _ => {
                let created =
                    self.events
                        .put_trigger(ns, name, spec.kind(), &text, updraft_runtime::clock::now_us())?;
                self.signals.triggers_changed();
                if created {
                    "created"
                } else {
                    "updated"
                }
            }
        };
        Ok(AppliedView {
            kind: spec.kind().to_string(),
            namespace: ns.to_string(),
            name: name.to_string(),
            result: result.to_string(),
        })
    }

    pub(crate) fn put_broker(
        &self,
        ns: &str,
        name: &str,
        delivery: Option<&DeliverySpec>,
    ) -> Result<AppliedView, ApiError> {
        self.require_namespace(ns)?;
        validate_service_name("name", name)?;
        if let Some(delivery) = delivery {
            delivery.validate("delivery", ns)?;
        }
        let text = delivery
            .map(serde_json::to_string)
            .transpose()
            .map_err(ApiError::internal)?;
        let existing = self.events.brokers(Some(ns))?.into_iter().find(|b| b.name == name);
        let result = match existing {
            Some(old) if old.delivery == text => "unchanged",
            _ => {
                if self
                    .events
                    .put_broker(ns, name, text.as_deref(), updraft_runtime::clock::now_us())?
                {
                    "created"
                } else {
                    "updated"
                }
            }
        };
        Ok(AppliedView {
            kind: "broker".to_string(),
            namespace: ns.to_string(),
            name: name.to_string(),
            result: result.to_string(),
        })
    }

    fn broker_view(&self, ns: &str, name: &str, delivery: Option<&str>) -> BrokerView {
        BrokerView {
            namespace: ns.to_string(),
            name: name.to_string(),
            url: format!(
                "http://{}/v1/namespaces/{ns}/brokers/{name}/events",
                self.config.api_addr
            ),
            delivery: delivery.and_then(|d| serde_json::from_str(d).ok()),
        }
    }
}

async fn delete_trigger(State(p): Shared, Path((ns, name)): Path<(String, String)>) -> Result<StatusCode, ApiError> {
    p.require_namespace(&ns)?;
    p.events.delete_trigger(&ns, &name)?;
    p.signals.triggers_changed();
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestParams {
    format: Option<String>,
}

async fn trigger_manifest(
    State(p): Shared,
    Path((ns, name)): Path<(String, String)>,
    Query(params): Query<ManifestParams>,
) -> Result<Response, ApiError> {
    let record = find_trigger(&p, &ns, &name)?;
    let spec = crate::triggers::parse_spec(&record).ok_or_else(|| ApiError::internal("unreadable trigger"))?;
    let manifest = to_manifest(&ns, &name, &spec).ok_or_else(|| {
        ApiError::bad_request(
            "name",
            format!("{name:?} is a NATS source, which has no Knative v1 manifest; `updraft trigger show {name} -o json` prints its spec"),
        )
    })?;
    match params.format.as_deref() {
        Some("json") => Ok(Json(manifest).into_response()),
        None | Some("yaml") => {
            let text = serde_yaml_ng::to_string(&manifest).map_err(ApiError::internal)?;
            Ok(([(header::CONTENT_TYPE, "application/yaml")], text).into_response())
        }
        Some(other) => Err(ApiError::bad_request(
            "format",
            format!("{other:?} is not yaml or json"),
        )),
    }
}

async fn list_brokers(State(p): Shared, Path(ns): Path<String>) -> Result<Json<Vec<BrokerView>>, ApiError> {
    p.require_namespace(&ns)?;
    let stored = p.events.brokers(Some(&ns))?;
    let mut views = Vec::new();
    if !stored.iter().any(|b| b.name == DEFAULT_BROKER) {
        views.push(p.broker_view(&ns, DEFAULT_BROKER, None));
    }
    views.extend(
        stored
            .iter()
            .map(|b| p.broker_view(&ns, &b.name, b.delivery.as_deref())),
    );
    Ok(Json(views))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BrokerBody {
    #[serde(default)]
    delivery: Option<DeliverySpec>,
}

async fn put_broker(
    State(p): Shared,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<AppliedView>, ApiError> {
    let body: BrokerBody = json_body(&body)?;
    Ok(Json(p.put_broker(&ns, &name, body.delivery.as_ref())?))
}

async fn delete_broker(State(p): Shared, Path((ns, name)): Path<(String, String)>) -> Result<StatusCode, ApiError> {
    p.require_namespace(&ns)?;
    if p.events
        .triggers(Some(&ns))?
        .iter()
        .filter_map(crate::triggers::parse_spec)
        .any(|s| matches!(&s, TriggerSpec::Event(e) if e.broker == name))
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("broker {name:?} has triggers; delete them first"),
        ));
    }
    p.events.delete_broker(&ns, &name)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn ingest(
    State(p): Shared,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<AcceptedView>), ApiError> {
    let platform = p.clone();
    let (count, deliveries) = tokio::task::spawn_blocking(move || {
        let events = read_request(&headers, body)?;
        Ok::<_, ApiError>((events.len(), platform.accept_events(&ns, &name, &events)?))
    })
    .await
    .map_err(ApiError::internal)??;
    Ok((
        StatusCode::ACCEPTED,
        Json(AcceptedView {
            accepted: count,
            deliveries,
        }),
    ))
}
