use mixer_core::Seeds;

use super::*;

fn pendulum() -> ControlSystem {
    ControlSystem::builtin("pendulum-swingup").unwrap()
}

/// The pendulum with a changed control interval and damping (reference values otherwise).
fn pendulum_with(dt: f64, damping: f64) -> (ControlSystem, Vec<f64>) {
    let mut spec = pendulum().spec().clone();
    spec.dt = dt;
    let p = spec.parameters.iter_mut().find(|p| p.name == "damping").unwrap();
    p.value = damping;
    let params = spec.reference_values();
    (ControlSystem::from_spec(spec).unwrap(), params)
}

/// Runs `steps` control steps of one row with action `u` held throughout.
fn run(sys: &ControlSystem, p: &[f64], x0: &[f64], u: &[f64], steps: usize) -> Vec<Vec<f64>> {
    let mut path = vec![x0.to_vec()];
    for _ in 0..steps {
        let next = sys.step(p, path.last().unwrap(), u).unwrap().next;
        path.push(next);
    }
    path
}

fn distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>().sqrt()
}

#[test]
fn rk4_converges_with_order_four_on_the_pendulum() {
    let (sys, p) = pendulum_with(1.0, 0.3);
    let (x0, u) = ([2.0, 0.5], [0.7]);
    let exact = sys.step_with(&p, &x0, &u, 4096).unwrap().next;
    let errors: Vec<f64> =
        [8, 16, 32, 64].iter().map(|&n| distance(&sys.step_with(&p, &x0, &u, n).unwrap().next, &exact)).collect();
    for w in errors.windows(2) {
        let order = (w[0] / w[1]).log2();
        assert!((order - 4.0).abs() < 0.25, "observed order {order}, errors {errors:?}");
    }
    assert!(errors[3] < 1e-6, "{errors:?}");
}

#[test]
fn frictionless_unforced_pendulum_conserves_energy() {
    let (sys, p) = pendulum_with(0.05, 0.0);
    let (m, l, g) = (p[0], p[1], p[2]);
    let energy = |x: &[f64]| 0.5 * m * l * l * x[1] * x[1] + m * g * l * x[0].cos();
    let path = run(&sys, &p, &[2.5, 0.0], &[0.0], 400);
    let e0 = energy(&path[0]);
    let drift = path.iter().map(|x| (energy(x) - e0).abs()).fold(0.0, f64::max);
    // measured 4.3e-6 of an energy scale m g l = 9.81 over 400 steps (RK4, h = 0.025)
    assert!(drift < 2e-5, "energy drift {drift}");
    // the pendulum really swings: theta crosses pi (the bottom) in 20 time units
    assert!(path.iter().any(|x| x[0] > std::f64::consts::PI));
}

#[test]
fn frictionless_unforced_cartpole_and_arm_conserve_energy() {
    let frictionless = |name: &str, zero: &str| {
        let mut spec = ControlSystem::builtin(name).unwrap().spec().clone();
        spec.parameters.iter_mut().find(|p| p.name == zero).unwrap().value = 0.0;
        let p = spec.reference_values();
        (ControlSystem::from_spec(spec).unwrap(), p)
    };
    let (cart, p) = frictionless("cartpole-swingup", "friction");
    let (mc, mp, l, g) = (p[0], p[1], p[2], p[3]);
    let e_cart = |s: &[f64]| {
        let (xd, th, thd) = (s[1], s[2], s[3]);
        0.5 * (mc + mp) * xd * xd + mp * l * th.cos() * xd * thd + 0.5 * mp * l * l * thd * thd + mp * g * l * th.cos()
    };
    let path = run(&cart, &p, &[0.0, 0.3, 2.0, 0.5], &[0.0], 200);
    let drift = path.iter().map(|s| (e_cart(s) - e_cart(&path[0])).abs()).fold(0.0, f64::max);
    assert!(drift < 1e-6, "cart-pole energy drift {drift}"); // measured 1.0e-7

    let (arm, p) = frictionless("two-link-reacher", "damping");
    let (m1, m2, l1, l2) = (p[0], p[1], p[2], p[3]);
    let e_arm = |s: &[f64]| {
        let c2 = s[1].cos();
        let m11 = (m1 + m2) * l1 * l1 + m2 * l2 * l2 + 2.0 * m2 * l1 * l2 * c2;
        let (m12, m22) = (m2 * l2 * l2 + m2 * l1 * l2 * c2, m2 * l2 * l2);
        0.5 * (m11 * s[2] * s[2] + 2.0 * m12 * s[2] * s[3] + m22 * s[3] * s[3])
    };
    let path = run(&arm, &p, &[0.2, 1.0, 1.5, -2.0], &[0.0, 0.0], 200);
    let drift = path.iter().map(|s| (e_arm(s) - e_arm(&path[0])).abs()).fold(0.0, f64::max);
    assert!(drift < 5e-6, "arm energy drift {drift}"); // measured 1.0e-6
    assert!((path[200][1] - path[0][1]).abs() > 0.1, "the elbow moves");
}

#[test]
fn actions_are_clipped_to_their_bounds() {
    let sys = pendulum();
    let p = sys.task_params(0).unwrap();
    let x = [3.0, 0.2, 3.0, 0.2, 3.0, 0.2];
    let wild = sys.step(&p, &x, &[100.0, -100.0, 1.5]).unwrap();
    let bounded = sys.step(&p, &x, &[2.0, -2.0, 1.5]).unwrap();
    assert_eq!(wild, bounded);
    assert_ne!(wild.next[0..2], wild.next[2..4]);
    // the reward's action cost sees the clipped action: 0.001 * 2^2
    let free = sys.reward(&x[..2], &[0.0], &p);
    assert!((wild.reward[0] - (free - 0.004)).abs() < 1e-12);
    let arm = ControlSystem::builtin("two-link-reacher").unwrap();
    let mut a = [5.0, -1.0, -7.0, 2.5];
    arm.clip_actions(&mut a);
    assert_eq!(a, [3.0, -1.0, -3.0, 2.5]);
}

#[test]
fn tasks_change_the_next_state() {
    for name in control_builtin_names() {
        let sys = ControlSystem::builtin(name).unwrap();
        let spec = sys.spec();
        let x: Vec<f64> = spec.initial.state.iter().map(|v| v + 0.5).collect();
        let u: Vec<f64> = spec.action_bounds.iter().map(|b| 0.6 * b.high).collect();
        let next: Vec<Vec<f64>> =
            (0..spec.tasks.len()).map(|t| sys.step(&sys.task_params(t).unwrap(), &x, &u).unwrap().next).collect();
        for i in 0..next.len() {
            for j in 0..i {
                let d = distance(&next[i], &next[j]);
                assert!(
                    d > 1e-3,
                    "{name}: tasks {} and {} give next states {d} apart",
                    spec.tasks[j].name,
                    spec.tasks[i].name
                );
            }
        }
    }
}

#[test]
fn every_builtin_loads_validates_and_steps() {
    assert_eq!(control_builtin_names(), ["cartpole-swingup", "pendulum-swingup", "two-link-reacher"]);
    for name in control_builtin_names() {
        let sys = ControlSystem::builtin(name).unwrap();
        let spec = sys.spec();
        assert_eq!(spec.name, name);
        assert!(spec.tasks.len() >= 5, "{name}");
        spec.validate().unwrap();
        let mut rng = Seeds::new(1).stream("control");
        let total =
            sys.episode_return(&sys.task_params(0).unwrap(), &mut rng, |_| vec![0.0; spec.num_actions()]).unwrap();
        assert!(total.is_finite(), "{name}");
    }
    assert!(matches!(ControlSystem::builtin("acrobot"), Err(DataError::UnknownSystem { .. })));
}

#[test]
fn pendulum_reward_and_dynamics_have_the_documented_values() {
    let sys = pendulum();
    let p = sys.task_params(0).unwrap();
    // upright, still, no torque: reward cos(0) = 1
    assert!((sys.reward(&[0.0, 0.0], &[0.0], &p) - 1.0).abs() < 1e-15);
    let mut dx = [0.0; 2];
    sys.rhs(&[std::f64::consts::FRAC_PI_2, 1.0], &[1.5], &p, &mut dx);
    // theta'' = (gain u - damping omega) / (m l^2) + (g / l) sin theta = 1.5 - 0.05 + 9.81
    assert_eq!(dx[0], 1.0);
    assert!((dx[1] - (1.5 - 0.05 + 9.81)).abs() < 1e-12);
    // the reversed actuator of task 3 flips the torque's effect
    let rev = sys.task_params(3).unwrap();
    sys.rhs(&[std::f64::consts::FRAC_PI_2, 1.0], &[1.5], &rev, &mut dx);
    assert!((dx[1] - (-1.5 - 0.05 + 9.81)).abs() < 1e-12);
}

#[test]
fn batched_step_equals_row_by_row_steps() {
    let sys = ControlSystem::builtin("cartpole-swingup").unwrap();
    let p = sys.task_params(1).unwrap();
    let x = [0.1, 0.2, 3.0, -0.4, -0.3, 0.0, 0.5, 1.0];
    let u = [4.0, -6.0];
    let both = sys.step(&p, &x, &u).unwrap();
    for r in 0..2 {
        let one = sys.step(&p, &x[4 * r..4 * r + 4], &u[r..r + 1]).unwrap();
        assert_eq!(one.next, both.next[4 * r..4 * r + 4]);
        assert_eq!(one.reward[0], both.reward[r]);
    }
}

#[test]
fn step_checks_buffer_lengths() {
    let sys = pendulum();
    let p = sys.task_params(0).unwrap();
    assert!(sys.step(&p, &[0.0, 0.0, 1.0], &[0.0]).is_err());
    assert!(sys.step(&p, &[0.0, 0.0], &[0.0, 1.0]).is_err());
    assert!(sys.step(&p[..2], &[0.0, 0.0], &[0.0]).is_err());
}

#[test]
fn initial_states_are_seeded_and_within_the_noise() {
    let sys = pendulum();
    let init = &sys.spec().initial;
    let mut rng = Seeds::new(3).stream("control");
    for _ in 0..100 {
        let x = sys.initial_state(&mut rng);
        for ((v, s), n) in x.iter().zip(&init.state).zip(&init.noise) {
            assert!((v - s).abs() <= *n);
        }
    }
    let a = sys.initial_state(&mut Seeds::new(3).stream("x"));
    let b = sys.initial_state(&mut Seeds::new(3).stream("x"));
    assert_eq!(a, b);
}

#[test]
fn unknown_names_in_rhs_or_reward_are_refused() {
    let spec = pendulum().spec().clone();
    let mut bad_rhs = spec.clone();
    bad_rhs.rhs[1] = "omega + speed".into();
    match ControlSystem::from_spec(bad_rhs) {
        Err(DataError::BadExpression { index, reason, .. }) => {
            assert_eq!(index, 1);
            assert!(reason.contains("unknown name `speed`") && reason.contains("actions: [u]"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let mut bad_reward = spec.clone();
    bad_reward.reward = "cos(theta) - t".into();
    assert!(matches!(ControlSystem::from_spec(bad_reward), Err(DataError::BadSpec { field, .. }) if field == "reward"));
}
