//! The request-driven autoscaler, with Knative's KPA semantics and names.
//!
//! Once a second the caller records a revision's average concurrency and its request
//! rate. At each decision the autoscaler averages them over a stable window (60 s by
//! default) and a panic window (10% of it), and wants
//! `ceil(observed / (target × utilization))` instances, clamped by the scale-up and
//! scale-down rates. When the panic window asks for at least the panic threshold
//! (200%) of the ready instances, it panics: it follows the panic window and never
//! scales down until a whole stable window has passed below the threshold.
//! Bounds (min-scale, max-scale), scale-down delay, activation and scale to zero
//! come last.

use std::collections::VecDeque;

use updraft_model::annotations::{Autoscaling, ScalingMetric};

use crate::keepalive::KeepAlive;

const SEC: i64 = 1_000_000;

/// What the gateway and the runtime report about one revision at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RevisionLoad {
    /// Requests being proxied to its instances.
    pub in_flight: u32,
    /// Requests held by the activator for want of a ready instance.
    pub waiting: u32,
    /// Instances running or starting.
    pub instances: u32,
    /// Of those, the ones not ready yet.
    pub starting: u32,
    /// Last time a request arrived or finished, in microseconds.
    pub last_active_us: i64,
    /// Whether any route leads to the revision.
    pub routable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Concurrency,
    Rps,
    /// CPU used, against a target percent of each instance's CPU request (HPA class).
    Cpu,
    /// Memory held, against a target in MiB per instance (HPA class).
    Memory,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Concurrency => "concurrency",
            Metric::Rps => "rps",
            Metric::Cpu => "cpu",
            Metric::Memory => "memory",
        }
    }
}

/// One second of a revision's load: requests, and its instances' resources together.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LoadPoint {
    /// Average requests in flight or waiting.
    pub concurrency: f64,
    pub rps: f64,
    /// CPU used by all its instances, in millicores.
    pub cpu_millis: f64,
    /// Memory held by all its instances, in MiB.
    pub memory_mib: f64,
}

/// How one revision scales; Knative's defaults unless its annotations say otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingSpec {
    pub metric: Metric,
    /// Per instance: concurrent requests or requests per second.
    pub target: f64,
    /// The target when the metric is `rps` and no target is given.
    pub rps_target: f64,
    /// The share of the target aimed for, leaving room for bursts (0–1].
    pub utilization: f64,
    pub stable_window_us: i64,
    /// The panic window as a percent of the stable window.
    pub panic_window_pct: f64,
    /// Panic when the panic window wants this percent of the ready instances.
    pub panic_threshold_pct: f64,
    pub max_scale_up_rate: f64,
    pub max_scale_down_rate: f64,
    pub min_scale: u32,
    /// 0 means no upper bound.
    pub max_scale: u32,
    /// Instances a new revision starts with (kept for its first stable window).
    pub initial_scale: u32,
    /// Instances started at once when a revision at zero gets a request.
    pub activation_scale: u32,
    /// A lower desire must hold this long before scale-down acts on it.
    pub scale_down_delay_us: i64,
    /// Idle time before the last instance stops.
    pub scale_to_zero_after_us: i64,
    /// The HPA class: resource metrics, no panic mode, never below one instance.
    pub hpa: bool,
    /// Each instance's CPU request (or limit), the base of a CPU target percent.
    pub cpu_request_millis: f64,
    /// When an idle revision's last instance stops (and whether one is pre-warmed).
    pub keep_alive: KeepAlivePolicy,
}

/// How an idle revision is kept: `fixed` for its scale-to-zero period, or the hybrid
/// histogram of "Serverless in the Wild", which falls back to that period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlivePolicy {
    Fixed,
    HybridHistogram,
}

impl KeepAlivePolicy {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "fixed" => Some(KeepAlivePolicy::Fixed),
            "hybrid-histogram" => Some(KeepAlivePolicy::HybridHistogram),
            _ => None,
        }
    }
}

impl Default for ScalingSpec {
    fn default() -> Self {
        ScalingSpec {
            metric: Metric::Concurrency,
            target: 100.0,
            rps_target: 200.0,
            utilization: 0.7,
            stable_window_us: 60 * SEC,
            panic_window_pct: 10.0,
            panic_threshold_pct: 200.0,
            max_scale_up_rate: 1000.0,
            max_scale_down_rate: 2.0,
            min_scale: 0,
            max_scale: 0,
            initial_scale: 1,
            activation_scale: 1,
            scale_down_delay_us: 0,
            scale_to_zero_after_us: 60 * SEC,
            hpa: false,
            cpu_request_millis: 1000.0,
            keep_alive: KeepAlivePolicy::Fixed,
        }
    }
}

/// The HPA class's default targets: 80% of the CPU request (Kubernetes' default), and
/// 512 MiB per instance.
const HPA_CPU_TARGET_PCT: f64 = 80.0;
const HPA_MEMORY_TARGET_MIB: f64 = 512.0;

impl ScalingSpec {
    /// The server's defaults overridden by a revision's autoscaling annotations and its
    /// container concurrency, which is the default target when set.
    pub fn for_revision(
        defaults: &ScalingSpec,
        autoscaling: &Autoscaling,
        container_concurrency: u32,
        cpu_request_millis: Option<u32>,
        scale_to_zero_after_us: i64,
    ) -> ScalingSpec {
        let mut spec = defaults.clone();
        spec.hpa = autoscaling.hpa_class;
        spec.cpu_request_millis = f64::from(cpu_request_millis.unwrap_or(1000));
        match autoscaling.metric {
            Some(ScalingMetric::Rps) => {
                spec.metric = Metric::Rps;
                spec.target = spec.rps_target;
            }
            Some(ScalingMetric::Cpu) => {
                spec.metric = Metric::Cpu;
                spec.target = HPA_CPU_TARGET_PCT;
            }
            Some(ScalingMetric::Memory) => {
                spec.metric = Metric::Memory;
                spec.target = HPA_MEMORY_TARGET_MIB;
            }
            _ if spec.hpa => {
                spec.metric = Metric::Cpu;
                spec.target = HPA_CPU_TARGET_PCT;
            }
            _ => {}
        }
        if spec.hpa {
            // Knative's default for the HPA class: it cannot scale to zero.
            spec.min_scale = 1;
        }
        if let Some(policy) = autoscaling.keep_alive {
            spec.keep_alive = match policy {
                updraft_model::annotations::KeepAlive::Fixed => KeepAlivePolicy::Fixed,
                updraft_model::annotations::KeepAlive::HybridHistogram => KeepAlivePolicy::HybridHistogram,
            };
        }
        if container_concurrency > 0 && spec.metric == Metric::Concurrency {
            spec.target = f64::from(container_concurrency);
        }
        if let Some(t) = autoscaling.target {
            spec.target = t;
        }
        if let Some(u) = autoscaling.target_utilization_percentage {
            spec.utilization = u / 100.0;
        }
        if let Some(w) = autoscaling.window {
            spec.stable_window_us = w.as_micros() as i64;
        }
        if let Some(p) = autoscaling.panic_window_percentage {
            spec.panic_window_pct = p;
        }
        if let Some(p) = autoscaling.panic_threshold_percentage {
            spec.panic_threshold_pct = p;
        }
        if let Some(n) = autoscaling.min_scale {
            spec.min_scale = n;
        }
        if let Some(n) = autoscaling.max_scale {
            spec.max_scale = n;
        }
        if let Some(n) = autoscaling.initial_scale {
            spec.initial_scale = n;
        }
        if let Some(n) = autoscaling.activation_scale {
            spec.activation_scale = n.max(1);
        }
        if let Some(d) = autoscaling.scale_down_delay {
            spec.scale_down_delay_us = d.as_micros() as i64;
        }
        spec.scale_to_zero_after_us = scale_to_zero_after_us;
        spec
    }

    /// How much of the metric one instance should carry.
    fn per_instance(&self) -> f64 {
        let per = match self.metric {
            Metric::Concurrency | Metric::Rps => self.target * self.utilization,
            Metric::Cpu => self.cpu_request_millis * self.target / 100.0,
            Metric::Memory => self.target,
        };
        per.max(0.01)
    }

    fn panic_window_us(&self) -> i64 {
        ((self.stable_window_us as f64 * self.panic_window_pct / 100.0) as i64).max(SEC)
    }

    fn bounded(&self, n: u32) -> u32 {
        let n = n.max(self.min_scale);
        if self.max_scale > 0 {
            n.min(self.max_scale)
        } else {
            n
        }
    }
}

/// One second of a revision's load.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    at_us: i64,
    load: LoadPoint,
}

/// Why the autoscaler wants what it wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Requests wait and no instance runs.
    Activation,
    /// The stable window's average.
    Stable,
    /// The panic window's average, in panic mode.
    Panic,
    /// Held up by the scale-down delay.
    ScaleDownDelay,
    /// At min-scale or max-scale.
    Bound,
    /// A new revision's initial scale.
    Initial,
    /// Idle past the scale-to-zero period.
    Idle,
    /// No route reaches the revision and nothing is in flight.
    Unrouted,
    /// A starting instance is not stopped for idleness.
    Starting,
    /// The keep-alive policy expects a call soon: an instance is started ahead of it.
    Prewarm,
}

impl Why {
    pub fn name(self) -> &'static str {
        match self {
            Why::Activation => "activation",
            Why::Stable => "stable window",
            Why::Panic => "panic window",
            Why::ScaleDownDelay => "scale-down delay",
            Why::Bound => "min/max scale",
            Why::Initial => "initial scale",
            Why::Idle => "idle",
            Why::Unrouted => "unrouted",
            Why::Starting => "starting",
            Why::Prewarm => "pre-warm",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleDecision {
    pub desired: u32,
    pub why: Why,
    /// The metric averaged over the stable and the panic window.
    pub stable: f64,
    pub panic: f64,
    pub panicking: bool,
}

/// One revision's autoscaler: its recent load and its panic state.
#[derive(Debug, Clone)]
pub struct Autoscaler {
    pub spec: ScalingSpec,
    samples: VecDeque<Sample>,
    created_us: i64,
    panic_since: Option<i64>,
    /// The most instances wanted during this panic; panic never goes below it.
    panic_peak: u32,
    /// Recent desires, for the scale-down delay.
    recent: VecDeque<(i64, u32)>,
    initial_reached: bool,
    keep_alive: KeepAlive,
    /// The latest activity seen, and whether the revision was idle at the last decision.
    last_active_us: i64,
    was_idle: bool,
}

impl Autoscaler {
    pub fn new(spec: ScalingSpec, created_us: i64) -> Self {
        Autoscaler {
            samples: VecDeque::new(),
            created_us,
            panic_since: None,
            panic_peak: 0,
            recent: VecDeque::new(),
            initial_reached: false,
            keep_alive: match spec.keep_alive {
                KeepAlivePolicy::Fixed => KeepAlive::fixed(spec.scale_to_zero_after_us as f64 / 1e6),
                KeepAlivePolicy::HybridHistogram => KeepAlive::hybrid(spec.scale_to_zero_after_us as f64 / 1e6),
            },
            last_active_us: 0,
            was_idle: false,
            spec,
        }
    }

    /// Records one second of load.
    pub fn record(&mut self, now_us: i64, load: LoadPoint) {
        self.samples.push_back(Sample { at_us: now_us, load });
        let horizon = now_us - self.spec.stable_window_us;
        while self.samples.front().is_some_and(|s| s.at_us <= horizon) {
            self.samples.pop_front();
        }
    }

    /// Requests per second over the last `window_us`.
    pub fn recent_rps(&self, now_us: i64, window_us: i64) -> f64 {
        let from = now_us - window_us;
        let (sum, n) = self
            .samples
            .iter()
            .filter(|s| s.at_us > from)
            .fold((0.0, 0u32), |(sum, n), s| (sum + s.load.rps, n + 1));
        if n == 0 {
            0.0
        } else {
            sum / f64::from(n)
        }
    }

    fn average(&self, now_us: i64, window_us: i64) -> f64 {
        let from = now_us - window_us;
        let (sum, n) = self
            .samples
            .iter()
            .filter(|s| s.at_us > from)
            .fold((0.0, 0u32), |(sum, n), s| {
                let v = match self.spec.metric {
                    Metric::Concurrency => s.load.concurrency,
                    Metric::Rps => s.load.rps,
                    Metric::Cpu => s.load.cpu_millis,
                    Metric::Memory => s.load.memory_mib,
                };
                (sum + v, n + 1)
            });
        if n == 0 {
            0.0
        } else {
            sum / f64::from(n)
        }
    }

    /// The instances the revision should have now. `load.instances` counts running and
    /// starting ones; `ready` those that serve.
    pub fn decide(&mut self, load: RevisionLoad, ready: u32, now_us: i64) -> ScaleDecision {
        let spec = self.spec.clone();
        let per_instance = spec.per_instance();
        let stable = self.average(now_us, spec.stable_window_us);
        let panic = self.average(now_us, spec.panic_window_us());
        let decision = |desired, why, panicking| ScaleDecision {
            desired,
            why,
            stable,
            panic,
            panicking,
        };
        let busy = load.in_flight > 0 || load.waiting > 0;

        // min-scale holds only while a route leads here, as in current Knative.
        if !load.routable && !busy {
            return decision(0, Why::Unrouted, false);
        }
        if load.instances == 0 && load.waiting > 0 {
            // Enough for every waiting request, not one instance at a time.
            let wanted = (f64::from(load.waiting) / per_instance).ceil() as u32;
            let desired = spec.bounded(wanted.max(spec.activation_scale).max(1));
            return decision(desired, Why::Activation, false);
        }

        let observed_ready = ready.max(1) as f64;
        let max_up = (spec.max_scale_up_rate * observed_ready).ceil() as u32;
        let max_down = (observed_ready / spec.max_scale_down_rate).floor() as u32;
        let clamp = |n: f64| (n.ceil() as u32).clamp(max_down, max_up.max(1));
        // Requests waiting right now count too: they are load the window has not seen.
        let now_load = f64::from(load.in_flight + load.waiting);
        let want_stable = clamp(stable.max(if ready == 0 { now_load } else { 0.0 }) / per_instance);
        let want_panic = clamp(panic.max(now_load) / per_instance);

        // The HPA class has no panic mode; requests in flight say nothing of its metric.
        let (want_stable, want_panic) = if spec.hpa {
            (clamp(stable / per_instance), 0)
        } else {
            (want_stable, want_panic)
        };
        let over = !spec.hpa && f64::from(want_panic) / observed_ready >= spec.panic_threshold_pct / 100.0;
        match self.panic_since {
            None if over && ready > 0 => {
                self.panic_since = Some(now_us);
                self.panic_peak = 0;
            }
            Some(_) if over => self.panic_since = Some(now_us),
            Some(since) if now_us >= since + spec.stable_window_us => self.panic_since = None,
            _ => {}
        }
        let panicking = self.panic_since.is_some();
        let (mut desired, mut why) = if panicking {
            self.panic_peak = self.panic_peak.max(want_panic).max(load.instances);
            (self.panic_peak, Why::Panic)
        } else {
            (want_stable, Why::Stable)
        };

        // Scale down only to the highest desire of the delay window.
        self.recent.push_back((now_us, desired));
        let horizon = now_us - spec.scale_down_delay_us;
        while self.recent.front().is_some_and(|(at, _)| *at < horizon) {
            self.recent.pop_front();
        }
        let held = self.recent.iter().map(|(_, d)| *d).max().unwrap_or(desired);
        if held > desired {
            desired = held;
            why = Why::ScaleDownDelay;
        }

        // A new revision first reaches its initial scale; then the windows rule (as in
        // Knative). It gives up after a stable window if instances fail to come.
        if ready >= spec.initial_scale || now_us >= self.created_us + spec.stable_window_us {
            self.initial_reached = true;
        }
        if !self.initial_reached && desired < spec.initial_scale {
            desired = spec.initial_scale;
            why = Why::Initial;
        }

        // The keep-alive policy learns each idle gap as activity resumes after it.
        if load.last_active_us > self.last_active_us {
            let gap_us = load.last_active_us - self.last_active_us;
            if self.last_active_us > 0 && self.was_idle && gap_us >= SEC {
                self.keep_alive.observe_idle(gap_us as f64 / 1e6);
            }
            self.last_active_us = load.last_active_us;
        }
        let idle_for = now_us - load.last_active_us;
        self.was_idle = !busy && idle_for >= SEC;
        // Outside its keep-alive window an idle revision goes to zero, which then
        // outweighs what the averaging windows still remember; inside it one instance
        // stays (or, when the policy pre-warms, comes back just before the call is due).
        let windows = self.keep_alive.windows();
        let (from, to) = (
            (windows.prewarm_s * 1e6) as i64,
            ((windows.prewarm_s + windows.keep_alive_s) * 1e6) as i64,
        );
        let kept = busy || (idle_for >= from && idle_for < to);
        if !kept && load.starting > 0 && idle_for >= to {
            desired = load.instances;
            why = Why::Starting;
        } else if !kept {
            desired = 0;
            why = Why::Idle;
        } else if desired == 0 {
            let prewarm = !busy && from > 0 && load.instances == 0;
            desired = if busy || prewarm { 1 } else { load.instances.min(1) };
            if prewarm {
                why = Why::Prewarm;
            }
        }

        let bounded = spec.bounded(desired);
        if bounded != desired {
            why = Why::Bound;
        }
        decision(bounded, why, panicking)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn spec() -> ScalingSpec {
        ScalingSpec {
            target: 10.0,
            utilization: 1.0,
            stable_window_us: 60 * SEC,
            scale_to_zero_after_us: 30 * SEC,
            ..Default::default()
        }
    }

    fn load(instances: u32, in_flight: u32, last_active_us: i64) -> RevisionLoad {
        RevisionLoad {
            in_flight,
            waiting: 0,
            instances,
            starting: 0,
            last_active_us,
            routable: true,
        }
    }

    /// Records `seconds` of constant concurrency ending at `end_s`.
    fn feed(a: &mut Autoscaler, from_s: i64, to_s: i64, concurrency: f64) {
        for s in from_s..to_s {
            a.record(
                s * SEC,
                LoadPoint {
                    concurrency,
                    rps: concurrency * 10.0,
                    ..Default::default()
                },
            );
        }
    }

    #[test]
    fn the_hpa_class_follows_cpu_and_never_goes_to_zero() {
        let annotations: BTreeMap<String, String> = [
            ("autoscaling.knative.dev/class", "hpa.autoscaling.knative.dev"),
            ("autoscaling.knative.dev/metric", "cpu"),
            ("autoscaling.knative.dev/target", "50"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let spec = ScalingSpec::for_revision(
            &ScalingSpec::default(),
            &Autoscaling::from_annotations(&annotations),
            0,
            Some(200),
            30 * SEC,
        );
        assert_eq!((spec.metric, spec.min_scale, spec.hpa), (Metric::Cpu, 1, true));
        let mut a = Autoscaler::new(spec, -100 * SEC);
        // 350 millicores against 50% of a 200m request: 4 instances; no panic even
        // though the jump is large.
        for s in 1..61 {
            a.record(
                s * SEC,
                LoadPoint {
                    cpu_millis: 350.0,
                    ..Default::default()
                },
            );
        }
        let d = a.decide(load(1, 0, 60 * SEC), 1, 60 * SEC);
        assert_eq!((d.desired, d.why, d.panicking), (4, Why::Stable, false));
        for s in 61..200 {
            a.record(s * SEC, LoadPoint::default());
        }
        let d = a.decide(load(4, 0, 0), 4, 200 * SEC);
        assert_eq!(d.desired, 1, "idle, but the HPA class keeps one");
        let mem: BTreeMap<String, String> = [
            ("autoscaling.knative.dev/class", "hpa.autoscaling.knative.dev"),
            ("autoscaling.knative.dev/metric", "memory"),
            ("autoscaling.knative.dev/target", "100"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let spec = ScalingSpec::for_revision(
            &ScalingSpec::default(),
            &Autoscaling::from_annotations(&mem),
            0,
            None,
            30 * SEC,
        );
        let mut a = Autoscaler::new(spec, -100 * SEC);
        a.record(
            SEC,
            LoadPoint {
                memory_mib: 250.0,
                ..Default::default()
            },
        );
        assert_eq!(a.decide(load(1, 0, SEC), 1, SEC).desired, 3, "ceil(250 MiB / 100 MiB)");
    }

    #[test]
    fn the_stable_window_sets_the_count() {
        let mut a = Autoscaler::new(spec(), 0);
        feed(&mut a, 1, 61, 35.0);
        assert!((a.recent_rps(60 * SEC, 10 * SEC) - 350.0).abs() < 1e-9);
        let d = a.decide(load(4, 35, 60 * SEC), 4, 60 * SEC);
        assert_eq!((d.desired, d.why, d.panicking), (4, Why::Stable, false));
        assert!((d.stable - 35.0).abs() < 1e-9);
    }

    #[test]
    fn a_burst_panics_and_panic_never_scales_down_within_a_window() {
        let mut a = Autoscaler::new(spec(), 0);
        feed(&mut a, 1, 55, 10.0);
        // Six seconds (the panic window) at 50: the panic window wants 5 for 1 ready.
        feed(&mut a, 55, 61, 50.0);
        let d = a.decide(load(1, 50, 60 * SEC), 1, 60 * SEC);
        assert!(d.panicking);
        assert_eq!((d.desired, d.why), (5, Why::Panic));
        // The burst is over, but panic holds the peak until a stable window passes.
        feed(&mut a, 61, 80, 10.0);
        let d = a.decide(load(5, 10, 80 * SEC), 5, 80 * SEC);
        assert!(d.panicking);
        assert_eq!(d.desired, 5);
        feed(&mut a, 80, 121, 10.0);
        let d = a.decide(load(5, 10, 121 * SEC), 5, 121 * SEC);
        assert!(!d.panicking);
        assert_eq!((d.desired, d.why), (2, Why::Stable), "down by at most half at once");
        let d = a.decide(load(2, 10, 122 * SEC), 2, 122 * SEC);
        assert_eq!(d.desired, 1);
    }

    #[test]
    fn scale_up_and_down_rates_clamp() {
        let mut a = Autoscaler::new(
            ScalingSpec {
                max_scale_up_rate: 2.0,
                panic_threshold_pct: 1000.0,
                ..spec()
            },
            0,
        );
        feed(&mut a, 1, 61, 100.0);
        assert_eq!(a.decide(load(2, 100, 60 * SEC), 2, 60 * SEC).desired, 4);
        feed(&mut a, 61, 122, 1.0);
        assert_eq!(a.decide(load(8, 1, 121 * SEC), 8, 121 * SEC).desired, 4);
    }

    #[test]
    fn a_burst_at_zero_asks_for_enough_instances_at_once() {
        let mut a = Autoscaler::new(spec(), -100 * SEC);
        let waiting = RevisionLoad {
            waiting: 45,
            ..load(0, 0, 0)
        };
        let d = a.decide(waiting, 0, 0);
        assert_eq!((d.desired, d.why), (5, Why::Activation));
        let capped = Autoscaler::new(
            ScalingSpec {
                max_scale: 3,
                activation_scale: 2,
                ..spec()
            },
            0,
        )
        .decide(waiting, 0, 0);
        assert_eq!(capped.desired, 3);
        let one = RevisionLoad {
            waiting: 1,
            ..load(0, 0, 0)
        };
        let d = Autoscaler::new(
            ScalingSpec {
                activation_scale: 2,
                ..spec()
            },
            0,
        )
        .decide(one, 0, 0);
        assert_eq!(d.desired, 2, "activation-scale is a floor");
    }

    #[test]
    fn the_scale_down_delay_holds_the_recent_peak() {
        let mut a = Autoscaler::new(
            ScalingSpec {
                stable_window_us: 10 * SEC,
                scale_down_delay_us: 10 * SEC,
                panic_threshold_pct: 1000.0,
                ..spec()
            },
            0,
        );
        feed(&mut a, 51, 61, 30.0);
        assert_eq!(a.decide(load(3, 30, 60 * SEC), 3, 60 * SEC).desired, 3);
        feed(&mut a, 61, 71, 10.0);
        let d = a.decide(load(3, 10, 70 * SEC), 3, 70 * SEC);
        assert_eq!((d.desired, d.why), (3, Why::ScaleDownDelay));
        feed(&mut a, 71, 72, 10.0);
        assert_eq!(a.decide(load(3, 10, 71 * SEC), 3, 71 * SEC).desired, 1);
    }

    #[test]
    fn bounds_initial_scale_and_zero() {
        let mut a = Autoscaler::new(
            ScalingSpec {
                min_scale: 2,
                max_scale: 4,
                ..spec()
            },
            0,
        );
        feed(&mut a, 1, 61, 100.0);
        let d = a.decide(load(4, 100, 60 * SEC), 4, 60 * SEC);
        assert_eq!((d.desired, d.why), (4, Why::Bound));
        feed(&mut a, 61, 200, 0.0);
        let d = a.decide(load(4, 0, 61 * SEC), 4, 200 * SEC);
        assert_eq!(d.desired, 2, "min-scale keeps instances even when idle");

        let mut fresh = Autoscaler::new(
            ScalingSpec {
                initial_scale: 3,
                ..spec()
            },
            0,
        );
        let d = fresh.decide(load(1, 0, 0), 1, SEC);
        assert_eq!((d.desired, d.why), (3, Why::Initial));
        // Reached once: from now on the windows rule.
        assert_eq!(fresh.decide(load(3, 0, 2 * SEC), 3, 3 * SEC).desired, 1);
        let d = fresh.decide(load(1, 0, 0), 1, 90 * SEC);
        assert_eq!((d.desired, d.why), (0, Why::Idle));
    }

    #[test]
    fn idle_time_and_in_flight_requests_guard_zero() {
        let mut a = Autoscaler::new(spec(), -1000 * SEC);
        assert_eq!(a.decide(load(1, 0, 0), 1, 29 * SEC).desired, 1);
        assert_eq!(a.decide(load(1, 1, 0), 1, 100 * SEC).desired, 1, "in flight");
        let starting = RevisionLoad {
            starting: 1,
            ..load(1, 0, 0)
        };
        assert_eq!(a.decide(starting, 0, 100 * SEC).why, Why::Starting);
        let unrouted = RevisionLoad {
            routable: false,
            ..load(2, 0, 100 * SEC)
        };
        assert_eq!(a.decide(unrouted, 2, 100 * SEC).desired, 0);
    }

    #[test]
    fn the_hybrid_histogram_unloads_then_prewarms_before_a_regular_call() {
        let mut a = Autoscaler::new(
            ScalingSpec {
                keep_alive: KeepAlivePolicy::HybridHistogram,
                ..spec()
            },
            -1000 * SEC,
        );
        // A call every 10 minutes, decided on every 10 s.
        let mut last_active = 0;
        for call in 0..12i64 {
            let at = call * 600 * SEC;
            last_active = at;
            a.decide(load(1, 1, at), 1, at);
            for t in (at + 10 * SEC..at + 600 * SEC).step_by(10 * SEC as usize) {
                a.decide(load(1, 0, at), 1, t);
            }
        }
        // Learnt: right after a call it unloads; just before the next it pre-warms.
        let d = a.decide(load(1, 0, last_active), 1, last_active + 60 * SEC);
        assert_eq!((d.desired, d.why), (0, Why::Idle), "unloaded between calls");
        let d = a.decide(load(0, 0, last_active), 0, last_active + 560 * SEC);
        assert_eq!((d.desired, d.why), (1, Why::Prewarm));
        let d = a.decide(load(0, 0, last_active), 0, last_active + 800 * SEC);
        assert_eq!((d.desired, d.why), (0, Why::Idle), "the call did not come");
        // The fixed policy would have kept it 30 s, then stopped it until the call.
        let mut fixed = Autoscaler::new(spec(), -1000 * SEC);
        assert_eq!(fixed.decide(load(1, 0, 0), 1, 20 * SEC).desired, 1);
        assert_eq!(fixed.decide(load(1, 0, 0), 1, 560 * SEC).desired, 0);
    }

    #[test]
    fn annotations_override_the_defaults() {
        let annotations: BTreeMap<String, String> = [
            ("autoscaling.knative.dev/metric", "rps"),
            ("autoscaling.knative.dev/target", "50"),
            ("autoscaling.knative.dev/window", "20s"),
            ("autoscaling.knative.dev/min-scale", "1"),
            ("autoscaling.knative.dev/maxScale", "7"),
            ("autoscaling.knative.dev/scale-down-delay", "15s"),
            ("updraft.dev/keep-alive", "hybrid-histogram"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let s = ScalingSpec::for_revision(
            &ScalingSpec::default(),
            &Autoscaling::from_annotations(&annotations),
            0,
            None,
            5 * SEC,
        );
        assert_eq!(s.metric, Metric::Rps);
        assert_eq!(s.target, 50.0);
        assert_eq!(s.stable_window_us, 20 * SEC);
        assert_eq!((s.min_scale, s.max_scale), (1, 7));
        assert_eq!(s.scale_down_delay_us, 15 * SEC);
        assert_eq!(s.scale_to_zero_after_us, 5 * SEC);
        assert_eq!(s.keep_alive, KeepAlivePolicy::HybridHistogram);
        let cc = ScalingSpec::for_revision(&ScalingSpec::default(), &Autoscaling::default(), 4, None, SEC);
        assert_eq!(cc.target, 4.0, "containerConcurrency is the default target");
    }
}
