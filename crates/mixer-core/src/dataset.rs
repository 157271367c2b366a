//! Multi-environment trajectory datasets: `X: [envs, trajs, steps, dim]` with time grids.

use ndarray::{Array4, ArrayView3};
use serde::{Deserialize, Serialize};

use crate::{Error, Result, ensure_finite};

/// Observation times: one grid for all environments, or one per environment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TimeGrid {
    /// Every environment shares this grid, `[steps]`.
    Shared(Vec<f64>),
    /// One grid per environment, `[envs][steps]` (ODEBench families differ in horizon).
    PerEnv(Vec<Vec<f64>>),
}

impl TimeGrid {
    /// The grid of environment `env`.
    pub fn for_env(&self, env: usize) -> &[f64] {
        match self {
            TimeGrid::Shared(t) => t,
            TimeGrid::PerEnv(ts) => &ts[env],
        }
    }

    /// Keeps the environments in `envs` (a per-environment grid is subset, a shared one kept).
    pub fn select(&self, envs: &[usize]) -> TimeGrid {
        match self {
            TimeGrid::Shared(t) => TimeGrid::Shared(t.clone()),
            TimeGrid::PerEnv(ts) => TimeGrid::PerEnv(envs.iter().map(|&e| ts[e].clone()).collect()),
        }
    }
}

/// The four splits of a multi-environment dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Split {
    /// Meta-training trajectories.
    Train,
    /// Same environments, new initial conditions.
    Test,
    /// New environments, few trajectories each (for fitting contexts).
    AdaptTrain,
    /// The adaptation environments, new initial conditions.
    AdaptTest,
}

impl Split {
    /// All splits in canonical order.
    pub const ALL: [Split; 4] = [Split::Train, Split::Test, Split::AdaptTrain, Split::AdaptTest];

    /// The file stem used in the published layout (`train`, `test`, `adapt_train`, `adapt_test`).
    pub fn stem(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
            Split::AdaptTrain => "adapt_train",
            Split::AdaptTest => "adapt_test",
        }
    }
}

/// Trajectories of several environments of one or more system families.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// States, `[envs, trajs, steps, dim]`.
    pub x: Array4<f64>,
    /// Observation times.
    pub t: TimeGrid,
    /// Family index of each environment, when known (`[envs]`).
    pub families: Option<Vec<usize>>,
}

impl Dataset {
    /// Builds a dataset after checking shapes, grids and finiteness.
    pub fn new(x: Array4<f64>, t: TimeGrid, families: Option<Vec<usize>>) -> Result<Self> {
        let (envs, _, steps, _) = x.dim();
        match &t {
            TimeGrid::Shared(g) => check_grid("t", g, steps)?,
            TimeGrid::PerEnv(gs) => {
                if gs.len() != envs {
                    return Err(Error::shape("per-environment time grids", envs, gs.len()));
                }
                for (e, g) in gs.iter().enumerate() {
                    check_grid(&format!("t of environment {e}"), g, steps)?;
                }
            }
        }
        if let Some(f) = &families
            && f.len() != envs
        {
            return Err(Error::shape("family labels", envs, f.len()));
        }
        ensure_finite("X", x.iter())?;
        Ok(Self { x, t, families })
    }

    /// Number of environments.
    pub fn num_envs(&self) -> usize {
        self.x.dim().0
    }

    /// Trajectories per environment.
    pub fn num_trajs(&self) -> usize {
        self.x.dim().1
    }

    /// Time points per trajectory.
    pub fn num_steps(&self) -> usize {
        self.x.dim().2
    }

    /// State dimension.
    pub fn dim(&self) -> usize {
        self.x.dim().3
    }

    /// Trajectories of one environment, `[trajs, steps, dim]`.
    pub fn env(&self, env: usize) -> ArrayView3<'_, f64> {
        self.x.index_axis(ndarray::Axis(0), env)
    }

    /// Keeps only the environments in `envs`, in that order.
    pub fn select_envs(&self, envs: &[usize]) -> Dataset {
        Dataset {
            x: self.x.select(ndarray::Axis(0), envs),
            t: self.t.select(envs),
            families: self.families.as_ref().map(|f| envs.iter().map(|&e| f[e]).collect()),
        }
    }
}

fn check_grid(what: &str, grid: &[f64], steps: usize) -> Result<()> {
    if grid.len() != steps {
        return Err(Error::shape(format!("{what} (steps of X)"), steps, grid.len()));
    }
    ensure_finite(what, grid)?;
    if let Some(i) = grid.windows(2).position(|w| w[1] <= w[0]) {
        return Err(Error::config(what, format!("time grid not strictly increasing at index {}", i + 1)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_grids_and_nan() {
        let x = Array4::<f64>::zeros((2, 3, 4, 2));
        assert!(Dataset::new(x.clone(), TimeGrid::Shared(vec![0.0, 1.0, 2.0, 3.0]), None).is_ok());
        assert!(matches!(
            Dataset::new(x.clone(), TimeGrid::Shared(vec![0.0, 1.0, 2.0]), None),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(
            Dataset::new(x.clone(), TimeGrid::Shared(vec![0.0, 1.0, 1.0, 3.0]), None),
            Err(Error::InvalidConfig { .. })
        ));
        assert!(matches!(
            Dataset::new(x.clone(), TimeGrid::PerEnv(vec![vec![0.0, 1.0, 2.0, 3.0]]), None),
            Err(Error::ShapeMismatch { .. })
        ));
        let mut bad = x;
        bad[[1, 2, 3, 1]] = f64::NAN;
        match Dataset::new(bad, TimeGrid::Shared(vec![0.0, 1.0, 2.0, 3.0]), None) {
            Err(Error::NonFiniteData { index, .. }) => assert_eq!(index, 2 * 3 * 4 * 2 - 1),
            other => panic!("expected NonFiniteData, got {other:?}"),
        }
    }

    #[test]
    fn select_envs_keeps_labels_and_grids() {
        let mut x = Array4::<f64>::zeros((3, 1, 2, 1));
        x[[2, 0, 1, 0]] = 5.0;
        let t = TimeGrid::PerEnv(vec![vec![0.0, 1.0], vec![0.0, 2.0], vec![0.0, 3.0]]);
        let d = Dataset::new(x, t, Some(vec![0, 1, 2])).unwrap();
        let s = d.select_envs(&[2, 0]);
        assert_eq!(s.families, Some(vec![2, 0]));
        assert_eq!(s.t.for_env(0), &[0.0, 3.0]);
        assert_eq!(s.x[[0, 0, 1, 0]], 5.0);
    }
}
