//! Numerical checks of the integrators: convergence orders, tolerance, gradients, stiff solves,
//! agreement between the differentiable and the reference solvers.

use burn::backend::{Autodiff, NdArray};
use burn::module::{AutodiffModule, Module};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Tensor, TensorData, activation::tanh, backend::Backend};
use mixer_core::{Error, FnField, Integrator, VectorField};
use mixer_ode::{Euler, FixedTsit5, FnSystem, ReferenceMethod, ReferenceSolver, Rk4, Tsit5};

type Bf = NdArray<f64>;
type AB = Autodiff<Bf>;

/// `x' = y, y' = -x - 0.1 y` (a damped oscillator, linear, with a known solution via its matrix).
fn linear<B: Backend>() -> impl VectorField<B> {
    FnField::new(2, |_t, x: Tensor<B, 2>| {
        let a = x.clone().slice([0..x.dims()[0], 0..1]);
        let b = x.clone().slice([0..x.dims()[0], 1..2]);
        Tensor::cat(vec![b.clone(), -a - b.mul_scalar(0.1)], 1)
    })
}

/// Exact solution of [`linear`] from (1, 0): eigenvalues -0.05 ± i w.
fn linear_exact(t: f64) -> [f64; 2] {
    let w = (1.0f64 - 0.0025).sqrt();
    let e = (-0.05 * t).exp();
    let x = e * ((w * t).cos() + 0.05 / w * (w * t).sin());
    let v = e * (-(1.0 / w) * (w * t).sin());
    [x, v]
}

fn end_error(integrator: &dyn Integrator<Bf>, t1: f64) -> f64 {
    let device = Default::default();
    let y0 = Tensor::<Bf, 2>::from_data(TensorData::new(vec![1.0, 0.0], [1, 2]), &device);
    let y = integrator.integrate(&linear::<Bf>(), y0, &[0.0, t1]).unwrap();
    let v: Vec<f64> = y.slice([0..1, 1..2, 0..2]).into_data().to_vec().unwrap();
    let ex = linear_exact(t1);
    ((v[0] - ex[0]).powi(2) + (v[1] - ex[1]).powi(2)).sqrt()
}

/// Slope of log(error) against log(step) by least squares.
fn fitted_order(steps: &[usize], errors: &[f64]) -> f64 {
    let xs: Vec<f64> = steps.iter().map(|&n| (1.0 / n as f64).ln()).collect();
    let ys: Vec<f64> = errors.iter().map(|e| e.ln()).collect();
    let (mx, my) = (xs.iter().sum::<f64>() / xs.len() as f64, ys.iter().sum::<f64>() / ys.len() as f64);
    let num: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let den: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    num / den
}

#[test]
fn observed_orders_match_the_methods() {
    let steps = [8, 16, 32, 64];
    let fine = [128, 256, 512, 1024];
    let euler: Vec<f64> = fine.iter().map(|&n| end_error(&Euler { substeps: n }, 4.0)).collect();
    let rk4: Vec<f64> = steps.iter().map(|&n| end_error(&Rk4 { substeps: n }, 4.0)).collect();
    let tsit: Vec<f64> = [16, 32, 64, 128].iter().map(|&n| end_error(&FixedTsit5 { substeps: n }, 4.0)).collect();
    let (oe, or, ot) =
        (fitted_order(&fine, &euler), fitted_order(&steps, &rk4), fitted_order(&[16, 32, 64, 128], &tsit));
    assert!((oe - 1.0).abs() < 0.1, "Euler order {oe}");
    assert!((or - 4.0).abs() < 0.2, "RK4 order {or}");
    assert!((ot - 5.0).abs() < 0.35, "Tsit5 order {ot} from errors {tsit:?}");
}

#[test]
fn adaptive_tsit5_meets_its_tolerance() {
    for rtol in [1e-4, 1e-6, 1e-8] {
        let err = end_error(&Tsit5::new(rtol, rtol * 1e-2), 10.0);
        assert!(err < 20.0 * rtol, "rtol {rtol}: error {err}");
    }
    // Hermite outputs on a dense grid stay close too.
    let mut hermite = Tsit5::new(1e-8, 1e-10);
    hermite.interpolation = mixer_ode::Interpolation::CubicHermite;
    let device = Default::default();
    let times: Vec<f64> = (0..21).map(|i| i as f64 * 0.5).collect();
    let y0 = Tensor::<Bf, 2>::from_data(TensorData::new(vec![1.0, 0.0], [1, 2]), &device);
    let y: Vec<f64> = hermite.integrate(&linear::<Bf>(), y0, &times).unwrap().into_data().to_vec().unwrap();
    for (k, t) in times.iter().enumerate() {
        let ex = linear_exact(*t);
        assert!((y[2 * k] - ex[0]).abs() < 1e-5, "t = {t}");
    }
}

#[test]
fn step_bound_and_blow_up_are_errors() {
    let device = Default::default();
    let y0 = Tensor::<Bf, 2>::from_data(TensorData::new(vec![1.0, 0.0], [1, 2]), &device);
    let mut few = Tsit5::new(1e-10, 1e-12);
    few.max_steps = 5;
    assert!(matches!(
        few.integrate(&linear::<Bf>(), y0.clone(), &[0.0, 10.0]),
        Err(Error::MaxStepsReached { steps: 5, .. })
    ));
    // x' = x^2 from 1 blows up at t = 1
    let blow = FnField::new(1, |_t, x: Tensor<Bf, 2>| x.clone() * x);
    let one = Tensor::<Bf, 2>::ones([1, 1], &device);
    let r = Rk4 { substeps: 4 }.integrate(&blow, one.clone(), &[0.0, 0.5, 1.0, 1.5, 2.0]);
    assert!(matches!(r, Err(Error::NonFiniteState { .. })), "{r:?}");
    let r = Tsit5::new(1e-6, 1e-8).integrate(&blow, one, &[0.0, 2.0]);
    assert!(r.is_err());
    assert!(Rk4 { substeps: 1 }.integrate(&linear::<Bf>(), y0, &[0.0, 1.0, 1.0]).is_err());
}

#[derive(Module, Debug)]
struct Mlp<B: Backend> {
    l1: Linear<B>,
    l2: Linear<B>,
}

impl<B: Backend> VectorField<B> for Mlp<B> {
    fn dim(&self) -> usize {
        2
    }
    fn eval(&self, _t: f64, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.l2.forward(tanh(self.l1.forward(x)))
    }
}

fn rollout_loss<B: Backend>(mlp: &Mlp<B>, y0: Tensor<B, 2>, integ: &dyn Integrator<B>) -> Tensor<B, 1> {
    integ.integrate(mlp, y0, &[0.0, 0.5, 1.0]).unwrap().square().sum()
}

#[test]
fn rollout_gradients_match_finite_differences() {
    let device = Default::default();
    <AB as Backend>::seed(&device, 3);
    let mlp = Mlp::<AB> { l1: LinearConfig::new(2, 8).init(&device), l2: LinearConfig::new(8, 2).init(&device) };
    let y0v = vec![0.3, -0.7, 1.1, 0.2];
    for integ in [&Rk4 { substeps: 3 } as &dyn Integrator<AB>, &Tsit5::new(1e-9, 1e-11)] {
        let y0 = Tensor::<AB, 2>::from_data(TensorData::new(y0v.clone(), [2, 2]), &device).require_grad();
        let loss = rollout_loss(&mlp, y0.clone(), integ);
        let grads = loss.backward();
        let gy0: Vec<f64> = y0.grad(&grads).unwrap().into_data().to_vec().unwrap();
        let gw: Vec<f64> = mlp.l1.weight.grad(&grads).unwrap().into_data().to_vec().unwrap();
        let inner: Mlp<Bf> = AutodiffModule::<AB>::valid(&mlp);
        let eval = |y: Vec<f64>, m: &Mlp<Bf>| -> f64 {
            let integ_inner: Box<dyn Integrator<Bf>> =
                if integ.order() == 4 { Box::new(Rk4 { substeps: 3 }) } else { Box::new(Tsit5::new(1e-9, 1e-11)) };
            rollout_loss(m, Tensor::from_data(TensorData::new(y, [2, 2]), &device), integ_inner.as_ref()).into_scalar()
        };
        let h = 1e-6;
        for i in 0..4 {
            let (mut p, mut m) = (y0v.clone(), y0v.clone());
            p[i] += h;
            m[i] -= h;
            let fd = (eval(p, &inner) - eval(m, &inner)) / (2.0 * h);
            assert!((fd - gy0[i]).abs() < 1e-5 * (1.0 + fd.abs()), "dL/dy0[{i}]: fd {fd} vs {}", gy0[i]);
        }
        let w: Vec<f64> = inner.l1.weight.val().into_data().to_vec().unwrap();
        for i in [0, 5, 11] {
            let shifted = |d: f64| {
                let mut v = w.clone();
                v[i] += d;
                let mut m = inner.clone();
                m.l1.weight = m.l1.weight.map(|_| Tensor::from_data(TensorData::new(v.clone(), [2, 8]), &device));
                eval(y0v.clone(), &m)
            };
            let fd = (shifted(h) - shifted(-h)) / (2.0 * h);
            assert!((fd - gw[i]).abs() < 1e-5 * (1.0 + fd.abs()), "dL/dW[{i}]: fd {fd} vs {}", gw[i]);
        }
    }
}

#[test]
fn bdf_solves_robertson_conserving_mass() {
    let robertson = FnSystem::new(3, |_t, x: &[f64], dx: &mut [f64]| {
        dx[0] = -0.04 * x[0] + 1e4 * x[1] * x[2];
        dx[1] = 0.04 * x[0] - 1e4 * x[1] * x[2] - 3e7 * x[1] * x[1];
        dx[2] = 3e7 * x[1] * x[1];
    });
    let times = [0.0, 0.4, 4.0, 40.0, 400.0, 4000.0];
    let sol =
        ReferenceSolver::new(ReferenceMethod::Bdf, 1e-8, 1e-10).solve(&robertson, &[1.0, 0.0, 0.0], &times).unwrap();
    for k in 0..times.len() {
        let mass: f64 = sol[3 * k..3 * k + 3].iter().sum();
        assert!((mass - 1.0).abs() < 1e-6, "t = {}: mass {mass}", times[k]);
    }
    // known value y1(40) ≈ 0.7158 (Hairer & Wanner)
    assert!((sol[3 * 3] - 0.7158).abs() < 1e-3, "y1(40) = {}", sol[9]);
    let mut capped = ReferenceSolver::new(ReferenceMethod::Tsit45, 1e-8, 1e-10);
    capped.max_steps = 50;
    assert!(capped.solve(&robertson, &[1.0, 0.0, 0.0], &times).is_err());
}

#[test]
fn reference_methods_agree_with_the_exact_solution() {
    let sys = FnSystem::new(2, |_t, x: &[f64], dx: &mut [f64]| {
        dx[0] = x[1];
        dx[1] = -x[0] - 0.1 * x[1];
    });
    let times: Vec<f64> = (0..11).map(|i| i as f64).collect();
    for method in [ReferenceMethod::Tsit45, ReferenceMethod::Bdf, ReferenceMethod::Esdirk34] {
        let sol = ReferenceSolver::new(method, 1e-10, 1e-12).solve(&sys, &[1.0, 0.0], &times).unwrap();
        for (k, t) in times.iter().enumerate() {
            let ex = linear_exact(*t);
            assert!((sol[2 * k] - ex[0]).abs() < 1e-6, "{method:?} at t = {t}: {} vs {}", sol[2 * k], ex[0]);
        }
    }
}

#[test]
fn burn_tsit5_agrees_with_diffsol_on_lotka_volterra() {
    let (a, b, d, g) = (0.5, 0.75, 1.0, 0.5);
    let sys = FnSystem::new(2, move |_t, x: &[f64], dx: &mut [f64]| {
        dx[0] = a * x[0] - b * x[0] * x[1];
        dx[1] = d * x[0] * x[1] - g * x[1];
    });
    let times: Vec<f64> = (0..20).map(|i| i as f64 * 0.5).collect();
    let reference =
        ReferenceSolver::new(ReferenceMethod::Tsit45, 1e-10, 1e-12).solve(&sys, &[1.2, 1.7], &times).unwrap();
    let field = FnField::new(2, move |_t, x: Tensor<Bf, 2>| {
        let n = x.dims()[0];
        let (u, v) = (x.clone().slice([0..n, 0..1]), x.slice([0..n, 1..2]));
        let uv = u.clone() * v.clone();
        Tensor::cat(vec![u.mul_scalar(a) - uv.clone().mul_scalar(b), uv.mul_scalar(d) - v.mul_scalar(g)], 1)
    });
    let device = Default::default();
    let y0 = Tensor::<Bf, 2>::from_data(TensorData::new(vec![1.2, 1.7], [1, 2]), &device);
    let ours: Vec<f64> =
        Tsit5::new(1e-8, 1e-10).integrate(&field, y0.clone(), &times).unwrap().into_data().to_vec().unwrap();
    let max_diff = ours.iter().zip(&reference).map(|(p, q)| (p - q).abs()).fold(0.0, f64::max);
    assert!(max_diff < 1e-6, "max difference {max_diff}");
    // and through the Integrator trait of the reference solver
    let via_trait: Vec<f64> = ReferenceSolver::new(ReferenceMethod::Tsit45, 1e-10, 1e-12)
        .integrate(&field, y0, &times)
        .unwrap()
        .into_data()
        .to_vec()
        .unwrap();
    let max_diff = via_trait.iter().zip(&reference).map(|(p, q)| (p - q).abs()).fold(0.0, f64::max);
    assert!(max_diff < 1e-12, "max difference {max_diff}");
}
