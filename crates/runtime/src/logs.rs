//! Instance output captured line by line, long lines split and marked, and handed to
//! a [`LogSink`]: keeping, stamping and querying the lines is the telemetry's work.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader as AsyncBufReader};

use crate::InstanceSpec;

/// Longest line kept as one record; longer output is split and marked.
pub const MAX_LINE: usize = 16 * 1024;
const TAIL_LINES: usize = 20;

/// One instance's output, a line at a time; `continued` marks a line cut at
/// [`MAX_LINE`] that goes on in the next.
pub trait InstanceLog: Send + Sync {
    fn write(&self, stream: &str, line: String, continued: bool);
}

/// Where the drivers send what instances print: a log opened per instance as it starts.
pub trait LogSink: Send + Sync {
    fn open(&self, spec: &InstanceSpec) -> std::io::Result<Arc<dyn InstanceLog>>;
}

/// The last lines of an instance, for reports like "exited at once; it printed …".
#[derive(Default)]
pub struct LogTail(Mutex<VecDeque<String>>);

impl LogTail {
    pub fn push(&self, line: String) {
        let mut tail = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }

    pub fn lines(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

/// Copies a stream into the log and tail until it closes.
pub async fn capture(
    stream: impl AsyncRead + Unpin,
    name: &'static str,
    file: Arc<dyn InstanceLog>,
    tail: Arc<LogTail>,
) {
    let mut reader = AsyncBufReader::with_capacity(64 * 1024, stream);
    let mut pending: Vec<u8> = Vec::new();
    while let Ok(buf) = reader.fill_buf().await {
        if buf.is_empty() {
            break;
        }
        let (take, complete) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        pending.extend_from_slice(&buf[..take]);
        reader.consume(take);
        if complete || pending.len() >= MAX_LINE {
            emit(&mut pending, name, &file, &tail, !complete);
        }
    }
    if !pending.is_empty() {
        emit(&mut pending, name, &file, &tail, false);
    }
}

fn emit(pending: &mut Vec<u8>, stream: &str, file: &Arc<dyn InstanceLog>, tail: &LogTail, continued: bool) {
    while pending.len() > MAX_LINE {
        let rest = pending.split_off(MAX_LINE);
        let text = String::from_utf8_lossy(pending).into_owned();
        file.write(stream, text, true);
        *pending = rest;
    }
    let mut text = String::from_utf8_lossy(pending).into_owned();
    pending.clear();
    while text.ends_with('\n') || text.ends_with('\r') {
        text.pop();
    }
    tail.push(text.clone());
    file.write(stream, text, continued);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keeps what it is given, as a log would, for reading back.
    #[derive(Default)]
    struct Kept(Mutex<Vec<(String, String, bool)>>);

    impl InstanceLog for Kept {
        fn write(&self, stream: &str, line: String, continued: bool) {
            self.0.lock().unwrap().push((stream.to_string(), line, continued));
        }
    }

    #[tokio::test]
    async fn captures_lines_and_marks_long_ones() {
        let kept = Arc::new(Kept::default());
        let tail = Arc::new(LogTail::default());
        let long = "x".repeat(MAX_LINE + 10);
        let input = format!("first\r\nsecond\n{long}\nlast-no-newline");
        capture(input.as_bytes(), "stdout", kept.clone(), tail.clone()).await;
        let lines = kept.0.lock().unwrap().clone();
        let short: Vec<(&str, &str, bool)> = lines
            .iter()
            .map(|(s, l, c)| (s.as_str(), &l[..l.len().min(5)], *c))
            .collect();
        assert_eq!(
            short,
            [
                ("stdout", "first", false),
                ("stdout", "secon", false),
                ("stdout", "xxxxx", true),
                ("stdout", "xxxxx", false),
                ("stdout", "last-", false)
            ]
        );
        assert_eq!(lines[2].1.len(), MAX_LINE);
        assert_eq!(lines[3].1.len(), 10);
        assert_eq!(tail.lines().last().unwrap(), "last-no-newline");
    }
}
