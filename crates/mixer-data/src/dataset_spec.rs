//! What `generate` produces: one system, or several built-in systems as families.

use std::path::Path;

use crate::builtin::BUILTIN;
use crate::spec::{CollectionSpec, SystemSpec};
use crate::{DataError, System};

/// A resolved dataset definition: the member systems (one per family) and shared settings.
#[derive(Clone, Debug)]
pub struct DatasetSpec {
    /// Dataset name (system or collection name).
    pub name: String,
    /// One line saying what it is.
    pub description: String,
    /// Member systems, one per family, with collection overrides applied.
    pub members: Vec<System>,
    /// Whether the published layout has a family axis (collections do).
    pub family_axis: bool,
    /// Suggested time subsampling for training (every k-th point).
    pub keep_every: usize,
}

/// Names of all shipped systems and collections.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN.iter().map(|(n, _)| *n).collect()
}

/// The TOML text of a shipped system or collection file.
pub fn builtin_text(name: &str) -> Option<&'static str> {
    BUILTIN.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// A shipped single system (not a collection), parsed.
pub fn builtin_system(name: &str) -> Result<System, DataError> {
    let text = builtin_text(name).ok_or_else(|| unknown(name))?;
    System::from_toml(text)
}

fn unknown(name: &str) -> DataError {
    DataError::UnknownSystem { name: name.to_string(), known: builtin_names().join(", ") }
}

impl DatasetSpec {
    /// A shipped system or collection by name (`lotka-volterra`, `odebench-2d`, ...).
    pub fn builtin(name: &str) -> Result<Self, DataError> {
        Self::from_toml(builtin_text(name).ok_or_else(|| unknown(name))?)
    }

    /// Reads a user's system or collection file (a collection has a `families` list).
    pub fn from_file(path: &Path) -> Result<Self, DataError> {
        let text = std::fs::read_to_string(path).map_err(|e| mixer_core::Error::io(path, e))?;
        Self::from_toml(&text).map_err(|e| match e {
            DataError::BadSpec { system, field, reason } => {
                DataError::spec(format!("{system} ({})", path.display()), field, reason)
            }
            other => other,
        })
    }

    /// Parses system or collection TOML text.
    pub fn from_toml(text: &str) -> Result<Self, DataError> {
        let table: toml::Table =
            toml::from_str(text).map_err(|e| DataError::spec("<file>", "toml", e.message().to_string()))?;
        if table.contains_key("families") {
            let c: CollectionSpec =
                toml::from_str(text).map_err(|e| DataError::spec("<collection>", "toml", e.message().to_string()))?;
            Self::from_collection(&c)
        } else {
            let system = System::from_toml(text)?;
            let s = system.spec();
            Ok(Self {
                name: s.name.clone(),
                description: s.description.clone(),
                keep_every: s.keep_every,
                family_axis: false,
                members: vec![system],
            })
        }
    }

    /// Resolves a collection: each family is a shipped system with the collection's environment
    /// rules (when it gives any; else the system's own), trajectory counts and number of points.
    pub fn from_collection(c: &CollectionSpec) -> Result<Self, DataError> {
        if c.families.is_empty() {
            return Err(DataError::spec(&c.name, "families", "needs at least one system"));
        }
        let mut members = Vec::with_capacity(c.families.len());
        for name in &c.families {
            let text = builtin_text(name).ok_or_else(|| unknown(name))?;
            let mut spec = SystemSpec::from_toml(text)?;
            spec.points = c.points;
            spec.keep_every = c.keep_every;
            if let Some(rules) = &c.environments {
                spec.environments = rules.clone();
            }
            spec.trajectories = c.trajectories;
            members.push(System::from_spec(spec)?);
        }
        let first = members[0].spec();
        for m in &members[1..] {
            let s = m.spec();
            if s.dim() != first.dim() {
                return Err(DataError::spec(
                    &c.name,
                    "families",
                    format!("`{}` has dimension {} but `{}` has {}", s.name, s.dim(), first.name, first.dim()),
                ));
            }
            let (ea, eb) = (
                s.environments.train.environments(&s.parameters).len(),
                first.environments.train.environments(&first.parameters).len(),
            );
            if ea != eb {
                return Err(DataError::spec(
                    &c.name,
                    "environments",
                    format!("`{}` gets {ea} environments but `{}` gets {eb}; set a `limit`", s.name, first.name),
                ));
            }
        }
        Ok(Self {
            name: c.name.clone(),
            description: c.description.clone(),
            members,
            family_axis: true,
            keep_every: c.keep_every,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_file_parses_and_validates() {
        for name in builtin_names() {
            let d = DatasetSpec::builtin(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!d.members.is_empty());
        }
        assert_eq!(builtin_names().len(), 53);
        let d = DatasetSpec::builtin("odebench-2d").unwrap();
        assert_eq!(d.members.len(), 10);
        assert!(d.family_axis);
        // the small-data variant: the same ten families, 5 environments each
        let small = DatasetSpec::builtin("odebench-2d-5").unwrap();
        let names = |d: &DatasetSpec| d.members.iter().map(|m| m.spec().name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&small), names(&d));
        let counts = |d: &DatasetSpec| {
            d.members
                .iter()
                .map(|m| m.spec().environments.train.environments(&m.spec().parameters).len())
                .collect::<Vec<_>>()
        };
        assert_eq!((counts(&small), counts(&d)), (vec![5; 10], vec![16; 10]));
        assert!(matches!(DatasetSpec::builtin("nope"), Err(DataError::UnknownSystem { .. })));
    }

    #[test]
    fn environment_rules_follow_mixer_section_6() {
        let lv = builtin_system("lotka-volterra").unwrap();
        let s = lv.spec();
        let train = s.environments.train.environments(&s.parameters);
        assert_eq!(train.len(), 9);
        assert_eq!(train[1], vec![0.5, 0.75, 0.5, 0.5]);
        assert_eq!(train[8], vec![0.5, 1.0, 1.0, 0.5]);
        let sel = builtin_system("selkov").unwrap();
        let envs = sel.spec().environments.train.environments(&sel.spec().parameters);
        assert_eq!(envs.len(), 21);
        assert!((envs[10][1] - 0.0).abs() < 1e-15 && (envs[20][1] - 1.0).abs() < 1e-15);
        // ODEBench 25 (two parameters): product of two 16-point grids, first 16 combinations.
        let d = DatasetSpec::builtin("odebench-2d").unwrap();
        let s25 = d.members[1].spec();
        let e = s25.environments.train.environments(&s25.parameters);
        assert_eq!(e.len(), 16);
        assert!((e[0][0] - 0.9 * 4.5).abs() < 1e-12 && (e[15][0] - 0.9 * 4.5).abs() < 1e-12);
        assert!((e[15][1] - 1.1 * 0.43).abs() < 1e-12);
        let a = s25.environments.adapt.environments(&s25.parameters);
        assert_eq!(a.len(), 4);
        assert!((a[3][0] - 1.2 * 4.5).abs() < 1e-12 && (a[3][1] - 1.2 * 0.43).abs() < 1e-12);
    }
}
