//! GEPS low-rank context adaptation of a linear layer: `W = W0 + A diag(ctx) B`, `b = b0 + A_b ctx`.

use burn::module::{Module, Param};
use burn::tensor::{Distribution, Tensor, backend::Backend};
use serde::{Deserialize, Serialize};

use mixer_core::Error;

use crate::HyperError;

/// Sizes of a [`LowRankLinear`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LowRankLinearConfig {
    /// Input width.
    pub input: usize,
    /// Output width.
    pub output: usize,
    /// Context size `c` (the rank of the adaptation).
    pub context: usize,
}

impl LowRankLinearConfig {
    /// Checks that every size is positive.
    pub fn validate(&self) -> Result<(), HyperError> {
        for (f, v) in [("input", self.input), ("output", self.output), ("context", self.context)] {
            if v == 0 {
                return Err(Error::config(f, "must be at least 1").into());
            }
        }
        Ok(())
    }

    /// Builds the layer: `W0`, `b0` Uniform(±1/sqrt(input)); `A`, `B`, `A_b` Uniform(±1/sqrt(rows)).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<LowRankLinear<B>, HyperError> {
        self.validate()?;
        let u = |shape: [usize; 2], rows: usize| {
            let bound = 1.0 / (rows as f64).sqrt();
            Param::from_tensor(Tensor::random(shape, Distribution::Uniform(-bound, bound), device))
        };
        let bound = 1.0 / (self.input as f64).sqrt();
        Ok(LowRankLinear {
            weight: Param::from_tensor(Tensor::random(
                [self.output, self.input],
                Distribution::Uniform(-bound, bound),
                device,
            )),
            bias: Param::from_tensor(Tensor::random([self.output], Distribution::Uniform(-bound, bound), device)),
            a: u([self.output, self.context], self.output),
            b: u([self.context, self.input], self.context),
            a_bias: u([self.output, self.context], self.output),
        })
    }
}

/// A linear layer whose weight and bias are shifted by a low-rank function of a context.
#[derive(Module, Debug)]
pub struct LowRankLinear<B: Backend> {
    /// Root weight `W0: [out, in]`.
    pub weight: Param<Tensor<B, 2>>,
    /// Root bias `b0: [out]`.
    pub bias: Param<Tensor<B, 1>>,
    /// Left factor `A: [out, c]`.
    pub a: Param<Tensor<B, 2>>,
    /// Right factor `B: [c, in]`.
    pub b: Param<Tensor<B, 2>>,
    /// Bias factor `A_b: [out, c]`.
    pub a_bias: Param<Tensor<B, 2>>,
}

impl<B: Backend> LowRankLinear<B> {
    /// `x: [N, in]`, `ctx: [N, c]` → `[N, out]`, computed as
    /// `x W0^T + ((x B^T) ⊙ ctx) A^T + b0 + ctx A_b^T` without per-row weight matrices.
    pub fn forward(&self, x: Tensor<B, 2>, ctx: Tensor<B, 2>) -> Tensor<B, 2> {
        let base = x.clone().matmul(self.weight.val().transpose());
        let low = (x.matmul(self.b.val().transpose()) * ctx.clone()).matmul(self.a.val().transpose());
        let bias = self.bias.val().unsqueeze_dim(0) + ctx.matmul(self.a_bias.val().transpose());
        base + low + bias
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::TestBackend;
    use burn::tensor::TensorData;

    #[test]
    fn matches_explicit_per_row_weights() {
        let device = Default::default();
        let layer = LowRankLinearConfig { input: 3, output: 2, context: 2 }.init::<TestBackend>(&device).unwrap();
        let x =
            Tensor::<TestBackend, 2>::from_data(TensorData::new(vec![0.5, -1.0, 2.0, 1.5, 0.0, -0.3], [2, 3]), &device);
        let ctx = Tensor::<TestBackend, 2>::from_data(TensorData::new(vec![0.7, -0.2, 0.0, 1.3], [2, 2]), &device);
        let got: Vec<f64> = layer.forward(x.clone(), ctx.clone()).into_data().to_vec().unwrap();
        let v = |t: Tensor<TestBackend, 2>| -> Vec<f64> { t.into_data().to_vec().unwrap() };
        let (w0, a, b, ab) = (v(layer.weight.val()), v(layer.a.val()), v(layer.b.val()), v(layer.a_bias.val()));
        let b0: Vec<f64> = layer.bias.val().into_data().to_vec().unwrap();
        let (xs, cs) = (v(x), v(ctx));
        for r in 0..2 {
            for o in 0..2 {
                let mut y = b0[o] + (0..2).map(|k| ab[o * 2 + k] * cs[r * 2 + k]).sum::<f64>();
                for i in 0..3 {
                    let w = w0[o * 3 + i] + (0..2).map(|k| a[o * 2 + k] * cs[r * 2 + k] * b[k * 3 + i]).sum::<f64>();
                    y += w * xs[r * 3 + i];
                }
                assert!((got[r * 2 + o] - y).abs() < 1e-12, "row {r} out {o}: {} vs {y}", got[r * 2 + o]);
            }
        }
    }

    #[test]
    fn zero_sizes_are_rejected() {
        assert!(LowRankLinearConfig { input: 0, output: 2, context: 1 }.validate().is_err());
        assert!(LowRankLinearConfig { input: 1, output: 0, context: 1 }.validate().is_err());
        assert!(LowRankLinearConfig { input: 1, output: 2, context: 0 }.validate().is_err());
    }
}
