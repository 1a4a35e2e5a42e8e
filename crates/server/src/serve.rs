//! Start-up and shutdown: opens the platform, starts its loops and listeners, and
//! stops them in order.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use updraft_events::dispatch::{Dispatcher, Transport};
use updraft_events::sources::Sources;
use updraft_runtime::clock::now_us;

use crate::autoscale::Autoscale;
use crate::delivery::GatewayTransport;
use crate::instances::RoutedRevisions;
use crate::platform::{Opened, Platform};
use crate::quota::LimitsFollower;
use crate::reconcile::{follow, spawn_follower, Reconciler};
use crate::revisions::RevisionReconciler;
use crate::routes::RouteReconciler;
use crate::triggers::TriggerFollower;
use crate::ServerConfig;

/// Runs the platform until `stop_signals` counts one, then drains requests and stops
/// every instance. A second one cuts the drain and the instances' grace short: the
/// instances are still stopped, at once.
pub async fn run(config: ServerConfig, mut stop_signals: tokio::sync::watch::Receiver<u32>) -> anyhow::Result<()> {
    crate::tls::check_exposure(config.api_addr, config.tls.as_ref(), config.insecure)?;
    let certificate = config.tls.as_ref().map(crate::tls::server_certificate).transpose()?;
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
        revisions_applied,
        snapshot,
        node_revisions,
    } = Platform::open(config).await?;
    let tls = certificate
        .map(|server| crate::tls::acceptor(server, platform.tls_domains.clone(), platform.secrets.clone()))
        .transpose()?;
    let admin_token = crate::token_api::ensure_admin_token(&*platform.store, &platform.config.data_dir).await?;
    let firewall = match &platform.sandbox {
        Some(sandbox) => {
            let ports = [gateway_listener.local_addr()?.port(), api_listener.local_addr()?.port()];
            Some(crate::firewall::Firewall::install(sandbox.uids(), &ports)?)
        }
        None => None,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    // Quotas and partitions current before the first launch, which they admit and place.
    let mut limits_follower = LimitsFollower {
        quotas: platform.quotas.clone(),
        editions: platform.editions.clone(),
    };
    limits_follower.on_list(&snapshot, now_us()).await;

    // Listed before anything is served, so the first request finds its route.
    let targets = Arc::new(RoutedRevisions {
        registry: platform.registry.clone(),
        instances: platform.instances.clone(),
    });
    let mut route_reconciler = RouteReconciler::new(&platform.config.domain, platform.routes.clone(), targets)
        .with_tls_domains(platform.tls_domains.clone());
    route_reconciler.reset(&snapshot, now_us());
    let routes = tokio::spawn(follow(
        route_reconciler,
        platform.store.clone(),
        snapshot.revision,
        now_us,
        routes_applied,
        stopped(stop_rx.clone()),
    ));
    let revisions = tokio::spawn(follow(
        RevisionReconciler::new(node_revisions),
        platform.store.clone(),
        snapshot.revision,
        now_us,
        revisions_applied,
        stopped(stop_rx.clone()),
    ));

    let autoscale = Autoscale::new(
        platform.registry.clone(),
        platform.instances.clone(),
        platform.metrics.clone(),
        platform.config.tick,
        now_us,
    );
    let scaler = tokio::spawn(autoscale.run(pokes, stopped(stop_rx.clone())));
    let pool = tokio::spawn(crate::autoscale::keep_pool(
        platform.runtime.clone(),
        platform.instances.clone(),
        platform.config.pool.clone(),
        stopped(stop_rx.clone()),
    ));
    let meter = tokio::spawn(crate::meter::run(platform.meter.clone(), stopped(stop_rx.clone())));
    let retention = tokio::spawn(crate::retention::run(platform.clone(), stopped(stop_rx.clone())));
    let schedule = tokio::spawn(crate::triggers::schedule(platform.clone(), stopped(stop_rx.clone())));
    let limits_follower = spawn_follower(
        limits_follower,
        platform.store.clone(),
        snapshot.revision,
        stopped(stop_rx.clone()),
    );
    let trigger_follower = spawn_follower(
        TriggerFollower(platform.signals.clone()),
        platform.store.clone(),
        snapshot.revision,
        stopped(stop_rx.clone()),
    );
    let transport: Arc<dyn Transport> = Arc::new(GatewayTransport::new(&platform));
    let dispatcher = Arc::new(Dispatcher {
        store: platform.events.clone(),
        queue: platform.event_queue.clone(),
        routing: platform.routing.clone(),
        transport: transport.clone(),
        signals: platform.signals.clone(),
        clock: now_us,
    });
    let dispatch = tokio::spawn(dispatcher.run(stopped(stop_rx.clone())));
    let message_sources = Arc::new(Sources {
        store: platform.events.clone(),
        transport,
        signals: platform.signals.clone(),
        secrets: platform.secrets.clone(),
        clock: now_us,
    });
    let sources = tokio::spawn(updraft_events::sources::run(message_sources, stopped(stop_rx.clone())));
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
        tls.clone(),
        stopped(stop_rx.clone()),
    ));
    let api = tokio::spawn({
        let router = crate::api::router(platform.clone());
        let make = move |_| hyper_util::service::TowerToHyperService::new(router.clone());
        updraft_gateway::serve_connections("API", api_listener, api_limits, tls, make, stopped(stop_rx.clone()))
    });
    let config = &platform.config;
    let scheme = config.scheme();
    // Not println!: a closed stdout (a pipe whose reader is gone) must not panic.
    let _ = writeln!(
        std::io::stdout(),
        "updraft is up: gateway {scheme}://{} (services at {scheme}://{{service}}.{{namespace}}.{}:{}), API {scheme}://{}, data {}, cgroup {}, {}",
        config.gateway_addr,
        config.domain,
        config.gateway_addr.port(),
        config.api_addr,
        config.data_dir.display(),
        platform.cgroup_version,
        match &platform.sandbox {
            Some(sandbox) => format!("instances sandboxed as uids {}-{}", sandbox.uids().0, sandbox.uids().1),
            None => "instances NOT sandboxed (run as root to confine them)".to_string(),
        },
    );
    if let Some(path) = admin_token {
        let path = std::fs::canonicalize(&path).unwrap_or(path);
        let _ = writeln!(
            std::io::stdout(),
            "an admin token is in {} (0600); the CLI run from this folder uses it, elsewhere: updraft login --api {scheme}://{} --token-file {}",
            path.display(),
            config.api_addr,
            path.display(),
        );
    }

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
            platform.instances.stopping_now.store(true, std::sync::atomic::Ordering::Relaxed);
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
    let _ = revisions.await;
    let _ = pool.await;
    let _ = meter.await;
    let _ = retention.await;
    let _ = schedule.await;
    let _ = trigger_follower.await;
    let _ = limits_follower.await;
    let _ = dispatch.await;
    let _ = sources.await;
    platform.meter.meter().await;
    platform.runtime.resize_pool(0);
    let stops = platform.instances.stop_revisions(platform.registry.all());
    tokio::pin!(stops);
    tokio::select! {
        () = &mut stops => {}
        () = second(stop_signals.clone()) => {
            tracing::warn!("stopping at once: instances are killed without their grace");
            platform.instances.stopping_now.store(true, std::sync::atomic::Ordering::Relaxed);
            for state in platform.registry.all() {
                for managed in state.instances() {
                    managed.instance.kill();
                }
            }
            stops.await;
        }
    }
    // Removed only once no instance is left that it kept in.
    drop(firewall);
    Ok(())
}
