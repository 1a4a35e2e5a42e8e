//! The data plane: route by Host, pick a ready instance of the revision, or hold the
//! request in the activator while the scaler starts one, then proxy with streaming
//! bodies over pooled keep-alive connections.
//!
//! The hot path takes no global lock and does no store I/O: the route table and each
//! revision's endpoint list are snapshots swapped whole on change.

mod activator;
mod endpoints;
mod flow;
mod listener;
mod private;
mod proxy;
mod routes;
mod upstream;

pub use activator::{Access, ActivatorConfig, Poke, RequestObserver};
pub use endpoints::{Endpoint, LoadSample, RevisionEndpoints, RevisionKey, RevisionLimits};
pub use flow::{Limiters, Rate, RateLimiter};
pub use listener::{serve_connections, ConnectionLimits};
pub use private::{GuardFuture, InvokeGuard, Trusted};
pub use proxy::{serve, Gateway, GatewayBody};
pub use routes::{host_for, tag_host_for, HostMap, RouteTable, ServiceRoute};
pub use upstream::UpstreamPool;
