//! Environment subsets for the meta loss (MixER, Nzoyem et al. 2025): a random anchor and its nearest
//! environments by mean absolute context difference; either one subset over all environments
//! (as published) or one inside each expert's environments ([`per_expert_subsets`]).

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
    let all: Vec<usize> = (0..contexts.nrows()).collect();
    subset_among(contexts, &all, anchor, size)
}

/// The `size` environments of `members` nearest to `anchor` (anchor first, then by increasing
/// mean absolute context distance, ties by index).
fn subset_among(contexts: &Array2<f64>, members: &[usize], anchor: usize, size: usize) -> Vec<usize> {
    let a = contexts.row(anchor);
    let mut dist: Vec<(f64, usize)> = members
        .iter()
        .map(|&e| {
            let row = contexts.row(e);
            let d = row.iter().zip(a.iter()).map(|(x, y)| (x - y).abs()).sum::<f64>() / row.len().max(1) as f64;
            (if e == anchor { f64::NEG_INFINITY } else { d }, e)
        })
        .collect();
    dist.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
    dist.into_iter().take(size).map(|(_, e)| e).collect()
}

/// One subset per expert: for each expert (in index order) that has environments under
/// `assignment` (top-1 expert per environment, `None` for a dropped one), the `size` of its
/// environments nearest to a random anchor among them. With top-1 routing every expert then
/// trains at every step on its own environments, at the cost of one rollout of all the rows.
pub fn per_expert_subsets(
    contexts: &Array2<f64>,
    assignment: &[Option<usize>],
    experts: usize,
    size: usize,
    rng: &mut Rng,
) -> Vec<Vec<usize>> {
    (0..experts)
        .filter_map(|k| {
            let members: Vec<usize> = (0..assignment.len()).filter(|&e| assignment[e] == Some(k)).collect();
            if members.is_empty() {
                return None;
            }
            let anchor = members[rng.random_range(0..members.len())];
            Some(subset_among(contexts, &members, anchor, size))
        })
        .collect()
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

    #[test]
    fn per_expert_subsets_stay_inside_each_expert() {
        // environments 0, 2, 4 on expert 1; 1, 3 on expert 0; 5 dropped; expert 2 empty
        let c = Array2::from_shape_vec((6, 1), vec![0.0, 10.0, 0.2, 11.0, 5.0, 0.1]).unwrap();
        let a = [Some(1), Some(0), Some(1), Some(0), Some(1), None];
        let mut rng = Seeds::new(4).stream("subset");
        for _ in 0..20 {
            let s = per_expert_subsets(&c, &a, 3, 2, &mut rng);
            assert_eq!(s.len(), 2, "one subset per expert with environments");
            assert_eq!(s[0].len(), 2);
            assert!(s[0].iter().all(|&e| a[e] == Some(0)));
            assert!(s[1].iter().all(|&e| a[e] == Some(1)));
            // the anchor's nearest neighbour inside expert 1: 0 <-> 2, 4 -> 2 (|5 - 0.2| < |5 - 0|)
            let want = match s[1][0] {
                0 => 2,
                2 => 0,
                4 => 2,
                other => panic!("anchor {other} is not on expert 1"),
            };
            assert_eq!(s[1][1], want);
        }
        let all = per_expert_subsets(&c, &a, 3, 10, &mut rng);
        assert_eq!(all, vec![vec![all[0][0], if all[0][0] == 1 { 3 } else { 1 }], all[1].clone()]);
        assert_eq!(all[1].len(), 3);
    }
}
