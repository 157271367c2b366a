//! A linear support-vector classifier for learned contexts (the MixER paper classifies EEG
//! series by an SVM on their contexts): L2-regularised hinge loss solved in the dual by
//! coordinate descent (Hsieh et al., ICML 2008), one-vs-rest over classes, features standardised
//! by the training set's mean and deviation, a bias as a constant feature. Coordinates are
//! visited in a fixed order, so a fit is deterministic.

use ndarray::{Array1, Array2, Axis};

use crate::TrainError;

/// A fitted one-vs-rest linear SVM.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearSvm {
    /// Per-feature mean and deviation of the training rows.
    mean: Array1<f64>,
    scale: Array1<f64>,
    /// One weight row per class, the bias last: `[classes, features + 1]`.
    weights: Array2<f64>,
}

/// Dual coordinate-descent sweeps at most; stops earlier when no coordinate moves by 1e-8.
const SWEEPS: usize = 1000;

impl LinearSvm {
    /// Fits `rows: [n, features]` with labels `0..classes` and penalty `c` (> 0).
    pub fn fit(rows: &Array2<f64>, labels: &[usize], c: f64) -> Result<Self, TrainError> {
        let (n, f) = rows.dim();
        if n == 0 || labels.len() != n {
            return Err(mixer_core::Error::shape("SVM labels", n, labels.len()).into());
        }
        if !(c > 0.0 && c.is_finite()) {
            return Err(mixer_core::Error::config("svm.c", format!("must be positive and finite, got {c}")).into());
        }
        mixer_core::ensure_finite("SVM features", rows.iter())?;
        let mean = rows.mean_axis(Axis(0)).unwrap_or_else(|| Array1::zeros(f));
        let scale = rows.std_axis(Axis(0), 0.0).mapv(|s| if s > 1e-12 { s } else { 1.0 });
        let x = standardised(rows, &mean, &scale);
        let classes = labels.iter().max().map_or(1, |m| m + 1).max(2);
        let mut weights = Array2::zeros((classes, f + 1));
        for k in 0..classes {
            let y: Vec<f64> = labels.iter().map(|&l| if l == k { 1.0 } else { -1.0 }).collect();
            weights.row_mut(k).assign(&binary_dual_cd(&x, &y, c));
        }
        Ok(Self { mean, scale, weights })
    }

    /// The class of each row (highest decision value; ties to the lowest class).
    pub fn predict(&self, rows: &Array2<f64>) -> Vec<usize> {
        let x = standardised(rows, &self.mean, &self.scale);
        let scores = x.dot(&self.weights.t());
        scores
            .outer_iter()
            .map(|s| s.iter().enumerate().fold((0, f64::NEG_INFINITY), |b, (k, &v)| if v > b.1 { (k, v) } else { b }).0)
            .collect()
    }

    /// Weights of class `k` in standardised units, the bias last.
    pub fn class_weights(&self, k: usize) -> Vec<f64> {
        self.weights.row(k).to_vec()
    }
}

/// `rows` standardised, with a constant 1 appended as the bias feature: `[n, features + 1]`.
fn standardised(rows: &Array2<f64>, mean: &Array1<f64>, scale: &Array1<f64>) -> Array2<f64> {
    let (n, f) = rows.dim();
    let mut x = Array2::ones((n, f + 1));
    x.slice_mut(ndarray::s![.., ..f]).assign(&((rows - mean) / scale));
    x
}

/// Weights of the binary problem `y ∈ {−1, 1}` (L1-loss SVM dual, box `[0, c]`).
fn binary_dual_cd(x: &Array2<f64>, y: &[f64], c: f64) -> Array1<f64> {
    let (n, f) = x.dim();
    let mut alpha = vec![0.0; n];
    let mut w = Array1::<f64>::zeros(f);
    let norms: Vec<f64> = x.outer_iter().map(|r| r.dot(&r)).collect();
    for _ in 0..SWEEPS {
        let mut moved = 0.0f64;
        for i in 0..n {
            if norms[i] == 0.0 {
                continue;
            }
            let xi = x.row(i);
            let gradient = y[i] * w.dot(&xi) - 1.0;
            let new = (alpha[i] - gradient / norms[i]).clamp(0.0, c);
            let step = new - alpha[i];
            if step != 0.0 {
                w.scaled_add(step * y[i], &xi);
                alpha[i] = new;
                moved = moved.max(step.abs());
            }
        }
        if moved < 1e-8 {
            break;
        }
    }
    w
}

/// Share of `predicted` equal to `truth`.
pub fn classification_accuracy(truth: &[usize], predicted: &[usize]) -> f64 {
    let hits = truth.iter().zip(predicted).filter(|(a, b)| a == b).count();
    hits as f64 / truth.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;
    use rand::Rng as _;

    #[test]
    fn two_points_give_the_hard_margin_hyperplane() {
        // (−1, 0) and (1, 0): standardised they stay (∓1, 0); the maximum-margin separator is
        // x = 0 with |w| = 1 and no bias (the bias is penalised like a weight, so with a large
        // c the dual solution is w = (1, 0, 0) for the class-1 problem).
        let rows = array![[-1.0, 0.0], [1.0, 0.0]];
        let svm = LinearSvm::fit(&rows, &[0, 1], 1e6).unwrap();
        let w = svm.class_weights(1);
        assert!((w[0] - 1.0).abs() < 1e-9 && w[1].abs() < 1e-12 && w[2].abs() < 1e-9, "{w:?}");
        assert_eq!(svm.predict(&array![[-3.0, 5.0], [0.5, -2.0]]), vec![0, 1]);
    }

    #[test]
    fn three_separable_clusters_are_classified() {
        let mut rng = mixer_core::Seeds::new(3).stream("svm");
        let centres = [[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]];
        let mut rows = Vec::new();
        let mut labels = Vec::new();
        for i in 0..90 {
            let k = i % 3;
            let (a, b): (f64, f64) = (rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0));
            rows.extend([centres[k][0] + a, centres[k][1] + b]);
            labels.push(k);
        }
        let rows = Array2::from_shape_vec((90, 2), rows).unwrap();
        let svm = LinearSvm::fit(&rows, &labels, 1.0).unwrap();
        assert_eq!(classification_accuracy(&labels, &svm.predict(&rows)), 1.0);
        assert_eq!(svm, LinearSvm::fit(&rows, &labels, 1.0).unwrap(), "deterministic");
    }

    #[test]
    fn bad_input_is_an_error() {
        let rows = array![[0.0, 1.0], [1.0, f64::NAN]];
        assert!(LinearSvm::fit(&rows, &[0, 1], 1.0).is_err());
        assert!(LinearSvm::fit(&array![[0.0], [1.0]], &[0], 1.0).is_err());
        assert!(LinearSvm::fit(&array![[0.0], [1.0]], &[0, 1], 0.0).is_err());
    }
}
