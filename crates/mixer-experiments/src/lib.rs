//! Experiment definitions, runs, tables and plots for mixer.
//!
//! - [`plot`]: PNG figures via plotters (embedded font, no system fonts): generic panels of
//!   x–y series ([`plot::Panel`], [`plot::panel_grid`]) and the dataset overview
//!   ([`plot::plot_dataset`]: time series and phase portraits per family).
//! - [`reproduce()`]: the [`Plan`] of published experiments (MixER, Nzoyem et al. 2025) and the [`Report`]
//!   that becomes `results/REPORT.md`; [`summary_cell`] is how its tables show a score.
//! - [`ContinualExperiment`] / [`ContinualJob`]: continual model-based control (HyperCRL and
//!   its baselines), reward and prediction matrices per method, heat maps, [`continual_markdown`].
//! - [`SequenceExperiment`] / [`SequenceJob`]: time series with hier-shPLRNN experts (the
//!   synthetic control charts), contexts and routing scored against known classes,
//!   [`sequence_markdown`].
//! - [`ScalingExperiment`] / [`ScalingJob`]: seconds per outer step and routing of MixER as
//!   families and environments per family grow, [`scaling_markdown`].
//! - [`flush_subnormals_in_process`]: flush-to-zero on every CPU thread (the binaries call it).
//! - [`init_logging`]: the log subscriber of the `mixer` binary and `cargo xtask`.
//!
//! ```
//! use mixer_experiments::{Plan, Profile};
//! # fn main() -> Result<(), mixer_experiments::ExperimentError> {
//! let plan = Plan::new(Profile::Quick, "results")?.only(Some("selkov"))?;
//! assert_eq!(plan.datasets, vec!["selkov".to_string()]);
//! # Ok(())
//! # }
//! ```

mod backend;
mod compare;
mod continual;
mod data;
mod error;
mod experiment;
mod field;
pub mod figures;
mod float_mode;
mod logging;
mod pde_pretrain;
pub mod plot;
mod profile;
mod report;
mod reproduce;
mod run;
mod scaling;
mod sequence;

pub use backend::{BackendJob, DeviceChoice, dispatch};
/// The backend bound of [`BackendJob::run`], re-exported so callers need not name burn.
pub use burn::tensor::backend::AutodiffBackend;
pub use compare::{FamilyComparison, family_comparisons};
pub use continual::{
    BUILTIN_CONTINUAL_EXPERIMENTS, ContinualExperiment, ContinualExperimentRecord, ContinualJob, ContinualRunMetrics,
    ContinualRunRecord, continual_markdown, continual_run,
};
pub use data::RunData;
pub use error::ExperimentError;
pub use experiment::{BUILTIN_EXPERIMENTS, DataSource, Experiment, Variant};
pub use field::{
    BUILTIN_FIELD_EXPERIMENTS, FieldDataSource, FieldExperiment, FieldExperimentRecord, FieldJob, FieldRunMetrics,
    FieldRunRecord, FieldTiming, field_data_figure, field_markdown, field_run, read_field_metrics, score_field_run,
};
pub use float_mode::{
    KEEP_SUBNORMALS, flush_subnormals_in_process, flush_subnormals_on_this_thread, subnormals_flushed,
};
pub use logging::init_logging;
pub use pde_pretrain::{
    BUILTIN_PDE_EXPERIMENTS, HeldOutScores, PdeExperiment, PdeExperimentRecord, PdeJob, PotRunTables, PotVariant,
    PotVariantRecord, finetune_run, pde_markdown,
};
pub use profile::Profile;
pub use report::summary_cell;
pub use reproduce::{
    DatasetRecord, ExperimentRecord, PUBLISHED_DATASETS, Plan, REPRODUCED_CONTINUAL_EXPERIMENTS,
    REPRODUCED_EXPERIMENTS, REPRODUCED_FIELD_EXPERIMENTS, REPRODUCED_PDE_EXPERIMENTS, REPRODUCED_SCALING_EXPERIMENTS,
    REPRODUCED_SEQUENCE_EXPERIMENTS, Report, RunRecord, reproduce,
};
pub use run::{
    AdaptationMetrics, LoadedRun, RoutingMetrics, RunMetrics, Timing, adapt_run, adapted_path, eval_run, load_run,
    read_metrics, read_run_config, train_run,
};
pub use scaling::{
    BUILTIN_SCALING_EXPERIMENTS, ScalingExperiment, ScalingExperimentRecord, ScalingJob, ScalingPoint, Sweep,
    point_spec, scaling_markdown,
};
pub use sequence::{
    BUILTIN_SEQUENCE_EXPERIMENTS, SequenceData, SequenceExperiment, SequenceExperimentRecord, SequenceJob,
    SequenceRunMetrics, SequenceRunRecord, TsFiles, sequence_markdown, sequence_run,
};

/// One training at a time in this crate's tests: burn-autodiff's graph bookkeeping is shared by
/// the threads of a process, and concurrent backward passes have been seen to drop another
/// test's gradients.
#[cfg(test)]
pub(crate) fn serial_training() -> std::sync::MutexGuard<'static, ()> {
    static AUTODIFF: std::sync::Mutex<()> = std::sync::Mutex::new(());
    AUTODIFF.lock().unwrap_or_else(|e| e.into_inner())
}
