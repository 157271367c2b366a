//! Pre-training and fine-tuning of the operator transformer ([`OperatorTransformer`]) on a mix
//! of PDE families: windows of `T` frames predict the next one, every family in every batch,
//! fields with fewer channels than the widest family padded with zeros (and masked out of the
//! loss). The loss is the mean squared error after dividing by each sample's normalisation scale
//! (so a family's weight does not depend on its units) plus the routers' balance losses; Adam
//! with a cosine learning-rate decay; the best model by validation loss is kept; checkpoints
//! resume. Fine-tuning (Wang et al. 2025) starts from a pre-trained model with its routers and
//! shared feature maps frozen and no balance loss.

use std::path::Path;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use mixer_core::{Error, Mode, Seeds, host};
use mixer_data::{FieldDir, FieldSet};
use mixer_experts::{OperatorTransformer, PotOutput, PotSettings};

use crate::checkpoint::{claim_run, latest, load_module, load_record, publish, save_module, save_record, staging};
use crate::config::{positive, positive_f};
use crate::progress::step_bar;
use crate::{TrainError, read_json, write_json};

/// One PDE family of a mix: its name and its dataset.
#[derive(Clone, Debug)]
pub struct PotFamily {
    /// Name used in tables and configs.
    pub name: String,
    /// Train / val / test runs.
    pub data: FieldDir,
}

/// Families on one grid, with the widest channel count.
#[derive(Clone, Debug)]
pub struct PotMix {
    families: Vec<PotFamily>,
    channels: usize,
    grid: [usize; 2],
}

/// A window: `T` frames of one run from `start`, and the frame after them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameWindow {
    /// Family index in the mix.
    pub family: usize,
    /// Run within the split.
    pub run: usize,
    /// First input frame.
    pub start: usize,
}

/// A batch of windows on tensors.
pub struct PotBatch<B: Backend> {
    /// Input frames `[B, T, C, H, W]` (zero-padded channels).
    pub frames: Tensor<B, 5>,
    /// Next frames `[B, C, H, W]`.
    pub target: Tensor<B, 4>,
    /// 1 on each sample's real channels, 0 on padding, `[B, C]`.
    pub mask: Tensor<B, 2>,
}

impl PotMix {
    /// Checks that there is at least one family, that names are unique and every dataset is valid
    /// ([`FieldDir::check`]) and that all share one grid.
    pub fn new(families: Vec<PotFamily>) -> Result<Self, TrainError> {
        let Some(first) = families.first() else {
            return Err(Error::config("families", "a mix needs at least one family").into());
        };
        let (h, w) = first.data.train.grid();
        for (i, f) in families.iter().enumerate() {
            f.data.check()?;
            if families[..i].iter().any(|g| g.name == f.name) {
                return Err(Error::config("families", format!("`{}` is named twice", f.name)).into());
            }
            if f.data.train.grid() != (h, w) {
                let what = format!("grid of family `{}` against `{}`", f.name, first.name);
                return Err(Error::shape(what, (h, w), f.data.train.grid()).into());
            }
        }
        let channels = families.iter().map(|f| f.data.train.channels()).max().unwrap_or(1);
        Ok(Self { families, channels, grid: [h, w] })
    }

    /// The mix with the channels of a model built for `channels` (a family with more is an
    /// error).
    pub fn with_channels(mut self, channels: usize) -> Result<Self, TrainError> {
        if let Some(f) = self.families.iter().find(|f| f.data.train.channels() > channels) {
            let reason = format!("`{}` has {} channels; the model has {channels}", f.name, f.data.train.channels());
            return Err(Error::config("channels", reason).into());
        }
        self.channels = channels;
        Ok(self)
    }

    /// The families, in order.
    pub fn families(&self) -> &[PotFamily] {
        &self.families
    }

    /// Family names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.families.iter().map(|f| f.name.as_str()).collect()
    }

    /// Channels of the widest family (the model's channels).
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// The grid `[H, W]`.
    pub fn grid(&self) -> [usize; 2] {
        self.grid
    }

    /// Index of family `name`; an unknown name lists the known ones.
    pub fn index_of(&self, name: &str) -> Result<usize, TrainError> {
        self.families.iter().position(|f| f.name == name).ok_or_else(|| {
            Error::config("family", format!("no family `{name}`; the mix has {}", self.names().join(", "))).into()
        })
    }

    /// The mix restricted to `names` (in the order given), or every family but `without`.
    pub fn select(&self, names: &[String], without: Option<&str>) -> Result<Self, TrainError> {
        if let Some(name) = without {
            self.index_of(name)?;
        }
        let chosen: Vec<PotFamily> = if names.is_empty() {
            self.families.clone()
        } else {
            names.iter().map(|n| self.index_of(n).map(|i| self.families[i].clone())).collect::<Result<_, _>>()?
        };
        let kept: Vec<PotFamily> = chosen.into_iter().filter(|f| Some(f.name.as_str()) != without).collect();
        let mut mix = Self::new(kept)?;
        mix.channels = self.channels;
        Ok(mix)
    }

    fn set(&self, family: usize, split: &str) -> &FieldSet {
        self.families[family].data.split(split).expect("a known split")
    }

    /// Every window of `frames` input frames in `split`, family by family; a family with too
    /// few frames is an error.
    pub fn windows(&self, split: &str, frames: usize) -> Result<Vec<FrameWindow>, TrainError> {
        let mut out = vec![];
        for (family, f) in self.families.iter().enumerate() {
            let set = self.set(family, split);
            if set.frames() <= frames {
                let reason = format!("`{}` has {} frames; {frames} input frames need one more", f.name, set.frames());
                return Err(Error::config("model.frames", reason).into());
            }
            for run in 0..set.runs() {
                out.extend((0..set.frames() - frames).map(|start| FrameWindow { family, run, start }));
            }
        }
        Ok(out)
    }

    /// `[T, C, H, W]` values of frames `from..to` of a run, channels padded to the mix's.
    fn frames_of(&self, split: &str, family: usize, run: usize, from: usize, to: usize, out: &mut Vec<f32>) {
        let set = self.set(family, split);
        let (h, w) = set.grid();
        for f in from..to {
            let field = set.fields.slice(ndarray::s![run, f, .., .., ..]);
            for c in 0..self.channels {
                if c < set.channels() {
                    out.extend(field.slice(ndarray::s![.., .., c]).iter().copied());
                } else {
                    out.extend(std::iter::repeat_n(0.0, h * w));
                }
            }
        }
    }

    /// The tensors of `windows` of `split` with `frames` input frames.
    pub fn batch<B: Backend>(
        &self,
        split: &str,
        windows: &[FrameWindow],
        frames: usize,
        device: &B::Device,
    ) -> PotBatch<B> {
        let ([h, w], c, b) = (self.grid, self.channels, windows.len());
        let (mut x, mut y, mut mask) = (vec![], vec![], vec![]);
        for win in windows {
            self.frames_of(split, win.family, win.run, win.start, win.start + frames, &mut x);
            self.frames_of(split, win.family, win.run, win.start + frames, win.start + frames + 1, &mut y);
            let real = self.set(win.family, split).channels();
            mask.extend((0..c).map(|ch| if ch < real { 1.0f32 } else { 0.0 }));
        }
        PotBatch {
            frames: Tensor::from_data(TensorData::new(x, [b, frames, c, h, w]), device),
            target: Tensor::from_data(TensorData::new(y, [b, c, h, w]), device),
            mask: Tensor::from_data(TensorData::new(mask, [b, c]), device),
        }
    }
}

/// `n` of `items` spread evenly (all when there are fewer).
pub fn spread<T: Copy>(items: &[T], n: usize) -> Vec<T> {
    if items.len() <= n {
        return items.to_vec();
    }
    (0..n).map(|i| items[i * items.len() / n]).collect()
}

/// The scale-free training MSE `[1]` of a forward pass: the squared error divided by each
/// sample's normalisation scale, averaged over the real channels and the grid.
pub fn scaled_mse<B: Backend>(out: &PotOutput<B>, target: Tensor<B, 4>, mask: Tensor<B, 2>) -> Tensor<B, 1> {
    let [b, c, _, _] = target.dims();
    let err = (out.prediction.clone() - target) / out.scale.clone().reshape([b, c, 1, 1]);
    let per_channel = err.powi_scalar(2).mean_dim(3).mean_dim(2).reshape([b, c]);
    (per_channel * mask.clone()).sum() / mask.sum()
}

/// Whether a run pre-trains or fine-tunes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// From scratch, routers trained with their balance losses.
    #[default]
    Pretrain,
    /// From a given model, routers and shared feature maps frozen, no balance loss.
    Finetune,
}

/// Settings of an operator run's training (`[train]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PotTrainSettings {
    /// Adam learning rate at step 0 (default 1e-3).
    pub lr: f64,
    /// Final learning rate over the initial one; cosine decay in between (default 0.1).
    pub final_lr_ratio: f64,
    /// Windows per step (default 16).
    pub batch: usize,
    /// Optimiser steps (default 1000).
    pub steps: usize,
    /// Steps between validation losses (default 100).
    pub eval_every: usize,
    /// Validation windows (spread evenly; default 64).
    pub val_windows: usize,
    /// Steps between checkpoints (default 250).
    pub checkpoint_every: usize,
}

impl Default for PotTrainSettings {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            final_lr_ratio: 0.1,
            batch: 16,
            steps: 1000,
            eval_every: 100,
            val_windows: 64,
            checkpoint_every: 250,
        }
    }
}

impl PotTrainSettings {
    /// Checks every field; the error names it.
    pub fn validate(&self) -> Result<(), TrainError> {
        for (field, v) in [
            ("batch", self.batch),
            ("steps", self.steps),
            ("eval_every", self.eval_every),
            ("val_windows", self.val_windows),
            ("checkpoint_every", self.checkpoint_every),
        ] {
            positive(field, v)?;
        }
        positive_f("lr", self.lr)?;
        if !(self.final_lr_ratio > 0.0 && self.final_lr_ratio <= 1.0) {
            return Err(Error::config("final_lr_ratio", format!("{} is not in (0, 1]", self.final_lr_ratio)).into());
        }
        Ok(())
    }

    /// The learning rate of `step`: cosine from `lr` to `lr * final_lr_ratio`.
    pub fn lr_at(&self, step: usize) -> f64 {
        let progress = step as f64 / self.steps.max(1) as f64;
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.lr * (self.final_lr_ratio + (1.0 - self.final_lr_ratio) * cosine)
    }
}

/// An operator run (`config.json` of its folder).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PotRunConfig {
    /// The model.
    pub model: PotSettings,
    /// Its training.
    #[serde(default)]
    pub train: PotTrainSettings,
    /// Pre-training or fine-tuning.
    #[serde(default)]
    pub stage: Stage,
    /// The families trained on, in order.
    pub families: Vec<String>,
}

/// One validation point of the training curve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PotCurvePoint {
    /// Steps done.
    pub step: usize,
    /// Mean training loss (scaled MSE) since the previous point.
    pub train_mse: f64,
    /// Mean weighted balance loss since the previous point.
    pub balance: f64,
    /// Validation scaled MSE.
    pub val_mse: f64,
    /// Learning rate in use.
    pub lr: f64,
}

/// Where an operator run stands (`state.json` of its checkpoints).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PotTrainState {
    /// Steps done.
    pub step: usize,
    /// Best validation loss so far.
    pub best_val: Option<f64>,
    /// Step of the best validation loss.
    pub best_step: usize,
    /// Training seconds (summed over resumes).
    pub seconds: f64,
    /// The training curve.
    pub curve: Vec<PotCurvePoint>,
    /// Trainable parameters.
    pub parameters: usize,
    /// Parameters one sample uses.
    pub active_parameters: usize,
    /// The training seed.
    pub seed: u64,
    /// Each block's router state (temperature), of the current and of the best model.
    pub routers: [Vec<Option<serde_json::Value>>; 2],
    /// Field channels of the model (the widest family of the mix it was built for).
    pub channels: usize,
    /// Grid `[H, W]` of the model.
    pub grid: [usize; 2],
}

/// The file of a run folder holding the config.
pub const POT_CONFIG_FILE: &str = "config.json";
/// The best model of a finished operator run (burn record, without extension).
pub const POT_MODEL_FILE: &str = "model";

/// Mean scaled MSE of `model` over `windows` of `split`, in batches.
pub fn pot_val_mse<B: Backend>(
    model: &OperatorTransformer<B>,
    mix: &PotMix,
    split: &str,
    windows: &[FrameWindow],
    batch: usize,
    device: &B::Device,
) -> Result<f64, TrainError> {
    let frames = model.settings().frames;
    let mut sum = 0.0;
    for chunk in windows.chunks(batch.max(1)) {
        let data = mix.batch::<B>(split, chunk, frames, device);
        let out = model.forward(data.frames, Mode::Eval, &mut Seeds::new(0).stream("val"))?;
        sum += host::to_vec(scaled_mse(&out, data.target, data.mask))[0] * chunk.len() as f64;
    }
    Ok(sum / windows.len().max(1) as f64)
}

/// Trains (or resumes) the operator run in `run` on `mix`, from `start` when given (fine-tuning)
/// or from a fresh draw; returns the best model (by validation loss) and the final state. A
/// finished run folder returns its model without training.
pub fn train_pot<B: AutodiffBackend>(
    config: &PotRunConfig,
    mix: &PotMix,
    run: &Path,
    seed: u64,
    start: Option<OperatorTransformer<B>>,
    show_progress: bool,
    device: &B::Device,
) -> Result<(OperatorTransformer<B>, PotTrainState), TrainError> {
    config.train.validate()?;
    let t = &config.train;
    let seeds = Seeds::new(seed);
    let fresh = match start {
        Some(model) => model,
        None => config.model.init::<B>(mix.channels(), mix.grid(), &mut seeds.stream("model-init"), device)?,
    };
    let fresh = if config.stage == Stage::Finetune { fresh.freeze_routing() } else { fresh };
    claim_run(run, POT_CONFIG_FILE, config, |mut c: PotRunConfig| {
        c.train.steps = t.steps;
        c
    })?;
    let frames = config.model.frames;
    let mut optim = AdamConfig::new().with_epsilon(1e-8).init::<B, OperatorTransformer<B>>();
    let (mut model, mut best, mut state) = match latest(run)? {
        Some((_, dir)) => {
            let state: PotTrainState = read_json(&dir.join("state.json"))?;
            let mut model = load_module(fresh.clone(), &dir, "model", device)?;
            let mut best = load_module(fresh, &dir, "best", device)?;
            model.load_router_states(&state.routers[0])?;
            best.load_router_states(&state.routers[1])?;
            optim = optim.load_record(load_record::<B, _>(&dir, "optim", device)?);
            (model, best, state)
        }
        None => {
            let state = PotTrainState {
                parameters: fresh.parameter_count(),
                active_parameters: fresh.active_parameter_count(),
                seed,
                channels: fresh.field_shape().0,
                grid: fresh.field_shape().1,
                ..Default::default()
            };
            (fresh.clone(), fresh, state)
        }
    };
    if state.step >= t.steps {
        save_module(&best, run, POT_MODEL_FILE)?;
        return Ok((best, state));
    }
    let windows = mix.windows("train", frames)?;
    let val_windows = spread(&mix.windows("val", frames)?, t.val_windows);
    let bar = step_bar(t.steps, state.step, show_progress);
    let (mut mse_sum, mut balance_sum, mut count) = (0.0, 0.0, 0usize);
    let mut clock = Instant::now();
    let mut order: Option<(usize, Vec<FrameWindow>)> = None;
    while state.step < t.steps {
        let step = state.step;
        let epoch_len = windows.len().div_ceil(t.batch);
        let (epoch, within) = (step / epoch_len, step % epoch_len);
        if order.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let mut shuffled = windows.clone();
            shuffled.shuffle(&mut seeds.stream(&format!("epoch-{epoch}")));
            order = Some((epoch, shuffled));
        }
        let (_, shuffled) = order.as_ref().expect("set above");
        let chosen = &shuffled[within * t.batch..((within + 1) * t.batch).min(shuffled.len())];
        let data = mix.batch::<B>("train", chosen, frames, device);
        let out = model.forward(data.frames, Mode::Train, &mut seeds.stream(&format!("route-{step}")))?;
        let mse = scaled_mse(&out, data.target, data.mask);
        let mse_value = host::to_vec(mse.clone())[0];
        if !mse_value.is_finite() {
            let reason = format!("the training loss became {mse_value} at step {step}; lower the learning rate");
            return Err(Error::config("train.lr", reason).into());
        }
        let loss = match (&out.aux_loss, config.stage) {
            (Some(aux), Stage::Pretrain) => {
                balance_sum += host::to_vec(aux.clone())[0];
                mse + aux.clone()
            }
            _ => mse,
        };
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(t.lr_at(step), model, grads);
        model.after_step(&out.routes);
        (mse_sum, count) = (mse_sum + mse_value, count + 1);
        state.step += 1;
        if state.step.is_multiple_of(t.eval_every) || state.step == t.steps {
            let val_mse = pot_val_mse(&model.valid(), mix, "val", &val_windows, t.batch, &device.clone())?;
            let n = count.max(1) as f64;
            state.curve.push(PotCurvePoint {
                step: state.step,
                train_mse: mse_sum / n,
                balance: balance_sum / n,
                val_mse,
                lr: t.lr_at(step),
            });
            (mse_sum, balance_sum, count) = (0.0, 0.0, 0);
            if state.best_val.is_none_or(|b| val_mse < b) {
                (state.best_val, state.best_step) = (Some(val_mse), state.step);
                best = model.clone();
            }
            bar.set_message(format!(
                "train {:.3e}  val {val_mse:.3e}",
                state.curve.last().map_or(f64::NAN, |p| p.train_mse)
            ));
        }
        bar.set_position(state.step as u64);
        if state.step.is_multiple_of(t.checkpoint_every) || state.step == t.steps {
            state.seconds += clock.elapsed().as_secs_f64();
            clock = Instant::now();
            state.routers = [model.router_states(), best.router_states()];
            let dir = staging(run, "checkpoint")?;
            save_module(&model, &dir, "model")?;
            save_module(&best, &dir, "best")?;
            save_record::<B, _>(optim.to_record(), &dir, "optim")?;
            write_json(&dir.join("state.json"), &state)?;
            publish(run, &dir, state.step)?;
        }
    }
    bar.finish_and_clear();
    save_module(&best, run, POT_MODEL_FILE)?;
    Ok((best, state))
}

/// Loads the best model of a finished operator run with its config and state; a folder that
/// holds no operator run, or a checkpoint of another architecture than its config's, is an
/// error.
pub fn load_pot_model<B: Backend>(
    run: &Path,
    device: &B::Device,
) -> Result<(PotRunConfig, OperatorTransformer<B>, PotTrainState), TrainError> {
    let config: PotRunConfig = read_json(&run.join(POT_CONFIG_FILE)).map_err(|_| {
        Error::config("run", format!("{} holds no operator run (no readable {POT_CONFIG_FILE})", run.display()))
    })?;
    let Some((_, checkpoint)) = latest(run)? else {
        return Err(Error::config("run", format!("{} has no finished training", run.display())).into());
    };
    let state: PotTrainState = read_json(&checkpoint.join("state.json"))?;
    let mut rng = Seeds::new(state.seed).stream("model-init");
    let fresh = config.model.init::<B>(state.channels, state.grid, &mut rng, device)?;
    let mut model = load_module(fresh, run, POT_MODEL_FILE, device)?;
    model.load_router_states(&state.routers[1])?;
    Ok((config, model, state))
}
