//! A hash router (in the spirit of Roller et al. 2021's hash layers): each unit goes to the
//! expert whose fixed random direction its features point along most, `argmax_e x . r_e`, a
//! locality-sensitive hash. Nothing is learned, so it is the baseline that shows what a
//! learned router adds. It is also the worked example of docs/extending-routers.md.

use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use mixer_core::{Granularity, Rng, Router, RouterInput, Routing, host};

use crate::{Refit, RouterError, RouterShape, RouterSpec, select::argmax_lowest};

/// `[router]` settings of [`HashRouter`] (`kind = "hash"`); the projections come from the seed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HashSettings {}

impl RouterSpec for HashSettings {
    type Router<B: Backend> = HashRouter<B>;

    fn check(&self, shape: RouterShape) -> Result<(), RouterError> {
        shape.check()
    }

    fn build<B: Backend>(
        &self,
        shape: RouterShape,
        rng: &mut Rng,
        _device: &B::Device,
    ) -> Result<HashRouter<B>, RouterError> {
        self.check(shape)?;
        let directions = (0..shape.features * shape.experts).map(|_| StandardNormal.sample(rng)).collect();
        Ok(HashRouter { directions, experts: shape.experts, _backend: Default::default() })
    }
}

/// Routes each unit to `argmax_e x . r_e` (ties to the lowest index) with weight 1; `r_e` are
/// standard normal directions drawn once when the router is built.
#[derive(Module, Debug)]
pub struct HashRouter<B: Backend> {
    /// Directions `[d, E]`, row-major.
    #[module(skip)]
    directions: Vec<f64>,
    experts: usize,
    _backend: std::marker::PhantomData<B>,
}

impl<B: Backend> Router<B> for HashRouter<B> {
    fn num_experts(&self) -> usize {
        self.experts
    }

    fn top_k(&self) -> usize {
        1
    }

    fn granularity(&self) -> Granularity {
        Granularity::Token
    }

    fn route(&self, input: &RouterInput<B>, _rng: &mut Rng) -> mixer_core::Result<Routing<B>> {
        let (e, d) = (self.experts, self.directions.len() / self.experts);
        let [n, _] = input.features.dims();
        RouterShape { experts: e, features: d }.check_features(input.features.dims())?;
        let x = host::to_vec(input.features.clone());
        let indices = x
            .chunks(d)
            .map(|row| {
                let scores: Vec<f64> =
                    (0..e).map(|j| row.iter().enumerate().map(|(i, v)| v * self.directions[i * e + j]).sum()).collect();
                Some(argmax_lowest(&scores))
            })
            .collect();
        let device = input.features.device();
        Ok(Routing {
            k: 1,
            indices,
            weights: Tensor::ones([n, 1], &device),
            shared: vec![],
            probs: None,
            aux_losses: vec![],
        })
    }
}

/// Nothing is refit; the directions are the state a checkpoint keeps, since they are not
/// parameters of the burn record.
impl<B: Backend> Refit for HashRouter<B> {
    fn refit_state(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!(self.directions))
    }

    fn load_refit_state(&mut self, state: Option<&serde_json::Value>) -> Result<(), RouterError> {
        let directions: Vec<f64> = state
            .and_then(|s| serde_json::from_value(s.clone()).ok())
            .ok_or_else(|| RouterError::State { reason: "the hash router needs its directions".into() })?;
        if directions.len() != self.directions.len() {
            let reason = format!("{} hash directions saved, {} expected", directions.len(), self.directions.len());
            return Err(RouterError::State { reason });
        }
        self.directions = directions;
        Ok(())
    }
}
