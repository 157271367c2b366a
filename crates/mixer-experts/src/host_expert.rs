//! Frozen host copies of any expert that has one, for gradient-free rollouts on the host
//! (gate refits, evaluation); experts without one leave the caller on the tensor path.

use burn::tensor::backend::Backend;

use mixer_core::HostField;
use mixer_ode::HostSolver;

use crate::geps_host::FrozenGeps;
use crate::host_kernel::HostKernel;
use crate::{AnyExpert, ExpertError};

/// A frozen host copy of an expert ([`AnyExpert::freeze`]).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum FrozenExpert<T> {
    /// A frozen GEPS expert.
    Geps(FrozenGeps<T>),
}

impl<B: Backend> AnyExpert<B> {
    /// A frozen host copy of the expert's current weights, or `None` when the expert type has
    /// no host form yet (CoDA, NCF): use the tensor path for those.
    pub fn freeze<T: HostKernel>(&self) -> Option<FrozenExpert<T>> {
        match self {
            AnyExpert::Geps(e) => Some(FrozenExpert::Geps(e.freeze())),
            AnyExpert::Coda(_) | AnyExpert::Ncf(_) => None,
        }
    }
}

impl<T: HostKernel> FrozenExpert<T> {
    /// State dimension `d`.
    pub fn state_dim(&self) -> usize {
        match self {
            FrozenExpert::Geps(e) => e.state_dim(),
        }
    }

    /// Context size `c` the expert reads.
    pub fn context_dim(&self) -> usize {
        match self {
            FrozenExpert::Geps(e) => e.context_dim(),
        }
    }

    /// The expert's field on rows with contexts `ctx: [rows, c]` (row-major) and optional
    /// per-row time rates (the derivative of row `r` multiplied by `rate[r]`).
    pub fn bind(&self, ctx: &[f64], rate: Option<&[f64]>) -> Result<Box<dyn HostField<T> + '_>, ExpertError> {
        match self {
            FrozenExpert::Geps(e) => Ok(Box::new(e.bind(ctx, rate)?)),
        }
    }

    /// The expert's rollout by `solver` from `y0: [rows, d]` on `times`, at contexts `ctx` and
    /// rates `rate` as in [`FrozenExpert::bind`]; `[rows, times, d]`. The outer error is a bad
    /// binding, the inner one the solver's (a diverging rollout).
    pub fn integrate(
        &self,
        solver: &HostSolver,
        ctx: &[f64],
        rate: Option<&[f64]>,
        y0: &[T],
        times: &[f64],
    ) -> Result<mixer_core::Result<Vec<T>>, ExpertError> {
        T::integrate_frozen(self, solver, ctx, rate, y0, times)
    }
}

/// [`FrozenExpert::integrate`], instantiated by [`HostKernel::integrate_frozen`].
pub(crate) fn integrate_frozen<T: HostKernel>(
    expert: &FrozenExpert<T>,
    solver: &HostSolver,
    ctx: &[f64],
    rate: Option<&[f64]>,
    y0: &[T],
    times: &[f64],
) -> Result<mixer_core::Result<Vec<T>>, ExpertError> {
    let mut field = expert.bind(ctx, rate)?;
    Ok(solver.integrate(field.as_mut(), y0, times))
}
