//! Choosing an expert type in a config file, and the enum module that holds any of them.

use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};
use serde::{Deserialize, Serialize};

use mixer_core::{Error, Expert};

use crate::{CodaConfig, CodaExpert, ExpertError, GepsConfig, GepsExpert, NcfConfig, NcfExpert};

/// An expert as written in experiment files: `kind = "geps" | "coda" | "ncf" | "geps-mip" |
/// "coda-mip"` plus its sizes. State and context sizes come from the data and the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ExpertConfig {
    /// GEPS as in MixER: low-rank adaptation of every layer, context-modulated swish, trainable
    /// context shift.
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
    /// NCF: context and state branches, then a main MLP; Taylor self-modulation of `order`.
    Ncf {
        /// Main MLP width `W`.
        width: usize,
        /// Main MLP linear layers `Dm` (at least 1).
        depth: usize,
        /// Branch output size `I`.
        intermediate: usize,
        /// Linear layers per branch (at least 1).
        branch_depth: usize,
        /// Taylor order of the self-modulation: 0 (default), 1 or 2.
        #[serde(default)]
        order: usize,
    },
    /// GEPS with MIP-encoded contexts (hypernetwork stability option).
    #[serde(rename = "geps-mip")]
    GepsMip {
        /// Hidden width `W`.
        width: usize,
        /// Number of linear layers (at least 2).
        depth: usize,
    },
    /// CoDA with MIP-encoded contexts.
    #[serde(rename = "coda-mip")]
    CodaMip {
        /// Hidden width `W`.
        width: usize,
        /// Number of linear layers (at least 2).
        depth: usize,
    },
}

/// The fully specified config of one expert.
enum Resolved {
    Geps(GepsConfig),
    Coda(CodaConfig),
    Ncf(NcfConfig),
}

impl ExpertConfig {
    fn resolve(&self, dim: usize, context: usize) -> Resolved {
        match *self {
            ExpertConfig::Geps { width, depth } => {
                Resolved::Geps(GepsConfig { dim, context, width, depth, context_shift: true, mip: false })
            }
            ExpertConfig::GepsMip { width, depth } => {
                Resolved::Geps(GepsConfig { dim, context, width, depth, context_shift: true, mip: true })
            }
            ExpertConfig::Coda { width, depth } => {
                Resolved::Coda(CodaConfig { dim, context, width, depth, mip: false })
            }
            ExpertConfig::CodaMip { width, depth } => {
                Resolved::Coda(CodaConfig { dim, context, width, depth, mip: true })
            }
            ExpertConfig::Ncf { width, depth, intermediate, branch_depth, order } => {
                Resolved::Ncf(NcfConfig { dim, context, width, depth, intermediate, branch_depth, order })
            }
        }
    }

    /// Checks the sizes that do not depend on the data (width, depth, branch sizes).
    pub fn validate(&self) -> Result<(), ExpertError> {
        let prefix = |e: ExpertError| match e {
            ExpertError::Core(Error::InvalidConfig { field, reason }) => {
                Error::InvalidConfig { field: format!("expert.{field}"), reason }.into()
            }
            other => other,
        };
        match self.resolve(1, 1) {
            Resolved::Geps(c) => c.validate(),
            Resolved::Coda(c) => c.validate(),
            Resolved::Ncf(c) => c.validate(),
        }
        .map_err(prefix)
    }

    /// Builds one expert for states of size `dim` reading contexts of size `context`.
    pub fn init<B: Backend>(
        &self,
        dim: usize,
        context: usize,
        device: &B::Device,
    ) -> Result<AnyExpert<B>, ExpertError> {
        self.validate()?;
        Ok(match self.resolve(dim, context) {
            Resolved::Geps(c) => AnyExpert::Geps(c.init(device)?),
            Resolved::Coda(c) => AnyExpert::Coda(c.init(device)?),
            Resolved::Ncf(c) => AnyExpert::Ncf(c.init(device)?),
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
    /// An NCF expert.
    Ncf(NcfExpert<B>),
}

impl<B: Backend> Expert<B> for AnyExpert<B> {
    fn state_dim(&self) -> usize {
        match self {
            AnyExpert::Geps(e) => e.state_dim(),
            AnyExpert::Coda(e) => e.state_dim(),
            AnyExpert::Ncf(e) => e.state_dim(),
        }
    }

    fn context_dim(&self) -> usize {
        match self {
            AnyExpert::Geps(e) => e.context_dim(),
            AnyExpert::Coda(e) => e.context_dim(),
            AnyExpert::Ncf(e) => e.context_dim(),
        }
    }

    fn forward(&self, x: Tensor<B, 2>, ctx: Tensor<B, 2>) -> Tensor<B, 2> {
        match self {
            AnyExpert::Geps(e) => e.forward(x, ctx),
            AnyExpert::Coda(e) => e.forward(x, ctx),
            AnyExpert::Ncf(e) => e.forward(x, ctx),
        }
    }

    fn forward_about(&self, x: Tensor<B, 2>, ctx: Tensor<B, 2>, anchor: Tensor<B, 2>) -> Tensor<B, 2> {
        match self {
            AnyExpert::Geps(e) => e.forward_about(x, ctx, anchor),
            AnyExpert::Coda(e) => e.forward_about(x, ctx, anchor),
            AnyExpert::Ncf(e) => e.forward_about(x, ctx, anchor),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::TestBackend;

    #[test]
    fn toml_kinds_build_the_right_expert() {
        let device = Default::default();
        let cases = [
            ("kind = \"geps\"\nwidth = 8\ndepth = 3", "geps"),
            ("kind = \"coda\"\nwidth = 8\ndepth = 2", "coda"),
            ("kind = \"ncf\"\nwidth = 8\ndepth = 2\nintermediate = 4\nbranch_depth = 2", "ncf"),
            ("kind = \"ncf\"\nwidth = 8\ndepth = 2\nintermediate = 4\nbranch_depth = 2\norder = 2", "ncf-t2"),
            ("kind = \"geps-mip\"\nwidth = 8\ndepth = 3", "geps-mip"),
            ("kind = \"coda-mip\"\nwidth = 8\ndepth = 3", "coda-mip"),
        ];
        let _rng = crate::tests::rng_lock();
        for (text, kind) in cases {
            let cfg: ExpertConfig = toml::from_str(text).unwrap();
            let e = cfg.init::<TestBackend>(2, 3, &device).unwrap();
            assert_eq!((e.state_dim(), e.context_dim()), (2, 3), "{kind}");
            let ok = match (&e, kind) {
                (AnyExpert::Geps(g), "geps") => !g.mip && g.context_shift.is_some(),
                (AnyExpert::Geps(g), "geps-mip") => g.mip,
                (AnyExpert::Coda(c), "coda") => !c.mip,
                (AnyExpert::Coda(c), "coda-mip") => c.mip,
                (AnyExpert::Ncf(n), "ncf") => n.order == 0,
                (AnyExpert::Ncf(n), "ncf-t2") => n.order == 2,
                _ => false,
            };
            assert!(ok, "{kind}");
            assert_eq!(e.forward(Tensor::ones([4, 2], &device), Tensor::ones([4, 3], &device)).dims(), [4, 2]);
        }
        assert!(toml::from_str::<ExpertConfig>("kind = \"geps\"\nwidth = 8\ndepth = 3\nextra = 1").is_err());
    }

    #[test]
    fn each_invalid_field_is_rejected() {
        let err = |c: ExpertConfig| match c.validate() {
            Err(ExpertError::Core(Error::InvalidConfig { field, .. })) => field,
            other => panic!("expected an invalid-config error, got {other:?}"),
        };
        assert_eq!(err(ExpertConfig::Geps { width: 0, depth: 3 }), "expert.width");
        assert_eq!(err(ExpertConfig::Geps { width: 8, depth: 1 }), "expert.depth");
        assert_eq!(err(ExpertConfig::Coda { width: 0, depth: 3 }), "expert.width");
        assert_eq!(err(ExpertConfig::CodaMip { width: 8, depth: 0 }), "expert.depth");
        let ncf = |width, depth, intermediate, branch_depth| ExpertConfig::Ncf {
            width,
            depth,
            intermediate,
            branch_depth,
            order: 0,
        };
        assert_eq!(err(ncf(0, 2, 4, 1)), "expert.width");
        assert_eq!(err(ncf(8, 0, 4, 1)), "expert.depth");
        assert_eq!(err(ncf(8, 2, 0, 1)), "expert.intermediate");
        assert_eq!(err(ncf(8, 2, 4, 0)), "expert.branch_depth");
        let order3 = ExpertConfig::Ncf { width: 8, depth: 2, intermediate: 4, branch_depth: 1, order: 3 };
        assert_eq!(err(order3), "expert.order");
        let device = Default::default();
        assert!(ExpertConfig::Geps { width: 8, depth: 3 }.init::<TestBackend>(0, 2, &device).is_err());
        assert!(ExpertConfig::Geps { width: 8, depth: 3 }.init::<TestBackend>(2, 0, &device).is_err());
    }
}
