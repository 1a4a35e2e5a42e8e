//! The periodic loops' shared shape.

use std::future::Future;
use std::time::Duration;

/// Runs `work` every `period` until `stop`, the first time at once; a tick missed
/// while `work` ran late is not made up for.
pub async fn every<F, Fut>(period: Duration, stop: impl Future<Output = ()>, mut work: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = &mut stop => return,
        }
        work().await;
    }
}
