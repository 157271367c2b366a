//! GShard top-2 routing (Lepikhin et al. 2021): softmax over every expert, the two most
//! probable experts with their gates renormalised to sum to one, the second kept only with
//! probability `min(1, 2 g2)`, the Switch-form balance loss, and an opt-in capacity that
//! places every first choice before any second choice.

use burn::module::{Module, Param};
use burn::tensor::{Tensor, activation::softmax, backend::Backend};
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use mixer_core::{Granularity, Mode, Rng, Router, RouterInput, Routing, host};

use crate::gating::{
    balance_and_z_losses, capacity, int_tensor, keep_within_capacity, linear_logits, reduced_init, zero_dropped,
};
use crate::switch::check_softmax_router;
use crate::{Refit, RouterError, RouterShape, RouterSpec, select::topk_lowest};

/// `[router]` settings of [`GShard`] (`kind = "gshard"`). Balance coefficient 1e-2 and random
/// second dispatch as in the paper; dropless unless `capacity_factor` is set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GShardSettings {
    /// Slots per expert `ceil(2 N * factor / E)`; first choices are placed before second
    /// choices, and a choice beyond it is dropped. `None`: no limit. The paper uses 1 (`2N/E`).
    pub capacity_factor: Option<f64>,
    /// Balance loss `E * sum_e (c_e / N) m_e` coefficient (`c_e` first choices of `e`).
    pub balance: f64,
    /// Router z-loss coefficient, if wanted.
    pub z_loss: Option<f64>,
    /// Training inputs are multiplied by `U(1 - jitter, 1 + jitter)`; GShard uses none.
    pub jitter: f64,
    /// Keep the second expert with probability `min(1, 2 g2)` in training (in evaluation: when
    /// `2 g2 >= 1/2`); `false` always keeps it.
    pub random_second: bool,
    /// Initialisation scale `s`: weights drawn with standard deviation `sqrt(s / d)`.
    pub init_scale: f64,
}

impl Default for GShardSettings {
    fn default() -> Self {
        Self { capacity_factor: None, balance: 1e-2, z_loss: None, jitter: 0.0, random_second: true, init_scale: 0.1 }
    }
}

impl RouterSpec for GShardSettings {
    type Router<B: Backend> = GShard<B>;

    fn check(&self, shape: RouterShape) -> Result<(), RouterError> {
        let coefficients = [
            ("balance", Some(self.balance)),
            ("z_loss", self.z_loss),
            ("jitter", Some(self.jitter)),
            ("init_scale", Some(self.init_scale)),
        ];
        check_softmax_router(shape, self.capacity_factor, &coefficients)?;
        if shape.experts < 2 {
            return Err(RouterError::InvalidTopK { k: 2, experts: shape.experts, max: shape.experts });
        }
        Ok(())
    }

    fn build<B: Backend>(
        &self,
        shape: RouterShape,
        rng: &mut Rng,
        device: &B::Device,
    ) -> Result<GShard<B>, RouterError> {
        self.check(shape)?;
        let w_gate = reduced_init(shape.features, shape.experts, self.init_scale, rng, device);
        Ok(GShard { w_gate, settings: self.clone() })
    }
}

/// The GShard router: `g = softmax(x W)`, experts `e1, e2` the two largest gates (ties to the
/// lowest index), weights `g_e / (g_e1 + g_e2)`; a dropped second choice has weight 0.
#[derive(Module, Debug)]
pub struct GShard<B: Backend> {
    /// Router weight `W: [d, E]`.
    pub w_gate: Param<Tensor<B, 2>>,
    #[module(skip)]
    settings: GShardSettings,
}

impl<B: Backend> Router<B> for GShard<B> {
    fn num_experts(&self) -> usize {
        self.w_gate.dims()[1]
    }

    fn top_k(&self) -> usize {
        2
    }

    fn granularity(&self) -> Granularity {
        Granularity::Token
    }

    fn is_batch_coupled(&self) -> bool {
        self.settings.capacity_factor.is_some()
    }

    /// Train: jitter, then one uniform per unit (row order) from `rng` for the second dispatch,
    /// balance loss and optional z-loss. Eval: no draws, no auxiliary loss.
    fn route(&self, input: &RouterInput<B>, rng: &mut Rng) -> mixer_core::Result<Routing<B>> {
        let [n, e] = [input.features.dims()[0], self.w_gate.dims()[1]];
        let train = input.mode == Mode::Train;
        let s = &self.settings;
        let logits = linear_logits(&self.w_gate, input, s.jitter, rng)?;
        let probs = softmax(logits.clone(), 1);
        let host_probs = host::to_vec(probs.clone());
        let chosen: Vec<usize> = host_probs.chunks(e).flat_map(|row| topk_lowest(row, 2)).collect();
        let mut keep = vec![true; 2 * n];
        if s.random_second {
            for (u, row) in host_probs.chunks(e).enumerate() {
                let (g1, g2) = (row[chosen[2 * u]], row[chosen[2 * u + 1]]);
                let p_keep = (2.0 * g2 / (g1 + g2)).min(1.0);
                keep[2 * u + 1] = if train { rng.random::<f64>() < p_keep } else { p_keep >= 0.5 };
            }
        }
        if let Some(factor) = s.capacity_factor {
            let firsts = (0..n).map(|u| (2 * u, chosen[2 * u]));
            let seconds = (0..n).filter(|u| keep[2 * u + 1]).map(|u| (2 * u + 1, chosen[2 * u + 1]));
            keep = keep_within_capacity(firsts.chain(seconds), 2 * n, e, capacity(2 * n, factor, e));
        }
        let device = input.features.device();
        let top2 = probs.clone().gather(1, int_tensor(&chosen, [n, 2], &device));
        let total = top2.clone().sum_dim(1).expand([n, 2]);
        let weights = zero_dropped(top2 / total, &keep);
        let first: Vec<usize> = chosen.iter().step_by(2).copied().collect();
        let aux_losses =
            if train { balance_and_z_losses(probs.clone(), &first, s.balance, logits, s.z_loss) } else { vec![] };
        let indices = chosen.into_iter().zip(keep).map(|(i, k)| k.then_some(i)).collect();
        Ok(Routing { k: 2, indices, weights, shared: vec![], probs: Some(probs), aux_losses })
    }
}

impl<B: Backend> Refit for GShard<B> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestBackend;
    use mixer_core::Seeds;

    fn router(settings: GShardSettings, w: &[f64]) -> GShard<TestBackend> {
        let shape = RouterShape { experts: 3, features: 1 };
        let mut r = settings.build::<TestBackend>(shape, &mut Seeds::new(0).stream("w"), &Default::default()).unwrap();
        r.w_gate = Param::from_tensor(host::tensor2(w, [1, 3], &Default::default()));
        r
    }

    fn eval(r: &GShard<TestBackend>, x: &[f64]) -> Routing<TestBackend> {
        let x = host::tensor2::<TestBackend>(x, [x.len(), 1], &Default::default());
        r.route(&RouterInput { features: x, mode: Mode::Eval }, &mut Seeds::new(0).stream("r")).unwrap()
    }

    #[test]
    fn weights_are_renormalised_and_a_weak_second_choice_is_dropped_in_eval() {
        // Logits (0, 1, 2) * x: x = 0.1 gives near-even gates (second kept), x = 5 a dominant
        // third expert (renormalised second gate e^5 / (e^10 + e^5) < 1/4, dropped).
        let r = router(GShardSettings::default(), &[0.0, 1.0, 2.0]);
        let routing = eval(&r, &[0.1, 5.0]);
        assert_eq!(routing.indices, vec![Some(2), Some(1), Some(2), None]);
        let w = host::to_vec(routing.weights);
        let g = [0.1f64.exp(), 0.2f64.exp()];
        assert!((w[0] - g[1] / (g[0] + g[1])).abs() < 1e-12 && (w[0] + w[1] - 1.0).abs() < 1e-12, "{w:?}");
        assert!(w[2] > 0.99 && w[3] == 0.0, "{w:?}");
    }

    #[test]
    fn training_keeps_the_second_choice_at_rate_two_g2() {
        // Renormalised g2 = 1 / (1 + e) ~ 0.269 at x = 1: kept with probability ~ 0.538.
        let r = router(GShardSettings::default(), &[-9.0, 0.0, 1.0]);
        let x = host::tensor2::<TestBackend>(&vec![1.0; 4000], [4000, 1], &Default::default());
        let routing = r.route(&RouterInput { features: x, mode: Mode::Train }, &mut Seeds::new(3).stream("r")).unwrap();
        let kept = routing.indices.iter().skip(1).step_by(2).filter(|i| i.is_some()).count() as f64 / 4000.0;
        let expected = 2.0 / (1.0 + 1f64.exp());
        assert!((kept - expected).abs() < 0.03, "kept {kept}, expected {expected}");
    }

    #[test]
    fn capacity_places_first_choices_before_second_choices() {
        // Every unit prefers expert 2 then 1; capacity ceil(2 * 3 * 0.5 / 3) = 1 per expert.
        let settings = GShardSettings { capacity_factor: Some(0.5), random_second: false, ..Default::default() };
        let r = router(settings, &[0.0, 1.0, 2.0]);
        let routing = eval(&r, &[1.0, 1.0, 1.0]);
        assert_eq!(routing.indices, vec![Some(2), Some(1), None, None, None, None]);
    }
}
