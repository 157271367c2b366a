//! Experiment definitions: a TOML file with a base run config, profile overrides (`quick`,
//! `paper`) and the variants to compare (MixER, naive gradient gate, one expert).

use std::path::Path;

use serde::{Deserialize, Serialize};

use mixer_core::Error;
use mixer_routers::{GradientSettings, KINDS};
use mixer_train::{RouterConfig, RunConfig, SubsetRule};

use crate::{ExperimentError, Profile};

/// A model compared in an experiment. In TOML: `"mixer"`, `"gradient-gate"`,
/// `"single-expert"`, or `"router:KIND"` for the configured experts under any registered
/// router ([`KINDS`]) with its default settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub enum Variant {
    /// The configured model (MixER: K-means + least-squares gate).
    Mixer,
    /// The same experts with a softmax gate trained by gradient (Switch-style weighted top-1).
    GradientGate,
    /// One expert with the context size of one MixER expert.
    SingleExpert,
    /// The same experts under the registered router of this kind, with its default settings
    /// (the configured settings when the experiment's router is of this kind).
    Router(&'static str),
}

impl Variant {
    /// Short name used in folders and tables.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Mixer => "mixer",
            Variant::GradientGate => "gradient-gate",
            Variant::SingleExpert => "single-expert",
            Variant::Router(kind) => kind,
        }
    }

    /// Name used in report tables.
    pub fn label(self) -> &'static str {
        match self {
            Variant::Mixer => "MixER",
            Variant::GradientGate => "gradient gate",
            Variant::SingleExpert => "one expert",
            Variant::Router(kind) => kind,
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
            Variant::Router(kind) if base.router.kind() == kind => {}
            Variant::Router(kind) => {
                c.router = RouterConfig::default_for(kind).expect("variant kinds come from the registry");
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

impl TryFrom<String> for Variant {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        Ok(match name.as_str() {
            "mixer" => Variant::Mixer,
            "gradient-gate" => Variant::GradientGate,
            "single-expert" => Variant::SingleExpert,
            other => match other.strip_prefix("router:") {
                Some(kind) => Variant::Router(KINDS.iter().find(|k| **k == kind).ok_or_else(|| {
                    format!("unknown router kind `{kind}` in variant `{other}`; registered kinds: {}", KINDS.join(", "))
                })?),
                None => {
                    return Err(format!(
                        "unknown variant `{other}`; use mixer, gradient-gate, single-expert or router:KIND"
                    ));
                }
            },
        })
    }
}

impl<'de> Deserialize<'de> for Variant {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Variant::try_from(String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

impl From<Variant> for String {
    fn from(v: Variant) -> String {
        match v {
            Variant::Router(kind) => format!("router:{kind}"),
            other => other.name().to_string(),
        }
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
pub const BUILTIN_EXPERIMENTS: [(&str, &str); 10] = [
    ("odebench10", include_str!("../../../experiments/odebench10.toml")),
    ("odebench2", include_str!("../../../experiments/odebench2.toml")),
    ("odebench10-coda", include_str!("../../../experiments/odebench10_coda.toml")),
    ("odebench10-ncf", include_str!("../../../experiments/odebench10_ncf.toml")),
    ("odebench10-5env", include_str!("../../../experiments/odebench10_5env.toml")),
    ("routers", include_str!("../../../experiments/routers.toml")),
    ("lotka-volterra", include_str!("../../../experiments/lotka_volterra.toml")),
    ("glycolytic", include_str!("../../../experiments/glycolytic.toml")),
    ("selkov", include_str!("../../../experiments/selkov.toml")),
    ("lorenz-regimes", include_str!("../../../experiments/lorenz_regimes.toml")),
];

/// The TOML text of the experiment `name` of a shipped table; an unknown name lists the table.
pub(crate) fn shipped_text(table: &[(&str, &'static str)], name: &str) -> Result<&'static str, ExperimentError> {
    table.iter().find(|(n, _)| *n == name).map(|(_, t)| *t).ok_or_else(|| ExperimentError::UnknownExperiment {
        name: name.to_string(),
        known: table.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
    })
}

/// Parses the shipped experiment `name` of `table` with `parse`; errors name `<name>`.
pub(crate) fn parse_shipped<T>(
    table: &[(&str, &'static str)],
    name: &str,
    profile: Profile,
    parse: fn(&str, Profile) -> Result<T, ExperimentError>,
) -> Result<T, ExperimentError> {
    parse(shipped_text(table, name)?, profile).map_err(|e| e.in_file(Path::new(&format!("<{name}>"))))
}

/// Reads the experiment file `path` and parses it with `parse`; errors name the file.
pub(crate) fn parse_file<T>(
    path: &Path,
    profile: Profile,
    parse: fn(&str, Profile) -> Result<T, ExperimentError>,
) -> Result<T, ExperimentError> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse(&text, profile).map_err(|e| e.in_file(path))
}

/// True when experiment TOML `text` says `kind = "<kind>"`.
pub(crate) fn declares_kind(text: &str, kind: &str) -> bool {
    toml::from_str::<toml::Table>(text).is_ok_and(|t| t.get("kind").and_then(|k| k.as_str()) == Some(kind))
}

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
        Self::parse_named(shipped_text(&BUILTIN_EXPERIMENTS, name)?, profile, Path::new(&format!("<{name}>")))
    }

    /// [`Experiment::parse`] with errors naming `source`.
    fn parse_named(text: &str, profile: Profile, source: &Path) -> Result<Self, ExperimentError> {
        Self::parse(text, profile).map_err(|e| e.in_file(source))
    }

    /// Parses experiment TOML text and applies the overrides of `profile`.
    pub fn parse(text: &str, profile: Profile) -> Result<Self, ExperimentError> {
        let bad = |message: String| ExperimentError::Toml { path: "<text>".into(), message };
        let mut doc: toml::Table = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        // `extends = "NAME"`: this file's keys over those of a shipped experiment (which may
        // itself extend another; a cycle is refused)
        let mut chain: Vec<String> = Vec::new();
        while let Some(base) = doc.remove("extends") {
            let name = base.as_str().ok_or_else(|| bad("`extends` names a shipped experiment".into()))?;
            if chain.iter().any(|n| n == name) {
                return Err(bad(format!("`extends` cycle through `{name}`")));
            }
            chain.push(name.to_string());
            let text = shipped_text(&BUILTIN_EXPERIMENTS, name)?;
            let mut merged = toml::Value::Table(toml::from_str(text).map_err(|e| bad(format!("{name}: {e}")))?);
            merge(&mut merged, toml::Value::Table(doc));
            let toml::Value::Table(merged) = merged else { unreachable!("a table merged into a table") };
            doc = merged;
        }
        let (mut run, over) = split_profile(&mut doc, profile).map_err(bad)?;
        if let Some(over) = over {
            merge(&mut run, over);
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

/// Takes the `[run]` table and the `[profile.NAME.run]` overrides of `profile` out of `doc`
/// (the other profiles are dropped).
pub(crate) fn split_profile(
    doc: &mut toml::Table,
    profile: Profile,
) -> Result<(toml::Value, Option<toml::Value>), String> {
    let profiles = doc.remove("profile");
    let run = doc.remove("run").ok_or_else(|| "missing [run] table".to_string())?;
    let over = match profiles {
        Some(toml::Value::Table(mut ps)) => match ps.remove(profile.name()) {
            Some(toml::Value::Table(mut over)) => over.remove("run"),
            _ => None,
        },
        _ => None,
    };
    Ok((run, over))
}

/// Recursively overwrites `base` with the entries of `over`. A table naming a variant (a `method`
/// or `kind` key, such as a solver) replaces the base table whole, so no field of another variant
/// leaks in.
pub(crate) fn merge(base: &mut toml::Value, over: toml::Value) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_variants_name_registered_kinds() {
        let v: Variant = serde_json::from_str(r#""router:gshard""#).unwrap();
        assert_eq!((v, v.name()), (Variant::Router("gshard"), "gshard"));
        assert_eq!(serde_json::to_string(&v).unwrap(), r#""router:gshard""#);
        assert_eq!(serde_json::to_string(&Variant::SingleExpert).unwrap(), r#""single-expert""#);
        let err = serde_json::from_str::<Variant>(r#""router:gshrad""#).unwrap_err().to_string();
        assert!(err.contains("gshrad") && err.contains("shared-routed"), "{err}");
        assert!(serde_json::from_str::<Variant>(r#""mixture""#).is_err());
        let base = Experiment::builtin("odebench10", Profile::Quick).unwrap().run;
        assert_eq!(Variant::Router("switch").apply(&base).router.kind(), "switch");
        // the experiment's own router keeps its configured settings
        assert_eq!(Variant::Router("kmeans-ls").apply(&base).router, base.router);
    }

    #[test]
    fn the_routers_experiment_extends_odebench10() {
        let base = Experiment::builtin("odebench10", Profile::Quick).unwrap();
        let routers = Experiment::builtin("routers", Profile::Quick).unwrap();
        assert_eq!((routers.name.as_str(), routers.data.clone()), ("routers", base.data.clone()));
        assert_eq!(routers.run.model, base.run.model);
        assert_eq!(routers.run.router, base.run.router);
        assert_eq!(routers.run.train.outer_steps, 50);
        assert_eq!(routers.run.train.subsets, base.run.train.subsets, "the other quick settings are inherited");
        let kinds: Vec<_> =
            routers.variants.iter().filter_map(|v| if let Variant::Router(k) = v { Some(*k) } else { None }).collect();
        assert!(kinds.len() >= 6, "{kinds:?}");
        let paper = Experiment::builtin("routers", Profile::Paper).unwrap();
        assert_eq!(
            paper.run.train.outer_steps,
            Experiment::builtin("odebench10", Profile::Paper).unwrap().run.train.outer_steps
        );
        let err = Experiment::parse("extends = \"nope\"", Profile::Quick).unwrap_err();
        assert!(matches!(err, ExperimentError::UnknownExperiment { .. }), "{err}");
    }
    #[test]
    fn backbone_and_small_data_variants_change_only_what_they_name() {
        for profile in [Profile::Quick, Profile::Paper] {
            let base = Experiment::builtin("odebench10", profile).unwrap();
            for (name, expert) in [("odebench10-coda", "coda"), ("odebench10-ncf", "ncf")] {
                let e = Experiment::builtin(name, profile).unwrap();
                assert_eq!(e.data, base.data);
                assert_eq!(
                    (e.run.train.clone(), e.run.router.clone()),
                    (base.run.train.clone(), base.run.router.clone())
                );
                assert_eq!(e.run.model.context_dim, base.run.model.context_dim);
                let kind = serde_json::to_value(&e.run.model.expert).unwrap()["kind"].clone();
                assert_eq!(kind, expert);
            }
            let small = Experiment::builtin("odebench10-5env", profile).unwrap();
            assert_eq!(small.data.system, "odebench-2d-5");
            assert_eq!((small.run.model, small.run.train), (base.run.model, base.run.train));
        }
        // a file may extend an experiment that extends another; cycles are refused
        let chained = Experiment::parse("extends = \"odebench10-coda\"\nname = \"c\"", Profile::Quick).unwrap();
        assert_eq!(chained.name, "c");
        assert_eq!(chained.run.model, Experiment::builtin("odebench10-coda", Profile::Quick).unwrap().run.model);
    }
}
