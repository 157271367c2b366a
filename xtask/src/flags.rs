//! Flags of every xtask command, declared in one place.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use mixer_experiments::{DeviceChoice, Profile};

/// `cargo xtask <command>`.
#[derive(Parser, Debug)]
#[command(name = "xtask")]
pub struct Xtask {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Available commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Generate the published datasets (MixER, Nzoyem et al. 2025), train, adapt and evaluate the published
    /// experiments, and write results/REPORT.md with tables and figures.
    Reproduce(ReproduceArgs),
    /// Run the criterion benches (integrators on burn-flex and burn-ndarray).
    Bench(BenchArgs),
}

/// Flags of `cargo xtask reproduce`.
#[derive(Args, Debug)]
pub struct ReproduceArgs {
    /// Parameter profile: quick or paper.
    #[arg(long, default_value = "quick")]
    pub profile: Profile,
    /// Run only this experiment or dataset (e.g. lotka-volterra, odebench10, selkov); `routers`,
    /// `odebench10-coda` and `odebench10-ncf` run only when named.
    #[arg(long)]
    pub only: Option<String>,
    /// Output folder (re-running with the same folder resumes).
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Device of the training runs: cpu, flex, ndarray or cuda.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
    /// Seed of the dataset generation.
    #[arg(long, default_value_t = 2025)]
    pub seed: u64,
}

/// Flags of `cargo xtask bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Only benchmarks whose name contains this filter (criterion's filter); `outer` runs only
    /// the outer-step timings.
    pub filter: Option<String>,
    /// Build the benches with `--features cuda` as well.
    #[arg(long)]
    pub cuda: bool,
}
