//! The mixture layer: routing, gather/scatter, context splitting, gradients, expert losses.

use burn::backend::{Autodiff, NdArray};
use burn::module::{AutodiffModule, Module, Param};
use burn::tensor::{Tensor, TensorData, backend::Backend};

use mixer_core::host::{tensor2, to_vec};
use mixer_core::{Error, Expert, FnField, Integrator, Routing, VectorField};
use mixer_experts::{Dispatch, ExpertError, GepsConfig, GepsExpert, MixtureOfExperts, Rows};
use mixer_ode::Rk4;

type TB = NdArray<f64>;
type AB = Autodiff<TB>;

const TIMES: [f64; 4] = [0.0, 0.1, 0.25, 0.4];

/// `dx/dt = gain * ctx` (with `c = d`): its exact solution shows which context slice it got.
#[derive(Module, Debug)]
struct Probe<B: Backend> {
    gain: Param<Tensor<B, 1>>,
}

impl<B: Backend> Expert<B> for Probe<B> {
    fn state_dim(&self) -> usize {
        2
    }
    fn context_dim(&self) -> usize {
        2
    }
    fn forward(&self, _x: Tensor<B, 2>, ctx: Tensor<B, 2>) -> Tensor<B, 2> {
        ctx * self.gain.val().unsqueeze_dim(0)
    }
}

fn routing<B: Backend>(k: usize, indices: Vec<Option<usize>>, weights: Tensor<B, 2>) -> Routing<B> {
    Routing { k, indices, weights, shared: vec![], probs: None, aux_losses: vec![] }
}

fn geps<B: Backend>(seed: u64, device: &B::Device) -> GepsExpert<B> {
    B::seed(device, seed);
    GepsConfig { dim: 2, context: 2, width: 8, depth: 3, context_shift: true, mip: false }.init(device).unwrap()
}

/// Contexts `[3, 4]` (two experts, slices of 2) and 5 rows over 3 environments.
fn problem<B: Backend>(device: &B::Device) -> (Tensor<B, 2>, Vec<usize>, Tensor<B, 2>) {
    let ctx = [0.3, -0.2, 0.9, 0.1, -0.5, 0.4, 0.0, 0.7, 0.2, 0.2, -0.6, -0.3];
    let x0 = [0.5, -0.4, 1.0, 0.2, -0.7, 0.3, 0.1, 0.9, -0.2, -0.8];
    (tensor2(&ctx, [3, 4], device), vec![0, 1, 2, 1, 0], tensor2(&x0, [5, 2], device))
}

#[test]
fn top1_rollout_equals_each_rows_expert_alone() {
    let device = Default::default();
    let moe = MixtureOfExperts::<TB, _>::new(vec![geps::<TB>(1, &device), geps::<TB>(2, &device)]);
    let (ctx, env_of_row, x0) = problem::<TB>(&device);
    let top1 = [1, 0, 1];
    let r = routing(1, top1.iter().map(|&e| Some(e)).collect(), Tensor::ones([3, 1], &device));
    let rk4 = Rk4 { substeps: 1 };
    let got = to_vec(moe.rollout(&rk4, &r, ctx.clone(), &env_of_row, x0.clone(), &TIMES).unwrap());
    let (cv, xv) = (to_vec(ctx), to_vec(x0));
    let mut worst: f64 = 0.0;
    for (row, &env) in env_of_row.iter().enumerate() {
        let k = top1[env];
        let slice = tensor2::<TB>(&cv[env * 4 + 2 * k..env * 4 + 2 * k + 2], [1, 2], &device);
        let expert = &moe.experts[k];
        let field = FnField::new(2, |_t: f64, x: Tensor<TB, 2>| expert.forward(x, slice.clone()));
        let alone = to_vec(rk4.integrate(&field, tensor2(&xv[row * 2..row * 2 + 2], [1, 2], &device), &TIMES).unwrap());
        let mine = &got[row * 8..(row + 1) * 8];
        worst = alone.iter().zip(mine).fold(worst, |w, (a, b)| w.max((a - b).abs()));
    }
    assert!(worst < 1e-12, "largest difference to a lone rollout: {worst}");
    // the trajectories moved, so the comparison is not trivial
    assert!((got[7] - got[1]).abs() > 1e-3);
}

#[test]
fn top1_gradients_reach_only_the_selected_experts() {
    let device = Default::default();
    let experts = vec![geps::<AB>(1, &device), geps::<AB>(2, &device), geps::<AB>(3, &device)];
    let moe = MixtureOfExperts::<AB, _>::new(experts);
    let ctx = tensor2::<AB>(&[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, -0.1, -0.2, -0.3, -0.4, -0.5, -0.6], [2, 6], &device);
    let x0 = tensor2::<AB>(&[0.5, -0.4, 1.0, 0.2, -0.7, 0.3], [3, 2], &device);
    let r = routing(1, vec![Some(2), Some(0)], Tensor::ones([2, 1], &device));
    let y = moe.rollout(&Rk4 { substeps: 1 }, &r, ctx, &[0, 1, 1], x0, &TIMES).unwrap();
    let grads = y.square().sum().backward();
    for (k, used) in [(0, true), (1, false), (2, true)] {
        let e = &moe.experts[k];
        let sq = |g: Option<Vec<f64>>| g.map_or(0.0, |g| g.iter().map(|v| v * v).sum::<f64>());
        let norm = sq(e.layers[0].weight.grad(&grads).map(to_vec))
            + sq(e.layers[2].a.grad(&grads).map(to_vec))
            + sq(e.activations[0].beta.grad(&grads).map(to_vec));
        assert_eq!(norm > 1e-12, used, "expert {k}: gradient norm^2 {norm}");
    }
}

#[test]
fn weighted_routings_give_gate_weights_their_gradient() {
    let device = Default::default();
    let moe = MixtureOfExperts::<AB, _>::new(vec![geps::<AB>(1, &device), geps::<AB>(2, &device)]);
    let (ctx, env_of_row, x0) = problem::<AB>(&device);
    let rk4 = Rk4 { substeps: 2 };
    // top-2 over two experts (dense softmax mixture) and Switch-style weighted top-1
    let cases: Vec<(usize, Vec<Option<usize>>, Vec<f64>)> = vec![
        (2, vec![Some(0), Some(1), Some(1), Some(0), Some(0), Some(1)], vec![0.7, 0.3, 0.6, 0.4, 0.55, 0.45]),
        (1, vec![Some(1), Some(0), Some(1)], vec![0.8, 0.65, 0.9]),
    ];
    for (k, indices, w) in cases {
        let weights = Tensor::<AB, 2>::from_data(TensorData::new(w.clone(), [3, k]), &device).require_grad();
        let r = routing(k, indices.clone(), weights.clone());
        let y = moe.rollout(&rk4, &r, ctx.clone(), &env_of_row, x0.clone(), &TIMES).unwrap();
        let grads = y.square().sum().backward();
        let g = to_vec(weights.grad(&grads).unwrap());
        // central differences of the same loss on the inner backend
        let inner = moe.valid();
        let (c_in, x_in) = (ctx.clone().inner(), x0.clone().inner());
        let loss = |v: &[f64]| -> f64 {
            let r = routing(k, indices.clone(), tensor2::<TB>(v, [3, k], &device));
            let y = inner.rollout(&rk4, &r, c_in.clone(), &env_of_row, x_in.clone(), &TIMES).unwrap();
            to_vec(y).iter().map(|v| v * v).sum()
        };
        for i in 0..w.len() {
            let (mut up, mut down) = (w.clone(), w.clone());
            up[i] += 1e-6;
            down[i] -= 1e-6;
            let fd = (loss(&up) - loss(&down)) / 2e-6;
            assert!((g[i] - fd).abs() < 1e-6 * fd.abs().max(1.0), "k={k} weight {i}: {} vs {fd}", g[i]);
            assert!(g[i].abs() > 1e-6);
        }
    }
}

#[test]
fn time_rates_integrate_rescaled_grids_exactly() {
    let device = Default::default();
    let moe = MixtureOfExperts::<TB, _>::new(vec![geps::<TB>(1, &device), geps::<TB>(2, &device)]);
    let (ctx, env_of_row, x0) = problem::<TB>(&device);
    // env e lives on the grid h_e * s; one rollout on s with rates equals one per grid
    let rate = [0.5, 2.0, 1.25];
    let s: Vec<f64> = TIMES.iter().map(|t| t / 0.1).collect();
    let mut top2 =
        routing(2, vec![Some(0), Some(1), Some(1), Some(0), Some(0), Some(1)], Tensor::full([3, 2], 0.5, &device));
    top2.shared = vec![(1, 0.3)];
    let cases = [routing(1, vec![Some(1), Some(0), Some(1)], tensor2(&[0.9, 0.8, 0.7], [3, 1], &device)), top2];
    let rk4 = Rk4 { substeps: 3 };
    for r in &cases {
        let rows = Rows { env_of_row: &env_of_row, x0: x0.clone(), times: &s, rate: Some(&rate), anchor_of_row: None };
        let got = to_vec(moe.rollout_rows(&rk4, r, ctx.clone(), rows).unwrap());
        for (row, &e) in env_of_row.iter().enumerate() {
            let t: Vec<f64> = s.iter().map(|v| v * rate[e]).collect();
            let one = x0.clone().slice([row..row + 1, 0..2]);
            let want = to_vec(moe.rollout(&rk4, r, ctx.clone(), &[e], one, &t).unwrap());
            for (k, w) in want.iter().enumerate() {
                let g = got[row * 8 + k];
                assert!((g - w).abs() < 1e-12 * w.abs().max(1.0), "k={} row {row} entry {k}: {g} vs {w}", r.k);
            }
        }
    }
    // rates must be one per context row, finite and positive
    let bad = |rate: &[f64]| {
        let rows = Rows { env_of_row: &env_of_row, x0: x0.clone(), times: &s, rate: Some(rate), anchor_of_row: None };
        moe.rollout_rows(&rk4, &cases[0], ctx.clone(), rows).is_err()
    };
    assert!(bad(&[1.0, 1.0]) && bad(&[1.0, 0.0, 1.0]) && bad(&[1.0, f64::NAN, 1.0]));
}

#[test]
fn context_splitting_hands_expert_k_slice_k() {
    let device = Default::default();
    let probe = |g: f64| Probe::<TB> { gain: Param::from_tensor(Tensor::from_data([g, g], &device)) };
    let moe = MixtureOfExperts::<TB, _>::new(vec![probe(1.0), probe(1.0), probe(1.0)]);
    let ctx = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, -1.0, -2.0, -3.0, -4.0, -5.0, -6.0];
    let contexts = tensor2::<TB>(&ctx, [2, 6], &device);
    let x0 = tensor2::<TB>(&[0.0, 0.0, 1.0, 1.0], [2, 2], &device);
    let t_end = TIMES[3];
    // top-1: env 0 -> expert 2, env 1 -> expert 0; x(T) = x0 + T * slice
    let r = routing(1, vec![Some(2), Some(0)], Tensor::ones([2, 1], &device));
    let y = to_vec(moe.rollout(&Rk4 { substeps: 1 }, &r, contexts.clone(), &[0, 1], x0.clone(), &TIMES).unwrap());
    let end = |row: usize| [y[row * 8 + 6], y[row * 8 + 7]];
    let want = [[5.0 * t_end, 6.0 * t_end], [1.0 - t_end, 1.0 - 2.0 * t_end]];
    for (row, w) in want.iter().enumerate() {
        for j in 0..2 {
            assert!((end(row)[j] - w[j]).abs() < 1e-12, "row {row}: {:?} vs {w:?}", end(row));
        }
    }
    // dense: env 0 = 0.25 * expert 0 + 0.75 * expert 1
    let r = routing(2, vec![Some(0), Some(1), Some(1), Some(2)], tensor2(&[0.25, 0.75, 0.5, 0.5], [2, 2], &device));
    let y = to_vec(moe.rollout(&Rk4 { substeps: 1 }, &r, contexts.clone(), &[0, 1], x0.clone(), &TIMES).unwrap());
    let want0 = [(0.25 * 1.0 + 0.75 * 3.0) * t_end, (0.25 * 2.0 + 0.75 * 4.0) * t_end];
    let want1 = [1.0 + 0.5 * (-3.0 - 5.0) * t_end, 1.0 + 0.5 * (-4.0 - 6.0) * t_end];
    for j in 0..2 {
        assert!((y[6 + j] - want0[j]).abs() < 1e-12);
        assert!((y[14 + j] - want1[j]).abs() < 1e-12);
    }
    // a context of the wrong width is refused
    let bad = tensor2::<TB>(&[0.0; 8], [2, 4], &device);
    assert!(matches!(
        moe.rollout(&Rk4 { substeps: 1 }, &r, bad, &[0, 1], x0, &TIMES),
        Err(ExpertError::Core(Error::ShapeMismatch { .. }))
    ));
}

#[test]
fn expert_losses_score_every_expert_on_every_environment() {
    let device = Default::default();
    let moe = MixtureOfExperts::<TB, _>::new(vec![geps::<TB>(4, &device), geps::<TB>(5, &device)]);
    let (ctx, _, x0) = problem::<TB>(&device);
    // rows only for environments 0 and 2; environment 1 has none
    let env_of_row = [0, 2, 2, 0, 0];
    let rk4 = Rk4 { substeps: 1 };
    let target = Tensor::<TB, 3>::zeros([5, 4, 2], &device) + 0.3;
    let rows = Rows::new(&env_of_row, x0.clone(), &TIMES);
    let losses = moe.expert_losses(&rk4, ctx.clone(), rows, target.clone()).unwrap();
    assert_eq!(losses.dims(), [3, 2]);
    let l = to_vec(losses);
    for k in 0..2 {
        let r = routing(1, vec![Some(k); 3], Tensor::ones([3, 1], &device));
        let pred = moe.rollout(&rk4, &r, ctx.clone(), &env_of_row, x0.clone(), &TIMES).unwrap();
        let row_mse = to_vec((pred - target.clone()).square().reshape([5, 8]).mean_dim(1));
        let env0 = (row_mse[0] + row_mse[3] + row_mse[4]) / 3.0;
        let env2 = (row_mse[1] + row_mse[2]) / 2.0;
        assert!((l[k] - env0).abs() < 1e-12 && (l[4 + k] - env2).abs() < 1e-12);
        assert!(l[2 + k].is_nan(), "environment without rows");
    }
    assert!((l[0] - l[1]).abs() > 1e-6, "different experts, different losses");
}

/// An integrator that always fails, to check error wrapping.
struct Failing;

impl Integrator<TB> for Failing {
    fn integrate(&self, _f: &dyn VectorField<TB>, _y0: Tensor<TB, 2>, _t: &[f64]) -> mixer_core::Result<Tensor<TB, 3>> {
        Err(Error::MaxStepsReached { t: 0.5, steps: 4096 })
    }
    fn order(&self) -> usize {
        1
    }
}

#[test]
fn solver_failures_name_the_expert_and_environments() {
    let device = Default::default();
    let moe = MixtureOfExperts::<TB, _>::new(vec![geps::<TB>(1, &device), geps::<TB>(2, &device)]);
    let (ctx, env_of_row, x0) = problem::<TB>(&device);
    let r = routing(1, vec![Some(1), Some(1), Some(0)], Tensor::ones([3, 1], &device));
    // the stacked rollout fails too and is repeated expert by expert, which names the expert
    for stacked in [true, false] {
        let rows = Rows::new(&env_of_row, x0.clone(), &TIMES);
        let got = if stacked {
            moe.rollout_rows(&Failing, &r, ctx.clone(), rows)
        } else {
            moe.rollout_rows_by(&Failing, &r, ctx.clone(), rows, Dispatch::PerExpert)
        };
        match got {
            Err(ExpertError::Rollout { expert: Some(0), envs, source: Error::MaxStepsReached { steps: 4096, .. } }) => {
                assert_eq!(envs, vec![2], "stacked {stacked}");
            }
            other => panic!("expected a rollout error of expert 0, got {other:?}"),
        }
    }
    let rows = Rows::new(&env_of_row, x0, &TIMES);
    let losses = to_vec(moe.expert_losses(&Failing, ctx, rows, Tensor::zeros([5, 4, 2], &device)).unwrap());
    assert!(losses.iter().all(|v| *v == f64::INFINITY));
}

#[test]
fn init_gives_identical_experts_with_their_own_parameters() {
    let device = Default::default();
    let cfg = mixer_experts::ExpertConfig::Geps { width: 8, depth: 3 };
    let moe = MixtureOfExperts::<AB, mixer_experts::AnyExpert<AB>>::init(&cfg, 2, 2, 3, &device).unwrap();
    let x0 = tensor2::<AB>(&[0.3, -0.2, 0.1, 0.5], [2, 2], &device);
    let ctx = tensor2::<AB>(&[0.1, 0.2, 0.0, 0.0, 0.0, 0.0, 0.4, -0.1, 0.0, 0.0, 0.0, 0.0], [2, 6], &device);
    let rollout = |k: usize| {
        let r = routing(1, vec![Some(k), Some(k)], Tensor::ones([2, 1], &device));
        moe.rollout(&Rk4 { substeps: 1 }, &r, ctx.clone(), &[0, 1], x0.clone(), &TIMES).unwrap()
    };
    // Same values: every expert gives the same trajectories (context slices are all equal here
    // only for expert 1 and 2, so compare those).
    let (a, b) = (to_vec(rollout(1)), to_vec(rollout(2)));
    assert!(a.iter().zip(&b).all(|(p, q)| (p - q).abs() < 1e-12));
    // Distinct parameters: a loss through expert 0 only has no gradient on experts 1 and 2.
    let grads = rollout(0).sum().backward();
    let ids: Vec<Vec<String>> = moe
        .experts
        .iter()
        .map(|e| {
            let mut v = Vec::new();
            e.visit(&mut IdCollector(&mut v));
            v
        })
        .collect();
    assert!(ids[0].iter().all(|id| !ids[1].contains(id) && !ids[2].contains(id)), "parameter ids are shared");
    let grad_of = |k: usize| {
        let mut found = false;
        moe.experts[k].visit(&mut GradProbe { grads: &grads, found: &mut found });
        found
    };
    assert!(grad_of(0));
    assert!(!grad_of(1) && !grad_of(2), "experts not routed must not receive gradient");
}

struct IdCollector<'a>(&'a mut Vec<String>);

impl<B: Backend> burn::module::ModuleVisitor<B> for IdCollector<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push(param.id.to_string());
    }
}

struct GradProbe<'a> {
    grads: &'a <AB as burn::tensor::backend::AutodiffBackend>::Gradients,
    found: &'a mut bool,
}

impl burn::module::ModuleVisitor<AB> for GradProbe<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
        *self.found |= param.val().grad(self.grads).is_some();
    }
}
