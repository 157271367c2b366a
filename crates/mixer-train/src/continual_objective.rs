//! What each continual method minimises while it learns one task, and how a learned dynamics
//! model is scored: one-step prediction error on held-out transitions and the return of CEM
//! planning through the model.
//!
//! - HyperCRL (Huang, Xie, Gilitschenski, Shkurti et al., ICRA 2021; after von Oswald et al.,
//!   ICLR 2020): the task's MSE plus the hypernetwork's output regulariser towards a snapshot.
//! - Elastic weight consolidation (Kirkpatrick et al., PNAS 2017): the MSE plus
//!   `lambda / 2 * sum_tasks sum_i F_i (theta_i - theta*_i)^2` with the diagonal
//!   Fisher `F` of each finished task.
//! - Coreset replay: the MSE plus the mean MSE on a few stored transitions of each past task.
//! - Multi-task: the mean MSE over every task's whole buffer (the upper bound).

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use mixer_core::Rng;
use mixer_core::host::to_vec;
use mixer_hyper::{NormaliserTensors, TaskDynamics, TaskNetwork};

use crate::continual_data::{ContinualTask, TransitionBuffer, run_episode};
use crate::{CemSettings, ContinualMethod, TrainError};

/// The diagonal Fisher information of the shared weights after one task, and those weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EwcAnchor {
    /// Mean squared per-transition gradient of each weight, `[P]`.
    pub fisher: Vec<f64>,
    /// The weights when the task ended, `[P]`.
    pub weights: Vec<f64>,
}

/// Everything beyond the current task's MSE that a method's loss needs.
pub(crate) struct Objective<B: AutodiffBackend> {
    pub method: ContinualMethod,
    /// HyperCRL: the snapshot's generated weights of every past task, `[t, P]`.
    pub snapshot: Option<Tensor<B, 2>>,
    pub beta: f64,
    pub plastic: bool,
    /// EWC: each past task's Fisher and weights as tensors `[P]`.
    pub anchors: Vec<(Tensor<B, 1>, Tensor<B, 1>)>,
    pub ewc_lambda: f64,
}

/// Mean squared error of `net` on a batch of raw inputs and state changes, in normalised units.
pub(crate) fn batch_mse<B: Backend>(
    net: &TaskNetwork<B>,
    norm: &NormaliserTensors<B>,
    (x, delta): (Tensor<B, 2>, Tensor<B, 2>),
) -> Tensor<B, 1> {
    (net.forward(norm.inputs(x)) - norm.targets(delta)).square().mean()
}

impl<B: AutodiffBackend> Objective<B> {
    /// The loss of one step on task `t` and its task MSE: `current` is the task's buffer,
    /// `kept[j]` what is kept of task `j < t` (whole buffers or coresets), `norms[j]` the
    /// normaliser of task `j <= t`.
    #[allow(clippy::too_many_arguments)]
    pub fn loss(
        &self,
        model: &TaskDynamics<B>,
        t: usize,
        current: &TransitionBuffer,
        kept: &[TransitionBuffer],
        norms: &[NormaliserTensors<B>],
        batch: usize,
        rng: &mut Rng,
        device: &B::Device,
    ) -> Result<(Tensor<B, 1>, f64), TrainError> {
        let mse = batch_mse(&model.network(t)?, &norms[t], current.sample(batch, rng, device));
        let shown = to_vec(mse.clone().inner())[0];
        let past: Vec<usize> = (0..t).collect();
        let loss = match self.method {
            ContinualMethod::Finetune => mse,
            ContinualMethod::Hypercrl => match &self.snapshot {
                Some(s) => mse + model.output_regulariser(&past, s.clone(), self.beta, self.plastic)?,
                None => mse,
            },
            ContinualMethod::Multitask | ContinualMethod::Coreset => {
                let replay = replay_mse(model, &past, kept, norms, batch, rng, device)?;
                match self.method {
                    // every task weighs the same in the multi-task objective
                    ContinualMethod::Multitask => (mse + replay * t as f64) / (t + 1) as f64,
                    _ => mse + replay,
                }
            }
            ContinualMethod::Ewc => mse + self.ewc_penalty(model),
        };
        Ok((loss, shown))
    }

    /// `lambda / 2 * sum_tasks sum_i F_i (theta_i - theta*_i)^2` of the shared weights.
    fn ewc_penalty(&self, model: &TaskDynamics<B>) -> Tensor<B, 1> {
        let theta = model.shared.as_ref().expect("EWC trains shared weights").val();
        let mut total = Tensor::zeros([1], &theta.device());
        for (fisher, anchor) in &self.anchors {
            total = total + ((theta.clone() - anchor.clone()).square() * fisher.clone()).sum();
        }
        total * (0.5 * self.ewc_lambda)
    }
}

/// Mean MSE over the past tasks `past` on a batch from each one's kept transitions (0 without).
fn replay_mse<B: Backend>(
    model: &TaskDynamics<B>,
    past: &[usize],
    kept: &[TransitionBuffer],
    norms: &[NormaliserTensors<B>],
    batch: usize,
    rng: &mut Rng,
    device: &B::Device,
) -> Result<Tensor<B, 1>, TrainError> {
    let mut total = Tensor::zeros([1], device);
    for &j in past {
        total = total + batch_mse(&model.network(j)?, &norms[j], kept[j].sample(batch, rng, device));
    }
    Ok(total / past.len().max(1) as f64)
}

/// The EWC anchor of task `t`: the diagonal Fisher information of the shared weights under a
/// unit-variance Gaussian output, `E_x[sum_k (d f_k(x) / d theta)^2]`, estimated over `samples`
/// transitions of the buffer by the gradient of `z . f(x)` with `z ~ N(0, I)` (a label sampled
/// from the model, so the estimate does not vanish where the model fits its data).
pub(crate) fn ewc_anchor<B: AutodiffBackend>(
    model: &TaskDynamics<B>,
    t: usize,
    buffer: &TransitionBuffer,
    norm: &NormaliserTensors<B>,
    samples: usize,
    rng: &mut Rng,
    device: &B::Device,
) -> Result<EwcAnchor, TrainError> {
    let shared = model.shared.as_ref().expect("EWC trains shared weights");
    let mut fisher = Tensor::<B::InnerBackend, 1>::zeros(shared.dims(), device);
    let net = model.network(t)?;
    for _ in 0..samples {
        let (x, _) = buffer.sample::<B>(1, rng, device);
        let z = Tensor::<B, 2>::from_data(TensorData::new(normal_draws(buffer.dim, rng), [1, buffer.dim]), device);
        let grads = (net.forward(norm.inputs(x)) * z).sum().backward();
        if let Some(g) = shared.grad(&grads) {
            fisher = fisher + g.square();
        }
    }
    Ok(EwcAnchor { fisher: to_vec(fisher / samples as f64), weights: to_vec(shared.val().inner()) })
}

/// The anchors as tensors on the training backend.
pub(crate) fn anchor_tensors<B: AutodiffBackend>(
    anchors: &[EwcAnchor],
    device: &B::Device,
) -> Vec<(Tensor<B, 1>, Tensor<B, 1>)> {
    let vector = |v: &[f64]| Tensor::<B, 1>::from_data(TensorData::new(v.to_vec(), [v.len()]), device);
    anchors.iter().map(|a| (vector(&a.fisher), vector(&a.weights))).collect()
}

/// One-step prediction MSE of task `t`'s network on `heldout`, in the state's own units.
pub fn heldout_mse<B: Backend>(
    model: &TaskDynamics<B>,
    t: usize,
    norm: &NormaliserTensors<B>,
    heldout: &TransitionBuffer,
    device: &B::Device,
) -> Result<f64, TrainError> {
    let rows: Vec<usize> = (0..heldout.len()).collect();
    let (x, delta) = heldout.tensors::<B>(&rows, device);
    let predicted = norm.deltas(model.network(t)?.forward(norm.inputs(x)));
    Ok(to_vec((predicted - delta).square().mean())[0])
}

/// The learned model as the planner sees it: next states `[P, d]` through the network and the
/// task's true reward `[P]` of each row's state and action.
fn model_step<B: Backend>(
    net: &TaskNetwork<B>,
    norm: &NormaliserTensors<B>,
    task: &ContinualTask,
    x: Tensor<B, 2>,
    u: Tensor<B, 2>,
) -> (Tensor<B, 2>, Tensor<B, 1>) {
    let [p, d] = x.dims();
    let m = u.dims()[1];
    let (xs, us) = (to_vec(x.clone()), to_vec(u.clone()));
    let rewards: Vec<f64> =
        (0..p).map(|r| task.system.reward(&xs[r * d..(r + 1) * d], &us[r * m..(r + 1) * m], &task.params)).collect();
    let device = x.device();
    let next = x.clone() + norm.deltas(net.forward(norm.inputs(Tensor::cat(vec![x, u], 1))));
    (next, Tensor::from_data(TensorData::new(rewards, [p]), &device))
}

/// One episode of `steps` on the true system of `task`, each action planned by CEM through
/// `net`; its transitions go into `buffer`. Returns the episode's summed true reward.
#[allow(clippy::too_many_arguments)]
pub fn planned_episode<B: Backend>(
    net: &TaskNetwork<B>,
    norm: &NormaliserTensors<B>,
    task: &ContinualTask,
    cem: &CemSettings,
    steps: usize,
    rng: &mut Rng,
    buffer: &mut TransitionBuffer,
    device: &B::Device,
) -> Result<f64, TrainError> {
    let mut planner = cem.check()?;
    let bounds = task.system.spec().action_bounds.clone();
    run_episode(task, steps, rng, buffer, |x, rng| {
        planner.plan::<B>(x, |s, a| model_step(net, norm, task, s, a), &bounds, rng, device)
    })
}

/// The snapshot outputs `[t, P]` of tasks `0..t` from the model as it is now (no gradient).
pub(crate) fn snapshot_outputs<B: AutodiffBackend>(
    model: &TaskDynamics<B>,
    t: usize,
) -> Result<Option<Tensor<B, 2>>, TrainError> {
    if t == 0 || !model.is_hypernet() {
        return Ok(None);
    }
    let frozen = model.valid();
    let past: Vec<usize> = (0..t).collect();
    Ok(Some(Tensor::from_inner(frozen.generate(frozen.embedding_rows(&past, true)?)?)))
}

/// Normal draws `[n]` for a new task embedding.
pub(crate) fn normal_draws(n: usize, rng: &mut Rng) -> Vec<f64> {
    use rand::Rng as _;
    (0..n).map(|_| rng.sample::<f64, _>(rand_distr::StandardNormal)).collect()
}
