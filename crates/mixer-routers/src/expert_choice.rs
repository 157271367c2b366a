//! Expert-choice routing (Zhou et al. 2022): each expert picks its top-C units.

use burn::module::{Module, Param};
use burn::tensor::{Bool, Tensor, TensorData, activation::softmax, backend::Backend};
use serde::{Deserialize, Serialize};

use std::sync::{Arc, Mutex};

use mixer_core::{Granularity, Mode, Rng, Router, RouterInput, Routing, host};

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
        Ok(ExpertChoice { w_gate, config: self.clone(), thresholds: None, last_batch: Arc::default() })
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

/// The evaluation thresholds: folded in after every training step, checkpointed as state.
impl<B: Backend> Refit for ExpertChoice<B> {
    fn after_step(&mut self, _load: &[usize]) {
        if let Some(batch) = self.last_batch.lock().map_or(None, |mut b| b.take()) {
            self.thresholds = Some(batch);
        }
    }

    fn refit_state(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({ "thresholds": self.thresholds }))
    }

    fn load_refit_state(&mut self, state: Option<&serde_json::Value>) -> Result<(), RouterError> {
        let thresholds: Option<Vec<f64>> = state
            .and_then(|s| s.get("thresholds"))
            .and_then(|t| serde_json::from_value(t.clone()).ok())
            .ok_or_else(|| RouterError::State { reason: "the expert-choice router needs its thresholds".into() })?;
        if thresholds.as_ref().is_some_and(|t| t.len() != self.config.num_experts) {
            return Err(RouterError::State { reason: "one expert-choice threshold per expert".into() });
        }
        self.thresholds = thresholds;
        Ok(())
    }
}

/// Expert-choice router: affinities `softmax(x W_g)` per unit; expert e takes the C units with the highest
/// affinity. Batch-coupled: a unit's experts depend on the other units of the batch.
///
/// Evaluation does not depend on the batch once the router has trained: each expert then takes
/// every unit whose affinity reaches its threshold, the affinity of the last unit it took in the
/// latest training batch, and a unit no expert takes goes to its highest-affinity expert. A
/// single new unit (adapting one environment) is thus routed as in training, not to every
/// expert, and never left without one.
#[derive(Module, Debug)]
pub struct ExpertChoice<B: Backend> {
    /// Gate weight `W_g: [d, E]`.
    pub w_gate: Param<Tensor<B, 2>>,
    #[module(skip)]
    config: ExpertChoiceConfig,
    /// Per-expert evaluation thresholds (`None` before the first training step).
    #[module(skip)]
    thresholds: Option<Vec<f64>>,
    /// Each expert's lowest chosen affinity in the last training batch, until `after_step`.
    #[module(skip)]
    last_batch: Arc<Mutex<Option<Vec<f64>>>>,
}

impl<B: Backend> ExpertChoice<B> {
    /// Capacity per expert for `n` units: `ceil(n c / E)`, clamped to `1..=n` (at least 1 for tiny batches).
    pub fn capacity(&self, n: usize) -> usize {
        let c = (n as f64 * self.config.capacity_factor / self.config.num_experts as f64).ceil() as usize;
        c.clamp(1, n.max(1))
    }

    /// The per-expert evaluation thresholds learned in training (`None` before any step).
    pub fn thresholds(&self) -> Option<&[f64]> {
        self.thresholds.as_deref()
    }

    /// `indices[u * E + e]`: whether expert `e` takes unit `u` of the affinities `s: [n, E]`,
    /// by batch top-C in training (recording each expert's lowest taken affinity) and by the
    /// learned thresholds in evaluation (the best expert for a unit none takes).
    fn choose(&self, s: &[f64], n: usize, mode: Mode) -> Vec<Option<usize>> {
        let e = self.config.num_experts;
        let mut indices = vec![None; n * e];
        if let (Mode::Eval, Some(thresholds)) = (mode, &self.thresholds) {
            for (u, row) in s.chunks(e).enumerate() {
                for (expert, (&a, &t)) in row.iter().zip(thresholds).enumerate() {
                    if a >= t {
                        indices[u * e + expert] = Some(expert);
                    }
                }
                if indices[u * e..(u + 1) * e].iter().all(Option::is_none) {
                    let best = topk_lowest(row, 1)[0];
                    indices[u * e + best] = Some(best);
                }
            }
            return indices;
        }
        let cap = self.capacity(n);
        let mut lowest = vec![f64::INFINITY; e];
        for (expert, low) in lowest.iter_mut().enumerate() {
            let column: Vec<f64> = (0..n).map(|u| s[u * e + expert]).collect();
            for u in topk_lowest(&column, cap) {
                indices[u * e + expert] = Some(expert);
                *low = low.min(column[u]);
            }
        }
        if mode == Mode::Train
            && let Ok(mut last) = self.last_batch.lock()
        {
            *last = Some(lowest);
        }
        indices
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
    /// In evaluation, after training, experts choose by their thresholds instead of top-C.
    fn route(&self, input: &RouterInput<B>, rng: &mut Rng) -> mixer_core::Result<Routing<B>> {
        let e = self.config.num_experts;
        let [n, _] = input.features.dims();
        let device = input.features.device();
        let s = softmax(linear_logits(&self.w_gate, input, 0.0, rng)?, 1);
        let indices = self.choose(&host::to_vec(s.clone()), n, input.mode);
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
    use mixer_core::Seeds;

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
    fn after_training_a_single_unit_is_routed_by_the_learned_thresholds() {
        let mut r = router(2, 3);
        let device = Default::default();
        let mut rng = Seeds::new(4).stream("x");
        let x: Vec<f64> = (0..6 * 2).map(|_| rand::Rng::sample(&mut rng, rand_distr::StandardNormal)).collect();
        let batch = RouterInput { features: host::tensor2(&x, [6, 2], &device), mode: Mode::Train };
        let trained = r.route(&batch, &mut rng).unwrap();
        let s = host::to_vec(trained.probs.unwrap());
        r.after_step(&[]);
        // the first step's thresholds are each expert's lowest taken affinity
        let want: Vec<f64> = (0..3)
            .map(|e| {
                (0..6)
                    .filter(|u| trained.indices[u * 3 + e].is_some())
                    .map(|u| s[u * 3 + e])
                    .fold(f64::INFINITY, f64::min)
            })
            .collect();
        assert_eq!(r.thresholds().unwrap(), want.as_slice());
        // each unit alone, in evaluation: taken by exactly the experts whose threshold it
        // reaches, or by its best expert when it reaches none
        for u in 0..6 {
            let one = RouterInput { features: host::tensor2(&x[u * 2..u * 2 + 2], [1, 2], &device), mode: Mode::Eval };
            let out = r.route(&one, &mut rng).unwrap();
            let row = &s[u * 3..u * 3 + 3];
            let reached: Vec<bool> = (0..3).map(|e| row[e] >= want[e]).collect();
            let best = topk_lowest(row, 1)[0];
            for e in 0..3 {
                let taken = reached[e] || (!reached.contains(&true) && e == best);
                assert_eq!(out.indices[e].is_some(), taken, "unit {u} expert {e}");
            }
        }
        // a unit far below every threshold still gets its best expert
        r.thresholds = Some(vec![2.0; 3]);
        let out =
            r.route(&RouterInput { features: host::tensor2(&x[..2], [1, 2], &device), mode: Mode::Eval }, &mut rng);
        assert_eq!(out.unwrap().indices.iter().flatten().count(), 1);
        // the next training step sets them again; the state round-trips
        r.route(&batch, &mut rng).unwrap();
        r.after_step(&[]);
        assert_eq!(r.thresholds().unwrap(), want.as_slice());
        let state = r.refit_state();
        let mut fresh = router(2, 3);
        fresh.load_refit_state(state.as_ref()).unwrap();
        assert_eq!(fresh.thresholds(), r.thresholds());
        assert!(fresh.load_refit_state(Some(&serde_json::json!({ "thresholds": [0.1] }))).is_err());
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
