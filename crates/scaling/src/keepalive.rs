//! Keep-alive policies: how long an idle application's instance stays loaded, and
//! whether it is unloaded at once and loaded again just before the next call is due.
//!
//! `fixed` keeps it for a set time after each execution (Knative's grace period,
//! OpenWhisk's ten minutes). `hybrid-histogram` is the policy of "Serverless in the
//! Wild" (Shahrad et al., USENIX ATC 2020): a histogram of the application's idle
//! times gives a pre-warm time (its head) and a keep-alive window (to its tail), and
//! it falls back to fixed while the histogram is not representative.

/// After an execution ends: unload for `prewarm_s` (0: stay loaded), then keep the
/// instance loaded for `keep_alive_s`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Windows {
    pub prewarm_s: f64,
    pub keep_alive_s: f64,
}

/// Histogram bins are one minute; the range is four hours, as in the paper.
const BIN_S: f64 = 60.0;
const BINS: usize = 240;
/// Idle times needed before the histogram is trusted.
const MIN_SAMPLES: u32 = 10;
/// The histogram's bin counts must vary this much (coefficient of variation): a flat
/// histogram predicts nothing.
const MIN_CV: f64 = 2.0;
/// Head and tail percentiles, and the margins the paper adds to them.
const HEAD: f64 = 0.05;
const TAIL: f64 = 0.99;
const MARGIN: f64 = 0.10;

#[derive(Debug, Clone)]
pub enum KeepAlive {
    Fixed { keep_alive_s: f64 },
    Hybrid(Histogram),
}

#[derive(Debug, Clone)]
pub struct Histogram {
    bins: Vec<u32>,
    samples: u32,
    /// Idle times past the range.
    out_of_bounds: u32,
    fallback_s: f64,
}

impl KeepAlive {
    pub fn fixed(keep_alive_s: f64) -> Self {
        KeepAlive::Fixed { keep_alive_s }
    }

    /// A hybrid histogram that keeps instances `fallback_s` until it knows better.
    pub fn hybrid(fallback_s: f64) -> Self {
        KeepAlive::Hybrid(Histogram {
            bins: vec![0; BINS],
            samples: 0,
            out_of_bounds: 0,
            fallback_s,
        })
    }

    /// Learns one idle time: from the end of an execution to the next call.
    pub fn observe_idle(&mut self, idle_s: f64) {
        if let KeepAlive::Hybrid(h) = self {
            h.samples += 1;
            let bin = (idle_s / BIN_S) as usize;
            match h.bins.get_mut(bin) {
                Some(count) => *count += 1,
                None => h.out_of_bounds += 1,
            }
        }
    }

    pub fn windows(&self) -> Windows {
        match self {
            KeepAlive::Fixed { keep_alive_s } => Windows {
                prewarm_s: 0.0,
                keep_alive_s: *keep_alive_s,
            },
            KeepAlive::Hybrid(h) => h.windows(),
        }
    }
}

impl Histogram {
    fn representative(&self) -> bool {
        let in_range = self.samples - self.out_of_bounds;
        if in_range < MIN_SAMPLES || self.out_of_bounds * 2 > self.samples {
            return false;
        }
        let n = self.bins.len() as f64;
        let mean = f64::from(in_range) / n;
        let var = self.bins.iter().map(|c| (f64::from(*c) - mean).powi(2)).sum::<f64>() / n;
        var.sqrt() / mean >= MIN_CV
    }

    /// The bin where the cumulative count reaches `share` of the in-range samples.
    fn percentile_bin(&self, share: f64) -> usize {
        let total = f64::from(self.samples - self.out_of_bounds);
        let mut seen = 0.0;
        for (i, c) in self.bins.iter().enumerate() {
            seen += f64::from(*c);
            if seen >= share * total {
                return i;
            }
        }
        self.bins.len() - 1
    }

    fn windows(&self) -> Windows {
        if !self.representative() {
            return Windows {
                prewarm_s: 0.0,
                keep_alive_s: self.fallback_s,
            };
        }
        let head = self.percentile_bin(HEAD) as f64 * BIN_S;
        let tail = (self.percentile_bin(TAIL) + 1) as f64 * BIN_S;
        let prewarm_s = head * (1.0 - MARGIN);
        Windows {
            prewarm_s,
            keep_alive_s: tail * (1.0 + MARGIN) - prewarm_s,
        }
    }
}

/// Pool capacity that follows demand for new instances: up at once when demand jumps,
/// down by half every `half_life_s` when it falls, within `[floor, cap]`.
#[derive(Debug, Clone)]
pub struct PoolSizer {
    pub half_life_s: f64,
    pub floor: f64,
    pub cap: f64,
    capacity: f64,
}

impl PoolSizer {
    pub fn new(half_life_s: f64, floor: f64, cap: f64) -> Self {
        PoolSizer {
            half_life_s,
            floor,
            cap,
            capacity: floor,
        }
    }

    /// The capacity after `elapsed_s` in which `demand` new instances were wanted.
    pub fn update(&mut self, demand: f64, elapsed_s: f64) -> f64 {
        let decayed = self.capacity * 0.5f64.powf(elapsed_s / self.half_life_s.max(1e-9));
        self.capacity = demand.max(decayed).clamp(self.floor, self.cap.max(self.floor));
        self.capacity
    }

    pub fn capacity(&self) -> f64 {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_keeps_for_its_window() {
        let k = KeepAlive::fixed(600.0);
        assert_eq!(
            k.windows(),
            Windows {
                prewarm_s: 0.0,
                keep_alive_s: 600.0
            }
        );
    }

    #[test]
    fn hybrid_falls_back_until_the_histogram_is_representative() {
        let mut k = KeepAlive::hybrid(600.0);
        for _ in 0..5 {
            k.observe_idle(30.0 * 60.0);
        }
        assert_eq!(k.windows().keep_alive_s, 600.0, "too few idle times");
        // A timer every 30 minutes: unload, pre-warm a little before 30 min, keep a little past.
        for _ in 0..20 {
            k.observe_idle(30.0 * 60.0 + 10.0);
        }
        let w = k.windows();
        assert!((w.prewarm_s - 30.0 * 60.0 * 0.9).abs() < 1e-6, "{w:?}");
        assert!(w.prewarm_s + w.keep_alive_s >= 31.0 * 60.0, "{w:?}");
        assert!(w.prewarm_s + w.keep_alive_s < 35.0 * 60.0, "{w:?}");
    }

    #[test]
    fn a_flat_or_out_of_range_histogram_is_not_trusted() {
        let mut flat = KeepAlive::hybrid(60.0);
        for minute in 0..240 {
            flat.observe_idle(f64::from(minute) * 60.0 + 1.0);
        }
        assert_eq!(flat.windows().keep_alive_s, 60.0);
        let mut far = KeepAlive::hybrid(60.0);
        for _ in 0..20 {
            far.observe_idle(5.0 * 3600.0);
        }
        assert_eq!(far.windows().keep_alive_s, 60.0);
    }

    #[test]
    fn the_pool_grows_at_once_and_shrinks_slowly() {
        let mut pool = PoolSizer::new(300.0, 1.0, 50.0);
        assert_eq!(pool.update(20.0, 60.0), 20.0);
        assert_eq!(pool.update(0.0, 300.0), 10.0, "half after one half-life");
        assert_eq!(pool.update(80.0, 60.0), 50.0, "capped");
        for _ in 0..100 {
            pool.update(0.0, 300.0);
        }
        assert_eq!(pool.capacity(), 1.0, "never below the floor");
    }
}
