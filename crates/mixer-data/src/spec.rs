//! Dataset specifications: families, environment rules, trajectory counts; the built-in zoo.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use mixer_core::{Error, Split};
use mixer_ode::ReferenceMethod;

use crate::{CompiledFamily, DataError, FamilySpec};

/// How the parameters of training and adaptation environments are chosen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "kebab-case", deny_unknown_fields)]
pub enum EnvironmentRule {
    /// Cartesian products of listed values (in the family's parameter order); others at reference.
    Grid {
        /// Training values per parameter.
        train: BTreeMap<String, Vec<f64>>,
        /// Adaptation values per parameter.
        adapt: BTreeMap<String, Vec<f64>>,
    },
    /// ODEBench (MIXER.md §6): each parameter on `linspace(0.9 ref, 1.1 ref, count)`, Cartesian
    /// product, first `count` combinations; adaptation scales every parameter by `adapt_scales`.
    Odebench {
        /// Environments per family.
        count: usize,
        /// Adaptation scalings of the reference parameters.
        adapt_scales: Vec<f64>,
    },
}

/// Trajectories per environment in each split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trajectories {
    /// Meta-training.
    pub train: usize,
    /// In-domain test.
    pub test: usize,
    /// Adaptation fitting.
    pub adapt_train: usize,
    /// Adaptation test.
    pub adapt_test: usize,
}

impl Trajectories {
    /// Count of a split.
    pub fn of(&self, split: Split) -> usize {
        match split {
            Split::Train => self.train,
            Split::Test => self.test,
            Split::AdaptTrain => self.adapt_train,
            Split::AdaptTest => self.adapt_test,
        }
    }
}

/// A dataset: one or more families, their environments, time grid and solver.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    /// Name (`mixer generate --system NAME`).
    pub name: String,
    /// Points per trajectory on `[0, T)`.
    pub points: usize,
    /// Reference method of the ground truth.
    pub solver: ReferenceMethod,
    /// Environment rule.
    pub environments: EnvironmentRule,
    /// Trajectories per split.
    pub trajectories: Trajectories,
    /// The families.
    pub family: Vec<FamilySpec>,
}

/// Built-in dataset specifications, shipped as files in `crates/mixer-data/systems/`.
pub const ZOO: &[(&str, &str)] = &[
    ("lotka-volterra", include_str!("../systems/lotka-volterra.toml")),
    ("odebench-2d", include_str!("../systems/odebench-2d.toml")),
];

impl DatasetSpec {
    /// Parses a specification from TOML text.
    pub fn parse(text: &str, origin: &str) -> Result<Self, DataError> {
        let spec: DatasetSpec =
            toml::from_str(text).map_err(|e| DataError::System { name: origin.to_string(), reason: e.to_string() })?;
        spec.validate()?;
        Ok(spec)
    }

    /// Reads a specification file.
    pub fn load(path: &Path) -> Result<Self, DataError> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// A built-in specification by name.
    pub fn builtin(name: &str) -> Result<Self, DataError> {
        let (_, text) = ZOO.iter().find(|(n, _)| *n == name).ok_or_else(|| DataError::UnknownSystem {
            name: name.to_string(),
            known: ZOO.iter().map(|(n, _)| n.to_string()).collect(),
        })?;
        Self::parse(text, name)
    }

    /// Checks counts and that every family parses.
    pub fn validate(&self) -> Result<(), DataError> {
        let bad = |reason: String| DataError::System { name: self.name.clone(), reason };
        if self.points < 2 {
            return Err(bad("points must be at least 2".into()));
        }
        if self.family.is_empty() {
            return Err(bad("at least one [[family]] is required".into()));
        }
        let t = &self.trajectories;
        if [t.train, t.test, t.adapt_train, t.adapt_test].contains(&0) {
            return Err(bad("every split needs at least one trajectory".into()));
        }
        let dim = self.family[0].variables.len();
        for f in &self.family {
            CompiledFamily::new(f.clone())?;
            if f.variables.len() != dim {
                return Err(bad(format!("family `{}` has dimension {}, the first has {dim}", f.name, f.variables.len())));
            }
        }
        match &self.environments {
            EnvironmentRule::Odebench { count, adapt_scales } if *count == 0 || adapt_scales.is_empty() => {
                Err(bad("odebench rule needs count >= 1 and at least one adaptation scale".into()))
            }
            EnvironmentRule::Grid { train, adapt } => {
                for f in &self.family {
                    for name in train.keys().chain(adapt.keys()) {
                        if !f.parameters.iter().any(|p| &p.name == name) {
                            return Err(bad(format!("grid names `{name}`, not a parameter of `{}`", f.name)));
                        }
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Parameter values of every environment of a family for training (`adapt = false`) or
    /// adaptation splits.
    pub fn environments(&self, family: &FamilySpec, adapt: bool) -> Vec<Vec<f64>> {
        let reference: Vec<f64> = family.parameters.iter().map(|p| p.value).collect();
        match &self.environments {
            EnvironmentRule::Grid { train, adapt: ad } => {
                let grid = if adapt { ad } else { train };
                let axes: Vec<Vec<f64>> = family
                    .parameters
                    .iter()
                    .map(|p| grid.get(&p.name).cloned().unwrap_or_else(|| vec![p.value]))
                    .collect();
                product(&axes)
            }
            EnvironmentRule::Odebench { count, adapt_scales } => {
                if adapt {
                    adapt_scales.iter().map(|s| reference.iter().map(|r| r * s).collect()).collect()
                } else {
                    let axes: Vec<Vec<f64>> = reference.iter().map(|r| linspace(0.9 * r, 1.1 * r, *count)).collect();
                    product(&axes).into_iter().take(*count).collect()
                }
            }
        }
    }
}

/// `n` evenly spaced values from `a` to `b` inclusive.
pub fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![a];
    }
    (0..n).map(|i| a + (b - a) * i as f64 / (n - 1) as f64).collect()
}

/// Cartesian product, the first axis varying slowest.
fn product(axes: &[Vec<f64>]) -> Vec<Vec<f64>> {
    axes.iter().fold(vec![vec![]], |acc, axis| {
        acc.into_iter().flat_map(|prefix| axis.iter().map(move |v| [prefix.clone(), vec![*v]].concat())).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_parse_and_expand() {
        let lv = DatasetSpec::builtin("lotka-volterra").unwrap();
        let envs = lv.environments(&lv.family[0], false);
        assert_eq!(envs.len(), 9);
        assert_eq!(envs[1], vec![0.5, 0.5, 0.75, 0.5]);
        assert_eq!(lv.environments(&lv.family[0], true).len(), 4);
        let ob = DatasetSpec::builtin("odebench-2d").unwrap();
        assert_eq!(ob.family.len(), 10);
        for f in &ob.family {
            assert_eq!(ob.environments(f, false).len(), 16);
            assert_eq!(ob.environments(f, true).len(), 4);
        }
        let damped = &ob.family[1];
        let e = ob.environments(damped, false);
        assert!((e[0][0] - 0.9 * 4.5).abs() < 1e-12 && (e[15][1] - 1.1 * 0.43).abs() < 1e-12);
        assert!(matches!(DatasetSpec::builtin("nope"), Err(DataError::UnknownSystem { .. })));
    }

    #[test]
    fn bad_specs_are_errors() {
        let text = ZOO[0].1;
        assert!(DatasetSpec::parse(&text.replace("points = 20", "points = 1"), "t").is_err());
        assert!(DatasetSpec::parse(&text.replace("test = 32", "test = 0"), "t").is_err());
        assert!(DatasetSpec::parse(&text.replace("b = [0.5, 0.75, 1.0]", "q = [1.0]"), "t").is_err());
        assert!(DatasetSpec::parse(&text.replace("horizon = 10.0", "horizon = -1.0"), "t").is_err());
        assert!(DatasetSpec::parse(&text.replace("points = 20", "points = 20\nbogus = 1"), "t").is_err());
    }
}
