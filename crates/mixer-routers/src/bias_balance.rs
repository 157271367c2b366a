//! Auxiliary-loss-free load balancing (Wang et al. 2024, used by DeepSeek-V3): experts are
//! selected by `g + b`, where `g = softmax(x W)` is the gate and `b` a per-expert bias that is
//! not trained by gradient but nudged after every optimizer step, `b_e += rate * sign(mean
//! load - load_e)`; the combine weights are the gates of the selected experts, without the
//! bias. Balance comes without a loss term that competes with the task loss.

use burn::module::{Module, Param};
use burn::tensor::{Tensor, activation::softmax, backend::Backend};
use serde::{Deserialize, Serialize};

use mixer_core::{Granularity, Rng, Router, RouterInput, Routing, host};

use crate::gating::{int_tensor, linear_logits, reduced_init};
use crate::spec::check_coefficients;
use crate::{Refit, RouterError, RouterShape, RouterSpec, select::topk_lowest};

/// `[router]` settings of [`BiasBalance`] (`kind = "bias-balance"`): top-1 and bias rate 1e-3
/// (the paper's update rate) by default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BiasBalanceSettings {
    /// Experts per unit `k`.
    pub top_k: usize,
    /// Bias update rate `u`.
    pub rate: f64,
    /// Initialisation scale `s`: weights drawn with standard deviation `sqrt(s / d)`.
    pub init_scale: f64,
}

impl Default for BiasBalanceSettings {
    fn default() -> Self {
        Self { top_k: 1, rate: 1e-3, init_scale: 0.1 }
    }
}

impl RouterSpec for BiasBalanceSettings {
    type Router<B: Backend> = BiasBalance<B>;

    fn check(&self, shape: RouterShape) -> Result<(), RouterError> {
        shape.check()?;
        if self.top_k == 0 || self.top_k > shape.experts {
            return Err(RouterError::InvalidTopK { k: self.top_k, experts: shape.experts, max: shape.experts });
        }
        check_coefficients(&[("rate", Some(self.rate)), ("init_scale", Some(self.init_scale))])
    }

    fn build<B: Backend>(
        &self,
        shape: RouterShape,
        rng: &mut Rng,
        device: &B::Device,
    ) -> Result<BiasBalance<B>, RouterError> {
        self.check(shape)?;
        let w_gate = reduced_init(shape.features, shape.experts, self.init_scale, rng, device);
        Ok(BiasBalance { w_gate, settings: self.clone(), bias: vec![0.0; shape.experts] })
    }
}

/// Top-k of `softmax(x W) + b` (ties to the lowest index), weighted by `softmax(x W)`; the bias
/// `b` starts at zero and moves only in [`Refit::after_step`].
#[derive(Module, Debug)]
pub struct BiasBalance<B: Backend> {
    /// Router weight `W: [d, E]`.
    pub w_gate: Param<Tensor<B, 2>>,
    #[module(skip)]
    settings: BiasBalanceSettings,
    #[module(skip)]
    bias: Vec<f64>,
}

impl<B: Backend> BiasBalance<B> {
    /// The selection bias of each expert.
    pub fn bias(&self) -> &[f64] {
        &self.bias
    }
}

impl<B: Backend> Router<B> for BiasBalance<B> {
    fn num_experts(&self) -> usize {
        self.bias.len()
    }

    fn top_k(&self) -> usize {
        self.settings.top_k
    }

    fn granularity(&self) -> Granularity {
        Granularity::Token
    }

    /// Nothing random and no auxiliary loss, in either mode.
    fn route(&self, input: &RouterInput<B>, rng: &mut Rng) -> mixer_core::Result<Routing<B>> {
        let (e, k) = (self.bias.len(), self.settings.top_k);
        let [n, _] = input.features.dims();
        let probs = softmax(linear_logits(&self.w_gate, input, 0.0, rng)?, 1);
        let chosen: Vec<usize> = host::to_vec(probs.clone())
            .chunks(e)
            .flat_map(|row| {
                let biased: Vec<f64> = row.iter().zip(&self.bias).map(|(g, b)| g + b).collect();
                topk_lowest(&biased, k)
            })
            .collect();
        let weights = probs.clone().gather(1, int_tensor(&chosen, [n, k], &input.features.device()));
        let indices = chosen.into_iter().map(Some).collect();
        Ok(Routing { k, indices, weights, shared: vec![], probs: Some(probs), aux_losses: vec![] })
    }
}

/// The bias update, and the bias as checkpointed state (it is not a burn parameter).
impl<B: Backend> Refit for BiasBalance<B> {
    fn after_step(&mut self, load: &[usize]) {
        if load.len() != self.bias.len() {
            return;
        }
        let mean = load.iter().sum::<usize>() as f64 / load.len() as f64;
        for (b, &l) in self.bias.iter_mut().zip(load) {
            let error = mean - l as f64;
            if error != 0.0 {
                *b += self.settings.rate * error.signum();
            }
        }
    }

    fn refit_state(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({ "bias": self.bias }))
    }

    fn load_refit_state(&mut self, state: Option<&serde_json::Value>) -> Result<(), RouterError> {
        let bias: Vec<f64> = state
            .and_then(|s| s.get("bias"))
            .and_then(|b| serde_json::from_value(b.clone()).ok())
            .ok_or_else(|| RouterError::State { reason: "the bias-balance router needs its biases".into() })?;
        if bias.len() != self.bias.len() || bias.iter().any(|b| !b.is_finite()) {
            let reason = format!("{} finite biases expected, got {:?}", self.bias.len(), bias);
            return Err(RouterError::State { reason });
        }
        self.bias = bias;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestBackend;
    use mixer_core::{Mode, Seeds};

    #[test]
    fn the_bias_moves_units_off_an_overloaded_expert_until_load_evens_out() {
        let shape = RouterShape { experts: 2, features: 1 };
        let settings = BiasBalanceSettings { rate: 0.01, ..Default::default() };
        let mut r = settings.build::<TestBackend>(shape, &mut Seeds::new(0).stream("w"), &Default::default()).unwrap();
        r.w_gate = Param::from_tensor(host::tensor2(&[1.0, 0.0], [1, 2], &Default::default()));
        // Features 0.1..2.0: every unit prefers expert 0, with gate margins from 0.05 to 0.76.
        let x: Vec<f64> = (1..=20).map(|i| i as f64 * 0.1).collect();
        let x = host::tensor2::<TestBackend>(&x, [20, 1], &Default::default());
        let mut rng = Seeds::new(0).stream("r");
        let mut load = vec![];
        for _ in 0..100 {
            let routing = r.route(&RouterInput { features: x.clone(), mode: Mode::Train }, &mut rng).unwrap();
            load = routing.load(2);
            r.after_step(&load);
        }
        assert!(load[0].abs_diff(load[1]) <= 2, "load {load:?} bias {:?}", r.bias());
        assert!(r.bias()[1] > 0.0 && r.bias()[0] < 0.0, "{:?}", r.bias());
        let mut fresh =
            settings.build::<TestBackend>(shape, &mut Seeds::new(1).stream("w"), &Default::default()).unwrap();
        fresh.load_refit_state(r.refit_state().as_ref()).unwrap();
        assert_eq!(fresh.bias(), r.bias());
        assert!(fresh.load_refit_state(Some(&serde_json::json!({ "bias": [0.0] }))).is_err());
    }
}
