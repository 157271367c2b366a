//! The adaptive Fourier neural operator (AFNO) token mixer (Guibas et al., "Adaptive Fourier
//! Neural Operators: Efficient Token Mixers for Transformers", ICLR 2022), the spatial mixing of
//! each MoE-POT block.
//!
//! For channels-last fields `x: [B, H, W, C]` (the token grid of a transformer as it is stored)
//! the mixer takes the half spectrum `z = DFT(x)` ([`Dft2`], "ortho"
//! scaling), splits the `C` channels into `num_blocks` blocks of `C / num_blocks`, and at every
//! frequency applies to each block its own complex two-layer MLP, shared by all frequencies:
//!
//! - `u = ReLU(Re(W1 z + b1)) + i ReLU(Im(W1 z + b1))` (ReLU on the real and imaginary parts),
//!   hidden size `hidden_factor * C / num_blocks`;
//! - `v = W2 u + b2`, then soft shrinkage `S(t) = sign(t) max(|t| - lambda, 0)` on the real and
//!   imaginary parts (the sparsity promotion of the paper);
//! - modes outside the kept fraction are set to zero (see [`AfnoSettings::kept_modes`]);
//! - `y = IDFT(v) + x` (the residual inside the filter, as in the paper's code).
//!
//! Complex products are written out on real and imaginary parts:
//! `(a + i b)(c + i d) = (ac - bd) + i (ad + bc)`. Because the spectrum is computed by
//! [`Dft2`]'s matmuls, the whole mixer is differentiable under burn's autodiff.
//!
//! ```
//! use burn::backend::Flex;
//! use burn::tensor::Tensor;
//! use mixer_core::Seeds;
//! use mixer_experts::{AfnoSettings, Dft2};
//!
//! # fn main() -> Result<(), mixer_experts::ExpertError> {
//! let device = Default::default();
//! let x = Tensor::<Flex, 4>::ones([2, 6, 5, 8], &device);
//! let dft = Dft2::<Flex>::new(6, 5, &device)?;
//! let (re, im) = dft.forward(x.clone());
//! assert_eq!(re.dims(), [2, 6, 3, 8]);
//! assert_eq!(dft.inverse(re, im).dims(), [2, 6, 5, 8]);
//! let settings = AfnoSettings { width: 8, num_blocks: 2, ..AfnoSettings::default() };
//! let mixer = settings.init::<Flex>([6, 5], &mut Seeds::new(0).stream("init"), &device)?;
//! assert_eq!(mixer.forward(x).dims(), [2, 6, 5, 8]);
//! # Ok(())
//! # }
//! ```

use burn::module::{Module, Param};
use burn::tensor::{Tensor, activation, backend::Backend};
use serde::{Deserialize, Serialize};

use mixer_core::Rng;
use mixer_routers::host_tensor;

use crate::ExpertError;
use crate::spectral::{Dft2, half_width};

/// Standard deviation of every initial weight and bias (normal, mean 0), as in AFNO.
pub const AFNO_INIT_SCALE: f64 = 0.02;

/// Settings of the AFNO token mixer; defaults are the paper's (8 blocks, hidden factor 1,
/// `lambda = 0.01`, all modes kept) at the width of MoE-POT Tiny.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AfnoSettings {
    /// Channels `C` of the fields (default 512, MoE-POT Tiny).
    pub width: usize,
    /// Number of channel blocks with their own frequency MLP; must divide `width` (default 8).
    pub num_blocks: usize,
    /// Hidden size of each block's MLP over its block size (default 1).
    pub hidden_factor: usize,
    /// Soft-shrinkage threshold `lambda >= 0` on the MLP output (default 0.01).
    pub sparsity_threshold: f64,
    /// Fraction in `(0, 1]` of the modes kept along each axis, lowest frequencies first
    /// (default 1: all). Along `W` the columns `k2 < floor(f (W/2+1))` are kept, along `H` the
    /// rows of signed frequency `|k1| < floor(f (H/2+1))`; the original code slices the rows of an
    /// unshifted spectrum instead, which keeps high `H` frequencies when `f < 1`.
    pub kept_modes: f64,
}

impl Default for AfnoSettings {
    fn default() -> Self {
        Self { width: 512, num_blocks: 8, hidden_factor: 1, sparsity_threshold: 0.01, kept_modes: 1.0 }
    }
}

impl AfnoSettings {
    /// Channels per block, `width / num_blocks`.
    pub fn block_size(&self) -> usize {
        self.width / self.num_blocks.max(1)
    }

    /// Hidden units per block, `hidden_factor * width / num_blocks`.
    pub fn block_hidden(&self) -> usize {
        self.hidden_factor * self.block_size()
    }

    /// Trainable parameters of the mixer these settings build: real and imaginary parts of `W1`,
    /// `W2` (`num_blocks * block * hidden` each), `b1` (`num_blocks * hidden`) and `b2` (`width`).
    pub fn parameter_count(&self) -> usize {
        let (nb, bs, hid) = (self.num_blocks, self.block_size(), self.block_hidden());
        2 * (nb * bs * hid + nb * hid + nb * hid * bs + nb * bs)
    }

    /// Checks the settings for a `height x width` grid (each side at least 2).
    pub fn check(&self, [height, width]: [usize; 2]) -> Result<(), ExpertError> {
        let bad = |field: &str, reason: String| Err(mixer_core::Error::config(field, reason).into());
        if height < 2 || width < 2 {
            return bad("grid", format!("a {height} x {width} grid is too small; each side must be at least 2"));
        }
        if self.width == 0 {
            return bad("width", "at least one channel".into());
        }
        if self.num_blocks == 0 || !self.width.is_multiple_of(self.num_blocks) {
            let msg = format!("{} blocks do not split {} channels evenly", self.num_blocks, self.width);
            return bad("num_blocks", msg);
        }
        if self.hidden_factor == 0 {
            return bad("hidden_factor", "at least 1".into());
        }
        if !(self.sparsity_threshold.is_finite() && self.sparsity_threshold >= 0.0) {
            return bad("sparsity_threshold", format!("{} is not a finite value >= 0", self.sparsity_threshold));
        }
        if !(self.kept_modes > 0.0 && self.kept_modes <= 1.0) {
            return bad("kept_modes", format!("{} is not a fraction in (0, 1]", self.kept_modes));
        }
        Ok(())
    }

    /// Checks, then builds the mixer for a `[height, width]` grid; every weight and bias is drawn
    /// from `N(0, 0.02^2)` ([`AFNO_INIT_SCALE`]) with `rng`.
    pub fn init<B: Backend>(
        &self,
        grid: [usize; 2],
        rng: &mut Rng,
        device: &B::Device,
    ) -> Result<AfnoMixer<B>, ExpertError> {
        self.check(grid)?;
        let (nb, bs, hid) = (self.num_blocks, self.block_size(), self.block_hidden());
        let mut draw = |shape: &[usize]| -> Vec<f64> {
            (0..shape.iter().product()).map(|_| AFNO_INIT_SCALE * standard_normal(rng)).collect()
        };
        let p3 = |v: Vec<f64>, shape: [usize; 3]| Param::from_tensor(host_tensor::<B, 3>(&v, shape, device));
        let p2 = |v: Vec<f64>, shape: [usize; 2]| Param::from_tensor(host_tensor::<B, 2>(&v, shape, device));
        // Draw order: W1 (re, im), b1 (re, im), W2 (re, im), b2 (re, im).
        let (w1r, w1i) = (draw(&[nb, bs, hid]), draw(&[nb, bs, hid]));
        let (b1r, b1i) = (draw(&[nb, hid]), draw(&[nb, hid]));
        let (w2r, w2i) = (draw(&[nb, hid, bs]), draw(&[nb, hid, bs]));
        let (b2r, b2i) = (draw(&[nb, bs]), draw(&[nb, bs]));
        Ok(AfnoMixer {
            w1_re: p3(w1r, [nb, bs, hid]),
            w1_im: p3(w1i, [nb, bs, hid]),
            b1_re: p2(b1r, [nb, hid]),
            b1_im: p2(b1i, [nb, hid]),
            w2_re: p3(w2r, [nb, hid, bs]),
            w2_im: p3(w2i, [nb, hid, bs]),
            b2_re: p2(b2r, [nb, bs]),
            b2_im: p2(b2i, [nb, bs]),
            dft: Dft2::new(grid[0], grid[1], device)?,
            mask: mode_mask(grid, self.kept_modes, device),
            settings: self.clone(),
        })
    }
}

/// A draw from `N(0, 1)` by the Box–Muller transform.
pub(crate) fn standard_normal(rng: &mut Rng) -> f64 {
    let u1 = 1.0 - rand::Rng::random::<f64>(rng); // in (0, 1]
    let u2 = rand::Rng::random::<f64>(rng);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// The `[1, H, W/2+1, 1]` 0/1 mask of kept modes, `None` when every mode is kept.
fn mode_mask<B: Backend>([h, w]: [usize; 2], kept: f64, device: &B::Device) -> Option<Tensor<B, 4>> {
    let wf = half_width(w);
    let keep_h = (kept * (h / 2 + 1) as f64).floor() as usize;
    let keep_w = (kept * wf as f64).floor() as usize;
    let values: Vec<f64> = (0..h * wf)
        .map(|i| {
            let (k1, k2) = (i / wf, i % wf);
            f64::from(u8::from(k1.min(h - k1) < keep_h && k2 < keep_w))
        })
        .collect();
    values.contains(&0.0).then(|| host_tensor(&values, [1, h, wf, 1], device))
}

/// The AFNO token mixer `[B, H, W, C] -> [B, H, W, C]` (channels last) on one grid (see the
/// module doc).
#[derive(Module, Debug)]
pub struct AfnoMixer<B: Backend> {
    /// First layer, real part `[num_blocks, block, block * hidden_factor]`.
    w1_re: Param<Tensor<B, 3>>,
    /// First layer, imaginary part `[num_blocks, block, block * hidden_factor]`.
    w1_im: Param<Tensor<B, 3>>,
    /// First bias, real part `[num_blocks, block * hidden_factor]`.
    b1_re: Param<Tensor<B, 2>>,
    /// First bias, imaginary part `[num_blocks, block * hidden_factor]`.
    b1_im: Param<Tensor<B, 2>>,
    /// Second layer, real part `[num_blocks, block * hidden_factor, block]`.
    w2_re: Param<Tensor<B, 3>>,
    /// Second layer, imaginary part `[num_blocks, block * hidden_factor, block]`.
    w2_im: Param<Tensor<B, 3>>,
    /// Second bias, real part `[num_blocks, block]`.
    b2_re: Param<Tensor<B, 2>>,
    /// Second bias, imaginary part `[num_blocks, block]`.
    b2_im: Param<Tensor<B, 2>>,
    /// The transform of the grid.
    dft: Dft2<B>,
    /// Kept modes `[1, H, W/2+1, 1]` (0/1), `None` when all are kept.
    mask: Option<Tensor<B, 4>>,
    /// The settings it was built with.
    #[module(skip)]
    settings: AfnoSettings,
}

/// A complex affine map per block: `(r + i m) (wr + i wi) + (br + i bi)` with `r, m: [nb, N, in]`,
/// `wr, wi: [nb, in, out]`, `br, bi: [nb, out]`.
fn complex_affine<B: Backend>(
    (r, m): (Tensor<B, 3>, Tensor<B, 3>),
    (wr, wi): (Tensor<B, 3>, Tensor<B, 3>),
    (br, bi): (Tensor<B, 2>, Tensor<B, 2>),
) -> (Tensor<B, 3>, Tensor<B, 3>) {
    // The biases repeated over the rows: a bias broadcast along a middle axis has no fast
    // element-wise kernel in burn-flex, a same-shape add has.
    let rows = r.dims()[1];
    let bias = |b: Tensor<B, 2>| b.unsqueeze_dim::<3>(1).repeat_dim(1, rows);
    let re = r.clone().matmul(wr.clone()) - m.clone().matmul(wi.clone()) + bias(br);
    let im = m.matmul(wr) + r.matmul(wi) + bias(bi);
    (re, im)
}

/// Soft shrinkage `sign(t) max(|t| - lambda, 0)`, written `t - clamp(t, -lambda, lambda)`.
fn soft_shrink<B: Backend>(t: Tensor<B, 3>, lambda: f64) -> Tensor<B, 3> {
    t.clone() - t.clamp(-lambda, lambda)
}

impl<B: Backend> AfnoMixer<B> {
    /// The settings the mixer was built with.
    pub fn settings(&self) -> &AfnoSettings {
        &self.settings
    }

    /// The grid `[H, W]` the mixer was built for.
    pub fn grid(&self) -> [usize; 2] {
        self.dft.grid()
    }

    /// Trainable parameters (equal to [`AfnoSettings::parameter_count`]).
    pub fn parameter_count(&self) -> usize {
        self.num_params()
    }

    /// The mixed fields `[B, H, W, C]` of channels-last `x: [B, H, W, C]`, residual included.
    ///
    /// Panics if `x`'s channels or grid are not those the mixer was built for.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, h, w, c] = x.dims();
        assert_eq!(c, self.settings.width, "AfnoMixer::forward: {c} channels, built for {}", self.settings.width);
        let (nb, bs) = (self.settings.num_blocks, self.settings.block_size());
        let wf = half_width(w);
        let n = b * h * wf;
        let (re, im) = self.dft.forward(x.clone());
        // [B, H, Wf, C] -> [nb, B H Wf, bs]: one row per frequency, blocks as the matmul batch (a
        // strided view the matmul reads in place).
        let blocks = |t: Tensor<B, 4>| t.reshape([n, nb, bs]).swap_dims(0, 1);
        let fields = |t: Tensor<B, 3>| t.swap_dims(0, 1).reshape([b, h, wf, c]);

        let (u_re, u_im) = complex_affine(
            (blocks(re), blocks(im)),
            (self.w1_re.val(), self.w1_im.val()),
            (self.b1_re.val(), self.b1_im.val()),
        );
        let (v_re, v_im) = complex_affine(
            (activation::relu(u_re), activation::relu(u_im)),
            (self.w2_re.val(), self.w2_im.val()),
            (self.b2_re.val(), self.b2_im.val()),
        );
        let lambda = self.settings.sparsity_threshold;
        let (mut v_re, mut v_im) = (fields(soft_shrink(v_re, lambda)), fields(soft_shrink(v_im, lambda)));
        if let Some(mask) = &self.mask {
            v_re = v_re * mask.clone();
            v_im = v_im * mask.clone();
        }
        self.dft.inverse(v_re, v_im) + x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{TestAutodiffBackend, TestBackend, assert_close, central_difference};
    use mixer_core::{Seeds, host};
    use rand::Rng as _;

    type T = TestBackend;
    type A = TestAutodiffBackend;

    fn small() -> AfnoSettings {
        AfnoSettings { width: 4, num_blocks: 2, ..AfnoSettings::default() }
    }

    fn values(n: usize, stream: &str) -> Vec<f64> {
        let mut rng = Seeds::new(12).stream(stream);
        (0..n).map(|_| 2.0 * rng.random::<f64>() - 1.0).collect()
    }

    fn mixer<B: Backend>(settings: &AfnoSettings, grid: [usize; 2], seed: u64) -> AfnoMixer<B> {
        settings.init(grid, &mut Seeds::new(seed).stream("init"), &Default::default()).unwrap()
    }

    /// Every parameter multiplied by `factor` (0 zeroes the mixer; 25 lifts the 0.02 init to 0.5 so
    /// that outputs pass the shrinkage threshold and the ReLUs split).
    fn scaled<B: Backend>(mut m: AfnoMixer<B>, factor: f64) -> AfnoMixer<B> {
        // Rebuilt from host values: a leaf tensor, as an initialised parameter is.
        fn s<B: Backend, const D: usize>(p: &Param<Tensor<B, D>>, factor: f64) -> Param<Tensor<B, D>> {
            let t = p.val();
            let v: Vec<f64> = host::to_vec(t.clone()).iter().map(|x| x * factor).collect();
            Param::from_tensor(host_tensor(&v, t.dims(), &t.device()))
        }
        (m.w1_re, m.w1_im, m.w2_re, m.w2_im) =
            (s(&m.w1_re, factor), s(&m.w1_im, factor), s(&m.w2_re, factor), s(&m.w2_im, factor));
        (m.b1_re, m.b1_im, m.b2_re, m.b2_im) =
            (s(&m.b1_re, factor), s(&m.b1_im, factor), s(&m.b2_re, factor), s(&m.b2_im, factor));
        m
    }

    fn params<B: Backend>(m: &AfnoMixer<B>) -> Vec<f64> {
        [&m.w1_re, &m.w1_im, &m.w2_re, &m.w2_im]
            .into_iter()
            .flat_map(|p| host::to_vec(p.val()))
            .chain([&m.b1_re, &m.b1_im, &m.b2_re, &m.b2_im].into_iter().flat_map(|p| host::to_vec(p.val())))
            .collect()
    }

    #[test]
    fn output_has_the_input_shape_and_the_documented_parameter_count() {
        let device = Default::default();
        for (s, grid) in
            [(small(), [6, 5]), (AfnoSettings { width: 6, num_blocks: 3, hidden_factor: 2, ..small() }, [4, 4])]
        {
            let m = mixer::<T>(&s, grid, 0);
            let x = host_tensor::<T, 4>(
                &values(2 * s.width * grid[0] * grid[1], "x"),
                [2, grid[0], grid[1], s.width],
                &device,
            );
            assert_eq!(m.forward(x).dims(), [2, grid[0], grid[1], s.width]);
            assert_eq!(m.parameter_count(), s.parameter_count());
        }
        // 2 blocks of 2, hidden 2: W1, W2 8 entries each, b1, b2 4 each; real and imaginary parts.
        assert_eq!(small().parameter_count(), 2 * (8 + 4 + 8 + 4));
        // Tiny: 8 blocks of 64, 2 (2 * 8 * 64 * 64 + 2 * 512) = 133 120.
        assert_eq!(AfnoSettings::default().parameter_count(), 133_120);
    }

    #[test]
    fn a_mixer_with_zero_weights_returns_its_input_exactly() {
        let device = Default::default();
        for kept_modes in [1.0, 0.5] {
            let m = scaled(mixer::<T>(&AfnoSettings { kept_modes, ..small() }, [6, 5], 3), 0.0);
            let x = values(2 * 4 * 30, "x");
            let y = host::to_vec(m.forward(host_tensor::<T, 4>(&x, [2, 6, 5, 4], &device)));
            assert_eq!(y, x, "kept_modes {kept_modes}");
        }
    }

    #[test]
    fn blocks_do_not_mix_channels() {
        let device = Default::default();
        let m = scaled(mixer::<T>(&small(), [6, 5], 4), 25.0);
        let x = values(4 * 30, "x");
        let mut x2 = x.clone();
        for (v, d) in x2[..2 * 30].iter_mut().zip(values(2 * 30, "perturbation")) {
            *v += 0.3 * d; // channels 0 and 1: block 0
        }
        // Values in [B, C, H, W] order, moved to the mixer's channels-last layout and back.
        let last = |v: &[f64]| host_tensor::<T, 4>(v, [1, 4, 6, 5], &device).permute([0, 2, 3, 1]);
        let run = |v: &[f64]| host::to_vec(m.forward(last(v)).permute([0, 3, 1, 2]));
        let (y, y2) = (run(&x), run(&x2));
        let moved =
            |r: std::ops::Range<usize>| y[r.clone()].iter().zip(&y2[r]).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(moved(60..120) < 1e-12, "block 1 changed by {:e}", moved(60..120));
        // Block 0's output moves by more than the perturbation of its input (the filter acts too).
        let filtered = |v: &[f64]| host::to_vec((m.forward(last(v)) - last(v)).permute([0, 3, 1, 2]));
        let (f, f2) = (filtered(&x), filtered(&x2));
        assert!(f[..60].iter().zip(&f2[..60]).any(|(a, b)| (a - b).abs() > 1e-3), "block 0 filter did not respond");
    }

    #[test]
    fn kept_modes_zero_the_filter_outside_the_low_frequencies() {
        let device = Default::default();
        let (h, w) = (6, 5);
        let m = scaled(mixer::<T>(&AfnoSettings { kept_modes: 0.5, ..small() }, [h, w], 5), 25.0);
        let x = host_tensor::<T, 4>(&values(4 * h * w, "x"), [1, h, w, 4], &device);
        let (re, im) = m.dft.forward(m.forward(x.clone()) - x);
        let (re, im) = (host::to_vec(re), host::to_vec(im));
        // keep |k1| < floor(0.5 * 4) = 2 and k2 < floor(0.5 * 3) = 1.
        let wf = half_width(w);
        let mut inside = 0.0_f64;
        for (i, (r, q)) in re.iter().zip(&im).enumerate() {
            let (k1, k2) = (i / (4 * wf), (i / 4) % wf);
            let kept = k1.min(h - k1) < 2 && k2 < 1;
            let mag = r.abs().max(q.abs());
            if kept {
                inside = inside.max(mag);
            } else {
                assert!(mag < 1e-12, "mode ({k1}, {k2}) of the filter is {mag:e}");
            }
        }
        assert!(inside > 1e-3, "the kept modes carry no filter output");
    }

    #[test]
    fn gradients_match_finite_differences() {
        let device = Default::default();
        let (h, w) = (6, 5);
        let s = AfnoSettings { sparsity_threshold: 0.05, ..small() };
        let base = scaled(mixer::<A>(&s, [h, w], 6), 25.0);
        let x0 = values(4 * h * w, "x");
        let c = host_tensor::<A, 4>(&values(4 * h * w, "c"), [1, h, w, 4], &device);
        let loss = |m: &AfnoMixer<A>, x: Tensor<A, 4>| (m.forward(x) * c.clone()).sum();
        let x_t = |v: &[f64]| host_tensor::<A, 4>(v, [1, h, w, 4], &device);

        // One first-layer weight, one second-layer weight and the input.
        let w1 = host::to_vec(base.w1_re.val());
        let w2 = host::to_vec(base.w2_im.val());
        let x = x_t(&x0).require_grad();
        let grads = loss(&base, x.clone()).backward();
        let g_w1 = host::to_vec(base.w1_re.val().grad(&grads).unwrap());
        let g_w2 = host::to_vec(base.w2_im.val().grad(&grads).unwrap());
        let g_x = host::to_vec(x.grad(&grads).unwrap());

        let with = |set: &dyn Fn(&mut AfnoMixer<A>)| {
            let mut m = base.clone();
            set(&mut m);
            host::to_vec(loss(&m, x_t(&x0)))[0]
        };
        let p3 = |v: &[f64], shape| Param::from_tensor(host_tensor::<A, 3>(v, shape, &device));
        let fd_w1 = central_difference(&w1[..1], |v| {
            let mut w = w1.clone();
            w[0] = v[0];
            with(&|m| m.w1_re = p3(&w, [2, 2, 2]))
        });
        let fd_w2 = central_difference(&w2[5..6], |v| {
            let mut w = w2.clone();
            w[5] = v[0];
            with(&|m| m.w2_im = p3(&w, [2, 2, 2]))
        });
        let fd_x = central_difference(&x0, |v| host::to_vec(loss(&base, x_t(v)))[0]);
        assert_close(&g_w1[..1], &fd_w1, 1e-6, "w1_re[0, 0, 0]");
        assert_close(&g_w2[5..6], &fd_w2, 1e-6, "w2_im[1, 0, 1]");
        assert_close(&g_x, &fd_x, 1e-6, "x");
        assert!(g_w1[0].abs() > 1e-4 && g_w2[5].abs() > 1e-4, "trivial gradients {} {}", g_w1[0], g_w2[5]);
    }

    #[test]
    fn the_same_seed_gives_the_same_mixer() {
        let s = small();
        let (a, b, c) = (mixer::<T>(&s, [6, 5], 9), mixer::<T>(&s, [6, 5], 9), mixer::<T>(&s, [6, 5], 10));
        assert_eq!(params(&a), params(&b));
        assert_ne!(params(&a), params(&c));
        let p = params(&a);
        let std = (p.iter().map(|v| v * v).sum::<f64>() / p.len() as f64).sqrt();
        assert!(std > 0.005 && std < 0.05, "init std {std}");
        let x = host_tensor::<T, 4>(&values(4 * 30, "x"), [1, 6, 5, 4], &Default::default());
        assert_eq!(host::to_vec(a.forward(x.clone())), host::to_vec(b.forward(x)));
    }

    #[test]
    fn settings_read_from_toml_with_defaults() {
        let s: AfnoSettings = toml::from_str("width = 16\nnum_blocks = 4\nkept_modes = 0.5").unwrap();
        assert_eq!(s, AfnoSettings { width: 16, num_blocks: 4, kept_modes: 0.5, ..AfnoSettings::default() });
        assert!(toml::from_str::<AfnoSettings>("blocks = 4").is_err());
    }

    #[test]
    fn bad_settings_are_errors_naming_the_field() {
        let device = Default::default();
        let cases = [
            (AfnoSettings { num_blocks: 3, ..small() }, [6, 5], "num_blocks"),
            (AfnoSettings { num_blocks: 0, ..small() }, [6, 5], "num_blocks"),
            (AfnoSettings { width: 0, ..small() }, [6, 5], "width"),
            (AfnoSettings { hidden_factor: 0, ..small() }, [6, 5], "hidden_factor"),
            (AfnoSettings { sparsity_threshold: -0.1, ..small() }, [6, 5], "sparsity_threshold"),
            (AfnoSettings { sparsity_threshold: f64::NAN, ..small() }, [6, 5], "sparsity_threshold"),
            (AfnoSettings { kept_modes: 0.0, ..small() }, [6, 5], "kept_modes"),
            (AfnoSettings { kept_modes: 1.5, ..small() }, [6, 5], "kept_modes"),
            (small(), [1, 5], "grid"),
            (small(), [6, 1], "grid"),
        ];
        for (s, grid, field) in cases {
            let err = s.init::<T>(grid, &mut Seeds::new(0).stream("init"), &device).unwrap_err();
            assert!(err.to_string().contains(&format!("`{field}`")), "{field}: {err}");
        }
    }
}
