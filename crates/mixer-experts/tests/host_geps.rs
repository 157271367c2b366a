//! Frozen GEPS experts on the host against the tensor expert: one evaluation, and rollouts
//! with mixer-ode's host and tensor solvers (with and without MIP, context shift, time rates).

use burn::backend::NdArray;
use burn::module::Param;
use burn::tensor::{Tensor, backend::Backend};
use mixer_core::host::{tensor2, to_vec};
use mixer_core::{Expert, FnField, Integrator};
use mixer_experts::{AnyExpert, ExpertConfig, FrozenExpert, GepsConfig};
use mixer_ode::{HostSolver, Interpolation, Rk4, Tsit5};

type B = NdArray<f64>;

const ROWS: usize = 5;

/// A GEPS expert (state 2, context 3, width 16, depth 3), with a shift of 0.25 when asked.
fn expert(mip: bool, shift: bool) -> AnyExpert<B> {
    let device = Default::default();
    let cfg = GepsConfig { dim: 2, context: 3, width: 16, depth: 3, context_shift: shift, mip };
    let mut e = cfg.init::<B>(&device).unwrap();
    if shift {
        e.context_shift = Some(Param::from_tensor(Tensor::from_data([0.25], &device)));
    }
    AnyExpert::Geps(e)
}

fn contexts() -> Vec<f64> {
    (0..ROWS * 3).map(|i| 0.6 * (i as f64 * 1.3).sin()).collect()
}

fn x0() -> Vec<f64> {
    (0..ROWS * 2).map(|i| 0.8 * (i as f64 * 0.7 + 0.3).cos()).collect()
}

fn max_rel_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs() / y.abs().max(1.0)).fold(0.0, f64::max)
}

#[test]
fn frozen_geps_field_equals_the_expert_forward() {
    let device = Default::default();
    for (mip, shift) in [(false, false), (false, true), (true, true)] {
        B::seed(&device, 7);
        let e = expert(mip, shift);
        let frozen: FrozenExpert<f64> = e.freeze().expect("GEPS has a host form");
        assert_eq!((frozen.state_dim(), frozen.context_dim()), (2, 3));
        let rate = [1.0, 0.5, 2.0, 1.5, 0.8];
        let want = to_vec(
            e.forward(tensor2(&x0(), [ROWS, 2], &device), tensor2(&contexts(), [ROWS, 3], &device))
                * tensor2::<B>(&rate, [ROWS, 1], &device),
        );
        let mut field = frozen.bind(&contexts(), Some(&rate)).unwrap();
        let mut got = vec![0.0; ROWS * 2];
        field.eval(0.0, &x0(), &mut got);
        // twice: scratch buffers must not leak between evaluations
        field.eval(0.0, &x0(), &mut got);
        let d = max_rel_diff(&got, &want);
        assert!(d <= 1e-13, "mip {mip}, shift {shift}: {d:e}");
    }
}

#[test]
fn host_rollouts_of_a_frozen_geps_expert_follow_the_tensor_rollouts() {
    let device = Default::default();
    let times = [0.0, 0.4, 0.9, 1.5, 2.0];
    let mut hermite = Tsit5::new(1e-7, 1e-9);
    hermite.interpolation = Interpolation::CubicHermite;
    let solvers: Vec<Box<dyn Integrator<B>>> = vec![
        Box::new(Rk4 { substeps: 1 }),
        Box::new(Rk4 { substeps: 3 }),
        Box::new(Tsit5::new(1e-8, 1e-10)),
        Box::new(hermite),
    ];
    for (mip, shift) in [(false, false), (false, true), (true, false), (true, true)] {
        for rate in [None, Some([1.0, 0.5, 2.0, 1.5, 0.8])] {
            B::seed(&device, 3);
            let e = expert(mip, shift);
            let frozen: FrozenExpert<f64> = e.freeze().unwrap();
            let ctx = tensor2::<B>(&contexts(), [ROWS, 3], &device);
            let rates = rate.map(|r| tensor2::<B>(&r, [ROWS, 1], &device));
            let tensor_field = FnField::new(2, |_t, x: Tensor<B, 2>| {
                let y = e.forward(x, ctx.clone());
                match &rates {
                    Some(r) => y * r.clone(),
                    None => y,
                }
            });
            for solver in &solvers {
                let host = HostSolver::from_integrator(solver.as_ref()).unwrap();
                let want = to_vec(solver.integrate(&tensor_field, tensor2(&x0(), [ROWS, 2], &device), &times).unwrap());
                let mut field = frozen.bind(&contexts(), rate.as_ref().map(|r| &r[..])).unwrap();
                let got = host.integrate(field.as_mut(), &x0(), &times).unwrap();
                let d = max_rel_diff(&got, &want);
                assert!(d <= 1e-10, "{host:?}, mip {mip}, shift {shift}, rate {rate:?}: {d:e}");
            }
        }
    }
}

#[test]
fn experts_without_a_host_form_say_so_and_bad_shapes_are_errors() {
    let device = Default::default();
    let coda = ExpertConfig::Coda { width: 8, depth: 2 }.init::<B>(2, 3, &device).unwrap();
    assert!(coda.freeze::<f64>().is_none());
    let ncf = ExpertConfig::Ncf { width: 8, depth: 2, intermediate: 4, branch_depth: 1, order: 0 }
        .init::<B>(2, 3, &device)
        .unwrap();
    assert!(ncf.freeze::<f32>().is_none());
    let frozen: FrozenExpert<f32> = expert(false, true).freeze().unwrap();
    assert!(frozen.bind(&[0.0; 4], None).is_err(), "contexts not a multiple of c");
    assert!(frozen.bind(&[0.0; 6], Some(&[1.0; 3])).is_err(), "one rate per row");
    assert_eq!(frozen.bind(&[0.0; 6], None).unwrap().rows(), 2);
}
