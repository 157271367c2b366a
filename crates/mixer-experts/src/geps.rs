//! The GEPS expert: a root MLP whose every layer is adapted by a low-rank function of the context.

use burn::module::{Module, Param};
use burn::tensor::{Tensor, backend::Backend};
use serde::{Deserialize, Serialize};

use mixer_core::{Error, Expert};
use mixer_hyper::{LowRankLinear, LowRankLinearConfig, encoded_width};

use crate::stacked::GepsParams;
use crate::{ExpertError, LearnableSwish};

/// Widths `(in, out)` of the linear layers of an MLP `d -> W -> ... -> d` with `depth` layers.
pub(crate) fn mlp_widths(dim: usize, width: usize, depth: usize) -> Vec<(usize, usize)> {
    (0..depth).map(|i| (if i == 0 { dim } else { width }, if i + 1 == depth { dim } else { width })).collect()
}

/// Checks the sizes shared by the MLP experts.
pub(crate) fn check_mlp(dim: usize, context: usize, width: usize, depth: usize) -> Result<(), ExpertError> {
    for (field, v) in [("dim", dim), ("context", context), ("width", width)] {
        if v == 0 {
            return Err(Error::config(field, "must be at least 1").into());
        }
    }
    if depth < 2 {
        return Err(Error::config("depth", format!("at least 2 linear layers are needed, got {depth}")).into());
    }
    Ok(())
}

/// Sizes and options of a [`GepsExpert`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GepsConfig {
    /// State dimension `d`.
    pub dim: usize,
    /// Context size `c` (the expert's slice of the environment context).
    pub context: usize,
    /// Hidden width `W`.
    pub width: usize,
    /// Number of linear layers (3 in MixER).
    pub depth: usize,
    /// A trainable scalar (zero init) added to the context.
    pub context_shift: bool,
    /// MIP encoding of the (shifted) context; the low-rank factors then have rank `2c`.
    pub mip: bool,
}

impl GepsConfig {
    /// Checks that sizes are positive and `depth >= 2`.
    pub fn validate(&self) -> Result<(), ExpertError> {
        check_mlp(self.dim, self.context, self.width, self.depth)
    }

    /// Builds the expert: each layer a [`LowRankLinear`] of rank `c'` (`W0`, `b0`
    /// Uniform(±1/sqrt(in)); `A`, `B`, `A_b` Uniform(±1/sqrt(rows))), context-modulated swish
    /// (beta0 Uniform(0.01, 1)) between layers.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<GepsExpert<B>, ExpertError> {
        self.validate()?;
        let rank = encoded_width(self.context, self.mip);
        let ws = mlp_widths(self.dim, self.width, self.depth);
        let layers = ws
            .iter()
            .map(|&(input, output)| LowRankLinearConfig { input, output, context: rank }.init(device))
            .collect::<Result<Vec<_>, _>>()?;
        let activations = ws[..self.depth - 1].iter().map(|&(_, o)| LearnableSwish::new(o, rank, device)).collect();
        Ok(GepsExpert {
            layers,
            activations,
            context_shift: self.context_shift.then(|| Param::from_tensor(Tensor::zeros([1], device))),
            context: self.context,
            mip: self.mip,
        })
    }
}

/// GEPS expert (MixER, Nzoyem et al. 2025): `depth` [`LowRankLinear`] layers with [`LearnableSwish`] between
/// (slopes `beta0 + A_beta ctx`), optionally a trainable scalar shift added to the context.
#[derive(Module, Debug)]
pub struct GepsExpert<B: Backend> {
    /// Linear layers.
    pub layers: Vec<LowRankLinear<B>>,
    /// Activations after every layer but the last.
    pub activations: Vec<LearnableSwish<B>>,
    /// Scalar added to the context, `[1]`.
    pub context_shift: Option<Param<Tensor<B, 1>>>,
    /// Context size `c` read by the expert.
    pub context: usize,
    /// Whether the context is MIP-encoded before the layers.
    pub mip: bool,
}

impl<B: Backend> Expert<B> for GepsExpert<B> {
    fn state_dim(&self) -> usize {
        self.layers[0].weight.dims()[1]
    }

    fn context_dim(&self) -> usize {
        self.context
    }

    /// Shifts and encodes the context, then runs every [`LowRankLinear`] layer and
    /// [`LearnableSwish`] on it (the forward pass the stacked mixture rollout shares).
    fn forward(&self, x: Tensor<B, 2>, ctx: Tensor<B, 2>) -> Tensor<B, 2> {
        GepsParams::of(self).bind(ctx).forward(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{TestAutodiffBackend, TestBackend, central_difference};
    use burn::module::AutodiffModule;
    use mixer_core::host::{tensor2, to_vec};

    fn config() -> GepsConfig {
        GepsConfig { dim: 2, context: 2, width: 4, depth: 3, context_shift: true, mip: false }
    }

    /// `sum(f(x, ctx) * R)` for a fixed `R`.
    fn objective(e: &GepsExpert<TestBackend>, x: &[f64], ctx: &[f64]) -> f64 {
        let device = Default::default();
        let y = to_vec(e.forward(tensor2(x, [3, 2], &device), tensor2(ctx, [3, 2], &device)));
        y.iter().enumerate().map(|(i, v)| v * (0.3 + 0.1 * i as f64)).sum()
    }

    #[test]
    fn gradients_match_central_differences() {
        let device = Default::default();
        let _rng = crate::tests::rng_lock();
        TestBackend::seed(&device, 3);
        let mut cfg = config();
        for mip in [false, true] {
            cfg.mip = mip;
            let expert = cfg.init::<TestAutodiffBackend>(&device).unwrap();
            // a non-zero shift so its gradient and the context path are both exercised
            let mut expert = expert;
            expert.context_shift = Some(Param::from_tensor(Tensor::from_data([0.2], &device)));
            let x = [0.5, -0.3, 1.2, 0.8, -1.0, 0.1];
            let c = [0.4, -0.7, 0.0, 0.3, 1.1, -0.2];
            let xt =
                Tensor::<TestAutodiffBackend, 2>::from_data(burn::tensor::TensorData::new(x.to_vec(), [3, 2]), &device);
            let ct =
                Tensor::<TestAutodiffBackend, 2>::from_data(burn::tensor::TensorData::new(c.to_vec(), [3, 2]), &device)
                    .require_grad();
            let y = expert.forward(xt, ct.clone());
            let r: Vec<f64> = (0..6).map(|i| 0.3 + 0.1 * i as f64).collect();
            let loss = (y * Tensor::from_data(burn::tensor::TensorData::new(r, [3, 2]), &device)).sum();
            let grads = loss.backward();
            let inner = expert.valid();

            let g_ctx = to_vec(ct.grad(&grads).unwrap());
            let fd = central_difference(&c, |v| objective(&inner, &x, v));
            crate::tests::assert_close(&g_ctx, &fd, 1e-6, "context");

            let g_a = to_vec(expert.layers[1].a.grad(&grads).unwrap());
            let a0 = to_vec(inner.layers[1].a.val());
            let fd = central_difference(&a0, |v| {
                let mut e = inner.clone();
                e.layers[1].a = Param::from_tensor(tensor2(v, e.layers[1].a.dims(), &device));
                objective(&e, &x, &c)
            });
            crate::tests::assert_close(&g_a, &fd, 1e-6, "A of layer 1");

            let g_w = to_vec(expert.layers[0].weight.grad(&grads).unwrap());
            let w0 = to_vec(inner.layers[0].weight.val());
            let fd = central_difference(&w0, |v| {
                let mut e = inner.clone();
                e.layers[0].weight = Param::from_tensor(tensor2(v, e.layers[0].weight.dims(), &device));
                objective(&e, &x, &c)
            });
            crate::tests::assert_close(&g_w, &fd, 1e-6, "W0 of layer 0");

            let g_beta = to_vec(expert.activations[1].beta.grad(&grads).unwrap());
            let b0 = to_vec(inner.activations[1].beta.val());
            let fd = central_difference(&b0, |v| {
                let mut e = inner.clone();
                e.activations[1].beta = Param::from_tensor(Tensor::from_data(
                    burn::tensor::TensorData::new(v.to_vec(), [v.len()]),
                    &device,
                ));
                objective(&e, &x, &c)
            });
            crate::tests::assert_close(&g_beta, &fd, 1e-6, "swish beta");

            let shift = expert.context_shift.as_ref().unwrap();
            let g_shift = to_vec(shift.grad(&grads).unwrap());
            let fd = central_difference(&[0.2], |v| {
                let mut e = inner.clone();
                e.context_shift = Some(Param::from_tensor(Tensor::from_data(
                    burn::tensor::TensorData::new(v.to_vec(), [v.len()]),
                    &device,
                )));
                objective(&e, &x, &c)
            });
            crate::tests::assert_close(&g_shift, &fd, 1e-6, "context shift");
        }
    }

    #[test]
    fn shift_acts_like_adding_to_the_context() {
        let device = Default::default();
        let mut e = {
            let _rng = crate::tests::rng_lock();
            config().init::<TestBackend>(&device).unwrap()
        };
        e.context_shift = Some(Param::from_tensor(Tensor::from_data([0.5], &device)));
        let x = tensor2::<TestBackend>(&[0.1, 0.2], [1, 2], &device);
        let shifted = to_vec(e.forward(x.clone(), tensor2(&[1.0, -1.0], [1, 2], &device)));
        e.context_shift = None;
        let direct = to_vec(e.forward(x, tensor2(&[1.5, -0.5], [1, 2], &device)));
        for (a, b) in shifted.iter().zip(&direct) {
            assert!((a - b).abs() < 1e-12);
        }
    }

    #[test]
    fn each_invalid_field_is_rejected() {
        let ok = config();
        assert!(ok.validate().is_ok());
        assert!(GepsConfig { dim: 0, ..ok.clone() }.validate().is_err());
        assert!(GepsConfig { context: 0, ..ok.clone() }.validate().is_err());
        assert!(GepsConfig { width: 0, ..ok.clone() }.validate().is_err());
        assert!(GepsConfig { depth: 1, ..ok }.validate().is_err());
    }
}
