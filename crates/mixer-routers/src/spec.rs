//! What a router's settings promise the registry: they check themselves against the model's
//! shape and build their router.

use std::fmt::Debug;

use burn::tensor::backend::Backend;
use serde::{Serialize, de::DeserializeOwned};

use mixer_core::Rng;

use crate::RouterError;

/// The sizes a router is built for, fixed by the model rather than by the router's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouterShape {
    /// Number of experts `E`.
    pub experts: usize,
    /// Width `d` of the features each unit is routed by (the context size for MixER).
    pub features: usize,
}

impl RouterShape {
    /// At least one expert and one feature.
    pub fn check(self) -> Result<(), RouterError> {
        if self.experts == 0 {
            return Err(RouterError::ZeroExperts);
        }
        if self.features == 0 {
            return Err(RouterError::ZeroContextDim);
        }
        Ok(())
    }

    /// The width check of a router's input `features: [N, d]`.
    pub fn check_features(self, dims: [usize; 2]) -> mixer_core::Result<()> {
        if dims[1] != self.features {
            return Err(mixer_core::Error::shape(
                "router features",
                ["N".to_string(), self.features.to_string()],
                dims,
            ));
        }
        Ok(())
    }
}

/// Each named coefficient (when set) is finite and `>= 0`.
pub(crate) fn check_coefficients(coefficients: &[(&'static str, Option<f64>)]) -> Result<(), RouterError> {
    for &(field, value) in coefficients {
        if let Some(value) = value.filter(|v| !(v.is_finite() && *v >= 0.0)) {
            return Err(RouterError::InvalidCoefficient { field, value });
        }
    }
    Ok(())
}

/// Serde settings of one router kind (the `[router]` table of a run config, less its `kind`).
/// `Default` gives the published or documented values, so `kind = "..."` alone is a valid table.
pub trait RouterSpec: Default + Clone + Debug + PartialEq + Serialize + DeserializeOwned {
    /// The router these settings build.
    type Router<B: Backend>;

    /// Checks the settings against `shape`; every bad value is a typed error naming its field.
    fn check(&self, shape: RouterShape) -> Result<(), RouterError>;

    /// Checks, then builds the router on `device`; every random draw comes from `rng`.
    fn build<B: Backend>(
        &self,
        shape: RouterShape,
        rng: &mut Rng,
        device: &B::Device,
    ) -> Result<Self::Router<B>, RouterError>;
}
