//! Reconstruction and routing metrics (MIXER.md §5), computed on host arrays.
//!
//! Trajectory metrics take predictions and truths of one environment, `[trajs, steps, dim]`,
//! and return one number per environment; [`Summary`] gives the mean ± std over environments.

use ndarray::ArrayView3;
use serde::{Deserialize, Serialize};

/// Mean squared error over trajectories, times and dimensions.
pub fn mse(pred: ArrayView3<f64>, truth: ArrayView3<f64>) -> f64 {
    let n = pred.len().max(1) as f64;
    pred.iter().zip(truth.iter()).map(|(p, t)| (p - t).powi(2)).sum::<f64>() / n
}

/// ODEBench relative L2: mean over trajectories and times of `||y^ - y||^2 / ||max(|y|, 1e-6)||^2`.
pub fn rel_l2(pred: ArrayView3<f64>, truth: ArrayView3<f64>) -> f64 {
    let (trajs, steps, dim) = pred.dim();
    let mut total = 0.0;
    for i in 0..trajs {
        for k in 0..steps {
            let (mut num, mut den) = (0.0, 0.0);
            for j in 0..dim {
                let y = truth[[i, k, j]];
                num += (pred[[i, k, j]] - y).powi(2);
                den += y.abs().max(1e-6).powi(2);
            }
            total += num / den;
        }
    }
    total / (trajs * steps).max(1) as f64
}

/// Mean absolute percentage error (NCF), ignoring entries with `|y| <= 1e-3`.
pub fn mape(pred: ArrayView3<f64>, truth: ArrayView3<f64>) -> f64 {
    let (sum, count) = pred
        .iter()
        .zip(truth.iter())
        .filter(|(_, t)| t.abs() > 1e-3)
        .fold((0.0, 0usize), |(s, c), (p, t)| (s + ((p - t) / t).abs(), c + 1));
    if count == 0 { 0.0 } else { sum / count as f64 }
}

/// Mean and population standard deviation of per-environment values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Mean over environments.
    pub mean: f64,
    /// Standard deviation over environments (population).
    pub std: f64,
    /// The per-environment values.
    pub per_env: Vec<f64>,
}

impl Summary {
    /// Summarises per-environment values.
    pub fn new(per_env: Vec<f64>) -> Self {
        let n = per_env.len().max(1) as f64;
        let mean = per_env.iter().sum::<f64>() / n;
        let std = (per_env.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
        Self { mean, std, per_env }
    }
}

/// Share of units whose assignment equals the majority assignment of their family.
pub fn purity(families: &[usize], assignment: &[usize]) -> f64 {
    let table = contingency(families, assignment);
    let majority: usize = table.iter().map(|row| row.iter().copied().max().unwrap_or(0)).sum();
    majority as f64 / families.len().max(1) as f64
}

/// Normalised mutual information `2 I(F; A) / (H(F) + H(A))` between families and assignments
/// (1 when both partitions are trivial).
pub fn nmi(families: &[usize], assignment: &[usize]) -> f64 {
    let table = contingency(families, assignment);
    let n = families.len() as f64;
    if n == 0.0 {
        return 1.0;
    }
    let rows: Vec<f64> = table.iter().map(|r| r.iter().sum::<usize>() as f64).collect();
    let cols: Vec<f64> =
        (0..table.first().map_or(0, Vec::len)).map(|j| table.iter().map(|r| r[j]).sum::<usize>() as f64).collect();
    let entropy =
        |counts: &[f64]| -> f64 { counts.iter().filter(|&&c| c > 0.0).map(|&c| -(c / n) * (c / n).ln()).sum() };
    let (hf, ha) = (entropy(&rows), entropy(&cols));
    if hf + ha == 0.0 {
        return 1.0;
    }
    let mut mi = 0.0;
    for (i, row) in table.iter().enumerate() {
        for (j, &c) in row.iter().enumerate() {
            if c > 0 {
                let p = c as f64 / n;
                mi += p * (p * n * n / (rows[i] * cols[j])).ln();
            }
        }
    }
    2.0 * mi / (hf + ha)
}

/// Counts `[family][assignment]`.
fn contingency(families: &[usize], assignment: &[usize]) -> Vec<Vec<usize>> {
    assert_eq!(families.len(), assignment.len(), "one assignment per labelled unit");
    let nf = families.iter().max().map_or(0, |m| m + 1);
    let na = assignment.iter().max().map_or(0, |m| m + 1);
    let mut table = vec![vec![0usize; na]; nf];
    for (&f, &a) in families.iter().zip(assignment) {
        table[f][a] += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    #[test]
    fn trajectory_metrics_match_hand_values() {
        let truth = Array3::from_shape_vec((1, 2, 2), vec![1.0, 2.0, 0.0, 0.0005]).unwrap();
        let pred = Array3::from_shape_vec((1, 2, 2), vec![2.0, 2.0, 1.0, 0.0]).unwrap();
        // squared errors: 1, 0, 1, 0.00000025
        assert!((mse(pred.view(), truth.view()) - (2.0 + 2.5e-7) / 4.0).abs() < 1e-15);
        // t0: 1 / (1 + 4) = 0.2; t1: (1 + 2.5e-7) / (1e-12 + 2.5e-7)
        let want = 0.5 * (0.2 + (1.0 + 2.5e-7) / (1e-12 + 2.5e-7));
        assert!((rel_l2(pred.view(), truth.view()) - want).abs() / want < 1e-12);
        // only 1.0 and 2.0 count: |2-1|/1 = 1, 0 -> mean 0.5
        assert!((mape(pred.view(), truth.view()) - 0.5).abs() < 1e-15);
        let s = Summary::new(vec![1.0, 3.0]);
        assert_eq!((s.mean, s.std), (2.0, 1.0));
    }

    #[test]
    fn routing_metrics_match_hand_values() {
        let fam = [0, 0, 0, 1, 1, 1];
        assert_eq!(purity(&fam, &[2, 2, 2, 0, 0, 0]), 1.0);
        assert!((nmi(&fam, &[2, 2, 2, 0, 0, 0]) - 1.0).abs() < 1e-12);
        assert!((purity(&fam, &[0, 0, 1, 1, 1, 1]) - 5.0 / 6.0).abs() < 1e-12);
        // independent partitions: MI = 0
        assert!(nmi(&[0, 0, 1, 1], &[0, 1, 0, 1]).abs() < 1e-12);
        // hand computed: F = {0,0,1,1}, A = {0,0,0,1}; H(F) = ln 2, H(A) = -(3/4 ln 3/4 + 1/4 ln 1/4)
        let hf = 2f64.ln();
        let ha = -(0.75f64 * 0.75f64.ln() + 0.25 * 0.25f64.ln());
        let mi = 0.5 * (0.5f64 / (0.5 * 0.75)).ln() + 0.25 * (0.25f64 / (0.5 * 0.75)).ln() + 0.25 * 2f64.ln();
        assert!((nmi(&[0, 0, 1, 1], &[0, 0, 0, 1]) - 2.0 * mi / (hf + ha)).abs() < 1e-12);
    }
}
