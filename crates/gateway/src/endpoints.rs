use std::net::SocketAddr;
use std::sync::atomic::{fence, AtomicI64, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use tokio::sync::Notify;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RevisionKey {
    pub namespace: String,
    pub service: String,
    pub revision: String,
}

/// One ready instance as the proxy sees it.
#[derive(Debug)]
pub struct Endpoint {
    pub instance: String,
    /// Where the instance listens; on this machine today, anywhere next.
    pub address: SocketAddr,
    /// Requests proxied to this instance and not yet answered in full.
    pub in_flight: AtomicU32,
}

/// Flow control a revision's template sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevisionLimits {
    /// Requests one instance is sent at once; 0 means no limit.
    pub container_concurrency: u32,
    /// From sending a request to the end of its response.
    pub timeout: Duration,
    /// From sending a request to the start of its response.
    pub response_start_timeout: Duration,
    /// Instances speak HTTP/2 without TLS (their port is named `h2c`), not HTTP/1.1.
    pub h2c: bool,
}

impl Default for RevisionLimits {
    fn default() -> Self {
        RevisionLimits {
            container_concurrency: 0,
            timeout: Duration::from_secs(300),
            response_start_timeout: Duration::from_secs(300),
            h2c: false,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct StartFailure {
    at_us: i64,
    pub reason: String,
    /// Refused by a namespace quota rather than failed.
    pub over_quota: bool,
}

/// A revision's ready instances and the load the scaler reads.
pub struct RevisionEndpoints {
    pub key: RevisionKey,
    pub limits: RevisionLimits,
    ready: ArcSwap<Vec<Arc<Endpoint>>>,
    ready_changed: Notify,
    next: AtomicUsize,
    pub(crate) in_flight: AtomicU32,
    pub(crate) waiting: AtomicU32,
    last_active_us: AtomicI64,
    /// The latest failure to start an instance: held requests give up on it instead
    /// of waiting out their timeout.
    start_failure: Mutex<Option<StartFailure>>,
    /// Set once the revision is deleted: held requests are answered at once.
    retired: Mutex<Option<String>>,
    /// Until when (µs) no instance will start, and why: requests are refused at once
    /// instead of waiting for one.
    backing_off: Mutex<Option<(i64, String)>>,
    load: Mutex<LoadMeter>,
}

/// Requests in flight or waiting, integrated over time, and arrivals: what the
/// autoscaler samples once a second.
#[derive(Debug, Default)]
struct LoadMeter {
    since_us: i64,
    last_us: i64,
    level: u32,
    /// Σ level × µs since `since_us`.
    area: u128,
    arrivals: u64,
}

impl LoadMeter {
    fn advance(&mut self, now_us: i64) {
        self.area += u128::from(self.level) * (now_us - self.last_us).max(0) as u128;
        self.last_us = now_us;
    }

    fn change(&mut self, now_us: i64, up: bool) {
        self.advance(now_us);
        self.level = if up {
            self.level + 1
        } else {
            self.level.saturating_sub(1)
        };
    }

    fn take(&mut self, now_us: i64) -> LoadSample {
        self.advance(now_us);
        let span = (now_us - self.since_us).max(1) as f64;
        let sample = LoadSample {
            concurrency: self.area as f64 / span,
            requests_per_second: self.arrivals as f64 * 1e6 / span,
        };
        self.since_us = now_us;
        self.area = 0;
        self.arrivals = 0;
        sample
    }
}

/// One sample of a revision's load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadSample {
    /// Time-weighted average of requests in flight or waiting.
    pub concurrency: f64,
    pub requests_per_second: f64,
}

/// Takes one slot of `count` unless `limit` (non-zero) slots are taken.
fn claim(count: &AtomicU32, limit: u32) -> bool {
    let mut current = count.load(Ordering::SeqCst);
    loop {
        if limit != 0 && current >= limit {
            return false;
        }
        match count.compare_exchange_weak(current, current + 1, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return true,
            Err(actual) => current = actual,
        }
    }
}

pub(crate) fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

impl RevisionEndpoints {
    pub fn new(key: RevisionKey, limits: RevisionLimits) -> Arc<Self> {
        Arc::new(RevisionEndpoints {
            key,
            limits,
            ready: ArcSwap::from_pointee(Vec::new()),
            ready_changed: Notify::new(),
            next: AtomicUsize::new(0),
            in_flight: AtomicU32::new(0),
            waiting: AtomicU32::new(0),
            last_active_us: AtomicI64::new(now_us()),
            start_failure: Mutex::new(None),
            retired: Mutex::new(None),
            backing_off: Mutex::new(None),
            load: Mutex::new(LoadMeter {
                since_us: now_us(),
                last_us: now_us(),
                ..Default::default()
            }),
        })
    }

    /// Round-robin over the ready instances with a free slot (under the revision's
    /// container concurrency); the endpoint returned is already counted in flight, and
    /// the caller must release it (the proxy's guard does).
    ///
    /// Scale-down takes an endpoint out of rotation and then reads its count; here the
    /// count goes up first and membership is checked after. With a fence between the
    /// two steps on both sides, one of them always sees the other, so no request is
    /// sent to an instance that is being stopped.
    pub fn pick(&self) -> Option<Arc<Endpoint>> {
        let limit = self.limits.container_concurrency;
        loop {
            let ready = self.ready.load();
            if ready.is_empty() {
                return None;
            }
            let start = self.next.fetch_add(1, Ordering::Relaxed);
            let endpoint = (0..ready.len())
                .map(|i| &ready[(start + i) % ready.len()])
                .find(|e| claim(&e.in_flight, limit))?
                .clone();
            fence(Ordering::SeqCst);
            if self.ready.load().iter().any(|e| Arc::ptr_eq(e, &endpoint)) {
                return Some(endpoint);
            }
            self.release(&endpoint);
        }
    }

    /// Gives back a slot taken by [`Self::pick`] and wakes a request waiting for one.
    pub(crate) fn release(&self, endpoint: &Endpoint) {
        endpoint.in_flight.fetch_sub(1, Ordering::SeqCst);
        // Paired with the waiter, which counts itself before it looks for a slot: one of
        // the two sees the other.
        if self.limits.container_concurrency > 0 && self.waiting.load(Ordering::SeqCst) > 0 {
            self.ready_changed.notify_waiters();
        }
    }

    pub fn add_ready(&self, endpoint: Arc<Endpoint>) {
        self.ready.rcu(|list| {
            let mut list = Vec::clone(list);
            list.push(endpoint.clone());
            list
        });
        self.start_failure.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.backing_off.lock().unwrap_or_else(|p| p.into_inner()).take();
        // Idle time counts from readiness, so a slow start is not followed by an instant stop.
        self.touch();
        self.ready_changed.notify_waiters();
    }

    /// Takes an instance out of rotation; requests already sent to it carry on. Once
    /// this returns, an in-flight count of zero means no request will reach it.
    pub fn remove(&self, instance: &str) -> Option<Arc<Endpoint>> {
        let mut removed = None;
        self.ready.rcu(|list| {
            let (gone, kept): (Vec<_>, Vec<_>) = list.iter().cloned().partition(|e| e.instance == instance);
            removed = gone.into_iter().next();
            kept
        });
        fence(Ordering::SeqCst);
        removed
    }

    /// A request arrived for this revision.
    pub(crate) fn arrived(&self) {
        self.load.lock().unwrap_or_else(|p| p.into_inner()).arrivals += 1;
    }

    /// A request started (+1) or stopped (−1) being in flight or waiting.
    pub(crate) fn load_changed(&self, up: bool) {
        self.load.lock().unwrap_or_else(|p| p.into_inner()).change(now_us(), up);
    }

    /// The load since the last sample, and a fresh start for the next.
    pub fn sample(&self) -> LoadSample {
        self.load.lock().unwrap_or_else(|p| p.into_inner()).take(now_us())
    }

    pub fn ready_count(&self) -> usize {
        self.ready.load().len()
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn waiting(&self) -> u32 {
        self.waiting.load(Ordering::SeqCst)
    }

    pub fn last_active_us(&self) -> i64 {
        self.last_active_us.load(Ordering::Relaxed)
    }

    pub(crate) fn touch(&self) {
        self.last_active_us.store(now_us(), Ordering::Relaxed);
    }

    /// Tells held requests that starting an instance failed.
    pub fn start_failed(&self, reason: String) {
        self.fail_start(reason, false);
    }

    /// Tells held requests that a namespace quota refused the instance they wait for.
    pub fn start_over_quota(&self, reason: String) {
        self.fail_start(reason, true);
    }

    fn fail_start(&self, reason: String, over_quota: bool) {
        *self.start_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(StartFailure {
            at_us: now_us(),
            reason,
            over_quota,
        });
        self.ready_changed.notify_waiters();
    }

    /// Whether the latest start was refused by a namespace quota.
    pub fn over_quota(&self) -> bool {
        self.start_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|f| f.over_quota)
    }

    /// The revision is gone (its service or itself deleted): requests held for it are
    /// answered now with `reason`, instead of waiting out the activator's timeout.
    pub fn retire(&self, reason: String) {
        *self.retired.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
        self.ready_changed.notify_waiters();
    }

    /// No instance will start before `until_us`: requests that would wait for one are
    /// answered 503 with `reason` until then, or until an instance is ready.
    pub fn back_off(&self, until_us: i64, reason: String) {
        *self.backing_off.lock().unwrap_or_else(|p| p.into_inner()) = Some((until_us, reason));
        self.ready_changed.notify_waiters();
    }

    /// The reason and the time left, while starts are held back.
    pub(crate) fn backing_off(&self, now_us: i64) -> Option<(String, Duration)> {
        let backing_off = self.backing_off.lock().unwrap_or_else(|p| p.into_inner());
        backing_off
            .as_ref()
            .filter(|(until, _)| *until > now_us)
            .map(|(until, reason)| (reason.clone(), Duration::from_micros((until - now_us) as u64)))
    }

    pub(crate) fn retired(&self) -> Option<String> {
        self.retired.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn failure_since(&self, since_us: i64) -> Option<StartFailure> {
        let failure = self.start_failure.lock().unwrap_or_else(|p| p.into_inner());
        failure.as_ref().filter(|f| f.at_us >= since_us).cloned()
    }

    pub(crate) fn ready_changed(&self) -> &Notify {
        &self.ready_changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(name: &str) -> Arc<Endpoint> {
        Arc::new(Endpoint {
            instance: name.into(),
            address: SocketAddr::from(([127, 0, 0, 1], 1)),
            in_flight: AtomicU32::new(0),
        })
    }

    fn key() -> RevisionKey {
        RevisionKey {
            namespace: "default".into(),
            service: "s".into(),
            revision: "s-00001".into(),
        }
    }

    #[test]
    fn the_load_meter_weighs_concurrency_by_time() {
        let mut meter = LoadMeter {
            arrivals: 3,
            ..Default::default()
        };
        meter.change(0, true);
        meter.change(250_000, true);
        meter.change(750_000, false);
        // 1 for 0.25 s, 2 for 0.5 s, 1 for 0.25 s.
        let sample = meter.take(1_000_000);
        assert!((sample.concurrency - 1.5).abs() < 1e-9, "{sample:?}");
        assert!((sample.requests_per_second - 3.0).abs() < 1e-9);
        let next = meter.take(2_000_000);
        assert!((next.concurrency - 1.0).abs() < 1e-9, "the level carries over");
        assert_eq!(next.requests_per_second, 0.0);
    }

    #[test]
    fn container_concurrency_caps_each_instance() {
        let rev = RevisionEndpoints::new(
            key(),
            RevisionLimits {
                container_concurrency: 2,
                ..Default::default()
            },
        );
        let (a, b) = (endpoint("a"), endpoint("b"));
        rev.add_ready(a.clone());
        rev.add_ready(b.clone());
        let held: Vec<_> = (0..4).map(|_| rev.pick().expect("a free slot")).collect();
        assert_eq!(a.in_flight.load(Ordering::SeqCst), 2);
        assert_eq!(b.in_flight.load(Ordering::SeqCst), 2);
        assert!(rev.pick().is_none(), "every slot is taken");
        rev.release(&held[0]);
        let again = rev.pick().expect("the freed slot");
        assert!(Arc::ptr_eq(&again, &held[0]));
    }

    #[test]
    fn a_picked_endpoint_is_counted_and_a_removed_one_is_never_picked() {
        let rev = RevisionEndpoints::new(key(), RevisionLimits::default());
        let (a, b) = (endpoint("a"), endpoint("b"));
        rev.add_ready(a.clone());
        rev.add_ready(b.clone());
        let first = rev.pick().unwrap();
        assert_eq!(first.in_flight.load(Ordering::SeqCst), 1);
        rev.remove("a");
        for _ in 0..10 {
            let picked = rev.pick().unwrap();
            assert_eq!(picked.instance, "b");
            picked.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        rev.remove("b");
        assert!(rev.pick().is_none());
    }
}
