//! Magnitude-invariant parametrisation (MIP, Ortiz et al. 2023) of hypernetwork inputs: squash
//! an unbounded context into `[0, 1]` and encode each entry as a unit-norm `(cos, sin)` pair,
//! so the size of generated weights no longer tracks the size of the context. The other half
//! of MIP, the additive residual output `theta = theta0 + H(enc(z))`, is how every hypernetwork
//! of this crate builds parameters (root plus delta).

use burn::tensor::{Tensor, backend::Backend};

/// `s = (tanh(z) + 1) / 2`, mapping `R` onto `(0, 1)`; `[N, c] -> [N, c]`.
pub fn mip_squash<B: Backend>(z: Tensor<B, 2>) -> Tensor<B, 2> {
    (z.tanh() + 1.0) * 0.5
}

/// MIP encoding `[cos(pi s / 2), sin(pi s / 2)]` of `s = mip_squash(z)`; `[N, c] -> [N, 2c]`,
/// the cosines first. Each `(cos_j, sin_j)` pair has unit Euclidean norm.
pub fn mip_encode<B: Backend>(z: Tensor<B, 2>) -> Tensor<B, 2> {
    let angle = mip_squash(z) * (std::f64::consts::PI / 2.0);
    Tensor::cat(vec![angle.clone().cos(), angle.sin()], 1)
}

/// Width of the hypernetwork input for a context of size `context`: `2 * context` with MIP,
/// `context` without.
pub fn encoded_width(context: usize, mip: bool) -> usize {
    if mip { 2 * context } else { context }
}

/// The hypernetwork input: `mip_encode(z)` when `mip`, else `z` unchanged; `[N, c] -> [N, c']`.
pub fn encode_context<B: Backend>(z: Tensor<B, 2>, mip: bool) -> Tensor<B, 2> {
    if mip { mip_encode(z) } else { z }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::TestBackend;
    use mixer_core::host::{tensor2, to_vec};

    #[test]
    fn pairs_have_unit_norm_and_known_values() {
        let device = Default::default();
        let z = tensor2::<TestBackend>(&[0.0, 1.5, -40.0, 40.0, 0.3, -2.0], [3, 2], &device);
        let e = to_vec(mip_encode(z));
        for r in 0..3 {
            for j in 0..2 {
                let (c, s) = (e[r * 4 + j], e[r * 4 + 2 + j]);
                assert!((c * c + s * s - 1.0).abs() < 1e-12);
            }
        }
        // z = 0 -> s = 1/2 -> angle pi/4
        let h = std::f64::consts::FRAC_1_SQRT_2;
        assert!((e[0] - h).abs() < 1e-12 && (e[2] - h).abs() < 1e-12);
        // z -> -inf: s -> 0 -> (1, 0); z -> +inf: s -> 1 -> (0, 1)
        assert!((e[4] - 1.0).abs() < 1e-12 && e[6].abs() < 1e-12);
        assert!(e[5].abs() < 1e-12 && (e[7] - 1.0).abs() < 1e-12);
        // z = 1.5 -> s = (tanh 1.5 + 1)/2
        let s: f64 = (1.5f64.tanh() + 1.0) / 2.0;
        assert!((e[1] - (std::f64::consts::FRAC_PI_2 * s).cos()).abs() < 1e-12);
        assert_eq!(encoded_width(3, true), 6);
        assert_eq!(encoded_width(3, false), 3);
    }
}
