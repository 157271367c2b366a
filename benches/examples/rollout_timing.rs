//! Where the time of the integrator bench goes: one field evaluation without autodiff, and a
//! rollout with its backward pass that reads the parameter leaves at every evaluation ("leaves",
//! the old bench) or their rollout views ("views", what the mixture layer and the bench do now).
//!
//! `cargo run --release -p mixer-benches --example rollout_timing -- [steps] [batch]`
//! (defaults 100 and 256, the bench's workload).

use burn::backend::{Autodiff, Flex, NdArray};
use burn::tensor::backend::{AutodiffBackend, Backend};
use mixer_benches::{forward_backward, forward_backward_of, median_seconds, workload};
use mixer_core::VectorField;
use mixer_ode::{Rk4, Tsit5};

fn inference<B: Backend>(name: &str, batch: usize) {
    let device = Default::default();
    let (field, y0) = workload::<B>(batch, &device);
    let eval = median_seconds(21, || {
        let _ = field.eval(0.0, y0.clone()).into_data();
    });
    println!("{name:8} one evaluation, no autodiff: {:7.3} ms", eval * 1e3);
}

fn training<B: AutodiffBackend>(name: &str, steps: usize, batch: usize) {
    let device = Default::default();
    let (field, y0) = workload::<B>(batch, &device);
    let field = mixer_benches::BenchField { expert: field.expert, ctx: field.ctx.require_grad() };
    let times: Vec<f64> = (0..=steps).map(|k| k as f64 * 0.01).collect();
    let rk4 = Rk4 { substeps: 1 };
    let leaves = median_seconds(3, || {
        forward_backward_of(&field, &field, y0.clone(), &rk4, &times);
    });
    let views = median_seconds(3, || {
        forward_backward(&field, y0.clone(), &rk4, &times);
    });
    let evals = (4 * steps) as f64;
    println!(
        "{name:8} rk4 {steps} steps fwd+bwd: leaves {:8.1} ms ({:.2} ms/eval), views {:8.1} ms ({:.2} ms/eval), ratio {:.1}",
        leaves * 1e3,
        leaves * 1e3 / evals,
        views * 1e3,
        views * 1e3 / evals,
        leaves / views
    );
    let tsit5 = Tsit5::new(1e-3, 1e-6);
    let short = [0.0, 0.5, 1.0];
    let leaves = median_seconds(3, || {
        forward_backward_of(&field, &field, y0.clone(), &tsit5, &short);
    });
    let views = median_seconds(3, || {
        forward_backward(&field, y0.clone(), &tsit5, &short);
    });
    println!(
        "{name:8} tsit5 t=1 fwd+bwd:       leaves {:8.1} ms, views {:8.1} ms, ratio {:.1}",
        leaves * 1e3,
        views * 1e3,
        leaves / views
    );
    // same gradient either way
    let (a, b) =
        (forward_backward_of(&field, &field, y0.clone(), &rk4, &times), forward_backward(&field, y0, &rk4, &times));
    assert!((a - b).abs() <= 1e-6 * a.abs().max(1e-12), "gradients differ: {a} vs {b}");
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let steps = args.first().copied().unwrap_or(100);
    let batch = args.get(1).copied().unwrap_or(256);
    inference::<Flex>("flex", batch);
    inference::<NdArray>("ndarray", batch);
    training::<Autodiff<Flex>>("flex", steps, batch);
    training::<Autodiff<NdArray>>("ndarray", steps, batch);
}
