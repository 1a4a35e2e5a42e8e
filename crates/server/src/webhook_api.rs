//! Webhook sources' ingress: `POST /v1/namespaces/{ns}/webhooks/{name}`.
//!
//! No token: a provider cannot hold one. The request's signature, checked with the
//! source's secret, is what authorises it (`updraft_events::webhook`); a refusal says
//! why with 401, a delivery id taken before is a replay (409), and an accepted event
//! is stored with its delivery before the 202, as the broker's ingress does.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use updraft_events::sources::{event_source, message_event};
use updraft_events::trigger::TriggerSpec;
use updraft_events::webhook::{verify, MAX_WEBHOOK_BODY};
use updraft_runtime::clock::now_us;
use updraft_store::events::NewDelivery;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::extract::{NamedPath, Path};
use crate::platform::Platform;
use crate::triggers::parse_spec;
use crate::views::AcceptedView;
use crate::ApiError;

pub fn routes() -> OpenApiRouter<Arc<Platform>> {
    OpenApiRouter::new().routes(routes!(receive_webhook).layer(axum::extract::DefaultBodyLimit::max(MAX_WEBHOOK_BODY)))
}

#[utoipa::path(post, path = "/v1/namespaces/{ns}/webhooks/{name}", tag = "triggers",
    params(NamedPath),
    request_body(content = Vec<u8>, content_type = "application/json", description = "the provider's payload, signed"),
    responses((status = 202, description = "verified and stored before this answer", body = AcceptedView),
        (status = 401, description = "unsigned, wrongly signed or too old"),
        (status = 409, description = "this delivery id was received before"), ApiError),
    security(()))]
async fn receive_webhook(
    State(p): State<Arc<Platform>>,
    Path(NamedPath { ns, name }): Path<NamedPath>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<AcceptedView>), ApiError> {
    let not_found = || ApiError::not_found(format!("webhook {name:?} does not exist in namespace {ns:?}"));
    let record = p.events.trigger(&ns, &name)?.ok_or_else(not_found)?;
    let Some(TriggerSpec::Webhook(spec)) = parse_spec(&record) else {
        return Err(not_found());
    };
    let secret = p.secrets.text(&ns, &spec.secret, "spec.secret").map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("webhook {name:?} cannot check signatures: {e}"),
        )
    })?;
    let now = now_us();
    let verified = verify(spec.provider, secret.as_bytes(), &headers, &body, now / 1_000_000)
        .map_err(|refusal| ApiError::new(StatusCode::UNAUTHORIZED, refusal.to_string()))?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let event = message_event(
        verified.id.clone(),
        &verified.ty,
        event_source(&ns, "webhook", &name),
        None,
        content_type,
        &body,
    )
    .map_err(|e| ApiError::bad_request("body", e.to_string()))?;
    let delivery = NewDelivery {
        trigger: name.clone(),
        event: serde_json::to_string(&event).map_err(ApiError::internal)?,
        target: serde_json::to_string(&spec.sink).map_err(ApiError::internal)?,
        policy: spec.delivery.clone().unwrap_or_default().policy(None).json(),
        dead_letter: false,
        broker: None,
        scheduled_at_us: None,
    };
    let events = p.events.clone();
    let source = name.clone();
    let id = verified.id.clone();
    let namespace = ns.clone();
    let fresh = tokio::task::spawn_blocking(move || events.receive_once(&namespace, &source, &id, &delivery, now))
        .await
        .map_err(ApiError::internal)??;
    if !fresh {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("delivery {:?} was received before; a replay is refused", verified.id),
        ));
    }
    p.signals.queued.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        Json(AcceptedView {
            accepted: 1,
            deliveries: 1,
        }),
    ))
}
