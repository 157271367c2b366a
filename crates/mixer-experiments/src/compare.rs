//! Per-family comparison of the experiments that share a dataset (ODEBench-10 with GEPS, CoDA
//! and NCF experts, say): each family's median in-domain error under every model, as a table and
//! a heat map.

use std::fmt::Write as _;
use std::path::PathBuf;

use mixer_data::{MANIFEST_FILE, Manifest};
use mixer_train::EvalReport;
use mixer_train::metrics::{Summary, median};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::ExperimentError;
use crate::plot::{Heatmap, heatmap};
use crate::reproduce::{ExperimentRecord, Report};

/// Each family's median in-domain error under every model trained on one dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FamilyComparison {
    /// The dataset the models share.
    pub dataset: String,
    /// The metric compared (`mse`, `rel_l2` or `rel_l2_env`).
    pub metric: String,
    /// Family names, in the dataset's order.
    pub families: Vec<String>,
    /// One label per model: `experiment / variant`.
    pub models: Vec<String>,
    /// `medians[family][model]`: the median over the family's environments.
    pub medians: Vec<Vec<f64>>,
    /// The heat map.
    pub figure: PathBuf,
}

/// The summary of `metric` in an evaluation (`None` where an older report lacks it).
pub(crate) fn metric_summary<'a>(r: &'a EvalReport, metric: &str) -> Option<&'a Summary> {
    match metric {
        "rel_l2" => Some(&r.rel_l2),
        "rel_l2_env" => r.rel_l2_env.as_ref(),
        _ => Some(&r.mse),
    }
}

/// One comparison per dataset that two or more of the report's experiments trained on
/// (generated data only), its heat map drawn under `figures/`.
pub fn family_comparisons(report: &Report) -> Result<Vec<FamilyComparison>, ExperimentError> {
    let mut datasets: Vec<&str> = Vec::new();
    for e in report.experiments.iter().filter(|e| !e.dataset.is_empty()) {
        let sharing = report.experiments.iter().filter(|o| o.dataset == e.dataset).count();
        if sharing > 1 && !datasets.contains(&e.dataset.as_str()) {
            datasets.push(&e.dataset);
        }
    }
    datasets.into_iter().filter_map(|d| compare(report, d).transpose()).collect()
}

/// The comparison on `dataset`, or `None` when its manifest cannot be read.
fn compare(report: &Report, dataset: &str) -> Result<Option<FamilyComparison>, ExperimentError> {
    let manifest = match Manifest::read(&report.plan.data_dir(dataset).join(MANIFEST_FILE)) {
        Ok(m) => m,
        Err(e) => {
            warn!(dataset, error = %e, "no manifest; per-family comparison skipped");
            return Ok(None);
        }
    };
    let Some(test) = manifest.split("test") else { return Ok(None) };
    let family_of: Vec<usize> = test.environments.iter().map(|e| e.family).collect();
    let experiments: Vec<&ExperimentRecord> = report.experiments.iter().filter(|e| e.dataset == dataset).collect();
    let metric = experiments[0].metric.clone();
    let mut models = Vec::new();
    let mut columns: Vec<Vec<f64>> = Vec::new();
    for e in &experiments {
        for r in e.runs.iter().filter(|r| r.source == "generated") {
            let Some(s) = metric_summary(&r.metrics.in_domain, &metric) else { continue };
            if s.per_env.len() != family_of.len() {
                warn!(run = %r.dir.display(), "environments differ from the dataset's; left out of the comparison");
                continue;
            }
            models.push(format!("{} / {}", e.name, r.variant.label()));
            columns.push(family_medians(&s.per_env, &family_of, manifest.families.len()));
        }
    }
    if models.is_empty() {
        return Ok(None);
    }
    let families: Vec<String> = manifest.families.iter().map(|f| f.name.clone()).collect();
    let medians: Vec<Vec<f64>> = (0..families.len()).map(|f| columns.iter().map(|c| c[f]).collect()).collect();
    let figure = report.plan.out_dir.join("figures").join(format!("families-{dataset}.png"));
    let title = format!("{dataset}: median in-domain {metric} per family (log colour scale)");
    let map = Heatmap {
        title: &title,
        rows: &families,
        columns: &models,
        row_desc: "family",
        column_desc: "model",
        higher_is_better: false,
        log_colour: true,
    };
    heatmap(&figure, &map, &medians)?;
    Ok(Some(FamilyComparison { dataset: dataset.to_string(), metric, families, models, medians, figure }))
}

/// The median of `per_env` over each family's environments (`family_of[e]` is environment
/// `e`'s family; NaN for a family without environments).
fn family_medians(per_env: &[f64], family_of: &[usize], families: usize) -> Vec<f64> {
    (0..families)
        .map(|f| {
            let v: Vec<f64> = per_env.iter().zip(family_of).filter(|(_, k)| **k == f).map(|(v, _)| *v).collect();
            if v.is_empty() { f64::NAN } else { median(&v) }
        })
        .collect()
}

/// The comparison as a Markdown section (figure link and table).
pub fn comparison_markdown(c: &FamilyComparison, link: impl Fn(&std::path::Path) -> String) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## Per family on {}\n", c.dataset);
    let _ = writeln!(
        s,
        "Median in-domain {} over each family's environments, for every model trained on `{}` \
         (generated data). ![per-family heat map]({})\n",
        c.metric,
        c.dataset,
        link(&c.figure)
    );
    let _ = writeln!(s, "| family | {} |", c.models.join(" | "));
    let _ = writeln!(s, "|---|{}", "---|".repeat(c.models.len()));
    for (name, row) in c.families.iter().zip(&c.medians) {
        let cells: Vec<String> = row.iter().map(|v| format!("{v:.3e}")).collect();
        let _ = writeln!(s, "| {name} | {} |", cells.join(" | "));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_are_taken_over_each_familys_environments() {
        let m = family_medians(&[1.0, 5.0, 3.0, 10.0, 20.0], &[0, 0, 0, 2, 2], 3);
        assert_eq!(m[0], 3.0);
        assert!(m[1].is_nan());
        assert_eq!(m[2], 15.0);
    }

    #[test]
    fn the_table_has_a_row_per_family_and_a_column_per_model() {
        let c = FamilyComparison {
            dataset: "d".into(),
            metric: "rel_l2".into(),
            families: vec!["a".into(), "b".into()],
            models: vec!["x / MixER".into(), "y / MixER".into()],
            medians: vec![vec![0.1, 0.2], vec![0.3, 0.4]],
            figure: PathBuf::from("f.png"),
        };
        let md = comparison_markdown(&c, |p| p.display().to_string());
        assert!(md.contains("| family | x / MixER | y / MixER |"));
        assert!(md.contains("| b | 3.000e-1 | 4.000e-1 |"));
        assert!(md.contains("(f.png)"));
    }
}
