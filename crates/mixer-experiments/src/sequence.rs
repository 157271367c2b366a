//! Time-series experiments with hier-shPLRNN experts (MixER, Nzoyem et al. 2025, synthetic
//! control charts): a file with `kind = "sequence"` names the chart sizes and a
//! [`SequenceRunConfig`]; each variant (MixER with its experts, one expert) trains on the
//! normalised series, then the learned contexts are clustered by K-means and compared, like the
//! routing, with the true classes (NMI, accuracy after matching, purity).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::info;

use mixer_core::{ContextModel, Dataset, Error, Seeds};
use mixer_data::{
    ChartClass, ControlChartSpec, DatasetDir, MANIFEST_FILE, Manifest, generate_control_charts, load_dir,
};
use mixer_train::metrics::{matched_accuracy, nmi, purity};
use mixer_train::{
    SequenceRunConfig, SequenceState, SequenceTrainer, context_clusters, context_matrix, free_running_mse, read_json,
    sequence_assignment, sequence_env_losses, series_tensor, write_json,
};

use crate::experiment::{declares_kind, merge, parse_file, parse_shipped};
use crate::plot::plot_class_contexts;
use crate::{AutodiffBackend, BackendJob, ExperimentError, Profile};

/// The sequence experiment files shipped in `experiments/`, by name.
pub const BUILTIN_SEQUENCE_EXPERIMENTS: [(&str, &str); 1] =
    [("control-charts", include_str!("../../../experiments/control_charts.toml"))];

/// A sequence experiment, resolved for a profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SequenceExperiment {
    /// Short name (folder and table name).
    pub name: String,
    /// One line on what it shows.
    pub description: String,
    /// Run seed.
    pub seed: u64,
    /// Sizes of the generated control charts.
    pub data: ControlChartSpec,
    /// Variants: `mixer` (the configured experts) and `single-expert`.
    pub variants: Vec<String>,
    /// The MixER run.
    pub run: SequenceRunConfig,
    /// The profile it was resolved for.
    pub profile: Profile,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Head {
    kind: String,
    name: String,
    description: String,
    seed: u64,
    variants: Vec<String>,
    data: ControlChartSpec,
}

impl SequenceExperiment {
    /// True when experiment TOML `text` declares a sequence experiment (`kind = "sequence"`).
    pub fn is_sequence_text(text: &str) -> bool {
        declares_kind(text, "sequence")
    }

    /// A shipped sequence experiment under `profile`.
    pub fn builtin(name: &str, profile: Profile) -> Result<Self, ExperimentError> {
        parse_shipped(&BUILTIN_SEQUENCE_EXPERIMENTS, name, profile, Self::parse)
    }

    /// Reads a sequence experiment file under `profile`.
    pub fn load(path: &Path, profile: Profile) -> Result<Self, ExperimentError> {
        parse_file(path, profile, Self::parse)
    }

    /// Parses sequence experiment TOML and applies the overrides of `profile` (`[profile.NAME]`,
    /// merged key by key).
    pub fn parse(text: &str, profile: Profile) -> Result<Self, ExperimentError> {
        let bad = |message: String| ExperimentError::Toml { path: "<text>".into(), message };
        let mut doc: toml::Value = toml::from_str(text).map_err(|e: toml::de::Error| bad(e.to_string()))?;
        let table = doc.as_table_mut().ok_or_else(|| bad("not a table".into()))?;
        let over = table
            .remove("profile")
            .and_then(|p| p.as_table().and_then(|p| p.get(profile.name()).cloned()))
            .unwrap_or(toml::Value::Table(Default::default()));
        merge(&mut doc, over);
        let table = doc.as_table_mut().ok_or_else(|| bad("not a table".into()))?;
        let run = table.remove("run").ok_or_else(|| bad("missing [run] table".into()))?;
        let head: Head = doc.try_into().map_err(|e: toml::de::Error| bad(e.to_string()))?;
        if head.kind != "sequence" {
            return Err(bad(format!("kind = `{}`: a sequence experiment says kind = \"sequence\"", head.kind)));
        }
        let run: SequenceRunConfig = run.try_into().map_err(|e: toml::de::Error| bad(format!("[run]: {e}")))?;
        for v in &head.variants {
            if v != "mixer" && v != "single-expert" {
                return Err(Error::config("variants", format!("`{v}`: known variants are mixer, single-expert")).into());
            }
        }
        head.data.check()?;
        run.validate()?;
        Ok(Self {
            name: head.name,
            description: head.description,
            seed: head.seed,
            data: head.data,
            variants: head.variants,
            run,
            profile,
        })
    }

    /// The run config of `variant` (`single-expert`: one expert, the gate never refits).
    pub fn config(&self, variant: &str) -> SequenceRunConfig {
        let mut c = self.run.clone();
        if variant == "single-expert" {
            c.model.experts = 1;
        }
        c
    }

    /// Generates the charts into `dir` with `seed`, or reads them when `dir` holds them already.
    pub fn dataset(&self, dir: &Path, seed: u64) -> Result<DatasetDir, ExperimentError> {
        let on_disk = Manifest::read(&dir.join(MANIFEST_FILE)).ok().filter(|m| {
            m.seed == seed && m.split("train").is_some_and(|s| s.shape.get(1) == Some(&self.data.per_class))
        });
        if on_disk.is_some() {
            return Ok(load_dir(dir)?);
        }
        let data = generate_control_charts(&self.data, seed)?;
        data.write(dir)?;
        Ok(data)
    }
}

/// Scores of one sequence run (`metrics.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SequenceRunMetrics {
    /// Experts of the run.
    pub experts: usize,
    /// NMI between the K-means clusters of the contexts (one per class) and the classes.
    pub cluster_nmi: f64,
    /// Accuracy of the K-means clusters after matching them to the classes.
    pub cluster_accuracy: f64,
    /// NMI between the routing and the classes.
    pub routing_nmi: f64,
    /// Accuracy of the routing after matching experts to classes (at most experts / classes).
    pub routing_accuracy: f64,
    /// Share of series routed to their class's majority expert.
    pub routing_purity: f64,
    /// Series per expert.
    pub expert_load: Vec<usize>,
    /// Series of each class per expert, `[classes][experts]`.
    pub class_by_expert: Vec<Vec<usize>>,
    /// Mean forced one-step MSE (the last forcing of training) on the training series.
    pub train_forced_mse: f64,
    /// Mean free-running MSE from each training series' first point.
    pub train_free_mse: f64,
    /// Mean forced MSE on the test split (same series parameters, new noise).
    pub test_forced_mse: f64,
    /// Training progress and gate refit counts.
    pub state: SequenceState,
    /// The backend that ran it.
    pub device: String,
}

/// One run of a sequence experiment in a report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SequenceRunRecord {
    /// Variant name.
    pub variant: String,
    /// Run folder.
    pub dir: PathBuf,
    /// Context map (PCA, coloured by class and by expert).
    pub figure: PathBuf,
    /// Its scores.
    pub metrics: SequenceRunMetrics,
}

/// The runs of one sequence experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SequenceExperimentRecord {
    /// Experiment name.
    pub name: String,
    /// One line on what it shows.
    pub description: String,
    /// The runs, one per variant.
    pub runs: Vec<SequenceRunRecord>,
}

/// The series standardised by the training split's mean and standard deviation (all points).
fn standardise(data: &Dataset, mean: f64, std: f64) -> Result<Dataset, ExperimentError> {
    Ok(Dataset::new(data.x.mapv(|v| (v - mean) / std), data.t.clone(), data.families.clone())?)
}

/// Trains one variant in `dir` and scores it; a folder with `metrics.json` is read back.
pub fn sequence_run<B: AutodiffBackend>(
    experiment: &SequenceExperiment,
    variant: &str,
    data: &DatasetDir,
    dir: &Path,
    device: &B::Device,
    label: &str,
    progress: bool,
) -> Result<SequenceRunRecord, ExperimentError> {
    let figure = dir.join("contexts.png");
    if let Ok(metrics) = read_json::<SequenceRunMetrics>(&dir.join("metrics.json")) {
        info!(run = %dir.display(), "metrics found; run skipped");
        return Ok(SequenceRunRecord { variant: variant.into(), dir: dir.into(), figure, metrics });
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let x = &data.train.x;
    let mean = x.mean().unwrap_or(0.0);
    let std = x.std(0.0).max(1e-12);
    let train = standardise(&data.train, mean, std)?;
    let test = standardise(&data.test, mean, std)?;
    let classes = train.families.clone().ok_or_else(|| Error::config("data", "the series carry no class labels"))?;
    let config = experiment.config(variant);
    write_json(&dir.join("config.json"), &config)?;
    let mut trainer = SequenceTrainer::<B>::new(config.clone(), &train, Seeds::new(experiment.seed), device)?;
    let total = config.train.outer_steps;
    trainer.run(|r| {
        if progress && (r.outer + 1).is_multiple_of(10.max(total / 10)) {
            info!(outer = r.outer + 1, total, loss = r.model_loss, rerouted = r.rerouted, "sequence training");
        }
    })?;
    let model = trainer.valid();
    let inner = device.clone();
    let contexts = context_matrix(&model);
    let rows: Vec<Vec<f64>> = contexts.outer_iter().map(|r| r.to_vec()).collect();
    write_json(&dir.join("contexts.json"), &rows)?;
    let n_classes = ChartClass::ALL.len().min(classes.iter().max().map_or(1, |m| m + 1));
    let clusters = context_clusters(&contexts, n_classes, &mut Seeds::new(experiment.seed).stream("kmeans"))?;
    let routing = sequence_assignment(&model.theta, model.contexts.contexts())?;
    let experts = config.model.experts;
    let mut load = vec![0; experts];
    let mut class_by_expert = vec![vec![0; experts]; n_classes];
    for (&c, &k) in classes.iter().zip(&routing) {
        load[k] += 1;
        class_by_expert[c][k] += 1;
    }
    let forcing = config.train.forcing.last();
    let forced = |d: &Dataset| -> Result<f64, ExperimentError> {
        let series = series_tensor::<B::InnerBackend>(d, &inner);
        let envs: Vec<usize> = (0..d.num_envs()).collect();
        let l = sequence_env_losses(
            &model.theta.experts,
            &routing,
            model.contexts.contexts(),
            &series,
            d.num_trajs(),
            &envs,
            &forcing,
        )?;
        Ok(mixer_core::host::to_vec(l).iter().sum::<f64>() / d.num_envs() as f64)
    };
    let free = free_running_mse(&model, &train, &inner)?;
    let metrics = SequenceRunMetrics {
        experts,
        cluster_nmi: nmi(&classes, &clusters),
        cluster_accuracy: matched_accuracy(&classes, &clusters),
        routing_nmi: nmi(&classes, &routing),
        routing_accuracy: matched_accuracy(&classes, &routing),
        routing_purity: purity(&classes, &routing),
        expert_load: load,
        class_by_expert,
        train_forced_mse: forced(&train)?,
        train_free_mse: free.iter().sum::<f64>() / free.len().max(1) as f64,
        test_forced_mse: forced(&test)?,
        state: trainer.state.clone(),
        device: label.into(),
    };
    let names: Vec<String> = ChartClass::ALL.iter().take(n_classes).map(|c| c.name().to_string()).collect();
    plot_class_contexts(&figure, &format!("{} — {variant}", experiment.name), &rows, &classes, &names, &routing)?;
    write_json(&dir.join("metrics.json"), &metrics)?;
    Ok(SequenceRunRecord { variant: variant.into(), dir: dir.into(), figure, metrics })
}

/// Runs every variant of a sequence experiment: data under `data_dir`, runs under
/// `<runs_dir>/<variant>`.
pub struct SequenceJob<'a> {
    /// The experiment.
    pub experiment: &'a SequenceExperiment,
    /// Folder of the generated charts.
    pub data_dir: PathBuf,
    /// Seed of the data.
    pub data_seed: u64,
    /// Folder of its runs.
    pub runs_dir: PathBuf,
    /// Log progress every tenth of training.
    pub progress: bool,
}

impl BackendJob for SequenceJob<'_> {
    type Output = Result<SequenceExperimentRecord, ExperimentError>;

    fn run<B: AutodiffBackend>(self, device: B::Device, label: &str) -> Self::Output {
        let e = self.experiment;
        let data = e.dataset(&self.data_dir, self.data_seed)?;
        let mut runs = Vec::new();
        for variant in &e.variants {
            info!(experiment = %e.name, variant = %variant, "sequence run");
            let dir = self.runs_dir.join(variant);
            runs.push(sequence_run::<B>(e, variant, &data, &dir, &device, label, self.progress)?);
        }
        Ok(SequenceExperimentRecord { name: e.name.clone(), description: e.description.clone(), runs })
    }
}

/// Markdown section of a sequence experiment: one row per variant.
pub fn sequence_markdown(record: &SequenceExperimentRecord, link: impl Fn(&Path) -> String) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "### {}\n\n{}\n", record.name, record.description);
    let _ = writeln!(
        s,
        "| variant | experts | context k-means NMI | k-means accuracy | routing NMI | routing accuracy | routing purity | series per expert | forced MSE (train / test) | free-running MSE | gate refits (skipped) | seconds | contexts |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &record.runs {
        let m = &r.metrics;
        let _ = writeln!(
            s,
            "| {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:?} | {:.3} / {:.3} | {:.3} | {} ({}) | {:.0} | [PCA]({}) |",
            r.variant,
            m.experts,
            m.cluster_nmi,
            m.cluster_accuracy,
            m.routing_nmi,
            m.routing_accuracy,
            m.routing_purity,
            m.expert_load,
            m.train_forced_mse,
            m.test_forced_mse,
            m.train_free_mse,
            m.state.gate_updates,
            m.state.skipped_gate_updates,
            m.state.train_seconds,
            link(&r.figure),
        );
    }
    let names: Vec<&str> = ChartClass::ALL.iter().map(|c| c.name()).collect();
    if let Some(r) = record.runs.iter().find(|r| r.metrics.experts > 1) {
        let rows: Vec<String> = r
            .metrics
            .class_by_expert
            .iter()
            .enumerate()
            .map(|(c, row)| format!("{} {:?}", names.get(c).unwrap_or(&"?"), row))
            .collect();
        let _ = writeln!(s, "\nSeries of each class per expert ({}): {}.\n", r.variant, rows.join("; "));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_file_parses_in_both_profiles() {
        for profile in [Profile::Quick, Profile::Paper] {
            let e = SequenceExperiment::builtin("control-charts", profile).unwrap();
            assert_eq!(e.data.steps, 60);
            assert_eq!(e.variants, vec!["mixer".to_string(), "single-expert".to_string()]);
            assert_eq!(e.config("single-expert").model.experts, 1);
        }
        let paper = SequenceExperiment::builtin("control-charts", Profile::Paper).unwrap();
        assert_eq!((paper.run.model.experts, paper.run.model.context_dim, paper.run.model.hidden), (3, 10, 32));
        assert_eq!((paper.run.train.outer_steps, paper.run.train.subset_size, paper.data.per_class), (500, 600, 100));
        let text = BUILTIN_SEQUENCE_EXPERIMENTS[0].1.replace("\"single-expert\"", "\"two-experts\"");
        let err = SequenceExperiment::parse(&text, Profile::Paper).unwrap_err().to_string();
        assert!(err.contains("two-experts"), "{err}");
        assert!(SequenceExperiment::is_sequence_text(BUILTIN_SEQUENCE_EXPERIMENTS[0].1));
    }
}
