//! Run configuration: model, router, training, adaptation and data options, checked once.

use serde::{Deserialize, Serialize};

use mixer_core::Error;
use mixer_experts::{Dispatch, ExpertConfig};
use mixer_ode::SolverConfig;
use mixer_routers::{RouterConfig, RouterShape};

use crate::{AdaBeliefConfig, TrainError};

/// Everything a training run needs besides the data; written into the run folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Architecture.
    pub model: ModelConfig,
    /// How environments are routed to experts.
    pub router: RouterConfig,
    /// The meta-training loop.
    pub train: TrainConfig,
    /// Adaptation to new environments.
    pub adapt: AdaptConfig,
    /// How the stored trajectories are read.
    pub data: DataOptions,
}

/// The mixture: number of experts, context size and the expert type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Number of experts `K`.
    pub experts: usize,
    /// Context size `d_xi` of each environment; with splitting, each expert reads `d_xi / K`.
    pub context_dim: usize,
    /// The expert network (its context size is set from `context_dim`).
    pub expert: ExpertConfig,
    /// How routings are integrated: `fused` (default; the host path with its own backward
    /// pass where it applies), `stacked`, `per-expert` or `dense` (the tensor paths).
    #[serde(default)]
    pub rollout: Dispatch,
}

/// The alternating proximal meta-training loop (MixER, Nzoyem et al. 2025).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
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
    /// Environments per meta-loss subset `C` (per expert with [`SubsetRule::PerExpert`]).
    pub subset_size: usize,
    /// How the environments of an inner step are chosen (published: one nearest subset).
    #[serde(default)]
    pub subsets: SubsetRule,
    /// Weight environments by `softmax(L)` instead of averaging.
    pub self_reweight: bool,
    /// Units of each environment's loss (published: absolute MSE).
    #[serde(default)]
    pub loss_scale: LossScale,
    /// Gate refit after inner step `i` when `i % gate_update_every == 0`.
    pub gate_update_every: usize,
    /// Trajectories per environment used for the gate's expert-loss matrix (all when absent).
    pub gate_loss_trajs: Option<usize>,
    /// Write a checkpoint every this many outer steps.
    pub checkpoint_every: usize,
    /// Coefficient of `mean |xi_e|` in the environment loss.
    pub context_l1: f64,
    /// Minimum fraction of a trajectory in a random training window.
    pub window_fraction: f64,
    /// Multiple shooting at the start of training: short segments that grow to the whole
    /// trajectory (absent: random windows from the first step, as published).
    #[serde(default)]
    pub segments: Option<Segments>,
    /// Moves environments to another expert's mean context where it fits them much better
    /// (absent: never, as published).
    #[serde(default)]
    pub reseat: Option<Reseat>,
    /// NCF context pool size `p` (Nzoyem et al. 2024): every training trajectory is rolled out
    /// once per pool member, its field expanded about that environment's context, and its
    /// loss averages over the pool. Only self-modulating experts (NCF of order 1 or 2) read the
    /// pool; others would see each trajectory `p` times. 0 (default): no pool.
    #[serde(default)]
    pub context_pool: usize,
    /// Optimiser of both blocks.
    pub optimizer: AdaBeliefConfig,
    /// Integrator for training and evaluation.
    pub solver: SolverConfig,
}

/// Multiple shooting: every training trajectory is cut into consecutive segments, each
/// integrated from its own observed first state, and the segments lengthen linearly over
/// training until they span the whole trajectory (docs/method.md).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Segments {
    /// Points per segment at the first outer step (at least 2).
    pub points: usize,
    /// Fraction of the outer steps at which segments reach the whole trajectory; random windows
    /// of `window_fraction` are drawn from then on. Above 1, segments stay shorter than the
    /// whole trajectory to the end of training (chaotic data, where long rollouts cannot follow
    /// the observations).
    pub full_at: f64,
}

impl Segments {
    /// Points per segment at outer step `outer` of `outer_steps`, for trajectories of `steps`
    /// points; `None` once segments span the whole trajectory.
    pub fn points_at(&self, outer: usize, outer_steps: usize, steps: usize) -> Option<usize> {
        let progress = outer as f64 / (self.full_at * outer_steps as f64);
        let len = self.points as f64 + progress * steps.saturating_sub(self.points) as f64;
        (len < steps as f64).then(|| len.floor() as usize)
    }
}

/// Re-seating of stray environments after an outer step (docs/method.md): an environment
/// whose trajectories another expert's mean context (routed by the gate) predicts with a loss
/// below `gain` times its own moves to that context.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reseat {
    /// Re-seat after every this many outer steps.
    pub every: usize,
    /// Loss ratio below which an environment moves, in (0, 1].
    pub gain: f64,
}

/// How an inner step chooses its environments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubsetRule {
    /// One subset: `subset_size` environments nearest to a random anchor (MixER as published).
    #[default]
    Nearest,
    /// One nearest subset of `subset_size` inside each expert's environments (top-1 routing);
    /// the meta loss sums the experts' meta losses, so every expert trains at every step as if
    /// it were alone (docs/method.md).
    PerExpert,
}

/// Units of an environment's loss in training, validation, the gate refit and adaptation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossScale {
    /// The MSE in the data's units (MixER as published).
    #[default]
    Absolute,
    /// The MSE divided by the environment's mean squared observation, a squared relative L2:
    /// families whose amplitudes differ by orders of magnitude weigh alike (docs/method.md).
    Relative,
}

/// Fitting contexts of new environments with the model frozen (MixER, Nzoyem et al. 2025).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptConfig {
    /// Optimiser steps.
    pub steps: usize,
    /// Learning rate.
    pub lr: f64,
    /// Initial contexts: zeros or the mean of the trained ones.
    pub init: ContextStart,
}

/// How new contexts start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContextStart {
    /// All zeros (MixER, CoDA).
    Zeros,
    /// The mean of the trained contexts (GEPS).
    Mean,
    /// The trained context whose rollout fits the new environment's trajectories best (one
    /// forward rollout per trained environment); the gate then routes the new environment
    /// where that context goes (beyond the reference; docs/method.md).
    BestFit,
}

/// How stored trajectories are read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataOptions {
    /// Keep every k-th time point (1 keeps all).
    pub subsample: usize,
}

/// A count that must be at least 1; the error names `field`.
pub(crate) fn positive(field: &str, v: usize) -> Result<(), Error> {
    if v == 0 { Err(Error::config(field, "must be at least 1")) } else { Ok(()) }
}

/// A finite value that must be above 0; the error names `field`.
pub(crate) fn positive_f(field: &str, v: f64) -> Result<(), Error> {
    if v > 0.0 && v.is_finite() { Ok(()) } else { Err(Error::config(field, format!("must be > 0, got {v}"))) }
}

impl RunConfig {
    /// Checks every field that does not depend on the data.
    pub fn validate(&self) -> Result<(), TrainError> {
        let m = &self.model;
        positive("model.experts", m.experts)?;
        positive("model.context_dim", m.context_dim)?;
        if !m.context_dim.is_multiple_of(m.experts) {
            return Err(Error::config(
                "model.context_dim",
                format!(
                    "context splitting needs context_dim divisible by the number of experts: {} is not a multiple of {}",
                    m.context_dim, m.experts
                ),
            )
            .into());
        }
        let t = &self.train;
        positive("train.context_steps", t.context_steps)?;
        positive("train.model_steps", t.model_steps)?;
        positive("train.subset_size", t.subset_size)?;
        positive("train.gate_update_every", t.gate_update_every)?;
        positive("train.checkpoint_every", t.checkpoint_every)?;
        positive_f("train.lr_model", t.lr_model)?;
        positive_f("train.lr_context", t.lr_context)?;
        positive_f("train.lr_drop_factor", t.lr_drop_factor)?;
        if (t.proximal_beta.is_nan() || t.proximal_beta < 0.0) || (t.context_l1.is_nan() || t.context_l1 < 0.0) {
            return Err(Error::config("train.proximal_beta / train.context_l1", "must be >= 0").into());
        }
        if !(t.window_fraction > 0.0 && t.window_fraction <= 1.0) {
            return Err(Error::config(
                "train.window_fraction",
                format!("must be in (0, 1], got {}", t.window_fraction),
            )
            .into());
        }
        if let Some(seg) = &t.segments
            && (seg.points < 2 || !(seg.full_at > 0.0 && seg.full_at.is_finite()))
        {
            return Err(Error::config(
                "train.segments",
                format!("needs points >= 2 and a finite full_at > 0, got {} and {}", seg.points, seg.full_at),
            )
            .into());
        }
        if let Some(r) = &t.reseat
            && (r.every == 0 || !(r.gain > 0.0 && r.gain <= 1.0))
        {
            return Err(Error::config(
                "train.reseat",
                format!("needs every >= 1 and gain in (0, 1], got {} and {}", r.every, r.gain),
            )
            .into());
        }
        if t.gate_loss_trajs == Some(0) {
            return Err(Error::config("train.gate_loss_trajs", "must be at least 1 when given").into());
        }
        t.optimizer.validate()?;
        t.solver.validate().map_err(|e| Error::config("train.solver", e.to_string()))?;
        positive_f("adapt.lr", self.adapt.lr)?;
        positive("data.subsample", self.data.subsample)?;
        self.router.check(self.router_shape())?;
        Ok(())
    }

    /// Checks the config against the training data: no more experts than environments.
    pub fn check_against(&self, num_envs: usize) -> Result<(), TrainError> {
        self.validate()?;
        if self.model.experts > num_envs {
            return Err(Error::config(
                "model.experts",
                format!(
                    "{} experts but only {num_envs} training environments: each expert needs at least one",
                    self.model.experts
                ),
            )
            .into());
        }
        Ok(())
    }

    /// The sizes the router is built for: one unit per environment, routed by its context.
    pub fn router_shape(&self) -> RouterShape {
        RouterShape { experts: self.model.experts, features: self.model.context_dim }
    }

    /// Context size each expert reads.
    pub fn expert_context_dim(&self) -> usize {
        self.model.context_dim / self.model.experts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_grow_linearly_to_the_whole_trajectory() {
        let s = Segments { points: 4, full_at: 0.5 };
        // 100 outer steps, trajectories of 20 points: 4 points at 0, 20 (whole) at outer 50
        assert_eq!(s.points_at(0, 100, 20), Some(4));
        assert_eq!(s.points_at(25, 100, 20), Some(12));
        assert_eq!(s.points_at(49, 100, 20), Some(19));
        assert_eq!(s.points_at(50, 100, 20), None);
        assert_eq!(s.points_at(99, 100, 20), None);
        assert_eq!(Segments { points: 30, full_at: 1.0 }.points_at(0, 100, 20), None, "longer than the data");
        // full_at 4: at the last outer step segments have grown a quarter of the way.
        assert_eq!(Segments { points: 4, full_at: 4.0 }.points_at(99, 100, 20), Some(7));
    }
}
