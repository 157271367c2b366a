//! `cargo xtask bench`: the criterion benches of `benches/`, run by cargo, then the outer-step
//! timings of the shipped experiments (`benches/examples/outer_step.rs`) written to `BENCH.md`.

use std::process::Command;

use anyhow::{Context, bail};

use crate::flags::BenchArgs;

/// Runs `cargo bench -p mixer-benches [--features cuda] [-- FILTER]`, then (without a filter,
/// or with the filter `outer` alone) the outer-step timings into `BENCH.md`.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["bench", "-p", "mixer-benches"]);
    if args.cuda {
        cmd.args(["--features", "cuda"]);
    }
    if let Some(f) = &args.filter {
        cmd.args(["--", f]);
    }
    if args.filter.as_deref() != Some("outer") {
        let status = cmd.status().context("starting cargo bench")?;
        if !status.success() {
            bail!("cargo bench failed ({status})");
        }
        println!("criterion reports: target/criterion/report/index.html; figures in docs/benchmarks.md");
    }
    if args.filter.is_none() || args.filter.as_deref() == Some("outer") {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "run",
                "--release",
                "-p",
                "mixer-benches",
                "--example",
                "outer_step",
                "--",
                "--markdown",
                "BENCH.md",
            ])
            .status()
            .context("starting the outer-step timings")?;
        if !status.success() {
            bail!("outer-step timings failed ({status})");
        }
    }
    Ok(())
}
