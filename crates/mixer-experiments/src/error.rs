//! The error type of mixer-experiments.

use std::path::PathBuf;

/// Errors of experiment runs, reports and plots.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExperimentError {
    /// A base error.
    #[error(transparent)]
    Core(#[from] mixer_core::Error),
    /// Reading, writing or generating data failed.
    #[error(transparent)]
    Data(#[from] mixer_data::DataError),
    /// Drawing a figure failed.
    #[error("cannot draw {path}: {reason}")]
    Plot {
        /// The figure file.
        path: PathBuf,
        /// The drawing backend's message.
        reason: String,
    },
    /// An experiment name is not in the plan.
    #[error("unknown experiment `{name}`; known: {known}")]
    UnknownExperiment {
        /// The requested name.
        name: String,
        /// The names in the plan, comma-separated.
        known: String,
    },
    /// Training, adaptation or evaluation failed.
    #[error(transparent)]
    Train(#[from] mixer_train::TrainError),
    /// An experiment file is malformed.
    #[error("experiment {path}: {message}")]
    Toml {
        /// The file (or `<text>`).
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The requested backend was not compiled in.
    #[error("backend unavailable: {0}")]
    BackendUnavailable(String),
}

impl ExperimentError {
    /// This error with a malformed-TOML message naming `path` instead of `<text>`.
    pub fn in_file(self, path: &std::path::Path) -> Self {
        match self {
            ExperimentError::Toml { message, .. } => ExperimentError::Toml { path: path.to_path_buf(), message },
            other => other,
        }
    }
}
