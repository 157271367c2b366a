//! Flags of every xtask command, declared in one place.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use mixer_experiments::Profile;

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
    /// Regenerate the published datasets (MIXER.md §6), their figures and results/REPORT.md.
    Reproduce(ReproduceArgs),
}

/// Flags of `cargo xtask reproduce`.
#[derive(Args, Debug)]
pub struct ReproduceArgs {
    /// Parameter profile: quick or paper.
    #[arg(long, default_value = "quick")]
    pub profile: Profile,
    /// Run only this experiment (dataset name, e.g. lotka-volterra).
    #[arg(long)]
    pub only: Option<String>,
    /// Output folder.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
}
