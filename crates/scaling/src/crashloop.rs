//! Restart back-off for instances that keep failing, as Kubernetes' kubelet does for
//! containers (`CrashLoopBackOff`): the first failure is retried at once, each further
//! one in a row waits twice as long as the last, from 10 s up to 5 min. An instance
//! that ran for 10 min, or that the platform itself stopped after serving, ends the
//! streak.

/// The wait after the second failure in a row.
pub const INITIAL_BACKOFF_US: i64 = 10 * 1_000_000;
/// The longest wait.
pub const MAX_BACKOFF_US: i64 = 300 * 1_000_000;
/// An instance that was ready this long before it failed ends the streak.
pub const HEALTHY_RUN_US: i64 = 600 * 1_000_000;

/// One revision's failures in a row, and when it may start an instance again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CrashLoop {
    /// Failures since the streak began (0: none).
    pub failures: u32,
    /// How the last failure went, for people to read.
    pub last_failure: Option<String>,
    pub last_failure_us: i64,
    /// No instance starts before this time.
    pub next_start_us: i64,
}

impl CrashLoop {
    /// The wait before the next start after `failures` failures in a row.
    pub fn delay_us(failures: u32) -> i64 {
        match failures {
            0 | 1 => 0,
            n => INITIAL_BACKOFF_US
                .saturating_mul(1 << (n - 2).min(16))
                .min(MAX_BACKOFF_US),
        }
    }

    /// An instance failed: it exited before it was ready (`ready_for_us` is 0), or on
    /// its own after `ready_for_us` of serving. Returns the wait before the next start.
    pub fn failed(&mut self, now_us: i64, ready_for_us: i64, what: String) -> i64 {
        if ready_for_us >= HEALTHY_RUN_US {
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        let delay = Self::delay_us(self.failures);
        self.last_failure = Some(what);
        self.last_failure_us = now_us;
        self.next_start_us = now_us + delay;
        delay
    }

    /// An instance served and the platform stopped it: the app works.
    pub fn recovered(&mut self) {
        self.failures = 0;
        self.next_start_us = 0;
    }

    /// How long starts must still wait, if they must.
    pub fn waiting_us(&self, now_us: i64) -> Option<i64> {
        (self.next_start_us > now_us).then(|| self.next_start_us - now_us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;

    #[test]
    fn waits_double_from_ten_seconds_to_five_minutes_after_the_first_retry() {
        let waits: Vec<i64> = (1..=8).map(|n| CrashLoop::delay_us(n) / S).collect();
        assert_eq!(waits, vec![0, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(CrashLoop::delay_us(u32::MAX), MAX_BACKOFF_US, "no overflow");
    }

    #[test]
    fn failures_in_a_row_hold_starts_back_until_their_time() {
        let mut crash = CrashLoop::default();
        assert_eq!(crash.failed(100 * S, 0, "exited with code 1".into()), 0);
        assert_eq!(crash.waiting_us(100 * S), None, "the first failure is retried at once");
        assert_eq!(crash.failed(101 * S, 0, "exited with code 1".into()), 10 * S);
        assert_eq!(crash.waiting_us(105 * S), Some(6 * S));
        assert_eq!(crash.waiting_us(111 * S), None);
        assert_eq!(crash.failed(111 * S, 2 * S, "exited with code 2".into()), 20 * S);
        assert_eq!(crash.failures, 3);
        assert_eq!(crash.last_failure.as_deref(), Some("exited with code 2"));
        assert_eq!(crash.last_failure_us, 111 * S);
    }

    #[test]
    fn a_long_healthy_run_or_a_clean_stop_ends_the_streak() {
        let mut crash = CrashLoop::default();
        for at in 0..4 {
            crash.failed(at * S, 0, "exited".into());
        }
        assert_eq!(crash.failures, 4);
        assert_eq!(crash.failed(1000 * S, HEALTHY_RUN_US, "exited".into()), 0);
        assert_eq!(crash.failures, 1);

        crash.failed(1001 * S, 0, "exited".into());
        assert!(crash.waiting_us(1002 * S).is_some());
        crash.recovered();
        assert_eq!(crash.failures, 0);
        assert_eq!(crash.waiting_us(1002 * S), None);
    }
}
