//! A small JSON client for the REST API.

use std::io::IsTerminal;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use indicatif::{ProgressBar, ProgressStyle};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, ReadBuf};
use updraft_api::views::ErrorBody;

use crate::{exit, NamespaceArg};

pub type ClientBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// A failed command, with the exit code it maps to.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl CliError {
    pub fn failed(message: impl Into<String>) -> Self {
        CliError {
            code: exit::FAILED,
            message: message.into(),
        }
    }
}

pub struct ApiClient {
    base: String,
    client: Client<HttpConnector, ClientBody>,
}

/// What may stay as it is in a path segment or a query value: RFC 3986's unreserved.
const COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A name or value as one URL path segment or query value, so a user's `../x` or `a/b`
/// stays one segment the API validates, instead of changing the route.
pub fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, COMPONENT).to_string()
}

/// A service's path in the API, its names encoded as path segments.
pub(crate) fn service_path(ns: &NamespaceArg, name: &str) -> String {
    format!("/v1/namespaces/{}/services/{}", encode(&ns.namespace), encode(name))
}

pub fn empty() -> ClientBody {
    Full::new(Bytes::new()).map_err(|never| match never {}).boxed_unsync()
}

pub fn full(bytes: impl Into<Bytes>) -> ClientBody {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl ApiClient {
    pub fn new(base: &str) -> Self {
        ApiClient {
            base: base.trim_end_matches('/').to_string(),
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
        }
    }

    /// A request that got no answer: the API could not be reached at all (exit 4), or
    /// it was reached and the connection broke before an answer came (exit 1).
    fn request_failed(&self, e: &hyper_util::client::legacy::Error) -> CliError {
        let cause = std::error::Error::source(e).map_or_else(|| e.to_string(), |s| s.to_string());
        if e.is_connect() {
            CliError {
                code: exit::UNREACHABLE,
                message: format!(
                    "cannot reach the Updraft API at {} ({cause}); is `updraft server` running? (set --api or UPDRAFT_API)",
                    self.base
                ),
            }
        } else {
            CliError::failed(format!(
                "the Updraft API at {} closed the connection before it answered ({cause})",
                self.base
            ))
        }
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(String, String)],
        body: ClientBody,
    ) -> Result<Reply, CliError> {
        let mut request = Request::builder().method(method).uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request
            .body(body)
            .map_err(|e| CliError::failed(format!("bad request: {e}")))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| self.request_failed(&e))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| CliError::failed(format!("reading the reply: {e}")))?
            .to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// A GET whose reply body is read as it arrives (server-sent events); an error
    /// reply is decoded as any other.
    pub async fn stream(&self, path: &str) -> Result<hyper::body::Incoming, CliError> {
        let request = Request::builder()
            .method(Method::GET)
            .uri(format!("{}{path}", self.base))
            .header("accept", "text/event-stream")
            .body(empty())
            .map_err(|e| CliError::failed(format!("bad request: {e}")))?;
        self.open_stream(request).await
    }

    /// A JSON POST whose reply body is read as it arrives (NDJSON); an error reply is
    /// decoded as any other.
    pub async fn post_stream(&self, path: &str, body: &impl Serialize) -> Result<hyper::body::Incoming, CliError> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(full(
                serde_json::to_vec(body).map_err(|e| CliError::failed(e.to_string()))?,
            ))
            .map_err(|e| CliError::failed(format!("bad request: {e}")))?;
        self.open_stream(request).await
    }

    async fn open_stream(&self, request: Request<ClientBody>) -> Result<hyper::body::Incoming, CliError> {
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| self.request_failed(&e))?;
        let (parts, body) = response.into_parts();
        if !parts.status.is_success() {
            let bytes = body
                .collect()
                .await
                .map_err(|e| CliError::failed(format!("reading the reply: {e}")))?
                .to_bytes();
            return decode::<()>(Reply {
                status: parts.status,
                headers: parts.headers,
                body: bytes,
            })
            .map(|_| unreachable!("an error status decodes to an error"));
        }
        Ok(body)
    }

    /// Sends a JSON request and decodes a JSON reply; API errors become [`CliError`]s.
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, CliError> {
        let (headers, body) = match body {
            Some(value) => (
                vec![("content-type".to_string(), "application/json".to_string())],
                full(serde_json::to_vec(value).map_err(|e| CliError::failed(e.to_string()))?),
            ),
            None => (vec![], empty()),
        };
        let reply = self.send(method, path, &headers, body).await?;
        decode(reply)
    }

    /// Streams a file as the request body, with a progress bar on a terminal.
    pub async fn upload<T: DeserializeOwned>(&self, path: &str, file: &Path) -> Result<T, CliError> {
        let handle = tokio::fs::File::open(file)
            .await
            .map_err(|e| CliError::failed(format!("{}: {e}", file.display())))?;
        let len = handle
            .metadata()
            .await
            .map_err(|e| CliError::failed(e.to_string()))?
            .len();
        let progress = (std::io::stderr().is_terminal() && len > 1 << 20).then(|| {
            let bar = ProgressBar::new(len);
            bar.set_style(
                ProgressStyle::with_template("uploading {bar:30} {bytes}/{total_bytes} {bytes_per_sec}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        });
        let body = FileBody {
            file: handle,
            len,
            buf: vec![0; 256 * 1024],
            progress: progress.clone(),
        };
        let headers = vec![
            ("content-type".to_string(), "application/octet-stream".to_string()),
            ("content-length".to_string(), len.to_string()),
        ];
        let reply = self.send(Method::POST, path, &headers, body.boxed_unsync()).await;
        if let Some(bar) = progress {
            bar.finish_and_clear();
        }
        decode(reply?)
    }
}

pub fn decode<T: DeserializeOwned>(reply: Reply) -> Result<T, CliError> {
    if reply.status.is_success() {
        let bytes = if reply.body.is_empty() {
            Bytes::from_static(b"null")
        } else {
            reply.body
        };
        return serde_json::from_slice(&bytes)
            .map_err(|e| CliError::failed(format!("unexpected reply from the API: {e}")));
    }
    let message = match serde_json::from_slice::<ErrorBody>(&reply.body) {
        Ok(body) => body.error.message,
        Err(_) if reply.body.trim_ascii().is_empty() => format!("the API answered {} with no detail", reply.status),
        Err(_) => String::from_utf8_lossy(&reply.body).trim().to_string(),
    };
    let code = if reply.status == StatusCode::NOT_FOUND {
        exit::NOT_FOUND
    } else {
        exit::FAILED
    };
    Err(CliError { code, message })
}

struct FileBody {
    file: tokio::fs::File,
    len: u64,
    buf: Vec<u8>,
    progress: Option<ProgressBar>,
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        let mut buf = ReadBuf::new(&mut this.buf);
        match Pin::new(&mut this.file).poll_read(cx, &mut buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) if buf.filled().is_empty() => Poll::Ready(None),
            Poll::Ready(Ok(())) => {
                if let Some(bar) = &this.progress {
                    bar.inc(buf.filled().len() as u64);
                }
                Poll::Ready(Some(Ok(Frame::data(Bytes::copy_from_slice(buf.filled())))))
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len)
    }
}
