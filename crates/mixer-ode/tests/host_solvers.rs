//! The host solvers against the tensor solvers: same trajectories (f64 to rounding, f32 to
//! single precision) and the same errors.

use burn::backend::{Flex, NdArray};
use burn::tensor::{Tensor, TensorData, backend::Backend};
use mixer_core::{Error, FnField, HostField, HostFloat, Integrator};
use mixer_ode::{Euler, FixedTsit5, HostSolver, Interpolation, Rk4, Tsit5};

type Bf = NdArray<f64>;

/// Per-row rates of the test field.
const RATES: [f64; 3] = [1.0, 0.5, 1.7];
/// Initial states, `[3, 2]`.
const Y0: [f64; 6] = [1.0, 0.0, 0.3, -0.8, -1.2, 0.4];

/// `rate_r * (x1, -x0 - 0.1 x1 + 0.3 sin(t) x0^2)` on host buffers.
struct Forced<T> {
    rates: Vec<T>,
}

impl<T: HostFloat> HostField<T> for Forced<T> {
    fn dim(&self) -> usize {
        2
    }

    fn rows(&self) -> usize {
        self.rates.len()
    }

    fn eval(&mut self, t: f64, x: &[T], out: &mut [T]) {
        let s = T::from_f64(0.3 * t.sin());
        for ((o, xr), &r) in out.chunks_exact_mut(2).zip(x.chunks_exact(2)).zip(&self.rates) {
            o[0] = xr[1] * r;
            o[1] = (-xr[0] - xr[1] * T::from_f64(0.1) + s * xr[0] * xr[0]) * r;
        }
    }
}

/// The same field on tensors.
fn tensor_run<B: Backend>(integrator: &dyn Integrator<B>, times: &[f64]) -> Result<Vec<f64>, Error> {
    let device = Default::default();
    let rates = Tensor::<B, 2>::from_data(TensorData::new(RATES.to_vec(), [3, 1]), &device);
    let field = FnField::new(2, move |t: f64, x: Tensor<B, 2>| {
        let n = x.dims()[0];
        let a = x.clone().slice([0..n, 0..1]);
        let b = x.slice([0..n, 1..2]);
        let db = -a.clone() - b.clone().mul_scalar(0.1) + a.clone() * a * (0.3 * t.sin());
        Tensor::cat(vec![b, db], 1) * rates.clone()
    });
    let y0 = Tensor::<B, 2>::from_data(TensorData::new(Y0.to_vec(), [3, 2]), &device);
    let y = integrator.integrate(&field, y0, times)?;
    Ok(y.into_data().convert::<f64>().to_vec::<f64>().unwrap())
}

fn host_run<T: HostFloat>(solver: &HostSolver, times: &[f64]) -> Result<Vec<f64>, Error> {
    let mut field = Forced { rates: RATES.iter().map(|&r| T::from_f64(r)).collect() };
    let y0: Vec<T> = Y0.iter().map(|&v| T::from_f64(v)).collect();
    Ok(solver.integrate(&mut field, &y0, times)?.into_iter().map(T::to_f64).collect())
}

fn max_rel_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs() / y.abs().max(1.0)).fold(0.0, f64::max)
}

fn methods() -> Vec<Box<dyn Integrator<Bf>>> {
    let mut hermite = Tsit5::new(1e-7, 1e-9);
    hermite.interpolation = Interpolation::CubicHermite;
    let mut fixed_first = Tsit5::new(1e-5, 1e-7);
    fixed_first.initial_step = Some(0.05);
    vec![
        Box::new(Euler { substeps: 3 }),
        Box::new(Rk4 { substeps: 2 }),
        Box::new(FixedTsit5 { substeps: 2 }),
        Box::new(Tsit5::new(1e-6, 1e-8)),
        Box::new(hermite),
        Box::new(fixed_first),
    ]
}

#[test]
fn host_solvers_follow_the_tensor_solvers_in_f64() {
    let times = [0.0, 0.3, 0.7, 1.5, 2.0, 3.1];
    for integrator in methods() {
        let host = HostSolver::from_integrator(integrator.as_ref()).expect("a method of mixer-ode");
        assert_eq!(host.order(), integrator.order());
        let want = tensor_run::<Bf>(integrator.as_ref(), &times).unwrap();
        let got = host_run::<f64>(&host, &times).unwrap();
        let d = max_rel_diff(&got, &want);
        assert!(d <= 1e-12, "{host:?}: host and tensor differ by {d:e}");
    }
}

#[test]
fn host_solvers_follow_the_tensor_solvers_in_f32() {
    let times = [0.0, 0.3, 0.7, 1.5, 2.0, 3.1];
    for integrator in [Box::new(Rk4 { substeps: 2 }) as Box<dyn Integrator<Flex>>, Box::new(Tsit5::new(1e-4, 1e-6))] {
        let host = HostSolver::from_integrator(integrator.as_ref()).unwrap();
        let want = tensor_run::<Flex>(integrator.as_ref(), &times).unwrap();
        let got = host_run::<f32>(&host, &times).unwrap();
        let d = max_rel_diff(&got, &want);
        assert!(d <= 1e-5, "{host:?}: host and tensor differ by {d:e} in f32");
    }
}

/// `x' = x^2` from 1 on one row: blows up at t = 1.
struct BlowUp;

impl HostField<f64> for BlowUp {
    fn dim(&self) -> usize {
        1
    }

    fn rows(&self) -> usize {
        1
    }

    fn eval(&mut self, _t: f64, x: &[f64], out: &mut [f64]) {
        out[0] = x[0] * x[0];
    }
}

#[test]
fn host_solvers_fail_where_the_tensor_solvers_fail() {
    let mut few = Tsit5::new(1e-10, 1e-12);
    few.max_steps = 5;
    let times = [0.0, 10.0];
    let want = tensor_run::<Bf>(&few, &times).unwrap_err();
    let got = host_run::<f64>(&HostSolver::Tsit5(few), &times).unwrap_err();
    match (got, want) {
        (Error::MaxStepsReached { t: a, steps: 5 }, Error::MaxStepsReached { t: b, steps: 5 }) => {
            assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "{a} vs {b}")
        }
        other => panic!("expected max-steps errors, got {other:?}"),
    }
    let blow_times = [0.0, 0.5, 1.0, 1.5, 2.0];
    let r = HostSolver::Rk4(Rk4 { substeps: 4 }).integrate(&mut BlowUp, &[1.0], &blow_times);
    assert!(matches!(r, Err(Error::NonFiniteState { .. })), "{r:?}");
    assert!(HostSolver::Tsit5(Tsit5::new(1e-6, 1e-8)).integrate(&mut BlowUp, &[1.0], &[0.0, 2.0]).is_err());
    // bad inputs are errors, not panics
    let rk4 = HostSolver::Rk4(Rk4 { substeps: 1 });
    assert!(rk4.integrate(&mut BlowUp, &[1.0], &[0.0, 1.0, 1.0]).is_err());
    assert!(rk4.integrate(&mut BlowUp, &[1.0, 2.0], &[0.0, 1.0]).is_err());
    assert!(HostSolver::Rk4(Rk4 { substeps: 0 }).integrate(&mut BlowUp, &[1.0], &[0.0, 1.0]).is_err());
}
