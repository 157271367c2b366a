//! The GEPS expert: a root MLP whose every layer is adapted by a low-rank function of the context.

use burn::module::{Module, Param};
use burn::tensor::{Tensor, backend::Backend};

use mixer_core::Expert;
use mixer_hyper::{CodaLinear, LowRankLinear, LowRankLinearConfig, coda_linear};

use crate::{ExpertError, LearnableSwish};

/// Widths of an MLP `d -> W -> ... -> d` with `depth` linear layers.
fn widths(dim: usize, width: usize, depth: usize) -> Vec<(usize, usize)> {
    (0..depth)
        .map(|i| (if i == 0 { dim } else { width }, if i + 1 == depth { dim } else { width }))
        .collect()
}

/// GEPS expert (MIXER.md §1): `depth` [`LowRankLinear`] layers with [`LearnableSwish`] between,
/// plus a trainable scalar shift added to the context.
#[derive(Module, Debug)]
pub struct GepsExpert<B: Backend> {
    /// Linear layers.
    pub layers: Vec<LowRankLinear<B>>,
    /// Activations after every layer but the last.
    pub activations: Vec<LearnableSwish<B>>,
    /// Scalar added to the context, `[1]`.
    pub context_shift: Param<Tensor<B, 1>>,
}

/// CoDA expert: the same root MLP with [`CodaLinear`] layers (all parameters context-linear).
#[derive(Module, Debug)]
pub struct CodaExpert<B: Backend> {
    /// Linear layers.
    pub layers: Vec<CodaLinear<B>>,
    /// Activations after every layer but the last.
    pub activations: Vec<LearnableSwish<B>>,
}

/// Builds a GEPS expert for state dim `dim`, context `context`.
pub fn geps_expert<B: Backend>(
    dim: usize,
    context: usize,
    width: usize,
    depth: usize,
    device: &B::Device,
) -> Result<GepsExpert<B>, ExpertError> {
    let ws = widths(dim, width, depth);
    let layers = ws
        .iter()
        .map(|&(input, output)| LowRankLinearConfig { input, output, context }.init(device))
        .collect::<Result<Vec<_>, _>>()?;
    let activations = ws[..depth - 1].iter().map(|&(_, o)| LearnableSwish::new(o, context, device)).collect();
    Ok(GepsExpert { layers, activations, context_shift: Param::from_tensor(Tensor::zeros([1], device)) })
}

/// Builds a CoDA expert for state dim `dim`, context `context`.
pub fn coda_expert<B: Backend>(
    dim: usize,
    context: usize,
    width: usize,
    depth: usize,
    device: &B::Device,
) -> Result<CodaExpert<B>, ExpertError> {
    let ws = widths(dim, width, depth);
    let layers = ws
        .iter()
        .map(|&(input, output)| coda_linear(&LowRankLinearConfig { input, output, context }, device))
        .collect::<Result<Vec<_>, _>>()?;
    let activations = ws[..depth - 1].iter().map(|&(_, o)| LearnableSwish::new(o, context, device)).collect();
    Ok(CodaExpert { layers, activations })
}

impl<B: Backend> Expert<B> for GepsExpert<B> {
    fn state_dim(&self) -> usize {
        self.layers[0].weight.dims()[1]
    }

    fn context_dim(&self) -> usize {
        self.layers[0].a.dims()[1]
    }

    fn forward(&self, x: Tensor<B, 2>, ctx: Tensor<B, 2>) -> Tensor<B, 2> {
        let ctx = ctx + self.context_shift.val().unsqueeze_dim(0);
        let mut h = x;
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(h, ctx.clone());
            if let Some(act) = self.activations.get(i) {
                h = act.forward(h, ctx.clone());
            }
        }
        h
    }
}

impl<B: Backend> Expert<B> for CodaExpert<B> {
    fn state_dim(&self) -> usize {
        self.layers[0].weight.dims()[1]
    }

    fn context_dim(&self) -> usize {
        self.layers[0].hyper_bias.dims()[0]
    }

    fn forward(&self, x: Tensor<B, 2>, ctx: Tensor<B, 2>) -> Tensor<B, 2> {
        let mut h = x;
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(h, ctx.clone());
            if let Some(act) = self.activations.get(i) {
                h = act.forward(h, ctx.clone());
            }
        }
        h
    }
}
