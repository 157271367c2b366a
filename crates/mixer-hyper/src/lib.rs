//! Context generation for mixer: the learned per-environment [`ContextTable`] and the layers
//! through which a context changes a network's weights — GEPS low-rank adaptation
//! ([`LowRankLinear`], `W0 + A diag(ctx) B`) and CoDA's linear hypernetwork ([`CodaLinear`],
//! `W0 + sum_j ctx_j H_j`). Both act on one context row per input row without building
//! per-row weight matrices.
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::tensor::Tensor;
//! use mixer_hyper::{ContextTable, LowRankLinearConfig};
//!
//! # fn main() -> Result<(), mixer_core::Error> {
//! type B = NdArray<f64>;
//! let device = Default::default();
//! let contexts = ContextTable::<B>::zeros(3, 2, &device);
//! let layer = LowRankLinearConfig { input: 4, output: 5, context: 2 }.init::<B>(&device)?;
//! let y = layer.forward(Tensor::ones([3, 4], &device), contexts.rows(&[0, 1, 2]));
//! assert_eq!(y.dims(), [3, 5]);
//! # Ok(())
//! # }
//! ```

mod coda;
mod context;
mod low_rank;

pub use coda::{CodaLinear, coda_linear};
pub use context::ContextTable;
pub use low_rank::{LowRankLinear, LowRankLinearConfig};

#[cfg(test)]
pub(crate) mod tests {
    pub type TestBackend = burn::backend::NdArray<f64>;
}
