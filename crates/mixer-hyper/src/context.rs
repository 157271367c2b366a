//! The learned context table: one vector per environment.

use burn::module::{Module, Param};
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};

use mixer_core::ContextModel;

/// Per-environment contexts `[envs, d_xi]`, a trainable parameter.
#[derive(Module, Debug)]
pub struct ContextTable<B: Backend> {
    /// The contexts, `[envs, d_xi]`.
    pub table: Param<Tensor<B, 2>>,
}

impl<B: Backend> ContextTable<B> {
    /// `envs` contexts of size `dim`, all zero (MIXER.md §1).
    pub fn zeros(envs: usize, dim: usize, device: &B::Device) -> Self {
        Self::from_tensor(Tensor::zeros([envs, dim], device))
    }

    /// A table holding the given values `[envs, d_xi]`.
    pub fn from_tensor(values: Tensor<B, 2>) -> Self {
        Self { table: Param::from_tensor(values) }
    }

    /// Contexts of the listed environments, `[ids.len(), d_xi]`.
    pub fn rows(&self, ids: &[usize]) -> Tensor<B, 2> {
        let device = self.table.device();
        let idx = Tensor::<B, 1, Int>::from_data(
            TensorData::new(ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), [ids.len()]),
            &device,
        );
        self.table.val().select(0, idx)
    }
}

impl<B: Backend> ContextModel<B> for ContextTable<B> {
    fn num_envs(&self) -> usize {
        self.table.dims()[0]
    }

    fn context_dim(&self) -> usize {
        self.table.dims()[1]
    }

    fn contexts(&self) -> Tensor<B, 2> {
        self.table.val()
    }
}
