//! Expert-choice routing (Zhou et al. 2022): each expert picks its top-C units.

use burn::module::{Module, Param};
use burn::tensor::{Bool, Tensor, TensorData, activation::softmax, backend::Backend};
use serde::{Deserialize, Serialize};

use mixer_core::{Granularity, Rng, Router, RouterInput, Routing, host};

use crate::gating::{linear_logits, reduced_init};
use crate::{Refit, RouterError, RouterShape, RouterSpec, select::topk_lowest};

/// Configuration of [`ExpertChoice`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExpertChoiceConfig {
    /// Router input width `d`.
    pub input_dim: usize,
    /// Number of experts `E`.
    pub num_experts: usize,
    /// Capacity factor `c` (average experts per unit; 2 in the paper).
    pub capacity_factor: f64,
}

impl ExpertChoiceConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), RouterError> {
        RouterShape { experts: self.num_experts, features: self.input_dim }.check()?;
        if !(self.capacity_factor.is_finite() && self.capacity_factor > 0.0) {
            return Err(RouterError::InvalidCapacityFactor { value: self.capacity_factor });
        }
        Ok(())
    }

    /// Validates, then builds the router; `W_g: [d, E]` from Switch's reduced initialisation
    /// (truncated normal, standard deviation `sqrt(0.1 / d)`) drawn from `rng`.
    pub fn init<B: Backend>(&self, device: &B::Device, rng: &mut Rng) -> Result<ExpertChoice<B>, RouterError> {
        self.validate()?;
        let w_gate = reduced_init(self.input_dim, self.num_experts, 0.1, rng, device);
        Ok(ExpertChoice { w_gate, config: self.clone() })
    }
}

/// `[router]` settings of [`ExpertChoice`] (`kind = "expert-choice"`): capacity factor 2 by
/// default, as in Zhou et al. 2022.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExpertChoiceSettings {
    /// Capacity factor `c` (average experts per unit).
    pub capacity_factor: f64,
}

impl Default for ExpertChoiceSettings {
    fn default() -> Self {
        Self { capacity_factor: 2.0 }
    }
}

impl ExpertChoiceSettings {
    fn config(&self, shape: RouterShape) -> ExpertChoiceConfig {
        ExpertChoiceConfig {
            input_dim: shape.features,
            num_experts: shape.experts,
            capacity_factor: self.capacity_factor,
        }
    }
}

impl RouterSpec for ExpertChoiceSettings {
    type Router<B: Backend> = ExpertChoice<B>;

    fn check(&self, shape: RouterShape) -> Result<(), RouterError> {
        self.config(shape).validate()
    }

    fn build<B: Backend>(
        &self,
        shape: RouterShape,
        rng: &mut Rng,
        device: &B::Device,
    ) -> Result<ExpertChoice<B>, RouterError> {
        self.config(shape).init(device, rng)
    }
}

impl<B: Backend> Refit for ExpertChoice<B> {}

/// Expert-choice router: affinities `softmax(x W_g)` per unit; expert e takes the C units with the highest
/// affinity. Batch-coupled: a unit's experts depend on the other units of the batch.
#[derive(Module, Debug)]
pub struct ExpertChoice<B: Backend> {
    /// Gate weight `W_g: [d, E]`.
    pub w_gate: Param<Tensor<B, 2>>,
    #[module(skip)]
    config: ExpertChoiceConfig,
}

impl<B: Backend> ExpertChoice<B> {
    /// Capacity per expert for `n` units: `ceil(n c / E)`, clamped to `1..=n` (at least 1 for tiny batches).
    pub fn capacity(&self, n: usize) -> usize {
        let c = (n as f64 * self.config.capacity_factor / self.config.num_experts as f64).ceil() as usize;
        c.clamp(1, n.max(1))
    }
}

impl<B: Backend> Router<B> for ExpertChoice<B> {
    fn num_experts(&self) -> usize {
        self.config.num_experts
    }

    /// Every unit has one slot per expert (`k = E`); slot e is `None` unless expert e chose the unit.
    fn top_k(&self) -> usize {
        self.config.num_experts
    }

    fn granularity(&self) -> Granularity {
        Granularity::Token
    }

    fn is_batch_coupled(&self) -> bool {
        true
    }

    /// Routes `features: [N, d]`: weights `[N, E]` hold the affinity `S[n, e]` where expert e chose unit n and 0
    /// elsewhere (no renormalisation); units chosen by nobody have all slots `None`. `probs` = `S`.
    fn route(&self, input: &RouterInput<B>, rng: &mut Rng) -> mixer_core::Result<Routing<B>> {
        let e = self.config.num_experts;
        let [n, _] = input.features.dims();
        let device = input.features.device();
        let s = softmax(linear_logits(&self.w_gate, input, 0.0, rng)?, 1);
        let host_s = host::to_vec(s.clone());
        let cap = self.capacity(n);
        let mut indices = vec![None; n * e];
        for expert in 0..e {
            let column: Vec<f64> = (0..n).map(|u| host_s[u * e + expert]).collect();
            for u in topk_lowest(&column, cap) {
                indices[u * e + expert] = Some(expert);
            }
        }
        let unchosen: Vec<bool> = indices.iter().map(Option::is_none).collect();
        let mask = Tensor::<B, 2, Bool>::from_data(TensorData::new(unchosen, [n, e]), &device);
        let weights = s.clone().mask_fill(mask, 0.0);
        Ok(Routing { k: e, indices, weights, shared: vec![], probs: Some(s), aux_losses: vec![] })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestBackend;
    use mixer_core::{Mode, Seeds};

    fn router(n_dim: usize, e: usize) -> ExpertChoice<TestBackend> {
        let config = ExpertChoiceConfig { input_dim: n_dim, num_experts: e, capacity_factor: 2.0 };
        config.init(&Default::default(), &mut Seeds::new(1).stream("init")).unwrap()
    }

    #[test]
    fn each_expert_takes_its_top_c_units() {
        let r = router(3, 4);
        let mut rng = Seeds::new(2).stream("x");
        let x: Vec<f64> = (0..8 * 3).map(|_| rand::Rng::sample(&mut rng, rand_distr::StandardNormal)).collect();
        let device = Default::default();
        let input = RouterInput { features: host::tensor2(&x, [8, 3], &device), mode: Mode::Train };
        let out = r.route(&input, &mut rng).unwrap();
        assert!(Router::<TestBackend>::is_batch_coupled(&r));
        assert_eq!(r.capacity(8), 4); // 8 * 2 / 4
        let s = host::to_vec(out.probs.unwrap());
        let w = host::to_vec(out.weights);
        assert_eq!(out.k, 4);
        for (expert, group) in out_groups(&out.indices, 4).into_iter().enumerate() {
            assert_eq!(group.len(), 4, "expert {expert}");
            let column: Vec<f64> = (0..8).map(|u| s[u * 4 + expert]).collect();
            let mut hand = topk_lowest(&column, 4);
            hand.sort();
            assert_eq!(group, hand);
            for u in 0..8 {
                let want = if hand.contains(&u) { s[u * 4 + expert] } else { 0.0 };
                assert_eq!(w[u * 4 + expert], want);
            }
        }
    }

    fn out_groups(indices: &[Option<usize>], e: usize) -> Vec<Vec<usize>> {
        (0..e).map(|x| (0..indices.len() / e).filter(|u| indices[u * e + x] == Some(x)).collect()).collect()
    }

    #[test]
    fn single_unit_is_taken_by_every_expert() {
        let r = router(2, 3);
        assert_eq!(r.capacity(1), 1);
        let device = Default::default();
        let input = RouterInput { features: host::tensor2(&[0.3, -0.2], [1, 2], &device), mode: Mode::Eval };
        let out = r.route(&input, &mut Seeds::new(0).stream("r")).unwrap();
        assert_eq!(out.indices, vec![Some(0), Some(1), Some(2)]);
    }

    #[test]
    fn invalid_fields_are_rejected() {
        let ok = ExpertChoiceConfig { input_dim: 2, num_experts: 3, capacity_factor: 2.0 };
        assert!(matches!(
            ExpertChoiceConfig { num_experts: 0, ..ok.clone() }.validate(),
            Err(RouterError::ZeroExperts)
        ));
        assert!(matches!(
            ExpertChoiceConfig { input_dim: 0, ..ok.clone() }.validate(),
            Err(RouterError::ZeroContextDim)
        ));
        let bad = ExpertChoiceConfig { capacity_factor: 0.0, ..ok }.validate();
        assert!(matches!(bad, Err(RouterError::InvalidCapacityFactor { .. })));
    }
}
