//! The proximal term of the MixER paper: `(beta / 2) * ||p - p_old||^2 / numel(p)` where `p` is a
//! whole block (all parameter tensors of the context table, or of the model) flattened into one
//! vector, so `numel(p)` counts the block's parameters.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Tensor, backend::Backend};

/// Flattened copies of a module's float parameters, in visiting order.
pub fn flat_params<B: Backend, M: Module<B>>(module: &M) -> Vec<Tensor<B, 1>> {
    struct Collect<B: Backend>(Vec<Tensor<B, 1>>);
    impl<B: Backend> ModuleVisitor<B> for Collect<B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0.push(param.val().reshape([-1]));
        }
    }
    let mut c = Collect(Vec::new());
    module.visit(&mut c);
    c.0
}

/// `(beta / 2) * ||p - p_old||^2 / numel(p)` over all parameters `p` of `module` against a
/// detached snapshot taken with [`flat_params`]; returns a `[1]` tensor.
pub fn proximal_term<B: Backend, M: Module<B>>(module: &M, snapshot: &[Tensor<B, 1>], beta: f64) -> Tensor<B, 1> {
    let current = flat_params(module);
    assert_eq!(current.len(), snapshot.len(), "snapshot taken from a module of the same structure");
    let device = current.first().map(|t| t.device()).unwrap_or_default();
    let numel = current.iter().map(|p| p.dims()[0]).sum::<usize>().max(1) as f64;
    let squared = current
        .into_iter()
        .zip(snapshot)
        .fold(Tensor::zeros([1], &device), |acc, (p, old)| acc + (p - old.clone()).square().sum());
    squared.mul_scalar(0.5 * beta / numel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::TestAutodiffBackend;
    use burn::nn::LinearConfig;

    #[test]
    fn value_and_gradient_match_hand_formula() {
        type B = TestAutodiffBackend;
        let device = Default::default();
        let lin = LinearConfig::new(3, 2).init::<B>(&device);
        let snapshot: Vec<_> = flat_params(&lin).into_iter().map(|t| t.detach().add_scalar(0.5)).collect();
        let beta = 10.0;
        let term = proximal_term(&lin, &snapshot, beta);
        // every one of the 8 entries (weight 6, bias 2) differs by -0.5 -> (beta/2) * 8 * 0.25 / 8
        let want = 0.5 * beta * 0.25;
        assert!((term.clone().into_scalar() - want).abs() < 1e-9);
        let grads = term.backward();
        let gw = lin.weight.grad(&grads).unwrap();
        // d/dp = beta * (p - old) / numel(block) = 10 * (-0.5) / 8, the same for weight and bias
        for g in gw.into_data().to_vec::<f64>().unwrap() {
            assert!((g + 10.0 * 0.5 / 8.0).abs() < 1e-9);
        }
        let gb = lin.bias.as_ref().unwrap().grad(&grads).unwrap();
        for g in gb.into_data().to_vec::<f64>().unwrap() {
            assert!((g + 10.0 * 0.5 / 8.0).abs() < 1e-9);
        }
    }
}
