//! Context generation for mixer: the learned per-environment [`ContextTable`] (zero-initialised,
//! new environments at zero or at the mean of the trained contexts) and the hypernetworks through
//! which a context changes a network's weights:
//!
//! - GEPS low-rank adaptation [`LowRankLinear`]: `W = W0 + A diag(ctx) B`, `b = b0 + A_b ctx`;
//! - CoDA's linear hypernetwork, per layer ([`CodaLinear`], `W = W0 + sum_j ctx_j H_j`) and on a
//!   flat root network ([`CodaHypernet`], `theta = theta0 + H ctx`);
//! - MIP input encoding ([`mip_encode`]) and the residual output form `theta0 + H(enc(z))`;
//! - a HyperCRL-style chunked hypernetwork ([`ChunkedHypernet`]) that generates all weights of an
//!   MLP ([`MlpLayout`]) from an environment embedding;
//! - task-conditioned dynamics models for continual control ([`TaskDynamics`]: HyperCRL's
//!   hypernetwork-generated weights, or shared weights for the baselines) with their
//!   [`DeltaNormaliser`] and HyperCRL's output regulariser.
//!
//! The per-layer forms act on one context row per input row without building per-row weight
//! matrices.
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::tensor::Tensor;
//! use mixer_hyper::{ContextInit, ContextTable, LowRankLinearConfig};
//!
//! # fn main() -> Result<(), mixer_hyper::HyperError> {
//! type B = NdArray<f64>;
//! let device = Default::default();
//! let contexts = ContextTable::<B>::zeros(3, 2, &device);
//! let layer = LowRankLinearConfig { input: 4, output: 5, context: 2 }.init::<B>(&device)?;
//! let y = layer.forward(Tensor::ones([3, 4], &device), contexts.rows(&[0, 1, 2])?);
//! assert_eq!(y.dims(), [3, 5]);
//! let grown = contexts.extended_for_new(2, ContextInit::Mean)?;
//! assert_eq!(grown.table.dims(), [5, 2]);
//! # Ok(())
//! # }
//! ```

mod chunked;
mod coda;
mod coda_hypernet;
mod context;
mod error;
mod hyper_dynamics;
mod layout;
mod low_rank;
mod mip;

pub use chunked::{ChunkedHypernet, ChunkedHypernetConfig};
pub use coda::{CodaLinear, coda_linear};
pub use coda_hypernet::{CodaHypernet, CodaHypernetConfig};
pub use context::{ContextInit, ContextTable};
pub use error::HyperError;
pub use hyper_dynamics::{
    Conditioning, DeltaNormaliser, NormaliserTensors, TaskDynamics, TaskDynamicsConfig, TaskNetwork,
};
pub use layout::{Activation, MlpLayout, sigmoid};
pub use low_rank::{LowRankLinear, LowRankLinearConfig};
pub use mip::{encode_context, encoded_width, mip_encode, mip_squash};

#[cfg(test)]
pub(crate) mod tests {
    pub type TestBackend = burn::backend::NdArray<f64>;
    pub type TestAutodiffBackend = burn::backend::Autodiff<TestBackend>;
}
