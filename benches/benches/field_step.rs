//! One training step (forward, backward, Adam update) of each heat-regions model on a batch of
//! 16 fields of 64 x 64, burn-flex autodiff f32: the spatial mixture of experts (3 experts,
//! latent gate, RC loss and damping) against the dense CNN, CoordConv and the locally connected
//! layer of the `heat-regions` experiment. An epoch of the quick profile is 300 such steps
//! (4800 pairs); multiply by 300 for seconds per epoch. Results: docs/benchmarks.md.

use burn::backend::{Autodiff, Flex};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use criterion::{Criterion, criterion_group, criterion_main};
use mixer_core::Seeds;
use mixer_data::{HeatRegionsSpec, generate_heat_regions_grown};
use mixer_experts::FieldModelConfig;
use mixer_train::{field_batch, field_pairs};

type B = Autodiff<Flex>;

fn field_step(c: &mut Criterion) {
    let device = Default::default();
    let spec = HeatRegionsSpec { train_runs: 2, val_runs: 1, test_runs: 1, ..HeatRegionsSpec::quick() };
    let data = generate_heat_regions_grown(&spec, 1).expect("valid spec");
    let pairs: Vec<(usize, usize)> = field_pairs(&data.train).into_iter().take(16).collect();
    let next: Vec<(usize, usize)> = pairs.iter().map(|&(r, f)| (r, f + 1)).collect();
    let x = field_batch::<B>(&data.train, &pairs, &device);
    let y = field_batch::<B>(&data.train, &next, &device);
    let mut group = c.benchmark_group("field_step_64x64_batch16");
    group.sample_size(10);
    for kind in ["smoe", "cnn", "coord-conv", "lcn"] {
        let config: FieldModelConfig = defaults_of(kind);
        let mut model = Some(config.init::<B>(1, [64, 64], &mut Seeds::new(0).stream("model"), &device).expect("fits"));
        let mut optim = AdamConfig::new().with_epsilon(1e-8).init();
        let mut rng = Seeds::new(0).stream("route");
        group.bench_function(kind, |b| {
            b.iter(|| {
                let m = model.take().expect("the model is put back after each step");
                let out = m.train_loss(x.clone(), y.clone(), &mut rng).expect("finite");
                let grads = GradientsParams::from_grads(out.loss.backward(), &m);
                model = Some(optim.step(1e-3, m, grads));
            })
        });
    }
    group.finish();
}

/// The default settings of a field model kind.
fn defaults_of(kind: &str) -> FieldModelConfig {
    let defaults = match kind {
        "smoe" => FieldModelConfig::Smoe(Default::default()),
        "cnn" => FieldModelConfig::Cnn(Default::default()),
        "coord-conv" => FieldModelConfig::CoordConv(Default::default()),
        _ => FieldModelConfig::Lcn(Default::default()),
    };
    assert_eq!(defaults.kind(), kind);
    defaults
}

criterion_group!(benches, field_step);
criterion_main!(benches);
