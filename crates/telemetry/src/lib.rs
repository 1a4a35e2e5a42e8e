//! What the platform tells about what runs: instance logs and the access log
//! (`logs`, `access`: format, query, follow), what instances cost (`metering`), how
//! long logs are kept (`retention`), and Prometheus metrics for the whole
//! platform at `/metrics`, in the Prometheus text format or OpenMetrics, as the
//! scraper asks.
//!
//! Every series starts with `updraft_`. The cold-start series, which Knative users keep
//! asking for, are `updraft_cold_starts_total` and
//! `updraft_cold_start_duration_seconds`, labelled by namespace, service, revision and
//! runtime.

pub mod access;
mod exposition;
pub mod logs;
pub mod metering;
pub mod retention;

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

pub use exposition::{only_namespaces, to_prometheus_text, wants_openmetrics, OPENMETRICS_TEXT, PROMETHEUS_TEXT};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RevisionLabels {
    pub namespace: String,
    pub service: String,
    pub revision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub namespace: String,
    pub service: String,
    pub revision: String,
    /// `2xx`, `4xx`, …
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ColdStartLabels {
    pub namespace: String,
    pub service: String,
    pub revision: String,
    pub runtime: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceLabels {
    pub namespace: String,
    pub service: String,
    pub revision: String,
    /// `starting`, `ready` or `stopping`.
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScaleLabels {
    pub namespace: String,
    pub service: String,
    pub revision: String,
    /// `up` or `down`.
    pub direction: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabels {
    pub namespace: String,
    pub trigger: String,
    /// `cron`, `event` or `nats`.
    pub kind: String,
}

fn latency_histogram() -> Histogram {
    // 1 ms to about 65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

fn cold_start_histogram() -> Histogram {
    // 5 ms to about 80 s: process starts are slower than requests.
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// Latencies of the last requests of each revision, for live views (`updraft top`).
#[derive(Default)]
pub struct RecentLatency {
    by_revision: Mutex<HashMap<RevisionLabels, VecDeque<(Instant, f64)>>>,
}

/// Requests remembered per revision.
const RECENT_KEPT: usize = 4096;

impl RecentLatency {
    pub fn record(&self, revision: &RevisionLabels, seconds: f64) {
        let mut all = self.by_revision.lock().unwrap_or_else(|p| p.into_inner());
        let recent = all.entry(revision.clone()).or_default();
        if recent.len() == RECENT_KEPT {
            recent.pop_front();
        }
        recent.push_back((Instant::now(), seconds));
    }

    /// p50 and p99 in seconds of the requests answered within `window`, and how many.
    pub fn percentiles(&self, revision: &RevisionLabels, window: Duration) -> (usize, f64, f64) {
        let all = self.by_revision.lock().unwrap_or_else(|p| p.into_inner());
        let Some(recent) = all.get(revision) else {
            return (0, 0.0, 0.0);
        };
        let since = Instant::now().checked_sub(window);
        let mut values: Vec<f64> = recent
            .iter()
            .filter(|(at, _)| since.is_none_or(|s| *at >= s))
            .map(|(_, v)| *v)
            .collect();
        if values.is_empty() {
            return (0, 0.0, 0.0);
        }
        values.sort_by(f64::total_cmp);
        let rank = |p: f64| values[((p * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1];
        (values.len(), rank(0.5), rank(0.99))
    }
}

pub struct Metrics {
    registry: Registry,
    pub recent: RecentLatency,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<RevisionLabels, Histogram, fn() -> Histogram>,
    pub in_flight: Family<RevisionLabels, Gauge>,
    pub activator_waiting: Family<RevisionLabels, Gauge>,
    pub activator_wait: Family<RevisionLabels, Histogram, fn() -> Histogram>,
    pub instances: Family<InstanceLabels, Gauge>,
    pub cold_starts: Family<ColdStartLabels, Counter>,
    pub cold_start_duration: Family<ColdStartLabels, Histogram, fn() -> Histogram>,
    pub scale_decisions: Family<ScaleLabels, Counter>,
    pub pool_size: Gauge,
    pub pool_memory_bytes: Gauge,
    pub trigger_deliveries: Family<TriggerLabels, Counter>,
    pub trigger_failures: Family<TriggerLabels, Counter>,
    pub events_accepted: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "updraft_requests",
            "Requests answered through the gateway, by revision and status class",
            requests.clone(),
        );
        let request_duration = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "updraft_request_duration_seconds",
            "Time from a request's arrival to the end of its response",
            request_duration.clone(),
        );
        let in_flight = Family::<RevisionLabels, Gauge>::default();
        registry.register(
            "updraft_requests_in_flight",
            "Requests being answered by a revision's instances",
            in_flight.clone(),
        );
        let activator_waiting = Family::<RevisionLabels, Gauge>::default();
        registry.register(
            "updraft_activator_waiting",
            "Requests held in the gateway for an instance or a free slot",
            activator_waiting.clone(),
        );
        let activator_wait = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "updraft_activator_wait_seconds",
            "How long requests were held for an instance or a free slot",
            activator_wait.clone(),
        );
        let instances = Family::<InstanceLabels, Gauge>::default();
        registry.register(
            "updraft_instances",
            "Instances of each revision by state",
            instances.clone(),
        );
        let cold_starts = Family::<ColdStartLabels, Counter>::default();
        registry.register(
            "updraft_cold_starts",
            "Instances started, from the ask to readiness",
            cold_starts.clone(),
        );
        let cold_start_duration = Family::new_with_constructor(cold_start_histogram as fn() -> Histogram);
        registry.register(
            "updraft_cold_start_duration_seconds",
            "Time from asking for an instance to it being ready",
            cold_start_duration.clone(),
        );
        let scale_decisions = Family::<ScaleLabels, Counter>::default();
        registry.register(
            "updraft_scale_decisions",
            "Autoscaler decisions that changed a revision's instance count",
            scale_decisions.clone(),
        );
        let pool_size = Gauge::default();
        registry.register("updraft_pool_size", "Pre-warmed stem cells ready", pool_size.clone());
        let pool_memory_bytes = Gauge::default();
        registry.register(
            "updraft_pool_memory_bytes",
            "Memory held by pre-warmed stem cells",
            pool_memory_bytes.clone(),
        );
        let trigger_deliveries = Family::<TriggerLabels, Counter>::default();
        registry.register(
            "updraft_trigger_deliveries",
            "Events delivered by triggers (cron firings, broker events, queue messages)",
            trigger_deliveries.clone(),
        );
        let trigger_failures = Family::<TriggerLabels, Counter>::default();
        registry.register(
            "updraft_trigger_failures",
            "Delivery attempts that failed (each retry counts; dead letters included)",
            trigger_failures.clone(),
        );
        let events_accepted = Counter::default();
        registry.register(
            "updraft_broker_events_accepted",
            "CloudEvents accepted by the brokers' ingress and stored",
            events_accepted.clone(),
        );
        Metrics {
            registry,
            recent: RecentLatency::default(),
            requests,
            request_duration,
            in_flight,
            activator_waiting,
            activator_wait,
            instances,
            cold_starts,
            cold_start_duration,
            scale_decisions,
            pool_size,
            pool_memory_bytes,
            trigger_deliveries,
            trigger_failures,
            events_accepted,
        }
    }

    /// Every series in OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// Every series in the format the scraper's `Accept` header prefers, with the
    /// `Content-Type` to answer it under.
    pub fn encode_for(&self, accept: Option<&str>) -> (&'static str, String) {
        if wants_openmetrics(accept) {
            (OPENMETRICS_TEXT, self.encode())
        } else {
            (PROMETHEUS_TEXT, to_prometheus_text(&self.encode()))
        }
    }

    pub fn cold_start(&self, labels: ColdStartLabels, took: Duration) {
        self.cold_starts.get_or_create(&labels).inc();
        self.cold_start_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    pub fn request(&self, revision: RevisionLabels, status: u16, took: Duration) {
        let code = format!("{}xx", status / 100);
        self.requests
            .get_or_create(&RequestLabels {
                namespace: revision.namespace.clone(),
                service: revision.service.clone(),
                revision: revision.revision.clone(),
                code,
            })
            .inc();
        self.request_duration
            .get_or_create(&revision)
            .observe(took.as_secs_f64());
        self.recent.record(&revision, took.as_secs_f64());
    }

    /// Cold starts counted so far for a revision run by `runtime` (`process`, `oci`,
    /// `wasm`, `python3`, `node`), as the scaler labels them.
    pub fn cold_starts_of(&self, revision: &RevisionLabels, runtime: &str) -> u64 {
        self.cold_starts
            .get_or_create(&ColdStartLabels {
                namespace: revision.namespace.clone(),
                service: revision.service.clone(),
                revision: revision.revision.clone(),
                runtime: runtime.to_string(),
            })
            .get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revision() -> RevisionLabels {
        RevisionLabels {
            namespace: "default".into(),
            service: "hello".into(),
            revision: "hello-00001".into(),
        }
    }

    #[test]
    fn series_are_named_as_documented() {
        let m = Metrics::new();
        m.cold_start(
            ColdStartLabels {
                namespace: "default".into(),
                service: "hello".into(),
                revision: "hello-00001".into(),
                runtime: "process".into(),
            },
            Duration::from_millis(150),
        );
        m.request(revision(), 503, Duration::from_millis(2));
        let text = m.encode();
        assert!(
            text.contains(
                "updraft_cold_starts_total{namespace=\"default\",service=\"hello\",revision=\"hello-00001\",runtime=\"process\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE updraft_cold_start_duration_seconds histogram"),
            "{text}"
        );
        assert!(text.contains("code=\"5xx\"} 1"), "{text}");
        assert!(text.contains("updraft_request_duration_seconds_count{"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn recent_percentiles_cover_the_window() {
        let recent = RecentLatency::default();
        for ms in 1..=100 {
            recent.record(&revision(), f64::from(ms) / 1000.0);
        }
        let (n, p50, p99) = recent.percentiles(&revision(), Duration::from_secs(60));
        assert_eq!(n, 100);
        assert!((p50 - 0.050).abs() < 1e-9 && (p99 - 0.099).abs() < 1e-9, "{p50} {p99}");
        assert_eq!(recent.percentiles(&revision(), Duration::ZERO).0, 0);
    }
}
