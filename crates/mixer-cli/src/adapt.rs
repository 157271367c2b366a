//! `mixer adapt`: fit contexts of the adaptation environments with the model frozen.

use std::path::PathBuf;

use clap::Args;

use mixer_experiments::{BackendJob, DeviceChoice, RunData, adapt_run, adapted_path, read_run_config};
use mixer_train::AdaptMode;

/// Arguments of `mixer adapt`.
#[derive(Args, Debug)]
pub struct AdaptArgs {
    /// A trained run folder.
    #[arg(long)]
    run: PathBuf,
    /// Data folder (its adapt_train split is fitted).
    #[arg(long)]
    data: PathBuf,
    /// All new environments together (bulk) or one by one (sequential).
    #[arg(long, default_value = "bulk", value_parser = parse_mode)]
    mode: AdaptMode,
    /// Device: cpu, flex, ndarray or cuda.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
}

fn parse_mode(s: &str) -> Result<AdaptMode, String> {
    match s {
        "bulk" => Ok(AdaptMode::Bulk),
        "sequential" => Ok(AdaptMode::Sequential),
        other => Err(format!("unknown mode `{other}`: expected bulk or sequential")),
    }
}

struct Job {
    data: RunData,
    args: AdaptArgs,
}

impl BackendJob for Job {
    type Output = anyhow::Result<()>;

    fn run<B: mixer_experiments::AutodiffBackend>(self, device: B::Device, _label: &str) -> Self::Output {
        let rows = adapt_run::<B>(&self.args.run, &self.data, self.args.mode, &device)?;
        println!(
            "fitted {} contexts; written to {}",
            rows.len(),
            adapted_path(&self.args.run, self.args.mode).display()
        );
        Ok(())
    }
}

/// Runs `mixer adapt`.
pub fn run(args: AdaptArgs) -> anyhow::Result<()> {
    let config = read_run_config(&args.run)?;
    let data = RunData::load(&args.data, config.data.subsample)?;
    let device = args.device;
    mixer_experiments::dispatch(device, Job { data, args })?
}
