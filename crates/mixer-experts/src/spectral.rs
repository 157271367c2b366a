//! A differentiable 2-D real Fourier transform on channels-last fields `[B, H, W, C]`.
//!
//! burn 0.21's `rfft` has no backward pass, so [`Dft2`] writes the transform as matrix products
//! with precomputed cosine and sine tables (constant tensors, not parameters): every step is a
//! matmul of a table with the contiguous field (broadcast over the batch) or a free reshape, so no
//! transposed copy is made, and autodiff differentiates it like any other layer. The
//! cost is `O(B C H W (W + H))` per transform, which is what token mixing on the coarse
//! patch grids of an operator transformer needs; it is not meant for fine grids.
//!
//! Conventions (those of `numpy.fft.rfft2` / `torch.fft.rfft2` with `norm = "ortho"`):
//!
//! - forward: `X[k1, k2] = (H W)^(-1/2) sum_{h, w} x[h, w] exp(-2 pi i (k1 h / H + k2 w / W))`
//!   for `k1 in 0..H` (full, negative frequencies in the upper half) and `k2 in 0..W/2+1`
//!   (the half spectrum of the last axis);
//! - inverse: `x[h, w] = (H W)^(-1/2) Re sum_{k1, k2} c_k2 X[k1, k2] exp(+2 pi i (k1 h / H + k2 w / W))`
//!   with `c_0 = 1`, `c_{W/2} = 1` for even `W` and `c_k2 = 2` otherwise, the real inverse of a
//!   Hermitian spectrum: the imaginary parts of the columns counted once are ignored, as a C2R
//!   FFT does;
//! - both scaled by `(H W)^(-1/2)` ("ortho"), so the forward map is an isometry of the full
//!   spectrum and `inverse(forward(x)) == x`.

use std::f64::consts::TAU;

use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};
use mixer_routers::host_tensor;

use crate::ExpertError;

/// The 2-D real DFT for one `H x W` grid, as matmuls with cosine and sine tables (see the module
/// doc for the "ortho" scaling).
#[derive(Module, Debug)]
pub struct Dft2<B: Backend> {
    /// Forward along `W`: `cos(2 pi k w / W) / sqrt(H W)`, `[1, W/2+1, W]`.
    fwd_cos: Tensor<B, 3>,
    /// Forward along `W`: `-sin(2 pi k w / W) / sqrt(H W)`, `[1, W/2+1, W]`.
    fwd_sin: Tensor<B, 3>,
    /// Along `H`: `cos(2 pi h k / H)`, `[1, H, H]` (symmetric).
    h_cos: Tensor<B, 3>,
    /// Along `H`: `sin(2 pi h k / H)`, `[1, H, H]` (symmetric).
    h_sin: Tensor<B, 3>,
    /// Inverse along `W`: `c_k cos(2 pi k w / W) / sqrt(H W)`, `[1, W, W/2+1]`.
    inv_cos: Tensor<B, 3>,
    /// Inverse along `W`: `-c_k sin(2 pi k w / W) / sqrt(H W)`, `[1, W, W/2+1]`.
    inv_sin: Tensor<B, 3>,
    /// Grid height `H`.
    height: usize,
    /// Grid width `W`.
    width: usize,
}

/// `(cos, sin)` of `2 pi (k n mod len) / len`, exact in the integer part.
fn twiddle(k: usize, n: usize, len: usize) -> (f64, f64) {
    let angle = TAU * ((k * n) % len) as f64 / len as f64;
    (angle.cos(), angle.sin())
}

/// Number of columns of the half spectrum of a length-`width` real axis, `W/2 + 1`.
pub fn half_width(width: usize) -> usize {
    width / 2 + 1
}

impl<B: Backend> Dft2<B> {
    /// The transform for an `height x width` grid (each side at least 1) on `device`.
    pub fn new(height: usize, width: usize, device: &B::Device) -> Result<Self, ExpertError> {
        if height == 0 || width == 0 {
            let msg = format!("a {height} x {width} grid has no points; each side must be at least 1");
            return Err(mixer_core::Error::config("grid", msg).into());
        }
        let wf = half_width(width);
        let scale = 1.0 / ((height * width) as f64).sqrt();
        let table = |rows: usize, cols: usize, f: &dyn Fn(usize, usize) -> f64| -> Tensor<B, 3> {
            let values: Vec<f64> = (0..rows * cols).map(|i| f(i / cols, i % cols)).collect();
            host_tensor(&values, [1, rows, cols], device)
        };
        // Columns counted twice in the real inverse: all but 0 and, for even W, W/2.
        let weight = |k: usize| if k == 0 || 2 * k == width { 1.0 } else { 2.0 };
        Ok(Self {
            fwd_cos: table(wf, width, &|k, w| scale * twiddle(k, w, width).0),
            fwd_sin: table(wf, width, &|k, w| -scale * twiddle(k, w, width).1),
            h_cos: table(height, height, &|h, k| twiddle(k, h, height).0),
            h_sin: table(height, height, &|h, k| twiddle(k, h, height).1),
            inv_cos: table(width, wf, &|w, k| scale * weight(k) * twiddle(k, w, width).0),
            inv_sin: table(width, wf, &|w, k| -scale * weight(k) * twiddle(k, w, width).1),
            height,
            width,
        })
    }

    /// The grid `[H, W]` the transform was built for.
    pub fn grid(&self) -> [usize; 2] {
        [self.height, self.width]
    }

    /// The spectrum's shape `[H, W/2+1]`.
    pub fn spectrum_grid(&self) -> [usize; 2] {
        [self.height, half_width(self.width)]
    }

    /// The half spectrum `(re, im)`, each `[B, H, W/2+1, C]`, of real fields `x: [B, H, W, C]`.
    ///
    /// Panics if `x`'s grid is not the one the transform was built for.
    pub fn forward(&self, x: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let [b, h, w, c] = x.dims();
        self.assert_grid([h, w], w, "forward");
        let wf = half_width(w);
        // Along W (real to half spectrum): [W/2+1, W] times each row's [W, C].
        let rows = x.reshape([b * h, w, c]);
        let a = self.fwd_cos.clone().matmul(rows.clone()).reshape([b, h, wf * c]);
        let s = self.fwd_sin.clone().matmul(rows).reshape([b, h, wf * c]);
        // Along H (complex, full): e^{-i t} (a + i s) = (cos a + sin s) + i (cos s - sin a).
        let re = self.h_cos.clone().matmul(a.clone()) + self.h_sin.clone().matmul(s.clone());
        let im = self.h_cos.clone().matmul(s) - self.h_sin.clone().matmul(a);
        (re.reshape([b, h, wf, c]), im.reshape([b, h, wf, c]))
    }

    /// The real fields `[B, H, W, C]` whose half spectrum is `(re, im)`, each `[B, H, W/2+1, C]`
    /// (read as Hermitian: see the module doc); `inverse(forward(x)) == x`.
    ///
    /// Panics if the spectra's grid is not the transform's.
    pub fn inverse(&self, re: Tensor<B, 4>, im: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, h, wf, c] = re.dims();
        self.assert_grid([h, wf], half_width(self.width), "inverse");
        assert_eq!(re.dims(), im.dims(), "Dft2::inverse: real and imaginary parts differ in shape");
        // Along H (complex, full): e^{+i t} (r + i m) = (cos r - sin m) + i (cos m + sin r).
        let (r, m) = (re.reshape([b, h, wf * c]), im.reshape([b, h, wf * c]));
        let yr = self.h_cos.clone().matmul(r.clone()) - self.h_sin.clone().matmul(m.clone());
        let yi = self.h_cos.clone().matmul(m) + self.h_sin.clone().matmul(r);
        // The real inverse along W: [W, W/2+1] times each row's [W/2+1, C].
        let (yr, yi) = (yr.reshape([b * h, wf, c]), yi.reshape([b * h, wf, c]));
        let x = self.inv_cos.clone().matmul(yr) + self.inv_sin.clone().matmul(yi);
        x.reshape([b, h, self.width, c])
    }

    fn assert_grid(&self, found: [usize; 2], last: usize, what: &str) {
        assert!(
            found[0] == self.height && found[1] == last,
            "Dft2::{what}: grid {found:?} does not match the transform's [{}, {last}]",
            self.height
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{TestAutodiffBackend, TestBackend, assert_close, central_difference};
    use burn::backend::Flex;
    use mixer_core::{Seeds, host};
    use rand::Rng as _;

    /// Uniform values in `[-1, 1)` from the named stream.
    fn values(n: usize, stream: &str) -> Vec<f64> {
        let mut rng = Seeds::new(12).stream(stream);
        (0..n).map(|_| 2.0 * rng.random::<f64>() - 1.0).collect()
    }

    /// The ortho-scaled half spectrum by the direct double sum, in f64: `(re, im)`, row-major
    /// `[B C, H, W/2+1]`.
    fn direct_dft(x: &[f64], bc: usize, h: usize, w: usize) -> (Vec<f64>, Vec<f64>) {
        let wf = half_width(w);
        let scale = 1.0 / ((h * w) as f64).sqrt();
        let (mut re, mut im) = (vec![0.0; bc * h * wf], vec![0.0; bc * h * wf]);
        for f in 0..bc {
            for k1 in 0..h {
                for k2 in 0..wf {
                    let (mut sr, mut si) = (0.0, 0.0);
                    for p in 0..h {
                        for q in 0..w {
                            let t = TAU * (k1 as f64 * p as f64 / h as f64 + k2 as f64 * q as f64 / w as f64);
                            let v = x[(f * h + p) * w + q];
                            sr += v * t.cos();
                            si -= v * t.sin();
                        }
                    }
                    re[(f * h + k1) * wf + k2] = scale * sr;
                    im[(f * h + k1) * wf + k2] = scale * si;
                }
            }
        }
        (re, im)
    }

    /// `[B, C, H, W]` as the transform's channels-last `[B, H, W, C]`.
    fn channels_last<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
        x.permute([0, 2, 3, 1])
    }

    /// A channels-last `[B, H, W, C]` tensor's values in `[B, C, H, W]` order.
    fn channels_first<B: Backend>(x: Tensor<B, 4>) -> Vec<f64> {
        host::to_vec(x.permute([0, 3, 1, 2]))
    }

    fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
    }

    /// Odd and even widths, odd and even heights, non-square, and a single row.
    const GRIDS: [[usize; 2]; 6] = [[4, 6], [5, 7], [6, 5], [3, 8], [8, 3], [1, 5]];

    #[test]
    fn forward_matches_the_direct_sum_in_f32() {
        let device = Default::default();
        for [h, w] in GRIDS {
            let (b, c) = (2, 3);
            let x = values(b * c * h * w, "x");
            let dft = Dft2::<Flex>::new(h, w, &device).unwrap();
            let (re, im) = dft.forward(channels_last(host_tensor::<Flex, 4>(&x, [b, c, h, w], &device)));
            assert_eq!(re.dims(), [b, h, half_width(w), c]);
            assert_eq!(im.dims(), [b, h, half_width(w), c]);
            let (want_re, want_im) = direct_dft(&x, b * c, h, w);
            let (re, im) = (channels_first(re), channels_first(im));
            let err = max_abs_diff(&re, &want_re).max(max_abs_diff(&im, &want_im));
            assert!(err < 1e-4, "{h} x {w}: forward differs from the direct sum by {err:e}");
        }
    }

    #[test]
    fn forward_matches_the_direct_sum_in_f64() {
        let device = Default::default();
        for [h, w] in GRIDS {
            let x = values(h * w * 2, "x64");
            let dft = Dft2::<TestBackend>::new(h, w, &device).unwrap();
            let (re, im) = dft.forward(channels_last(host_tensor::<TestBackend, 4>(&x, [1, 2, h, w], &device)));
            let (want_re, want_im) = direct_dft(&x, 2, h, w);
            let (re, im) = (channels_first(re), channels_first(im));
            let err = max_abs_diff(&re, &want_re).max(max_abs_diff(&im, &want_im));
            assert!(err < 1e-12, "{h} x {w}: {err:e}");
        }
    }

    #[test]
    fn inverse_undoes_forward() {
        let device = Default::default();
        for [h, w] in GRIDS {
            let x = values(2 * 3 * h * w, "round trip");
            let dft = Dft2::<Flex>::new(h, w, &device).unwrap();
            let (re, im) = dft.forward(host_tensor::<Flex, 4>(&x, [2, h, w, 3], &device));
            let back = host::to_vec(dft.inverse(re, im));
            let err = max_abs_diff(&back, &x);
            assert!(err < 1e-5, "{h} x {w}: f32 round trip error {err:e}");

            let device = Default::default();
            let dft = Dft2::<TestBackend>::new(h, w, &device).unwrap();
            let (re, im) = dft.forward(host_tensor::<TestBackend, 4>(&x, [2, h, w, 3], &device));
            let err = max_abs_diff(&host::to_vec(dft.inverse(re, im)), &x);
            assert!(err < 1e-12, "{h} x {w}: f64 round trip error {err:e}");
        }
    }

    #[test]
    fn the_transform_is_an_isometry_of_the_full_spectrum() {
        // Parseval with ortho scaling: sum x^2 = sum_k c_k |X_k|^2 over the half spectrum.
        let device = Default::default();
        for [h, w] in GRIDS {
            let x = values(h * w, "parseval");
            let dft = Dft2::<TestBackend>::new(h, w, &device).unwrap();
            let (re, im) = dft.forward(host_tensor::<TestBackend, 4>(&x, [1, h, w, 1], &device));
            let (re, im) = (host::to_vec(re), host::to_vec(im));
            let wf = half_width(w);
            let energy: f64 = (0..h * wf)
                .map(|i| {
                    let k = i % wf;
                    let c = if k == 0 || 2 * k == w { 1.0 } else { 2.0 };
                    c * (re[i] * re[i] + im[i] * im[i])
                })
                .sum();
            let want: f64 = x.iter().map(|v| v * v).sum();
            assert!((energy - want).abs() < 1e-12 * want.max(1.0), "{h} x {w}: {energy} vs {want}");
        }
    }

    #[test]
    fn gradients_through_forward_and_inverse_match_finite_differences() {
        type A = TestAutodiffBackend;
        let device = Default::default();
        for [h, w] in [[3, 4], [4, 5]] {
            let (b, c) = (1, 2);
            let n = b * c * h * w;
            let nf = b * c * h * half_width(w);
            let spec = [b, h, half_width(w), c];
            let dft = Dft2::<A>::new(h, w, &device).unwrap();
            let (fa, fb) = (values(nf, "a"), values(nf, "b"));
            let (ga, gb, gc) = (values(nf, "filter re"), values(nf, "filter im"), values(n, "c"));
            let t = |v: &[f64], shape: [usize; 4]| host_tensor::<A, 4>(v, shape, &device);
            let x0 = values(n, "x grad");

            // L1 = sum(re a + im b).
            let loss1 = |x: Tensor<A, 4>| {
                let (re, im) = dft.forward(x);
                (re * t(&fa, spec) + im * t(&fb, spec)).sum()
            };
            // L2 = sum(c * inverse(re * ga - im * gb, re * gb + im * ga)): a complex filter and back.
            let loss2 = |x: Tensor<A, 4>| {
                let (re, im) = dft.forward(x);
                let (gr, gi) = (t(&ga, spec), t(&gb, spec));
                let y = dft.inverse(re.clone() * gr.clone() - im.clone() * gi.clone(), re * gi + im * gr);
                (y * t(&gc, [b, h, w, c])).sum()
            };
            for (name, loss) in [("forward", &loss1 as &dyn Fn(Tensor<A, 4>) -> Tensor<A, 1>), ("filter", &loss2)] {
                let x = t(&x0, [b, h, w, c]).require_grad();
                let grads = loss(x.clone()).backward();
                let got = host::to_vec(x.grad(&grads).unwrap());
                let want = central_difference(&x0, |v| host::to_vec(loss(t(v, [b, h, w, c])))[0]);
                assert_close(&got, &want, 1e-7, &format!("{h} x {w} {name}"));
            }

            // L3 = sum(c * inverse(re, im)) with respect to the spectrum itself.
            let s0: Vec<f64> = fa.iter().chain(&fb).copied().collect();
            let loss3 = |s: Tensor<A, 4>| {
                let re = s.clone().slice([0..b, 0..h, 0..half_width(w), 0..c]);
                let im = s.slice([b..2 * b, 0..h, 0..half_width(w), 0..c]);
                (dft.inverse(re, im) * t(&gc, [b, h, w, c])).sum()
            };
            let s_shape = [2 * b, h, half_width(w), c];
            let s = t(&s0, s_shape).require_grad();
            let grads = loss3(s.clone()).backward();
            let got = host::to_vec(s.grad(&grads).unwrap());
            let want = central_difference(&s0, |v| host::to_vec(loss3(t(v, s_shape)))[0]);
            assert_close(&got, &want, 1e-7, &format!("{h} x {w} inverse"));
        }
    }

    #[test]
    fn an_empty_grid_is_an_error() {
        let device = Default::default();
        let err = Dft2::<TestBackend>::new(0, 4, &device).unwrap_err();
        assert!(err.to_string().contains("0 x 4"), "{err}");
        assert!(Dft2::<TestBackend>::new(1, 1, &device).is_ok());
    }
}
