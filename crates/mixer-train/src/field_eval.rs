//! Scores of a one-step field operator on the test runs: MSE (overall and inside each region),
//! percent close, a free-running rollout's error over time, and how well a mixture's expert map
//! recovers the true regions (adjusted Rand index, IoU after matching experts to regions).

use burn::tensor::backend::Backend;
use ndarray::{Array2, Array3};
use serde::{Deserialize, Serialize};

use mixer_core::{Rng, host};
use mixer_data::{FieldDir, FieldSet};
use mixer_experts::FieldModel;

use crate::TrainError;
use crate::field_train::{field_batch, field_pairs};
use crate::metrics::{adjusted_rand_index, fraction_close, matched_iou};

/// Relative tolerance of the percent-close metric (1 %).
pub const CLOSE_RTOL: f64 = 0.01;

/// The scores of a field run (`metrics.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldMetrics {
    /// One-step MSE over every test pair.
    pub mse: f64,
    /// One-step MSE inside each region (empty without a region map).
    pub mse_by_region: Vec<f64>,
    /// Percent of test points predicted within 1 % relative error.
    pub percent_close: f64,
    /// Free-running rollout MSE after each step, averaged over the test runs.
    pub rollout_mse: Vec<f64>,
    /// Adjusted Rand index of the expert map against the region map (mixtures with a map).
    pub gate_ari: Option<f64>,
    /// Mean IoU of regions and their matched experts (mixtures with a map).
    pub gate_iou: Option<f64>,
    /// Trainable parameters.
    pub parameters: usize,
}

/// Scores plus the arrays the figures draw.
#[derive(Clone, Debug)]
pub struct FieldEval {
    /// The scores.
    pub metrics: FieldMetrics,
    /// Mean absolute one-step error at each grid point, first channel `[H, W]`.
    pub error_map: Array2<f64>,
    /// The top-1 expert of each location (mixtures).
    pub expert_map: Option<Array2<usize>>,
    /// The free-running rollout.
    pub rollout: Rollout,
}

/// A free-running rollout of the test runs.
#[derive(Clone, Debug)]
pub struct Rollout {
    /// MSE after each step, mean over the runs.
    pub mse: Vec<f64>,
    /// Run 0, first channel, the truth `[steps + 1, H, W]`.
    pub truth: Array3<f64>,
    /// Run 0, first channel, the prediction `[steps + 1, H, W]`.
    pub prediction: Array3<f64>,
}

/// Scores `model` on the test split of `data`: every one-step pair, and a free-running rollout of
/// up to `rollout_steps` steps from the first frame of every test run.
pub fn evaluate_field<B: Backend>(
    model: &FieldModel<B>,
    data: &FieldDir,
    rollout_steps: usize,
    batch: usize,
    rng: &mut Rng,
    device: &B::Device,
) -> Result<FieldEval, TrainError> {
    let set = &data.test;
    let (h, w) = set.grid();
    let c = set.channels();
    let hw = h * w;
    let pairs = field_pairs(set);
    let mut sq_by_point = vec![0.0; hw];
    let mut abs_by_point = vec![0.0; hw];
    let (mut sq_total, mut close_total, mut points) = (0.0, 0.0, 0usize);
    for chunk in pairs.chunks(batch.max(1)) {
        let next: Vec<(usize, usize)> = chunk.iter().map(|&(r, f)| (r, f + 1)).collect();
        let pred = host::to_vec(model.forward(field_batch::<B>(set, chunk, device), rng)?);
        let truth = host::to_vec(field_batch::<B>(set, &next, device));
        close_total += fraction_close(&pred, &truth, CLOSE_RTOL) * pred.len() as f64;
        points += pred.len();
        for (i, (p, t)) in pred.iter().zip(&truth).enumerate() {
            let e = p - t;
            sq_total += e * e;
            sq_by_point[i % hw] += e * e / c as f64;
            if (i / hw) % c == 0 {
                abs_by_point[i % hw] += e.abs();
            }
        }
    }
    let n_pairs = pairs.len().max(1) as f64;
    let error_map =
        Array2::from_shape_vec((h, w), abs_by_point.iter().map(|v| v / n_pairs).collect()).expect("h * w points");
    let expert_map = model.expert_map(field_batch::<B>(set, &pairs[..1], device))?;
    let (mse_by_region, gate_ari, gate_iou) = match &data.regions {
        Some(regions) => {
            let truth: Vec<usize> = regions.iter().copied().collect();
            let regions_n = truth.iter().max().map_or(0, |m| m + 1);
            let mut sums = vec![(0.0, 0usize); regions_n];
            for (p, &r) in truth.iter().enumerate() {
                sums[r].0 += sq_by_point[p];
                sums[r].1 += 1;
            }
            let by_region = sums.iter().map(|&(s, n)| s / (n.max(1) as f64 * n_pairs)).collect();
            let (ari, iou) = match &expert_map {
                Some(map) => {
                    let labels: Vec<usize> = map.iter().copied().collect();
                    (Some(adjusted_rand_index(&truth, &labels)), Some(matched_iou(&truth, &labels).0))
                }
                None => (None, None),
            };
            (by_region, ari, iou)
        }
        None => (vec![], None, None),
    };
    let rollout = free_run(model, set, rollout_steps, rng, device)?;
    let metrics = FieldMetrics {
        mse: sq_total / points.max(1) as f64,
        mse_by_region,
        percent_close: 100.0 * close_total / points.max(1) as f64,
        rollout_mse: rollout.mse.clone(),
        gate_ari,
        gate_iou,
        parameters: model.parameter_count(),
    };
    Ok(FieldEval { metrics, error_map, expert_map, rollout })
}

/// Applies `model` to its own output for up to `steps` steps from frame 0 of every run of `set`;
/// returns the MSE after each step (mean over runs) with run 0's truth and prediction.
pub fn free_run<B: Backend>(
    model: &FieldModel<B>,
    set: &FieldSet,
    steps: usize,
    rng: &mut Rng,
    device: &B::Device,
) -> Result<Rollout, TrainError> {
    let steps = steps.min(set.frames() - 1);
    let runs = set.runs();
    let (h, w) = set.grid();
    let first: Vec<(usize, usize)> = (0..runs).map(|r| (r, 0)).collect();
    let mut state = field_batch::<B>(set, &first, device);
    let mut truth0 = Array3::zeros((steps + 1, h, w));
    let mut pred0 = Array3::zeros((steps + 1, h, w));
    let first_channel = |values: &[f64]| Array2::from_shape_vec((h, w), values[..h * w].to_vec()).expect("h * w");
    let start = host::to_vec(state.clone());
    truth0.index_axis_mut(ndarray::Axis(0), 0).assign(&first_channel(&start));
    pred0.index_axis_mut(ndarray::Axis(0), 0).assign(&first_channel(&start));
    let mut mse = Vec::with_capacity(steps);
    for step in 1..=steps {
        state = model.forward(state, rng)?;
        let frames: Vec<(usize, usize)> = (0..runs).map(|r| (r, step)).collect();
        let truth = host::to_vec(field_batch::<B>(set, &frames, device));
        let pred = host::to_vec(state.clone());
        if pred.iter().any(|v| !v.is_finite()) {
            return Err(mixer_core::Error::NonFiniteState { t: step as f64 * set.dt }.into());
        }
        mse.push(pred.iter().zip(&truth).map(|(p, t)| (p - t) * (p - t)).sum::<f64>() / pred.len() as f64);
        truth0.index_axis_mut(ndarray::Axis(0), step).assign(&first_channel(&truth));
        pred0.index_axis_mut(ndarray::Axis(0), step).assign(&first_channel(&pred));
    }
    Ok(Rollout { mse, truth: truth0, prediction: pred0 })
}
