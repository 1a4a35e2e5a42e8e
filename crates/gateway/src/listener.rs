//! Accepting and keeping connections for the gateway and the API alike (HTTP/1.1;
//! HTTP/2 over TLS where the client's ALPN offers it, and without TLS to clients with
//! prior knowledge), under
//! hostile clients: a cap on open connections (past it, a 503 and close), a time limit
//! on reading a request's head (slowloris), a time limit on idle keep-alive
//! connections, and accept errors (out of descriptors) met with a back-off instead of
//! a busy loop.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

/// How one listener treats its connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections open at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// From a request's first byte to the end of its head.
    pub header_read_timeout: Duration,
    /// How long a keep-alive connection may wait for its next request.
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Serves connections from `listener` with the service `make` builds for each peer,
/// until `shutdown` resolves; then each connection finishes its request in flight and
/// closes, and this returns once they all have. `name` is for the logs.
pub async fn serve_connections<S, B>(
    name: &'static str,
    listener: TcpListener,
    limits: ConnectionLimits,
    tls: Option<TlsAcceptor>,
    make: impl Fn(SocketAddr) -> S,
    shutdown: impl Future<Output = ()>,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut backoff = AcceptBackoff::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => {
                    backoff.succeeded();
                    pair
                }
                Err(e) => {
                    backoff.failed(name, &e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(shed(stream, name, limits.max_connections));
            continue;
        };
        let service = make(remote);
        let stop = stop_rx.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => {
                    // A client with prior knowledge opens with HTTP/2's preface; one that
                    // sends nothing for the idle limit is let go.
                    if let Ok(h2) = tokio::time::timeout(limits.idle_timeout, opens_with_h2_preface(&stream)).await {
                        serve_one(stream, service, limits, stop, h2).await
                    }
                }
                // The handshake counts against the head's time limit: a client that
                // opens and stalls holds a slot no longer than a slow head would.
                Some(acceptor) => match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)).await
                {
                    Ok(Ok(stream)) => {
                        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                        serve_one(stream, service, limits, stop, h2).await
                    }
                    Ok(Err(e)) => tracing::debug!(listener = name, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(listener = name, "TLS handshake timed out"),
                },
            }
            drop(slot);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a slot until it ends.
    let _ = slots.acquire_many(limits.max_connections as u32).await;
}

/// Whether the client starts with HTTP/2's connection preface (h2c with prior
/// knowledge, RFC 9113 §3.3), looking at its first bytes without taking them.
async fn opens_with_h2_preface(stream: &TcpStream) -> bool {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut seen = [0u8; PREFACE.len()];
    loop {
        let n = match stream.peek(&mut seen).await {
            Ok(n) => n,
            Err(_) => return false,
        };
        if n == 0 || seen[..n] != PREFACE[..n] {
            return false;
        }
        if n == PREFACE.len() {
            return true;
        }
        // A preface split across packets: peek returns at once while any byte waits.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Past the cap: a short 503 that says why, then close. Reading what the client sent
/// first keeps the kernel from answering our close with a reset that loses the 503.
async fn shed(mut stream: TcpStream, name: &'static str, max: usize) {
    let body = format!("the {name} has {max} connections open, its limit; try again shortly\n");
    let reply = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut head = [0u8; 4096];
        let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut head).await;
        let _ = stream.write_all(reply.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Accept errors come in floods (out of descriptors: every pending connection fails
/// again at once), so they are waited out, doubling from 5 ms to 1 s, and logged once
/// a second with a count rather than once each.
#[derive(Default)]
struct AcceptBackoff {
    wait: Duration,
    failures: u64,
    last_log: Option<Instant>,
}

impl AcceptBackoff {
    fn succeeded(&mut self) {
        self.wait = Duration::ZERO;
    }

    async fn failed(&mut self, name: &str, error: &io::Error) {
        self.failures += 1;
        if self.last_log.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            tracing::warn!(listener = name, failures = self.failures, error = %error, "accepting connections fails; backing off");
            self.failures = 0;
            self.last_log = Some(Instant::now());
        }
        self.wait = (self.wait * 2).clamp(Duration::from_millis(5), Duration::from_secs(1));
        tokio::time::sleep(self.wait).await;
    }
}

/// One connection's activity, for its time limits.
struct Activity {
    born: Instant,
    /// Requests being answered on it.
    active: AtomicU32,
    /// When it last became idle (ms since `born`).
    idle_since_ms: AtomicU64,
    /// When the first byte of the next request's head came (ms since `born`, plus one;
    /// 0 for none yet).
    head_from_ms: AtomicU64,
    changed: Notify,
}

impl Activity {
    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    /// When the connection is due to be cut, if it is idle or reading a head.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        if self.active.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let at = |ms: u64, limit: Duration| self.born + Duration::from_millis(ms) + limit;
        Some(match self.head_from_ms.load(Ordering::SeqCst) {
            0 => at(self.idle_since_ms.load(Ordering::SeqCst), limits.idle_timeout),
            from => at(from - 1, limits.header_read_timeout),
        })
    }
}

/// A connection hyper serves, in either protocol, that can be asked to finish.
trait Draining: Future<Output = Result<(), hyper::Error>> {
    fn drain(self: Pin<&mut Self>);
}

impl<I, S, B> Draining for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn drain(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B> Draining for hyper::server::conn::http2::Connection<I, S, TokioExecutor>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn drain(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

async fn serve_one<T, S, B>(
    stream: T,
    service: S,
    limits: ConnectionLimits,
    stop: tokio::sync::watch::Receiver<bool>,
    h2: bool,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let activity = Arc::new(Activity {
        born: Instant::now(),
        active: AtomicU32::new(0),
        idle_since_ms: AtomicU64::new(0),
        head_from_ms: AtomicU64::new(0),
        changed: Notify::new(),
    });
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let tracked = Tracked {
        inner: service,
        activity: activity.clone(),
    };
    if h2 {
        let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new()).serve_connection(io, tracked);
        drive(connection, &activity, limits, stop).await;
    } else {
        let connection = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, tracked)
            .with_upgrades();
        drive(connection, &activity, limits, stop).await;
    }
}

/// Serves the connection until it ends, cutting it once idle or slow past its limits,
/// and asking it to finish once the listener stops.
async fn drive(
    connection: impl Draining,
    activity: &Activity,
    limits: ConnectionLimits,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    tokio::pin!(connection);
    let mut stopping = false;
    loop {
        let changed = activity.changed.notified();
        let deadline = activity.deadline(&limits);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = changed => {}
            () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                // Idle past its time, or its head is late: nothing is in flight to lose.
                if activity.deadline(&limits).is_some_and(|d| d <= Instant::now()) {
                    return;
                }
            }
            _ = stop.wait_for(|s| *s), if !stopping => {
                stopping = true;
                // Finish the request in flight, then close instead of keeping alive.
                connection.as_mut().drain();
            }
        }
    }
}

/// The connection's socket, noting when the head of a request starts to arrive.
struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let activity = &self.activity;
        if buf.filled().len() > before
            && activity.active.load(Ordering::SeqCst) == 0
            && activity.head_from_ms.load(Ordering::SeqCst) == 0
        {
            activity.head_from_ms.store(activity.now_ms() + 1, Ordering::SeqCst);
            activity.changed.notify_one();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The service, counting each request as active from its head until its response body
/// is done.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S, B> Service<Request<Incoming>> for Tracked<S>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
{
    type Response = Response<ActiveBody<B>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let activity = self.activity.clone();
        activity.active.fetch_add(1, Ordering::SeqCst);
        activity.head_from_ms.store(0, Ordering::SeqCst);
        let guard = Active(activity);
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|inner| ActiveBody { inner, _active: guard }))
        })
    }
}

/// Holds its connection active until dropped; then the idle clock starts.
struct Active(Arc<Activity>);

impl Drop for Active {
    fn drop(&mut self) {
        let activity = &self.0;
        activity.idle_since_ms.store(activity.now_ms(), Ordering::SeqCst);
        activity.active.fetch_sub(1, Ordering::SeqCst);
        activity.changed.notify_one();
    }
}

/// A response body that keeps its request active until it ends.
pub struct ActiveBody<B> {
    inner: B,
    _active: Active,
}

impl<B: Body<Data = Bytes> + Unpin> Body for ActiveBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn first_bytes_say_h2(parts: &[&[u8]]) -> bool {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        for part in parts {
            client.write_all(part).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::timeout(Duration::from_secs(5), opens_with_h2_preface(&server))
            .await
            .expect("decided")
    }

    #[tokio::test]
    async fn the_http2_preface_is_known_even_split_and_http1_methods_are_not_mistaken_for_it() {
        assert!(first_bytes_say_h2(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0"]).await);
        assert!(first_bytes_say_h2(&[b"PRI * HT", b"TP/2.0\r\n\r\nSM\r\n\r\n"]).await);
        for http1 in [&b"POST / HTTP/1.1\r\n"[..], b"PUT / HTTP/1.1\r\n", b"PRIX"] {
            assert!(!first_bytes_say_h2(&[http1]).await);
        }
    }
}
