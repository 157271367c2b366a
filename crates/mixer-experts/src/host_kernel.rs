//! The arithmetic of frozen host experts: matrix products through `matrixmultiply` and a
//! branch-free, vectorisable exponential for the swish, in `f32` or `f64`.

use mixer_core::HostFloat;

/// A row-major or transposed view of a matrix in a slice: entry `(i, j)` is
/// `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a, T> {
    /// The values.
    pub data: &'a [T],
    /// Rows of the view.
    pub rows: usize,
    /// Columns of the view.
    pub cols: usize,
    /// Step between rows.
    pub row_stride: usize,
    /// Step between columns.
    pub col_stride: usize,
}

impl<'a, T> MatRef<'a, T> {
    /// A row-major `[rows, cols]` matrix.
    pub fn row_major(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self { data, rows, cols, row_stride: cols, col_stride: 1 }
    }

    /// The transpose of a row-major `[cols, rows]` matrix, seen as `[rows, cols]`.
    pub fn transposed(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self { data, rows, cols, row_stride: 1, col_stride: rows }
    }

    /// Whether every entry of the view lies inside `data`.
    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride < self.data.len()
    }
}

/// Host float types with the kernels of the frozen experts.
pub trait HostKernel: HostFloat {
    /// `c = a b + beta c` for `a: [m, k]`, `b: [k, n]` and row-major `c: [m, n]` (`c` is not
    /// read when `beta` is zero).
    #[doc(hidden)]
    fn gemm_raw(a: MatRef<'_, Self>, b: MatRef<'_, Self>, beta: Self, c: &mut [Self]);

    /// `e^x`, to a few units in the last place over the range where it is finite; NaN stays
    /// NaN, and arguments beyond the range are clamped (no overflow to infinity).
    fn fast_exp(self) -> Self;
}

/// `c = a b + beta c` (see [`HostKernel::gemm_raw`]), after checking shapes and bounds.
pub(crate) fn gemm<T: HostKernel>(a: MatRef<'_, T>, b: MatRef<'_, T>, beta: T, c: &mut [T]) {
    assert!(a.cols == b.rows && c.len() == a.rows * b.cols, "gemm shapes");
    assert!(a.in_bounds() && b.in_bounds(), "gemm views out of bounds");
    if a.rows == 0 || b.cols == 0 {
        return;
    }
    T::gemm_raw(a, b, beta, c);
}

/// `h * sigmoid(beta h)` in place, entrywise (`beta` as long as `h`).
pub(crate) fn swish_in_place<T: HostKernel>(h: &mut [T], beta: &[T]) {
    for (v, &b) in h.iter_mut().zip(beta) {
        let x = *v;
        *v = x / (T::ONE + (-(x * b)).fast_exp());
    }
}

macro_rules! host_kernel {
    ($t:ty, $gemm:path, $mant:expr, $bias:expr, $lo:expr, $hi:expr, $ln2_hi:expr, $ln2_lo:expr, [$($coef:expr),*]) => {
        impl HostKernel for $t {
            fn gemm_raw(a: MatRef<'_, Self>, b: MatRef<'_, Self>, beta: Self, c: &mut [Self]) {
                // SAFETY: `gemm` checked that both views lie inside their slices and that `c`
                // holds exactly `m * n` values, written row-major.
                unsafe {
                    $gemm(
                        a.rows,
                        a.cols,
                        b.cols,
                        1.0,
                        a.data.as_ptr(),
                        a.row_stride as isize,
                        a.col_stride as isize,
                        b.data.as_ptr(),
                        b.row_stride as isize,
                        b.col_stride as isize,
                        beta,
                        c.as_mut_ptr(),
                        b.cols as isize,
                        1,
                    )
                }
            }

            #[inline(always)]
            fn fast_exp(self) -> Self {
                // e^x = 2^n e^r with n = round(x / ln 2), |r| <= ln 2 / 2; the rounding adds and
                // subtracts 1.5 * 2^mant so that n also sits in the low bits of `shifted`
                const SHIFT: $t = 1.5 * (1u64 << $mant) as $t;
                let x = self.clamp($lo, $hi);
                let shifted = x * core::f64::consts::LOG2_E as $t + SHIFT;
                let n = shifted - SHIFT;
                let r = (x - n * $ln2_hi) - n * $ln2_lo;
                let mut p: $t = 0.0;
                $(p = p * r + $coef;)*
                let exponent = shifted.to_bits().wrapping_sub(SHIFT.to_bits()).wrapping_add($bias);
                p * <$t>::from_bits(exponent << $mant)
            }
        }
    };
}

// Taylor coefficients 1/k! from k = 13 (f64) or k = 7 (f32) down to 0: truncation below the
// last place on |r| <= ln 2 / 2.
host_kernel!(
    f64,
    matrixmultiply::dgemm,
    52,
    1023,
    -708.0,
    708.0,
    0.693_147_180_369_123_8,
    1.908_214_929_270_587_7e-10,
    [
        1.0 / 6_227_020_800.0,
        1.0 / 479_001_600.0,
        1.0 / 39_916_800.0,
        1.0 / 3_628_800.0,
        1.0 / 362_880.0,
        1.0 / 40_320.0,
        1.0 / 5_040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0
    ]
);
host_kernel!(
    f32,
    matrixmultiply::sgemm,
    23,
    127,
    -87.0,
    88.0,
    0.693_359_4,
    -2.121_944_4e-4,
    [1.0 / 5_040.0, 1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0]
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_is_accurate_over_the_finite_range() {
        let mut worst = (0.0f64, 0.0f32);
        for i in -6980..=6980 {
            let x = i as f64 * 0.1013;
            let want = x.exp();
            worst.0 = worst.0.max((x.fast_exp() - want).abs() / want);
            if x.abs() < 85.0 {
                let xf = x as f32;
                let wf = (xf as f64).exp();
                worst.1 = worst.1.max(((xf.fast_exp() as f64 - wf).abs() / wf) as f32);
            }
        }
        assert!(worst.0 < 1e-15, "f64 relative error {:e}", worst.0);
        assert!(worst.1 < 5e-7, "f32 relative error {:e}", worst.1);
        assert!(f64::NAN.fast_exp().is_nan() && f32::NAN.fast_exp().is_nan());
        assert!(1e6f64.fast_exp().is_finite() && (-1e6f64).fast_exp() >= 0.0);
        assert_eq!(0.0f64.fast_exp(), 1.0);
    }

    #[test]
    fn gemm_matches_a_naive_product_with_transposes_and_accumulation() {
        // a: [2, 3] row-major; b = w^T with w: [4, 3] row-major
        let a = [1.0, 2.0, 3.0, -1.0, 0.5, 2.0];
        let w: Vec<f64> = (0..12).map(|i| 0.1 * i as f64 - 0.4).collect();
        let mut c = vec![1.0; 8];
        gemm(MatRef::row_major(&a, 2, 3), MatRef::transposed(&w, 3, 4), 1.0, &mut c);
        for i in 0..2 {
            for j in 0..4 {
                let want: f64 = 1.0 + (0..3).map(|l| a[i * 3 + l] * w[j * 3 + l]).sum::<f64>();
                assert!((c[i * 4 + j] - want).abs() < 1e-14);
            }
        }
        let mut c = vec![f32::NAN; 8];
        let (a32, w32): (Vec<f32>, Vec<f32>) = (a.map(|v| v as f32).to_vec(), w.iter().map(|&v| v as f32).collect());
        gemm(MatRef::row_major(&a32, 2, 3), MatRef::transposed(&w32, 3, 4), 0.0, &mut c);
        assert!(c.iter().all(|v| v.is_finite()), "beta = 0 must not read c");
    }
}
