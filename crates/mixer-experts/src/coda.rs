//! The CoDA expert: a root MLP all of whose parameters move linearly with the context.

use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};
use serde::{Deserialize, Serialize};

use mixer_core::Expert;
use mixer_hyper::{CodaLinear, LowRankLinearConfig, coda_linear, encode_context, encoded_width};

use crate::geps::{check_mlp, mlp_widths};
use crate::{ExpertError, LearnableSwish};

/// Sizes and options of a [`CodaExpert`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodaConfig {
    /// State dimension `d`.
    pub dim: usize,
    /// Context size `c`.
    pub context: usize,
    /// Hidden width `W`.
    pub width: usize,
    /// Number of linear layers.
    pub depth: usize,
    /// MIP encoding of the context (hypernetwork input width `2c`).
    pub mip: bool,
}

impl CodaConfig {
    /// Checks that sizes are positive and `depth >= 2`.
    pub fn validate(&self) -> Result<(), ExpertError> {
        check_mlp(self.dim, self.context, self.width, self.depth)
    }

    /// Builds the expert: [`CodaLinear`] layers (root Uniform(±1/sqrt(in)), hypernetwork
    /// Uniform(±1/sqrt(c'))) and swish slopes `beta0 + A_beta ctx` between them, so that every
    /// root parameter has its context-linear delta.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<CodaExpert<B>, ExpertError> {
        self.validate()?;
        let width = encoded_width(self.context, self.mip);
        let ws = mlp_widths(self.dim, self.width, self.depth);
        let layers = ws
            .iter()
            .map(|&(input, output)| coda_linear(&LowRankLinearConfig { input, output, context: width }, device))
            .collect::<Result<Vec<_>, _>>()?;
        let activations = ws[..self.depth - 1].iter().map(|&(_, o)| LearnableSwish::new(o, width, device)).collect();
        Ok(CodaExpert { layers, activations, context: self.context, mip: self.mip })
    }
}

/// CoDA expert (MixER, Nzoyem et al. 2025): effective parameters `theta0 + H ctx` for all root parameters,
/// applied layer by layer without materialising per-row weights.
#[derive(Module, Debug)]
pub struct CodaExpert<B: Backend> {
    /// Linear layers.
    pub layers: Vec<CodaLinear<B>>,
    /// Activations after every layer but the last.
    pub activations: Vec<LearnableSwish<B>>,
    /// Context size `c` read by the expert.
    pub context: usize,
    /// Whether the context is MIP-encoded.
    pub mip: bool,
}

impl<B: Backend> Expert<B> for CodaExpert<B> {
    fn state_dim(&self) -> usize {
        self.layers[0].weight.dims()[1]
    }

    fn context_dim(&self) -> usize {
        self.context
    }

    fn forward(&self, x: Tensor<B, 2>, ctx: Tensor<B, 2>) -> Tensor<B, 2> {
        let ctx = encode_context(ctx, self.mip);
        let mut h = x;
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(h, ctx.clone());
            if let Some(act) = self.activations.get(i) {
                h = act.forward(h, Some(ctx.clone()));
            }
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::TestBackend;
    use mixer_core::host::{tensor2, to_vec};

    #[test]
    fn zero_context_is_the_root_network_and_mip_changes_input_width() {
        let device = Default::default();
        let _rng = crate::tests::rng_lock();
        let cfg = CodaConfig { dim: 3, context: 2, width: 5, depth: 3, mip: false };
        let e = cfg.init::<TestBackend>(&device).unwrap();
        let x = tensor2::<TestBackend>(&[0.3, -0.2, 0.9], [1, 3], &device);
        let y = to_vec(e.forward(x.clone(), tensor2(&[0.0, 0.0], [1, 2], &device)));
        // root network by hand: swish(beta0) between plain linear layers
        let mut h = to_vec(x);
        for (l, layer) in e.layers.iter().enumerate() {
            let [o, i] = layer.weight.dims();
            let (w, b) = (to_vec(layer.weight.val()), to_vec(layer.bias.val()));
            let mut next: Vec<f64> = (0..o).map(|r| b[r] + (0..i).map(|k| w[r * i + k] * h[k]).sum::<f64>()).collect();
            if let Some(act) = e.activations.get(l) {
                let beta = to_vec(act.beta.val());
                next = next.iter().zip(&beta).map(|(v, bt)| v / (1.0 + (-bt * v).exp())).collect();
            }
            h = next;
        }
        for (a, b) in y.iter().zip(&h) {
            assert!((a - b).abs() < 1e-12);
        }
        let m = CodaConfig { mip: true, ..cfg }.init::<TestBackend>(&device).unwrap();
        assert_eq!(m.layers[0].hyper_bias.dims(), [4, 5]);
        assert_eq!(m.forward(tensor2(&[1.0; 6], [2, 3], &device), tensor2(&[5.0; 4], [2, 2], &device)).dims(), [2, 3]);
    }

    #[test]
    fn each_invalid_field_is_rejected() {
        let ok = CodaConfig { dim: 2, context: 2, width: 4, depth: 3, mip: false };
        assert!(ok.validate().is_ok());
        assert!(CodaConfig { dim: 0, ..ok.clone() }.validate().is_err());
        assert!(CodaConfig { context: 0, ..ok.clone() }.validate().is_err());
        assert!(CodaConfig { width: 0, ..ok.clone() }.validate().is_err());
        assert!(CodaConfig { depth: 1, ..ok }.validate().is_err());
    }
}
