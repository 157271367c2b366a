//! The hierarchical shallow PLRNN (hier-shPLRNN) sequence expert: every parameter of a shallow
//! piecewise-linear RNN is a bias-free linear function of the context.

use burn::module::{Module, Param};
use burn::tensor::{Distribution, Tensor, activation::relu, backend::Backend};
use serde::{Deserialize, Serialize};

use mixer_core::Error;

use crate::ExpertError;

/// Sizes of a [`HierShPlrnn`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HierShPlrnnConfig {
    /// Latent size `M` (= data dimension).
    pub dim: usize,
    /// Hidden size `L`.
    pub hidden: usize,
    /// Context size `c`.
    pub context: usize,
    /// Floor of the teacher-forcing weight `alpha`, in `[0, 1]`.
    pub tf_alpha_min: f64,
}

impl HierShPlrnnConfig {
    /// Checks sizes and `0 <= tf_alpha_min <= 1`.
    pub fn validate(&self) -> Result<(), ExpertError> {
        for (field, v) in [("dim", self.dim), ("hidden", self.hidden), ("context", self.context)] {
            if v == 0 {
                return Err(Error::config(field, "must be at least 1").into());
            }
        }
        if !(0.0..=1.0).contains(&self.tf_alpha_min) {
            return Err(Error::config("tf_alpha_min", format!("must lie in [0, 1], got {}", self.tf_alpha_min)).into());
        }
        Ok(())
    }

    /// Number of generated parameters `P = M + M L + L M + M + L + 1`.
    pub fn num_params(&self) -> usize {
        2 * self.dim + 2 * self.dim * self.hidden + self.hidden + 1
    }

    /// Builds the model; the hypernetwork `H: [P, c]` is Uniform(±1/sqrt(c)).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<HierShPlrnn<B>, ExpertError> {
        self.validate()?;
        let bound = 1.0 / (self.context as f64).sqrt();
        Ok(HierShPlrnn {
            hyper: Param::from_tensor(Tensor::random(
                [self.num_params(), self.context],
                Distribution::Uniform(-bound, bound),
                device,
            )),
            dim: self.dim,
            hidden: self.hidden,
            tf_alpha_min: self.tf_alpha_min,
        })
    }
}

/// Generalized teacher forcing of a [`HierShPlrnn`] in training (Hess et al., 2023; sparse
/// forcing every `interval` steps as in Brenner et al., 2024).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forcing {
    /// Force the latent before every `interval`-th step (1: every step).
    pub interval: usize,
    /// Largest weight the data gets, in `[0, 1]`: the model's own weight is at least
    /// `1 - weight` (1 leaves the generated `alpha` alone; 0 runs freely).
    pub weight: f64,
}

impl Forcing {
    /// Checks `interval >= 1` and `0 <= weight <= 1`.
    pub fn validate(&self) -> Result<(), ExpertError> {
        if self.interval == 0 {
            return Err(Error::config("forcing.interval", "must be at least 1").into());
        }
        if !(0.0..=1.0).contains(&self.weight) {
            return Err(Error::config("forcing.weight", format!("must lie in [0, 1], got {}", self.weight)).into());
        }
        Ok(())
    }
}

/// Per-row PLRNN parameters generated from contexts.
#[derive(Clone, Debug)]
pub struct PlrnnParams<B: Backend> {
    /// Diagonal `A: [N, M]`.
    pub a: Tensor<B, 2>,
    /// `W1: [N, M, L]`.
    pub w1: Tensor<B, 3>,
    /// `W2: [N, L, M]`.
    pub w2: Tensor<B, 3>,
    /// `h1: [N, M]`.
    pub h1: Tensor<B, 2>,
    /// `h2: [N, L]`.
    pub h2: Tensor<B, 2>,
    /// Teacher-forcing weight after the floor, `[N, 1]`, in `[tf_alpha_min, 1]`.
    pub alpha: Tensor<B, 2>,
}

/// hier-shPLRNN (MixER, Nzoyem et al. 2025): `theta(ctx) = H ctx` (bias-free), then the teacher-forced
/// recurrence `z' = alpha z + (1 - alpha) x_t`, `z_next = A z' + W1 relu(W2 z' + h2) + h1`.
#[derive(Module, Debug)]
pub struct HierShPlrnn<B: Backend> {
    /// Hypernetwork `H: [P, c]`, rows in the order `A, W1, W2, h1, h2, alpha`.
    pub hyper: Param<Tensor<B, 2>>,
    /// Latent size `M`.
    pub dim: usize,
    /// Hidden size `L`.
    pub hidden: usize,
    /// Floor of `alpha`.
    pub tf_alpha_min: f64,
}

impl<B: Backend> HierShPlrnn<B> {
    /// The parameters of each row's PLRNN: `ctx: [N, c]`; `alpha = clamp(raw, tf_alpha_min, 1)`.
    pub fn params(&self, ctx: Tensor<B, 2>) -> Result<PlrnnParams<B>, ExpertError> {
        let [n, c] = ctx.dims();
        let want = self.hyper.dims()[1];
        if c != want {
            return Err(Error::shape("contexts", [n, want], [n, c]).into());
        }
        let (m, l) = (self.dim, self.hidden);
        let theta = ctx.matmul(self.hyper.val().transpose());
        let mut at = 0;
        let mut take = |size: usize| {
            let part = theta.clone().slice([0..n, at..at + size]);
            at += size;
            part
        };
        let a = take(m);
        let w1 = take(m * l).reshape([n, m, l]);
        let w2 = take(l * m).reshape([n, l, m]);
        let h1 = take(m);
        let h2 = take(l);
        let alpha = take(1).clamp(self.tf_alpha_min, 1.0);
        Ok(PlrnnParams { a, w1, w2, h1, h2, alpha })
    }

    /// One PLRNN step from `z': [N, M]`.
    fn step(p: &PlrnnParams<B>, z: Tensor<B, 2>) -> Tensor<B, 2> {
        let [n, m] = z.dims();
        let l = p.h2.dims()[1];
        let pre: Tensor<B, 2> = p.w2.clone().matmul(z.clone().unsqueeze_dim::<3>(2)).reshape([n, l]) + p.h2.clone();
        let back: Tensor<B, 2> = p.w1.clone().matmul(relu(pre).unsqueeze_dim::<3>(2)).reshape([n, m]);
        p.a.clone() * z + back + p.h1.clone()
    }

    /// One-step-ahead predictions under teacher forcing: `x: [N, T, M]`, `ctx: [N, c]` →
    /// `[N, T, M]` where output `t` predicts `x_{t+1}`; the latent starts at `z = x_0`.
    pub fn forward_sequence(&self, x: Tensor<B, 3>, ctx: Tensor<B, 2>) -> Result<Tensor<B, 3>, ExpertError> {
        let [n, t, m] = x.dims();
        if m != self.dim || ctx.dims()[0] != n {
            return Err(Error::shape(
                "sequences [N, T, M] and contexts [N, c]",
                [n, t, self.dim],
                [ctx.dims()[0], t, m],
            )
            .into());
        }
        let p = self.params(ctx)?;
        let frame = |i: usize| -> Tensor<B, 2> { x.clone().slice([0..n, i..i + 1, 0..m]).reshape([n, m]) };
        let mut z = if t > 0 { frame(0) } else { Tensor::zeros([n, m], &x.device()) };
        let mut outs = Vec::with_capacity(t);
        for i in 0..t {
            let forced = p.alpha.clone() * z + (p.alpha.clone().neg() + 1.0) * frame(i);
            z = Self::step(&p, forced);
            outs.push(z.clone());
        }
        if outs.is_empty() {
            return Ok(x);
        }
        Ok(Tensor::stack(outs, 1))
    }

    /// Predictions of `x_1 .. x_{T-1}` under generalized teacher forcing (Hess et al., 2023):
    /// `x: [N, T, M]`, `ctx: [N, c]` → `[N, T - 1, M]`. The latent starts at `z = x_0`; before the
    /// steps `t` with `t % forcing.interval == 0` it is pulled towards the data,
    /// `z' = a z + (1 - a) x_t` with `a = max(alpha, 1 - forcing.weight)` (`alpha` the generated,
    /// floored weight), and runs freely (`z' = z`) in between.
    pub fn predict_forced(
        &self,
        x: Tensor<B, 3>,
        ctx: Tensor<B, 2>,
        forcing: &Forcing,
    ) -> Result<Tensor<B, 3>, ExpertError> {
        forcing.validate()?;
        let [n, t, m] = x.dims();
        if m != self.dim || ctx.dims()[0] != n || t < 2 {
            return Err(Error::shape(
                "sequences [N, T >= 2, M] and contexts [N, c]",
                [n, t.max(2), self.dim],
                [ctx.dims()[0], t, m],
            )
            .into());
        }
        let p = self.params(ctx)?;
        let weight = p.alpha.clone().clamp_min(1.0 - forcing.weight);
        let frame = |i: usize| -> Tensor<B, 2> { x.clone().slice([0..n, i..i + 1, 0..m]).reshape([n, m]) };
        let mut z = frame(0);
        let mut outs = Vec::with_capacity(t - 1);
        for i in 0..t - 1 {
            // at t = 0 the latent is the data, so forcing would not change it
            if i > 0 && i % forcing.interval == 0 {
                z = weight.clone() * z + (weight.clone().neg() + 1.0) * frame(i);
            }
            z = Self::step(&p, z);
            outs.push(z.clone());
        }
        Ok(Tensor::stack(outs, 1))
    }

    /// Free-running generation of `steps` states after `z0: [N, M]` (no forcing): `[N, steps, M]`.
    pub fn generate(&self, z0: Tensor<B, 2>, ctx: Tensor<B, 2>, steps: usize) -> Result<Tensor<B, 3>, ExpertError> {
        let p = self.params(ctx)?;
        let [n, m] = z0.dims();
        if m != self.dim {
            return Err(Error::shape("initial latents", [n, self.dim], [n, m]).into());
        }
        let mut z = z0;
        let mut outs = Vec::with_capacity(steps);
        for _ in 0..steps {
            z = Self::step(&p, z);
            outs.push(z.clone());
        }
        if outs.is_empty() {
            return Ok(Tensor::zeros([n, 0, m], &z.device()));
        }
        Ok(Tensor::stack(outs, 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::TestBackend;
    use mixer_core::host::{tensor2, to_vec};

    #[test]
    fn recurrence_matches_a_hand_written_loop() {
        let device = Default::default();
        let _rng = crate::tests::rng_lock();
        TestBackend::seed(&device, 11);
        let (m, l, c, n, t) = (2, 3, 2, 2, 4);
        for floor in [0.1, 0.9] {
            let cfg = HierShPlrnnConfig { dim: m, hidden: l, context: c, tf_alpha_min: floor };
            let net = cfg.init::<TestBackend>(&device).unwrap();
            let ctx = [0.8, -0.5, 1.3, 0.4];
            let xs: Vec<f64> = (0..n * t * m).map(|i| ((i * 5 % 7) as f64 - 3.0) / 4.0).collect();
            let x = Tensor::<TestBackend, 3>::from_data(burn::tensor::TensorData::new(xs.clone(), [n, t, m]), &device);
            let got = to_vec(net.forward_sequence(x, tensor2(&ctx, [n, c], &device)).unwrap());
            let h = to_vec(net.hyper.val());
            let p = cfg.num_params();
            for r in 0..n {
                let th: Vec<f64> = (0..p).map(|k| h[k * c] * ctx[r * c] + h[k * c + 1] * ctx[r * c + 1]).collect();
                let a = &th[0..m];
                let w1 = &th[m..m + m * l];
                let w2 = &th[m + m * l..m + 2 * m * l];
                let h1 = &th[m + 2 * m * l..2 * m + 2 * m * l];
                let h2 = &th[2 * m + 2 * m * l..2 * m + 2 * m * l + l];
                let alpha = th[p - 1].clamp(floor, 1.0);
                let xr = |i: usize, j: usize| xs[(r * t + i) * m + j];
                let mut z: Vec<f64> = (0..m).map(|j| xr(0, j)).collect();
                for i in 0..t {
                    let zp: Vec<f64> = (0..m).map(|j| alpha * z[j] + (1.0 - alpha) * xr(i, j)).collect();
                    let hid: Vec<f64> =
                        (0..l).map(|q| ((0..m).map(|j| w2[q * m + j] * zp[j]).sum::<f64>() + h2[q]).max(0.0)).collect();
                    z = (0..m)
                        .map(|j| a[j] * zp[j] + (0..l).map(|q| w1[j * l + q] * hid[q]).sum::<f64>() + h1[j])
                        .collect();
                    for j in 0..m {
                        let g = got[(r * t + i) * m + j];
                        assert!((g - z[j]).abs() < 1e-12, "row {r} t {i} j {j}: {g} vs {}", z[j]);
                    }
                }
            }
        }
    }

    #[test]
    fn forced_prediction_interpolates_between_forcing_and_free_running() {
        let device = Default::default();
        let _rng = crate::tests::rng_lock();
        TestBackend::seed(&device, 3);
        let (n, t, m) = (2, 6, 1);
        let cfg = HierShPlrnnConfig { dim: m, hidden: 4, context: 2, tf_alpha_min: 0.0 };
        let net = cfg.init::<TestBackend>(&device).unwrap();
        let xs: Vec<f64> = (0..n * t).map(|i| ((i * 7 % 5) as f64 - 2.0) / 3.0).collect();
        let x = Tensor::<TestBackend, 3>::from_data(burn::tensor::TensorData::new(xs.clone(), [n, t, m]), &device);
        let ctx = tensor2::<TestBackend>(&[0.5, -0.2, -0.3, 0.9], [n, 2], &device);
        // weight 0: free running from x_0, the same as `generate`
        let free = net.predict_forced(x.clone(), ctx.clone(), &Forcing { interval: 1, weight: 0.0 }).unwrap();
        let x0 = x.clone().slice([0..n, 0..1, 0..m]).reshape([n, m]);
        let generated = net.generate(x0, ctx.clone(), t - 1).unwrap();
        let (a, b) = (to_vec(free), to_vec(generated));
        assert!(a.iter().zip(&b).all(|(p, q)| (p - q).abs() < 1e-12));
        // weight 1 with alpha generated as 0 everywhere (zero hypernetwork row): one-step-ahead
        let mut zeroed = net.clone();
        let mut h = to_vec(zeroed.hyper.val());
        let p = cfg.num_params();
        h[(p - 1) * 2] = 0.0;
        h[(p - 1) * 2 + 1] = 0.0;
        zeroed.hyper = Param::from_tensor(tensor2(&h, [p, 2], &device));
        let forced =
            to_vec(zeroed.predict_forced(x.clone(), ctx.clone(), &Forcing { interval: 1, weight: 1.0 }).unwrap());
        let one_step = to_vec(zeroed.forward_sequence(x.clone(), ctx.clone()).unwrap());
        for r in 0..n {
            for i in 0..t - 1 {
                assert!((forced[r * (t - 1) + i] - one_step[r * t + i]).abs() < 1e-12);
            }
        }
        // interval 3: forced at t = 3 only; up to there it matches free running
        let sparse =
            to_vec(zeroed.predict_forced(x.clone(), ctx.clone(), &Forcing { interval: 3, weight: 1.0 }).unwrap());
        let free0 = to_vec(zeroed.predict_forced(x, ctx, &Forcing { interval: 1, weight: 0.0 }).unwrap());
        for r in 0..n {
            for i in 0..3 {
                assert!((sparse[r * (t - 1) + i] - free0[r * (t - 1) + i]).abs() < 1e-12);
            }
            assert!((sparse[r * (t - 1) + 3] - one_step[r * t + 3]).abs() < 1e-12, "forced at t = 3");
        }
        assert!(Forcing { interval: 0, weight: 0.5 }.validate().is_err());
        assert!(Forcing { interval: 1, weight: 1.5 }.validate().is_err());
    }

    #[test]
    fn each_invalid_field_is_rejected() {
        let ok = HierShPlrnnConfig { dim: 2, hidden: 4, context: 3, tf_alpha_min: 0.1 };
        assert!(ok.validate().is_ok());
        assert!(HierShPlrnnConfig { dim: 0, ..ok.clone() }.validate().is_err());
        assert!(HierShPlrnnConfig { hidden: 0, ..ok.clone() }.validate().is_err());
        assert!(HierShPlrnnConfig { context: 0, ..ok.clone() }.validate().is_err());
        assert!(HierShPlrnnConfig { tf_alpha_min: 1.5, ..ok.clone() }.validate().is_err());
        assert!(HierShPlrnnConfig { tf_alpha_min: f64::NAN, ..ok }.validate().is_err());
    }
}
