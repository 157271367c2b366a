//! The shared vocabulary of mixer: vector fields, integrators, routers, experts, datasets,
//! seeds and the base error. No algorithm lives here.
//!
//! ```
//! use mixer_core::{Seeds, Split};
//! let mut rng = Seeds::new(42).stream("init");
//! let _: f64 = rand::Rng::random(&mut rng);
//! assert_eq!(Split::AdaptTrain.stem(), "adapt_train");
//! ```

pub mod anchor;
mod atomic;
mod dataset;
mod error;
mod expert;
mod field;
mod host_field;
mod integrator;
mod routing;
mod seed;

pub use anchor::{anchor_module, anchor_tensor};
pub use atomic::{write_atomic, write_atomic_with};
pub use dataset::{Dataset, Split, TimeGrid};
pub use error::{Error, Result, ensure_finite};
pub use expert::{ContextModel, Expert};
pub use field::{FnField, VectorField};
pub use host_field::{HostField, HostFloat, TapedField};
pub use integrator::{Integrator, check_times};
pub use routing::{
    AuxKind, AuxLoss, ExpertGroup, GateUpdate, Granularity, Mode, Router, RouterFeedback, RouterInput, Routing,
};
pub use seed::{Rng, Seeds};

/// Tensor helpers shared by crates that move data between burn and the host.
pub mod host;
