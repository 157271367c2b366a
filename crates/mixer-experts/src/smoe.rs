//! The spatial mixture-of-experts layer (SMoE; Dryden & Hoefler, "Spatial Mixture-of-Experts",
//! NeurIPS 2022) for gridded fields `[B, C, H, W]`.
//!
//! The experts are the output channels of one bias-free `kernel x kernel` convolution (expert `i`
//! owns `C_out` consecutive channels); a [`SpatialRouter`] picks the top-`k` experts at every
//! location, and the output there is the sum of the selected experts' outputs, each multiplied by
//! its gate score in the weighted mode (with `k = 1` and one output channel this is the paper's
//! layer exactly). Training follows the paper's backward pass:
//!
//! - an expert gets gradient only at the locations that selected it (the selection is a gather);
//! - unweighted, the gate gets the raw output error at the selected positions (a straight-through
//!   term `s - stop_grad(s)` that is zero in value); the gate gradient can be blocked;
//! - **expert error damping**: per sample, positions whose output error exceeds its `q`-quantile
//!   (plus `1e-3`) are taken as wrong routings and their expert gradient is multiplied by
//!   `damping_factor` (0: cut);
//! - the **routing-classification (RC) loss** replaces the gate's task gradient: a selected expert
//!   whose error is within the per-sample `q`-quantile (plus `1e-5`) is labelled correct (1), a
//!   wrongly selected one 0, and every unselected expert shares the location's wrong picks,
//!   `(#wrong) / (E - k)`; the loss is the binary cross-entropy of the scores (as logits) against
//!   these labels. Gate and experts own disjoint parameters and the task gradient to the gate is
//!   blocked when RC is on, so adding both losses and taking one backward pass equals the paper's
//!   two passes.
//!
//! The error signal the damping and RC read is the gradient of the MSE at the layer's output,
//! `y - target` up to the constant `2 / n`, so the layer must be the model's last (as in the
//! paper's heat-diffusion runs, where it is the whole model).

use burn::module::{Module, Param, ParamId};
use burn::tensor::{Tensor, backend::Backend};
use serde::{Deserialize, Serialize};

use mixer_core::{Mode, Rng, host};
use mixer_routers::{
    SpatialRouter, SpatialRouting, SpatialSettings, SpatialShape, check_grid, conv_same, conv_weight, host_tensor,
};
use rand::Rng as _;
use rand_distr::StandardNormal;

use crate::ExpertError;
use crate::field_model::FieldLoss;

/// How the layer tells a wrong routing from a right one (expert error damping and RC labels).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCriterion {
    /// The paper's: per sample, a selected position whose error exceeds the `q`-quantile of the
    /// sample's errors (plus a margin) is wrong.
    #[default]
    Quantile,
    /// A selected expert is wrong where another expert's output is closer to the target (every
    /// expert runs on the whole grid, so the layer can tell); the RC label is the best expert.
    /// Top-1 only; the quantiles are not read.
    Best,
}

/// Settings of the spatial mixture-of-experts layer; defaults are the reference code's (latent
/// gate, top-1, unweighted, RC loss and damping at quantile 0.7).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmoeSettings {
    /// Number of experts `E` (default 3).
    pub experts: usize,
    /// Kernel size of the expert convolution (odd, default 3).
    pub kernel: usize,
    /// Multiply each selected expert's output by its gate score (default false, as published).
    pub weighted: bool,
    /// Block the task loss's gradient to the gate (default false; always blocked under RC).
    pub block_gate_grad: bool,
    /// Quantile of expert error damping; `None` turns damping off (default 0.7, the reference
    /// code's; its published heat command used 0.3, which left experts untrained here, see
    /// docs/results.md).
    pub damping_quantile: Option<f64>,
    /// Factor on a wrongly routed expert's gradient (default 0: cut).
    pub damping_factor: f64,
    /// Quantile of the routing-classification loss; `None` turns it off (default 0.7).
    pub rc_quantile: Option<f64>,
    /// What counts as a wrong routing for damping and RC (default the paper's quantile).
    pub criterion: ErrorCriterion,
    /// When the validation MSE stalls, an expert routed to fewer than this share of the
    /// locations since the last validation restarts as one half of the expert with the largest
    /// squared error (k-means splitting, [`SpatialMoe::split_expert`]; default off; on
    /// heat-regions it finds all regions on two training seeds of three, docs/results.md).
    pub restart_below: Option<f64>,
    /// The gate and its per-location top-`k`.
    pub router: SpatialSettings,
}

impl Default for SmoeSettings {
    fn default() -> Self {
        Self {
            experts: 3,
            kernel: 3,
            weighted: false,
            block_gate_grad: false,
            damping_quantile: Some(0.7),
            damping_factor: 0.0,
            rc_quantile: Some(0.7),
            criterion: ErrorCriterion::Quantile,
            restart_below: None,
            router: SpatialSettings::default(),
        }
    }
}

/// Std of the noise on a restarted expert's gate copy (its scores then split the locations of
/// the expert it copies about evenly).
pub const RESTART_JITTER: f64 = 1e-2;
/// Size of the opposite perturbations of a split expert's two halves, relative to the root mean
/// square of its weights.
pub const SPLIT_SCALE: f64 = 5e-2;
/// Margin above the quantile under which an error counts as a correct routing (damping).
const DAMPING_MARGIN: f64 = 1e-3;
/// Margin above the quantile under which an error counts as a correct routing (RC labels).
const RC_MARGIN: f64 = 1e-5;

impl SmoeSettings {
    /// Checks the settings for fields of `channels` channels on an `height x width` grid.
    pub fn check(&self, channels: usize, height: usize, width: usize) -> Result<(), ExpertError> {
        let shape = SpatialShape { experts: self.experts, in_channels: channels, height, width };
        self.router.check(shape).map_err(mixer_core::Error::from)?;
        check_grid(height, width, self.kernel).map_err(mixer_core::Error::from)?;
        let shares = [("damping_quantile", self.damping_quantile), ("rc_quantile", self.rc_quantile)];
        for (field, q) in shares.into_iter().chain([("restart_below", self.restart_below)]) {
            if let Some(q) = q.filter(|q| !(0.0..=1.0).contains(q)) {
                return Err(mixer_core::Error::config(field, format!("{q} is not a quantile in [0, 1]")).into());
            }
        }
        if self.criterion == ErrorCriterion::Best && self.router.top_k != 1 {
            let msg = format!("the best-expert criterion needs top_k = 1, not {}", self.router.top_k);
            return Err(mixer_core::Error::config("criterion", msg).into());
        }
        if !(0.0..=1.0).contains(&self.damping_factor) {
            let msg = format!("{} must lie in [0, 1] (0 cuts the gradient)", self.damping_factor);
            return Err(mixer_core::Error::config("damping_factor", msg).into());
        }
        Ok(())
    }

    /// Checks, then builds the layer; every random draw comes from `rng`.
    pub fn init<B: Backend>(
        &self,
        channels: usize,
        height: usize,
        width: usize,
        rng: &mut Rng,
        device: &B::Device,
    ) -> Result<SpatialMoe<B>, ExpertError> {
        self.check(channels, height, width)?;
        let experts = conv_weight(channels, self.experts * channels, self.kernel, rng, device);
        let shape = SpatialShape { experts: self.experts, in_channels: channels, height, width };
        let router = self.router.build(shape, rng, device).map_err(mixer_core::Error::from)?;
        Ok(SpatialMoe { experts, router, settings: self.clone() })
    }
}

/// The spatial mixture-of-experts layer: `[B, C, H, W] -> [B, C, H, W]`.
#[derive(Module, Debug)]
pub struct SpatialMoe<B: Backend> {
    /// Expert bank `[E C, C, k, k]`: expert `i` owns output channels `i C .. (i + 1) C`.
    experts: Param<Tensor<B, 4>>,
    /// The gate.
    router: SpatialRouter<B>,
    /// The settings it was built with.
    #[module(skip)]
    settings: SmoeSettings,
}

impl<B: Backend> SpatialMoe<B> {
    /// The gate.
    pub fn router(&self) -> &SpatialRouter<B> {
        &self.router
    }

    /// The settings the layer was built with.
    pub fn settings(&self) -> &SmoeSettings {
        &self.settings
    }

    /// Every expert's output `[B, E, C, H, W]` (each expert runs on the whole grid: a convolution
    /// bank costs the same either way; sparsity is in what is kept and what gets gradient).
    pub fn expert_outputs(&self, x: Tensor<B, 4>) -> Tensor<B, 5> {
        let [b, c, h, w] = x.dims();
        conv_same(x, self.experts.val(), None).reshape([b, self.settings.experts, c, h, w])
    }

    /// The prediction `[B, C, H, W]` (evaluation: no noise, no losses).
    pub fn forward(&self, x: Tensor<B, 4>, rng: &mut Rng) -> Result<Tensor<B, 4>, ExpertError> {
        let routing = self.route(x.clone(), Mode::Eval, rng)?;
        let selected = select(self.expert_outputs(x), &routing);
        let gate = selected_scores(&routing);
        Ok(combine(selected, gate, self.settings.weighted, true))
    }

    /// The layer with expert `from` split in two (k-means splitting): `to` restarts as `from`'s
    /// weights plus a random `delta` and `from` keeps them minus `delta` (`delta` of
    /// [`SPLIT_SCALE`] times the weights' root mean square per entry), and `to`'s gate copies
    /// `from`'s with a jitter of [`RESTART_JITTER`], so that the two share `from`'s cells and each
    /// keeps those it fits better.
    pub fn split_expert(self, from: usize, to: usize, rng: &mut Rng) -> Self {
        let channels = self.experts.dims()[1];
        let experts = self.experts.map(|w| {
            let (dims, device, grad) = (w.dims(), w.device(), w.is_require_grad());
            let mut values = host::to_vec(w);
            let len = channels * values.len() / dims[0];
            let rms = (values[from * len..(from + 1) * len].iter().map(|v| v * v).sum::<f64>() / len as f64).sqrt();
            for i in 0..len {
                let delta = SPLIT_SCALE * rms * rng.sample::<f64, _>(StandardNormal);
                let w = values[from * len + i];
                (values[to * len + i], values[from * len + i]) = (w + delta, w - delta);
            }
            host_tensor::<B, 4>(&values, dims, &device).set_require_grad(grad)
        });
        let router = self.router.clone_expert(from, to, RESTART_JITTER, rng);
        Self { experts, router, settings: self.settings }
    }

    /// The parameters whose leading axis is the expert, `(id, rank, rows per expert)`: what a
    /// restart copies, weights and optimiser moments alike.
    pub fn expert_params(&self) -> Vec<(ParamId, usize, usize)> {
        let mut out = vec![(self.experts.id, 4, self.experts.dims()[1])];
        out.extend(self.router.expert_params().into_iter().map(|(id, rank)| (id, rank, 1)));
        out
    }

    fn route(&self, x: Tensor<B, 4>, mode: Mode, rng: &mut Rng) -> Result<SpatialRouting<B>, ExpertError> {
        Ok(self.router.route(x, mode, rng).map_err(mixer_core::Error::from)?)
    }

    /// The training loss of predicting `target` from `x` (both `[B, C, H, W]`), with damping, the
    /// RC loss and the router's auxiliary losses as configured.
    pub fn train_loss(
        &self,
        x: Tensor<B, 4>,
        target: Tensor<B, 4>,
        rng: &mut Rng,
    ) -> Result<FieldLoss<B>, ExpertError> {
        let s = &self.settings;
        let routing = self.route(x.clone(), Mode::Train, rng)?;
        let outputs = self.expert_outputs(x);
        let selected = select(outputs.clone(), &routing);
        let gate = selected_scores(&routing);
        let [b, k, c, h, w] = selected.dims();
        let e = s.experts;
        let sparse = e > k;
        let dims = SlotDims { b, k, c, hw: h * w };
        let damping_on = sparse && s.damping_quantile.is_some();
        let rc_on = sparse && s.rc_quantile.is_some();

        // The error signal at the output, from the (gradient-free) value of the prediction.
        let value = combine(selected.clone().detach(), gate.clone().detach(), s.weighted, true);
        let residual = host::to_vec(value - target.clone());
        let best = (s.criterion == ErrorCriterion::Best && (damping_on || rc_on)).then(|| {
            let outputs = host::to_vec(outputs.detach());
            best_experts(&outputs, &host::to_vec(target.clone()), &routing.host_indices, dims, e)
        });
        let sel_host =
            if s.weighted && rc_on && best.is_none() { host::to_vec(selected.clone().detach()) } else { vec![] };
        let gate_host = if s.weighted && best.is_none() { host::to_vec(gate.clone().detach()) } else { vec![] };

        let (selected, damped) = if damping_on {
            let scale = match (&best, s.damping_quantile) {
                (Some(best), _) => best_damping_scale(best, &routing.host_indices, s.damping_factor),
                (None, Some(q)) => {
                    damping_scale(&slot_errors(&residual, &gate_host, &[], dims), dims, q, s.damping_factor)
                }
                (None, None) => unreachable!("damping is on"),
            };
            let damped = scale.iter().filter(|&&v| v != 1.0).count() as f64 / scale.len() as f64;
            let scale = host_tensor::<B, 5>(&scale, [b, k, 1, h, w], &selected.device());
            (scale_gradient(selected, scale), damped)
        } else {
            (selected, 0.0)
        };
        let prediction = combine(selected, gate, s.weighted, s.block_gate_grad || rc_on);
        let mse_t = (prediction - target).powi_scalar(2).mean();
        let mut loss = mse_t.clone();
        let mut rc = 0.0;
        if rc_on {
            let labels = match (&best, s.rc_quantile) {
                (Some(best), _) => best_labels(best, dims, e),
                (None, Some(q)) => {
                    rc_labels(&slot_errors(&residual, &[], &sel_host, dims), &routing.host_indices, dims, e, q)
                }
                (None, None) => unreachable!("RC is on"),
            };
            let labels = host_tensor::<B, 4>(&labels, [b, e, h, w], &routing.scores.device());
            let rc_t = bce_with_logits(routing.scores.clone(), labels);
            rc = host::to_vec(rc_t.clone())[0];
            loss = loss + rc_t;
        }
        for aux in routing.aux_losses {
            loss = loss + aux.value.mul_scalar(aux.coefficient);
        }
        let mut load = vec![0; e];
        let mut error = vec![0.0; e];
        for (slot, &i) in routing.host_indices.iter().enumerate() {
            let (sample, p) = (slot / (k * dims.hw), slot % dims.hw);
            load[i] += 1;
            error[i] += (0..c).map(|ch| residual[(sample * c + ch) * dims.hw + p].powi(2)).sum::<f64>();
        }
        Ok(FieldLoss { loss, mse: host::to_vec(mse_t)[0], rc, damped, load, error })
    }
}

/// The selected experts' outputs `[B, k, C, H, W]` (gradient only at the selected positions).
pub fn select<B: Backend>(outputs: Tensor<B, 5>, routing: &SpatialRouting<B>) -> Tensor<B, 5> {
    let [_, _, c, _, _] = outputs.dims();
    let index = routing.indices.clone().unsqueeze_dim::<5>(2).repeat_dim(2, c);
    outputs.gather(1, index)
}

/// The scores of the selected experts `[B, k, H, W]`.
pub fn selected_scores<B: Backend>(routing: &SpatialRouting<B>) -> Tensor<B, 4> {
    routing.scores.clone().gather(1, routing.indices.clone())
}

/// Sum over the `k` slots of the selected outputs `[B, k, C, H, W]`, each multiplied by its score
/// `[B, k, H, W]` when `weighted`; unweighted and unblocked, the score enters as the
/// straight-through factor `1 + s - stop_grad(s)` (value 1, gradient the output error).
pub fn combine<B: Backend>(
    selected: Tensor<B, 5>,
    gate: Tensor<B, 4>,
    weighted: bool,
    block_gate: bool,
) -> Tensor<B, 4> {
    let gate = if block_gate { gate.detach() } else { gate };
    let factor = match (weighted, block_gate) {
        (true, _) => Some(gate),
        (false, false) => Some(gate.clone() - gate.detach() + 1.0),
        (false, true) => None,
    };
    let weighted = match factor {
        Some(f) => selected * f.unsqueeze_dim::<5>(2),
        None => selected,
    };
    weighted.sum_dim(1).squeeze_dim::<4>(1)
}

/// `x` in value, with its gradient multiplied entrywise by `scale` (broadcast).
pub fn scale_gradient<B: Backend, const D: usize>(x: Tensor<B, D>, scale: Tensor<B, D>) -> Tensor<B, D> {
    let keep = scale.clone().neg() + 1.0;
    x.clone() * scale + x.detach() * keep
}

/// Mean over logits and labels `[B, E, H, W]` of the binary cross-entropy with logits,
/// `max(r, 0) - r l + ln(1 + exp(-|r|))`.
pub fn bce_with_logits<B: Backend>(logits: Tensor<B, 4>, labels: Tensor<B, 4>) -> Tensor<B, 1> {
    let softplus_neg_abs = (logits.clone().abs().neg().exp() + 1.0).log();
    (logits.clone().clamp_min(0.0) - logits * labels + softplus_neg_abs).mean()
}

/// Sizes of the per-slot arrays: batch, slots, channels, grid points.
#[derive(Clone, Copy, Debug)]
pub struct SlotDims {
    /// Batch size `B`.
    pub b: usize,
    /// Slots `k`.
    pub k: usize,
    /// Channels `C`.
    pub c: usize,
    /// Grid points `H W`.
    pub hw: usize,
}

/// The error signal of each selected position `[B, k, H, W]` from the output residual
/// `[B, C, H, W]`: the mean over channels of `|residual|`, times the slot's gate score when
/// `gate` is given (weighted mode: the gradient at the expert output) or times the selected
/// expert output `[B, k, C, H, W]` when `selected` is given (weighted mode: the gate's gradient).
pub fn slot_errors(residual: &[f64], gate: &[f64], selected: &[f64], d: SlotDims) -> Vec<f64> {
    let mut err = vec![0.0; d.b * d.k * d.hw];
    for s in 0..d.b {
        for j in 0..d.k {
            for p in 0..d.hw {
                let slot = (s * d.k + j) * d.hw + p;
                let mut sum = 0.0;
                for ch in 0..d.c {
                    let r = residual[(s * d.c + ch) * d.hw + p];
                    let by = if selected.is_empty() { 1.0 } else { selected[((s * d.k + j) * d.c + ch) * d.hw + p] };
                    sum += (r * by).abs();
                }
                let g = if gate.is_empty() { 1.0 } else { gate[slot].abs() };
                err[slot] = g * sum / d.c as f64;
            }
        }
    }
    err
}

/// The `q`-quantile of `values` with linear interpolation between order statistics (NumPy's
/// default); reorders `values`.
pub fn quantile(values: &mut [f64], q: f64) -> f64 {
    let pos = q * (values.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let (_, v_lo, above) = values.select_nth_unstable_by(lo, f64::total_cmp);
    let v_lo = *v_lo;
    if pos == lo as f64 || above.is_empty() {
        return v_lo;
    }
    let v_hi = above.iter().copied().fold(f64::INFINITY, f64::min);
    v_lo + (pos - lo as f64) * (v_hi - v_lo)
}

/// Per sample, the `q`-quantile of its slot errors `[B, k, H, W]` plus `margin`.
fn thresholds(err: &[f64], d: SlotDims, q: f64, margin: f64) -> Vec<f64> {
    let per = d.k * d.hw;
    err.chunks(per).map(|sample| quantile(&mut sample.to_vec(), q) + margin).collect()
}

/// Expert-gradient factors `[B, k, H, W]`: `factor` where a slot's error exceeds its sample's
/// `q`-quantile plus `1e-3`, 1 elsewhere.
pub fn damping_scale(err: &[f64], d: SlotDims, q: f64, factor: f64) -> Vec<f64> {
    let limit = thresholds(err, d, q, DAMPING_MARGIN);
    let per = d.k * d.hw;
    err.iter().enumerate().map(|(i, &v)| if v > limit[i / per] { factor } else { 1.0 }).collect()
}

/// RC labels `[B, E, H, W]` from slot errors and selected experts (both `[B, k, H, W]`): 1 for
/// a correct pick, 0 for a wrong one, `(#wrong picks here) / (E - k)` for each unselected expert.
pub fn rc_labels(err: &[f64], indices: &[usize], d: SlotDims, experts: usize, q: f64) -> Vec<f64> {
    let limit = thresholds(err, d, q, RC_MARGIN);
    let mut labels = vec![0.0; d.b * experts * d.hw];
    let spread = (experts - d.k) as f64;
    for s in 0..d.b {
        for p in 0..d.hw {
            let mut chosen = vec![false; experts];
            let mut wrong = 0usize;
            for j in 0..d.k {
                let slot = (s * d.k + j) * d.hw + p;
                let e = indices[slot];
                chosen[e] = true;
                if err[slot] <= limit[s] {
                    labels[(s * experts + e) * d.hw + p] = 1.0;
                } else {
                    wrong += 1;
                }
            }
            for e in (0..experts).filter(|&e| !chosen[e]) {
                labels[(s * experts + e) * d.hw + p] = wrong as f64 / spread;
            }
        }
    }
    labels
}

/// Per sample and location, the expert whose output `[B, E, C, H W]` is closest to the target
/// `[B, C, H W]` in squared error, the selected one (`[B, 1, H W]`) on ties: `[B, H W]`.
pub fn best_experts(outputs: &[f64], target: &[f64], selected: &[usize], d: SlotDims, experts: usize) -> Vec<usize> {
    let error = |s: usize, e: usize, p: usize| -> f64 {
        (0..d.c)
            .map(|ch| (outputs[((s * experts + e) * d.c + ch) * d.hw + p] - target[(s * d.c + ch) * d.hw + p]).powi(2))
            .sum()
    };
    let mut best = Vec::with_capacity(d.b * d.hw);
    for s in 0..d.b {
        for p in 0..d.hw {
            let mut pick = selected[s * d.hw + p];
            let mut low = error(s, pick, p);
            for e in 0..experts {
                let err = error(s, e, p);
                if err < low {
                    (pick, low) = (e, err);
                }
            }
            best.push(pick);
        }
    }
    best
}

/// Expert-gradient factors `[B, 1, H W]`: `factor` where the selected expert is not the best.
pub fn best_damping_scale(best: &[usize], selected: &[usize], factor: f64) -> Vec<f64> {
    best.iter().zip(selected).map(|(b, s)| if b == s { 1.0 } else { factor }).collect()
}

/// RC labels `[B, E, H W]` of the best-expert criterion: 1 for the best expert, 0 elsewhere.
pub fn best_labels(best: &[usize], d: SlotDims, experts: usize) -> Vec<f64> {
    let mut labels = vec![0.0; d.b * experts * d.hw];
    for (i, &e) in best.iter().enumerate() {
        let (s, p) = (i / d.hw, i % d.hw);
        labels[(s * experts + e) * d.hw + p] = 1.0;
    }
    labels
}

/// The restart due after a window in which expert `i` was routed to `load[i]` locations with
/// summed squared error `error[i]`: `(from, to)` when the least used expert `to` got less than
/// `below` of the locations and another expert `from` (the one with the largest error) has some.
pub fn restart_plan(load: &[usize], error: &[f64], below: f64) -> Option<(usize, usize)> {
    let total = load.iter().sum::<usize>() as f64;
    let to = (0..load.len()).min_by_key(|&i| load[i])?;
    if total == 0.0 || load[to] as f64 >= below * total {
        return None;
    }
    let from = (0..load.len()).filter(|&i| i != to && load[i] > 0).max_by(|&a, &b| error[a].total_cmp(&error[b]))?;
    Some((from, to))
}
