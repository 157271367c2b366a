//! CoDA's hypernetwork on a flat root network: `theta(ctx) = theta0 + H enc(ctx)` with a
//! bias-free linear `H: [P, c']`, optionally with MIP input encoding.

use burn::module::{Module, Param};
use burn::tensor::{Distribution, Tensor, backend::Backend};
use serde::{Deserialize, Serialize};

use mixer_core::Error;

use crate::{HyperError, MlpLayout, encode_context, encoded_width};

/// Sizes and options of a [`CodaHypernet`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodaHypernetConfig {
    /// Context size `c`.
    pub context: usize,
    /// The root network whose `P` parameters are adapted.
    pub layout: MlpLayout,
    /// MIP input encoding (`[cos, sin]` of the squashed context, width `2c`).
    pub mip: bool,
}

impl CodaHypernetConfig {
    /// Checks the context size and the layout.
    pub fn validate(&self) -> Result<(), HyperError> {
        if self.context == 0 {
            return Err(Error::config("context", "must be at least 1").into());
        }
        self.layout.validate()
    }

    /// Builds the hypernetwork: root `theta0` Uniform(±1/sqrt(fan_in)) per layer,
    /// `H` Uniform(±1/sqrt(c')) (PyTorch's default linear init for input width `c'`).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<CodaHypernet<B>, HyperError> {
        self.validate()?;
        let width = encoded_width(self.context, self.mip);
        let bound = 1.0 / (width as f64).sqrt();
        Ok(CodaHypernet {
            root: Param::from_tensor(self.layout.init_params(device)),
            hyper: Param::from_tensor(Tensor::random(
                [self.layout.num_params(), width],
                Distribution::Uniform(-bound, bound),
                device,
            )),
            layout: self.layout.clone(),
            context: self.context,
            mip: self.mip,
        })
    }
}

/// A root parameter vector plus a context-linear delta of all of it.
#[derive(Module, Debug)]
pub struct CodaHypernet<B: Backend> {
    /// Root parameters `theta0: [P]`.
    pub root: Param<Tensor<B, 1>>,
    /// Bias-free hypernetwork `H: [P, c']`.
    pub hyper: Param<Tensor<B, 2>>,
    /// Layout of the root network.
    #[module(skip)]
    pub layout: MlpLayout,
    /// Context size `c`.
    pub context: usize,
    /// Whether the input is MIP-encoded.
    pub mip: bool,
}

impl<B: Backend> CodaHypernet<B> {
    /// Parameter deltas `H enc(ctx)`: `ctx: [N, c]` → `[N, P]`.
    pub fn delta(&self, ctx: Tensor<B, 2>) -> Tensor<B, 2> {
        encode_context(ctx, self.mip).matmul(self.hyper.val().transpose())
    }

    /// Effective parameters `theta0 + H enc(ctx)`: `ctx: [N, c]` → `[N, P]`.
    pub fn generate(&self, ctx: Tensor<B, 2>) -> Tensor<B, 2> {
        self.delta(ctx) + self.root.val().unsqueeze_dim(0)
    }

    /// The adapted root network on `x: [N, in]` with per-row contexts `ctx: [N, c]` → `[N, out]`.
    pub fn forward(&self, x: Tensor<B, 2>, ctx: Tensor<B, 2>) -> Result<Tensor<B, 2>, HyperError> {
        let [n, i] = x.dims();
        if i != self.layout.input() {
            return Err(Error::shape("input width", self.layout.input(), i).into());
        }
        if ctx.dims() != [n, self.context] {
            return Err(Error::shape("contexts", [n, self.context], ctx.dims()).into());
        }
        Ok(self.layout.forward(self.generate(ctx), x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Activation;
    use crate::tests::TestBackend;
    use mixer_core::host::{tensor2, to_vec};

    #[test]
    fn generated_parameters_are_root_plus_linear_delta() {
        let device = Default::default();
        let layout = MlpLayout { sizes: vec![2, 3, 2], activation: Activation::Swish };
        let h = CodaHypernetConfig { context: 2, layout, mip: false }.init::<TestBackend>(&device).unwrap();
        let ctx = [0.5, -1.0, 0.0, 0.0];
        let got = to_vec(h.generate(tensor2(&ctx, [2, 2], &device)));
        let (root, hyper) = (to_vec(h.root.val()), to_vec(h.hyper.val()));
        let p = root.len();
        for k in 0..p {
            let want = root[k] + hyper[k * 2] * 0.5 - hyper[k * 2 + 1];
            assert!((got[k] - want).abs() < 1e-12);
            assert!((got[p + k] - root[k]).abs() < 1e-15, "zero context gives the root");
        }
        let y = h.forward(tensor2(&[1.0, 2.0, 3.0, 4.0], [2, 2], &device), tensor2(&ctx, [2, 2], &device));
        assert_eq!(y.unwrap().dims(), [2, 2]);
        assert!(h.forward(tensor2(&[1.0, 2.0], [1, 2], &device), tensor2(&ctx, [2, 2], &device)).is_err());
    }

    #[test]
    fn mip_doubles_the_input_and_stays_bounded() {
        let device = Default::default();
        let layout = MlpLayout { sizes: vec![1, 2], activation: Activation::Tanh };
        let h = CodaHypernetConfig { context: 3, layout, mip: true }.init::<TestBackend>(&device).unwrap();
        assert_eq!(h.hyper.dims(), [4, 6]);
        // with MIP the delta is bounded by the row norms of H however large the context
        let big = to_vec(h.delta(tensor2(&[1e6, -1e6, 3e5], [1, 3], &device)));
        let hv = to_vec(h.hyper.val());
        for (k, d) in big.iter().enumerate() {
            let bound: f64 = hv[k * 6..(k + 1) * 6].iter().map(|v| v.abs()).sum();
            assert!(d.abs() <= bound + 1e-12);
        }
    }

    #[test]
    fn zero_context_size_is_rejected() {
        let layout = MlpLayout { sizes: vec![1, 2], activation: Activation::Tanh };
        assert!(CodaHypernetConfig { context: 0, layout, mip: false }.validate().is_err());
    }
}
