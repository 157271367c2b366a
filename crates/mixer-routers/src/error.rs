//! The error type of mixer-routers.

/// Everything that can go wrong when building or running a router; messages say what to change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RouterError {
    /// A base error (shapes, non-finite data, ...).
    #[error(transparent)]
    Core(#[from] mixer_core::Error),
    /// The number of experts is zero.
    #[error("num_experts = 0: a router needs at least one expert")]
    ZeroExperts,
    /// The router feature/context size is zero.
    #[error("context_dim = 0: the router needs at least one input feature")]
    ZeroContextDim,
    /// The K-means tolerance is not a positive finite number.
    #[error("tol = {tol}: the K-means tolerance must be positive and finite (the published value is 1e-4)")]
    NonPositiveTol {
        /// The rejected tolerance.
        tol: f64,
    },
    /// The K-means iteration bound is zero.
    #[error("max_kmeans = 0: allow at least one K-means iteration (the published value is 20)")]
    ZeroMaxKmeans,
    /// The least-squares input noise is negative or not finite.
    #[error("ls_noise = {value}: the least-squares input noise must be finite and >= 0 (the published value is 1e-4)")]
    InvalidLsNoise {
        /// The rejected noise scale.
        value: f64,
    },
    /// More clusters (experts) than environments: K-means would always leave a cluster empty.
    #[error(
        "{experts} experts but only {envs} environments: use at most {envs} experts, or `clusters = MinExpertsEnvs`"
    )]
    TooManyExperts {
        /// Number of experts `K`.
        experts: usize,
        /// Number of environments `E`.
        envs: usize,
    },
    /// A loss coefficient is negative or not finite.
    #[error("{field} = {value}: a loss coefficient must be finite and >= 0")]
    InvalidCoefficient {
        /// The offending field.
        field: &'static str,
        /// The rejected value.
        value: f64,
    },
    /// `k` is outside `1..=num_experts` (or `1..num_experts` where the load loss needs a `(k+1)`-th value).
    #[error("top_k = {k} with {experts} experts: choose 1 <= k <= {max}")]
    InvalidTopK {
        /// The requested `k`.
        k: usize,
        /// Number of experts.
        experts: usize,
        /// The largest `k` allowed here.
        max: usize,
    },
    /// The shared experts leave no routed expert, or fewer routed experts than `top_k`.
    #[error(
        "shared = {shared} with {experts} experts and top_k = {k}: keep at least top_k routed experts (E - shared >= k)"
    )]
    TooManyShared {
        /// Requested shared experts.
        shared: usize,
        /// Number of experts.
        experts: usize,
        /// Experts per unit.
        k: usize,
    },
    /// A softmax temperature or its schedule is out of range.
    #[error("{field} = {value}: {expected}")]
    InvalidSchedule {
        /// The offending field.
        field: &'static str,
        /// Its value.
        value: f64,
        /// What is allowed.
        expected: &'static str,
    },
    /// A shared-expert index is out of range or repeated.
    #[error("shared expert {index} is invalid with {experts} experts (indices must be distinct and < num_experts)")]
    InvalidSharedExpert {
        /// The offending index.
        index: usize,
        /// Number of experts.
        experts: usize,
    },
    /// A shared-expert weight is not finite.
    #[error("shared expert {index} has weight {weight}; use a finite weight")]
    InvalidSharedWeight {
        /// The expert index.
        index: usize,
        /// The rejected weight.
        weight: f64,
    },
    /// The expert-choice capacity factor is not a positive finite number.
    #[error("capacity_factor = {value}: it must be positive and finite (the paper uses 2)")]
    InvalidCapacityFactor {
        /// The rejected value.
        value: f64,
    },
    /// The noise floor of noisy top-k is negative or not finite.
    #[error("noise_floor = {value}: it must be finite and >= 0 (1e-2 by default)")]
    InvalidNoiseFloor {
        /// The rejected value.
        value: f64,
    },
    /// A config names a router that is not registered.
    #[error("unknown router kind `{kind}`; registered kinds: {known}")]
    UnknownKind {
        /// The requested kind.
        kind: String,
        /// The registered kinds, comma-separated.
        known: String,
    },
    /// Checkpointed router state does not fit the router (another kind, another shape).
    #[error("router state: {reason}")]
    State {
        /// What does not fit, and what to do.
        reason: String,
    },
    /// A spatial router's grid and kernel do not fit together.
    #[error("grid {height} x {width} with kernel {kernel}: {reason}")]
    InvalidGrid {
        /// Grid height.
        height: usize,
        /// Grid width.
        width: usize,
        /// Kernel size.
        kernel: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A field's `[channels, height, width]` differs from the router's.
    #[error("field of shape {found:?} (channels, height, width) given to a spatial router built for {expected:?}")]
    FieldShape {
        /// The router's shape.
        expected: [usize; 3],
        /// The field's shape.
        found: [usize; 3],
    },
    /// The least-squares solve failed (nalgebra's SVD reported an error).
    #[error("least-squares gate fit failed: {reason}; check the contexts for degenerate values")]
    LeastSquares {
        /// nalgebra's message.
        reason: String,
    },
}

impl From<RouterError> for mixer_core::Error {
    fn from(e: RouterError) -> Self {
        match e {
            RouterError::Core(inner) => inner,
            other => mixer_core::Error::config(other.field(), other.to_string()),
        }
    }
}

impl RouterError {
    /// The config field (or quantity) this error is about.
    pub fn field(&self) -> &'static str {
        match self {
            RouterError::Core(_) => "core",
            RouterError::ZeroExperts => "num_experts",
            RouterError::ZeroContextDim => "context_dim",
            RouterError::NonPositiveTol { .. } => "tol",
            RouterError::ZeroMaxKmeans => "max_kmeans",
            RouterError::InvalidLsNoise { .. } => "ls_noise",
            RouterError::TooManyExperts { .. } => "num_experts",
            RouterError::InvalidCoefficient { field, .. } => field,
            RouterError::InvalidTopK { .. } => "top_k",
            RouterError::TooManyShared { .. } => "shared",
            RouterError::InvalidSchedule { field, .. } => field,
            RouterError::InvalidSharedExpert { .. } | RouterError::InvalidSharedWeight { .. } => "shared",
            RouterError::InvalidCapacityFactor { .. } => "capacity_factor",
            RouterError::InvalidNoiseFloor { .. } => "noise_floor",
            RouterError::LeastSquares { .. } => "gate",
            RouterError::InvalidGrid { .. } => "grid",
            RouterError::FieldShape { .. } => "field",
            RouterError::UnknownKind { .. } => "router.kind",
            RouterError::State { .. } => "router state",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_to_core_config_error_with_field() {
        let e: mixer_core::Error = RouterError::TooManyExperts { experts: 5, envs: 3 }.into();
        match e {
            mixer_core::Error::InvalidConfig { field, reason } => {
                assert_eq!(field, "num_experts");
                assert!(reason.contains("5 experts"), "{reason}");
            }
            other => panic!("unexpected {other:?}"),
        }
        let core = mixer_core::Error::shape("x", [1], [2]);
        let back: mixer_core::Error = RouterError::from(core).into();
        assert!(matches!(back, mixer_core::Error::ShapeMismatch { .. }));
    }
}
