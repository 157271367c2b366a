//! The continual trainer of model-based control: tasks arrive one after another, and while it
//! learns task `t` the trainer sees only task `t`'s experience (HyperCRL, Huang, Xie, Gilitschenski,
//! Shkurti et al., "Continual Model-Based Reinforcement Learning with Hypernetworks", ICRA 2021;
//! hypernetworks for continual learning after von Oswald et al., ICLR 2020; EWC after Kirkpatrick
//! et al., PNAS 2017).
//!
//! Per task: a new task embedding drawn from N(0, 1); random-action episodes fill the task's FIFO
//! buffer; then `planned_episodes` times {train the dynamics model on the buffer, collect an
//! episode by CEM planning through it}, and a last training phase. After each task the model is
//! scored on every task seen so far: the return of CEM planning through the learned model with
//! that task's embedding (the reward matrix), and the one-step MSE on held-out random-action
//! transitions of the true system (the prediction matrix, which isolates forgetting from the
//! planner). With a run folder, a checkpoint is written at every task boundary and a run resumes
//! from it to the same digits.

use std::path::Path;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};
use tracing::info;

use mixer_core::{Error, Seeds};
use mixer_hyper::{Activation, Conditioning, DeltaNormaliser, NormaliserTensors, TaskDynamics, TaskDynamicsConfig};

use crate::checkpoint::{latest, load_module, publish, save_module, staging};
use crate::continual_data::{
    ContinualTask, TransitionBuffer, check_sequence, random_action, random_transitions, run_episode,
};
use crate::continual_objective::{
    EwcAnchor, Objective, anchor_tensors, ewc_anchor, heldout_mse, normal_draws, planned_episode, snapshot_outputs,
};
use crate::{CemSettings, TrainError, read_json, write_json};

/// A continual-learning method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContinualMethod {
    /// Hypernetwork-generated weights with HyperCRL's output regulariser.
    Hypercrl,
    /// One MLP trained task after task, nothing kept (the lower bound).
    Finetune,
    /// One MLP with a task-embedding input, trained on every task's buffer (the upper bound).
    Multitask,
    /// Fine-tuning plus replay of a few stored transitions of each past task.
    Coreset,
    /// Fine-tuning plus elastic weight consolidation (diagonal Fisher).
    Ewc,
}

impl ContinualMethod {
    /// Every method, in report order.
    pub const ALL: [ContinualMethod; 5] = [Self::Hypercrl, Self::Finetune, Self::Multitask, Self::Coreset, Self::Ewc];

    /// The method's name in experiment files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hypercrl => "hypercrl",
            Self::Finetune => "finetune",
            Self::Multitask => "multitask",
            Self::Coreset => "coreset",
            Self::Ewc => "ewc",
        }
    }
}

impl std::str::FromStr for ContinualMethod {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| {
            let known: Vec<&str> = Self::ALL.iter().map(|m| m.name()).collect();
            format!("unknown continual method `{s}`; known: {}", known.join(", "))
        })
    }
}

/// Sizes of the dynamics model of every method and of HyperCRL's hypernetwork.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamicsShape {
    /// Hidden widths of the dynamics MLP (HyperCRL: `[200, 200]`).
    pub hidden: Vec<usize>,
    /// Its nonlinearity.
    pub activation: Activation,
    /// Task embedding size (HyperCRL: 10).
    pub embedding: usize,
    /// Hidden widths of the hypernetwork (HyperCRL: `[50, 50]`).
    pub hypernet_hidden: Vec<usize>,
    /// Weights per generated chunk; absent: the full hypernetwork (one chunk).
    #[serde(default)]
    pub chunk_size: Option<usize>,
    /// Chunk embedding size (HyperCRL: 20 to 40).
    pub chunk_embedding: usize,
}

/// Settings of one continual run (`[run]` of an experiment file, with `method` per run).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContinualSettings {
    /// The method.
    pub method: ContinualMethod,
    /// The dynamics model.
    pub model: DynamicsShape,
    /// Weight of HyperCRL's output regulariser (HyperCRL: 0.05).
    pub beta: f64,
    /// Whether past task embeddings keep training through the regulariser (default frozen).
    #[serde(default)]
    pub plastic_embeddings: bool,
    /// Adam learning rate (HyperCRL: 1e-4).
    pub lr: f64,
    /// Per-parameter gradient-norm clip (HyperCRL: 5); absent: none.
    #[serde(default)]
    pub grad_clip: Option<f64>,
    /// Transitions per training batch.
    pub batch: usize,
    /// Transitions each task's FIFO buffer holds.
    pub capacity: usize,
    /// Random-action episodes that start each task.
    pub random_episodes: usize,
    /// Episodes collected by planning through the model per task, each after a training phase.
    pub planned_episodes: usize,
    /// Optimiser steps per training phase.
    pub train_steps: usize,
    /// Control steps per episode; absent: the system's own.
    #[serde(default)]
    pub episode_steps: Option<usize>,
    /// Held-out random-action transitions per task (prediction MSE).
    pub heldout: usize,
    /// Planned episodes per task and evaluation (0: no reward matrix).
    pub eval_episodes: usize,
    /// Stored transitions per past task (`coreset` method).
    #[serde(default)]
    pub coreset: usize,
    /// EWC penalty weight (`ewc` method).
    #[serde(default)]
    pub ewc_lambda: f64,
    /// Transitions in each Fisher estimate (`ewc` method).
    #[serde(default)]
    pub ewc_samples: usize,
    /// The CEM planner.
    pub cem: CemSettings,
}

impl ContinualSettings {
    /// Checks every field; the error names it.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |field: &str, reason: String| Err(Error::config(field, reason).into());
        if !(self.beta >= 0.0 && self.beta.is_finite()) {
            return bad("beta", format!("must be a finite number >= 0, got {}", self.beta));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("lr", format!("must be a positive learning rate, got {}", self.lr));
        }
        if self.grad_clip.is_some_and(|c| !(c > 0.0 && c.is_finite())) {
            return bad("grad_clip", format!("must be > 0 when set, got {:?}", self.grad_clip));
        }
        let positive = [
            ("batch", self.batch),
            ("capacity", self.capacity),
            ("random_episodes", self.random_episodes),
            ("train_steps", self.train_steps),
            ("heldout", self.heldout),
            ("episode_steps", self.episode_steps.unwrap_or(1)),
        ];
        if let Some((field, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return bad(field, "must be at least 1".into());
        }
        if self.method == ContinualMethod::Coreset && self.coreset == 0 {
            return bad("coreset", "the coreset method needs at least 1 stored transition per task".into());
        }
        if self.method == ContinualMethod::Ewc && self.ewc_samples == 0 {
            return bad("ewc_samples", "the ewc method needs at least 1 transition per Fisher estimate".into());
        }
        if !(self.ewc_lambda >= 0.0 && self.ewc_lambda.is_finite()) {
            return bad("ewc_lambda", format!("must be a finite number >= 0, got {}", self.ewc_lambda));
        }
        self.cem.check()?;
        self.model_config(1, 1).validate()?;
        Ok(())
    }

    /// The dynamics model of this method for `d` states and `m` actions.
    pub fn model_config(&self, d: usize, m: usize) -> TaskDynamicsConfig {
        let s = &self.model;
        let conditioning = match self.method {
            ContinualMethod::Hypercrl => Conditioning::Hypernet {
                hidden: s.hypernet_hidden.clone(),
                chunk_size: s.chunk_size,
                chunk_embedding: s.chunk_embedding,
            },
            ContinualMethod::Multitask => Conditioning::EmbeddingInput,
            _ => Conditioning::Shared,
        };
        TaskDynamicsConfig {
            state: d,
            action: m,
            hidden: s.hidden.clone(),
            activation: s.activation,
            embedding: s.embedding,
            conditioning,
        }
    }
}

/// The scores of a continual run: row `i` of each matrix is measured after learning task `i`,
/// column `j <= i` on task `j`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContinualReport {
    /// The method.
    pub method: ContinualMethod,
    /// Task names, in order.
    pub tasks: Vec<String>,
    /// Mean planned episode return (empty rows without evaluation episodes).
    pub reward: Vec<Vec<f64>>,
    /// One-step prediction MSE on held-out transitions.
    pub mse: Vec<Vec<f64>>,
    /// Trainable parameters after each task.
    pub parameters: Vec<usize>,
    /// Returns of the episodes collected by planning while learning each task.
    pub planned_returns: Vec<Vec<f64>>,
    /// Training MSE (normalised units) of the last step of each task.
    pub train_mse: Vec<f64>,
    /// Seconds spent on each task (training, collection and evaluation).
    pub seconds: Vec<f64>,
}

/// Per column `j`, the best value of `matrix[i][j]` over rows `i` minus the last row's, where
/// `sign` is +1 when higher is better (rewards) and -1 when lower is (errors).
fn best_minus_final(matrix: &[Vec<f64>], sign: f64) -> Vec<f64> {
    let Some(last) = matrix.last() else { return Vec::new() };
    (0..last.len())
        .map(|j| {
            let best = matrix.iter().filter_map(|row| row.get(j)).map(|v| sign * v).fold(f64::NEG_INFINITY, f64::max);
            best - sign * last[j]
        })
        .collect()
}

/// The mean of `v`, `None` when empty.
fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

impl ContinualReport {
    /// Rewards on every task after the last one, `[tasks]`.
    pub fn final_rewards(&self) -> Vec<f64> {
        self.reward.last().cloned().unwrap_or_default()
    }

    /// Mean of [`ContinualReport::final_rewards`].
    pub fn average_final_reward(&self) -> Option<f64> {
        mean(&self.final_rewards())
    }

    /// Per task, its best reward over the run minus its final reward (0 for the last task).
    pub fn forgetting(&self) -> Vec<f64> {
        best_minus_final(&self.reward, 1.0)
    }

    /// Mean forgetting over all tasks but the last.
    pub fn average_forgetting(&self) -> Option<f64> {
        let f = self.forgetting();
        mean(&f[..f.len().saturating_sub(1)])
    }

    /// Per task, its final held-out MSE minus its best one (the growth of prediction error).
    pub fn mse_forgetting(&self) -> Vec<f64> {
        best_minus_final(&self.mse, -1.0)
    }
}

/// What a continual run keeps between tasks (`state.json` of its checkpoints).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContinualState {
    /// Tasks learned.
    pub done: usize,
    /// Scores so far.
    pub report: ContinualReport,
    /// Each learned task's normaliser.
    pub normalisers: Vec<DeltaNormaliser>,
    /// Each learned task's kept transitions: its whole buffer (multitask), a coreset (coreset),
    /// or nothing.
    pub kept: Vec<TransitionBuffer>,
    /// Each learned task's EWC anchor (ewc).
    pub anchors: Vec<EwcAnchor>,
    /// The run seed.
    pub seed: u64,
}

/// A finished (or stopped) continual run: the model and its state.
#[derive(Debug)]
pub struct ContinualRun<B: AutodiffBackend> {
    /// The dynamics model after the last learned task.
    pub model: TaskDynamics<B::InnerBackend>,
    /// Scores and kept data.
    pub state: ContinualState,
}

/// What a run folder's `config.json` holds: a folder resumes only under the same one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct RunIdentity {
    settings: ContinualSettings,
    tasks: Vec<String>,
    seed: u64,
}

/// Learns every task of `tasks` in order with `settings.method` (see the module docs); with a
/// run folder `run`, checkpoints at task boundaries and resumes from the latest one.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use mixer_data::ControlSystem;
/// use mixer_hyper::Activation;
/// use mixer_train::{CemSettings, ContinualMethod, ContinualSettings, DynamicsShape, run_continual, system_tasks};
///
/// # fn main() -> Result<(), mixer_train::TrainError> {
/// let pendulum = ControlSystem::builtin("pendulum-swingup")?;
/// let tasks = system_tasks(&pendulum, 2)?;
/// let settings = ContinualSettings {
///     method: ContinualMethod::Hypercrl,
///     model: DynamicsShape {
///         hidden: vec![8],
///         activation: Activation::Tanh,
///         embedding: 10,
///         hypernet_hidden: vec![8],
///         chunk_size: None,
///         chunk_embedding: 2,
///     },
///     beta: 0.05,
///     plastic_embeddings: false,
///     lr: 1e-3,
///     grad_clip: Some(5.0),
///     batch: 16,
///     capacity: 100,
///     random_episodes: 1,
///     planned_episodes: 0,
///     train_steps: 5,
///     episode_steps: Some(20),
///     heldout: 20,
///     eval_episodes: 0,
///     coreset: 0,
///     ewc_lambda: 0.0,
///     ewc_samples: 0,
///     cem: CemSettings::default(),
/// };
/// let run = run_continual::<Autodiff<NdArray<f64>>>(&settings, &tasks, 7, None, &Default::default())?;
/// let mse = &run.state.report.mse; // after task i, on task j <= i
/// assert_eq!((mse.len(), mse[1].len()), (2, 2));
/// assert_eq!(run.model.tasks(), 2);
/// # Ok(())
/// # }
/// ```
pub fn run_continual<B: AutodiffBackend>(
    settings: &ContinualSettings,
    tasks: &[ContinualTask],
    seed: u64,
    run: Option<&Path>,
    device: &B::Device,
) -> Result<ContinualRun<B>, TrainError> {
    run_continual_until::<B>(settings, tasks, seed, run, tasks.len(), device)
}

/// [`run_continual`] that stops after `until` tasks (a run continued later resumes there).
pub fn run_continual_until<B: AutodiffBackend>(
    settings: &ContinualSettings,
    tasks: &[ContinualTask],
    seed: u64,
    run: Option<&Path>,
    until: usize,
    device: &B::Device,
) -> Result<ContinualRun<B>, TrainError> {
    settings.validate()?;
    let (d, m) = check_sequence(tasks)?;
    let config = settings.model_config(d, m);
    let seeds = Seeds::new(seed);
    B::seed(device, seeds.stream_seed("init"));
    let mut model = config.init::<B>(device)?;
    let names: Vec<String> = tasks.iter().map(|t| t.name.clone()).collect();
    let mut state = ContinualState::new(settings.method, names.clone(), seed);
    if let Some(run) = run {
        check_identity(run, &RunIdentity { settings: settings.clone(), tasks: names, seed })?;
        if let Some((_, dir)) = latest(run)? {
            (model, state) = resume(model, &dir, settings.model.embedding, device)?;
            info!(run = %run.display(), done = state.done, "continual run resumed");
        }
    }
    let mut learner = Learner { settings, tasks, seeds, heldout: Vec::new(), device };
    while state.done < until.min(tasks.len()) {
        let clock = Instant::now();
        let t = state.done;
        model = learner.learn(model, &mut state, t)?;
        learner.evaluate(&model.valid(), &mut state, t)?;
        state.report.parameters.push(model.parameters());
        state.report.seconds.push(clock.elapsed().as_secs_f64());
        state.done += 1;
        info!(method = settings.method.name(), task = t, seconds = clock.elapsed().as_secs_f64(), "task learned");
        if let Some(run) = run {
            let dir = staging(run, "checkpoint")?;
            save_module(&model, &dir, "model")?;
            write_json(&dir.join("state.json"), &state)?;
            publish(run, &dir, state.done)?;
        }
    }
    Ok(ContinualRun { model: model.valid(), state })
}

impl ContinualState {
    /// The state of a run of `method` over tasks `names` before any task is learned.
    pub fn new(method: ContinualMethod, names: Vec<String>, seed: u64) -> Self {
        let report = ContinualReport {
            method,
            tasks: names,
            reward: Vec::new(),
            mse: Vec::new(),
            parameters: Vec::new(),
            planned_returns: Vec::new(),
            train_mse: Vec::new(),
            seconds: Vec::new(),
        };
        Self { done: 0, report, normalisers: Vec::new(), kept: Vec::new(), anchors: Vec::new(), seed }
    }
}

/// The model and state of the checkpoint in `dir`: `fresh` grown to the checkpoint's task count
/// (embedding size `embedding`), then loaded.
fn resume<B: AutodiffBackend>(
    mut fresh: TaskDynamics<B>,
    dir: &Path,
    embedding: usize,
    device: &B::Device,
) -> Result<(TaskDynamics<B>, ContinualState), TrainError> {
    let state: ContinualState = read_json(&dir.join("state.json"))?;
    for _ in 0..state.done {
        fresh = fresh.with_task(&vec![0.0; embedding], device)?;
    }
    Ok((load_module(fresh, dir, "model", device)?, state))
}

/// Writes `config.json` into a fresh run folder, or refuses a folder of another run.
fn check_identity(run: &Path, identity: &RunIdentity) -> Result<(), TrainError> {
    let path = run.join("config.json");
    match read_json::<RunIdentity>(&path) {
        Ok(on_disk) if on_disk != *identity => Err(Error::config(
            "run",
            format!("{} holds a continual run of another config; use a new folder", run.display()),
        )
        .into()),
        Ok(_) => Ok(()),
        Err(_) => Ok(write_json(&path, identity)?),
    }
}

/// What one training phase of task `t` reads.
struct Phase<'a, B: AutodiffBackend> {
    objective: &'a Objective<B>,
    /// Task `t`'s buffer.
    buffer: &'a TransitionBuffer,
    /// What is kept of tasks `0..t`.
    kept: &'a [TransitionBuffer],
    /// Normalisers of tasks `0..=t`.
    norms: &'a [NormaliserTensors<B>],
    t: usize,
}

/// The parts of a run that stay fixed while tasks are learned.
struct Learner<'a, B: AutodiffBackend> {
    settings: &'a ContinualSettings,
    tasks: &'a [ContinualTask],
    seeds: Seeds,
    /// Held-out transitions of the tasks met so far (regenerated from the seed on resume).
    heldout: Vec<TransitionBuffer>,
    device: &'a B::Device,
}

impl<B: AutodiffBackend> Learner<'_, B> {
    /// Control steps of an episode of task `t`.
    fn steps(&self, t: usize) -> usize {
        self.settings.episode_steps.unwrap_or(self.tasks[t].system.spec().episode_steps)
    }

    /// Normalisers of tasks `0..t` plus `current` for task `t`, on the training backend.
    fn norms(&self, state: &ContinualState, current: &DeltaNormaliser) -> Vec<NormaliserTensors<B>> {
        state.normalisers.iter().chain([current]).map(|n| n.on(self.device)).collect()
    }

    /// Learns task `t`: a new embedding, random episodes, then training phases between planned
    /// episodes; afterwards keeps what the method needs of the task.
    fn learn(
        &mut self,
        model: TaskDynamics<B>,
        state: &mut ContinualState,
        t: usize,
    ) -> Result<TaskDynamics<B>, TrainError> {
        let (s, task, device) = (self.settings, &self.tasks[t], self.device);
        let emb = normal_draws(s.model.embedding, &mut self.seeds.stream(&format!("embedding-{t}")));
        let mut model = model.with_task(&emb, device)?;
        let objective = Objective {
            method: s.method,
            snapshot: snapshot_outputs(&model, t)?,
            beta: s.beta,
            plastic: s.plastic_embeddings,
            anchors: anchor_tensors(&state.anchors, device),
            ewc_lambda: s.ewc_lambda,
        };
        let mut buffer = TransitionBuffer::new(task.dim(), task.actions(), s.capacity)?;
        let mut rng = self.seeds.stream(&format!("collect-{t}"));
        for _ in 0..s.random_episodes {
            run_episode(task, self.steps(t), &mut rng, &mut buffer, random_action(task))?;
        }
        let clip = s.grad_clip.map(|c| burn::grad_clipping::GradientClippingConfig::Norm(c as f32));
        let mut optim = AdamConfig::new().with_epsilon(1e-8).with_grad_clipping(clip).init::<B, TaskDynamics<B>>();
        let mut train_rng = self.seeds.stream(&format!("train-{t}"));
        let (mut returns, mut last_mse) = (Vec::new(), f64::NAN);
        for phase in 0..=s.planned_episodes {
            // the normaliser follows the buffer as it grows
            let current = buffer.normaliser()?;
            let norms = self.norms(state, &current);
            let phase_data = Phase { objective: &objective, buffer: &buffer, kept: &state.kept, norms: &norms, t };
            (model, last_mse) = self.train_phase(model, &mut optim, phase_data, &mut train_rng)?;
            if phase < s.planned_episodes {
                let (valid, norm, steps) = (model.valid(), current.on(device), self.steps(t));
                let net = valid.network(t)?;
                returns.push(planned_episode(&net, &norm, task, &s.cem, steps, &mut rng, &mut buffer, device)?);
            }
        }
        let current = buffer.normaliser()?;
        self.keep(&model, state, &buffer, &current, t)?;
        state.normalisers.push(current);
        state.report.planned_returns.push(returns);
        state.report.train_mse.push(last_mse);
        Ok(model)
    }

    /// `train_steps` optimiser steps on `phase`; returns the model and its last training MSE.
    fn train_phase(
        &self,
        mut model: TaskDynamics<B>,
        optim: &mut impl Optimizer<TaskDynamics<B>, B>,
        phase: Phase<'_, B>,
        rng: &mut mixer_core::Rng,
    ) -> Result<(TaskDynamics<B>, f64), TrainError> {
        let (s, t) = (self.settings, phase.t);
        let mut last = f64::NAN;
        for step in 0..s.train_steps {
            let (loss, mse) =
                phase.objective.loss(&model, t, phase.buffer, phase.kept, phase.norms, s.batch, rng, self.device)?;
            if !mse.is_finite() {
                let reason = format!("the training MSE became {mse} at task {t}, step {step}; lower the learning rate");
                return Err(Error::config("lr", reason).into());
            }
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(s.lr, model, grads);
            last = mse;
        }
        Ok((model, last))
    }

    /// Stores what the method keeps of finished task `t`.
    fn keep(
        &self,
        model: &TaskDynamics<B>,
        state: &mut ContinualState,
        buffer: &TransitionBuffer,
        norm: &DeltaNormaliser,
        t: usize,
    ) -> Result<(), TrainError> {
        let s = self.settings;
        let mut rng = self.seeds.stream(&format!("keep-{t}"));
        match s.method {
            ContinualMethod::Multitask => state.kept.push(buffer.clone()),
            ContinualMethod::Coreset => state.kept.push(buffer.subset(s.coreset, &mut rng)),
            ContinualMethod::Ewc => {
                let anchor = ewc_anchor(model, t, buffer, &norm.on(self.device), s.ewc_samples, &mut rng, self.device)?;
                state.anchors.push(anchor);
            }
            ContinualMethod::Hypercrl | ContinualMethod::Finetune => {}
        }
        Ok(())
    }

    /// Held-out transitions of task `t` (random actions on the true system, seeded per task).
    fn heldout(&mut self, t: usize) -> Result<&TransitionBuffer, TrainError> {
        while self.heldout.len() <= t {
            let j = self.heldout.len();
            let mut rng = self.seeds.stream(&format!("heldout-{j}"));
            let steps = self.steps(j);
            self.heldout.push(random_transitions(&self.tasks[j], self.settings.heldout, steps, &mut rng)?);
        }
        Ok(&self.heldout[t])
    }

    /// Appends the row "after task `i`" of the reward and prediction matrices.
    fn evaluate(
        &mut self,
        model: &TaskDynamics<B::InnerBackend>,
        state: &mut ContinualState,
        i: usize,
    ) -> Result<(), TrainError> {
        let (s, device) = (self.settings, self.device);
        let (mut rewards, mut errors) = (Vec::new(), Vec::new());
        for j in 0..=i {
            let norm = state.normalisers[j].on::<B::InnerBackend>(device);
            errors.push(heldout_mse(model, j, &norm, self.heldout(j)?, device)?);
            if s.eval_episodes == 0 {
                continue;
            }
            let (task, steps, net) = (&self.tasks[j], self.steps(j), model.network(j)?);
            let mut total = 0.0;
            for k in 0..s.eval_episodes {
                let mut rng = self.seeds.stream(&format!("eval-{i}-{j}-{k}"));
                let mut scratch = TransitionBuffer::new(task.dim(), task.actions(), steps)?;
                total += planned_episode(&net, &norm, task, &s.cem, steps, &mut rng, &mut scratch, device)?;
            }
            rewards.push(total / s.eval_episodes as f64);
        }
        state.report.reward.push(rewards);
        state.report.mse.push(errors);
        Ok(())
    }
}
