//! Overview figure of a dataset: per family (or per environment), time series and a phase portrait.

use std::path::{Path, PathBuf};

use mixer_core::Dataset;

use super::{Panel, Series, Stroke, panel_grid};
use crate::ExperimentError;

/// Representative environments: the first of each family, else up to `max` evenly spread ones.
fn groups(data: &Dataset, max: usize) -> Vec<(usize, String)> {
    match &data.families {
        Some(f) => (0..f.len())
            .filter(|&e| e == 0 || f[e] != f[e - 1])
            .take(max)
            .map(|e| (e, format!("family {}", f[e])))
            .collect(),
        None => {
            let n = data.num_envs();
            let k = n.min(max).max(1);
            let mut envs: Vec<usize> = (0..k).map(|i| i * n / k).collect();
            envs.dedup();
            envs.into_iter().map(|e| (e, format!("environment {e}"))).collect()
        }
    }
}

/// Two panels per group: the states of trajectory 0 over time, and a phase portrait (first two
/// state variables) of up to 8 trajectories. `names` are state names (`[species]` for grid
/// systems, whose state is species-major; cell 0 of each species is shown). `family_names`
/// label families when known.
pub fn dataset_panels(data: &Dataset, names: &[String], family_names: &[String], max_groups: usize) -> Vec<Panel> {
    let dim = data.dim();
    let species = if !names.is_empty() && dim.is_multiple_of(names.len()) { names.len() } else { dim };
    let stride = dim / species;
    let shown: Vec<(usize, String)> =
        (0..species.min(6)).map(|k| (k * stride, names.get(k).cloned().unwrap_or_else(|| format!("x{k}")))).collect();
    let mut panels = Vec::new();
    for (env, label) in groups(data, max_groups) {
        let label = match (&data.families, family_names) {
            (Some(f), names) if f[env] < names.len() => names[f[env]].clone(),
            _ => label,
        };
        let t = data.t.for_env(env);
        let x = data.env(env);
        panels.push(Panel {
            title: format!("{label}: trajectory 0 (env {env})"),
            x_label: "t".into(),
            y_label: "state".into(),
            series: shown
                .iter()
                .enumerate()
                .map(|(c, (d, name))| Series {
                    label: name.clone(),
                    points: t.iter().enumerate().map(|(k, &tk)| (tk, x[[0, k, *d]])).collect(),
                    color: c,
                    stroke: Stroke::Solid,
                })
                .collect(),
        });
        if shown.len() >= 2 {
            let (a, b) = (shown[0].0, shown[1].0);
            panels.push(Panel {
                title: format!("{label}: phase portrait"),
                x_label: shown[0].1.clone(),
                y_label: shown[1].1.clone(),
                series: (0..data.num_trajs().min(8))
                    .map(|n| Series {
                        label: String::new(),
                        points: (0..t.len()).map(|k| (x[[n, k, a]], x[[n, k, b]])).collect(),
                        color: n,
                        stroke: Stroke::Solid,
                    })
                    .collect(),
            });
        } else {
            panels.push(Panel {
                title: format!("{label}: all trajectories"),
                x_label: "t".into(),
                y_label: shown[0].1.clone(),
                series: (0..data.num_trajs().min(8))
                    .map(|n| Series {
                        label: String::new(),
                        points: t.iter().enumerate().map(|(k, &tk)| (tk, x[[n, k, 0]])).collect(),
                        color: n,
                        stroke: Stroke::Solid,
                    })
                    .collect(),
            });
        }
    }
    panels
}

/// Writes the dataset overview PNG (two columns: time series, phase portrait; one row per group).
pub fn plot_dataset(
    path: &Path,
    title: &str,
    data: &Dataset,
    names: &[String],
    family_names: &[String],
) -> Result<PathBuf, ExperimentError> {
    let panels = dataset_panels(data, names, family_names, 10);
    panel_grid(path, title, &panels, 2, (460, 280))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mixer_core::TimeGrid;
    use ndarray::Array4;

    #[test]
    fn panels_per_family_and_png_written() {
        let x = Array4::from_shape_fn((4, 3, 10, 2), |(e, n, k, d)| {
            ((k as f64) * 0.3 + n as f64 + e as f64).sin() + d as f64
        });
        let t = TimeGrid::PerEnv((0..4).map(|_| (0..10).map(|k| k as f64).collect()).collect());
        let data = Dataset::new(x, t, Some(vec![0, 0, 1, 1])).unwrap();
        let names = vec!["x".to_string(), "y".to_string()];
        let panels = dataset_panels(&data, &names, &["a".into(), "b".into()], 10);
        assert_eq!(panels.len(), 4);
        assert_eq!(panels[2].title, "b: trajectory 0 (env 2)");
        assert_eq!(panels[3].series.len(), 3);
        assert_eq!(panels[3].series[1].points[4], (data.x[[2, 1, 4, 0]], data.x[[2, 1, 4, 1]]));
        let dir = tempfile::tempdir().unwrap();
        let p = plot_dataset(&dir.path().join("d.png"), "test", &data, &names, &[]).unwrap();
        let bytes = std::fs::read(p).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
    }
}
