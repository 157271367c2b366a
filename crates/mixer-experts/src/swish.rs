//! Learnable swish `x * sigmoid(beta x)` with one beta per unit, optionally shifted by a context.

use burn::module::{Module, Param};
use burn::tensor::{Distribution, Tensor, activation::sigmoid, backend::Backend};

/// Swish with a trainable `beta0: [units]` (Uniform(0.01, 1)) and a context factor
/// `A_beta: [units, c]`: `beta = beta0 + ctx A_beta^T` per row.
#[derive(Module, Debug)]
pub struct LearnableSwish<B: Backend> {
    /// Root slopes, `[units]`.
    pub beta: Param<Tensor<B, 1>>,
    /// Context factor of the slopes, `[units, c]`.
    pub a_beta: Param<Tensor<B, 2>>,
}

impl<B: Backend> LearnableSwish<B> {
    /// A swish over `units` units reading a context of size `context`.
    pub fn new(units: usize, context: usize, device: &B::Device) -> Self {
        let bound = 1.0 / (units as f64).sqrt();
        Self {
            beta: Param::from_tensor(Tensor::random([units], Distribution::Uniform(0.01, 1.0), device)),
            a_beta: Param::from_tensor(Tensor::random([units, context], Distribution::Uniform(-bound, bound), device)),
        }
    }

    /// `x: [N, units]`, `ctx: [N, c]` → `[N, units]`.
    pub fn forward(&self, x: Tensor<B, 2>, ctx: Tensor<B, 2>) -> Tensor<B, 2> {
        let beta = self.beta.val().unsqueeze_dim(0) + ctx.matmul(self.a_beta.val().transpose());
        x.clone() * sigmoid(x * beta)
    }
}
