//! The host solvers as one value: a tensor integrator's method, run on host buffers.

use burn::tensor::backend::Backend;

use mixer_core::{HostField, HostFloat, Integrator, Result};

use crate::host_stepping::integrate_fixed;
use crate::host_tsit5::integrate_tsit5;
use crate::tableau::Tableau;
use crate::{Euler, FixedTsit5, Rk4, Tsit5};

/// A method of this crate run on host buffers ([`HostField`]) instead of burn tensors: same
/// tableaux, step-size control, output handling and errors as its tensor counterpart, so both
/// give the same trajectories up to rounding. No gradient.
///
/// ```
/// use mixer_core::HostField;
/// use mixer_ode::{HostSolver, Rk4};
///
/// /// dx/dt = -x on one row.
/// struct Decay;
/// impl HostField<f64> for Decay {
///     fn dim(&self) -> usize { 1 }
///     fn rows(&self) -> usize { 1 }
///     fn eval(&mut self, _t: f64, x: &[f64], out: &mut [f64]) { out[0] = -x[0]; }
/// }
///
/// # fn main() -> Result<(), mixer_core::Error> {
/// let y = HostSolver::Rk4(Rk4 { substeps: 10 }).integrate(&mut Decay, &[1.0], &[0.0, 1.0])?;
/// assert!((y[1] - (-1.0f64).exp()).abs() < 1e-6);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum HostSolver {
    /// Forward Euler.
    Euler(Euler),
    /// Classical RK4.
    Rk4(Rk4),
    /// Fixed-step Tsit5.
    FixedTsit5(FixedTsit5),
    /// Adaptive Tsit5 5(4).
    Tsit5(Tsit5),
}

impl HostSolver {
    /// The host form of a tensor integrator of this crate, `None` for any other integrator.
    pub fn from_integrator<B: Backend>(integrator: &dyn Integrator<B>) -> Option<Self> {
        let any = integrator.as_any()?;
        if let Some(m) = any.downcast_ref::<Rk4>() {
            Some(Self::Rk4(*m))
        } else if let Some(m) = any.downcast_ref::<Euler>() {
            Some(Self::Euler(*m))
        } else if let Some(m) = any.downcast_ref::<Tsit5>() {
            Some(Self::Tsit5(*m))
        } else {
            any.downcast_ref::<FixedTsit5>().map(|m| Self::FixedTsit5(*m))
        }
    }

    /// Integrates from `y0: [rows, dim]` (row-major) at `times[0]` and returns
    /// `[rows, times.len(), dim]` row-major, the first slice being `y0`.
    pub fn integrate<T: HostFloat>(&self, field: &mut dyn HostField<T>, y0: &[T], times: &[f64]) -> Result<Vec<T>> {
        match self {
            Self::Euler(m) => integrate_fixed(&Tableau::euler(), m.substeps, field, y0, times),
            Self::Rk4(m) => integrate_fixed(&Tableau::rk4(), m.substeps, field, y0, times),
            Self::FixedTsit5(m) => integrate_fixed(&Tableau::tsit5(), m.substeps, field, y0, times),
            Self::Tsit5(m) => integrate_tsit5(m, field, y0, times),
        }
    }

    /// The order of accuracy of the method.
    pub fn order(&self) -> usize {
        match self {
            Self::Euler(_) => 1,
            Self::Rk4(_) => 4,
            Self::FixedTsit5(_) | Self::Tsit5(_) => 5,
        }
    }
}
