//! Integrators for mixer, behind [`mixer_core::Integrator`]:
//!
//! - differentiable, batched solvers on burn tensors — [`Euler`], [`Rk4`] (fixed steps with
//!   substeps per output interval) and adaptive [`Tsit5`] 5(4) with a separate
//!   [`StepController`]; gradients flow through every step when the backend is `Autodiff`;
//! - [`reference::ReferenceSolver`], diffsol's Tsit45, BDF and ESDIRK34 in f64, for data
//!   generation and ground truth.
//!
//! Each of them also runs on host buffers without autodiff, as a [`HostSolver`] over a
//! [`HostField`] (gate refits, evaluation): same algorithm, no per-operation tensor dispatch.
//!
//! A method is a [`Tableau`] plus shared Runge–Kutta code. When a field closes over
//! autodiff parameters, hand it the views of [`anchor_module`] / [`anchor_tensor`], made once
//! per rollout, so that recording the rollout stays linear in its length (see [`mixer_core::anchor`]).
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::tensor::Tensor;
//! use mixer_core::{FnField, Integrator};
//! use mixer_ode::Tsit5;
//!
//! # fn main() -> Result<(), mixer_core::Error> {
//! type B = NdArray<f64>;
//! let device = Default::default();
//! let field = FnField::new(1, |_t, x: Tensor<B, 2>| -x);
//! let y = Tsit5::new(1e-8, 1e-10).integrate(&field, Tensor::<B, 2>::ones([1, 1], &device), &[0.0, 1.0])?;
//! let y1: f64 = y.slice([0..1, 1..2, 0..1]).into_scalar();
//! assert!((y1 - (-1.0f64).exp()).abs() < 1e-7);
//! # Ok(())
//! # }
//! ```

mod config;
mod host_adjoint;
mod host_solver;
mod host_stepping;
mod host_tsit5;
pub mod reference;
mod runge_kutta;
mod tableau;
mod tsit5;

pub use config::SolverConfig;
pub use host_adjoint::{RolloutTape, TapedRollout, pull_back};
pub use host_solver::HostSolver;
pub use mixer_core::anchor::{anchor_module, anchor_tensor};
pub use mixer_core::{HostField, HostFloat, TapedField};
pub use reference::{FnSystem, OdeSystem, ReferenceMethod, ReferenceSolver};
pub use runge_kutta::{Euler, FixedTsit5, Rk4};
pub use tableau::Tableau;
pub use tsit5::{Interpolation, StepController, Tsit5};

/// Errors of the integrators.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OdeError {
    /// A base error (bad times, step bound, non-finite state).
    #[error(transparent)]
    Core(#[from] mixer_core::Error),
    /// diffsol failed; `t` is the time reached.
    #[error("diffsol failed at t = {t:.6e}: {message}")]
    Diffsol {
        /// Time reached.
        t: f64,
        /// diffsol's message.
        message: String,
    },
}

impl OdeError {
    /// The error as a base error (diffsol failures become I/O-free solver errors).
    pub fn into_core(self) -> mixer_core::Error {
        match self {
            OdeError::Core(e) => e,
            OdeError::Diffsol { t, message } => {
                mixer_core::Error::config("reference solver", format!("at t = {t}: {message}"))
            }
        }
    }
}
