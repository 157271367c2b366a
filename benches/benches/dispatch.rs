//! Mixture rollout cost against the number of experts `E` at a fixed workload: 16 environments
//! of 4 rows, GEPS experts (width 32, 3 layers, dim 2, context 4), 10 RK4 steps, forward and
//! backward on burn-flex autodiff f32. Three routings, each dispatched fused (the default: a
//! host rollout with its own backward pass), stacked (one batched tensor pass of every expert
//! over the rows, or (row, slot) pairs, routed to it), per expert (each expert on its rows
//! alone) and dense (every routed expert on every row, masked):
//! top-1 (environment `e` to expert `e mod E`), top-2 (`e mod E` and `e + 1 mod E`, weights
//! 0.6 / 0.4) and shared + routed (top-1 over the first `E - 1`, the last one always on, weight
//! 1/2). Sparse work is fixed by the rows, so its time should stay flat in `E` while the dense
//! time grows with the number of experts that have any unit. Results: docs/benchmarks.md.

use burn::backend::{Autodiff, Flex};
use burn::tensor::ops::Device;
use burn::tensor::{Distribution, Tensor};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use mixer_core::{Integrator, Routing};
use mixer_experts::{AnyExpert, Dispatch, ExpertConfig, MixtureOfExperts, Rows};
use mixer_ode::Rk4;

type B = Autodiff<Flex>;

const ENVS: usize = 16;
const ROWS: usize = 4;
const CONTEXT: usize = 4;

/// The routings compared (see the module comment).
const ROUTINGS: [&str; 3] = ["top1", "top2", "shared+routed"];

fn routing(name: &str, experts: usize, device: &Device<B>) -> Routing<B> {
    let (k, indices, weights, shared) = match name {
        "top1" => (1, (0..ENVS).map(|e| Some(e % experts)).collect(), vec![1.0; ENVS], vec![]),
        "top2" => (
            2,
            (0..ENVS).flat_map(|e| [Some(e % experts), Some((e + 1) % experts)]).collect(),
            (0..ENVS).flat_map(|_| [0.6, 0.4]).collect(),
            vec![],
        ),
        _ => (1, (0..ENVS).map(|e| Some(e % (experts - 1))).collect(), vec![0.5; ENVS], vec![(experts - 1, 0.5)]),
    };
    let weights = Tensor::<B, 1>::from_floats(weights.as_slice(), device).reshape([ENVS, k]).require_grad();
    Routing { k, indices, weights, shared, probs: None, aux_losses: vec![] }
}

fn dispatch(c: &mut Criterion) {
    let device = Default::default();
    let times: Vec<f64> = (0..=10).map(|k| k as f64 * 0.1).collect();
    let env_of_row: Vec<usize> = (0..ENVS * ROWS).map(|r| r % ENVS).collect();
    let rk4: &dyn Integrator<B> = &Rk4 { substeps: 1 };
    for name in ROUTINGS {
        let mut group = c.benchmark_group(format!("mixture_{name}"));
        group.sample_size(10);
        for experts in [2, 4, 8, 16] {
            <B as burn::tensor::backend::Backend>::seed(&device, 0);
            let config = ExpertConfig::Geps { width: 32, depth: 3 };
            let moe: MixtureOfExperts<B, AnyExpert<B>> =
                MixtureOfExperts::init(&config, 2, CONTEXT, experts, &device).expect("valid config");
            let contexts = Tensor::<B, 2>::random([ENVS, experts * CONTEXT], Distribution::Uniform(-0.1, 0.1), &device);
            let x0 = Tensor::<B, 2>::random([ENVS * ROWS, 2], Distribution::Uniform(-1.0, 1.0), &device);
            let r = routing(name, experts, &device);
            let dispatches = [
                ("fused", Dispatch::Fused),
                ("stacked", Dispatch::Stacked),
                ("per-expert", Dispatch::PerExpert),
                ("dense", Dispatch::Dense),
            ];
            for (label, how) in dispatches {
                group.bench_with_input(BenchmarkId::new(label, experts), &experts, |b, _| {
                    b.iter(|| {
                        let rows = Rows::new(&env_of_row, x0.clone(), &times);
                        let y = moe.rollout_rows_by(rk4, &r, contexts.clone().require_grad(), rows, how).unwrap();
                        y.square().mean().backward()
                    })
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
