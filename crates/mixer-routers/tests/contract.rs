//! The router contract: every registered kind ([`KINDS`]) goes through the same checks, so a new
//! router inherits them by adding its registry line. Shapes, index and weight ranges,
//! determinism, no noise in evaluation, row locality of routers that are not batch-coupled,
//! bad shapes and settings, state round trip through a checkpoint, and gradients reaching the
//! gate parameters (against central finite differences).

use burn::backend::{Autodiff, NdArray};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::record::{BinFileRecorder, DoublePrecisionSettings};
use burn::tensor::{Tensor, TensorData, backend::Backend};
use mixer_core::{Mode, Rng, Router, RouterFeedback, RouterInput, Routing, Seeds, host};
use mixer_routers::{Gate, GateState, KINDS, Refit, RouterConfig, RouterShape, argmax_lowest};
use ndarray::Array2;
use rand::Rng as _;
use rand_distr::StandardNormal;

type B = NdArray<f64>;
type AB = Autodiff<B>;

const SHAPE: RouterShape = RouterShape { experts: 6, features: 3 };
const UNITS: usize = 12;

fn build<Bk: Backend>(kind: &str, seed: u64) -> Gate<Bk> {
    RouterConfig::default_for(kind)
        .unwrap()
        .build::<Bk>(SHAPE, &mut Seeds::new(seed).stream("gate"), &Default::default())
        .unwrap()
}

/// `UNITS` standard normal feature rows; the last row is zero (a tie for linear routers without bias).
fn features(seed: u64) -> Array2<f64> {
    let mut rng = Seeds::new(seed).stream("features");
    Array2::from_shape_fn(
        (UNITS, SHAPE.features),
        |(i, _)| if i + 1 == UNITS { 0.0 } else { rng.sample(StandardNormal) },
    )
}

fn route<Bk: Backend>(gate: &Gate<Bk>, x: &Array2<f64>, mode: Mode, seed: u64) -> Routing<Bk> {
    let input = RouterInput { features: host::from_array2(x, &Default::default()), mode };
    gate.route(&input, &mut Seeds::new(seed).stream("route")).unwrap()
}

/// A refit from losses that make expert `i % E` best for unit `i`, for routers that take one.
fn refit_if_wanted<Bk: Backend>(gate: &mut Gate<Bk>, x: &Array2<f64>) {
    if gate.wants_feedback() {
        let losses =
            Array2::from_shape_fn((x.nrows(), SHAPE.experts), |(i, e)| if i % SHAPE.experts == e { 0.1 } else { 1.0 });
        let feedback = RouterFeedback { features: x.clone(), expert_losses: losses, step: 0 };
        gate.refit(&feedback, &mut Seeds::new(9).stream("refit")).unwrap();
    }
}

fn same_routing<Bk: Backend>(a: &Routing<Bk>, b: &Routing<Bk>) -> bool {
    a.k == b.k && a.indices == b.indices && host::to_vec(a.weights.clone()) == host::to_vec(b.weights.clone())
}

#[test]
fn every_kind_has_defaults_that_parse_and_check() {
    assert!(KINDS.len() >= 9, "registered: {KINDS:?}");
    for &kind in KINDS {
        let parsed: RouterConfig = serde_json::from_str(&format!(r#"{{"kind": "{kind}"}}"#)).unwrap();
        assert_eq!(parsed, RouterConfig::default_for(kind).unwrap(), "{kind}");
        assert_eq!(parsed.kind(), kind);
        parsed.check(SHAPE).unwrap();
        assert_eq!(build::<B>(kind, 0).kind(), kind);
    }
}

#[test]
fn unknown_kinds_and_empty_shapes_are_refused() {
    let err = RouterConfig::default_for("switchh").unwrap_err().to_string();
    assert!(KINDS.iter().all(|k| err.contains(k)), "{err}");
    let err = serde_json::from_str::<RouterConfig>(r#"{"kind": "switchh"}"#).unwrap_err().to_string();
    assert!(err.contains("switchh") && err.contains("kmeans-ls"), "{err}");
    for &kind in KINDS {
        let config = RouterConfig::default_for(kind).unwrap();
        assert!(config.check(RouterShape { experts: 0, ..SHAPE }).is_err(), "{kind}: zero experts");
        assert!(config.check(RouterShape { features: 0, ..SHAPE }).is_err(), "{kind}: zero features");
        let unknown_key = serde_json::from_str::<RouterConfig>(&format!(r#"{{"kind": "{kind}", "colour": 1}}"#));
        assert!(unknown_key.is_err(), "{kind}: unknown key accepted");
    }
}

#[test]
fn routings_have_the_documented_shapes_and_ranges() {
    let x = features(1);
    for &kind in KINDS {
        let mut gate = build::<B>(kind, 0);
        refit_if_wanted(&mut gate, &x);
        assert_eq!(gate.num_experts(), SHAPE.experts, "{kind}");
        for mode in [Mode::Train, Mode::Eval] {
            let r = route(&gate, &x, mode, 3);
            let k = r.k;
            assert_eq!(k, gate.top_k(), "{kind}");
            assert!((1..=SHAPE.experts).contains(&k), "{kind}: k = {k}");
            assert_eq!(r.indices.len(), UNITS * k, "{kind}");
            assert_eq!(r.weights.dims(), [UNITS, k], "{kind}");
            let w = host::to_vec(r.weights.clone());
            for (slot, (choice, weight)) in r.indices.iter().zip(&w).enumerate() {
                assert!(weight.is_finite() && (0.0..=1.0 + 1e-12).contains(weight), "{kind}: weight {weight}");
                match choice {
                    Some(e) => assert!(*e < SHAPE.experts, "{kind}: expert {e}"),
                    None => assert_eq!(*weight, 0.0, "{kind}: dropped slot {slot} has a weight"),
                }
            }
            for row in w.chunks(k) {
                assert!(row.iter().sum::<f64>() <= 1.0 + 1e-9, "{kind}: combine weights sum above 1: {row:?}");
            }
            for (e, _) in &r.shared {
                assert!(*e < SHAPE.experts, "{kind}: shared expert {e}");
            }
            if let Some(p) = &r.probs {
                assert_eq!(p.dims(), [UNITS, SHAPE.experts], "{kind}");
                let p = host::to_vec(p.clone());
                for (u, row) in p.chunks(SHAPE.experts).enumerate() {
                    assert!(row.iter().all(|v| *v >= 0.0), "{kind}: negative probability");
                    assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{kind}: probabilities sum to {row:?}");
                    if mode == Mode::Eval && !gate.is_batch_coupled() && k < SHAPE.experts {
                        // The first choice is the most probable expert, ties to the lowest index.
                        assert_eq!(r.indices[u * k], Some(argmax_lowest(row)), "{kind}: unit {u} {row:?}");
                    }
                }
            }
            if mode == Mode::Eval {
                assert!(r.aux_losses.is_empty(), "{kind}: auxiliary losses in evaluation");
            }
            for aux in &r.aux_losses {
                assert_eq!(aux.value.dims(), [1], "{kind}");
                assert!(aux.value.clone().into_scalar().is_finite() && aux.coefficient.is_finite(), "{kind}");
            }
        }
    }
}

#[test]
fn same_seed_same_routing_and_no_noise_in_eval() {
    let x = features(2);
    for &kind in KINDS {
        let (mut a, mut b) = (build::<B>(kind, 4), build::<B>(kind, 4));
        refit_if_wanted(&mut a, &x);
        refit_if_wanted(&mut b, &x);
        assert!(same_routing(&route(&a, &x, Mode::Train, 5), &route(&b, &x, Mode::Train, 5)), "{kind}: train");
        assert!(same_routing(&route(&a, &x, Mode::Eval, 5), &route(&a, &x, Mode::Eval, 6)), "{kind}: eval noise");
    }
}

#[test]
fn routers_that_are_not_batch_coupled_route_each_unit_on_its_own() {
    let x = features(3);
    for &kind in KINDS {
        let mut gate = build::<B>(kind, 1);
        refit_if_wanted(&mut gate, &x);
        let batch = route(&gate, &x, Mode::Eval, 0);
        let k = batch.k;
        let alone: Vec<_> = (0..UNITS)
            .flat_map(|u| route(&gate, &x.slice(ndarray::s![u..u + 1, ..]).to_owned(), Mode::Eval, 0).indices)
            .collect();
        if gate.is_batch_coupled() {
            // Expert choice keeps every unit of a batch of one (capacity is at least 1).
            assert!(alone.iter().all(Option::is_some), "{kind}: a unit alone was dropped");
        } else {
            assert_eq!(alone, batch.indices, "{kind}: a unit's experts depend on its batch (k = {k})");
        }
    }
}

#[test]
fn features_of_the_wrong_width_are_an_error() {
    for &kind in KINDS {
        let gate = build::<B>(kind, 0);
        let input = RouterInput {
            features: Tensor::<B, 2>::zeros([3, SHAPE.features + 1], &Default::default()),
            mode: Mode::Eval,
        };
        assert!(gate.route(&input, &mut Seeds::new(0).stream("route")).is_err(), "{kind}");
    }
}

/// Gives every float parameter fresh standard normal values (scaled by 0.5), drawn from `rng`.
struct Randomise<'a>(&'a mut Rng);

impl<Bk: Backend> ModuleMapper<Bk> for Randomise<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<Bk, D>>) -> Param<Tensor<Bk, D>> {
        let (id, tensor, mapper) = param.consume();
        let shape = tensor.shape();
        let values: Vec<f64> =
            (0..shape.num_elements()).map(|_| 0.5 * self.0.sample::<f64, _>(StandardNormal)).collect();
        let fresh = Tensor::from_data(TensorData::new(values, shape), &tensor.device());
        Param::from_mapped_value(id, fresh.require_grad(), mapper)
    }
}

#[test]
fn checkpointed_state_restores_the_routing_in_a_differently_seeded_build() {
    let x = features(4);
    let dir = std::env::temp_dir().join(format!("mixer-router-contract-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let recorder = BinFileRecorder::<DoublePrecisionSettings>::new();
    for &kind in KINDS {
        let mut trained = build::<B>(kind, 1).map(&mut Randomise(&mut Seeds::new(2).stream("params")));
        refit_if_wanted(&mut trained, &x);
        // A few steps of schedules and bias updates, so that there is state to restore.
        for step in 0..3 {
            let load = route(&trained, &x, Mode::Train, step).load(SHAPE.experts);
            trained.after_step(&load);
        }
        let file = dir.join(kind);
        trained.clone().save_file(&file, &recorder).unwrap();
        let json = serde_json::to_string(&trained.state()).unwrap();

        let fresh = build::<B>(kind, 7).load_file(&file, &recorder, &Default::default()).unwrap();
        let mut restored = fresh;
        restored.load_state(&GateState::from_json(serde_json::from_str(&json).unwrap()).unwrap()).unwrap();
        assert!(
            same_routing(&route(&trained, &x, Mode::Eval, 0), &route(&restored, &x, Mode::Eval, 0)),
            "{kind}: routing changed through the checkpoint"
        );
        for &other in KINDS.iter().filter(|&&o| o != kind) {
            let err = build::<B>(other, 0).load_state(&trained.state()).unwrap_err().to_string();
            assert!(err.contains(kind) && err.contains(other), "{kind} into {other}: {err}");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Float parameters of a module, flattened in visiting order.
fn params<Bk: Backend, M: Module<Bk>>(module: &M) -> Vec<Vec<f64>> {
    struct Collect(Vec<Vec<f64>>);
    impl<Bk: Backend> ModuleVisitor<Bk> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Bk, D>>) {
            self.0.push(host::to_vec(param.val().reshape([-1])));
        }
    }
    let mut c = Collect(vec![]);
    module.visit(&mut c);
    c.0
}

/// Replaces entry `at = (tensor, index)` of the float parameters by itself plus `delta`.
struct Nudge {
    at: (usize, usize),
    delta: f64,
    seen: usize,
}

impl<Bk: Backend> ModuleMapper<Bk> for Nudge {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<Bk, D>>) -> Param<Tensor<Bk, D>> {
        let (id, tensor, mapper) = param.consume();
        let tensor = if self.seen == self.at.0 {
            let shape = tensor.shape();
            let mut values = host::to_vec(tensor.clone().reshape([-1]));
            values[self.at.1] += self.delta;
            Tensor::from_data(TensorData::new(values, shape), &tensor.device()).require_grad()
        } else {
            tensor
        };
        self.seen += 1;
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// A scalar of everything a trainer differentiates: weighted combine weights, weighted
/// probabilities and the auxiliary losses with their coefficients.
fn objective(gate: &Gate<AB>, x: &Array2<f64>) -> Tensor<AB, 1> {
    let r = route(gate, x, Mode::Train, 11);
    let device = Default::default();
    let ramp = |n: usize, k: usize| {
        let v: Vec<f64> = (0..n * k).map(|i| 1.0 + (i % 5) as f64 * 0.3).collect();
        host::tensor2::<AB>(&v, [n, k], &device)
    };
    let mut total = (r.weights.clone() * ramp(UNITS, r.k)).sum();
    if let Some(p) = r.probs {
        total = total + (p * ramp(UNITS, SHAPE.experts)).sum().mul_scalar(0.5);
    }
    for aux in r.aux_losses {
        total = total + aux.value.mul_scalar(aux.coefficient);
    }
    total
}

struct Grads<'a>(&'a <AB as burn::tensor::backend::AutodiffBackend>::Gradients, Vec<Vec<f64>>);

impl ModuleVisitor<AB> for Grads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
        let g = param
            .grad(self.0)
            .map(|g| host::to_vec(g.reshape([-1])))
            .unwrap_or_else(|| vec![0.0; param.shape().num_elements()]);
        self.1.push(g);
    }
}

#[test]
fn gradients_reach_the_gate_parameters_as_finite_differences_say() {
    let x = features(5);
    let mut checked = 0;
    for &kind in KINDS {
        let gate = build::<AB>(kind, 3).map(&mut Randomise(&mut Seeds::new(6).stream("params")));
        let values = params(&gate);
        if values.is_empty() {
            continue;
        }
        checked += 1;
        let grads = objective(&gate, &x).backward();
        let mut visitor = Grads(&grads, vec![]);
        gate.visit(&mut visitor);
        let analytic = visitor.1;
        assert!(analytic.iter().flatten().any(|g| *g != 0.0), "{kind}: no gradient reaches the gate");
        let h = 1e-6;
        for (t, (tensor, analytic)) in values.iter().zip(&analytic).enumerate() {
            for (i, &g) in analytic.iter().enumerate().take(tensor.len()) {
                let at = |delta| {
                    let nudged = gate.clone().map(&mut Nudge { at: (t, i), delta, seen: 0 });
                    objective(&nudged, &x).into_scalar()
                };
                let fd = (at(h) - at(-h)) / (2.0 * h);
                assert!(
                    (fd - g).abs() <= 1e-6 * (1.0 + g.abs()),
                    "{kind}: parameter {t}[{i}]: autodiff {g}, finite differences {fd}"
                );
            }
        }
    }
    assert!(checked >= 3, "only {checked} routers with gate parameters");
}
