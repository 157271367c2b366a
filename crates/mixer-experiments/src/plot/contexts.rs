//! Where environments sit in context space: the learned contexts on their first two principal
//! axes, coloured by known family and by routed expert, with adapted new environments.

use std::path::{Path, PathBuf};

use nalgebra::DMatrix;

use super::{Panel, Series, Stroke, panel_grid};
use crate::ExperimentError;

/// The first two principal axes of a point cloud (fewer when the points span fewer).
#[derive(Clone, Debug, PartialEq)]
pub struct Pca2 {
    mean: Vec<f64>,
    axes: Vec<Vec<f64>>,
}

impl Pca2 {
    /// Fits the axes to `points` (rows of equal length, at least one).
    pub fn fit(points: &[Vec<f64>]) -> Self {
        let (n, d) = (points.len(), points.first().map_or(0, Vec::len));
        let mean: Vec<f64> = (0..d).map(|j| points.iter().map(|p| p[j]).sum::<f64>() / n.max(1) as f64).collect();
        if n == 0 || d == 0 {
            return Self { mean, axes: vec![] };
        }
        let centred = DMatrix::from_fn(n, d, |i, j| points[i][j] - mean[j]);
        // nalgebra's `svd` returns the singular values in descending order
        let svd = centred.svd(false, true);
        let Some(v_t) = svd.v_t else {
            return Self { mean, axes: vec![] };
        };
        let tiny = 1e-12 * svd.singular_values.max();
        let axes = (0..svd.singular_values.len().min(2))
            .filter(|&i| svd.singular_values[i] > tiny)
            .map(|i| v_t.row(i).iter().copied().collect())
            .collect();
        Self { mean, axes }
    }

    /// Coordinates of `point` on the two axes (0 on a missing axis).
    pub fn project(&self, point: &[f64]) -> (f64, f64) {
        let along = |k: usize| {
            self.axes
                .get(k)
                .map_or(0.0, |a| a.iter().zip(point.iter().zip(&self.mean)).map(|(a, (p, m))| a * (p - m)).sum())
        };
        (along(0), along(1))
    }
}

/// One scatter series per group label (`label(g)` names group `g`).
fn scatter(coords: &[(f64, f64)], groups: &[usize], label: impl Fn(usize) -> String) -> Vec<Series> {
    let count = groups.iter().max().map_or(0, |m| m + 1);
    (0..count)
        .filter(|g| groups.contains(g))
        .map(|g| Series {
            label: label(g),
            points: coords.iter().zip(groups).filter(|(_, x)| **x == g).map(|(p, _)| *p).collect(),
            color: g,
            stroke: Stroke::Points,
        })
        .collect()
}

/// Writes the context map: training contexts on their two principal axes, coloured by family
/// (when known) and by routed expert; adapted new environments drawn on the expert panel.
pub fn plot_contexts(
    path: &Path,
    contexts: &[Vec<f64>],
    families: Option<&[usize]>,
    experts: &[usize],
    adapted: &[Vec<f64>],
) -> Result<PathBuf, ExperimentError> {
    let pca = Pca2::fit(contexts);
    let coords: Vec<(f64, f64)> = contexts.iter().map(|c| pca.project(c)).collect();
    let panel = |title: &str, series: Vec<Series>| Panel {
        title: title.into(),
        x_label: "principal axis 1".into(),
        y_label: "principal axis 2".into(),
        series,
    };
    let mut panels = Vec::new();
    if let Some(f) = families {
        panels.push(panel("training environments by family", scatter(&coords, f, |g| format!("family {g}"))));
    }
    let mut by_expert = scatter(&coords, experts, |k| format!("expert {k}"));
    if !adapted.is_empty() {
        by_expert.push(Series {
            label: "new (adapted)".into(),
            points: adapted.iter().map(|c| pca.project(c)).collect(),
            color: experts.iter().max().map_or(0, |m| m + 1),
            stroke: Stroke::Points,
        });
    }
    panels.push(panel("by routed expert", by_expert));
    panel_grid(path, "learned contexts (principal axes of the training contexts)", &panels, 2, (520, 440))
}

/// Writes a context map of labelled units: contexts on their two principal axes, coloured by
/// class (named by `class_names`) and by routed expert (the expert panel only with several).
pub fn plot_class_contexts(
    path: &Path,
    title: &str,
    contexts: &[Vec<f64>],
    classes: &[usize],
    class_names: &[String],
    experts: &[usize],
) -> Result<PathBuf, ExperimentError> {
    let pca = Pca2::fit(contexts);
    let coords: Vec<(f64, f64)> = contexts.iter().map(|c| pca.project(c)).collect();
    let panel = |title: &str, series: Vec<Series>| Panel {
        title: title.into(),
        x_label: "principal axis 1".into(),
        y_label: "principal axis 2".into(),
        series,
    };
    let name = |g: usize| class_names.get(g).cloned().unwrap_or_else(|| format!("class {g}"));
    let mut panels = vec![panel("contexts by class", scatter(&coords, classes, name))];
    if experts.iter().any(|&k| k > 0) {
        panels.push(panel("by routed expert", scatter(&coords, experts, |k| format!("expert {k}"))));
    }
    let columns = panels.len();
    panel_grid(path, title, &panels, columns, (560, 460))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_follow_the_spread_of_the_points() {
        // spread 3 along (1, 1, 0) / sqrt 2, 1 along z, none along (1, -1, 0)
        let pts: Vec<Vec<f64>> = [(-1.0, 1.0), (1.0, 1.0), (-1.0, -1.0), (1.0, -1.0)]
            .iter()
            .map(|&(t, s)| vec![5.0 + 3.0 * t / 2f64.sqrt(), -2.0 + 3.0 * t / 2f64.sqrt(), 1.0 + s])
            .collect();
        let pca = Pca2::fit(&pts);
        for (p, &(t, s)) in pts.iter().zip(&[(-1.0, 1.0), (1.0, 1.0), (-1.0, -1.0), (1.0, -1.0)]) {
            let (x, y) = pca.project(p);
            assert!((x.abs() - 3.0).abs() < 1e-12 && (y.abs() - 1.0).abs() < 1e-12, "{x} {y}");
            // signs are free, but consistent across points
            let (x0, y0) = pca.project(&pts[1]);
            assert!((x * x0.signum() - 3.0 * t).abs() < 1e-12 && (y * y0.signum() - s).abs() < 1e-12);
        }
        // a single point spans nothing: everything lands on the origin
        assert_eq!(Pca2::fit(&[vec![1.0, 2.0]]).project(&[4.0, 4.0]), (0.0, 0.0));
    }

    #[test]
    fn context_map_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let ctx: Vec<Vec<f64>> =
            (0..12).map(|i| vec![(i / 4) as f64 + 0.1 * (i % 4) as f64, 0.3 * i as f64, 1.0]).collect();
        let fam: Vec<usize> = (0..12).map(|i| i / 4).collect();
        let path = plot_contexts(&dir.path().join("c.png"), &ctx, Some(&fam), &fam, &ctx[..2]).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() > 1000);
        // Legends sit in a column beside each panel's axes: the figure is wider than two
        // 520-pixel panels by twice the widest legend ("new (adapted)").
        let png = std::fs::read(&path).unwrap();
        let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
        let expert_panel = Panel {
            title: String::new(),
            x_label: String::new(),
            y_label: String::new(),
            series: vec![Series { label: "new (adapted)".into(), points: vec![], color: 0, stroke: Stroke::Points }],
        };
        let legend = crate::plot::legend_width(&expert_panel, 440);
        assert!(legend > 60 && width == 2 * (520 + legend), "{width} {legend}");
    }
}
