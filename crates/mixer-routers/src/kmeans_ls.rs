//! The MixER gate: a linear gate on environment contexts, refit by K-means (L1) + matching + least squares.

use burn::tensor::{Tensor, backend::Backend};
use ndarray::{Array2, s};
use rand::Rng as _;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use mixer_core::{GateUpdate, Granularity, Rng, Router, RouterInput, Routing, ensure_finite, host};

use crate::kmeans::{KMeansFailure, init_kmeans_pp, init_uniform, lloyd_l1};
use crate::matching::{cluster_losses, greedy, hungarian, overlap_cost};
use crate::params::{EmptyCluster, KMeansInit, KMeansLsParams, Matching, ValidKMeansLsParams};
use crate::select::{argmax_lowest, softmax_row};
use crate::{RouterError, lstsq::min_norm_lstsq};

/// Loss given to an expert whose rollout on an environment diverged (inf or NaN).
pub const DIVERGED_LOSS: f64 = 1e300;

/// Half-width of the Uniform K-means initialisation (published value).
const UNIFORM_INIT_SCALE: f64 = 1e-3;

/// Counters of gate refits, for reports and checkpoints.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GateStats {
    /// Successful refits.
    pub updates: usize,
    /// Refits skipped because a cluster became empty.
    pub skipped_empty: usize,
    /// Refits skipped because K-means did not converge.
    pub skipped_not_converged: usize,
    /// Empty clusters reseeded (policy `Reseed`), summed over refits.
    pub reseeds: usize,
    /// Restarts that improved on the best clustering of their refit, summed over refits.
    #[serde(default)]
    pub restart_wins: usize,
    /// K-means iterations of the last refit attempt.
    pub last_iterations: Option<usize>,
    /// Whether the last refit attempt started from stored centroids.
    pub last_warm_start: bool,
    /// Expert chosen for each cluster by the last successful refit.
    pub last_cluster_experts: Vec<usize>,
    /// Cluster of each environment at the last successful refit.
    #[serde(default)]
    pub last_labels: Vec<usize>,
    /// Share of environments the last refit gate routes to their cluster's expert (the least
    /// squares fit of one-hot targets can mask a cluster, step 5 of the MixER refit).
    #[serde(default)]
    pub last_gate_agreement: Option<f64>,
    /// Environments whose expert the last successful refit changed.
    #[serde(default)]
    pub last_rerouted: usize,
}

impl GateStats {
    /// All skipped refits.
    pub fn skips(&self) -> usize {
        self.skipped_empty + self.skipped_not_converged
    }
}

/// Serialisable router state (the parameters are saved separately).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KMeansLsState {
    /// Gate rows, `[d_xi + 1][K]` (last row is the bias).
    pub gate: Vec<Vec<f64>>,
    /// Centroids of the last successful refit, `[clusters][d_xi]`, for the warm start.
    pub centroids: Option<Vec<Vec<f64>>>,
    /// Refit counters.
    pub stats: GateStats,
}

/// The MixER gate `G: [d_xi + 1, K]`: routes each environment context to `argmax G^T [xi; 1]`.
#[derive(Clone, Debug)]
pub struct KMeansLeastSquares {
    params: ValidKMeansLsParams,
    gate: Array2<f64>,
    centroids: Option<Array2<f64>>,
    stats: GateStats,
}

impl KMeansLsParams {
    /// Checks the parameters and builds the gate (Uniform(±1/sqrt(d_xi+1)) from `rng`).
    pub fn init(self, rng: &mut Rng) -> Result<KMeansLeastSquares, RouterError> {
        Ok(KMeansLeastSquares::new(self.check()?, rng))
    }
}

fn rows_to_array(rows: &[Vec<f64>], what: &str, shape: (usize, usize)) -> Result<Array2<f64>, RouterError> {
    let found = (rows.len(), rows.first().map_or(0, Vec::len));
    if found != shape || rows.iter().any(|r| r.len() != shape.1) {
        return Err(mixer_core::Error::shape(what, shape, found).into());
    }
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    ensure_finite(what, &flat)?;
    Array2::from_shape_vec(shape, flat).map_err(|_| mixer_core::Error::shape(what, shape, found).into())
}

fn array_to_rows(a: &Array2<f64>) -> Vec<Vec<f64>> {
    a.outer_iter().map(|r| r.to_vec()).collect()
}

impl KMeansLeastSquares {
    /// A gate with entries Uniform(±1/sqrt(d_xi + 1)) drawn from `rng`, no centroids, zero counters.
    pub fn new(params: ValidKMeansLsParams, rng: &mut Rng) -> Self {
        let rows = params.context_dim() + 1;
        let bound = 1.0 / (rows as f64).sqrt();
        let gate = Array2::from_shape_fn((rows, params.num_experts()), |_| rng.random_range(-bound..=bound));
        Self { params, gate, centroids: None, stats: GateStats::default() }
    }

    /// Restores a gate from checkpointed state; shapes must match `params`.
    pub fn from_state(params: ValidKMeansLsParams, state: &KMeansLsState) -> Result<Self, RouterError> {
        let gate = rows_to_array(&state.gate, "gate", (params.context_dim() + 1, params.num_experts()))?;
        let centroids = match &state.centroids {
            Some(rows) => {
                let shape = (rows.len(), params.context_dim());
                if rows.is_empty() || rows.len() > params.num_experts() {
                    return Err(mixer_core::Error::shape("centroids", (params.num_experts(), shape.1), shape).into());
                }
                Some(rows_to_array(rows, "centroids", shape)?)
            }
            None => None,
        };
        Ok(Self { params, gate, centroids, stats: state.stats.clone() })
    }

    /// The state to checkpoint (gate, centroids, counters).
    pub fn state(&self) -> KMeansLsState {
        KMeansLsState {
            gate: array_to_rows(&self.gate),
            centroids: self.centroids.as_ref().map(array_to_rows),
            stats: self.stats.clone(),
        }
    }

    /// The checked parameters.
    pub fn params(&self) -> &ValidKMeansLsParams {
        &self.params
    }

    /// The gate matrix `[d_xi + 1, K]`, last row the bias.
    pub fn gate_matrix(&self) -> &Array2<f64> {
        &self.gate
    }

    /// Centroids `[clusters, d_xi]` of the last successful refit (used as the next warm start).
    pub fn centroids(&self) -> Option<&Array2<f64>> {
        self.centroids.as_ref()
    }

    /// Refit counters.
    pub fn stats(&self) -> &GateStats {
        &self.stats
    }

    fn check_contexts(&self, contexts: &Array2<f64>) -> Result<(), RouterError> {
        let d = self.params.context_dim();
        if contexts.ncols() != d {
            return Err(mixer_core::Error::shape("contexts", ["E".to_string(), d.to_string()], contexts.dim()).into());
        }
        ensure_finite("contexts", contexts.iter())?;
        Ok(())
    }

    /// Gate logits `G^T [xi; 1]` for contexts `[E, d_xi]`, returned as `[E, K]`.
    pub fn logits(&self, contexts: &Array2<f64>) -> Result<Array2<f64>, RouterError> {
        self.check_contexts(contexts)?;
        let d = self.params.context_dim();
        let w = self.gate.slice(s![..d, ..]);
        let bias = self.gate.row(d);
        Ok(contexts.dot(&w) + bias)
    }

    /// The expert of each environment, `[E]`: argmax of the logits, ties to the lowest index.
    pub fn assignment(&self, contexts: &Array2<f64>) -> Result<Vec<usize>, RouterError> {
        let logits = self.logits(contexts)?;
        Ok(logits.outer_iter().map(|row| argmax_lowest(row.as_slice().unwrap_or(&row.to_vec()))).collect())
    }

    /// The MixER gate refit on contexts `[E, d_xi]` and expert losses `[E, K]` (MixER, Nzoyem et al. 2025); a
    /// non-finite loss (the expert's rollout diverged) counts as [`DIVERGED_LOSS`].
    /// Returns `Skipped(reason)` with the gate unchanged on an empty cluster (policy `Skip`) or no convergence.
    pub fn update(
        &mut self,
        contexts: &Array2<f64>,
        expert_losses: &Array2<f64>,
        rng: &mut Rng,
    ) -> Result<GateUpdate, RouterError> {
        self.check_contexts(contexts)?;
        let (envs, k) = (contexts.nrows(), self.params.num_experts());
        if expert_losses.dim() != (envs, k) {
            return Err(mixer_core::Error::shape("expert_losses", (envs, k), expert_losses.dim()).into());
        }
        // A diverged rollout (an infinite or NaN loss) means the expert cannot fit that
        // environment: it counts as the worst loss, kept finite so matching stays defined.
        let expert_losses = &expert_losses.mapv(|v| if v.is_finite() { v } else { DIVERGED_LOSS });
        self.params.check_against(envs)?;
        let clusters = self.params.num_clusters(envs);
        let d = self.params.context_dim();
        // the routing before this refit, which the overlap matching keeps where it can
        let current = self.assignment(contexts)?;

        let warm = self.centroids.take().filter(|c| c.dim() == (clusters, d));
        self.stats.last_warm_start = warm.is_some();
        let init = match warm {
            Some(c) => c,
            None => match self.params.init_method() {
                KMeansInit::Uniform => init_uniform(clusters, d, UNIFORM_INIT_SCALE, rng),
                KMeansInit::KMeansPlusPlus => init_kmeans_pp(contexts, clusters, rng),
            },
        };
        let reseed = self.params.empty_policy() == EmptyCluster::Reseed;
        let (max_iter, tol) = (self.params.max_kmeans(), self.params.tol());
        let mut result = lloyd_l1(contexts, init, max_iter, tol, reseed);
        // Restarts: fresh k-means++ seedings compete with the (warm) start; the tightest clustering
        // wins, so a warm start cannot keep a partition that better clusterings have overtaken.
        for _ in 0..self.params.restarts() {
            let Ok(fit) = lloyd_l1(contexts, init_kmeans_pp(contexts, clusters, rng), max_iter, tol, reseed) else {
                continue;
            };
            if result.as_ref().is_ok_and(|best| best.inertia <= fit.inertia) {
                continue;
            }
            self.stats.restart_wins += 1;
            result = Ok(fit);
        }
        let fit = match result {
            Ok(fit) => fit,
            Err(failure) => {
                match failure {
                    KMeansFailure::EmptyCluster { iteration, .. } => {
                        self.stats.skipped_empty += 1;
                        self.stats.last_iterations = Some(iteration);
                    }
                    KMeansFailure::NotConverged { iterations, .. } => {
                        self.stats.skipped_not_converged += 1;
                        self.stats.last_iterations = Some(iterations);
                    }
                }
                tracing::warn!(reason = %failure, skips = self.stats.skips(), "gate refit skipped");
                return Ok(GateUpdate::Skipped(failure.to_string()));
            }
        };
        self.stats.last_iterations = Some(fit.iterations);
        self.stats.reseeds += fit.reseeds;

        let expert_of_cluster = match self.params.matching() {
            Matching::Greedy => greedy(&cluster_losses(expert_losses, &fit.labels, clusters)),
            Matching::Hungarian => hungarian(&cluster_losses(expert_losses, &fit.labels, clusters)),
            Matching::Overlap => hungarian(&overlap_cost(expert_losses, &fit.labels, &current, clusters)),
        };

        let mut y = Array2::<f64>::zeros((envs, k));
        let mut x = Array2::<f64>::ones((envs, d + 1));
        let noise = self.params.ls_noise();
        for e in 0..envs {
            y[[e, expert_of_cluster[fit.labels[e]]]] = 1.0;
            for i in 0..d {
                let z: f64 = rng.sample(StandardNormal);
                x[[e, i]] = contexts[[e, i]] + noise * z;
            }
        }
        self.gate = min_norm_lstsq(&x, &y)?;
        let routed = self.assignment(contexts)?;
        let agree = routed.iter().zip(&fit.labels).filter(|&(&e, &c)| e == expert_of_cluster[c]).count();
        self.centroids = Some(fit.centroids);
        self.stats.updates += 1;
        self.stats.last_cluster_experts = expert_of_cluster;
        self.stats.last_labels = fit.labels;
        self.stats.last_gate_agreement = Some(agree as f64 / envs as f64);
        self.stats.last_rerouted = current.iter().zip(&routed).filter(|(a, b)| a != b).count();
        tracing::debug!(
            iterations = fit.iterations,
            reseeds = fit.reseeds,
            updates = self.stats.updates,
            agreement = self.stats.last_gate_agreement,
            "gate refit"
        );
        Ok(GateUpdate::Updated)
    }
}

impl<B: Backend> Router<B> for KMeansLeastSquares {
    fn num_experts(&self) -> usize {
        self.params.num_experts()
    }

    fn top_k(&self) -> usize {
        1
    }

    fn granularity(&self) -> Granularity {
        Granularity::Environment
    }

    /// Routes contexts `[E, d_xi]`: expert = argmax of `G^T [xi; 1]`, weights all ones `[E, 1]` (unweighted),
    /// `probs` the softmax `[E, K]` for diagnostics; no noise, no auxiliary loss.
    fn route(&self, input: &RouterInput<B>, _rng: &mut Rng) -> mixer_core::Result<Routing<B>> {
        let device = input.features.device();
        let contexts = host::to_array2(input.features.clone());
        let logits = self.logits(&contexts)?;
        let (n, k) = logits.dim();
        let mut indices = Vec::with_capacity(n);
        let mut probs = Vec::with_capacity(n * k);
        for row in logits.outer_iter() {
            let row = row.to_vec();
            indices.push(Some(argmax_lowest(&row)));
            probs.extend(softmax_row(&row));
        }
        Ok(Routing {
            k: 1,
            indices,
            weights: Tensor::ones([n, 1], &device),
            shared: vec![],
            probs: Some(host::tensor2(&probs, [n, k], &device)),
            aux_losses: vec![],
        })
    }
}
