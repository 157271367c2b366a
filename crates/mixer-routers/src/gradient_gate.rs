//! The naive-MoE baseline gate (MixER, Nzoyem et al. 2025): a softmax gate on contexts trained by gradient.

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Int, Tensor, TensorData, activation::softmax, backend::Backend};
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use mixer_core::{AuxKind, AuxLoss, Granularity, Mode, Rng, Router, RouterInput, Routing, host};

use crate::spec::check_coefficients;
use crate::{Refit, RouterError, RouterShape, RouterSpec, balance::cv_squared, select::argmax_lowest};

/// How the gate's softmax becomes combine weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GateMode {
    /// Switch style: top-1 expert, output multiplied by its (differentiable) softmax probability.
    SwitchTop1,
    /// Dense mixture: every expert, weighted by its softmax probability.
    DenseSoftmax,
}

/// Configuration of [`GradientGate`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GradientGateConfig {
    /// Context size `d_xi` (gate input).
    pub context_dim: usize,
    /// Number of experts `K`.
    pub num_experts: usize,
    /// Top-1 (Switch) or dense.
    pub mode: GateMode,
    /// Coefficient of the importance loss `CV^2` (0.1 in the MixER paper).
    pub importance_coef: f64,
}

impl GradientGateConfig {
    /// A config with the documented importance coefficient 0.1.
    pub fn new(context_dim: usize, num_experts: usize, mode: GateMode) -> Self {
        Self { context_dim, num_experts, mode, importance_coef: 0.1 }
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), RouterError> {
        RouterShape { experts: self.num_experts, features: self.context_dim }.check()?;
        check_coefficients(&[("importance_coef", Some(self.importance_coef))])
    }

    /// Validates, then builds the gate on `device`: weight and bias uniform on `±1/sqrt(d_xi)`
    /// (the usual linear-layer initialisation), drawn row-major from `rng`, weight first.
    pub fn init<B: Backend>(&self, device: &B::Device, rng: &mut Rng) -> Result<GradientGate<B>, RouterError> {
        self.validate()?;
        let (d, k) = (self.context_dim, self.num_experts);
        let bound = 1.0 / (d as f64).sqrt();
        let mut draw = |len: usize| -> Vec<f64> { (0..len).map(|_| rng.random_range(-bound..bound)).collect() };
        let mut linear = LinearConfig::new(d, k).init(device);
        linear.weight = Param::from_tensor(host::tensor2(&draw(d * k), [d, k], device));
        linear.bias = Some(Param::from_tensor(Tensor::from_data(TensorData::new(draw(k), [k]), device)));
        Ok(GradientGate {
            linear,
            mode: self.mode,
            num_experts: self.num_experts,
            importance_coef: self.importance_coef,
        })
    }
}

/// `[router]` settings of [`GradientGate`] (`kind = "gradient"`): Switch top-1 with importance
/// coefficient 0.1 by default, as the MixER paper's naive-MoE baseline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GradientSettings {
    /// Switch-style weighted top-1 or dense softmax.
    pub mode: GateMode,
    /// Coefficient of the importance (CV^2) balancing loss.
    pub importance: f64,
}

impl Default for GradientSettings {
    fn default() -> Self {
        Self { mode: GateMode::SwitchTop1, importance: 0.1 }
    }
}

impl GradientSettings {
    fn config(&self, shape: RouterShape) -> GradientGateConfig {
        GradientGateConfig {
            importance_coef: self.importance,
            ..GradientGateConfig::new(shape.features, shape.experts, self.mode)
        }
    }
}

impl RouterSpec for GradientSettings {
    type Router<B: Backend> = GradientGate<B>;

    fn check(&self, shape: RouterShape) -> Result<(), RouterError> {
        self.config(shape).validate()
    }

    fn build<B: Backend>(
        &self,
        shape: RouterShape,
        rng: &mut Rng,
        device: &B::Device,
    ) -> Result<GradientGate<B>, RouterError> {
        self.config(shape).init(device, rng)
    }
}

impl<B: Backend> Refit for GradientGate<B> {}

/// A linear softmax gate `d_xi -> K` (with bias) trained by gradient; routes environment contexts.
#[derive(Module, Debug)]
pub struct GradientGate<B: Backend> {
    /// The gate's linear map; weight `[d_xi, K]`, bias `[K]`.
    pub linear: Linear<B>,
    #[module(skip)]
    mode: GateMode,
    num_experts: usize,
    importance_coef: f64,
}

impl<B: Backend> GradientGate<B> {
    /// Gate probabilities `softmax(xi W + b)`: contexts `[N, d_xi]` → `[N, K]`.
    pub fn probs(&self, contexts: Tensor<B, 2>) -> Tensor<B, 2> {
        softmax(self.linear.forward(contexts), 1)
    }

    /// Importance loss `CV^2` (population variance) of the mean gate probability per expert over the
    /// `N` routed environments: `probs [N, K]` → `[1]`.
    pub fn importance_loss(probs: Tensor<B, 2>) -> Tensor<B, 1> {
        let k = probs.dims()[1];
        cv_squared(probs.mean_dim(0).reshape([k]))
    }

    /// The gate mode.
    pub fn mode(&self) -> GateMode {
        self.mode
    }

    /// The importance loss coefficient.
    pub fn importance_coef(&self) -> f64 {
        self.importance_coef
    }
}

impl<B: Backend> Router<B> for GradientGate<B> {
    fn num_experts(&self) -> usize {
        self.num_experts
    }

    fn top_k(&self) -> usize {
        match self.mode {
            GateMode::SwitchTop1 => 1,
            GateMode::DenseSoftmax => self.num_experts,
        }
    }

    fn granularity(&self) -> Granularity {
        Granularity::Environment
    }

    /// Routes contexts `[N, d_xi]`. Switch: `k = 1`, weight `[N, 1]` = the chosen expert's probability
    /// (argmax, ties to the lowest index). Dense: `k = K`, weights `[N, K]` = all probabilities. In
    /// `Mode::Train` the importance loss (kind `Importance`) is returned with its coefficient.
    fn route(&self, input: &RouterInput<B>, _rng: &mut Rng) -> mixer_core::Result<Routing<B>> {
        let [n, _] = input.features.dims();
        let features = self.linear.weight.dims()[0];
        RouterShape { experts: self.num_experts, features }.check_features(input.features.dims())?;
        let device = input.features.device();
        let probs = self.probs(input.features.clone());
        let k_all = self.num_experts;
        let (k, indices, weights) = match self.mode {
            GateMode::SwitchTop1 => {
                let host_probs = host::to_vec(probs.clone());
                let chosen: Vec<usize> = host_probs.chunks(k_all).map(argmax_lowest).collect();
                let idx: Vec<i64> = chosen.iter().map(|&e| e as i64).collect();
                let idx = Tensor::<B, 2, Int>::from_data(TensorData::new(idx, [n, 1]), &device);
                (1, chosen.into_iter().map(Some).collect(), probs.clone().gather(1, idx))
            }
            GateMode::DenseSoftmax => {
                let indices = (0..n).flat_map(|_| (0..k_all).map(Some)).collect();
                (k_all, indices, probs.clone())
            }
        };
        let aux_losses = match input.mode {
            Mode::Train => vec![AuxLoss {
                kind: AuxKind::Importance,
                value: Self::importance_loss(probs.clone()),
                coefficient: self.importance_coef,
            }],
            Mode::Eval => vec![],
        };
        Ok(Routing { k, indices, weights, shared: vec![], probs: Some(probs), aux_losses })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{TestAutodiffBackend, TestBackend};
    use burn::backend::{Autodiff, Flex};
    use mixer_core::Seeds;

    type B64 = TestBackend;

    fn gate_with<B: Backend>(mode: GateMode, w: &[f64], b: &[f64], device: &B::Device) -> GradientGate<B> {
        let mut gate =
            GradientGateConfig::new(2, 3, mode).init::<B>(device, &mut Seeds::new(0).stream("gate")).unwrap();
        gate.linear.weight = Param::from_tensor(host::tensor2(w, [2, 3], device));
        gate.linear.bias = Some(Param::from_tensor(Tensor::from_data(TensorData::new(b.to_vec(), [3]), device)));
        gate
    }

    const W: [f64; 6] = [0.5, -0.3, 0.2, 0.1, 0.4, -0.6];
    const BIAS: [f64; 3] = [0.05, -0.1, 0.0];
    const CTX: [f64; 8] = [1.0, 0.0, 0.0, 1.0, -1.0, 0.5, 0.3, -0.8];

    fn hand_probs() -> Vec<Vec<f64>> {
        CTX.chunks(2)
            .map(|x| {
                let logits: Vec<f64> = (0..3).map(|j| x[0] * W[j] + x[1] * W[3 + j] + BIAS[j]).collect();
                crate::softmax_row(&logits)
            })
            .collect()
    }

    fn route<B: Backend>(gate: &GradientGate<B>, mode: Mode, device: &B::Device) -> Routing<B> {
        let input = RouterInput { features: host::tensor2(&CTX, [4, 2], device), mode };
        gate.route(&input, &mut Seeds::new(0).stream("r")).unwrap()
    }

    #[test]
    fn dense_weights_are_softmax_and_sum_to_one() {
        let device = Default::default();
        let gate = gate_with::<B64>(GateMode::DenseSoftmax, &W, &BIAS, &device);
        let r = route(&gate, Mode::Eval, &device);
        assert_eq!(r.k, 3);
        assert!(r.aux_losses.is_empty());
        let w = host::to_vec(r.weights);
        for (row, hand) in w.chunks(3).zip(hand_probs()) {
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            for (a, b) in row.iter().zip(&hand) {
                assert!((a - b).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn switch_weight_is_chosen_probability() {
        let device = Default::default();
        let gate = gate_with::<B64>(GateMode::SwitchTop1, &W, &BIAS, &device);
        let r = route(&gate, Mode::Eval, &device);
        let w = host::to_vec(r.weights);
        for (n, hand) in hand_probs().iter().enumerate() {
            let e = argmax_lowest(hand);
            assert_eq!(r.indices[n], Some(e));
            assert!((w[n] - hand[e]).abs() < 1e-12, "row {n}: {} vs {}", w[n], hand[e]);
        }
        // Hand-checked: context (1, 0) has logits (0.55, -0.4, 0.2) → expert 0.
        assert_eq!(r.indices[0], Some(0));
    }

    #[test]
    fn importance_cv2_matches_hand_value_in_train_only() {
        let device = Default::default();
        let gate = gate_with::<B64>(GateMode::SwitchTop1, &W, &BIAS, &device);
        let r = route(&gate, Mode::Train, &device);
        let probs = hand_probs();
        let mean: Vec<f64> = (0..3).map(|j| probs.iter().map(|p| p[j]).sum::<f64>() / 4.0).collect();
        let mu = mean.iter().sum::<f64>() / 3.0;
        let var = mean.iter().map(|m| (m - mu).powi(2)).sum::<f64>() / 3.0;
        let hand = var / (mu * mu);
        assert_eq!(r.aux_losses.len(), 1);
        assert_eq!(r.aux_losses[0].kind, AuxKind::Importance);
        assert_eq!(r.aux_losses[0].coefficient, 0.1);
        let got = host::to_vec(r.aux_losses[0].value.clone())[0];
        assert!((got - hand).abs() < 1e-9 * hand.max(1.0), "{got} vs {hand}");
        assert!(hand > 1e-4, "test data must be unbalanced: {hand}");
    }

    fn loss<B: Backend>(gate: &GradientGate<B>, device: &B::Device) -> Tensor<B, 1> {
        let r = route(gate, Mode::Train, device);
        let aux = r.aux_losses[0].value.clone() * r.aux_losses[0].coefficient;
        // A fixed linear functional of the weights plus the weighted importance loss.
        let c = host::tensor2(&[1.0, -2.0, 0.5, 3.0], [4, 1], device);
        (r.weights * c).sum() + aux
    }

    #[test]
    fn gradients_reach_gate_weights_and_match_finite_differences() {
        let device = Default::default();
        let gate = gate_with::<Autodiff<B64>>(GateMode::SwitchTop1, &W, &BIAS, &device);
        let grads = loss(&gate, &device).backward();
        let g = host::to_vec(gate.linear.weight.grad(&grads).expect("weight grad"));
        let gb = host::to_vec(gate.linear.bias.as_ref().unwrap().grad(&grads).expect("bias grad"));
        let h = 1e-6;
        for i in 0..6 {
            let (mut wp, mut wm) = (W, W);
            wp[i] += h;
            wm[i] -= h;
            let fp = host::to_vec(loss(&gate_with::<B64>(GateMode::SwitchTop1, &wp, &BIAS, &device), &device))[0];
            let fm = host::to_vec(loss(&gate_with::<B64>(GateMode::SwitchTop1, &wm, &BIAS, &device), &device))[0];
            let fd = (fp - fm) / (2.0 * h);
            assert!((g[i] - fd).abs() < 1e-6, "w[{i}]: autodiff {} vs fd {fd}", g[i]);
        }
        assert!(g.iter().any(|v| v.abs() > 1e-3) && gb.iter().any(|v| v.abs() > 1e-3));
    }

    #[test]
    fn f32_flex_backend_agrees_with_f64() {
        let device = Default::default();
        let gate = gate_with::<Autodiff<Flex>>(GateMode::DenseSoftmax, &W, &BIAS, &device);
        let grads = loss(&gate, &device).backward();
        let g32 = host::to_vec(gate.linear.weight.grad(&grads).expect("weight grad"));
        let device64 = Default::default();
        let gate64 = gate_with::<TestAutodiffBackend>(GateMode::DenseSoftmax, &W, &BIAS, &device64);
        let grads64 = loss(&gate64, &device64).backward();
        let g64 = host::to_vec(gate64.linear.weight.grad(&grads64).expect("weight grad"));
        for (a, b) in g32.iter().zip(&g64) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn invalid_fields_are_rejected() {
        let ok = GradientGateConfig::new(2, 3, GateMode::DenseSoftmax);
        assert!(matches!(
            GradientGateConfig { num_experts: 0, ..ok.clone() }.validate(),
            Err(RouterError::ZeroExperts)
        ));
        assert!(matches!(
            GradientGateConfig { context_dim: 0, ..ok.clone() }.validate(),
            Err(RouterError::ZeroContextDim)
        ));
        let bad = GradientGateConfig { importance_coef: -0.1, ..ok }.validate();
        assert!(matches!(bad, Err(RouterError::InvalidCoefficient { field: "importance_coef", .. })));
    }
}
