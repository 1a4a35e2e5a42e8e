//! Rate limits: a token bucket per service and per namespace, checked before a request
//! is routed, so a request over the limit costs no instance anything.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};
use updraft_model::annotations::RateLimit;

/// How fast a bucket refills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    /// A service's or namespace's limit: requests a second, with a burst.
    PerSecond(RateLimit),
    /// A namespace's quota: `n` a minute, all of which may come at once (OpenWhisk's).
    PerMinute(u32),
}

pub struct RateLimiter {
    /// What the limit belongs to, for the refusal's message (`service hello`).
    pub scope: String,
    pub rate: Rate,
    bucket: DefaultDirectRateLimiter,
    clock: DefaultClock,
}

impl RateLimiter {
    pub fn new(scope: String, rate: Rate) -> Self {
        let quota = match rate {
            Rate::PerSecond(limit) => {
                let per_second = NonZeroU32::new(limit.per_second).unwrap_or(NonZeroU32::MIN);
                let burst = NonZeroU32::new(limit.burst).unwrap_or(per_second);
                Quota::per_second(per_second).allow_burst(burst)
            }
            Rate::PerMinute(n) => {
                let n = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
                Quota::per_minute(n).allow_burst(n)
            }
        };
        RateLimiter {
            scope,
            rate,
            bucket: DefaultDirectRateLimiter::direct(quota),
            clock: DefaultClock::default(),
        }
    }

    /// Takes a token, or tells how long until one is free.
    pub fn check(&self) -> Result<(), Duration> {
        self.bucket
            .check()
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Takes `n` tokens at once, or tells how long until they are free (`None`: never,
    /// `n` is more than the bucket holds).
    pub fn check_n(&self, n: u32) -> Result<(), Option<Duration>> {
        let Some(n) = NonZeroU32::new(n) else {
            return Ok(());
        };
        match self.bucket.check_n(n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(Some(not_until.wait_time_from(self.clock.now()))),
            Err(_) => Err(None),
        }
    }

    /// What a refused request is told.
    pub fn refusal(&self) -> String {
        match self.rate {
            Rate::PerSecond(limit) => format!(
                "{} is over its rate limit of {} requests/s (burst {})",
                self.scope, limit.per_second, limit.burst
            ),
            Rate::PerMinute(n) => format!("{} of {n} a minute is used up", self.scope),
        }
    }
}

/// Limiters by scope, kept while their rate stays, so rebuilding a route (or reading a
/// namespace's quota again) does not refill a bucket.
#[derive(Default)]
pub struct Limiters(HashMap<String, Arc<RateLimiter>>);

impl Limiters {
    /// The scope's limiter at `rate`: the one kept, or a new, full one if the rate
    /// changed or there was none.
    pub fn get(&mut self, scope: String, rate: Rate) -> Arc<RateLimiter> {
        if let Some(kept) = self.0.get(&scope).filter(|l| l.rate == rate) {
            return kept.clone();
        }
        let made = Arc::new(RateLimiter::new(scope.clone(), rate));
        self.0.insert(scope, made.clone());
        made
    }

    pub fn remove(&mut self, scope: &str) {
        self.0.remove(scope);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let limiter = RateLimiter::new(
            "service hello".into(),
            Rate::PerSecond(RateLimit {
                per_second: 1,
                burst: 3,
            }),
        );
        for _ in 0..3 {
            assert!(limiter.check().is_ok());
        }
        let wait = limiter.check().unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
    }

    #[test]
    fn a_per_minute_quota_takes_its_count_then_waits_for_the_minute() {
        let limiter = RateLimiter::new("namespace t's quota".into(), Rate::PerMinute(2));
        assert!(limiter.check().is_ok() && limiter.check().is_ok());
        let wait = limiter.check().unwrap_err();
        assert!(
            wait > Duration::from_secs(1) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert_eq!(limiter.refusal(), "namespace t's quota of 2 a minute is used up");
    }

    #[test]
    fn a_kept_limiter_keeps_its_bucket_until_its_rate_changes() {
        let mut limiters = Limiters::default();
        let first = limiters.get("q".into(), Rate::PerMinute(1));
        assert!(first.check().is_ok());
        assert!(
            limiters.get("q".into(), Rate::PerMinute(1)).check().is_err(),
            "the same bucket"
        );
        assert!(
            limiters.get("q".into(), Rate::PerMinute(2)).check().is_ok(),
            "a new rate, a new bucket"
        );
        limiters.remove("q");
        assert!(!Arc::ptr_eq(&first, &limiters.get("q".into(), Rate::PerMinute(1))));
    }
}
