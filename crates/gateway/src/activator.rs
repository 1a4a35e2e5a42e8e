//! Holding requests for a revision with no ready instance, bounded in count and time.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::endpoints::now_us;
use crate::{Endpoint, RevisionEndpoints, RevisionKey};

/// Asks the scaler to act on a revision now rather than at its next tick.
pub trait Poke: Send + Sync + 'static {
    fn poke(&self, revision: &Arc<RevisionEndpoints>);
}

/// Told how each request went, for metrics.
pub trait RequestObserver: Send + Sync + 'static {
    /// A request to `revision` was answered with `status`; its response ended `took`
    /// after it arrived.
    fn answered(&self, revision: &RevisionKey, status: u16, took: Duration);
    /// A request was held `waited` for an instance or a free slot.
    fn held(&self, revision: &RevisionKey, waited: Duration);
}

#[derive(Debug, Clone, Copy)]
pub struct ActivatorConfig {
    /// Requests held per revision at once; more are refused with 503.
    pub capacity: u32,
    /// How long a request is held before 503.
    pub timeout: Duration,
}

impl Default for ActivatorConfig {
    fn default() -> Self {
        ActivatorConfig {
            capacity: 1000,
            timeout: Duration::from_secs(60),
        }
    }
}

pub(crate) enum Held {
    Full,
    TimedOut,
    StartFailed(String),
}

struct Waiting<'a>(&'a RevisionEndpoints);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
        self.0.load_changed(false);
    }
}

pub(crate) async fn ready_endpoint(
    revision: &Arc<RevisionEndpoints>,
    poke: &dyn Poke,
    config: ActivatorConfig,
    observer: Option<&dyn RequestObserver>,
) -> Result<Arc<Endpoint>, Held> {
    if let Some(endpoint) = revision.pick() {
        return Ok(endpoint);
    }
    let started = tokio::time::Instant::now();
    let held = hold(revision, poke, config).await;
    if let Some(observer) = observer {
        observer.held(&revision.key, started.elapsed());
    }
    held
}

async fn hold(
    revision: &Arc<RevisionEndpoints>,
    poke: &dyn Poke,
    config: ActivatorConfig,
) -> Result<Arc<Endpoint>, Held> {
    if revision.waiting.fetch_add(1, Ordering::SeqCst) >= config.capacity {
        revision.waiting.fetch_sub(1, Ordering::SeqCst);
        return Err(Held::Full);
    }
    revision.load_changed(true);
    let _waiting = Waiting(revision);
    let since = now_us();
    poke.poke(revision);
    let deadline = tokio::time::Instant::now() + config.timeout;
    loop {
        let notified = revision.ready_changed().notified();
        tokio::pin!(notified);
        // Register before checking, so a change between check and wait is not missed.
        notified.as_mut().enable();
        if let Some(endpoint) = revision.pick() {
            return Ok(endpoint);
        }
        if let Some(reason) = revision.failure_since(since) {
            return Err(Held::StartFailed(reason));
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return Err(Held::TimedOut);
        }
    }
}
