//! Triggers at work: the broker's ingress and what the API shows of triggers. The cron
//! scheduler, the dispatcher and the NATS sources are `updraft_events`' loops; the
//! server gives them its `delivery::GatewayTransport`.
//!
//! Every event is in the store before anything is sent: a cron firing is queued in the
//! transaction that moves its cursor, a broker event before its 202. The dispatcher then
//! delivers what is due, through the gateway for services (so one at zero is woken and
//! the request held), and writes each attempt's outcome. A crash leaves deliveries
//! pending, and they are sent again: at least once, with the same event id.

use std::collections::BTreeMap;
use std::sync::Arc;

use cloudevents::{AttributesReader, Event};
use updraft_events::cron::{rfc3339, Schedule};
use updraft_events::delivery::Destination;
use updraft_events::trigger::TriggerSpec;
use updraft_runtime::clock::now_us;
use updraft_store::events::{Accepted, DeliveryRecord, TriggerRecord, Write, DELIVERED, PENDING};
use updraft_telemetry::TriggerLabels;

use crate::error::ApiError;
use crate::platform::Platform;
use crate::reconcile::Reconciler;
use crate::views::{DeliveryView, TriggerView};
use updraft_events::dispatch::Signals;
use updraft_store::{Change, Kind, Snapshot, WatchFilter};

/// Finished deliveries and accepted events are kept this long for history.
pub const HISTORY_US: i64 = 7 * 24 * 3_600_000_000;

pub use updraft_events::scheduler::parse_spec;

pub(crate) fn labels(namespace: &str, trigger: &str, kind: &str) -> TriggerLabels {
    TriggerLabels {
        namespace: namespace.to_string(),
        trigger: trigger.to_string(),
        kind: kind.to_string(),
    }
}

impl Platform {
    /// Stores events sent to a broker with a delivery for every trigger each matches,
    /// in one transaction, before the caller answers.
    pub(crate) async fn accept_events(
        &self,
        namespace: &str,
        broker: &str,
        events: &[Event],
    ) -> Result<usize, ApiError> {
        let routing = self.routing.current().await?;
        if let Some(&per_minute) = routing.fires_per_minute.get(namespace) {
            self.fire_quotas.take(namespace, per_minute, events.len())?;
        }
        let accepted: Vec<Accepted> = events
            .iter()
            .map(|event| routing.route(namespace, broker, event))
            .collect::<Result<_, _>>()?;
        let deliveries = accepted.iter().map(|a| a.deliveries.len()).sum();
        self.event_queue
            .submit(Write::Accept {
                namespace: namespace.to_string(),
                broker: broker.to_string(),
                events: accepted,
            })
            .stored()
            .await
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
            Some(TriggerSpec::RabbitMq(r)) => (format!("queue {}", r.queue), None),
            Some(TriggerSpec::RedisStream(r)) => (format!("stream {}", r.stream), None),
            Some(TriggerSpec::Mqtt(m)) => (m.topics.join(","), None),
            Some(TriggerSpec::Webhook(w)) => (
                format!(
                    "POST {}://{}/v1/namespaces/{}/webhooks/{} ({})",
                    self.config.scheme(),
                    self.config.api_addr,
                    record.namespace,
                    record.name,
                    w.provider.as_str()
                ),
                None,
            ),
            Some(TriggerSpec::Platform(p)) => (
                match p.types.is_empty() {
                    true => "platform events: all".to_string(),
                    false => format!("platform events: {}", p.types.join(",")),
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

/// Follows triggers in the store and wakes the cron scheduler and the sources on
/// every change, so they reload: write sites only write.
pub struct TriggerFollower(pub Arc<Signals>);

#[async_trait::async_trait]
impl Reconciler for TriggerFollower {
    fn name(&self) -> &'static str {
        "trigger follower"
    }

    fn filter(&self) -> WatchFilter {
        WatchFilter::kind(Kind::Trigger)
    }

    async fn on_write(&mut self, _changes: Vec<Change>, _now_us: i64) {
        self.0.triggers_changed();
    }

    async fn on_list(&mut self, _snapshot: &Snapshot, _now_us: i64) {
        self.0.triggers_changed();
    }
}

/// Runs the cron scheduler (`updraft_events::scheduler`) until `stop`.
pub async fn schedule(platform: Arc<Platform>, stop: impl std::future::Future<Output = ()>) {
    let signals = &platform.signals;
    updraft_events::scheduler::run(platform.events.clone(), now_us, &signals.changed, &signals.queued, stop).await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use updraft_store::{EventStore, SqliteStore, Store};

    use super::*;
    use crate::reconcile::follow;

    #[tokio::test]
    async fn a_trigger_written_anywhere_wakes_the_loops_and_other_writes_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = Arc::new(SqliteStore::open(&dir.path().join("db"), 1).unwrap());
        let store: Arc<dyn Store> = sqlite.clone();
        let signals = Arc::new(Signals::default());
        let listed = store.snapshot().await.unwrap().revision;
        let (applied_tx, mut applied) = tokio::sync::watch::channel(0);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(follow(
            TriggerFollower(signals.clone()),
            store.clone(),
            listed,
            || 1,
            applied_tx,
            async {
                let _ = stop_rx.await;
            },
        ));
        let woken = |signals: Arc<Signals>| async move {
            tokio::time::timeout(Duration::from_millis(300), signals.changed.notified())
                .await
                .is_ok()
        };

        let waiting = tokio::spawn(woken(signals.clone()));
        tokio::task::yield_now().await;
        sqlite.put_trigger("default", "tick", "cron", "{}", 1).unwrap();
        assert!(
            waiting.await.unwrap(),
            "a new trigger wakes the scheduler and the sources"
        );

        let waiting = tokio::spawn(woken(signals.clone()));
        tokio::task::yield_now().await;
        store.create_namespace("team", 2).await.unwrap();
        let written = store.current_revision().await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), applied.wait_for(|at| *at >= written))
            .await
            .expect("the follower read past the namespace")
            .unwrap();
        assert!(!waiting.await.unwrap(), "a namespace is no trigger");

        let waiting = tokio::spawn(woken(signals.clone()));
        tokio::task::yield_now().await;
        sqlite.delete_trigger("default", "tick").unwrap();
        assert!(waiting.await.unwrap(), "a deleted trigger wakes them too");
        stop_tx.send(()).unwrap();
        running.await.unwrap();
    }
}
