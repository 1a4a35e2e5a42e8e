//! Pure scaling deciders. The caller passes in the clock (`now_us`) and the observed
//! load, so every rule is a function that tests and a trace simulator can drive.

mod crashloop;
mod keepalive;
mod kpa;
pub mod sim;
pub mod trace;

pub use crashloop::CrashLoop;
pub use keepalive::{KeepAlive, PoolSizer, Windows};
pub use kpa::{Autoscaler, KeepAlivePolicy, LoadPoint, Metric, RevisionLoad, ScaleDecision, ScalingSpec, Why};
