//! Settings of the continual trainer (HyperCRL, Huang, Xie, Gilitschenski, Shkurti et al.,
//! "Continual Model-Based Reinforcement Learning with Hypernetworks", ICRA 2021): the method
//! (HyperCRL or a baseline), the dynamics model's sizes, the data collection, the training and
//! the planner, checked in one place.

use serde::{Deserialize, Serialize};

use mixer_core::Error;
use mixer_hyper::{Activation, Conditioning, TaskDynamicsConfig};

use crate::{CemSettings, TrainError};

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
