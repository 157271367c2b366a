//! CoDA context-linear layer: every weight and bias is shifted by a bias-free linear map of the
//! context, `W = W0 + sum_j ctx_j H_j`, `b = b0 + sum_j ctx_j h_j` (a slice of the hypernetwork
//! `c -> P` acting on the root network's parameters).

use burn::module::{Module, Param};
use burn::tensor::{Distribution, Tensor, backend::Backend};

use crate::{HyperError, LowRankLinearConfig};

/// A linear layer plus its CoDA hypernetwork rows.
#[derive(Module, Debug)]
pub struct CodaLinear<B: Backend> {
    /// Root weight `W0: [out, in]`.
    pub weight: Param<Tensor<B, 2>>,
    /// Root bias `b0: [out]`.
    pub bias: Param<Tensor<B, 1>>,
    /// Weight hypernetwork `H: [c * out, in]` (rows of `H_j` stacked by context index).
    pub hyper_weight: Param<Tensor<B, 2>>,
    /// Bias hypernetwork `h: [c, out]`.
    pub hyper_bias: Param<Tensor<B, 2>>,
}

/// Builds a [`CodaLinear`] with the sizes of a [`LowRankLinearConfig`]: root Uniform(±1/sqrt(in)),
/// hypernetwork Uniform(±1/sqrt(c)).
pub fn coda_linear<B: Backend>(cfg: &LowRankLinearConfig, device: &B::Device) -> Result<CodaLinear<B>, HyperError> {
    cfg.validate()?;
    let root = 1.0 / (cfg.input as f64).sqrt();
    let hyper = 1.0 / (cfg.context as f64).sqrt();
    Ok(CodaLinear {
        weight: Param::from_tensor(Tensor::random([cfg.output, cfg.input], Distribution::Uniform(-root, root), device)),
        bias: Param::from_tensor(Tensor::random([cfg.output], Distribution::Uniform(-root, root), device)),
        hyper_weight: Param::from_tensor(Tensor::random(
            [cfg.context * cfg.output, cfg.input],
            Distribution::Uniform(-hyper, hyper),
            device,
        )),
        hyper_bias: Param::from_tensor(Tensor::random(
            [cfg.context, cfg.output],
            Distribution::Uniform(-hyper, hyper),
            device,
        )),
    })
}

impl<B: Backend> CodaLinear<B> {
    /// `x: [N, in]`, `ctx: [N, c]` → `[N, out]` with per-row effective parameters, computed as
    /// `x W0^T + sum_j ctx_j (x H_j^T) + b0 + ctx h`.
    pub fn forward(&self, x: Tensor<B, 2>, ctx: Tensor<B, 2>) -> Tensor<B, 2> {
        let [n, c] = ctx.dims();
        let out = self.weight.dims()[0];
        let base = x.clone().matmul(self.weight.val().transpose());
        let per_ctx: Tensor<B, 3> = x.matmul(self.hyper_weight.val().transpose()).reshape([n, c, out]);
        let delta: Tensor<B, 2> = (per_ctx * ctx.clone().unsqueeze_dim::<3>(2)).sum_dim(1).reshape([n, out]);
        base + delta + self.bias.val().unsqueeze_dim(0) + ctx.matmul(self.hyper_bias.val())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::TestBackend;
    use burn::tensor::TensorData;

    #[test]
    fn matches_explicit_per_row_parameters() {
        let device = Default::default();
        let cfg = LowRankLinearConfig { input: 2, output: 3, context: 2 };
        let l = coda_linear::<TestBackend>(&cfg, &device).unwrap();
        let x = Tensor::<TestBackend, 2>::from_data(TensorData::new(vec![0.4, -1.2, 2.0, 0.1], [2, 2]), &device);
        let ctx = Tensor::<TestBackend, 2>::from_data(TensorData::new(vec![0.3, -0.5, 1.0, 0.25], [2, 2]), &device);
        let got: Vec<f64> = l.forward(x.clone(), ctx.clone()).into_data().to_vec().unwrap();
        let v = |t: Tensor<TestBackend, 2>| -> Vec<f64> { t.into_data().to_vec().unwrap() };
        let (w0, hw, hb, xs, cs) = (v(l.weight.val()), v(l.hyper_weight.val()), v(l.hyper_bias.val()), v(x), v(ctx));
        let b0: Vec<f64> = l.bias.val().into_data().to_vec().unwrap();
        for r in 0..2 {
            for o in 0..3 {
                let mut y = b0[o] + (0..2).map(|j| cs[r * 2 + j] * hb[j * 3 + o]).sum::<f64>();
                for i in 0..2 {
                    let w = w0[o * 2 + i] + (0..2).map(|j| cs[r * 2 + j] * hw[(j * 3 + o) * 2 + i]).sum::<f64>();
                    y += w * xs[r * 2 + i];
                }
                assert!((got[r * 3 + o] - y).abs() < 1e-12);
            }
        }
    }
}
