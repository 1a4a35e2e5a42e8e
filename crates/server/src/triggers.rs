//! Triggers at work: the cron scheduler, the broker's ingress, the delivery queue and
//! the NATS sources.
//!
//! Every event is in the store before anything is sent: a cron firing is queued in the
//! transaction that moves its cursor, a broker event before its 202. The dispatcher then
//! delivers what is due, through the gateway for services (so one at zero is woken and
//! the request held), and writes each attempt's outcome. A crash leaves deliveries
//! pending, and they are sent again: at least once, with the same event id.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use cloudevents::{AttributesReader, Event};
use futures_util::StreamExt;
use http::{header, HeaderMap, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use tokio::sync::Semaphore;
use updraft_events::cloudevent::{read_reply, set_extension, to_binary, EventBuilder, EventBuilderV10};
use updraft_events::cron::{rfc3339, Schedule};
use updraft_events::delivery::{retryable, Destination, Policy, Target};
use updraft_events::trigger::{CronSpec, NatsSpec, TriggerSpec, DEFAULT_BROKER, NATS_EVENT_TYPE, PING_EVENT_TYPE};
use updraft_gateway::host_for;
use updraft_runtime::logs::now_us;
use updraft_store::events::{
    Accepted, BrokerRecord, DeliveryRecord, NewDelivery, Outcome, TriggerRecord, Write, DEAD_LETTERED, DELIVERED,
    FAILED, PENDING,
};
use updraft_telemetry::TriggerLabels;

use crate::error::ApiError;
use crate::event_io::{policy_json, RoutingSnapshot};
use crate::platform::Platform;
use crate::views::{DeliveryView, TriggerView};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Deliveries sent at once; more wait in the store.
const MAX_CONCURRENT: usize = 64;
/// Deliveries read from the store per pass.
const BATCH: usize = 256;
/// A subscriber's reply is read up to this size; a larger one is not an event we take.
const MAX_REPLY_BYTES: usize = 1024 * 1024;
/// How much of a failed answer's body a dead letter carries.
const ERROR_DATA_BYTES: usize = 1024;
/// Finished deliveries and accepted events are kept this long for history.
pub const HISTORY_US: i64 = 7 * 24 * 3_600_000_000;

pub fn parse_spec(record: &TriggerRecord) -> Option<TriggerSpec> {
    serde_json::from_str(&record.spec).ok()
}

fn labels(namespace: &str, trigger: &str, kind: &str) -> TriggerLabels {
    TriggerLabels {
        namespace: namespace.to_string(),
        trigger: trigger.to_string(),
        kind: kind.to_string(),
    }
}

impl Platform {
    /// The routing snapshot of the store's current version.
    pub(crate) fn routing_snapshot(&self) -> Result<Arc<RoutingSnapshot>, ApiError> {
        let version = *self.store.subscribe().borrow();
        let mut cached = self.routing_cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(snapshot) = cached.as_ref().filter(|s| s.version == version) {
            return Ok(snapshot.clone());
        }
        let snapshot = Arc::new(RoutingSnapshot {
            version,
            namespaces: self.store.namespaces()?.into_iter().map(|n| n.name).collect(),
            brokers: self
                .events
                .brokers(None)?
                .into_iter()
                .map(|b| {
                    let delivery = b.delivery.as_deref().and_then(|d| serde_json::from_str(d).ok());
                    ((b.namespace, b.name), delivery)
                })
                .collect(),
            triggers: self
                .events
                .triggers(None)?
                .into_iter()
                .map(|t| {
                    let spec = parse_spec(&t);
                    (t.namespace, t.name, t.kind, spec)
                })
                .collect(),
        });
        *cached = Some(snapshot.clone());
        Ok(snapshot)
    }

    /// A broker's delivery spec; the default broker exists in every namespace.
    pub(crate) fn broker(&self, namespace: &str, name: &str) -> Result<Option<BrokerRecord>, ApiError> {
        self.require_namespace(namespace)?;
        let found = self
            .events
            .brokers(Some(namespace))?
            .into_iter()
            .find(|b| b.name == name);
        if found.is_none() && name != DEFAULT_BROKER {
            return Err(ApiError::not_found(format!(
                "broker {name:?} does not exist in namespace {namespace:?}; the default broker is {DEFAULT_BROKER:?}"
            )));
        }
        Ok(found)
    }

    /// Stores events sent to a broker with a delivery for every trigger each matches,
    /// in one transaction, before the caller answers.
    pub(crate) fn accept_events(&self, namespace: &str, broker: &str, events: &[Event]) -> Result<usize, ApiError> {
        let routing = self.routing_snapshot()?;
        let accepted: Vec<Accepted> = events
            .iter()
            .map(|event| routing.route(namespace, broker, event))
            .collect::<Result<_, _>>()?;
        let deliveries = accepted.iter().map(|a| a.deliveries.len()).sum();
        self.event_writer
            .write_blocking(Write::Accept {
                namespace: namespace.to_string(),
                broker: broker.to_string(),
                events: accepted,
            })
            .map_err(ApiError::internal)?;
        self.metrics.events_accepted.inc_by(events.len() as u64);
        self.signals.queued.notify_one();
        Ok(deliveries)
    }

    pub(crate) fn trigger_view(&self, record: &TriggerRecord, counts: &[(String, String, u64)]) -> TriggerView {
        let spec = parse_spec(record);
        let (source, next_fire) = match &spec {
            Some(TriggerSpec::Cron(c)) => {
                let zone = c.timezone.as_deref().unwrap_or("UTC");
                let next = Schedule::parse("schedule", &c.schedule, c.timezone.as_deref())
                    .ok()
                    .and_then(|s| s.next_after(now_us().max(record.cursor_us.unwrap_or(0))));
                (format!("{} ({zone})", c.schedule), next.map(rfc3339))
            }
            Some(TriggerSpec::Event(e)) => {
                let mut filter: Vec<String> = e.filter.iter().map(|(k, v)| format!("{k}={v}")).collect();
                if !e.filters.is_empty() {
                    filter = vec![format!("{} filters", e.filters.len())];
                }
                let filter = if filter.is_empty() {
                    "all events".to_string()
                } else {
                    filter.join(",")
                };
                (format!("broker {}: {filter}", e.broker), None)
            }
            Some(TriggerSpec::Nats(n)) => (
                match &n.stream {
                    Some(stream) => format!("{} (stream {stream})", n.subject),
                    None => n.subject.clone(),
                },
                None,
            ),
            None => (String::new(), None),
        };
        let last_fired = match &spec {
            Some(TriggerSpec::Cron(_)) => record.cursor_us.filter(|&c| c > record.created_at_us).map(rfc3339),
            _ => None,
        };
        TriggerView {
            namespace: record.namespace.clone(),
            name: record.name.clone(),
            kind: record.kind.clone(),
            source,
            target: spec.as_ref().map(|s| s.destination().describe()).unwrap_or_default(),
            next_fire,
            last_fired,
            created_at: rfc3339(record.created_at_us),
            deliveries: counts
                .iter()
                .filter(|(t, _, _)| *t == record.name)
                .map(|(_, status, n)| (status.clone(), *n))
                .collect::<BTreeMap<_, _>>(),
            spec: serde_json::from_str(&record.spec).unwrap_or_default(),
        }
    }
}

pub(crate) fn delivery_view(d: &DeliveryRecord) -> DeliveryView {
    let event: Option<Event> = serde_json::from_str(&d.event).ok();
    let target: Option<Destination> = serde_json::from_str(&d.target).ok();
    let status = if d.status == PENDING && d.attempts > 0 {
        "retrying".to_string()
    } else {
        d.status.clone()
    };
    DeliveryView {
        id: d.id,
        event_id: event.as_ref().map(|e| e.id().to_string()).unwrap_or_default(),
        event_type: event.as_ref().map(|e| e.ty().to_string()).unwrap_or_default(),
        scheduled: d.scheduled_at_us.map(rfc3339),
        status,
        attempts: d.attempts,
        dead_letter: d.dead_letter,
        target: target.map(|t| t.describe()).unwrap_or_default(),
        last_error: d.last_error.clone(),
        created_at: rfc3339(d.created_at_us),
        updated_at: rfc3339(d.updated_at_us),
        delivered_after_ms: d
            .scheduled_at_us
            .filter(|_| d.status == DELIVERED)
            .map(|s| (d.updated_at_us - s) as f64 / 1000.0),
    }
}

/// A cron firing as Knative's PingSource sends it.
fn ping_event(namespace: &str, name: &str, spec: &CronSpec, scheduled_us: i64) -> Result<Event, String> {
    let mut builder = EventBuilderV10::new()
        .id(uuid::Uuid::new_v4().to_string())
        .ty(PING_EVENT_TYPE)
        .source(format!("/apis/v1/namespaces/{namespace}/pingsources/{name}"))
        .time(chrono::DateTime::from_timestamp_micros(scheduled_us).unwrap_or_default());
    let data = match (&spec.data, &spec.data_base64) {
        (Some(text), _) => Some(text.clone().into_bytes()),
        (None, Some(b64)) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| e.to_string())?,
        ),
        (None, None) => None,
    };
    if let Some(data) = data {
        let content_type = spec.content_type.clone().unwrap_or_else(|| {
            if serde_json::from_slice::<serde_json::Value>(&data).is_ok() {
                "application/json".to_string()
            } else {
                "text/plain".to_string()
            }
        });
        builder = builder.data(content_type, data);
    }
    builder.build().map_err(|e| e.to_string())
}

/// Fires cron triggers at their scheduled seconds. Each firing moves the trigger's
/// cursor and queues the delivery in one transaction, so a time fires once, restarts
/// included; what was missed while down follows the trigger's catch-up policy.
pub async fn schedule(platform: Arc<Platform>, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        let changed = platform.signals.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let now = now_us();
        let mut wake = now + 60_000_000;
        let triggers = platform.events.triggers(None).unwrap_or_default();
        for record in triggers.iter().filter(|t| t.kind == "cron") {
            let Some(TriggerSpec::Cron(spec)) = parse_spec(record) else {
                continue;
            };
            let Ok(schedule) = Schedule::parse("schedule", &spec.schedule, spec.timezone.as_deref()) else {
                continue;
            };
            let cursor = record.cursor_us.unwrap_or(record.created_at_us);
            let due = schedule.due(cursor, now, spec.catch_up);
            if due.cursor > cursor {
                fire(&platform, record, &spec, due.fire, due.cursor, now);
            }
            if let Some(next) = due.next {
                wake = wake.min(next);
            }
        }
        let sleep = Duration::from_micros((wake - now_us()).max(0) as u64);
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(sleep) => {}
            _ = changed => {}
        }
    }
}

fn fire(platform: &Platform, record: &TriggerRecord, spec: &CronSpec, at: Option<i64>, cursor: i64, now: i64) {
    let firing = match at {
        None => None,
        Some(at) => match ping_event(&record.namespace, &record.name, spec, at) {
            Ok(event) => Some(NewDelivery {
                trigger: record.name.clone(),
                event: serde_json::to_string(&event).unwrap_or_default(),
                target: serde_json::to_string(&spec.sink).unwrap_or_default(),
                policy: policy_json(&spec.delivery.clone().unwrap_or_default().policy(None)),
                dead_letter: false,
                broker: None,
                scheduled_at_us: Some(at),
            }),
            Err(e) => {
                tracing::warn!(trigger = %record.name, "cannot build the cron event: {e}");
                None
            }
        },
    };
    let queued = firing.is_some();
    match platform
        .events
        .fire(&record.namespace, &record.name, cursor, firing, now)
    {
        Ok(true) if queued => platform.signals.queued.notify_one(),
        Ok(_) => {}
        Err(e) => tracing::warn!(trigger = %record.name, "cannot record a firing: {e}"),
    }
}

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
enum Attempt {
    Answered {
        status: u16,
        headers: HeaderMap,
        body: Bytes,
    },
    Unreachable(String),
}

impl Attempt {
    fn failure(&self) -> Option<(String, bool, Option<u16>, Bytes)> {
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
fn send<'a>(
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

async fn attempt(
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
async fn read_capped(mut body: updraft_gateway::GatewayBody, cap: usize) -> Bytes {
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
fn build_request(
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
    fn target_url(&self, target: &Target) -> String {
        match target {
            Target::Service { namespace, name, path } => format!("{}{path}", self.url(name, namespace)),
            Target::Uri(uri) => uri.clone(),
        }
    }
}

/// Knative's dead-letter extensions: the URL it was going to, the status and the answer.
fn dead_letter_event(mut event: Event, destination_url: String, status: Option<u16>, body: &Bytes) -> Event {
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

async fn deliver(platform: &Platform, delivery: DeliveryRecord) {
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
        let _ = platform.event_writer.write(finish(outcome)).await;
        return;
    };
    let target = match destination.resolve("target", &delivery.namespace) {
        Ok(target) => target,
        Err(e) => {
            let outcome = Outcome::Failed { error: e.to_string() };
            let _ = platform.event_writer.write(finish(outcome)).await;
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
            let attempts = delivery.attempts + 1;
            if can_retry && attempts <= policy.retries {
                Outcome::Retry {
                    next_at_us: now_us() + policy.backoff_us(attempts) as i64,
                    error,
                }
            } else {
                match (&policy.dead_letter, delivery.dead_letter) {
                    (Some(sink), false) => {
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
                                target: serde_json::to_string(sink).unwrap_or_default(),
                                policy: policy_json(&letter_policy),
                                dead_letter: true,
                                broker: None,
                                scheduled_at_us: delivery.scheduled_at_us,
                            },
                        }
                    }
                    _ => Outcome::Failed {
                        error: format!("{error} after {attempts} attempts"),
                    },
                }
            }
        }
    };
    if let Err(e) = platform.event_writer.write(finish(outcome)).await {
        tracing::warn!(delivery = delivery.id, "cannot record a delivery's outcome: {e}");
    }
}

/// Keeps one task per NATS source, restarted when its spec changes.
pub async fn run_sources(platform: Arc<Platform>, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    let mut running: HashMap<(String, String), (String, tokio::task::JoinHandle<()>)> = HashMap::new();
    loop {
        let changed = platform.signals.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let wanted: HashMap<(String, String), (String, NatsSpec)> = platform
            .events
            .triggers(None)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|t| match parse_spec(&t) {
                Some(TriggerSpec::Nats(spec)) => Some(((t.namespace, t.name), (t.spec, spec))),
                _ => None,
            })
            .collect();
        running.retain(|key, (spec, task)| {
            let keep = wanted.get(key).is_some_and(|(s, _)| s == spec) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for (key, (text, spec)) in wanted {
            if running.contains_key(&key) {
                continue;
            }
            let task = tokio::spawn(consume(platform.clone(), key.0.clone(), key.1.clone(), spec));
            running.insert(key, (text, task));
        }
        tokio::select! {
            _ = &mut stop => break,
            _ = changed => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
    for (_, (_, task)) in running {
        task.abort();
    }
}

/// Reads one source until it is stopped, reconnecting with a bounded backoff.
async fn consume(platform: Arc<Platform>, namespace: String, name: String, spec: NatsSpec) {
    let mut backoff = Duration::from_millis(250);
    loop {
        match consume_once(&platform, &namespace, &name, &spec).await {
            Ok(()) => backoff = Duration::from_millis(250),
            Err(e) => {
                tracing::warn!(source = %name, url = %spec.url, "NATS source: {e}; trying again in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

fn nats_event(namespace: &str, name: &str, subject: &str, id: String, payload: &Bytes) -> Result<Event, String> {
    let content_type = if serde_json::from_slice::<serde_json::Value>(payload).is_ok() {
        "application/json"
    } else {
        "application/octet-stream"
    };
    EventBuilderV10::new()
        .id(id)
        .ty(NATS_EVENT_TYPE)
        .source(format!("/apis/v1/namespaces/{namespace}/natssources/{name}"))
        .subject(subject)
        .time(chrono::Utc::now())
        .data(content_type, payload.to_vec())
        .build()
        .map_err(|e| e.to_string())
}

async fn consume_once(platform: &Arc<Platform>, namespace: &str, name: &str, spec: &NatsSpec) -> anyhow::Result<()> {
    use async_nats::jetstream;
    let client = async_nats::connect(&spec.url).await?;
    let policy = spec.delivery.clone().unwrap_or_default().policy(None);
    let Some(stream_name) = &spec.stream else {
        let mut subscription = client.subscribe(spec.subject.clone()).await?;
        while let Some(message) = subscription.next().await {
            let id = uuid::Uuid::new_v4().to_string();
            let event =
                nats_event(namespace, name, &message.subject, id, &message.payload).map_err(anyhow::Error::msg)?;
            deliver_now(platform, namespace, name, &spec.sink, &policy, event).await;
        }
        return Ok(());
    };
    let context = jetstream::new(client);
    let stream = context
        .get_or_create_stream(jetstream::stream::Config {
            name: stream_name.clone(),
            subjects: vec![spec.subject.clone()],
            ..Default::default()
        })
        .await?;
    let durable = spec
        .durable
        .clone()
        .unwrap_or_else(|| format!("updraft-{namespace}-{name}"));
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            &durable,
            jetstream::consumer::pull::Config {
                durable_name: Some(durable.clone()),
                filter_subject: spec.subject.clone(),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_micros(policy.timeout_us) * (policy.retries + 2),
                ..Default::default()
            },
        )
        .await?;
    let mut messages = consumer.messages().await?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| anyhow::anyhow!("{e}"))?;
        // The stream sequence names the message for good, so a redelivery after a
        // crash carries the same event id and the subscriber can drop the duplicate.
        let id = match message.info() {
            Ok(info) => format!("{}-{}", info.stream, info.stream_sequence),
            Err(_) => uuid::Uuid::new_v4().to_string(),
        };
        let event = nats_event(namespace, name, &message.subject, id, &message.payload).map_err(anyhow::Error::msg)?;
        if deliver_now(platform, namespace, name, &spec.sink, &policy, event).await {
            message.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        } else {
            let wait = Duration::from_micros(policy.backoff_us(1));
            message
                .ack_with(jetstream::AckKind::Nak(Some(wait)))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    Ok(())
}

/// Delivers one queue message with the source's retries, and its dead letter when they
/// run out. True when the message is dealt with and can be acknowledged.
async fn deliver_now(
    platform: &Platform,
    namespace: &str,
    name: &str,
    sink: &Destination,
    policy: &Policy,
    event: Event,
) -> bool {
    let labels = labels(namespace, name, "nats");
    let Ok(target) = sink.resolve("sink", namespace) else {
        return false;
    };
    let timeout = Duration::from_micros(policy.timeout_us);
    let mut attempts = 0;
    let (error, status, body) = loop {
        let attempt = send(platform, namespace, &target, event.clone(), timeout).await;
        attempts += 1;
        match attempt.failure() {
            None => {
                platform.metrics.trigger_deliveries.get_or_create(&labels).inc();
                record(platform, namespace, name, sink, &event, DELIVERED, attempts, None);
                return true;
            }
            Some((error, can_retry, status, body)) => {
                platform.metrics.trigger_failures.get_or_create(&labels).inc();
                if !can_retry || attempts > policy.retries {
                    break (error, status, body);
                }
                tokio::time::sleep(Duration::from_micros(policy.backoff_us(attempts))).await;
            }
        }
    };
    let Some(dead_letter) = &policy.dead_letter else {
        record(platform, namespace, name, sink, &event, FAILED, attempts, Some(&error));
        return false;
    };
    let letter = dead_letter_event(event.clone(), platform.target_url(&target), status, &body);
    let Ok(letter_target) = dead_letter.resolve("deadLetterSink", namespace) else {
        return false;
    };
    match send(platform, namespace, &letter_target, letter, timeout)
        .await
        .failure()
    {
        None => {
            record(
                platform,
                namespace,
                name,
                sink,
                &event,
                DEAD_LETTERED,
                attempts,
                Some(&error),
            );
            true
        }
        Some(_) => false,
    }
}

/// Keeps a queue message's delivery in the trigger's history.
#[allow(clippy::too_many_arguments)]
fn record(
    platform: &Platform,
    namespace: &str,
    name: &str,
    sink: &Destination,
    event: &Event,
    status: &str,
    attempts: u32,
    error: Option<&str>,
) {
    let delivery = NewDelivery {
        trigger: name.to_string(),
        event: serde_json::to_string(event).unwrap_or_default(),
        target: serde_json::to_string(sink).unwrap_or_default(),
        policy: String::new(),
        dead_letter: false,
        broker: None,
        scheduled_at_us: None,
    };
    if let Err(e) = platform
        .events
        .record(namespace, &delivery, status, attempts, error, now_us())
    {
        tracing::warn!(source = %name, "cannot record a delivery: {e}");
    }
}
