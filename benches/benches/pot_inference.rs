//! Inference of the operator transformer, burn-flex f32: MoE-POT (16 routed experts top 4 plus
//! 2 shared in every block) against the dense models of its active and of its total parameters,
//! on a batch of 8 samples of 4 frames of 64 x 64 with 2 channels (patch 4: 16 x 16 tokens), at
//! the width of the `pde-pretrain` experiment (64) and at a wider 256 where the channel MLPs
//! dominate the cost, as at MoE-POT's published sizes. Results: docs/benchmarks.md.

use burn::backend::Flex;
use burn::tensor::Tensor;
use criterion::{Criterion, criterion_group, criterion_main};
use mixer_benches::pot_variants;
use mixer_core::{Mode, Seeds};

fn pot_inference(c: &mut Criterion) {
    let device = Default::default();
    let mut group = c.benchmark_group("pot_inference_64x64_batch8");
    group.sample_size(10);
    for width in [64, 256] {
        for (name, settings) in pot_variants(width) {
            let model = settings.init::<Flex>(2, [64, 64], &mut Seeds::new(0).stream("init"), &device).expect("fits");
            let x = Tensor::<Flex, 5>::random([8, 4, 2, 64, 64], burn::tensor::Distribution::Default, &device);
            let mut rng = Seeds::new(0).stream("route");
            group.bench_function(format!("{name}/width-{width}"), |b| {
                b.iter(|| model.forward(x.clone(), Mode::Eval, &mut rng).expect("fits").prediction.into_data())
            });
        }
    }
    group.finish();
}

criterion_group!(benches, pot_inference);
criterion_main!(benches);
