//! PNG figures with plotters: generic panels of x–y series (time series, phase portraits) laid
//! out on a grid, and the dataset overview built on them. Text is rendered with an embedded
//! DejaVu Sans Condensed font through `ab_glyph`, so no system font library is needed.

mod contexts;
mod dataset;

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::ExperimentError;

pub use contexts::{Pca2, plot_contexts};
pub use dataset::{dataset_panels, plot_dataset};

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
    let pad = 0.05 * (hi - lo).max(1e-9 * (1.0 + lo.abs()));
    (lo - pad, hi + pad)
}

/// Draws one panel into `area`.
pub fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    panel: &Panel,
    path: &Path,
) -> Result<(), ExperimentError> {
    let (x0, x1) = bounds(panel.series.iter().flat_map(|s| s.points.iter().map(|p| p.0)));
    let (y0, y1) = bounds(panel.series.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
    let mut chart = ChartBuilder::on(area)
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
    let mut legend = false;
    for s in &panel.series {
        let color = Palette99::pick(s.color).to_rgba();
        let pts: Vec<(f64, f64)> = s.points.iter().copied().filter(|p| p.0.is_finite() && p.1.is_finite()).collect();
        let drawn = match s.stroke {
            Stroke::Solid => chart.draw_series(LineSeries::new(pts, color.stroke_width(2))),
            Stroke::Dashed => chart.draw_series(DashedLineSeries::new(pts, 6, 4, color.stroke_width(2))),
            Stroke::Points => chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled()))),
        }
        .map_err(|e| draw_err(path, e))?;
        if !s.label.is_empty() {
            legend = true;
            let entry = drawn.label(&s.label);
            if s.stroke == Stroke::Points {
                entry.legend(move |(x, y)| Circle::new((x + 8, y), 3, color.filled()));
            } else {
                entry.legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
            }
        }
    }
    if legend {
        chart
            .configure_series_labels()
            .label_font(("sans-serif", 11))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.4))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|e| draw_err(path, e))?;
    }
    Ok(())
}

/// Writes `panels` as a PNG grid with `cols` columns under a title; returns the path.
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
    let size = (cell.0 * cols as u32, 44 + cell.1 * rows as u32);
    {
        let root = BitMapBackend::new(path, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
        let root = root.titled(title, ("sans-serif", 20)).map_err(|e| draw_err(path, e))?;
        let areas = root.split_evenly((rows, cols));
        for (area, panel) in areas.iter().zip(panels) {
            draw_panel(area, panel, path)?;
        }
        root.present().map_err(|e| draw_err(path, e))?;
    }
    Ok(path.to_path_buf())
}
