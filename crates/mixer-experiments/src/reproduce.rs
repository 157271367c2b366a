//! `cargo xtask reproduce`: the plan of published experiments, the run, and `REPORT.md`.
//!
//! Every dataset of the MixER paper is generated and plotted; the experiments of the plan are then
//! trained, adapted and evaluated for each of their variants (MixER, naive gradient gate, one
//! expert) on generated data and, where present, on the published data. Datasets already on disk
//! with the plan's seed, runs with a checkpoint and runs with `metrics.json` are picked up where
//! they stopped, so an interrupted reproduce resumes instead of starting over.

use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::ProgressBar;
use mixer_core::Split;
use mixer_data::{DatasetDir, DatasetSpec, GenerateOptions, MANIFEST_FILE, Manifest, generate, load_dir};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::compare::{FamilyComparison, family_comparisons};
use crate::continual::{ContinualExperiment, ContinualExperimentRecord, ContinualJob};
use crate::field::{FieldExperiment, FieldExperimentRecord, FieldJob, field_data_figure};
use crate::pde_pretrain::{PdeExperiment, PdeExperimentRecord, PdeJob};
use crate::report::relative;
use crate::scaling::{ScalingExperiment, ScalingExperimentRecord, ScalingJob};
use crate::sequence::{SequenceExperiment, SequenceExperimentRecord, SequenceJob};
use crate::{
    AutodiffBackend, BackendJob, DeviceChoice, Experiment, ExperimentError, Profile, RunData, RunMetrics, Variant,
    dispatch, eval_run, plot::plot_dataset, read_metrics, train_run,
};

/// The datasets of the MixER paper that are generated (synthetic control and EEG are external data).
pub const PUBLISHED_DATASETS: [&str; 4] = ["odebench-2d", "lotka-volterra", "glycolytic", "selkov"];

/// The experiments `reproduce` trains by default.
pub const REPRODUCED_EXPERIMENTS: [&str; 8] = [
    "odebench10",
    "odebench10-5env",
    "odebench2",
    "lotka-volterra",
    "glycolytic",
    "selkov",
    "lorenz-regimes",
    "routers",
];

/// The field experiments `reproduce` trains by default (spatial mixture of experts).
pub const REPRODUCED_FIELD_EXPERIMENTS: [&str; 1] = ["heat-regions"];

/// The operator pre-training experiments `reproduce` trains by default (MoE-POT).
pub const REPRODUCED_PDE_EXPERIMENTS: [&str; 1] = ["pde-pretrain"];

/// The continual control experiments `reproduce` trains by default (HyperCRL).
pub const REPRODUCED_CONTINUAL_EXPERIMENTS: [&str; 1] = ["continual-control"];

/// The time-series experiments `reproduce` trains by default (hier-shPLRNN experts).
pub const REPRODUCED_SEQUENCE_EXPERIMENTS: [&str; 2] = ["control-charts", "epilepsy2"];

/// The scalability sweeps `reproduce` trains by default.
pub const REPRODUCED_SCALING_EXPERIMENTS: [&str; 1] = ["scalability"];

/// Experiments `reproduce` runs only when named (`--only NAME`): CoDA and NCF experts have no
/// fused host rollout yet, and their ODEBench-10 runs take 4–16 times a GEPS run (docs/results.md).
pub const ON_REQUEST_EXPERIMENTS: [&str; 2] = ["odebench10-coda", "odebench10-ncf"];

/// What `reproduce` runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Parameter profile.
    pub profile: Profile,
    /// Output folder (datasets under `data/<name>`, runs under `runs/`, figures, `REPORT.md`).
    pub out_dir: PathBuf,
    /// Folder that published-data paths of experiments are relative to (the workspace root).
    pub root: PathBuf,
    /// Seed of the dataset generation.
    pub seed: u64,
    /// Device of the training runs.
    pub device: DeviceChoice,
    /// Show training progress bars.
    pub progress: bool,
    /// Datasets to generate (built-in system or collection names).
    pub datasets: Vec<String>,
    /// Experiments to train, adapt and evaluate, resolved for the profile.
    pub experiments: Vec<Experiment>,
    /// Field experiments (gridded one-step operators), resolved for the profile.
    #[serde(default)]
    pub field_experiments: Vec<FieldExperiment>,
    /// Operator pre-training experiments (mixed PDE families), resolved for the profile.
    #[serde(default)]
    pub pde_experiments: Vec<PdeExperiment>,
    /// Continual control experiments (HyperCRL and baselines), resolved for the profile.
    #[serde(default)]
    pub continual_experiments: Vec<ContinualExperiment>,
    /// Time-series experiments (hier-shPLRNN experts), resolved for the profile.
    #[serde(default)]
    pub sequence_experiments: Vec<SequenceExperiment>,
    /// Scalability sweeps, resolved for the profile.
    #[serde(default)]
    pub scaling_experiments: Vec<ScalingExperiment>,
}

impl Plan {
    /// Every published dataset and the default experiments under `profile`, written to `out_dir`.
    pub fn new(profile: Profile, out_dir: impl Into<PathBuf>) -> Result<Self, ExperimentError> {
        Ok(Self {
            profile,
            out_dir: out_dir.into(),
            root: PathBuf::from("."),
            seed: 2025,
            device: DeviceChoice::Cpu,
            progress: false,
            datasets: PUBLISHED_DATASETS.iter().map(|s| s.to_string()).collect(),
            experiments: REPRODUCED_EXPERIMENTS
                .iter()
                .map(|n| Experiment::builtin(n, profile))
                .collect::<Result<_, _>>()?,
            field_experiments: REPRODUCED_FIELD_EXPERIMENTS
                .iter()
                .map(|n| FieldExperiment::builtin(n, profile))
                .collect::<Result<_, _>>()?,
            pde_experiments: REPRODUCED_PDE_EXPERIMENTS
                .iter()
                .map(|n| PdeExperiment::builtin(n, profile))
                .collect::<Result<_, _>>()?,
            continual_experiments: REPRODUCED_CONTINUAL_EXPERIMENTS
                .iter()
                .map(|n| ContinualExperiment::builtin(n, profile))
                .collect::<Result<_, _>>()?,
            sequence_experiments: REPRODUCED_SEQUENCE_EXPERIMENTS
                .iter()
                .map(|n| SequenceExperiment::builtin(n, profile))
                .collect::<Result<_, _>>()?,
            scaling_experiments: REPRODUCED_SCALING_EXPERIMENTS
                .iter()
                .map(|n| ScalingExperiment::builtin(n, profile))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Keeps only what `name` names (when given): an experiment (with its dataset) or a dataset.
    /// An unknown name is an error listing the plan.
    pub fn only(mut self, name: Option<&str>) -> Result<Self, ExperimentError> {
        let Some(n) = name else { return Ok(self) };
        if ON_REQUEST_EXPERIMENTS.contains(&n) {
            self.experiments = vec![Experiment::builtin(n, self.profile)?];
        }
        self.experiments.retain(|e| e.name == n);
        self.field_experiments.retain(|e| e.name == n);
        self.pde_experiments.retain(|e| e.name == n);
        self.continual_experiments.retain(|e| e.name == n);
        self.sequence_experiments.retain(|e| e.name == n);
        self.scaling_experiments.retain(|e| e.name == n);
        let wanted: Vec<String> = self.experiments.iter().map(|e| e.data.system.clone()).collect();
        let known: Vec<String> = self.datasets.clone();
        self.datasets.retain(|d| d == n || wanted.contains(d));
        if self.datasets.is_empty()
            && self.experiments.is_empty()
            && self.field_experiments.is_empty()
            && self.pde_experiments.is_empty()
            && self.continual_experiments.is_empty()
            && self.sequence_experiments.is_empty()
            && self.scaling_experiments.is_empty()
        {
            return Err(ExperimentError::UnknownExperiment { name: n.to_string(), known: known.join(", ") });
        }
        Ok(self)
    }

    /// Folder of a generated dataset.
    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.out_dir.join("data").join(name)
    }

    /// Folder of one run.
    pub fn run_dir(&self, experiment: &str, source: &str, variant: Variant) -> PathBuf {
        self.out_dir.join("runs").join(self.profile.name()).join(experiment).join(source).join(variant.name())
    }
}

/// One generated dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetRecord {
    /// Dataset name.
    pub name: String,
    /// One line saying what it is.
    pub description: String,
    /// Folder holding the split files and `dataset.toml`.
    pub dir: PathBuf,
    /// Overview figure.
    pub figure: PathBuf,
    /// `(split, shape of X as stored)`.
    pub shapes: Vec<(String, Vec<usize>)>,
    /// Number of families.
    pub families: usize,
    /// Wall-clock seconds spent generating (0 when found on disk) and plotting.
    pub seconds: f64,
}

/// One trained and evaluated model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// `generated` or `published`.
    pub source: String,
    /// The model.
    pub variant: Variant,
    /// Number of experts.
    pub experts: usize,
    /// Run folder (checkpoints, `metrics.json`, figures).
    pub dir: PathBuf,
    /// The scores.
    pub metrics: RunMetrics,
}

/// The runs of one experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExperimentRecord {
    /// Experiment name.
    pub name: String,
    /// The dataset it trained on (empty in reports written before it was recorded).
    #[serde(default)]
    pub dataset: String,
    /// One line on what it shows.
    pub description: String,
    /// Headline metric (`mse`, `rel_l2` or `rel_l2_env`).
    pub metric: String,
    /// Trained runs.
    pub runs: Vec<RunRecord>,
    /// Data sources that were skipped, with the reason.
    pub skipped: Vec<String>,
}

/// What a `reproduce` run produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The plan that ran.
    pub plan: Plan,
    /// Generated datasets.
    pub datasets: Vec<DatasetRecord>,
    /// Trained experiments.
    pub experiments: Vec<ExperimentRecord>,
    /// Trained field experiments.
    #[serde(default)]
    pub field_experiments: Vec<FieldExperimentRecord>,
    /// Trained operator pre-training experiments.
    #[serde(default)]
    pub pde_experiments: Vec<PdeExperimentRecord>,
    /// Continual control experiments.
    #[serde(default)]
    pub continual_experiments: Vec<ContinualExperimentRecord>,
    /// Time-series experiments.
    #[serde(default)]
    pub sequence_experiments: Vec<SequenceExperimentRecord>,
    /// Scalability sweeps.
    #[serde(default)]
    pub scaling_experiments: Vec<ScalingExperimentRecord>,
    /// Per-family comparisons of the experiments that share a dataset (filled by
    /// [`Report::with_comparisons`]).
    #[serde(default)]
    pub comparisons: Vec<FamilyComparison>,
}

/// Runs the plan: datasets first, then every experiment's runs; returns the report (not yet written).
pub fn reproduce(plan: &Plan, progress: &dyn Fn(&str) -> ProgressBar) -> Result<Report, ExperimentError> {
    let mut names = plan.datasets.clone();
    for e in &plan.experiments {
        if !names.contains(&e.data.system) {
            names.push(e.data.system.clone());
        }
    }
    let datasets = names.iter().map(|n| dataset(plan, n, progress)).collect::<Result<Vec<_>, _>>()?;
    let experiments = plan.experiments.iter().map(|e| experiment(plan, e)).collect::<Result<Vec<_>, _>>()?;
    let field_experiments =
        plan.field_experiments.iter().map(|e| field_experiment(plan, e)).collect::<Result<Vec<_>, _>>()?;
    let pde_experiments =
        plan.pde_experiments.iter().map(|e| pde_experiment(plan, e, progress)).collect::<Result<Vec<_>, _>>()?;
    let continual_experiments = plan
        .continual_experiments
        .iter()
        .map(|e| {
            let runs_dir = plan.out_dir.join("runs").join(plan.profile.name()).join(&e.name);
            dispatch(plan.device, ContinualJob { experiment: e, runs_dir })?
        })
        .collect::<Result<Vec<_>, _>>()?;
    let sequence_experiments = plan
        .sequence_experiments
        .iter()
        .map(|e| {
            let job = SequenceJob {
                experiment: e,
                data_dir: plan.data_dir(&e.name),
                data_seed: plan.seed,
                runs_dir: plan.out_dir.join("runs").join(plan.profile.name()).join(&e.name),
                root: plan.root.clone(),
                progress: plan.progress,
            };
            dispatch(plan.device, job)?
        })
        .collect::<Result<Vec<_>, _>>()?;
    let scaling_experiments = plan
        .scaling_experiments
        .iter()
        .map(|e| {
            let job = ScalingJob {
                experiment: e,
                data_seed: plan.seed,
                runs_dir: plan.out_dir.join("runs").join(plan.profile.name()).join(&e.name),
                figures_dir: plan.out_dir.join("figures"),
                progress: plan.progress,
            };
            dispatch(plan.device, job)?
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Report {
        plan: plan.clone(),
        datasets,
        experiments,
        field_experiments,
        pde_experiments,
        continual_experiments,
        sequence_experiments,
        scaling_experiments,
        comparisons: Vec::new(),
    })
}

/// Generates (or finds) the families of an operator experiment, then trains and scores its
/// models.
fn pde_experiment(
    plan: &Plan,
    e: &PdeExperiment,
    progress: &dyn Fn(&str) -> ProgressBar,
) -> Result<PdeExperimentRecord, ExperimentError> {
    let mix = e.mix(&plan.out_dir.join("data"), plan.seed, progress)?;
    let runs_dir = plan.out_dir.join("runs").join(plan.profile.name()).join(&e.name);
    dispatch(plan.device, PdeJob { experiment: e, mix: &mix, runs_dir, progress: plan.progress })?
}

/// Generates (or finds) the data of a field experiment, then trains and scores its variants.
fn field_experiment(plan: &Plan, e: &FieldExperiment) -> Result<FieldExperimentRecord, ExperimentError> {
    let data = e.dataset(&plan.data_dir(&e.data.system), &plan.root, plan.seed)?;
    let figure = field_data_figure(&plan.out_dir.join("figures").join(format!("data-{}.png", e.data.system)), &data)?;
    let runs_dir = plan.out_dir.join("runs").join(plan.profile.name()).join(&e.name);
    let job = FieldJob { experiment: e, data: &data, runs_dir, progress: plan.progress };
    let runs = dispatch(plan.device, job)??;
    Ok(FieldExperimentRecord {
        name: e.name.clone(),
        description: e.description.clone(),
        regions: data.manifest.region_source.clone().unwrap_or_else(|| "none".into()),
        figure,
        runs,
    })
}

/// Generates (or finds on disk, with the plan's seed) and plots one dataset.
fn dataset(plan: &Plan, name: &str, progress: &dyn Fn(&str) -> ProgressBar) -> Result<DatasetRecord, ExperimentError> {
    let start = Instant::now();
    let spec = DatasetSpec::builtin(name)?;
    let dir = plan.data_dir(name);
    let manifest_path = dir.join(MANIFEST_FILE);
    let on_disk = Manifest::read(&manifest_path).ok().filter(|m| m.seed == plan.seed);
    let (data, manifest): (DatasetDir, Manifest) = match on_disk {
        Some(manifest) => {
            info!(dataset = %name, dir = %dir.display(), "dataset found on disk");
            (load_dir(&dir)?, manifest)
        }
        None => {
            let data = generate(&spec, &GenerateOptions::new(plan.seed), &progress(name))?;
            data.write(&dir)?;
            // The written manifest records the shapes as stored.
            (data, Manifest::read(&manifest_path)?)
        }
    };
    let state = spec.members[0].spec().state.clone();
    let family_names: Vec<String> = spec.members.iter().map(|m| m.spec().name.clone()).collect();
    let figure = plan.out_dir.join("figures").join(format!("data-{name}.png"));
    plot_dataset(&figure, &format!("{name} (train split)"), &data.train, &state, &family_names)?;
    let shapes = Split::ALL
        .iter()
        .map(|s| (s.stem().to_string(), manifest.split(s.stem()).map(|i| i.shape.clone()).unwrap_or_default()))
        .collect();
    let seconds = start.elapsed().as_secs_f64();
    info!(dataset = %name, seconds, "dataset ready");
    Ok(DatasetRecord {
        name: name.to_string(),
        description: spec.description.clone(),
        dir,
        figure,
        shapes,
        families: spec.members.len(),
        seconds,
    })
}

/// Trains, adapts and evaluates every variant of an experiment on each available data source.
fn experiment(plan: &Plan, e: &Experiment) -> Result<ExperimentRecord, ExperimentError> {
    let mut sources = vec![("generated".to_string(), plan.data_dir(&e.data.system))];
    let mut skipped = Vec::new();
    if let Some(p) = &e.data.published {
        let dir = plan.root.join(p);
        if dir.join("train.npz").is_file() {
            sources.push(("published".to_string(), dir));
        } else {
            warn!(experiment = %e.name, dir = %dir.display(), "published data not found; skipped");
            skipped.push(format!("published data `{p}` not found; skipped"));
        }
    }
    let mut runs = Vec::new();
    for (source, dir) in &sources {
        let data = RunData::load(dir, e.run.data.subsample)?;
        for &variant in &e.variants {
            let config = variant.apply(&e.run);
            let run = plan.run_dir(&e.name, source, variant);
            let metrics = match read_metrics(&run) {
                Some(m) => {
                    info!(run = %run.display(), "metrics found; run skipped");
                    m
                }
                None => {
                    info!(experiment = %e.name, source = %source, variant = variant.name(), "training");
                    let job = RunJob {
                        config: config.clone(),
                        data: &data,
                        run: &run,
                        seed: e.seed,
                        progress: plan.progress,
                    };
                    dispatch(plan.device, job)??
                }
            };
            runs.push(RunRecord { source: source.clone(), variant, experts: config.model.experts, dir: run, metrics });
        }
    }
    Ok(ExperimentRecord {
        name: e.name.clone(),
        dataset: e.data.system.clone(),
        description: e.description.clone(),
        metric: e.metric.clone(),
        runs,
        skipped,
    })
}

/// Train (or resume), then adapt and evaluate one run folder.
struct RunJob<'a> {
    config: mixer_train::RunConfig,
    data: &'a RunData,
    run: &'a Path,
    seed: u64,
    progress: bool,
}

impl BackendJob for RunJob<'_> {
    type Output = Result<RunMetrics, ExperimentError>;

    fn run<B: AutodiffBackend>(self, device: B::Device, label: &str) -> Self::Output {
        train_run::<B>(self.config, self.data, self.run, self.seed, self.progress, &device)?;
        eval_run::<B>(self.run, self.data, &device, label)
    }
}

impl Report {
    /// Writes `REPORT.md` and `report.json` into `out_dir` (atomically); returns the Markdown path.
    pub fn write(&self, out_dir: &Path) -> Result<PathBuf, ExperimentError> {
        mixer_train::write_json(&out_dir.join("report.json"), self)?;
        let path = out_dir.join("REPORT.md");
        mixer_train::write_atomic(&path, self.to_markdown().as_bytes())?;
        Ok(path)
    }

    /// This report with its per-family comparisons drawn (see [`family_comparisons`]).
    pub fn with_comparisons(mut self) -> Result<Report, ExperimentError> {
        self.comparisons = family_comparisons(&self)?;
        Ok(self)
    }

    /// Reads the `report.json` that [`Report::write`] left in `out_dir`.
    pub fn read(out_dir: &Path) -> Result<Report, ExperimentError> {
        Ok(mixer_train::read_json(&out_dir.join("report.json"))?)
    }

    /// This report plus what `earlier` (a previous report of the same folder) covers and this one
    /// does not, so that `--only NAME` updates one experiment without dropping the others. Entries
    /// keep the earlier order and this report's version wins; a report of another profile or data
    /// seed is ignored.
    pub fn merged_with(self, earlier: Report) -> Report {
        if (earlier.plan.profile, earlier.plan.seed) != (self.plan.profile, self.plan.seed) {
            return self;
        }
        Report {
            datasets: merge_by_name(earlier.datasets, self.datasets, |d| &d.name),
            experiments: merge_by_name(earlier.experiments, self.experiments, |e| &e.name),
            field_experiments: merge_by_name(earlier.field_experiments, self.field_experiments, |e| &e.name),
            pde_experiments: merge_by_name(earlier.pde_experiments, self.pde_experiments, |e| &e.name),
            continual_experiments: merge_by_name(earlier.continual_experiments, self.continual_experiments, |e| {
                &e.name
            }),
            sequence_experiments: merge_by_name(earlier.sequence_experiments, self.sequence_experiments, |e| &e.name),
            scaling_experiments: merge_by_name(earlier.scaling_experiments, self.scaling_experiments, |e| &e.name),
            comparisons: Vec::new(),
            plan: self.plan,
        }
    }

    /// Path of `p` relative to the output folder, for links in the Markdown.
    pub(crate) fn link(&self, p: &Path) -> String {
        relative(p, &self.plan.out_dir).display().to_string()
    }
}

/// `earlier` with each entry replaced by `later`'s of the same name, then `later`'s new entries.
fn merge_by_name<T>(earlier: Vec<T>, later: Vec<T>, name: impl Fn(&T) -> &str) -> Vec<T> {
    let mut later: Vec<Option<T>> = later.into_iter().map(Some).collect();
    let mut out: Vec<T> = earlier
        .into_iter()
        .map(|old| match later.iter_mut().find(|l| l.as_ref().is_some_and(|l| name(l) == name(&old))) {
            Some(newer) => newer.take().expect("matched entries are present"),
            None => old,
        })
        .collect();
    out.extend(later.into_iter().flatten());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_filters_by_experiment_or_dataset() {
        let plan = Plan::new(Profile::Quick, "out").unwrap();
        assert!(matches!(plan.clone().only(Some("nope")), Err(ExperimentError::UnknownExperiment { .. })));
        let lv = plan.clone().only(Some("lotka-volterra")).unwrap();
        assert_eq!(lv.datasets, vec!["lotka-volterra"]);
        assert_eq!(lv.experiments.len(), 1);
        let selkov = plan.clone().only(Some("selkov")).unwrap();
        assert_eq!((selkov.datasets, selkov.experiments[0].name.as_str()), (vec!["selkov".to_string()], "selkov"));
        let ode = plan.clone().only(Some("odebench10")).unwrap();
        assert_eq!(ode.datasets, vec!["odebench-2d"]);
        assert!(plan.experiments.iter().any(|e| e.name == "routers"), "the router table runs by default");
        assert!(plan.experiments.iter().all(|e| e.name != "odebench10-ncf"), "NCF experts run on request");
        let routers = plan.only(Some("routers")).unwrap();
        assert_eq!(
            (routers.datasets, routers.experiments[0].name.as_str()),
            (vec!["odebench-2d".to_string()], "routers")
        );
    }

    #[test]
    fn lotka_volterra_runs_resume_and_reach_the_report() {
        let _serial = crate::serial_training();
        let dir = tempfile::tempdir().unwrap();
        let mut plan = Plan::new(Profile::Quick, dir.path()).unwrap().only(Some("lotka-volterra")).unwrap();
        plan.root = dir.path().join("nowhere");
        let e = &mut plan.experiments[0];
        e.variants = vec![Variant::Mixer, Variant::SingleExpert];
        e.run.train.outer_steps = 2;
        e.run.train.context_steps = 1;
        e.run.train.model_steps = 1;
        e.run.train.checkpoint_every = 1;
        e.run.adapt.steps = 2;
        let report = reproduce(&plan, &|_| ProgressBar::hidden()).unwrap();
        assert_eq!(report.datasets[0].shapes[1], ("test".to_string(), vec![9, 32, 20, 2]));
        let runs = &report.experiments[0].runs;
        assert_eq!(runs.len(), 2);
        assert_eq!((runs[0].experts, runs[1].experts), (3, 1));
        assert_eq!(runs[0].metrics.routing.assignment.len(), 9);
        assert!(runs.iter().all(|r| r.metrics.in_domain.mse.mean.is_finite() && r.metrics.timing.outer_steps == 2));
        assert_eq!(report.experiments[0].skipped.len(), 1, "the published folder does not exist here");
        for f in [
            "metrics.json",
            "contexts.json",
            "gate.png",
            "contexts.png",
            "trajectories.png",
            "adaptation.png",
            "loss.png",
        ] {
            assert!(runs[0].dir.join(f).is_file(), "{f}");
        }
        // A second reproduce finds data and metrics on disk and reports the same numbers.
        let again = reproduce(&plan, &|_| ProgressBar::hidden()).unwrap();
        assert_eq!(again.experiments, report.experiments);
        let md = std::fs::read_to_string(report.write(dir.path()).unwrap()).unwrap();
        assert!(md.contains("| generated | MixER | 3 |"), "{md}");
        assert!(md.contains("| generated | one expert | 1 |"), "{md}");
        assert!(md.contains("in-domain MSE | in-domain env. relative L2 |"), "{md}");
        assert!(md.contains("mean ± std (median) over environments"), "{md}");
        assert!(
            md.contains("| lotka-volterra | 1 | [9, 4, 20, 2] | [9, 32, 20, 2] | [4, 1, 20, 2] | [4, 32, 20, 2] |")
        );
        assert_eq!(Report::read(dir.path()).unwrap(), report, "report.json reads back");
        // A later partial report keeps what it does not cover from the earlier one.
        let mut later = report.clone();
        later.datasets.clear();
        later.experiments[0].runs.truncate(1);
        let merged = later.clone().merged_with(report.clone());
        assert_eq!(merged.datasets, report.datasets, "taken from the earlier report");
        assert_eq!(merged.experiments, later.experiments, "the later report wins");
        let mut paper = report.clone();
        paper.plan.profile = Profile::Paper;
        assert_eq!(later.clone().merged_with(paper), later, "another profile is not merged");
    }
}
