//! Learning-rate schedules.

use serde::{Deserialize, Serialize};

/// A piecewise-constant schedule: `base * factor^(number of boundaries passed)`, boundaries given
/// as fractions of all steps (MixER, Nzoyem et al. 2025: model lr x0.4 at 1/3 and 2/3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PiecewiseLr {
    /// Initial learning rate.
    pub base: f64,
    /// Multiplier applied at each boundary.
    pub factor: f64,
    /// Boundaries as fractions of the total number of steps, increasing.
    pub boundaries: Vec<f64>,
}

impl PiecewiseLr {
    /// A constant schedule.
    pub fn constant(base: f64) -> Self {
        Self { base, factor: 1.0, boundaries: vec![] }
    }

    /// The learning rate at `step` of `total`.
    pub fn at(&self, step: usize, total: usize) -> f64 {
        let frac = step as f64 / total.max(1) as f64;
        let passed = self.boundaries.iter().filter(|&&b| frac >= b).count();
        self.base * self.factor.powi(passed as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_at_thirds() {
        let s = PiecewiseLr { base: 1e-3, factor: 0.4, boundaries: vec![1.0 / 3.0, 2.0 / 3.0] };
        assert_eq!(s.at(0, 300), 1e-3);
        assert_eq!(s.at(99, 300), 1e-3);
        assert!((s.at(100, 300) - 4e-4).abs() < 1e-18);
        assert!((s.at(299, 300) - 1.6e-4).abs() < 1e-18);
        assert_eq!(PiecewiseLr::constant(0.1).at(7, 10), 0.1);
    }
}
