//! Instance output as the platform keeps it: one JSON-lines file per instance under
//! `logs/{namespace}/{service}/`, each line stamped as it is written; the access log
//! beside them; queries over both; and the live feed followers read.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};

/// The wall clock a record is stamped with, in µs since the epoch.
fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    pub ts_us: i64,
    pub revision: String,
    pub instance: String,
    pub stream: String,
    pub line: String,
    /// Set when the line went on past the capture's longest line and continues in the
    /// next record.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub continued: bool,
    /// A line that is a JSON object (structured logging), parsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<serde_json::Map<String, serde_json::Value>>,
}

/// One request through the gateway, as the access log keeps it (apart from the
/// instances' own output, in `requests.access` beside their logs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessRecord {
    pub ts_us: i64,
    pub revision: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub duration_ms: f64,
    /// It waited for an instance to start.
    pub cold: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// The access log's file name in a service's log directory.
pub const ACCESS_LOG: &str = "requests.access";
/// Where the access log goes when it grows past [`ACCESS_LOG_ROTATE_BYTES`]; retention
/// deletes it like any stopped instance's log.
pub const ACCESS_LOG_ROTATED: &str = "requests.access.1";
pub const ACCESS_LOG_ROTATE_BYTES: u64 = 64 << 20;

/// Reads a service's access records that pass `query` (its `grep` looks at the path).
pub fn read_access(dir: &Path, query: &LogQuery) -> std::io::Result<Vec<AccessRecord>> {
    let mut records = Vec::new();
    for name in [ACCESS_LOG_ROTATED, ACCESS_LOG] {
        let file = match File::open(dir.join(name)) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        read_access_file(file, query, &mut records)?;
    }
    if let Some(n) = query.tail {
        let skip = records.len().saturating_sub(n);
        records.drain(..skip);
    }
    Ok(records)
}

fn read_access_file(file: File, query: &LogQuery, records: &mut Vec<AccessRecord>) -> std::io::Result<()> {
    for line in BufReader::new(file).lines() {
        let Ok(record) = serde_json::from_str::<AccessRecord>(&line?) else {
            continue;
        };
        let passes = query.revision.as_ref().is_none_or(|r| *r == record.revision)
            && query
                .instance
                .as_ref()
                .is_none_or(|i| record.instance.as_ref() == Some(i))
            && query.since_us.is_none_or(|t| record.ts_us >= t)
            && query.until_us.is_none_or(|t| record.ts_us < t)
            && query.grep.as_ref().is_none_or(|g| record.path.contains(g.as_str()));
        if passes {
            records.push(record);
        }
    }
    Ok(())
}

/// The stream of a build's output, beside its instances' `stdout` and `stderr`.
pub const BUILD_STREAM: &str = "build";

pub fn service_log_dir(root: &Path, namespace: &str, service: &str) -> PathBuf {
    root.join(namespace).join(service)
}

/// A record as followers see it live: where it came from, and the record.
#[derive(Debug, Clone)]
pub struct LiveRecord {
    pub namespace: String,
    pub service: String,
    pub record: LogRecord,
}

/// New records for live followers. Bounded: a follower that falls behind loses the
/// oldest records and is told how many; writers never wait.
pub type LogFeed = tokio::sync::broadcast::Sender<std::sync::Arc<LiveRecord>>;

/// Records a live feed holds for followers that fall behind.
pub const FEED_CAPACITY: usize = 4096;

/// Appends one instance's records to its file, and offers them to live followers.
pub struct LogFile {
    file: Arc<Mutex<File>>,
    revision: String,
    instance: String,
    feed: Option<(LogFeed, String, String)>,
    /// Records the writer had no room for since the last one it took.
    dropped: AtomicU64,
}

/// Records queued for the writer thread before new ones are dropped.
const WRITE_QUEUE: usize = 64 * 1024;

enum WriteOp {
    Record(Arc<Mutex<File>>, String),
    /// Answered once everything queued before it is written.
    Flush(std::sync::mpsc::Sender<()>),
}

/// One thread writes every instance's records, so a slow disk stalls neither the
/// capture tasks nor the runtime threads the proxy shares with them.
fn writer() -> &'static std::sync::mpsc::SyncSender<WriteOp> {
    static WRITER: OnceLock<std::sync::mpsc::SyncSender<WriteOp>> = OnceLock::new();
    WRITER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<WriteOp>(WRITE_QUEUE);
        std::thread::Builder::new()
            .name("updraft-log-writer".into())
            .spawn(move || {
                for op in rx {
                    match op {
                        WriteOp::Record(file, text) => {
                            let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
                            // One write per record keeps concurrent records whole.
                            let _ = file.write_all(text.as_bytes());
                        }
                        WriteOp::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })
            .expect("the log writer thread starts");
        tx
    })
}

/// Waits until every record queued so far is in its file.
pub fn flush_writes() {
    let (tx, rx) = std::sync::mpsc::channel();
    if writer().send(WriteOp::Flush(tx)).is_ok() {
        let _ = rx.recv();
    }
}

impl LogFile {
    /// `feed`, when given, is the live feed with the instance's namespace and service.
    pub fn create(
        dir: &Path,
        revision: &str,
        instance: &str,
        feed: Option<(LogFeed, String, String)>,
    ) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{instance}.log")))?;
        Ok(LogFile {
            file: Arc::new(Mutex::new(file)),
            revision: revision.to_string(),
            instance: instance.to_string(),
            feed,
            dropped: AtomicU64::new(0),
        })
    }

    pub fn write(&self, stream: &str, line: String, continued: bool) {
        let fields = if !continued && line.starts_with('{') {
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&line).ok()
        } else {
            None
        };
        let record = LogRecord {
            ts_us: now_us(),
            revision: self.revision.clone(),
            instance: self.instance.clone(),
            stream: stream.to_string(),
            line,
            continued,
            fields,
        };
        let Ok(mut text) = serde_json::to_string(&record) else {
            return;
        };
        text.push('\n');
        self.queue(text, record.ts_us);
        if let Some((feed, namespace, service)) = &self.feed {
            if feed.receiver_count() > 0 {
                let _ = feed.send(std::sync::Arc::new(LiveRecord {
                    namespace: namespace.clone(),
                    service: service.clone(),
                    record,
                }));
            }
        }
    }
}

impl LogFile {
    /// Hands a record to the writer, or counts it as dropped when the writer is full;
    /// the next record that gets through is preceded by the count.
    fn queue(&self, text: String, ts_us: i64) {
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            // Stamped as the record it precedes, so it sorts just before it.
            let note = LogRecord {
                ts_us,
                revision: self.revision.clone(),
                instance: self.instance.clone(),
                stream: "updraft".into(),
                line: format!("{dropped} lines dropped: the log writer fell behind"),
                continued: false,
                fields: None,
            };
            if let Ok(mut note) = serde_json::to_string(&note) {
                note.push('\n');
                if writer().try_send(WriteOp::Record(self.file.clone(), note)).is_err() {
                    self.dropped.fetch_add(dropped, Ordering::Relaxed);
                }
            }
        }
        if writer().try_send(WriteOp::Record(self.file.clone(), text)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Which records to read back.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    pub revision: Option<String>,
    pub instance: Option<String>,
    /// Keep only the last this many records.
    pub tail: Option<usize>,
    /// Records at or after this time (µs since the epoch).
    pub since_us: Option<i64>,
    /// Records before this time.
    pub until_us: Option<i64>,
    /// Records whose line contains this text.
    pub grep: Option<String>,
    /// The builds' records (stream `build`) instead of the instances'.
    pub build: bool,
}

impl LogQuery {
    /// A cheap look at a stored line before it is parsed: its leading timestamp, and
    /// the grep text where JSON would store it unescaped. False only for lines that
    /// cannot match.
    fn may_match(&self, raw: &str) -> bool {
        if self.since_us.is_some() || self.until_us.is_some() {
            let ts = raw
                .strip_prefix("{\"ts_us\":")
                .and_then(|rest| rest.split(',').next())
                .and_then(|n| n.parse::<i64>().ok());
            if let Some(ts) = ts {
                if self.since_us.is_some_and(|t| ts < t) || self.until_us.is_some_and(|t| ts >= t) {
                    return false;
                }
            }
        }
        match &self.grep {
            Some(g) if !g.chars().any(|c| c == '"' || c == '\\' || c.is_control()) => raw.contains(g.as_str()),
            _ => true,
        }
    }

    /// Whether a record passes every filter but `tail`.
    pub fn matches(&self, record: &LogRecord) -> bool {
        (record.stream == BUILD_STREAM) == self.build
            && self.revision.as_ref().is_none_or(|r| *r == record.revision)
            && self.instance.as_ref().is_none_or(|i| *i == record.instance)
            && self.since_us.is_none_or(|t| record.ts_us >= t)
            && self.until_us.is_none_or(|t| record.ts_us < t)
            && self.grep.as_ref().is_none_or(|g| record.line.contains(g.as_str()))
    }
}

/// Reads the records of a service's instances, oldest first.
pub fn read_logs(dir: &Path, query: &LogQuery) -> std::io::Result<Vec<LogRecord>> {
    flush_writes();
    let mut records = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(records),
        Err(e) => return Err(e),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "log") {
            continue;
        }
        if let Some(instance) = &query.instance {
            if path.file_stem().is_none_or(|s| s != instance.as_str()) {
                continue;
            }
        }
        for line in BufReader::new(File::open(&path)?).lines() {
            let line = line?;
            if !query.may_match(&line) {
                continue;
            }
            let Ok(record) = serde_json::from_str::<LogRecord>(&line) else {
                continue;
            };
            if query.matches(&record) {
                records.push(record);
            }
        }
    }
    records.sort_by_key(|r| r.ts_us);
    if let Some(n) = query.tail {
        let skip = records.len().saturating_sub(n);
        records.drain(..skip);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_write_queue_drops_and_says_how_many() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFile::create(dir.path(), "r-00001", "stalled", None).unwrap();
        // The writer blocks on this file's lock: the queue fills and overflows.
        let held = log.file.lock().unwrap();
        let total = WRITE_QUEUE + 500;
        for i in 0..total {
            log.write("stdout", format!("line {i}"), false);
        }
        let dropped = log.dropped.load(Ordering::Relaxed);
        assert!(dropped >= 499, "{dropped}");
        drop(held);
        // Once the writer has caught up, the next record gets through with the count.
        flush_writes();
        log.write("stdout", "after".into(), false);
        let records = read_logs(dir.path(), &LogQuery::default()).unwrap();
        let note = records
            .iter()
            .find(|r| r.stream == "updraft")
            .expect("a dropped-lines record");
        assert_eq!(
            note.line,
            format!("{dropped} lines dropped: the log writer fell behind")
        );
        assert_eq!(records.last().unwrap().line, "after");
        assert_eq!(records.len() as u64, total as u64 - dropped + 2);
    }

    #[test]
    fn the_raw_prefilter_never_hides_a_match() {
        let record = LogRecord {
            ts_us: 5,
            revision: "r".into(),
            instance: "i".into(),
            stream: "stdout".into(),
            line: "say \"hi\"\tnow".into(),
            continued: false,
            fields: None,
        };
        let raw = serde_json::to_string(&record).unwrap();
        for grep in ["\"hi\"", "\tnow", "say", "hi"] {
            let q = LogQuery {
                grep: Some(grep.into()),
                ..Default::default()
            };
            assert!(q.may_match(&raw) && q.matches(&record), "{grep:?}");
        }
        let later = LogQuery {
            since_us: Some(6),
            ..Default::default()
        };
        assert!(!later.may_match(&raw));
        let miss = LogQuery {
            grep: Some("absent".into()),
            ..Default::default()
        };
        assert!(!miss.may_match(&raw));
    }

    #[tokio::test]
    async fn records_are_kept_queried_and_offered_live() {
        let dir = tempfile::tempdir().unwrap();
        let (feed, mut follower) = tokio::sync::broadcast::channel(FEED_CAPACITY);
        let file = LogFile::create(
            dir.path(),
            "hello-00001",
            "i1",
            Some((feed, "default".into(), "hello".into())),
        )
        .unwrap();
        file.write("stdout", "first".into(), false);
        file.write("stdout", "second".into(), false);
        file.write("stdout", "x".repeat(10), true);
        file.write("stdout", "{\"level\":\"info\",\"n\":1}".into(), false);
        let records = read_logs(dir.path(), &LogQuery::default()).unwrap();
        let lines: Vec<(&str, bool)> = records
            .iter()
            .map(|r| (&r.line[..r.line.len().min(5)], r.continued))
            .collect();
        assert_eq!(
            lines,
            [("first", false), ("secon", false), ("xxxxx", true), ("{\"lev", false)]
        );
        assert_eq!(records[3].fields.as_ref().unwrap()["level"], "info");
        assert!(records[0].fields.is_none());
        assert!(records[2].fields.is_none(), "a continued line is not parsed");
        let last = read_logs(
            dir.path(),
            &LogQuery {
                tail: Some(1),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(last.len(), 1);
        let none = read_logs(
            dir.path(),
            &LogQuery {
                revision: Some("other".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(none.is_empty());
        let grep = LogQuery {
            grep: Some("cond".into()),
            since_us: Some(records[0].ts_us),
            ..Default::default()
        };
        assert_eq!(read_logs(dir.path(), &grep).unwrap().len(), 1);
        let until = LogQuery {
            until_us: Some(records[0].ts_us),
            ..Default::default()
        };
        assert!(read_logs(dir.path(), &until).unwrap().is_empty());
        // Followers saw the same records, live, with where they came from.
        let live = follower.try_recv().unwrap();
        assert_eq!(
            (live.namespace.as_str(), live.record.line.as_str()),
            ("default", "first")
        );
    }
}
