//! A small complex radix-2 FFT (f64, in place, power-of-two lengths) and 2-D transforms on
//! `Array2<Complex64>`, for the pseudo-spectral PDE generators.
//!
//! Conventions: the forward transform is `X[k] = sum_j x[j] exp(-2 pi i j k / n)` (unscaled), the
//! inverse is `x[j] = (1 / n) sum_k X[k] exp(2 pi i j k / n)`, so inverse after forward is the
//! identity. Lengths that are not powers of two are rejected with an error, never a panic.

use ndarray::Array2;
pub use num_complex::Complex64;

use crate::DataError;

/// Rejects lengths that are zero or not a power of two.
fn check_len(n: usize, what: &str) -> Result<(), DataError> {
    if n == 0 || !n.is_power_of_two() {
        return Err(
            mixer_core::Error::config(what, format!("{n} is not a power of two (the radix-2 FFT needs one)")).into()
        );
    }
    Ok(())
}

/// A radix-2 FFT of one power-of-two length: twiddle factors and the bit-reversal permutation.
#[derive(Clone, Debug)]
pub struct Fft {
    n: usize,
    /// `exp(-2 pi i k / n)` for `k < n / 2`.
    twiddles: Vec<Complex64>,
    /// Bit-reversed index of each position.
    reversed: Vec<usize>,
}

impl Fft {
    /// The plan for length `n`; an error unless `n` is a power of two (1 included).
    pub fn new(n: usize) -> Result<Self, DataError> {
        check_len(n, "fft length")?;
        let twiddles =
            (0..n / 2).map(|k| Complex64::from_polar(1.0, -2.0 * std::f64::consts::PI * k as f64 / n as f64)).collect();
        let bits = n.trailing_zeros();
        let reversed = (0..n).map(|i| if bits == 0 { 0 } else { i.reverse_bits() >> (usize::BITS - bits) }).collect();
        Ok(Self { n, twiddles, reversed })
    }

    /// The transform length.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether the length is zero (never: plans have length at least 1).
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Forward transform of `data` in place (unscaled); an error when its length is not the plan's.
    pub fn forward(&self, data: &mut [Complex64]) -> Result<(), DataError> {
        self.check_data(data.len())?;
        self.transform_strided(data, 1, false);
        Ok(())
    }

    /// Inverse transform of `data` in place (scaled by `1 / n`); an error when its length is not
    /// the plan's.
    pub fn inverse(&self, data: &mut [Complex64]) -> Result<(), DataError> {
        self.check_data(data.len())?;
        self.transform_strided(data, 1, true);
        let scale = 1.0 / self.n as f64;
        data.iter_mut().for_each(|v| *v *= scale);
        Ok(())
    }

    fn check_data(&self, len: usize) -> Result<(), DataError> {
        if len != self.n {
            return Err(mixer_core::Error::shape("FFT input length", self.n, len).into());
        }
        Ok(())
    }

    /// Transforms `n` vectors of `width` contiguous values, stored one after another (`data` has
    /// `n * width` values): element `e` of every vector is one sequence. `width = 1` is the plain
    /// 1-D transform; `width = cols` on a row-major `[n, cols]` block transforms its columns with
    /// whole rows as the butterflies' operands. Unscaled either way.
    fn transform_strided(&self, data: &mut [Complex64], width: usize, inverse: bool) {
        let n = self.n;
        debug_assert_eq!(data.len(), n * width);
        for i in 0..n {
            let j = self.reversed[i];
            if i < j {
                let (a, b) = data.split_at_mut(j * width);
                a[i * width..(i + 1) * width].swap_with_slice(&mut b[..width]);
            }
        }
        let mut half = 1;
        while half < n {
            let stride = n / (2 * half);
            for block in data.chunks_exact_mut(2 * half * width) {
                let (lo, hi) = block.split_at_mut(half * width);
                let pairs = lo.chunks_exact_mut(width).zip(hi.chunks_exact_mut(width));
                for ((a, b), w) in pairs.zip(self.twiddles.iter().step_by(stride)) {
                    let w = if inverse { w.conj() } else { *w };
                    if width == 1 {
                        let t = b[0] * w;
                        b[0] = a[0] - t;
                        a[0] += t;
                    } else {
                        for (x, y) in a.iter_mut().zip(b.iter_mut()) {
                            let t = *y * w;
                            *y = *x - t;
                            *x += t;
                        }
                    }
                }
            }
            half *= 2;
        }
    }
}

/// 2-D FFT plans for `[rows, cols]` arrays (both powers of two).
#[derive(Clone, Debug)]
pub struct Fft2 {
    rows: Fft,
    cols: Fft,
}

impl Fft2 {
    /// Plans for `[rows, cols]` arrays; an error unless both are powers of two.
    pub fn new(rows: usize, cols: usize) -> Result<Self, DataError> {
        check_len(rows, "fft rows")?;
        check_len(cols, "fft columns")?;
        Ok(Self { rows: Fft::new(rows)?, cols: Fft::new(cols)? })
    }

    /// The shape `(rows, cols)` the plans transform.
    pub fn dim(&self) -> (usize, usize) {
        (self.rows.n, self.cols.n)
    }

    /// Forward 2-D transform in place (unscaled); an error when `a` has another shape.
    pub fn forward(&self, a: &mut Array2<Complex64>) -> Result<(), DataError> {
        self.apply(a, false)
    }

    /// Inverse 2-D transform in place (scaled by `1 / (rows * cols)`); an error when `a` has
    /// another shape.
    pub fn inverse(&self, a: &mut Array2<Complex64>) -> Result<(), DataError> {
        self.apply(a, true)?;
        let scale = 1.0 / (self.rows.n * self.cols.n) as f64;
        a.iter_mut().for_each(|v| *v *= scale);
        Ok(())
    }

    fn apply(&self, a: &mut Array2<Complex64>, inverse: bool) -> Result<(), DataError> {
        if a.dim() != self.dim() {
            return Err(mixer_core::Error::shape("2-D FFT input (rows, cols)", self.dim(), a.dim()).into());
        }
        let cols = self.cols.n;
        match a.as_slice_mut() {
            Some(data) => self.apply_slice(data, cols, inverse),
            None => {
                // not in standard layout: transform a row-major copy
                let mut data: Vec<Complex64> = a.iter().copied().collect();
                self.apply_slice(&mut data, cols, inverse);
                a.iter_mut().zip(data).for_each(|(dst, src)| *dst = src);
            }
        }
        Ok(())
    }

    /// Unscaled transform of a row-major `[rows, cols]` buffer: every row, then every column
    /// (the column pass runs on whole rows at once).
    pub(crate) fn apply_slice(&self, data: &mut [Complex64], cols: usize, inverse: bool) {
        let rows = self.rows.n;
        // columns: butterflies on whole rows (contiguous, vectorisable)
        self.rows.transform_strided(data, cols, inverse);
        // rows: the same on the transpose, then back
        let mut t = vec![Complex64::new(0.0, 0.0); rows * cols];
        transpose(data, &mut t, rows, cols);
        self.cols.transform_strided(&mut t, rows, inverse);
        transpose(&t, data, cols, rows);
    }
}

/// Writes the transpose of row-major `[rows, cols]` `src` into `dst` (`[cols, rows]`), in blocks.
fn transpose(src: &[Complex64], dst: &mut [Complex64], rows: usize, cols: usize) {
    const BLOCK: usize = 16;
    for i0 in (0..rows).step_by(BLOCK) {
        for j0 in (0..cols).step_by(BLOCK) {
            for i in i0..(i0 + BLOCK).min(rows) {
                for j in j0..(j0 + BLOCK).min(cols) {
                    dst[j * rows + i] = src[i * cols + j];
                }
            }
        }
    }
}

/// Forward FFT of `data` in place (unscaled); an error unless its length is a power of two.
pub fn fft(data: &mut [Complex64]) -> Result<(), DataError> {
    Fft::new(data.len())?.forward(data)
}

/// Inverse FFT of `data` in place (scaled by `1 / n`); an error unless its length is a power of two.
pub fn ifft(data: &mut [Complex64]) -> Result<(), DataError> {
    Fft::new(data.len())?.inverse(data)
}

/// Forward 2-D FFT in place (unscaled); an error unless both sides are powers of two.
pub fn fft2(a: &mut Array2<Complex64>) -> Result<(), DataError> {
    let (r, c) = a.dim();
    Fft2::new(r, c)?.forward(a)
}

/// Inverse 2-D FFT in place (scaled by `1 / (rows * cols)`); an error unless both sides are
/// powers of two.
pub fn ifft2(a: &mut Array2<Complex64>) -> Result<(), DataError> {
    let (r, c) = a.dim();
    Fft2::new(r, c)?.inverse(a)
}

/// Signed integer wavenumber of index `m` of an `n`-point transform: `m` below `n / 2`, `m - n`
/// above; the Nyquist index `n / 2` gives `-n / 2`.
pub fn wavenumber(m: usize, n: usize) -> f64 {
    if 2 * m < n { m as f64 } else { m as f64 - n as f64 }
}

/// Wavenumbers of an `n x n` grid on the unit torus `[0, 1)^2`, for pseudo-spectral solvers:
/// derivative factors, the Laplacian symbol and the 2/3 dealiasing mask, flat in the row-major
/// order of `[n, n]` arrays (axis 0 is `x`, axis 1 is `y`).
#[derive(Clone, Debug)]
pub struct SpectralGrid {
    /// Cells per side (a power of two).
    pub(crate) n: usize,
    /// `2 pi k` of each index along one axis; 0 at the Nyquist index (whose odd derivative is
    /// not representable on the grid).
    pub(crate) derivative: Vec<f64>,
    /// `4 pi^2 |k|^2` of each mode (the symbol of `-Laplacian`), Nyquist included.
    pub(crate) laplacian: Vec<f64>,
    /// Whether each mode survives the 2/3 rule (`3 |k_x| < n` and `3 |k_y| < n`).
    pub(crate) keep: Vec<bool>,
    /// The 2-D transform plans.
    pub(crate) plan: Fft2,
}

impl SpectralGrid {
    /// The wavenumbers and plans of an `n x n` grid; an error unless `n` is a power of two.
    pub fn new(n: usize) -> Result<Self, DataError> {
        let plan = Fft2::new(n, n)?;
        let two_pi = 2.0 * std::f64::consts::PI;
        let k: Vec<f64> = (0..n).map(|m| wavenumber(m, n)).collect();
        let derivative =
            k.iter().enumerate().map(|(m, &k)| if n > 1 && 2 * m == n { 0.0 } else { two_pi * k }).collect();
        let mut laplacian = Vec::with_capacity(n * n);
        let mut keep = Vec::with_capacity(n * n);
        for &kx in &k {
            for &ky in &k {
                laplacian.push(two_pi * two_pi * (kx * kx + ky * ky));
                keep.push(3.0 * kx.abs() < n as f64 && 3.0 * ky.abs() < n as f64);
            }
        }
        Ok(Self { n, derivative, laplacian, keep, plan })
    }

    /// Cells per side.
    pub fn size(&self) -> usize {
        self.n
    }

    /// The spectrum (unscaled forward transform) of a real `[n, n]` field.
    pub fn spectrum(&self, field: &Array2<f64>) -> Result<Array2<Complex64>, DataError> {
        let mut a = field.mapv(|v| Complex64::new(v, 0.0));
        self.plan.forward(&mut a)?;
        Ok(a)
    }

    /// The real field of a spectrum (the inverse transform's real part).
    pub fn field(&self, spectrum: &Array2<Complex64>) -> Result<Array2<f64>, DataError> {
        let mut a = spectrum.clone();
        self.plan.inverse(&mut a)?;
        Ok(a.mapv(|v| v.re))
    }

    /// Inverse transform of a row-major `[n, n]` buffer in place, scaled by `1 / n^2`.
    pub(crate) fn inverse_slice(&self, data: &mut [Complex64]) {
        self.plan.apply_slice(data, self.n, true);
        let scale = 1.0 / (self.n * self.n) as f64;
        data.iter_mut().for_each(|v| *v *= scale);
    }

    /// Forward transform of a row-major `[n, n]` buffer in place (unscaled).
    pub(crate) fn forward_slice(&self, data: &mut [Complex64]) {
        self.plan.apply_slice(data, self.n, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng as _, SeedableRng};

    fn random(n: usize, seed: u64) -> Vec<Complex64> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| Complex64::new(rng.random::<f64>() - 0.5, rng.random::<f64>() - 0.5)).collect()
    }

    fn dft(x: &[Complex64], sign: f64) -> Vec<Complex64> {
        let n = x.len();
        (0..n)
            .map(|k| {
                x.iter()
                    .enumerate()
                    .map(|(j, v)| {
                        let angle = sign * 2.0 * std::f64::consts::PI * ((j * k) % n) as f64 / n as f64;
                        v * Complex64::from_polar(1.0, angle)
                    })
                    .sum()
            })
            .collect()
    }

    fn max_diff(a: &[Complex64], b: &[Complex64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| (x - y).norm()).fold(0.0, f64::max)
    }

    #[test]
    fn forward_and_inverse_match_the_direct_dft() {
        for (n, seed) in [(1, 0), (2, 1), (4, 2), (8, 3), (32, 4), (128, 5)] {
            let x = random(n, seed);
            let mut y = x.clone();
            fft(&mut y).unwrap();
            let want = dft(&x, -1.0);
            assert!(max_diff(&y, &want) < 1e-12 * n as f64, "n = {n}: {}", max_diff(&y, &want));
            let mut z = x.clone();
            ifft(&mut z).unwrap();
            let want: Vec<Complex64> = dft(&x, 1.0).into_iter().map(|v| v / n as f64).collect();
            assert!(max_diff(&z, &want) < 1e-13, "n = {n}");
        }
    }

    #[test]
    fn round_trip_and_parseval() {
        let plan = Fft::new(256).unwrap();
        let x = random(256, 7);
        let mut y = x.clone();
        plan.forward(&mut y).unwrap();
        let energy: f64 = x.iter().map(|v| v.norm_sqr()).sum();
        let spectral: f64 = y.iter().map(|v| v.norm_sqr()).sum::<f64>() / 256.0;
        assert!((energy - spectral).abs() < 1e-12 * energy, "{energy} vs {spectral}");
        plan.inverse(&mut y).unwrap();
        assert!(max_diff(&x, &y) < 1e-14);
    }

    #[test]
    fn two_d_matches_the_direct_dft_and_round_trips() {
        let (r, c) = (4, 8);
        let x = Array2::from_shape_vec((r, c), random(r * c, 9)).unwrap();
        let mut y = x.clone();
        fft2(&mut y).unwrap();
        // direct: transform rows, then columns
        let mut want = x.clone();
        for mut row in want.rows_mut() {
            let t = dft(&row.to_vec(), -1.0);
            row.iter_mut().zip(t).for_each(|(d, s)| *d = s);
        }
        for mut col in want.columns_mut() {
            let t = dft(&col.to_vec(), -1.0);
            col.iter_mut().zip(t).for_each(|(d, s)| *d = s);
        }
        assert!(max_diff(y.as_slice().unwrap(), want.as_slice().unwrap()) < 1e-12);
        let energy: f64 = x.iter().map(|v| v.norm_sqr()).sum();
        let spectral: f64 = y.iter().map(|v| v.norm_sqr()).sum::<f64>() / (r * c) as f64;
        assert!((energy - spectral).abs() < 1e-12 * energy);
        ifft2(&mut y).unwrap();
        assert!(max_diff(y.as_slice().unwrap(), x.as_slice().unwrap()) < 1e-14);
        // a transposed (non-standard layout) view gives the transposed result
        let mut t = x.t().to_owned();
        let mut tv = x.clone().reversed_axes();
        fft2(&mut t).unwrap();
        Fft2::new(c, r).unwrap().forward(&mut tv).unwrap();
        assert!(max_diff(&t.iter().copied().collect::<Vec<_>>(), &tv.iter().copied().collect::<Vec<_>>()) < 1e-12);
    }

    #[test]
    fn rejects_lengths_that_are_not_powers_of_two() {
        for n in [0, 3, 6, 12, 48] {
            let err = Fft::new(n).unwrap_err().to_string();
            assert!(err.contains("not a power of two"), "{err}");
        }
        assert!(fft(&mut [Complex64::new(1.0, 0.0); 6]).is_err());
        assert!(Fft2::new(8, 12).is_err());
        let plan = Fft::new(8).unwrap();
        let err = plan.forward(&mut [Complex64::new(0.0, 0.0); 4]).unwrap_err().to_string();
        assert!(err.contains("expected 8, found 4"), "{err}");
        let err = Fft2::new(4, 4).unwrap().forward(&mut Array2::zeros((4, 8))).unwrap_err().to_string();
        assert!(err.contains("(4, 4)"), "{err}");
    }

    #[test]
    fn wavenumbers_are_signed() {
        let k: Vec<f64> = (0..8).map(|m| wavenumber(m, 8)).collect();
        assert_eq!(k, vec![0.0, 1.0, 2.0, 3.0, -4.0, -3.0, -2.0, -1.0]);
    }
}
