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
        .build_cartesian_2d((0..n - 1).into_segmented(), (0..n - 1).into_segmented())
        .map_err(|e| draw_err(path, e))?;
    // row i is drawn at height n - 1 - i, so that the first task is on top
    let name = |v: &SegmentValue<usize>, flip: bool| match v {
        SegmentValue::CenterOf(k) => {
            let row = if flip { (n - 1).checked_sub(*k) } else { Some(*k) };
            row.and_then(|r| labels.get(r)).cloned().unwrap_or_default()
        }
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("evaluated on task")
        .y_desc("after learning task")
        .x_labels(n + 1)
        .y_labels(n + 1)
        .x_label_formatter(&|v| name(v, false))
        .y_label_formatter(&|v| name(v, true))
        .draw()
        .map_err(|e| draw_err(path, e))?;
    let values: Vec<f64> = matrix.iter().flatten().copied().filter(|v| v.is_finite()).collect();
    let (lo, hi) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let scale = |v: f64| {
        let s = if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
        if higher_is_better { s } else { 1.0 - s }
    };
    let cells: Vec<(usize, usize, f64)> = matrix
        .iter()
        .enumerate()
        .flat_map(|(i, row)| row.iter().enumerate().map(move |(j, &v)| (n - 1 - i, j, v)))
        .collect();
    chart
        .draw_series(cells.iter().map(|&(y, j, v)| {
            let corners = [
                (SegmentValue::Exact(j), SegmentValue::Exact(y)),
                (SegmentValue::Exact(j + 1), SegmentValue::Exact(y + 1)),
            ];
            Rectangle::new(corners, heat_color(0.15 + 0.8 * scale(v)).filled())
        }))
        .map_err(|e| draw_err(path, e))?;
    let style = TextStyle::from(("sans-serif", 13).into_font()).pos(Pos::new(HPos::Center, VPos::Center));
    chart
        .draw_series(cells.iter().map(|&(y, j, v)| {
            let color: &'static RGBColor = if scale(v) > 0.6 { &BLACK } else { &WHITE };
            Text::new(short(v), (SegmentValue::CenterOf(j), SegmentValue::CenterOf(y)), style.clone().color(color))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lower_triangular_matrix_is_drawn() {
        let dir = tempfile::tempdir().unwrap();
        let path = std::env::var_os("MATRIX_PNG").map_or_else(|| dir.path().join("m.png"), Into::into);
        let labels: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let m = vec![vec![-50.0], vec![-40.0, 10.0], vec![-45.0, 5.0, 60.0]];
        matrix_heatmap(&path, "reward", &m, &labels, true).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() > 1000);
        assert_eq!(short(123.4), "123");
        assert_eq!(short(-0.5), "-0.50");
        assert_eq!(short(3e-5), "3.0e-5");
    }
}
