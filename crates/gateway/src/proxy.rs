use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::activator::{ready_endpoint, ActivatorConfig, Held, Poke};
use crate::{Endpoint, RevisionEndpoints, RouteTable};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type GatewayBody = UnsyncBoxBody<Bytes, BoxError>;

/// Headers that belong to one connection and are not forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub struct Gateway {
    routes: Arc<RouteTable>,
    client: Client<HttpConnector, GatewayBody>,
    poke: Arc<dyn Poke>,
    activator: ActivatorConfig,
}

/// Counts a request against its revision and instance until its response body is done.
struct InFlight {
    revision: Arc<RevisionEndpoints>,
    endpoint: Arc<Endpoint>,
}

impl InFlight {
    /// Takes over an endpoint that [`RevisionEndpoints::pick`] already counted.
    fn new(revision: Arc<RevisionEndpoints>, endpoint: Arc<Endpoint>) -> Self {
        revision.in_flight.fetch_add(1, Ordering::Relaxed);
        revision.touch();
        InFlight { revision, endpoint }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.revision.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.revision.touch();
    }
}

fn text(status: StatusCode, message: String) -> Response<GatewayBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(message + "\n"))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn unavailable(message: String, retry_after_s: u32) -> Response<GatewayBody> {
    let mut response = text(StatusCode::SERVICE_UNAVAILABLE, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
    response
}

/// Times a request that could not connect is tried again before 502.
const CONNECT_RETRIES: u32 = 3;

fn empty_body() -> GatewayBody {
    Full::new(Bytes::new()).map_err(|never| match never {}).boxed_unsync()
}

fn held_response(revision: &RevisionEndpoints, held: Held) -> Response<GatewayBody> {
    let name = &revision.key.revision;
    match held {
        Held::Full => unavailable(
            format!("revision {name} has too many requests waiting for an instance"),
            1,
        ),
        Held::TimedOut => unavailable(format!("revision {name} has no ready instance yet"), 5),
        Held::StartFailed(reason) => unavailable(format!("revision {name} could not start an instance: {reason}"), 5),
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

impl Gateway {
    pub fn new(routes: Arc<RouteTable>, poke: Arc<dyn Poke>, activator: ActivatorConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Gateway {
            routes,
            client,
            poke,
            activator,
        }
    }

    /// Routes one request by its Host and answers it.
    pub async fn handle<B>(&self, request: Request<B>, client_ip: Option<IpAddr>) -> Response<GatewayBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| request.uri().authority().map(|a| a.to_string()))
            .unwrap_or_default();
        let Some(revision) = self.routes.lookup(&host) else {
            return text(StatusCode::NOT_FOUND, format!("no service is routed at host {host:?}"));
        };
        revision.touch();
        let (mut parts, body) = request.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        // Instances are always spoken to in HTTP/1.1 with keep-alive, whatever the client
        // speaks: an HTTP/1.0 request would make the instance close a pooled connection.
        parts.version = http::Version::HTTP_11;
        if let Some(ip) = client_ip {
            let forwarded = match parts.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
                Some(prior) => format!("{prior}, {ip}"),
                None => ip.to_string(),
            };
            if let Ok(value) = HeaderValue::try_from(forwarded) {
                parts.headers.insert("x-forwarded-for", value);
            }
        }
        if let Ok(value) = HeaderValue::try_from(host.as_str()) {
            parts.headers.insert("x-forwarded-host", value);
        }
        parts
            .headers
            .insert("x-forwarded-proto", HeaderValue::from_static("http"));
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        // A request without a body can be sent again as it was.
        let replayable = body.is_end_stream();
        let mut body = Some(body.map_err(Into::into).boxed_unsync());

        let mut attempt = 0;
        loop {
            let endpoint = match ready_endpoint(&revision, self.poke.as_ref(), self.activator).await {
                Ok(endpoint) => endpoint,
                Err(held) => return held_response(&revision, held),
            };
            let guard = InFlight::new(revision.clone(), endpoint.clone());
            let uri = match Uri::try_from(format!("http://127.0.0.1:{}{path}", endpoint.port)) {
                Ok(uri) => uri,
                Err(e) => return text(StatusCode::BAD_REQUEST, format!("bad request target: {e}")),
            };
            let mut upstream = Request::new(body.take().unwrap_or_else(empty_body));
            *upstream.method_mut() = parts.method.clone();
            *upstream.uri_mut() = uri;
            *upstream.version_mut() = parts.version;
            *upstream.headers_mut() = parts.headers.clone();
            match self.client.request(upstream).await {
                Ok(response) => {
                    let (mut parts, body) = response.into_parts();
                    strip_hop_by_hop(&mut parts.headers);
                    let body = body
                        .map_err(BoxError::from)
                        .map_frame(move |frame| {
                            let _counted_until_body_ends = &guard;
                            frame
                        })
                        .boxed_unsync();
                    return Response::from_parts(parts, body);
                }
                // Nothing reached the app: the instance is gone or going. Wait for the
                // endpoints to change (it leaves rotation as soon as its exit is seen)
                // and go through the activator again.
                Err(e) if e.is_connect() && replayable && attempt < CONNECT_RETRIES => {
                    attempt += 1;
                    drop(guard);
                    let changed = revision.ready_changed().notified();
                    let _ = tokio::time::timeout(Duration::from_millis(50), changed).await;
                }
                Err(e) => {
                    let cause = std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string());
                    return text(
                        StatusCode::BAD_GATEWAY,
                        format!("instance {} failed to answer: {cause}", endpoint.instance),
                    );
                }
            }
        }
    }
}

/// Serves the gateway until `shutdown` resolves, then waits for open requests to end.
pub async fn serve(listener: TcpListener, gateway: Arc<Gateway>, shutdown: impl Future<Output = ()>) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, remote): (_, SocketAddr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "gateway accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let gateway = gateway.clone();
        let service = hyper::service::service_fn(move |request| {
            let gateway = gateway.clone();
            async move { Ok::<_, Infallible>(gateway.handle(request, Some(remote.ip())).await) }
        });
        let connection = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "gateway connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
