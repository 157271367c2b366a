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
use crate::model::{Theta, route};
use crate::{Reseat, TrainError};

/// The moves of one re-seat step: `(environment, new context)` for every training environment
/// whose loss with the mean context of another expert's environments (routed by the gate) is
/// below `gain` times its loss with its own context. Losses use the first `max_trajs`
/// trajectories; an expert whose candidate rollouts fail offers no moves.
#[allow(clippy::too_many_arguments)]
pub fn reseat_moves<B: Backend>(
    theta: &Theta<B>,
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
    let routing = route(theta, contexts.clone(), Mode::Eval, rng)?;
    let current: Vec<Option<usize>> = routing.top1();
    let all: Vec<usize> = (0..envs).collect();
    let batch = Batch::new(data, &all, Window::full(data.num_steps()), max_trajs, &device);
    let own = to_vec(env_losses(theta, integrator, &routing, contexts, &batch)?);
    // the mean context of each expert's environments
    let experts = current.iter().flatten().max().map_or(0, |&k| k + 1);
    let mut means = Array2::<f64>::zeros((experts, d));
    let mut counts = vec![0usize; experts];
    for (e, k) in current.iter().enumerate() {
        if let Some(k) = *k {
            counts[k] += 1;
            let mut row = means.row_mut(k);
            row += &host_contexts.row(e);
        }
    }
    for (mut row, &n) in means.rows_mut().into_iter().zip(&counts) {
        row /= n.max(1) as f64;
    }
    let mut best: Vec<Option<(f64, usize)>> = vec![None; envs];
    for k in (0..experts).filter(|&k| counts[k] > 0) {
        let mean: Vec<f64> = means.row(k).to_vec();
        let candidates = tensor2::<B>(&mean.repeat(envs), [envs, d], &device);
        let routing = route(theta, candidates.clone(), Mode::Eval, rng)?;
        // every environment gets the same candidate, so it goes to one expert for all of them
        let target = routing.top1()[0];
        let Ok(losses) = env_losses(theta, integrator, &routing, candidates, &batch) else { continue };
        for (e, l) in to_vec(losses).into_iter().enumerate() {
            let better = l.is_finite() && l < reseat.gain * own[e] && best[e].is_none_or(|(b, _)| l < b);
            if target != current[e] && better {
                best[e] = Some((l, k));
            }
        }
    }
    Ok(best.into_iter().enumerate().filter_map(|(e, b)| b.map(|(_, k)| (e, means.row(k).to_vec()))).collect())
}
