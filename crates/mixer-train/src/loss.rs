//! Environment losses and the meta loss of MIXER.md §2.

use burn::tensor::{Tensor, activation::softmax, backend::Backend};

use mixer_core::{Integrator, Routing};

use crate::TrainError;
use crate::batch::Batch;
use crate::model::Theta;

/// Per-environment MSE of the rollouts of a batch, `[batch envs]`, in the batch's env order.
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
    Ok(total)
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
}
