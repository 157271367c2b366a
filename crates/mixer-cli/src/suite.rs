//! `mixer train` of experiments that train every method in one command: continual control
//! (`kind = "continual"`: HyperCRL and its baselines, on simulated tasks, no data folder) and
//! time series (`kind = "sequence"`: hier-shPLRNN experts on charts generated into `--data` when
//! missing). Finished runs are reused and interrupted ones resume; the scores are written to
//! `REPORT.md` in the run folder.

use std::path::{Path, PathBuf};

use mixer_experiments::{
    ContinualExperiment, ContinualJob, DeviceChoice, Profile, SequenceExperiment, SequenceJob, continual_markdown,
    dispatch, sequence_markdown,
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

/// Trains (or resumes) every variant of a sequence experiment under `out/<variant>`, on the
/// charts in `data` (generated there with the run seed when missing).
pub fn sequence(
    config: &Path,
    data: &Path,
    out: PathBuf,
    profile: Profile,
    seed: Option<u64>,
    device: DeviceChoice,
) -> anyhow::Result<()> {
    let mut experiment = SequenceExperiment::load(config, profile)?;
    experiment.seed = seed.unwrap_or(experiment.seed);
    let job = SequenceJob {
        experiment: &experiment,
        data_dir: data.to_path_buf(),
        data_seed: experiment.seed,
        runs_dir: out.clone(),
        progress: true,
    };
    let record = dispatch(device, job)??;
    report(&out, sequence_markdown(&record, |p| relative(&out, p)), record.runs.len(), &experiment.name)
}
