//! The Azure Functions 2019 trace format (`invocations.csv`, `durations.csv`,
//! `memory.csv`), read from text and gathered per application, as "Serverless in the
//! Wild" (Shahrad et al., USENIX ATC 2020) studies it.

use std::collections::BTreeMap;

/// One application: its invocations per minute and the size of one execution.
#[derive(Debug, Clone, PartialEq)]
pub struct App {
    pub id: String,
    /// Invocations in each minute of the trace, summed over the app's functions.
    pub per_minute: Vec<u32>,
    /// Mean execution time, weighted by each function's invocation count.
    pub duration_ms: f64,
    /// The app's memory: its functions' shares added back together.
    pub memory_mb: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// The minute of the day the first column stands for.
    pub first_minute: u32,
    pub minutes: usize,
    pub apps: Vec<App>,
}

impl Trace {
    pub fn invocations(&self) -> u64 {
        self.apps
            .iter()
            .flat_map(|a| a.per_minute.iter())
            .map(|n| u64::from(*n))
            .sum()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("{file}: {message}")]
    Bad { file: &'static str, message: String },
}

fn bad(file: &'static str, message: impl Into<String>) -> TraceError {
    TraceError::Bad {
        file,
        message: message.into(),
    }
}

fn rows(file: &'static str, text: &str) -> Result<(csv::StringRecord, Vec<csv::StringRecord>), TraceError> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader.headers().map_err(|e| bad(file, e.to_string()))?.clone();
    let rows = reader
        .records()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(file, e.to_string()))?;
    Ok((header, rows))
}

fn column(file: &'static str, header: &csv::StringRecord, name: &str) -> Result<usize, TraceError> {
    header
        .iter()
        .position(|h| h == name)
        .ok_or_else(|| bad(file, format!("has no column {name:?}")))
}

fn number(file: &'static str, row: usize, field: &str, text: &str) -> Result<f64, TraceError> {
    text.trim()
        .parse::<f64>()
        .map_err(|_| bad(file, format!("row {row}: {field} {text:?} is not a number")))
}

/// Reads the three files' contents.
pub fn parse(invocations: &str, durations: &str, memory: &str) -> Result<Trace, TraceError> {
    const INV: &str = "invocations.csv";
    const DUR: &str = "durations.csv";
    const MEM: &str = "memory.csv";
    let (header, inv_rows) = rows(INV, invocations)?;
    let app_col = column(INV, &header, "HashApp")?;
    let fn_col = column(INV, &header, "HashFunction")?;
    let minute_cols: Vec<(usize, u32)> = header
        .iter()
        .enumerate()
        .filter_map(|(i, h)| h.parse::<u32>().ok().map(|m| (i, m)))
        .collect();
    let first_minute = minute_cols
        .first()
        .map(|(_, m)| *m)
        .ok_or_else(|| bad(INV, "has no per-minute columns (headed by minute numbers)"))?;
    let minutes = minute_cols.len();

    let (header, dur_rows) = rows(DUR, durations)?;
    let (d_fn, d_avg, d_count) = (
        column(DUR, &header, "HashFunction")?,
        column(DUR, &header, "Average")?,
        column(DUR, &header, "Count")?,
    );
    let mut duration_of: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for (i, row) in dur_rows.iter().enumerate() {
        duration_of.insert(
            &row[d_fn],
            (
                number(DUR, i + 2, "Average", &row[d_avg])?,
                number(DUR, i + 2, "Count", &row[d_count])?,
            ),
        );
    }
    let (header, mem_rows) = rows(MEM, memory)?;
    let (m_fn, m_avg) = (
        column(MEM, &header, "HashFunction")?,
        column(MEM, &header, "AverageAllocatedMb")?,
    );
    let mut memory_of: BTreeMap<&str, f64> = BTreeMap::new();
    for (i, row) in mem_rows.iter().enumerate() {
        memory_of.insert(&row[m_fn], number(MEM, i + 2, "AverageAllocatedMb", &row[m_avg])?);
    }

    struct Acc {
        per_minute: Vec<u32>,
        weighted_ms: f64,
        weight: f64,
        memory_mb: f64,
    }
    let mut apps: BTreeMap<String, Acc> = BTreeMap::new();
    for (i, row) in inv_rows.iter().enumerate() {
        let function = &row[fn_col];
        let acc = apps.entry(row[app_col].to_string()).or_insert_with(|| Acc {
            per_minute: vec![0; minutes],
            weighted_ms: 0.0,
            weight: 0.0,
            memory_mb: 0.0,
        });
        for (slot, (col, _)) in minute_cols.iter().enumerate() {
            let count = row.get(*col).unwrap_or("0").trim().parse::<u32>().map_err(|_| {
                bad(
                    INV,
                    format!("row {}: minute column {} is not a count", i + 2, header_name(*col)),
                )
            })?;
            acc.per_minute[slot] += count;
        }
        let (avg, count) = duration_of
            .get(function)
            .copied()
            .ok_or_else(|| bad(DUR, format!("has no row for function {function}")))?;
        acc.weighted_ms += avg * count.max(1.0);
        acc.weight += count.max(1.0);
        acc.memory_mb += memory_of
            .get(function)
            .copied()
            .ok_or_else(|| bad(MEM, format!("has no row for function {function}")))?;
    }
    Ok(Trace {
        first_minute,
        minutes,
        apps: apps
            .into_iter()
            .map(|(id, acc)| App {
                id,
                per_minute: acc.per_minute,
                duration_ms: acc.weighted_ms / acc.weight.max(1.0),
                memory_mb: acc.memory_mb,
            })
            .collect(),
    })
}

fn header_name(col: usize) -> String {
    format!("#{}", col + 1)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub const INVOCATIONS: &str = "HashOwner,HashApp,HashFunction,Trigger,480,481,482
o1,a1,f1,http,2,0,1
o1,a1,f2,timer,1,0,0
o2,a2,f3,queue,0,0,4
";
    pub const DURATIONS: &str = "HashOwner,HashApp,HashFunction,Average,Count,Minimum,Maximum
o1,a1,f1,100,30,1,2
o1,a1,f2,400,10,1,2
o2,a2,f3,2000,5,1,2
";
    pub const MEMORY: &str = "HashFunction,HashOwner,HashApp,SampleCount,AverageAllocatedMb
f1,o1,a1,5,100
f2,o1,a1,5,100
f3,o2,a2,5,300
";

    #[test]
    fn functions_gather_into_apps() {
        let trace = parse(INVOCATIONS, DURATIONS, MEMORY).unwrap();
        assert_eq!((trace.first_minute, trace.minutes), (480, 3));
        assert_eq!(trace.invocations(), 8);
        let a1 = &trace.apps[0];
        assert_eq!(a1.per_minute, vec![3, 0, 1]);
        assert!((a1.duration_ms - 175.0).abs() < 1e-9, "weighted by count");
        assert_eq!(a1.memory_mb, 200.0, "the functions' shares added back");
        assert_eq!(trace.apps[1].per_minute, vec![0, 0, 4]);
    }

    #[test]
    fn a_missing_row_or_column_is_named() {
        let err = parse(INVOCATIONS, DURATIONS, "HashFunction,AverageAllocatedMb\nf1,1\n").unwrap_err();
        assert!(
            err.to_string().contains("memory.csv: has no row for function f2"),
            "{err}"
        );
        let err = parse("HashApp,HashFunction\n", DURATIONS, MEMORY).unwrap_err();
        assert!(err.to_string().contains("per-minute"), "{err}");
    }
}
