//! `updraft sim` on a sample of the Azure Functions 2019 trace: every policy reported,
//! JSON in the documented shape, plots written, bad input named.

mod common;

use std::process::Command;

use common::*;

fn sim(args: &[&str]) -> CliOut {
    let out = Command::new(BIN).arg("sim").args(args).output().unwrap();
    CliOut {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn the_trace_replays_through_every_policy() {
    let trace = fixtures().join("trace");
    let plots = tempfile::tempdir().unwrap();
    let out = sim(&[
        "--trace",
        trace.to_str().unwrap(),
        "--plots",
        plots.path().to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let policies = report["policies"].as_array().unwrap();
    let names: Vec<&str> = policies.iter().map(|p| p["policy"].as_str().unwrap()).collect();
    assert_eq!(names, ["fixed-10m", "fixed-30s", "hybrid-histogram", "pooling"]);
    for p in policies {
        for key in [
            "cold_start_pct",
            "cold_start_pct_p75",
            "idle_memory_gb_s",
            "instance_seconds",
        ] {
            let v = p[key].as_f64().unwrap_or_else(|| panic!("{key} in {p}"));
            assert!(v >= 0.0, "{key} in {p}");
        }
        assert!(p["invocations"].as_u64().unwrap() > 0);
    }
    let get = |name: &str, key: &str| {
        policies.iter().find(|p| p["policy"] == name).unwrap()[key]
            .as_f64()
            .unwrap()
    };
    // The trade-off the policies exist for: a longer keep-alive, fewer cold starts and
    // more idle memory.
    assert!(get("fixed-10m", "cold_start_pct") < get("fixed-30s", "cold_start_pct"));
    assert!(get("fixed-10m", "idle_memory_gb_s") > get("fixed-30s", "idle_memory_gb_s"));
    assert!(get("pooling", "cold_start_pct") < get("fixed-30s", "cold_start_pct"));
    for plot in ["cold-starts.svg", "pool.svg"] {
        let svg = std::fs::read_to_string(plots.path().join(plot)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("polyline"), "{plot}");
    }

    let table = sim(&["--trace", trace.to_str().unwrap(), "--policy", "fixed-30s"]);
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(
        table.stdout.contains("fixed-30s") && !table.stdout.contains("pooling"),
        "{}",
        table.stdout
    );
}

#[test]
fn bad_input_is_named() {
    let trace = fixtures().join("trace");
    let out = sim(&["--trace", trace.to_str().unwrap(), "--policy", "forever"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("\"forever\" is not a policy"), "{}", out.stderr);
    let empty = tempfile::tempdir().unwrap();
    let out = sim(&["--trace", empty.path().to_str().unwrap()]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("invocations.csv"), "{}", out.stderr);
}
