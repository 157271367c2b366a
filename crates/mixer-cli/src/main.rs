//! `mixer`: generate, inspect and plot multi-environment and field datasets; train, adapt and evaluate models.

mod adapt;
mod eval;
mod field;
mod generate;
mod inspect;
mod pde;
mod plot;
mod train;

use clap::{Parser, Subcommand};

/// Hierarchical dynamical-system reconstruction with mixtures of experts.
#[derive(Parser, Debug)]
#[command(name = "mixer", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate the splits and manifest of a built-in system, a system file or a gridded-field system.
    Generate(generate::GenerateArgs),
    /// Print the splits, shapes, environments and parameters of a dataset folder (or a field folder's regions).
    Inspect(inspect::InspectArgs),
    /// Draw trajectories and phase portraits of a dataset folder (or a field folder's frames) into a PNG.
    Plot(plot::PlotArgs),
    /// Meta-train a model on a data folder (resumes an existing run folder).
    Train(train::TrainArgs),
    /// Fit contexts of the adaptation environments with the trained model frozen.
    Adapt(adapt::AdaptArgs),
    /// Score a trained run in-domain and after adaptation; writes metrics.json and plots.
    Eval(eval::EvalArgs),
    /// Fine-tune a pre-trained operator (`pde-pretrain` run) on one PDE family folder and score it.
    Finetune(pde::FinetuneArgs),
}

fn main() -> std::process::ExitCode {
    mixer_experiments::init_logging("warn");
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(a) => generate::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Plot(a) => plot::run(a),
        Command::Train(a) => train::run(a),
        Command::Adapt(a) => adapt::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Finetune(a) => pde::run(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
