//! The spatial mixture-of-experts layer: its backward pass against finite differences at selected
//! and unselected positions, damping and routing-classification labels against hand values.
//! (A test binary of its own: burn-autodiff's graph bookkeeping is shared by the threads of one
//! process, and backward passes racing with the mixture tests' dropped their gradients.)

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use mixer_core::{Mode, Rng, Seeds, host};
use mixer_experts::{
    ErrorCriterion, SlotDims, SmoeSettings, bce_with_logits, best_damping_scale, best_experts, best_labels, combine,
    damping_scale, quantile, rc_labels, restart_plan, scale_gradient, select, selected_scores, slot_errors,
};
use mixer_routers::{SpatialRouting, host_tensor};

type TestBackend = burn::backend::NdArray<f64>;
type TestAutodiffBackend = burn::backend::Autodiff<TestBackend>;

#[test]
fn quantile_interpolates_like_numpy() {
    // numpy.quantile([4, 1, 3, 2], 0.3) = 1 + 0.9 * (2 - 1) = 1.9.
    assert!((quantile(&mut [4.0, 1.0, 3.0, 2.0], 0.3) - 1.9).abs() < 1e-15);
    assert_eq!(quantile(&mut [5.0], 0.7), 5.0);
    assert_eq!(quantile(&mut [3.0, 1.0, 2.0], 1.0), 3.0);
}

#[test]
fn damping_and_rc_labels_match_hand_values() {
    // One sample, k = 1, four locations, E = 3; errors 0.0, 0.01, 0.5, 0.002.
    let d = SlotDims { b: 1, k: 1, c: 1, hw: 4 };
    let err = [0.0, 0.01, 0.5, 0.002];
    // 0.3-quantile: position 0.9 between 0.0 and 0.002 -> 0.0018; damping limit 0.0028.
    assert_eq!(damping_scale(&err, d, 0.3, 0.0), vec![1.0, 0.0, 0.0, 1.0]);
    assert_eq!(damping_scale(&err, d, 0.3, 0.25), vec![1.0, 0.25, 0.25, 1.0]);
    // RC limit 0.0018 + 1e-5: locations 0 correct, 1, 2, 3 wrong.
    let labels = rc_labels(&err, &[0, 1, 2, 0], d, 3, 0.3);
    #[rustfmt::skip]
    let expected = [
        1.0, 0.5, 0.5, 0.0, // expert 0: picked at 0 (right) and 3 (wrong); 1 and 2 unpicked with one wrong pick
        0.0, 0.0, 0.5, 0.5, // expert 1
        0.0, 0.5, 0.0, 0.5, // expert 2
    ];
    assert_eq!(labels, expected);
}

#[test]
fn slot_errors_weigh_by_gate_or_selected_output() {
    // B = 1, k = 2, C = 2, one grid point.
    let d = SlotDims { b: 1, k: 2, c: 2, hw: 1 };
    let residual = [0.2, -0.4];
    assert_eq!(slot_errors(&residual, &[], &[], d), vec![0.30000000000000004, 0.30000000000000004]);
    let by_gate = slot_errors(&residual, &[2.0, -1.0], &[], d);
    assert!((by_gate[0] - 0.6).abs() < 1e-15 && (by_gate[1] - 0.3).abs() < 1e-15);
    let by_output = slot_errors(&residual, &[], &[1.0, 1.0, 0.5, -2.0], d);
    assert!((by_output[0] - 0.3).abs() < 1e-15 && (by_output[1] - 0.45).abs() < 1e-15);
}

#[test]
fn bce_with_logits_matches_hand_value() {
    let device = Default::default();
    let r = Tensor::<TestBackend, 4>::from_data(TensorData::new(vec![2.0, -1.0], [1, 2, 1, 1]), &device);
    let l = Tensor::<TestBackend, 4>::from_data(TensorData::new(vec![1.0, 0.25], [1, 2, 1, 1]), &device);
    let by_hand = |r: f64, l: f64| -(l * (1.0 / (1.0 + (-r).exp())).ln() + (1.0 - l) * (1.0 / (1.0 + r.exp())).ln());
    let expected = 0.5 * (by_hand(2.0, 1.0) + by_hand(-1.0, 0.25));
    assert!((host::to_vec(bce_with_logits(r, l))[0] - expected).abs() < 1e-12);
}

type Ad = TestAutodiffBackend;

/// A `[b, 1, 4, 5]` field uniform on `[0, 1)`, drawn from `rng`.
fn field<B: Backend>(rng: &mut Rng, b: usize, device: &B::Device) -> Tensor<B, 4> {
    use rand::Rng as _;
    let values: Vec<f64> = (0..b * 20).map(|_| rng.random::<f64>()).collect();
    host_tensor(&values, [b, 1, 4, 5], device)
}

/// A layer and a batch on a 4 x 5 grid with three experts; returns the gradients of the MSE
/// part with respect to the expert outputs by autodiff and the selected expert of each location.
fn expert_output_gradient(weighted: bool, damping: Option<f64>) -> (Vec<f64>, Vec<f64>, Vec<usize>, Vec<f64>) {
    let device = Default::default();
    let mut rng = Seeds::new(3).stream("smoe");
    let settings = SmoeSettings { weighted, damping_quantile: damping, rc_quantile: None, ..Default::default() };
    let layer = settings.init::<Ad>(1, 4, 5, &mut rng, &device).unwrap();
    let x = field::<Ad>(&mut rng, 2, &device);
    let target = field::<Ad>(&mut rng, 2, &device);
    let routing = layer.router().route(x.clone(), Mode::Train, &mut rng).unwrap();
    let outputs = layer.expert_outputs(x).detach().require_grad();
    let gate = selected_scores(&routing);
    let selected = select(outputs.clone(), &routing);
    let dims = SlotDims { b: 2, k: 1, c: 1, hw: 20 };
    let value = combine(selected.clone().detach(), gate.clone().detach(), weighted, true);
    let residual = host::to_vec(value - target.clone());
    let selected = match damping {
        Some(q) => {
            let gh = if weighted { host::to_vec(gate.clone().detach()) } else { vec![] };
            let scale = damping_scale(&slot_errors(&residual, &gh, &[], dims), dims, q, 0.0);
            scale_gradient(selected, host_tensor::<Ad, 5>(&scale, [2, 1, 1, 4, 5], &device))
        }
        None => selected,
    };
    let loss = (combine(selected, gate.clone(), weighted, false) - target).powi_scalar(2).mean();
    let grads = loss.backward();
    let g_out = host::to_vec(outputs.grad(&grads).unwrap());
    let g_scores = routing.scores.grad(&grads).map(host::to_vec).unwrap_or_default();
    (g_out, residual, routing.host_indices, g_scores)
}

#[test]
fn experts_get_gradient_only_where_selected_and_the_gate_gets_the_raw_error() {
    let (g_out, residual, chosen, _) = expert_output_gradient(false, None);
    let n = 2.0 * 20.0;
    for s in 0..2 {
        for e in 0..3 {
            for p in 0..20 {
                let g = g_out[(s * 3 + e) * 20 + p];
                // Finite differences of the loss in an expert output: 2 r / n where selected, 0 elsewhere.
                let expected = if chosen[s * 20 + p] == e { 2.0 * residual[s * 20 + p] / n } else { 0.0 };
                assert!((g - expected).abs() < 1e-12, "sample {s} expert {e} point {p}: {g} vs {expected}");
            }
        }
    }
}

#[test]
fn weighted_backward_matches_finite_differences_at_selected_and_unselected_positions() {
    // Loss of expert outputs o and latent scores L: mean((L_sel o_sel - t)^2).
    let device = Default::default();
    let mut rng = Seeds::new(5).stream("smoe");
    let settings = SmoeSettings { weighted: true, damping_quantile: None, rc_quantile: None, ..Default::default() };
    let layer = settings.init::<TestBackend>(1, 4, 5, &mut rng, &device).unwrap();
    let x = field::<TestBackend>(&mut rng, 1, &device);
    let t = field::<TestBackend>(&mut rng, 1, &device);
    let routing = layer.router().route(x.clone(), Mode::Eval, &mut rng).unwrap();
    let o0 = host::to_vec(layer.expert_outputs(x));
    let s0 = host::to_vec(routing.scores.clone());
    let loss_of = |o: &[f64], s: &[f64]| {
        let o = host_tensor::<TestBackend, 5>(o, [1, 3, 1, 4, 5], &device);
        let s = host_tensor::<TestBackend, 4>(s, [1, 3, 4, 5], &device);
        let r = SpatialRouting { scores: s, ..routing.clone() };
        let pred = combine(select(o, &r), selected_scores(&r), true, false);
        host::to_vec((pred - t.clone()).powi_scalar(2).mean())[0]
    };
    let (g_out, g_scores) = {
        let o = host_tensor::<Ad, 5>(&o0, [1, 3, 1, 4, 5], &device).require_grad();
        let s = host_tensor::<Ad, 4>(&s0, [1, 3, 4, 5], &device).require_grad();
        let idx = Tensor::<Ad, 4, burn::tensor::Int>::from_data(routing.indices.to_data(), &device);
        let r = SpatialRouting {
            k: 1,
            scores: s.clone(),
            indices: idx,
            host_indices: routing.host_indices.clone(),
            aux_losses: vec![],
        };
        let t = Tensor::<Ad, 4>::from_data(t.to_data(), &device);
        let loss = (combine(select(o.clone(), &r), selected_scores(&r), true, false) - t).powi_scalar(2).mean();
        let grads = loss.backward();
        (host::to_vec(o.grad(&grads).unwrap()), host::to_vec(s.grad(&grads).unwrap()))
    };
    let h = 1e-6;
    let mut checked = [0usize; 2];
    for i in 0..60 {
        let selected = routing.host_indices[i % 20] == i / 20;
        checked[selected as usize] += 1;
        let (mut plus, mut minus) = (o0.clone(), o0.clone());
        plus[i] += h;
        minus[i] -= h;
        let fd = (loss_of(&plus, &s0) - loss_of(&minus, &s0)) / (2.0 * h);
        assert!((g_out[i] - fd).abs() < 1e-8, "expert output {i} (selected {selected}): {} vs {fd}", g_out[i]);
        let (mut plus, mut minus) = (s0.clone(), s0.clone());
        plus[i] += h;
        minus[i] -= h;
        let fd = (loss_of(&o0, &plus) - loss_of(&o0, &minus)) / (2.0 * h);
        assert!((g_scores[i] - fd).abs() < 1e-8, "score {i} (selected {selected}): {} vs {fd}", g_scores[i]);
    }
    assert_eq!(checked, [40, 20]);
}

#[test]
fn damping_cuts_the_expert_gradient_of_wrong_routings_only() {
    let (plain, residual, chosen, _) = expert_output_gradient(false, None);
    let (damped, _, _, _) = expert_output_gradient(false, Some(0.3));
    let dims = SlotDims { b: 2, k: 1, c: 1, hw: 20 };
    let scale = damping_scale(&slot_errors(&residual, &[], &[], dims), dims, 0.3, 0.0);
    assert!(scale.contains(&0.0) && scale.contains(&1.0));
    for s in 0..2 {
        for p in 0..20 {
            let at = (s * 3 + chosen[s * 20 + p]) * 20 + p;
            assert_eq!(damped[at], plain[at] * scale[s * 20 + p]);
        }
    }
}

#[test]
fn rc_loss_trains_the_gate_and_blocks_its_task_gradient() {
    let device = Default::default();
    let mut rng = Seeds::new(9).stream("smoe");
    let layer = SmoeSettings::default().init::<Ad>(1, 4, 5, &mut rng, &device).unwrap();
    let x = field::<Ad>(&mut rng, 2, &device);
    let t = field::<Ad>(&mut rng, 2, &device);
    let out = layer.train_loss(x.clone(), t.clone(), &mut rng).unwrap();
    assert!(out.rc > 0.0 && out.damped > 0.0 && out.damped < 1.0);
    assert_eq!(out.load.iter().sum::<usize>(), 40);
    let grads = out.loss.backward();
    let g_latent = host::to_vec(layer.router().latent().unwrap().grad(&grads).unwrap());
    // The latent gate's gradient is the RC loss's alone: d/dL mean BCE = (sigmoid(L) - label) / n,
    // summed over the batch (both samples share the latent tensor).
    let routing = layer.router().route(x.clone(), Mode::Eval, &mut rng).unwrap();
    let scores = host::to_vec(routing.scores.clone());
    let value = combine(select(layer.expert_outputs(x), &routing), selected_scores(&routing), false, true);
    let residual = host::to_vec(value - t);
    let d = SlotDims { b: 2, k: 1, c: 1, hw: 20 };
    let q = layer.settings().rc_quantile.unwrap();
    let labels = rc_labels(&slot_errors(&residual, &[], &[], d), &routing.host_indices, d, 3, q);
    for (i, g) in g_latent.iter().enumerate() {
        let expected: f64 = (0..2)
            .map(|s| {
                let at = s * 60 + i;
                (1.0 / (1.0 + (-scores[at]).exp()) - labels[at]) / 120.0
            })
            .sum();
        assert!((g - expected).abs() < 1e-12, "{i}: {g} vs {expected}");
    }
}

#[test]
fn the_best_expert_is_judged_per_sample() {
    // Two samples, two locations, E = 2, one channel; target 0 everywhere.
    // Sample 0: expert 0 errs 0.1 / 0.3, expert 1 0.2 / 0.3 (a tie at location 1).
    // Sample 1: expert 0 errs 0.5 / 0.0, expert 1 0.1 / 0.1.
    #[rustfmt::skip]
    let outputs = [
        0.1, 0.3, 0.2, 0.3, // sample 0: expert 0, expert 1
        0.5, 0.0, 0.1, 0.1, // sample 1
    ];
    let d = SlotDims { b: 2, k: 1, c: 1, hw: 2 };
    let selected = [1, 1, 0, 0];
    // Sample 0 location 1 ties and keeps its pick (1).
    assert_eq!(best_experts(&outputs, &[0.0; 4], &selected, d, 2), vec![0, 1, 1, 0]);
    // Against targets 0.1 / 0 and 0 / 0.1: sample 1 location 1 now favours expert 1 (0 vs 0.01).
    let target = [0.1, 0.0, 0.0, 0.1];
    assert_eq!(best_experts(&outputs, &target, &selected, d, 2), vec![0, 1, 1, 1]);
    let best = [1, 0, 1, 0];
    assert_eq!(best_damping_scale(&best, &selected, 0.0), vec![1.0, 0.0, 0.0, 1.0]);
    assert_eq!(best_labels(&best, d, 2), vec![0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0]);
}

#[test]
fn an_idle_expert_restarts_by_splitting_the_worst_one() {
    // Expert 2 got 1 % of the locations: it restarts from the one with the largest error (0).
    assert_eq!(restart_plan(&[60, 39, 1], &[5.0, 1.0, 0.0], 0.05), Some((0, 2)));
    assert_eq!(restart_plan(&[60, 35, 5], &[5.0, 1.0, 0.0], 0.05), None);
    assert_eq!(restart_plan(&[0, 0, 0], &[0.0; 3], 0.05), None);
    let device = Default::default();
    let settings = SmoeSettings { criterion: ErrorCriterion::Best, restart_below: Some(0.05), ..Default::default() };
    let layer = settings.init::<TestAutodiffBackend>(1, 4, 5, &mut Seeds::new(3).stream("init"), &device).unwrap();
    let ids: Vec<_> = layer.expert_params().into_iter().map(|(id, ..)| id).collect();
    let x = field::<TestAutodiffBackend>(&mut Seeds::new(4).stream("x"), 2, &device);
    let before = host::to_vec(layer.expert_outputs(x.clone()));
    let lambda = host::to_vec(layer.router().latent().unwrap());
    let split = layer.split_expert(0, 2, &mut Seeds::new(5).stream("restart"));
    assert_eq!(ids, split.expert_params().into_iter().map(|(id, ..)| id).collect::<Vec<_>>(), "ids kept");
    // Experts 0 and 2 are now expert 0's weights minus and plus one perturbation (the
    // convolution is linear: their mean output is expert 0's old one); expert 1 is untouched.
    let after = host::to_vec(split.expert_outputs(x.clone()));
    let expert = |v: &[f64], s: usize, e: usize| v[(s * 3 + e) * 20..(s * 3 + e + 1) * 20].to_vec();
    for s in 0..2 {
        let (old, minus, plus) = (expert(&before, s, 0), expert(&after, s, 0), expert(&after, s, 2));
        let spread = old.iter().map(|v| v.abs()).fold(0.0, f64::max);
        for p in 0..20 {
            assert!(((minus[p] + plus[p]) / 2.0 - old[p]).abs() < 1e-12);
            assert!((plus[p] - old[p]).abs() < 0.5 * spread, "a perturbation of a few percent");
        }
        assert!(minus != plus);
        assert_eq!(expert(&after, s, 1), expert(&before, s, 1));
    }
    // The gate copy is jittered by about 1e-2; the restarted layer still trains.
    let new_lambda = host::to_vec(split.router().latent().unwrap());
    let jitter: Vec<f64> = (0..20).map(|p| new_lambda[40 + p] - lambda[p]).collect();
    assert!(jitter.iter().all(|j| j.abs() < 0.06) && jitter.iter().any(|j| j.abs() > 1e-4), "{jitter:?}");
    assert_eq!(new_lambda[..40], lambda[..40]);
    let loss = split.train_loss(x.clone(), x, &mut Seeds::new(6).stream("route")).unwrap();
    assert_eq!(loss.load.iter().sum::<usize>(), 40);
    let grads = loss.loss.backward();
    assert!(split.router().latent().unwrap().grad(&grads).is_some(), "the copied gate still gets gradient");
}
