//! Explicit Runge–Kutta stepping on host buffers, following the tensor code of
//! [`runge_kutta`](crate::runge_kutta) operation by operation (same tableaux, same order of
//! sums), and the fixed-step host solver built on it.

use mixer_core::{Error, HostField, HostFloat, Result, check_times};

use crate::tableau::Tableau;

/// `eval(stage, t, y, out)`: writes a stage derivative.
pub(crate) type StageEval<'a, T> = dyn FnMut(usize, f64, &[T], &mut [T]) + 'a;

/// Stage buffers of one explicit RK method for a state of `n` values.
pub(crate) struct Stages<T> {
    /// Stage derivatives `k_i`, `[n]` each.
    pub k: Vec<Vec<T>>,
    /// Stage state `y + h sum_j a_ij k_j`.
    stage_y: Vec<T>,
    /// Scratch for `h sum_i w_i k_i`.
    pub incr: Vec<T>,
}

impl<T: HostFloat> Stages<T> {
    /// Buffers for `tab` on states of `n` values.
    pub fn new(tab: &Tableau, n: usize) -> Self {
        Self { k: vec![vec![T::ZERO; n]; tab.stages()], stage_y: vec![T::ZERO; n], incr: vec![T::ZERO; n] }
    }

    /// The stages of one step from `(t, y)` with step `h`, stage `i` evaluated by
    /// `eval(i, t_i, y_i, k_i)`; `k[0]` is evaluated unless `k1_given` (first same as last).
    pub fn step(&mut self, tab: &Tableau, eval: &mut StageEval<'_, T>, t: f64, y: &[T], h: f64, k1_given: bool) {
        if !k1_given {
            eval(0, t, y, &mut self.k[0]);
        }
        for i in 1..tab.stages() {
            let (done, rest) = self.k.split_at_mut(i);
            if combine(&tab.a[i], done, h, &mut self.incr) {
                for ((s, &yv), &d) in self.stage_y.iter_mut().zip(y).zip(&self.incr) {
                    *s = yv + d;
                }
                eval(i, t + tab.c[i] * h, &self.stage_y, &mut rest[0]);
            } else {
                eval(i, t + tab.c[i] * h, y, &mut rest[0]);
            }
        }
    }
}

/// `out = h * sum_i w_i k_i` over non-zero weights, summed left to right as the tensor code
/// does; `false` (and `out` untouched) when all weights are zero.
pub(crate) fn combine<T: HostFloat>(w: &[f64], k: &[Vec<T>], h: f64, out: &mut [T]) -> bool {
    let mut first = true;
    for (wi, ki) in w.iter().zip(k).filter(|(wi, _)| **wi != 0.0) {
        let s = T::from_f64(wi * h);
        if first {
            for (o, &kv) in out.iter_mut().zip(ki) {
                *o = kv * s;
            }
            first = false;
        } else {
            for (o, &kv) in out.iter_mut().zip(ki) {
                *o += kv * s;
            }
        }
    }
    !first
}

/// Whether every entry is finite.
pub(crate) fn all_finite<T: HostFloat>(y: &[T]) -> bool {
    y.iter().all(|v| v.is_finite())
}

/// Checks `y0` against the field: `rows * dim` values.
pub(crate) fn check_state<T: HostFloat>(field: &dyn HostField<T>, y0: &[T]) -> Result<()> {
    let want = field.rows() * field.dim();
    if y0.len() != want {
        return Err(Error::shape("initial states (rows * dim of the field)", want, y0.len()));
    }
    Ok(())
}

/// Trajectories `[rows, times, dim]`, row-major, being filled one output time at a time.
pub(crate) struct Trajectories<T> {
    values: Vec<T>,
    dim: usize,
    steps: usize,
}

impl<T: HostFloat> Trajectories<T> {
    /// Room for `rows` trajectories of `steps` states of size `dim`.
    pub fn new(rows: usize, steps: usize, dim: usize) -> Self {
        Self { values: vec![T::ZERO; rows * steps * dim], dim, steps }
    }

    /// Writes the states `y: [rows, dim]` at output index `i`.
    pub fn set(&mut self, i: usize, y: &[T]) {
        let (d, steps) = (self.dim, self.steps);
        if d == 0 {
            return;
        }
        for (r, row) in y.chunks_exact(d).enumerate() {
            let at = (r * steps + i) * d;
            self.values[at..at + d].copy_from_slice(row);
        }
    }

    /// The filled values.
    pub fn into_vec(self) -> Vec<T> {
        self.values
    }
}

/// Fixed-step integration with `substeps` equal steps per output interval; returns
/// `[rows, times, dim]` row-major. Fails with [`Error::NonFiniteState`] at the end of the
/// first output interval whose state is not finite, as the tensor solvers do.
pub(crate) fn integrate_fixed<T: HostFloat>(
    tab: &Tableau,
    substeps: usize,
    field: &mut dyn HostField<T>,
    y0: &[T],
    times: &[f64],
) -> Result<Vec<T>> {
    check_times(times)?;
    if substeps == 0 {
        return Err(Error::config("substeps", "must be at least 1"));
    }
    check_state(field, y0)?;
    let mut out = Trajectories::new(field.rows(), times.len(), field.dim());
    let mut y = y0.to_vec();
    out.set(0, &y);
    let mut st = Stages::new(tab, y.len());
    for (i, w) in times.windows(2).enumerate() {
        let h = (w[1] - w[0]) / substeps as f64;
        for s in 0..substeps {
            let t = w[0] + s as f64 * h;
            st.step(tab, &mut |_, t, x, out| field.eval(t, x, out), t, &y, h, false);
            combine(&tab.b, &st.k, h, &mut st.incr);
            for (yv, &d) in y.iter_mut().zip(&st.incr) {
                *yv += d;
            }
        }
        if !all_finite(&y) {
            return Err(Error::NonFiniteState { t: w[1] });
        }
        out.set(i + 1, &y);
    }
    Ok(out.into_vec())
}
