//! `REPORT.md`: the datasets generated and one table per experiment, with figure links.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use mixer_train::EvalReport;

use crate::reproduce::{ExperimentRecord, Report, RunRecord};

/// `path` relative to `base` when it lies under it.
pub(crate) fn relative(path: &Path, base: &Path) -> PathBuf {
    path.strip_prefix(base).map(Path::to_path_buf).unwrap_or_else(|_| path.to_path_buf())
}

/// `mean ± std` of the headline metric, in scientific notation.
fn score(r: &EvalReport, metric: &str) -> String {
    let s = if metric == "rel_l2" { &r.rel_l2 } else { &r.mse };
    format!("{:.3e} ± {:.1e}", s.mean, s.std)
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
        self.dataset_section(&mut s);
        s
    }

    fn experiment_section(&self, s: &mut String, e: &ExperimentRecord) {
        let m = if e.metric == "rel_l2" { "relative L2" } else { "MSE" };
        let _ = writeln!(s, "## {}\n\n{}.\n", e.name, e.description);
        let _ = writeln!(
            s,
            "| data | model | experts | in-domain {m} | adaptation {m} (bulk) | adaptation {m} (sequential) \
             | purity | NMI | gate refits (skipped) | train s | s / outer step |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
        for r in &e.runs {
            let x = &r.metrics;
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} ({}) | {:.1} | {:.2} |",
                r.source,
                r.variant.label(),
                r.experts,
                score(&x.in_domain, &e.metric),
                score(&x.adaptation.bulk, &e.metric),
                score(&x.adaptation.sequential, &e.metric),
                opt(x.routing.purity),
                opt(x.routing.nmi),
                x.routing.gate_updates,
                x.routing.skipped_gate_updates,
                x.timing.train_seconds,
                x.timing.seconds_per_outer_step,
            );
        }
        for note in &e.skipped {
            let _ = writeln!(s, "\n{note}.");
        }
        let _ = writeln!(s, "\nMean ± std over environments. Figures per run:\n");
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

    fn figure_links(&self, r: &RunRecord) -> String {
        ["gate", "contexts", "trajectories", "adaptation", "loss"]
            .iter()
            .map(|f| format!("[{f}]({})", self.link(&r.dir.join(format!("{f}.png")))))
            .collect::<Vec<_>>()
            .join(" · ")
    }

    fn dataset_section(&self, s: &mut String) {
        let _ = writeln!(s, "## Datasets (MIXER.md §6)\n");
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
