//! Every router a run config can name. Adding a router is one file (its settings implementing
//! [`RouterSpec`], its router implementing [`Router`] and [`Refit`]) plus one line in the
//! `registry!` call at the bottom of this file; docs/extending-routers.md walks through it.

use burn::module::Module;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use mixer_core::{GateUpdate, Granularity, Rng, Router, RouterFeedback, RouterInput, Routing};

use crate::{Refit, RouterError, RouterShape, RouterSpec};

macro_rules! registry {
    ($($(#[$doc:meta])* $variant:ident = $kind:literal: $spec:ty => $router:ident;)*) => {
        /// The `[router]` table of a run config: `kind` names a registered router ([`KINDS`]),
        /// the other keys are that router's settings (all optional, defaults documented there).
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "kind", deny_unknown_fields)]
        pub enum RouterConfig {
            $($(#[$doc])* #[serde(rename = $kind)] $variant($spec),)*
        }

        /// A built router of any registered kind: what a model owns and routes with.
        #[derive(Module, Debug)]
        pub enum Gate<B: Backend> {
            $($(#[$doc])* $variant(crate::$router<B>),)*
        }

        /// The registered kinds, as written after `kind =` in a config.
        pub const KINDS: &[&str] = &[$($kind),*];

        impl RouterConfig {
            /// The registered name of this router.
            pub fn kind(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => $kind,)*
                }
            }

            /// The default settings of a registered kind; an unknown one lists the others.
            pub fn default_for(kind: &str) -> Result<Self, RouterError> {
                match kind {
                    $($kind => Ok(Self::$variant(<$spec>::default())),)*
                    other => Err(RouterError::UnknownKind { kind: other.to_string(), known: KINDS.join(", ") }),
                }
            }

            /// Checks the settings against the model's shape.
            pub fn check(&self, shape: RouterShape) -> Result<(), RouterError> {
                match self {
                    $(Self::$variant(s) => s.check(shape),)*
                }
            }

            /// Checks, then builds the router; every random draw comes from `rng`.
            pub fn build<B: Backend>(
                &self,
                shape: RouterShape,
                rng: &mut Rng,
                device: &B::Device,
            ) -> Result<Gate<B>, RouterError> {
                self.check(shape)?;
                match self {
                    $(Self::$variant(s) => Ok(Gate::$variant(s.build::<B>(shape, rng, device)?)),)*
                }
            }
        }

        impl<B: Backend> Gate<B> {
            /// The registered name of this router.
            pub fn kind(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => $kind,)*
                }
            }

            fn router(&self) -> &dyn Router<B> {
                match self {
                    $(Self::$variant(r) => r,)*
                }
            }

            fn refitter(&self) -> &dyn Refit {
                match self {
                    $(Self::$variant(r) => r,)*
                }
            }

            fn refitter_mut(&mut self) -> &mut dyn Refit {
                match self {
                    $(Self::$variant(r) => r,)*
                }
            }
        }
    };
}

impl<B: Backend> Router<B> for Gate<B> {
    fn num_experts(&self) -> usize {
        self.router().num_experts()
    }

    fn top_k(&self) -> usize {
        self.router().top_k()
    }

    fn granularity(&self) -> Granularity {
        self.router().granularity()
    }

    fn route(&self, input: &RouterInput<B>, rng: &mut Rng) -> mixer_core::Result<Routing<B>> {
        self.router().route(input, rng)
    }

    fn is_batch_coupled(&self) -> bool {
        self.router().is_batch_coupled()
    }
}

impl<B: Backend> Refit for Gate<B> {
    fn wants_feedback(&self) -> bool {
        self.refitter().wants_feedback()
    }

    fn refit(&mut self, feedback: &RouterFeedback, rng: &mut Rng) -> Result<GateUpdate, RouterError> {
        self.refitter_mut().refit(feedback, rng)
    }

    fn last_rerouted(&self) -> usize {
        self.refitter().last_rerouted()
    }

    fn last_agreement(&self) -> Option<f64> {
        self.refitter().last_agreement()
    }

    fn after_step(&mut self, load: &[usize]) {
        self.refitter_mut().after_step(load)
    }

    fn refit_state(&self) -> Option<serde_json::Value> {
        self.refitter().refit_state()
    }

    fn load_refit_state(&mut self, state: Option<&serde_json::Value>) -> Result<(), RouterError> {
        self.refitter_mut().load_refit_state(state)
    }
}

/// What a checkpoint keeps of a gate besides its burn record (`router.json` of a run).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateState {
    /// The router's registered kind.
    pub kind: String,
    /// Its [`Refit::refit_state`].
    pub state: Option<serde_json::Value>,
}

impl<B: Backend> Gate<B> {
    /// The state to write into a checkpoint.
    pub fn state(&self) -> GateState {
        GateState { kind: self.kind().to_string(), state: self.refit_state() }
    }

    /// Restores checkpointed state; a state written by another kind of router is an error.
    pub fn load_state(&mut self, state: &GateState) -> Result<(), RouterError> {
        if state.kind != self.kind() {
            return Err(RouterError::State {
                reason: format!(
                    "the checkpoint holds a `{}` router but the config asks for `{}`; train a new run or restore \
                     the run's config.json",
                    state.kind,
                    self.kind()
                ),
            });
        }
        self.load_refit_state(state.state.as_ref())
    }
}

impl GateState {
    /// Reads `router.json`, also in the layout written before the registry
    /// (`{"kmeans": <state or null>}`).
    pub fn from_json(value: serde_json::Value) -> Result<Self, RouterError> {
        let unreadable = |e: serde_json::Error| RouterError::State { reason: format!("unreadable router state: {e}") };
        match value.get("kmeans") {
            Some(old) if value.get("kind").is_none() => Ok(match old {
                serde_json::Value::Null => Self { kind: "gradient".into(), state: None },
                kmeans => Self { kind: "kmeans-ls".into(), state: Some(kmeans.clone()) },
            }),
            _ => serde_json::from_value(value).map_err(unreadable),
        }
    }
}

registry! {
    /// MixER: K-means over contexts plus least squares, refit from expert losses (Nzoyem et al. 2025).
    KmeansLs = "kmeans-ls": crate::KMeansSettings => KMeansGate;
    /// Naive MoE: a softmax gate trained by gradient, Switch top-1 or dense (Nzoyem et al. 2025).
    Gradient = "gradient": crate::GradientSettings => GradientGate;
    /// Noisy top-k with importance and load losses (Shazeer et al. 2017).
    NoisyTopK = "noisy-top-k": crate::NoisyTopKSettings => NoisyTopK;
    /// Expert choice: each expert takes its top-C units (Zhou et al. 2022); batch-coupled.
    ExpertChoice = "expert-choice": crate::ExpertChoiceSettings => ExpertChoice;
    /// Switch top-1 with balance loss, jitter and opt-in capacity (Fedus et al. 2022).
    Switch = "switch": crate::SwitchSettings => Switch;
    /// GShard top-2 with renormalised weights and random second dispatch (Lepikhin et al. 2021).
    GShard = "gshard": crate::GShardSettings => GShard;
    /// MoE-POT: top-k over routed experts, annealed temperature, always-on shared experts (Wang et al. 2025).
    SharedRouted = "shared-routed": crate::SharedRoutedSettings => SharedRouted;
    /// Auxiliary-loss-free balancing by a per-expert selection bias (Wang et al. 2024).
    BiasBalance = "bias-balance": crate::BiasBalanceSettings => BiasBalance;
    /// Locality-sensitive hash of the features; nothing learned (docs/extending-routers.md).
    Hash = "hash": crate::HashSettings => HashRouter;
}
