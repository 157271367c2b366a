//! Reverse-mode differentiation of explicit Runge–Kutta rollouts on host buffers (the discrete
//! adjoint): the forward pass records every stage evaluation of a [`TapedField`], the backward
//! pass pulls the trajectory's cotangent back through the stages in reverse order. Gradients are
//! those of the computed trajectory, exactly what autodiff through the tensor solver gives
//! (adaptive steps: through every accepted step, step sizes held fixed), at a fraction of the
//! bookkeeping.

use mixer_core::{Error, HostFloat, Result, TapedField, check_times};

use crate::host_stepping::{Stages, Trajectories, all_finite, check_state, combine};
use crate::host_tsit5::{Tsit5Hooks, tsit5_loop};
use crate::tableau::Tableau;
use crate::{HostSolver, Tsit5};

/// Above this many host values of stage tapes, a fixed-step backward pass recomputes each
/// step's stages from its starting state instead of keeping them (one more forward evaluation
/// per stage, memory of one step). Adaptive rollouts always keep their accepted stages.
const STORED_TAPE_VALUES: usize = 1 << 26;

/// The trajectories of a taped rollout (`[rows, times, dim]`) and its tape.
pub type TapedRollout<T, P> = (Vec<T>, RolloutTape<P, T>);

/// What a taped rollout keeps for its backward pass ([`HostSolver::integrate_taped`]).
pub struct RolloutTape<P, T> {
    tab: Tableau,
    kind: Kind<P, T>,
    /// Output times.
    outputs: usize,
}

/// The recorded steps of a fixed-step or an adaptive rollout.
enum Kind<P, T> {
    Fixed {
        substeps: usize,
        /// Time and size of every step, in order.
        steps: Vec<(f64, f64)>,
        /// The state at the start of every step, when stages are recomputed.
        starts: Vec<Vec<T>>,
        /// The stage tapes of every step, when stored.
        stages: Vec<Vec<P>>,
    },
    Adaptive {
        /// The first evaluation, `f(y0)` (stage 0 of the first step).
        first: P,
        steps: Vec<Accepted<P>>,
    },
}

/// One accepted adaptive step: its size, the tapes of stages `1..s` (stage 0 is the previous
/// step's last), and the outputs it wrote (with the Hermite fraction when interpolated).
struct Accepted<P> {
    h: f64,
    stages: Vec<P>,
    outputs: Vec<(usize, Option<f64>)>,
}

impl<P, T> RolloutTape<P, T> {
    /// Whether the stage tapes were stored (else they are recomputed in the backward pass).
    pub fn stores_stages(&self) -> bool {
        match &self.kind {
            Kind::Fixed { starts, .. } => starts.is_empty(),
            Kind::Adaptive { .. } => true,
        }
    }
}

impl HostSolver {
    /// [`HostSolver::integrate`] that also records the rollout for [`pull_back`].
    pub fn integrate_taped<T: HostFloat, F: TapedField<T>>(
        &self,
        field: &mut F,
        y0: &[T],
        times: &[f64],
    ) -> Result<TapedRollout<T, F::Tape>> {
        match self {
            Self::Euler(m) => integrate_fixed_taped(Tableau::euler(), m.substeps, field, y0, times),
            Self::Rk4(m) => integrate_fixed_taped(Tableau::rk4(), m.substeps, field, y0, times),
            Self::FixedTsit5(m) => integrate_fixed_taped(Tableau::tsit5(), m.substeps, field, y0, times),
            Self::Tsit5(m) => integrate_adaptive_taped(m, field, y0, times),
        }
    }
}

/// One taped step from `y` of size `h`: stage derivatives into `st.k`, stage tapes into `tapes`.
fn taped_step<T: HostFloat, F: TapedField<T>>(
    st: &mut Stages<T>,
    tab: &Tableau,
    field: &mut F,
    (t, h): (f64, f64),
    y: &[T],
    tapes: &mut [F::Tape],
) {
    st.step(tab, &mut |i, t, x, out| field.eval_taped(t, x, out, &mut tapes[i]), t, y, h, false);
}

fn integrate_fixed_taped<T: HostFloat, F: TapedField<T>>(
    tab: Tableau,
    substeps: usize,
    field: &mut F,
    y0: &[T],
    times: &[f64],
) -> Result<TapedRollout<T, F::Tape>> {
    check_times(times)?;
    if substeps == 0 {
        return Err(Error::config("substeps", "must be at least 1"));
    }
    check_state(field, y0)?;
    let n = y0.len();
    let total_steps = times.len().saturating_sub(1) * substeps;
    let store = total_steps * tab.stages() * field.tape_len() <= STORED_TAPE_VALUES;
    let (mut steps, mut starts, mut stages) = (Vec::with_capacity(total_steps), Vec::new(), Vec::new());
    let mut out = Trajectories::new(field.rows(), times.len(), field.dim());
    let mut y = y0.to_vec();
    out.set(0, &y);
    let mut st = Stages::new(&tab, n);
    let mut scratch: Vec<F::Tape> = (0..tab.stages()).map(|_| field.new_tape()).collect();
    for (i, w) in times.windows(2).enumerate() {
        let h = (w[1] - w[0]) / substeps as f64;
        for s in 0..substeps {
            let t = w[0] + s as f64 * h;
            steps.push((t, h));
            if store {
                let mut tapes: Vec<F::Tape> = (0..tab.stages()).map(|_| field.new_tape()).collect();
                taped_step(&mut st, &tab, field, (t, h), &y, &mut tapes);
                stages.push(tapes);
            } else {
                starts.push(y.clone());
                taped_step(&mut st, &tab, field, (t, h), &y, &mut scratch);
            }
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
    let kind = Kind::Fixed { substeps, steps, starts, stages };
    Ok((out.into_vec(), RolloutTape { tab, kind, outputs: times.len() }))
}

/// Records the stage tapes of every attempt and keeps those of accepted steps.
struct Recorder<'a, T: HostFloat, F: TapedField<T>> {
    field: &'a mut F,
    first: Option<F::Tape>,
    attempt: Vec<F::Tape>,
    steps: Vec<Accepted<F::Tape>>,
}

impl<T: HostFloat, F: TapedField<T>> Tsit5Hooks<T> for Recorder<'_, T, F> {
    fn eval(&mut self, stage: usize, t: f64, y: &[T], out: &mut [T]) {
        if self.first.is_none() {
            let mut tape = self.field.new_tape();
            self.field.eval_taped(t, y, out, &mut tape);
            self.first = Some(tape);
        } else {
            self.field.eval_taped(t, y, out, &mut self.attempt[stage]);
        }
    }

    fn accepted(&mut self, _t: f64, h: f64, outputs: &[(usize, Option<f64>)]) {
        let fresh = (0..self.attempt.len()).map(|_| self.field.new_tape()).collect();
        let stages = std::mem::replace(&mut self.attempt, fresh);
        self.steps.push(Accepted { h, stages, outputs: outputs.to_vec() });
    }
}

fn integrate_adaptive_taped<T: HostFloat, F: TapedField<T>>(
    solver: &Tsit5,
    field: &mut F,
    y0: &[T],
    times: &[f64],
) -> Result<TapedRollout<T, F::Tape>> {
    check_state(field, y0)?;
    let tab = Tableau::tsit5();
    let (rows, dim) = (field.rows(), field.dim());
    let attempt = (0..tab.stages()).map(|_| field.new_tape()).collect();
    let mut rec = Recorder { field, first: None, attempt, steps: Vec::new() };
    let y = tsit5_loop(solver, rows, dim, y0, times, &mut rec)?;
    let first = rec.first.unwrap_or_else(|| rec.field.new_tape());
    let kind = Kind::Adaptive { first, steps: rec.steps };
    Ok((y, RolloutTape { tab, kind, outputs: times.len() }))
}

/// Pulls `y_bar = dL/dY` (`[rows, times, dim]`, the shape [`HostSolver::integrate_taped`]
/// returned) back through the recorded rollout: the field accumulates its parameter gradients
/// and the result is `dL/dy0`, `[rows, dim]`.
pub fn pull_back<T: HostFloat, F: TapedField<T>>(tape: &RolloutTape<F::Tape, T>, field: &mut F, y_bar: &[T]) -> Vec<T> {
    let (rows, dim, times) = (field.rows(), field.dim(), tape.outputs);
    assert_eq!(y_bar.len(), rows * times * dim, "cotangent of the trajectories");
    let mut back = Backward::new(&tape.tab, rows * dim);
    // `acc += w * (cotangent of output i)`, as a `[rows, dim]` state
    let output_bar = |i: usize, w: T, acc: &mut [T]| {
        for (r, row) in acc.chunks_exact_mut(dim.max(1)).enumerate().take(rows) {
            let at = (r * times + i) * dim;
            for (a, &g) in row.iter_mut().zip(&y_bar[at..at + dim]) {
                *a += g * w;
            }
        }
    };
    if times == 0 {
        return back.y_bar;
    }
    match &tape.kind {
        Kind::Fixed { substeps, steps, starts, stages } => {
            output_bar(times - 1, T::ONE, &mut back.y_bar);
            let mut st = Stages::new(&tape.tab, rows * dim);
            let mut scratch: Vec<F::Tape> =
                if starts.is_empty() { Vec::new() } else { (0..tape.tab.stages()).map(|_| field.new_tape()).collect() };
            for (step, &(t, h)) in steps.iter().enumerate().rev() {
                let tapes = if starts.is_empty() {
                    &stages[step]
                } else {
                    taped_step(&mut st, &tape.tab, field, (t, h), &starts[step], &mut scratch);
                    &scratch
                };
                back.clear_stages();
                back.step(field, tapes, h, 0);
                if step % substeps == 0 {
                    output_bar(step / substeps, T::ONE, &mut back.y_bar);
                }
            }
        }
        Kind::Adaptive { first, steps } => {
            let last = tape.tab.stages() - 1;
            // cotangent of the next step's stage 0, which is this step's last stage (FSAL)
            let mut carry = vec![T::ZERO; rows * dim];
            for s in steps.iter().rev() {
                back.clear_stages();
                let mut y_n_extra = vec![T::ZERO; rows * dim];
                for &(i, theta) in &s.outputs {
                    match theta {
                        None => output_bar(i, T::ONE, &mut back.y_bar),
                        Some(theta) => {
                            let w = hermite_weights(s.h, theta);
                            output_bar(i, w[0], &mut y_n_extra);
                            output_bar(i, w[1], &mut back.k_bar[0]);
                            output_bar(i, w[2], &mut back.y_bar);
                            output_bar(i, w[3], &mut back.k_bar[last]);
                        }
                    }
                }
                for (k, &c) in back.k_bar[last].iter_mut().zip(&carry) {
                    *k += c;
                }
                back.step(field, &s.stages, s.h, 1);
                for (y, &e) in back.y_bar.iter_mut().zip(&y_n_extra) {
                    *y += e;
                }
                carry.copy_from_slice(&back.k_bar[0]);
            }
            if carry.iter().any(|&v| v != T::ZERO) {
                field.pull_back(first, &carry, &mut back.stage_bar);
                for (y, &g) in back.y_bar.iter_mut().zip(&back.stage_bar) {
                    *y += g;
                }
            }
            output_bar(0, T::ONE, &mut back.y_bar);
        }
    }
    back.y_bar
}

/// The weights of `y0, f0, y1, f1` in the cubic Hermite interpolant at `theta` of a step `h`
/// (as the forward pass computes them).
fn hermite_weights<T: HostFloat>(h: f64, theta: f64) -> [T; 4] {
    let (t2, t3) = (theta * theta, theta * theta * theta);
    [2.0 * t3 - 3.0 * t2 + 1.0, h * (t3 - 2.0 * t2 + theta), -2.0 * t3 + 3.0 * t2, h * (t3 - t2)].map(T::from_f64)
}

/// The running cotangents of a backward pass: of the state, of each stage derivative.
struct Backward<'a, T> {
    tab: &'a Tableau,
    y_bar: Vec<T>,
    k_bar: Vec<Vec<T>>,
    stage_bar: Vec<T>,
}

impl<'a, T: HostFloat> Backward<'a, T> {
    fn new(tab: &'a Tableau, n: usize) -> Self {
        Self { tab, y_bar: vec![T::ZERO; n], k_bar: vec![vec![T::ZERO; n]; tab.stages()], stage_bar: vec![T::ZERO; n] }
    }

    fn clear_stages(&mut self) {
        self.k_bar.iter_mut().for_each(|k| k.fill(T::ZERO));
    }

    /// Pulls `y_bar` (the cotangent of a step's end state; `k_bar` may already hold direct
    /// cotangents of stages) back through the step `y + h sum_j b_j k_j` whose stages from
    /// `first` on were recorded in `tapes`: `y_bar` becomes the cotangent of the step's start,
    /// `k_bar[j]` for `j < first` what flows into stages evaluated elsewhere.
    fn step<F: TapedField<T>>(&mut self, field: &mut F, tapes: &[F::Tape], h: f64, first: usize) {
        for (kb, &b) in self.k_bar.iter_mut().zip(&self.tab.b) {
            let w = T::from_f64(b * h);
            for (v, &g) in kb.iter_mut().zip(&self.y_bar) {
                *v += g * w;
            }
        }
        for j in (first..self.tab.stages()).rev() {
            if self.k_bar[j].iter().all(|&v| v == T::ZERO) {
                continue;
            }
            field.pull_back(&tapes[j], &self.k_bar[j], &mut self.stage_bar);
            for (y, &g) in self.y_bar.iter_mut().zip(&self.stage_bar) {
                *y += g;
            }
            for (m, &a) in self.tab.a[j].iter().enumerate() {
                if a != 0.0 {
                    let w = T::from_f64(a * h);
                    for (v, &g) in self.k_bar[m].iter_mut().zip(&self.stage_bar) {
                        *v += g * w;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Euler, FixedTsit5, Interpolation, Rk4};
    use burn::tensor::Tensor;
    use mixer_core::host::{tensor2, to_vec};
    use mixer_core::{FnField, HostField};

    type AB = burn::backend::Autodiff<burn::backend::NdArray<f64>>;
    const W: [f64; 4] = [0.8, -1.1, 0.6, 0.4];
    const P: [f64; 2] = [0.1, -0.3];

    /// `dx/dt = tanh(W x) + p` on rows of size 2, with `W` and `p` as parameters.
    struct Tanh {
        rows: usize,
        w: [f64; 4],
        p: [f64; 2],
        grad_w: [f64; 4],
        grad_p: [f64; 2],
    }

    impl Tanh {
        fn new(w: [f64; 4], p: [f64; 2]) -> Self {
            Self { rows: 3, w, p, grad_w: [0.0; 4], grad_p: [0.0; 2] }
        }
    }

    impl HostField<f64> for Tanh {
        fn dim(&self) -> usize {
            2
        }
        fn rows(&self) -> usize {
            self.rows
        }
        fn eval(&mut self, t: f64, x: &[f64], out: &mut [f64]) {
            let mut tape = self.new_tape();
            self.eval_taped(t, x, out, &mut tape);
        }
    }

    impl TapedField<f64> for Tanh {
        type Tape = Vec<f64>;
        fn new_tape(&self) -> Vec<f64> {
            Vec::new()
        }
        fn tape_len(&self) -> usize {
            4 * self.rows
        }
        fn eval_taped(&mut self, _t: f64, x: &[f64], out: &mut [f64], tape: &mut Vec<f64>) {
            tape.clear();
            tape.extend_from_slice(x);
            for (xr, o) in x.chunks_exact(2).zip(out.chunks_exact_mut(2)) {
                for (i, oi) in o.iter_mut().enumerate() {
                    *oi = (self.w[2 * i] * xr[0] + self.w[2 * i + 1] * xr[1]).tanh() + self.p[i];
                }
            }
        }
        fn pull_back(&mut self, tape: &Vec<f64>, g: &[f64], x_bar: &mut [f64]) {
            for ((xr, gr), xb) in tape.chunks_exact(2).zip(g.chunks_exact(2)).zip(x_bar.chunks_exact_mut(2)) {
                xb.fill(0.0);
                for (i, &g) in gr.iter().enumerate() {
                    let th = (self.w[2 * i] * xr[0] + self.w[2 * i + 1] * xr[1]).tanh();
                    let gz = g * (1.0 - th * th);
                    self.grad_p[i] += g;
                    for j in 0..2 {
                        self.grad_w[2 * i + j] += gz * xr[j];
                        xb[j] += gz * self.w[2 * i + j];
                    }
                }
            }
        }
    }

    const Y0: [f64; 6] = [0.3, -0.5, 1.0, 0.2, -0.7, 0.9];
    const TIMES: [f64; 4] = [0.0, 0.3, 0.7, 1.2];

    /// `sum(Y * R)` for a fixed `R`.
    fn objective(solver: &HostSolver, w: [f64; 4], p: [f64; 2], y0: &[f64]) -> f64 {
        let y = solver.integrate(&mut Tanh::new(w, p), y0, &TIMES).unwrap();
        y.iter().enumerate().map(|(i, v)| v * weight(i)).sum()
    }

    fn weight(i: usize) -> f64 {
        0.2 + 0.13 * (i % 7) as f64 - 0.05 * (i % 3) as f64
    }

    fn fd(v: &[f64], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
        (0..v.len())
            .map(|i| {
                let (mut up, mut down) = (v.to_vec(), v.to_vec());
                up[i] += 1e-6;
                down[i] -= 1e-6;
                (f(&up) - f(&down)) / 2e-6
            })
            .collect()
    }

    #[test]
    fn gradients_of_fixed_step_rollouts_match_finite_differences() {
        let (w, p) = ([0.8, -1.1, 0.6, 0.4], [0.1, -0.3]);
        for solver in [
            HostSolver::Euler(Euler { substeps: 3 }),
            HostSolver::Rk4(Rk4 { substeps: 2 }),
            HostSolver::FixedTsit5(FixedTsit5 { substeps: 1 }),
        ] {
            let mut field = Tanh::new(w, p);
            let (y, tape) = solver.integrate_taped(&mut field, &Y0, &TIMES).unwrap();
            assert!(tape.stores_stages());
            let plain = solver.integrate(&mut Tanh::new(w, p), &Y0, &TIMES).unwrap();
            assert_eq!(y, plain, "taped and plain rollouts agree bitwise");
            let y_bar: Vec<f64> = (0..y.len()).map(weight).collect();
            let x0_bar = pull_back(&tape, &mut field, &y_bar);
            let close = |got: &[f64], want: &[f64], what: &str| {
                for (g, f) in got.iter().zip(want) {
                    assert!((g - f).abs() < 1e-7 * (1.0 + f.abs()), "{solver:?} {what}: {g} vs {f}");
                }
            };
            close(&x0_bar, &fd(&Y0, |v| objective(&solver, w, p, v)), "y0");
            close(&field.grad_w, &fd(&w, |v| objective(&solver, v.try_into().unwrap(), p, &Y0)), "W");
            close(&field.grad_p, &fd(&p, |v| objective(&solver, w, v.try_into().unwrap(), &Y0)), "p");
        }
    }

    /// Values and gradients (`W`, `p`, `y0`) of `sum(Y * R)` through the tensor solver under
    /// burn-autodiff: the reference the host adjoint must equal.
    fn autodiff_reference(integrator: &dyn mixer_core::Integrator<AB>) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let device = Default::default();
        let w_t = tensor2::<AB>(&W, [2, 2], &device).require_grad();
        let p_t = tensor2::<AB>(&P, [1, 2], &device).require_grad();
        let y0 = tensor2::<AB>(&Y0, [3, 2], &device).require_grad();
        let (wf, pf) = (w_t.clone(), p_t.clone());
        let field = FnField::new(2, move |_t, x: Tensor<AB, 2>| x.matmul(wf.clone().transpose()).tanh() + pf.clone());
        let y = integrator.integrate(&field, y0.clone(), &TIMES).unwrap();
        let n = y.dims().iter().product::<usize>();
        let r: Vec<f64> = (0..n).map(weight).collect();
        let grads = (y.clone() * tensor2::<AB>(&r, [1, n], &device).reshape(y.dims())).sum().backward();
        let g = |t: &Tensor<AB, 2>| to_vec(t.grad(&grads).unwrap());
        (to_vec(y), g(&w_t), g(&p_t), g(&y0))
    }

    #[test]
    fn adjoints_equal_autodiff_through_the_tensor_solvers() {
        let mut hermite = Tsit5::new(1e-6, 1e-8);
        hermite.interpolation = Interpolation::CubicHermite;
        let cases: [(HostSolver, Box<dyn mixer_core::Integrator<AB>>); 3] = [
            (HostSolver::Rk4(Rk4 { substeps: 2 }), Box::new(Rk4 { substeps: 2 })),
            (HostSolver::Tsit5(Tsit5::new(1e-6, 1e-8)), Box::new(Tsit5::new(1e-6, 1e-8))),
            (HostSolver::Tsit5(hermite), Box::new(hermite)),
        ];
        for (host, tensor) in cases {
            let (want_y, want_w, want_p, want_y0) = autodiff_reference(tensor.as_ref());
            let mut field = Tanh::new(W, P);
            let (y, tape) = host.integrate_taped(&mut field, &Y0, &TIMES).unwrap();
            let y0_bar = pull_back(&tape, &mut field, &(0..y.len()).map(weight).collect::<Vec<_>>());
            let close = |got: &[f64], want: &[f64], what: &str| {
                assert_eq!(got.len(), want.len(), "{what}");
                for (g, w) in got.iter().zip(want) {
                    assert!((g - w).abs() < 1e-10 * (1.0 + w.abs()), "{host:?} {what}: {g} vs {w}");
                }
            };
            close(&y, &want_y, "values");
            close(&field.grad_w, &want_w, "W");
            close(&field.grad_p, &want_p, "p");
            close(&y0_bar, &want_y0, "y0");
        }
    }

    #[test]
    fn recomputed_stages_give_the_stored_gradients() {
        let solver = HostSolver::Rk4(Rk4 { substeps: 2 });
        let mut stored = Tanh::new(W, P);
        let (y, tape) = solver.integrate_taped(&mut stored, &Y0, &TIMES).unwrap();
        let y_bar: Vec<f64> = (0..y.len()).map(weight).collect();
        let want = pull_back(&tape, &mut stored, &y_bar);
        let mut field = Tanh::new(W, P);
        let (_, mut tape) = solver.integrate_taped(&mut field, &Y0, &TIMES).unwrap();
        // drop the stored stages and keep the starting states, as a rollout too large to store does
        let Kind::Fixed { steps, starts, stages, .. } = &mut tape.kind else { panic!("a fixed-step tape") };
        let mut y = Y0.to_vec();
        let mut st = Stages::new(&Tableau::rk4(), 6);
        for &(t, h) in steps.iter() {
            starts.push(y.clone());
            let mut tapes: Vec<Vec<f64>> = vec![Vec::new(); 4];
            taped_step(&mut st, &Tableau::rk4(), &mut field, (t, h), &y.clone(), &mut tapes);
            combine(&Tableau::rk4().b, &st.k, h, &mut st.incr);
            y.iter_mut().zip(&st.incr).for_each(|(a, b)| *a += b);
        }
        stages.clear();
        assert!(!tape.stores_stages());
        let got = pull_back(&tape, &mut field, &y_bar);
        assert_eq!(got, want);
        assert_eq!(field.grad_w, stored.grad_w);
    }

    #[test]
    fn a_diverging_taped_rollout_fails_like_the_plain_one() {
        let mut field = Tanh::new([0.0; 4], [f64::NAN, 0.0]);
        let r = HostSolver::Rk4(Rk4 { substeps: 1 }).integrate_taped(&mut field, &Y0, &TIMES);
        assert!(matches!(r, Err(Error::NonFiniteState { t }) if t == 0.3));
    }
}
