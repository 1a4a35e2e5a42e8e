//! The delivery queue at work: what is due is sent through the platform's
//! [`Transport`], and each outcome is recorded with the reply or dead letter it
//! starts. The server implements the transport (services through its gateway, sinks
//! directly), as it implements the gateway's `Poke`.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use cloudevents::Event;
use http::HeaderMap;
use tokio::sync::{Notify, Semaphore};
use updraft_store::events::{DeliveryRecord, NewDelivery, Outcome, Write};
use updraft_store::EventStore;

use crate::cloudevent::{read_reply, set_extension};
use crate::delivery::{after_failure, retryable, AfterFailure, Destination, Policy, Target};
use crate::queue::DeliveryQueue;
use crate::routing::RoutingCache;

/// Deliveries sent at once; more wait in the store.
const MAX_CONCURRENT: usize = 64;
/// Deliveries read from the store per pass.
const BATCH: usize = 256;
/// How much of a failed answer's body a dead letter carries.
const ERROR_DATA_BYTES: usize = 1024;

/// What one attempt came to.
pub enum Attempt {
    Answered {
        status: u16,
        headers: HeaderMap,
        body: Bytes,
    },
    Unreachable(String),
}

/// Why an attempt failed: the error, whether to try again, and the answer if any.
pub struct Failure {
    pub error: String,
    pub can_retry: bool,
    pub status: Option<u16>,
    pub body: Bytes,
}

impl Attempt {
    pub fn failure(&self) -> Option<Failure> {
        match self {
            Attempt::Answered { status, .. } if (200..300).contains(status) => None,
            Attempt::Answered { status, body, .. } => Some(Failure {
                error: format!("answered {status}"),
                can_retry: retryable(*status),
                status: Some(*status),
                body: body.clone(),
            }),
            Attempt::Unreachable(e) => Some(Failure {
                error: e.clone(),
                can_retry: true,
                status: None,
                body: Bytes::new(),
            }),
        }
    }
}

pub type Sending<'a> = Pin<Box<dyn Future<Output = Attempt> + Send + 'a>>;

/// How an event reaches its target, and what is counted of it.
pub trait Transport: Send + Sync + 'static {
    /// Sends `event` as a binary-mode POST to `target` (a service's namespace defaults
    /// to `namespace`) and reads the answer, giving up after `timeout`.
    fn send<'a>(&'a self, namespace: &'a str, target: &'a Target, event: Event, timeout: Duration) -> Sending<'a>;
    /// The URL `target` is reached at, for a dead letter's `knativeerrordest`.
    fn url(&self, target: &Target) -> String;
    /// Counts one attempt of a trigger's delivery.
    fn counted(&self, namespace: &str, trigger: &str, kind: &str, delivered: bool);
}

/// Knative's dead-letter extensions: the URL it was going to, the status and the answer.
pub fn dead_letter_event(mut event: Event, destination_url: String, status: Option<u16>, body: &Bytes) -> Event {
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

/// Wake-ups for the trigger loops.
#[derive(Default)]
pub struct Signals {
    /// Something was queued or finished: the dispatcher looks again.
    pub queued: Notify,
    /// A trigger was created, changed or deleted: the scheduler and sources reload.
    pub changed: Notify,
}

impl Signals {
    pub fn triggers_changed(&self) {
        self.changed.notify_waiters();
        self.queued.notify_one();
    }
}

/// Which deliveries are taken, so one is never sent twice at once. A delivery whose
/// outcome is stored stays taken until the next pass begins: a pass whose read of
/// the due deliveries began before that outcome was stored still lists it as due.
#[derive(Default)]
pub struct InFlight {
    taken: HashSet<i64>,
    finished: Vec<i64>,
}

impl InFlight {
    /// Before a pass reads what is due: what finished before now is free again.
    pub fn begin_pass(&mut self) {
        for id in self.finished.drain(..) {
            self.taken.remove(&id);
        }
    }

    /// Takes a delivery the pass read as due; false if it is taken.
    pub fn take(&mut self, id: i64) -> bool {
        self.taken.insert(id)
    }

    /// Gives back a delivery that was taken but not sent.
    pub fn give_back(&mut self, id: i64) {
        self.taken.remove(&id);
    }

    /// A sent delivery's outcome is stored.
    pub fn finished(&mut self, id: i64) {
        self.finished.push(id);
    }
}

/// Sends what is due, at most [`MAX_CONCURRENT`] at once, and records each outcome.
pub struct Dispatcher {
    pub store: Arc<dyn EventStore>,
    pub queue: Arc<dyn DeliveryQueue>,
    pub routing: Arc<RoutingCache>,
    pub transport: Arc<dyn Transport>,
    pub signals: Arc<Signals>,
    /// µs since the epoch.
    pub clock: fn() -> i64,
}

impl Dispatcher {
    pub async fn run(self: Arc<Self>, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let in_flight: Arc<Mutex<InFlight>> = Arc::default();
        let slots = Arc::new(Semaphore::new(MAX_CONCURRENT));
        loop {
            let queued = self.signals.queued.notified();
            tokio::pin!(queued);
            queued.as_mut().enable();
            let now = (self.clock)();
            in_flight.lock().unwrap_or_else(|p| p.into_inner()).begin_pass();
            let store = self.store.clone();
            let due = tokio::task::spawn_blocking(move || {
                let due = store.due_deliveries(now, BATCH).unwrap_or_default();
                (due, store.next_due_us().ok().flatten())
            })
            .await;
            let Ok((due, next)) = due else {
                return;
            };
            let mut waiting = false;
            for delivery in due {
                if !in_flight.lock().unwrap_or_else(|p| p.into_inner()).take(delivery.id) {
                    continue;
                }
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    in_flight
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .give_back(delivery.id);
                    waiting = true;
                    break;
                };
                let (dispatcher, in_flight) = (self.clone(), in_flight.clone());
                tokio::spawn(async move {
                    let id = delivery.id;
                    dispatcher.deliver(delivery).await;
                    in_flight.lock().unwrap_or_else(|p| p.into_inner()).finished(id);
                    drop(slot);
                    dispatcher.signals.queued.notify_one();
                });
            }
            // Due deliveries already in flight wake this loop when they finish; otherwise
            // sleep until the next retry falls due.
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

    /// Sends one delivery and stores what came of it.
    pub async fn deliver(&self, delivery: DeliveryRecord) {
        let finish = |outcome| Write::Finish {
            id: delivery.id,
            namespace: delivery.namespace.clone(),
            outcome,
        };
        let outcome = self.attempt(&delivery).await;
        if let Err(e) = self.queue.submit(finish(outcome)).stored().await {
            tracing::warn!(delivery = delivery.id, "cannot record a delivery's outcome: {e}");
        }
    }

    async fn attempt(&self, delivery: &DeliveryRecord) -> Outcome {
        let routing = self.routing.current().await.ok();
        let kind = routing
            .as_ref()
            .and_then(|r| r.kind_of(&delivery.namespace, &delivery.trigger))
            .unwrap_or("event")
            .to_string();
        let parsed = (
            serde_json::from_str::<Event>(&delivery.event),
            serde_json::from_str::<Destination>(&delivery.target),
            serde_json::from_str::<Policy>(&delivery.policy),
        );
        let (Ok(event), Ok(destination), Ok(policy)) = parsed else {
            return Outcome::Failed {
                error: "the stored delivery cannot be read".to_string(),
            };
        };
        let target = match destination.resolve("target", &delivery.namespace) {
            Ok(target) => target,
            Err(e) => return Outcome::Failed { error: e.to_string() },
        };
        let timeout = Duration::from_micros(policy.timeout_us);
        let attempt = self
            .transport
            .send(&delivery.namespace, &target, event.clone(), timeout)
            .await;
        let Some(failure) = attempt.failure() else {
            self.transport
                .counted(&delivery.namespace, &delivery.trigger, &kind, true);
            let reply = match (&attempt, &delivery.broker) {
                (Attempt::Answered { headers, body, .. }, Some(broker)) => match read_reply(headers, body.clone()) {
                    // Routed as the broker is now: its triggers may have changed meanwhile.
                    Some(reply) => match self.routing.current().await {
                        Ok(routing) => routing.route(&delivery.namespace, broker, &reply).ok(),
                        Err(_) => None,
                    },
                    None => None,
                },
                _ => None,
            };
            return Outcome::Delivered { reply };
        };
        self.transport
            .counted(&delivery.namespace, &delivery.trigger, &kind, false);
        let Failure {
            error,
            can_retry,
            status,
            body,
        } = failure;
        match after_failure(
            &policy,
            delivery.attempts,
            can_retry,
            delivery.dead_letter,
            (self.clock)(),
        ) {
            AfterFailure::Retry { next_at_us } => Outcome::Retry { next_at_us, error },
            AfterFailure::DeadLetter { sink, attempts } => {
                let letter = dead_letter_event(event, self.transport.url(&target), status, &body);
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
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use cloudevents::{AttributesReader, EventBuilder, EventBuilderV10};
    use updraft_store::events::{Accepted, DEAD_LETTERED, DELIVERED, PENDING};
    use updraft_store::SqliteStore;

    use super::*;
    use crate::cloudevent::to_binary;
    use crate::delivery::{BackoffPolicy, DeliverySpec};
    use crate::queue::GroupCommit;

    const NOW: i64 = 1_000_000_000;

    fn clock() -> i64 {
        NOW
    }

    /// Answers each send with the next of its programmed attempts and keeps what it sent.
    #[derive(Default)]
    struct FakeTransport {
        answers: Mutex<Vec<Attempt>>,
        sent: Mutex<Vec<(Target, Event)>>,
        counted: Mutex<Vec<(String, bool)>>,
    }

    impl Transport for FakeTransport {
        fn send<'a>(&'a self, _: &'a str, target: &'a Target, event: Event, _: Duration) -> Sending<'a> {
            self.sent.lock().unwrap().push((target.clone(), event));
            let answer = self.answers.lock().unwrap().remove(0);
            Box::pin(async move { answer })
        }

        fn url(&self, target: &Target) -> String {
            match target {
                Target::Service { name, path, .. } => format!("http://{name}.test{path}"),
                Target::Uri(uri) => uri.clone(),
                Target::Broker { name, .. } => format!("broker:{name}"),
            }
        }

        fn counted(&self, _: &str, trigger: &str, _: &str, delivered: bool) {
            self.counted.lock().unwrap().push((trigger.to_string(), delivered));
        }
    }

    fn answered(status: u16, reply: Option<Event>) -> Attempt {
        let (headers, body) = match reply {
            Some(event) => to_binary(event).unwrap(),
            None => (HeaderMap::new(), Bytes::from_static(b"no")),
        };
        Attempt::Answered { status, headers, body }
    }

    fn event(id: &str, ty: &str) -> Event {
        EventBuilderV10::new().id(id).ty(ty).source("/test").build().unwrap()
    }

    struct Setup {
        _dir: tempfile::TempDir,
        store: Arc<SqliteStore>,
        transport: Arc<FakeTransport>,
        dispatcher: Dispatcher,
    }

    fn setup(answers: Vec<Attempt>) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("db"), 1).unwrap());
        let transport = Arc::new(FakeTransport {
            answers: Mutex::new(answers),
            ..Default::default()
        });
        let dispatcher = Dispatcher {
            store: store.clone(),
            queue: Arc::new(GroupCommit::start(store.clone(), clock).unwrap()),
            routing: Arc::new(RoutingCache::new(store.clone(), store.clone())),
            transport: transport.clone(),
            signals: Arc::default(),
            clock,
        };
        Setup {
            _dir: dir,
            store,
            transport,
            dispatcher,
        }
    }

    /// Queues `event` for trigger `t` of the default broker under `spec`.
    async fn queue(setup: &Setup, trigger: &str, event: &Event, spec: &DeliverySpec) -> DeliveryRecord {
        let delivery = NewDelivery {
            trigger: trigger.into(),
            event: serde_json::to_string(event).unwrap(),
            target: serde_json::to_string(&Destination::service("web", None)).unwrap(),
            policy: spec.policy(None).json(),
            dead_letter: false,
            broker: Some("default".into()),
            scheduled_at_us: None,
        };
        let accepted = Accepted {
            event: delivery.event.clone(),
            deliveries: vec![delivery],
        };
        setup
            .dispatcher
            .queue
            .submit(Write::Accept {
                namespace: "default".into(),
                broker: "default".into(),
                events: vec![accepted],
            })
            .stored()
            .await
            .unwrap();
        setup.store.due_deliveries(i64::MAX, 10).unwrap().pop().unwrap()
    }

    fn history(setup: &Setup, trigger: &str) -> Vec<DeliveryRecord> {
        setup.store.deliveries("default", trigger, 10).unwrap()
    }

    #[test]
    fn a_pass_that_read_before_an_outcome_was_stored_does_not_send_it_again() {
        let mut in_flight = InFlight::default();
        in_flight.begin_pass();
        assert!(in_flight.take(1));
        assert!(!in_flight.take(1), "taken while it is being sent");
        // The next pass reads what is due; delivery 1's outcome is stored meanwhile,
        // so the stale read still lists it.
        in_flight.begin_pass();
        in_flight.finished(1);
        assert!(
            !in_flight.take(1),
            "a read from before its outcome must not send it again"
        );
        // A pass that begins after the outcome was stored reads it no more, or reads
        // it due again (a retry) and may send it.
        in_flight.begin_pass();
        assert!(in_flight.take(1));
        assert!(in_flight.take(2));
        in_flight.give_back(2);
        assert!(in_flight.take(2), "a delivery given back unsent is free at once");
    }

    #[tokio::test]
    async fn an_answered_delivery_is_recorded_and_counted() {
        let setup = setup(vec![answered(200, None)]);
        let pending = queue(&setup, "t", &event("e1", "order"), &DeliverySpec::default()).await;
        setup.dispatcher.deliver(pending).await;
        let record = &history(&setup, "t")[0];
        assert_eq!(record.status, DELIVERED);
        let sent = setup.transport.sent.lock().unwrap();
        assert_eq!(sent[0].1.id(), "e1");
        assert!(matches!(&sent[0].0, Target::Service { name, .. } if name == "web"));
        assert_eq!(*setup.transport.counted.lock().unwrap(), [("t".to_string(), true)]);
    }

    #[tokio::test]
    async fn a_failure_is_retried_after_the_backoff_then_dead_lettered() {
        let setup = setup(vec![answered(503, None), answered(500, None)]);
        let spec = DeliverySpec {
            retry: Some(1),
            backoff_policy: Some(BackoffPolicy::Linear),
            backoff_delay: Some("PT2S".into()),
            dead_letter_sink: Some(Destination {
                reference: None,
                uri: Some("http://sink.test/dead".into()),
            }),
            timeout: None,
        };
        let pending = queue(&setup, "t", &event("e1", "order"), &spec).await;
        setup.dispatcher.deliver(pending).await;
        let record = &history(&setup, "t")[0];
        assert_eq!(record.status, PENDING);
        assert_eq!(
            record.next_at_us,
            NOW + 2_000_000,
            "linear back-off of 2 s after the first try"
        );
        assert_eq!(record.last_error.as_deref(), Some("answered 503"));

        let retry = setup.store.due_deliveries(i64::MAX, 10).unwrap().pop().unwrap();
        setup.dispatcher.deliver(retry).await;
        let records = history(&setup, "t");
        let original = records.iter().find(|r| !r.dead_letter).unwrap();
        assert_eq!(original.status, DEAD_LETTERED);
        let letter = records.iter().find(|r| r.dead_letter).expect("a dead letter is queued");
        assert_eq!(letter.status, PENDING);
        let letter_event: Event = serde_json::from_str(&letter.event).unwrap();
        assert_eq!(letter_event.id(), "e1", "the dead letter is the same event");
        let extension = |name| letter_event.extension(name).map(|v| v.to_string());
        assert_eq!(extension("knativeerrordest").as_deref(), Some("http://web.test/"));
        assert_eq!(extension("knativeerrorcode").as_deref(), Some("500"));
        assert_eq!(
            *setup.transport.counted.lock().unwrap(),
            [("t".to_string(), false), ("t".to_string(), false)]
        );
    }

    #[tokio::test]
    async fn a_reply_goes_back_into_the_broker_to_the_triggers_it_matches() {
        let setup = setup(vec![answered(200, Some(event("r1", "shipped")))]);
        let trigger = |ty: &str| {
            serde_json::json!({"kind": "event", "broker": "default", "filter": {"type": ty},
                "subscriber": {"ref": {"name": "web"}}})
            .to_string()
        };
        setup
            .store
            .put_trigger("default", "orders", "event", &trigger("order"), 1)
            .unwrap();
        setup
            .store
            .put_trigger("default", "shipping", "event", &trigger("shipped"), 1)
            .unwrap();
        let pending = queue(&setup, "orders", &event("e1", "order"), &DeliverySpec::default()).await;
        setup.dispatcher.deliver(pending).await;
        assert_eq!(history(&setup, "orders")[0].status, DELIVERED);
        let replies = history(&setup, "shipping");
        assert_eq!(replies.len(), 1, "the reply matched the shipping trigger alone");
        let reply: Event = serde_json::from_str(&replies[0].event).unwrap();
        assert_eq!(reply.id(), "r1");
        assert_eq!(
            history(&setup, "orders").len(),
            1,
            "the reply does not match its own trigger"
        );
    }
}
