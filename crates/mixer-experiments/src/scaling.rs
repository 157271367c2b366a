//! Scalability sweeps (MixER, Nzoyem et al. 2025): how the seconds per outer step and the
//! routing (purity, NMI) change as ODEBench families or environments per family grow. A file
//! with `kind = "scaling"` extends a shipped experiment (its model, router and training, with
//! `[profile.NAME.run]` overrides as in any `extends` file) and lists sweeps; each sweep point
//! generates the first `families` systems of a collection with `environments` environments each,
//! trains MixER with one expert per family, and scores the final routing against the families.

use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use tracing::info;

use mixer_core::{ContextModel, Error, Seeds};
use mixer_data::{CollectionSpec, DatasetSpec, EnvRule, GenerateOptions, builtin_text, generate};
use mixer_train::metrics::{nmi, purity};
use mixer_train::{RunConfig, Trainer, assignment, read_json, write_json};

use crate::experiment::{declares_kind, parse_file, parse_shipped};
use crate::plot::{Panel, Series, Stroke, panel_grid};
use crate::{AutodiffBackend, BackendJob, Experiment, ExperimentError, Profile};

/// The scaling experiment files shipped in `experiments/`, by name.
pub const BUILTIN_SCALING_EXPERIMENTS: [(&str, &str); 1] =
    [("scalability", include_str!("../../../experiments/scalability.toml"))];

/// One sweep: every pair of a family count and an environment count, on one collection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sweep {
    /// Short name (folder and legend).
    pub name: String,
    /// A shipped collection (`odebench-1d`, `odebench-2d`); a point takes its first families.
    pub collection: String,
    /// Numbers of families (one expert each).
    pub families: Vec<usize>,
    /// Training environments per family (parameters on `linspace(0.9 ref, 1.1 ref, n)`).
    pub environments: Vec<usize>,
}

impl Sweep {
    /// The `(families, environments)` points, families slowest.
    pub fn points(&self) -> Vec<(usize, usize)> {
        self.families.iter().flat_map(|&f| self.environments.iter().map(move |&e| (f, e))).collect()
    }

    /// The axis the sweep varies: `families` when it lists several family counts, else
    /// `environments`.
    pub fn axis(&self) -> &'static str {
        if self.families.len() > 1 { "families" } else { "environments" }
    }
}

/// A scaling experiment, resolved for a profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScalingExperiment {
    /// Short name (folder and table name).
    pub name: String,
    /// One line on what it shows.
    pub description: String,
    /// The experiment whose model, router and training every point uses (experts and context
    /// size follow the number of families).
    pub base: Experiment,
    /// The sweeps.
    pub sweeps: Vec<Sweep>,
    /// The profile it was resolved for.
    pub profile: Profile,
}

impl ScalingExperiment {
    /// True when experiment TOML `text` declares a scaling experiment (`kind = "scaling"`).
    pub fn is_scaling_text(text: &str) -> bool {
        declares_kind(text, "scaling")
    }

    /// A shipped scaling experiment under `profile`.
    pub fn builtin(name: &str, profile: Profile) -> Result<Self, ExperimentError> {
        parse_shipped(&BUILTIN_SCALING_EXPERIMENTS, name, profile, Self::parse)
    }

    /// Reads a scaling experiment file under `profile`.
    pub fn load(path: &Path, profile: Profile) -> Result<Self, ExperimentError> {
        parse_file(path, profile, Self::parse)
    }

    /// Parses scaling experiment TOML: `kind = "scaling"`, a `[[sweeps]]` list, and the keys of
    /// an ordinary experiment (usually `extends = "NAME"` plus overrides).
    pub fn parse(text: &str, profile: Profile) -> Result<Self, ExperimentError> {
        let bad = |message: String| ExperimentError::Toml { path: "<text>".into(), message };
        let mut doc: toml::Table = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        match doc.remove("kind") {
            Some(toml::Value::String(k)) if k == "scaling" => {}
            other => return Err(bad(format!("kind = {other:?}: a scaling experiment says kind = \"scaling\""))),
        }
        let sweeps = doc.remove("sweeps").ok_or_else(|| bad("missing [[sweeps]]".into()))?;
        let sweeps: Vec<Sweep> = sweeps.try_into().map_err(|e: toml::de::Error| bad(format!("[[sweeps]]: {e}")))?;
        let base = Experiment::parse(&toml::to_string(&doc).map_err(|e| bad(e.to_string()))?, profile)?;
        let e = Self { name: base.name.clone(), description: base.description.clone(), base, sweeps, profile };
        e.check()?;
        Ok(e)
    }

    /// Every sweep has its own name, names a shipped collection, has at least one point, and
    /// counts of at least one.
    fn check(&self) -> Result<(), ExperimentError> {
        if self.sweeps.is_empty() {
            return Err(Error::config("sweeps", "needs at least one sweep").into());
        }
        for (i, s) in self.sweeps.iter().enumerate() {
            let field = format!("sweeps.{}", s.name);
            if self.sweeps[..i].iter().any(|t| t.name == s.name) {
                return Err(Error::config(field, "a second sweep of this name (names are folders)").into());
            }
            let c = collection(&s.collection)?;
            if s.points().is_empty() || s.families.contains(&0) || s.environments.contains(&0) {
                return Err(Error::config(field, "needs family and environment counts of at least 1").into());
            }
            if let Some(&f) = s.families.iter().find(|&&f| f > c.families.len()) {
                let have = c.families.len();
                return Err(Error::config(field, format!("{f} families, but `{}` has {have}", s.collection)).into());
            }
        }
        Ok(())
    }

    /// The run config of a point: one expert per family, the base's context size per expert.
    pub fn config(&self, families: usize) -> RunConfig {
        let mut c = self.base.run.clone();
        let per_expert = c.expert_context_dim();
        c.model.experts = families;
        c.model.context_dim = per_expert * families;
        c
    }
}

/// A shipped collection with environment rules of its own, parsed.
fn collection(name: &str) -> Result<CollectionSpec, ExperimentError> {
    let not = |why: &str| Error::config("sweeps.collection", format!("`{name}` {why}"));
    let text = builtin_text(name).ok_or_else(|| not("is not a shipped collection"))?;
    let c: CollectionSpec = toml::from_str(text).map_err(|e| not(&format!("is not a collection: {e}")))?;
    if c.environments.is_none() {
        return Err(not("sets no environment rules for its families").into());
    }
    Ok(c)
}

/// The dataset of one point: the first `families` systems of `collection`, `environments`
/// training environments each, one trajectory per environment in the splits no point reads.
pub fn point_spec(collection_name: &str, families: usize, environments: usize) -> Result<DatasetSpec, ExperimentError> {
    let mut c = collection(collection_name)?;
    c.name = format!("{collection_name}-{families}x{environments}");
    c.families.truncate(families);
    if let Some(plan) = c.environments.as_mut() {
        plan.train = EnvRule::Relative { low: 0.9, high: 1.1, n: environments, limit: Some(environments) };
    }
    c.trajectories.test = 1;
    c.trajectories.adapt_train = 1;
    c.trajectories.adapt_test = 1;
    Ok(DatasetSpec::from_collection(&c)?)
}

/// One trained point of a sweep (`point.json` in its run folder).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScalingPoint {
    /// The sweep it belongs to.
    pub sweep: String,
    /// Families (and experts).
    pub families: usize,
    /// Training environments per family.
    pub environments: usize,
    /// Outer steps trained.
    pub outer_steps: usize,
    /// Training seconds (the gate refits included) per outer step.
    pub seconds_per_outer_step: f64,
    /// Share of environments routed to their family's majority expert (none with one family).
    pub purity: Option<f64>,
    /// NMI between routing and families (none with one family).
    pub nmi: Option<f64>,
    /// Gate refits done and skipped.
    pub gate_updates: (usize, usize),
    /// The backend that ran it.
    pub device: String,
}

/// The points of a scaling experiment and its figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScalingExperimentRecord {
    /// Experiment name.
    pub name: String,
    /// One line on what it shows.
    pub description: String,
    /// Every point of every sweep, in sweep order.
    pub points: Vec<ScalingPoint>,
    /// One figure per swept axis (families, environments).
    pub figures: Vec<PathBuf>,
}

/// Trains every point of a scaling experiment (reusing finished ones) and draws its figures.
pub struct ScalingJob<'a> {
    /// The experiment.
    pub experiment: &'a ScalingExperiment,
    /// Data seed of the generated systems.
    pub data_seed: u64,
    /// Folder of its runs (`<sweep>/<families>x<environments>`).
    pub runs_dir: PathBuf,
    /// Folder of its figures.
    pub figures_dir: PathBuf,
    /// Show training progress bars.
    pub progress: bool,
}

impl BackendJob for ScalingJob<'_> {
    type Output = Result<ScalingExperimentRecord, ExperimentError>;

    fn run<B: AutodiffBackend>(self, device: B::Device, label: &str) -> Self::Output {
        let e = self.experiment;
        let mut points = Vec::new();
        for sweep in &e.sweeps {
            for (families, environments) in sweep.points() {
                let dir = self.runs_dir.join(&sweep.name).join(format!("{families}x{environments}"));
                let point = match read_json::<ScalingPoint>(&dir.join("point.json")) {
                    Ok(p) => p,
                    Err(_) => {
                        info!(experiment = %e.name, sweep = %sweep.name, families, environments, "scaling point");
                        let spec = point_spec(&sweep.collection, families, environments)?;
                        let p =
                            train_point::<B>(e, sweep, &spec, self.data_seed, &dir, self.progress, (&device, label))?;
                        write_json(&dir.join("point.json"), &p)?;
                        p
                    }
                };
                points.push(point);
            }
        }
        let figures = scaling_figures(&self.figures_dir, e, &points)?;
        Ok(ScalingExperimentRecord { name: e.name.clone(), description: e.description.clone(), points, figures })
    }
}

/// Generates a point's data, trains MixER on it in `dir` (resuming a checkpoint) and scores
/// the final routing.
fn train_point<B: AutodiffBackend>(
    e: &ScalingExperiment,
    sweep: &Sweep,
    spec: &DatasetSpec,
    data_seed: u64,
    dir: &Path,
    progress: bool,
    (device, label): (&B::Device, &str),
) -> Result<ScalingPoint, ExperimentError> {
    let families = spec.members.len();
    let data = generate(spec, &GenerateOptions::new(data_seed), &ProgressBar::hidden())?;
    let train = mixer_data::subsample(&data.train, e.base.run.data.subsample)?;
    let environments = train.num_envs() / families;
    let labels = train.families.clone();
    let config = e.config(families);
    let mut trainer =
        Trainer::<B>::new(config, train, Seeds::new(e.base.seed), dir, true, device)?.with_progress(progress);
    trainer.run()?;
    let valid = trainer.model.valid();
    let routed = assignment(&valid.theta, valid.contexts.contexts())?;
    let scored = labels.filter(|_| families > 1);
    let state = &trainer.state;
    Ok(ScalingPoint {
        sweep: sweep.name.clone(),
        families,
        environments,
        outer_steps: state.outer_done,
        seconds_per_outer_step: state.train_seconds / state.outer_done.max(1) as f64,
        purity: scored.as_ref().map(|f| purity(f, &routed)),
        nmi: scored.as_ref().map(|f| nmi(f, &routed)),
        gate_updates: (state.gate_updates, state.skipped_gate_updates),
        device: label.to_string(),
    })
}

/// One figure per swept axis: seconds per outer step, purity and NMI against the axis, one line
/// per sweep (environments on a log2 axis).
fn scaling_figures(
    dir: &Path,
    e: &ScalingExperiment,
    points: &[ScalingPoint],
) -> Result<Vec<PathBuf>, ExperimentError> {
    let mut figures = Vec::new();
    for axis in ["families", "environments"] {
        let sweeps: Vec<&Sweep> = e.sweeps.iter().filter(|s| s.axis() == axis).collect();
        if sweeps.is_empty() {
            continue;
        }
        let x = |p: &ScalingPoint| if axis == "families" { p.families as f64 } else { (p.environments as f64).log2() };
        let line = |s: &Sweep, i: usize, label: String, y: &dyn Fn(&ScalingPoint) -> Option<f64>| Series {
            label,
            points: points.iter().filter(|p| p.sweep == s.name).filter_map(|p| y(p).map(|v| (x(p), v))).collect(),
            color: i,
            stroke: Stroke::Solid,
        };
        let mut time = Vec::new();
        let mut routing = Vec::new();
        for (i, s) in sweeps.iter().enumerate() {
            time.push(line(s, i, s.name.clone(), &|p| Some(p.seconds_per_outer_step)));
            routing.push(line(s, i, format!("{} purity", s.name), &|p| p.purity));
            routing.push(Series { stroke: Stroke::Dashed, ..line(s, i, format!("{} NMI", s.name), &|p| p.nmi) });
        }
        let x_label = if axis == "families" { "families (experts)" } else { "log2 environments per family" };
        let panels = [
            Panel {
                title: "training cost".into(),
                x_label: x_label.into(),
                y_label: "s / outer step".into(),
                series: time,
            },
            Panel { title: "routing".into(), x_label: x_label.into(), y_label: "purity, NMI".into(), series: routing },
        ];
        let path = dir.join(format!("{}-{axis}.png", e.name));
        figures.push(panel_grid(&path, &format!("{}: as {axis} grow", e.name), &panels, 2, (420, 320))?);
    }
    Ok(figures)
}

/// Markdown section of a scaling experiment: one table per sweep and the figures.
pub fn scaling_markdown(record: &ScalingExperimentRecord, link: impl Fn(&Path) -> String) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "### {}\n\n{}.\n", record.name, record.description);
    let cell = |v: Option<f64>| v.map_or_else(|| "–".to_string(), |v| format!("{v:.3}"));
    let mut sweeps: Vec<&str> = Vec::new();
    for p in &record.points {
        if !sweeps.contains(&p.sweep.as_str()) {
            sweeps.push(&p.sweep);
        }
    }
    for sweep in sweeps {
        let _ = writeln!(s, "`{sweep}`:\n");
        let _ = writeln!(
            s,
            "| families | environments per family | outer steps | s / outer step | purity | NMI | gate refits (skipped) |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|");
        for p in record.points.iter().filter(|p| p.sweep == sweep) {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.3} | {} | {} | {} ({}) |",
                p.families,
                p.environments,
                p.outer_steps,
                p.seconds_per_outer_step,
                cell(p.purity),
                cell(p.nmi),
                p.gate_updates.0,
                p.gate_updates.1,
            );
        }
        s.push('\n');
    }
    for f in &record.figures {
        let _ = writeln!(s, "![{}]({})\n", f.file_stem().and_then(|n| n.to_str()).unwrap_or("figure"), link(f));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_sweeps_parse_and_points_follow_the_families() {
        for profile in [Profile::Quick, Profile::Paper] {
            let e = ScalingExperiment::builtin("scalability", profile).unwrap();
            assert!(e.sweeps.iter().any(|s| s.axis() == "families"));
            assert!(e.sweeps.iter().any(|s| s.axis() == "environments"));
            let c = e.config(5);
            assert_eq!((c.model.experts, c.model.context_dim), (5, 5 * e.base.run.expert_context_dim()));
        }
    }

    #[test]
    fn a_point_takes_the_first_families_with_the_asked_environments() {
        let spec = point_spec("odebench-2d", 3, 7).unwrap();
        assert_eq!(spec.members.len(), 3);
        for m in &spec.members {
            assert_eq!(m.spec().environments.train.environments(&m.spec().parameters).len(), 7);
            assert_eq!(m.spec().trajectories.test, 1);
        }
        let names: Vec<&str> = spec.members.iter().map(|m| m.spec().name.as_str()).collect();
        assert_eq!(names, ["odebench-24", "odebench-25", "odebench-28"]);
    }

    #[test]
    fn bad_sweeps_are_refused() {
        let base = "kind = \"scaling\"\nextends = \"odebench10\"\n";
        let sweep = |body: &str| format!("{base}[[sweeps]]\nname = \"s\"\n{body}");
        let cases = [
            (base.to_string(), "sweeps"),
            (sweep("collection = \"nope\"\nfamilies = [1]\nenvironments = [4]"), "not a shipped collection"),
            (sweep("collection = \"lotka-volterra\"\nfamilies = [1]\nenvironments = [4]"), "is not a collection"),
            (
                format!(
                    "{}[[sweeps]]\nname = \"s\"\ncollection = \"odebench-2d\"\nfamilies = [1]\nenvironments = [4]",
                    sweep("collection = \"odebench-2d\"\nfamilies = [2]\nenvironments = [4]\n")
                ),
                "a second sweep of this name",
            ),
            (sweep("collection = \"odebench-2d\"\nfamilies = [11]\nenvironments = [4]"), "has 10"),
            (sweep("collection = \"odebench-2d\"\nfamilies = [2]\nenvironments = [0]"), "at least 1"),
            (sweep("collection = \"odebench-2d\"\nfamilies = []\nenvironments = [4]"), "at least 1"),
        ];
        for (text, needle) in cases {
            let err = ScalingExperiment::parse(&text, Profile::Quick).unwrap_err().to_string();
            assert!(err.contains(needle), "{err} should mention {needle}");
        }
        let wrong = "kind = \"sequence\"\nextends = \"odebench10\"\n";
        assert!(ScalingExperiment::parse(wrong, Profile::Quick).is_err());
        assert!(ScalingExperiment::is_scaling_text(&sweep("")));
        assert!(!ScalingExperiment::is_scaling_text(wrong));
    }

    #[test]
    fn a_tiny_sweep_trains_scores_the_routing_and_resumes_from_its_points() {
        let _serial = crate::serial_training();
        let text = "kind = \"scaling\"\nextends = \"odebench10\"\nname = \"tiny\"\nvariants = [\"mixer\"]\n\
            [profile.quick.run.train]\nouter_steps = 2\ncontext_steps = 1\nmodel_steps = 1\ncheckpoint_every = 1\n\
            [profile.quick.run.model]\nexpert = { kind = \"geps\", width = 8, depth = 2 }\n\
            [[sweeps]]\nname = \"f\"\ncollection = \"odebench-2d\"\nfamilies = [1, 2]\nenvironments = [3]\n";
        let e = ScalingExperiment::parse(text, Profile::Quick).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let job = |e| ScalingJob {
            experiment: e,
            data_seed: 1,
            runs_dir: tmp.path().join("runs"),
            figures_dir: tmp.path().join("figures"),
            progress: false,
        };
        let record = crate::dispatch(crate::DeviceChoice::Cpu, job(&e)).unwrap().unwrap();
        assert_eq!(record.points.len(), 2);
        let (one, two) = (&record.points[0], &record.points[1]);
        assert_eq!((one.families, one.environments, one.purity), (1, 3, None));
        assert_eq!((two.families, two.environments, two.outer_steps), (2, 3, 2));
        let purity = two.purity.unwrap();
        assert!((0.5..=1.0).contains(&purity), "purity {purity}");
        assert!(two.seconds_per_outer_step > 0.0);
        assert_eq!(record.figures.len(), 1);
        assert!(record.figures[0].is_file());
        // a second run reads the points back instead of training
        let again = crate::dispatch(crate::DeviceChoice::Cpu, job(&e)).unwrap().unwrap();
        assert_eq!(again.points, record.points);
        let md = scaling_markdown(&record, |p| p.display().to_string());
        assert!(md.contains("| 2 | 3 | 2 |"), "{md}");
    }
}
