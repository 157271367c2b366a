//! Scores of an operator on the test runs of every family of a mix: one-step and rollout
//! relative L2 errors, inference time, and what the routers know about the families (per
//! block, the accuracy of telling a sample's family from its routing weights, and the mean
//! routing weight of every family on every expert).

use std::time::Instant;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use mixer_core::{Error, Mode, Seeds, host};
use mixer_experts::OperatorTransformer;

use crate::TrainError;
use crate::pot_train::{FrameWindow, PotMix, spread};

/// Scores of one family.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FamilyScore {
    /// The family.
    pub family: String,
    /// Mean relative L2 error of one step over every test window.
    pub one_step: f64,
    /// The same error of persistence (the last input frame as the prediction): the bar any
    /// operator must clear.
    pub persistence: f64,
    /// Mean relative L2 error after each step of a free rollout from the first frames of every
    /// test run.
    pub rollout: Vec<f64>,
}

/// The scores of an operator on a mix (`metrics.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PotMetrics {
    /// Per family, in the mix's order.
    pub families: Vec<FamilyScore>,
    /// Trainable parameters.
    pub parameters: usize,
    /// Parameters one sample uses.
    pub active_parameters: usize,
    /// Per block, the balanced accuracy (mean over families of the share of the family's test
    /// windows named right) of the nearest family centroid of the routing weights, fit on
    /// training windows; empty for a dense model.
    pub router_accuracy: Vec<f64>,
    /// Per block, family and expert: the mean routing weight on the test windows.
    pub family_expert: Vec<Vec<Vec<f64>>>,
    /// Forward seconds per sample over the one-step evaluation (median of the batches).
    pub seconds_per_sample: f64,
}

impl PotMetrics {
    /// Mean over families of the one-step relative L2.
    pub fn mean_one_step(&self) -> f64 {
        mean(self.families.iter().map(|f| f.one_step))
    }

    /// Mean over families of the relative L2 after the last rollout step.
    pub fn mean_rollout(&self) -> f64 {
        mean(self.families.iter().filter_map(|f| f.rollout.last().copied()))
    }

    /// The best block's router accuracy, if any.
    pub fn best_router_accuracy(&self) -> Option<f64> {
        self.router_accuracy.iter().copied().reduce(f64::max)
    }
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 { f64::NAN } else { sum / n as f64 }
}

/// Relative L2 error of each sample over its first `real[i]` channels, `pred` and `truth`
/// `[B, C, H, W]` flattened.
fn relative_l2(pred: &[f64], truth: &[f64], channels: usize, real: &[usize]) -> Vec<f64> {
    let per_sample = pred.len() / real.len().max(1);
    let per_channel = per_sample / channels.max(1);
    real.iter()
        .enumerate()
        .map(|(i, &r)| {
            let range = i * per_sample..i * per_sample + r * per_channel;
            let (mut err, mut norm) = (0.0, 0.0);
            for (p, t) in pred[range.clone()].iter().zip(&truth[range]) {
                err += (p - t) * (p - t);
                norm += t * t;
            }
            (err / norm.max(f64::MIN_POSITIVE)).sqrt()
        })
        .collect()
}

/// Scores `model` on the test runs of `mix` (one-step errors over every test window, rollouts of
/// up to `rollout_steps` steps, router analysis with centroids from up to `fit_windows`
/// training windows per family), in batches of `batch`.
pub fn evaluate_pot<B: Backend>(
    model: &OperatorTransformer<B>,
    mix: &PotMix,
    rollout_steps: usize,
    fit_windows: usize,
    batch: usize,
    device: &B::Device,
) -> Result<PotMetrics, TrainError> {
    let (channels, grid) = model.field_shape();
    if channels < mix.channels() || grid != mix.grid() {
        let what = "the model's (channels, grid) against the data's";
        return Err(Error::shape(what, (mix.channels(), mix.grid()), (channels, grid)).into());
    }
    let frames = model.settings().frames;
    let families = mix.families().len();
    let test = mix.windows("test", frames)?;
    let mut errors = vec![vec![]; families];
    let mut persistence = vec![vec![]; families];
    let mut routes: Vec<Vec<f64>> = vec![];
    let mut times = vec![];
    let rng = &mut Seeds::new(0).stream("eval");
    for chunk in test.chunks(batch.max(1)) {
        let data = mix.batch::<B>("test", chunk, frames, device);
        let clock = Instant::now();
        let out = model.forward(data.frames.clone(), Mode::Eval, rng)?;
        let pred = host::to_vec(out.prediction);
        times.push(clock.elapsed().as_secs_f64() / chunk.len() as f64);
        let real: Vec<usize> = chunk.iter().map(|w| mix.families()[w.family].data.test.channels()).collect();
        let target = host::to_vec(data.target);
        let rel = relative_l2(&pred, &target, mix.channels(), &real);
        chunk.iter().zip(rel).for_each(|(w, e)| errors[w.family].push(e));
        let [b, t, c, h, w] = data.frames.dims();
        let last = host::to_vec(data.frames.slice([0..b, t - 1..t]).reshape([b, c, h, w]));
        let still = relative_l2(&last, &target, mix.channels(), &real);
        chunk.iter().zip(still).for_each(|(w, e)| persistence[w.family].push(e));
        routes.resize(out.routes.len(), vec![]);
        routes.iter_mut().zip(&out.routes).for_each(|(r, o)| r.extend(&o.weights));
    }
    times.sort_by(f64::total_cmp);
    let rollouts =
        (0..families).map(|f| rollout_errors(model, mix, f, rollout_steps, device)).collect::<Result<Vec<_>, _>>()?;
    let scores = mix
        .families()
        .iter()
        .zip(errors.iter().zip(&persistence).zip(rollouts))
        .map(|(f, ((e, p), rollout))| FamilyScore {
            family: f.name.clone(),
            one_step: mean(e.iter().copied()),
            persistence: mean(p.iter().copied()),
            rollout,
        })
        .collect();
    let (router_accuracy, family_expert) = if routes.is_empty() {
        (vec![], vec![])
    } else {
        router_analysis(model, mix, &test, &routes, fit_windows, batch, device)?
    };
    Ok(PotMetrics {
        families: scores,
        parameters: model.parameter_count(),
        active_parameters: model.active_parameter_count(),
        router_accuracy,
        family_expert,
        seconds_per_sample: times.get(times.len() / 2).copied().unwrap_or(f64::NAN),
    })
}

/// Mean relative L2 after each of up to `steps` free-running steps from the first frames of every
/// test run of `family` (fewer steps when the runs are shorter).
fn rollout_errors<B: Backend>(
    model: &OperatorTransformer<B>,
    mix: &PotMix,
    family: usize,
    steps: usize,
    device: &B::Device,
) -> Result<Vec<f64>, TrainError> {
    let frames = model.settings().frames;
    let set = &mix.families()[family].data.test;
    let steps = steps.min(set.frames().saturating_sub(frames));
    let runs = set.runs();
    let starts: Vec<FrameWindow> = (0..runs).map(|run| FrameWindow { family, run, start: 0 }).collect();
    let mut window = mix.batch::<B>("test", &starts, frames, device).frames;
    let real = vec![set.channels(); runs];
    let mut out = Vec::with_capacity(steps);
    let rng = &mut Seeds::new(0).stream("rollout");
    for s in 0..steps {
        let pred = model.forward(window.clone(), Mode::Eval, rng)?.prediction;
        // The window now covers frames s..s + T; its prediction is frame s + T.
        let target = mix.batch::<B>("test", &starts_at(&starts, s), frames, device).target;
        let rel = relative_l2(&host::to_vec(pred.clone()), &host::to_vec(target), mix.channels(), &real);
        out.push(mean(rel.into_iter()));
        let [b, t, c, h, w] = window.dims();
        window = Tensor::cat(vec![window.slice([0..b, 1..t]), pred.reshape([b, 1, c, h, w])], 1);
    }
    Ok(out)
}

/// The windows of `runs` starting at frame `s`.
fn starts_at(runs: &[FrameWindow], s: usize) -> Vec<FrameWindow> {
    runs.iter().map(|w| FrameWindow { start: s, ..*w }).collect()
}

/// Per block: the accuracy of nearest-centroid family prediction from routing weights (centroids
/// from training windows) on the test windows, and the family x expert mean weights.
#[allow(clippy::type_complexity)]
fn router_analysis<B: Backend>(
    model: &OperatorTransformer<B>,
    mix: &PotMix,
    test: &[FrameWindow],
    test_routes: &[Vec<f64>],
    fit_windows: usize,
    batch: usize,
    device: &B::Device,
) -> Result<(Vec<f64>, Vec<Vec<Vec<f64>>>), TrainError> {
    let frames = model.settings().frames;
    let families = mix.families().len();
    let all = mix.windows("train", frames)?;
    let fit: Vec<FrameWindow> = (0..families)
        .flat_map(|f| spread(&all.iter().filter(|w| w.family == f).copied().collect::<Vec<_>>(), fit_windows))
        .collect();
    let mut fit_routes: Vec<Vec<f64>> = vec![vec![]; test_routes.len()];
    let rng = &mut Seeds::new(0).stream("fit");
    for chunk in fit.chunks(batch.max(1)) {
        let out = model.forward(mix.batch::<B>("train", chunk, frames, device).frames, Mode::Eval, rng)?;
        fit_routes.iter_mut().zip(&out.routes).for_each(|(r, o)| r.extend(&o.weights));
    }
    let experts = test_routes[0].len() / test.len().max(1);
    let centroids = |routes: &[f64], windows: &[FrameWindow]| -> Vec<Vec<f64>> {
        let mut sums = vec![vec![0.0; experts]; families];
        let mut counts = vec![0usize; families];
        for (w, row) in windows.iter().zip(routes.chunks(experts)) {
            sums[w.family].iter_mut().zip(row).for_each(|(s, v)| *s += v);
            counts[w.family] += 1;
        }
        sums.into_iter().zip(counts).map(|(s, n)| s.into_iter().map(|v| v / n.max(1) as f64).collect()).collect()
    };
    let mut accuracy = vec![];
    let mut heat = vec![];
    for (fit_r, test_r) in fit_routes.iter().zip(test_routes) {
        let c = centroids(fit_r, &fit);
        let (mut right, mut seen) = (vec![0usize; families], vec![0usize; families]);
        for (w, row) in test.iter().zip(test_r.chunks(experts)) {
            let dist = |cent: &Vec<f64>| cent.iter().zip(row.iter()).map(|(a, b)| (a - b) * (a - b)).sum::<f64>();
            let nearest = (0..families).min_by(|&a, &b| dist(&c[a]).total_cmp(&dist(&c[b]))).unwrap_or(0);
            seen[w.family] += 1;
            right[w.family] += usize::from(nearest == w.family);
        }
        accuracy.push(mean(right.iter().zip(&seen).filter(|(_, n)| **n > 0).map(|(r, n)| *r as f64 / *n as f64)));
        heat.push(centroids(test_r, test));
    }
    Ok((accuracy, heat))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_l2_counts_only_real_channels() {
        // Two samples, two channels of two cells; the second sample's second channel is padding.
        let truth = [3.0, 4.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0];
        let pred = [3.0, 4.0, 0.0, 5.0, 0.0, 0.0, 9.0, 9.0];
        let rel = relative_l2(&pred, &truth, 2, &[2, 1]);
        assert!((rel[0] - 1.0).abs() < 1e-12 && (rel[1] - 1.0).abs() < 1e-12, "{rel:?}");
    }
}
