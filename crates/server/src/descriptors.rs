//! Open file descriptors: every connection, every instance's pipes and every log file
//! takes one. The soft limit is raised to the hard one at start (1024 is a common soft
//! limit), and each listener's connection cap is kept within what is left, so a flood
//! of connections to the gateway cannot take the descriptors the API, the store and
//! the instances need.

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use updraft_gateway::ConnectionLimits;

/// Descriptors kept for the store, logs, instances' pipes and the runtime.
const RESERVED: u64 = 512;

/// Raises the soft limit on open files to the hard limit; returns the limit in force.
pub fn raise_open_file_limit() -> u64 {
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!(soft, hard, error = %e, "cannot raise the open-file limit");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    }
}

/// The caps the gateway and the API get under `open_files`: the gateway's connections
/// each hold one to an instance too, so two descriptors each; the API gets an eighth
/// of the rest. A cap asked for that does not fit is lowered, and the log says so.
pub fn fit(gateway: ConnectionLimits, api: ConnectionLimits, open_files: u64) -> (ConnectionLimits, ConnectionLimits) {
    let spare = open_files.saturating_sub(RESERVED).max(64);
    let api_fits = (spare / 8).max(16) as usize;
    let gateway_fits = ((spare - api_fits as u64) / 2).max(16) as usize;
    let fitted = |limits: ConnectionLimits, fits: usize, name: &str| {
        if limits.max_connections > fits {
            tracing::info!(
                listener = name,
                asked = limits.max_connections,
                cap = fits,
                open_files,
                "connection cap lowered to fit the open-file limit"
            );
        }
        ConnectionLimits {
            max_connections: limits.max_connections.min(fits),
            ..limits
        }
    };
    (fitted(gateway, gateway_fits, "gateway"), fitted(api, api_fits, "API"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asking(max_connections: usize) -> ConnectionLimits {
        ConnectionLimits {
            max_connections,
            ..Default::default()
        }
    }

    #[test]
    fn caps_fit_the_descriptors_with_room_for_the_rest() {
        let (gateway, api) = fit(asking(10_000), asking(1024), 1024);
        assert_eq!((gateway.max_connections, api.max_connections), (224, 64));
        assert!(gateway.max_connections * 2 + api.max_connections + RESERVED as usize <= 1024);
        let (gateway, api) = fit(asking(10_000), asking(1024), 1 << 20);
        assert_eq!(
            (gateway.max_connections, api.max_connections),
            (10_000, 1024),
            "asked caps that fit stay"
        );
        let (gateway, _) = fit(asking(10_000), asking(1024), 100);
        assert_eq!(gateway.max_connections, 24, "a floor, however small the limit");
    }
}
