//! Connections from the gateway to instances.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The keep-alive connections the gateway keeps to each instance between requests.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamPool {
    /// Idle connections kept per instance; more are closed as their requests end.
    pub max_idle_per_instance: usize,
    /// An idle connection is closed after this long.
    pub idle_timeout: Duration,
}

impl Default for UpstreamPool {
    fn default() -> Self {
        UpstreamPool {
            max_idle_per_instance: 32,
            idle_timeout: Duration::from_secs(10),
        }
    }
}

pub(crate) type UpstreamClient<B> = Client<QuickAckConnector, B>;

/// A client for instances that speak HTTP/1.1, or with `h2c` HTTP/2 with prior
/// knowledge (one multiplexed connection per instance, as gRPC clients keep).
pub(crate) fn upstream_client<B>(pool: UpstreamPool, h2c: bool) -> UpstreamClient<B>
where
    B: hyper::body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        // Without a timer the idle timeout is never checked, and connections piled up.
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .pool_idle_timeout(pool.idle_timeout)
        .pool_max_idle_per_host(pool.max_idle_per_instance)
        .http2_only(h2c)
        .build(QuickAckConnector(connector))
}

/// Connects like [`HttpConnector`], and acknowledges what instances send at once.
///
/// Many apps (Python's `http.server`, for one) write a response's head and body in two
/// sends without `TCP_NODELAY`. On a reused connection Nagle's algorithm holds the body
/// until the head is acknowledged, and Linux delays that acknowledgement by up to
/// 40 ms: every keep-alive request to such an app took 40 ms. Linux clears
/// `TCP_QUICKACK` on its own, so it is set again after every read.
#[derive(Clone)]
pub(crate) struct QuickAckConnector(HttpConnector);

impl tower_service::Service<Uri> for QuickAckConnector {
    type Response = TokioIo<QuickAckStream>;
    type Error = <HttpConnector as tower_service::Service<Uri>>::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move {
            let stream = connecting.await?.into_inner();
            Ok(TokioIo::new(QuickAckStream(stream)))
        })
    }
}

pub(crate) struct QuickAckStream(TcpStream);

impl AsyncRead for QuickAckStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let stream = &mut self.get_mut().0;
        let before = buf.filled().len();
        let read = Pin::new(&mut *stream).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            // Only a speed-up: a connection that refuses it still works.
            let _ = SockRef::from(&*stream).set_tcp_quickack(true);
        }
        read
    }
}

impl AsyncWrite for QuickAckStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl Connection for QuickAckStream {
    fn connected(&self) -> Connected {
        self.0.connected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn reads_from_an_instance_are_acknowledged_at_once() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri: Uri = format!("http://{}/", listener.local_addr().unwrap()).parse().unwrap();
        let mut connector = QuickAckConnector(HttpConnector::new());
        let (connected, accepted) = tokio::join!(tower_service::Service::call(&mut connector, uri), listener.accept());
        let mut stream = connected.unwrap().into_inner();
        let (mut instance, _) = accepted.unwrap();
        for round in 0..3 {
            // Zero puts the socket in delayed-acknowledgement mode, where a reused
            // connection to an interactive peer ends up.
            SockRef::from(&stream.0).set_tcp_quickack(false).unwrap();
            instance.write_all(b"head").await.unwrap();
            let mut buf = [0u8; 4];
            stream.read_exact(&mut buf).await.unwrap();
            assert!(
                SockRef::from(&stream.0).tcp_quickack().unwrap(),
                "round {round}: the read left acknowledgements delayed"
            );
        }
    }
}
