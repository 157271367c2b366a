//! Supervised training of one-step operators on gridded fields (the spatial mixture of experts
//! and its dense baselines): pairs `(frame t, frame t + 1)` of the training runs, Adam, a
//! validation MSE every `eval_every` steps that halves the learning rate on a plateau and keeps
//! the best model, checkpoints that resume.

use std::path::Path;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::record::AdaptorRecord;
use burn::optim::{Adam, AdamConfig, AdamState, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use mixer_core::{Error, Rng, Seeds};
use mixer_data::{FieldDir, FieldSet};
use mixer_experts::{FieldModel, FieldModelConfig};
use mixer_routers::copy_rows;

use crate::checkpoint::{claim_run, latest, load_module, load_record, publish, save_module, save_record, staging};
use crate::config::{positive, positive_f};
use crate::progress::step_bar;
use crate::{TrainError, read_json, write_json};

/// Settings of a field run's training (`[train]`); defaults follow the paper's heat runs (Adam,
/// learning rate 1e-3, halved on a validation plateau).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FieldTrainSettings {
    /// Adam learning rate (default 1e-3).
    pub lr: f64,
    /// Adam's epsilon (default 1e-8, PyTorch's: per-cell parameters such as a latent gate get
    /// gradients of order 1e-5, which burn's default 1e-5 would damp).
    pub eps: f64,
    /// Pairs per step (default 16).
    pub batch: usize,
    /// Optimiser steps (default 3000).
    pub steps: usize,
    /// Steps between validation MSEs (default 100).
    pub eval_every: usize,
    /// Validation pairs (spread evenly over the split; default 128).
    pub val_pairs: usize,
    /// Validations without improvement before the learning rate halves (default 5; 0: never).
    pub plateau: usize,
    /// Steps between checkpoints (default 500).
    pub checkpoint_every: usize,
}

impl Default for FieldTrainSettings {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            eps: 1e-8,
            batch: 16,
            steps: 3000,
            eval_every: 100,
            val_pairs: 128,
            plateau: 5,
            checkpoint_every: 500,
        }
    }
}

impl FieldTrainSettings {
    /// Checks every field; the error names it.
    pub fn validate(&self) -> Result<(), TrainError> {
        for (field, v) in [
            ("batch", self.batch),
            ("steps", self.steps),
            ("eval_every", self.eval_every),
            ("val_pairs", self.val_pairs),
            ("checkpoint_every", self.checkpoint_every),
        ] {
            positive(field, v)?;
        }
        positive_f("eps", self.eps)?;
        Ok(positive_f("lr", self.lr)?)
    }
}

/// A field run: the model and its training (`config.json` of the run folder).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldRunConfig {
    /// The operator.
    pub model: FieldModelConfig,
    /// Its training.
    #[serde(default)]
    pub train: FieldTrainSettings,
}

/// One validation point of the training curve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldCurvePoint {
    /// Steps done.
    pub step: usize,
    /// Mean training MSE since the previous point.
    pub train_mse: f64,
    /// Validation MSE.
    pub val_mse: f64,
    /// Learning rate in use.
    pub lr: f64,
    /// Share of selected positions whose expert gradient was damped (mixtures).
    pub damped: f64,
    /// Mean RC loss since the previous point (mixtures with RC).
    pub rc: f64,
    /// The expert restart made at this point, `[from, to]` (mixtures with `restart_below`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<[usize; 2]>,
}

/// Where a field run stands (`state.json` of its checkpoints).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FieldTrainState {
    /// Steps done.
    pub step: usize,
    /// Learning rate in use.
    pub lr: f64,
    /// Best validation MSE so far.
    pub best_val: Option<f64>,
    /// Step of the best validation MSE.
    pub best_step: usize,
    /// Validations since the last improvement.
    pub since_best: usize,
    /// Training seconds (summed over resumes).
    pub seconds: f64,
    /// The training curve.
    pub curve: Vec<FieldCurvePoint>,
    /// Trainable parameters.
    pub parameters: usize,
    /// The training seed (initial weights, batches, routing noise).
    #[serde(default)]
    pub seed: u64,
    /// Locations routed to each expert since the last validation (mixtures).
    #[serde(default)]
    pub window_load: Vec<usize>,
    /// Summed squared error at each expert's locations since the last validation (mixtures).
    #[serde(default)]
    pub window_error: Vec<f64>,
}

/// The file names of a field run folder.
pub const FIELD_CONFIG_FILE: &str = "config.json";
/// The best model of a finished field run (burn record, without extension).
pub const FIELD_MODEL_FILE: &str = "model";

/// True when `run` is the folder of a field run (its config names a field model).
pub fn is_field_run(run: &Path) -> bool {
    read_json::<FieldRunConfig>(&run.join(FIELD_CONFIG_FILE)).is_ok()
}

/// Training pairs `(run, frame)`: frame `t` is the input, `t + 1` the target.
pub fn field_pairs(set: &FieldSet) -> Vec<(usize, usize)> {
    (0..set.runs()).flat_map(|r| (0..set.frames() - 1).map(move |f| (r, f))).collect()
}

/// The fields of `frames` `[(run, frame)]` as a `[B, C, H, W]` tensor.
pub fn field_batch<B: Backend>(set: &FieldSet, frames: &[(usize, usize)], device: &B::Device) -> Tensor<B, 4> {
    let (h, w) = set.grid();
    let c = set.channels();
    let mut values = Vec::with_capacity(frames.len() * c * h * w);
    for &(r, f) in frames {
        let field = set.fields.slice(ndarray::s![r, f, .., .., ..]);
        for ch in 0..c {
            values.extend(field.slice(ndarray::s![.., .., ch]).iter().copied());
        }
    }
    Tensor::from_data(TensorData::new(values, [frames.len(), c, h, w]), device)
}

/// Inputs and targets of `pairs`.
fn pair_batch<B: Backend>(
    set: &FieldSet,
    pairs: &[(usize, usize)],
    device: &B::Device,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let next: Vec<(usize, usize)> = pairs.iter().map(|&(r, f)| (r, f + 1)).collect();
    (field_batch(set, pairs, device), field_batch(set, &next, device))
}

/// `n` pairs spread evenly over the pairs of `set` (all of them when there are fewer).
pub fn spread_pairs(set: &FieldSet, n: usize) -> Vec<(usize, usize)> {
    let all = field_pairs(set);
    if all.len() <= n {
        return all;
    }
    (0..n).map(|i| all[i * all.len() / n]).collect()
}

/// Mean one-step MSE of `model` over `pairs`, in batches.
pub fn field_mse<B: Backend>(
    model: &FieldModel<B>,
    set: &FieldSet,
    pairs: &[(usize, usize)],
    batch: usize,
    rng: &mut Rng,
    device: &B::Device,
) -> Result<f64, TrainError> {
    let mut sum = 0.0;
    for chunk in pairs.chunks(batch.max(1)) {
        let (x, y) = pair_batch::<B>(set, chunk, device);
        let err = (model.forward(x, rng)? - y).powi_scalar(2).mean();
        sum += mixer_core::host::to_vec(err)[0] * chunk.len() as f64;
    }
    Ok(sum / pairs.len().max(1) as f64)
}

/// Trains (or resumes) the field run in `run`; returns the best model (by validation MSE) and the
/// final state. A finished run folder returns its model without training.
pub fn train_field<B: AutodiffBackend>(
    config: &FieldRunConfig,
    data: &FieldDir,
    run: &Path,
    seed: u64,
    show_progress: bool,
    device: &B::Device,
) -> Result<(FieldModel<B>, FieldTrainState), TrainError> {
    config.train.validate()?;
    let t = &config.train;
    let set = &data.train;
    let (h, w) = set.grid();
    let seeds = Seeds::new(seed);
    let fresh = config.model.init::<B>(set.channels(), [h, w], &mut seeds.stream("model-init"), device)?;
    claim_run(run, FIELD_CONFIG_FILE, config, |mut c: FieldRunConfig| {
        c.train.steps = t.steps;
        c
    })?;
    let mut optim = AdamConfig::new().with_epsilon(t.eps as f32).init::<B, FieldModel<B>>();
    let (mut model, mut best, mut state) = match latest(run)? {
        Some((_, dir)) => {
            let model = load_module(fresh.clone(), &dir, "model", device)?;
            let best = load_module(fresh, &dir, "best", device)?;
            optim = optim.load_record(load_record::<B, _>(&dir, "optim", device)?);
            (model, best, read_json::<FieldTrainState>(&dir.join("state.json"))?)
        }
        None => {
            let parameters = fresh.parameter_count();
            (fresh.clone(), fresh, FieldTrainState { lr: t.lr, parameters, seed, ..Default::default() })
        }
    };
    if state.step >= t.steps {
        save_module(&best, run, FIELD_MODEL_FILE)?;
        return Ok((best, state));
    }
    let pairs = field_pairs(set);
    let val_pairs = spread_pairs(&data.val, t.val_pairs);
    // Each step's batch and routing noise come from streams keyed by the step, so a resumed run
    // draws what an uninterrupted one would.
    let bar = step_bar(t.steps, state.step, show_progress);
    let (mut mse_sum, mut rc_sum, mut damped_sum, mut count) = (0.0, 0.0, 0.0, 0usize);
    let mut clock = Instant::now();
    let mut order: Option<(usize, Vec<(usize, usize)>)> = None;
    while state.step < t.steps {
        let step = state.step;
        let epoch_len = pairs.len().div_ceil(t.batch);
        let (epoch, within) = (step / epoch_len, step % epoch_len);
        // One shuffle per epoch (from the epoch's own stream), not per step.
        if order.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let mut shuffled = pairs.clone();
            shuffled.shuffle(&mut seeds.stream(&format!("epoch-{epoch}")));
            order = Some((epoch, shuffled));
        }
        let (_, shuffled) = order.as_ref().expect("set above");
        let chosen = &shuffled[within * t.batch..((within + 1) * t.batch).min(shuffled.len())];
        let (x, y) = pair_batch::<B>(set, chosen, device);
        let out = model.train_loss(x, y, &mut seeds.stream(&format!("route-{step}")))?;
        if !out.mse.is_finite() {
            return Err(Error::config(
                "train.lr",
                format!("the training MSE became {} at step {step}; lower the learning rate", out.mse),
            )
            .into());
        }
        let grads = GradientsParams::from_grads(out.loss.backward(), &model);
        model = optim.step(state.lr, model, grads);
        (mse_sum, rc_sum, damped_sum, count) = (mse_sum + out.mse, rc_sum + out.rc, damped_sum + out.damped, count + 1);
        state.window_load.resize(out.load.len(), 0);
        state.window_error.resize(out.error.len(), 0.0);
        state.window_load.iter_mut().zip(&out.load).for_each(|(a, b)| *a += b);
        state.window_error.iter_mut().zip(&out.error).for_each(|(a, b)| *a += b);
        state.step += 1;
        if state.step.is_multiple_of(t.eval_every) || state.step == t.steps {
            let valid = model.valid();
            let val_mse = field_mse(&valid, &data.val, &val_pairs, t.batch, &mut seeds.stream("val"), device)?;
            let n = count.max(1) as f64;
            state.curve.push(FieldCurvePoint {
                step: state.step,
                train_mse: mse_sum / n,
                val_mse,
                lr: state.lr,
                damped: damped_sum / n,
                rc: rc_sum / n,
                restart: None,
            });
            (mse_sum, rc_sum, damped_sum, count) = (0.0, 0.0, 0.0, 0);
            let (load, error) = (std::mem::take(&mut state.window_load), std::mem::take(&mut state.window_error));
            if state.best_val.is_none_or(|b| val_mse < b) {
                (state.best_val, state.best_step, state.since_best) = (Some(val_mse), state.step, 0);
                best = model.clone();
            } else {
                state.since_best += 1;
                if t.plateau > 0 && state.since_best >= t.plateau {
                    state.since_best = 0;
                    // A stalled mixture with an idle expert splits its worst one (k-means
                    // splitting) and keeps its learning rate; otherwise the rate halves.
                    let restart;
                    let mut rng = seeds.stream(&format!("restart-{}", state.step));
                    (model, restart) = model.restart_idle(&load, &error, &mut rng);
                    match restart {
                        Some((from, to)) => {
                            let record = copy_moments_of(optim.to_record(), &model, from, to);
                            optim = optim.load_record(record);
                            tracing::info!(step = state.step, from, to, "split an expert into an idle one");
                            state.curve.last_mut().expect("pushed above").restart = Some([from, to]);
                        }
                        None => state.lr *= 0.5,
                    }
                }
            }
            bar.set_message(format!("train {:.3e}  val {val_mse:.3e}  lr {:.1e}", mse_sum_shown(&state), state.lr));
        }
        bar.set_position(state.step as u64);
        if state.step.is_multiple_of(t.checkpoint_every) || state.step == t.steps {
            state.seconds += clock.elapsed().as_secs_f64();
            clock = Instant::now();
            let dir = staging(run, "checkpoint")?;
            save_module(&model, &dir, "model")?;
            save_module(&best, &dir, "best")?;
            save_record::<B, _>(optim.to_record(), &dir, "optim")?;
            write_json(&dir.join("state.json"), &state)?;
            publish(run, &dir, state.step)?;
        }
    }
    bar.finish();
    save_module(&best, run, FIELD_MODEL_FILE)?;
    Ok((best, state))
}

/// The optimiser state of a field run.
type AdamRecord<B> = <OptimizerAdaptor<Adam, FieldModel<B>, B> as Optimizer<FieldModel<B>, B>>::Record;

/// The Adam record of `model` after a restart of expert `to` from `from`: the moments of every
/// expert-indexed parameter copied from `from`'s block to `to`'s.
fn copy_moments_of<B: AutodiffBackend>(
    mut record: AdamRecord<B>,
    model: &FieldModel<B>,
    from: usize,
    to: usize,
) -> AdamRecord<B> {
    for (id, rank, block) in model.expert_params() {
        if let Some(r) = record.remove(&id) {
            record.insert(id, copy_moments::<B>(r, rank, block, from, to));
        }
    }
    record
}

/// An Adam record of a parameter of `rank` with its expert block `to` (blocks of `block` rows)
/// replaced by block `from`, in both moments.
fn copy_moments<B: AutodiffBackend>(
    record: AdaptorRecord<Adam, B>,
    rank: usize,
    block: usize,
    from: usize,
    to: usize,
) -> AdaptorRecord<Adam, B> {
    fn copy<B: AutodiffBackend, const D: usize>(
        record: AdaptorRecord<Adam, B>,
        block: usize,
        from: usize,
        to: usize,
    ) -> AdaptorRecord<Adam, B> {
        let mut state: AdamState<B::InnerBackend, D> = record.into_state();
        let rng = &mut Seeds::new(0).stream("unused: no jitter");
        let m = &mut state.momentum;
        m.moment_1 = copy_rows(m.moment_1.clone(), block, from, to, 0.0, rng);
        m.moment_2 = copy_rows(m.moment_2.clone(), block, from, to, 0.0, rng);
        AdaptorRecord::from_state(state)
    }
    match rank {
        1 => copy::<B, 1>(record, block, from, to),
        3 => copy::<B, 3>(record, block, from, to),
        4 => copy::<B, 4>(record, block, from, to),
        _ => unreachable!("expert parameters have rank 1, 3 or 4"),
    }
}

/// The training MSE of the newest curve point (for the progress message).
fn mse_sum_shown(state: &FieldTrainState) -> f64 {
    state.curve.last().map_or(f64::NAN, |p| p.train_mse)
}

/// Loads the best model of a field run folder with its config and training state.
pub fn load_field_model<B: Backend>(
    run: &Path,
    data: &FieldDir,
    device: &B::Device,
) -> Result<(FieldRunConfig, FieldModel<B>, FieldTrainState), TrainError> {
    let config: FieldRunConfig = read_json(&run.join(FIELD_CONFIG_FILE))?;
    let Some((_, checkpoint)) = latest(run)? else {
        return Err(Error::config("run", format!("{} has no finished training", run.display())).into());
    };
    let state: FieldTrainState = read_json(&checkpoint.join("state.json"))?;
    let (h, w) = data.train.grid();
    // The record overwrites the initial draw.
    let mut rng = Seeds::new(state.seed).stream("model-init");
    let fresh = config.model.init::<B>(data.train.channels(), [h, w], &mut rng, device)?;
    let model = load_module(fresh, run, FIELD_MODEL_FILE, device)?;
    Ok((config, model, state))
}
