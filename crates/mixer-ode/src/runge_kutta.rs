//! Shared explicit Runge–Kutta stepping on burn tensors, and the fixed-step solvers built on it.

use burn::tensor::{ElementConversion, Tensor, backend::Backend};
use serde::{Deserialize, Serialize};

use mixer_core::{Error, Integrator, Result, VectorField, check_times};

use crate::tableau::Tableau;

/// One explicit RK step from `(t, y)` with step `h`; `k1 = f(t, y)` may be supplied (FSAL).
/// Returns the stages `k_i`, `[batch, dim]` each.
pub(crate) fn stages<B: Backend>(
    tab: &Tableau,
    field: &dyn VectorField<B>,
    t: f64,
    y: &Tensor<B, 2>,
    h: f64,
    k1: Option<Tensor<B, 2>>,
) -> Vec<Tensor<B, 2>> {
    let mut k: Vec<Tensor<B, 2>> = Vec::with_capacity(tab.stages());
    k.push(k1.unwrap_or_else(|| field.eval(t, y.clone())));
    for i in 1..tab.stages() {
        let incr = combine(&tab.a[i], &k, h);
        let yi = match incr {
            Some(d) => y.clone() + d,
            None => y.clone(),
        };
        k.push(field.eval(t + tab.c[i] * h, yi));
    }
    k
}

/// `h * sum_i w_i k_i` over non-zero weights, or `None` when all are zero.
pub(crate) fn combine<B: Backend>(w: &[f64], k: &[Tensor<B, 2>], h: f64) -> Option<Tensor<B, 2>> {
    w.iter().zip(k).filter(|(wi, _)| **wi != 0.0).map(|(wi, ki)| ki.clone().mul_scalar(wi * h)).reduce(|a, b| a + b)
}

/// Largest absolute entry, on the host; NaN if any entry is NaN. Detached: a check is not
/// part of the autodiff graph.
pub(crate) fn max_abs<B: Backend>(y: &Tensor<B, 2>) -> f64 {
    let y = y.clone().detach();
    let m: f64 = y.clone().abs().max().into_scalar().elem();
    let any_nan: f64 = y.is_nan().int().sum().into_scalar().elem();
    if any_nan > 0.0 { f64::NAN } else { m }
}

/// Fixed-step integration with `substeps` equal steps per output interval.
fn integrate_fixed<B: Backend>(
    tab: &Tableau,
    substeps: usize,
    field: &dyn VectorField<B>,
    y0: Tensor<B, 2>,
    times: &[f64],
) -> Result<Tensor<B, 3>> {
    check_times(times)?;
    if substeps == 0 {
        return Err(Error::config("substeps", "must be at least 1"));
    }
    let mut y = y0;
    let mut out = vec![y.clone()];
    for w in times.windows(2) {
        let h = (w[1] - w[0]) / substeps as f64;
        for s in 0..substeps {
            let t = w[0] + s as f64 * h;
            let k = stages(tab, field, t, &y, h, None);
            y = y + combine(&tab.b, &k, h).expect("weights are not all zero");
        }
        if !max_abs(&y).is_finite() {
            return Err(Error::NonFiniteState { t: w[1] });
        }
        out.push(y.clone());
    }
    Ok(Tensor::stack(out, 1))
}

/// Forward Euler with `substeps` steps per output interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Euler {
    /// Steps per output interval.
    pub substeps: usize,
}

/// Classical RK4 with `substeps` steps per output interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rk4 {
    /// Steps per output interval.
    pub substeps: usize,
}

impl<B: Backend> Integrator<B> for Euler {
    fn integrate(&self, field: &dyn VectorField<B>, y0: Tensor<B, 2>, times: &[f64]) -> Result<Tensor<B, 3>> {
        integrate_fixed(&Tableau::euler(), self.substeps, field, y0, times)
    }

    fn order(&self) -> usize {
        1
    }

    fn as_any(&self) -> Option<&dyn core::any::Any> {
        Some(self)
    }
}

impl<B: Backend> Integrator<B> for Rk4 {
    fn integrate(&self, field: &dyn VectorField<B>, y0: Tensor<B, 2>, times: &[f64]) -> Result<Tensor<B, 3>> {
        integrate_fixed(&Tableau::rk4(), self.substeps, field, y0, times)
    }

    fn order(&self) -> usize {
        4
    }

    fn as_any(&self) -> Option<&dyn core::any::Any> {
        Some(self)
    }
}

/// Fixed-step Tsit5 (its fifth-order solution, no error control); used to measure its order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixedTsit5 {
    /// Steps per output interval.
    pub substeps: usize,
}

impl<B: Backend> Integrator<B> for FixedTsit5 {
    fn integrate(&self, field: &dyn VectorField<B>, y0: Tensor<B, 2>, times: &[f64]) -> Result<Tensor<B, 3>> {
        integrate_fixed(&Tableau::tsit5(), self.substeps, field, y0, times)
    }

    fn order(&self) -> usize {
        5
    }

    fn as_any(&self) -> Option<&dyn core::any::Any> {
        Some(self)
    }
}
