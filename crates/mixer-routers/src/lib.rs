//! Routers for mixer: implementations of [`mixer_core::Router`] and [`Refit`], each selectable
//! by name from a run config through the registry ([`RouterConfig`], [`Gate`], [`KINDS`]).
//!
//! - [`KMeansLeastSquares`] — the MixER gate: a linear gate `G: [d_xi + 1, K]` on environment contexts,
//!   refit without gradients by K-means (mean-absolute distance), cluster → expert matching and a
//!   minimum-norm least-squares solve (MixER, Nzoyem et al. 2025).
//! - [`GradientGate`] — the naive-MoE baseline: a softmax gate trained by gradient, Switch top-1 or
//!   dense, with the importance balancing loss (MixER, Nzoyem et al. 2025).
//! - [`NoisyTopK`] — Shazeer's noisy top-k gate with importance and smooth load losses, optional
//!   Switch balance and z-loss, and always-on shared experts (Shazeer et al. 2017; Fedus et al. 2022; Dai et al. 2024).
//! - [`ExpertChoice`] — experts pick their top-C units (Zhou et al. 2022); batch-coupled.
//! - [`Switch`] — Switch top-1 with balance loss, z-loss, jitter and opt-in capacity (Fedus et al. 2022).
//! - [`GShard`] — top-2 with renormalised weights and random second-expert dispatch (Lepikhin et al. 2021).
//! - [`SharedRouted`] — MoE-POT's router: top-k over routed experts with an annealed softmax
//!   temperature, plus always-on shared experts (Wang et al. 2025).
//! - [`BiasBalance`] — auxiliary-loss-free balancing: a per-expert bias on the selection scores
//!   nudged after every step towards even load (Wang et al. 2024, DeepSeek-V3).
//! - [`HashRouter`] — a fixed locality-sensitive hash of the features; the worked example of
//!   docs/extending-routers.md.
//!
//! ```
//! use mixer_core::Seeds;
//! use mixer_routers::KMeansLsParams;
//! use ndarray::array;
//!
//! # fn main() -> Result<(), mixer_routers::RouterError> {
//! let mut rng = Seeds::new(0).stream("gate");
//! let mut gate = KMeansLsParams::recommended(2, 1).init(&mut rng)?;
//! // Two families of environments (contexts near -1 and +1); expert 1 fits the first, expert 0 the second.
//! let contexts = array![[-1.0], [-1.1], [1.0], [1.1]];
//! let losses = array![[5.0, 0.1], [5.0, 0.2], [0.1, 5.0], [0.3, 5.0]];
//! gate.update(&contexts, &losses, &mut rng)?;
//! assert_eq!(gate.assignment(&contexts)?, vec![1, 1, 0, 0]);
//! # Ok(())
//! # }
//! ```

mod balance;
mod bias_balance;
mod error;
mod expert_choice;
mod gating;
mod gradient_gate;
mod gshard;
mod hash;
pub mod kmeans;
mod kmeans_gate;
mod kmeans_ls;
mod lstsq;
pub mod matching;
mod noisy_topk;
mod params;
mod refit;
mod registry;
mod select;
mod shared_routed;
mod spatial;
mod spec;
mod switch;

pub use balance::cv_squared;
pub use bias_balance::{BiasBalance, BiasBalanceSettings};
pub use error::RouterError;
pub use expert_choice::{ExpertChoice, ExpertChoiceConfig, ExpertChoiceSettings};
pub use gradient_gate::{GateMode, GradientGate, GradientGateConfig, GradientSettings};
pub use gshard::{GShard, GShardSettings};
pub use hash::{HashRouter, HashSettings};
pub use kmeans_gate::{KMeansGate, KMeansSettings};
pub use kmeans_ls::{DIVERGED_LOSS, GateStats, KMeansLeastSquares, KMeansLsState};
pub use lstsq::min_norm_lstsq;
pub use noisy_topk::{NoisyTopK, NoisyTopKConfig, NoisyTopKSettings};
pub use params::{
    ClusterCount, EmptyCluster, KMeansInit, KMeansLsParams, Matching, RECOMMENDED_RESTARTS, ValidKMeansLsParams,
};
pub use refit::Refit;
pub use registry::{Gate, GateState, KINDS, RouterConfig};
pub use select::{argmax_lowest, softmax_row, topk_lowest};
pub use shared_routed::{SharedRouted, SharedRoutedSettings};
pub use spatial::{
    SpatialGateKind, SpatialRouter, SpatialRouting, SpatialSettings, SpatialShape, check_grid, conv_same, conv_weight,
    copy_block, copy_rows, host_tensor, top_k_per_location, with_coordinates,
};
pub use spec::{RouterShape, RouterSpec};
pub use switch::{Switch, SwitchSettings};

/// CPU backend used by the tests: `NdArray<f64>` for every test of this crate. burn 0.21 keeps the default
/// float dtype per device *type* in a process-wide registry, and `NdArray<f32>` and `NdArray<f64>` share
/// `NdArrayDevice`, so whichever runs first decides the dtype of both; one precision per test binary avoids
/// that (f32 runs use the `Flex` backend, whose device is distinct).
#[cfg(test)]
pub type TestBackend = burn::backend::NdArray<f64>;
/// Autodiff over [`TestBackend`].
#[cfg(test)]
pub type TestAutodiffBackend = burn::backend::Autodiff<TestBackend>;
