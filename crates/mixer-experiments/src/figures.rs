//! Figures of a trained run: gate heat map, predicted vs true trajectories, loss curves.

use std::path::Path;

use burn::tensor::backend::AutodiffBackend;
use ndarray::{Array2, Array4};
use plotters::prelude::*;

use mixer_core::{ContextModel, Dataset, Mode, Seeds};
use mixer_train::{MixerModel, OuterRecord, route};

use crate::ExperimentError;
use crate::run::LoadedRun;

/// Writes `gate.png`, `trajectories.png`, `adaptation.png` and `loss.png` into the run folder.
pub fn run_figures<B: AutodiffBackend>(
    run: &Path,
    loaded: &LoadedRun<B>,
    valid: &MixerModel<B::InnerBackend>,
    test: &Dataset,
    test_pred: &Array4<f64>,
    adapt_test: &Dataset,
    adapt_pred: &Array4<f64>,
) -> Result<(), ExperimentError> {
    let probs = gate_probabilities(valid, loaded)?;
    gate_heatmap(&run.join("gate.png"), &probs, test.families.as_deref())?;
    trajectories(&run.join("trajectories.png"), "in-domain (test)", test, test_pred)?;
    trajectories(&run.join("adaptation.png"), "adaptation (adapt_test)", adapt_test, adapt_pred)?;
    loss_curves(&run.join("loss.png"), &loaded.state.history)?;
    Ok(())
}

/// Gate probabilities `[envs, experts]` of the training environments (one-hot when the gate has none).
fn gate_probabilities<B: AutodiffBackend>(
    valid: &MixerModel<B::InnerBackend>,
    loaded: &LoadedRun<B>,
) -> Result<Array2<f64>, ExperimentError> {
    let mut rng = Seeds::new(0).stream("figures");
    let routing = route(&valid.theta, &loaded.host, valid.contexts.contexts(), Mode::Eval, &mut rng)?;
    let k = loaded.config.model.experts;
    let top1 = routing.top1();
    Ok(match routing.probs {
        Some(p) => mixer_core::host::to_array2::<B::InnerBackend>(p),
        None => Array2::from_shape_fn((top1.len(), k), |(e, j)| f64::from(u8::from(top1[e] == Some(j)))),
    })
}

fn draw_err(path: &Path, e: impl std::fmt::Display) -> ExperimentError {
    ExperimentError::Plot { path: path.to_path_buf(), message: e.to_string() }
}

/// Heat map of gate probabilities, environments down, experts across; family boundaries marked.
pub fn gate_heatmap(path: &Path, probs: &Array2<f64>, families: Option<&[usize]>) -> Result<(), ExperimentError> {
    crate::plot::ensure_font();
    let (envs, experts) = probs.dim();
    let root = BitMapBackend::new(path, (520, 160 + 6 * envs.clamp(20, 160) as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("gate probability (environments x experts)", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(45)
        .build_cartesian_2d(0f64..experts as f64, envs as f64..0f64)
        .map_err(|e| draw_err(path, e))?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("expert")
        .y_desc("environment")
        .x_labels(experts.min(20))
        .x_label_formatter(&|v| format!("{}", v.floor() as usize))
        .y_label_formatter(&|v| format!("{}", v.floor() as usize))
        .draw()
        .map_err(|e| draw_err(path, e))?;
    chart
        .draw_series((0..envs).flat_map(|e| (0..experts).map(move |k| (e, k))).map(|(e, k)| {
            let v = probs[[e, k]].clamp(0.0, 1.0);
            let shade = (255.0 * (1.0 - v)) as u8;
            Rectangle::new([(k as f64, e as f64), (k as f64 + 1.0, e as f64 + 1.0)], RGBColor(shade, shade, 255).filled())
        }))
        .map_err(|e| draw_err(path, e))?;
    if let Some(f) = families {
        let bounds: Vec<usize> = (1..f.len()).filter(|&i| f[i] != f[i - 1]).collect();
        chart
            .draw_series(bounds.into_iter().map(|b| {
                PathElement::new(vec![(0.0, b as f64), (experts as f64, b as f64)], RED.stroke_width(1))
            }))
            .map_err(|e| draw_err(path, e))?;
    }
    root.present().map_err(|e| draw_err(path, e))
}

/// Predicted (dashed) against true (solid) trajectories of the first trajectory of one environment
/// per family (or of up to 12 environments), one panel each, every state dimension.
pub fn trajectories(path: &Path, title: &str, data: &Dataset, pred: &Array4<f64>) -> Result<(), ExperimentError> {
    crate::plot::ensure_font();
    let envs: Vec<usize> = match &data.families {
        Some(f) => (0..f.len()).filter(|&e| e == 0 || f[e] != f[e - 1]).take(12).collect(),
        None => (0..data.num_envs()).take(12).collect(),
    };
    let cols = 4.min(envs.len()).max(1);
    let rows = envs.len().div_ceil(cols);
    let root = BitMapBackend::new(path, (300 * cols as u32, 40 + 230 * rows as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
    let root = root.titled(&format!("{title}: true (solid) vs predicted (dashed)"), ("sans-serif", 18)).map_err(|e| draw_err(path, e))?;
    let panels = root.split_evenly((rows, cols));
    for (panel, &env) in panels.iter().zip(&envs) {
        let t = data.t.for_env(env);
        let truth = data.env(env);
        let (lo, hi) = (0..data.dim()).flat_map(|d| (0..t.len()).map(move |k| (d, k))).fold(
            (f64::INFINITY, f64::NEG_INFINITY),
            |(lo, hi), (d, k)| {
                let (a, b) = (truth[[0, k, d]], pred[[env, 0, k, d]]);
                let b = if b.is_finite() { b } else { a };
                (lo.min(a).min(b), hi.max(a).max(b))
            },
        );
        let pad = 0.05 * (hi - lo).max(1e-9);
        let label = match &data.families {
            Some(f) => format!("env {env} (family {})", f[env]),
            None => format!("env {env}"),
        };
        let mut chart = ChartBuilder::on(panel)
            .caption(label, ("sans-serif", 14))
            .margin(6)
            .x_label_area_size(22)
            .y_label_area_size(40)
            .build_cartesian_2d(t[0]..t[t.len() - 1], (lo - pad)..(hi + pad))
            .map_err(|e| draw_err(path, e))?;
        chart.configure_mesh().x_labels(4).y_labels(4).draw().map_err(|e| draw_err(path, e))?;
        for d in 0..data.dim() {
            let color = Palette99::pick(d).to_rgba();
            chart
                .draw_series(LineSeries::new(t.iter().enumerate().map(|(k, &tk)| (tk, truth[[0, k, d]])), color.stroke_width(2)))
                .map_err(|e| draw_err(path, e))?;
            chart
                .draw_series(DashedLineSeries::new(
                    t.iter().enumerate().map(|(k, &tk)| (tk, pred[[env, 0, k, d]])),
                    6,
                    4,
                    color.stroke_width(1),
                ))
                .map_err(|e| draw_err(path, e))?;
        }
    }
    root.present().map_err(|e| draw_err(path, e))
}

/// Context- and model-block losses per outer step (log scale), validation where taken.
pub fn loss_curves(path: &Path, history: &[OuterRecord]) -> Result<(), ExperimentError> {
    crate::plot::ensure_font();
    let root = BitMapBackend::new(path, (640, 400)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
    let values: Vec<f64> = history
        .iter()
        .flat_map(|r| [r.context_loss, r.model_loss].into_iter().chain(r.validation))
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min).min(1.0);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max).max(lo * 10.0);
    let n = history.len().max(2) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption("training loss", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..n, (lo..hi).log_scale())
        .map_err(|e| draw_err(path, e))?;
    chart.configure_mesh().x_desc("outer step").y_desc("loss").draw().map_err(|e| draw_err(path, e))?;
    let series: [(&str, RGBColor, fn(&OuterRecord) -> Option<f64>); 3] = [
        ("context block", BLUE, |r| Some(r.context_loss)),
        ("model block", RED, |r| Some(r.model_loss)),
        ("validation", BLACK, |r| r.validation),
    ];
    for (name, color, get) in series {
        let pts: Vec<(f64, f64)> =
            history.iter().filter_map(|r| get(r).filter(|v| *v > 0.0).map(|v| (r.outer as f64, v))).collect();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(|e| draw_err(path, e))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| draw_err(path, e))?;
    root.present().map_err(|e| draw_err(path, e))
}

