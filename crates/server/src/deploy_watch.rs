//! `PUT …/services/{name}?watch=true`: the deploy's steps as JSON lines while it runs
//! (`progress` reports them; a build's output lines, phase `output`, come from the log
//! feed), then `done` with the service or `failed` with the error. The deploy itself runs as it would
//! unwatched: a watcher that hangs up stops nothing.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::Response;
use tokio::sync::{broadcast, mpsc};
use updraft_api::views::{DeployEventView, ErrorDetail};
use updraft_model::DeploySpec;
use updraft_telemetry::logs::BUILD_STREAM;

use crate::platform::Platform;
use crate::progress::{watched, Step};
use crate::ApiError;

pub async fn watch(p: Arc<Platform>, ns: String, name: String, spec: DeploySpec) -> Result<Response, ApiError> {
    let started = Instant::now();
    let (sink, mut steps) = mpsc::unbounded_channel::<Step>();
    // Subscribed before the deploy starts, so no line of its build comes before.
    let mut feed = p.log_feed.subscribe();
    let deployer = p.deployer.clone();
    let (namespace, service) = (ns.clone(), name.clone());
    let mut deploy = tokio::spawn(watched(Some(sink), async move {
        deployer.deploy(&namespace, &service, spec).await
    }));
    // Wrong names or settings end the deploy before its first step (`accepted`): they
    // are answered with their status, as a plain deploy's are.
    let first = tokio::select! {
        Some(step) = steps.recv() => Some(step),
        finished = &mut deploy => match finished.map_err(ApiError::internal)? {
            Err(e) => return Err(e),
            Ok(deployed) => {
                deploy = tokio::spawn(async move { Ok(deployed) });
                None
            }
        },
    };
    let (lines, body) = mpsc::unbounded_channel::<Result<Bytes, Infallible>>();
    tokio::spawn(async move {
        let event = |phase: &str| DeployEventView {
            phase: phase.to_string(),
            detail: None,
            bytes: None,
            elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
            service: None,
            error: None,
        };
        let send = |view: DeployEventView| {
            let mut line = serde_json::to_vec(&view).unwrap_or_default();
            line.push(b'\n');
            let _ = lines.send(Ok(Bytes::from(line)));
        };
        let of_step = |step: Step| DeployEventView {
            detail: step.detail,
            bytes: step.bytes,
            ..event(step.phase)
        };
        if let Some(step) = first {
            send(of_step(step));
        }
        let mut feed_open = true;
        let result = loop {
            tokio::select! {
                Some(step) = steps.recv() => send(of_step(step)),
                record = feed.recv(), if feed_open => match record {
                    Ok(r) if r.namespace == ns && r.service == name && r.record.stream == BUILD_STREAM => {
                        send(DeployEventView {
                            detail: Some(r.record.line.clone()),
                            ..event("output")
                        });
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => feed_open = false,
                },
                result = &mut deploy => break result,
            }
        };
        while let Ok(step) = steps.try_recv() {
            send(of_step(step));
        }
        let outcome = match result {
            Ok(Ok(deployed)) => match p.service_view(&deployed, true).await {
                Ok(view) => Ok(view),
                Err(e) => Err(ApiError::internal(e)),
            },
            Ok(Err(e)) => Err(e),
            Err(e) => Err(ApiError::internal(e)),
        };
        send(match outcome {
            Ok(view) => DeployEventView {
                service: Some(Box::new(view)),
                ..event("done")
            },
            Err(e) => DeployEventView {
                error: Some(ErrorDetail {
                    code: e.status.as_u16(),
                    message: e.message,
                    field: e.field,
                }),
                ..event("failed")
            },
        });
    });
    let stream = futures_util::stream::unfold(
        body,
        |mut body| async move { body.recv().await.map(|line| (line, body)) },
    );
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(stream))
        .map_err(ApiError::internal)
}
