//! Heat maps with each cell's value written in it: score matrices of continual learning runs
//! (after task `i`, score on task `j <= i`) and tables such as error per family and backbone.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::ExperimentError;
use crate::plot::{draw_err, ensure_font, heat_color};

/// What a [`heatmap`] shows: its title, the labels and descriptions of both axes, and which
/// end of the colour scale is good.
#[derive(Clone, Copy, Debug)]
pub struct Heatmap<'a> {
    /// Caption above the map.
    pub title: &'a str,
    /// One label per row, top to bottom.
    pub rows: &'a [String],
    /// One label per column, left to right.
    pub columns: &'a [String],
    /// Description of the rows (vertical axis).
    pub row_desc: &'a str,
    /// Description of the columns (horizontal axis).
    pub column_desc: &'a str,
    /// Bright cells for high values (else for low ones).
    pub higher_is_better: bool,
    /// Colour by the logarithm of the values (where all are positive), for errors that span
    /// decades.
    pub log_colour: bool,
}

/// Draws `values` (row `i` down, column `j` across; a short row leaves its last cells blank,
/// non-finite values are written but not coloured) as a heat map.
pub fn heatmap(path: &Path, map: &Heatmap, values: &[Vec<f64>]) -> Result<(), ExperimentError> {
    ensure_font();
    let rows = values.len().max(map.rows.len()).max(1);
    let columns = values.iter().map(Vec::len).chain([map.columns.len(), 1]).max().unwrap_or(1);
    // columns wide enough for their labels (about 7 pixels a character)
    let longest = map.columns.iter().map(|l| l.chars().count()).max().unwrap_or(0) as u32;
    let (cell, column) = (70u32, (7 * longest + 10).max(70));
    let size = (220 + column * columns as u32, 120 + cell * rows as u32);
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(map.title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(140)
        .build_cartesian_2d((0..columns - 1).into_segmented(), (0..rows - 1).into_segmented())
        .map_err(|e| draw_err(path, e))?;
    // row i is drawn at height rows - 1 - i, so that the first row is on top
    let name = |v: &SegmentValue<usize>, labels: &[String], flip: bool| match v {
        SegmentValue::CenterOf(k) => {
            let at = if flip { (rows - 1).checked_sub(*k) } else { Some(*k) };
            at.and_then(|r| labels.get(r)).cloned().unwrap_or_default()
        }
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc(map.column_desc)
        .y_desc(map.row_desc)
        .x_labels(columns + 1)
        .y_labels(rows + 1)
        .x_label_formatter(&|v| name(v, map.columns, false))
        .y_label_formatter(&|v| name(v, map.rows, true))
        .draw()
        .map_err(|e| draw_err(path, e))?;
    let finite: Vec<f64> = values.iter().flatten().copied().filter(|v| v.is_finite()).collect();
    let log = map.log_colour && finite.iter().all(|&v| v > 0.0);
    let level = |v: f64| if log { v.ln() } else { v };
    let (lo, hi) =
        finite.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(level(v)), b.max(level(v))));
    let scale = |v: f64| {
        let s = if hi > lo { (level(v) - lo) / (hi - lo) } else { 0.5 };
        if map.higher_is_better { s } else { 1.0 - s }
    };
    let cells: Vec<(usize, usize, f64)> = values
        .iter()
        .enumerate()
        .flat_map(|(i, row)| row.iter().enumerate().map(move |(j, &v)| (rows - 1 - i, j, v)))
        .collect();
    chart
        .draw_series(cells.iter().filter(|c| c.2.is_finite()).map(|&(y, j, v)| {
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
            // dark text on bright cells and on uncoloured (non-finite) ones
            let color: &'static RGBColor = if !v.is_finite() || scale(v) > 0.6 { &BLACK } else { &WHITE };
            Text::new(short(v), (SegmentValue::CenterOf(j), SegmentValue::CenterOf(y)), style.clone().color(color))
        }))
        .map_err(|e| draw_err(path, e))?;
    root.present().map_err(|e| draw_err(path, e))
}

/// Draws a lower-triangular score `matrix` (row `i` after task `i`, its entries for tasks
/// `0..=i`) as a [`heatmap`] with the task names on both axes.
pub fn matrix_heatmap(
    path: &Path,
    title: &str,
    matrix: &[Vec<f64>],
    labels: &[String],
    higher_is_better: bool,
) -> Result<(), ExperimentError> {
    let map = Heatmap {
        title,
        rows: labels,
        columns: labels,
        row_desc: "after learning task",
        column_desc: "evaluated on task",
        higher_is_better,
        log_colour: false,
    };
    heatmap(path, &map, matrix)
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
    fn a_rectangular_map_with_a_missing_value_is_drawn() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.png");
        let rows: Vec<String> = ["f1", "f2"].iter().map(|s| s.to_string()).collect();
        let columns: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let map = Heatmap {
            title: "t",
            rows: &rows,
            columns: &columns,
            row_desc: "r",
            column_desc: "c",
            higher_is_better: false,
            log_colour: true,
        };
        heatmap(&path, &map, &[vec![0.1, 0.2, f64::NAN], vec![0.3, 0.4, 0.5]]).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() > 1000);
    }

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
        assert_eq!(short(f64::INFINITY), "inf");
    }
}
