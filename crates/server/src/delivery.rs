//! The platform's side of event delivery (`updraft_events::dispatch`): an event goes to
//! a service through the gateway, so one at zero is woken and the request held, and to
//! a sink directly, and to a broker of the namespace in process (accepted and routed
//! as its ingress would).

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use cloudevents::Event;
use http::{header, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use updraft_events::cloudevent::to_binary;
use updraft_events::delivery::Target;
use updraft_events::dispatch::{Attempt, Sending, Transport};
use updraft_gateway::host_for;
use updraft_telemetry::Metrics;

use crate::platform::Platform;
use crate::routing::host_url;
use crate::triggers::labels;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

type SinkClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// A subscriber's reply is read up to this size; a larger one is not an event we take.
const MAX_REPLY_BYTES: usize = 1024 * 1024;

pub struct GatewayTransport {
    /// Brokers are the platform's; weak, since the platform holds the loops that hold
    /// this transport.
    platform: Weak<Platform>,
    gateway: Arc<updraft_gateway::Gateway>,
    sink_client: SinkClient,
    metrics: Arc<Metrics>,
    domain: String,
    gateway_port: u16,
}

impl GatewayTransport {
    pub fn new(platform: &Arc<Platform>) -> GatewayTransport {
        GatewayTransport {
            platform: Arc::downgrade(platform),
            gateway: platform.gateway.clone(),
            sink_client: Client::builder(TokioExecutor::new()).build_http(),
            metrics: platform.metrics.clone(),
            domain: platform.config.domain.clone(),
            gateway_port: platform.config.gateway_addr.port(),
        }
    }
}

impl Transport for GatewayTransport {
    fn send<'a>(&'a self, namespace: &'a str, target: &'a Target, event: Event, timeout: Duration) -> Sending<'a> {
        if let Target::Broker { namespace, name } = target {
            return Box::pin(self.accept_into_broker(namespace, name, event));
        }
        let request = build_request(&self.domain, namespace, target, event);
        let through_gateway = matches!(target, Target::Service { .. });
        Box::pin(async move {
            match request {
                Ok(request) => self.attempt(request, through_gateway, timeout).await,
                Err(e) => Attempt::Unreachable(e),
            }
        })
    }

    fn url(&self, target: &Target) -> String {
        match target {
            Target::Service { namespace, name, path } => {
                format!(
                    "{}{path}",
                    // Handed to the gateway in process, so never over TLS.
                    host_url("http", &host_for(name, namespace, &self.domain), self.gateway_port)
                )
            }
            Target::Uri(uri) => uri.clone(),
            Target::Broker { namespace, name } => self
                .platform
                .upgrade()
                .map(|p| p.broker_url(namespace, name))
                .unwrap_or_default(),
        }
    }

    fn counted(&self, namespace: &str, trigger: &str, kind: &str, delivered: bool) {
        let labels = labels(namespace, trigger, kind);
        let family = if delivered {
            &self.metrics.trigger_deliveries
        } else {
            &self.metrics.trigger_failures
        };
        family.get_or_create(&labels).inc();
    }
}

impl GatewayTransport {
    /// Accepts the event into a broker: stored with its deliveries, as the ingress
    /// answers 202; a refusal answers as the ingress would.
    async fn accept_into_broker(&self, namespace: &str, broker: &str, event: Event) -> Attempt {
        let Some(platform) = self.platform.upgrade() else {
            return Attempt::Unreachable("the platform is stopping".into());
        };
        match platform.accept_events(namespace, broker, &[event]).await {
            Ok(_) => Attempt::Answered {
                status: 202,
                headers: http::HeaderMap::new(),
                body: Bytes::new(),
            },
            Err(e) => Attempt::Answered {
                status: e.status.as_u16(),
                headers: http::HeaderMap::new(),
                body: Bytes::from(e.message),
            },
        }
    }

    async fn attempt(&self, request: Request<Full<Bytes>>, through_gateway: bool, timeout: Duration) -> Attempt {
        let answer = async move {
            let (parts, body) = if through_gateway {
                // A trigger delivers within its own namespace, so the platform vouches
                // for it at a private service's door.
                let mut request = request;
                request.extensions_mut().insert(updraft_gateway::Trusted);
                self.gateway.handle(request, None).await.into_parts()
            } else {
                let response = self
                    .sink_client
                    .request(request)
                    .await
                    .map_err(|e| format!("cannot reach the sink: {e}"))?;
                let (parts, body) = response.into_parts();
                (
                    parts,
                    updraft_gateway::GatewayBody::new(body.map_err(|e| -> BoxError { Box::new(e) })),
                )
            };
            let body = read_capped(body, MAX_REPLY_BYTES).await;
            Ok::<_, String>((parts.status.as_u16(), parts.headers, body))
        };
        match tokio::time::timeout(timeout, answer).await {
            Err(_) => Attempt::Unreachable(format!("no answer within {timeout:?}")),
            Ok(Err(e)) => Attempt::Unreachable(e),
            Ok(Ok((status, headers, body))) => Attempt::Answered { status, headers, body },
        }
    }
}

/// The answer's body up to `cap` bytes: more is not a reply worth keeping.
async fn read_capped(mut body: updraft_gateway::GatewayBody, cap: usize) -> Bytes {
    let mut out = Vec::new();
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > cap {
                break;
            }
            out.extend_from_slice(&data);
        }
    }
    Bytes::from(out)
}

/// The event as a binary-mode POST: to the service's host through the gateway, or to
/// the sink's URI.
fn build_request(domain: &str, namespace: &str, target: &Target, event: Event) -> Result<Request<Full<Bytes>>, String> {
    let (headers, body) = to_binary(event).map_err(|e| format!("cannot encode the event: {e}"))?;
    let mut request = Request::builder().method(Method::POST);
    match target {
        Target::Service {
            namespace: ns,
            name,
            path,
        } => {
            let ns = if ns.is_empty() { namespace } else { ns.as_str() };
            let host = host_for(name, ns, domain);
            request = request
                .uri(path.as_str())
                .header(header::HOST, HeaderValue::from_str(&host).map_err(|e| e.to_string())?);
        }
        Target::Uri(uri) => request = request.uri(uri.as_str()),
        Target::Broker { .. } => return Err("a broker is reached in process, not over HTTP".into()),
    }
    for (name, value) in &headers {
        request = request.header(name, value);
    }
    request.body(Full::new(body)).map_err(|e| e.to_string())
}
