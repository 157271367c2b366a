//! The trained model: a context table plus the shared block (experts and, for gradient gates,
//! the gate), and the host-side MixER router.

use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};
use serde::{Deserialize, Serialize};

use mixer_core::{Mode, Rng, Router, RouterInput, Routing, Seeds};
use mixer_experts::{AnyExpert, MixtureOfExperts};
use mixer_hyper::ContextTable;
use mixer_routers::{GradientGate, GradientGateConfig, KMeansLeastSquares, KMeansLsState};

use crate::{RouterConfig, RunConfig, TrainError};

/// The shared parameters `theta`: experts, and the gate when it is trained by gradient.
#[derive(Module, Debug)]
pub struct Theta<B: Backend> {
    /// The mixture of experts.
    pub moe: MixtureOfExperts<B, AnyExpert<B>>,
    /// The gradient-trained gate (naive MoE baseline); `None` for MixER.
    pub gate: Option<GradientGate<B>>,
}

/// Contexts of the training environments and the shared block.
#[derive(Module, Debug)]
pub struct MixerModel<B: Backend> {
    /// Per-environment contexts `[envs, d_xi]`.
    pub contexts: ContextTable<B>,
    /// Shared parameters.
    pub theta: Theta<B>,
}

/// Router state kept outside the autodiff graph (MixER's gate).
#[derive(Clone, Debug)]
pub struct HostRouter {
    /// The K-means + least-squares gate, when the run uses it.
    pub kmeans: Option<KMeansLeastSquares>,
}

/// The checkpointed form of [`HostRouter`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HostRouterState {
    /// Gate, centroids and counters of the K-means gate.
    pub kmeans: Option<KMeansLsState>,
}

impl HostRouter {
    /// The state to checkpoint.
    pub fn state(&self) -> HostRouterState {
        HostRouterState { kmeans: self.kmeans.as_ref().map(KMeansLeastSquares::state) }
    }

    /// Restores the router of a run from checkpointed state.
    pub fn from_state(config: &RunConfig, state: &HostRouterState) -> Result<Self, TrainError> {
        let kmeans = match (&config.router, &state.kmeans) {
            (RouterConfig::KmeansLs(k), Some(s)) => {
                let params = k.params(config.model.experts, config.model.context_dim).check()?;
                Some(KMeansLeastSquares::from_state(params, s)?)
            }
            (RouterConfig::Gradient { .. }, None) => None,
            _ => {
                return Err(
                    mixer_core::Error::config("router", "checkpoint does not match the configured router").into()
                );
            }
        };
        Ok(Self { kmeans })
    }
}

impl<B: Backend> MixerModel<B> {
    /// Builds a model for `envs` environments of state dimension `dim`; seeds the device from the
    /// `init` stream so the same seed gives the same weights.
    pub fn init(
        config: &RunConfig,
        envs: usize,
        dim: usize,
        seeds: &Seeds,
        device: &B::Device,
    ) -> Result<(Self, HostRouter), TrainError> {
        B::seed(device, seeds.stream_seed("init"));
        let m = &config.model;
        let c = config.expert_context_dim();
        let moe = MixtureOfExperts::init(&m.expert, dim, c, m.experts, device)?;
        let contexts = ContextTable::zeros(envs, m.context_dim, device);
        let mut gate_rng = seeds.stream("gate-init");
        let (gate, kmeans) = match &config.router {
            RouterConfig::KmeansLs(k) => (None, Some(k.params(m.experts, m.context_dim).init(&mut gate_rng)?)),
            RouterConfig::Gradient { mode, importance } => {
                let mut gate = GradientGateConfig::new(m.context_dim, m.experts, *mode);
                gate.importance_coef = *importance;
                (Some(gate.init(device)?), None)
            }
        };
        Ok((Self { contexts, theta: Theta { moe, gate } }, HostRouter { kmeans }))
    }
}

/// Routes environments with contexts `[envs, d_xi]` through whichever gate the run uses.
pub fn route<B: Backend>(
    theta: &Theta<B>,
    host: &HostRouter,
    contexts: Tensor<B, 2>,
    mode: Mode,
    rng: &mut Rng,
) -> Result<Routing<B>, TrainError> {
    let input = RouterInput { features: contexts, mode };
    let routing = match (&theta.gate, &host.kmeans) {
        (Some(gate), _) => gate.route(&input, rng)?,
        (None, Some(km)) => Router::<B>::route(km, &input, rng)?,
        (None, None) => {
            return Err(mixer_core::Error::config(
                "router",
                "the model has neither a gradient gate nor a K-means gate",
            )
            .into());
        }
    };
    Ok(routing)
}

/// The top-1 expert of each environment under the current gate.
pub fn assignment<B: Backend>(
    theta: &Theta<B>,
    host: &HostRouter,
    contexts: Tensor<B, 2>,
) -> Result<Vec<usize>, TrainError> {
    let mut rng = Seeds::new(0).stream("assignment");
    let r = route(theta, host, contexts, Mode::Eval, &mut rng)?;
    Ok(r.top1().into_iter().map(|e| e.unwrap_or(0)).collect())
}
