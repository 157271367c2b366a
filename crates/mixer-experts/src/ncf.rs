//! The NCF expert (order-0 Neural Context Flow): context and state branches to an intermediate
//! size, concatenated, then a main MLP to the state derivative.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Tensor, backend::Backend};
use serde::{Deserialize, Serialize};

use mixer_core::{Error, Expert};

use crate::{ExpertError, LearnableSwish};

/// Sizes of an [`NcfExpert`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NcfConfig {
    /// State dimension `d`.
    pub dim: usize,
    /// Context size `c`.
    pub context: usize,
    /// Width `W` of the main MLP.
    pub width: usize,
    /// Linear layers `Dm` of the main MLP (at least 1).
    pub depth: usize,
    /// Intermediate size `I` each branch ends at.
    pub intermediate: usize,
    /// Linear layers per branch (at least 1).
    pub branch_depth: usize,
}

/// Widths `input = w_0, ..., w_n = target` growing (or shrinking) geometrically, all at least 1.
pub fn geometric_widths(input: usize, target: usize, layers: usize) -> Vec<usize> {
    let ratio = target as f64 / input as f64;
    (0..=layers)
        .map(|i| match i {
            0 => input,
            i if i == layers => target,
            i => ((input as f64) * ratio.powf(i as f64 / layers as f64)).round().max(1.0) as usize,
        })
        .collect()
}

impl NcfConfig {
    /// Checks that every size is positive.
    pub fn validate(&self) -> Result<(), ExpertError> {
        for (field, v) in [
            ("dim", self.dim),
            ("context", self.context),
            ("width", self.width),
            ("depth", self.depth),
            ("intermediate", self.intermediate),
            ("branch_depth", self.branch_depth),
        ] {
            if v == 0 {
                return Err(Error::config(field, "must be at least 1").into());
            }
        }
        Ok(())
    }

    /// Builds the expert; linear layers use burn's default init (Uniform(±1/sqrt(fan_in))),
    /// learnable swish (beta0 Uniform(0.01, 1)) after every branch layer and between main layers.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<NcfExpert<B>, ExpertError> {
        self.validate()?;
        let chain = |sizes: &[usize]| -> Vec<Linear<B>> {
            sizes.windows(2).map(|w| LinearConfig::new(w[0], w[1]).init(device)).collect()
        };
        let swishes = |sizes: &[usize]| -> Vec<LearnableSwish<B>> {
            sizes.iter().map(|&s| LearnableSwish::plain(s, device)).collect()
        };
        let ctx_sizes = geometric_widths(self.context, self.intermediate, self.branch_depth);
        let state_sizes = geometric_widths(self.dim, self.intermediate, self.branch_depth);
        let mut main_sizes = vec![2 * self.intermediate];
        main_sizes.extend(std::iter::repeat_n(self.width, self.depth - 1));
        main_sizes.push(self.dim);
        Ok(NcfExpert {
            context_branch: chain(&ctx_sizes),
            context_acts: swishes(&ctx_sizes[1..]),
            state_branch: chain(&state_sizes),
            state_acts: swishes(&state_sizes[1..]),
            main: chain(&main_sizes),
            main_acts: swishes(&main_sizes[1..main_sizes.len() - 1]),
            context: self.context,
        })
    }
}

/// NCF expert (Kassaï Koupaï et al. 2024, order 0):
/// `f(x, ctx) = main([state_branch(x), context_branch(ctx)])`.
#[derive(Module, Debug)]
pub struct NcfExpert<B: Backend> {
    /// Context branch `c -> ... -> I`.
    pub context_branch: Vec<Linear<B>>,
    /// Activations after each context-branch layer.
    pub context_acts: Vec<LearnableSwish<B>>,
    /// State branch `d -> ... -> I`.
    pub state_branch: Vec<Linear<B>>,
    /// Activations after each state-branch layer.
    pub state_acts: Vec<LearnableSwish<B>>,
    /// Main MLP `2I -> W -> ... -> d`.
    pub main: Vec<Linear<B>>,
    /// Activations between main layers.
    pub main_acts: Vec<LearnableSwish<B>>,
    /// Context size `c`.
    pub context: usize,
}

fn run<B: Backend>(layers: &[Linear<B>], acts: &[LearnableSwish<B>], mut h: Tensor<B, 2>) -> Tensor<B, 2> {
    for (i, layer) in layers.iter().enumerate() {
        h = layer.forward(h);
        if let Some(act) = acts.get(i) {
            h = act.forward(h, None);
        }
    }
    h
}

impl<B: Backend> Expert<B> for NcfExpert<B> {
    fn state_dim(&self) -> usize {
        self.state_branch[0].weight.dims()[0]
    }

    fn context_dim(&self) -> usize {
        self.context
    }

    fn forward(&self, x: Tensor<B, 2>, ctx: Tensor<B, 2>) -> Tensor<B, 2> {
        let s = run(&self.state_branch, &self.state_acts, x);
        let c = run(&self.context_branch, &self.context_acts, ctx);
        run(&self.main, &self.main_acts, Tensor::cat(vec![s, c], 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::TestBackend;

    #[test]
    fn branches_grow_geometrically_and_shapes_hold() {
        assert_eq!(geometric_widths(2, 32, 4), vec![2, 4, 8, 16, 32]);
        assert_eq!(geometric_widths(256, 64, 2), vec![256, 128, 64]);
        assert_eq!(geometric_widths(3, 3, 1), vec![3, 3]);
        let device = Default::default();
        let cfg = NcfConfig { dim: 2, context: 4, width: 16, depth: 3, intermediate: 16, branch_depth: 2 };
        let _rng = crate::tests::rng_lock();
        let e = cfg.init::<TestBackend>(&device).unwrap();
        assert_eq!(e.context_branch.iter().map(|l| l.weight.dims()).collect::<Vec<_>>(), vec![[4, 8], [8, 16]]);
        assert_eq!(e.state_branch.iter().map(|l| l.weight.dims()).collect::<Vec<_>>(), vec![[2, 6], [6, 16]]);
        assert_eq!(e.main.iter().map(|l| l.weight.dims()).collect::<Vec<_>>(), vec![[32, 16], [16, 16], [16, 2]]);
        assert_eq!((e.state_dim(), e.context_dim()), (2, 4));
        let y = e.forward(Tensor::ones([5, 2], &device), Tensor::zeros([5, 4], &device));
        assert_eq!(y.dims(), [5, 2]);
        // the context changes the output
        let y2 = e.forward(Tensor::ones([5, 2], &device), Tensor::ones([5, 4], &device));
        assert!((y - y2).abs().sum().into_scalar() > 1e-6);
    }

    #[test]
    fn each_invalid_field_is_rejected() {
        let ok = NcfConfig { dim: 2, context: 2, width: 8, depth: 2, intermediate: 4, branch_depth: 1 };
        assert!(ok.validate().is_ok());
        assert!(NcfConfig { dim: 0, ..ok.clone() }.validate().is_err());
        assert!(NcfConfig { context: 0, ..ok.clone() }.validate().is_err());
        assert!(NcfConfig { width: 0, ..ok.clone() }.validate().is_err());
        assert!(NcfConfig { depth: 0, ..ok.clone() }.validate().is_err());
        assert!(NcfConfig { intermediate: 0, ..ok.clone() }.validate().is_err());
        assert!(NcfConfig { branch_depth: 0, ..ok }.validate().is_err());
    }
}
