//! Field runs: a resumed run repeats an uninterrupted one, bad settings are refused, and the
//! spatial mixture separates two diffusivity regions and learns their stencils exactly.

use burn::backend::{Autodiff, NdArray};
use burn::module::AutodiffModule;
use mixer_core::Seeds;
use mixer_data::{HeatRegionsSpec, generate_heat_regions};
use mixer_experts::{ErrorCriterion, FieldModelConfig, LcnSettings, SmoeSettings};
use mixer_train::{FieldEval, FieldRunConfig, FieldTrainSettings, evaluate_field, train_field};
use ndarray::Array2;

type B = Autodiff<NdArray<f64>>;

/// One training at a time: burn-autodiff's graph bookkeeping is shared by the threads of a
/// process, and concurrent backward passes have been seen to drop another test's gradients.
static AUTODIFF: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    AUTODIFF.lock().unwrap_or_else(|e| e.into_inner())
}

/// A 12 x 12 grid: left half diffusivity 0.25, right half 0.025.
fn halves(runs: usize, frames: usize) -> mixer_data::FieldDir {
    stripes(&[0.25, 0.025], runs, frames)
}

/// A 12 x 12 grid of vertical stripes of equal width, one per diffusivity.
fn stripes(diffusivity: &[f64], runs: usize, frames: usize) -> mixer_data::FieldDir {
    let width = 12 / diffusivity.len();
    let map = Array2::from_shape_fn((12, 12), |(_, j)| j / width);
    let spec = HeatRegionsSpec {
        size: 12,
        diffusivity: diffusivity.to_vec(),
        frames,
        train_runs: runs,
        val_runs: 2,
        test_runs: 2,
        ..HeatRegionsSpec::quick()
    };
    generate_heat_regions(&spec, &map, 7).unwrap()
}

fn settings(steps: usize, lr: f64) -> FieldTrainSettings {
    FieldTrainSettings {
        lr,
        eps: 1e-8,
        batch: 8,
        steps,
        eval_every: 10,
        val_pairs: 16,
        plateau: 0,
        checkpoint_every: 10,
    }
}

#[test]
fn a_resumed_run_repeats_an_uninterrupted_one_and_other_configs_are_refused() {
    let _serial = serial();
    let data = halves(4, 6);
    let dir = tempfile::tempdir().unwrap();
    let lcn = FieldModelConfig::Lcn(LcnSettings::default());
    let straight = FieldRunConfig { model: lcn.clone(), train: settings(30, 1e-2) };
    let device = Default::default();
    let (_, a) = train_field::<B>(&straight, &data, &dir.path().join("a"), 3, false, &device).unwrap();
    let first = FieldRunConfig { model: lcn.clone(), train: settings(10, 1e-2) };
    train_field::<B>(&first, &data, &dir.path().join("b"), 3, false, &device).unwrap();
    let (_, b) = train_field::<B>(&straight, &data, &dir.path().join("b"), 3, false, &device).unwrap();
    assert_eq!(a.curve, b.curve, "the same validation curve, digit for digit");
    assert_eq!((a.step, a.best_step), (b.step, b.best_step));
    let other = FieldRunConfig { model: lcn, train: settings(30, 2e-2) };
    let err = train_field::<B>(&other, &data, &dir.path().join("b"), 3, false, &device).unwrap_err();
    assert!(err.to_string().contains("another config"), "{err}");
    let bad = FieldRunConfig { model: FieldModelConfig::Lcn(LcnSettings::default()), train: settings(0, 1e-2) };
    let err = train_field::<B>(&bad, &data, &dir.path().join("c"), 3, false, &device).unwrap_err();
    assert!(err.to_string().contains("steps"), "{err}");
}

/// Trains the mixture `smoe` on `data` for `steps` (seed 1) in `dir` and scores it.
fn train_and_score(data: &mixer_data::FieldDir, smoe: SmoeSettings, steps: usize, dir: &std::path::Path) -> FieldEval {
    let config = FieldRunConfig { model: FieldModelConfig::Smoe(smoe), train: settings(steps, 1e-2) };
    let device = Default::default();
    let (model, _) = train_field::<B>(&config, data, dir, 1, false, &device).unwrap();
    evaluate_field(&model.valid(), data, 5, 16, &mut Seeds::new(1).stream("eval"), &device).unwrap()
}

#[test]
fn the_spatial_mixture_separates_two_diffusivity_regions() {
    let _serial = serial();
    let data = halves(6, 8);
    let dir = tempfile::tempdir().unwrap();
    let eval = train_and_score(&data, SmoeSettings { experts: 2, ..Default::default() }, 3000, dir.path());
    let m = &eval.metrics;
    // The expert map is the region map (up to renaming) and the stencils are exact.
    assert_eq!((m.gate_ari, m.gate_iou), (Some(1.0), Some(1.0)), "{m:?}\n{:?}", eval.expert_map);
    assert!(m.percent_close > 99.9 && m.mse < 1e-12, "{m:?}");
    assert!(m.mse_by_region.iter().all(|&v| v < 1e-12) && m.rollout_mse.len() == 5, "{m:?}");
    // The quantiles of the published heat command (0.3) leave the second expert untrained here.
    let published =
        SmoeSettings { experts: 2, damping_quantile: Some(0.3), rc_quantile: Some(0.3), ..Default::default() };
    let eval = train_and_score(&data, published, 3000, &dir.path().join("q03"));
    assert!(eval.metrics.gate_ari.unwrap() < 0.9 && eval.metrics.mse > 1e-6, "{:?}", eval.metrics);
}

#[test]
fn the_best_expert_criterion_separates_two_diffusivity_regions() {
    let _serial = serial();
    let data = halves(6, 8);
    let dir = tempfile::tempdir().unwrap();
    let smoe = SmoeSettings { experts: 2, criterion: ErrorCriterion::Best, ..Default::default() };
    let eval = train_and_score(&data, smoe, 1500, dir.path());
    let m = &eval.metrics;
    assert_eq!((m.gate_ari, m.gate_iou), (Some(1.0), Some(1.0)), "{m:?}\n{:?}", eval.expert_map);
    assert!(m.percent_close > 99.9 && m.mse < 1e-12, "{m:?}");
}
