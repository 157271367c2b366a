//! Spatial routing for gridded fields: the gate of the spatial mixture of experts (SMoE; Dryden &
//! Hoefler, "Spatial Mixture-of-Experts", NeurIPS 2022).
//!
//! A gate scores every expert at every grid location, `R: [B, E, H, W]`, and each location keeps
//! its top-`k` experts (ties to the lowest index). The default gate is a free latent tensor
//! `Λ: [E, H, W]` that ignores the input (the routing is a learned map of the domain); the
//! convolutional and CoordConv gates read the input field (CoordConv adds two coordinate
//! channels in `[-1, 1]`). Optional training noise `N(0, (noise / E)^2)` on the scores, and the
//! importance, smooth-load and spatial-agreement losses of the paper (all off by default: regions
//! are legitimately unequal, so balance is not a goal here).
//!
//! The unit of routing is a grid location (`Granularity::SpatialLocation`), so this router has its
//! own shape ([`SpatialShape`]) instead of the `[N, d]` features of [`mixer_core::Router`]; its
//! promises are checked by `tests/spatial_contract.rs`.

use burn::module::{Module, Param, ParamId};
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Int, Tensor, TensorData, activation, backend::Backend};
use ndarray::Array2;
use rand::Rng as _;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use mixer_core::{AuxKind, AuxLoss, Mode, Rng, host};

use crate::balance::cv_squared;
use crate::spec::check_coefficients;
use crate::{RouterError, argmax_lowest, topk_lowest};

/// Which gate scores the experts at each location.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SpatialGateKind {
    /// A free tensor `Λ: [E, H, W]`, the same for every sample (the paper's main gate).
    #[default]
    Latent,
    /// A `kernel x kernel` convolution of the input field.
    Conv,
    /// A convolution of the input field with two coordinate channels appended.
    CoordConv,
}

/// The shape a spatial router is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpatialShape {
    /// Number of experts `E`.
    pub experts: usize,
    /// Channels of the input field.
    pub in_channels: usize,
    /// Grid height `H`.
    pub height: usize,
    /// Grid width `W`.
    pub width: usize,
}

/// Settings of the spatial router (`[model.router]` of a field run); defaults are the paper's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpatialSettings {
    /// The gate (default `latent`).
    pub gate: SpatialGateKind,
    /// Experts kept per location (default 1).
    pub top_k: usize,
    /// Kernel size of the convolutional gates (odd, default 3).
    pub kernel: usize,
    /// Training noise on the scores, standard deviation `noise / E` (default 0: off).
    pub noise: f64,
    /// Weight of the importance loss, `CV^2` of each expert's summed softmax score (default 0).
    pub importance_coef: f64,
    /// Weight of the smooth load loss; needs `noise > 0` (default 0).
    pub load_coef: f64,
    /// Weight of the spatial-agreement loss, the batch spread of the scores (default 0).
    pub agreement_coef: f64,
}

impl Default for SpatialSettings {
    fn default() -> Self {
        Self {
            gate: SpatialGateKind::Latent,
            top_k: 1,
            kernel: 3,
            noise: 0.0,
            importance_coef: 0.0,
            load_coef: 0.0,
            agreement_coef: 0.0,
        }
    }
}

impl SpatialSettings {
    /// True when any auxiliary loss has a positive weight.
    fn has_losses(&self) -> bool {
        self.importance_coef > 0.0 || self.load_coef > 0.0 || self.agreement_coef > 0.0
    }

    /// Checks the settings against the shape; each failure names its field.
    pub fn check(&self, shape: SpatialShape) -> Result<(), RouterError> {
        if shape.experts == 0 {
            return Err(RouterError::ZeroExperts);
        }
        if self.top_k == 0 || self.top_k > shape.experts {
            return Err(RouterError::InvalidTopK { k: self.top_k, experts: shape.experts, max: shape.experts });
        }
        check_grid(shape.height, shape.width, self.kernel)?;
        check_coefficients(&[
            ("noise", Some(self.noise)),
            ("importance_coef", Some(self.importance_coef)),
            ("load_coef", Some(self.load_coef)),
            ("agreement_coef", Some(self.agreement_coef)),
        ])?;
        if self.load_coef > 0.0 && self.noise == 0.0 {
            return Err(RouterError::InvalidSchedule {
                field: "load_coef",
                value: self.load_coef,
                expected: "the smooth load loss needs training noise: set noise > 0 or load_coef = 0",
            });
        }
        Ok(())
    }

    /// Checks, then builds the router; every random draw comes from `rng`.
    pub fn build<B: Backend>(
        &self,
        shape: SpatialShape,
        rng: &mut Rng,
        device: &B::Device,
    ) -> Result<SpatialRouter<B>, RouterError> {
        self.check(shape)?;
        let SpatialShape { experts: e, in_channels, height: h, width: w } = shape;
        let (latent, conv) = match self.gate {
            SpatialGateKind::Latent => {
                // Kaiming-uniform with gain 1 and fan k / E, as in the reference: beta = sqrt(3 E / k).
                let beta = (3.0 * e as f64 / self.top_k as f64).sqrt();
                let values: Vec<f64> = (0..e * h * w).map(|_| beta * (2.0 * rng.random::<f64>() - 1.0)).collect();
                (Some(Param::from_tensor(host_tensor(&values, [e, h, w], device))), None)
            }
            SpatialGateKind::Conv | SpatialGateKind::CoordConv => {
                let extra = if self.gate == SpatialGateKind::CoordConv { 2 } else { 0 };
                (None, Some(conv_weight(in_channels + extra, e, self.kernel, rng, device)))
            }
        };
        Ok(SpatialRouter { latent, conv, bias: conv_bias(self.gate, e, device), settings: self.clone(), shape })
    }
}

/// The zero bias `[E]` of the convolutional gates (`None` for the latent gate).
fn conv_bias<B: Backend>(gate: SpatialGateKind, experts: usize, device: &B::Device) -> Option<Param<Tensor<B, 1>>> {
    (gate != SpatialGateKind::Latent).then(|| Param::from_tensor(Tensor::zeros([experts], device)))
}

/// A grid must be at least `kernel x kernel` (and at least 3 x 3), with an odd kernel.
pub fn check_grid(height: usize, width: usize, kernel: usize) -> Result<(), RouterError> {
    if kernel.is_multiple_of(2) {
        return Err(RouterError::InvalidGrid {
            height,
            width,
            kernel,
            reason: "the kernel size must be odd (same padding)",
        });
    }
    if height < kernel.max(3) || width < kernel.max(3) {
        return Err(RouterError::InvalidGrid {
            height,
            width,
            kernel,
            reason: "the grid must be at least the kernel size (and 3 x 3) in both directions",
        });
    }
    Ok(())
}

/// `[out, in, kernel, kernel]` weights uniform on `±1/sqrt(in kernel^2)`, drawn from `rng`.
pub fn conv_weight<B: Backend>(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    rng: &mut Rng,
    device: &B::Device,
) -> Param<Tensor<B, 4>> {
    let bound = 1.0 / ((in_channels * kernel * kernel) as f64).sqrt();
    let n = out_channels * in_channels * kernel * kernel;
    let values: Vec<f64> = (0..n).map(|_| bound * (2.0 * rng.random::<f64>() - 1.0)).collect();
    Param::from_tensor(host_tensor(&values, [out_channels, in_channels, kernel, kernel], device))
}

/// A `same`-padded, stride-1 convolution `x: [B, C, H, W]` by `w: [O, C, k, k]`, optional bias `[O]`.
pub fn conv_same<B: Backend>(x: Tensor<B, 4>, w: Tensor<B, 4>, bias: Option<Tensor<B, 1>>) -> Tensor<B, 4> {
    let k = w.dims()[2];
    let pad = k / 2;
    conv2d(x, w, bias, ConvOptions::new([1, 1], [pad, pad], [1, 1], 1))
}

/// `x: [B, C, H, W]` with two channels appended: the row and column coordinate in `[-1, 1]`.
pub fn with_coordinates<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, _, h, w] = x.dims();
    let device = x.device();
    let coord = |i: usize, n: usize| if n > 1 { 2.0 * i as f64 / (n - 1) as f64 - 1.0 } else { 0.0 };
    let mut values = Vec::with_capacity(2 * h * w);
    values.extend((0..h * w).map(|p| coord(p / w, h)));
    values.extend((0..h * w).map(|p| coord(p % w, w)));
    let coords: Tensor<B, 4> = host_tensor::<B, 3>(&values, [2, h, w], &device).unsqueeze_dim::<4>(0);
    Tensor::cat(vec![x, coords.repeat_dim(0, b)], 1)
}

/// A tensor of the backend's float type from `f64` values, row-major.
pub fn host_tensor<B: Backend, const D: usize>(values: &[f64], shape: [usize; D], device: &B::Device) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), device)
}

/// `t` with its leading-axis block `to` (blocks of `block` rows) replaced by block `from` plus
/// Gaussian noise of std `jitter`; keeps the gradient flag.
pub fn copy_rows<B: Backend, const D: usize>(
    t: Tensor<B, D>,
    block: usize,
    from: usize,
    to: usize,
    jitter: f64,
    rng: &mut Rng,
) -> Tensor<B, D> {
    let (dims, device, grad) = (t.dims(), t.device(), t.is_require_grad());
    let mut values = host::to_vec(t);
    let len = block * values.len() / dims[0];
    for i in 0..len {
        let noise = if jitter > 0.0 { jitter * rng.sample::<f64, _>(StandardNormal) } else { 0.0 };
        values[to * len + i] = values[from * len + i] + noise;
    }
    host_tensor::<B, D>(&values, dims, &device).set_require_grad(grad)
}

/// [`copy_rows`] on a parameter, keeping its id.
pub fn copy_block<B: Backend, const D: usize>(
    param: Param<Tensor<B, D>>,
    block: usize,
    from: usize,
    to: usize,
    jitter: f64,
    rng: &mut Rng,
) -> Param<Tensor<B, D>> {
    param.map(|t| copy_rows(t, block, from, to, jitter, rng))
}

/// The spatial router: a gate over the grid and per-location top-`k`.
#[derive(Module, Debug)]
pub struct SpatialRouter<B: Backend> {
    /// The latent gate `Λ: [E, H, W]` (latent kind).
    latent: Option<Param<Tensor<B, 3>>>,
    /// The gate convolution `[E, C (+2), k, k]` (conv kinds).
    conv: Option<Param<Tensor<B, 4>>>,
    /// Per-expert bias of the convolutional gates `[E]`.
    bias: Option<Param<Tensor<B, 1>>>,
    /// Settings the router was built with.
    #[module(skip)]
    settings: SpatialSettings,
    /// The shape the router was built for.
    #[module(skip)]
    shape: SpatialShape,
}

/// The outcome of routing a batch of fields.
#[derive(Clone, Debug)]
pub struct SpatialRouting<B: Backend> {
    /// Experts per location `k`.
    pub k: usize,
    /// Scores the selection used, `[B, E, H, W]` (noisy in training when noise is on).
    pub scores: Tensor<B, 4>,
    /// Selected experts `[B, k, H, W]`, best first.
    pub indices: Tensor<B, 4, Int>,
    /// The same indices on the host, row-major `[B, k, H, W]`.
    pub host_indices: Vec<usize>,
    /// Auxiliary losses (training only, those with a positive weight).
    pub aux_losses: Vec<AuxLoss<B>>,
}

impl<B: Backend> SpatialRouter<B> {
    /// Number of experts `E`.
    pub fn num_experts(&self) -> usize {
        self.shape.experts
    }

    /// Experts per location `k`.
    pub fn top_k(&self) -> usize {
        self.settings.top_k
    }

    /// The settings the router was built with.
    pub fn settings(&self) -> &SpatialSettings {
        &self.settings
    }

    /// The latent gate `Λ: [E, H, W]` (`None` for the convolutional gates).
    pub fn latent(&self) -> Option<Tensor<B, 3>> {
        self.latent.as_ref().map(Param::val)
    }

    /// The shape the router was built for.
    pub fn shape(&self) -> SpatialShape {
        self.shape
    }

    /// The router with expert `to`'s gate (latent scores, or filter and bias) a copy of expert
    /// `from`'s plus Gaussian noise of std `jitter`, so that `to` takes over part of `from`'s
    /// locations.
    pub fn clone_expert(mut self, from: usize, to: usize, jitter: f64, rng: &mut Rng) -> Self {
        self.latent = self.latent.map(|p| copy_block(p, 1, from, to, jitter, rng));
        self.conv = self.conv.map(|p| copy_block(p, 1, from, to, jitter, rng));
        self.bias = self.bias.map(|p| copy_block(p, 1, from, to, jitter, rng));
        self
    }

    /// The gate's parameters whose leading axis is the expert: `(id, rank)`.
    pub fn expert_params(&self) -> Vec<(ParamId, usize)> {
        let mut out = vec![];
        out.extend(self.latent.as_ref().map(|p| (p.id, 3)));
        out.extend(self.conv.as_ref().map(|p| (p.id, 4)));
        out.extend(self.bias.as_ref().map(|p| (p.id, 1)));
        out
    }

    /// Clean scores `R: [B, E, H, W]` of the fields `x: [B, C, H, W]`.
    pub fn scores(&self, x: Tensor<B, 4>) -> Result<Tensor<B, 4>, RouterError> {
        let [b, c, h, w] = x.dims();
        let s = self.shape;
        if (c, h, w) != (s.in_channels, s.height, s.width) {
            return Err(RouterError::FieldShape { expected: [s.in_channels, s.height, s.width], found: [c, h, w] });
        }
        Ok(match (&self.latent, &self.conv) {
            (Some(latent), _) => latent.val().unsqueeze_dim::<4>(0).repeat_dim(0, b),
            (None, Some(weight)) => {
                let x = if self.settings.gate == SpatialGateKind::CoordConv { with_coordinates(x) } else { x };
                conv_same(x, weight.val(), self.bias.as_ref().map(Param::val))
            }
            (None, None) => unreachable!("a spatial router has a latent or a convolutional gate"),
        })
    }

    /// Routes `x: [B, C, H, W]`: scores, training noise and losses, per-location top-`k`.
    pub fn route(&self, x: Tensor<B, 4>, mode: Mode, rng: &mut Rng) -> Result<SpatialRouting<B>, RouterError> {
        let clean = self.scores(x)?;
        let [b, e, h, w] = clean.dims();
        let train = mode == Mode::Train;
        let sigma = self.settings.noise / e as f64;
        let scores = if train && sigma > 0.0 {
            let z: Vec<f64> = (0..b * e * h * w).map(|_| sigma * rng.sample::<f64, _>(StandardNormal)).collect();
            clean.clone() + host_tensor(&z, [b, e, h, w], &clean.device())
        } else {
            clean.clone()
        };
        let k = self.settings.top_k;
        let noisy = train && sigma > 0.0;
        let host_indices = match (&self.latent, noisy) {
            // Without noise the latent gate routes every sample alike: select once, repeat.
            (Some(latent), false) => {
                top_k_per_location(&host::to_vec(latent.val().detach()), [1, e, h, w], k).repeat(b)
            }
            _ => top_k_per_location(&host::to_vec(scores.clone().detach()), [b, e, h, w], k),
        };
        let as_i64: Vec<i64> = host_indices.iter().map(|&i| i as i64).collect();
        let indices = Tensor::from_data(TensorData::new(as_i64, [b, k, h, w]), &clean.device());
        let mut aux_losses = Vec::new();
        if train && self.settings.has_losses() {
            let host_scores = host::to_vec(scores.clone().detach());
            self.push_losses(&clean, &host_scores, sigma, &mut aux_losses);
        }
        Ok(SpatialRouting { k, scores, indices, host_indices, aux_losses })
    }

    fn push_losses(&self, clean: &Tensor<B, 4>, noisy: &[f64], sigma: f64, out: &mut Vec<AuxLoss<B>>) {
        let s = &self.settings;
        let [b, e, h, w] = clean.dims();
        if s.importance_coef > 0.0 {
            let importance = activation::softmax(clean.clone(), 1).swap_dims(0, 1).reshape([e, b * h * w]).sum_dim(1);
            out.push(AuxLoss {
                kind: AuxKind::Importance,
                value: cv_squared(importance.reshape([e])),
                coefficient: s.importance_coef,
            });
        }
        if s.load_coef > 0.0 && sigma > 0.0 {
            // Smooth load: P(score_e + noise beats the k-th best noisy score at its location).
            let threshold = kth_score_per_location(noisy, [b, e, h, w], s.top_k);
            let threshold = host_tensor::<B, 4>(&threshold, [b, 1, h, w], &clean.device());
            let z = (clean.clone() - threshold).div_scalar(sigma * std::f64::consts::SQRT_2);
            let p = (z.erf() + 1.0).mul_scalar(0.5);
            let load = p.sum_dim(0).reshape([e * h * w]);
            out.push(AuxLoss { kind: AuxKind::Load, value: cv_squared(load), coefficient: s.load_coef });
        }
        if s.agreement_coef > 0.0 {
            let mean = clean.clone().mean_dim(0);
            // sqrt(var + 1e-12): the latent gate's spread is exactly 0, where sqrt has no gradient.
            let spread = ((clean.clone() - mean).powi_scalar(2).mean_dim(0) + 1e-12).sqrt();
            let value = spread.reshape([e, h * w]).mean_dim(1).sum().reshape([1]);
            out.push(AuxLoss { kind: AuxKind::SpatialAgreement, value, coefficient: s.agreement_coef });
        }
    }

    /// The top-1 expert at every location for the fields `x` (the learned map of the latent
    /// gate, the same for every sample; for the convolutional gates the map of each sample).
    pub fn top1_maps(&self, x: Tensor<B, 4>) -> Result<Vec<Array2<usize>>, RouterError> {
        let scores = self.scores(x)?;
        let [b, e, h, w] = scores.dims();
        let top = top_k_per_location(&host::to_vec(scores), [b, e, h, w], 1);
        Ok(top.chunks(h * w).map(|m| Array2::from_shape_vec((h, w), m.to_vec()).expect("h * w cells")).collect())
    }
}

/// Per location of `scores: [B, E, H, W]` (row-major), the `k` best experts, best first, ties to
/// the lowest index; returned row-major `[B, k, H, W]`.
pub fn top_k_per_location(scores: &[f64], [b, e, h, w]: [usize; 4], k: usize) -> Vec<usize> {
    let hw = h * w;
    let mut out = vec![0; b * k * hw];
    let mut column = vec![0.0; e];
    for s in 0..b {
        for p in 0..hw {
            column.iter_mut().enumerate().for_each(|(x, c)| *c = scores[(s * e + x) * hw + p]);
            if k == 1 {
                out[s * hw + p] = argmax_lowest(&column);
                continue;
            }
            for (j, x) in topk_lowest(&column, k).into_iter().enumerate() {
                out[(s * k + j) * hw + p] = x;
            }
        }
    }
    out
}

/// Per location, the `k`-th best score, `[B, 1, H, W]` row-major (the load loss's threshold).
fn kth_score_per_location(scores: &[f64], [b, e, h, w]: [usize; 4], k: usize) -> Vec<f64> {
    let hw = h * w;
    let top = top_k_per_location(scores, [b, e, h, w], k);
    (0..b * hw)
        .map(|i| {
            let (s, p) = (i / hw, i % hw);
            scores[(s * e + top[(s * k + k - 1) * hw + p]) * hw + p]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestBackend;
    use mixer_core::Seeds;

    fn shape() -> SpatialShape {
        SpatialShape { experts: 3, in_channels: 1, height: 4, width: 5 }
    }

    #[test]
    fn top_k_breaks_ties_towards_the_lowest_index() {
        // One sample, three experts, two locations: [1, 1, 0] and [0, 2, 2].
        let scores = [1.0, 0.0, 1.0, 2.0, 0.0, 2.0];
        assert_eq!(top_k_per_location(&scores, [1, 3, 1, 2], 2), vec![0, 1, 1, 2]);
        assert_eq!(kth_score_per_location(&scores, [1, 3, 1, 2], 2), vec![1.0, 2.0]);
    }

    #[test]
    fn bad_settings_are_named() {
        let bad_k = SpatialSettings { top_k: 4, ..Default::default() };
        assert!(matches!(bad_k.check(shape()), Err(RouterError::InvalidTopK { k: 4, .. })));
        let small = SpatialShape { height: 2, ..shape() };
        let err = SpatialSettings::default().check(small).unwrap_err();
        assert!(err.to_string().contains("2 x 5"), "{err}");
        let even = SpatialSettings { kernel: 4, ..Default::default() };
        assert!(even.check(shape()).unwrap_err().to_string().contains("odd"));
        let load = SpatialSettings { load_coef: 0.1, ..Default::default() };
        assert!(load.check(shape()).unwrap_err().to_string().contains("noise"));
    }

    #[test]
    fn latent_gate_ignores_the_input_and_conv_gates_read_it() {
        let device = Default::default();
        let mut rng = Seeds::new(1).stream("gate");
        let x = Tensor::<TestBackend, 4>::random([2, 1, 4, 5], burn::tensor::Distribution::Default, &device);
        let latent = SpatialSettings::default().build::<TestBackend>(shape(), &mut rng, &device).unwrap();
        let maps = latent.top1_maps(x.clone()).unwrap();
        assert_eq!(maps[0], maps[1]);
        let coord = SpatialSettings { gate: SpatialGateKind::CoordConv, ..Default::default() };
        let coord = coord.build::<TestBackend>(shape(), &mut rng, &device).unwrap();
        let s = coord.scores(x.clone()).unwrap();
        assert_eq!(s.dims(), [2, 3, 4, 5]);
        let wrong = Tensor::<TestBackend, 4>::zeros([2, 2, 4, 5], &device);
        assert!(coord.scores(wrong).unwrap_err().to_string().contains("[2, 4, 5]"));
    }
}
