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
use crate::model::{HostRouter, MixerModel, route};
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
    host: &HostRouter,
    config: &RunConfig,
    data: &Dataset,
    mode: AdaptMode,
    seeds: &Seeds,
    device: &B::Device,
) -> Result<Tensor<B::InnerBackend, 2>, TrainError> {
    let start = initial_contexts(model, config, 1);
    match mode {
        AdaptMode::Bulk => {
            let envs: Vec<usize> = (0..data.num_envs()).collect();
            fit(model, host, config, data, &envs, start.repeat_dim(0, envs.len()), seeds, device)
        }
        AdaptMode::Sequential => {
            let rows = (0..data.num_envs())
                .map(|e| fit(model, host, config, &data.select_envs(&[e]), &[0], start.clone(), seeds, device))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Tensor::cat(rows, 0))
        }
    }
}

/// The starting context of a new environment, `[n, d_xi]`.
fn initial_contexts<B: AutodiffBackend>(model: &MixerModel<B>, config: &RunConfig, n: usize) -> Tensor<B, 2> {
    let trained = model.contexts.contexts().detach();
    let [_, d] = trained.dims();
    match config.adapt.init {
        ContextStart::Zeros => Tensor::zeros([n, d], &trained.device()),
        ContextStart::Mean => trained.mean_dim(0).repeat_dim(0, n),
    }
}

#[allow(clippy::too_many_arguments)]
fn fit<B: AutodiffBackend>(
    model: &MixerModel<B>,
    host: &HostRouter,
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
        let routing = route(&theta, host, contexts.clone(), Mode::Eval, &mut rng)?;
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
