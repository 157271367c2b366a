//! Rollout views of parameters: keep burn's autodiff bookkeeping linear in the rollout length.
//!
//! burn-autodiff 0.21 keeps a map from node ids to computation graphs. A tracked leaf (every
//! `Param` of an `Autodiff` module, a context table, a `require_grad` input) starts a graph of
//! its own, and when graphs merge, the merged graph's origin is not re-pointed if the result
//! is merged again later. A parameter read at every right-hand-side evaluation then hits a
//! stale entry on each use, which forces one more merge; half the time the merge moves the
//! whole rollout graph, so a rollout of `n` steps costs `O(n^2)` hash-map work (forward and
//! backward of 100 RK4 steps of a width-64 GEPS expert: 6.8 s instead of 0.57 s; see
//! docs/benchmarks.md).
//!
//! [`anchor_tensor`] and [`anchor_module`] replace each tracked tensor by `(t * 1) * 1`: the
//! same values and the same gradients (multiplying by one is exact), but the tensor the
//! rollout reads is now an ordinary graph node, which merges keep track of. Call them once
//! per rollout, outside the vector field, and let the field read the result. Without
//! autodiff, or for untracked tensors, they return their input unchanged.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Tensor, backend::Backend};

/// `t` as a rollout view: `(t * 1) * 1` when `t` is tracked by autodiff, else `t` itself.
///
/// Two products are needed: a leaf whose graph was freed by an earlier backward pass has no
/// graph entry, so the first product starts a graph of its own; the second is a plain node.
pub fn anchor_tensor<B: Backend, const D: usize>(t: Tensor<B, D>) -> Tensor<B, D> {
    if t.is_require_grad() { t.mul_scalar(1.0).mul_scalar(1.0) } else { t }
}

/// Every float parameter of `module` passed through [`anchor_tensor`]; parameter ids are kept,
/// so gradients still reach the original parameters.
pub fn anchor_module<B: Backend, M: Module<B>>(module: M) -> M {
    module.map(&mut Anchor)
}

struct Anchor;

impl<B: Backend> ModuleMapper<B> for Anchor {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        param.map(anchor_tensor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::module::AutodiffModule;
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::TensorData;

    type AB = Autodiff<NdArray<f64>>;

    #[test]
    fn values_and_gradients_are_unchanged() {
        let device = Default::default();
        <AB as Backend>::seed(&device, 1);
        let lin: Linear<AB> = LinearConfig::new(3, 2).init(&device);
        let x = Tensor::<AB, 2>::from_data(TensorData::new(vec![0.5, -1.0, 2.0, 1.5, 0.0, -0.3], [2, 3]), &device);
        // value and weight gradient of `sum((x W^T + b)^2)`, the second time after a backward
        // pass has freed the leaves (the case the anchor is for)
        let run = |m: &Linear<AB>| -> (f64, Vec<f64>) {
            let loss = m.forward(x.clone()).square().sum();
            let value = loss.clone().into_scalar();
            let grads = loss.backward();
            (value, lin.weight.grad(&grads).unwrap().into_data().to_vec().unwrap())
        };
        let plain = run(&lin);
        for _ in 0..2 {
            assert_eq!(run(&anchor_module(lin.clone())), plain);
        }
        // an inference module and an untracked tensor pass through untouched
        let inner = lin.valid();
        let same = anchor_module(inner.clone());
        assert_eq!(
            inner.weight.val().into_data().to_vec::<f64>().unwrap(),
            same.weight.val().into_data().to_vec::<f64>().unwrap()
        );
        assert!(!anchor_tensor(x.clone()).is_require_grad());
    }
}
