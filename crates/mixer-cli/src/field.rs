//! `mixer train` and `mixer eval` for field experiments (`kind = "field"`: one-step operators on
//! gridded fields, the spatial mixture of experts and its baselines).

use std::path::{Path, PathBuf};

use anyhow::Context;

use mixer_data::load_field_dir;
use mixer_experiments::{
    AutodiffBackend, BackendJob, DeviceChoice, FieldExperiment, Profile, dispatch, score_field_run,
};
use mixer_train::train_field;

/// Trains variant `variant` (default: the configured model) of the field experiment in `config`.
pub fn train(
    config: &Path,
    data: &Path,
    out: PathBuf,
    profile: Profile,
    seed: Option<u64>,
    variant: Option<String>,
    device: DeviceChoice,
) -> anyhow::Result<()> {
    let experiment = FieldExperiment::load(config, profile)?;
    let kind = variant.unwrap_or_else(|| experiment.run.model.kind().to_string());
    let run = experiment.variant(&kind)?;
    let data = load_field_dir(data).with_context(|| format!("reading field data folder {}", data.display()))?;
    let seed = seed.unwrap_or(experiment.seed);
    struct Train {
        run: mixer_train::FieldRunConfig,
        data: mixer_data::FieldDir,
        out: PathBuf,
        seed: u64,
    }
    impl BackendJob for Train {
        type Output = anyhow::Result<()>;
        fn run<B: AutodiffBackend>(self, device: B::Device, label: &str) -> Self::Output {
            tracing::info!(device = label, seed = self.seed, "training field model");
            let (_, state) = train_field::<B>(&self.run, &self.data, &self.out, self.seed, true, &device)?;
            println!(
                "trained {} for {} steps in {:.1} s (best validation MSE {:.3e} at step {}); run folder {}",
                self.run.model.kind(),
                state.step,
                state.seconds,
                state.best_val.unwrap_or(f64::NAN),
                state.best_step,
                self.out.display()
            );
            Ok(())
        }
    }
    dispatch(device, Train { run, data, out, seed })?
}

/// Scores a trained field run on the test runs of `data` and writes metrics.json and figures.
pub fn eval(run: PathBuf, data: &Path, rollout_steps: usize, device: DeviceChoice) -> anyhow::Result<()> {
    let data = load_field_dir(data).with_context(|| format!("reading field data folder {}", data.display()))?;
    struct Eval {
        run: PathBuf,
        data: mixer_data::FieldDir,
        rollout_steps: usize,
    }
    impl BackendJob for Eval {
        type Output = anyhow::Result<()>;
        fn run<B: AutodiffBackend>(self, device: B::Device, _label: &str) -> Self::Output {
            let m = score_field_run::<B>(&self.run, &self.data, self.rollout_steps, &device)?;
            let s = &m.scores;
            println!("model          {} ({} parameters)", m.model, s.parameters);
            println!("one-step MSE   {:.3e}   by region {:?}", s.mse, s.mse_by_region);
            println!("percent close  {:.2} % (1 % relative)", s.percent_close);
            if let Some(last) = s.rollout_mse.last() {
                println!("rollout MSE    {last:.3e} after {} steps", s.rollout_mse.len());
            }
            if let (Some(ari), Some(iou)) = (s.gate_ari, s.gate_iou) {
                println!("gate           ARI {ari:.3}   IoU {iou:.3}");
            }
            println!("metrics and figures written to {}", self.run.display());
            Ok(())
        }
    }
    dispatch(device, Eval { run, data, rollout_steps })?
}
