//! `mixer`: generate, inspect and plot multi-environment and field datasets; train, adapt and evaluate models.

mod adapt;
mod eval;
mod field;
mod generate;
mod inspect;
mod pde;
mod plot;
mod suite;
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
    mixer_experiments::flush_subnormals_in_process();
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
            eprintln!("error: {}", error_text(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// An error and its causes in one line, leaving out a cause whose text the line already holds
/// (errors that print their source, such as `I/O error on PATH: SOURCE`).
fn error_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let core = mixer_core::Error::Io { path: "a/config.json".into(), source: io };
        let e = anyhow::Error::new(core).context("reading the run");
        assert_eq!(error_text(&e), "reading the run: I/O error on a/config.json: no such file");
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_text(&plain), "outer: inner");
    }
}
