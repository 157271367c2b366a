//! Experiment definitions: a TOML file with a base run config, profile overrides (`quick`,
//! `paper`) and the variants to compare (MixER, naive gradient gate, one expert).

use std::path::Path;

use serde::{Deserialize, Serialize};

use mixer_core::Error;
use mixer_routers::GradientSettings;
use mixer_train::{RouterConfig, RunConfig, SubsetRule};

use crate::{ExperimentError, Profile};

/// A model compared in an experiment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// The configured model (MixER: K-means + least-squares gate).
    Mixer,
    /// The same experts with a softmax gate trained by gradient (Switch-style weighted top-1).
    GradientGate,
    /// One expert with the context size of one MixER expert.
    SingleExpert,
}

impl Variant {
    /// Short name used in folders and tables.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Mixer => "mixer",
            Variant::GradientGate => "gradient-gate",
            Variant::SingleExpert => "single-expert",
        }
    }

    /// Name used in report tables.
    pub fn label(self) -> &'static str {
        match self {
            Variant::Mixer => "MixER",
            Variant::GradientGate => "gradient gate",
            Variant::SingleExpert => "one expert",
        }
    }

    /// The run config of this variant derived from the experiment's base config.
    pub fn apply(self, base: &RunConfig) -> RunConfig {
        let mut c = base.clone();
        match self {
            Variant::Mixer => {}
            Variant::GradientGate => {
                c.router = RouterConfig::Gradient(GradientSettings::default());
            }
            Variant::SingleExpert => {
                c.model.context_dim = base.expert_context_dim();
                c.model.experts = 1;
                // per-expert subsets: the one expert sees as many environments per step as the
                // whole mixture does, so both variants roll out the same rows per step
                if base.train.subsets == SubsetRule::PerExpert {
                    c.train.subset_size = base.train.subset_size.saturating_mul(base.model.experts);
                }
            }
        }
        c
    }
}

/// Where an experiment's data comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSource {
    /// System of the zoo to generate (`mixer generate --system NAME`).
    pub system: String,
    /// A published dataset folder to run on as well, relative to the workspace root (skipped
    /// with a message when absent).
    pub published: Option<String>,
}

/// The experiment files shipped in `experiments/`, by name.
pub const BUILTIN_EXPERIMENTS: [(&str, &str); 4] = [
    ("odebench10", include_str!("../../../experiments/odebench10.toml")),
    ("lotka-volterra", include_str!("../../../experiments/lotka_volterra.toml")),
    ("glycolytic", include_str!("../../../experiments/glycolytic.toml")),
    ("selkov", include_str!("../../../experiments/selkov.toml")),
];

/// One experiment, resolved for a profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    /// Short name (folder and table name).
    pub name: String,
    /// One line on what it shows.
    pub description: String,
    /// Headline metric: `mse`, `rel_l2` (ODEBench pointwise) or `rel_l2_env` (per environment).
    pub metric: String,
    /// Data to generate (and published data to use).
    pub data: DataSource,
    /// Models compared.
    pub variants: Vec<Variant>,
    /// Run config of the configured model under the chosen profile.
    pub run: RunConfig,
    /// Training seed.
    pub seed: u64,
}

impl Experiment {
    /// Reads an experiment file and applies the overrides of `profile`.
    pub fn load(path: &Path, profile: Profile) -> Result<Self, ExperimentError> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse_named(&text, profile, path)
    }

    /// A shipped experiment (see [`BUILTIN_EXPERIMENTS`]) under `profile`.
    pub fn builtin(name: &str, profile: Profile) -> Result<Self, ExperimentError> {
        let text = BUILTIN_EXPERIMENTS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t).ok_or_else(|| {
            ExperimentError::UnknownExperiment {
                name: name.to_string(),
                known: BUILTIN_EXPERIMENTS.map(|(n, _)| n).join(", "),
            }
        })?;
        Self::parse_named(text, profile, Path::new(&format!("<{name}>")))
    }

    /// [`Experiment::parse`] with errors naming `source`.
    fn parse_named(text: &str, profile: Profile, source: &Path) -> Result<Self, ExperimentError> {
        Self::parse(text, profile).map_err(|e| match e {
            ExperimentError::Toml { message, .. } => ExperimentError::Toml { path: source.to_path_buf(), message },
            other => other,
        })
    }

    /// Parses experiment TOML text and applies the overrides of `profile`.
    pub fn parse(text: &str, profile: Profile) -> Result<Self, ExperimentError> {
        let bad = |message: String| ExperimentError::Toml { path: "<text>".into(), message };
        let mut doc: toml::Table = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let profiles = doc.remove("profile");
        let mut run = doc.remove("run").ok_or_else(|| bad("missing [run] table".into()))?;
        if let Some(toml::Value::Table(mut ps)) = profiles
            && let Some(toml::Value::Table(mut over)) = ps.remove(profile.name())
            && let Some(over_run) = over.remove("run")
        {
            merge(&mut run, over_run);
        }
        let run: RunConfig = run.try_into().map_err(|e: toml::de::Error| bad(format!("[run]: {e}")))?;
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Head {
            name: String,
            description: String,
            metric: String,
            seed: u64,
            data: DataSource,
            variants: Vec<Variant>,
        }
        let head: Head = toml::Value::Table(doc).try_into().map_err(|e: toml::de::Error| bad(e.to_string()))?;
        if !matches!(head.metric.as_str(), "mse" | "rel_l2" | "rel_l2_env") {
            let got = &head.metric;
            return Err(Error::config("metric", format!("`mse`, `rel_l2` or `rel_l2_env`, got `{got}`")).into());
        }
        run.validate()?;
        Ok(Self {
            name: head.name,
            description: head.description,
            metric: head.metric,
            data: head.data,
            variants: head.variants,
            run,
            seed: head.seed,
        })
    }
}

/// Recursively overwrites `base` with the entries of `over`. A table naming a variant (a `method`
/// or `kind` key, such as a solver) replaces the base table whole, so no field of another variant
/// leaks in.
fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) if !o.contains_key("method") && !o.contains_key("kind") => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}
