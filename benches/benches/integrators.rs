//! Forward plus backward of a 2-D GEPS expert field (width 64, 3 layers, context 4) over 100 RK4
//! steps for a batch of 256, on burn-flex and burn-ndarray (f32); and adaptive Tsit5 (rtol 1e-3)
//! from t = 0 to 1 on the same field. Each iteration is one training step's rollout: the field
//! reads rollout views of its parameters (`mixer_ode::anchor`), as the mixture layer does.
//! Results and how to read them: docs/benchmarks.md.

use burn::backend::{Autodiff, Flex, NdArray};
use burn::tensor::backend::AutodiffBackend;
use criterion::{Criterion, criterion_group, criterion_main};
use mixer_benches::{forward_backward, workload};
use mixer_ode::{Rk4, Tsit5};

fn bench_backend<B: AutodiffBackend>(c: &mut Criterion, name: &str) {
    let device = Default::default();
    let (field, y0) = workload::<B>(256, &device);
    let field = mixer_benches::BenchField { expert: field.expert, ctx: field.ctx.require_grad() };
    let times: Vec<f64> = (0..=100).map(|k| k as f64 * 0.01).collect();
    let mut group = c.benchmark_group("rk4_100_steps_batch_256");
    group.sample_size(10);
    group.bench_function(name, |b| b.iter(|| forward_backward(&field, y0.clone(), &Rk4 { substeps: 1 }, &times)));
    group.finish();
    let mut group = c.benchmark_group("tsit5_rtol1e-3_t1_batch_256");
    group.sample_size(10);
    let short = [0.0, 0.5, 1.0];
    group.bench_function(name, |b| b.iter(|| forward_backward(&field, y0.clone(), &Tsit5::new(1e-3, 1e-6), &short)));
    group.finish();
}

fn integrators(c: &mut Criterion) {
    bench_backend::<Autodiff<Flex>>(c, "flex");
    bench_backend::<Autodiff<NdArray>>(c, "ndarray");
}

criterion_group!(benches, integrators);
criterion_main!(benches);
