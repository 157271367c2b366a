//! Reconstruction and routing metrics (MixER, Nzoyem et al. 2025), computed on host arrays.
//!
//! Trajectory metrics take predictions and truths of one environment, `[trajs, steps, dim]`,
//! and return one number per environment; [`Summary`] gives the mean ± std and the median over
//! environments.

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

/// Truth RMS below which [`rel_l2_env`] reports the absolute RMSE instead of a ratio.
pub const REL_L2_ENV_FLOOR: f64 = 1e-6;

/// Environment relative L2: `sqrt(sum ||y^ - y||^2 / sum ||y||^2)`, both sums over every
/// trajectory, time and dimension of the environment (`||Y^ - Y||_F / ||Y||_F`). When the truth's
/// RMS `sqrt(sum ||y||^2 / n)` is at most [`REL_L2_ENV_FLOOR`] (a truth resting at the origin) the
/// ratio is undefined and the RMSE `sqrt(sum ||y^ - y||^2 / n)` is returned (unit scale).
pub fn rel_l2_env(pred: ArrayView3<f64>, truth: ArrayView3<f64>) -> f64 {
    let n = pred.len().max(1) as f64;
    let err: f64 = pred.iter().zip(truth.iter()).map(|(p, t)| (p - t).powi(2)).sum();
    let energy: f64 = truth.iter().map(|t| t * t).sum();
    if energy > n * REL_L2_ENV_FLOOR * REL_L2_ENV_FLOOR { (err / energy).sqrt() } else { (err / n).sqrt() }
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

/// Median of `values`: the middle value, or the mean of the two middle ones for an even count
/// (0 when empty, like the mean of [`Summary`]).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => 0.5 * (v[n / 2 - 1] + v[n / 2]),
    }
}

/// Mean, population standard deviation and median of per-environment values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "SummaryFields")]
pub struct Summary {
    /// Mean over environments.
    pub mean: f64,
    /// Standard deviation over environments (population).
    pub std: f64,
    /// Median over environments (computed from `per_env` when an older file lacks it).
    pub median: f64,
    /// The per-environment values.
    pub per_env: Vec<f64>,
}

/// [`Summary`] as stored; files written before the median was added lack it.
#[derive(Deserialize)]
struct SummaryFields {
    mean: f64,
    std: f64,
    #[serde(default)]
    median: Option<f64>,
    per_env: Vec<f64>,
}

impl From<SummaryFields> for Summary {
    fn from(f: SummaryFields) -> Self {
        let median = f.median.unwrap_or_else(|| median(&f.per_env));
        Self { mean: f.mean, std: f.std, median, per_env: f.per_env }
    }
}

impl Summary {
    /// Summarises per-environment values.
    pub fn new(per_env: Vec<f64>) -> Self {
        let n = per_env.len().max(1) as f64;
        let mean = per_env.iter().sum::<f64>() / n;
        let std = (per_env.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
        Self { mean, std, median: median(&per_env), per_env }
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

/// Adjusted Rand index (Hubert & Arabie 1985) between two labellings of the same units: 1 for
/// identical partitions (up to renaming), about 0 for independent ones.
pub fn adjusted_rand_index(truth: &[usize], labels: &[usize]) -> f64 {
    let table = contingency(truth, labels);
    let pairs = |c: usize| (c * c.saturating_sub(1) / 2) as f64;
    let cells: f64 = table.iter().flatten().map(|&c| pairs(c)).sum();
    let rows: f64 = table.iter().map(|r| pairs(r.iter().sum())).sum();
    let cols: f64 = (0..table.first().map_or(0, Vec::len)).map(|j| pairs(table.iter().map(|r| r[j]).sum())).sum();
    let expected = rows * cols / pairs(truth.len()).max(1.0);
    let max = 0.5 * (rows + cols);
    if max == expected {
        return 1.0;
    }
    (cells - expected) / (max - expected)
}

/// The contingency table `[class][label]` and the one-to-one matching of classes to labels of
/// largest total overlap (Hungarian method; `assignment[class] >= labels` where none is left).
fn overlap_matching(truth: &[usize], labels: &[usize]) -> (Vec<Vec<usize>>, Vec<usize>) {
    let table = contingency(truth, labels);
    let (nr, nl) = (table.len(), table.first().map_or(0, Vec::len));
    let size = nr.max(nl);
    let mut cost = ndarray::Array2::<f64>::zeros((size, size));
    for (r, row) in table.iter().enumerate() {
        for (l, &c) in row.iter().enumerate() {
            cost[[r, l]] = -(c as f64);
        }
    }
    let assignment = mixer_routers::matching::hungarian(&cost);
    (table, assignment)
}

/// Mean over true regions of the intersection over union with the label matched to it, labels
/// matched to regions one to one by the Hungarian method on overlap; also returns the matching
/// (`matched[region] = label`, `usize::MAX` where a region has no label left).
pub fn matched_iou(truth: &[usize], labels: &[usize]) -> (f64, Vec<usize>) {
    let (table, assignment) = overlap_matching(truth, labels);
    let (nr, nl) = (table.len(), table.first().map_or(0, Vec::len));
    let region_size: Vec<usize> = table.iter().map(|r| r.iter().sum()).collect();
    let label_size: Vec<usize> = (0..nl).map(|l| table.iter().map(|r| r[l]).sum()).collect();
    let mut matched = vec![usize::MAX; nr];
    let mut total = 0.0;
    for r in 0..nr {
        let l = assignment[r];
        if l < nl {
            matched[r] = l;
            let inter = table[r][l] as f64;
            total += inter / ((region_size[r] + label_size[l]) as f64 - inter).max(1.0);
        }
    }
    (total / nr.max(1) as f64, matched)
}

/// Clustering accuracy after matching: the share of units whose label, matched one to one to a
/// true class by the Hungarian method on overlap, is their class (with fewer labels than
/// classes, the units of unmatched classes count as wrong).
pub fn matched_accuracy(truth: &[usize], labels: &[usize]) -> f64 {
    let (table, assignment) = overlap_matching(truth, labels);
    let (nr, nl) = (table.len(), table.first().map_or(0, Vec::len));
    let hits: usize = (0..nr).filter(|&r| assignment[r] < nl).map(|r| table[r][assignment[r]]).sum();
    hits as f64 / truth.len().max(1) as f64
}

/// Share of points with `|pred - truth| <= rtol |truth|` (percent close at `rtol = 0.01` is the
/// spatial mixture-of-experts paper's headline metric).
pub fn fraction_close(pred: &[f64], truth: &[f64], rtol: f64) -> f64 {
    assert_eq!(pred.len(), truth.len(), "one prediction per point");
    let close = pred.iter().zip(truth).filter(|(p, t)| (*p - *t).abs() <= rtol * t.abs()).count();
    close as f64 / pred.len().max(1) as f64
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
    fn region_recovery_metrics_match_hand_values() {
        // Identical partitions under renamed labels.
        assert_eq!(adjusted_rand_index(&[0, 0, 1, 1, 2], &[2, 2, 0, 0, 1]), 1.0);
        // The classic example: ARI of [0,0,0,1,1,1] vs [0,0,1,1,2,2] is 0.24242...
        let ari = adjusted_rand_index(&[0, 0, 0, 1, 1, 1], &[0, 0, 1, 1, 2, 2]);
        assert!((ari - 8.0 / 33.0).abs() < 1e-12, "{ari}");
        // Region 0 = {0,1,2}, region 1 = {3,4}; labels 1 on {0,1}, 0 on {2,3,4}.
        let (iou, matched) = matched_iou(&[0, 0, 0, 1, 1], &[1, 1, 0, 0, 0]);
        assert_eq!(matched, vec![1, 0]);
        // region 0 with label 1: 2 / 3; region 1 with label 0: 2 / 3.
        assert!((iou - 2.0 / 3.0).abs() < 1e-12, "{iou}");
        assert_eq!(fraction_close(&[1.0, 2.05, 0.0], &[1.005, 2.0, 0.0], 0.01), 2.0 / 3.0);
    }

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
        assert_eq!((s.mean, s.std, s.median), (2.0, 1.0, 2.0));
    }

    #[test]
    fn env_relative_l2_matches_hand_values() {
        // two trajectories, two times, two dims; errors 1, 0, 0, -2 | 0, 0, 2, 0
        let truth = Array3::from_shape_vec((2, 2, 2), vec![3.0, 4.0, 0.0, 0.0, 1.0, 2.0, 2.0, 0.0]).unwrap();
        let pred = Array3::from_shape_vec((2, 2, 2), vec![4.0, 4.0, 0.0, -2.0, 1.0, 2.0, 4.0, 0.0]).unwrap();
        // sum e^2 = 1 + 4 + 4 = 9, sum y^2 = 9 + 16 + 1 + 4 + 4 = 34
        assert!((rel_l2_env(pred.view(), truth.view()) - (9.0f64 / 34.0).sqrt()).abs() < 1e-15);
        assert_eq!(rel_l2_env(truth.view(), truth.view()), 0.0);
        // a truth resting at the origin: the RMSE sqrt(8 * 0.25 / 8) = 0.5
        let zero = Array3::<f64>::zeros((2, 2, 2));
        let off = Array3::from_elem((2, 2, 2), 0.5);
        assert!((rel_l2_env(off.view(), zero.view()) - 0.5).abs() < 1e-15);
        // just above the floor the ratio is used: RMS of the truth 2e-6, error RMS 1e-6 -> 0.5
        let tiny = Array3::from_elem((1, 2, 1), 2e-6);
        let near = Array3::from_elem((1, 2, 1), 3e-6);
        assert!((rel_l2_env(near.view(), tiny.view()) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[5.0, 1.0, 3.0]), 3.0);
        assert_eq!(median(&[4.0, 1.0, 10.0, 2.0]), 3.0);
        assert_eq!(median(&[7.0]), 7.0);
        assert_eq!(median(&[]), 0.0);
        let s = Summary::new(vec![1.0, 2.0, 9.0]);
        assert_eq!((s.mean, s.median), (4.0, 2.0));
        let s = Summary::new(vec![8.0, 1.0, 2.0, 100.0]);
        assert_eq!((s.mean, s.median), (27.75, 5.0));
    }

    #[test]
    fn summaries_written_without_a_median_read_back_with_one() {
        let old = r#"{"mean": 4.0, "std": 3.559026084010437, "per_env": [1.0, 2.0, 9.0]}"#;
        let s: Summary = serde_json::from_str(old).unwrap();
        assert_eq!((s.mean, s.median, s.per_env.len()), (4.0, 2.0, 3));
        let back: Summary = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn env_relative_l2_stays_bounded_where_the_pointwise_one_explodes() {
        // Environment A: truth of order 1, 1 % error. Environment B (as in a Sel'kov run): the truth
        // decays to ~1e-8 at later times while the prediction keeps an error of 1e-3.
        let steps = 20;
        let decay = |k: usize| 10f64.powf(-8.0 * k as f64 / (steps - 1) as f64);
        let truth_a = Array3::from_shape_fn((2, steps, 2), |(_, k, _)| 1.0 + 0.1 * k as f64);
        let pred_a = truth_a.mapv(|y| 1.01 * y);
        let truth_b = Array3::from_shape_fn((2, steps, 2), |(_, k, _)| decay(k));
        let pred_b = truth_b.mapv(|y| y + 1e-3);
        let pointwise =
            Summary::new(vec![rel_l2(pred_a.view(), truth_a.view()), rel_l2(pred_b.view(), truth_b.view())]);
        let robust =
            Summary::new(vec![rel_l2_env(pred_a.view(), truth_a.view()), rel_l2_env(pred_b.view(), truth_b.view())]);
        // A: pointwise 1e-4 and env-normalised 1e-2 exactly
        assert!((pointwise.per_env[0] - 1e-4).abs() < 1e-12 && (robust.per_env[0] - 1e-2).abs() < 1e-12);
        // B: the late times, where |y| ~ 1e-8 (floored at 1e-6), give ratios up to 1e-6 / 1e-12 = 1e6
        assert!(pointwise.per_env[1] > 1e5 && pointwise.mean > 1e5, "{pointwise:?}");
        // the environment's energy is dominated by its early times: sum e^2 = 80e-6, sum y^2 > 4
        let want_b = (80.0 * 1e-6 / truth_b.iter().map(|y| y * y).sum::<f64>()).sqrt();
        assert!((robust.per_env[1] - want_b).abs() < 1e-12 && robust.per_env[1] < 5e-3, "{robust:?}");
        assert!(robust.mean < 1e-2, "{robust:?}");
    }

    #[test]
    fn matched_accuracy_matches_hand_values() {
        // labels are a permutation of the classes: accuracy 1
        assert_eq!(matched_accuracy(&[0, 0, 1, 1, 2, 2], &[2, 2, 0, 0, 1, 1]), 1.0);
        // one unit off: 5 of 6
        assert!((matched_accuracy(&[0, 0, 1, 1, 2, 2], &[1, 1, 0, 0, 2, 0]) - 5.0 / 6.0).abs() < 1e-12);
        // two labels for three classes: at most two classes matched, 4 of 6
        assert!((matched_accuracy(&[0, 0, 1, 1, 2, 2], &[0, 0, 1, 1, 1, 1]) - 4.0 / 6.0).abs() < 1e-12);
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
