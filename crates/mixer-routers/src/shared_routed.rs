//! MoE-POT's router (Wang et al. 2025, "Mixture-of-Experts Operator Transformer"): the last
//! `shared` experts are always on with weight `1 / shared` each; the others are routed top-k
//! on raw logits with weights `softmax(selected / T)`, where the temperature `T` anneals
//! geometrically with the optimizer steps. The balance loss is the variance of each routed
//! expert's importance around its ideal, divided by the ideal squared so that its scale does
//! not grow with the batch. The schedule is router state, kept in checkpoints.

use burn::module::{Module, Param};
use burn::tensor::{Bool, Tensor, TensorData, activation::softmax, backend::Backend};
use serde::{Deserialize, Serialize};

use mixer_core::{AuxKind, AuxLoss, Granularity, Mode, Rng, Router, RouterInput, Routing, host};

use crate::gating::{int_tensor, linear_logits, reduced_init};
use crate::spec::check_coefficients;
use crate::{Refit, RouterError, RouterShape, RouterSpec, select::topk_lowest};

/// `[router]` settings of [`SharedRouted`] (`kind = "shared-routed"`): MoE-POT's values (top 4
/// routed, 2 shared, `T` from 2 times 0.99 per step down to 0.5, balance 0.1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SharedRoutedSettings {
    /// Routed experts per unit `k`.
    pub top_k: usize,
    /// Always-on experts: the last `shared` of the model's experts.
    pub shared: usize,
    /// Softmax temperature at step 0.
    pub temperature: f64,
    /// Factor applied to the temperature after every optimizer step (1: constant).
    pub decay: f64,
    /// Floor of the temperature.
    pub min_temperature: f64,
    /// Balance loss coefficient.
    pub balance: f64,
    /// Initialisation scale `s`: weights drawn with standard deviation `sqrt(s / d)`.
    pub init_scale: f64,
}

impl Default for SharedRoutedSettings {
    fn default() -> Self {
        Self { top_k: 4, shared: 2, temperature: 2.0, decay: 0.99, min_temperature: 0.5, balance: 0.1, init_scale: 0.1 }
    }
}

impl RouterSpec for SharedRoutedSettings {
    type Router<B: Backend> = SharedRouted<B>;

    fn check(&self, shape: RouterShape) -> Result<(), RouterError> {
        shape.check()?;
        let routed = shape.experts.saturating_sub(self.shared);
        if self.top_k == 0 || self.top_k > shape.experts {
            return Err(RouterError::InvalidTopK { k: self.top_k, experts: shape.experts, max: routed.max(1) });
        }
        if routed < self.top_k {
            return Err(RouterError::TooManyShared { shared: self.shared, experts: shape.experts, k: self.top_k });
        }
        let positive = "a temperature must be positive and finite";
        for (field, value) in [("temperature", self.temperature), ("min_temperature", self.min_temperature)] {
            if !(value.is_finite() && value > 0.0) {
                return Err(RouterError::InvalidSchedule { field, value, expected: positive });
            }
        }
        if !(self.decay.is_finite() && self.decay > 0.0 && self.decay <= 1.0) {
            let expected = "the decay factor must lie in (0, 1]";
            return Err(RouterError::InvalidSchedule { field: "decay", value: self.decay, expected });
        }
        check_coefficients(&[("balance", Some(self.balance)), ("init_scale", Some(self.init_scale))])
    }

    fn build<B: Backend>(
        &self,
        shape: RouterShape,
        rng: &mut Rng,
        device: &B::Device,
    ) -> Result<SharedRouted<B>, RouterError> {
        self.check(shape)?;
        let routed = shape.experts - self.shared;
        let w_gate = reduced_init(shape.features, routed, self.init_scale, rng, device);
        Ok(SharedRouted { w_gate, settings: self.clone(), temperature: self.temperature })
    }
}

/// Top-k over the routed experts `0..E - shared`, annealed softmax weights, and always-on shared
/// experts `E - shared..E`. `probs` is `softmax(logits / T)` over the routed experts, zero on
/// the shared ones.
#[derive(Module, Debug)]
pub struct SharedRouted<B: Backend> {
    /// Router weight `W: [d, E - shared]`.
    pub w_gate: Param<Tensor<B, 2>>,
    #[module(skip)]
    settings: SharedRoutedSettings,
    #[module(skip)]
    temperature: f64,
}

impl<B: Backend> SharedRouted<B> {
    /// The current softmax temperature.
    pub fn temperature(&self) -> f64 {
        self.temperature
    }
}

impl<B: Backend> Router<B> for SharedRouted<B> {
    fn num_experts(&self) -> usize {
        self.w_gate.dims()[1] + self.settings.shared
    }

    fn top_k(&self) -> usize {
        self.settings.top_k
    }

    fn granularity(&self) -> Granularity {
        Granularity::Token
    }

    /// Nothing random. Train adds the variance balance loss over the routed experts.
    fn route(&self, input: &RouterInput<B>, rng: &mut Rng) -> mixer_core::Result<Routing<B>> {
        let (k, shared) = (self.settings.top_k, self.settings.shared);
        let routed = self.w_gate.dims()[1];
        let e = routed + shared;
        let [n, _] = input.features.dims();
        let device = input.features.device();
        let scaled = linear_logits(&self.w_gate, input, 0.0, rng)?.div_scalar(self.temperature);
        let chosen: Vec<usize> =
            host::to_vec(scaled.clone()).chunks(routed).flat_map(|row| topk_lowest(row, k)).collect();
        let mut unselected = vec![true; n * routed];
        for (u, row) in chosen.chunks(k).enumerate() {
            for &j in row {
                unselected[u * routed + j] = false;
            }
        }
        let mask = Tensor::<B, 2, Bool>::from_data(TensorData::new(unselected, [n, routed]), &device);
        // The selected weights scattered onto the routed experts, zero elsewhere.
        let spread = softmax(scaled.clone().mask_fill(mask, f64::NEG_INFINITY), 1);
        let weights = spread.clone().gather(1, int_tensor(&chosen, [n, k], &device));
        let mut aux_losses = vec![];
        if input.mode == Mode::Train {
            // Each unit's weights sum to one, so the ideal importance is N / routed.
            let ideal = n as f64 / routed as f64;
            let importance = spread.sum_dim(0).reshape([routed]);
            let value = importance.sub_scalar(ideal).div_scalar(ideal).powi_scalar(2).mean().reshape([1]);
            aux_losses.push(AuxLoss { kind: AuxKind::VarianceBalance, value, coefficient: self.settings.balance });
        }
        let mut probs = softmax(scaled, 1);
        if shared > 0 {
            probs = Tensor::cat(vec![probs, Tensor::zeros([n, shared], &device)], 1);
        }
        let shared = (routed..e).map(|j| (j, 1.0 / shared as f64)).collect();
        Ok(Routing {
            k,
            indices: chosen.into_iter().map(Some).collect(),
            weights,
            shared,
            probs: Some(probs),
            aux_losses,
        })
    }
}

/// The temperature schedule: `T <- max(T * decay, min_temperature)` after every step.
impl<B: Backend> Refit for SharedRouted<B> {
    fn after_step(&mut self, _load: &[usize]) {
        self.temperature = (self.temperature * self.settings.decay).max(self.settings.min_temperature);
    }

    fn refit_state(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({ "temperature": self.temperature }))
    }

    fn load_refit_state(&mut self, state: Option<&serde_json::Value>) -> Result<(), RouterError> {
        let temperature = state
            .and_then(|s| s.get("temperature"))
            .and_then(serde_json::Value::as_f64)
            .filter(|t| t.is_finite() && *t > 0.0)
            .ok_or_else(|| RouterError::State {
                reason: "the shared-routed router needs a positive temperature".into(),
            })?;
        self.temperature = temperature;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestBackend;
    use mixer_core::Seeds;

    const SHAPE: RouterShape = RouterShape { experts: 6, features: 2 };

    fn build(settings: SharedRoutedSettings) -> SharedRouted<TestBackend> {
        settings.build::<TestBackend>(SHAPE, &mut Seeds::new(0).stream("w"), &Default::default()).unwrap()
    }

    #[test]
    fn shared_experts_are_always_on_and_weights_follow_the_temperature() {
        let settings = SharedRoutedSettings { top_k: 2, shared: 2, ..Default::default() };
        let mut r = build(settings);
        r.w_gate =
            Param::from_tensor(host::tensor2(&[1.0, 2.0, 3.0, 0.5, 0.0, 0.0, 0.0, 0.0], [2, 4], &Default::default()));
        let x = host::tensor2::<TestBackend>(&[1.0, 0.0], [1, 2], &Default::default());
        let routing = r.route(&RouterInput { features: x, mode: Mode::Eval }, &mut Seeds::new(0).stream("r")).unwrap();
        assert_eq!(routing.indices, vec![Some(2), Some(1)]);
        assert_eq!(routing.shared, vec![(4, 0.5), (5, 0.5)]);
        // Logits 3 and 2 at T = 2: weights softmax(1.5, 1).
        let w = host::to_vec(routing.weights);
        let expected = 1.0 / (1.0 + (-0.5f64).exp());
        assert!((w[0] - expected).abs() < 1e-12 && (w[0] + w[1] - 1.0).abs() < 1e-12, "{w:?}");
    }

    #[test]
    fn the_temperature_anneals_to_its_floor_and_survives_a_checkpoint() {
        let mut r = build(SharedRoutedSettings::default());
        r.after_step(&[]);
        assert!((r.temperature() - 1.98).abs() < 1e-12);
        for _ in 0..200 {
            r.after_step(&[]);
        }
        assert_eq!(r.temperature(), 0.5);
        let state = r.refit_state();
        let mut fresh = build(SharedRoutedSettings::default());
        fresh.load_refit_state(state.as_ref()).unwrap();
        assert_eq!(fresh.temperature(), 0.5);
        assert!(fresh.load_refit_state(None).is_err());
    }

    #[test]
    fn bad_settings_name_their_field() {
        let err = SharedRoutedSettings { shared: 3, top_k: 4, ..Default::default() }.check(SHAPE).unwrap_err();
        assert_eq!(err.field(), "shared", "{err}");
        let err =
            SharedRoutedSettings { temperature: 0.0, ..Default::default() }.check(RouterShape { experts: 8, ..SHAPE });
        assert!(err.unwrap_err().to_string().contains("temperature"));
        let err = SharedRoutedSettings { decay: 1.5, ..Default::default() }.check(RouterShape { experts: 8, ..SHAPE });
        assert!(err.unwrap_err().to_string().contains("decay"));
    }
}
