//! `updraft sim`: replays a serverless trace through the keep-alive and pooling
//! policies and reports cold starts, idle memory and instance time, with SVG plots.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use plotters::prelude::*;
use updraft_scaling::sim::{simulate, Policy, PolicyReport};

use crate::output::print_structured;
use crate::Output;

#[derive(Args)]
pub struct SimArgs {
    /// A folder in the Azure Functions 2019 format: invocations.csv, durations.csv,
    /// memory.csv.
    #[arg(long)]
    trace: PathBuf,
    /// A policy to replay (repeatable): fixed-10m, fixed-30s, hybrid-histogram, pooling.
    /// All of them by default.
    #[arg(long = "policy", value_name = "NAME")]
    policies: Vec<String>,
    /// Write cold-starts.svg (CDF per policy) and pool.svg (capacity vs demand) here.
    #[arg(long, value_name = "DIR")]
    plots: Option<PathBuf>,
}

pub fn run(args: SimArgs, output: Output) -> anyhow::Result<u8> {
    let read = |name: &str| {
        let path = args.trace.join(name);
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    };
    let trace =
        updraft_scaling::trace::parse(&read("invocations.csv")?, &read("durations.csv")?, &read("memory.csv")?)?;
    let names: Vec<String> = if args.policies.is_empty() {
        Policy::NAMES.iter().map(|n| n.to_string()).collect()
    } else {
        args.policies.clone()
    };
    let mut reports = Vec::new();
    let started = std::time::Instant::now();
    for name in &names {
        let policy = Policy::named(name)
            .ok_or_else(|| anyhow::anyhow!("--policy {name:?} is not a policy; use {}", Policy::NAMES.join(", ")))?;
        reports.push(simulate(&trace, policy, name));
    }
    let elapsed = started.elapsed();
    if let Some(dir) = &args.plots {
        std::fs::create_dir_all(dir)?;
        cold_start_cdf(&dir.join("cold-starts.svg"), &reports)?;
        if let Some(pooled) = reports.iter().find(|r| !r.pool_series.is_empty()) {
            pool_plot(&dir.join("pool.svg"), pooled)?;
        }
    }
    if !print_structured(&serde_json::json!({ "policies": reports }), output) {
        println!(
            "{} apps, {} invocations over {} minutes, replayed in {:.2}s",
            trace.apps.len(),
            trace.invocations(),
            trace.minutes,
            elapsed.as_secs_f64()
        );
        println!(
            "{:<18} {:>10} {:>14} {:>16} {:>16} {:>10}",
            "POLICY", "COLD %", "COLD % (p75)", "IDLE MEM GB-s", "INSTANCE-s", "POOL HIT %"
        );
        for r in &reports {
            println!(
                "{:<18} {:>10.2} {:>14.2} {:>16.0} {:>16.0} {:>10}",
                r.policy,
                r.cold_start_pct,
                r.cold_start_pct_p75,
                r.idle_memory_gb_s,
                r.instance_seconds,
                r.pool_hit_pct.map_or("-".to_string(), |p| format!("{p:.2}"))
            );
        }
        if let Some(dir) = &args.plots {
            println!("plots in {}", dir.display());
        }
    }
    Ok(0)
}

fn plot_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing a plot: {e}")
}

/// The share of applications (y) whose cold-start percentage is at most x.
fn cold_start_cdf(path: &Path, reports: &[PolicyReport]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Cold starts per application (CDF)", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..100f64, 0f64..1f64)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("cold starts of the application's calls (%)")
        .y_desc("share of applications")
        .draw()
        .map_err(plot_error)?;
    for (i, report) in reports.iter().enumerate() {
        let mut values = report.per_app_cold_pct.clone();
        values.sort_by(f64::total_cmp);
        let n = values.len().max(1) as f64;
        let color = Palette99::pick(i).to_rgba();
        let points = values.iter().enumerate().map(|(k, v)| (*v, (k + 1) as f64 / n));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(plot_error)?
            .label(report.policy.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(plot_error)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

/// Pool capacity against the demand for new instances, per minute.
fn pool_plot(path: &Path, report: &PolicyReport) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (900, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let top = report.pool_series.iter().map(|(d, c)| d.max(*c)).fold(1.0, f64::max);
    let minutes = report.pool_series.len() as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption("Pre-warmed pool: capacity vs demand", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..minutes, 0f64..top * 1.05)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("minute of the trace")
        .y_desc("instances per minute")
        .draw()
        .map_err(plot_error)?;
    let demand: Vec<f64> = report.pool_series.iter().map(|(d, _)| *d).collect();
    let capacity: Vec<f64> = report.pool_series.iter().map(|(_, c)| *c).collect();
    for (label, color, values) in [
        ("demand (new instances)", RED, demand),
        ("pool capacity", BLUE, capacity),
    ] {
        let points = values.into_iter().enumerate().map(|(m, v)| (m as f64, v));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(1)))
            .map_err(plot_error)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(plot_error)?;
    root.present().map_err(plot_error)?;
    Ok(())
}
