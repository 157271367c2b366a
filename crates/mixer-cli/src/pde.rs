//! Operator pre-training from the command line: `mixer train` of a `kind = "pde-pretrain"`
//! experiment (every model of it, on PDE family folders generated when missing), and
//! `mixer finetune --from RUN`, which fine-tunes a pre-trained operator on one PDE family folder
//! (routers and shared features frozen) and scores it on the family's test runs.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use mixer_data::load_field_dir;
use mixer_experiments::{
    AutodiffBackend, BackendJob, DeviceChoice, PdeExperiment, PdeJob, Profile, dispatch, finetune_run, pde_markdown,
};
use mixer_train::{PotFamily, PotTrainSettings};

/// Arguments of `mixer finetune`.
#[derive(Args, Debug)]
pub struct FinetuneArgs {
    /// A finished operator run folder (e.g. `results/runs/quick/pde-pretrain/moe-pot/pretrain`).
    #[arg(long = "from")]
    from: PathBuf,
    /// The family's field data folder (`mixer generate --system burgers --out DIR`).
    #[arg(long)]
    data: PathBuf,
    /// The family's name in tables (default: the data folder's dataset name).
    #[arg(long)]
    family: Option<String>,
    /// Run folder of the fine-tuning (created; an existing one resumes).
    #[arg(long)]
    out: PathBuf,
    /// Optimiser steps.
    #[arg(long, default_value_t = 500)]
    steps: usize,
    /// Adam learning rate at step 0 (cosine decay to a tenth).
    #[arg(long, default_value_t = 5e-4)]
    lr: f64,
    /// Windows per step.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Steps of the scored rollout.
    #[arg(long, default_value_t = 10)]
    rollout_steps: usize,
    /// Training seed.
    #[arg(long, default_value_t = 2025)]
    seed: u64,
    /// Device: cpu, flex, ndarray or cuda.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
}

/// `mixer train` of an operator pre-training experiment: the families' data in `data/<family>`
/// (generated with `seed` when missing), every model's runs under `out`, the report section in
/// `out/REPORT.md`.
pub fn train(
    config: &std::path::Path,
    data: &std::path::Path,
    out: PathBuf,
    profile: Profile,
    seed: Option<u64>,
    device: DeviceChoice,
) -> anyhow::Result<()> {
    let experiment = PdeExperiment::load(config, profile)?;
    let bar = |_: &str| indicatif::ProgressBar::hidden();
    let mix = experiment.mix(data, seed.unwrap_or(experiment.seed), &bar)?;
    let job = PdeJob { experiment: &experiment, mix: &mix, runs_dir: out.clone(), progress: true };
    let record = dispatch(device, job)??;
    let report = out.join("REPORT.md");
    mixer_train::write_atomic(
        &report,
        pde_markdown(&record, |p| p.strip_prefix(&out).unwrap_or(p).display().to_string()).as_bytes(),
    )?;
    println!("trained {} models of {}; scores in {}", record.runs.len(), experiment.name, report.display());
    Ok(())
}

/// Runs `mixer finetune`.
pub fn run(args: FinetuneArgs) -> anyhow::Result<()> {
    let data =
        load_field_dir(&args.data).with_context(|| format!("reading field data folder {}", args.data.display()))?;
    let name = args.family.clone().unwrap_or_else(|| data.name.clone());
    let device = args.device;
    dispatch(device, Job { args, family: PotFamily { name, data } })?
}

struct Job {
    args: FinetuneArgs,
    family: PotFamily,
}

impl BackendJob for Job {
    type Output = anyhow::Result<()>;

    fn run<B: AutodiffBackend>(self, device: B::Device, label: &str) -> Self::Output {
        let a = &self.args;
        let train = PotTrainSettings { lr: a.lr, batch: a.batch, steps: a.steps, ..PotTrainSettings::default() };
        tracing::info!(device = label, from = %a.from.display(), "fine-tuning operator");
        let (metrics, steps, seconds) =
            finetune_run::<B>(&a.from, self.family, train, &a.out, a.seed, a.rollout_steps, &device)?;
        let f = &metrics.families[0];
        println!(
            "fine-tuned on {} for {steps} steps in {seconds:.1} s: one-step relative L2 {:.4} (persistence {:.4}), after {} rollout steps {:.4}; run folder {}",
            f.family,
            f.one_step,
            f.persistence,
            f.rollout.len(),
            f.rollout.last().copied().unwrap_or(f64::NAN),
            a.out.display()
        );
        Ok(())
    }
}
