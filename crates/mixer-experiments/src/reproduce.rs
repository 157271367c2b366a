//! `cargo xtask reproduce`: the plan of published experiments, the run, and `REPORT.md`.
//! At this stage every dataset of MIXER.md §6 is generated and plotted; training and
//! evaluation join the plan later.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::ProgressBar;
use mixer_core::Split;
use mixer_data::{DatasetSpec, GenerateOptions, generate};
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::{ExperimentError, Profile, plot::plot_dataset};

/// The datasets of MIXER.md §6 that are generated (synthetic control and EEG are external data).
pub const PUBLISHED_DATASETS: [&str; 4] = ["odebench-2d", "lotka-volterra", "glycolytic", "selkov"];

/// What `reproduce` runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Parameter profile.
    pub profile: Profile,
    /// Output folder (datasets under `data/<name>`, figures under `figures/`, `REPORT.md`).
    pub out_dir: PathBuf,
    /// Seed of the dataset generation.
    pub seed: u64,
    /// Datasets to generate (built-in system or collection names).
    pub datasets: Vec<String>,
}

impl Plan {
    /// Every published experiment's dataset, written under `out_dir`.
    pub fn new(profile: Profile, out_dir: impl Into<PathBuf>) -> Self {
        Self {
            profile,
            out_dir: out_dir.into(),
            seed: 0,
            datasets: PUBLISHED_DATASETS.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Keeps only the experiment `name` (when given); an unknown name is an error listing the plan.
    pub fn only(mut self, name: Option<&str>) -> Result<Self, ExperimentError> {
        if let Some(n) = name {
            if !self.datasets.iter().any(|d| d == n) {
                return Err(ExperimentError::UnknownExperiment {
                    name: n.to_string(),
                    known: self.datasets.join(", "),
                });
            }
            self.datasets.retain(|d| d == n);
        }
        Ok(self)
    }
}

/// One generated dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetRecord {
    /// Dataset name.
    pub name: String,
    /// One line saying what it is.
    pub description: String,
    /// Folder holding the split files and `dataset.toml`.
    pub dir: PathBuf,
    /// Overview figure.
    pub figure: PathBuf,
    /// `(split, shape of X as stored)`.
    pub shapes: Vec<(String, Vec<usize>)>,
    /// Number of families.
    pub families: usize,
    /// Wall-clock seconds spent generating and plotting.
    pub seconds: f64,
}

/// What a `reproduce` run produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The plan that ran.
    pub plan: Plan,
    /// Generated datasets.
    pub datasets: Vec<DatasetRecord>,
}

/// Runs the plan: generates, writes and plots each dataset; returns the report (not yet written).
pub fn reproduce(plan: &Plan, progress: &dyn Fn(&str) -> ProgressBar) -> Result<Report, ExperimentError> {
    let mut datasets = Vec::new();
    for name in &plan.datasets {
        let start = Instant::now();
        let spec = DatasetSpec::builtin(name)?;
        let bar = progress(name);
        let data = generate(&spec, &GenerateOptions::new(plan.seed), &bar)?;
        let dir = plan.out_dir.join("data").join(name);
        data.write(&dir)?;
        let manifest = data.manifest.as_ref();
        let state = spec.members[0].spec().state.clone();
        let family_names: Vec<String> = spec.members.iter().map(|m| m.spec().name.clone()).collect();
        let figure = plan.out_dir.join("figures").join(format!("data-{name}.png"));
        plot_dataset(&figure, &format!("{name} (train split)"), &data.train, &state, &family_names)?;
        let shapes = Split::ALL
            .iter()
            .map(|s| {
                let shape = manifest.and_then(|m| m.split(s.stem())).map(|i| i.shape.clone()).unwrap_or_default();
                (s.stem().to_string(), shape)
            })
            .collect();
        let seconds = start.elapsed().as_secs_f64();
        info!(dataset = %name, seconds, "dataset generated");
        datasets.push(DatasetRecord {
            name: name.clone(),
            description: spec.description.clone(),
            dir,
            figure,
            shapes,
            families: spec.members.len(),
            seconds,
        });
    }
    Ok(Report { plan: plan.clone(), datasets })
}

impl Report {
    /// The report as Markdown.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# mixer — reproduction report\n");
        let _ = writeln!(s, "Profile `{}`, seed {}.\n", self.plan.profile.name(), self.plan.seed);
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
                d.dir.display(),
                relative(&d.figure, &self.plan.out_dir).display()
            );
        }
        let _ =
            writeln!(s, "\nShapes are those of `X` as stored (`[families,] envs, trajs, steps, dim`). Ground truth by");
        let _ = writeln!(
            s,
            "diffsol at rtol 1e-8, atol 1e-10; each folder's `dataset.toml` lists the parameters per environment."
        );
        for d in &self.datasets {
            let _ = writeln!(
                s,
                "\n### {}\n\n{}\n\n![{}]({})",
                d.name,
                d.description,
                d.name,
                relative(&d.figure, &self.plan.out_dir).display()
            );
        }
        s
    }

    /// Writes `REPORT.md` into `out_dir` (atomically) and returns its path.
    pub fn write_markdown(&self, out_dir: &Path) -> Result<PathBuf, ExperimentError> {
        std::fs::create_dir_all(out_dir).map_err(|e| mixer_core::Error::io(out_dir, e))?;
        let path = out_dir.join("REPORT.md");
        let tmp = out_dir.join(format!(".REPORT.md.tmp-{}", std::process::id()));
        std::fs::write(&tmp, self.to_markdown()).map_err(|e| mixer_core::Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| mixer_core::Error::io(&path, e))?;
        Ok(path)
    }
}

fn relative(path: &Path, base: &Path) -> PathBuf {
    path.strip_prefix(base).map(Path::to_path_buf).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_filters_and_report_lists_what_was_generated() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            Plan::new(Profile::Quick, dir.path()).only(Some("nope")),
            Err(ExperimentError::UnknownExperiment { .. })
        ));
        let plan = Plan::new(Profile::Quick, dir.path()).only(Some("lotka-volterra")).unwrap();
        assert_eq!(plan.datasets, vec!["lotka-volterra"]);
        let report = reproduce(&plan, &|_| ProgressBar::hidden()).unwrap();
        assert_eq!(report.datasets[0].shapes[1], ("test".to_string(), vec![9, 32, 20, 2]));
        let md = report.write_markdown(dir.path()).unwrap();
        let text = std::fs::read_to_string(md).unwrap();
        assert!(
            text.contains("| lotka-volterra | 1 | [9, 4, 20, 2] | [9, 32, 20, 2] | [4, 1, 20, 2] | [4, 32, 20, 2] |"),
            "{text}"
        );
        assert!(dir.path().join("data/lotka-volterra/dataset.toml").is_file());
        assert!(dir.path().join("figures/data-lotka-volterra.png").is_file());
    }
}
