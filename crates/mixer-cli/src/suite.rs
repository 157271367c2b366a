//! `mixer train` of experiments that train every method in one command: continual control
//! (`kind = "continual"`: HyperCRL and its baselines, on simulated tasks, no data folder),
//! scalability sweeps (`kind = "scaling"`: MixER on generated ODEBench families, no data folder)
//! and time series (`kind = "sequence"`: hier-shPLRNN experts on charts generated into `--data` when
//! missing). Finished runs are reused and interrupted ones resume; the scores are written to
//! `REPORT.md` in the run folder.

use std::path::{Path, PathBuf};

use mixer_experiments::{
    ContinualExperiment, ContinualJob, DeviceChoice, Profile, ScalingExperiment, ScalingJob, SequenceData,
    SequenceExperiment, SequenceJob, continual_markdown, dispatch, scaling_markdown, sequence_markdown,
};

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
pub fn continual(
    config: &Path,
    out: PathBuf,
    profile: Profile,
    seed: Option<u64>,
    device: DeviceChoice,
) -> anyhow::Result<()> {
    let mut experiment = ContinualExperiment::load(config, profile)?;
    experiment.seed = seed.unwrap_or(experiment.seed);
    let record = dispatch(device, ContinualJob { experiment: &experiment, runs_dir: out.clone() })??;
    report(&out, continual_markdown(&record, |p| relative(&out, p)), record.runs.len(), &experiment.name)
}

/// Trains (or resumes) every point of a scaling experiment under `out/<sweep>/<point>`, on data
/// generated with the run seed; figures go to `out/figures`.
pub fn scaling(
    config: &Path,
    out: PathBuf,
    profile: Profile,
    seed: Option<u64>,
    device: DeviceChoice,
) -> anyhow::Result<()> {
    let mut experiment = ScalingExperiment::load(config, profile)?;
    experiment.base.seed = seed.unwrap_or(experiment.base.seed);
    let job = ScalingJob {
        experiment: &experiment,
        data_seed: experiment.base.seed,
        runs_dir: out.clone(),
        figures_dir: out.join("figures"),
        progress: true,
    };
    let record = dispatch(device, job)??;
    report(&out, scaling_markdown(&record, |p| relative(&out, p)), record.points.len(), &experiment.name)
}

/// Trains (or resumes) every variant of a sequence experiment under `out/<variant>`, on the
/// charts in `data` (generated there with the run seed when missing) or on the experiment's
/// `.ts` files (relative to the working directory).
pub fn sequence(
    config: &Path,
    data: Option<&Path>,
    out: PathBuf,
    profile: Profile,
    seed: Option<u64>,
    device: DeviceChoice,
) -> anyhow::Result<()> {
    let mut experiment = SequenceExperiment::load(config, profile)?;
    experiment.seed = seed.unwrap_or(experiment.seed);
    let data_dir = match (&experiment.data, data) {
        (_, Some(d)) => d.to_path_buf(),
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
    let record = dispatch(device, job)??;
    report(&out, sequence_markdown(&record, |p| relative(&out, p)), record.runs.len(), &experiment.name)
}
