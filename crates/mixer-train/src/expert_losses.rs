//! The expert-loss matrix of MixER's gate refit: every expert on every environment, no gradient.

use burn::tensor::{Tensor, backend::Backend};
use ndarray::Array2;
use tracing::debug;

use mixer_core::{Dataset, Integrator, Routing};
use mixer_experts::{AnyExpert, MixtureOfExperts};

use crate::TrainError;
use crate::batch::{Batch, Window};

/// A routing that sends every one of `envs` environments to `expert`, weight 1.
pub fn constant_routing<B: Backend>(envs: usize, expert: usize, device: &B::Device) -> Routing<B> {
    Routing {
        k: 1,
        indices: vec![Some(expert); envs],
        weights: Tensor::ones([envs, 1], device),
        shared: vec![],
        probs: None,
        aux_losses: vec![],
    }
}

/// MSE of each expert on each training environment over full trajectories (`max_trajs` per
/// environment, all when `None`), `[envs, experts]`. An expert whose rollout fails (diverges)
/// gets an infinite loss on the environments of that rollout.
pub fn expert_loss_matrix<B: Backend>(
    moe: &MixtureOfExperts<B, AnyExpert<B>>,
    integrator: &dyn Integrator<B>,
    contexts: Tensor<B, 2>,
    data: &Dataset,
    max_trajs: Option<usize>,
) -> Result<Array2<f64>, TrainError> {
    let device = contexts.device();
    let envs: Vec<usize> = (0..data.num_envs()).collect();
    let batch = Batch::<B>::new(data, &envs, Window::full(data.num_steps()), max_trajs, &device);
    let experts = moe.num_experts();
    let mut out = Array2::from_elem((envs.len(), experts), f64::INFINITY);
    for g in &batch.groups {
        // the averaging matrix and which environments the group holds do not depend on the expert
        let averaging = batch.averaging(g, &device);
        let present = mixer_core::host::to_vec(averaging.clone().sum_dim(1));
        let rows = g.env_of_row.len();
        for k in 0..experts {
            let routing = constant_routing::<B>(envs.len(), k, &device);
            match moe.rollout_rows(integrator, &routing, contexts.clone(), batch.rows(g)) {
                Ok(pred) => {
                    let row_loss: Tensor<B, 2> =
                        (pred - g.target.clone()).square().reshape([rows as i32, -1]).mean_dim(1);
                    let values = mixer_core::host::to_vec(averaging.clone().matmul(row_loss));
                    for (e, (v, &w)) in values.iter().zip(&present).enumerate() {
                        if w > 0.0 {
                            out[[e, k]] = if v.is_finite() { *v } else { f64::INFINITY };
                        }
                    }
                }
                Err(err) => {
                    debug!(expert = k, error = %err, "expert rollout failed in gate refit; loss set to infinity")
                }
            }
        }
    }
    Ok(out)
}
