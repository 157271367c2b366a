//! Learnable swish `x * sigmoid(beta x)` with one beta per unit, optionally shifted by a context.

use burn::module::{Module, Param};
use burn::tensor::{Distribution, Tensor, backend::Backend};
use mixer_hyper::sigmoid;

/// Swish with a trainable `beta0: [units]` (Uniform(0.01, 1)) and, when context-modulated, a
/// factor `A_beta: [units, c]` (Uniform(±1/sqrt(units))): `beta = beta0 + A_beta ctx` per row.
#[derive(Module, Debug)]
pub struct LearnableSwish<B: Backend> {
    /// Root slopes, `[units]`.
    pub beta: Param<Tensor<B, 1>>,
    /// Context factor of the slopes, `[units, c]`, when the slopes depend on the context.
    pub a_beta: Option<Param<Tensor<B, 2>>>,
}

impl<B: Backend> LearnableSwish<B> {
    /// A swish over `units` units whose slopes read a context of size `context`.
    pub fn new(units: usize, context: usize, device: &B::Device) -> Self {
        let bound = 1.0 / (units as f64).sqrt();
        Self {
            a_beta: Some(Param::from_tensor(Tensor::random(
                [units, context],
                Distribution::Uniform(-bound, bound),
                device,
            ))),
            ..Self::plain(units, device)
        }
    }

    /// A swish over `units` units with context-free slopes.
    pub fn plain(units: usize, device: &B::Device) -> Self {
        Self {
            beta: Param::from_tensor(Tensor::random([units], Distribution::Uniform(0.01, 1.0), device)),
            a_beta: None,
        }
    }

    /// `x: [N, units]`, `ctx: [N, c]` → `[N, units]`; the context is ignored by a plain swish.
    pub fn forward(&self, x: Tensor<B, 2>, ctx: Option<Tensor<B, 2>>) -> Tensor<B, 2> {
        let mut beta = self.beta.val().unsqueeze_dim(0);
        if let (Some(a), Some(ctx)) = (&self.a_beta, ctx) {
            beta = beta + ctx.matmul(a.val().transpose());
        }
        x.clone() * sigmoid(x * beta)
    }

    /// Value, first and second derivative of the swish with the root slopes at `z: [N, units]`
    /// (a context factor is not read): with `s = sigmoid(beta z)`, `z s`,
    /// `s + beta z s (1 - s)` and `beta s (1 - s) (2 + beta z (1 - 2 s))`, each `[N, units]`.
    pub fn derivatives(&self, z: Tensor<B, 2>) -> [Tensor<B, 2>; 3] {
        let beta = self.beta.val().unsqueeze_dim(0);
        let bz = z.clone() * beta.clone();
        let s = sigmoid(bz.clone());
        let ds = s.clone() * (s.clone().neg() + 1.0);
        let first = s.clone() + bz.clone() * ds.clone();
        let second = ds * beta * ((s.clone() * 2.0).neg() + 1.0).mul(bz).add_scalar(2.0);
        [z * s, first, second]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::TestBackend;
    use mixer_core::host::{tensor2, to_vec};

    #[test]
    fn beta_starts_in_its_range_and_the_formula_holds() {
        let device = Default::default();
        let s = LearnableSwish::<TestBackend>::new(2000, 2, &device);
        let betas = to_vec(s.beta.val());
        let (lo, hi) = betas.iter().fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        assert!(lo >= 0.01 && hi <= 1.0, "range [{lo}, {hi}]");
        assert!(lo < 0.05 && hi > 0.95, "2000 draws should cover the range: [{lo}, {hi}]");
        let plain = LearnableSwish::<TestBackend>::plain(2, &device);
        let b = to_vec(plain.beta.val());
        let y = to_vec(plain.forward(tensor2(&[1.5, -0.7], [1, 2], &device), None));
        for (j, x) in [1.5f64, -0.7].iter().enumerate() {
            assert!((y[j] - x / (1.0 + (-b[j] * x).exp())).abs() < 1e-12);
        }
        let a = to_vec(s.a_beta.as_ref().unwrap().val().slice([0..1, 0..2]));
        let y = to_vec(
            s.forward(tensor2(&vec![2.0; 2000], [1, 2000], &device), Some(tensor2(&[0.5, -1.0], [1, 2], &device))),
        );
        let beta0 = betas[0] + 0.5 * a[0] - a[1];
        assert!((y[0] - 2.0 / (1.0 + (-beta0 * 2.0).exp())).abs() < 1e-12);
    }

    #[test]
    fn derivatives_match_central_differences() {
        let device = Default::default();
        let plain = LearnableSwish::<TestBackend>::plain(3, &device);
        let z = [1.3, -0.4, 2.2];
        let at = |v: &[f64]| to_vec(plain.forward(tensor2(v, [1, 3], &device), None));
        let [value, first, second] = plain.derivatives(tensor2(&z, [1, 3], &device)).map(to_vec);
        assert_eq!(value, at(&z));
        let h = 1e-4;
        let (up, down) = (at(&z.map(|v| v + h)), at(&z.map(|v| v - h)));
        for j in 0..3 {
            assert!((first[j] - (up[j] - down[j]) / (2.0 * h)).abs() < 1e-7, "first derivative {j}");
            let fd2 = (up[j] - 2.0 * value[j] + down[j]) / (h * h);
            assert!((second[j] - fd2).abs() < 1e-5, "second derivative {j}: {} vs {fd2}", second[j]);
        }
    }
}
