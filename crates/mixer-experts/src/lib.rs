//! Expert networks and the mixture-of-experts layer for mixer.
//!
//! Experts are context-conditioned, autonomous vector fields `f(x, ctx)` implementing
//! [`mixer_core::Expert`]: [`GepsExpert`] (low-rank adaptation of every layer, learnable swish,
//! context shift) and [`CodaExpert`] (context-linear hypernetwork). [`MixtureOfExperts`] holds
//! `K` of them with context splitting and rolls trajectories out under a [`mixer_core::Routing`],
//! integrating each expert only on the rows routed to it.
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::tensor::Tensor;
//! use mixer_core::Expert;
//! use mixer_experts::ExpertConfig;
//!
//! # fn main() -> Result<(), mixer_experts::ExpertError> {
//! type B = NdArray<f64>;
//! let device = Default::default();
//! let expert = ExpertConfig::Geps { width: 16, depth: 3 }.init::<B>(2, 4, &device)?;
//! let dx = expert.forward(Tensor::ones([5, 2], &device), Tensor::zeros([5, 4], &device));
//! assert_eq!(dx.dims(), [5, 2]);
//! # Ok(())
//! # }
//! ```

mod config;
mod geps;
mod moe;
mod swish;

pub use config::{AnyExpert, ExpertConfig};
pub use geps::{CodaExpert, GepsExpert, coda_expert, geps_expert};
pub use moe::MixtureOfExperts;
pub use swish::LearnableSwish;

/// Errors of experts and the mixture layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExpertError {
    /// A base error (config, shapes).
    #[error(transparent)]
    Core(#[from] mixer_core::Error),
    /// Integrating an expert failed; names the expert and the environments.
    #[error("rollout of expert {expert:?} on environments {envs:?} failed: {source}")]
    Rollout {
        /// The expert (`None` for a mixture field).
        expert: Option<usize>,
        /// Environments of the failing rows.
        envs: Vec<usize>,
        /// The solver error.
        source: mixer_core::Error,
    },
}

#[cfg(test)]
pub(crate) mod tests {
    pub type TestBackend = burn::backend::NdArray<f64>;
    pub type TestAutodiffBackend = burn::backend::Autodiff<TestBackend>;
}
