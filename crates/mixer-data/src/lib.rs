//! Systems zoo, dataset generation and `.npz` I/O for mixer.
//!
//! Systems are declared as data ([`DatasetSpec`], TOML files under `systems/`, right-hand sides
//! as expression text parsed by `exmex`); [`generate`] draws environments and initial conditions
//! from a seed and solves them with diffsol (rtol 1e-8); [`save_dir`] / [`load_dir`] read and
//! write folders in the published layout (`train.npz`, `test.npz`, `adapt_train.npz`,
//! `adapt_test.npz`, each with `X` and `t`) with a `dataset.toml` manifest.
//!
//! ```
//! use mixer_data::DatasetSpec;
//! # fn main() -> Result<(), mixer_data::DataError> {
//! let spec = DatasetSpec::builtin("lotka-volterra")?;
//! assert_eq!(spec.environments(&spec.family[0], false).len(), 9);
//! # Ok(())
//! # }
//! ```

mod dir;
mod generate;
mod npz;
mod spec;
mod system;

use std::path::PathBuf;

pub use dir::{DatasetDir, candidates, load_dir, load_split, save_dir, split_path, subsample};
pub use generate::{ATOL, Generated, Manifest, RTOL, generate};
pub use npz::{read_npz, write_npz};
pub use spec::{DatasetSpec, EnvironmentRule, Trajectories, ZOO, linspace};
pub use system::{CompiledFamily, FamilySpec, InitialConditions, Instance, Parameter};

/// Errors of system declarations, generation and data files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// A base error (shapes, non-finite data, I/O).
    #[error(transparent)]
    Core(#[from] mixer_core::Error),
    /// A system or dataset declaration is invalid.
    #[error("system `{name}`: {reason}")]
    System {
        /// The system or file.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// No built-in system has this name.
    #[error("unknown system `{name}`; built-in systems: {known:?} (or pass --spec FILE)")]
    UnknownSystem {
        /// The requested name.
        name: String,
        /// The built-in names.
        known: Vec<String>,
    },
    /// A `.npz` file is malformed.
    #[error("{path}: {reason}")]
    Npz {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A split file is missing from a data folder.
    #[error("{dir} has no {split} split (looked for {tried:?})")]
    MissingSplit {
        /// The folder.
        dir: PathBuf,
        /// The split.
        split: String,
        /// File names tried.
        tried: Vec<String>,
    },
    /// A ground-truth solve failed.
    #[error("solving {system} at parameters {params:?} failed: {reason}")]
    Solve {
        /// The family.
        system: String,
        /// Its parameters.
        params: Vec<f64>,
        /// The solver's message.
        reason: String,
    },
}
