//! Choosing an expert type in a config file.

use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};
use serde::{Deserialize, Serialize};

use mixer_core::{Error, Expert};

use crate::{CodaExpert, ExpertError, GepsExpert, coda_expert, geps_expert};

/// An expert as written in experiment files (`kind = "geps" | "coda"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ExpertConfig {
    /// GEPS: low-rank context adaptation of every layer.
    Geps {
        /// Hidden width `W`.
        width: usize,
        /// Number of linear layers (at least 2).
        depth: usize,
    },
    /// CoDA: context-linear hypernetwork on every parameter.
    Coda {
        /// Hidden width `W`.
        width: usize,
        /// Number of linear layers (at least 2).
        depth: usize,
    },
}

impl ExpertConfig {
    /// Checks width and depth.
    pub fn validate(&self) -> Result<(), ExpertError> {
        let (ExpertConfig::Geps { width, depth } | ExpertConfig::Coda { width, depth }) = self;
        if *width == 0 {
            return Err(Error::config("expert.width", "must be at least 1").into());
        }
        if *depth < 2 {
            return Err(Error::config("expert.depth", format!("at least 2 linear layers, got {depth}")).into());
        }
        Ok(())
    }

    /// Builds one expert for states of size `dim` reading contexts of size `context`.
    pub fn init<B: Backend>(&self, dim: usize, context: usize, device: &B::Device) -> Result<AnyExpert<B>, ExpertError> {
        self.validate()?;
        if dim == 0 || context == 0 {
            return Err(Error::config("expert", "state and context sizes must be at least 1").into());
        }
        Ok(match *self {
            ExpertConfig::Geps { width, depth } => AnyExpert::Geps(geps_expert(dim, context, width, depth, device)?),
            ExpertConfig::Coda { width, depth } => AnyExpert::Coda(coda_expert(dim, context, width, depth, device)?),
        })
    }
}

/// Any of the expert types, so a mixture can be chosen from a config.
#[derive(Module, Debug)]
pub enum AnyExpert<B: Backend> {
    /// A GEPS expert.
    Geps(GepsExpert<B>),
    /// A CoDA expert.
    Coda(CodaExpert<B>),
}

impl<B: Backend> Expert<B> for AnyExpert<B> {
    fn state_dim(&self) -> usize {
        match self {
            AnyExpert::Geps(e) => e.state_dim(),
            AnyExpert::Coda(e) => e.state_dim(),
        }
    }

    fn context_dim(&self) -> usize {
        match self {
            AnyExpert::Geps(e) => e.context_dim(),
            AnyExpert::Coda(e) => e.context_dim(),
        }
    }

    fn forward(&self, x: Tensor<B, 2>, ctx: Tensor<B, 2>) -> Tensor<B, 2> {
        match self {
            AnyExpert::Geps(e) => e.forward(x, ctx),
            AnyExpert::Coda(e) => e.forward(x, ctx),
        }
    }
}
