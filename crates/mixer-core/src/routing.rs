//! The router interface: which expert(s) handle which unit, with what weight.
//!
//! A router maps `N` routed units (environments for MixER, samples or grid points for
//! others) to `k` experts each. The result, [`Routing`], has a token-choice view (`indices`,
//! `weights`) and a dispatch view ([`Routing::groups`]) that the MoE layer uses to gather
//! each expert's units, run only that expert, and scatter the outputs back.

use burn::tensor::{Tensor, backend::Backend};
use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::{Result, Rng};

/// What one routing decision covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Granularity {
    /// Every token / state evaluation is routed on its own.
    Token,
    /// A whole sample (trajectory or field) is routed once.
    Sample,
    /// An environment is routed once, from its context.
    Environment,
    /// Each location of a gridded field is routed.
    SpatialLocation,
}

/// Training or evaluation: noise and auxiliary losses only apply in training.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Training forward pass.
    Train,
    /// Evaluation forward pass.
    Eval,
}

/// What a router reads: features `[N, d]` of the units to route.
#[derive(Clone, Debug)]
pub struct RouterInput<B: Backend> {
    /// Router features, `[N, d]` (contexts for environment routers, states for token routers).
    pub features: Tensor<B, 2>,
    /// Training or evaluation.
    pub mode: Mode,
}

/// The kinds of auxiliary loss a router can ask the trainer to add.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuxKind {
    /// `CV^2` of summed gate values per expert.
    Importance,
    /// `CV^2` of the smooth load estimate (noisy top-k).
    Load,
    /// Switch/GShard balance `E * sum_i f_i P_i`.
    SwitchBalance,
    /// Router z-loss `mean(logsumexp(h)^2)`.
    ZLoss,
    /// Variance of importance around its ideal (MoE-POT), normalised by the ideal squared.
    VarianceBalance,
    /// Batch spread of each expert's spatial scores, averaged over locations (spatial MoE).
    SpatialAgreement,
}

/// An auxiliary loss term: the trainer adds `coefficient * value`.
#[derive(Clone, Debug)]
pub struct AuxLoss<B: Backend> {
    /// Which loss.
    pub kind: AuxKind,
    /// Scalar value, `[1]`, differentiable.
    pub value: Tensor<B, 1>,
    /// Weight in the total loss.
    pub coefficient: f64,
}

/// Units assigned to one expert: unit `units[j]` uses slot `slots[j]` of its top-k row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExpertGroup {
    /// Unit indices, ascending.
    pub units: Vec<usize>,
    /// For each unit, which of its `k` choices this is.
    pub slots: Vec<usize>,
}

/// The outcome of routing `N` units to `k` experts each.
#[derive(Clone, Debug)]
pub struct Routing<B: Backend> {
    /// Experts per unit.
    pub k: usize,
    /// Chosen expert for each unit and slot, row-major `[N * k]`; `None` means dropped.
    pub indices: Vec<Option<usize>>,
    /// Combine weights `[N, k]`, differentiable where the router is trained by gradient.
    pub weights: Tensor<B, 2>,
    /// Always-active experts with fixed weights (MoE-POT shared experts).
    pub shared: Vec<(usize, f64)>,
    /// Gate probabilities `[N, E]`, when the router has them (for losses and diagnostics).
    pub probs: Option<Tensor<B, 2>>,
    /// Auxiliary losses the trainer must add.
    pub aux_losses: Vec<AuxLoss<B>>,
}

impl<B: Backend> Routing<B> {
    /// Every one of `units` units to `expert`, weight 1 (one expert scored alone).
    pub fn constant(units: usize, expert: usize, device: &B::Device) -> Self {
        Self {
            k: 1,
            indices: vec![Some(expert); units],
            weights: Tensor::ones([units, 1], device),
            shared: vec![],
            probs: None,
            aux_losses: vec![],
        }
    }

    /// Number of routed units `N`.
    pub fn num_units(&self) -> usize {
        self.indices.len() / self.k.max(1)
    }

    /// The top-1 expert of each unit (`None` if dropped).
    pub fn top1(&self) -> Vec<Option<usize>> {
        self.indices.chunks(self.k.max(1)).map(|row| row[0]).collect()
    }

    /// Dispatch view: for each of `num_experts` experts, the units and slots it serves.
    pub fn groups(&self, num_experts: usize) -> Vec<ExpertGroup> {
        let mut groups = vec![ExpertGroup::default(); num_experts];
        for (flat, choice) in self.indices.iter().enumerate() {
            if let Some(e) = *choice {
                groups[e].units.push(flat / self.k);
                groups[e].slots.push(flat % self.k);
            }
        }
        groups
    }

    /// Units per expert (routed slots only), `[num_experts]`.
    pub fn load(&self, num_experts: usize) -> Vec<usize> {
        let mut load = vec![0; num_experts];
        for e in self.indices.iter().flatten() {
            load[*e] += 1;
        }
        load
    }
}

/// What a non-gradient router update sees (MixER's gate refit).
#[derive(Clone, Debug)]
pub struct RouterFeedback {
    /// Features of all units, `[N, d]` (the full context table for MixER).
    pub features: Array2<f64>,
    /// Loss of every expert on every unit, `[N, E]`, no gradient.
    pub expert_losses: Array2<f64>,
    /// Outer/inner step counter, for schedules.
    pub step: usize,
}

/// The result of a non-gradient update.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum GateUpdate {
    /// This router has no non-gradient update.
    NotApplicable,
    /// The gate was refit.
    Updated,
    /// The update was skipped (the gate is unchanged), with the reason.
    Skipped(String),
}

/// Maps units to experts. Routers trained by gradient expose their parameters as burn modules;
/// routers refit otherwise (MixER's K-means + least squares, bias balancing) do it through
/// mixer-routers' `Refit`, which reads a [`RouterFeedback`].
pub trait Router<B: Backend> {
    /// Number of experts `E`.
    fn num_experts(&self) -> usize;

    /// Experts per unit `k`.
    fn top_k(&self) -> usize;

    /// What one routing decision covers.
    fn granularity(&self) -> Granularity;

    /// Routes `input.features: [N, d]`; all noise is drawn from `rng`.
    fn route(&self, input: &RouterInput<B>, rng: &mut Rng) -> Result<Routing<B>>;

    /// True when the decision for a unit depends on other units of the batch (expert choice,
    /// capacity limits); such routers must be frozen for a rollout before use inside an ODE.
    fn is_batch_coupled(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    #[test]
    fn groups_and_load_follow_indices() {
        let device = Default::default();
        let r = Routing::<NdArray> {
            k: 2,
            indices: vec![Some(1), Some(0), Some(1), None, Some(2), Some(1)],
            weights: Tensor::ones([3, 2], &device),
            shared: vec![],
            probs: None,
            aux_losses: vec![],
        };
        assert_eq!(r.num_units(), 3);
        assert_eq!(r.top1(), vec![Some(1), Some(1), Some(2)]);
        let g = r.groups(3);
        assert_eq!(g[0], ExpertGroup { units: vec![0], slots: vec![1] });
        assert_eq!(g[1], ExpertGroup { units: vec![0, 1, 2], slots: vec![0, 0, 1] });
        assert_eq!(g[2], ExpertGroup { units: vec![2], slots: vec![0] });
        assert_eq!(r.load(3), vec![1, 3, 1]);
    }
}
