//! Task-conditioned dynamics models for continual model-based control: an MLP that predicts the
//! normalised state change `x_{t+1} - x_t` from the normalised `(state, action)`, whose weights
//! are generated per task by a hypernetwork from a learned task embedding (HyperCRL, Huang, Xie,
//! Gilitschenski, Shkurti et al., "Continual Model-Based Reinforcement Learning with
//! Hypernetworks", ICRA 2021; hypernetworks for continual learning after von Oswald, Henning,
//! Sacramento & Grewe, "Continual learning with hypernetworks", ICLR 2020), or shared by all
//! tasks (the fine-tuning, coreset and EWC baselines), or shared with the task embedding as an
//! extra input (the multi-task baseline).
//!
//! The hypernetwork is [`ChunkedHypernet`]; the full hypernetwork of HyperCRL (one MLP from the
//! embedding to all weights) is its one-chunk case. Weights are generated once per task and then
//! applied to every row of a batch with one matmul per layer ([`MlpLayout::unpack`]).

use burn::module::{Module, Param};
use burn::tensor::{Tensor, TensorData, backend::Backend};
use serde::{Deserialize, Serialize};

use mixer_core::Error;
use mixer_core::host::tensor2;

use crate::{Activation, ChunkedHypernet, ChunkedHypernetConfig, HyperError, MlpLayout};

/// How a task selects the dynamics network's weights.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Conditioning {
    /// Weights generated from the task embedding by a hypernetwork (HyperCRL).
    Hypernet {
        /// Hidden widths of the generator MLP (HyperCRL: `[50, 50]`).
        hidden: Vec<usize>,
        /// Parameters per generated chunk; absent: one chunk holding every weight (the full
        /// hypernetwork).
        #[serde(default)]
        chunk_size: Option<usize>,
        /// Chunk embedding size (HyperCRL: 20 to 40; a single learned input for the full one).
        chunk_embedding: usize,
    },
    /// One weight vector for every task, no task input.
    Shared,
    /// One weight vector for every task, the task embedding appended to each input row.
    EmbeddingInput,
}

/// Sizes of a [`TaskDynamics`] model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskDynamicsConfig {
    /// State dimension `d`.
    pub state: usize,
    /// Action dimension `m`.
    pub action: usize,
    /// Hidden widths of the dynamics MLP (HyperCRL: `[200, 200]`).
    pub hidden: Vec<usize>,
    /// Nonlinearity of the dynamics MLP.
    pub activation: Activation,
    /// Task embedding size (HyperCRL: 10).
    pub embedding: usize,
    /// Where the weights come from.
    pub conditioning: Conditioning,
}

impl TaskDynamicsConfig {
    /// Checks every size (the hypernetwork's through [`ChunkedHypernetConfig::validate`]).
    pub fn validate(&self) -> Result<(), HyperError> {
        for (field, v) in [("state", self.state), ("action", self.action), ("embedding", self.embedding)] {
            if v == 0 {
                return Err(Error::config(field, "must be at least 1").into());
            }
        }
        self.layout().validate()?;
        match self.hypernet() {
            Some(h) => h.validate(),
            None => Ok(()),
        }
    }

    /// The dynamics MLP: `[d + m (+ embedding)] -> hidden.. -> [d]`.
    pub fn layout(&self) -> MlpLayout {
        let extra = if self.conditioning == Conditioning::EmbeddingInput { self.embedding } else { 0 };
        let mut sizes = vec![self.state + self.action + extra];
        sizes.extend(&self.hidden);
        sizes.push(self.state);
        MlpLayout { sizes, activation: self.activation }
    }

    /// The hypernetwork's config when the weights are generated.
    pub fn hypernet(&self) -> Option<ChunkedHypernetConfig> {
        let Conditioning::Hypernet { hidden, chunk_size, chunk_embedding } = &self.conditioning else {
            return None;
        };
        let target = self.layout();
        Some(ChunkedHypernetConfig {
            embedding: self.embedding,
            chunk_embedding: *chunk_embedding,
            hidden: hidden.clone(),
            chunk_size: chunk_size.unwrap_or_else(|| target.num_params()),
            target,
            residual: false,
            mip: false,
        })
    }

    /// Builds the model with no task yet (hypernetwork Xavier-uniform, chunk embeddings N(0, 1);
    /// shared weights Uniform(±1/sqrt(fan_in)) per layer); tasks come with [`TaskDynamics::with_task`].
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<TaskDynamics<B>, HyperError> {
        self.validate()?;
        let layout = self.layout();
        let hypernet = self.hypernet().map(|h| h.init(device)).transpose()?;
        let shared = hypernet.is_none().then(|| Param::from_tensor(layout.init_params(device)));
        let embedding_input = self.conditioning == Conditioning::EmbeddingInput;
        Ok(TaskDynamics {
            hypernet,
            shared,
            embeddings: Vec::new(),
            layout,
            embedding: self.embedding,
            embedding_input,
        })
    }
}

/// A dynamics model of normalised state changes, conditioned on the task.
#[derive(Module, Debug)]
pub struct TaskDynamics<B: Backend> {
    /// The generator of per-task weights (HyperCRL).
    pub hypernet: Option<ChunkedHypernet<B>>,
    /// Weights shared by every task `[P]` (the baselines).
    pub shared: Option<Param<Tensor<B, 1>>>,
    /// One embedding `[embedding]` per task seen, in order.
    pub embeddings: Vec<Param<Tensor<B, 1>>>,
    /// The dynamics MLP.
    #[module(skip)]
    pub layout: MlpLayout,
    /// Task embedding size.
    pub embedding: usize,
    /// Whether the embedding is appended to the inputs (multi-task model).
    pub embedding_input: bool,
}

/// A task's dynamics network with its weights generated and sliced once, for many batches.
#[derive(Clone, Debug)]
pub struct TaskNetwork<B: Backend> {
    layout: MlpLayout,
    layers: Vec<(Tensor<B, 2>, Tensor<B, 2>)>,
    /// The task embedding `[1, embedding]` appended to inputs (multi-task model only).
    input_embedding: Option<Tensor<B, 2>>,
}

impl<B: Backend> TaskNetwork<B> {
    /// Normalised state changes `[N, d]` of normalised inputs `x: [N, d + m]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let x = match &self.input_embedding {
            Some(e) => Tensor::cat(vec![x.clone(), e.clone().repeat_dim(0, x.dims()[0])], 1),
            None => x,
        };
        self.layout.forward_unpacked(&self.layers, x)
    }
}

impl<B: Backend> TaskDynamics<B> {
    /// Number of tasks with an embedding.
    pub fn tasks(&self) -> usize {
        self.embeddings.len()
    }

    /// Whether the weights come from the hypernetwork.
    pub fn is_hypernet(&self) -> bool {
        self.hypernet.is_some()
    }

    /// This model with one more task, whose embedding is `init: [embedding]` (HyperCRL draws it
    /// from N(0, 1)).
    pub fn with_task(mut self, init: &[f64], device: &B::Device) -> Result<Self, HyperError> {
        if init.len() != self.embedding {
            return Err(Error::shape("new task embedding", [self.embedding], [init.len()]).into());
        }
        mixer_core::ensure_finite("task embedding", init)?;
        self.embeddings
            .push(Param::from_tensor(Tensor::from_data(TensorData::new(init.to_vec(), [init.len()]), device)));
        Ok(self)
    }

    /// The embeddings of `tasks` as rows `[k, embedding]`, cut from the graph when `detach`.
    pub fn embedding_rows(&self, tasks: &[usize], detach: bool) -> Result<Tensor<B, 2>, HyperError> {
        let rows = tasks
            .iter()
            .map(|&t| {
                let e = self.embeddings.get(t).ok_or(HyperError::UnknownEnvironment { env: t, envs: self.tasks() })?;
                let v = e.val().unsqueeze_dim::<2>(0);
                Ok(if detach { v.detach() } else { v })
            })
            .collect::<Result<Vec<_>, HyperError>>()?;
        if rows.is_empty() {
            return Err(Error::config("tasks", "need at least one task").into());
        }
        Ok(Tensor::cat(rows, 0))
    }

    /// Generated weights `[k, P]` of embedding rows `emb: [k, embedding]` (hypernetwork only).
    pub fn generate(&self, emb: Tensor<B, 2>) -> Result<Tensor<B, 2>, HyperError> {
        match &self.hypernet {
            Some(h) => h.generate(emb),
            None => Err(Error::config("conditioning", "only a hypernetwork generates weights").into()),
        }
    }

    /// The network of task `task`: its weights generated (or the shared ones) and sliced once.
    pub fn network(&self, task: usize) -> Result<TaskNetwork<B>, HyperError> {
        let emb = self.embedding_rows(&[task], false)?;
        let (params, input_embedding) = match (&self.hypernet, &self.shared) {
            (Some(h), _) => (h.generate(emb)?.reshape([-1]), None),
            (None, Some(shared)) => (shared.val(), self.embedding_input.then_some(emb)),
            (None, None) => return Err(Error::config("conditioning", "model has no weights").into()),
        };
        Ok(self.network_from(params, input_embedding))
    }

    /// A network with the given weights `params: [P]` (and an appended embedding row).
    pub fn network_from(&self, params: Tensor<B, 1>, input_embedding: Option<Tensor<B, 2>>) -> TaskNetwork<B> {
        TaskNetwork { layout: self.layout.clone(), layers: self.layout.unpack(params), input_embedding }
    }

    /// Trainable parameters: the hypernetwork (or shared weights) plus the embeddings it uses.
    pub fn parameters(&self) -> usize {
        let used = if self.is_hypernet() || self.embedding_input { self.tasks() * self.embedding } else { 0 };
        let weights = match (&self.hypernet, &self.shared) {
            (Some(h), _) => h.num_params(),
            (None, Some(s)) => s.num_params(),
            (None, None) => 0,
        };
        weights + used
    }

    /// HyperCRL's output regulariser `beta / k * sum_j || h(e_{past_j}) - snapshot_j ||^2` over the
    /// `k` past tasks `past` with the frozen snapshot's outputs `snapshot: [k, P]`; the past
    /// embeddings are cut from the graph unless `plastic`. A scalar `[1]`; zero without past tasks.
    pub fn output_regulariser(
        &self,
        past: &[usize],
        snapshot: Tensor<B, 2>,
        beta: f64,
        plastic: bool,
    ) -> Result<Tensor<B, 1>, HyperError> {
        let device = snapshot.device();
        if past.is_empty() {
            return Ok(Tensor::zeros([1], &device));
        }
        let [k, p] = snapshot.dims();
        if k != past.len() || p != self.layout.num_params() {
            return Err(Error::shape("snapshot outputs", [past.len(), self.layout.num_params()], [k, p]).into());
        }
        let now = self.generate(self.embedding_rows(past, !plastic)?)?;
        Ok((now - snapshot).square().sum() * (beta / k as f64))
    }
}

/// Per-column mean and standard deviation of a model's inputs `(state, action)` and targets
/// (state changes), taken from data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeltaNormaliser {
    /// Mean of each input column, `[d + m]`.
    pub input_mean: Vec<f64>,
    /// Standard deviation of each input column, `[d + m]` (1 where a column is constant).
    pub input_std: Vec<f64>,
    /// Mean of each state change, `[d]`.
    pub output_mean: Vec<f64>,
    /// Standard deviation of each state change, `[d]` (1 where constant).
    pub output_std: Vec<f64>,
}

/// Mean and standard deviation of each column of `rows: [n, width]` (row-major); a standard
/// deviation below `1e-8` becomes 1.
fn column_stats(rows: &[f64], width: usize) -> (Vec<f64>, Vec<f64>) {
    let n = (rows.len() / width).max(1) as f64;
    let mut mean = vec![0.0; width];
    rows.chunks_exact(width).for_each(|r| mean.iter_mut().zip(r).for_each(|(m, v)| *m += v / n));
    let mut var = vec![0.0; width];
    rows.chunks_exact(width)
        .for_each(|r| var.iter_mut().zip(r.iter().zip(&mean)).for_each(|(s, (v, m))| *s += (v - m) * (v - m) / n));
    let std = var.into_iter().map(|v| if v.sqrt() > 1e-8 { v.sqrt() } else { 1.0 }).collect();
    (mean, std)
}

impl DeltaNormaliser {
    /// Statistics of `inputs: [n, input_width]` and `deltas: [n, d]` (row-major, `n >= 1`).
    pub fn fit(inputs: &[f64], input_width: usize, deltas: &[f64], d: usize) -> Result<Self, HyperError> {
        let n = inputs.len().checked_div(input_width).unwrap_or(0);
        if n == 0 || inputs.len() != n * input_width || deltas.len() != n * d || d == 0 {
            return Err(Error::shape(
                "normaliser data (inputs, deltas)",
                [n * input_width, n * d],
                [inputs.len(), deltas.len()],
            )
            .into());
        }
        mixer_core::ensure_finite("normaliser inputs", inputs)?;
        mixer_core::ensure_finite("normaliser deltas", deltas)?;
        let (input_mean, input_std) = column_stats(inputs, input_width);
        let (output_mean, output_std) = column_stats(deltas, d);
        Ok(Self { input_mean, input_std, output_mean, output_std })
    }

    /// The statistics as `[1, width]` tensors on `device`.
    pub fn on<B: Backend>(&self, device: &B::Device) -> NormaliserTensors<B> {
        let row = |v: &[f64]| tensor2::<B>(v, [1, v.len()], device);
        NormaliserTensors {
            input_mean: row(&self.input_mean),
            input_std: row(&self.input_std),
            output_mean: row(&self.output_mean),
            output_std: row(&self.output_std),
        }
    }
}

/// A [`DeltaNormaliser`] on a device.
#[derive(Clone, Debug)]
pub struct NormaliserTensors<B: Backend> {
    input_mean: Tensor<B, 2>,
    input_std: Tensor<B, 2>,
    output_mean: Tensor<B, 2>,
    output_std: Tensor<B, 2>,
}

impl<B: Backend> NormaliserTensors<B> {
    /// Normalised inputs of `x: [N, d + m]`.
    pub fn inputs(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        (x - self.input_mean.clone()) / self.input_std.clone()
    }

    /// Normalised targets of state changes `delta: [N, d]`.
    pub fn targets(&self, delta: Tensor<B, 2>) -> Tensor<B, 2> {
        (delta - self.output_mean.clone()) / self.output_std.clone()
    }

    /// State changes `[N, d]` of normalised model outputs `out: [N, d]`.
    pub fn deltas(&self, out: Tensor<B, 2>) -> Tensor<B, 2> {
        out * self.output_std.clone() + self.output_mean.clone()
    }
}

#[cfg(test)]
mod tests;
