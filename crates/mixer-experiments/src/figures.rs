//! Figures of a trained run: gate heat map, predicted against true trajectories, loss curves.

use std::path::Path;

use burn::tensor::backend::AutodiffBackend;
use ndarray::{Array2, Array4};
use plotters::prelude::*;

use mixer_core::{ContextModel, Dataset, Mode, Seeds};
use mixer_train::{MixerModel, OuterRecord, route};

use crate::ExperimentError;
use crate::plot::{Panel, Series, Stroke, draw_err, ensure_font, panel_grid, plot_contexts};
use crate::run::LoadedRun;

/// Predictions of the two evaluated splits, `[envs, trajs, steps, dim]` each.
pub struct Predictions<'a> {
    /// Training environments, new initial conditions.
    pub test: (&'a Dataset, &'a Array4<f64>),
    /// New environments after bulk adaptation.
    pub adapt_test: (&'a Dataset, &'a Array4<f64>),
}

/// Learned contexts, one row per environment.
pub struct Contexts<'a> {
    /// Training environments.
    pub train: &'a [Vec<f64>],
    /// Expert each training environment is routed to.
    pub experts: &'a [usize],
    /// New environments after bulk adaptation.
    pub adapted: &'a [Vec<f64>],
}

/// Writes `gate.png`, `contexts.png`, `trajectories.png`, `adaptation.png` and `loss.png` (of
/// the whole `history`) into the run folder.
pub fn run_figures<B: AutodiffBackend>(
    run: &Path,
    loaded: &LoadedRun<B>,
    valid: &MixerModel<B::InnerBackend>,
    pred: Predictions<'_>,
    contexts: Contexts<'_>,
    history: &[OuterRecord],
) -> Result<(), ExperimentError> {
    let probs = gate_probabilities(valid, loaded)?;
    let families = pred.test.0.families.as_deref();
    gate_heatmap(&run.join("gate.png"), &probs, families)?;
    plot_contexts(&run.join("contexts.png"), contexts.train, families, contexts.experts, contexts.adapted)?;
    trajectories(&run.join("trajectories.png"), "in-domain (test split)", pred.test.0, pred.test.1)?;
    trajectories(&run.join("adaptation.png"), "adaptation (adapt_test split)", pred.adapt_test.0, pred.adapt_test.1)?;
    loss_curves(&run.join("loss.png"), history)?;
    Ok(())
}

/// Gate probabilities `[envs, experts]` of the training environments (one-hot when the gate has none).
fn gate_probabilities<B: AutodiffBackend>(
    valid: &MixerModel<B::InnerBackend>,
    loaded: &LoadedRun<B>,
) -> Result<Array2<f64>, ExperimentError> {
    let mut rng = Seeds::new(0).stream("figures");
    let routing = route(&valid.theta, valid.contexts.contexts(), Mode::Eval, &mut rng)?;
    let k = loaded.config.model.experts;
    let top1 = routing.top1();
    Ok(match routing.probs {
        Some(p) => mixer_core::host::to_array2::<B::InnerBackend>(p),
        None => Array2::from_shape_fn((top1.len(), k), |(e, j)| f64::from(u8::from(top1[e] == Some(j)))),
    })
}

/// Heat map of gate probabilities, environments down, experts across; family boundaries in red.
pub fn gate_heatmap(path: &Path, probs: &Array2<f64>, families: Option<&[usize]>) -> Result<(), ExperimentError> {
    ensure_font();
    let (envs, experts) = probs.dim();
    let root = BitMapBackend::new(path, (520, 160 + 4 * envs.clamp(20, 200) as u32)).into_drawing_area();
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
            let shade = (255.0 * (1.0 - probs[[e, k]].clamp(0.0, 1.0))) as u8;
            Rectangle::new(
                [(k as f64, e as f64), (k as f64 + 1.0, e as f64 + 1.0)],
                RGBColor(shade, shade, 255).filled(),
            )
        }))
        .map_err(|e| draw_err(path, e))?;
    if let Some(f) = families {
        let bounds: Vec<usize> = (1..f.len()).filter(|&i| f[i] != f[i - 1]).collect();
        chart
            .draw_series(
                bounds
                    .into_iter()
                    .map(|b| PathElement::new(vec![(0.0, b as f64), (experts as f64, b as f64)], RED.stroke_width(1))),
            )
            .map_err(|e| draw_err(path, e))?;
    }
    root.present().map_err(|e| draw_err(path, e))
}

/// Environments shown: the first of each family, else up to 12.
fn shown_envs(data: &Dataset) -> Vec<usize> {
    match &data.families {
        Some(f) => (0..f.len()).filter(|&e| e == 0 || f[e] != f[e - 1]).take(12).collect(),
        None => (0..data.num_envs()).take(12).collect(),
    }
}

/// Panels of true (solid) and predicted (dashed) trajectory 0, one per shown environment.
pub fn trajectory_panels(data: &Dataset, pred: &Array4<f64>) -> Vec<Panel> {
    shown_envs(data)
        .into_iter()
        .map(|env| {
            let t = data.t.for_env(env);
            let truth = data.env(env);
            let title = match &data.families {
                Some(f) => format!("env {env} (family {})", f[env]),
                None => format!("env {env}"),
            };
            let series = (0..data.dim())
                .flat_map(|d| {
                    let line = |dashed: bool| Series {
                        label: if dashed { String::new() } else { format!("x{d}") },
                        points: t
                            .iter()
                            .enumerate()
                            .map(|(k, &tk)| (tk, if dashed { pred[[env, 0, k, d]] } else { truth[[0, k, d]] }))
                            .collect(),
                        color: d,
                        stroke: if dashed { Stroke::Dashed } else { Stroke::Solid },
                    };
                    [line(false), line(true)]
                })
                .collect();
            Panel { title, x_label: "t".into(), y_label: "state".into(), series }
        })
        .collect()
}

/// Predicted (dashed) against true (solid) trajectories, one panel per family or environment.
pub fn trajectories(path: &Path, title: &str, data: &Dataset, pred: &Array4<f64>) -> Result<(), ExperimentError> {
    let panels = trajectory_panels(data, pred);
    panel_grid(path, &format!("{title}: true (solid) vs predicted (dashed)"), &panels, 4, (300, 230))?;
    Ok(())
}

/// Reads one loss of an outer step.
type Getter = fn(&OuterRecord) -> Option<f64>;

/// Context- and model-block losses per outer step (log10), validation where taken.
pub fn loss_curves(path: &Path, history: &[OuterRecord]) -> Result<(), ExperimentError> {
    let series: [(&str, Getter); 3] = [
        ("context block", |r| Some(r.context_loss)),
        ("model block", |r| Some(r.model_loss)),
        ("validation", |r| r.validation),
    ];
    let panel = Panel {
        title: "training loss".into(),
        x_label: "outer step".into(),
        y_label: "log10 loss".into(),
        series: series
            .iter()
            .enumerate()
            .map(|(c, (name, get))| Series {
                label: name.to_string(),
                points: history
                    .iter()
                    .filter_map(|r| get(r).filter(|v| *v > 0.0).map(|v| (r.outer as f64, v.log10())))
                    .collect(),
                color: c,
                stroke: Stroke::Solid,
            })
            .collect(),
    };
    panel_grid(path, "loss curves", &[panel], 1, (640, 400))?;
    Ok(())
}
