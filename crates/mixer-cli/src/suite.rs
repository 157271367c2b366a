//! `mixer train` of experiments that train every method in one command: continual control
//! (`kind = "continual"`: HyperCRL and its baselines, on simulated tasks, no data folder),
//! scalability sweeps (`kind = "scaling"`: MixER on generated ODEBench families, no data folder)
//! and time series (`kind = "sequence"`: hier-shPLRNN experts on charts generated into `--data` when
//! missing). Finished runs are reused and interrupted ones resume; the scores are written to
//! `REPORT.md` in the run folder.

use std::path::{Path, PathBuf};

use mixer_experiments::{
    ContinualExperiment, ContinualJob, ScalingExperiment, ScalingJob, SequenceData, SequenceExperiment, SequenceJob,
    continual_markdown, dispatch, scaling_markdown, sequence_markdown,
};

use crate::train::TrainArgs;

/// Writes `markdown` as `out/REPORT.md` and says what was trained.
fn report(out: &Path, markdown: String, runs: usize, name: &str) -> anyhow::Result<()> {
    let path = out.join("REPORT.md");
    std::fs::create_dir_all(out)?;
    mixer_train::write_atomic(&path, markdown.as_bytes())?;
    println!("trained {runs} runs of {name}; scores in {}", path.display());
    Ok(())
}

/// A link from `out/REPORT.md` to `p`.
fn relative(out: &Path, p: &Path) -> String {
    p.strip_prefix(out).unwrap_or(p).display().to_string()
}

/// Trains (or resumes) every method of a continual experiment under `out/<system>/<method>`.
pub fn continual(args: TrainArgs) -> anyhow::Result<()> {
    let out = args.out;
    let mut experiment = ContinualExperiment::load(&args.config, args.profile)?;
    experiment.seed = args.seed.unwrap_or(experiment.seed);
    let record = dispatch(args.device, ContinualJob { experiment: &experiment, runs_dir: out.clone() })??;
    report(&out, continual_markdown(&record, |p| relative(&out, p)), record.runs.len(), &experiment.name)
}

/// Trains (or resumes) every point of a scaling experiment under `out/<sweep>/<point>`, on data
/// generated with the run seed; figures go to `out/figures`.
pub fn scaling(args: TrainArgs) -> anyhow::Result<()> {
    let out = args.out;
    let mut experiment = ScalingExperiment::load(&args.config, args.profile)?;
    experiment.base.seed = args.seed.unwrap_or(experiment.base.seed);
    let job = ScalingJob {
        experiment: &experiment,
        data_seed: experiment.base.seed,
        runs_dir: out.clone(),
        figures_dir: out.join("figures"),
        progress: true,
    };
    let record = dispatch(args.device, job)??;
    report(&out, scaling_markdown(&record, |p| relative(&out, p)), record.points.len(), &experiment.name)
}

/// Trains (or resumes) every variant of a sequence experiment under `out/<variant>`, on the
/// charts in `data` (generated there with the run seed when missing) or on the experiment's
/// `.ts` files (relative to the working directory).
pub fn sequence(args: TrainArgs) -> anyhow::Result<()> {
    let out = args.out;
    let mut experiment = SequenceExperiment::load(&args.config, args.profile)?;
    experiment.seed = args.seed.unwrap_or(experiment.seed);
    let data_dir = match (&experiment.data, args.data) {
        (_, Some(d)) => d,
        (SequenceData::Ts(_), None) => out.join("data"),
        (SequenceData::Charts(_), None) => anyhow::bail!("--data DIR is required: the charts are generated there"),
    };
    let job = SequenceJob {
        experiment: &experiment,
        data_dir,
        root: PathBuf::from("."),
        data_seed: experiment.seed,
        runs_dir: out.clone(),
        progress: true,
    };
    let record = dispatch(args.device, job)??;
    report(&out, sequence_markdown(&record, |p| relative(&out, p)), record.runs.len(), &experiment.name)
}
