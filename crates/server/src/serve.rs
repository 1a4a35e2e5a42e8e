//! Start-up and shutdown: opens the platform, starts its loops and listeners, and
//! stops them in order.

use std::io::Write;

use anyhow::Context;
use updraft_runtime::clock::now_us;

use crate::platform::{Opened, Platform};
use crate::routes::RouteReconciler;
use crate::ServerConfig;

/// Runs the platform until `stop_signals` counts one, then drains requests and stops
/// every instance. A second one cuts the drain and the instances' grace short: the
/// instances are still stopped, at once.
pub async fn run(config: ServerConfig, mut stop_signals: tokio::sync::watch::Receiver<u32>) -> anyhow::Result<()> {
    let gateway_listener = tokio::net::TcpListener::bind(config.gateway_addr)
        .await
        .with_context(|| format!("cannot listen for the gateway on {}", config.gateway_addr))?;
    let api_listener = tokio::net::TcpListener::bind(config.api_addr)
        .await
        .with_context(|| format!("cannot listen for the API on {}", config.api_addr))?;
    let Opened {
        platform,
        pokes,
        routes_applied,
        snapshot,
    } = Platform::open(config)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    // Listed before anything is served, so the first request finds its route.
    let mut route_reconciler = RouteReconciler::new(&platform.config.domain, platform.routes.clone(), platform.clone());
    route_reconciler.reset(&snapshot, now_us());
    let routes = tokio::spawn(route_reconciler.run(platform.store.clone(), routes_applied, stopped(stop_rx.clone())));

    let scaler = tokio::spawn(crate::scaler::run(platform.clone(), pokes, stopped(stop_rx.clone())));
    let pool = tokio::spawn(crate::scaler::keep_pool(platform.clone(), stopped(stop_rx.clone())));
    let meter = tokio::spawn(crate::meter::run(platform.clone(), stopped(stop_rx.clone())));
    let retention = tokio::spawn(crate::retention::run(platform.clone(), stopped(stop_rx.clone())));
    let schedule = tokio::spawn(crate::triggers::schedule(platform.clone(), stopped(stop_rx.clone())));
    let dispatch = tokio::spawn(crate::delivery::dispatch(platform.clone(), stopped(stop_rx.clone())));
    let sources = tokio::spawn(crate::sources::run_sources(platform.clone(), stopped(stop_rx.clone())));
    let open_files = crate::descriptors::raise_open_file_limit();
    let (gateway_limits, api_limits) = crate::descriptors::fit(
        platform.config.gateway_connections,
        platform.config.api_connections,
        open_files,
    );
    let gateway = tokio::spawn(updraft_gateway::serve(
        gateway_listener,
        platform.gateway.clone(),
        gateway_limits,
        stopped(stop_rx.clone()),
    ));
    let api = tokio::spawn({
        let router = crate::api::router(platform.clone());
        let make = move |_| hyper_util::service::TowerToHyperService::new(router.clone());
        updraft_gateway::serve_connections("API", api_listener, api_limits, make, stopped(stop_rx.clone()))
    });
    let config = &platform.config;
    // Not println!: a closed stdout (a pipe whose reader is gone) must not panic.
    let _ = writeln!(
        std::io::stdout(),
        "updraft is up: gateway http://{} (services at http://{{service}}.{{namespace}}.{}:{}), API http://{}, data {}, cgroup {}",
        config.gateway_addr,
        config.domain,
        config.gateway_addr.port(),
        config.api_addr,
        config.data_dir.display(),
        platform.cgroup_version,
    );

    let _ = stop_signals.wait_for(|n| *n >= 1).await;
    tracing::info!("shutting down: draining requests in flight (signal again to stop at once)");
    let _ = stop_tx.send(true);
    let second = |mut signals: tokio::sync::watch::Receiver<u32>| async move {
        let _ = signals.wait_for(|n| *n >= 2).await;
    };
    tokio::select! {
        drained = tokio::time::timeout(platform.config.drain_timeout, gateway) => {
            if drained.is_err() {
                tracing::warn!("requests still open after the drain timeout");
            }
        }
        () = second(stop_signals.clone()) => {
            tracing::warn!("stopping at once: requests in flight are cut");
            platform.stopping_now.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    // The API's own requests (a `logs --follow` never ends by itself) get the same
    // bound, and none after a second signal.
    tokio::select! {
        _ = tokio::time::timeout(platform.config.drain_timeout, api) => {}
        () = second(stop_signals.clone()) => {}
    }
    let _ = scaler.await;
    let _ = routes.await;
    let _ = pool.await;
    let _ = meter.await;
    let _ = retention.await;
    let _ = schedule.await;
    let _ = dispatch.await;
    let _ = sources.await;
    platform.meter();
    platform.runtime.resize_pool(0);
    let stops = platform.stop_revisions(platform.all_revision_states());
    tokio::pin!(stops);
    tokio::select! {
        () = &mut stops => {}
        () = second(stop_signals.clone()) => {
            tracing::warn!("stopping at once: instances are killed without their grace");
            platform.stopping_now.store(true, std::sync::atomic::Ordering::Relaxed);
            for state in platform.all_revision_states() {
                for managed in state.instances() {
                    managed.instance.kill();
                }
            }
            stops.await;
        }
    }
    Ok(())
}
