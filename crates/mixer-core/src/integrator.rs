//! The integrator interface shared by differentiable and reference solvers.

use burn::tensor::{Tensor, backend::Backend};

use crate::{Result, VectorField};

/// Solves `dx/dt = f(t, x)` for a batch of initial states and returns the states at given times.
pub trait Integrator<B: Backend> {
    /// Integrates from `y0: [batch, dim]` at `times[0]` and returns `[batch, times.len(), dim]`,
    /// the first slice being `y0` itself. `times` must be strictly increasing.
    fn integrate(&self, field: &dyn VectorField<B>, y0: Tensor<B, 2>, times: &[f64]) -> Result<Tensor<B, 3>>;

    /// The order of accuracy of the method.
    fn order(&self) -> usize;

    /// The integrator as [`Any`](core::any::Any), so that callers can recognise a known method
    /// (to run it on the host, say); `None` for integrators that do not take part.
    fn as_any(&self) -> Option<&dyn core::any::Any> {
        None
    }
}

/// Checks that an output time grid is usable: at least one point, finite, strictly increasing.
pub fn check_times(times: &[f64]) -> Result<()> {
    if times.is_empty() {
        return Err(crate::Error::config("times", "at least one output time is required"));
    }
    crate::ensure_finite("times", times)?;
    if let Some(i) = times.windows(2).position(|w| w[1] <= w[0]) {
        return Err(crate::Error::config(
            "times",
            format!("must be strictly increasing: times[{}] = {} >= times[{}] = {}", i, times[i], i + 1, times[i + 1]),
        ));
    }
    Ok(())
}
