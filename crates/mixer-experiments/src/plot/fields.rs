//! Heat maps of gridded field datasets: the region map and a few frames of one run.

use std::path::{Path, PathBuf};

use mixer_data::FieldSet;
use ndarray::{Array2, ArrayView2};
use plotters::prelude::*;

use super::{draw_err, ensure_font};
use crate::ExperimentError;

/// Side of one heat-map panel in pixels (the caption adds to its height).
const CELL: u32 = 230;
/// Height of a panel's caption in pixels.
const CAPTION: u32 = 26;
/// Frames drawn per channel.
const SHOWN_FRAMES: usize = 5;
/// Channels drawn (one row each).
const SHOWN_CHANNELS: usize = 3;

/// A colour for `v` in `[0, 1]`: dark blue through purple and orange to pale yellow.
pub fn heat_color(v: f64) -> RGBColor {
    const STOPS: [(f64, f64, f64); 5] =
        [(0.0, 0.0, 0.02), (0.25, 0.05, 0.45), (0.7, 0.15, 0.4), (0.98, 0.55, 0.05), (0.99, 1.0, 0.65)];
    let x = if v.is_finite() { v.clamp(0.0, 1.0) } else { 0.0 } * (STOPS.len() - 1) as f64;
    let k = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - k as f64;
    let (a, b) = (STOPS[k], STOPS[k + 1]);
    let mix = |p: f64, q: f64| ((p + (q - p) * f) * 255.0).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Frames shown of a run with `frames` frames: up to five, evenly spread, first and last included.
pub fn shown_frames(frames: usize) -> Vec<usize> {
    let n = frames.min(SHOWN_FRAMES);
    match n {
        0 => Vec::new(),
        1 => vec![0],
        _ => (0..n).map(|k| k * (frames - 1) / (n - 1)).collect(),
    }
}

/// Draws one grid of cells into `area`, cell `(i, j)` coloured by `color`, row 0 at the top.
pub(crate) fn draw_grid<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    (rows, cols): (usize, usize),
    color: impl Fn(usize, usize) -> RGBColor,
    path: &Path,
) -> Result<(), ExperimentError> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 14))
        .margin(6)
        .build_cartesian_2d(0f64..cols as f64, rows as f64..0f64)
        .map_err(|e| draw_err(path, e))?;
    chart
        .draw_series((0..rows).flat_map(|i| (0..cols).map(move |j| (i, j))).map(|(i, j)| {
            Rectangle::new([(j as f64, i as f64), (j as f64 + 1.0, i as f64 + 1.0)], color(i, j).filled())
        }))
        .map_err(|e| draw_err(path, e))?;
    Ok(())
}

/// Writes a PNG of run `run` of `set`: the region map (when given) and five frames per channel
/// (first three channels, one row each) as heat maps on a colour range shared per channel;
/// returns the path.
pub fn plot_fields(
    path: &Path,
    title: &str,
    set: &FieldSet,
    run: usize,
    regions: Option<&Array2<usize>>,
) -> Result<PathBuf, ExperimentError> {
    ensure_font();
    if run >= set.runs() {
        return Err(mixer_core::Error::config("run", format!("{run} is past the last of {} runs", set.runs())).into());
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| mixer_core::Error::io(parent, e))?;
    }
    let frames = shown_frames(set.frames());
    let channels = set.channels().min(SHOWN_CHANNELS);
    let grid = set.grid();
    let lead = usize::from(regions.is_some());
    let cols = lead + frames.len();
    let size = (CELL * cols as u32, 44 + (CELL + CAPTION) * channels as u32);
    {
        let root = BitMapBackend::new(path, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
        let root = root.titled(title, ("sans-serif", 18)).map_err(|e| draw_err(path, e))?;
        let areas = root.split_evenly((channels, cols));
        if let Some(map) = regions {
            let counts = mixer_data::region_cells(map);
            draw_grid(
                &areas[0],
                &format!("regions ({})", counts.len()),
                map.dim(),
                |i, j| {
                    let (r, g, b) = Palette99::pick(map[[i, j]]).rgb();
                    RGBColor(r, g, b)
                },
                path,
            )?;
        }
        for c in 0..channels {
            let views: Vec<ArrayView2<f32>> =
                frames.iter().map(|&k| set.fields.slice(ndarray::s![run, k, .., .., c])).collect();
            let (lo, hi) = views
                .iter()
                .flat_map(|v| v.iter())
                .filter(|v| v.is_finite())
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
            let (lo, hi) = if lo.is_finite() { (f64::from(lo), f64::from(hi)) } else { (0.0, 1.0) };
            let span = (hi - lo).max(1e-12);
            for (n, (&k, view)) in frames.iter().zip(&views).enumerate() {
                let t = (k as f64 * set.dt * 1e6).round() / 1e6;
                let caption = if channels > 1 {
                    format!("ch {c}, t = {t} [{lo:.2}, {hi:.2}]")
                } else {
                    format!("t = {t} [{lo:.2}, {hi:.2}]")
                };
                let area = &areas[c * cols + lead + n];
                draw_grid(area, &caption, grid, |i, j| heat_color((f64::from(view[[i, j]]) - lo) / span), path)?;
            }
        }
        root.present().map_err(|e| draw_err(path, e))?;
    }
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_spread_and_colours_run_dark_to_light() {
        assert_eq!(shown_frames(101), vec![0, 25, 50, 75, 100]);
        assert_eq!(shown_frames(3), vec![0, 1, 2]);
        assert_eq!(shown_frames(1), vec![0]);
        let lum = |c: RGBColor| u32::from(c.0) + u32::from(c.1) + u32::from(c.2);
        assert!(lum(heat_color(0.0)) < lum(heat_color(0.5)) && lum(heat_color(0.5)) < lum(heat_color(1.0)));
        assert_eq!(heat_color(f64::NAN), heat_color(0.0));
    }
}
