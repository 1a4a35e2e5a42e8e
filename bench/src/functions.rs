//! `function`: cold starts of Python and Node functions (first response from zero) with
//! the pool of stem cells, warm interpreters with the shim loaded, against the same
//! with the pool off (a fresh interpreter each time), at 1 and at N simultaneous cold
//! starts, in the same run.

use std::path::Path;

use serde::Serialize;

use crate::coldstart::cold_starts;
use crate::harness::Server;
use crate::stats::{summarize, Summary};

const PYTHON: &str = "def handle(request):\n    return {\"ok\": True}\n";
const NODE: &str = "export default async function () {\n  return { ok: true };\n}\n";

#[derive(Serialize)]
struct Row {
    runtime: String,
    simultaneous: usize,
    stem_cells: Summary,
    fresh_interpreter: Summary,
    /// Fresh over stem cells, at the median.
    speedup_p50: f64,
}

pub fn run(updraft: &Path, out: &Path, sizes: &[usize], pool_memory: &str) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    std::fs::write(work.path().join("handler.py"), PYTHON)?;
    std::fs::write(work.path().join("handler.mjs"), NODE)?;
    let mut rows = Vec::new();
    for (runtime, file) in [("python3", "handler.py"), ("node", "handler.mjs")] {
        let what: Vec<String> = [
            "--function",
            work.path().join(file).to_str().unwrap_or_default(),
            "--runtime",
            runtime,
        ]
        .map(String::from)
        .to_vec();
        for &n in sizes {
            let pooled = Server::start_with_env(updraft, &[("UPDRAFT_POOL_MAX_MEMORY", pool_memory)])?;
            // One burst first, so the pool has grown to the burst's size.
            let stem = cold_starts(&pooled, updraft, &what, n, 1)?;
            drop(pooled);
            let unpooled = Server::start_with_env(updraft, &[("UPDRAFT_POOL_MAX_MEMORY", "0")])?;
            let fresh = cold_starts(&unpooled, updraft, &what, n, 1)?;
            drop(unpooled);
            let (stem, fresh) = (summarize(&stem), summarize(&fresh));
            rows.push(Row {
                runtime: runtime.to_string(),
                simultaneous: n,
                speedup_p50: fresh.p50_ms / stem.p50_ms,
                stem_cells: stem,
                fresh_interpreter: fresh,
            });
        }
    }
    println!(
        "{:<8} {:>4} | {:>9} {:>9} | {:>9} {:>9} | {:>7}",
        "runtime", "N", "stem p50", "p99", "fresh p50", "p99", "speedup"
    );
    for r in &rows {
        println!(
            "{:<8} {:>4} | {:>9.1} {:>9.1} | {:>9.1} {:>9.1} | {:>7.2}",
            r.runtime,
            r.simultaneous,
            r.stem_cells.p50_ms,
            r.stem_cells.p99_ms,
            r.fresh_interpreter.p50_ms,
            r.fresh_interpreter.p99_ms,
            r.speedup_p50
        );
    }
    let path = out.join("function.json");
    std::fs::write(&path, serde_json::to_string_pretty(&rows)?)?;
    println!("wrote {}", path.display());
    Ok(())
}
