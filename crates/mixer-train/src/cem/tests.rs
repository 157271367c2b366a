use burn::tensor::{Tensor, TensorData};
use mixer_core::Seeds;
use mixer_core::host::{tensor2, to_vec};
use mixer_data::{ActionBound, ControlSystem};

use super::*;
use crate::tests::TestBackend as B;

/// Scalar linear system `x' = A x + B u` with reward `-(Q x^2 + R u^2)` per step.
const A: f64 = 1.0;
const BU: f64 = 0.5;
const Q: f64 = 1.0;
const R: f64 = 0.5;

fn linear_quadratic(x: Tensor<B, 2>, u: Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 1>) {
    let p = x.dims()[0];
    let reward = (x.clone() * x.clone() * Q + u.clone() * u.clone() * R).neg().reshape([p]);
    (x * A + u * BU, reward)
}

/// The optimal first action of the finite-horizon problem (backward Riccati recursion, no
/// terminal cost): `u_0 = -K_0 x_0`.
fn lqr_first_action(x0: f64, horizon: usize) -> f64 {
    let mut p = 0.0; // value x^2 coefficient after the last step
    let mut gain = 0.0;
    for _ in 0..horizon {
        gain = A * BU * p / (R + BU * BU * p);
        p = Q + A * A * p - (A * BU * p).powi(2) / (R + BU * BU * p);
    }
    -gain * x0
}

fn settings(horizon: usize, particles: usize, elites: usize, iterations: usize) -> CemSettings {
    CemSettings { horizon, particles, elites, iterations, alpha: 0.0, ..CemSettings::default() }
}

fn error_field(s: CemSettings) -> String {
    match s.check() {
        Err(TrainError::Core(mixer_core::Error::InvalidConfig { field, .. })) => field,
        other => panic!("expected an invalid config, got {other:?}"),
    }
}

const WIDE: [ActionBound; 1] = [ActionBound { low: -4.0, high: 4.0 }];

#[test]
fn defaults_follow_pets() {
    let s = CemSettings::default();
    assert_eq!((s.horizon, s.particles, s.elites, s.iterations), (20, 500, 50, 5));
    assert_eq!((s.initial_std, s.alpha), (0.5, 0.1));
    let parsed: CemSettings = serde_json::from_str(r#"{ "horizon": 5 }"#).unwrap();
    assert_eq!(parsed, CemSettings { horizon: 5, ..s });
    assert!(serde_json::from_str::<CemSettings>(r#"{ "horizons": 5 }"#).is_err());
}

#[test]
fn bad_settings_are_refused_naming_the_field() {
    let ok = CemSettings::default();
    assert_eq!(error_field(CemSettings { horizon: 0, ..ok.clone() }), "horizon");
    assert_eq!(error_field(CemSettings { particles: 0, ..ok.clone() }), "particles");
    assert_eq!(error_field(CemSettings { elites: 0, ..ok.clone() }), "elites");
    assert_eq!(error_field(CemSettings { elites: 501, ..ok.clone() }), "elites");
    assert_eq!(error_field(CemSettings { iterations: 0, ..ok.clone() }), "iterations");
    assert_eq!(error_field(CemSettings { initial_std: 0.0, ..ok.clone() }), "initial_std");
    assert_eq!(error_field(CemSettings { alpha: 1.0, ..ok.clone() }), "alpha");
    assert_eq!(error_field(CemSettings { alpha: -0.1, ..ok.clone() }), "alpha");
    assert!(ok.check().is_ok());
}

#[test]
fn bad_problems_are_refused() {
    let mut cem = settings(3, 10, 2, 1).check().unwrap();
    let mut rng = Seeds::new(0).stream("cem");
    let dev = Default::default();
    let empty = [ActionBound { low: 1.0, high: 1.0 }];
    assert!(cem.plan::<B>(&[1.0], linear_quadratic, &empty, &mut rng, &dev).is_err());
    assert!(cem.plan::<B>(&[1.0], linear_quadratic, &[], &mut rng, &dev).is_err());
    assert!(cem.plan::<B>(&[f64::NAN], linear_quadratic, &WIDE, &mut rng, &dev).is_err());
    let wrong_reward = |x: Tensor<B, 2>, u: Tensor<B, 2>| {
        let p = u.dims()[0];
        (x, u.reshape([p]).repeat_dim(0, 2))
    };
    let e = cem.plan::<B>(&[1.0], wrong_reward, &WIDE, &mut rng, &dev).unwrap_err();
    assert!(e.to_string().contains("model output"), "{e}");
}

#[test]
fn cem_finds_the_lqr_first_action() {
    let (x0, horizon) = (1.5, 6);
    let optimal = lqr_first_action(x0, horizon);
    assert!((optimal + 1.5).abs() < 0.1, "the test problem itself: {optimal}");
    let mut cem = settings(horizon, 400, 40, 8).check().unwrap();
    let mut rng = Seeds::new(11).stream("cem");
    let u = cem.plan::<B>(&[x0], linear_quadratic, &WIDE, &mut rng, &Default::default()).unwrap();
    assert!((u[0] - optimal).abs() < 0.02, "CEM {} vs LQR {optimal}", u[0]); // measured 0.004
}

#[test]
fn actions_respect_the_bounds_when_they_bind() {
    // unconstrained, the first action would be about -10; the bound stops it at -2
    let tight = [ActionBound { low: -2.0, high: 1.0 }];
    let mut cem = settings(5, 200, 20, 4).check().unwrap();
    let mut rng = Seeds::new(5).stream("cem");
    let u = cem.plan::<B>(&[10.0], linear_quadratic, &tight, &mut rng, &Default::default()).unwrap();
    assert!((-2.0..=1.0).contains(&u[0]), "{u:?}");
    assert!(u[0] < -1.9, "the bound binds: {u:?}");
}

#[test]
fn same_seed_same_action_and_warm_start_shifts_the_plan() {
    let s = settings(4, 50, 5, 2);
    let dev = Default::default();
    let run = || {
        let mut cem = s.check().unwrap();
        cem.plan::<B>(&[1.0], linear_quadratic, &WIDE, &mut Seeds::new(2).stream("cem"), &dev).unwrap()
    };
    assert_eq!(run(), run());
    assert_eq!(shift_one_step(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2), vec![3.0, 4.0, 5.0, 6.0, 0.0, 0.0]);
    let mut cem = s.check().unwrap();
    cem.plan::<B>(&[1.0], linear_quadratic, &WIDE, &mut Seeds::new(2).stream("cem"), &dev).unwrap();
    let kept = cem.previous.clone().unwrap();
    assert_eq!(kept.len(), 4);
    let start = cem.initial_sampler::<B>(1, &dev);
    assert_eq!(to_vec(start.mean), shift_one_step(&kept, 1));
    cem.reset();
    assert_eq!(to_vec(cem.initial_sampler::<B>(1, &dev).mean), vec![0.0; 4]);
}

/// The true pendulum as a batched tensor model, through host conversion.
fn pendulum_model<'a>(
    sys: &'a ControlSystem,
    params: &'a [f64],
) -> impl FnMut(Tensor<B, 2>, Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 1>) + 'a {
    move |x, u| {
        let [p, d] = x.dims();
        let step = sys.step(params, &to_vec(x), &to_vec(u)).expect("pendulum step");
        let reward = Tensor::from_data(TensorData::new(step.reward, [p]), &Default::default());
        (tensor2(&step.next, [p, d], &Default::default()), reward)
    }
}

#[test]
fn cem_with_the_true_pendulum_beats_doing_nothing() {
    // the low-gravity task: CEM with a short horizon swings it up within one 100-step episode
    // (the reference task needs longer pumping than a quick test affords)
    let sys = ControlSystem::builtin("pendulum-swingup").unwrap();
    let task = sys.spec().tasks.iter().position(|t| t.name == "low-gravity").unwrap();
    let params = sys.task_params(task).unwrap();
    let bounds = sys.spec().action_bounds.clone();
    let seeds = Seeds::new(4);
    let idle = sys.episode_return(&params, &mut seeds.stream("initial"), |_| vec![0.0]).unwrap();
    let mut cem = CemSettings { horizon: 25, particles: 100, elites: 10, iterations: 4, ..CemSettings::default() }
        .check()
        .unwrap();
    let (mut plan_rng, mut model, mut highest) = (seeds.stream("cem"), pendulum_model(&sys, &params), -1.0_f64);
    let planned = sys
        .episode_return(&params, &mut seeds.stream("initial"), |x| {
            highest = highest.max(x[0].cos());
            cem.plan::<B>(x, &mut model, &bounds, &mut plan_rng, &Default::default()).unwrap()
        })
        .unwrap();
    // measured: idle -100.0 (hanging down throughout), CEM -29.9, upright (cos 1.0) at the top
    assert!(planned > idle + 50.0, "CEM {planned} vs no action {idle}");
    assert!(highest > 0.99, "the pendulum reaches upright: cos theta = {highest}");
}
