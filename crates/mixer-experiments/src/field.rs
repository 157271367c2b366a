//! Field experiments: one-step operators on gridded fields (the spatial mixture of experts
//! against dense baselines), defined by a TOML file with `kind = "field"`, trained, scored on the
//! test runs and drawn.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tracing::info;

use mixer_core::{Error, Seeds};
use mixer_data::{
    FIELD_MANIFEST_FILE, FieldDir, FieldManifest, HEAT_REGIONS, HeatRegionsSpec, generate_heat_regions,
    generate_heat_regions_grown, load_field_dir, read_region_map,
};
use mixer_experts::FieldModelConfig;
use mixer_train::{FieldMetrics, FieldRunConfig, evaluate_field, load_field_model, read_json, train_field, write_json};

use crate::experiment::{declares_kind, merge, parse_file, parse_shipped, split_profile};
use crate::plot::{field_run_figures, plot_fields};
use crate::{AutodiffBackend, BackendJob, ExperimentError, Profile};

/// The field experiment files shipped in `experiments/`, by name.
pub const BUILTIN_FIELD_EXPERIMENTS: [(&str, &str); 1] =
    [("heat-regions", include_str!("../../../experiments/heat_regions.toml"))];

/// Where a field experiment's data comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldDataSource {
    /// The system to generate (`heat-regions`).
    pub system: String,
    /// A published region map (`.npy`, relative to the workspace root) used instead of a grown
    /// one when present, for a like-for-like run.
    pub regions: Option<String>,
}

/// A field experiment, resolved for a profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldExperiment {
    /// Short name (folder and table name).
    pub name: String,
    /// One line on what it shows.
    pub description: String,
    /// Data to generate.
    pub data: FieldDataSource,
    /// Models compared: names of `[run.models.NAME]` tables, or field model kinds (`smoe`, `cnn`,
    /// `coord-conv`, `lcn`): the configured model for its own kind, the default settings for the
    /// others.
    pub variants: Vec<String>,
    /// Named models besides the configured one (`[run.models.NAME]`), trained like it.
    pub models: std::collections::BTreeMap<String, FieldModelConfig>,
    /// Run config of the configured model under the chosen profile.
    pub run: FieldRunConfig,
    /// Training steps of variants that differ from `run.train.steps` (`[run.steps_by_variant]`:
    /// the dense CNNs cost about ten times a mixture step, so the quick profile gives them fewer).
    pub steps_by_variant: std::collections::BTreeMap<String, usize>,
    /// Steps of the free-running rollout that is scored.
    pub rollout_steps: usize,
    /// Training seed.
    pub seed: u64,
    /// The profile it was resolved for (sets the data sizes).
    pub profile: Profile,
}

impl FieldExperiment {
    /// True when experiment TOML `text` declares a field experiment (`kind = "field"`).
    pub fn is_field_text(text: &str) -> bool {
        declares_kind(text, "field")
    }

    /// A shipped field experiment under `profile`.
    pub fn builtin(name: &str, profile: Profile) -> Result<Self, ExperimentError> {
        parse_shipped(&BUILTIN_FIELD_EXPERIMENTS, name, profile, Self::parse)
    }

    /// Reads a field experiment file under `profile`.
    pub fn load(path: &Path, profile: Profile) -> Result<Self, ExperimentError> {
        parse_file(path, profile, Self::parse)
    }

    /// Parses field experiment TOML and applies the overrides of `profile` (`[profile.NAME.run]`).
    pub fn parse(text: &str, profile: Profile) -> Result<Self, ExperimentError> {
        let bad = |message: String| ExperimentError::Toml { path: "<text>".into(), message };
        let mut doc: toml::Table = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let (mut run, over) = split_profile(&mut doc, profile).map_err(bad)?;
        if let Some(over) = over {
            merge(&mut run, over);
        }
        let steps_by_variant = match run.as_table_mut().and_then(|t| t.remove("steps_by_variant")) {
            Some(v) => v.try_into().map_err(|e: toml::de::Error| bad(format!("[run.steps_by_variant]: {e}")))?,
            None => Default::default(),
        };
        let models = match run.as_table_mut().and_then(|t| t.remove("models")) {
            Some(v) => v.try_into().map_err(|e: toml::de::Error| bad(format!("[run.models]: {e}")))?,
            None => Default::default(),
        };
        let run: FieldRunConfig = run.try_into().map_err(|e: toml::de::Error| bad(format!("[run]: {e}")))?;
        run.train.validate()?;
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Head {
            kind: String,
            name: String,
            description: String,
            seed: u64,
            rollout_steps: usize,
            data: FieldDataSource,
            variants: Vec<String>,
        }
        let head: Head = toml::Value::Table(doc).try_into().map_err(|e: toml::de::Error| bad(e.to_string()))?;
        if head.kind != "field" {
            return Err(bad(format!("kind = `{}`: a field experiment says kind = \"field\"", head.kind)));
        }
        if head.data.system != HEAT_REGIONS {
            return Err(Error::config(
                "data.system",
                format!("`{}`: field experiments generate `{HEAT_REGIONS}`", head.data.system),
            )
            .into());
        }
        let experiment = Self {
            name: head.name,
            description: head.description,
            data: head.data,
            variants: head.variants,
            models,
            run,
            steps_by_variant,
            rollout_steps: head.rollout_steps,
            seed: head.seed,
            profile,
        };
        for v in &experiment.variants {
            experiment.variant(v)?;
        }
        if let Some((v, _)) =
            experiment.steps_by_variant.iter().find(|(v, s)| !experiment.variants.contains(v) || **s == 0)
        {
            return Err(Error::config(
                "run.steps_by_variant",
                format!("`{v}` needs a listed variant and at least one step"),
            )
            .into());
        }
        Ok(experiment)
    }

    /// The run config of variant `kind`: the model named so in `[run.models]`, else the
    /// configured model when it is of that kind, else the kind's default settings; all with the
    /// same training.
    pub fn variant(&self, kind: &str) -> Result<FieldRunConfig, ExperimentError> {
        let mut run = self.run.clone();
        if let Some(model) = self.models.get(kind) {
            run.model = model.clone();
        } else if run.model.kind() != kind {
            run.model = toml::from_str(&format!("kind = \"{kind}\"")).map_err(|_| {
                Error::config("variants", format!("unknown field model `{kind}`; use smoe, cnn, coord-conv or lcn"))
            })?;
        }
        if let Some(&steps) = self.steps_by_variant.get(kind) {
            run.train.steps = steps;
            run.train.checkpoint_every = run.train.checkpoint_every.min(steps);
            run.train.eval_every = run.train.eval_every.min(steps);
        }
        Ok(run)
    }

    /// The data sizes of the experiment's profile.
    pub fn data_spec(&self) -> HeatRegionsSpec {
        match self.profile {
            Profile::Quick => HeatRegionsSpec::quick(),
            Profile::Paper => HeatRegionsSpec::paper(),
        }
    }

    /// Generates the dataset into `dir` (or reads it there when it was made with `seed` and the
    /// same region source); the published map under `root` is used when present.
    pub fn dataset(&self, dir: &Path, root: &Path, seed: u64) -> Result<FieldDir, ExperimentError> {
        let published = self.data.regions.as_ref().map(|p| root.join(p)).filter(|p| p.is_file());
        let source = published.as_ref().map(|p| p.display().to_string());
        let spec = self.data_spec();
        let on_disk = FieldManifest::read(&dir.join(FIELD_MANIFEST_FILE)).ok().filter(|m| {
            m.seed == seed
                && m.runs.train == spec.train_runs
                && match &source {
                    Some(s) => m.region_source.as_deref() == Some(s.as_str()),
                    None => m.region_source.as_deref().is_some_and(|s| s.starts_with("grown")),
                }
        });
        if on_disk.is_some() {
            info!(dir = %dir.display(), "field dataset found on disk");
            return Ok(load_field_dir(dir)?);
        }
        let data = match &published {
            Some(path) => {
                let mut d = generate_heat_regions(&spec, &read_region_map(path)?, seed)?;
                d.manifest.region_source = source;
                d
            }
            None => generate_heat_regions_grown(&spec, seed)?,
        };
        data.write(dir)?;
        Ok(data)
    }
}

/// Timing of a field run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldTiming {
    /// Optimiser steps.
    pub steps: usize,
    /// Training seconds.
    pub train_seconds: f64,
    /// Milliseconds per training step.
    pub ms_per_step: f64,
    /// Step of the best validation MSE (the model kept).
    pub best_step: usize,
}

/// What `metrics.json` of a field run holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldRunMetrics {
    /// The model kind.
    pub model: String,
    /// Test scores.
    pub scores: FieldMetrics,
    /// Training time.
    pub timing: FieldTiming,
}

/// Trains (or resumes) a field run, scores it on the test runs, draws its figures and writes
/// `metrics.json`; a run folder with `metrics.json` is read back instead.
pub fn field_run<B: AutodiffBackend>(
    config: &FieldRunConfig,
    data: &FieldDir,
    run: &Path,
    seed: u64,
    rollout_steps: usize,
    progress: bool,
    device: &B::Device,
) -> Result<FieldRunMetrics, ExperimentError> {
    if let Some(m) = read_field_metrics(run) {
        info!(run = %run.display(), "metrics found; run skipped");
        return Ok(m);
    }
    train_field::<B>(config, data, run, seed, progress, device)?;
    score_field_run::<B>(run, data, rollout_steps, device)
}

/// Scores the trained field run in `run` on the test runs of `data`, draws `maps.png` and
/// `rollout.png`, and writes `metrics.json`.
pub fn score_field_run<B: AutodiffBackend>(
    run: &Path,
    data: &FieldDir,
    rollout_steps: usize,
    device: &B::Device,
) -> Result<FieldRunMetrics, ExperimentError> {
    let (config, model, state) = load_field_model::<B::InnerBackend>(run, data, device)?;
    let start = Instant::now();
    let mut rng = Seeds::new(state.seed).stream("eval");
    let eval = evaluate_field(&model, data, rollout_steps, config.train.batch, &mut rng, device)?;
    info!(run = %run.display(), seconds = start.elapsed().as_secs_f64(), "field run scored");
    field_run_figures(run, data, &eval, &state)?;
    let timing = FieldTiming {
        steps: state.step,
        train_seconds: state.seconds,
        ms_per_step: 1e3 * state.seconds / state.step.max(1) as f64,
        best_step: state.best_step,
    };
    let metrics = FieldRunMetrics { model: config.model.kind().to_string(), scores: eval.metrics, timing };
    write_json(&run.join("metrics.json"), &metrics)?;
    Ok(metrics)
}

/// One field run in a report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldRunRecord {
    /// The model kind.
    pub variant: String,
    /// Run folder.
    pub dir: PathBuf,
    /// Its scores and timing.
    pub metrics: FieldRunMetrics,
}

/// The runs of one field experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldExperimentRecord {
    /// Experiment name.
    pub name: String,
    /// One line on what it shows.
    pub description: String,
    /// Where the region map came from.
    pub regions: String,
    /// Data overview figure.
    pub figure: PathBuf,
    /// Trained runs.
    pub runs: Vec<FieldRunRecord>,
}

/// Runs every variant of a field experiment with data under `data_dir`, runs under `runs_dir`.
pub struct FieldJob<'a> {
    /// The experiment.
    pub experiment: &'a FieldExperiment,
    /// Its dataset.
    pub data: &'a FieldDir,
    /// Folder of its runs (one sub-folder per variant).
    pub runs_dir: PathBuf,
    /// Show progress bars.
    pub progress: bool,
}

impl BackendJob for FieldJob<'_> {
    type Output = Result<Vec<FieldRunRecord>, ExperimentError>;

    fn run<B: AutodiffBackend>(self, device: B::Device, _label: &str) -> Self::Output {
        let e = self.experiment;
        let mut runs = Vec::new();
        for v in &e.variants {
            let dir = self.runs_dir.join(v);
            info!(experiment = %e.name, variant = %v, "training field model");
            let metrics =
                field_run::<B>(&e.variant(v)?, self.data, &dir, e.seed, e.rollout_steps, self.progress, &device)?;
            runs.push(FieldRunRecord { variant: v.clone(), dir, metrics });
        }
        Ok(runs)
    }
}

/// Draws the data overview of a field dataset (region map and frames of test run 0).
pub fn field_data_figure(path: &Path, data: &FieldDir) -> Result<PathBuf, ExperimentError> {
    plot_fields(path, &format!("{} (test run 0)", data.name), &data.test, 0, data.regions.as_ref())
}

/// Reads `metrics.json` of a field run folder.
pub fn read_field_metrics(run: &Path) -> Option<FieldRunMetrics> {
    read_json(&run.join("metrics.json")).ok()
}

/// Markdown section of a field experiment: one row per model.
pub fn field_markdown(record: &FieldExperimentRecord, link: impl Fn(&Path) -> String) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "### {}\n\n{} Region map: {}.\n", record.name, record.description, record.regions);
    let _ = writeln!(s, "![data]({})\n", link(&record.figure));
    let _ = writeln!(
        s,
        "| model | parameters | one-step MSE | MSE by region | percent close (1 %) | rollout MSE at 10 / 50 / 100 steps | gate ARI | gate IoU | ms / step | figures |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
    for r in &record.runs {
        let m = &r.metrics.scores;
        let by_region: Vec<String> = m.mse_by_region.iter().map(|v| format!("{v:.2e}")).collect();
        let at = |i: usize| m.rollout_mse.get(i - 1).map_or_else(|| "–".into(), |v| format!("{v:.2e}"));
        let opt = |v: Option<f64>| v.map_or_else(|| "–".into(), |v| format!("{v:.3}"));
        let _ = writeln!(
            s,
            "| {} | {} | {:.3e} | {} | {:.2} | {} / {} / {} | {} | {} | {:.1} | [errors]({}) [rollout]({}) |",
            r.variant,
            m.parameters,
            m.mse,
            by_region.join(", "),
            m.percent_close,
            at(10),
            at(50),
            at(100),
            opt(m.gate_ari),
            opt(m.gate_iou),
            r.metrics.timing.ms_per_step,
            link(&r.dir.join("maps.png")),
            link(&r.dir.join("rollout.png")),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use mixer_data::HeatRegionsSpec;
    use mixer_experts::ErrorCriterion;

    #[test]
    fn the_heat_regions_experiment_resolves_its_profiles_and_variants() {
        let quick = FieldExperiment::builtin("heat-regions", Profile::Quick).unwrap();
        assert_eq!(quick.variants, ["smoe", "smoe-quantile", "cnn", "coord-conv", "lcn"]);
        assert_eq!((quick.run.train.steps, quick.run.train.lr), (5000, 1e-2));
        assert_eq!(quick.variant("smoe").unwrap().model, quick.run.model);
        let FieldModelConfig::Smoe(quantile) = quick.variant("smoe-quantile").unwrap().model else {
            panic!("smoe-quantile is a spatial mixture")
        };
        assert_eq!((quantile.criterion, quantile.restart_below), (ErrorCriterion::Quantile, None));
        assert_eq!(quick.variant("smoe-quantile").unwrap().train, quick.run.train);
        assert_eq!(quick.variant("cnn").unwrap().train.steps, 150);
        assert_eq!(quick.variant("lcn").unwrap().train.steps, 5000);
        assert_eq!(quick.data_spec(), HeatRegionsSpec::quick());
        let paper = FieldExperiment::builtin("heat-regions", Profile::Paper).unwrap();
        assert_eq!((paper.run.train.steps, paper.run.train.lr, paper.steps_by_variant.len()), (60000, 1e-3, 0));
        assert!(FieldExperiment::is_field_text(BUILTIN_FIELD_EXPERIMENTS[0].1));
        assert!(!FieldExperiment::is_field_text(crate::BUILTIN_EXPERIMENTS[0].1));
    }

    #[test]
    fn bad_field_experiments_are_clear_errors() {
        let text = BUILTIN_FIELD_EXPERIMENTS[0].1;
        let err = |t: &str| FieldExperiment::parse(t, Profile::Quick).unwrap_err().to_string();
        let e = err(&text.replace(r#""coord-conv", "lcn"]"#, r#""mlp"]"#));
        assert!(e.contains("unknown field model `mlp`"), "{e}");
        assert!(err(&text.replace("kind = \"field\"", "kind = \"ode\"")).contains("kind = \"field\""));
        assert!(err(&text.replace("cnn = 150", "unet = 150")).contains("steps_by_variant"));
        assert!(err(&text.replace("lr = 1e-2", "lr = -1.0")).contains("lr"));
    }

    #[test]
    fn a_field_run_trains_scores_draws_and_is_read_back() {
        let _serial = crate::serial_training();
        let spec = HeatRegionsSpec {
            size: 8,
            frames: 4,
            train_runs: 2,
            val_runs: 1,
            test_runs: 1,
            ..HeatRegionsSpec::quick()
        };
        let data = generate_heat_regions_grown(&spec, 1).unwrap();
        let mut e = FieldExperiment::builtin("heat-regions", Profile::Quick).unwrap();
        e.run.train.steps = 6;
        e.run.train.eval_every = 3;
        e.run.train.checkpoint_every = 3;
        e.steps_by_variant.clear();
        let dir = tempfile::tempdir().unwrap();
        type B = burn::backend::Autodiff<burn::backend::NdArray<f64>>;
        let run = e.variant("smoe").unwrap();
        let m = field_run::<B>(&run, &data, dir.path(), 1, 3, false, &Default::default()).unwrap();
        assert_eq!((m.model.as_str(), m.timing.steps, m.scores.rollout_mse.len()), ("smoe", 6, 3));
        assert!(m.scores.gate_ari.is_some() && m.scores.mse.is_finite() && m.scores.mse_by_region.len() == 3);
        for f in ["metrics.json", "maps.png", "rollout.png", "config.json", "model.safetensors"] {
            assert!(dir.path().join(f).is_file(), "{f}");
        }
        let again = field_run::<B>(&run, &data, dir.path(), 1, 3, false, &Default::default()).unwrap();
        assert_eq!(again, m, "metrics.json is read back");
        let record = FieldExperimentRecord {
            name: e.name.clone(),
            description: e.description.clone(),
            regions: "grown (seed 1)".into(),
            figure: dir.path().join("data.png"),
            runs: vec![FieldRunRecord { variant: "smoe".into(), dir: dir.path().to_path_buf(), metrics: m }],
        };
        let md = field_markdown(&record, |p| p.display().to_string());
        assert_eq!(record.runs[0].metrics.scores.parameters, 27 + 3 * 64, "experts and latent gate");
        assert!(md.contains("| smoe | 219 |") && md.contains("gate ARI"), "{md}");
    }
}
