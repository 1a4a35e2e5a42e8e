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
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use updraft_api::requests::BrokerRequest;
use updraft_events::cloudevent::read_request;
use updraft_events::delivery::DeliverySpec;
use updraft_events::manifest::to_manifest;
use updraft_events::trigger::{validate_trigger_name, TriggerSpec, DEFAULT_BROKER};
use updraft_model::names::validate_service_name;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::{JsonBody, NamedPath, NamespacePath, Path, Query};
use crate::platform::Platform;
use crate::triggers::delivery_view;
use crate::views::{AcceptedView, AppliedView, BrokerView, TriggerDetailView, TriggerView};
use crate::ApiError;

type Shared = State<Arc<Platform>>;

/// History shown with a trigger unless the caller asks for more.
const DEFAULT_HISTORY: usize = 50;
const MAX_HISTORY: usize = 1000;

pub fn routes() -> OpenApiRouter<Arc<Platform>> {
    OpenApiRouter::new()
        .routes(routes!(list_triggers))
        .routes(routes!(get_trigger, put_trigger, delete_trigger))
        .routes(routes!(trigger_manifest))
        .routes(routes!(list_brokers))
        .routes(routes!(put_broker, delete_broker))
        .routes(routes!(ingest))
}

#[utoipa::path(get, path = "/v1/namespaces/{ns}/triggers", tag = "triggers", params(NamespacePath),
    responses((status = 200, description = "The namespace's triggers", body = Vec<TriggerView>), ApiError))]
async fn list_triggers(
    State(p): Shared,
    Path(NamespacePath { ns }): Path<NamespacePath>,
) -> Result<Json<Vec<TriggerView>>, ApiError> {
    p.require_namespace(&ns).await?;
    let counts = p.events.delivery_counts(&ns)?;
    let views = p
        .events
        .triggers(Some(&ns))?
        .iter()
        .map(|t| p.trigger_view(t, &counts))
        .collect();
    Ok(Json(views))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct HistoryParams {
    /// Deliveries to show, newest first (50 if not given, at most 1000).
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/namespaces/{ns}/triggers/{name}", tag = "triggers",
    params(NamedPath, HistoryParams), responses((status = 200, description = "The trigger and its latest deliveries", body = TriggerDetailView), ApiError))]
async fn get_trigger(
    State(p): Shared,
    Path(NamedPath { ns, name }): Path<NamedPath>,
    Query(params): Query<HistoryParams>,
) -> Result<Json<TriggerDetailView>, ApiError> {
    let record = find_trigger(&p, &ns, &name).await?;
    let counts = p.events.delivery_counts(&ns)?;
    let limit = params.limit.map_or(DEFAULT_HISTORY, |n| n as usize).min(MAX_HISTORY);
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

async fn find_trigger(p: &Platform, ns: &str, name: &str) -> Result<updraft_store::events::TriggerRecord, ApiError> {
    p.require_namespace(ns).await?;
    p.events
        .trigger(ns, name)?
        .ok_or_else(|| ApiError::not_found(format!("trigger {name:?} does not exist in namespace {ns:?}")))
}

#[utoipa::path(put, path = "/v1/namespaces/{ns}/triggers/{name}", tag = "triggers",
    params(NamedPath), request_body = TriggerSpec,
    responses((status = 200, description = "updated or unchanged", body = AppliedView),
        (status = 201, description = "created", body = AppliedView), ApiError))]
async fn put_trigger(
    State(p): Shared,
    Path(NamedPath { ns, name }): Path<NamedPath>,
    JsonBody(spec): JsonBody<TriggerSpec>,
) -> Result<(StatusCode, Json<AppliedView>), ApiError> {
    let applied = p.put_trigger(&ns, &name, &spec).await?;
    let status = if applied.result == "created" {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(applied)))
}

impl Platform {
    /// Checks and stores a trigger; the scheduler and sources pick it up at once.
    pub(crate) async fn put_trigger(&self, ns: &str, name: &str, spec: &TriggerSpec) -> Result<AppliedView, ApiError> {
        self.require_namespace(ns).await?;
        validate_trigger_name("name", name)?;
        spec.validate("spec", ns)?;
        if let TriggerSpec::Event(e) = spec {
            self.routing.current().await?.broker(ns, &e.broker)?;
        }
        if let Ok(updraft_events::delivery::Target::Broker { name: broker, .. }) =
            spec.destination().resolve("spec.sink", ns)
        {
            self.routing.current().await?.broker(ns, &broker)?;
        }
        self.check_source(ns, name, spec).await?;
        let text = serde_json::to_string(spec).map_err(ApiError::internal)?;
        let existing = self.events.trigger(ns, name)?;
        let result = match &existing {
            Some(old) if old.spec == text => "unchanged",
            _ => {
                let created =
                    self.events
                        .put_trigger(ns, name, spec.kind(), &text, updraft_runtime::clock::now_us())?;
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

    /// Asks a message source's system what only it can tell (the server answers, the
    /// queue exists) and finds its secrets, so a source that cannot work is refused
    /// before it is stored.
    async fn check_source(&self, ns: &str, name: &str, spec: &TriggerSpec) -> Result<(), ApiError> {
        let Some(source) = updraft_events::sources::source_for(ns, name, spec, &*self.secrets) else {
            return Ok(());
        };
        let unusable = |e: updraft_model::FieldError| ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: e.to_string(),
            field: Some(e.field),
        };
        source.map_err(unusable)?.check().await.map_err(unusable)
    }

    pub(crate) async fn put_broker(
        &self,
        ns: &str,
        name: &str,
        delivery: Option<&DeliverySpec>,
    ) -> Result<AppliedView, ApiError> {
        self.require_namespace(ns).await?;
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

    /// Where a broker's ingress is.
    pub(crate) fn broker_url(&self, ns: &str, name: &str) -> String {
        format!(
            "{}://{}/v1/namespaces/{ns}/brokers/{name}/events",
            self.config.scheme(),
            self.config.api_addr
        )
    }

    fn broker_view(&self, ns: &str, name: &str, delivery: Option<&str>) -> BrokerView {
        BrokerView {
            namespace: ns.to_string(),
            name: name.to_string(),
            url: self.broker_url(ns, name),
            delivery: delivery.and_then(|d| serde_json::from_str(d).ok()),
        }
    }
}

#[utoipa::path(delete, path = "/v1/namespaces/{ns}/triggers/{name}", tag = "triggers",
    params(NamedPath), responses((status = 204, description = "deleted"), ApiError))]
async fn delete_trigger(
    State(p): Shared,
    Path(NamedPath { ns, name }): Path<NamedPath>,
) -> Result<StatusCode, ApiError> {
    p.require_namespace(&ns).await?;
    p.events.delete_trigger(&ns, &name)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ManifestParams {
    /// `yaml` (the default) or `json`.
    format: Option<String>,
}

#[utoipa::path(get, path = "/v1/namespaces/{ns}/triggers/{name}/manifest", tag = "triggers",
    params(NamedPath, ManifestParams),
    responses((status = 200, description = "a Knative PingSource or Trigger", content(
        (Object = "application/json"), (String = "application/yaml"))), ApiError))]
async fn trigger_manifest(
    State(p): Shared,
    Path(NamedPath { ns, name }): Path<NamedPath>,
    Query(params): Query<ManifestParams>,
) -> Result<Response, ApiError> {
    let record = find_trigger(&p, &ns, &name).await?;
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

#[utoipa::path(get, path = "/v1/namespaces/{ns}/brokers", tag = "brokers", params(NamespacePath),
    responses((status = 200, description = "The namespace's brokers", body = Vec<BrokerView>), ApiError))]
async fn list_brokers(
    State(p): Shared,
    Path(NamespacePath { ns }): Path<NamespacePath>,
) -> Result<Json<Vec<BrokerView>>, ApiError> {
    p.require_namespace(&ns).await?;
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

#[utoipa::path(put, path = "/v1/namespaces/{ns}/brokers/{name}", tag = "brokers",
    params(NamedPath), request_body = BrokerRequest,
    responses((status = 200, description = "What the put did", body = AppliedView), ApiError))]
async fn put_broker(
    State(p): Shared,
    Path(NamedPath { ns, name }): Path<NamedPath>,
    JsonBody(body): JsonBody<BrokerRequest>,
) -> Result<Json<AppliedView>, ApiError> {
    Ok(Json(p.put_broker(&ns, &name, body.delivery.as_ref()).await?))
}

#[utoipa::path(delete, path = "/v1/namespaces/{ns}/brokers/{name}", tag = "brokers",
    params(NamedPath), responses((status = 204, description = "deleted"), ApiError))]
async fn delete_broker(
    State(p): Shared,
    Path(NamedPath { ns, name }): Path<NamedPath>,
) -> Result<StatusCode, ApiError> {
    p.require_namespace(&ns).await?;
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

/// CloudEvents in binary mode (`ce-*` headers), structured mode
/// (`application/cloudevents+json`) or batched (`application/cloudevents-batch+json`).
#[utoipa::path(post, path = "/v1/namespaces/{ns}/brokers/{name}/events", tag = "brokers",
    params(NamedPath),
    request_body(content = Object, content_type = "application/cloudevents+json", description = "one event, or a batch"),
    responses((status = 202, description = "every event stored before this answer", body = AcceptedView), ApiError))]
async fn ingest(
    State(p): Shared,
    Path(NamedPath { ns, name }): Path<NamedPath>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<AcceptedView>), ApiError> {
    let events = tokio::task::spawn_blocking(move || read_request(&headers, body))
        .await
        .map_err(ApiError::internal)??;
    let deliveries = p.accept_events(&ns, &name, &events).await?;
    let count = events.len();
    Ok((
        StatusCode::ACCEPTED,
        Json(AcceptedView {
            accepted: count,
            deliveries,
        }),
    ))
}
