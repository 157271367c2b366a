//! The alternating proximal meta-training loop of the MixER paper, with gate refits, checkpoints,
//! resume and a progress bar.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{AutodiffModule, Module};
use burn::optim::{Optimizer, adaptor::OptimizerAdaptor};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData, backend::AutodiffBackend, backend::Backend};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use tracing::{info, instrument, warn};

use mixer_core::host::to_array2;
use mixer_core::{ContextModel, Dataset, Error, GateUpdate, Integrator, Mode, RouterFeedback, Routing, Seeds};
use mixer_experts::ExpertError;
use mixer_hyper::ContextTable;
use mixer_routers::Refit;

use crate::batch::{Batch, Window};
use crate::block_step::{Block, Blocks, step_block};
use crate::checkpoint::{self, load_record, save_record};
use crate::expert_losses::expert_loss_matrix;
use crate::loss::{aux_total, env_losses, meta_loss};
use crate::model::{MixerModel, Theta, route};
use crate::reseat::reseat_moves;
use crate::{
    AdaBelief, PiecewiseLr, Reseat, RunConfig, SubsetRule, TrainError, flat_params, nearest_subset, per_expert_subsets,
};

/// Losses and timing of one outer step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OuterRecord {
    /// Outer step index.
    pub outer: usize,
    /// Mean meta loss over the context block.
    pub context_loss: f64,
    /// Mean meta loss over the model block.
    pub model_loss: f64,
    /// Full-horizon training loss at a checkpoint, if evaluated.
    pub validation: Option<f64>,
    /// Wall-clock seconds of the step.
    pub seconds: f64,
    /// Environments whose expert a gate refit of this step changed, summed over the refits.
    #[serde(default)]
    pub rerouted: usize,
    /// Environments moved to another expert's mean context after this step (`train.reseat`).
    #[serde(default)]
    pub reseated: usize,
}

/// Everything about a run's progress that a resume needs besides parameters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Outer steps completed.
    pub outer_done: usize,
    /// One record per completed outer step.
    pub history: Vec<OuterRecord>,
    /// Successful gate refits.
    pub gate_updates: usize,
    /// Skipped gate refits.
    pub skipped_gate_updates: usize,
    /// Skips by reason.
    pub skip_reasons: BTreeMap<String, usize>,
    /// Best validation loss and the outer step it was reached at.
    pub best: Option<(usize, f64)>,
    /// Seconds spent training (summed over resumed sessions).
    pub train_seconds: f64,
    /// Environment rollouts left out of a training step because they diverged.
    #[serde(default)]
    pub diverged_rollouts: usize,
    /// Units (environments) the router routed over the model steps, one per unit and step.
    #[serde(default)]
    pub routed_units: usize,
    /// Of those, the ones it sent to no routed expert (beyond every chosen expert's capacity,
    /// or picked by no expert): they move by the shared experts alone, or not at all.
    #[serde(default)]
    pub dropped_units: usize,
}

impl TrainState {
    /// Counts the units of one model step's routing, and those it dropped.
    pub fn count_routing<B: Backend>(&mut self, routing: &Routing<B>) {
        let k = routing.k.max(1);
        self.routed_units += routing.num_units();
        self.dropped_units += routing.indices.chunks(k).filter(|slots| slots.iter().all(Option::is_none)).count();
    }

    /// Share of the routed units that were dropped; `None` before any model step.
    pub fn dropped_share(&self) -> Option<f64> {
        (self.routed_units > 0).then(|| self.dropped_units as f64 / self.routed_units as f64)
    }
}

/// A meta-training run bound to its data, device and run folder.
pub struct Trainer<B: AutodiffBackend> {
    /// The run's configuration.
    pub config: RunConfig,
    /// Trainable parameters.
    pub model: MixerModel<B>,
    /// Progress and counters.
    pub state: TrainState,
    opt_ctx: OptimizerAdaptor<AdaBelief, ContextTable<B>, B>,
    opt_theta: OptimizerAdaptor<AdaBelief, Theta<B>, B>,
    integrator: Box<dyn Integrator<B>>,
    eval_integrator: Box<dyn Integrator<B::InnerBackend>>,
    seeds: Seeds,
    device: B::Device,
    train: Dataset,
    /// Loss weight of each training environment ([`crate::LossScale`]).
    weights: Vec<f64>,
    run_dir: PathBuf,
    show_progress: bool,
}

impl<B: AutodiffBackend> Trainer<B> {
    /// Starts a run in `run_dir`, or resumes it from its latest checkpoint when `resume` is set
    /// and one exists. `train` must already be subsampled as the config asks.
    pub fn new(
        config: RunConfig,
        train: Dataset,
        seeds: Seeds,
        run_dir: &Path,
        resume: bool,
        device: &B::Device,
    ) -> Result<Self, TrainError> {
        config.check_against(train.num_envs())?;
        let model = MixerModel::init(&config, train.num_envs(), train.dim(), &seeds, device)?;
        let opt_ctx = config.train.optimizer.init::<B, ContextTable<B>>()?;
        let opt_theta = config.train.optimizer.init::<B, Theta<B>>()?;
        let integrator = config.train.solver.build::<B>().map_err(|e| Error::config("train.solver", e.to_string()))?;
        let eval_integrator =
            config.train.solver.build::<B::InnerBackend>().map_err(|e| Error::config("train.solver", e.to_string()))?;
        let weights = config.train.loss_scale.env_weights(&train);
        let mut trainer = Self {
            config,
            model,
            state: TrainState::default(),
            opt_ctx,
            opt_theta,
            integrator,
            eval_integrator,
            seeds,
            device: device.clone(),
            train,
            weights,
            run_dir: run_dir.to_path_buf(),
            show_progress: true,
        };
        std::fs::create_dir_all(run_dir).map_err(|e| Error::io(run_dir, e))?;
        let saved = run_dir.join("config.json");
        if resume && let Some((latest, dir)) = checkpoint::latest(run_dir)? {
            let before: RunConfig = crate::read_json(&saved)?;
            if before != trainer.config {
                return Err(Error::config(
                    "config",
                    format!("{} was started with a different config; use a new run folder", run_dir.display()),
                )
                .into());
            }
            trainer.load(&dir)?;
            info!(outer_done = latest.outer_done, "resumed from checkpoint");
        } else {
            crate::write_json(&saved, &trainer.config)?;
            crate::write_json(&run_dir.join("seed.json"), &trainer.seeds)?;
        }
        Ok(trainer)
    }

    /// Shows or hides the progress bar (shown by default when stderr is a terminal).
    pub fn with_progress(mut self, show: bool) -> Self {
        self.show_progress = show;
        self
    }

    /// Runs the remaining outer steps, checkpointing as configured.
    pub fn run(&mut self) -> Result<(), TrainError> {
        self.run_until(self.config.train.outer_steps)
    }

    /// Runs outer steps until `stop` of them are done (at most the configured number), then
    /// checkpoints; a later [`Trainer::new`] with `resume` continues from there.
    pub fn run_until(&mut self, stop: usize) -> Result<(), TrainError> {
        let total = self.config.train.outer_steps;
        let stop = stop.min(total);
        let bar = if self.show_progress { ProgressBar::new(total as u64) } else { ProgressBar::hidden() };
        bar.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} outer steps  {msg}")
                .expect("static template")
                .progress_chars("=> "),
        );
        bar.set_position(self.state.outer_done as u64);
        while self.state.outer_done < stop {
            let outer = self.state.outer_done;
            let record = self.outer_step(outer)?;
            self.state.train_seconds += record.seconds;
            self.state.history.push(record.clone());
            self.state.outer_done += 1;
            let done = self.state.outer_done;
            if done.is_multiple_of(self.config.train.checkpoint_every) || done == total || done == stop {
                self.checkpoint()?;
            }
            bar.set_position(self.state.outer_done as u64);
            bar.set_message(format!(
                "loss {:.3e}  experts {}  rerouted {}  reseated {}  gate {}/{} skipped",
                record.model_loss,
                self.routing_summary()?,
                record.rerouted,
                record.reseated,
                self.state.skipped_gate_updates,
                self.state.gate_updates + self.state.skipped_gate_updates
            ));
        }
        bar.finish();
        Ok(())
    }

    #[instrument(skip_all, fields(outer))]
    fn outer_step(&mut self, outer: usize) -> Result<OuterRecord, TrainError> {
        let start = Instant::now();
        let mut rng = self.seeds.stream(&format!("outer-{outer}"));
        let snap_ctx: Vec<_> = flat_params(&self.model.contexts).into_iter().map(|t| t.detach()).collect();
        let snap_theta: Vec<_> = flat_params(&self.model.theta).into_iter().map(|t| t.detach()).collect();
        let t = self.config.train.clone();
        let (mut context_loss, mut rerouted) = (0.0, 0);
        for i in 0..t.context_steps {
            context_loss += self.inner_step(Block::Context, &snap_ctx, outer, outer * t.context_steps + i, &mut rng)?;
            rerouted += self.maybe_gate_update(i, outer, &mut rng)?;
        }
        let mut model_loss = 0.0;
        for i in 0..t.model_steps {
            model_loss += self.inner_step(Block::Model, &snap_theta, outer, outer * t.model_steps + i, &mut rng)?;
            rerouted += self.maybe_gate_update(i, outer, &mut rng)?;
        }
        let reseated = match t.reseat {
            Some(r) if (outer + 1).is_multiple_of(r.every) && self.config.model.experts > 1 => self.reseat(&r)?,
            _ => 0,
        };
        Ok(OuterRecord {
            outer,
            context_loss: context_loss / t.context_steps as f64,
            model_loss: model_loss / t.model_steps as f64,
            validation: None,
            seconds: start.elapsed().as_secs_f64(),
            rerouted,
            reseated,
        })
    }

    fn inner_step(
        &mut self,
        block: Block,
        snapshot: &[Tensor<B, 1>],
        outer: usize,
        step: usize,
        rng: &mut mixer_core::Rng,
    ) -> Result<f64, TrainError> {
        let t = &self.config.train;
        // The block not being stepped is read frozen, so the backward pass skips it.
        let (frozen_theta, contexts) = match block {
            Block::Context => (Some(self.model.theta.clone().no_grad()), self.model.contexts.contexts()),
            Block::Model => (None, self.model.contexts.contexts().detach()),
        };
        let theta = frozen_theta.as_ref().unwrap_or(&self.model.theta);
        let routing = route(theta, contexts.clone(), Mode::Train, rng)?;
        let host_contexts = to_array2(contexts.clone().detach());
        let mut parts = match t.subsets {
            SubsetRule::Nearest => vec![nearest_subset(&host_contexts, t.subset_size, rng)],
            SubsetRule::PerExpert => {
                per_expert_subsets(&host_contexts, &routing.top1(), self.config.model.experts, t.subset_size, rng)
            }
        };
        let steps = self.train.num_steps();
        let windows = match t.segments.and_then(|s| s.points_at(outer, t.outer_steps, steps)) {
            Some(points) => Window::segments(steps, points),
            None => vec![Window::random(steps, t.window_fraction, rng)],
        };
        // An environment whose rollout diverges (early, a context routed to an expert that does
        // not fit it yet) is dropped from this step and counted, so that the others still train
        // and the next gate refit (which scores it as the worst loss) can move it.
        let (mut losses, subset) = loop {
            let subset = parts.concat();
            if subset.is_empty() {
                return Err(Error::NonFiniteData {
                    what: "training loss: the rollouts of every environment of the step diverged".into(),
                    index: step,
                }
                .into());
            }
            let batch = Batch::<B>::over_windows(&self.train, &subset, &windows, None, &self.device)
                .weighted(&self.weights)
                .pooled(t.context_pool, rng);
            let diverged: Vec<usize> =
                match env_losses(theta, self.integrator.as_ref(), &routing, contexts.clone(), &batch) {
                    Ok(losses) => {
                        let values = mixer_core::host::to_vec(losses.clone().detach());
                        let diverged: Vec<usize> =
                            subset.iter().zip(&values).filter(|(_, l)| !l.is_finite()).map(|(&e, _)| e).collect();
                        if diverged.is_empty() {
                            break (losses, subset);
                        }
                        diverged
                    }
                    // a solver that stops on a non-finite state names the expert's environments
                    Err(TrainError::Experts(ExpertError::Rollout {
                        envs,
                        source: Error::NonFiniteState { .. },
                        ..
                    })) if envs.iter().any(|e| subset.contains(e)) => envs,
                    Err(e) => return Err(name_envs(e, &subset)),
                };
            warn!(step, envs = ?diverged, "rollouts diverged; environments left out of this step");
            self.state.diverged_rollouts += diverged.len();
            for p in &mut parts {
                p.retain(|e| !diverged.contains(e));
            }
            parts.retain(|p| !p.is_empty());
        };
        if t.context_l1 > 0.0 {
            let idx = Tensor::<B, 1, Int>::from_data(
                TensorData::new(subset.iter().map(|&e| e as i64).collect::<Vec<_>>(), [subset.len()]),
                &self.device,
            );
            let l1 = contexts.select(0, idx).abs().mean_dim(1).reshape([-1]);
            losses = losses + l1.mul_scalar(t.context_l1);
        }
        let loss = split_meta_loss(losses, &parts, t.self_reweight) + aux_total(&routing, &self.device);
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
        let what = || format!("training loss on environments {subset:?}");
        let value = step_block(block, loss, snapshot, t.proximal_beta, lr, blocks, what, step)?;
        if block == Block::Model {
            // schedules and bias balancing advance once per model step
            self.model.theta.gate.after_step(&routing.load(self.config.model.experts));
            self.state.count_routing(&routing);
        }
        Ok(value)
    }

    /// Refits the gate after inner step `inner` when due; returns how many environments changed
    /// expert.
    fn maybe_gate_update(
        &mut self,
        inner: usize,
        outer: usize,
        rng: &mut mixer_core::Rng,
    ) -> Result<usize, TrainError> {
        let due = inner.is_multiple_of(self.config.train.gate_update_every) && self.config.model.experts > 1;
        if !due || !self.model.theta.gate.wants_feedback() {
            return Ok(0);
        }
        let valid = self.model.valid();
        let contexts = valid.contexts.contexts();
        let mut expert_losses = expert_loss_matrix(
            &valid.theta.moe,
            self.eval_integrator.as_ref(),
            contexts.clone(),
            &self.train,
            self.config.train.gate_loss_trajs,
        )?;
        for (mut row, w) in expert_losses.rows_mut().into_iter().zip(&self.weights) {
            row *= *w;
        }
        let feedback = RouterFeedback { features: to_array2(contexts), expert_losses, step: outer };
        let gate = &mut self.model.theta.gate;
        let mut rerouted = 0;
        match gate.refit(&feedback, rng)? {
            GateUpdate::Updated => {
                self.state.gate_updates += 1;
                rerouted = gate.last_rerouted();
            }
            GateUpdate::Skipped(reason) => {
                self.state.skipped_gate_updates += 1;
                *self.state.skip_reasons.entry(reason).or_default() += 1;
            }
            GateUpdate::NotApplicable => {}
        }
        Ok(rerouted)
    }

    /// Moves the environments that [`reseat_moves`] names to their new contexts (the context
    /// table keeps its parameter id, so its optimiser state stays attached); returns how many.
    fn reseat(&mut self, reseat: &Reseat) -> Result<usize, TrainError> {
        let valid = self.model.valid();
        let mut rng = self.seeds.stream(&format!("reseat-{}", self.state.outer_done));
        let moves = reseat_moves(
            &valid.theta,
            self.eval_integrator.as_ref(),
            valid.contexts.contexts(),
            &self.train,
            self.config.train.gate_loss_trajs,
            reseat,
            &mut rng,
        )?;
        if moves.is_empty() {
            return Ok(0);
        }
        let mut values = to_array2(self.model.contexts.contexts().detach());
        for (e, row) in &moves {
            values.row_mut(*e).assign(&ndarray::ArrayView1::from(row.as_slice()));
        }
        let (rows, d) = values.dim();
        let flat: Vec<f64> = values.iter().copied().collect();
        let table = mixer_core::host::tensor2::<B>(&flat, [rows, d], &self.device).require_grad();
        self.model.contexts.table = self.model.contexts.table.clone().map(|_| table);
        info!(moved = moves.len(), "environments re-seated");
        Ok(moves.len())
    }

    /// Environments per expert under the current gate, e.g. `[16 16 15 ...]`.
    fn routing_summary(&self) -> Result<String, TrainError> {
        let a = crate::model::assignment(&self.model.theta, self.model.contexts.contexts())?;
        let mut load = vec![0usize; self.config.model.experts];
        for e in a {
            load[e] += 1;
        }
        Ok(format!("{load:?}"))
    }

    /// Mean full-horizon loss over all training environments (no windows, weighted as
    /// `loss_scale` says), with the inference backend.
    pub fn validation_loss(&self) -> Result<f64, TrainError> {
        let valid = self.model.valid();
        let contexts = valid.contexts.contexts();
        let mut rng = self.seeds.stream("validation");
        let routing = route(&valid.theta, contexts.clone(), Mode::Eval, &mut rng)?;
        let envs: Vec<usize> = (0..self.train.num_envs()).collect();
        let device = contexts.device();
        let batch =
            Batch::new(&self.train, &envs, Window::full(self.train.num_steps()), None, &device).weighted(&self.weights);
        let l = env_losses(&valid.theta, self.eval_integrator.as_ref(), &routing, contexts, &batch)?;
        Ok(l.mean().into_scalar().elem())
    }

    fn checkpoint(&mut self) -> Result<(), TrainError> {
        let validation = match self.validation_loss() {
            Ok(v) => Some(v),
            Err(e) => {
                warn!(error = %e, "validation rollout failed; checkpoint kept without a validation loss");
                None
            }
        };
        if let Some(last) = self.state.history.last_mut() {
            last.validation = validation;
        }
        let improved = match (validation, self.state.best) {
            (Some(v), Some((_, b))) => v < b,
            (Some(_), None) => true,
            _ => false,
        };
        if improved {
            self.state.best = validation.map(|v| (self.state.outer_done, v));
        }
        let dir = checkpoint::staging(&self.run_dir, "checkpoint")?;
        self.model.save_checkpoint(&dir)?;
        save_record::<B, _>(self.opt_ctx.to_record(), &dir, "optimizer-context")?;
        save_record::<B, _>(self.opt_theta.to_record(), &dir, "optimizer-model")?;
        crate::write_json(&dir.join("state.json"), &self.state)?;
        let published = checkpoint::publish(&self.run_dir, &dir, self.state.outer_done)?;
        if improved {
            checkpoint::publish_best(&self.run_dir, &published)?;
        }
        Ok(())
    }

    fn load(&mut self, dir: &Path) -> Result<(), TrainError> {
        self.model = self.model.clone().load_checkpoint(dir, &self.device)?;
        let ctx = load_record::<B, _>(dir, "optimizer-context", &self.device)?;
        self.opt_ctx = self.opt_ctx.clone().load_record(ctx);
        let theta = load_record::<B, _>(dir, "optimizer-model", &self.device)?;
        self.opt_theta = self.opt_theta.clone().load_record(theta);
        self.state = crate::read_json(&dir.join("state.json"))?;
        Ok(())
    }

    /// The run folder.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }
}

/// The sum of the meta losses of consecutive parts of `losses` (one part per subset, in order).
fn split_meta_loss<B: Backend>(losses: Tensor<B, 1>, parts: &[Vec<usize>], self_reweight: bool) -> Tensor<B, 1> {
    let mut start = 0;
    let mut total: Option<Tensor<B, 1>> = None;
    for part in parts {
        let l = meta_loss(losses.clone().narrow(0, start, part.len()), self_reweight);
        start += part.len();
        total = Some(match total {
            Some(acc) => acc + l,
            None => l,
        });
    }
    total.unwrap_or_else(|| losses.sum().mul_scalar(0.0))
}

/// Adds the environments of a failing batch to a solver error.
fn name_envs(e: TrainError, envs: &[usize]) -> TrainError {
    match e {
        TrainError::Core(
            inner @ (Error::MaxStepsReached { .. } | Error::NonFiniteState { .. } | Error::StepSizeUnderflow { .. }),
        ) => TrainError::Rollout { envs: envs.to_vec(), source: Box::new(inner.into()) },
        other => other,
    }
}
