//! Environment losses and the meta loss of the MixER paper.

use burn::tensor::{Tensor, activation::softmax, backend::Backend};

use mixer_core::host::tensor2;
use mixer_core::{Dataset, Integrator, Routing};

use crate::batch::Batch;
use crate::model::Theta;
use crate::{LossScale, TrainError};

/// Per-environment MSE of the rollouts of a batch times the batch's weights, `[batch envs]`, in
/// the batch's env order.
pub fn env_losses<B: Backend>(
    theta: &Theta<B>,
    integrator: &dyn Integrator<B>,
    routing: &Routing<B>,
    contexts: Tensor<B, 2>,
    batch: &Batch<B>,
) -> Result<Tensor<B, 1>, TrainError> {
    let device = contexts.device();
    let mut total: Tensor<B, 1> = Tensor::zeros([batch.envs.len()], &device);
    for g in &batch.groups {
        let pred = theta.moe.rollout_rows(integrator, routing, contexts.clone(), batch.rows(g))?;
        let rows = g.env_of_row.len();
        let row_loss: Tensor<B, 2> = (pred - g.target.clone()).square().reshape([rows as i32, -1]).mean_dim(1);
        total = total + batch.averaging(g, &device).matmul(row_loss).reshape([-1]);
    }
    let weight = tensor2::<B>(&batch.weight, [1, batch.weight.len()], &device).reshape([-1]);
    Ok(total * weight)
}

/// Smallest mean squared observation a relative loss divides by; quieter environments keep
/// the absolute MSE (weight 1) instead of blowing it up.
const QUIET: f64 = 1e-12;

impl LossScale {
    /// The loss weight of every environment of `data`: 1 for [`LossScale::Absolute`], one over
    /// the mean squared observation (all trajectories, times and states) for
    /// [`LossScale::Relative`].
    pub fn env_weights(self, data: &Dataset) -> Vec<f64> {
        (0..data.num_envs())
            .map(|e| match self {
                LossScale::Absolute => 1.0,
                LossScale::Relative => {
                    let x = data.env(e);
                    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len().max(1) as f64;
                    if ms > QUIET { 1.0 / ms } else { 1.0 }
                }
            })
            .collect()
    }
}

/// Combines environment losses `[C]` into the meta loss: `softmax(L) . L` (self-reweighting,
/// gradient through the weights) or the mean.
pub fn meta_loss<B: Backend>(env_losses: Tensor<B, 1>, self_reweight: bool) -> Tensor<B, 1> {
    if self_reweight {
        let w = softmax(env_losses.clone(), 0);
        (w * env_losses).sum()
    } else {
        env_losses.mean()
    }
}

/// Auxiliary router losses weighted by their coefficients, `[1]`.
pub fn aux_total<B: Backend>(routing: &Routing<B>, device: &B::Device) -> Tensor<B, 1> {
    routing.aux_losses.iter().fold(Tensor::zeros([1], device), |acc, a| acc + a.value.clone().mul_scalar(a.coefficient))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::TestBackend;
    use burn::tensor::TensorData;

    #[test]
    fn self_reweighting_weights_by_softmax() {
        let device = Default::default();
        let l = Tensor::<TestBackend, 1>::from_data(TensorData::from([1.0f64, 2.0, 0.5]), &device);
        let got = meta_loss(l.clone(), true).into_scalar();
        let e: Vec<f64> = [1.0f64, 2.0, 0.5].iter().map(|v| v.exp()).collect();
        let z: f64 = e.iter().sum();
        let want = e[0] / z * 1.0 + e[1] / z * 2.0 + e[2] / z * 0.5;
        assert!((got - want).abs() < 1e-12);
        assert!((meta_loss(l, false).into_scalar() - 3.5 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn relative_weights_are_inverse_mean_squares() {
        // env 0 has amplitude 1, env 1 amplitude 100, env 2 is all zeros
        let x = ndarray::Array4::from_shape_fn((3, 2, 4, 2), |(e, j, k, d)| {
            let base = if (j + k + d) % 2 == 0 { 1.0 } else { -1.0 };
            [1.0, 100.0, 0.0][e] * base
        });
        let data = Dataset::new(x, mixer_core::TimeGrid::Shared(vec![0.0, 1.0, 2.0, 3.0]), None).unwrap();
        assert_eq!(LossScale::Absolute.env_weights(&data), vec![1.0; 3]);
        let w = LossScale::Relative.env_weights(&data);
        assert!((w[0] - 1.0).abs() < 1e-12 && (w[1] - 1e-4).abs() < 1e-16, "{w:?}");
        assert_eq!(w[2], 1.0, "a silent environment keeps the absolute loss");
    }
}
