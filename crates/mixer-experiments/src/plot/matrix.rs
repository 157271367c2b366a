//! Heat maps of lower-triangular score matrices (after task `i`, score on task `j <= i`), the
//! figures of continual learning runs, with each cell's value written in it.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::ExperimentError;
use crate::plot::{draw_err, ensure_font, heat_color};

/// Draws `matrix` (row `i` after task `i`, its entries for tasks `0..=i`; missing cells blank)
/// as a heat map, rows down and columns across, bright where `higher_is_better` says good.
pub fn matrix_heatmap(
    path: &Path,
    title: &str,
    matrix: &[Vec<f64>],
    labels: &[String],
    higher_is_better: bool,
) -> Result<(), ExperimentError> {
    ensure_font();
    let n = matrix.len().max(labels.len()).max(1);
    let cell = 70u32;
    let root = BitMapBackend::new(path, (220 + cell * n as u32, 120 + cell * n as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(140)
        .build_cartesian_2d(0f64..n as f64, n as f64..0f64)
        .map_err(|e| draw_err(path, e))?;
    let name = |v: &f64| labels.get(v.floor() as usize).cloned().unwrap_or_default();
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("evaluated on task")
        .y_desc("after learning task")
        .x_labels(n)
        .y_labels(n)
        .x_label_formatter(&name)
        .y_label_formatter(&name)
        .draw()
        .map_err(|e| draw_err(path, e))?;
    let values: Vec<f64> = matrix.iter().flatten().copied().filter(|v| v.is_finite()).collect();
    let (lo, hi) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let scale = |v: f64| {
        let s = if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
        if higher_is_better { s } else { 1.0 - s }
    };
    let cells: Vec<(usize, usize, f64)> =
        matrix.iter().enumerate().flat_map(|(i, row)| row.iter().enumerate().map(move |(j, &v)| (i, j, v))).collect();
    chart
        .draw_series(cells.iter().map(|&(i, j, v)| {
            Rectangle::new(
                [(j as f64, i as f64), (j as f64 + 1.0, i as f64 + 1.0)],
                heat_color(0.15 + 0.8 * scale(v)).filled(),
            )
        }))
        .map_err(|e| draw_err(path, e))?;
    let style = TextStyle::from(("sans-serif", 13).into_font()).pos(Pos::new(HPos::Center, VPos::Center));
    chart
        .draw_series(cells.iter().map(|&(i, j, v)| {
            let color: &'static RGBColor = if scale(v) > 0.6 { &BLACK } else { &WHITE };
            Text::new(short(v), (j as f64 + 0.5, i as f64 + 0.5), style.clone().color(color))
        }))
        .map_err(|e| draw_err(path, e))?;
    root.present().map_err(|e| draw_err(path, e))
}

/// `v` in at most about six characters: no decimals from 100, two below, scientific under 0.01.
fn short(v: f64) -> String {
    match v.abs() {
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 0.01 || a == 0.0 => format!("{v:.2}"),
        _ => format!("{v:.1e}"),
    }
}
