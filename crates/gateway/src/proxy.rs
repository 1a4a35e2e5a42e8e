use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::activator::{ready_endpoint, Access, ActivatorConfig, Held, Poke, RequestObserver};
use crate::upstream::{upstream_client, UpstreamClient, UpstreamPool};
use crate::{Endpoint, InvokeGuard, RevisionEndpoints, RouteTable, ServiceRoute, Trusted};

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
    client: UpstreamClient<GatewayBody>,
    h2c_client: UpstreamClient<GatewayBody>,
    poke: Arc<dyn Poke>,
    activator: ActivatorConfig,
    observer: Option<Arc<dyn RequestObserver>>,
    guard: Option<Arc<dyn InvokeGuard>>,
}

/// Reports a response to the observer when its body is done (or dropped).
struct Observed {
    inner: GatewayBody,
    observer: Arc<dyn RequestObserver>,
    revision: Arc<RevisionEndpoints>,
    access: Access,
    arrived: tokio::time::Instant,
}

impl Drop for Observed {
    fn drop(&mut self) {
        let mut access = self.access.clone();
        access.took = self.arrived.elapsed();
        self.observer.answered(&self.revision.key, access);
    }
}

/// What proxying a request found out, for its access record.
#[derive(Default)]
struct Served {
    instance: Option<String>,
    cold: bool,
    traceparent: Option<String>,
}

impl Body for Observed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Counts a request against its revision and instance until its response body is done
/// (or its upgraded connection closes).
struct InFlight {
    revision: Arc<RevisionEndpoints>,
    endpoint: Arc<Endpoint>,
}

impl InFlight {
    /// Takes over an endpoint that [`RevisionEndpoints::pick`] already counted.
    fn new(revision: Arc<RevisionEndpoints>, endpoint: Arc<Endpoint>) -> Self {
        revision.in_flight.fetch_add(1, Ordering::Relaxed);
        revision.load_changed(true);
        revision.touch();
        InFlight { revision, endpoint }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.revision.release(&self.endpoint);
        self.revision.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.revision.load_changed(false);
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

fn retry_after(status: StatusCode, message: String, seconds: u64) -> Response<GatewayBody> {
    let mut response = text(status, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

const TRACEPARENT: &str = "traceparent";

/// A new W3C `traceparent`: version 00, a random trace and parent id, sampled.
fn new_traceparent() -> String {
    use std::hash::{BuildHasher, Hasher};
    let random = || {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        // Never all zeros, which the spec forbids.
        hasher.finish() | 1
    };
    format!("00-{:016x}{:016x}-{:016x}-01", random(), random(), random())
}

/// Times a request that could not connect is tried again before 502.
const CONNECT_RETRIES: u32 = 3;

fn empty_body() -> GatewayBody {
    Full::new(Bytes::new()).map_err(|never| match never {}).boxed_unsync()
}

fn held_response(revision: &RevisionEndpoints, held: Held) -> Response<GatewayBody> {
    let name = &revision.key.revision;
    let unavailable = StatusCode::SERVICE_UNAVAILABLE;
    let busy = revision.ready_count() > 0;
    match held {
        Held::Full if busy => retry_after(
            unavailable,
            format!("revision {name} is at its concurrency limit and its queue is full"),
            1,
        ),
        Held::Full => retry_after(
            unavailable,
            format!("revision {name} has too many requests waiting for an instance"),
            1,
        ),
        Held::TimedOut if busy => retry_after(
            unavailable,
            format!("revision {name} had no free slot under its concurrency limit in time"),
            5,
        ),
        Held::TimedOut => retry_after(unavailable, format!("revision {name} has no ready instance yet"), 5),
        Held::Gone(reason) => text(StatusCode::NOT_FOUND, reason),
        Held::BackingOff(reason, left) => retry_after(unavailable, reason, left.as_secs_f64().ceil().max(1.0) as u64),
        Held::StartFailed(reason) => retry_after(
            unavailable,
            format!("revision {name} could not start an instance: {reason}"),
            5,
        ),
        Held::OverQuota(reason) => retry_after(
            StatusCode::TOO_MANY_REQUESTS,
            format!("revision {name} may not start an instance: {reason}"),
            5,
        ),
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

/// The protocol a request asks to switch to (`Connection: upgrade` with `Upgrade:`).
fn requested_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(header::UPGRADE).cloned()).flatten()
}

/// A request body the proxy can take back when the instance was never reached, so a
/// request with a body is retried as readily as one without.
struct Reclaimable {
    shared: Arc<BodySlot>,
    hint: SizeHint,
    end: bool,
}

/// Where the body waits while the client may still hand it back.
struct BodySlot {
    body: Mutex<Option<GatewayBody>>,
    /// Set once the client has asked for a frame: from then on bytes may have left.
    started: AtomicBool,
    /// Set when reading the client's body failed (a malformed chunk, a hang-up): the
    /// request failed by the client's fault, not the instance's.
    client_failed: AtomicBool,
}

impl BodySlot {
    /// The body, if no byte of it can have been sent.
    fn reclaim(&self) -> Option<GatewayBody> {
        if self.started.load(Ordering::Relaxed) {
            return None;
        }
        self.body.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl Reclaimable {
    fn wrap(body: GatewayBody) -> (Self, Arc<BodySlot>) {
        let (hint, end) = (body.size_hint(), body.is_end_stream());
        let shared = Arc::new(BodySlot {
            body: Mutex::new(Some(body)),
            started: AtomicBool::new(false),
            client_failed: AtomicBool::new(false),
        });
        (
            Reclaimable {
                shared: shared.clone(),
                hint,
                end,
            },
            shared,
        )
    }
}

impl Body for Reclaimable {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.shared.started.store(true, Ordering::Relaxed);
        let mut slot = self.shared.body.lock().unwrap_or_else(|p| p.into_inner());
        let frame = match slot.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        };
        if matches!(frame, Poll::Ready(Some(Err(_)))) {
            self.shared.client_failed.store(true, Ordering::Relaxed);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.end
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

/// A response body that counts its request in flight until it ends, and is cut off
/// when the request's timeout passes.
struct Timed {
    inner: GatewayBody,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    _in_flight: InFlight,
}

impl Body for Timed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                let timeout = self.timeout;
                Poll::Ready(Some(Err(format!(
                    "response cut off at the request timeout of {timeout:?}"
                )
                .into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Gateway {
    pub fn new(routes: Arc<RouteTable>, poke: Arc<dyn Poke>, activator: ActivatorConfig) -> Self {
        Gateway {
            routes,
            client: upstream_client(UpstreamPool::default(), false),
            h2c_client: upstream_client(UpstreamPool::default(), true),
            poke,
            activator,
            observer: None,
            guard: None,
        }
    }

    /// Lets `guard` decide who may call private services (without one, nobody from
    /// outside may).
    pub fn with_guard(mut self, guard: Arc<dyn InvokeGuard>) -> Self {
        self.guard = Some(guard);
        self
    }

    /// Keeps connections to instances as `pool` says.
    pub fn with_upstream_pool(mut self, pool: UpstreamPool) -> Self {
        self.client = upstream_client(pool, false);
        self.h2c_client = upstream_client(pool, true);
        self
    }

    /// Reports every request routed to a revision to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn RequestObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Routes one request by its Host and answers it.
    pub async fn handle<B>(&self, mut request: Request<B>, client_ip: Option<IpAddr>) -> Response<GatewayBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let host = match crate::routes::request_host(request.headers(), request.uri()) {
            Ok(host) => host,
            Err(why) => return text(StatusCode::BAD_REQUEST, why),
        };
        let Some(route) = self.routes.lookup(&host) else {
            return text(StatusCode::NOT_FOUND, format!("no service is routed at host {host:?}"));
        };
        if let Some(namespace) = &route.private_to {
            if request.extensions().get::<Trusted>().is_none() {
                let refusal = match &self.guard {
                    Some(guard) => guard.may_invoke(request.headers(), namespace).await.err(),
                    None => Some((StatusCode::FORBIDDEN, "the service is private".to_string())),
                };
                if let Some((status, why)) = refusal {
                    return text(status, format!("{host:?} is a private service: {why}"));
                }
                // The platform's token is the platform's; the app never sees it.
                request.headers_mut().remove(header::AUTHORIZATION);
            }
        }
        let Some(revision) = route.pick().cloned() else {
            return text(StatusCode::NOT_FOUND, format!("no revision serves host {host:?}"));
        };
        let arrived = tokio::time::Instant::now();
        let method = request.method().to_string();
        let path = request.uri().path().to_string();
        let mut served = Served::default();
        let response = self
            .forward(&route, revision.clone(), request, client_ip, &host, &mut served)
            .await;
        match &self.observer {
            None => response,
            Some(observer) => {
                let access = Access {
                    method,
                    path,
                    status: response.status().as_u16(),
                    took: Duration::ZERO,
                    instance: served.instance,
                    cold: served.cold,
                    traceparent: served.traceparent,
                };
                let observer = observer.clone();
                response.map(|inner| {
                    Observed {
                        inner,
                        observer,
                        revision,
                        access,
                        arrived,
                    }
                    .boxed_unsync()
                })
            }
        }
    }

    /// Applies the route's rate limits, then proxies to an instance of `revision`.
    async fn forward<B>(
        &self,
        route: &ServiceRoute,
        revision: Arc<RevisionEndpoints>,
        request: Request<B>,
        client_ip: Option<IpAddr>,
        host: &str,
        served: &mut Served,
    ) -> Response<GatewayBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        for limiter in &route.limiters {
            if let Err(wait) = limiter.check() {
                return retry_after(
                    StatusCode::TOO_MANY_REQUESTS,
                    limiter.refusal(),
                    wait.as_secs_f64().ceil().max(1.0) as u64,
                );
            }
        }
        revision.touch();
        revision.arrived();
        let (mut parts, body) = request.into_parts();
        let upgrade = requested_upgrade(&parts.headers);
        let client_upgrade = upgrade
            .as_ref()
            .and_then(|_| parts.extensions.remove::<hyper::upgrade::OnUpgrade>());
        let h2c = revision.limits.h2c;
        // gRPC servers refuse a request that does not say it takes trailers.
        let takes_trailers = h2c
            && parts
                .headers
                .get_all(header::TE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
        strip_hop_by_hop(&mut parts.headers);
        if h2c {
            parts.version = http::Version::HTTP_2;
            if takes_trailers {
                parts.headers.insert(header::TE, HeaderValue::from_static("trailers"));
            }
        } else {
            if let Some(protocol) = &upgrade {
                parts
                    .headers
                    .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                parts.headers.insert(header::UPGRADE, protocol.clone());
            }
            // HTTP/1.1 with keep-alive, whatever the client speaks: an HTTP/1.0 request
            // would make the instance close a pooled connection.
            parts.version = http::Version::HTTP_11;
        }
        let client = if h2c { &self.h2c_client } else { &self.client };
        if let Some(ip) = client_ip {
            let forwarded = match parts.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
                Some(prior) => format!("{prior}, {ip}"),
                None => ip.to_string(),
            };
            if let Ok(value) = HeaderValue::try_from(forwarded) {
                parts.headers.insert("x-forwarded-for", value);
            }
        }
        if let Ok(value) = HeaderValue::try_from(host) {
            parts.headers.insert("x-forwarded-host", value);
        }
        parts
            .headers
            .insert("x-forwarded-proto", HeaderValue::from_static("http"));
        // W3C trace context: a request without one starts a trace here.
        if !parts.headers.contains_key(TRACEPARENT) {
            if let Ok(value) = HeaderValue::try_from(new_traceparent()) {
                parts.headers.insert(TRACEPARENT, value);
            }
        }
        served.traceparent = parts
            .headers
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        let mut body = Some(body.map_err(Into::into).boxed_unsync());
        let limits = revision.limits;

        let mut attempt = 0;
        loop {
            let endpoint =
                match ready_endpoint(&revision, self.poke.as_ref(), self.activator, self.observer.as_deref()).await {
                    Ok((endpoint, cold)) => {
                        served.cold |= cold;
                        served.instance = Some(endpoint.instance.clone());
                        endpoint
                    }
                    Err(held) => return held_response(&revision, held),
                };
            let guard = InFlight::new(revision.clone(), endpoint.clone());
            let uri = match Uri::try_from(format!("http://{}{path}", endpoint.address)) {
                Ok(uri) => uri,
                Err(e) => return text(StatusCode::BAD_REQUEST, format!("bad request target: {e}")),
            };
            let (wrapped, slot) = Reclaimable::wrap(body.take().unwrap_or_else(empty_body));
            let mut upstream = Request::new(wrapped.boxed_unsync());
            *upstream.method_mut() = parts.method.clone();
            *upstream.uri_mut() = uri;
            *upstream.version_mut() = parts.version;
            *upstream.headers_mut() = parts.headers.clone();
            let sent_at = tokio::time::Instant::now();
            // One timer per request: first the response-start limit, then, moved into
            // the body, the whole request's.
            let mut timer = Box::pin(tokio::time::sleep(limits.response_start_timeout));
            let answer = tokio::select! {
                biased;
                answer = client.request(upstream) => Ok(answer),
                () = timer.as_mut() => Err(()),
            };
            match answer {
                Ok(Ok(mut response)) => {
                    let deadline = sent_at + limits.timeout;
                    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                        if let Some(client_side) = client_upgrade {
                            let instance_side = hyper::upgrade::on(&mut response);
                            tokio::spawn(tunnel(client_side, instance_side, deadline, guard));
                            let (parts, _) = response.into_parts();
                            return Response::from_parts(parts, empty_body());
                        }
                    }
                    let (mut parts, body) = response.into_parts();
                    strip_hop_by_hop(&mut parts.headers);
                    // A proxy answers in its own version (RFC 9110 §6.2), not the app's: an
                    // HTTP/1.0 app must not turn the client's keep-alive off.
                    parts.version = http::Version::HTTP_11;
                    let body = Timed {
                        inner: body.map_err(BoxError::from).boxed_unsync(),
                        deadline: {
                            timer.as_mut().reset(deadline);
                            timer
                        },
                        timeout: limits.timeout,
                        _in_flight: guard,
                    };
                    return Response::from_parts(parts, body.boxed_unsync());
                }
                Ok(Err(e)) => {
                    let reclaimed = if e.is_connect() { slot.reclaim() } else { None };
                    // Nothing reached the app: the instance is gone or going. Wait for the
                    // endpoints to change (it leaves rotation as soon as its exit is seen)
                    // and go through the activator again.
                    if reclaimed.is_some() && attempt < CONNECT_RETRIES {
                        attempt += 1;
                        body = reclaimed;
                        drop(guard);
                        let changed = revision.ready_changed().notified();
                        let _ = tokio::time::timeout(Duration::from_millis(50), changed).await;
                        continue;
                    }
                    let cause = std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string());
                    if slot.client_failed.load(Ordering::Relaxed) {
                        return text(
                            StatusCode::BAD_REQUEST,
                            format!("the request body could not be read: {cause}"),
                        );
                    }
                    return text(
                        StatusCode::BAD_GATEWAY,
                        format!("instance {} failed to answer: {cause}", endpoint.instance),
                    );
                }
                Err(_) => {
                    let (which, limit) = if limits.response_start_timeout < limits.timeout {
                        ("responseStartTimeoutSeconds", limits.response_start_timeout)
                    } else {
                        ("timeoutSeconds", limits.timeout)
                    };
                    return text(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!(
                            "revision {} did not start answering within {}s ({which})",
                            revision.key.revision,
                            limit.as_secs()
                        ),
                    );
                }
            }
        }
    }
}

/// Joins an upgraded client connection to the instance's, byte for byte, until either
/// side closes or the request's timeout passes.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    instance: hyper::upgrade::OnUpgrade,
    deadline: tokio::time::Instant,
    _in_flight: InFlight,
) {
    let (client, instance) = match tokio::join!(client, instance) {
        (Ok(c), Ok(i)) => (c, i),
        (c, i) => {
            tracing::debug!(client = c.is_ok(), instance = i.is_ok(), "upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut instance = TokioIo::new(instance);
    let copied = tokio::time::timeout_at(deadline, tokio::io::copy_bidirectional(&mut client, &mut instance)).await;
    if copied.is_err() {
        tracing::debug!("upgraded connection closed at the request timeout");
    }
}

/// Serves the gateway until `shutdown` resolves, then waits for open requests to end.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    limits: crate::ConnectionLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let make = |remote: SocketAddr| {
        let gateway = gateway.clone();
        hyper::service::service_fn(move |request| {
            let gateway = gateway.clone();
            async move { Ok::<_, Infallible>(gateway.handle(request, Some(remote.ip())).await) }
        })
    };
    crate::listener::serve_connections("gateway", listener, limits, tls, make, shutdown).await;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::{RevisionKey, RevisionLimits, ServiceRoute};

    struct NoPoke;

    impl Poke for NoPoke {
        fn poke(&self, _: &Arc<RevisionEndpoints>) {}
    }

    fn endpoint(name: &str, port: u16) -> Arc<Endpoint> {
        Arc::new(Endpoint {
            instance: name.into(),
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            in_flight: AtomicU32::new(0),
        })
    }

    /// A port nothing listens on: connecting to it is refused.
    fn refused_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    /// An instance that reads one request and either echoes its body or hangs up
    /// without answering; counts the connections it gets.
    async fn instance(answer: bool) -> (u16, Arc<AtomicU32>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicU32::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !String::from_utf8_lossy(&request).ends_with("hello body") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                if answer {
                    let body = String::from_utf8_lossy(&request)
                        .rsplit("\r\n\r\n")
                        .next()
                        .unwrap_or("")
                        .to_string();
                    let reply = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                    let _ = stream.write_all(reply.as_bytes()).await;
                }
            }
        });
        (port, connections)
    }

    async fn post(gateway: &Gateway) -> (StatusCode, String) {
        let request = Request::builder()
            .method("POST")
            .uri("/")
            .header(header::HOST, "svc.default.localhost")
            .body(Full::new(Bytes::from_static(b"hello body")))
            .unwrap();
        let response = gateway.handle(request, None).await;
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn gateway_over(endpoints: &[Arc<Endpoint>]) -> Gateway {
        let revision = RevisionEndpoints::new(
            RevisionKey {
                namespace: "default".into(),
                service: "svc".into(),
                revision: "svc-00001".into(),
            },
            RevisionLimits::default(),
        );
        for e in endpoints {
            revision.add_ready(e.clone());
        }
        let routes = Arc::new(RouteTable::default());
        routes.replace(crate::HostMap::unit(
            "svc.default.localhost".to_string(),
            Arc::new(ServiceRoute::single(revision, vec![])),
        ));
        Gateway::new(routes, Arc::new(NoPoke), ActivatorConfig::default())
    }

    #[tokio::test]
    async fn a_request_body_is_retried_on_another_instance_when_the_first_refuses() {
        let (port, connections) = instance(true).await;
        // Round-robin starts with the refusing one.
        let gateway = gateway_over(&[endpoint("gone", refused_port()), endpoint("alive", port)]);
        let (status, body) = post(&gateway).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, "hello body", "the body reached the second instance whole");
        assert_eq!(connections.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_new_traceparent_follows_the_w3c_format() {
        let t = new_traceparent();
        let parts: Vec<&str> = t.split('-').collect();
        assert_eq!(parts.len(), 4, "{t}");
        assert_eq!((parts[0], parts[3]), ("00", "01"));
        assert_eq!((parts[1].len(), parts[2].len()), (32, 16));
        assert!(parts[1].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(new_traceparent(), t);
    }

    #[tokio::test]
    async fn a_request_that_reached_an_instance_is_not_retried() {
        let (hangs_up, first) = instance(false).await;
        let (answers, second) = instance(true).await;
        let gateway = gateway_over(&[endpoint("hangs-up", hangs_up), endpoint("answers", answers)]);
        let (status, body) = post(&gateway).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
        assert_eq!(first.load(Ordering::SeqCst), 1);
        assert_eq!(second.load(Ordering::SeqCst), 0, "never sent again elsewhere");
    }
}
