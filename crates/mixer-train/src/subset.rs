//! Environment subsets for the meta loss (MIXER.md §2): a random anchor and its nearest
//! environments by mean absolute context difference.

use ndarray::Array2;
use rand::Rng as _;

use mixer_core::Rng;

/// The `size` environments nearest to a random anchor (anchor first, then by increasing mean
/// absolute context distance, ties by index). `contexts: [envs, d_xi]`.
pub fn nearest_subset(contexts: &Array2<f64>, size: usize, rng: &mut Rng) -> Vec<usize> {
    let envs = contexts.nrows();
    let anchor = rng.random_range(0..envs);
    subset_around(contexts, anchor, size)
}

/// The `size` environments nearest to `anchor` (anchor included, first).
pub fn subset_around(contexts: &Array2<f64>, anchor: usize, size: usize) -> Vec<usize> {
    let a = contexts.row(anchor);
    let mut dist: Vec<(f64, usize)> = contexts
        .rows()
        .into_iter()
        .enumerate()
        .map(|(e, row)| {
            let d = row.iter().zip(a.iter()).map(|(x, y)| (x - y).abs()).sum::<f64>() / row.len().max(1) as f64;
            (if e == anchor { f64::NEG_INFINITY } else { d }, e)
        })
        .collect();
    dist.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
    dist.into_iter().take(size).map(|(_, e)| e).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mixer_core::Seeds;

    #[test]
    fn picks_anchor_then_nearest() {
        let c = Array2::from_shape_vec((5, 2), vec![0.0, 0.0, 5.0, 5.0, 0.1, 0.0, 4.0, 4.0, 0.0, 0.3]).unwrap();
        assert_eq!(subset_around(&c, 0, 3), vec![0, 2, 4]);
        assert_eq!(subset_around(&c, 1, 2), vec![1, 3]);
        assert_eq!(subset_around(&c, 1, 10).len(), 5);
        // all-zero contexts: ties broken by index after the anchor
        let z = Array2::zeros((4, 3));
        assert_eq!(subset_around(&z, 2, 3), vec![2, 0, 1]);
        let mut rng = Seeds::new(1).stream("subset");
        let s = nearest_subset(&c, 2, &mut rng);
        assert_eq!(s.len(), 2);
        assert_eq!(s, subset_around(&c, s[0], 2));
    }
}
