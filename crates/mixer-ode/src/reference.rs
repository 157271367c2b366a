//! Reference solves in f64 with diffsol: explicit Tsit45, stiff BDF and ESDIRK34, for data
//! generation, ground truth and checks of the differentiable solvers.

use burn::tensor::{Tensor, backend::Backend};
use diffsol::{NalgebraLU, NalgebraMat, OdeBuilder, OdeEquations, OdeSolverMethod, Vector};
use serde::{Deserialize, Serialize};

use mixer_core::{Error, Integrator, VectorField, check_times};

use crate::OdeError;

/// A right-hand side on plain `f64` slices, for reference solves.
pub trait OdeSystem {
    /// State dimension.
    fn dim(&self) -> usize;

    /// Writes `dx/dt` at `(t, x)` into `dx`.
    fn rhs(&self, t: f64, x: &[f64], dx: &mut [f64]);

    /// Jacobian-vector product `J(t, x) v` into `out`; the default uses a forward difference.
    fn jac_vec(&self, t: f64, x: &[f64], v: &[f64], out: &mut [f64]) {
        let n = self.dim();
        let vnorm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        if vnorm == 0.0 {
            out.iter_mut().for_each(|o| *o = 0.0);
            return;
        }
        let xnorm = x.iter().map(|a| a * a).sum::<f64>().sqrt();
        let eps = f64::EPSILON.sqrt() * (1.0 + xnorm) / vnorm;
        let xp: Vec<f64> = x.iter().zip(v).map(|(a, b)| a + eps * b).collect();
        let (mut f0, mut f1) = (vec![0.0; n], vec![0.0; n]);
        self.rhs(t, x, &mut f0);
        self.rhs(t, &xp, &mut f1);
        for i in 0..n {
            out[i] = (f1[i] - f0[i]) / eps;
        }
    }
}

/// A closure `(t, x, dx)` as an [`OdeSystem`].
pub struct FnSystem<F> {
    dim: usize,
    f: F,
}

impl<F: Fn(f64, &[f64], &mut [f64])> FnSystem<F> {
    /// Wraps a closure of dimension `dim`.
    pub fn new(dim: usize, f: F) -> Self {
        Self { dim, f }
    }
}

impl<F: Fn(f64, &[f64], &mut [f64])> OdeSystem for FnSystem<F> {
    fn dim(&self) -> usize {
        self.dim
    }

    fn rhs(&self, t: f64, x: &[f64], dx: &mut [f64]) {
        (self.f)(t, x, dx)
    }
}

/// The diffsol method of a reference solve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReferenceMethod {
    /// Tsitouras 5(4), explicit.
    Tsit45,
    /// Variable-order BDF (NDF), for stiff systems.
    Bdf,
    /// ESDIRK 3(4), for moderately stiff systems.
    Esdirk34,
}

/// A diffsol solve with tolerances and a step bound.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReferenceSolver {
    /// The method.
    pub method: ReferenceMethod,
    /// Relative tolerance.
    pub rtol: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Most internal steps per solve.
    pub max_steps: usize,
}

impl ReferenceSolver {
    /// A solver with `max_steps = 100_000`.
    pub fn new(method: ReferenceMethod, rtol: f64, atol: f64) -> Self {
        Self { method, rtol, atol, max_steps: 100_000 }
    }

    /// States at `times` (`times[0]` is the initial time), row-major `[times.len(), dim]`.
    pub fn solve(&self, system: &dyn OdeSystem, y0: &[f64], times: &[f64]) -> Result<Vec<f64>, OdeError> {
        check_times(times)?;
        let n = system.dim();
        if y0.len() != n {
            return Err(Error::shape("y0", n, y0.len()).into());
        }
        mixer_core::ensure_finite("y0", y0)?;
        for (f, v) in [("rtol", self.rtol), ("atol", self.atol)] {
            if !(v > 0.0 && v.is_finite()) {
                return Err(Error::config(f, format!("must be > 0, got {v}")).into());
            }
        }
        let y0v = y0.to_vec();
        let problem = OdeBuilder::<NalgebraMat<f64>>::new()
            .t0(times[0])
            .rtol(self.rtol)
            .atol([self.atol])
            .rhs_implicit(
                |x: &[f64], _p: &[f64], t: f64, y: &mut [f64]| system.rhs(t, x, y),
                |x: &[f64], _p: &[f64], t: f64, v: &[f64], y: &mut [f64]| system.jac_vec(t, x, v, y),
            )
            .init(move |_p: &[f64], _t: f64, y: &mut [f64]| y.copy_from_slice(&y0v), n)
            .build()
            .map_err(|e| OdeError::Diffsol { t: times[0], message: e.to_string() })?;
        match self.method {
            ReferenceMethod::Tsit45 => {
                drive(problem.tsit45().map_err(|e| setup(times[0], e))?, times, n, self.max_steps)
            }
            ReferenceMethod::Bdf => {
                drive(problem.bdf::<NalgebraLU<f64>>().map_err(|e| setup(times[0], e))?, times, n, self.max_steps)
            }
            ReferenceMethod::Esdirk34 => {
                drive(problem.esdirk34::<NalgebraLU<f64>>().map_err(|e| setup(times[0], e))?, times, n, self.max_steps)
            }
        }
    }
}

fn setup(t: f64, e: diffsol::DiffsolError) -> OdeError {
    OdeError::Diffsol { t, message: e.to_string() }
}

/// Steps a diffsol solver to each output time, bounded by `max_steps`, interpolating outputs.
fn drive<'a, Eqn, S>(mut solver: S, times: &[f64], n: usize, max_steps: usize) -> Result<Vec<f64>, OdeError>
where
    Eqn: OdeEquations<T = f64, V = diffsol::NalgebraVec<f64>> + 'a,
    S: OdeSolverMethod<'a, Eqn>,
{
    let mut out = Vec::with_capacity(times.len() * n);
    let mut steps = 0;
    for &tq in times {
        while solver.state().t < tq {
            if steps >= max_steps {
                return Err(Error::MaxStepsReached { t: solver.state().t, steps }.into());
            }
            solver.step().map_err(|e| OdeError::Diffsol { t: solver.state().t, message: e.to_string() })?;
            steps += 1;
        }
        let y = if solver.state().t == tq {
            solver.state().y.clone_as_vec()
        } else {
            solver.interpolate(tq).map_err(|e| OdeError::Diffsol { t: tq, message: e.to_string() })?.clone_as_vec()
        };
        if y.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFiniteState { t: tq }.into());
        }
        out.extend(y);
    }
    Ok(out)
}

/// A burn vector field viewed row by row as an [`OdeSystem`] (no gradient).
struct RowField<'a, B: Backend> {
    field: &'a dyn VectorField<B>,
    device: B::Device,
}

impl<B: Backend> OdeSystem for RowField<'_, B> {
    fn dim(&self) -> usize {
        self.field.dim()
    }

    fn rhs(&self, t: f64, x: &[f64], dx: &mut [f64]) {
        let xt = mixer_core::host::tensor2::<B>(x, [1, x.len()], &self.device);
        let f = mixer_core::host::to_vec(self.field.eval(t, xt));
        dx.copy_from_slice(&f);
    }
}

impl<B: Backend> Integrator<B> for ReferenceSolver {
    /// Solves each row on its own in f64; the result carries no gradient.
    fn integrate(
        &self,
        field: &dyn VectorField<B>,
        y0: Tensor<B, 2>,
        times: &[f64],
    ) -> mixer_core::Result<Tensor<B, 3>> {
        let device = y0.device();
        let [rows, dim] = y0.dims();
        let init = mixer_core::host::to_vec(y0);
        let system = RowField { field, device: device.clone() };
        let mut all = Vec::with_capacity(rows * times.len() * dim);
        for r in 0..rows {
            let sol = self.solve(&system, &init[r * dim..(r + 1) * dim], times).map_err(OdeError::into_core)?;
            all.extend(sol);
        }
        Ok(mixer_core::host::tensor2::<B>(&all, [rows, times.len() * dim], &device).reshape([rows, times.len(), dim]))
    }

    fn order(&self) -> usize {
        match self.method {
            ReferenceMethod::Tsit45 => 5,
            ReferenceMethod::Bdf => 5,
            ReferenceMethod::Esdirk34 => 4,
        }
    }
}
