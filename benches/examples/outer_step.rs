//! Seconds per outer step of the shipped experiments, with the tensor rollout
//! (`model.rollout = "stacked"`, the training path before the fused rollout) and the fused host
//! rollout (`"fused"`, the default) side by side in one process, on burn-flex autodiff f32.
//! Each case generates its dataset (seed 2025), then trains `steps` outer steps from scratch in
//! a temporary folder per rollout; the first step is reported apart (it includes warm-up), the
//! rest as a median. Gate refits, re-seating and checkpoints happen as configured.
//!
//! `cargo run --release -p mixer-benches --example outer_step -- [--markdown FILE] [steps] [NAME:PROFILE ...]`
//! (defaults: 4 steps; `odebench10:quick lotka-volterra:paper odebench10:paper`; Sel'kov's NCF
//! experts have no host form yet, so both of its columns would time the tensor path).

use std::fmt::Write as _;
use std::time::Instant;

use burn::backend::{Autodiff, Flex};
use mixer_core::Seeds;
use mixer_data::{DatasetSpec, GenerateOptions, generate};
use mixer_experiments::{Experiment, Profile};
use mixer_experts::Dispatch;
use mixer_train::Trainer;

type B = Autodiff<Flex>;

/// First-step and median later-step seconds of `steps` outer steps of `e` with `rollout`.
fn time_steps(e: &Experiment, data: &mixer_core::Dataset, rollout: Dispatch, steps: usize) -> (f64, f64) {
    let mut config = e.run.clone();
    config.model.rollout = rollout;
    config.train.outer_steps = config.train.outer_steps.max(steps);
    let dir = tempfile::tempdir().expect("temporary run folder");
    let device = Default::default();
    let mut trainer = Trainer::<B>::new(config, data.clone(), Seeds::new(e.seed), dir.path(), false, &device)
        .expect("trainer")
        .with_progress(false);
    let mut seconds = Vec::new();
    for step in 1..=steps {
        let start = Instant::now();
        trainer.run_until(step).expect("outer step");
        seconds.push(start.elapsed().as_secs_f64());
    }
    let mut rest = seconds[1..].to_vec();
    rest.sort_by(f64::total_cmp);
    (seconds[0], rest.get(rest.len() / 2).copied().unwrap_or(seconds[0]))
}

/// Peak resident memory of this process so far, MiB (Linux; 0 elsewhere).
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
    kib.unwrap_or(0.0) / 1024.0
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let markdown = args.iter().position(|a| a == "--markdown").map(|i| {
        let path = args.get(i + 1).cloned().expect("--markdown FILE");
        args.drain(i..i + 2);
        path
    });
    let steps = args.first().and_then(|a| a.parse::<usize>().ok()).map_or(4, |s| s.max(2));
    let cases: Vec<String> = args.iter().filter(|a| a.contains(':')).cloned().collect();
    let cases = if cases.is_empty() {
        ["odebench10:quick", "lotka-volterra:paper", "odebench10:paper"].map(String::from).to_vec()
    } else {
        cases
    };
    let threads = rayon::current_num_threads();
    let mut table = String::from(
        "| experiment | profile | stacked: first step s | stacked: s / step | fused: first step s | fused: s / step | speed-up |\n|---|---|---|---|---|---|---|\n",
    );
    for case in &cases {
        let (name, profile) = case.split_once(':').expect("NAME:PROFILE");
        let profile = match profile {
            "paper" => Profile::Paper,
            _ => Profile::Quick,
        };
        let e = Experiment::builtin(name, profile).expect("a shipped experiment");
        let spec = DatasetSpec::builtin(&e.data.system).expect("a shipped dataset");
        let dir = generate(&spec, &GenerateOptions::new(2025), &indicatif::ProgressBar::hidden()).expect("data");
        let train = mixer_data::subsample(&dir.train, e.run.data.subsample).expect("subsample");
        let (first_s, step_s) = time_steps(&e, &train, Dispatch::Stacked, steps);
        let (first_f, step_f) = time_steps(&e, &train, Dispatch::Fused, steps);
        let line = format!(
            "| {name} | {} | {first_s:.2} | {step_s:.3} | {first_f:.2} | {step_f:.3} | {:.1}x |",
            profile.name(),
            step_s / step_f
        );
        println!("{line}");
        if name == "lotka-volterra" && profile == Profile::Paper {
            println!("lotka-volterra paper outer step: {step_f:.2} s");
        }
        writeln!(table, "{line}").expect("string");
    }
    let peak = peak_rss_mib();
    println!("peak resident memory: {peak:.0} MiB; rayon threads: {threads}");
    if let Some(path) = markdown {
        let text = format!(
            "# Outer-step timings\n\nWritten by `cargo xtask bench` (`benches/examples/outer_step.rs`): {steps} outer steps of each \
             shipped experiment, trained from scratch with the tensor rollout (`stacked`) and the fused host rollout \
             (`fused`, the default) in one process, burn-flex autodiff f32, {threads} rayon threads. First step apart, \
             then the median step. Peak resident memory of the whole run: {peak:.0} MiB.\n\n{table}"
        );
        std::fs::write(&path, text).expect("write the markdown table");
        println!("wrote {path}");
    }
}
