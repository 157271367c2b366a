//! The trained model: a context table plus the shared block (experts and the gate).

use std::path::Path;

use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};

use mixer_core::{Mode, Rng, Router, RouterInput, Routing, Seeds};
use mixer_experts::{AnyExpert, MixtureOfExperts};
use mixer_hyper::ContextTable;
use mixer_routers::{Gate, GateState};

use crate::{RunConfig, TrainError, checkpoint};

/// The shared parameters `theta`: experts and the gate (any registered router; its parameters,
/// if it has any, are trained with the experts, its refit state travels in `router.json`).
#[derive(Module, Debug)]
pub struct Theta<B: Backend> {
    /// The mixture of experts.
    pub moe: MixtureOfExperts<B, AnyExpert<B>>,
    /// The router.
    pub gate: Gate<B>,
}

/// Contexts of the training environments and the shared block.
#[derive(Module, Debug)]
pub struct MixerModel<B: Backend> {
    /// Per-environment contexts `[envs, d_xi]`.
    pub contexts: ContextTable<B>,
    /// Shared parameters.
    pub theta: Theta<B>,
}

impl<B: Backend> MixerModel<B> {
    /// Builds a model for `envs` environments of state dimension `dim`; seeds the device from the
    /// `init` stream so the same seed gives the same weights, and draws the router's own
    /// randomness from the `gate-init` stream.
    pub fn init(
        config: &RunConfig,
        envs: usize,
        dim: usize,
        seeds: &Seeds,
        device: &B::Device,
    ) -> Result<Self, TrainError> {
        B::seed(device, seeds.stream_seed("init"));
        let m = &config.model;
        let moe = MixtureOfExperts::init(&m.expert, dim, config.expert_context_dim(), m.experts, device)?
            .with_dispatch(m.rollout);
        let contexts = ContextTable::zeros(envs, m.context_dim, device);
        let gate = config.router.build(config.router_shape(), &mut seeds.stream("gate-init"), device)?;
        Ok(Self { contexts, theta: Theta { moe, gate } })
    }
}

/// Routes environments with contexts `[envs, d_xi]` through the model's gate.
pub fn route<B: Backend>(
    theta: &Theta<B>,
    contexts: Tensor<B, 2>,
    mode: Mode,
    rng: &mut Rng,
) -> Result<Routing<B>, TrainError> {
    Ok(theta.gate.route(&RouterInput { features: contexts, mode }, rng)?)
}

/// The top-1 expert of each environment under the current gate (evaluation mode: no noise is
/// drawn, so the stream is never read).
pub fn assignment<B: Backend>(theta: &Theta<B>, contexts: Tensor<B, 2>) -> Result<Vec<usize>, TrainError> {
    let mut rng = Seeds::new(0).stream("assignment");
    let r = route(theta, contexts, Mode::Eval, &mut rng)?;
    Ok(r.top1().into_iter().map(|e| e.unwrap_or(0)).collect())
}

impl<B: Backend> MixerModel<B> {
    /// Writes the model's record and its gate's refit state into a checkpoint folder.
    pub fn save_checkpoint(&self, dir: &Path) -> Result<(), TrainError> {
        checkpoint::save_module(self, dir, "model")?;
        crate::write_json(&dir.join("router.json"), &self.theta.gate.state())?;
        Ok(())
    }

    /// Loads what [`MixerModel::save_checkpoint`] wrote into a model built from the same config.
    pub fn load_checkpoint(self, dir: &Path, device: &B::Device) -> Result<Self, TrainError> {
        let mut model = checkpoint::load_module(self, dir, "model", device)?;
        let state = GateState::from_json(crate::read_json(&dir.join("router.json"))?)?;
        model.theta.gate.load_state(&state)?;
        Ok(model)
    }
}
