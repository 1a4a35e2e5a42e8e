//! The cron scheduler: fires cron triggers at their scheduled seconds. Each firing
//! moves the trigger's cursor and queues its delivery in one transaction, so a time
//! fires once, restarts included; what was missed while down follows the trigger's
//! catch-up policy.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use cloudevents::{Event, EventBuilder, EventBuilderV10};
use tokio::sync::Notify;
use updraft_store::events::{NewDelivery, TriggerRecord};
use updraft_store::EventStore;

use crate::cron::Schedule;
use crate::trigger::{CronSpec, TriggerSpec, PING_EVENT_TYPE};

/// Longest sleep between passes when no trigger is due sooner.
const IDLE_US: i64 = 60_000_000;

/// A trigger's stored spec, or `None` for one that no longer parses.
pub fn parse_spec(record: &TriggerRecord) -> Option<TriggerSpec> {
    serde_json::from_str(&record.spec).ok()
}

/// What one pass did: how many firings it queued, and when the next one is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub queued: usize,
    pub wake_us: i64,
}

/// Fires every cron trigger due at `now_us`; returns what it queued and when to look
/// again.
pub fn pass(store: &dyn EventStore, now_us: i64) -> Pass {
    let mut result = Pass {
        queued: 0,
        wake_us: now_us + IDLE_US,
    };
    let triggers = store.triggers(None).unwrap_or_default();
    for record in triggers.iter().filter(|t| t.kind == "cron") {
        let Some(TriggerSpec::Cron(spec)) = parse_spec(record) else {
            continue;
        };
        let Ok(schedule) = Schedule::parse("schedule", &spec.schedule, spec.timezone.as_deref()) else {
            continue;
        };
        let cursor = record.cursor_us.unwrap_or(record.created_at_us);
        let due = schedule.due(cursor, now_us, spec.catch_up);
        if due.cursor > cursor && fire(store, record, &spec, due.fire, due.cursor, now_us) {
            result.queued += 1;
        }
        if let Some(next) = due.next {
            result.wake_us = result.wake_us.min(next);
        }
    }
    result
}

/// Runs passes until `stop`: at the next due time, or at once when `changed` says a
/// trigger was created, changed or deleted. `queued` is told of every firing queued.
pub async fn run(
    store: Arc<dyn EventStore>,
    clock: fn() -> i64,
    changed: &Notify,
    queued: &Notify,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        let notified = changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // A pass reads and writes SQLite: off the async workers.
        let reading = store.clone();
        let done = match tokio::task::spawn_blocking(move || pass(&*reading, clock())).await {
            Ok(done) => done,
            Err(e) => return tracing::error!("the cron scheduler stopped: {e}"),
        };
        if done.queued > 0 {
            queued.notify_one();
        }
        let sleep = Duration::from_micros((done.wake_us - clock()).max(0) as u64);
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(sleep) => {}
            _ = notified => {}
        }
    }
}

/// Moves the cursor and queues the firing at `at` (none when catching up skips it);
/// whether a firing was queued.
fn fire(
    store: &dyn EventStore,
    record: &TriggerRecord,
    spec: &CronSpec,
    at: Option<i64>,
    cursor: i64,
    now: i64,
) -> bool {
    let firing = at.and_then(|at| match ping_event(&record.namespace, &record.name, spec, at) {
        Ok(event) => Some(NewDelivery {
            trigger: record.name.clone(),
            event: serde_json::to_string(&event).unwrap_or_default(),
            target: serde_json::to_string(&spec.sink).unwrap_or_default(),
            policy: spec.delivery.clone().unwrap_or_default().policy(None).json(),
            dead_letter: false,
            broker: None,
            scheduled_at_us: Some(at),
        }),
        Err(e) => {
            tracing::warn!(trigger = %record.name, "cannot build the cron event: {e}");
            None
        }
    });
    let queued = firing.is_some();
    match store.fire(&record.namespace, &record.name, cursor, firing, now) {
        Ok(moved) => moved && queued,
        Err(e) => {
            tracing::warn!(trigger = %record.name, "cannot record a firing: {e}");
            false
        }
    }
}

/// A cron firing as Knative's PingSource sends it.
pub fn ping_event(namespace: &str, name: &str, spec: &CronSpec, scheduled_us: i64) -> Result<Event, String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cron::CatchUp;
    use crate::delivery::Destination;
    use cloudevents::AttributesReader;
    use updraft_store::SqliteStore;

    const S: i64 = 1_000_000;
    /// 2026-11-30T12:00:00Z.
    const NOON: i64 = 1_796_040_000 * S;

    fn store_with(schedule: &str, catch_up: CatchUp, created_us: i64) -> (tempfile::TempDir, Arc<SqliteStore>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("db"), created_us).unwrap());
        let spec = TriggerSpec::Cron(CronSpec {
            schedule: schedule.into(),
            timezone: None,
            data: Some("{\"hello\":1}".into()),
            data_base64: None,
            content_type: None,
            sink: Destination {
                reference: None,
                uri: Some("http://127.0.0.1:9/".into()),
            },
            catch_up,
            delivery: None,
        });
        let text = serde_json::to_string(&spec).unwrap();
        store.put_trigger("default", "tick", "cron", &text, created_us).unwrap();
        (dir, store)
    }

    #[test]
    fn a_due_time_fires_once_however_often_the_pass_runs() {
        let (_dir, store) = store_with("*/10 * * * * *", CatchUp::Skip, NOON + 3 * S);
        assert_eq!(
            pass(&*store, NOON + 5 * S),
            Pass {
                queued: 0,
                wake_us: NOON + 10 * S
            }
        );
        let fired = pass(&*store, NOON + 10 * S);
        assert_eq!(
            fired,
            Pass {
                queued: 1,
                wake_us: NOON + 20 * S
            }
        );
        assert_eq!(pass(&*store, NOON + 10 * S).queued, 0, "the same second again");
        assert_eq!(pass(&*store, NOON + 15 * S).queued, 0);
        let due = store.due_deliveries(i64::MAX, 10).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].scheduled_at_us, Some(NOON + 10 * S));
        let event: Event = serde_json::from_str(&due[0].event).unwrap();
        assert_eq!(event.ty(), PING_EVENT_TYPE);
        assert_eq!(
            event.source().to_string(),
            "/apis/v1/namespaces/default/pingsources/tick"
        );
        assert_eq!(event.datacontenttype(), Some("application/json"));
    }

    #[test]
    fn missed_times_follow_the_catch_up_policy() {
        let (_skip_dir, skip) = store_with("*/10 * * * * *", CatchUp::Skip, NOON);
        assert_eq!(
            pass(&*skip, NOON + 65 * S).queued,
            0,
            "skip: nothing for the missed minute"
        );
        let (_once_dir, once) = store_with("*/10 * * * * *", CatchUp::Once, NOON);
        assert_eq!(pass(&*once, NOON + 65 * S).queued, 1, "once: the latest missed time");
        let due = once.due_deliveries(i64::MAX, 10).unwrap();
        assert_eq!(due[0].scheduled_at_us, Some(NOON + 60 * S));
    }
}
