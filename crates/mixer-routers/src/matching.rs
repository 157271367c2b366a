//! Cluster → expert matching on a cost matrix `[clusters, experts]` (clusters <= experts).

use ndarray::Array2;

/// Median of values (mean of the two middle values for an even count); `NaN` for none.
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 { values[n / 2] } else { 0.5 * (values[n / 2 - 1] + values[n / 2]) }
}

/// Median loss of every expert over each cluster's members: `losses [E, K]`, `labels [E]` → `[clusters, K]`.
pub fn cluster_losses(losses: &Array2<f64>, labels: &[usize], clusters: usize) -> Array2<f64> {
    let k = losses.ncols();
    let mut out = Array2::from_elem((clusters, k), f64::NAN);
    for c in 0..clusters {
        let members: Vec<usize> = (0..labels.len()).filter(|&e| labels[e] == c).collect();
        for j in 0..k {
            let mut v: Vec<f64> = members.iter().map(|&e| losses[[e, j]]).collect();
            out[[c, j]] = median(&mut v);
        }
    }
    out
}

/// Cost of the [`crate::Matching::Overlap`] matching, `[clusters, K]`: minus the number of a
/// cluster's environments routed to each expert now, plus the expert's share of the cluster's
/// summed `losses` (below 1, so losses only break ties in overlap).
pub fn overlap_cost(losses: &Array2<f64>, labels: &[usize], current: &[usize], clusters: usize) -> Array2<f64> {
    let k = losses.ncols();
    let mut cost = Array2::zeros((clusters, k));
    for (&c, &e) in labels.iter().zip(current) {
        cost[[c, e]] -= 1.0;
    }
    let median_losses = cluster_losses(losses, labels, clusters);
    for (mut row, l) in cost.rows_mut().into_iter().zip(median_losses.rows()) {
        let total: f64 = l.iter().filter(|v| v.is_finite()).sum();
        if total > 0.0 {
            for (c, v) in row.iter_mut().zip(l) {
                *c += if v.is_finite() { 0.5 * v / total } else { 0.5 };
            }
        }
    }
    cost
}

/// Greedy matching: cluster by cluster in index order, the untaken expert with the lowest cost
/// (ties to the lowest expert index). Returns the expert of each cluster.
pub fn greedy(cost: &Array2<f64>) -> Vec<usize> {
    let (rows, cols) = cost.dim();
    let mut taken = vec![false; cols];
    let mut out = Vec::with_capacity(rows);
    for r in 0..rows {
        let mut best: Option<usize> = None;
        for c in (0..cols).filter(|&c| !taken[c]) {
            if best.is_none_or(|b| cost[[r, c]] < cost[[r, b]]) {
                best = Some(c);
            }
        }
        // rows <= cols, so an untaken column always exists.
        let c = best.unwrap_or(0);
        taken[c] = true;
        out.push(c);
    }
    out
}

/// Optimal assignment (Hungarian algorithm with row/column potentials, `O(rows^2 cols)`), rows <= cols.
/// Returns the column of each row; the total cost is minimal over all injective assignments.
pub fn hungarian(cost: &Array2<f64>) -> Vec<usize> {
    let (n, m) = cost.dim();
    // 1-based arrays; column 0 is a virtual column holding the row being inserted.
    let mut u = vec![0.0; n + 1];
    let mut v = vec![0.0; m + 1];
    let mut row_of = vec![0usize; m + 1];
    let mut way = vec![0usize; m + 1];
    for i in 1..=n {
        row_of[0] = i;
        let mut j0 = 0;
        let mut minv = vec![f64::INFINITY; m + 1];
        let mut used = vec![false; m + 1];
        loop {
            used[j0] = true;
            let i0 = row_of[j0];
            let mut delta = f64::INFINITY;
            let mut j1 = 0;
            for j in 1..=m {
                if used[j] {
                    continue;
                }
                let reduced = cost[[i0 - 1, j - 1]] - u[i0] - v[j];
                if reduced < minv[j] {
                    minv[j] = reduced;
                    way[j] = j0;
                }
                if minv[j] < delta {
                    delta = minv[j];
                    j1 = j;
                }
            }
            for j in 0..=m {
                if used[j] {
                    u[row_of[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if row_of[j0] == 0 {
                break;
            }
        }
        // Augment along the alternating path.
        loop {
            let j1 = way[j0];
            row_of[j0] = row_of[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    let mut out = vec![0; n];
    for j in 1..=m {
        if row_of[j] > 0 {
            out[row_of[j] - 1] = j - 1;
        }
    }
    out
}

/// Total cost of an assignment (`assignment[r]` = column of row r).
pub fn total_cost(cost: &Array2<f64>, assignment: &[usize]) -> f64 {
    assignment.iter().enumerate().map(|(r, &c)| cost[[r, c]]).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn brute_force(cost: &Array2<f64>) -> f64 {
        fn rec(cost: &Array2<f64>, r: usize, taken: &mut Vec<bool>) -> f64 {
            if r == cost.nrows() {
                return 0.0;
            }
            let mut best = f64::INFINITY;
            for c in 0..cost.ncols() {
                if !taken[c] {
                    taken[c] = true;
                    best = best.min(cost[[r, c]] + rec(cost, r + 1, taken));
                    taken[c] = false;
                }
            }
            best
        }
        rec(cost, 0, &mut vec![false; cost.ncols()])
    }

    #[test]
    fn median_odd_and_even() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn cluster_losses_are_medians_of_members() {
        let losses = array![[1.0, 9.0], [3.0, 8.0], [100.0, 7.0], [5.0, 0.5]];
        let cl = cluster_losses(&losses, &[0, 0, 0, 1], 2);
        assert_eq!(cl, array![[3.0, 8.0], [5.0, 0.5]]);
    }

    #[test]
    fn hungarian_beats_greedy_where_greedy_is_suboptimal() {
        // Greedy: row 0 takes column 0 (1.0), row 1 must take column 1 (100.0): total 101.
        // Optimal: row 0 -> column 1 (2.0), row 1 -> column 0 (1.5): total 3.5.
        let cost = array![[1.0, 2.0], [1.5, 100.0]];
        let g = greedy(&cost);
        let h = hungarian(&cost);
        assert_eq!(g, vec![0, 1]);
        assert_eq!(h, vec![1, 0]);
        assert_eq!(total_cost(&cost, &g), 101.0);
        assert_eq!(total_cost(&cost, &h), 3.5);
    }

    #[test]
    fn hungarian_matches_brute_force_on_rectangular_matrices() {
        let cost = array![[4.0, 1.0, 3.0, 7.0], [2.0, 0.0, 5.0, 1.0], [3.0, 2.0, 2.0, 6.0]];
        let h = hungarian(&cost);
        let mut seen = h.clone();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 3);
        assert!((total_cost(&cost, &h) - brute_force(&cost)).abs() < 1e-12);
        let sq = array![[9.0, 2.0, 7.0, 8.0], [6.0, 4.0, 3.0, 7.0], [5.0, 8.0, 1.0, 8.0], [7.0, 6.0, 9.0, 4.0]];
        assert_eq!(total_cost(&sq, &hungarian(&sq)), 13.0);
        assert_eq!(brute_force(&sq), 13.0);
    }

    #[test]
    fn greedy_breaks_ties_to_lowest_expert() {
        assert_eq!(greedy(&array![[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]), vec![0, 1]);
    }

    #[test]
    fn overlap_matching_keeps_experts_and_breaks_ties_by_loss() {
        // five environments on experts [2, 2, 0, 0, 1]; k-means labels them [1, 1, 0, 0, 2]
        let current = [2, 2, 0, 0, 1];
        let labels = [1, 1, 0, 0, 2];
        // losses favour a permutation (every environment fits expert 1 best)
        let losses = array![[3.0, 1.0, 2.0], [3.0, 1.0, 2.0], [3.0, 1.0, 2.0], [3.0, 1.0, 2.0], [3.0, 1.0, 2.0]];
        let cost = overlap_cost(&losses, &labels, &current, 3);
        assert_eq!(hungarian(&cost), vec![0, 2, 1], "cluster 0 stays on expert 0, 1 on 2, 2 on 1");
        assert!((cost[[1, 2]] - (-2.0 + 0.5 * 2.0 / 6.0)).abs() < 1e-12);
        // a cluster split evenly between two experts goes to the one that fits it better
        let cost = overlap_cost(&losses, &[0, 0, 1, 1, 1], &[0, 1, 2, 2, 2], 2);
        assert_eq!(hungarian(&cost)[0], 1);
    }
}
