//! The CLI's side of the typed API client: exit codes for its errors, and uploads
//! with a progress bar on a terminal.

use std::io::IsTerminal;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::{AsyncRead, ReadBuf};
pub use updraft_api::client::Client as ApiClient;
use updraft_api::client::Error;

use crate::exit;

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

    /// The command line was wrong: exit 2, as clap's own refusals.
    pub fn usage(message: impl Into<String>) -> Self {
        CliError {
            code: exit::USAGE,
            message: message.into(),
        }
    }
}

impl From<Error> for CliError {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::Unreachable { .. } => exit::UNREACHABLE,
            Error::Api { status, .. } if *status == StatusCode::NOT_FOUND => exit::NOT_FOUND,
            Error::Api { status, .. } if matches!(*status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
                exit::DENIED
            }
            _ => exit::FAILED,
        };
        CliError {
            code,
            message: e.to_string(),
        }
    }
}

/// Reads a streamed answer of JSON lines (an image pull, a watched deploy), handing
/// each, with its text, to `each` until that returns an outcome; `Ok(None)` when the
/// stream ends first.
pub async fn read_json_lines<T: serde::de::DeserializeOwned, R>(
    mut body: hyper::body::Incoming,
    what: &str,
    mut each: impl FnMut(T, &[u8]) -> Result<Option<R>, CliError>,
) -> Result<Option<R>, CliError> {
    let mut pending = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| CliError::failed(format!("{what} broke off: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        pending.extend_from_slice(&data);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let parsed: T = serde_json::from_slice(&line)
                .map_err(|e| CliError::failed(format!("unexpected reply from the API: {e}")))?;
            if let Some(outcome) = each(parsed, &line)? {
                return Ok(Some(outcome));
            }
        }
    }
    Ok(None)
}

/// A file as a request body and its length, with a progress bar on a terminal for a
/// large one, cleared once the body is sent (or dropped).
pub async fn file_body(file: &Path) -> Result<(updraft_api::client::Body, u64), CliError> {
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
        progress,
    };
    Ok((body.boxed_unsync(), len))
}

struct FileBody {
    file: tokio::fs::File,
    len: u64,
    buf: Vec<u8>,
    progress: Option<ProgressBar>,
}

impl Drop for FileBody {
    fn drop(&mut self) {
        if let Some(bar) = &self.progress {
            bar.finish_and_clear();
        }
    }
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
