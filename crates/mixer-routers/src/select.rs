//! Deterministic selection on host values: ties always go to the lowest index.

/// Index of the largest value (ties to the lowest index; `NaN` never wins).
pub fn argmax_lowest(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] || values[best].is_nan() && !v.is_nan() {
            best = i;
        }
    }
    best
}

/// Indices of the `k` largest values in descending order (ties to the lowest index).
pub fn topk_lowest(values: &[f64], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    // Stable sort keeps equal values in index order.
    idx.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    idx.truncate(k);
    idx
}

/// Numerically stable softmax of one row.
pub fn softmax_row(logits: &[f64]) -> Vec<f64> {
    let m = logits.iter().fold(f64::NEG_INFINITY, |a, b| a.max(*b));
    let e: Vec<f64> = logits.iter().map(|l| (l - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_go_to_lowest_index() {
        assert_eq!(argmax_lowest(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax_lowest(&[f64::NAN, 0.5]), 1);
        assert_eq!(topk_lowest(&[2.0, 5.0, 2.0, 5.0, 1.0], 3), vec![1, 3, 0]);
    }

    #[test]
    fn softmax_row_sums_to_one_and_matches_hand_value() {
        let p = softmax_row(&[0.0, (2.0f64).ln()]);
        assert!((p[0] - 1.0 / 3.0).abs() < 1e-15 && (p[1] - 2.0 / 3.0).abs() < 1e-15);
    }
}
