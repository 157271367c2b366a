//! Cross-entropy-method model-predictive control on burn tensors: the planner that acts through a
//! (learned or true) dynamics model in continual model-based control (HyperCRL, Huang, Xie,
//! Gilitschenski, Shkurti et al., "Continual model-based reinforcement learning with
//! hypernetworks", IROS 2021).
//!
//! Each control step samples `particles` action sequences of `horizon` steps from a Gaussian
//! per step and action, clipped to the bounds, rolls them all out through the model in one batch,
//! and refits the Gaussian to the `elites` best returns, `iterations` times (the cross-entropy
//! method, Botev, Kroese, Rubinstein & L'Ecuyer, 2013; as an MPC planner in PETS, Chua, Calandra,
//! McAllister & Levine, NeurIPS 2018). Only the first action of the final mean is applied
//! (receding horizon); the next plan can start from this mean shifted by one step.
//!
//! Sequences live in a normalised space, `a = mid + half * z` with `z` in `[-1, 1]`, so one
//! clamp bounds every action whatever its range.

use burn::tensor::{Tensor, TensorData, backend::Backend};
use mixer_core::host::tensor2;
use mixer_core::{Error, Rng};
use mixer_data::ActionBound;
use rand::Rng as _;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::TrainError;

/// Settings of the CEM planner; [`CemSettings::check`] turns them into a [`Cem`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CemSettings {
    /// Steps of each planned action sequence.
    pub horizon: usize,
    /// Action sequences sampled per iteration.
    pub particles: usize,
    /// Best sequences the Gaussian is refit to.
    pub elites: usize,
    /// Sample-and-refit rounds per plan.
    pub iterations: usize,
    /// Initial standard deviation as a fraction of each action's range (`high - low`).
    pub initial_std: f64,
    /// Weight of the previous mean and std in each refit (0: replace them by the elites').
    pub alpha: f64,
    /// Whether a plan starts from the previous plan's mean shifted by one step.
    pub warm_start: bool,
}

impl Default for CemSettings {
    fn default() -> Self {
        Self { horizon: 20, particles: 500, elites: 50, iterations: 5, initial_std: 0.5, alpha: 0.1, warm_start: true }
    }
}

impl CemSettings {
    /// Checks every field and returns the planner (with no previous plan).
    pub fn check(&self) -> Result<Cem, TrainError> {
        for (field, v) in [
            ("horizon", self.horizon),
            ("particles", self.particles),
            ("elites", self.elites),
            ("iterations", self.iterations),
        ] {
            crate::config::positive(field, v)?;
        }
        if self.elites > self.particles {
            let reason = format!("must not exceed particles = {}, got {}", self.particles, self.elites);
            return Err(Error::config("elites", reason).into());
        }
        if !(self.initial_std > 0.0 && self.initial_std.is_finite()) {
            return Err(Error::config("initial_std", format!("must be > 0, got {}", self.initial_std)).into());
        }
        if !(0.0..1.0).contains(&self.alpha) {
            return Err(Error::config("alpha", format!("must be in [0, 1), got {}", self.alpha)).into());
        }
        Ok(Cem { settings: self.clone(), previous: None })
    }
}

/// The CEM planner: checked settings and the mean of the last plan (for warm starts).
#[derive(Clone, Debug)]
pub struct Cem {
    settings: CemSettings,
    /// Normalised mean of the last plan, `[horizon * actions]` (step-major).
    previous: Option<Vec<f64>>,
}

/// The Gaussian over normalised action sequences, `[horizon, actions]` each.
struct Sampler<B: Backend> {
    mean: Tensor<B, 2>,
    std: Tensor<B, 2>,
}

impl Cem {
    /// The checked settings.
    pub fn settings(&self) -> &CemSettings {
        &self.settings
    }

    /// Forgets the previous plan, so that the next one starts from the middle of the bounds.
    pub fn reset(&mut self) {
        self.previous = None;
    }

    /// The first action, `[actions]`, of the best action sequence from `state: [d]` through
    /// `model(states [P, d], actions [P, m]) -> (next states [P, d], rewards [P])`, with
    /// actions within `bounds: [m]` and sampling from `rng` (same seed, same action).
    ///
    /// The sequence maximises the summed reward over the horizon; its mean is kept for the
    /// next call's warm start.
    ///
    /// ```
    /// use burn::backend::NdArray;
    /// use burn::tensor::Tensor;
    /// use mixer_data::ActionBound;
    /// use mixer_train::CemSettings;
    ///
    /// type B = NdArray<f64>;
    /// # fn main() -> Result<(), mixer_train::TrainError> {
    /// // x' = x + u, reward -x^2: drive x = 0.5 to 0 at once
    /// let model = |x: Tensor<B, 2>, u: Tensor<B, 2>| {
    ///     let next = x + u;
    ///     let reward = (next.clone() * next.clone()).neg().reshape([-1]);
    ///     (next, reward)
    /// };
    /// let settings = CemSettings { horizon: 3, particles: 100, elites: 10, ..CemSettings::default() };
    /// let mut cem = settings.check()?;
    /// let mut rng = mixer_core::Seeds::new(0).stream("cem");
    /// let bounds = [ActionBound { low: -1.0, high: 1.0 }];
    /// let u = cem.plan::<B>(&[0.5], model, &bounds, &mut rng, &Default::default())?;
    /// assert!((u[0] + 0.5).abs() < 0.1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn plan<B: Backend>(
        &mut self,
        state: &[f64],
        mut model: impl FnMut(Tensor<B, 2>, Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 1>),
        bounds: &[ActionBound],
        rng: &mut Rng,
        device: &B::Device,
    ) -> Result<Vec<f64>, TrainError> {
        check_problem(state, bounds)?;
        let m = bounds.len();
        let mut sampler = self.initial_sampler::<B>(m, device);
        for _ in 0..self.settings.iterations {
            let z = sampler.draw(self.settings.particles, rng, device);
            let returns = self.rollout(state, &z, &mut model, bounds, device)?;
            sampler = self.refit(sampler, z, returns);
        }
        let mean = mixer_core::host::to_vec(sampler.mean);
        let first = bounds.iter().zip(&mean[..m]).map(|(b, z)| to_action(b, *z)).collect();
        self.previous = Some(mean);
        Ok(first)
    }

    /// The starting Gaussian: the previous mean shifted by one step (or zeros), the initial std.
    fn initial_sampler<B: Backend>(&self, m: usize, device: &B::Device) -> Sampler<B> {
        let h = self.settings.horizon;
        let mean = match &self.previous {
            Some(prev) if self.settings.warm_start && prev.len() == h * m => shift_one_step(prev, m),
            _ => vec![0.0; h * m],
        };
        // a std of `initial_std * (high - low)` is `2 * initial_std` in normalised units
        let std = vec![2.0 * self.settings.initial_std; h * m];
        Sampler { mean: tensor2(&mean, [h, m], device), std: tensor2(&std, [h, m], device) }
    }

    /// The return of each sequence, `[P]`: the rewards summed along the rollout of `z: [P, H, m]`.
    fn rollout<B: Backend>(
        &self,
        state: &[f64],
        z: &Tensor<B, 3>,
        model: &mut impl FnMut(Tensor<B, 2>, Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 1>),
        bounds: &[ActionBound],
        device: &B::Device,
    ) -> Result<Tensor<B, 1>, TrainError> {
        let [p, h, m] = z.dims();
        let d = state.len();
        let (mid, half) = centre_and_half_width::<B>(bounds, device);
        let mut x = tensor2(state, [1, d], device).repeat_dim(0, p);
        let mut total = Tensor::<B, 1>::zeros([p], device);
        for t in 0..h {
            let a = z.clone().narrow(1, t, 1).reshape([p, m]) * half.clone() + mid.clone();
            let (next, reward) = model(x, a);
            if next.dims() != [p, d] || reward.dims() != [p] {
                let found = format!("{:?} and {:?}", next.dims(), reward.dims());
                return Err(Error::shape(
                    "model output (next states, rewards)",
                    format!("[{p}, {d}] and [{p}]"),
                    found,
                )
                .into());
            }
            total = total + reward;
            x = next;
        }
        // a sequence whose rollout is not finite is never an elite
        Ok(total.clone().mask_fill(total.is_finite().bool_not(), f64::NEG_INFINITY))
    }

    /// The Gaussian refit to the elites of `z: [P, H, m]` by `returns: [P]`, smoothed by `alpha`.
    fn refit<B: Backend>(&self, old: Sampler<B>, z: Tensor<B, 3>, returns: Tensor<B, 1>) -> Sampler<B> {
        let [_, h, m] = z.dims();
        let (_, best) = returns.topk_with_indices(self.settings.elites, 0);
        let elites = z.select(0, best);
        let (var, mean) = elites.var_mean_bias(0);
        let (mean, std) = (mean.reshape([h, m]), var.sqrt().reshape([h, m]));
        let alpha = self.settings.alpha;
        Sampler { mean: old.mean * alpha + mean * (1.0 - alpha), std: old.std * alpha + std * (1.0 - alpha) }
    }
}

impl<B: Backend> Sampler<B> {
    /// `particles` normalised sequences, `[P, H, m]`, clamped to `[-1, 1]`.
    fn draw(&self, particles: usize, rng: &mut Rng, device: &B::Device) -> Tensor<B, 3> {
        let [h, m] = self.mean.dims();
        let noise: Vec<f64> = (0..particles * h * m).map(|_| rng.sample::<f64, _>(StandardNormal)).collect();
        let noise = Tensor::<B, 3>::from_data(TensorData::new(noise, [particles, h, m]), device);
        let (mean, std) = (self.mean.clone().unsqueeze_dim::<3>(0), self.std.clone().unsqueeze_dim::<3>(0));
        (noise * std + mean).clamp(-1.0, 1.0)
    }
}

/// Checks that the state is finite and every bound is a non-empty finite interval.
fn check_problem(state: &[f64], bounds: &[ActionBound]) -> Result<(), TrainError> {
    if state.is_empty() {
        return Err(Error::config("state", "must have at least one component").into());
    }
    mixer_core::ensure_finite("planner state", state)?;
    if bounds.is_empty() {
        return Err(Error::config("bounds", "needs one bound per action, got none").into());
    }
    if let Some((i, b)) =
        bounds.iter().enumerate().find(|(_, b)| !(b.low < b.high && b.low.is_finite() && b.high.is_finite()))
    {
        return Err(Error::config(
            "bounds",
            format!("action {i} needs finite low < high, got [{}, {}]", b.low, b.high),
        )
        .into());
    }
    Ok(())
}

/// The step-major sequence `prev: [H * m]` advanced by one step, the last step set to 0.
fn shift_one_step(prev: &[f64], m: usize) -> Vec<f64> {
    let mut out = prev[m..].to_vec();
    out.resize(prev.len(), 0.0);
    out
}

/// The action of normalised value `z` in `[-1, 1]`.
fn to_action(b: &ActionBound, z: f64) -> f64 {
    (0.5 * (b.low + b.high) + 0.5 * (b.high - b.low) * z).clamp(b.low, b.high)
}

/// Centre and half-width of each action's interval, `[1, m]` each.
fn centre_and_half_width<B: Backend>(bounds: &[ActionBound], device: &B::Device) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let m = bounds.len();
    let mid: Vec<f64> = bounds.iter().map(|b| 0.5 * (b.low + b.high)).collect();
    let half: Vec<f64> = bounds.iter().map(|b| 0.5 * (b.high - b.low)).collect();
    (tensor2(&mid, [1, m], device), tensor2(&half, [1, m], device))
}

#[cfg(test)]
mod tests;
