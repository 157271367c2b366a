//! The arithmetic of frozen host experts: matrix products through `matrixmultiply` and a
//! branch-free, vectorisable exponential for the swish, in `f32` or `f64`.

use mixer_core::HostFloat;
use mixer_ode::HostSolver;

use crate::{ExpertError, FrozenExpert};

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

    /// [`FrozenExpert::integrate`] in this type: a method of the concrete type, so that the
    /// rollout is compiled in this crate at its optimisation level rather than in the (generic)
    /// caller's crate.
    #[doc(hidden)]
    fn integrate_frozen(
        expert: &FrozenExpert<Self>,
        solver: &HostSolver,
        ctx: &[f64],
        rate: Option<&[f64]>,
        y0: &[Self],
        times: &[f64],
    ) -> Result<mixer_core::Result<Vec<Self>>, ExpertError>;
}

/// Products of at most this many multiply-adds whose `b` is row-major skip `matrixmultiply`:
/// at the sizes of expert fields (a few dozen rows, `k` from 2 to 64) its packing of both
/// operands at every call costs more than the product itself.
const SMALL_PRODUCT: usize = 1 << 20;

/// `c = a b + beta c` (see [`HostKernel::gemm_raw`]), after checking shapes and bounds.
pub(crate) fn gemm<T: HostKernel>(a: MatRef<'_, T>, b: MatRef<'_, T>, beta: T, c: &mut [T]) {
    assert!(a.cols == b.rows && c.len() == a.rows * b.cols, "gemm shapes");
    assert!(a.in_bounds() && b.in_bounds(), "gemm views out of bounds");
    if a.rows == 0 || b.cols == 0 {
        return;
    }
    if b.col_stride == 1 && a.rows * a.cols * b.cols <= SMALL_PRODUCT {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F.
                return unsafe { small_gemm_avx512(a, b, beta, c) };
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2.
                return unsafe { small_gemm_avx2(a, b, beta, c) };
            }
        }
        small_gemm(a, b, beta, c);
    } else {
        T::gemm_raw(a, b, beta, c);
    }
}

/// [`small_gemm`] compiled for AVX-512 (sixteen lanes). No fused multiply-add: every lane does
/// the same multiplications and additions in the same order as the scalar code, so results are
/// bitwise the same on every CPU.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn small_gemm_avx512<T: HostKernel>(a: MatRef<'_, T>, b: MatRef<'_, T>, beta: T, c: &mut [T]) {
    small_gemm(a, b, beta, c)
}

/// [`small_gemm`] compiled for AVX2 (eight lanes), bitwise like the others.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn small_gemm_avx2<T: HostKernel>(a: MatRef<'_, T>, b: MatRef<'_, T>, beta: T, c: &mut [T]) {
    small_gemm(a, b, beta, c)
}

/// `c = a b + beta c` for a row-major `b`, in blocks of up to sixteen columns: each block of a
/// row of `c` is accumulated in registers over `k` (one row of `b` scaled by one entry of `a`
/// per step, a loop the compiler vectorises), then stored once; nothing is packed.
#[inline(always)]
fn small_gemm<T: HostKernel>(a: MatRef<'_, T>, b: MatRef<'_, T>, beta: T, c: &mut [T]) {
    let mut at = 0;
    while at < b.cols {
        at += match b.cols - at {
            16.. => columns::<T, 16>(a, b, beta, c, at),
            8.. => columns::<T, 8>(a, b, beta, c, at),
            4.. => columns::<T, 4>(a, b, beta, c, at),
            2.. => columns::<T, 2>(a, b, beta, c, at),
            _ => columns::<T, 1>(a, b, beta, c, at),
        };
    }
}

/// Columns `at..at + W` of [`small_gemm`]; returns `W`.
#[inline(always)]
fn columns<T: HostKernel, const W: usize>(
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    beta: T,
    c: &mut [T],
    at: usize,
) -> usize {
    let n = b.cols;
    for (i, row) in c.chunks_exact_mut(n).enumerate() {
        let ci = &mut row[at..at + W];
        let mut acc = [T::ZERO; W];
        if beta != T::ZERO {
            for j in 0..W {
                acc[j] = ci[j] * beta;
            }
        }
        for kk in 0..a.cols {
            let aik = a.data[i * a.row_stride + kk * a.col_stride];
            let bk = &b.data[kk * b.row_stride + at..][..W];
            for j in 0..W {
                acc[j] += aik * bk[j];
            }
        }
        ci.copy_from_slice(&acc);
    }
    W
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

            fn integrate_frozen(
                expert: &FrozenExpert<Self>,
                solver: &HostSolver,
                ctx: &[f64],
                rate: Option<&[f64]>,
                y0: &[Self],
                times: &[f64],
            ) -> Result<mixer_core::Result<Vec<Self>>, ExpertError> {
                crate::host_expert::integrate_frozen(expert, solver, ctx, rate, y0, times)
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
    fn gemm_matches_a_naive_product_with_transposes_blocks_and_accumulation() {
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
        // the unpacked path for row-major right operands: every column block width, strided `a`
        for n in [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 64] {
            let (m, k) = (3, 5);
            let a: Vec<f64> = (0..m * k).map(|i| ((i * 7 % 11) as f64 - 5.0) * 0.3).collect();
            let b: Vec<f64> = (0..k * n).map(|i| ((i * 5 % 13) as f64 - 6.0) * 0.2).collect();
            for beta in [0.0, 1.0, 0.5] {
                let start: Vec<f64> = (0..m * n).map(|i| i as f64 * 0.1).collect();
                let mut c = start.clone();
                // `a` seen through its transpose: `a_t` is `[k, m]` row-major
                let a_t: Vec<f64> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
                gemm(MatRef::transposed(&a_t, m, k), MatRef::row_major(&b, k, n), beta, &mut c);
                for i in 0..m {
                    for j in 0..n {
                        let dot: f64 = (0..k).map(|l| a[i * k + l] * b[l * n + j]).sum();
                        let want = dot + beta * start[i * n + j];
                        assert!((c[i * n + j] - want).abs() < 1e-12, "n {n} beta {beta}: {} vs {want}", c[i * n + j]);
                    }
                }
            }
        }
        let mut c = vec![f32::NAN; 8];
        let (a32, w32): (Vec<f32>, Vec<f32>) = (a.map(|v| v as f32).to_vec(), w.iter().map(|&v| v as f32).collect());
        gemm(MatRef::row_major(&a32, 2, 3), MatRef::transposed(&w32, 3, 4), 0.0, &mut c);
        assert!(c.iter().all(|v| v.is_finite()), "beta = 0 must not read c");
    }
}
