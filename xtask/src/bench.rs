//! `cargo xtask bench`: the criterion benches of `benches/`, run by cargo.

use std::process::Command;

use anyhow::{Context, bail};

use crate::flags::BenchArgs;

/// Runs `cargo bench -p mixer-benches [--features cuda] [-- FILTER]`.
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
    let status = cmd.status().context("starting cargo bench")?;
    if !status.success() {
        bail!("cargo bench failed ({status})");
    }
    println!("criterion reports: target/criterion/report/index.html; figures in docs/benchmarks.md");
    Ok(())
}
