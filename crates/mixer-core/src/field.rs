//! Vector fields: the right-hand sides that integrators evaluate.

use burn::tensor::{Tensor, backend::Backend};

/// An autonomous or time-dependent vector field evaluated on a batch of states.
pub trait VectorField<B: Backend> {
    /// State dimension `d`.
    fn dim(&self) -> usize;

    /// `dx/dt` at time `t` for states `x: [batch, dim]`; returns `[batch, dim]`.
    fn eval(&self, t: f64, x: Tensor<B, 2>) -> Tensor<B, 2>;
}

/// A vector field given by a closure `(t, x) -> dx/dt` on `[batch, dim]` tensors.
pub struct FnField<F> {
    dim: usize,
    f: F,
}

impl<F> FnField<F> {
    /// Wraps a closure as a vector field of dimension `dim`.
    pub fn new(dim: usize, f: F) -> Self {
        Self { dim, f }
    }
}

impl<B: Backend, F: Fn(f64, Tensor<B, 2>) -> Tensor<B, 2>> VectorField<B> for FnField<F> {
    fn dim(&self) -> usize {
        self.dim
    }

    fn eval(&self, t: f64, x: Tensor<B, 2>) -> Tensor<B, 2> {
        (self.f)(t, x)
    }
}
