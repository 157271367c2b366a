//! Adaptive Tsit5 5(4) on host buffers: the algorithm of [`Tsit5`]'s tensor code (same tableau,
//! first step, error norm, controller, output handling and errors), without autodiff.

use mixer_core::{Error, HostField, HostFloat, Result, check_times};

use crate::host_stepping::{Stages, Trajectories, check_state, combine};
use crate::tableau::Tableau;
use crate::{Interpolation, StepController, Tsit5};

/// RMS over all entries of `err / (atol + rtol * max(|y|, |y_new|))`, the scale and ratio in
/// `T` as on the tensor path, the mean accumulated in `f64`.
pub(crate) fn error_norm<T: HostFloat>(c: &StepController, err: &[T], y: &[T], y_new: &[T]) -> f64 {
    let (rtol, atol) = (T::from_f64(c.rtol), T::from_f64(c.atol));
    let mut sum = 0.0;
    for ((&e, &a), &b) in err.iter().zip(y).zip(y_new) {
        let ratio = e / (a.abs().max(b.abs()) * rtol + atol);
        sum += (ratio * ratio).to_f64();
    }
    (sum / err.len().max(1) as f64).sqrt()
}

/// RMS of `v / (atol + rtol * |y0|)`.
fn scaled_rms<T: HostFloat>(c: &StepController, v: &[T], y0: &[T]) -> f64 {
    let (rtol, atol) = (T::from_f64(c.rtol), T::from_f64(c.atol));
    let mut sum = 0.0;
    for (&x, &y) in v.iter().zip(y0) {
        let r = x / (y.abs() * rtol + atol);
        sum += (r * r).to_f64();
    }
    (sum / v.len().max(1) as f64).sqrt()
}

/// The first step: `initial_step` when given, else from the norms of `y0` and `f(t0, y0)`.
fn first_step<T: HostFloat>(solver: &Tsit5, y0: &[T], f0: &[T], span: f64) -> f64 {
    if let Some(h) = solver.initial_step {
        return h.min(span);
    }
    let c = &solver.controller;
    let d0 = scaled_rms(c, y0, y0);
    let d1 = scaled_rms(c, f0, y0);
    let h = if d0 < 1e-5 || d1 < 1e-5 { 1e-6 } else { 0.01 * d0 / d1 };
    h.min(span).max(c.min_step.max(1e-12))
}

/// Cubic Hermite interpolation between `(y0, f0)` and `(y1, f1)` at `theta` of a step `h`.
pub(crate) fn hermite<T: HostFloat>(y0: &[T], f0: &[T], y1: &[T], f1: &[T], h: f64, theta: f64, out: &mut [T]) {
    let (t2, t3) = (theta * theta, theta * theta * theta);
    let w =
        [2.0 * t3 - 3.0 * t2 + 1.0, h * (t3 - 2.0 * t2 + theta), -2.0 * t3 + 3.0 * t2, h * (t3 - t2)].map(T::from_f64);
    for (i, o) in out.iter_mut().enumerate() {
        *o = y0[i] * w[0] + f0[i] * w[1] + y1[i] * w[2] + f1[i] * w[3];
    }
}

/// The caller's side of the adaptive loop ([`tsit5_loop`]): how stages are evaluated, and
/// what to keep of each accepted step.
pub(crate) trait Tsit5Hooks<T> {
    /// Writes `f(t, y)` into `out` for stage `stage` of the attempt in progress (stage 0 only
    /// for the first evaluation, at `y0`; later steps reuse the previous last stage).
    fn eval(&mut self, stage: usize, t: f64, y: &[T], out: &mut [T]);

    /// The attempt in progress became the step `(t, h)`; `outputs` are the output indices it
    /// wrote, each with its Hermite fraction when interpolated (else the step's end state).
    fn accepted(&mut self, _t: f64, _h: f64, _outputs: &[(usize, Option<f64>)]) {}
}

/// Plain evaluation by a [`HostField`].
struct Plain<'a, T>(&'a mut dyn HostField<T>);

impl<T: HostFloat> Tsit5Hooks<T> for Plain<'_, T> {
    fn eval(&mut self, _: usize, t: f64, y: &[T], out: &mut [T]) {
        self.0.eval(t, y, out);
    }
}

/// Adaptive Tsit5 on the host; returns `[rows, times, dim]` row-major.
pub(crate) fn integrate_tsit5<T: HostFloat>(
    solver: &Tsit5,
    field: &mut dyn HostField<T>,
    y0: &[T],
    times: &[f64],
) -> Result<Vec<T>> {
    check_state(field, y0)?;
    let (rows, dim) = (field.rows(), field.dim());
    tsit5_loop(solver, rows, dim, y0, times, &mut Plain(field))
}

/// The adaptive loop of [`integrate_tsit5`], its stages evaluated (and accepted steps
/// reported) through `hooks`.
pub(crate) fn tsit5_loop<T: HostFloat>(
    solver: &Tsit5,
    rows: usize,
    dim: usize,
    y0: &[T],
    times: &[f64],
    hooks: &mut dyn Tsit5Hooks<T>,
) -> Result<Vec<T>> {
    check_times(times)?;
    solver.controller.validate()?;
    let tab = Tableau::tsit5();
    let err_w = tab.b_err.clone().expect("tsit5 has error weights");
    let c = &solver.controller;
    let (t_end, mut t) = (times[times.len() - 1], times[0]);
    let n = y0.len();
    let mut out = Trajectories::new(rows, times.len(), dim);
    let mut y = y0.to_vec();
    out.set(0, &y);
    if times.len() == 1 {
        return Ok(out.into_vec());
    }
    let mut st = Stages::new(&tab, n);
    hooks.eval(0, t, &y, &mut st.k[0]);
    let mut h = first_step(solver, &y, &st.k[0], t_end - t);
    let (mut y_new, mut err, mut dense) = (vec![T::ZERO; n], vec![T::ZERO; n], vec![T::ZERO; n]);
    let last = tab.stages() - 1;
    let mut next = 1;
    let mut steps = 0;
    let mut written = Vec::new();
    while next < times.len() {
        if steps >= solver.max_steps {
            return Err(Error::MaxStepsReached { t, steps });
        }
        steps += 1;
        let target = times[next];
        let mut h_try = h.min(t_end - t);
        let mut clipped = false;
        if solver.interpolation == Interpolation::StepToOutputs && t + h_try >= target - 1e-12 * target.abs().max(1.0) {
            h_try = target - t;
            clipped = true;
        }
        st.step(&tab, &mut |i, t, x, o| hooks.eval(i, t, x, o), t, &y, h_try, true);
        combine(&tab.b, &st.k, h_try, &mut st.incr);
        for ((yn, &yv), &d) in y_new.iter_mut().zip(&y).zip(&st.incr) {
            *yn = yv + d;
        }
        combine(&err_w, &st.k, h_try, &mut err);
        let norm = error_norm(c, &err, &y, &y_new);
        if let Some(retry) = c.retry(norm, tab.order, t, h_try)? {
            h = retry;
            continue;
        }
        let t_new = if clipped { target } else { t + h_try };
        written.clear();
        match solver.interpolation {
            Interpolation::StepToOutputs => {
                if clipped {
                    out.set(next, &y_new);
                    written.push((next, None));
                    next += 1;
                }
            }
            Interpolation::CubicHermite => {
                while next < times.len() && times[next] <= t_new + 1e-12 * t_new.abs().max(1.0) {
                    let theta = ((times[next] - t) / h_try).clamp(0.0, 1.0);
                    hermite(&y, &st.k[0], &y_new, &st.k[last], h_try, theta, &mut dense);
                    out.set(next, &dense);
                    written.push((next, Some(theta)));
                    next += 1;
                }
            }
        }
        hooks.accepted(t, h_try, &written);
        // grow from the attempted step, not the clipped one, as the tensor solver does
        h = h.max(h_try) * c.factor(norm, tab.order);
        t = t_new;
        std::mem::swap(&mut y, &mut y_new);
        st.k.swap(0, last);
    }
    Ok(out.into_vec())
}
