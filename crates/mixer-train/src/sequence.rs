//! MixER's meta-training loop for sequence experts (hier-shPLRNN, Brenner et al. 2024): the same
//! alternating proximal context / model blocks, nearest-context subsets and K-means +
//! least-squares gate refits as [`crate::Trainer`], with discrete-time experts trained under
//! generalized teacher forcing (Hess et al., 2023) instead of ODE rollouts.
//!
//! Each environment holds series `[trajs, steps, dim]`; its loss is the MSE of the forced
//! predictions of `x_1 .. x_{T-1}` (docs/method.md, "Sequence experts").

use std::collections::BTreeMap;
use std::time::Instant;

use burn::module::{AutodiffModule, Module};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::tensor::{Int, Tensor, TensorData, backend::AutodiffBackend, backend::Backend};
use ndarray::Array2;
use serde::{Deserialize, Serialize};
use tracing::{info, instrument};

use mixer_core::host::{tensor2, to_array2, to_vec};
use mixer_core::{ContextModel, Dataset, Error, GateUpdate, Mode, Router, RouterFeedback, RouterInput, Seeds};
use mixer_experts::{Forcing, HierShPlrnn, HierShPlrnnConfig};
use mixer_hyper::ContextTable;
use mixer_routers::{Gate, Refit, RouterConfig, RouterShape};

use crate::block_step::{Block, Blocks, step_block};
use crate::config::{positive, positive_f};
use crate::{AdaBelief, AdaBeliefConfig, PiecewiseLr, TrainError, flat_params, meta_loss, nearest_subset};

/// A sequence run: the mixture of hier-shPLRNN experts, its router and the training loop.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequenceRunConfig {
    /// The mixture.
    pub model: SequenceModelConfig,
    /// How environments are routed to experts (`kmeans-ls` for MixER).
    pub router: RouterConfig,
    /// The meta-training loop.
    pub train: SequenceTrainSettings,
    /// Fitting contexts of new series with the model frozen.
    #[serde(default)]
    pub adapt: crate::SequenceAdaptSettings,
}

/// Experts, context size and the hier-shPLRNN sizes (no context splitting: every expert reads
/// the whole context, as in the published time-series experiments).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequenceModelConfig {
    /// Number of experts `K`.
    pub experts: usize,
    /// Context size `d_xi`.
    pub context_dim: usize,
    /// Hidden size `L` of each shPLRNN.
    pub hidden: usize,
    /// Floor of the generated teacher-forcing weight `alpha` (MixER reference: 0).
    pub tf_alpha_min: f64,
}

/// The alternating proximal loop of MixER (Nzoyem et al. 2025) for sequences.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequenceTrainSettings {
    /// Outer steps.
    pub outer_steps: usize,
    /// Context-block steps per outer step.
    pub context_steps: usize,
    /// Model-block steps per outer step.
    pub model_steps: usize,
    /// Learning rate of the model block.
    pub lr_model: f64,
    /// Learning rate of the context block (constant).
    pub lr_context: f64,
    /// Factor applied to the model learning rate at each boundary of `lr_drop_at`.
    pub lr_drop_factor: f64,
    /// Boundaries as fractions of all model steps.
    pub lr_drop_at: Vec<f64>,
    /// Proximal coefficient `beta` of both blocks.
    pub proximal_beta: f64,
    /// Environments per meta-loss subset `C` (nearest to a random anchor).
    pub subset_size: usize,
    /// Weight environments by `softmax(L)` instead of averaging.
    pub self_reweight: bool,
    /// Gate refit after inner step `i` when `i % gate_update_every == 0`.
    pub gate_update_every: usize,
    /// Generalized teacher forcing over training.
    pub forcing: ForcingSchedule,
    /// Optimiser of both blocks.
    pub optimizer: AdaBeliefConfig,
}

/// Generalized teacher forcing annealed over the outer steps (Hess et al., 2023): the largest
/// data weight goes from `start` to `end`, geometrically when both are positive, linearly
/// otherwise; the latent is forced every `interval` steps.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForcingSchedule {
    /// Forcing interval `tau` (1: every step).
    pub interval: usize,
    /// Largest data weight at the first outer step, in `[0, 1]`.
    pub start: f64,
    /// Largest data weight at the last outer step, in `[0, 1]`.
    pub end: f64,
}

impl ForcingSchedule {
    /// The forcing of outer step `outer` of `outer_steps`.
    pub fn at(&self, outer: usize, outer_steps: usize) -> Forcing {
        let progress = if outer_steps > 1 { (outer as f64 / (outer_steps - 1) as f64).min(1.0) } else { 1.0 };
        let weight = if self.start > 0.0 && self.end > 0.0 {
            self.start * (self.end / self.start).powf(progress)
        } else {
            self.start + (self.end - self.start) * progress
        };
        Forcing { interval: self.interval, weight: weight.clamp(0.0, 1.0) }
    }

    /// The forcing after training (the last outer step's), used to score trained models.
    pub fn last(&self) -> Forcing {
        self.at(1, 1)
    }
}

impl SequenceRunConfig {
    /// Checks every field that does not depend on the data.
    pub fn validate(&self) -> Result<(), TrainError> {
        let m = &self.model;
        positive("model.experts", m.experts)?;
        self.expert_config().validate()?;
        let t = &self.train;
        positive("train.outer_steps", t.outer_steps)?;
        positive("train.context_steps", t.context_steps)?;
        positive("train.model_steps", t.model_steps)?;
        positive("train.subset_size", t.subset_size)?;
        positive("train.gate_update_every", t.gate_update_every)?;
        positive_f("train.lr_model", t.lr_model)?;
        positive_f("train.lr_context", t.lr_context)?;
        positive_f("train.lr_drop_factor", t.lr_drop_factor)?;
        if t.proximal_beta.is_nan() || t.proximal_beta < 0.0 {
            return Err(Error::config("train.proximal_beta", "must be >= 0").into());
        }
        for (field, w) in [("train.forcing.start", t.forcing.start), ("train.forcing.end", t.forcing.end)] {
            if !(0.0..=1.0).contains(&w) {
                return Err(Error::config(field, format!("must lie in [0, 1], got {w}")).into());
            }
        }
        positive("train.forcing.interval", t.forcing.interval)?;
        t.optimizer.validate()?;
        self.router.check(self.router_shape())?;
        Ok(())
    }

    /// Checks the config against the data: no more experts than environments, series of at
    /// least two points.
    pub fn check_against(&self, data: &Dataset) -> Result<(), TrainError> {
        self.validate()?;
        if self.model.experts > data.num_envs() {
            return Err(Error::config(
                "model.experts",
                format!("{} experts but only {} environments", self.model.experts, data.num_envs()),
            )
            .into());
        }
        if data.num_steps() < 2 {
            return Err(Error::config("data", "sequence experts need series of at least 2 points").into());
        }
        Ok(())
    }

    /// The sizes the router is built for: one unit per environment, routed by its context.
    pub fn router_shape(&self) -> RouterShape {
        RouterShape { experts: self.model.experts, features: self.model.context_dim }
    }

    /// The config of each expert for series of dimension `dim` (`dim` 1 here; set by the data).
    fn expert_config(&self) -> HierShPlrnnConfig {
        self.expert_config_for(1)
    }

    fn expert_config_for(&self, dim: usize) -> HierShPlrnnConfig {
        let m = &self.model;
        HierShPlrnnConfig { dim, hidden: m.hidden, context: m.context_dim, tf_alpha_min: m.tf_alpha_min }
    }
}

/// The shared block: experts and the gate.
#[derive(Module, Debug)]
pub struct SequenceTheta<B: Backend> {
    /// One hier-shPLRNN per expert.
    pub experts: Vec<HierShPlrnn<B>>,
    /// The router.
    pub gate: Gate<B>,
}

/// Contexts of the environments and the shared block.
#[derive(Module, Debug)]
pub struct SequenceModel<B: Backend> {
    /// Per-environment contexts `[envs, d_xi]`.
    pub contexts: ContextTable<B>,
    /// Shared parameters.
    pub theta: SequenceTheta<B>,
}

impl<B: Backend> SequenceModel<B> {
    /// Builds the model for `envs` environments of dimension `dim`: zero contexts, identical
    /// experts (one initialisation seed, MixER), the router from the `gate-init` stream.
    pub fn init(
        config: &SequenceRunConfig,
        envs: usize,
        dim: usize,
        seeds: &Seeds,
        device: &B::Device,
    ) -> Result<Self, TrainError> {
        let expert = config.expert_config_for(dim);
        let mut experts = Vec::with_capacity(config.model.experts);
        for _ in 0..config.model.experts {
            B::seed(device, seeds.stream_seed("init"));
            experts.push(expert.init(device)?);
        }
        let gate = config.router.build(config.router_shape(), &mut seeds.stream("gate-init"), device)?;
        let contexts = ContextTable::zeros(envs, config.model.context_dim, device);
        Ok(Self { contexts, theta: SequenceTheta { experts, gate } })
    }
}

/// The top-1 expert of each environment under the gate (evaluation mode, no noise).
pub fn sequence_assignment<B: Backend>(
    theta: &SequenceTheta<B>,
    contexts: Tensor<B, 2>,
) -> Result<Vec<usize>, TrainError> {
    let mut rng = Seeds::new(0).stream("assignment");
    let r = theta.gate.route(&RouterInput { features: contexts, mode: Mode::Eval }, &mut rng)?;
    Ok(r.top1().into_iter().map(|e| e.unwrap_or(0)).collect())
}

/// All series of `data` as one tensor `[envs * trajs, steps, dim]` (row `e * trajs + j`).
pub fn series_tensor<B: Backend>(data: &Dataset, device: &B::Device) -> Tensor<B, 3> {
    let (e, n, k, d) = data.x.dim();
    let flat: Vec<f64> = data.x.iter().copied().collect();
    Tensor::<B, 1>::from_data(TensorData::new(flat, [e * n * k * d]), device).reshape([e * n, k, d])
}

fn int_index<B: Backend>(ids: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    Tensor::from_data(TensorData::new(ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), [ids.len()]), device)
}

/// Per-environment forced-prediction MSE of `envs` (in that order), each environment run by
/// `expert_of[env]`: `series: [envs_all * trajs, steps, dim]`, `contexts: [envs_all, d_xi]` →
/// `[envs.len()]`; prediction `prediction = free` runs from `x_0` without forcing.
pub fn sequence_env_losses<B: Backend>(
    experts: &[HierShPlrnn<B>],
    expert_of: &[usize],
    contexts: Tensor<B, 2>,
    series: &Tensor<B, 3>,
    trajs: usize,
    envs: &[usize],
    forcing: &Forcing,
) -> Result<Tensor<B, 1>, TrainError> {
    let device = contexts.device();
    let [_, steps, dim] = series.dims();
    let mut parts: Vec<(Vec<usize>, Tensor<B, 1>)> = Vec::new();
    for (k, expert) in experts.iter().enumerate() {
        let mine: Vec<usize> = envs.iter().copied().filter(|&e| expert_of[e] == k).collect();
        if mine.is_empty() {
            continue;
        }
        let rows: Vec<usize> = mine.iter().flat_map(|&e| (0..trajs).map(move |j| e * trajs + j)).collect();
        let ctx_rows: Vec<usize> = mine.iter().flat_map(|&e| std::iter::repeat_n(e, trajs)).collect();
        let x = series.clone().select(0, int_index::<B>(&rows, &device));
        let ctx = contexts.clone().select(0, int_index::<B>(&ctx_rows, &device));
        let pred = expert.predict_forced(x.clone(), ctx, forcing)?;
        let target = x.slice([0..rows.len(), 1..steps, 0..dim]);
        let loss: Tensor<B, 1> =
            (pred - target).square().reshape([mine.len() as i32, -1]).mean_dim(1).reshape([mine.len()]);
        parts.push((mine, loss));
    }
    // back to the order of `envs`
    let order: Vec<usize> = parts.iter().flat_map(|(m, _)| m.iter().copied()).collect();
    let cat = Tensor::cat(parts.into_iter().map(|(_, l)| l).collect(), 0);
    let position: Vec<usize> = envs.iter().map(|e| order.iter().position(|o| o == e).unwrap_or_default()).collect();
    Ok(cat.select(0, int_index::<B>(&position, &device)))
}

/// Loss of every expert on every environment, `[envs, experts]`, no gradient (the gate
/// refit's expert-loss matrix); a non-finite loss becomes infinity.
pub fn sequence_expert_losses<B: Backend>(
    experts: &[HierShPlrnn<B>],
    contexts: Tensor<B, 2>,
    series: &Tensor<B, 3>,
    trajs: usize,
    forcing: &Forcing,
) -> Result<Array2<f64>, TrainError> {
    let envs = contexts.dims()[0];
    let all: Vec<usize> = (0..envs).collect();
    let mut out = Array2::from_elem((envs, experts.len()), f64::INFINITY);
    for k in 0..experts.len() {
        let losses =
            to_vec(sequence_env_losses(experts, &vec![k; envs], contexts.clone(), series, trajs, &all, forcing)?);
        for (e, v) in losses.into_iter().enumerate() {
            out[[e, k]] = if v.is_finite() { v } else { f64::INFINITY };
        }
    }
    Ok(out)
}

/// Per-environment MSE of free-running predictions from each series' first point (the routed
/// expert, no forcing), `[envs]`.
pub fn free_running_mse<B: Backend>(
    model: &SequenceModel<B>,
    data: &Dataset,
    device: &B::Device,
) -> Result<Vec<f64>, TrainError> {
    let contexts = model.contexts.contexts();
    let expert_of = sequence_assignment(&model.theta, contexts.clone())?;
    let series = series_tensor::<B>(data, device);
    let envs: Vec<usize> = (0..data.num_envs()).collect();
    let free = Forcing { interval: 1, weight: 0.0 };
    Ok(to_vec(sequence_env_losses(
        &model.theta.experts,
        &expert_of,
        contexts,
        &series,
        data.num_trajs(),
        &envs,
        &free,
    )?))
}

/// Losses and timing of one outer step of a sequence run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SequenceRecord {
    /// Outer step index.
    pub outer: usize,
    /// Mean meta loss over the context block.
    pub context_loss: f64,
    /// Mean meta loss over the model block.
    pub model_loss: f64,
    /// Data weight of the forcing at this step.
    pub forcing_weight: f64,
    /// Environments whose expert the gate refits of this step changed.
    pub rerouted: usize,
    /// Wall-clock seconds of the step.
    pub seconds: f64,
}

/// Progress and counters of a sequence run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SequenceState {
    /// One record per completed outer step.
    pub history: Vec<SequenceRecord>,
    /// Successful gate refits.
    pub gate_updates: usize,
    /// Skipped gate refits.
    pub skipped_gate_updates: usize,
    /// Skips by reason.
    pub skip_reasons: BTreeMap<String, usize>,
    /// Seconds spent training.
    pub train_seconds: f64,
}

/// A MixER meta-training run of sequence experts bound to its data and device.
pub struct SequenceTrainer<B: AutodiffBackend> {
    /// The run's configuration.
    pub config: SequenceRunConfig,
    /// Trainable parameters.
    pub model: SequenceModel<B>,
    /// Progress and counters.
    pub state: SequenceState,
    opt_ctx: OptimizerAdaptor<AdaBelief, ContextTable<B>, B>,
    opt_theta: OptimizerAdaptor<AdaBelief, SequenceTheta<B>, B>,
    seeds: Seeds,
    device: B::Device,
    series: Tensor<B, 3>,
    trajs: usize,
}

impl<B: AutodiffBackend> SequenceTrainer<B> {
    /// Starts a run on `data` (`[envs, trajs, steps, dim]`, already normalised as wanted).
    pub fn new(
        config: SequenceRunConfig,
        data: &Dataset,
        seeds: Seeds,
        device: &B::Device,
    ) -> Result<Self, TrainError> {
        config.check_against(data)?;
        let model = SequenceModel::init(&config, data.num_envs(), data.dim(), &seeds, device)?;
        Ok(Self {
            opt_ctx: config.train.optimizer.init::<B, ContextTable<B>>()?,
            opt_theta: config.train.optimizer.init::<B, SequenceTheta<B>>()?,
            config,
            model,
            state: SequenceState::default(),
            seeds,
            device: device.clone(),
            series: series_tensor::<B>(data, device),
            trajs: data.num_trajs(),
        })
    }

    /// Runs all outer steps; `progress` is called after each with the step's record.
    pub fn run(&mut self, mut progress: impl FnMut(&SequenceRecord)) -> Result<(), TrainError> {
        for outer in self.state.history.len()..self.config.train.outer_steps {
            let record = self.outer_step(outer)?;
            self.state.train_seconds += record.seconds;
            progress(&record);
            self.state.history.push(record);
        }
        info!(
            seconds = self.state.train_seconds,
            gate_updates = self.state.gate_updates,
            skipped = self.state.skipped_gate_updates,
            "sequence run finished"
        );
        Ok(())
    }

    #[instrument(skip_all, fields(outer))]
    fn outer_step(&mut self, outer: usize) -> Result<SequenceRecord, TrainError> {
        let start = Instant::now();
        let mut rng = self.seeds.stream(&format!("outer-{outer}"));
        let t = self.config.train.clone();
        let forcing = t.forcing.at(outer, t.outer_steps);
        let snap_ctx: Vec<_> = flat_params(&self.model.contexts).into_iter().map(|p| p.detach()).collect();
        let snap_theta: Vec<_> = flat_params(&self.model.theta).into_iter().map(|p| p.detach()).collect();
        let (mut context_loss, mut model_loss, mut rerouted) = (0.0, 0.0, 0);
        for i in 0..t.context_steps {
            context_loss +=
                self.inner_step(Block::Context, &snap_ctx, outer * t.context_steps + i, &forcing, &mut rng)?;
            rerouted += self.maybe_gate_update(i, outer, &forcing, &mut rng)?;
        }
        for i in 0..t.model_steps {
            model_loss += self.inner_step(Block::Model, &snap_theta, outer * t.model_steps + i, &forcing, &mut rng)?;
            rerouted += self.maybe_gate_update(i, outer, &forcing, &mut rng)?;
        }
        Ok(SequenceRecord {
            outer,
            context_loss: context_loss / t.context_steps as f64,
            model_loss: model_loss / t.model_steps as f64,
            forcing_weight: forcing.weight,
            rerouted,
            seconds: start.elapsed().as_secs_f64(),
        })
    }

    fn inner_step(
        &mut self,
        block: Block,
        snapshot: &[Tensor<B, 1>],
        step: usize,
        forcing: &Forcing,
        rng: &mut mixer_core::Rng,
    ) -> Result<f64, TrainError> {
        let t = &self.config.train;
        let (frozen, contexts) = match block {
            Block::Context => (Some(self.model.theta.clone().no_grad()), self.model.contexts.contexts()),
            Block::Model => (None, self.model.contexts.contexts().detach()),
        };
        let theta = frozen.as_ref().unwrap_or(&self.model.theta);
        let routing = theta.gate.route(&RouterInput { features: contexts.clone(), mode: Mode::Train }, rng)?;
        let expert_of: Vec<usize> = routing.top1().into_iter().map(|e| e.unwrap_or(0)).collect();
        let subset = nearest_subset(&to_array2(contexts.clone().detach()), t.subset_size, rng);
        let losses =
            sequence_env_losses(&theta.experts, &expert_of, contexts, &self.series, self.trajs, &subset, forcing)?;
        let loss = meta_loss(losses, t.self_reweight);
        let lr = match block {
            Block::Context => t.lr_context,
            Block::Model => {
                PiecewiseLr { base: t.lr_model, factor: t.lr_drop_factor, boundaries: t.lr_drop_at.clone() }
                    .at(step, t.outer_steps * t.model_steps)
            }
        };
        let blocks = Blocks {
            contexts: (&mut self.model.contexts, &mut self.opt_ctx),
            theta: (&mut self.model.theta, &mut self.opt_theta),
        };
        let what = || format!("sequence training loss on environments {subset:?}");
        let value = step_block(block, loss, snapshot, t.proximal_beta, lr, blocks, what, step)?;
        if block == Block::Model {
            self.model.theta.gate.after_step(&routing.load(self.config.model.experts));
        }
        Ok(value)
    }

    fn maybe_gate_update(
        &mut self,
        inner: usize,
        outer: usize,
        forcing: &Forcing,
        rng: &mut mixer_core::Rng,
    ) -> Result<usize, TrainError> {
        let due = inner.is_multiple_of(self.config.train.gate_update_every) && self.config.model.experts > 1;
        if !due || !self.model.theta.gate.wants_feedback() {
            return Ok(0);
        }
        let valid = self.model.valid();
        let contexts = valid.contexts.contexts();
        let series = self.series.clone().inner();
        let expert_losses =
            sequence_expert_losses(&valid.theta.experts, contexts.clone(), &series, self.trajs, forcing)?;
        let feedback = RouterFeedback { features: to_array2(contexts), expert_losses, step: outer };
        let gate = &mut self.model.theta.gate;
        match gate.refit(&feedback, rng)? {
            GateUpdate::Updated => {
                self.state.gate_updates += 1;
                Ok(gate.last_rerouted())
            }
            GateUpdate::Skipped(reason) => {
                self.state.skipped_gate_updates += 1;
                *self.state.skip_reasons.entry(reason).or_default() += 1;
                Ok(0)
            }
            GateUpdate::NotApplicable => Ok(0),
        }
    }

    /// The experts and the gate, on the training backend.
    pub fn theta(&self) -> &SequenceTheta<B> {
        &self.model.theta
    }

    /// The trained model on the inference backend.
    pub fn valid(&self) -> SequenceModel<B::InnerBackend> {
        self.model.valid()
    }

    /// The device the run trains on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }
}

/// Contexts as host rows `[envs][d_xi]`.
pub fn context_matrix<B: Backend>(model: &SequenceModel<B>) -> Array2<f64> {
    to_array2(model.contexts.contexts())
}

/// Builds contexts from host rows (for tests and analysis), `[envs, d_xi]`.
pub fn contexts_from_rows<B: Backend>(rows: &Array2<f64>, device: &B::Device) -> Tensor<B, 2> {
    let (n, d) = rows.dim();
    tensor2(&rows.iter().copied().collect::<Vec<_>>(), [n, d], device)
}

/// K-means of contexts `[envs, d_xi]` into `clusters` groups with MixER's mean-absolute distance
/// (k-means++ start from `rng`, at most 100 Lloyd iterations, empty clusters re-seeded): the
/// cluster of each environment.
pub fn context_clusters(
    contexts: &Array2<f64>,
    clusters: usize,
    rng: &mut mixer_core::Rng,
) -> Result<Vec<usize>, TrainError> {
    if clusters == 0 || clusters > contexts.nrows() {
        return Err(Error::config(
            "clusters",
            format!("must lie in 1..={} (the number of contexts), got {clusters}", contexts.nrows()),
        )
        .into());
    }
    let init = mixer_routers::kmeans::init_kmeans_pp(contexts, clusters, rng);
    match mixer_routers::kmeans::lloyd_l1(contexts, init, 100, 1e-9, true) {
        Ok(fit) => Ok(fit.labels),
        Err(failure) => Err(Error::config("clusters", format!("k-means failed: {failure:?}")).into()),
    }
}
