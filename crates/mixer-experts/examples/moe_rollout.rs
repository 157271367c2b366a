//! A MixER-style mixture of two GEPS experts rolled out under a top-1 routing, the expert-loss
//! matrix of the gate refit, and a hier-shPLRNN sequence prediction (CPU, about a second).
//!
//! Run with `cargo run -p mixer-experts --example moe_rollout`.

use burn::backend::NdArray;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use mixer_core::Routing;
use mixer_core::host::{tensor2, to_vec};
use mixer_experts::{ExpertConfig, ExpertError, HierShPlrnnConfig, MixtureOfExperts, Rows};
use mixer_ode::Rk4;

type B = NdArray<f64>;

fn main() -> Result<(), ExpertError> {
    let device = Default::default();
    B::seed(&device, 1);
    let (envs, experts, c, dim) = (4, 2, 2, 2);
    let moe = MixtureOfExperts::<B, _>::init(&ExpertConfig::Geps { width: 32, depth: 3 }, dim, c, experts, &device)?;
    // contexts [envs, K c]: expert k reads columns 2k..2k+2
    let contexts = tensor2::<B>(
        &[0.1, 0.0, 0.0, 0.0, 0.2, 0.1, 0.0, 0.0, 0.0, 0.0, -0.3, 0.2, 0.0, 0.0, 0.4, -0.1],
        [envs, experts * c],
        &device,
    );
    let routing = Routing {
        k: 1,
        indices: vec![Some(0), Some(0), Some(1), Some(1)],
        weights: Tensor::ones([envs, 1], &device),
        shared: vec![],
        probs: None,
        aux_losses: vec![],
    };
    let env_of_row: Vec<usize> = (0..envs).flat_map(|e| [e, e]).collect();
    let x0 = Tensor::<B, 2>::random([envs * 2, dim], burn::tensor::Distribution::Uniform(-1.0, 1.0), &device);
    let times: Vec<f64> = (0..11).map(|i| i as f64 * 0.1).collect();
    let rk4 = Rk4 { substeps: 2 };
    let traj = moe.rollout(&rk4, &routing, contexts.clone(), &env_of_row, x0.clone(), &times)?;
    println!("rollout {:?} (rows grouped by expert once, each expert integrated on its rows)", traj.dims());
    let target = traj.clone() * 1.05;
    let losses = moe.expert_losses(&rk4, contexts, Rows::new(&env_of_row, x0, &times), target)?;
    println!("expert losses [envs, K] = {:?}", to_vec(losses));

    let plrnn = HierShPlrnnConfig { dim: 3, hidden: 16, context: 4, tf_alpha_min: 0.2 }.init::<B>(&device)?;
    let series = Tensor::<B, 3>::random([5, 30, 3], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
    let ctx = Tensor::<B, 2>::random([5, 4], burn::tensor::Distribution::Normal(0.0, 0.5), &device);
    let pred = plrnn.forward_sequence(series.clone(), ctx)?;
    let mse: f64 = (pred.slice([0..5, 0..29, 0..3]) - series.slice([0..5, 1..30, 0..3])).square().mean().into_scalar();
    println!("hier-shPLRNN one-step MSE on noise (untrained): {mse:.3}");
    Ok(())
}
