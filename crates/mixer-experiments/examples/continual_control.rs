//! Runs the continual control experiment (HyperCRL and its baselines) under a profile, prints
//! each method's reward and prediction matrices with its time, and writes the runs and the
//! Markdown section under the output folder.
//!
//! `cargo run --release -p mixer-experiments --example continual_control -- /tmp/continual quick`

use std::time::Instant;

use mixer_experiments::{ContinualExperiment, ContinualJob, DeviceChoice, Profile, continual_markdown, dispatch};

fn main() -> Result<(), mixer_experiments::ExperimentError> {
    let mut args = std::env::args().skip(1);
    let out: std::path::PathBuf = args.next().unwrap_or_else(|| "continual".into()).into();
    let profile: Profile = args
        .next()
        .as_deref()
        .unwrap_or("quick")
        .parse()
        .map_err(|e: String| mixer_experiments::ExperimentError::Toml { path: "<args>".into(), message: e })?;
    mixer_experiments::init_logging("info");
    let experiment = ContinualExperiment::builtin("continual-control", profile)?;
    let start = Instant::now();
    let record = dispatch(DeviceChoice::Cpu, ContinualJob { experiment: &experiment, runs_dir: out.join("runs") })??;
    for run in &record.runs {
        let m = &run.metrics;
        let seconds: f64 = m.report.seconds.iter().sum();
        println!(
            "{} on {}: {seconds:.1} s, average final reward {:?}, average forgetting {:?}",
            run.method.name(),
            m.system,
            m.average_final_reward,
            m.average_forgetting
        );
        for (i, (r, e)) in m.report.reward.iter().zip(&m.report.mse).enumerate() {
            let r: Vec<String> = r.iter().map(|v| format!("{v:8.1}")).collect();
            let e: Vec<String> = e.iter().map(|v| format!("{v:.1e}")).collect();
            println!("  after task {i}: reward [{}]  mse [{}]", r.join(" "), e.join(" "));
        }
    }
    println!("total {:.1} s", start.elapsed().as_secs_f64());
    let md = continual_markdown(&record, |p| p.strip_prefix(&out).unwrap_or(p).display().to_string());
    mixer_train::write_atomic(&out.join("CONTINUAL.md"), md.as_bytes())?;
    println!("wrote {}", out.join("CONTINUAL.md").display());
    Ok(())
}
