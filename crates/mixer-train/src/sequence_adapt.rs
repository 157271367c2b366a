//! Contexts of new series under a trained sequence model: experts and gate frozen, zero contexts
//! fitted by AdaBelief on the forced-prediction loss of the last forcing of training (the
//! sequence counterpart of [`crate::adapt`]); the gate routes each context while it is fitted.

use burn::module::{AutodiffModule, Module};
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::{ElementConversion, Tensor, backend::AutodiffBackend};
use serde::{Deserialize, Serialize};

use mixer_core::{ContextModel, Dataset, Error};
use mixer_hyper::ContextTable;

use crate::TrainError;
use crate::sequence::{SequenceRunConfig, SequenceTheta, sequence_assignment, sequence_env_losses, series_tensor};

/// How contexts of new series are fitted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequenceAdaptSettings {
    /// Optimiser steps.
    pub steps: usize,
    /// Learning rate.
    pub lr: f64,
    /// Series fitted together (each chunk with its own optimiser; series do not interact, so
    /// this bounds memory, e.g. for the 11 420 test series of Epilepsy2).
    #[serde(default = "default_chunk")]
    pub chunk: usize,
}

fn default_chunk() -> usize {
    1024
}

impl Default for SequenceAdaptSettings {
    fn default() -> Self {
        Self { steps: 100, lr: 1e-2, chunk: default_chunk() }
    }
}

/// Fits one context per environment of `data` with `theta` frozen, [`SequenceAdaptSettings::chunk`]
/// environments at a time; returns `[envs, d_xi]`. A non-finite loss is an error naming the
/// step.
pub fn adapt_sequence_contexts<B: AutodiffBackend>(
    theta: &SequenceTheta<B>,
    config: &SequenceRunConfig,
    data: &Dataset,
    device: &B::Device,
) -> Result<Tensor<B::InnerBackend, 2>, TrainError> {
    let theta = theta.clone().no_grad();
    let all: Vec<usize> = (0..data.num_envs()).collect();
    let chunks = all
        .chunks(config.adapt.chunk.max(1))
        .map(|envs| fit_chunk(&theta, config, &data.select_envs(envs), device))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Tensor::cat(chunks, 0))
}

/// [`adapt_sequence_contexts`] of one chunk, all its environments in one batch.
fn fit_chunk<B: AutodiffBackend>(
    theta: &SequenceTheta<B>,
    config: &SequenceRunConfig,
    data: &Dataset,
    device: &B::Device,
) -> Result<Tensor<B::InnerBackend, 2>, TrainError> {
    let series = series_tensor::<B>(data, device);
    let envs: Vec<usize> = (0..data.num_envs()).collect();
    let forcing = config.train.forcing.last();
    let mut table = ContextTable::<B>::zeros(data.num_envs(), config.model.context_dim, device);
    let mut opt = config.train.optimizer.init::<B, ContextTable<B>>()?;
    for step in 0..config.adapt.steps {
        let contexts = table.contexts();
        let expert_of = sequence_assignment(theta, contexts.clone().detach())?;
        let losses =
            sequence_env_losses(&theta.experts, &expert_of, contexts, &series, data.num_trajs(), &envs, &forcing)?;
        let loss = losses.mean();
        let value: f64 = loss.clone().into_scalar().elem();
        if !value.is_finite() {
            return Err(Error::NonFiniteData { what: "sequence adaptation loss".into(), index: step }.into());
        }
        let grads = GradientsParams::from_grads(loss.backward(), &table);
        table = opt.step(config.adapt.lr, table, grads);
    }
    Ok(table.valid().contexts())
}
