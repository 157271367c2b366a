//! The non-gradient half of the router contract: refits from expert losses, and the state a
//! refit keeps between checkpoints.

use mixer_core::{GateUpdate, Rng, RouterFeedback};

use crate::RouterError;

/// A router's update outside gradient descent (MixER's K-means + least squares, bias
/// balancing). Backend-free: it reads host arrays and keeps host state. Every method has a
/// default that suits a router trained by gradient alone, so such a router implements it
/// with an empty `impl Refit for MyRouter<B> {}`.
pub trait Refit {
    /// Whether [`Refit::refit`] reads expert losses; the trainer computes the (costly) loss
    /// matrix of every expert on every unit only for routers that say yes.
    fn wants_feedback(&self) -> bool {
        false
    }

    /// Updates the router from `feedback`; `Skipped` leaves it unchanged.
    fn refit(&mut self, _feedback: &RouterFeedback, _rng: &mut Rng) -> Result<GateUpdate, RouterError> {
        Ok(GateUpdate::NotApplicable)
    }

    /// Units the last successful refit sent to another expert.
    fn last_rerouted(&self) -> usize {
        0
    }

    /// Share of units the router sends where its last refit meant them to go, when it knows.
    fn last_agreement(&self) -> Option<f64> {
        None
    }

    /// Called by the trainer after every optimizer step with the number of units each expert
    /// took in that step's routing (schedules, bias balancing); default: nothing.
    fn after_step(&mut self, _load: &[usize]) {}

    /// The state a checkpoint must keep besides the burn record (`None`: nothing).
    fn refit_state(&self) -> Option<serde_json::Value> {
        None
    }

    /// Restores what [`Refit::refit_state`] returned.
    fn load_refit_state(&mut self, state: Option<&serde_json::Value>) -> Result<(), RouterError> {
        match state {
            None => Ok(()),
            Some(_) => Err(RouterError::State { reason: "this router keeps no state outside its parameters".into() }),
        }
    }
}
