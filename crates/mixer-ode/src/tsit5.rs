//! Adaptive Tsit5 5(4) on burn tensors: one step size shared by the batch, RMS error norm,
//! a standard controller, outputs by stepping onto the requested times or by cubic Hermite
//! interpolation; gradients go through every accepted step (discretise-then-optimise).

use burn::tensor::{ElementConversion, Tensor, backend::Backend};
use serde::{Deserialize, Serialize};

use mixer_core::{Error, Integrator, Result, VectorField, check_times};

use crate::runge_kutta::{combine, stages};
use crate::tableau::Tableau;

/// Error-based step-size control: accept when the RMS of `err / (atol + rtol * |y|)` is at most
/// 1, then scale the step by `safety * norm^(-1/5)` clamped to `[factor_min, factor_max]`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepController {
    /// Relative tolerance.
    pub rtol: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Safety factor (0.9).
    pub safety: f64,
    /// Smallest step-size factor (0.2).
    pub factor_min: f64,
    /// Largest step-size factor (10).
    pub factor_max: f64,
    /// Steps below this are an error.
    pub min_step: f64,
}

impl StepController {
    /// A controller with the given tolerances and the usual safety settings.
    pub fn new(rtol: f64, atol: f64) -> Self {
        Self { rtol, atol, safety: 0.9, factor_min: 0.2, factor_max: 10.0, min_step: 1e-12 }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        for (f, v) in
            [("rtol", self.rtol), ("atol", self.atol), ("safety", self.safety), ("factor_max", self.factor_max)]
        {
            if !(v > 0.0 && v.is_finite()) {
                return Err(Error::config(f, format!("must be > 0, got {v}")));
            }
        }
        if !(self.factor_min > 0.0 && self.factor_min < 1.0) {
            return Err(Error::config("factor_min", format!("must be in (0, 1), got {}", self.factor_min)));
        }
        if self.min_step.is_nan() || self.min_step < 0.0 {
            return Err(Error::config("min_step", "must be >= 0"));
        }
        Ok(())
    }

    /// Step-size factor after a step with error norm `norm` of a method of order `order`.
    /// The step to retry with after a step of size `h_try` at `t` whose error norm is `norm`,
    /// or `None` when the step is accepted (`norm <= 1`); an error when the step underflows.
    pub(crate) fn retry(&self, norm: f64, order: usize, t: f64, h_try: f64) -> Result<Option<f64>> {
        if !norm.is_finite() {
            let h = h_try * self.factor_min;
            return if h < self.min_step { Err(Error::NonFiniteState { t }) } else { Ok(Some(h)) };
        }
        if norm > 1.0 {
            let h = h_try * self.factor(norm, order).min(1.0);
            return if h < self.min_step { Err(Error::StepSizeUnderflow { t, h }) } else { Ok(Some(h)) };
        }
        Ok(None)
    }

    pub(crate) fn factor(&self, norm: f64, order: usize) -> f64 {
        if norm == 0.0 {
            return self.factor_max;
        }
        (self.safety * norm.powf(-1.0 / order as f64)).clamp(self.factor_min, self.factor_max)
    }

    /// RMS over the whole batch of `err / (atol + rtol * max(|y|, |y_new|))`, on the host
    /// (detached: step-size control is not differentiated).
    fn norm<B: Backend>(&self, err: Tensor<B, 2>, y: &Tensor<B, 2>, y_new: &Tensor<B, 2>) -> f64 {
        let scale =
            y.clone().detach().abs().max_pair(y_new.clone().detach().abs()).mul_scalar(self.rtol).add_scalar(self.atol);
        let ratio = err.detach().div(scale);
        let ms: f64 = ratio.square().mean().into_scalar().elem();
        ms.sqrt()
    }
}

/// How states at the requested times are produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Interpolation {
    /// Shorten steps so that every requested time is a step end (exact to the method's order).
    StepToOutputs,
    /// Take unconstrained steps and interpolate with cubic Hermite polynomials (third order).
    CubicHermite,
}

/// Adaptive Tsit5 5(4).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tsit5 {
    /// Step-size control.
    pub controller: StepController,
    /// First step; `None` picks one from the norms of `y0` and `f(t0, y0)`.
    pub initial_step: Option<f64>,
    /// Most steps (accepted or rejected) before giving up.
    pub max_steps: usize,
    /// How outputs are produced.
    pub interpolation: Interpolation,
}

impl Tsit5 {
    /// Tsit5 with tolerances `rtol`, `atol`; at most 4096 steps, stepping onto output times.
    pub fn new(rtol: f64, atol: f64) -> Self {
        Self {
            controller: StepController::new(rtol, atol),
            initial_step: None,
            max_steps: 4096,
            interpolation: Interpolation::StepToOutputs,
        }
    }

    fn first_step<B: Backend>(&self, y0: &Tensor<B, 2>, f0: &Tensor<B, 2>, span: f64) -> f64 {
        if let Some(h) = self.initial_step {
            return h.min(span);
        }
        let c = &self.controller;
        let (y0, f0) = (y0.clone().detach(), f0.clone().detach());
        let scale = y0.clone().abs().mul_scalar(c.rtol).add_scalar(c.atol);
        let d0: f64 = y0.div(scale.clone()).square().mean().into_scalar().elem::<f64>().sqrt();
        let d1: f64 = f0.div(scale).square().mean().into_scalar().elem::<f64>().sqrt();
        let h = if d0 < 1e-5 || d1 < 1e-5 { 1e-6 } else { 0.01 * d0 / d1 };
        h.min(span).max(c.min_step.max(1e-12))
    }
}

fn hermite<B: Backend>(
    y0: &Tensor<B, 2>,
    f0: &Tensor<B, 2>,
    y1: &Tensor<B, 2>,
    f1: &Tensor<B, 2>,
    h: f64,
    theta: f64,
) -> Tensor<B, 2> {
    let (t2, t3) = (theta * theta, theta * theta * theta);
    y0.clone().mul_scalar(2.0 * t3 - 3.0 * t2 + 1.0)
        + f0.clone().mul_scalar(h * (t3 - 2.0 * t2 + theta))
        + y1.clone().mul_scalar(-2.0 * t3 + 3.0 * t2)
        + f1.clone().mul_scalar(h * (t3 - t2))
}

impl<B: Backend> Integrator<B> for Tsit5 {
    fn integrate(&self, field: &dyn VectorField<B>, y0: Tensor<B, 2>, times: &[f64]) -> Result<Tensor<B, 3>> {
        check_times(times)?;
        self.controller.validate()?;
        let tab = Tableau::tsit5();
        let err_w = tab.b_err.clone().expect("tsit5 has error weights");
        let c = &self.controller;
        let (t_end, mut t) = (times[times.len() - 1], times[0]);
        let mut y = y0;
        let mut k1 = field.eval(t, y.clone());
        let mut out = vec![y.clone()];
        if times.len() == 1 {
            return Ok(Tensor::stack(out, 1));
        }
        let mut h = self.first_step(&y, &k1, t_end - t);
        let mut next = 1;
        let mut steps = 0;
        while next < times.len() {
            if steps >= self.max_steps {
                return Err(Error::MaxStepsReached { t, steps });
            }
            steps += 1;
            let target = times[next];
            let mut h_try = h.min(t_end - t);
            let mut clipped = false;
            if self.interpolation == Interpolation::StepToOutputs && t + h_try >= target - 1e-12 * target.abs().max(1.0)
            {
                h_try = target - t;
                clipped = true;
            }
            let k = stages(&tab, field, t, &y, h_try, Some(k1.clone()));
            let y_new = y.clone() + combine(&tab.b, &k, h_try).expect("non-zero weights");
            let err = combine(&err_w, &k, h_try).expect("non-zero error weights");
            let norm = c.norm(err, &y, &y_new);
            if let Some(retry) = c.retry(norm, tab.order, t, h_try)? {
                h = retry;
                continue;
            }
            let k_new = k.last().expect("seven stages").clone();
            let t_new = if clipped { target } else { t + h_try };
            match self.interpolation {
                Interpolation::StepToOutputs => {
                    if clipped {
                        out.push(y_new.clone());
                        next += 1;
                    }
                }
                Interpolation::CubicHermite => {
                    while next < times.len() && times[next] <= t_new + 1e-12 * t_new.abs().max(1.0) {
                        let theta = ((times[next] - t) / h_try).clamp(0.0, 1.0);
                        out.push(hermite(&y, &k1, &y_new, &k_new, h_try, theta));
                        next += 1;
                    }
                }
            }
            // grow from the attempted step, not the clipped one, so outputs do not throttle the solver
            h = h.max(h_try) * c.factor(norm, tab.order);
            t = t_new;
            y = y_new;
            k1 = k_new;
        }
        Ok(Tensor::stack(out, 1))
    }

    fn order(&self) -> usize {
        5
    }

    fn as_any(&self) -> Option<&dyn core::any::Any> {
        Some(self)
    }
}
