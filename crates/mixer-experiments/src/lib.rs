//! Experiment definitions, runs, tables and plots for mixer.
//!
//! - [`plot`]: PNG figures via plotters (embedded font, no system fonts): generic panels of
//!   x–y series ([`plot::Panel`], [`plot::panel_grid`]) and the dataset overview
//!   ([`plot::plot_dataset`]: time series and phase portraits per family).
//! - [`reproduce()`]: the [`Plan`] of published experiments (MIXER.md §6) and the [`Report`]
//!   that becomes `results/REPORT.md`.
//!
//! ```
//! use mixer_experiments::{Plan, Profile};
//! # fn main() -> Result<(), mixer_experiments::ExperimentError> {
//! let plan = Plan::new(Profile::Quick, "results").only(Some("selkov"))?;
//! assert_eq!(plan.datasets, vec!["selkov".to_string()]);
//! # Ok(())
//! # }
//! ```

mod error;
pub mod plot;
mod profile;
mod reproduce;

pub use error::ExperimentError;
pub use profile::Profile;
pub use reproduce::{DatasetRecord, PUBLISHED_DATASETS, Plan, Report, reproduce};
