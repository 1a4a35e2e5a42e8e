//! The loop every reconciler runs: it starts from a list, applies each write's changes
//! from the store's watch in order, says up to which store revision it is current,
//! and lists again when it falls behind the change log. A crash recovers by the same
//! path: list, then watch.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use updraft_store::{Change, Snapshot, Store, StoreError, Watch, WatchEvent, WatchFilter, WatchStep};

/// A follower of the store that converges some part of the world to it.
#[async_trait::async_trait]
pub trait Reconciler: Send + 'static {
    /// What it keeps, for the log.
    fn name(&self) -> &'static str;
    /// The changes it follows.
    fn filter(&self) -> WatchFilter;
    /// Applies the changes of one write (they share a store revision).
    async fn on_write(&mut self, changes: Vec<Change>, now_us: i64);
    /// Starts over from a fresh list.
    async fn on_list(&mut self, snapshot: &Snapshot, now_us: i64);
    /// When it next wants to act though nothing changed (µs since the epoch).
    fn wake_at_us(&self) -> Option<i64> {
        None
    }
    /// Acts at that time.
    async fn on_wake(&mut self, _now_us: i64) {}
}

/// [`follow`] on a task of its own, for a follower no writer waits on.
pub fn spawn_follower<R: Reconciler + 'static>(
    reconciler: R,
    store: Arc<dyn Store>,
    from: u64,
    stop: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let (applied, _) = watch::channel(from);
    tokio::spawn(follow(
        reconciler,
        store,
        from,
        updraft_runtime::clock::now_us,
        applied,
        stop,
    ))
}

/// Runs `reconciler` from store revision `from` (the list it was given) until `stop`;
/// `applied` says up to which store revision it is current, for writers that answer
/// only once their write has taken effect.
pub async fn follow<R: Reconciler>(
    mut reconciler: R,
    store: Arc<dyn Store>,
    from: u64,
    clock: fn() -> i64,
    applied: watch::Sender<u64>,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    applied.send_replace(from);
    let mut changes = Watch::new(store.clone(), reconciler.filter(), from);
    let mut write: Vec<Change> = Vec::new();
    let mut write_revision = from;
    loop {
        let wake = reconciler
            .wake_at_us()
            .map(|at| Duration::from_micros((at - clock()).max(0) as u64));
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(wake.unwrap_or(Duration::MAX)), if wake.is_some() => {
                reconciler.on_wake(clock()).await;
            }
            next = changes.step() => match next {
                Ok(WatchStep::Event(WatchEvent { revision, change })) => {
                    // A write's changes come together: they are applied together, once
                    // the next write's begin or none is left.
                    if revision != write_revision && !write.is_empty() {
                        reconciler.on_write(std::mem::take(&mut write), clock()).await;
                        applied.send_replace(write_revision);
                    }
                    write_revision = revision;
                    write.push(change);
                    if !changes.has_buffered() {
                        reconciler.on_write(std::mem::take(&mut write), clock()).await;
                        applied.send_replace(changes.revision());
                    }
                }
                // Writes it does not follow: it is current past them all the same.
                Ok(WatchStep::Skipped { through }) => {
                    applied.send_replace(through);
                }
                Err(StoreError::Compacted { .. }) => {
                    tracing::warn!("the {} fell behind the store's change log; listing again", reconciler.name());
                    match store.snapshot().await {
                        Ok(snapshot) => {
                            write.clear();
                            reconciler.on_list(&snapshot, clock()).await;
                            changes = Watch::new(store.clone(), reconciler.filter(), snapshot.revision);
                            applied.send_replace(snapshot.revision);
                        }
                        Err(e) => tracing::error!(error = %e, "cannot list the store; the {} is unchanged", reconciler.name()),
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the store's changes; the {} is unchanged", reconciler.name());
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
        }
    }
}

/// How far the reconcilers are current, for writers that answer only once their
/// write has taken effect.
#[derive(Clone)]
pub struct Applied {
    pub routes: watch::Receiver<u64>,
    pub revisions: watch::Receiver<u64>,
}

impl Applied {
    /// Waits until the route table reflects every write to the store so far, so an
    /// answer to a write is true of the gateway too.
    pub async fn routes(&self, store: &dyn Store) {
        caught_up(&self.routes, store).await;
    }

    /// Waits until the revision registry reflects every write so far: a staged
    /// revision is registered and its first instance on its way.
    pub async fn revisions(&self, store: &dyn Store) {
        caught_up(&self.revisions, store).await;
    }

    /// Waits until the routes and the revision registry reflect every write so far:
    /// a deleted revision is out of the table and its instances are stopped.
    pub async fn all(&self, store: &dyn Store) {
        self.routes(store).await;
        self.revisions(store).await;
    }
}

/// Waits until a reconciler has applied the store's last write.
async fn caught_up(applied: &watch::Receiver<u64>, store: &dyn Store) {
    let written = *store.subscribe().borrow();
    // An error means the reconciler stopped with the server: nothing to wait for.
    let _ = applied.clone().wait_for(|at| *at >= written).await;
}
