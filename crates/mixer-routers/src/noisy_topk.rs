//! Noisy top-k gating (Shazeer et al. 2017) with optional Switch balance and z-loss.

use burn::module::{Module, Param};
use burn::tensor::{Bool, Tensor, TensorData, activation, backend::Backend};
use rand::Rng as _;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use mixer_core::{AuxKind, AuxLoss, Granularity, Mode, Rng, Router, RouterInput, Routing, host};

use crate::gating::{int_tensor, switch_balance, z_loss};
use crate::spec::check_coefficients;
use crate::{Refit, RouterError, RouterShape, RouterSpec, balance::cv_squared, select::topk_lowest};

/// Configuration of [`NoisyTopK`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NoisyTopKConfig {
    /// Router input width `d`.
    pub input_dim: usize,
    /// Number of routed experts `E`.
    pub num_experts: usize,
    /// Experts per unit `k`.
    pub top_k: usize,
    /// Add learned Gaussian noise to the logits in training.
    pub noisy: bool,
    /// Floor added to the softplus noise scale (1e-2).
    pub noise_floor: f64,
    /// Importance loss coefficient (0.1).
    pub importance_coef: f64,
    /// Smooth load loss coefficient (0.1); needs `k + 1 <= E` when noise is on.
    pub load_coef: f64,
    /// Switch balance loss `E * sum_i f_i P_i` coefficient, if wanted (1e-2 in Switch).
    pub switch_balance_coef: Option<f64>,
    /// Router z-loss coefficient, if wanted (1e-3 in ST-MoE).
    pub z_loss_coef: Option<f64>,
    /// Always-on experts with fixed weights (MoE-POT), by index into the expert list.
    pub shared: Vec<(usize, f64)>,
}

impl NoisyTopKConfig {
    /// The paper's defaults: noise on, floor 1e-2, importance and load coefficients 0.1, nothing else.
    pub fn new(input_dim: usize, num_experts: usize, top_k: usize) -> Self {
        Self {
            input_dim,
            num_experts,
            top_k,
            noisy: true,
            noise_floor: 1e-2,
            importance_coef: 0.1,
            load_coef: 0.1,
            switch_balance_coef: None,
            z_loss_coef: None,
            shared: vec![],
        }
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), RouterError> {
        let (e, k) = (self.num_experts, self.top_k);
        RouterShape { experts: e, features: self.input_dim }.check()?;
        let needs_next = self.noisy && self.load_coef > 0.0;
        let max = if needs_next { e - 1 } else { e };
        if k == 0 || k > max {
            return Err(RouterError::InvalidTopK { k, experts: e, max });
        }
        if !(self.noise_floor.is_finite() && self.noise_floor >= 0.0) {
            return Err(RouterError::InvalidNoiseFloor { value: self.noise_floor });
        }
        let coefs = [
            ("importance_coef", Some(self.importance_coef)),
            ("load_coef", Some(self.load_coef)),
            ("switch_balance_coef", self.switch_balance_coef),
            ("z_loss_coef", self.z_loss_coef),
        ];
        check_coefficients(&coefs)?;
        for (i, &(index, weight)) in self.shared.iter().enumerate() {
            if index >= e || self.shared[..i].iter().any(|(j, _)| *j == index) {
                return Err(RouterError::InvalidSharedExpert { index, experts: e });
            }
            if !weight.is_finite() {
                return Err(RouterError::InvalidSharedWeight { index, weight });
            }
        }
        Ok(())
    }

    /// Validates, then builds the router with `W_g = W_noise = 0` (`[d, E]` each).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<NoisyTopK<B>, RouterError> {
        self.validate()?;
        let zeros = || Param::from_tensor(Tensor::zeros([self.input_dim, self.num_experts], device));
        Ok(NoisyTopK { w_gate: zeros(), w_noise: zeros(), config: self.clone() })
    }
}

/// `[router]` settings of [`NoisyTopK`] (`kind = "noisy-top-k"`): defaults are Shazeer et al.'s
/// (k = 2, noise on, floor 1e-2, importance and load coefficients 0.1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NoisyTopKSettings {
    /// Experts per unit `k`.
    pub top_k: usize,
    /// Learned Gaussian noise on the logits in training.
    pub noisy: bool,
    /// Floor added to the softplus noise scale.
    pub noise_floor: f64,
    /// Importance loss coefficient.
    pub importance: f64,
    /// Smooth load loss coefficient.
    pub load: f64,
    /// Switch balance loss coefficient, if wanted.
    pub switch_balance: Option<f64>,
    /// Router z-loss coefficient, if wanted.
    pub z_loss: Option<f64>,
}

impl Default for NoisyTopKSettings {
    fn default() -> Self {
        let c = NoisyTopKConfig::new(1, 1, 2);
        Self {
            top_k: c.top_k,
            noisy: c.noisy,
            noise_floor: c.noise_floor,
            importance: c.importance_coef,
            load: c.load_coef,
            switch_balance: None,
            z_loss: None,
        }
    }
}

impl NoisyTopKSettings {
    fn config(&self, shape: RouterShape) -> NoisyTopKConfig {
        NoisyTopKConfig {
            noisy: self.noisy,
            noise_floor: self.noise_floor,
            importance_coef: self.importance,
            load_coef: self.load,
            switch_balance_coef: self.switch_balance,
            z_loss_coef: self.z_loss,
            ..NoisyTopKConfig::new(shape.features, shape.experts, self.top_k)
        }
    }
}

impl RouterSpec for NoisyTopKSettings {
    type Router<B: Backend> = NoisyTopK<B>;

    fn check(&self, shape: RouterShape) -> Result<(), RouterError> {
        self.config(shape).validate()
    }

    fn build<B: Backend>(
        &self,
        shape: RouterShape,
        _rng: &mut Rng,
        device: &B::Device,
    ) -> Result<NoisyTopK<B>, RouterError> {
        self.config(shape).init(device)
    }
}

impl<B: Backend> Refit for NoisyTopK<B> {}

/// Noisy top-k gate: logits `x W_g`, training noise `softplus(x W_noise) + floor`, softmax over the k kept.
#[derive(Module, Debug)]
pub struct NoisyTopK<B: Backend> {
    /// Gate weight `W_g: [d, E]`, zero-initialised.
    pub w_gate: Param<Tensor<B, 2>>,
    /// Noise weight `W_noise: [d, E]`, zero-initialised, a parameter distinct from `W_g`.
    pub w_noise: Param<Tensor<B, 2>>,
    #[module(skip)]
    config: NoisyTopKConfig,
}

/// Standard normal CDF `Phi(x) = (1 + erf(x / sqrt 2)) / 2`.
fn normal_cdf<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    (x / std::f64::consts::SQRT_2).erf().add_scalar(1.0).mul_scalar(0.5)
}

impl<B: Backend> NoisyTopK<B> {
    /// The configuration.
    pub fn config(&self) -> &NoisyTopKConfig {
        &self.config
    }
}

impl<B: Backend> Router<B> for NoisyTopK<B> {
    fn num_experts(&self) -> usize {
        self.config.num_experts
    }

    fn top_k(&self) -> usize {
        self.config.top_k
    }

    fn granularity(&self) -> Granularity {
        Granularity::Token
    }

    /// Routes `features: [N, d]`. Train: noise `z ~ N(0, 1)` drawn row-major `[N, E]` from `rng`, auxiliary
    /// losses (importance, load, optional Switch balance and z-loss). Eval: no noise, no auxiliary loss.
    /// Weights `[N, k]` are the softmax over the k kept logits (descending, ties to the lowest index);
    /// `probs` is the sparse gate `[N, E]`.
    fn route(&self, input: &RouterInput<B>, rng: &mut Rng) -> mixer_core::Result<Routing<B>> {
        let c = &self.config;
        let (e, k) = (c.num_experts, c.top_k);
        let [n, _] = input.features.dims();
        RouterShape { experts: e, features: c.input_dim }.check_features(input.features.dims())?;
        let device = input.features.device();
        let x = input.features.clone();
        let clean = x.clone().matmul(self.w_gate.val());
        let train = input.mode == Mode::Train;
        let noise_on = train && c.noisy;
        let (logits, sigma) = if noise_on {
            let sigma = activation::softplus(x.matmul(self.w_noise.val()), 1.0).add_scalar(c.noise_floor);
            let z: Vec<f64> = (0..n * e).map(|_| rng.sample(StandardNormal)).collect();
            (clean.clone() + sigma.clone() * host::tensor2(&z, [n, e], &device), Some(sigma))
        } else {
            (clean.clone(), None)
        };
        let host_logits = host::to_vec(logits.clone());
        let take = if noise_on && c.load_coef > 0.0 { k + 1 } else { k };
        let ranked: Vec<Vec<usize>> = host_logits.chunks(e).map(|row| topk_lowest(row, take)).collect();
        let mut keep = vec![true; n * e];
        let mut chosen = Vec::with_capacity(n * k);
        for (row, r) in ranked.iter().enumerate() {
            for &j in &r[..k] {
                keep[row * e + j] = false;
                chosen.push(j);
            }
        }
        let drop_mask = Tensor::<B, 2, Bool>::from_data(TensorData::new(keep.clone(), [n, e]), &device);
        let gates = activation::softmax(logits.clone().mask_fill(drop_mask, f64::NEG_INFINITY), 1);
        let weights = gates.clone().gather(1, int_tensor(&chosen, [n, k], &device));

        let mut aux_losses = vec![];
        if train {
            aux_losses.push(AuxLoss {
                kind: AuxKind::Importance,
                value: cv_squared(gates.clone().sum_dim(0).reshape([e])),
                coefficient: c.importance_coef,
            });
            if let (Some(sigma), true) = (sigma, c.load_coef > 0.0) {
                // Threshold: the k-th largest noisy logit of the others; (k+1)-th if i is kept, else k-th.
                let flat: Vec<usize> = ranked.iter().flatten().copied().collect();
                let top = logits.clone().gather(1, int_tensor(&flat, [n, k + 1], &device));
                let if_in = top.clone().slice([0..n, k..k + 1]).expand([n, e]);
                let if_out = top.slice([0..n, k - 1..k]).expand([n, e]);
                let is_out = Tensor::<B, 2, Bool>::from_data(TensorData::new(keep, [n, e]), &device);
                let threshold = if_in.mask_where(is_out, if_out);
                let p = normal_cdf((clean.clone() - threshold) / sigma);
                aux_losses.push(AuxLoss {
                    kind: AuxKind::Load,
                    value: cv_squared(p.sum_dim(0).reshape([e])),
                    coefficient: c.load_coef,
                });
            }
            if let Some(coef) = c.switch_balance_coef {
                let first: Vec<usize> = ranked.iter().map(|r| r[0]).collect();
                let value = switch_balance(activation::softmax(logits.clone(), 1), &first);
                aux_losses.push(AuxLoss { kind: AuxKind::SwitchBalance, value, coefficient: coef });
            }
            if let Some(coef) = c.z_loss_coef {
                aux_losses.push(AuxLoss { kind: AuxKind::ZLoss, value: z_loss(clean), coefficient: coef });
            }
        }
        Ok(Routing {
            k,
            indices: chosen.into_iter().map(Some).collect(),
            weights,
            shared: c.shared.clone(),
            probs: Some(gates),
            aux_losses,
        })
    }
}
