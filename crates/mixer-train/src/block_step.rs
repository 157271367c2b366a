//! One inner step of MixER's alternating loop, shared by the ODE and the sequence trainers: the
//! block's proximal term added to the meta loss, a non-finite total refused, the block's
//! parameters stepped by its optimiser.

use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer, adaptor::OptimizerAdaptor};
use burn::tensor::{ElementConversion, Tensor, backend::AutodiffBackend};
use mixer_core::Error;
use mixer_hyper::ContextTable;

use crate::TrainError;
use crate::adabelief::AdaBelief;
use crate::proximal::proximal_term;

/// The block an inner step trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Block {
    /// The context table.
    Context,
    /// The shared model (experts and gate).
    Model,
}

/// The trainable blocks and their optimisers.
pub(crate) struct Blocks<'a, B: AutodiffBackend, T: AutodiffModule<B>> {
    /// The context table and its optimiser.
    pub contexts: (&'a mut ContextTable<B>, &'a mut OptimizerAdaptor<AdaBelief, ContextTable<B>, B>),
    /// The shared model and its optimiser.
    pub theta: (&'a mut T, &'a mut OptimizerAdaptor<AdaBelief, T, B>),
}

/// Adds `block`'s proximal term (`beta`, about `snapshot`) to `loss`, refuses a non-finite total
/// (`what` names the environments, `step` the inner step), back-propagates and steps the block
/// with learning rate `lr`; returns the total.
#[allow(clippy::too_many_arguments)]
pub(crate) fn step_block<B: AutodiffBackend, T: AutodiffModule<B>>(
    block: Block,
    loss: Tensor<B, 1>,
    snapshot: &[Tensor<B, 1>],
    beta: f64,
    lr: f64,
    blocks: Blocks<'_, B, T>,
    what: impl FnOnce() -> String,
    step: usize,
) -> Result<f64, TrainError> {
    let Blocks { contexts: (contexts, opt_ctx), theta: (theta, opt_theta) } = blocks;
    let loss = match block {
        Block::Context => loss + proximal_term(&*contexts, snapshot, beta),
        Block::Model => loss + proximal_term(&*theta, snapshot, beta),
    };
    let value: f64 = loss.clone().into_scalar().elem();
    if !value.is_finite() {
        return Err(Error::NonFiniteData { what: what(), index: step }.into());
    }
    let grads = loss.backward();
    match block {
        Block::Context => {
            let g = GradientsParams::from_grads(grads, &*contexts);
            *contexts = opt_ctx.step(lr, contexts.clone(), g);
        }
        Block::Model => {
            let g = GradientsParams::from_grads(grads, &*theta);
            *theta = opt_theta.step(lr, theta.clone(), g);
        }
    }
    Ok(value)
}
