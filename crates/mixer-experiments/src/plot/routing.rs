//! How an operator's routers treat the families of a mix: one heat map per block, families down,
//! experts across, shaded by the family's mean routing weight on the expert.

use std::path::{Path, PathBuf};

use mixer_train::PotMetrics;
use plotters::prelude::*;

use super::{draw_err, ensure_font};
use crate::ExperimentError;

/// Writes `routing.png`: per block the family x expert mean routing weights of `metrics`, each
/// titled with the block's family accuracy.
pub fn routing_heatmaps(path: &Path, metrics: &PotMetrics, families: &[String]) -> Result<PathBuf, ExperimentError> {
    ensure_font();
    let blocks = metrics.family_expert.len().max(1);
    let experts = metrics.family_expert.first().and_then(|b| b.first()).map_or(1, Vec::len);
    let cols = blocks.min(2);
    let rows = blocks.div_ceil(cols);
    let cell = (120 + 24 * experts as u32, 90 + 30 * families.len() as u32);
    let root = BitMapBackend::new(path, (cell.0 * cols as u32, 40 + cell.1 * rows as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
    let root =
        root.titled("mean routing weight (families x experts)", ("sans-serif", 18)).map_err(|e| draw_err(path, e))?;
    for (b, (area, heat)) in root.split_evenly((rows, cols)).iter().zip(&metrics.family_expert).enumerate() {
        let accuracy =
            metrics.router_accuracy.get(b).map_or(String::new(), |a| format!(", family accuracy {:.0} %", 100.0 * a));
        let mut chart = ChartBuilder::on(area)
            .caption(format!("block {b}{accuracy}"), ("sans-serif", 14))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(110)
            .build_cartesian_2d(0f64..experts as f64, (0..families.len().saturating_sub(1)).into_segmented())
            .map_err(|e| draw_err(path, e))?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("expert")
            .x_labels(experts.min(20))
            .y_labels(families.len())
            .x_label_formatter(&|v| format!("{}", v.floor() as usize))
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(f) => families.get(*f).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .draw()
            .map_err(|e| draw_err(path, e))?;
        let top = heat.iter().flatten().copied().fold(0.0, f64::max).max(1e-12);
        chart
            .draw_series(heat.iter().enumerate().flat_map(|(f, row)| {
                row.iter().enumerate().map(move |(k, &w)| {
                    let shade = (255.0 * (1.0 - (w / top).clamp(0.0, 1.0))) as u8;
                    let corners = [(k as f64, SegmentValue::Exact(f)), (k as f64 + 1.0, SegmentValue::Exact(f + 1))];
                    Rectangle::new(corners, RGBColor(shade, shade, 255).filled())
                })
            }))
            .map_err(|e| draw_err(path, e))?;
    }
    root.present().map_err(|e| draw_err(path, e))?;
    Ok(path.to_path_buf())
}
