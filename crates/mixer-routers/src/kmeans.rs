//! K-means over environment contexts with the mean-absolute (L1) distance, as MixER specifies.
//!
//! Why not linfa's `KMeans` (linfa-clustering 0.8.1): its update step is "m_k-means", which counts
//! the old centroid as an extra member of every cluster, so a cluster can never become empty and
//! the empty-cluster rule of the MixER paper could not be detected; it stops silently at
//! `max_n_iterations` without saying it did not converge, and its convergence test is the
//! distance between the whole old and new centroid matrices. Warm start and L1 assignment would
//! fit (`KMeansInit::Precomputed`, `linfa_nn::distance::L1Dist`), but the empty-cluster and
//! non-convergence skips are the heart of the published rule, so the Lloyd iteration is written
//! here (plain means, assignment by mean absolute difference, ties to the lowest cluster index).

use ndarray::{Array2, ArrayView1, Axis};
use rand::Rng as _;

use mixer_core::Rng;

/// Mean absolute difference between two points.
pub fn l1_mean(a: ArrayView1<f64>, b: ArrayView1<f64>) -> f64 {
    let n = a.len().max(1) as f64;
    a.iter().zip(b.iter()).map(|(x, y)| (x - y).abs()).sum::<f64>() / n
}

/// Index and distance of the nearest centroid (ties to the lowest index).
pub fn nearest(point: ArrayView1<f64>, centroids: &Array2<f64>) -> (usize, f64) {
    let mut best = (0, f64::INFINITY);
    for (j, c) in centroids.outer_iter().enumerate() {
        let d = l1_mean(point, c);
        if d < best.1 {
            best = (j, d);
        }
    }
    best
}

/// A converged clustering.
#[derive(Clone, Debug)]
pub struct KMeansFit {
    /// Final centroids, `[clusters, d]`.
    pub centroids: Array2<f64>,
    /// Cluster of each point, `[n]` (from the last assignment step).
    pub labels: Vec<usize>,
    /// Lloyd iterations used.
    pub iterations: usize,
    /// Empty clusters that were reseeded.
    pub reseeds: usize,
    /// Sum over points of the mean absolute distance to their final centroid (lower is tighter).
    pub inertia: f64,
}

/// Why K-means gave no usable clustering.
#[derive(Clone, Debug, PartialEq)]
pub enum KMeansFailure {
    /// A cluster had no members (policy `Skip`).
    EmptyCluster {
        /// The empty cluster.
        cluster: usize,
        /// The iteration at which it was found (1-based).
        iteration: usize,
    },
    /// The centroids still moved by at least `tol` after `iterations`.
    NotConverged {
        /// Iterations run.
        iterations: usize,
        /// Largest centroid coordinate move in the last iteration.
        shift: f64,
    },
}

impl std::fmt::Display for KMeansFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KMeansFailure::EmptyCluster { cluster, iteration } => {
                write!(f, "K-means cluster {cluster} became empty at iteration {iteration}")
            }
            KMeansFailure::NotConverged { iterations, shift } => {
                write!(f, "K-means did not converge in {iterations} iterations (last centroid move {shift:.3e})")
            }
        }
    }
}

/// Centroids `[clusters, d]` with every coordinate from Uniform(±scale).
pub fn init_uniform(clusters: usize, dim: usize, scale: f64, rng: &mut Rng) -> Array2<f64> {
    Array2::from_shape_fn((clusters, dim), |_| rng.random_range(-scale..=scale))
}

/// k-means++ seeding with squared mean-absolute distances; duplicates fall back to a uniform pick.
pub fn init_kmeans_pp(points: &Array2<f64>, clusters: usize, rng: &mut Rng) -> Array2<f64> {
    let n = points.nrows();
    let mut centroids = Array2::zeros((clusters, points.ncols()));
    if n == 0 {
        return centroids;
    }
    let first = rng.random_range(0..n);
    centroids.row_mut(0).assign(&points.row(first));
    let mut d2: Vec<f64> = points.outer_iter().map(|p| l1_mean(p, points.row(first)).powi(2)).collect();
    for j in 1..clusters {
        let total: f64 = d2.iter().sum();
        let pick = if total > 0.0 {
            let mut u = rng.random_range(0.0..total);
            let mut pick = n - 1;
            for (i, w) in d2.iter().enumerate() {
                if u < *w {
                    pick = i;
                    break;
                }
                u -= w;
            }
            pick
        } else {
            rng.random_range(0..n)
        };
        centroids.row_mut(j).assign(&points.row(pick));
        for (i, p) in points.outer_iter().enumerate() {
            d2[i] = d2[i].min(l1_mean(p, points.row(pick)).powi(2));
        }
    }
    centroids
}

/// Nearest-centroid labels, distances and cluster sizes of every point.
fn assign(points: &Array2<f64>, centroids: &Array2<f64>) -> (Vec<usize>, Vec<f64>, Vec<usize>) {
    let mut labels = Vec::with_capacity(points.nrows());
    let mut dists = Vec::with_capacity(points.nrows());
    let mut counts = vec![0usize; centroids.nrows()];
    for p in points.outer_iter() {
        let (j, d) = nearest(p, centroids);
        labels.push(j);
        dists.push(d);
        counts[j] += 1;
    }
    (labels, dists, counts)
}

/// The point farthest from its centroid among clusters with at least two members (lowest index on ties).
fn farthest_donor(labels: &[usize], dists: &[f64], counts: &[usize]) -> Option<usize> {
    (0..labels.len()).filter(|&i| counts[labels[i]] >= 2).fold(None, |best, i| match best {
        Some(b) if dists[b] >= dists[i] => Some(b),
        _ => Some(i),
    })
}

/// Lloyd iterations from `init` (`[clusters, d]`) on `points` (`[n, d]`), at most `max_iter`; converged when
/// the largest centroid coordinate move is below `tol`. With `reseed`, an empty cluster takes the point
/// farthest from its own centroid (among clusters with at least two members); otherwise it is a failure.
pub fn lloyd_l1(
    points: &Array2<f64>,
    init: Array2<f64>,
    max_iter: usize,
    tol: f64,
    reseed: bool,
) -> Result<KMeansFit, KMeansFailure> {
    let clusters = init.nrows();
    let mut centroids = init;
    let mut reseeds = 0;
    let mut shift = f64::INFINITY;
    for iteration in 1..=max_iter {
        let (mut labels, mut dists, mut counts) = assign(points, &centroids);
        // Reseeding: an empty centroid jumps onto the point farthest from its centroid, then all points are
        // reassigned, so a second empty centroid lands in a different far region (farthest-point traversal).
        let mut attempts = 0;
        while let Some(cluster) = counts.iter().position(|&c| c == 0) {
            if !reseed {
                return Err(KMeansFailure::EmptyCluster { cluster, iteration });
            }
            let Some(i) = farthest_donor(&labels, &dists, &counts) else {
                return Err(KMeansFailure::EmptyCluster { cluster, iteration });
            };
            reseeds += 1;
            attempts += 1;
            if attempts <= clusters {
                centroids.row_mut(cluster).assign(&points.row(i));
                (labels, dists, counts) = assign(points, &centroids);
            } else {
                // Duplicate points can keep a reseeded centroid empty (ties go to the lower index): give it
                // the point directly.
                counts[labels[i]] -= 1;
                labels[i] = cluster;
                counts[cluster] = 1;
                dists[i] = 0.0;
            }
        }
        let mut next = Array2::<f64>::zeros(centroids.raw_dim());
        for (p, &l) in points.outer_iter().zip(&labels) {
            let mut row = next.row_mut(l);
            row += &p;
        }
        for (mut row, &c) in next.axis_iter_mut(Axis(0)).zip(&counts) {
            row /= c as f64;
        }
        shift = (&next - &centroids).iter().fold(0.0_f64, |m, v| m.max(v.abs()));
        centroids = next;
        if shift < tol {
            let inertia = points.outer_iter().zip(&labels).map(|(p, &l)| l1_mean(p, centroids.row(l))).sum();
            return Ok(KMeansFit { centroids, labels, iterations: iteration, reseeds, inertia });
        }
    }
    Err(KMeansFailure::NotConverged { iterations: max_iter, shift })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;
    use rand::SeedableRng;

    fn two_blobs() -> Array2<f64> {
        array![[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [5.0, 5.0], [5.1, 5.0], [5.0, 5.1]]
    }

    #[test]
    fn l1_mean_is_mean_absolute_difference() {
        assert_eq!(l1_mean(array![1.0, -2.0, 3.0].view(), array![0.0, 0.0, 0.0].view()), 2.0);
    }

    #[test]
    fn lloyd_finds_blob_means_and_counts_iterations() {
        let x = two_blobs();
        let fit = lloyd_l1(&x, array![[0.0, 0.0], [1.0, 1.0]], 20, 1e-9, false).unwrap();
        assert_eq!(fit.labels, vec![0, 0, 0, 1, 1, 1]);
        assert!((fit.centroids[[1, 0]] - 5.1 / 3.0 - 10.0 / 3.0).abs() < 1e-12);
        assert_eq!(fit.iterations, 2);
        // Warm start from the converged centroids needs one iteration.
        let warm = lloyd_l1(&x, fit.centroids.clone(), 20, 1e-9, false).unwrap();
        assert_eq!(warm.iterations, 1);
    }

    #[test]
    fn empty_cluster_fails_or_reseeds_to_farthest_point() {
        let x = two_blobs();
        let far = array![[0.0, 0.0], [100.0, 100.0]];
        let err = lloyd_l1(&x, far.clone(), 20, 1e-9, false).unwrap_err();
        assert_eq!(err, KMeansFailure::EmptyCluster { cluster: 1, iteration: 1 });
        let fit = lloyd_l1(&x, far, 20, 1e-9, true).unwrap();
        assert!(fit.reseeds >= 1);
        assert_eq!(fit.labels[..3], [fit.labels[0]; 3]);
        assert_eq!(fit.labels[3..], [fit.labels[3]; 3]);
        assert_ne!(fit.labels[0], fit.labels[3]);
    }

    #[test]
    fn reseed_terminates_on_duplicate_points_and_fills_every_cluster() {
        let x = array![[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]];
        let fit = lloyd_l1(&x, array![[0.0, 0.0], [5.0, 5.0], [9.0, 9.0]], 5, 1e-9, true).unwrap();
        let mut labels = fit.labels.clone();
        labels.sort();
        assert_eq!(labels, vec![0, 1, 2]);
        // Iteration 1 moves the untouched centroid (9, 9) onto (1, 1); iteration 2 is stable.
        assert_eq!(fit.iterations, 2);
    }

    #[test]
    fn kmeans_pp_picks_distinct_blobs() {
        let x = two_blobs();
        let mut rng = Rng::seed_from_u64(3);
        for _ in 0..20 {
            let c = init_kmeans_pp(&x, 2, &mut rng);
            let a = nearest(c.row(0), &array![[0.0, 0.0], [5.0, 5.0]]).0;
            let b = nearest(c.row(1), &array![[0.0, 0.0], [5.0, 5.0]]).0;
            assert_ne!(a, b);
        }
    }
}
