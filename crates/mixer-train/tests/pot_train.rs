//! Operator runs on a mix of two PDE families (2-D Burgers, two channels; heat diffusion, one
//! channel): pre-training lowers the loss and the routers tell the families apart, a resumed run
//! repeats an uninterrupted one, fine-tuning leaves the routers untouched, and bad input is
//! refused with the field named.

use burn::backend::{Autodiff, NdArray};
use burn::module::AutodiffModule;
use indicatif::ProgressBar;
use mixer_data::{BurgersSpec, HeatRegionsSpec, generate_burgers, generate_heat_regions};
use mixer_experts::{ChannelSettings, MoeMlpSettings, PotSettings};
use mixer_routers::{RouterConfig, SharedRoutedSettings};
use mixer_train::{PotFamily, PotMix, PotRunConfig, PotTrainSettings, Stage, evaluate_pot, train_pot};
use ndarray::Array2;

type B = Autodiff<NdArray<f64>>;

/// One training at a time (see tests/field_train.rs).
static AUTODIFF: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    AUTODIFF.lock().unwrap_or_else(|e| e.into_inner())
}

/// Burgers and heat diffusion on 8 x 8 grids, 8 frames, 6 / 2 / 2 runs.
fn mix() -> PotMix {
    // A viscosity the 8-point grid resolves (see BURGERS_RESOLUTION).
    let burgers = BurgersSpec {
        size: 8,
        viscosity: vec![2e-2, 5e-3],
        amplitude: 0.1,
        frames: 8,
        train_runs: 24,
        val_runs: 2,
        test_runs: 2,
        ..BurgersSpec::quick()
    };
    let burgers = generate_burgers(&burgers, 1, &ProgressBar::hidden()).unwrap();
    let heat =
        HeatRegionsSpec { size: 8, frames: 8, train_runs: 24, val_runs: 2, test_runs: 2, ..HeatRegionsSpec::quick() };
    let map = Array2::from_shape_fn((8, 8), |(_, j)| usize::from(j >= 4));
    let heat = generate_heat_regions(&heat, &map, 2).unwrap();
    PotMix::new(vec![
        PotFamily { name: "burgers".into(), data: burgers },
        PotFamily { name: "heat".into(), data: heat },
    ])
    .unwrap()
}

fn model() -> PotSettings {
    let router = RouterConfig::SharedRouted(SharedRoutedSettings { top_k: 2, shared: 1, ..Default::default() });
    PotSettings {
        frames: 2,
        patch: 2,
        width: 16,
        depth: 2,
        afno_blocks: 2,
        norm_groups: 4,
        channel: ChannelSettings::Moe(MoeMlpSettings { mlp_ratio: 1, experts: 5, router }),
        ..PotSettings::default()
    }
}

fn config(steps: usize, stage: Stage) -> PotRunConfig {
    let train = PotTrainSettings {
        lr: 1e-2,
        batch: 8,
        steps,
        eval_every: 10,
        val_windows: 16,
        checkpoint_every: 10,
        ..Default::default()
    };
    PotRunConfig { model: model(), train, stage, families: vec!["burgers".into(), "heat".into()] }
}

#[test]
fn pretraining_learns_both_families_and_the_routers_tell_them_apart() {
    let _serial = serial();
    let mix = mix();
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    let (best, state) =
        train_pot::<B>(&config(400, Stage::Pretrain), &mix, dir.path(), 1, None, false, &device).unwrap();
    let first = state.curve[0].val_mse;
    let last = state.best_val.unwrap();
    assert!(last < 0.7 * first, "validation loss {first:.3e} -> {last:.3e}");
    let metrics = evaluate_pot(&best.valid(), &mix, 4, 32, 16, &device).unwrap();
    assert_eq!(metrics.families.len(), 2);
    // Better than persisting the last frame: by 40 % on Burgers, 15 % on the slow heat fields.
    for (f, margin) in metrics.families.iter().zip([0.6, 0.85]) {
        assert!(
            f.one_step < margin * f.persistence,
            "{}: {} against persistence {}",
            f.family,
            f.one_step,
            f.persistence
        );
        assert_eq!(f.rollout.len(), 4);
    }
    let best_block = metrics.best_router_accuracy().unwrap();
    assert!(best_block >= 0.9, "router accuracy by block {:?}", metrics.router_accuracy);
    assert_eq!(metrics.family_expert.len(), 2);
    assert!(metrics.active_parameters < metrics.parameters);
}

#[test]
fn a_resumed_run_repeats_an_uninterrupted_one_and_fine_tuning_keeps_the_routers() {
    let _serial = serial();
    let mix = mix();
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    // A constant learning rate, so that a budget grown from 10 to 20 steps follows the
    // schedule of a 20-step run.
    let constant = |steps| {
        let mut c = config(steps, Stage::Pretrain);
        c.train.final_lr_ratio = 1.0;
        c
    };
    let (_, a) = train_pot::<B>(&constant(20), &mix, &dir.path().join("a"), 3, None, false, &device).unwrap();
    train_pot::<B>(&constant(10), &mix, &dir.path().join("b"), 3, None, false, &device).unwrap();
    let (_, b) = train_pot::<B>(&constant(20), &mix, &dir.path().join("b"), 3, None, false, &device).unwrap();
    assert_eq!(a.curve, b.curve, "the same validation curve, digit for digit");
    assert_eq!(a.routers, b.routers, "the same router temperatures");
    let mut other = constant(20);
    other.train.lr = 5e-3;
    let err = train_pot::<B>(&other, &mix, &dir.path().join("b"), 3, None, false, &device).unwrap_err();
    assert!(err.to_string().contains("another config"), "{err}");

    // Fine-tuning on one family: the routers' weights do not move.
    let (pre, _) = train_pot::<B>(&constant(20), &mix, &dir.path().join("a"), 3, None, false, &device).unwrap();
    let heat = mix.select(&["heat".into()], None).unwrap();
    let mut tune = config(10, Stage::Finetune);
    tune.families = vec!["heat".into()];
    let before = router_weights(&pre);
    let (tuned, _) = train_pot::<B>(&tune, &heat, &dir.path().join("tune"), 4, Some(pre), false, &device).unwrap();
    assert_eq!(before, router_weights(&tuned));
    let err = mix.select(&["wave".into()], None).unwrap_err().to_string();
    assert!(err.contains("wave") && err.contains("burgers, heat"), "{err}");
}

/// Every router weight of a model, flattened.
fn router_weights(model: &mixer_experts::OperatorTransformer<B>) -> Vec<f64> {
    model.router_weights().into_iter().flat_map(mixer_core::host::to_vec).collect()
}

#[test]
fn bad_input_is_refused_with_the_field_named() {
    let _serial = serial();
    let mix = mix();
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    let mut odd = config(5, Stage::Pretrain);
    odd.model.patch = 3;
    let err = train_pot::<B>(&odd, &mix, &dir.path().join("a"), 1, None, false, &device).unwrap_err().to_string();
    assert!(err.contains("patch") && err.contains("8 x 8"), "{err}");
    let mut long = config(5, Stage::Pretrain);
    long.model.frames = 8;
    let err = train_pot::<B>(&long, &mix, &dir.path().join("b"), 1, None, false, &device).unwrap_err().to_string();
    assert!(err.contains("frames"), "{err}");
    let mut bad = mix.families()[1].data.clone();
    bad.train.fields[[0, 1, 2, 3, 0]] = f32::NAN;
    let err = PotMix::new(vec![PotFamily { name: "heat".into(), data: bad }]).unwrap_err().to_string();
    assert!(err.to_lowercase().contains("finite") || err.contains("NaN"), "{err}");
}
