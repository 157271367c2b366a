//! PNG figures with plotters: generic panels of x–y series (time series, phase portraits) laid
//! out on a grid, legends beside the axes, the dataset overview built on them, and heat maps of
//! gridded field datasets. Text is rendered with an embedded DejaVu Sans Condensed font through
//! `ab_glyph`, so no system font library is needed.

mod contexts;
mod dataset;
mod field_runs;
mod fields;
mod matrix;
mod routing;

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::ExperimentError;

pub use contexts::{Pca2, plot_class_contexts, plot_contexts};
pub use dataset::{dataset_panels, plot_dataset};
pub use field_runs::field_run_figures;
pub use fields::{heat_color, plot_fields, shown_frames};
pub use matrix::{Heatmap, heatmap, matrix_heatmap};
pub use routing::routing_heatmaps;

static FONT: &[u8] = include_bytes!("../../assets/DejaVuSansCondensed.ttf");
static REGISTER: Once = Once::new();

/// Registers the embedded font as `sans-serif` (all styles) once per process.
pub fn ensure_font() {
    REGISTER.call_once(|| {
        for style in [FontStyle::Normal, FontStyle::Bold, FontStyle::Italic, FontStyle::Oblique] {
            if plotters::style::register_font("sans-serif", style, FONT).is_err() {
                tracing::warn!("embedded font could not be registered; figure text will be missing");
            }
        }
    });
}

/// A drawing error as an [`ExperimentError`] naming the figure file.
pub fn draw_err(path: &Path, e: impl std::fmt::Display) -> ExperimentError {
    ExperimentError::Plot { path: path.to_path_buf(), reason: e.to_string() }
}

/// One line of a panel: points `(x, y)` in drawing order.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend text (empty: no legend entry).
    pub label: String,
    /// The points, `[n]` of `(x, y)`.
    pub points: Vec<(f64, f64)>,
    /// Palette index of the colour.
    pub color: usize,
    /// How the points are drawn.
    pub stroke: Stroke,
}

/// How a [`Series`] is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stroke {
    /// A solid line (data).
    Solid,
    /// A dashed line (predictions).
    Dashed,
    /// Unconnected dots (scatter plots).
    Points,
}

/// One chart: a caption, axis names and its series.
#[derive(Clone, Debug, PartialEq)]
pub struct Panel {
    /// Caption above the chart.
    pub title: String,
    /// Name of the horizontal axis.
    pub x_label: String,
    /// Name of the vertical axis.
    pub y_label: String,
    /// The lines.
    pub series: Vec<Series>,
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) =
        values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(v), h.max(v)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    // a constant series gets a range of ±5 % of its value (at least ±0.05) so that the axis
    // labels differ in their printed digits
    let pad = if hi - lo <= 1e-9 * (1.0 + lo.abs()) { 0.05 * lo.abs().max(1.0) } else { 0.05 * (hi - lo) };
    (lo - pad, hi + pad)
}

/// Legend text size in points.
const LEGEND_FONT: u32 = 11;
/// Height of one legend row in pixels.
const LEGEND_ROW: u32 = 16;
/// Width of a legend marker and the gap before its text.
const LEGEND_MARKER: u32 = 22;
/// Padding around the legend and between its columns.
const LEGEND_PAD: u32 = 6;
/// Top of the legend: below the panel caption, level with the plotting area.
const LEGEND_TOP: u32 = 30;

/// The series of `panel` that have a legend entry.
fn legend_entries(panel: &Panel) -> Vec<&Series> {
    panel.series.iter().filter(|s| !s.label.is_empty()).collect()
}

/// Rows of legend that fit in a panel `height` pixels tall (at least one).
fn legend_rows(height: u32) -> usize {
    (height.saturating_sub(LEGEND_TOP + 2 * LEGEND_PAD) / LEGEND_ROW).max(1) as usize
}

/// Width in pixels of the legend column beside `panel` when it is `height` pixels tall: entries
/// run down, then on to a further column when they do not fit (0 without legend entries).
pub fn legend_width(panel: &Panel, height: u32) -> u32 {
    ensure_font();
    let entries = legend_entries(panel);
    if entries.is_empty() {
        return 0;
    }
    let font = ("sans-serif", LEGEND_FONT).into_font();
    let text = entries
        .iter()
        .map(|s| font.box_size(&s.label).map_or(7 * s.label.chars().count() as u32, |(w, _)| w))
        .max()
        .unwrap_or(0);
    let cols = entries.len().div_ceil(legend_rows(height)) as u32;
    LEGEND_PAD + cols * (LEGEND_MARKER + text + LEGEND_PAD) + LEGEND_PAD
}

/// Draws one panel into `area`, its legend (if any) in a column to the right of the axes.
pub fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    panel: &Panel,
    path: &Path,
) -> Result<(), ExperimentError> {
    draw_panel_beside(area, panel, path, legend_width(panel, area.dim_in_pixel().1))
}

/// [`draw_panel`] with a legend column `legend` pixels wide (none when the panel has no entries).
fn draw_panel_beside<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    panel: &Panel,
    path: &Path,
    legend: u32,
) -> Result<(), ExperimentError> {
    let entries = legend_entries(panel);
    let (width, _) = area.dim_in_pixel();
    let legend = if entries.is_empty() { 0 } else { legend.min(width / 2) };
    let (plot_area, legend_area) = area.split_horizontally(width - legend);
    let (x0, x1) = bounds(panel.series.iter().flat_map(|s| s.points.iter().map(|p| p.0)));
    let (y0, y1) = bounds(panel.series.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
    let mut chart = ChartBuilder::on(&plot_area)
        .caption(&panel.title, ("sans-serif", 15))
        .margin(8)
        .x_label_area_size(32)
        .y_label_area_size(48)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| draw_err(path, e))?;
    chart
        .configure_mesh()
        .x_desc(&panel.x_label)
        .y_desc(&panel.y_label)
        .x_labels(5)
        .y_labels(5)
        .label_style(("sans-serif", 11))
        .axis_desc_style(("sans-serif", 12))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|e| draw_err(path, e))?;
    for s in &panel.series {
        let color = Palette99::pick(s.color).to_rgba();
        let pts: Vec<(f64, f64)> = s.points.iter().copied().filter(|p| p.0.is_finite() && p.1.is_finite()).collect();
        match s.stroke {
            Stroke::Solid => chart.draw_series(LineSeries::new(pts, color.stroke_width(2))),
            Stroke::Dashed => chart.draw_series(DashedLineSeries::new(pts, 6, 4, color.stroke_width(2))),
            Stroke::Points => chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled()))),
        }
        .map_err(|e| draw_err(path, e))?;
    }
    if legend > 0 {
        draw_legend(&legend_area, &entries, path)?;
    }
    Ok(())
}

/// Draws legend entries (marker and label) down columns of `area`, inside a thin frame.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    entries: &[&Series],
    path: &Path,
) -> Result<(), ExperimentError> {
    let (width, height) = area.dim_in_pixel();
    let rows = legend_rows(height);
    let cols = entries.len().div_ceil(rows);
    let col_width = (width.saturating_sub(LEGEND_PAD) / cols.max(1) as u32) as i32;
    let shown_rows = entries.len().min(rows) as i32;
    let (pad, row, top) = (LEGEND_PAD as i32, LEGEND_ROW as i32, LEGEND_TOP as i32);
    let frame = [(1, top), (width as i32 - pad, top + shown_rows * row + pad)];
    area.draw(&Rectangle::new(frame, BLACK.mix(0.4))).map_err(|e| draw_err(path, e))?;
    let style = TextStyle::from(("sans-serif", LEGEND_FONT).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, s) in entries.iter().enumerate() {
        let (c, r) = ((i / rows) as i32, (i % rows) as i32);
        let (x, y) = (pad + c * col_width, top + pad / 2 + r * row + row / 2);
        let color = Palette99::pick(s.color).to_rgba();
        let drawn = match s.stroke {
            Stroke::Points => area.draw(&Circle::new((x + 8, y), 3, color.filled())),
            Stroke::Solid => area.draw(&PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))),
            Stroke::Dashed => area
                .draw(&PathElement::new(vec![(x, y), (x + 6, y)], color.stroke_width(2)))
                .and_then(|_| area.draw(&PathElement::new(vec![(x + 10, y), (x + 16, y)], color.stroke_width(2)))),
        };
        drawn.map_err(|e| draw_err(path, e))?;
        area.draw(&Text::new(s.label.clone(), (x + LEGEND_MARKER as i32, y), style.clone()))
            .map_err(|e| draw_err(path, e))?;
    }
    Ok(())
}

/// Writes `panels` as a PNG grid with `cols` columns under a title, each panel's legend in a
/// column to the right of its axes; returns the path.
pub fn panel_grid(
    path: &Path,
    title: &str,
    panels: &[Panel],
    cols: usize,
    cell: (u32, u32),
) -> Result<PathBuf, ExperimentError> {
    ensure_font();
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| mixer_core::Error::io(parent, e))?;
    }
    let cols = cols.clamp(1, panels.len().max(1));
    let rows = panels.len().div_ceil(cols).max(1);
    // Cells grow by the widest legend, so that legends sit beside the axes, not over the data.
    let legend = panels.iter().map(|p| legend_width(p, cell.1)).max().unwrap_or(0);
    let size = ((cell.0 + legend) * cols as u32, 44 + cell.1 * rows as u32);
    {
        let root = BitMapBackend::new(path, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
        let root = root.titled(title, ("sans-serif", 20)).map_err(|e| draw_err(path, e))?;
        let areas = root.split_evenly((rows, cols));
        for (area, panel) in areas.iter().zip(panels) {
            draw_panel_beside(area, panel, path, legend)?;
        }
        root.present().map_err(|e| draw_err(path, e))?;
    }
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::bounds;

    #[test]
    fn axis_bounds_pad_the_data_and_widen_a_constant_series() {
        assert_eq!(bounds([0.0, 2.0].into_iter()), (-0.1, 2.1));
        assert_eq!(bounds([1.0, 1.0].into_iter()), (0.95, 1.05));
        assert_eq!(bounds([20.0].into_iter()), (19.0, 21.0));
        assert_eq!(bounds([0.0, f64::NAN].into_iter()), (-0.05, 0.05));
        assert_eq!(bounds(std::iter::empty()), (0.0, 1.0));
    }
}
