//! The MixER gate on data with known families: purity, warm start, skips, matching, least squares.

use burn::backend::NdArray;
use mixer_core::{GateUpdate, Mode, Rng, Router, RouterFeedback, RouterInput, Seeds, host};
use mixer_routers::{
    ClusterCount, EmptyCluster, Gate, GateState, GateStats, KMeansInit, KMeansLeastSquares, KMeansLsParams,
    KMeansLsState, KMeansSettings, Matching, RECOMMENDED_RESTARTS, Refit, RouterConfig, RouterError, RouterShape,
};
use ndarray::{Array2, array};
use rand::Rng as _;
use rand_distr::StandardNormal;

type B = NdArray<f64>;

/// Expert `j` is best for centre `PI[j]`.
const PI: [usize; 3] = [2, 0, 1];

/// `per` contexts around each of 3 centres (`scale` times (-3,0), (3,0), (0,4)), spread `0.1 * scale`;
/// losses `[E, 3]` small for the expert that fits the environment's centre. Returns (contexts, losses, centre).
fn clustered(per: usize, scale: f64, rng: &mut Rng) -> (Array2<f64>, Array2<f64>, Vec<usize>) {
    clustered_at(per, scale, 0.0, rng)
}

/// As [`clustered`], every context shifted by `offset` in both coordinates.
fn clustered_at(per: usize, scale: f64, offset: f64, rng: &mut Rng) -> (Array2<f64>, Array2<f64>, Vec<usize>) {
    let centres = [[-3.0, 0.0], [3.0, 0.0], [0.0, 4.0]];
    let e = 3 * per;
    let mut x = Array2::zeros((e, 2));
    let mut losses = Array2::zeros((e, 3));
    let mut centre_of = Vec::with_capacity(e);
    for i in 0..e {
        let c = i % 3;
        centre_of.push(c);
        for d in 0..2 {
            let z: f64 = rng.sample(StandardNormal);
            x[[i, d]] = offset + scale * (centres[c][d] + 0.1 * z);
        }
        for j in 0..3 {
            let base = if PI[j] == c { 0.1 } else { 1.0 };
            losses[[i, j]] = base + 0.05 * rng.random::<f64>();
        }
    }
    (x, losses, centre_of)
}

/// The expert that fits centre `c`.
fn expert_for(c: usize) -> usize {
    PI.iter().position(|&p| p == c).unwrap()
}

fn assert_purity_one(gate: &KMeansLeastSquares, x: &Array2<f64>, centre_of: &[usize]) {
    let routed = gate.assignment(x).unwrap();
    for (e, &c) in centre_of.iter().enumerate() {
        assert_eq!(routed[e], expert_for(c), "environment {e} of centre {c}: routed {routed:?}");
    }
}

#[test]
fn recommended_preset_routes_every_family_to_its_expert() {
    let mut rng = Seeds::new(1).stream("data");
    let (x, losses, centre_of) = clustered(6, 1.0, &mut rng);
    for matching in [Matching::Greedy, Matching::Hungarian] {
        let mut gate = KMeansLsParams::recommended(3, 2).matching(matching).init(&mut rng).unwrap();
        assert_eq!(gate.update(&x, &losses, &mut rng).unwrap(), GateUpdate::Updated);
        assert_purity_one(&gate, &x, &centre_of);
        assert_eq!(gate.stats().updates, 1);
        assert_eq!(gate.stats().last_gate_agreement, Some(1.0));
        let labels = &gate.stats().last_labels;
        assert_eq!(labels.len(), x.nrows());
        for (e, &c) in centre_of.iter().enumerate() {
            assert_eq!(gate.stats().last_cluster_experts[labels[e]], expert_for(c));
        }
    }
}

#[test]
fn least_squares_gate_can_mask_a_middle_cluster_and_says_so() {
    // three clusters on a line: regressing one-hot targets on [x, 1] gives the middle one a
    // flat score that never wins, so about a third of the environments miss their expert
    let mut rng = Seeds::new(4).stream("data");
    let per = 8;
    let x = Array2::from_shape_fn((3 * per, 1), |(i, _)| {
        (i % 3) as f64 - 1.0 + 0.01 * rng.sample::<f64, _>(StandardNormal)
    });
    let losses = Array2::from_shape_fn((3 * per, 3), |(i, j)| if i % 3 == j { 0.1 } else { 1.0 });
    let mut gate = KMeansLsParams::recommended(3, 1).init(&mut rng).unwrap();
    assert_eq!(gate.update(&x, &losses, &mut rng).unwrap(), GateUpdate::Updated);
    let agreement = gate.stats().last_gate_agreement.unwrap();
    assert!((agreement - 2.0 / 3.0).abs() < 0.1, "agreement {agreement}");
    let routed = gate.assignment(&x).unwrap();
    assert!((0..3 * per).filter(|&i| i % 3 == 1).all(|i| routed[i] != 1), "{routed:?}");
}

#[test]
fn reference_preset_routes_every_family_on_near_zero_contexts() {
    // Early in training contexts are tiny; the published Uniform(±1e-3) start then sees the clusters.
    let mut rng = Seeds::new(4).stream("data");
    let (x, losses, centre_of) = clustered(6, 1e-3, &mut rng);
    let mut gate = KMeansLsParams::reference(3, 2).init(&mut rng).unwrap();
    let mut outcomes = vec![];
    for _ in 0..5 {
        let out = gate.update(&x, &losses, &mut rng).unwrap();
        outcomes.push(out.clone());
        if out == GateUpdate::Updated {
            break;
        }
    }
    assert_eq!(outcomes.last(), Some(&GateUpdate::Updated), "{outcomes:?}");
    assert_purity_one(&gate, &x, &centre_of);
}

#[test]
fn warm_start_reuses_centroids_and_needs_fewer_iterations() {
    let mut rng = Seeds::new(2).stream("data");
    let (x, losses, _) = clustered(6, 1.0, &mut rng);
    let mut gate = KMeansLsParams::recommended(3, 2).init(&mut rng).unwrap();
    gate.update(&x, &losses, &mut rng).unwrap();
    let cold = gate.stats().last_iterations.unwrap();
    assert!(!gate.stats().last_warm_start);
    let centroids = gate.centroids().unwrap().clone();
    gate.update(&x, &losses, &mut rng).unwrap();
    let warm = gate.stats().last_iterations.unwrap();
    assert!(gate.stats().last_warm_start);
    assert_eq!(warm, 1, "warm start from converged centroids converges at once");
    assert!(cold > warm, "cold {cold} vs warm {warm}");
    assert_eq!(gate.centroids().unwrap(), &centroids);
}

#[test]
fn empty_cluster_skips_under_skip_and_refits_under_reseed() {
    // Contexts far from the Uniform(±1e-3) start, all in one direction: one centroid takes every point.
    let mut rng = Seeds::new(3).stream("data");
    let (x, losses, centre_of) = clustered_at(6, 1.0, 50.0, &mut rng);
    let mut skip = KMeansLsParams::reference(3, 2).init(&mut rng).unwrap();
    let before = skip.gate_matrix().clone();
    let out = skip.update(&x, &losses, &mut rng).unwrap();
    assert!(matches!(&out, GateUpdate::Skipped(r) if r.contains("empty")), "{out:?}");
    assert_eq!(skip.gate_matrix(), &before);
    assert!(skip.centroids().is_none());
    assert_eq!((skip.stats().skipped_empty, skip.stats().skips(), skip.stats().updates), (1, 1, 0));

    let mut reseed = KMeansLsParams::reference(3, 2).empty_cluster(EmptyCluster::Reseed).init(&mut rng).unwrap();
    assert_eq!(reseed.update(&x, &losses, &mut rng).unwrap(), GateUpdate::Updated);
    assert!(reseed.stats().reseeds >= 1);
    assert_purity_one(&reseed, &x, &centre_of);
}

#[test]
fn non_convergence_is_skipped_and_counted() {
    let mut rng = Seeds::new(5).stream("data");
    let (x, losses, _) = clustered(6, 1.0, &mut rng);
    let mut gate = KMeansLsParams::recommended(3, 2).max_kmeans(1).init(&mut rng).unwrap();
    let before = gate.gate_matrix().clone();
    for round in 1..=2 {
        let out = gate.update(&x, &losses, &mut rng).unwrap();
        assert!(matches!(&out, GateUpdate::Skipped(r) if r.contains("did not converge")), "{out:?}");
        assert_eq!(gate.stats().skipped_not_converged, round);
    }
    assert_eq!(gate.gate_matrix(), &before);
    assert_eq!(gate.stats().updates, 0);
}

#[test]
fn hungarian_matching_has_strictly_lower_total_loss_than_greedy() {
    // Two families; cluster 0 (near -1) costs (1, 2), cluster 1 (near +1) costs (1.5, 100).
    let x = array![[-1.0], [-1.05], [-0.95], [1.0], [1.05], [0.95]];
    let mut losses = Array2::zeros((6, 2));
    for e in 0..6 {
        let row = if e < 3 { [1.0, 2.0] } else { [1.5, 100.0] };
        losses.row_mut(e).assign(&array![row[0], row[1]]);
    }
    let total = |gate: &KMeansLeastSquares| -> f64 {
        let routed = gate.assignment(&x).unwrap();
        // Median loss per family of the expert it is routed to (all members agree here).
        losses[[0, routed[0]]] + losses[[3, routed[3]]]
    };
    let mut totals = vec![];
    for matching in [Matching::Greedy, Matching::Hungarian] {
        let params = KMeansLsParams::reference(2, 1).matching(matching).check().unwrap();
        // Warm start pins the cluster order: cluster 0 is the family near -1.
        let state = KMeansLsState {
            gate: vec![vec![0.0, 0.0]; 2],
            centroids: Some(vec![vec![-1.0], vec![1.0]]),
            stats: GateStats::default(),
        };
        let mut gate = KMeansLeastSquares::from_state(params, &state).unwrap();
        let mut rng = Seeds::new(6).stream("ls");
        assert_eq!(gate.update(&x, &losses, &mut rng).unwrap(), GateUpdate::Updated);
        totals.push(total(&gate));
    }
    assert_eq!(totals, vec![101.0, 3.5]);
}

#[test]
fn least_squares_reproduces_targets_when_underdetermined() {
    // 6 environments, d_xi = 8: the minimum-norm solution interpolates the one-hot targets exactly.
    let mut rng = Seeds::new(7).stream("data");
    let x = Array2::from_shape_fn((6, 8), |(e, d)| if d == e % 3 { 2.0 } else { 0.0 } + 0.05 * rng.random::<f64>());
    let losses = Array2::from_shape_fn((6, 3), |(e, j)| if j == (e + 1) % 3 { 0.1 } else { 1.0 });
    let mut gate = KMeansLsParams::recommended(3, 8).ls_noise(0.0).init(&mut rng).unwrap();
    assert_eq!(gate.update(&x, &losses, &mut rng).unwrap(), GateUpdate::Updated);
    let logits = gate.logits(&x).unwrap();
    for e in 0..6 {
        let target = (e + 1) % 3;
        for j in 0..3 {
            let want = if j == target { 1.0 } else { 0.0 };
            assert!((logits[[e, j]] - want).abs() < 1e-8, "logit[{e},{j}] = {}", logits[[e, j]]);
        }
    }
}

fn gate_from(g: Vec<Vec<f64>>, k: usize, d: usize) -> KMeansLeastSquares {
    let params = KMeansLsParams::reference(k, d).check().unwrap();
    KMeansLeastSquares::from_state(params, &KMeansLsState { gate: g, centroids: None, stats: GateStats::default() })
        .unwrap()
}

#[test]
fn argmax_matches_hand_computation_and_ties_go_low() {
    // G rows: xi_0, xi_1, bias; columns: experts 0..3.
    let gate = gate_from(vec![vec![1.0, -1.0, 0.5], vec![0.0, 2.0, 1.0], vec![0.1, 0.0, -0.2]], 3, 2);
    // xi = (1, 0.5): logits (1.1, 0.0, 0.8) -> 0; xi = (-1, 1): (-0.9, 3.0, 0.3) -> 1; xi = (0, 2): (0.1, 4, 1.8) -> 1.
    let x = array![[1.0, 0.5], [-1.0, 1.0], [0.0, 2.0]];
    let l = gate.logits(&x).unwrap();
    assert!((l[[0, 0]] - 1.1).abs() < 1e-12 && (l[[1, 1]] - 3.0).abs() < 1e-12 && (l[[2, 2]] - 1.8).abs() < 1e-12);
    assert_eq!(gate.assignment(&x).unwrap(), vec![0, 1, 1]);
    let flat = gate_from(vec![vec![0.0; 3]; 3], 3, 2);
    assert_eq!(flat.assignment(&x).unwrap(), vec![0, 0, 0]);
    let tie12 = gate_from(vec![vec![0.0; 3], vec![0.0; 3], vec![0.0, 1.0, 1.0]], 3, 2);
    assert_eq!(tie12.assignment(&x).unwrap(), vec![1, 1, 1]);
}

#[test]
fn router_trait_routes_top1_unweighted_with_softmax_probs() {
    let gate = gate_from(vec![vec![1.0, -1.0, 0.5], vec![0.0, 2.0, 1.0], vec![0.1, 0.0, -0.2]], 3, 2);
    let device = Default::default();
    let input =
        RouterInput::<B> { features: host::tensor2(&[1.0, 0.5, -1.0, 1.0], [2, 2], &device), mode: Mode::Train };
    let r = Router::<B>::route(&gate, &input, &mut Seeds::new(0).stream("r")).unwrap();
    assert_eq!((r.k, r.top1()), (1, vec![Some(0), Some(1)]));
    assert_eq!(host::to_vec(r.weights), vec![1.0, 1.0]);
    assert!(r.aux_losses.is_empty());
    let p = host::to_vec(r.probs.unwrap());
    let z: f64 = [1.1f64, 0.0, 0.8].iter().map(|v| v.exp()).sum();
    assert!((p[0] - 1.1f64.exp() / z).abs() < 1e-12);
    assert!((p[..3].iter().sum::<f64>() - 1.0).abs() < 1e-12);
}

#[test]
fn refit_through_the_registry_and_state_round_trip() {
    let mut rng = Seeds::new(8).stream("data");
    let (x, losses, centre_of) = clustered(5, 1.0, &mut rng);
    let settings = KMeansSettings {
        init: KMeansInit::KMeansPlusPlus,
        empty: EmptyCluster::Reseed,
        clusters: ClusterCount::MinExpertsEnvs,
        restarts: RECOMMENDED_RESTARTS,
        ..KMeansSettings::default()
    };
    let shape = RouterShape { experts: 3, features: 2 };
    let mut registered = RouterConfig::KmeansLs(settings).build::<B>(shape, &mut rng, &Default::default()).unwrap();
    assert!(registered.wants_feedback());
    let fb = RouterFeedback { features: x.clone(), expert_losses: losses, step: 0 };
    assert_eq!(registered.refit(&fb, &mut rng).unwrap(), GateUpdate::Updated);
    let Gate::KmeansLs(wrapped) = &registered else { panic!("built {}", registered.kind()) };
    let gate = wrapped.gate().clone();
    // the registered gate's checkpoint state restores a fresh one exactly
    let json = serde_json::to_value(registered.state()).unwrap();
    let mut fresh =
        RouterConfig::KmeansLs(KMeansSettings::default()).build::<B>(shape, &mut rng, &Default::default()).unwrap();
    fresh.load_state(&GateState::from_json(json).unwrap()).unwrap();
    let Gate::KmeansLs(fresh) = &fresh else { unreachable!() };
    assert_eq!(fresh.gate().gate_matrix(), gate.gate_matrix());
    let json = serde_json::to_string(&gate.state()).unwrap();
    let state: KMeansLsState = serde_json::from_str(&json).unwrap();
    let back = KMeansLeastSquares::from_state(gate.params().clone(), &state).unwrap();
    // serde_json parses floats to within an ulp or so (no `float_roundtrip` feature).
    let close =
        |a: &Array2<f64>, b: &Array2<f64>| a.iter().zip(b).all(|(u, v)| (u - v).abs() <= 1e-14 * u.abs().max(1.0));
    assert!(close(back.gate_matrix(), gate.gate_matrix()));
    assert!(close(back.centroids().unwrap(), gate.centroids().unwrap()));
    assert_eq!(back.stats(), gate.stats());
    let exact = KMeansLeastSquares::from_state(gate.params().clone(), &gate.state()).unwrap();
    assert_eq!(exact.gate_matrix(), gate.gate_matrix());
    assert_eq!(exact.centroids(), gate.centroids());
    assert_purity_one(&back, &x, &centre_of);
}

#[test]
fn bad_inputs_are_clear_errors() {
    let mut rng = Seeds::new(9).stream("data");
    let mut gate = KMeansLsParams::reference(3, 2).init(&mut rng).unwrap();
    // More experts (clusters) than environments.
    let err = gate.update(&array![[0.0, 1.0], [1.0, 0.0]], &Array2::zeros((2, 3)), &mut rng).unwrap_err();
    assert!(matches!(err, RouterError::TooManyExperts { experts: 3, envs: 2 }), "{err}");
    // Wrong context width, wrong loss shape, NaN.
    assert!(gate.assignment(&Array2::zeros((4, 3))).is_err());
    let err = gate.update(&Array2::zeros((4, 2)), &Array2::zeros((4, 2)), &mut rng).unwrap_err();
    assert!(matches!(err, RouterError::Core(mixer_core::Error::ShapeMismatch { .. })), "{err}");
    let mut nan = Array2::zeros((4, 2));
    nan[[1, 1]] = f64::NAN;
    let err = gate.update(&nan, &Array2::zeros((4, 3)), &mut rng).unwrap_err();
    assert!(matches!(err, RouterError::Core(mixer_core::Error::NonFiniteData { index: 3, .. })), "{err}");
    // Restoring a gate of the wrong shape.
    let params = KMeansLsParams::reference(3, 2).check().unwrap();
    let state = KMeansLsState { gate: vec![vec![0.0; 3]; 2], centroids: None, stats: GateStats::default() };
    assert!(KMeansLeastSquares::from_state(params, &state).is_err());
    // kmeans++ seeding is reproducible from the seed.
    let (x, l, _) = clustered(4, 1.0, &mut rng);
    let run = |seed| {
        let mut r = Seeds::new(seed).stream("k");
        let mut g = KMeansLsParams::reference(3, 2).init_method(KMeansInit::KMeansPlusPlus).init(&mut r).unwrap();
        g.update(&x, &l, &mut r).unwrap();
        g.gate_matrix().clone()
    };
    assert_eq!(run(11), run(11));
}

#[test]
fn diverged_expert_losses_count_as_worst_not_as_errors() {
    let mut rng = Seeds::new(4).stream("data");
    let (x, mut losses, centre_of) = clustered(6, 1.0, &mut rng);
    // The expert meant for centre 0 diverges on one of its environments, and another expert
    // gives NaN on a second one: the refit still runs and routes every family correctly.
    let first_of_centre0 = centre_of.iter().position(|&c| c == 0).unwrap();
    losses[[first_of_centre0, expert_for(0)]] = f64::INFINITY;
    losses[[1, expert_for(2)]] = f64::NAN;
    for matching in [Matching::Greedy, Matching::Hungarian] {
        let mut gate = KMeansLsParams::recommended(3, 2).matching(matching).init(&mut rng).unwrap();
        assert_eq!(gate.update(&x, &losses, &mut rng).unwrap(), GateUpdate::Updated);
        assert_purity_one(&gate, &x, &centre_of);
    }
    // An expert that diverges on a whole cluster is not matched to it (Hungarian: greedy may be
    // left with only that expert for the last cluster).
    for (e, &c) in centre_of.iter().enumerate() {
        if c == 1 {
            losses[[e, expert_for(1)]] = f64::INFINITY;
        }
    }
    let mut gate = KMeansLsParams::recommended(3, 2).matching(Matching::Hungarian).init(&mut rng).unwrap();
    assert_eq!(gate.update(&x, &losses, &mut rng).unwrap(), GateUpdate::Updated);
    let routed = gate.assignment(&x).unwrap();
    let e1 = centre_of.iter().position(|&c| c == 1).unwrap();
    assert_ne!(routed[e1], expert_for(1));
    assert!(mixer_routers::DIVERGED_LOSS.is_finite());
}

#[test]
fn restarts_overtake_a_warm_start_stuck_in_a_local_optimum() {
    let mut rng = Seeds::new(4).stream("data");
    let (x, losses, centre_of) = clustered(6, 1.0, &mut rng);
    // two centroids share centre 0, one sits between centres 1 and 2: a fixed point of Lloyd
    let stuck = vec![vec![-3.1, 0.0], vec![-2.9, 0.0], vec![1.5, 2.0]];
    let warm = |restarts: usize, rng: &mut Rng| {
        let params = KMeansLsParams::recommended(3, 2).restarts(restarts).check().unwrap();
        let fresh = KMeansLsParams::recommended(3, 2).restarts(restarts).init(rng).unwrap().state();
        let state = KMeansLsState { centroids: Some(stuck.clone()), ..fresh };
        KMeansLeastSquares::from_state(params, &state).unwrap()
    };
    let mut single = warm(0, &mut rng);
    single.update(&x, &losses, &mut rng).unwrap();
    let labels = &single.stats().last_labels;
    let label_of = |c: usize| labels[centre_of.iter().position(|&x| x == c).unwrap()];
    assert_eq!(label_of(1), label_of(2), "without restarts centres 1 and 2 stay merged: {labels:?}");
    assert_eq!(single.stats().restart_wins, 0);
    let mut restarted = warm(8, &mut rng);
    restarted.update(&x, &losses, &mut rng).unwrap();
    assert!(restarted.stats().restart_wins >= 1);
    assert_purity_one(&restarted, &x, &centre_of);
}

#[test]
fn overlap_matching_keeps_experts_where_losses_would_permute_them() {
    let mut rng = Seeds::new(9).stream("data");
    let (x, losses, centre_of) = clustered(6, 1.0, &mut rng);
    // losses of experts that have not specialised yet: a rotation of the informative ones
    let rotated = Array2::from_shape_fn(losses.dim(), |(e, j)| losses[[e, (j + 1) % 3]]);
    let mut kept = KMeansLsParams::recommended(3, 2).matching(Matching::Overlap).init(&mut rng).unwrap();
    let mut moved = KMeansLsParams::recommended(3, 2).matching(Matching::Hungarian).init(&mut rng).unwrap();
    for gate in [&mut kept, &mut moved] {
        assert_eq!(gate.update(&x, &losses, &mut rng).unwrap(), GateUpdate::Updated);
        assert_purity_one(gate, &x, &centre_of);
        assert_eq!(gate.update(&x, &rotated, &mut rng).unwrap(), GateUpdate::Updated);
    }
    assert_purity_one(&kept, &x, &centre_of);
    assert_eq!(kept.stats().last_rerouted, 0);
    assert_eq!(moved.stats().last_rerouted, x.nrows(), "every environment changed expert");
    let routed = moved.assignment(&x).unwrap();
    let stayed = centre_of.iter().zip(&routed).filter(|&(&c, &r)| r == expert_for(c)).count();
    assert_eq!(stayed, 0, "loss matching follows the rotation: {routed:?}");
}
