//! Figures of a field run: maps (true regions, the learned expert map, the one-step error, a
//! rollout frame against the truth) and curves (rollout error over time, training curve).

use std::path::Path;

use mixer_data::FieldDir;
use mixer_train::{FieldEval, FieldTrainState};
use ndarray::{Array2, ArrayView2};
use plotters::prelude::*;

use super::fields::{draw_grid, heat_color};
use super::{Panel, Series, Stroke, draw_err, ensure_font, panel_grid};
use crate::ExperimentError;

/// Side of one map in pixels.
const CELL: u32 = 260;

/// A categorical colour per label.
fn label_color(label: usize) -> RGBColor {
    let (r, g, b) = Palette99::pick(label).rgb();
    RGBColor(r, g, b)
}

/// What one map panel shows.
enum Map<'a> {
    /// Labels (regions, experts).
    Labels(&'a Array2<usize>),
    /// Values on a colour range `[lo, hi]`.
    Values(ArrayView2<'a, f64>, f64, f64),
}

/// `maps.png` and `rollout.png` of a field run folder.
pub fn field_run_figures(
    run: &Path,
    data: &FieldDir,
    eval: &FieldEval,
    state: &FieldTrainState,
) -> Result<(), ExperimentError> {
    let (truth, pred) = (&eval.rollout.truth, &eval.rollout.prediction);
    let shown = (truth.dim().0 - 1).min(50);
    let t = truth.index_axis(ndarray::Axis(0), shown);
    let p = pred.index_axis(ndarray::Axis(0), shown);
    let (lo, hi) = t.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
    let err_hi = eval.error_map.iter().copied().fold(0.0, f64::max).max(1e-12);
    let mut maps: Vec<(String, Map)> = Vec::new();
    if let Some(regions) = &data.regions {
        maps.push(("true regions".into(), Map::Labels(regions)));
    }
    if let Some(experts) = &eval.expert_map {
        let ari = eval.metrics.gate_ari.map_or(String::new(), |a| format!(" (ARI {a:.3})"));
        maps.push((format!("expert map{ari}"), Map::Labels(experts)));
    }
    maps.push((format!("mean |one-step error| [0, {err_hi:.1e}]"), Map::Values(eval.error_map.view(), 0.0, err_hi)));
    maps.push((format!("truth, step {shown}"), Map::Values(t, lo, hi)));
    maps.push((format!("rollout, step {shown}"), Map::Values(p, lo, hi)));
    draw_maps(&run.join("maps.png"), "one-step operator on test runs", &maps)?;

    let positive = |v: f64| (v > 0.0 && v.is_finite()).then(|| v.log10());
    let rollout = Panel {
        title: "free-running rollout (test runs)".into(),
        x_label: "step".into(),
        y_label: "log10 MSE".into(),
        series: vec![Series {
            label: String::new(),
            points: eval
                .metrics
                .rollout_mse
                .iter()
                .enumerate()
                .filter_map(|(i, &v)| positive(v).map(|y| ((i + 1) as f64, y)))
                .collect(),
            color: 0,
            stroke: Stroke::Solid,
        }],
    };
    let curve = |label: &str, get: fn(&mixer_train::FieldCurvePoint) -> f64, color| Series {
        label: label.into(),
        points: state.curve.iter().filter_map(|c| positive(get(c)).map(|y| (c.step as f64, y))).collect(),
        color,
        stroke: Stroke::Solid,
    };
    let training = Panel {
        title: "training".into(),
        x_label: "step".into(),
        y_label: "log10 MSE".into(),
        series: vec![curve("train", |c| c.train_mse, 0), curve("validation", |c| c.val_mse, 1)],
    };
    panel_grid(&run.join("rollout.png"), "errors over time", &[rollout, training], 2, (520, 380))?;
    Ok(())
}

fn draw_maps(path: &Path, title: &str, maps: &[(String, Map)]) -> Result<(), ExperimentError> {
    ensure_font();
    let size = (CELL * maps.len() as u32, CELL + 70);
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
    let root = root.titled(title, ("sans-serif", 18)).map_err(|e| draw_err(path, e))?;
    for (area, (caption, map)) in root.split_evenly((1, maps.len())).iter().zip(maps) {
        match map {
            Map::Labels(m) => draw_grid(area, caption, m.dim(), |i, j| label_color(m[[i, j]]), path)?,
            Map::Values(v, lo, hi) => {
                let span = (hi - lo).max(1e-12);
                draw_grid(area, caption, v.dim(), |i, j| heat_color((v[[i, j]] - lo) / span), path)?
            }
        }
    }
    root.present().map_err(|e| draw_err(path, e))?;
    Ok(())
}
