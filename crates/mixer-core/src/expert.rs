//! Experts and context models: the per-environment pieces a mixture combines.

use burn::tensor::{Tensor, backend::Backend};

/// A context-conditioned vector field `f(x, ctx)` (autonomous: time is ignored).
pub trait Expert<B: Backend> {
    /// State dimension `d`.
    fn state_dim(&self) -> usize;

    /// Context size `c` this expert reads.
    fn context_dim(&self) -> usize;

    /// `dx/dt` for states `x: [N, d]` with one context row per state `ctx: [N, c]`; returns `[N, d]`.
    fn forward(&self, x: Tensor<B, 2>, ctx: Tensor<B, 2>) -> Tensor<B, 2>;
}

/// A source of per-environment contexts (a learned table or a hypernetwork input encoder).
pub trait ContextModel<B: Backend> {
    /// Number of environments `E`.
    fn num_envs(&self) -> usize;

    /// Context size `d_xi`.
    fn context_dim(&self) -> usize;

    /// All contexts, `[E, d_xi]`.
    fn contexts(&self) -> Tensor<B, 2>;
}
