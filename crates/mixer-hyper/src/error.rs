//! The error type of mixer-hyper.

/// Errors of context tables and hypernetworks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HyperError {
    /// A base error (invalid config, shape mismatch).
    #[error(transparent)]
    Core(#[from] mixer_core::Error),
    /// An environment index is outside the context table.
    #[error("environment {env} is outside the context table of {envs} environments; use ids below {envs}")]
    UnknownEnvironment {
        /// The requested environment.
        env: usize,
        /// Number of environments in the table.
        envs: usize,
    },
    /// Mean initialisation of new contexts needs trained contexts to average.
    #[error(
        "mean initialisation needs a trained context table with at least one environment (got {envs}); pass one or use zeros"
    )]
    NoTrainedContexts {
        /// Environments in the table that was given.
        envs: usize,
    },
}
