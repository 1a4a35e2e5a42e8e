//! Replays a trace through keep-alive and pooling policies with a simulated clock.
//!
//! As in "Serverless in the Wild", each application has one instance that serves all
//! its calls; a call that finds it unloaded is a cold start. Calls of a minute are
//! spread evenly over it. The pooling policy keeps applications' own instances
//! briefly and serves their cold starts from a shared pool of generic pre-warmed
//! instances, sized by [`PoolSizer`]; a start the pool cannot serve is cold.

use serde::Serialize;

use crate::keepalive::{KeepAlive, PoolSizer, Windows};
use crate::trace::{App, Trace};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Policy {
    Fixed { keep_alive_s: f64 },
    HybridHistogram { fallback_s: f64 },
    Pooling(PoolingSpec),
}

/// Updraft's pooling policy ("fast expand, slow shrink").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolingSpec {
    /// How long an application keeps its own instance after a call.
    pub app_keep_alive_s: f64,
    pub half_life_s: f64,
    /// Pool instances kept even without demand, and at most.
    pub floor: f64,
    pub cap: f64,
    /// Memory of one generic pre-warmed instance (a runtime without the app).
    pub instance_mb: f64,
}

impl Default for PoolingSpec {
    fn default() -> Self {
        PoolingSpec {
            app_keep_alive_s: 60.0,
            half_life_s: 300.0,
            floor: 1.0,
            cap: 1000.0,
            instance_mb: 128.0,
        }
    }
}

impl Policy {
    /// The policies by the names `updraft sim --policy` takes.
    pub fn named(name: &str) -> Option<Policy> {
        match name {
            "fixed-10m" => Some(Policy::Fixed { keep_alive_s: 600.0 }),
            "fixed-30s" => Some(Policy::Fixed { keep_alive_s: 30.0 }),
            "hybrid-histogram" => Some(Policy::HybridHistogram { fallback_s: 600.0 }),
            "pooling" => Some(Policy::Pooling(PoolingSpec::default())),
            _ => None,
        }
    }

    pub const NAMES: [&'static str; 4] = ["fixed-10m", "fixed-30s", "hybrid-histogram", "pooling"];
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyReport {
    pub policy: String,
    pub invocations: u64,
    /// Calls that found no loaded instance (nor, when pooling, a pooled one).
    pub cold_start_pct: f64,
    /// The 75th percentile across applications of their own cold-start percentage.
    pub cold_start_pct_p75: f64,
    /// Memory of loaded instances not executing, integrated over time.
    pub idle_memory_gb_s: f64,
    /// Time instances were loaded, busy or not.
    pub instance_seconds: f64,
    /// Pooling only: starts served from the pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool_hit_pct: Option<f64>,
    /// Every application's cold-start percentage, for the CDF.
    #[serde(skip)]
    pub per_app_cold_pct: Vec<f64>,
    /// Pooling only: per minute, the demand for new instances and the pool's capacity.
    #[serde(skip)]
    pub pool_series: Vec<(f64, f64)>,
}

/// What replaying one application under a keep-alive policy gave.
struct AppRun {
    calls: u64,
    /// Times (s) of the calls that found no loaded instance.
    cold_at: Vec<f64>,
    idle_s: f64,
    loaded_s: f64,
}

/// Call times of one application: each minute's calls spread evenly over it.
fn arrivals(app: &App) -> impl Iterator<Item = f64> + '_ {
    app.per_minute.iter().enumerate().flat_map(|(minute, count)| {
        let step = 60.0 / f64::from((*count).max(1));
        (0..*count).map(move |i| minute as f64 * 60.0 + (f64::from(i) + 0.5) * step)
    })
}

/// Where, within an idle gap of `gap` seconds after an execution, the instance is loaded.
fn loaded_in_gap(w: Windows, gap: f64) -> (f64, bool) {
    let (from, to) = (w.prewarm_s, w.prewarm_s + w.keep_alive_s);
    let loaded = (to.min(gap) - from.min(gap)).max(0.0);
    let warm = gap >= from && gap <= to;
    (loaded, warm)
}

fn replay_app(app: &App, mut policy: KeepAlive, end_s: f64) -> AppRun {
    let duration = app.duration_ms / 1000.0;
    let mut run = AppRun {
        calls: 0,
        cold_at: Vec::new(),
        idle_s: 0.0,
        loaded_s: 0.0,
    };
    // When the current busy period ends; `None` before the first call.
    let mut busy_until: Option<f64> = None;
    for at in arrivals(app) {
        run.calls += 1;
        match busy_until {
            Some(until) if at < until => {
                run.loaded_s += (at + duration - until).max(0.0);
                busy_until = Some(until.max(at + duration));
            }
            Some(until) => {
                let gap = at - until;
                let (loaded, warm) = loaded_in_gap(policy.windows(), gap);
                run.idle_s += loaded;
                run.loaded_s += loaded + duration;
                policy.observe_idle(gap);
                if !warm {
                    run.cold_at.push(at);
                }
                busy_until = Some(at + duration);
            }
            None => {
                run.cold_at.push(at);
                run.loaded_s += duration;
                busy_until = Some(at + duration);
            }
        }
    }
    if let Some(until) = busy_until.filter(|u| *u < end_s) {
        let (loaded, _) = loaded_in_gap(policy.windows(), end_s - until);
        run.idle_s += loaded;
        run.loaded_s += loaded;
    }
    run
}

fn pct(part: f64, whole: f64) -> f64 {
    if whole == 0.0 {
        0.0
    } else {
        100.0 * part / whole
    }
}

fn p75(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (0.75 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Replays the whole trace under one policy.
pub fn simulate(trace: &Trace, policy: Policy, name: &str) -> PolicyReport {
    let end_s = trace.minutes as f64 * 60.0;
    let keep_alive = |p: Policy| match p {
        Policy::Fixed { keep_alive_s } => KeepAlive::fixed(keep_alive_s),
        Policy::HybridHistogram { fallback_s } => KeepAlive::hybrid(fallback_s),
        Policy::Pooling(spec) => KeepAlive::fixed(spec.app_keep_alive_s),
    };
    let runs: Vec<AppRun> = trace
        .apps
        .iter()
        .map(|app| replay_app(app, keep_alive(policy), end_s))
        .collect();
    let invocations: u64 = runs.iter().map(|r| r.calls).sum();
    let mut idle_gb_s: f64 = runs
        .iter()
        .zip(&trace.apps)
        .map(|(r, app)| r.idle_s * app.memory_mb / 1024.0)
        .sum();
    let mut instance_seconds: f64 = runs.iter().map(|r| r.loaded_s).sum();
    let mut cold_per_app: Vec<u64> = runs.iter().map(|r| r.cold_at.len() as u64).collect();
    let mut pool_hit_pct = None;
    let mut pool_series = Vec::new();

    if let Policy::Pooling(spec) = policy {
        // Every start the apps' own instances could not serve, in time order.
        let mut starts: Vec<(f64, usize)> = runs
            .iter()
            .enumerate()
            .flat_map(|(i, r)| r.cold_at.iter().map(move |t| (*t, i)))
            .collect();
        starts.sort_by(|a, b| a.0.total_cmp(&b.0));
        cold_per_app.iter_mut().for_each(|c| *c = 0);
        let mut sizer = PoolSizer::new(spec.half_life_s, spec.floor, spec.cap);
        let mut hits = 0u64;
        let mut next = 0;
        for minute in 0..trace.minutes {
            let minute_end = (minute + 1) as f64 * 60.0;
            // The pool is filled to its capacity at the start of each minute.
            let capacity = sizer.capacity().ceil();
            let mut available = capacity;
            let mut demand = 0.0;
            while next < starts.len() && starts[next].0 < minute_end {
                let (_, app) = starts[next];
                demand += 1.0;
                if available >= 1.0 {
                    available -= 1.0;
                    hits += 1;
                } else {
                    cold_per_app[app] += 1;
                }
                next += 1;
            }
            // Unused pool instances sat idle all minute.
            idle_gb_s += available * 60.0 * spec.instance_mb / 1024.0;
            instance_seconds += available * 60.0;
            pool_series.push((demand, capacity));
            sizer.update(demand, 60.0);
        }
        pool_hit_pct = Some(pct(hits as f64, invocations as f64));
    }

    let per_app_cold_pct: Vec<f64> = runs
        .iter()
        .zip(&cold_per_app)
        .map(|(r, cold)| pct(*cold as f64, r.calls as f64))
        .collect();
    let cold: u64 = cold_per_app.iter().sum();
    PolicyReport {
        policy: name.to_string(),
        invocations,
        cold_start_pct: pct(cold as f64, invocations as f64),
        cold_start_pct_p75: p75(&per_app_cold_pct),
        idle_memory_gb_s: idle_gb_s,
        instance_seconds,
        pool_hit_pct,
        per_app_cold_pct,
        pool_series,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{parse, tests as fixtures};

    fn app(per_minute: Vec<u32>) -> App {
        App {
            id: "a".into(),
            per_minute,
            duration_ms: 1000.0,
            memory_mb: 1024.0,
        }
    }

    fn trace(apps: Vec<App>) -> Trace {
        Trace {
            first_minute: 0,
            minutes: apps[0].per_minute.len(),
            apps,
        }
    }

    #[test]
    fn calls_are_spread_over_their_minute() {
        let times: Vec<f64> = arrivals(&app(vec![2, 0, 1])).collect();
        assert_eq!(times, vec![15.0, 45.0, 150.0]);
    }

    #[test]
    fn a_long_keep_alive_trades_memory_for_cold_starts() {
        // A call every five minutes for an hour.
        let t = trace(vec![app((0..60).map(|m| u32::from(m % 5 == 0)).collect())]);
        let long = simulate(&t, Policy::named("fixed-10m").unwrap(), "fixed-10m");
        let short = simulate(&t, Policy::named("fixed-30s").unwrap(), "fixed-30s");
        assert_eq!(long.invocations, 12);
        assert!(
            (long.cold_start_pct - 100.0 / 12.0).abs() < 1e-9,
            "only the first: {long:?}"
        );
        assert_eq!(short.cold_start_pct, 100.0, "every call is cold");
        // Idle at 1 GiB: 11 gaps of 299 s kept whole, then the 269 s to the trace's end;
        // against 30 s after each of the 12 calls.
        assert!(
            (long.idle_memory_gb_s - (11.0 * 299.0 + 269.0)).abs() < 1e-6,
            "{long:?}"
        );
        assert!((short.idle_memory_gb_s - 12.0 * 30.0).abs() < 1e-6, "{short:?}");
    }

    #[test]
    fn the_histogram_learns_a_timer_and_prewarms_for_it() {
        // A timer every 30 minutes for 8 hours.
        let t = trace(vec![app((0..480).map(|m| u32::from(m % 30 == 0)).collect())]);
        let fixed = simulate(&t, Policy::named("fixed-10m").unwrap(), "fixed-10m");
        let hybrid = simulate(&t, Policy::named("hybrid-histogram").unwrap(), "hybrid-histogram");
        assert_eq!(fixed.cold_start_pct, 100.0, "10 min never bridges 30");
        assert!(hybrid.cold_start_pct < 75.0, "{hybrid:?}");
        assert!(
            hybrid.idle_memory_gb_s < fixed.idle_memory_gb_s,
            "once learnt it unloads between calls: {hybrid:?} {fixed:?}"
        );
    }

    #[test]
    fn the_pool_serves_starts_the_apps_could_not() {
        let apps: Vec<App> = (0..20)
            .map(|i| App {
                id: format!("a{i}"),
                ..app((0..30).map(|m| u32::from(m % 10 == i % 10)).collect())
            })
            .collect();
        let t = trace(apps);
        let fixed = simulate(&t, Policy::named("fixed-30s").unwrap(), "fixed-30s");
        let pooled = simulate(&t, Policy::named("pooling").unwrap(), "pooling");
        assert_eq!(fixed.cold_start_pct, 100.0);
        assert!(pooled.cold_start_pct < fixed.cold_start_pct, "{pooled:?}");
        assert!(pooled.pool_hit_pct.unwrap() > 50.0);
        assert_eq!(pooled.pool_series.len(), 30);
        assert!(
            pooled.pool_series.iter().skip(1).all(|(d, c)| c >= d || *d > 1.0),
            "capacity hugs demand"
        );
    }

    #[test]
    fn the_parsed_fixture_replays() {
        let t = parse(fixtures::INVOCATIONS, fixtures::DURATIONS, fixtures::MEMORY).unwrap();
        for name in Policy::NAMES {
            let r = simulate(&t, Policy::named(name).unwrap(), name);
            assert_eq!(r.invocations, 8, "{name}");
            assert!(r.cold_start_pct > 0.0 && r.cold_start_pct <= 100.0, "{name}: {r:?}");
        }
    }
}
