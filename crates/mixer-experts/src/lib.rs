//! Expert networks and the mixture-of-experts layer for mixer.
//!
//! Experts are context-conditioned, autonomous vector fields `f(x, ctx)` implementing
//! [`mixer_core::Expert`]: [`GepsExpert`] (low-rank adaptation of every layer, learnable swish,
//! context shift), [`CodaExpert`] (context-linear hypernetwork on every parameter) and
//! [`NcfExpert`] (context and state branches, with Neural Context Flow's Taylor
//! self-modulation about another environment's context, [`mixer_core::Expert::forward_about`]).
//! [`ExpertConfig`] picks one from a config file and [`AnyExpert`] holds any of them.
//! [`HierShPlrnn`] is the sequence expert for time series.
//! [`MixtureOfExperts`] holds `K` experts with context splitting and rolls trajectories out under
//! a [`mixer_core::Routing`], integrating each expert only on the rows routed to it (GEPS
//! experts of a top-1 routing all at once, in one stacked rollout).
//! [`AnyExpert::freeze`] gives a gradient-free host copy of an expert ([`FrozenExpert`], GEPS
//! so far) whose [`mixer_core::HostField`] runs on `mixer-ode`'s host solvers.
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

pub mod afno;
mod coda;
mod config;
mod field_model;
mod fused;
mod geps;
mod geps_host;
mod geps_taped;
mod host_expert;
mod host_kernel;
mod moe;
mod ncf;
mod plrnn;
mod pot;
mod smoe;
pub mod spectral;
mod stacked;
mod swish;
mod taped_mixture;

pub use afno::{AFNO_INIT_SCALE, AfnoMixer, AfnoSettings};
pub use coda::{CodaConfig, CodaExpert};
pub use config::{AnyExpert, ExpertConfig};
pub use field_model::{Cnn, CnnSettings, FieldLoss, FieldModel, FieldModelConfig, Lcn, LcnSettings};
pub use geps::{GepsConfig, GepsExpert};
pub use geps_host::{FrozenGeps, GepsHostField};
pub use host_expert::FrozenExpert;
pub use host_kernel::{HostKernel, MatRef};
pub use moe::{Dispatch, MixtureOfExperts, Rows};
pub use ncf::{NcfConfig, NcfExpert, geometric_widths};
pub use plrnn::{Forcing, HierShPlrnn, HierShPlrnnConfig, PlrnnParams};
pub use pot::{
    BlockRoute, ChannelMixer, ChannelSettings, GroupNorm, Linear, Matching, MoeMlpSettings, NORM_EPS,
    OperatorTransformer, PotBlock, PotOutput, PotSettings,
};
pub use smoe::{
    ErrorCriterion, SlotDims, SmoeSettings, SpatialMoe, bce_with_logits, best_damping_scale, best_experts, best_labels,
    combine, damping_scale, quantile, rc_labels, restart_plan, scale_gradient, select, selected_scores, slot_errors,
};
pub use spectral::{Dft2, half_width};
pub use swish::LearnableSwish;

/// Errors of experts and the mixture layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExpertError {
    /// A base error (config, shapes).
    #[error(transparent)]
    Core(#[from] mixer_core::Error),
    /// A hypernetwork or context-table error.
    #[error(transparent)]
    Hyper(#[from] mixer_hyper::HyperError),
    /// Integrating an expert failed; names the expert and the environments of its rows.
    #[error("rollout of expert {expert:?} on environments {envs:?} failed: {source}")]
    Rollout {
        /// The expert (`None` for a mixture field).
        expert: Option<usize>,
        /// Environments of the failing rows, ascending.
        envs: Vec<usize>,
        /// The solver error.
        source: mixer_core::Error,
    },
}

#[cfg(test)]
pub(crate) mod tests {
    pub type TestBackend = burn::backend::NdArray<f64>;
    pub type TestAutodiffBackend = burn::backend::Autodiff<TestBackend>;

    /// Held while a test draws from the backend's global RNG: tests run concurrently, and
    /// interleaved draws would give a seeded model different weights from run to run.
    static BACKEND_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// Takes the backend RNG (see [`BACKEND_RNG`]) until the guard is dropped.
    pub fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
        BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Central differences `(f(v + h e_i) - f(v - h e_i)) / 2h` for every entry, `h = 1e-6`.
    pub fn central_difference(v: &[f64], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
        let h = 1e-6;
        (0..v.len())
            .map(|i| {
                let mut p = v.to_vec();
                p[i] += h;
                let up = f(&p);
                p[i] -= 2.0 * h;
                (up - f(&p)) / (2.0 * h)
            })
            .collect()
    }

    /// Asserts `|a - b| <= tol * max(1, |b|)` entrywise.
    pub fn assert_close(a: &[f64], b: &[f64], tol: f64, what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol * y.abs().max(1.0), "{what}[{i}]: autodiff {x} vs finite difference {y}");
        }
    }
}
