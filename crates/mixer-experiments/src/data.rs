//! The four splits of a data folder, as a run reads them.

use std::path::Path;

use mixer_core::Dataset;

use crate::ExperimentError;

/// Train, test and adaptation splits, subsampled in time as the run config asks.
#[derive(Clone, Debug)]
pub struct RunData {
    /// Meta-training environments.
    pub train: Dataset,
    /// Training environments, new initial conditions.
    pub test: Dataset,
    /// New environments, trajectories for fitting contexts.
    pub adapt_train: Dataset,
    /// New environments, new initial conditions.
    pub adapt_test: Dataset,
}

impl RunData {
    /// Reads a folder in the published layout and keeps every `subsample`-th time point.
    pub fn load(dir: &Path, subsample: usize) -> Result<Self, ExperimentError> {
        let d = mixer_data::load_dir(dir)?;
        let k = subsample;
        Ok(Self {
            train: mixer_data::subsample(&d.train, k)?,
            test: mixer_data::subsample(&d.test, k)?,
            adapt_train: mixer_data::subsample(&d.adapt_train, k)?,
            adapt_test: mixer_data::subsample(&d.adapt_test, k)?,
        })
    }
}
