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
use mixer_hyper::{DeltaNormaliser, NormaliserTensors, TaskDynamics};

use crate::checkpoint::{latest, load_module, publish, save_module, staging};
use crate::continual_data::{
    ContinualTask, TransitionBuffer, check_sequence, random_action, random_transitions, run_episode,
};
use crate::continual_objective::{
    EwcAnchor, Objective, anchor_tensors, ewc_anchor, heldout_mse, normal_draws, planned_episode, snapshot_outputs,
};
use crate::{ContinualMethod, ContinualReport, ContinualSettings, TrainError, read_json, write_json};

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
