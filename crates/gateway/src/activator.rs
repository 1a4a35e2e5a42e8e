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

/// How one request went, as an access log records it.
#[derive(Debug, Clone)]
pub struct Access {
    pub method: String,
    pub path: String,
    pub status: u16,
    /// From arrival to the end of the response.
    pub took: Duration,
    /// The instance that answered, when one did.
    pub instance: Option<String>,
    /// It waited for an instance to start.
    pub cold: bool,
    pub traceparent: Option<String>,
}

/// Told how each request went, for metrics and access logs.
pub trait RequestObserver: Send + Sync + 'static {
    /// A request to `revision` was answered; called when its response has ended.
    fn answered(&self, revision: &RevisionKey, access: Access);
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
    /// A namespace quota refused the instance the request waited for.
    OverQuota(String),
    /// The revision was deleted while the request waited.
    Gone(String),
    /// Its instances keep failing, and no new one starts for this long.
    BackingOff(String, Duration),
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
) -> Result<(Arc<Endpoint>, bool), Held> {
    if let Some(endpoint) = revision.pick() {
        return Ok((endpoint, false));
    }
    // Cold when no instance was ready at all, not when they were only busy.
    let cold = revision.ready_count() == 0;
    let started = tokio::time::Instant::now();
    let held = hold(revision, poke, config).await;
    if let Some(observer) = observer {
        observer.held(&revision.key, started.elapsed());
    }
    held.map(|endpoint| (endpoint, cold))
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
        if let Some(reason) = revision.retired() {
            return Err(Held::Gone(reason));
        }
        if let Some((reason, left)) = revision.backing_off(now_us()) {
            return Err(Held::BackingOff(reason, left));
        }
        if let Some(failure) = revision.failure_since(since) {
            return Err(match failure.over_quota {
                true => Held::OverQuota(failure.reason),
                false => Held::StartFailed(failure.reason),
            });
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return Err(Held::TimedOut);
        }
    }
}
