//! Hyperparameters of the MixER gate ([`crate::KMeansLeastSquares`]): unchecked → checked.

use serde::{Deserialize, Serialize};

use crate::RouterError;

/// K-means restarts of the recommended preset: a warm start alone keeps the clustering of
/// early, noisy contexts (measured on ODEBench-10, docs/method.md).
pub const RECOMMENDED_RESTARTS: usize = 8;

/// How K-means starts when no centroids from a previous successful refit are available.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KMeansInit {
    /// Every centroid coordinate drawn from Uniform(±1e-3) (the published behaviour).
    Uniform,
    /// k-means++ seeding (squared mean-absolute distances), drawn from the router's rng.
    KMeansPlusPlus,
}

/// What an empty cluster does to a refit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EmptyCluster {
    /// Skip the refit (gate unchanged, centroids forgotten) — the published behaviour.
    Skip,
    /// Move the empty centroid onto the point farthest from its own centroid and continue.
    Reseed,
}

/// How many clusters K-means uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClusterCount {
    /// One cluster per expert, `K` (published).
    Experts,
    /// `min(K, E)` clusters, so that fewer environments than experts still refit.
    MinExpertsEnvs,
}

/// How clusters are matched to experts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Matching {
    /// Cluster by cluster in index order, the untaken expert with the lowest loss (published).
    Greedy,
    /// The assignment with the lowest total loss (Hungarian algorithm).
    Hungarian,
    /// The assignment that keeps the most environments on the expert they are routed to now
    /// (Hungarian algorithm on overlap counts, ties to the lower loss): expert identities
    /// persist across refits, so each expert keeps training on the same environments
    /// (beyond the reference; docs/method.md).
    Overlap,
}

/// Checked hyperparameters of the MixER gate; obtained only through [`KMeansLsParams::check`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ValidKMeansLsParams {
    num_experts: usize,
    context_dim: usize,
    max_kmeans: usize,
    tol: f64,
    init: KMeansInit,
    empty: EmptyCluster,
    clusters: ClusterCount,
    matching: Matching,
    ls_noise: f64,
    #[serde(default)]
    restarts: usize,
}

/// Unchecked hyperparameters of the MixER gate (serde; consuming setters, then [`KMeansLsParams::check`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KMeansLsParams(ValidKMeansLsParams);

impl KMeansLsParams {
    /// The published behaviour: Uniform(±1e-3) init, skip on empty clusters, `K` clusters, greedy matching,
    /// at most 20 iterations, tol 1e-4, least-squares input noise 1e-4.
    pub fn reference(num_experts: usize, context_dim: usize) -> Self {
        Self(ValidKMeansLsParams {
            num_experts,
            context_dim,
            max_kmeans: 20,
            tol: 1e-4,
            init: KMeansInit::Uniform,
            empty: EmptyCluster::Skip,
            clusters: ClusterCount::Experts,
            matching: Matching::Greedy,
            ls_noise: 1e-4,
            restarts: 0,
        })
    }

    /// The recommended variant: k-means++ init, reseeding of empty clusters, `min(K, E)` clusters, greedy
    /// matching, [`RECOMMENDED_RESTARTS`] k-means++ restarts; other values as in [`KMeansLsParams::reference`].
    pub fn recommended(num_experts: usize, context_dim: usize) -> Self {
        Self::reference(num_experts, context_dim)
            .init_method(KMeansInit::KMeansPlusPlus)
            .empty_cluster(EmptyCluster::Reseed)
            .clusters(ClusterCount::MinExpertsEnvs)
            .restarts(RECOMMENDED_RESTARTS)
    }

    /// Same as [`KMeansLsParams::recommended`].
    pub fn new(num_experts: usize, context_dim: usize) -> Self {
        Self::recommended(num_experts, context_dim)
    }

    /// Sets the maximum number of K-means iterations.
    pub fn max_kmeans(mut self, max_kmeans: usize) -> Self {
        self.0.max_kmeans = max_kmeans;
        self
    }

    /// Sets the convergence tolerance (largest centroid coordinate move).
    pub fn tol(mut self, tol: f64) -> Self {
        self.0.tol = tol;
        self
    }

    /// Sets the K-means initialisation.
    pub fn init_method(mut self, init: KMeansInit) -> Self {
        self.0.init = init;
        self
    }

    /// Sets the empty-cluster policy.
    pub fn empty_cluster(mut self, empty: EmptyCluster) -> Self {
        self.0.empty = empty;
        self
    }

    /// Sets the cluster count rule.
    pub fn clusters(mut self, clusters: ClusterCount) -> Self {
        self.0.clusters = clusters;
        self
    }

    /// Sets the cluster → expert matching.
    pub fn matching(mut self, matching: Matching) -> Self {
        self.0.matching = matching;
        self
    }

    /// Sets the standard deviation of the Gaussian noise added to the least-squares inputs.
    pub fn ls_noise(mut self, ls_noise: f64) -> Self {
        self.0.ls_noise = ls_noise;
        self
    }

    /// Sets how many extra K-means runs from fresh k-means++ seedings compete with the warm start
    /// (the tightest clustering wins; 0 is the published single run).
    pub fn restarts(mut self, restarts: usize) -> Self {
        self.0.restarts = restarts;
        self
    }

    /// Validates every field; the only way to a [`ValidKMeansLsParams`].
    pub fn check(self) -> Result<ValidKMeansLsParams, RouterError> {
        let p = &self.0;
        crate::RouterShape { experts: p.num_experts, features: p.context_dim }.check()?;
        if p.max_kmeans == 0 {
            return Err(RouterError::ZeroMaxKmeans);
        }
        if !(p.tol.is_finite() && p.tol > 0.0) {
            return Err(RouterError::NonPositiveTol { tol: p.tol });
        }
        if !(p.ls_noise.is_finite() && p.ls_noise >= 0.0) {
            return Err(RouterError::InvalidLsNoise { value: p.ls_noise });
        }
        Ok(self.0)
    }

    /// Checks the fields, then that they fit `num_envs` environments (see [`ValidKMeansLsParams::check_against`]).
    pub fn check_against(self, num_envs: usize) -> Result<ValidKMeansLsParams, RouterError> {
        let valid = self.check()?;
        valid.check_against(num_envs)?;
        Ok(valid)
    }
}

impl ValidKMeansLsParams {
    /// Number of experts `K`.
    pub fn num_experts(&self) -> usize {
        self.num_experts
    }

    /// Context size `d_xi`.
    pub fn context_dim(&self) -> usize {
        self.context_dim
    }

    /// Maximum number of K-means iterations.
    pub fn max_kmeans(&self) -> usize {
        self.max_kmeans
    }

    /// Convergence tolerance on the largest centroid coordinate move.
    pub fn tol(&self) -> f64 {
        self.tol
    }

    /// K-means initialisation.
    pub fn init_method(&self) -> KMeansInit {
        self.init
    }

    /// Empty-cluster policy.
    pub fn empty_policy(&self) -> EmptyCluster {
        self.empty
    }

    /// Cluster count rule.
    pub fn cluster_rule(&self) -> ClusterCount {
        self.clusters
    }

    /// Cluster → expert matching.
    pub fn matching(&self) -> Matching {
        self.matching
    }

    /// Least-squares input noise standard deviation.
    pub fn ls_noise(&self) -> f64 {
        self.ls_noise
    }

    /// Extra K-means runs from fresh k-means++ seedings per refit.
    pub fn restarts(&self) -> usize {
        self.restarts
    }

    /// Number of K-means clusters for `num_envs` environments.
    pub fn num_clusters(&self, num_envs: usize) -> usize {
        match self.clusters {
            ClusterCount::Experts => self.num_experts,
            ClusterCount::MinExpertsEnvs => self.num_experts.min(num_envs),
        }
    }

    /// Checks that these parameters can refit on `num_envs` environments: with `K` clusters, `K <= E`;
    /// with `min(K, E)` clusters, at least one environment.
    pub fn check_against(&self, num_envs: usize) -> Result<(), RouterError> {
        if num_envs == 0 || self.num_clusters(num_envs) > num_envs {
            return Err(RouterError::TooManyExperts { experts: self.num_experts, envs: num_envs });
        }
        Ok(())
    }
}

impl From<ValidKMeansLsParams> for KMeansLsParams {
    fn from(valid: ValidKMeansLsParams) -> Self {
        Self(valid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_have_published_and_recommended_values() {
        let r = KMeansLsParams::reference(10, 40).check().unwrap();
        assert_eq!((r.max_kmeans(), r.tol(), r.ls_noise()), (20, 1e-4, 1e-4));
        assert_eq!(r.init_method(), KMeansInit::Uniform);
        assert_eq!(r.empty_policy(), EmptyCluster::Skip);
        assert_eq!(r.cluster_rule(), ClusterCount::Experts);
        assert_eq!(r.matching(), Matching::Greedy);
        assert_eq!(r.restarts(), 0);
        let d = KMeansLsParams::new(10, 40).check().unwrap();
        assert_eq!(d.restarts(), RECOMMENDED_RESTARTS);
        assert_eq!(d.init_method(), KMeansInit::KMeansPlusPlus);
        assert_eq!(d.empty_policy(), EmptyCluster::Reseed);
        assert_eq!(d.num_clusters(4), 4);
        assert_eq!(r.num_clusters(4), 10);
    }

    #[test]
    fn zero_experts_is_rejected() {
        assert!(matches!(KMeansLsParams::reference(0, 4).check(), Err(RouterError::ZeroExperts)));
    }

    #[test]
    fn zero_context_dim_is_rejected() {
        assert!(matches!(KMeansLsParams::reference(3, 0).check(), Err(RouterError::ZeroContextDim)));
    }

    #[test]
    fn non_positive_tol_is_rejected() {
        for tol in [0.0, -1e-4, f64::NAN] {
            let r = KMeansLsParams::reference(3, 2).tol(tol).check();
            assert!(matches!(r, Err(RouterError::NonPositiveTol { .. })), "tol {tol}");
        }
    }

    #[test]
    fn zero_max_kmeans_is_rejected() {
        let r = KMeansLsParams::reference(3, 2).max_kmeans(0).check();
        assert!(matches!(r, Err(RouterError::ZeroMaxKmeans)));
    }

    #[test]
    fn negative_ls_noise_is_rejected() {
        let r = KMeansLsParams::reference(3, 2).ls_noise(-1.0).check();
        assert!(matches!(r, Err(RouterError::InvalidLsNoise { value }) if value == -1.0));
    }

    #[test]
    fn more_experts_than_envs_is_rejected_by_check_against() {
        let r = KMeansLsParams::reference(5, 2).check_against(3);
        assert!(matches!(r, Err(RouterError::TooManyExperts { experts: 5, envs: 3 })));
        assert!(KMeansLsParams::reference(3, 2).check_against(3).is_ok());
        // min(K, E) clusters refit with fewer environments than experts.
        assert!(KMeansLsParams::recommended(5, 2).check_against(3).is_ok());
        assert!(KMeansLsParams::recommended(5, 2).check_against(0).is_err());
    }

    #[test]
    fn params_round_trip_through_json() {
        let p = KMeansLsParams::reference(3, 2).matching(Matching::Hungarian);
        let s = serde_json::to_string(&p).unwrap();
        let back: KMeansLsParams = serde_json::from_str(&s).unwrap();
        assert_eq!(back, p);
    }
}
