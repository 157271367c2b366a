//! Gradient-free vector fields on host buffers, for rollouts that need no autodiff (gate refits,
//! evaluation): no tensor dispatch per operation, and per-row terms computed once per rollout.

use core::fmt::Debug;
use core::ops::{Add, AddAssign, Div, Mul, MulAssign, Neg, Sub};

/// A host float type the host integrators and fused fields run in: `f32` (what training uses)
/// or `f64` (what tests compare against the tensor path in).
pub trait HostFloat:
    Copy
    + Debug
    + Default
    + PartialOrd
    + Send
    + Sync
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + MulAssign
    + 'static
{
    /// Zero.
    const ZERO: Self;
    /// One.
    const ONE: Self;
    /// The nearest value of this type to `v`.
    fn from_f64(v: f64) -> Self;
    /// The value as `f64` (exact).
    fn to_f64(self) -> f64;
    /// Absolute value.
    fn abs(self) -> Self;
    /// Whether the value is neither NaN nor infinite.
    fn is_finite(self) -> bool;
    /// Whether the value is NaN.
    fn is_nan(self) -> bool;
    /// The larger of two values (NaN-ignoring like `f64::max`).
    fn max(self, other: Self) -> Self;
}

macro_rules! host_float {
    ($t:ty) => {
        impl HostFloat for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            fn max(self, other: Self) -> Self {
                <$t>::max(self, other)
            }
        }
    };
}

host_float!(f32);
host_float!(f64);

/// An autonomous or time-dependent vector field evaluated on a batch of states held in host
/// memory, row-major `[rows, dim]`. Evaluation takes `&mut self` so a field bound to one
/// rollout can keep its scratch buffers; per-row factors (contexts, time rates) belong to the
/// field, so `rows()` is fixed when it is built.
pub trait HostField<T: HostFloat>: Send {
    /// State dimension `d`.
    fn dim(&self) -> usize;

    /// Number of rows the field is bound to.
    fn rows(&self) -> usize;

    /// Writes `dx/dt` at time `t` for `x: [rows, dim]` into `out: [rows, dim]`.
    fn eval(&mut self, t: f64, x: &[T], out: &mut [T]);
}

/// A [`HostField`] that can be differentiated in reverse mode: an evaluation records what its
/// backward pass needs in a tape, and [`TapedField::pull_back`] maps a cotangent of the output
/// to one of the input, accumulating the gradients of the field's own parameters inside the
/// field (where its owner reads them after the rollout's backward pass).
pub trait TapedField<T: HostFloat>: HostField<T> {
    /// What one evaluation keeps for its backward pass.
    type Tape: Send;

    /// An empty tape, sized for this field's rows.
    fn new_tape(&self) -> Self::Tape;

    /// Host values one tape holds (to choose between storing tapes and recomputing them).
    fn tape_len(&self) -> usize;

    /// [`HostField::eval`] that records the evaluation in `tape`.
    fn eval_taped(&mut self, t: f64, x: &[T], out: &mut [T], tape: &mut Self::Tape);

    /// For `g = dL/d out` of the evaluation recorded in `tape`: adds the field's parameter
    /// gradients to its accumulators and writes `dL/dx` into `x_bar` (overwritten).
    fn pull_back(&mut self, tape: &Self::Tape, g: &[T], x_bar: &mut [T]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_trip_and_predicates_hold() {
        assert_eq!(f32::from_f64(0.1).to_f64(), 0.1f32 as f64);
        assert_eq!(<f64 as HostFloat>::from_f64(0.1), 0.1);
        assert!(!HostFloat::is_finite(f32::INFINITY) && HostFloat::is_nan(f64::NAN));
        assert_eq!(HostFloat::max(-2.0f64, 1.0), 1.0);
        assert_eq!(HostFloat::abs(-2.5f32), 2.5);
    }
}
