//! The MixER gate as a registered router: its `[router]` settings ([`KMeansSettings`]) and the
//! module that carries [`KMeansLeastSquares`] inside a model ([`KMeansGate`]).

use std::marker::PhantomData;

use burn::module::Module;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use mixer_core::{GateUpdate, Granularity, Rng, Router, RouterFeedback, RouterInput, Routing};

use crate::params::{ClusterCount, EmptyCluster, KMeansInit, KMeansLsParams, Matching, ValidKMeansLsParams};
use crate::{KMeansLeastSquares, KMeansLsState, Refit, RouterError, RouterShape, RouterSpec};

/// Settings of the MixER gate refit (MixER, Nzoyem et al. 2025); the expert count and context
/// size come from the model. Defaults are the published values ([`KMeansLsParams::reference`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KMeansSettings {
    /// Most K-means iterations per refit (20).
    pub max_kmeans: usize,
    /// Convergence threshold on centroid movement (1e-4).
    pub tol: f64,
    /// Centroid start without a warm start.
    pub init: KMeansInit,
    /// What an empty cluster does.
    pub empty: EmptyCluster,
    /// Number of clusters.
    pub clusters: ClusterCount,
    /// Cluster-to-expert matching.
    pub matching: Matching,
    /// Noise added to contexts before the least-squares solve (1e-4).
    pub ls_noise: f64,
    /// Extra K-means runs from fresh k-means++ seedings per refit; the tightest wins (0, published).
    pub restarts: usize,
}

impl Default for KMeansSettings {
    fn default() -> Self {
        let reference = KMeansLsParams::reference(1, 1).check().expect("the published parameters are valid");
        Self::from_params(&reference)
    }
}

impl KMeansSettings {
    /// The settings part (everything but the shape) of checked parameters.
    pub fn from_params(p: &ValidKMeansLsParams) -> Self {
        Self {
            max_kmeans: p.max_kmeans(),
            tol: p.tol(),
            init: p.init_method(),
            empty: p.empty_policy(),
            clusters: p.cluster_rule(),
            matching: p.matching(),
            ls_noise: p.ls_noise(),
            restarts: p.restarts(),
        }
    }

    /// The router parameters for the model's shape.
    pub fn params(&self, shape: RouterShape) -> KMeansLsParams {
        KMeansLsParams::new(shape.experts, shape.features)
            .max_kmeans(self.max_kmeans)
            .tol(self.tol)
            .init_method(self.init)
            .empty_cluster(self.empty)
            .clusters(self.clusters)
            .matching(self.matching)
            .ls_noise(self.ls_noise)
            .restarts(self.restarts)
    }
}

impl RouterSpec for KMeansSettings {
    type Router<B: Backend> = KMeansGate<B>;

    fn check(&self, shape: RouterShape) -> Result<(), RouterError> {
        self.params(shape).check().map(drop)
    }

    fn build<B: Backend>(
        &self,
        shape: RouterShape,
        rng: &mut Rng,
        _device: &B::Device,
    ) -> Result<KMeansGate<B>, RouterError> {
        Ok(KMeansGate { gate: self.params(shape).init(rng)?, _backend: PhantomData })
    }
}

/// [`KMeansLeastSquares`] inside a burn module: no parameters for the optimiser; its gate,
/// centroids and counters travel through [`Refit::refit_state`].
#[derive(Module, Debug)]
pub struct KMeansGate<B: Backend> {
    #[module(skip)]
    gate: KMeansLeastSquares,
    _backend: PhantomData<B>,
}

impl<B: Backend> KMeansGate<B> {
    /// The host gate.
    pub fn gate(&self) -> &KMeansLeastSquares {
        &self.gate
    }
}

impl<B: Backend> Router<B> for KMeansGate<B> {
    fn num_experts(&self) -> usize {
        Router::<B>::num_experts(&self.gate)
    }

    fn top_k(&self) -> usize {
        1
    }

    fn granularity(&self) -> Granularity {
        Granularity::Environment
    }

    fn route(&self, input: &RouterInput<B>, rng: &mut Rng) -> mixer_core::Result<Routing<B>> {
        self.gate.route(input, rng)
    }
}

impl<B: Backend> Refit for KMeansGate<B> {
    fn wants_feedback(&self) -> bool {
        true
    }

    fn refit(&mut self, feedback: &RouterFeedback, rng: &mut Rng) -> Result<GateUpdate, RouterError> {
        self.gate.update(&feedback.features, &feedback.expert_losses, rng)
    }

    fn last_rerouted(&self) -> usize {
        self.gate.stats().last_rerouted
    }

    fn last_agreement(&self) -> Option<f64> {
        self.gate.stats().last_gate_agreement
    }

    fn refit_state(&self) -> Option<serde_json::Value> {
        serde_json::to_value(self.gate.state()).ok()
    }

    fn load_refit_state(&mut self, state: Option<&serde_json::Value>) -> Result<(), RouterError> {
        let state =
            state.ok_or_else(|| RouterError::State { reason: "the K-means gate needs its gate matrix".into() })?;
        let state: KMeansLsState = serde_json::from_value(state.clone())
            .map_err(|e| RouterError::State { reason: format!("unreadable K-means gate state: {e}") })?;
        self.gate = KMeansLeastSquares::from_state(self.gate.params().clone(), &state)?;
        Ok(())
    }
}
