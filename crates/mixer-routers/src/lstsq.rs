//! Minimum-norm least squares `argmin_G ||X G - Y||` through nalgebra's SVD.

use nalgebra::DMatrix;
use ndarray::Array2;

use crate::RouterError;

/// Solves `X G ≈ Y` for `X: [n, p]`, `Y: [n, q]`, returning the minimum-norm solution `G: [p, q]`
/// (singular values below `max(n, p) * eps * s_max` are treated as zero, as `numpy.linalg.lstsq` does).
pub fn min_norm_lstsq(x: &Array2<f64>, y: &Array2<f64>) -> Result<Array2<f64>, RouterError> {
    let (n, p) = x.dim();
    let q = y.ncols();
    if y.nrows() != n {
        return Err(mixer_core::Error::shape("least-squares targets", [n, q], y.dim()).into());
    }
    let xm = DMatrix::from_row_iterator(n, p, x.iter().copied());
    let ym = DMatrix::from_row_iterator(n, q, y.iter().copied());
    let svd = xm.svd(true, true);
    let s_max = svd.singular_values.iter().fold(0.0_f64, |m, s| m.max(*s));
    let eps = (n.max(p) as f64) * f64::EPSILON * s_max;
    let g = svd.solve(&ym, eps).map_err(|reason| RouterError::LeastSquares { reason: reason.to_string() })?;
    Ok(Array2::from_shape_fn((p, q), |(i, j)| g[(i, j)]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn overdetermined_matches_normal_equations() {
        // Fit y = 2 x + 1 through 4 noisy-free points: exact.
        let x = array![[0.0, 1.0], [1.0, 1.0], [2.0, 1.0], [3.0, 1.0]];
        let y = array![[1.0], [3.0], [5.0], [7.0]];
        let g = min_norm_lstsq(&x, &y).unwrap();
        assert!((g[[0, 0]] - 2.0).abs() < 1e-12 && (g[[1, 0]] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn underdetermined_gives_minimum_norm_solution() {
        // x1 + x2 = 2 has minimum-norm solution (1, 1).
        let g = min_norm_lstsq(&array![[1.0, 1.0]], &array![[2.0]]).unwrap();
        assert!((g[[0, 0]] - 1.0).abs() < 1e-12 && (g[[1, 0]] - 1.0).abs() < 1e-12);
        // Rank-deficient: duplicated column splits the weight evenly.
        let g = min_norm_lstsq(&array![[1.0, 1.0], [2.0, 2.0]], &array![[2.0], [4.0]]).unwrap();
        assert!((g[[0, 0]] - 1.0).abs() < 1e-10 && (g[[1, 0]] - 1.0).abs() < 1e-10);
    }
}
