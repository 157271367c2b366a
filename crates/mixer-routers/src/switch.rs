//! Switch top-1 routing (Fedus, Zoph and Shazeer 2022): softmax over every expert, the most
//! probable one takes the unit with its probability as weight, a balance loss, optional z-loss
//! and input jitter, and an opt-in capacity that drops the units an expert has no room for.

use burn::module::{Module, Param};
use burn::tensor::{Tensor, activation::softmax, backend::Backend};
use serde::{Deserialize, Serialize};

use mixer_core::{Granularity, Mode, Rng, Router, RouterInput, Routing, host};

use crate::gating::{
    balance_and_z_losses, capacity, int_tensor, keep_within_capacity, linear_logits, reduced_init, zero_dropped,
};
use crate::spec::check_coefficients;
use crate::{Refit, RouterError, RouterShape, RouterSpec, select::argmax_lowest};

/// `[router]` settings of [`Switch`] (`kind = "switch"`). Defaults follow the paper (balance
/// 1e-2, jitter 1e-2, initialisation scale 0.1) except the capacity: dropless unless
/// `capacity_factor` is set, so that a unit's expert never depends on its batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SwitchSettings {
    /// Units per expert `ceil(N * factor / E)`; beyond it a unit is dropped (weight 0, counted as
    /// `None`). `None`: no limit. The paper trains with 1.0–1.25.
    pub capacity_factor: Option<f64>,
    /// Balance loss `E * sum_i f_i P_i` coefficient.
    pub balance: f64,
    /// Router z-loss coefficient (1e-3 in ST-MoE), if wanted.
    pub z_loss: Option<f64>,
    /// Training inputs are multiplied by `U(1 - jitter, 1 + jitter)`.
    pub jitter: f64,
    /// Initialisation scale `s`: weights drawn with standard deviation `sqrt(s / d)`.
    pub init_scale: f64,
}

impl Default for SwitchSettings {
    fn default() -> Self {
        Self { capacity_factor: None, balance: 1e-2, z_loss: None, jitter: 1e-2, init_scale: 0.1 }
    }
}

/// Checks the fields Switch and GShard share.
pub(crate) fn check_softmax_router(
    shape: RouterShape,
    capacity_factor: Option<f64>,
    coefficients: &[(&'static str, Option<f64>)],
) -> Result<(), RouterError> {
    shape.check()?;
    if let Some(value) = capacity_factor.filter(|c| !(c.is_finite() && *c > 0.0)) {
        return Err(RouterError::InvalidCapacityFactor { value });
    }
    check_coefficients(coefficients)
}

impl RouterSpec for SwitchSettings {
    type Router<B: Backend> = Switch<B>;

    fn check(&self, shape: RouterShape) -> Result<(), RouterError> {
        let coefficients = [
            ("balance", Some(self.balance)),
            ("z_loss", self.z_loss),
            ("jitter", Some(self.jitter)),
            ("init_scale", Some(self.init_scale)),
        ];
        check_softmax_router(shape, self.capacity_factor, &coefficients)
    }

    fn build<B: Backend>(
        &self,
        shape: RouterShape,
        rng: &mut Rng,
        device: &B::Device,
    ) -> Result<Switch<B>, RouterError> {
        self.check(shape)?;
        let w_gate = reduced_init(shape.features, shape.experts, self.init_scale, rng, device);
        Ok(Switch { w_gate, settings: self.clone() })
    }
}

/// The Switch router: `p = softmax(x W)`, top-1 by `argmax p` (ties to the lowest index), weight
/// `p` of the chosen expert (not renormalised, so the gate gets a gradient).
#[derive(Module, Debug)]
pub struct Switch<B: Backend> {
    /// Router weight `W: [d, E]`.
    pub w_gate: Param<Tensor<B, 2>>,
    #[module(skip)]
    settings: SwitchSettings,
}

impl<B: Backend> Router<B> for Switch<B> {
    fn num_experts(&self) -> usize {
        self.w_gate.dims()[1]
    }

    fn top_k(&self) -> usize {
        1
    }

    fn granularity(&self) -> Granularity {
        Granularity::Token
    }

    fn is_batch_coupled(&self) -> bool {
        self.settings.capacity_factor.is_some()
    }

    /// Train: jitter drawn from `rng`, balance loss and optional z-loss. Units over capacity are
    /// dropped in position order (weight 0, index `None`).
    fn route(&self, input: &RouterInput<B>, rng: &mut Rng) -> mixer_core::Result<Routing<B>> {
        let [n, e] = [input.features.dims()[0], self.w_gate.dims()[1]];
        let train = input.mode == Mode::Train;
        let logits = linear_logits(&self.w_gate, input, self.settings.jitter, rng)?;
        let probs = softmax(logits.clone(), 1);
        let first: Vec<usize> = host::to_vec(probs.clone()).chunks(e).map(argmax_lowest).collect();
        let keep = match self.settings.capacity_factor {
            Some(factor) => keep_within_capacity(first.iter().copied().enumerate(), n, e, capacity(n, factor, e)),
            None => vec![true; n],
        };
        let device = input.features.device();
        let weights = zero_dropped(probs.clone().gather(1, int_tensor(&first, [n, 1], &device)), &keep);
        let s = &self.settings;
        let aux_losses =
            if train { balance_and_z_losses(probs.clone(), &first, s.balance, logits, s.z_loss) } else { vec![] };
        let indices = first.into_iter().zip(keep).map(|(i, k)| k.then_some(i)).collect();
        Ok(Routing { k: 1, indices, weights, shared: vec![], probs: Some(probs), aux_losses })
    }
}

impl<B: Backend> Refit for Switch<B> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestBackend;
    use mixer_core::Seeds;

    #[test]
    fn capacity_drops_the_late_units_of_a_full_expert() {
        let settings = SwitchSettings { capacity_factor: Some(1.0), ..Default::default() };
        let shape = RouterShape { experts: 2, features: 1 };
        let router = settings.build::<TestBackend>(shape, &mut Seeds::new(0).stream("w"), &Default::default()).unwrap();
        let w = host::to_vec(router.w_gate.val());
        // Four units on the side of one expert: capacity ceil(4 * 1 / 2) = 2 keeps the first two.
        let sign = if w[0] > w[1] { 1.0 } else { -1.0 };
        let x = host::tensor2::<TestBackend>(&[sign, 2.0 * sign, 3.0 * sign, 4.0 * sign], [4, 1], &Default::default());
        let r = router.route(&RouterInput { features: x, mode: Mode::Eval }, &mut Seeds::new(0).stream("r")).unwrap();
        assert_eq!(r.indices, vec![Some(0), Some(0), None, None]);
        let weights = host::to_vec(r.weights);
        assert!(weights[0] > 0.5 && weights[1] > 0.5 && weights[2] == 0.0 && weights[3] == 0.0, "{weights:?}");
        assert!(Router::<TestBackend>::is_batch_coupled(&router));
    }

    #[test]
    fn bad_settings_name_their_field() {
        let shape = RouterShape { experts: 3, features: 2 };
        let err = SwitchSettings { capacity_factor: Some(0.0), ..Default::default() }.check(shape).unwrap_err();
        assert!(err.to_string().contains("capacity_factor"), "{err}");
        let err = SwitchSettings { jitter: -1.0, ..Default::default() }.check(shape).unwrap_err();
        assert!(err.to_string().contains("jitter"), "{err}");
    }
}
