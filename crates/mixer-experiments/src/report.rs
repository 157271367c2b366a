//! `REPORT.md`: the datasets generated and one table per experiment, with figure links.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use mixer_train::EvalReport;
use mixer_train::metrics::Summary;

use crate::compare::metric_summary;
use crate::reproduce::{ExperimentRecord, Report, RunRecord};

/// Coefficient of variation (population standard deviation over mean) of the number of
/// environments each expert takes: 0 when balanced.
fn load_cv(assignment: &[usize], experts: usize) -> f64 {
    let mut load = vec![0.0; experts];
    for &e in assignment.iter().filter(|&&e| e < experts) {
        load[e] += 1.0;
    }
    let mean = load.iter().sum::<f64>() / experts as f64;
    let var = load.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / experts as f64;
    if mean > 0.0 { var.sqrt() / mean } else { 0.0 }
}

/// `path` relative to `base` when it lies under it.
pub(crate) fn relative(path: &Path, base: &Path) -> PathBuf {
    path.strip_prefix(base).map(Path::to_path_buf).unwrap_or_else(|_| path.to_path_buf())
}

/// A score over environments as `mean ± std (median)`, in scientific notation.
pub fn summary_cell(s: &Summary) -> String {
    format!("{:.3e} ± {:.1e} ({:.3e})", s.mean, s.std, s.median)
}

/// `mean ± std (median)` of `metric` (`mse`, `rel_l2` or `rel_l2_env`); `–` where a report
/// written before `rel_l2_env` existed lacks it.
fn score(r: &EvalReport, metric: &str) -> String {
    metric_summary(r, metric).map_or_else(|| "–".to_string(), summary_cell)
}

/// Column name of a metric.
fn metric_name(metric: &str) -> &'static str {
    match metric {
        "rel_l2" => "relative L2",
        "rel_l2_env" => "env. relative L2",
        _ => "MSE",
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_string(), |v| format!("{v:.3}"))
}

impl Report {
    /// The report as Markdown.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let p = &self.plan;
        let _ = writeln!(s, "# mixer — reproduction report\n");
        let _ = writeln!(s, "Profile `{}`, data seed {}, device `{:?}`.\n", p.profile.name(), p.seed, p.device);
        for e in &self.experiments {
            self.experiment_section(&mut s, e);
        }
        for c in &self.comparisons {
            s.push_str(&crate::compare::comparison_markdown(c, |p| self.link(p)));
            s.push('\n');
        }
        if !self.field_experiments.is_empty() {
            let _ = writeln!(s, "## Gridded fields\n");
            for e in &self.field_experiments {
                s.push_str(&crate::field::field_markdown(e, |p| self.link(p)));
                s.push('\n');
            }
        }
        if !self.continual_experiments.is_empty() {
            let _ = writeln!(s, "## Continual model-based control\n");
            for e in &self.continual_experiments {
                s.push_str(&crate::continual_markdown(e, |p| self.link(p)));
                s.push('\n');
            }
        }
        if !self.sequence_experiments.is_empty() {
            let _ = writeln!(s, "## Time series with hier-shPLRNN experts\n");
            for e in &self.sequence_experiments {
                s.push_str(&crate::sequence_markdown(e, |p| self.link(p)));
                s.push('\n');
            }
        }
        if !self.scaling_experiments.is_empty() {
            let _ = writeln!(s, "## Scalability\n");
            for e in &self.scaling_experiments {
                s.push_str(&crate::scaling_markdown(e, |p| self.link(p)));
                s.push('\n');
            }
        }
        if !self.pde_experiments.is_empty() {
            let _ = writeln!(s, "## Operator pre-training on mixed PDE families\n");
            for e in &self.pde_experiments {
                s.push_str(&crate::pde_pretrain::pde_markdown(e, |p| self.link(p)));
                s.push('\n');
            }
        }
        self.dataset_section(&mut s);
        s
    }

    fn experiment_section(&self, s: &mut String, e: &ExperimentRecord) {
        let m = metric_name(&e.metric);
        // The environment-normalised relative L2 is shown beside any other headline metric.
        let env = (e.metric != "rel_l2_env").then(|| metric_name("rel_l2_env"));
        let _ = writeln!(s, "## {}\n\n{}.\n", e.name, e.description);
        let env_head = env.map_or_else(String::new, |n| format!(" in-domain {n} |"));
        let _ = writeln!(
            s,
            "| data | model | experts | in-domain {m} |{env_head} adaptation {m} (bulk) | adaptation {m} (sequential) \
             | purity | NMI | load CV | dropped | gate refits (skipped) | train s | s / outer step |"
        );
        let _ = writeln!(
            s,
            "|---|---|---|---|{}---|---|---|---|---|---|---|---|---|",
            if env.is_some() { "---|" } else { "" }
        );
        for r in &e.runs {
            let x = &r.metrics;
            let env_cell = env.map_or_else(String::new, |_| format!(" {} |", score(&x.in_domain, "rel_l2_env")));
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |{env_cell} {} | {} | {} | {} | {} | {} | {} ({}) | {:.1} | {:.2} |",
                r.source,
                r.variant.label(),
                r.experts,
                score(&x.in_domain, &e.metric),
                score(&x.adaptation.bulk, &e.metric),
                score(&x.adaptation.sequential, &e.metric),
                opt(x.routing.purity),
                opt(x.routing.nmi),
                opt((r.experts > 1).then(|| load_cv(&x.routing.assignment, r.experts))),
                x.routing.dropped_share.map_or_else(|| "–".to_string(), |d| format!("{:.1} %", 100.0 * d)),
                x.routing.gate_updates,
                x.routing.skipped_gate_updates,
                x.timing.train_seconds,
                x.timing.seconds_per_outer_step,
            );
        }
        for note in &e.skipped {
            let _ = writeln!(s, "\n{note}.");
        }
        let _ = writeln!(
            s,
            "\nScores are mean ± std (median) over environments. Relative L2 is ODEBench's pointwise \
             mean of ||ŷ − y||² / ||max(|y|, 1e-6)||² over trajectories and times; env. relative L2 is \
             ||Ŷ − Y||_F / ||Y||_F over all trajectories, times and dimensions of an environment \
             (docs/method.md). Dropped is the share of units (environments, once per model step) \
             that the router sent to no routed expert (capacity limits, units no expert picked). Figures per run:\n"
        );
        self.long_term_table(s, e);
        for r in &e.runs {
            let _ = writeln!(s, "- {} / {}: {}", r.source, r.variant.label(), self.figure_links(r));
        }
        if let Some(r) = e.runs.first() {
            let _ = writeln!(
                s,
                "\n![gate {}]({})\n![contexts {}]({})\n![trajectories {}]({})\n",
                e.name,
                self.link(&r.dir.join("gate.png")),
                e.name,
                self.link(&r.dir.join("contexts.png")),
                e.name,
                self.link(&r.dir.join("trajectories.png"))
            );
        }
    }

    /// Long-term reconstruction metrics of the in-domain and adaptation test trajectories, for
    /// the runs whose reports have them.
    fn long_term_table(&self, s: &mut String, e: &ExperimentRecord) {
        let rows: Vec<_> = e
            .runs
            .iter()
            .filter_map(|r| {
                Some((r, r.metrics.in_domain.long_term.as_ref()?, r.metrics.adaptation.bulk.long_term.as_ref()?))
            })
            .collect();
        if rows.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            "Long-term metrics (mean over environments; D_stsp: state-space KL divergence, D_H: Hellinger \
             distance of power spectra, MASE: error scaled by the naive one-step forecast; docs/method.md):\n"
        );
        let _ = writeln!(s, "| data | model | in-domain D_stsp | D_H | MASE | adaptation D_stsp | D_H | MASE |");
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
        for (r, a, b) in rows {
            let _ = writeln!(
                s,
                "| {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
                r.source,
                r.variant.label(),
                a.dstsp.mean,
                a.hellinger.mean,
                a.mase.mean,
                b.dstsp.mean,
                b.hellinger.mean,
                b.mase.mean
            );
        }
        s.push('\n');
    }

    fn figure_links(&self, r: &RunRecord) -> String {
        ["gate", "contexts", "trajectories", "adaptation", "loss"]
            .iter()
            .map(|f| format!("[{f}]({})", self.link(&r.dir.join(format!("{f}.png")))))
            .collect::<Vec<_>>()
            .join(" · ")
    }

    fn dataset_section(&self, s: &mut String) {
        let _ = writeln!(s, "## Datasets (MixER, Nzoyem et al. 2025)\n");
        let _ =
            writeln!(s, "| dataset | families | train | test | adapt_train | adapt_test | seconds | folder | figure |");
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
        for d in &self.datasets {
            let shape = |k: usize| d.shapes.get(k).map(|(_, v)| format!("{v:?}")).unwrap_or_default();
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {:.1} | `{}` | [png]({}) |",
                d.name,
                d.families,
                shape(0),
                shape(1),
                shape(2),
                shape(3),
                d.seconds,
                self.link(&d.dir),
                self.link(&d.figure)
            );
        }
        let _ = writeln!(
            s,
            "\nShapes are those of `X` as stored (`[families,] envs, trajs, steps, dim`). Ground truth by \
             diffsol at rtol 1e-8, atol 1e-10; each folder's `dataset.toml` lists the parameters per environment."
        );
        for d in &self.datasets {
            let _ = writeln!(s, "\n### {}\n\n{}\n\n![{}]({})", d.name, d.description, d.name, self.link(&d.figure));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_cv_is_zero_when_balanced() {
        assert_eq!(load_cv(&[0, 1, 2, 0, 1, 2], 3), 0.0);
        // loads (3, 1, 0): mean 4/3, population std sqrt(14/9) = 1.247
        assert!((load_cv(&[0, 0, 0, 1], 3) - (14.0f64 / 9.0).sqrt() / (4.0 / 3.0)).abs() < 1e-12);
    }

    #[test]
    fn cells_show_mean_std_and_median() {
        // mean 4, population std sqrt(38 / 3) = 3.559, median 2
        assert_eq!(summary_cell(&Summary::new(vec![1.0, 2.0, 9.0])), "4.000e0 ± 3.6e0 (2.000e0)");
        // even count: median (2 + 8) / 2 = 5
        assert_eq!(summary_cell(&Summary::new(vec![8.0, 1.0, 2.0, 100.0])), "2.775e1 ± 4.2e1 (5.000e0)");
        let s = Summary::new(vec![1.0, 3.0]);
        let mut r = EvalReport {
            mse: s.clone(),
            rel_l2: s.clone(),
            rel_l2_env: None,
            mape: s,
            long_term: None,
            assignment: vec![],
        };
        assert_eq!(score(&r, "rel_l2_env"), "–", "reports written before the metric existed");
        r.rel_l2_env = Some(Summary::new(vec![0.5]));
        assert_eq!(score(&r, "rel_l2_env"), "5.000e-1 ± 0.0e0 (5.000e-1)");
        assert_eq!(score(&r, "mse"), "2.000e0 ± 1.0e0 (2.000e0)");
    }
}
