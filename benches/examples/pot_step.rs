//! Where a training step of the `pde-pretrain` quick models goes: forward, backward and the Adam
//! update of MoE-POT and its dense twins on a batch of 16 samples of 4 frames of 32 x 32 with 2
//! channels (patch 4: 8 x 8 tokens), width 48, burn-flex f32 under autodiff.
//!
//! `cargo run --release -p mixer-benches --example pot_step -- [steps]` (default 20).

use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::{Distribution, Tensor};
use mixer_benches::{median_seconds, pot_variants};
use mixer_core::{Mode, Seeds};

type B = Autodiff<Flex>;

fn main() {
    let steps: usize = std::env::args().nth(1).map_or(20, |s| s.parse().expect("steps"));
    let device = Default::default();
    for (name, settings) in pot_variants(48) {
        let mut model = settings.init::<B>(2, [32, 32], &mut Seeds::new(0).stream("init"), &device).expect("fits");
        let mut optim = AdamConfig::new().init::<B, _>();
        let x = Tensor::<B, 5>::random([16, 4, 2, 32, 32], Distribution::Default, &device);
        let target = Tensor::<B, 4>::random([16, 2, 32, 32], Distribution::Default, &device);
        let mut rng = Seeds::new(0).stream("route");
        let forward = median_seconds(steps, || {
            let _ = model.forward(x.clone(), Mode::Train, &mut rng).expect("fits").prediction.into_data();
        });
        let inference = median_seconds(steps, || {
            let _ =
                model.valid().forward(x.clone().inner(), Mode::Eval, &mut rng).expect("fits").prediction.into_data();
        });
        let step = median_seconds(steps, || {
            let out = model.forward(x.clone(), Mode::Train, &mut rng).expect("fits");
            let mut loss = (out.prediction - target.clone()).powi_scalar(2).mean();
            if let Some(aux) = out.aux_loss {
                loss = loss + aux;
            }
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(1e-3, model.clone(), grads);
        });
        println!(
            "{name:13} forward (autodiff) {:6.1} ms, inference {:6.1} ms, train step {:6.1} ms",
            forward * 1e3,
            inference * 1e3,
            step * 1e3
        );
    }
}
