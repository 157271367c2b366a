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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::TestBackend;
    use mixer_core::TimeGrid;
    use mixer_core::host::{tensor2, to_vec};
    use mixer_experts::ExpertConfig;
    use mixer_ode::Rk4;
    use ndarray::Array4;

    /// Three environments on grids that form two normalised groups, two trajectories each.
    fn data() -> Dataset {
        let x = Array4::from_shape_fn((3, 2, 4, 2), |(e, j, k, i)| {
            (0.3 * e as f64 - 0.2 * j as f64 + 0.1 * i as f64 + 0.5) * (1.0 - 0.15 * k as f64)
        });
        let t = TimeGrid::PerEnv(vec![vec![0.0, 0.1, 0.2, 0.3], vec![0.0, 0.2, 0.4, 0.7], vec![0.0, 0.05, 0.1, 0.15]]);
        Dataset::new(x, t, None).unwrap()
    }

    #[test]
    fn matrix_is_each_experts_mse_on_each_environment() {
        let device = Default::default();
        let data = data();
        let rk4 = Rk4 { substeps: 2 };
        let geps = ExpertConfig::Geps { width: 8, depth: 3 };
        let coda = ExpertConfig::Coda { width: 8, depth: 3 };
        // both expert types must give the MSEs
        for config in [geps, coda] {
            TestBackend::seed(&device, 5);
            let mut moe =
                MixtureOfExperts::<TestBackend, AnyExpert<TestBackend>>::init(&config, 2, 2, 3, &device).unwrap();
            // distinct experts: re-initialise all but the first
            for k in 1..3 {
                moe.experts[k] = config.init::<TestBackend>(2, 2, &device).unwrap();
            }
            let ctx: Vec<f64> = (0..18).map(|i| 0.1 * (i as f64 * 0.7).sin()).collect();
            let contexts = tensor2::<TestBackend>(&ctx, [3, 6], &device);
            for max_trajs in [None, Some(1)] {
                let got = expert_loss_matrix(&moe, &rk4, contexts.clone(), &data, max_trajs).unwrap();
                let trajs = max_trajs.unwrap_or(2);
                assert!((got[[0, 0]] - got[[0, 1]]).abs() > 1e-9, "experts must differ for the check to bite");
                for e in 0..3 {
                    let times = data.t.for_env(e).to_vec();
                    for k in 0..3 {
                        let routing = constant_routing::<TestBackend>(3, k, &device);
                        let mut sum = 0.0;
                        for j in 0..trajs {
                            let x0 = tensor2(&[data.x[[e, j, 0, 0]], data.x[[e, j, 0, 1]]], [1, 2], &device);
                            let pred = to_vec(moe.rollout(&rk4, &routing, contexts.clone(), &[e], x0, &times).unwrap());
                            let target: Vec<f64> =
                                (0..4).flat_map(|s| [data.x[[e, j, s, 0]], data.x[[e, j, s, 1]]]).collect();
                            sum += pred.iter().zip(&target).map(|(p, t)| (p - t).powi(2)).sum::<f64>() / 8.0;
                        }
                        let want = sum / trajs as f64;
                        let have = got[[e, k]];
                        assert!(
                            (have - want).abs() < 1e-12 * want.max(1e-3),
                            "{config:?} env {e} expert {k}: {have} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
