//! Continual model-based control experiments: HyperCRL against fine-tuning, multi-task, coreset
//! and EWC baselines on task sequences of controlled systems (Huang, Xie, Gilitschenski, Shkurti
//! et al., "Continual Model-Based Reinforcement Learning with Hypernetworks", ICRA 2021;
//! hypernetworks for continual learning after von Oswald et al., ICLR 2020; EWC after
//! Kirkpatrick et al., PNAS 2017), defined by a TOML file with `kind = "continual"`.
//!
//! Each (system, method) pair is one run folder: checkpoints at task boundaries, `metrics.json`
//! (reward and prediction matrices, average final reward, forgetting, parameter counts) and heat
//! maps `reward.png` and `mse.png`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::info;

use mixer_core::Error;
use mixer_data::ControlSystem;
use mixer_train::{
    ContinualMethod, ContinualReport, ContinualSettings, read_json, run_continual, system_tasks, write_json,
};

use crate::experiment::{merge, parse_file, parse_shipped};
use crate::plot::matrix_heatmap;
use crate::{AutodiffBackend, BackendJob, ExperimentError, Profile};

/// The continual experiment files shipped in `experiments/`, by name.
pub const BUILTIN_CONTINUAL_EXPERIMENTS: [(&str, &str); 1] =
    [("continual-control", include_str!("../../../experiments/continual_control.toml"))];

/// A continual control experiment, resolved for a profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContinualExperiment {
    /// Short name (folder and table name).
    pub name: String,
    /// One line on what it shows.
    pub description: String,
    /// Controlled systems (built-in names), one task sequence each.
    pub systems: Vec<String>,
    /// Tasks of each sequence (the first ones of the system's list).
    pub tasks: usize,
    /// Methods compared.
    pub methods: Vec<ContinualMethod>,
    /// Settings shared by every method (`method` is replaced per run).
    pub run: ContinualSettings,
    /// Run seed.
    pub seed: u64,
    /// The profile it was resolved for.
    pub profile: Profile,
}

/// The head of a continual experiment file (everything but `[run]` and `[profile]`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Head {
    kind: String,
    name: String,
    description: String,
    seed: u64,
    systems: Vec<String>,
    tasks: usize,
    methods: Vec<ContinualMethod>,
}

impl ContinualExperiment {
    /// True when experiment TOML `text` declares a continual experiment (`kind = "continual"`).
    pub fn is_continual_text(text: &str) -> bool {
        toml::from_str::<toml::Table>(text).is_ok_and(|t| t.get("kind").and_then(|k| k.as_str()) == Some("continual"))
    }

    /// A shipped continual experiment under `profile`.
    pub fn builtin(name: &str, profile: Profile) -> Result<Self, ExperimentError> {
        parse_shipped(&BUILTIN_CONTINUAL_EXPERIMENTS, name, profile, Self::parse)
    }

    /// Reads a continual experiment file under `profile`.
    pub fn load(path: &Path, profile: Profile) -> Result<Self, ExperimentError> {
        parse_file(path, profile, Self::parse)
    }

    /// Parses continual experiment TOML and applies the overrides of `profile`
    /// (`[profile.NAME]`: any head key, and `[profile.NAME.run]` merged into `[run]`).
    pub fn parse(text: &str, profile: Profile) -> Result<Self, ExperimentError> {
        let bad = |message: String| ExperimentError::Toml { path: "<text>".into(), message };
        let mut doc: toml::Value = toml::from_str(text).map_err(|e: toml::de::Error| bad(e.to_string()))?;
        let table = doc.as_table_mut().ok_or_else(|| bad("not a table".into()))?;
        let over = table
            .remove("profile")
            .and_then(|p| p.as_table().and_then(|p| p.get(profile.name()).cloned()))
            .unwrap_or(toml::Value::Table(Default::default()));
        merge(&mut doc, over);
        let table = doc.as_table_mut().ok_or_else(|| bad("not a table".into()))?;
        let mut run = table.remove("run").ok_or_else(|| bad("missing [run] table".into()))?;
        let head: Head = doc.try_into().map_err(|e: toml::de::Error| bad(e.to_string()))?;
        if head.kind != "continual" {
            return Err(bad(format!("kind = `{}`: a continual experiment says kind = \"continual\"", head.kind)));
        }
        let first = *head.methods.first().ok_or_else(|| Error::config("methods", "list at least one method"))?;
        if let Some(t) = run.as_table_mut() {
            t.insert("method".into(), toml::Value::String(first.name().into()));
        }
        let run: ContinualSettings = run.try_into().map_err(|e: toml::de::Error| bad(format!("[run]: {e}")))?;
        let experiment = Self {
            name: head.name,
            description: head.description,
            systems: head.systems,
            tasks: head.tasks,
            methods: head.methods,
            run,
            seed: head.seed,
            profile,
        };
        for m in &experiment.methods {
            experiment.settings(*m).validate()?;
        }
        for s in &experiment.systems {
            system_tasks(&ControlSystem::builtin(s)?, experiment.tasks)?;
        }
        Ok(experiment)
    }

    /// The run settings of `method`.
    pub fn settings(&self, method: ContinualMethod) -> ContinualSettings {
        ContinualSettings { method, ..self.run.clone() }
    }
}

/// What `metrics.json` of a continual run holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContinualRunMetrics {
    /// The controlled system.
    pub system: String,
    /// Matrices and per-task records of the run.
    pub report: ContinualReport,
    /// Mean reward over every task after the last one.
    pub average_final_reward: Option<f64>,
    /// Per task, best reward minus final reward.
    pub forgetting: Vec<f64>,
    /// Mean forgetting over all tasks but the last.
    pub average_forgetting: Option<f64>,
    /// Mean held-out one-step MSE over every task after the last one.
    pub average_final_mse: Option<f64>,
    /// Per task, final held-out MSE minus its best.
    pub mse_forgetting: Vec<f64>,
    /// The backend that ran it.
    pub device: String,
}

impl ContinualRunMetrics {
    /// The summary of a finished run's report.
    pub fn new(system: &str, report: ContinualReport, device: &str) -> Self {
        let last_mse = report.mse.last().cloned().unwrap_or_default();
        let average_final_mse = (!last_mse.is_empty()).then(|| last_mse.iter().sum::<f64>() / last_mse.len() as f64);
        Self {
            system: system.to_string(),
            average_final_reward: report.average_final_reward(),
            forgetting: report.forgetting(),
            average_forgetting: report.average_forgetting(),
            average_final_mse,
            mse_forgetting: report.mse_forgetting(),
            report,
            device: device.to_string(),
        }
    }
}

/// One continual run in a report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContinualRunRecord {
    /// The method.
    pub method: ContinualMethod,
    /// Run folder.
    pub dir: PathBuf,
    /// Its scores.
    pub metrics: ContinualRunMetrics,
}

/// The runs of one continual experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContinualExperimentRecord {
    /// Experiment name.
    pub name: String,
    /// One line on what it shows.
    pub description: String,
    /// Every (system, method) run, systems outermost.
    pub runs: Vec<ContinualRunRecord>,
}

/// Trains (or resumes) one continual run in `dir`, draws its heat maps and writes
/// `metrics.json`; a run folder with `metrics.json` is read back instead.
pub fn continual_run<B: AutodiffBackend>(
    experiment: &ContinualExperiment,
    system: &str,
    method: ContinualMethod,
    dir: &Path,
    device: &B::Device,
    label: &str,
) -> Result<ContinualRunMetrics, ExperimentError> {
    if let Ok(m) = read_json::<ContinualRunMetrics>(&dir.join("metrics.json")) {
        info!(run = %dir.display(), "metrics found; run skipped");
        return Ok(m);
    }
    let tasks = system_tasks(&ControlSystem::builtin(system)?, experiment.tasks)?;
    let run = run_continual::<B>(&experiment.settings(method), &tasks, experiment.seed, Some(dir), device)?;
    let report = run.state.report;
    let names = report.tasks.clone();
    let title = |what: &str| format!("{what}: {} on {system}", method.name());
    if report.reward.iter().any(|r| !r.is_empty()) {
        matrix_heatmap(&dir.join("reward.png"), &title("episode reward"), &report.reward, &names, true)?;
    }
    matrix_heatmap(&dir.join("mse.png"), &title("held-out one-step MSE"), &report.mse, &names, false)?;
    let metrics = ContinualRunMetrics::new(system, report, label);
    write_json(&dir.join("metrics.json"), &metrics)?;
    Ok(metrics)
}

/// Runs every (system, method) pair of a continual experiment, runs under `runs_dir`
/// (`<runs_dir>/<system>/<method>`).
pub struct ContinualJob<'a> {
    /// The experiment.
    pub experiment: &'a ContinualExperiment,
    /// Folder of its runs.
    pub runs_dir: PathBuf,
}

impl BackendJob for ContinualJob<'_> {
    type Output = Result<ContinualExperimentRecord, ExperimentError>;

    fn run<B: AutodiffBackend>(self, device: B::Device, label: &str) -> Self::Output {
        let e = self.experiment;
        let mut runs = Vec::new();
        for system in &e.systems {
            for &method in &e.methods {
                let dir = self.runs_dir.join(system).join(method.name());
                info!(experiment = %e.name, system = %system, method = method.name(), "continual run");
                let metrics = continual_run::<B>(e, system, method, &dir, &device, label)?;
                runs.push(ContinualRunRecord { method, dir, metrics });
            }
        }
        Ok(ContinualExperimentRecord { name: e.name.clone(), description: e.description.clone(), runs })
    }
}

/// `v` with three significant digits, or a dash.
fn cell(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| if v.abs() >= 100.0 { format!("{v:.1}") } else { format!("{v:.3}") })
}

/// Markdown section of a continual experiment: per system, one row per method (average final
/// reward, forgetting, held-out MSE, parameters with one task and with all), the final rewards
/// per task, and links to the heat maps.
pub fn continual_markdown(record: &ContinualExperimentRecord, link: impl Fn(&Path) -> String) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "### {}\n\n{}\n", record.name, record.description);
    let mut systems: Vec<&str> = record.runs.iter().map(|r| r.metrics.system.as_str()).collect();
    systems.dedup();
    for system in systems {
        let runs: Vec<&ContinualRunRecord> = record.runs.iter().filter(|r| r.metrics.system == system).collect();
        let tasks = runs.first().map(|r| r.metrics.report.tasks.join(", ")).unwrap_or_default();
        let _ = writeln!(s, "#### {system}\n\nTasks in order: {tasks}.\n");
        let _ = writeln!(
            s,
            "| method | average final reward | average forgetting | final reward per task | average final one-step MSE | parameters (1 task → all) | seconds | figures |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
        for r in &runs {
            let m = &r.metrics;
            let finals: Vec<String> = m.report.final_rewards().iter().map(|v| cell(Some(*v))).collect();
            let p = &m.report.parameters;
            let params = format!("{} → {}", p.first().unwrap_or(&0), p.last().unwrap_or(&0));
            let seconds: f64 = m.report.seconds.iter().sum();
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {:.0} | [reward]({}) [MSE]({}) |",
                r.method.name(),
                cell(m.average_final_reward),
                cell(m.average_forgetting),
                finals.join(" / "),
                m.average_final_mse.map_or_else(|| "–".into(), |v| format!("{v:.2e}")),
                params,
                seconds,
                link(&r.dir.join("reward.png")),
                link(&r.dir.join("mse.png")),
            );
        }
        let _ = writeln!(s, "\n{}\n", parameter_line(&runs));
    }
    s
}

/// "Parameters by task count": each method's trainable parameters after 1, 2, ... tasks.
fn parameter_line(runs: &[&ContinualRunRecord]) -> String {
    let per: Vec<String> = runs
        .iter()
        .map(|r| {
            let counts: Vec<String> = r.metrics.report.parameters.iter().map(|p| p.to_string()).collect();
            format!("{} {}", r.method.name(), counts.join(", "))
        })
        .collect();
    format!("Parameters after 1, 2, ... tasks: {}.", per.join("; "))
}

#[cfg(test)]
mod tests;
