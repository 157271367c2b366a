//! The expert-loss matrix on the host: every expert frozen ([`mixer_experts::FrozenExpert`]),
//! rolled out with the host form of the solver ([`mixer_ode::HostSolver`]) in the backend's
//! float type, one column per expert computed by one rayon task, so the result does not depend
//! on the number of threads. Same numbers as the tensor path up to rounding.

use burn::tensor::{DType, Element, Tensor, backend::Backend};
use ndarray::Array2;
use rayon::prelude::*;
use tracing::debug;

use mixer_core::host::to_vec;
use mixer_core::{Dataset, Error, Integrator};
use mixer_experts::{AnyExpert, FrozenExpert, HostKernel, MixtureOfExperts};
use mixer_ode::HostSolver;

use crate::TrainError;
use crate::batch::{Batch, Window};

/// One group of rows of the batch, on the host.
struct HostGroup {
    env_of_row: Vec<usize>,
    slot_of_row: Vec<usize>,
    /// Initial states, `[rows, d]`.
    x0: Vec<f64>,
    /// Observations, `[rows, steps, d]`.
    target: Vec<f64>,
    times: Vec<f64>,
}

/// What every column needs, shared by the tasks.
struct Problem<'a> {
    solver: HostSolver,
    /// Contexts, `[envs, d_xi]`.
    contexts: &'a [f64],
    d_xi: usize,
    splits: bool,
    rate: &'a [f64],
    /// Rows per environment over all groups.
    counts: Vec<usize>,
    groups: Vec<HostGroup>,
    envs: usize,
}

/// [`crate::expert_loss_matrix`] through the host path, or `Ok(None)` when there is none: a
/// backend with autodiff, an integrator other than mixer-ode's, an expert type without a
/// frozen form, or a float type other than `f32` / `f64`. Results equal the tensor path's up to
/// rounding; a failing (diverging) rollout gives +inf on the environments of its rows.
pub fn fused_expert_loss_matrix<B: Backend>(
    moe: &MixtureOfExperts<B, AnyExpert<B>>,
    integrator: &dyn Integrator<B>,
    contexts: Tensor<B, 2>,
    data: &Dataset,
    max_trajs: Option<usize>,
) -> Result<Option<Array2<f64>>, TrainError> {
    let device = contexts.device();
    if B::ad_enabled(&device) {
        return Ok(None);
    }
    let Some(solver) = HostSolver::from_integrator(integrator) else { return Ok(None) };
    match <B::FloatElem as Element>::dtype() {
        DType::F32 => fused::<B, f32>(moe, solver, contexts, data, max_trajs),
        DType::F64 => fused::<B, f64>(moe, solver, contexts, data, max_trajs),
        _ => Ok(None),
    }
}

fn fused<B: Backend, T: HostKernel>(
    moe: &MixtureOfExperts<B, AnyExpert<B>>,
    solver: HostSolver,
    contexts: Tensor<B, 2>,
    data: &Dataset,
    max_trajs: Option<usize>,
) -> Result<Option<Array2<f64>>, TrainError> {
    let Some(frozen) = moe.experts.iter().map(AnyExpert::freeze::<T>).collect::<Option<Vec<_>>>() else {
        return Ok(None);
    };
    let [envs, d_xi] = contexts.dims();
    let splits = moe.splits(d_xi)?;
    if envs != data.num_envs() {
        return Err(Error::shape("context rows (one per environment)", data.num_envs(), envs).into());
    }
    if let Some(e) = frozen.first()
        && e.state_dim() != data.dim()
    {
        return Err(Error::shape("state dimension of the data", e.state_dim(), data.dim()).into());
    }
    let device = contexts.device();
    let all: Vec<usize> = (0..envs).collect();
    let batch = Batch::<B>::new(data, &all, Window::full(data.num_steps()), max_trajs, &device);
    let groups: Vec<HostGroup> = batch
        .groups
        .iter()
        .map(|g| HostGroup {
            env_of_row: g.env_of_row.clone(),
            slot_of_row: g.slot_of_row.clone(),
            x0: to_vec(g.x0.clone()),
            target: to_vec(g.target.clone()),
            times: g.times.clone(),
        })
        .collect();
    let mut counts = vec![0; envs];
    for g in &groups {
        for &s in &g.slot_of_row {
            counts[s] += 1;
        }
    }
    let contexts = to_vec(contexts);
    let problem = Problem { solver, contexts: &contexts, d_xi, splits, rate: &batch.rate, counts, groups, envs };
    let columns: Vec<Vec<f64>> =
        frozen.par_iter().enumerate().map(|(k, e)| problem.column(k, e)).collect::<Result<_, TrainError>>()?;
    let mut out = Array2::from_elem((envs, frozen.len()), f64::INFINITY);
    for (k, col) in columns.iter().enumerate() {
        out.column_mut(k).iter_mut().zip(col).for_each(|(o, &v)| *o = v);
    }
    Ok(Some(out))
}

impl Problem<'_> {
    /// The losses of expert `k` on every environment (+inf where its rollout fails).
    fn column<T: HostKernel>(&self, k: usize, expert: &FrozenExpert<T>) -> Result<Vec<f64>, TrainError> {
        let c = expert.context_dim();
        let offset = if self.splits { k * c } else { 0 };
        let d = expert.state_dim();
        let mut col = vec![f64::INFINITY; self.envs];
        for g in &self.groups {
            let rows = g.env_of_row.len();
            if rows == 0 {
                continue;
            }
            let ctx: Vec<f64> =
                g.env_of_row.iter().flat_map(|&e| &self.contexts[e * self.d_xi + offset..][..c]).copied().collect();
            let rate: Vec<f64> = g.env_of_row.iter().map(|&e| self.rate[e]).collect();
            let x0: Vec<T> = g.x0.iter().map(|&v| T::from_f64(v)).collect();
            let pred = match expert.integrate(&self.solver, &ctx, Some(&rate), &x0, &g.times)? {
                Ok(p) => p,
                Err(err) => {
                    debug!(expert = k, error = %err, "host rollout failed in gate refit; loss set to infinity");
                    continue;
                }
            };
            let per_row = g.times.len() * d;
            let mut sums = vec![0.0; self.envs];
            for (r, &slot) in g.slot_of_row.iter().enumerate() {
                let span = r * per_row..(r + 1) * per_row;
                let se: f64 = pred[span.clone()]
                    .iter()
                    .zip(&g.target[span])
                    .map(|(&p, &t)| {
                        let e = p.to_f64() - t;
                        e * e
                    })
                    .sum();
                sums[slot] += se / per_row as f64 / self.counts[slot] as f64;
            }
            for &slot in &g.slot_of_row {
                col[slot] = if sums[slot].is_finite() { sums[slot] } else { f64::INFINITY };
            }
        }
        Ok(col)
    }
}
