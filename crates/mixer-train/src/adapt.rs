//! Adaptation to new environments: model and gate frozen, fresh contexts fitted (MixER, Nzoyem et al. 2025).

use burn::module::{AutodiffModule, Module};
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::{ElementConversion, Tensor, backend::AutodiffBackend};
use serde::{Deserialize, Serialize};
use tracing::instrument;

use mixer_core::{ContextModel, Dataset, Error, Mode, Seeds};
use mixer_hyper::ContextTable;

use crate::batch::{Batch, Window};
use crate::loss::env_losses;
use crate::model::{MixerModel, route};
use crate::{ContextStart, RunConfig, TrainError};

/// All new environments fitted together, or one at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdaptMode {
    /// All new environments in one optimisation.
    Bulk,
    /// Each new environment on its own.
    Sequential,
}

/// Fits contexts `[new envs, d_xi]` for the environments of `data` (usually `adapt_train`).
#[instrument(skip_all, fields(mode = ?mode, envs = data.num_envs()))]
pub fn adapt<B: AutodiffBackend>(
    model: &MixerModel<B>,
    config: &RunConfig,
    data: &Dataset,
    mode: AdaptMode,
    seeds: &Seeds,
    device: &B::Device,
) -> Result<Tensor<B::InnerBackend, 2>, TrainError> {
    let start = initial_contexts(model, config, data, seeds)?;
    match mode {
        AdaptMode::Bulk => {
            let envs: Vec<usize> = (0..data.num_envs()).collect();
            fit(model, config, data, &envs, start, seeds, device)
        }
        AdaptMode::Sequential => {
            let rows = (0..data.num_envs())
                .map(|e| {
                    let one = start.clone().narrow(0, e, 1);
                    fit(model, config, &data.select_envs(&[e]), &[0], one, seeds, device)
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Tensor::cat(rows, 0))
        }
    }
}

/// The starting contexts of the environments of `data`, `[envs, d_xi]`.
fn initial_contexts<B: AutodiffBackend>(
    model: &MixerModel<B>,
    config: &RunConfig,
    data: &Dataset,
    seeds: &Seeds,
) -> Result<Tensor<B, 2>, TrainError> {
    let trained = model.contexts.contexts().detach();
    let [_, d] = trained.dims();
    let n = data.num_envs();
    Ok(match config.adapt.init {
        ContextStart::Zeros => Tensor::zeros([n, d], &trained.device()),
        ContextStart::Mean => trained.mean_dim(0).repeat_dim(0, n),
        ContextStart::BestFit => {
            let rows = best_fitting(model, config, data, seeds)?;
            Tensor::cat(rows.into_iter().map(|r| trained.clone().narrow(0, r, 1)).collect(), 0)
        }
    })
}

/// For each environment of `data`, the trained environment whose context (routed by the gate)
/// predicts its trajectories with the lowest loss. Candidates are rolled out expert by expert;
/// an expert whose rollout fails (a diverging field) offers none of its contexts.
fn best_fitting<B: AutodiffBackend>(
    model: &MixerModel<B>,
    config: &RunConfig,
    data: &Dataset,
    seeds: &Seeds,
) -> Result<Vec<usize>, TrainError> {
    let valid = model.valid();
    let candidates = valid.contexts.contexts();
    let device = candidates.device();
    let trained = candidates.dims()[0];
    let integrator =
        config.train.solver.build::<B::InnerBackend>().map_err(|e| Error::config("train.solver", e.to_string()))?;
    let routing = route(&valid.theta, candidates.clone(), Mode::Eval, &mut seeds.stream("adapt-start"))?;
    let mut by_expert: Vec<Vec<usize>> = vec![Vec::new(); config.model.experts];
    for (c, k) in routing.top1().into_iter().enumerate() {
        if let Some(k) = k {
            by_expert[k].push(c);
        }
    }
    (0..data.num_envs())
        .map(|e| {
            // the new environment's trajectories once per candidate
            let copies = data.select_envs(&vec![e; trained]);
            let mut best: Option<(usize, f64)> = None;
            for group in by_expert.iter().filter(|g| !g.is_empty()) {
                let batch = Batch::new(&copies, group, Window::full(data.num_steps()), None, &device);
                let Ok(losses) = env_losses(&valid.theta, integrator.as_ref(), &routing, candidates.clone(), &batch)
                else {
                    continue;
                };
                for (&c, l) in group.iter().zip(mixer_core::host::to_vec(losses)) {
                    if l.is_finite() && best.is_none_or(|(_, b)| l < b) {
                        best = Some((c, l));
                    }
                }
            }
            best.map(|(c, _)| c).ok_or_else(|| {
                Error::NonFiniteData {
                    what: "adaptation start: every trained context's rollout diverged".into(),
                    index: e,
                }
                .into()
            })
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn fit<B: AutodiffBackend>(
    model: &MixerModel<B>,
    config: &RunConfig,
    data: &Dataset,
    envs: &[usize],
    start: Tensor<B, 2>,
    seeds: &Seeds,
    device: &B::Device,
) -> Result<Tensor<B::InnerBackend, 2>, TrainError> {
    let theta = model.theta.clone().no_grad();
    let integrator = config.train.solver.build::<B>().map_err(|e| Error::config("train.solver", e.to_string()))?;
    let mut table = ContextTable::from_tensor(start.detach());
    let mut opt = config.train.optimizer.init::<B, ContextTable<B>>()?;
    let weights = config.train.loss_scale.env_weights(data);
    let batch = Batch::<B>::new(data, envs, Window::full(data.num_steps()), None, device).weighted(&weights);
    let mut rng = seeds.stream("adapt");
    for step in 0..config.adapt.steps {
        let contexts = table.contexts();
        let routing = route(&theta, contexts.clone(), Mode::Eval, &mut rng)?;
        let loss = env_losses(&theta, integrator.as_ref(), &routing, contexts, &batch)?.mean();
        let value: f64 = loss.clone().into_scalar().elem();
        if !value.is_finite() {
            return Err(Error::NonFiniteData { what: "adaptation loss".into(), index: step }.into());
        }
        let grads = GradientsParams::from_grads(loss.backward(), &table);
        table = opt.step(config.adapt.lr, table, grads);
    }
    Ok(table.valid().contexts())
}
