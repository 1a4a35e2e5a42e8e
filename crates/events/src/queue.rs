//! The durable delivery queue: accepted events with their deliveries, and each
//! delivery's outcome, stored before the caller goes on. A trait of its own, so the
//! broker, cron, sources and (later) workflows share it and another backend can take
//! SQLite's place.

use std::sync::Arc;

use tokio::sync::oneshot;
use updraft_store::events::Write;
use updraft_store::EventStore;

/// Writes that arrive together are committed together, up to this many.
const GROUP_MAX: usize = 256;

pub trait DeliveryQueue: Send + Sync {
    /// Hands a write over; the receipt resolves once it is stored, or failed to be.
    fn submit(&self, write: Write) -> Receipt;
}

/// A write's answer to come.
pub struct Receipt(Result<oneshot::Receiver<Result<(), String>>, String>);

impl Receipt {
    pub async fn stored(self) -> Result<(), String> {
        self.0?.await.map_err(|_| STOPPED.to_string())?
    }
}

const STOPPED: &str = "the event writer stopped";

type Reply = oneshot::Sender<Result<(), String>>;

/// Group commit over an [`EventStore`]: one thread writes, and the writes queued while
/// a transaction syncs share the next one.
pub struct GroupCommit {
    queue: std::sync::mpsc::Sender<(Write, Reply)>,
}

impl GroupCommit {
    /// `clock` stamps each transaction (µs since the epoch).
    pub fn start(store: Arc<dyn EventStore>, clock: fn() -> i64) -> std::io::Result<GroupCommit> {
        let (queue, pending) = std::sync::mpsc::channel::<(Write, Reply)>();
        std::thread::Builder::new().name("event-writer".into()).spawn(move || {
            while let Ok(first) = pending.recv() {
                let mut batch = vec![first];
                while batch.len() < GROUP_MAX {
                    match pending.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                let (writes, replies): (Vec<Write>, Vec<Reply>) = batch.into_iter().unzip();
                let result = store.write(writes, clock()).map_err(|e| e.to_string());
                for reply in replies {
                    let _ = reply.send(result.clone());
                }
            }
        })?;
        Ok(GroupCommit { queue })
    }
}

impl DeliveryQueue for GroupCommit {
    fn submit(&self, write: Write) -> Receipt {
        let (reply, done) = oneshot::channel();
        Receipt(
            self.queue
                .send((write, reply))
                .map(|_| done)
                .map_err(|_| STOPPED.to_string()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use updraft_store::events::{Accepted, NewDelivery};
    use updraft_store::SqliteStore;

    fn accept(event: &str) -> Write {
        Write::Accept {
            namespace: "default".into(),
            broker: "default".into(),
            events: vec![Accepted {
                event: event.into(),
                deliveries: vec![NewDelivery {
                    trigger: "t".into(),
                    event: event.into(),
                    target: "{}".into(),
                    policy: "{}".into(),
                    dead_letter: false,
                    broker: Some("default".into()),
                    scheduled_at_us: None,
                }],
            }],
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_write_is_stored_before_its_receipt_resolves() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("db"), 1).unwrap());
        let queue = GroupCommit::start(store.clone(), || 42).unwrap();
        let receipts: Vec<Receipt> = (0..300)
            .map(|i| queue.submit(accept(&format!("{{\"id\":{i}}}"))))
            .collect();
        for receipt in receipts {
            receipt.stored().await.unwrap();
        }
        let pending = store.due_deliveries(i64::MAX, 1000).unwrap();
        assert_eq!(pending.len(), 300);
    }
}
