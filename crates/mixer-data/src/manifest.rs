//! `dataset.toml`: what a dataset folder holds and how it was made.

use std::path::Path;

use mixer_core::{Dataset, Split};
use mixer_ode::ReferenceMethod;
use serde::{Deserialize, Serialize};

use crate::DataError;
use mixer_core::write_atomic_with;

/// The manifest file name inside a dataset folder.
pub const MANIFEST_FILE: &str = "dataset.toml";

/// Description of a generated dataset folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Dataset (system or collection) name.
    pub system: String,
    /// One line saying what it is.
    #[serde(default)]
    pub description: String,
    /// Seed the initial conditions were drawn with.
    pub seed: u64,
    /// Relative tolerance of the reference solves.
    pub rtol: f64,
    /// Absolute tolerance of the reference solves.
    pub atol: f64,
    /// Suggested time subsampling for training (every k-th point).
    pub keep_every: usize,
    /// Families (one system each), in the order of the family axis.
    pub families: Vec<FamilyInfo>,
    /// The four splits.
    pub splits: Vec<SplitInfo>,
}

/// One family (system) of a dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FamilyInfo {
    /// System name.
    pub name: String,
    /// State variable names.
    pub state: Vec<String>,
    /// Parameter names.
    pub parameters: Vec<String>,
    /// Time horizon.
    pub horizon: f64,
    /// Reference solver method (absent for closed-form series such as the control charts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solver: Option<ReferenceMethod>,
}

/// One split file and its environments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitInfo {
    /// Split name (`train`, `test`, `adapt_train`, `adapt_test`).
    pub split: String,
    /// File name inside the folder.
    pub file: String,
    /// Shape of `X` as stored.
    pub shape: Vec<usize>,
    /// Environments in flattened order (family-major).
    pub environments: Vec<EnvInfo>,
}

/// One environment: its family and parameter values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnvInfo {
    /// Family index into [`Manifest::families`].
    pub family: usize,
    /// Parameter values, in the family's parameter order.
    pub parameters: Vec<f64>,
}

impl Manifest {
    /// Reads `dataset.toml` and checks that it is consistent with itself ([`Manifest::check`]).
    pub fn read(path: &Path) -> Result<Self, DataError> {
        let m: Self = read_toml(path)?;
        m.check().map_err(|reason| DataError::Manifest { path: path.to_path_buf(), reason })?;
        Ok(m)
    }

    /// Checks the manifest against itself: finite, non-negative tolerances, a positive `keep_every`, known and unique
    /// split names, every environment's family an index into `families` and its parameter count
    /// that family's. Returns what is wrong.
    pub fn check(&self) -> Result<(), String> {
        // 0 where nothing was solved (closed-form series such as the control charts)
        if !(self.rtol >= 0.0 && self.rtol.is_finite() && self.atol >= 0.0 && self.atol.is_finite()) {
            return Err(format!("rtol and atol must be finite and non-negative, got {} and {}", self.rtol, self.atol));
        }
        if self.keep_every == 0 {
            return Err("keep_every must be at least 1".into());
        }
        for (i, s) in self.splits.iter().enumerate() {
            if !Split::ALL.iter().any(|k| k.stem() == s.split) {
                return Err(format!("split `{}` is not one of train, test, adapt_train, adapt_test", s.split));
            }
            if self.splits[..i].iter().any(|o| o.split == s.split) {
                return Err(format!("split `{}` is listed twice", s.split));
            }
            for (e, env) in s.environments.iter().enumerate() {
                let Some(family) = self.families.get(env.family) else {
                    return Err(format!(
                        "split `{}`, environment {e}: family {} but the manifest lists {} families",
                        s.split,
                        env.family,
                        self.families.len()
                    ));
                };
                if env.parameters.len() != family.parameters.len() {
                    return Err(format!(
                        "split `{}`, environment {e}: {} parameter values but family `{}` has {} parameters",
                        s.split,
                        env.parameters.len(),
                        family.name,
                        family.parameters.len()
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks the manifest against the data of a split: as many environments, the same family of
    /// each environment where the file labels them, and a state size of the family's.
    pub fn check_split(&self, split: Split, data: &Dataset) -> Result<(), String> {
        let Some(info) = self.split(split.stem()) else { return Ok(()) };
        if info.environments.len() != data.num_envs() {
            return Err(format!(
                "split `{}` lists {} environments but its file holds {}",
                info.split,
                info.environments.len(),
                data.num_envs()
            ));
        }
        for (e, env) in info.environments.iter().enumerate() {
            if let Some(labels) = &data.families
                && labels[e] != env.family
            {
                return Err(format!(
                    "split `{}`, environment {e}: family {} in the manifest but {} in the file",
                    info.split, env.family, labels[e]
                ));
            }
            let family = &self.families[env.family];
            if family.state.len() != data.dim() {
                return Err(format!(
                    "split `{}`: family `{}` has {} state variables but the file's state size is {}",
                    info.split,
                    family.name,
                    family.state.len(),
                    data.dim()
                ));
            }
        }
        Ok(())
    }

    /// Writes the manifest atomically (temporary file in the same folder, then rename).
    pub fn write(&self, path: &Path) -> Result<(), DataError> {
        write_toml(path, self)
    }

    /// The split entry named `split`.
    pub fn split(&self, split: &str) -> Option<&SplitInfo> {
        self.splits.iter().find(|s| s.split == split)
    }
}

/// Reads a manifest (TOML) file.
pub(crate) fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| mixer_core::Error::io(path, e))?;
    toml::from_str(&text).map_err(|e| DataError::Manifest { path: path.to_path_buf(), reason: e.message().to_string() })
}

/// Writes a manifest (TOML) file atomically (temporary file in the same folder, then rename).
pub(crate) fn write_toml<T: Serialize>(path: &Path, value: &T) -> Result<(), DataError> {
    let text =
        toml::to_string(value).map_err(|e| DataError::Manifest { path: path.to_path_buf(), reason: e.to_string() })?;
    write_atomic_with(path, |f| {
        use std::io::Write;
        f.write_all(text.as_bytes())
    })
    .map_err(Into::into)
}
