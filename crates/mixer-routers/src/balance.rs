//! Balancing losses shared by gradient-trained routers.

use burn::tensor::{Tensor, backend::Backend};

/// Added to the squared mean so that an all-zero vector gives 0 instead of NaN.
const CV_EPS: f64 = 1e-10;

/// Squared coefficient of variation `var(v) / (mean(v)^2 + 1e-10)` of `v: [E]`, as a `[1]` tensor.
///
/// Uses the **population** variance (divide by `E`, not `E - 1`), so it is defined for a single
/// expert (value 0) and equals `E * sum_i (v_i - mean)^2 / sum_i(v_i)^2` up to the epsilon.
pub fn cv_squared<B: Backend>(v: Tensor<B, 1>) -> Tensor<B, 1> {
    let mean = v.clone().mean();
    let var = (v - mean.clone()).powi_scalar(2).mean();
    var / (mean.powi_scalar(2) + CV_EPS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestBackend;
    use mixer_core::host;

    #[test]
    fn cv_squared_matches_hand_value() {
        let device = Default::default();
        // mean 2, population variance ((1)^2 + 0 + 1^2) / 3 = 2/3, CV^2 = (2/3) / 4 = 1/6.
        let v = Tensor::<TestBackend, 1>::from_floats([1.0, 2.0, 3.0], &device);
        let got = host::to_vec(cv_squared(v))[0];
        assert!((got - 1.0 / 6.0).abs() < 1e-6, "{got}");
        let flat = Tensor::<TestBackend, 1>::from_floats([0.5, 0.5], &device);
        assert!(host::to_vec(cv_squared(flat))[0].abs() < 1e-9);
    }
}
