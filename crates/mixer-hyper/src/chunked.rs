//! HyperCRL-style chunked hypernetwork: a task embedding and a learned embedding per chunk go
//! through one small MLP that outputs one chunk of the target parameter vector; the chunks are
//! concatenated (and optionally added to a root, MIP's residual form).

use burn::module::{Initializer, Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Distribution, Tensor, activation::relu, backend::Backend};
use serde::{Deserialize, Serialize};

use mixer_core::Error;

use crate::{HyperError, MlpLayout, encode_context, encoded_width};

/// Sizes and options of a [`ChunkedHypernet`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkedHypernetConfig {
    /// Task (environment) embedding size.
    pub embedding: usize,
    /// Chunk embedding size (20–40 in HyperCRL).
    pub chunk_embedding: usize,
    /// Hidden widths of the generator MLP (ReLU between), may be empty.
    pub hidden: Vec<usize>,
    /// Parameters produced per chunk.
    pub chunk_size: usize,
    /// The target network whose parameters are generated.
    pub target: MlpLayout,
    /// Add the generated vector to a learned root `theta0` (MIP's additive residual output).
    pub residual: bool,
    /// MIP encoding of the task embedding before the generator.
    pub mip: bool,
}

impl ChunkedHypernetConfig {
    /// Checks every size and the target layout.
    pub fn validate(&self) -> Result<(), HyperError> {
        for (field, v) in
            [("embedding", self.embedding), ("chunk_embedding", self.chunk_embedding), ("chunk_size", self.chunk_size)]
        {
            if v == 0 {
                return Err(Error::config(field, "must be at least 1").into());
            }
        }
        if let Some(i) = self.hidden.iter().position(|&h| h == 0) {
            return Err(Error::config("hidden", format!("entry {i} is 0; every width must be at least 1")).into());
        }
        self.target.validate()
    }

    /// Number of chunks `ceil(P / chunk_size)`.
    pub fn num_chunks(&self) -> usize {
        self.target.num_params().div_ceil(self.chunk_size)
    }

    /// Builds the generator: Xavier-uniform linear layers, chunk embeddings N(0, 1), root (if
    /// residual) Uniform(±1/sqrt(fan_in)) per target layer.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<ChunkedHypernet<B>, HyperError> {
        self.validate()?;
        let mut widths = vec![encoded_width(self.embedding, self.mip) + self.chunk_embedding];
        widths.extend(&self.hidden);
        widths.push(self.chunk_size);
        let layers = widths
            .windows(2)
            .map(|w| {
                LinearConfig::new(w[0], w[1]).with_initializer(Initializer::XavierUniform { gain: 1.0 }).init(device)
            })
            .collect();
        Ok(ChunkedHypernet {
            chunks: Param::from_tensor(Tensor::random(
                [self.num_chunks(), self.chunk_embedding],
                Distribution::Normal(0.0, 1.0),
                device,
            )),
            layers,
            root: self.residual.then(|| Param::from_tensor(self.target.init_params(device))),
            target: self.target.clone(),
            embedding: self.embedding,
            mip: self.mip,
        })
    }
}

/// Generates a target network's parameters chunk by chunk from an environment embedding.
#[derive(Module, Debug)]
pub struct ChunkedHypernet<B: Backend> {
    /// Chunk embeddings `[chunks, chunk_embedding]`.
    pub chunks: Param<Tensor<B, 2>>,
    /// Generator MLP, ReLU between layers, last layer outputs `chunk_size`.
    pub layers: Vec<Linear<B>>,
    /// Root `theta0: [P]` when residual.
    pub root: Option<Param<Tensor<B, 1>>>,
    /// Target layout.
    #[module(skip)]
    pub target: MlpLayout,
    /// Task embedding size.
    pub embedding: usize,
    /// Whether the task embedding is MIP-encoded.
    pub mip: bool,
}

impl<B: Backend> ChunkedHypernet<B> {
    /// The generator MLP on `[rows, in]` inputs.
    fn generator(&self, mut h: Tensor<B, 2>) -> Tensor<B, 2> {
        let last = self.layers.len() - 1;
        for (l, layer) in self.layers.iter().enumerate() {
            h = layer.forward(h);
            if l < last {
                h = relu(h);
            }
        }
        h
    }

    /// Target parameters for each embedding: `emb: [E, embedding]` → `[E, P]`.
    pub fn generate(&self, emb: Tensor<B, 2>) -> Result<Tensor<B, 2>, HyperError> {
        let [envs, width] = emb.dims();
        if width != self.embedding {
            return Err(Error::shape("task embeddings", [envs, self.embedding], [envs, width]).into());
        }
        let [n, ce] = self.chunks.dims();
        let enc = encode_context(emb, self.mip);
        let e = enc.dims()[1];
        let task: Tensor<B, 3> = enc.unsqueeze_dim::<3>(1).repeat_dim(1, n);
        let chunk: Tensor<B, 3> = self.chunks.val().unsqueeze_dim::<3>(0).repeat_dim(0, envs);
        let input: Tensor<B, 2> = Tensor::cat(vec![task, chunk], 2).reshape([envs * n, e + ce]);
        let out = self.generator(input);
        let size = out.dims()[1];
        let p = self.target.num_params();
        let flat: Tensor<B, 2> = out.reshape([envs, n * size]).slice([0..envs, 0..p]);
        Ok(match &self.root {
            Some(root) => flat + root.val().unsqueeze_dim(0),
            None => flat,
        })
    }

    /// The generated network on `x: [N, in]`, row `r` using embedding `emb[r]` (`[N, embedding]`).
    pub fn forward(&self, x: Tensor<B, 2>, emb: Tensor<B, 2>) -> Result<Tensor<B, 2>, HyperError> {
        let [n, i] = x.dims();
        if i != self.target.input() || emb.dims()[0] != n {
            return Err(Error::shape("inputs and embeddings", [n, self.target.input()], [emb.dims()[0], i]).into());
        }
        Ok(self.target.forward(self.generate(emb)?, x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Activation;
    use crate::tests::{TestAutodiffBackend, TestBackend};
    use burn::module::AutodiffModule;
    use mixer_core::host::{tensor2, to_vec};

    fn config(residual: bool) -> ChunkedHypernetConfig {
        ChunkedHypernetConfig {
            embedding: 3,
            chunk_embedding: 4,
            hidden: vec![8],
            chunk_size: 5,
            target: MlpLayout { sizes: vec![2, 4, 2], activation: Activation::Tanh },
            residual,
            mip: false,
        }
    }

    #[test]
    fn chunks_are_generated_independently_and_concatenated() {
        let device = Default::default();
        let cfg = config(false);
        let p = cfg.target.num_params();
        assert_eq!((p, cfg.num_chunks()), (22, 5));
        let h = cfg.init::<TestBackend>(&device).unwrap();
        let emb = tensor2::<TestBackend>(&[0.1, -0.4, 0.9, 1.0, 0.0, -2.0], [2, 3], &device);
        let got = to_vec(h.generate(emb.clone()).unwrap());
        assert_eq!(got.len(), 2 * p);
        for env in 0..2 {
            for c in 0..5 {
                let row = emb.clone().slice([env..env + 1, 0..3]);
                let chunk = h.chunks.val().slice([c..c + 1, 0..4]);
                let one = to_vec(h.generator(Tensor::cat(vec![row, chunk], 1)));
                for (j, v) in one.iter().enumerate() {
                    let k = c * 5 + j;
                    if k < p {
                        assert!((got[env * p + k] - v).abs() < 1e-12);
                    }
                }
            }
        }
        let y = h.forward(tensor2(&[0.5, 0.5, -1.0, 2.0], [2, 2], &device), emb).unwrap();
        assert_eq!(y.dims(), [2, 2]);
    }

    #[test]
    fn residual_adds_the_root_and_gradients_reach_embeddings() {
        let device = Default::default();
        let h = config(true).init::<TestAutodiffBackend>(&device).unwrap();
        let emb = Tensor::<TestAutodiffBackend, 2>::from_data(
            burn::tensor::TensorData::new(vec![0.3, 0.2, -0.1], [1, 3]),
            &device,
        )
        .require_grad();
        let x = Tensor::<TestAutodiffBackend, 2>::ones([1, 2], &device);
        let loss = h.forward(x, emb.clone()).unwrap().square().sum();
        let grads = loss.backward();
        let g_emb = to_vec(emb.grad(&grads).unwrap());
        let g_chunks = to_vec(h.chunks.grad(&grads).unwrap());
        assert!(g_emb.iter().any(|v| v.abs() > 1e-8));
        assert!(g_chunks.iter().any(|v| v.abs() > 1e-8));
        let root = h.root.as_ref().unwrap();
        assert!(to_vec(root.grad(&grads).unwrap()).iter().any(|v| v.abs() > 1e-8));
        let plain = ChunkedHypernet::<TestBackend> { root: None, ..h.valid() };
        let e = tensor2::<TestBackend>(&[0.3, 0.2, -0.1], [1, 3], &device);
        let with = to_vec(h.valid().generate(e.clone()).unwrap());
        let without = to_vec(plain.generate(e).unwrap());
        let r = to_vec(root.val().inner());
        for k in 0..r.len() {
            assert!((with[k] - without[k] - r[k]).abs() < 1e-12);
        }
    }

    #[test]
    fn each_invalid_field_is_rejected() {
        let ok = config(false);
        assert!(ok.validate().is_ok());
        assert!(ChunkedHypernetConfig { embedding: 0, ..ok.clone() }.validate().is_err());
        assert!(ChunkedHypernetConfig { chunk_embedding: 0, ..ok.clone() }.validate().is_err());
        assert!(ChunkedHypernetConfig { chunk_size: 0, ..ok.clone() }.validate().is_err());
        assert!(ChunkedHypernetConfig { hidden: vec![4, 0], ..ok.clone() }.validate().is_err());
        let target = MlpLayout { sizes: vec![2], activation: Activation::Tanh };
        assert!(ChunkedHypernetConfig { target, ..ok }.validate().is_err());
    }
}
