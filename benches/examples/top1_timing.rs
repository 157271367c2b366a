//! Where the time of a top-1 mixture rollout goes: one rollout per expert
//! (`MixtureOfExperts::rollout_rows_by` with `Dispatch::PerExpert`), one stacked rollout of all GEPS
//! experts (`Dispatch::Stacked`) and the fused host rollout with its hand-written backward pass
//! (`Dispatch::Fused`, the default), forward and backward on burn-flex autodiff f32
//! (and forward only without autodiff). 10 experts (width 64, depth 3, dim 2, context 4 each),
//! RK4 with one substep over 20 time points (0.05 apart); "balanced" gives each expert one environment of
//! `rows` rows, "skewed" gives expert 0 five of them (the stacked rollout pads every expert to
//! 5 `rows`).
//!
//! `cargo run --release -p mixer-benches --example top1_timing -- [rows] [reps] [points]`
//! (defaults 32, 5 and 20).

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, ElementConversion, Tensor};
use mixer_benches::median_seconds;
use mixer_core::{Integrator, Routing};
use mixer_experts::{AnyExpert, Dispatch, ExpertConfig, MixtureOfExperts, Rows};
use mixer_ode::Rk4;

const EXPERTS: usize = 10;
const CONTEXT: usize = 4;

/// A mixture, split contexts `[envs, K c]`, a top-1 routing with gate weights, the environment
/// of each row and initial states, for environments routed to `expert_of_env`.
struct Problem<B: Backend> {
    moe: MixtureOfExperts<B, AnyExpert<B>>,
    contexts: Tensor<B, 2>,
    routing: Routing<B>,
    env_of_row: Vec<usize>,
    x0: Tensor<B, 2>,
}

fn problem<B: Backend>(expert_of_env: &[usize], rows: usize, device: &B::Device) -> Problem<B> {
    B::seed(device, 0);
    let config = ExpertConfig::Geps { width: 64, depth: 3 };
    let moe = MixtureOfExperts::init(&config, 2, CONTEXT, EXPERTS, device).expect("valid config");
    let envs = expert_of_env.len();
    let contexts = Tensor::random([envs, EXPERTS * CONTEXT], Distribution::Uniform(-0.1, 0.1), device);
    let weights = Tensor::random([envs, 1], Distribution::Uniform(0.5, 1.0), device).require_grad();
    let indices = expert_of_env.iter().map(|&k| Some(k)).collect();
    let routing = Routing { k: 1, indices, weights, shared: vec![], probs: None, aux_losses: vec![] };
    let env_of_row: Vec<usize> = (0..envs * rows).map(|r| r % envs).collect();
    let x0 = Tensor::random([envs * rows, 2], Distribution::Uniform(-1.0, 1.0), device);
    Problem { moe, contexts, routing, env_of_row, x0 }
}

fn rollout<B: Backend>(p: &Problem<B>, contexts: Tensor<B, 2>, dispatch: Dispatch, times: &[f64]) -> Tensor<B, 3> {
    let rk4: &dyn Integrator<B> = &Rk4 { substeps: 1 };
    let rows = Rows::new(&p.env_of_row, p.x0.clone(), times);
    p.moe.rollout_rows_by(rk4, &p.routing, contexts, rows, dispatch).expect("rollout succeeds")
}

const DISPATCHES: [Dispatch; 3] = [Dispatch::PerExpert, Dispatch::Stacked, Dispatch::Fused];

/// One forward and backward pass of `mean(y^2)`; returns the loss and the sums of the context
/// and gate-weight gradients.
fn forward_backward<B: AutodiffBackend>(p: &Problem<B>, dispatch: Dispatch, times: &[f64]) -> [f64; 3] {
    let contexts = p.contexts.clone().require_grad();
    let loss = rollout(p, contexts.clone(), dispatch, times).square().mean();
    let value = loss.clone().into_scalar().elem::<f64>();
    let grads = loss.backward();
    let sum = |g: Option<Tensor<B::InnerBackend, 2>>| g.map_or(0.0, |g| g.sum().into_scalar().elem::<f64>());
    [value, sum(contexts.grad(&grads)), sum(p.routing.weights.grad(&grads))]
}

fn case(name: &str, expert_of_env: &[usize], rows: usize, reps: usize, times: &[f64]) {
    let device = Default::default();
    let p = problem::<Autodiff<Flex>>(expert_of_env, rows, &device);
    let reference = forward_backward(&p, Dispatch::PerExpert, times);
    let mut line = format!("{name:8} {} rows, fwd+bwd autodiff:", p.env_of_row.len());
    let mut base = 0.0;
    for dispatch in DISPATCHES {
        let got = forward_backward(&p, dispatch, times);
        for (x, y) in reference.iter().zip(&got) {
            assert!((x - y).abs() <= 1e-4 * x.abs().max(1e-6), "per expert {reference:?} vs {dispatch:?} {got:?}");
        }
        let t = median_seconds(reps, || {
            forward_backward(&p, dispatch, times);
        });
        base = if dispatch == Dispatch::PerExpert { t } else { base };
        line += &format!(" {dispatch:?} {:7.1} ms ({:4.1}x)", t * 1e3, base / t);
    }
    println!("{line}");
    let p = problem::<Flex>(expert_of_env, rows, &device);
    let mut line = format!("{name:8} {} rows, forward, no autodiff:", p.env_of_row.len());
    for dispatch in DISPATCHES {
        let t = median_seconds(reps, || {
            let _ = rollout(&p, p.contexts.clone(), dispatch, times).into_data();
        });
        base = if dispatch == Dispatch::PerExpert { t } else { base };
        line += &format!(" {dispatch:?} {:7.1} ms ({:4.1}x)", t * 1e3, base / t);
    }
    println!("{line}");
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let rows = args.first().copied().unwrap_or(32);
    let reps = args.get(1).copied().unwrap_or(5).max(1);
    let points = args.get(2).copied().unwrap_or(20).max(2);
    let times: Vec<f64> = (0..points).map(|k| k as f64 * 0.05).collect();
    let balanced: Vec<usize> = (0..EXPERTS).collect();
    case("balanced", &balanced, rows, reps, &times);
    let skewed: Vec<usize> = [0; 4].into_iter().chain(0..EXPERTS).collect();
    case("skewed", &skewed, rows, reps, &times);
}
