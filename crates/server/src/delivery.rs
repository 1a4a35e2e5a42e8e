//! The delivery queue at work: what is due is sent (services through the gateway,
//! sinks directly), each outcome recorded with the reply or dead letter it starts.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use cloudevents::Event;
use http::{header, HeaderMap, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use tokio::sync::Semaphore;
use updraft_events::cloudevent::{read_reply, set_extension, to_binary};
use updraft_events::delivery::{after_failure, retryable, AfterFailure, Destination, Policy, Target};
use updraft_gateway::host_for;
use updraft_runtime::clock::now_us;
use updraft_store::events::{DeliveryRecord, NewDelivery, Outcome, Write};

use crate::platform::Platform;
use crate::triggers::labels;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Deliveries sent at once; more wait in the store.
const MAX_CONCURRENT: usize = 64;
/// Deliveries read from the store per pass.
const BATCH: usize = 256;
/// A subscriber's reply is read up to this size; a larger one is not an event we take.
const MAX_REPLY_BYTES: usize = 1024 * 1024;
/// How much of a failed answer's body a dead letter carries.
const ERROR_DATA_BYTES: usize = 1024;
/// Sends what is due, at most [`MAX_CONCURRENT`] at once, and records each outcome.
pub async fn dispatch(platform: Arc<Platform>, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    let in_flight: Arc<Mutex<HashSet<i64>>> = Arc::default();
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT));
    loop {
        let queued = platform.signals.queued.notified();
        tokio::pin!(queued);
        queued.as_mut().enable();
        let now = now_us();
        let due = platform.events.due_deliveries(now, BATCH).unwrap_or_default();
        let mut waiting = false;
        for delivery in due {
            if !in_flight.lock().unwrap_or_else(|p| p.into_inner()).insert(delivery.id) {
                continue;
            }
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&delivery.id);
                waiting = true;
                break;
            };
            let (platform, in_flight) = (platform.clone(), in_flight.clone());
            tokio::spawn(async move {
                let id = delivery.id;
                deliver(&platform, delivery).await;
                in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                drop(slot);
                platform.signals.queued.notify_one();
            });
        }
        // Due deliveries already in flight wake this loop when they finish; otherwise
        // sleep until the next retry falls due.
        let next = platform.events.next_due_us().ok().flatten();
        let sleep = match next {
            _ if waiting => Duration::from_millis(10),
            Some(at) if at > now => Duration::from_micros((at - now) as u64).min(Duration::from_secs(5)),
            _ => Duration::from_secs(5),
        };
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(sleep) => {}
            _ = queued => {}
        }
    }
}

/// What one attempt came to.
pub(crate) enum Attempt {
    Answered {
        status: u16,
        headers: HeaderMap,
        body: Bytes,
    },
    Unreachable(String),
}

impl Attempt {
    pub(crate) fn failure(&self) -> Option<(String, bool, Option<u16>, Bytes)> {
        match self {
            Attempt::Answered { status, .. } if (200..300).contains(status) => None,
            Attempt::Answered { status, body, .. } => Some((
                format!("answered {status}"),
                retryable(*status),
                Some(*status),
                body.clone(),
            )),
            Attempt::Unreachable(e) => Some((e.clone(), true, None, Bytes::new())),
        }
    }
}

/// Boxed so the compiler proves it `Send` here, once, rather than at each spawn.
pub(crate) fn send<'a>(
    platform: &'a Platform,
    namespace: &str,
    target: &Target,
    event: Event,
    timeout: Duration,
) -> Pin<Box<dyn Future<Output = Attempt> + Send + 'a>> {
    let request = build_request(platform, namespace, target, event);
    let through_gateway = matches!(target, Target::Service { .. });
    Box::pin(async move {
        match request {
            Ok(request) => attempt(platform, request, through_gateway, timeout).await,
            Err(e) => Attempt::Unreachable(e),
        }
    })
}

pub(crate) async fn attempt(
    platform: &Platform,
    request: Request<Full<Bytes>>,
    through_gateway: bool,
    timeout: Duration,
) -> Attempt {
    let answer = async move {
        let (parts, body) = if through_gateway {
            platform.gateway.handle(request, None).await.into_parts()
        } else {
            let response = platform
                .sink_client
                .request(request)
                .await
                .map_err(|e| format!("cannot reach the sink: {e}"))?;
            let (parts, body) = response.into_parts();
            (
                parts,
                updraft_gateway::GatewayBody::new(body.map_err(|e| -> BoxError { Box::new(e) })),
            )
        };
        let body = read_capped(body, MAX_REPLY_BYTES).await;
        Ok::<_, String>((parts.status.as_u16(), parts.headers, body))
    };
    match tokio::time::timeout(timeout, answer).await {
        Err(_) => Attempt::Unreachable(format!("no answer within {timeout:?}")),
        Ok(Err(e)) => Attempt::Unreachable(e),
        Ok(Ok((status, headers, body))) => Attempt::Answered { status, headers, body },
    }
}

/// The answer's body up to `cap` bytes: more is not a reply worth keeping.
pub(crate) async fn read_capped(mut body: updraft_gateway::GatewayBody, cap: usize) -> Bytes {
    let mut out = Vec::new();
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > cap {
                break;
            }
            out.extend_from_slice(&data);
        }
    }
    Bytes::from(out)
}

/// The event as a binary-mode POST: to the service's host through the gateway, or to
/// the sink's URI.
pub(crate) fn build_request(
    platform: &Platform,
    namespace: &str,
    target: &Target,
    event: Event,
) -> Result<Request<Full<Bytes>>, String> {
    let (headers, body) = to_binary(event).map_err(|e| format!("cannot encode the event: {e}"))?;
    let mut request = Request::builder().method(Method::POST);
    match target {
        Target::Service {
            namespace: ns,
            name,
            path,
        } => {
            let ns = if ns.is_empty() { namespace } else { ns.as_str() };
            let host = host_for(name, ns, &platform.config.domain);
            request = request
                .uri(path.as_str())
                .header(header::HOST, HeaderValue::from_str(&host).map_err(|e| e.to_string())?);
        }
        Target::Uri(uri) => request = request.uri(uri.as_str()),
    }
    for (name, value) in &headers {
        request = request.header(name, value);
    }
    request.body(Full::new(body)).map_err(|e| e.to_string())
}

impl Platform {
    /// The URL a resolved destination is reached at: a service's through the gateway.
    pub(crate) fn target_url(&self, target: &Target) -> String {
        match target {
            Target::Service { namespace, name, path } => format!("{}{path}", self.url(name, namespace)),
            Target::Uri(uri) => uri.clone(),
        }
    }
}

/// Knative's dead-letter extensions: the URL it was going to, the status and the answer.
pub(crate) fn dead_letter_event(mut event: Event, destination_url: String, status: Option<u16>, body: &Bytes) -> Event {
    set_extension(&mut event, "knativeerrordest", destination_url);
    if let Some(status) = status {
        set_extension(&mut event, "knativeerrorcode", status.to_string());
    }
    if !body.is_empty() {
        let data = &body[..body.len().min(ERROR_DATA_BYTES)];
        set_extension(
            &mut event,
            "knativeerrordata",
            base64::engine::general_purpose::STANDARD.encode(data),
        );
    }
    event
}

pub(crate) async fn deliver(platform: &Platform, delivery: DeliveryRecord) {
    let routing = platform.routing_snapshot().ok();
    let kind = routing
        .as_ref()
        .and_then(|r| r.kind_of(&delivery.namespace, &delivery.trigger))
        .unwrap_or("event")
        .to_string();
    let labels = labels(&delivery.namespace, &delivery.trigger, &kind);
    let parsed = (
        serde_json::from_str::<Event>(&delivery.event),
        serde_json::from_str::<Destination>(&delivery.target),
        serde_json::from_str::<Policy>(&delivery.policy),
    );
    let finish = |outcome| Write::Finish {
        id: delivery.id,
        namespace: delivery.namespace.clone(),
        outcome,
    };
    let (Ok(event), Ok(destination), Ok(policy)) = parsed else {
        let outcome = Outcome::Failed {
            error: "the stored delivery cannot be read".to_string(),
        };
        let _ = platform.event_queue.submit(finish(outcome)).stored().await;
        return;
    };
    let target = match destination.resolve("target", &delivery.namespace) {
        Ok(target) => target,
        Err(e) => {
            let outcome = Outcome::Failed { error: e.to_string() };
            let _ = platform.event_queue.submit(finish(outcome)).stored().await;
            return;
        }
    };
    let timeout = Duration::from_micros(policy.timeout_us);
    let attempt = send(platform, &delivery.namespace, &target, event.clone(), timeout).await;
    let outcome = match attempt.failure() {
        None => {
            platform.metrics.trigger_deliveries.get_or_create(&labels).inc();
            let reply = match (&attempt, &delivery.broker) {
                (Attempt::Answered { headers, body, .. }, Some(broker)) => {
                    read_reply(headers, body.clone()).and_then(|reply| {
                        let routing = platform.routing_snapshot().ok()?;
                        routing.route(&delivery.namespace, broker, &reply).ok()
                    })
                }
                _ => None,
            };
            Outcome::Delivered { reply }
        }
        Some((error, can_retry, status, body)) => {
            platform.metrics.trigger_failures.get_or_create(&labels).inc();
            match after_failure(&policy, delivery.attempts, can_retry, delivery.dead_letter, now_us()) {
                AfterFailure::Retry { next_at_us } => Outcome::Retry { next_at_us, error },
                AfterFailure::DeadLetter { sink, attempts } => {
                    let url = platform.target_url(&target);
                    let letter = dead_letter_event(event, url, status, &body);
                    let letter_policy = Policy {
                        dead_letter: None,
                        ..policy.clone()
                    };
                    Outcome::DeadLettered {
                        error: format!("{error} after {attempts} attempts"),
                        dead_letter: NewDelivery {
                            trigger: delivery.trigger.clone(),
                            event: serde_json::to_string(&letter).unwrap_or_default(),
                            target: serde_json::to_string(&sink).unwrap_or_default(),
                            policy: letter_policy.json(),
                            dead_letter: true,
                            broker: None,
                            scheduled_at_us: delivery.scheduled_at_us,
                        },
                    }
                }
                AfterFailure::Fail { attempts } => Outcome::Failed {
                    error: format!("{error} after {attempts} attempts"),
                },
            }
        }
    };
    if let Err(e) = platform.event_queue.submit(finish(outcome)).stored().await {
        tracing::warn!(delivery = delivery.id, "cannot record a delivery's outcome: {e}");
    }
}
