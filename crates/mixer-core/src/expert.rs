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

    /// `dx/dt` for the contexts `ctx: [N, c]` of a field expanded about the contexts
    /// `anchor: [N, c]` of other environments (contextual self-modulation of Neural Context
    /// Flows, Nzoyem et al. 2024); returns `[N, d]`. Experts without an expansion ignore `anchor`.
    fn forward_about(&self, x: Tensor<B, 2>, ctx: Tensor<B, 2>, anchor: Tensor<B, 2>) -> Tensor<B, 2> {
        let _ = anchor;
        self.forward(x, ctx)
    }
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
