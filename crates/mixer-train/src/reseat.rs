//! Re-seating stray environments: an environment whose trajectories another expert's typical
//! context predicts much better than its own context moves to that context (docs/method.md).
//!
//! With split contexts an environment trains only the slice of the expert it is routed to, so
//! K-means on the contexts keeps it in that expert's cluster even when another expert fits its
//! family; the re-seat step lets the losses move it.

use burn::tensor::{Tensor, backend::Backend};
use ndarray::Array2;

use mixer_core::host::{tensor2, to_array2, to_vec};
use mixer_core::{Dataset, Integrator, Mode, Rng};

use crate::batch::{Batch, Window};
use crate::loss::env_losses;
use crate::model::{HostRouter, Theta, route};
use crate::{Reseat, TrainError};

/// The moves of one re-seat step: `(environment, new context)` for every training environment
/// whose loss with the mean context of another expert's environments (routed by the gate) is
/// below `gain` times its loss with its own context. Losses use the first `max_trajs`
/// trajectories; an expert whose candidate rollouts fail offers no moves.
#[allow(clippy::too_many_arguments)]
pub fn reseat_moves<B: Backend>(
    theta: &Theta<B>,
    host: &HostRouter,
    integrator: &dyn Integrator<B>,
    contexts: Tensor<B, 2>,
    data: &Dataset,
    max_trajs: Option<usize>,
    reseat: &Reseat,
    rng: &mut Rng,
) -> Result<Vec<(usize, Vec<f64>)>, TrainError> {
    let device = contexts.device();
    let host_contexts = to_array2(contexts.clone());
    let (envs, d) = host_contexts.dim();
    let routing = route(theta, host, contexts.clone(), Mode::Eval, rng)?;
    let current: Vec<Option<usize>> = routing.top1();
    let all: Vec<usize> = (0..envs).collect();
    let full = Window::full(data.num_steps());
    let own =
        to_vec(env_losses(theta, integrator, &routing, contexts, &Batch::new(data, &all, full, max_trajs, &device))?);
    // the mean context of each expert's environments
    let experts = current.iter().flatten().max().map_or(0, |&k| k + 1);
    let mut centroids = Array2::<f64>::zeros((experts, d));
    let mut counts = vec![0usize; experts];
    for (e, k) in current.iter().enumerate() {
        if let Some(k) = *k {
            counts[k] += 1;
            let mut row = centroids.row_mut(k);
            row += &host_contexts.row(e);
        }
    }
    let mut best: Vec<Option<(f64, usize)>> = vec![None; envs];
    for k in (0..experts).filter(|&k| counts[k] > 0) {
        let centroid: Vec<f64> = centroids.row(k).iter().map(|v| v / counts[k] as f64).collect();
        let candidates = tensor2::<B>(&centroid.repeat(envs), [envs, d], &device);
        let routing = route(theta, host, candidates.clone(), Mode::Eval, rng)?;
        let batch = Batch::new(data, &all, full, max_trajs, &device);
        let Ok(losses) = env_losses(theta, integrator, &routing, candidates, &batch) else { continue };
        for (e, l) in to_vec(losses).into_iter().enumerate() {
            let elsewhere = routing.top1()[e] != current[e];
            if elsewhere && l.is_finite() && l < reseat.gain * own[e] && best[e].is_none_or(|(b, _)| l < b) {
                best[e] = Some((l, k));
            }
        }
    }
    Ok(best
        .into_iter()
        .enumerate()
        .filter_map(|(e, b)| b.map(|(_, k)| (e, centroids.row(k).iter().map(|v| v / counts[k] as f64).collect())))
        .collect())
}
