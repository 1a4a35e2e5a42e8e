//! Rate limits: a token bucket per service and per namespace, checked before a request
//! is routed, so a request over the limit costs no instance anything.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};
use updraft_model::annotations::RateLimit;

pub struct RateLimiter {
    /// What the limit belongs to, for the refusal's message (`service hello`).
    pub scope: String,
    pub limit: RateLimit,
    /// Per minute rather than per second (a namespace's quota).
    pub per_minute: bool,
    bucket: DefaultDirectRateLimiter,
    clock: DefaultClock,
}

impl RateLimiter {
    pub fn new(scope: String, limit: RateLimit) -> Self {
        let per_second = NonZeroU32::new(limit.per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(limit.burst).unwrap_or(per_second);
        RateLimiter {
            scope,
            limit,
            per_minute: false,
            bucket: DefaultDirectRateLimiter::direct(Quota::per_second(per_second).allow_burst(burst)),
            clock: DefaultClock::default(),
        }
    }

    /// `n` a minute, all of which may come at once (OpenWhisk's per-minute quotas).
    pub fn per_minute(scope: String, n: u32) -> Self {
        let n = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        RateLimiter {
            scope,
            limit: RateLimit {
                per_second: n.get(),
                burst: n.get(),
            },
            per_minute: true,
            bucket: DefaultDirectRateLimiter::direct(Quota::per_minute(n).allow_burst(n)),
            clock: DefaultClock::default(),
        }
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
        if self.per_minute {
            format!("{} of {} a minute is used up", self.scope, self.limit.per_second)
        } else {
            format!(
                "{} is over its rate limit of {} requests/s (burst {})",
                self.scope, self.limit.per_second, self.limit.burst
            )
        }
    }

    /// Takes a token, or tells how long until one is free.
    pub fn check(&self) -> Result<(), Duration> {
        self.bucket
            .check()
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let limiter = RateLimiter::new(
            "service hello".into(),
            RateLimit {
                per_second: 1,
                burst: 3,
            },
        );
        for _ in 0..3 {
            assert!(limiter.check().is_ok());
        }
        let wait = limiter.check().unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
    }

    #[test]
    fn a_per_minute_quota_takes_its_count_then_waits_for_the_minute() {
        let limiter = RateLimiter::per_minute("namespace t's quota".into(), 2);
        assert!(limiter.check().is_ok() && limiter.check().is_ok());
        let wait = limiter.check().unwrap_err();
        assert!(
            wait > Duration::from_secs(1) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert_eq!(limiter.refusal(), "namespace t's quota of 2 a minute is used up");
    }
}
