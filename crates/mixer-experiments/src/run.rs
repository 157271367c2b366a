//! Train, adapt and evaluate one run folder; what `mixer train | adapt | eval` and the
//! reproduce harness call.

use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use burn::tensor::{
    Tensor,
    backend::{AutodiffBackend, Backend},
};
use serde::{Deserialize, Serialize};
use tracing::info;

use mixer_core::host::{tensor2, to_vec};
use mixer_core::{ContextModel, Error, Seeds};
use mixer_routers::Refit;
use mixer_train::metrics::{nmi, purity};
use mixer_train::{
    AdaptMode, EvalReport, MixerModel, RunConfig, TrainState, Trainer, adapt, checkpoint, evaluate, read_json,
    write_json,
};

use crate::ExperimentError;
use crate::data::RunData;
use crate::figures::{Contexts, Predictions, run_figures};

/// Routing outcome of a trained model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoutingMetrics {
    /// Expert of each training environment.
    pub assignment: Vec<usize>,
    /// Family of each training environment, when known.
    pub families: Option<Vec<usize>>,
    /// Share of environments routed to their family's majority expert (mixtures only).
    pub purity: Option<f64>,
    /// Normalised mutual information between families and experts (mixtures only).
    pub nmi: Option<f64>,
    /// Successful gate refits.
    pub gate_updates: usize,
    /// Skipped gate refits.
    pub skipped_gate_updates: usize,
    /// Share of the units (environments, once per model step) that the router sent to no
    /// routed expert (capacity limits, units no expert picked); mixtures only.
    #[serde(default)]
    pub dropped_share: Option<f64>,
    /// Share of environments the last K-means refit's least-squares gate sends to their
    /// cluster's expert (MixER gate only; below 1 when the linear fit masks a cluster).
    pub gate_agreement: Option<f64>,
}

/// Wall-clock figures of the training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// Seconds spent training.
    pub train_seconds: f64,
    /// Outer steps completed.
    pub outer_steps: usize,
    /// Mean seconds per outer step.
    pub seconds_per_outer_step: f64,
    /// The device that ran it.
    pub device: String,
}

/// Adaptation scores by mode.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdaptationMetrics {
    /// All new environments fitted together.
    pub bulk: EvalReport,
    /// New environments fitted one at a time.
    pub sequential: EvalReport,
}

/// Everything `metrics.json` holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunMetrics {
    /// Training environments, new initial conditions (test split).
    pub in_domain: EvalReport,
    /// New environments (adapt_test after fitting on adapt_train).
    pub adaptation: AdaptationMetrics,
    /// Routing of the training environments.
    pub routing: RoutingMetrics,
    /// Training time.
    pub timing: Timing,
}

/// Trains (or resumes) a run in `run`.
pub fn train_run<B: AutodiffBackend>(
    config: RunConfig,
    data: &RunData,
    run: &Path,
    seed: u64,
    progress: bool,
    device: &B::Device,
) -> Result<TrainState, ExperimentError> {
    let mut trainer =
        Trainer::<B>::new(config, data.train.clone(), Seeds::new(seed), run, true, device)?.with_progress(progress);
    trainer.run()?;
    info!(run = %run.display(), outer = trainer.state.outer_done, "training finished");
    Ok(trainer.state.clone())
}

/// A trained run loaded from its folder (best checkpoint if any, else the latest).
pub struct LoadedRun<B: AutodiffBackend> {
    /// The run's config.
    pub config: RunConfig,
    /// The run's seed.
    pub seeds: Seeds,
    /// Trained parameters.
    pub model: MixerModel<B>,
    /// Trainer state at that checkpoint.
    pub state: TrainState,
}

/// Loads the trained model of a run folder.
pub fn load_run<B: AutodiffBackend>(
    run: &Path,
    data: &RunData,
    device: &B::Device,
) -> Result<LoadedRun<B>, ExperimentError> {
    let config: RunConfig = read_json(&run.join("config.json"))?;
    let seeds: Seeds = read_json(&run.join("seed.json"))?;
    let dir = if run.join("best").exists() {
        run.join("best")
    } else {
        checkpoint::latest(run)?
            .map(|(_, d)| d)
            .ok_or_else(|| Error::config("run", format!("{} has no checkpoint: train it first", run.display())))?
    };
    let model = MixerModel::<B>::init(&config, data.train.num_envs(), data.train.dim(), &seeds, device)?
        .load_checkpoint(&dir, device)?;
    let state: TrainState = read_json(&dir.join("state.json"))?;
    Ok(LoadedRun { config, seeds, model, state })
}

/// File holding adapted contexts of a mode.
pub fn adapted_path(run: &Path, mode: AdaptMode) -> PathBuf {
    run.join(match mode {
        AdaptMode::Bulk => "adapted-bulk.json",
        AdaptMode::Sequential => "adapted-sequential.json",
    })
}

/// Fits contexts of the adaptation environments and stores them in the run folder.
pub fn adapt_run<B: AutodiffBackend>(
    run: &Path,
    data: &RunData,
    mode: AdaptMode,
    device: &B::Device,
) -> Result<Vec<Vec<f64>>, ExperimentError> {
    adapt_loaded(run, &load_run::<B>(run, data, device)?, data, mode, device)
}

/// [`adapt_run`] with the run already loaded.
fn adapt_loaded<B: AutodiffBackend>(
    run: &Path,
    loaded: &LoadedRun<B>,
    data: &RunData,
    mode: AdaptMode,
    device: &B::Device,
) -> Result<Vec<Vec<f64>>, ExperimentError> {
    let ctx = adapt(&loaded.model, &loaded.config, &data.adapt_train, mode, &loaded.seeds, device)?;
    let rows = context_rows(ctx);
    write_json(&adapted_path(run, mode), &rows)?;
    Ok(rows)
}

/// One row per environment of a context table.
fn context_rows<B: Backend>(ctx: Tensor<B, 2>) -> Vec<Vec<f64>> {
    let [n, d] = ctx.dims();
    let values = to_vec(ctx);
    (0..n).map(|i| values[i * d..(i + 1) * d].to_vec()).collect()
}

/// Evaluates a trained run in-domain and after adaptation (adapting first where needed), writes
/// `metrics.json` and the run's plots, and returns the metrics.
pub fn eval_run<B: AutodiffBackend>(
    run: &Path,
    data: &RunData,
    device: &B::Device,
    device_label: &str,
) -> Result<RunMetrics, ExperimentError> {
    let loaded = load_run::<B>(run, data, device)?;
    let valid = loaded.model.valid();
    let integrator = loaded
        .config
        .train
        .solver
        .build::<B::InnerBackend>()
        .map_err(|e| Error::config("train.solver", e.to_string()))?;
    let contexts = valid.contexts.contexts();
    let train_rows = context_rows(contexts.clone());
    write_json(&run.join("contexts.json"), &train_rows)?;
    let (in_domain, in_pred) = evaluate(&valid.theta, integrator.as_ref(), contexts.clone(), &data.test)?;
    let mut adapted = Vec::new();
    let mut bulk_rows = Vec::new();
    for mode in [AdaptMode::Bulk, AdaptMode::Sequential] {
        let path = adapted_path(run, mode);
        let rows: Vec<Vec<f64>> =
            if path.exists() { read_json(&path)? } else { adapt_loaded(run, &loaded, data, mode, device)? };
        let d = rows.first().map_or(0, Vec::len);
        let flat: Vec<f64> = rows.concat();
        let ctx: Tensor<B::InnerBackend, 2> = tensor2(&flat, [rows.len(), d], device);
        adapted.push(evaluate(&valid.theta, integrator.as_ref(), ctx, &data.adapt_test)?);
        if mode == AdaptMode::Bulk {
            bulk_rows = rows;
        }
    }
    let (sequential, _) = adapted.pop().expect("two modes");
    let (bulk, bulk_pred) = adapted.pop().expect("two modes");
    let last = final_state(run)?;
    let assignment = in_domain.assignment.clone();
    let families = data.train.families.clone();
    // With one expert there is no routing to score (purity would be 1 and NMI 0 by definition).
    let scored = families.as_ref().filter(|_| loaded.config.model.experts > 1);
    let routing = RoutingMetrics {
        purity: scored.map(|f| purity(f, &assignment)),
        nmi: scored.map(|f| nmi(f, &assignment)),
        families,
        assignment,
        gate_updates: last.gate_updates,
        skipped_gate_updates: last.skipped_gate_updates,
        dropped_share: last.dropped_share().filter(|_| loaded.config.model.experts > 1),
        gate_agreement: loaded.model.theta.gate.last_agreement(),
    };
    let outer = last.outer_done;
    let timing = Timing {
        train_seconds: last.train_seconds,
        outer_steps: outer,
        seconds_per_outer_step: last.train_seconds / outer.max(1) as f64,
        device: device_label.to_string(),
    };
    let metrics = RunMetrics { in_domain, adaptation: AdaptationMetrics { bulk, sequential }, routing, timing };
    let pred = Predictions { test: (&data.test, &in_pred), adapt_test: (&data.adapt_test, &bulk_pred) };
    let context_map = Contexts { train: &train_rows, experts: &metrics.routing.assignment, adapted: &bulk_rows };
    run_figures(run, &loaded, &valid, pred, context_map, &last.history)?;
    write_json(&run.join("metrics.json"), &metrics)?;
    Ok(metrics)
}

/// Trainer state at the latest checkpoint (the evaluated model may be the best, an earlier one).
fn final_state(run: &Path) -> Result<TrainState, ExperimentError> {
    let (_, dir) = checkpoint::latest(run)?
        .ok_or_else(|| Error::config("run", format!("{} has no checkpoint: train it first", run.display())))?;
    Ok(read_json(&dir.join("state.json"))?)
}

/// Reads a run's `metrics.json` if it exists.
pub fn read_metrics(run: &Path) -> Option<RunMetrics> {
    read_json(&run.join("metrics.json")).ok()
}

/// Reads the config a run was trained with.
pub fn read_run_config(run: &Path) -> Result<RunConfig, ExperimentError> {
    Ok(read_json(&run.join("config.json"))?)
}
