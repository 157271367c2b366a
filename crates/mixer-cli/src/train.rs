//! `mixer train`: meta-train a model on a data folder.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use mixer_experiments::{
    BackendJob, ContinualExperiment, DeviceChoice, Experiment, FieldExperiment, PdeExperiment, Profile, RunData,
    ScalingExperiment, SequenceExperiment, dispatch, train_run,
};

/// Arguments of `mixer train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Experiment file (TOML with a [run] table and profiles).
    #[arg(long)]
    pub(crate) config: PathBuf,
    /// Data folder in the published layout (train.npz, test.npz, adapt_train.npz, adapt_test.npz);
    /// a field folder for field experiments; for operator pre-training the parent of one folder
    /// per PDE family (generated there when missing); for time-series experiments the charts'
    /// folder (generated there when missing); continual control experiments simulate their
    /// tasks and need none.
    #[arg(long)]
    pub(crate) data: Option<PathBuf>,
    /// Run folder (created; an existing run resumes from its last checkpoint).
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Parameter profile.
    #[arg(long, default_value = "quick")]
    pub(crate) profile: Profile,
    /// Training seed (default: the experiment's).
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Device: cpu, flex, ndarray or cuda.
    #[arg(long, default_value = "cpu")]
    pub(crate) device: DeviceChoice,
    /// Field experiments: the model to train (smoe, cnn, coord-conv, lcn; default: the configured one).
    #[arg(long)]
    pub(crate) variant: Option<String>,
}

struct Job {
    experiment: Experiment,
    data: RunData,
    args: TrainArgs,
}

impl BackendJob for Job {
    type Output = anyhow::Result<()>;

    fn run<B: mixer_experiments::AutodiffBackend>(self, device: B::Device, label: &str) -> Self::Output {
        let seed = self.args.seed.unwrap_or(self.experiment.seed);
        tracing::info!(device = label, seed, "training");
        let state = train_run::<B>(self.experiment.run, &self.data, &self.args.out, seed, true, &device)?;
        println!(
            "trained {} outer steps in {:.1} s ({} gate refits, {} skipped); run folder {}",
            state.outer_done,
            state.train_seconds,
            state.gate_updates,
            state.skipped_gate_updates,
            self.args.out.display()
        );
        Ok(())
    }
}

/// Runs `mixer train`.
pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.config).with_context(|| format!("reading {}", args.config.display()))?;
    if ContinualExperiment::is_continual_text(&text) {
        if let Some(v) = &args.variant {
            anyhow::bail!("--variant {v}: a continual experiment trains every method it lists");
        }
        return crate::suite::continual(args);
    }
    if ScalingExperiment::is_scaling_text(&text) {
        if let Some(v) = &args.variant {
            anyhow::bail!("--variant {v}: a scaling experiment trains MixER at every point of its sweeps");
        }
        return crate::suite::scaling(args);
    }
    if SequenceExperiment::is_sequence_text(&text) {
        return crate::suite::sequence(args);
    }
    let data = args.data.clone().context("--data DIR is required for this experiment")?;
    if FieldExperiment::is_field_text(&text) {
        return crate::field::train(&args.config, &data, args.out, args.profile, args.seed, args.variant, args.device);
    }
    if PdeExperiment::is_pde_text(&text) {
        return crate::pde::train(&args.config, &data, args.out, args.profile, args.seed, args.device);
    }
    if let Some(v) = &args.variant {
        anyhow::bail!("--variant {v}: only field experiments (kind = \"field\") have variants to pick from here");
    }
    let experiment = Experiment::load(&args.config, args.profile)?;
    let data = RunData::load(&data, experiment.run.data.subsample)
        .with_context(|| format!("reading data folder {}", data.display()))?;
    let device = args.device;
    dispatch(device, Job { experiment, data, args })?
}
