//! Meta-training, adaptation, evaluation, metrics and checkpoints for mixer (MixER, Nzoyem et al. 2025).
//!
//! [`Trainer`] runs the alternating proximal loop (context block, then model block, each
//! step on a random subset of nearby environments, with MixER's gate refit on a schedule),
//! writes atomic checkpoints and resumes from them; [`adapt`] fits contexts of new
//! environments with everything else frozen; [`evaluate`] rolls out a split and scores it;
//! [`run_continual`] learns controlled tasks one after another (HyperCRL and its baselines);
//! [`SequenceTrainer`] runs MixER's loop with hier-shPLRNN sequence experts under generalized
//! teacher forcing.

mod adabelief;
mod adapt;
mod atomic;
pub mod batch;
mod block_step;
mod cem;
pub mod checkpoint;
mod config;
mod continual;
mod continual_data;
mod continual_objective;
mod continual_report;
mod continual_settings;
pub mod dsr_metrics;
mod evaluate;
mod expert_losses;
mod field_eval;
mod field_train;
mod fused_losses;
mod loss;
pub mod metrics;
mod model;
mod pot_eval;
mod pot_train;
mod progress;
mod proximal;
mod reseat;
mod schedule;
mod sequence;
mod sequence_adapt;
mod subset;
mod svm;
mod trainer;

pub use adabelief::{AdaBelief, AdaBeliefConfig, AdaBeliefState};
pub use adapt::{AdaptMode, adapt};
pub use atomic::{read_json, write_atomic, write_json};
pub use cem::{Cem, CemSettings};
pub use config::{
    AdaptConfig, ContextStart, DataOptions, LossScale, ModelConfig, Reseat, RunConfig, Segments, SubsetRule,
    TrainConfig,
};
pub use continual::{ContinualRun, ContinualState, run_continual, run_continual_until};
pub use continual_data::{
    ContinualTask, TransitionBuffer, check_sequence, random_action, random_transitions, run_episode, system_tasks,
};
pub use continual_objective::{EwcAnchor, heldout_mse, planned_episode};
pub use continual_report::ContinualReport;
pub use continual_settings::{ContinualMethod, ContinualSettings, DynamicsShape};
pub use evaluate::{EvalReport, LongTerm, evaluate, predict, score};
pub use expert_losses::{expert_loss_matrix, generic_expert_loss_matrix};
pub use field_eval::{CLOSE_RTOL, FieldEval, FieldMetrics, Rollout, evaluate_field, free_run};
pub use field_train::{
    FIELD_CONFIG_FILE, FIELD_MODEL_FILE, FieldCurvePoint, FieldRunConfig, FieldTrainSettings, FieldTrainState,
    field_batch, field_mse, field_pairs, is_field_run, load_field_model, spread_pairs, train_field,
};
pub use fused_losses::fused_expert_loss_matrix;
pub use loss::{aux_total, env_losses, meta_loss};
pub use mixer_routers::{Gate, GateState, KMeansSettings, RouterConfig};
pub use model::{MixerModel, Theta, assignment, route};
pub use pot_eval::{FamilyScore, PotMetrics, evaluate_pot};
pub use pot_train::{
    FrameWindow, POT_CONFIG_FILE, POT_MODEL_FILE, PotBatch, PotCurvePoint, PotFamily, PotMix, PotRunConfig,
    PotTrainSettings, PotTrainState, Stage, load_pot_model, pot_val_mse, scaled_mse, spread, train_pot,
};
pub use proximal::{flat_params, proximal_term};
pub use reseat::reseat_moves;
pub use schedule::PiecewiseLr;
pub use sequence::{
    ForcingSchedule, SequenceModel, SequenceModelConfig, SequenceRecord, SequenceRunConfig, SequenceState,
    SequenceTheta, SequenceTrainSettings, SequenceTrainer, context_clusters, context_matrix, contexts_from_rows,
    free_running_mse, sequence_assignment, sequence_env_losses, sequence_expert_losses, series_tensor,
};
pub use sequence_adapt::{SequenceAdaptSettings, adapt_sequence_contexts};
pub use subset::{nearest_subset, per_expert_subsets, subset_around};
pub use svm::{LinearSvm, classification_accuracy};
pub use trainer::{OuterRecord, TrainState, Trainer};

/// Errors of training, adaptation and evaluation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// A base error (config, shapes, solver, I/O).
    #[error(transparent)]
    Core(#[from] mixer_core::Error),
    /// An expert or mixture error.
    #[error(transparent)]
    Experts(#[from] mixer_experts::ExpertError),
    /// A hypernetwork or task-dynamics error.
    #[error(transparent)]
    Hyper(#[from] mixer_hyper::HyperError),
    /// A router error.
    #[error(transparent)]
    Routers(#[from] mixer_routers::RouterError),
    /// A dataset error (a field dataset that fails its checks).
    #[error(transparent)]
    Data(#[from] mixer_data::DataError),
    /// A rollout failed; names the environments involved.
    #[error("rollout of environments {envs:?} failed: {source}")]
    Rollout {
        /// Dataset indices of the environments in the failing rollout.
        envs: Vec<usize>,
        /// The solver error.
        source: Box<TrainError>,
    },
}

#[cfg(test)]
pub(crate) mod tests {
    pub type TestBackend = burn::backend::NdArray<f64>;
    pub type TestAutodiffBackend = burn::backend::Autodiff<TestBackend>;
}
