//! The NCF expert (Neural Context Flow, Nzoyem, Barton, Deakin 2024): context and state branches
//! to an intermediate size, concatenated, then a main MLP to the state derivative; at order 1 or
//! 2 the field of an environment is the Taylor expansion of the network about another
//! environment's context (contextual self-modulation), its directional derivatives propagated
//! exactly through the layers (forward-mode by hand, so the result stays reverse-differentiable).

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
    /// Taylor order of the self-modulation: 0 (the plain field), 1 or 2.
    #[serde(default)]
    pub order: usize,
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
        if self.order > 2 {
            return Err(Error::config("order", format!("Taylor order 0, 1 or 2, got {}", self.order)).into());
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
            order: self.order,
        })
    }
}

/// NCF expert (Nzoyem, Barton, Deakin 2024): `f(x, ctx) = main([state_branch(x),
/// context_branch(ctx)])`; expanded about an anchor context `a` to order `k`,
/// `f(x, a) + J_ctx f(x, a) (ctx - a)` (`k >= 1`) `+ 1/2 (ctx - a)^T H_ctx f(x, a) (ctx - a)` (`k = 2`).
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
    /// Taylor order of [`Expert::forward_about`] (0: the anchor is ignored).
    pub order: usize,
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

/// Activations `h: [N, w]` along the curve `ctx(e) = anchor + e (ctx - anchor)` at `e = 0`, with
/// their first and (at order 2) second derivatives in `e`.
struct Jet<B: Backend> {
    value: Tensor<B, 2>,
    first: Tensor<B, 2>,
    second: Option<Tensor<B, 2>>,
}

/// [`run`] on a jet: a linear layer maps `h -> W h + b`, `t -> W t`, `t2 -> W t2`; an activation
/// `h -> s(z)`, `t -> s'(z) t`, `t2 -> s''(z) t^2 + s'(z) t2` (chain rule along the curve).
/// `second_order` asks for the second derivatives (a missing input one is zero).
fn run_jet<B: Backend>(layers: &[Linear<B>], acts: &[LearnableSwish<B>], jet: Jet<B>, second_order: bool) -> Jet<B> {
    let Jet { mut value, mut first, mut second } = jet;
    for (i, layer) in layers.iter().enumerate() {
        let w = layer.weight.val();
        let z = layer.forward(value);
        let tz = first.matmul(w.clone());
        let sz = second.map(|s| s.matmul(w));
        match acts.get(i) {
            Some(act) => {
                let [v, d1, d2] = act.derivatives(z);
                second = second_order.then(|| {
                    let curve = d2 * tz.clone().square();
                    match sz {
                        Some(sz) => curve + d1.clone() * sz,
                        None => curve,
                    }
                });
                first = d1 * tz;
                value = v;
            }
            None => {
                (value, first, second) = (z, tz, sz);
            }
        }
    }
    Jet { value, first, second }
}

impl<B: Backend> NcfExpert<B> {
    /// The expansion about `anchor: [N, c]` at `ctx: [N, c]` for states `x: [N, d]`: the field at
    /// the anchor, its first and (order 2) second directional derivatives along `ctx - anchor`,
    /// each `[N, d]` (the second is `None` below order 2).
    pub fn taylor_terms(
        &self,
        x: Tensor<B, 2>,
        ctx: Tensor<B, 2>,
        anchor: Tensor<B, 2>,
    ) -> (Tensor<B, 2>, Tensor<B, 2>, Option<Tensor<B, 2>>) {
        let second_order = self.order >= 2;
        let c = run_jet(
            &self.context_branch,
            &self.context_acts,
            Jet { first: ctx - anchor.clone(), value: anchor, second: None },
            second_order,
        );
        let s = run(&self.state_branch, &self.state_acts, x);
        let zeros = s.zeros_like();
        let input = Jet {
            value: Tensor::cat(vec![s, c.value], 1),
            first: Tensor::cat(vec![zeros.clone(), c.first], 1),
            second: c.second.map(|t2| Tensor::cat(vec![zeros, t2], 1)),
        };
        let out = run_jet(&self.main, &self.main_acts, input, second_order);
        (out.value, out.first, out.second)
    }
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

    /// The order-`k` Taylor expansion about `anchor` (order 0: `f(x, ctx)`, the anchor unread).
    fn forward_about(&self, x: Tensor<B, 2>, ctx: Tensor<B, 2>, anchor: Tensor<B, 2>) -> Tensor<B, 2> {
        if self.order == 0 {
            return self.forward(x, ctx);
        }
        let (value, first, second) = self.taylor_terms(x, ctx, anchor);
        match second {
            Some(second) => value + first + second * 0.5,
            None => value + first,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{TestAutodiffBackend, TestBackend, assert_close, central_difference};
    use mixer_core::host::{tensor2, to_vec};

    #[test]
    fn branches_grow_geometrically_and_shapes_hold() {
        assert_eq!(geometric_widths(2, 32, 4), vec![2, 4, 8, 16, 32]);
        assert_eq!(geometric_widths(256, 64, 2), vec![256, 128, 64]);
        assert_eq!(geometric_widths(3, 3, 1), vec![3, 3]);
        let device = Default::default();
        let cfg = NcfConfig { dim: 2, context: 4, width: 16, depth: 3, intermediate: 16, branch_depth: 2, order: 0 };
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
        let ok = NcfConfig { dim: 2, context: 2, width: 8, depth: 2, intermediate: 4, branch_depth: 1, order: 0 };
        assert!(ok.validate().is_ok());
        assert!(NcfConfig { dim: 0, ..ok.clone() }.validate().is_err());
        assert!(NcfConfig { context: 0, ..ok.clone() }.validate().is_err());
        assert!(NcfConfig { width: 0, ..ok.clone() }.validate().is_err());
        assert!(NcfConfig { depth: 0, ..ok.clone() }.validate().is_err());
        assert!(NcfConfig { intermediate: 0, ..ok.clone() }.validate().is_err());
        assert!(NcfConfig { branch_depth: 0, ..ok.clone() }.validate().is_err());
        assert!(NcfConfig { order: 2, ..ok.clone() }.validate().is_ok());
        match (NcfConfig { order: 3, ..ok }).validate() {
            Err(ExpertError::Core(Error::InvalidConfig { field, .. })) => assert_eq!(field, "order"),
            other => panic!("order 3 must be rejected, got {other:?}"),
        }
        // configs written before the Taylor order load as order 0
        let old: NcfConfig =
            toml::from_str("dim = 2\ncontext = 2\nwidth = 8\ndepth = 2\nintermediate = 4\nbranch_depth = 1").unwrap();
        assert_eq!(old.order, 0);
    }

    /// An order-2 expert on 3 rows and copies of it at orders 0 and 1 (same weights).
    fn experts<B: Backend>() -> [NcfExpert<B>; 3] {
        let device = Default::default();
        let cfg = NcfConfig { dim: 2, context: 3, width: 8, depth: 3, intermediate: 5, branch_depth: 2, order: 2 };
        let _rng = crate::tests::rng_lock();
        B::seed(&device, 14);
        let e = cfg.init::<B>(&device).unwrap();
        // parameters are drawn lazily, on first use: draw them here, under the lock, and once
        // for all three copies
        e.forward(Tensor::zeros([1, 2], &device), Tensor::zeros([1, 3], &device));
        [NcfExpert { order: 0, ..e.clone() }, NcfExpert { order: 1, ..e.clone() }, e]
    }

    const X: [f64; 6] = [0.3, -1.2, 0.8, 0.1, -0.5, 1.5];
    const CTX: [f64; 9] = [0.4, -0.3, 0.9, -0.2, 0.5, 0.1, 1.1, -0.7, 0.2];
    const ANCHOR: [f64; 9] = [-0.1, 0.2, 0.5, 0.3, 0.1, -0.4, 0.6, -0.2, 0.8];

    #[test]
    fn taylor_terms_match_central_differences_along_the_context() {
        let device = Default::default();
        let [e0, e1, e2] = experts::<TestBackend>();
        let x = || tensor2::<TestBackend>(&X, [3, 2], &device);
        // g(s) = f(x, anchor + s (ctx - anchor)) on the host
        let g = |s: f64| {
            let c: Vec<f64> = ANCHOR.iter().zip(CTX).map(|(a, c)| a + s * (c - a)).collect();
            to_vec(e0.forward(x(), tensor2(&c, [3, 3], &device)))
        };
        let (ctx, anchor) = (tensor2::<TestBackend>(&CTX, [3, 3], &device), tensor2(&ANCHOR, [3, 3], &device));
        let (value, first, second) = e2.taylor_terms(x(), ctx.clone(), anchor.clone());
        let (value, first, second) = (to_vec(value), to_vec(first), to_vec(second.unwrap()));
        assert_eq!(value, g(0.0));
        let h = 1e-3;
        let (up, mid, down) = (g(h), g(0.0), g(-h));
        for i in 0..6 {
            let fd1 = (up[i] - down[i]) / (2.0 * h);
            let fd2 = (up[i] - 2.0 * mid[i] + down[i]) / (h * h);
            assert!((first[i] - fd1).abs() < 1e-6 * fd1.abs().max(1.0), "JVP [{i}]: {} vs {fd1}", first[i]);
            assert!((second[i] - fd2).abs() < 1e-5 * fd2.abs().max(1.0), "second [{i}]: {} vs {fd2}", second[i]);
        }
        // the expansions add the terms; order 0 reads ctx itself, not the anchor
        let at = |e: &NcfExpert<TestBackend>| to_vec(e.forward_about(x(), ctx.clone(), anchor.clone()));
        assert_eq!(at(&e0), to_vec(e0.forward(x(), ctx.clone())));
        let (o1, o2) = (at(&e1), at(&e2));
        for i in 0..6 {
            assert!((o1[i] - (value[i] + first[i])).abs() < 1e-12);
            assert!((o2[i] - (value[i] + first[i] + 0.5 * second[i])).abs() < 1e-12);
        }
        // expanded about itself, every order is the plain field
        let own = to_vec(e0.forward(x(), ctx.clone()));
        for e in [&e1, &e2] {
            let got = to_vec(e.forward_about(x(), ctx.clone(), ctx.clone()));
            assert!(got.iter().zip(&own).all(|(a, b)| (a - b).abs() < 1e-12));
        }
    }

    #[test]
    fn the_expansion_is_reverse_differentiable() {
        let device = Default::default();
        let [_, _, e2] = experts::<TestAutodiffBackend>();
        let x = tensor2::<TestAutodiffBackend>(&X, [3, 2], &device);
        let anchor = tensor2::<TestAutodiffBackend>(&ANCHOR, [3, 3], &device);
        let loss = |c: &[f64]| {
            let ctx = tensor2::<TestAutodiffBackend>(c, [3, 3], &device);
            e2.forward_about(x.clone(), ctx, anchor.clone()).square().sum()
        };
        let ctx = tensor2::<TestAutodiffBackend>(&CTX, [3, 3], &device).require_grad();
        let grads = e2.forward_about(x.clone(), ctx.clone(), anchor.clone()).square().sum().backward();
        let got = to_vec(ctx.grad(&grads).unwrap());
        let want = central_difference(&CTX, |c| loss(c).into_scalar());
        assert_close(&got, &want, 1e-6, "d loss / d ctx of the order-2 expansion");
    }
}
