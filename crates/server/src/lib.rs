//! The composition root: opens the store, builds the runtime, gateway and scaler from
//! it, and serves the REST API. Nothing else depends on this crate but the CLI.

mod api;
mod authz;
mod autoscale;
mod builds;
mod config;
mod data_dir;
mod delivery;
mod deploy;
mod deploy_watch;
mod describe;
mod descriptors;
mod domain_api;
mod editions;
mod error;
mod extract;
mod fire_quotas;
mod firewall;
mod image_api;
mod instance_logs;
mod instances;
mod locks;
mod meter;
mod node_revisions;
mod observe_api;
mod openapi;
mod packages;
mod platform;
mod progress;
mod quota;
mod reconcile;
mod retention;
mod revision_build;
mod revision_state;
mod revisions;
mod routes;
mod routing;
mod secret_api;
mod secrets;
mod serve;
#[cfg(test)]
mod testkit;
mod ticks;
mod tls;
mod token_api;
mod trigger_api;
mod triggers;

pub use builds::BuildLimits;
pub use config::{Paths, PoolConfig, ServerConfig};
pub use error::ApiError;
pub use serve::run;
pub use tls::TlsFiles;
pub use updraft_api::views;
pub use updraft_gateway::{ActivatorConfig, ConnectionLimits, UpstreamPool};
pub use updraft_runtime::wasm::WasmPoolConfig;
pub use updraft_runtime::StemOrder;
