//! Training and evaluation batches: the rows (trajectories) of chosen environments, grouped by
//! time grid so that each group is integrated over one grid.
//!
//! Grids are compared up to an affine map: an environment's window `t_0, t_1, ...` is stored as
//! `s_k = (t_k - t_0) / h` with its rate `h = t_1 - t_0`, and environments whose `s` grids agree
//! share one rollout ([`mixer_experts::Rows`]: experts are autonomous, so integrating
//! `dx/ds = h f(x)` is exact). ODE families with different horizons but the same number of
//! points then cost one rollout instead of one per family.

use burn::tensor::{Tensor, backend::Backend};
use rand::Rng as _;

use mixer_core::host::tensor2;
use mixer_core::{Dataset, Rng};
use mixer_experts::Rows;

/// Trajectories of several environments that share one time grid.
#[derive(Clone, Debug)]
pub struct BatchGroup<B: Backend> {
    /// Environment (dataset index) of each row, `[rows]`.
    pub env_of_row: Vec<usize>,
    /// Position of each row's environment in the batch's environment list, `[rows]`.
    pub slot_of_row: Vec<usize>,
    /// Initial states, `[rows, dim]`.
    pub x0: Tensor<B, 2>,
    /// Observed states, `[rows, steps, dim]`.
    pub target: Tensor<B, 3>,
    /// The shared normalised time grid `s`, `[steps]` (`s_0 = 0`, `s_1 = 1`).
    pub times: Vec<f64>,
}

/// All rows of a set of environments, grouped by time grid.
#[derive(Clone, Debug)]
pub struct Batch<B: Backend> {
    /// Environments in this batch, in order.
    pub envs: Vec<usize>,
    /// Groups of rows sharing a time grid.
    pub groups: Vec<BatchGroup<B>>,
    /// Time rate `h` of every dataset environment (1 for environments outside the batch).
    pub rate: Vec<f64>,
    /// Loss weight of each batch environment, in `envs` order (1 unless [`Batch::weighted`]).
    pub weight: Vec<f64>,
}

/// `(s, h)`: the grid `t` as `s_k = (t_k - t_0) / h` with `h = t_1 - t_0` (1 for one point).
fn normalise(t: &[f64]) -> (Vec<f64>, f64) {
    let h = if t.len() > 1 { t[1] - t[0] } else { 1.0 };
    (t.iter().map(|&v| (v - t[0]) / h).collect(), h)
}

/// Whether two normalised grids agree to rounding.
fn same_grid(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-9 * x.abs().max(1.0))
}

/// A contiguous window `[start, start + len)` of time indices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// First index.
    pub start: usize,
    /// Number of points.
    pub len: usize,
}

impl Window {
    /// The whole trajectory.
    pub fn full(steps: usize) -> Self {
        Self { start: 0, len: steps }
    }

    /// A random window of at least `fraction` of `steps` points (and at least 2).
    pub fn random(steps: usize, fraction: f64, rng: &mut Rng) -> Self {
        let min_len = ((fraction * steps as f64).ceil() as usize).clamp(2.min(steps), steps);
        let len = rng.random_range(min_len..=steps);
        let start = rng.random_range(0..=steps - len);
        Self { start, len }
    }
}

impl<B: Backend> Batch<B> {
    /// Rows of `envs` (every trajectory, or the first `max_trajs`) over `window`.
    pub fn new(data: &Dataset, envs: &[usize], window: Window, max_trajs: Option<usize>, device: &B::Device) -> Self {
        let trajs = max_trajs.map_or(data.num_trajs(), |m| m.min(data.num_trajs()));
        let dim = data.dim();
        // group environments by normalised windowed grids, keeping first-seen order
        let mut rate = vec![1.0; data.num_envs()];
        let mut grids: Vec<(Vec<f64>, Vec<usize>)> = Vec::new();
        for (slot, &e) in envs.iter().enumerate() {
            let (s, h) = normalise(&data.t.for_env(e)[window.start..window.start + window.len]);
            rate[e] = h;
            match grids.iter_mut().find(|(g, _)| same_grid(g, &s)) {
                Some((_, slots)) => slots.push(slot),
                None => grids.push((s, vec![slot])),
            }
        }
        let groups = grids
            .into_iter()
            .map(|(times, slots)| {
                let rows = slots.len() * trajs;
                let mut x0 = Vec::with_capacity(rows * dim);
                let mut target = Vec::with_capacity(rows * window.len * dim);
                let (mut env_of_row, mut slot_of_row) = (Vec::with_capacity(rows), Vec::with_capacity(rows));
                for &slot in &slots {
                    let env = data.env(envs[slot]);
                    for j in 0..trajs {
                        for k in window.start..window.start + window.len {
                            for d in 0..dim {
                                target.push(env[[j, k, d]]);
                            }
                        }
                        x0.extend((0..dim).map(|d| env[[j, window.start, d]]));
                        env_of_row.push(envs[slot]);
                        slot_of_row.push(slot);
                    }
                }
                let target = tensor2::<B>(&target, [rows, window.len * dim], device).reshape([rows, window.len, dim]);
                BatchGroup { env_of_row, slot_of_row, x0: tensor2(&x0, [rows, dim], device), target, times }
            })
            .collect();
        Batch { envs: envs.to_vec(), groups, rate, weight: vec![1.0; envs.len()] }
    }

    /// The batch with loss weights taken from `per_env`, indexed by dataset environment.
    pub fn weighted(mut self, per_env: &[f64]) -> Self {
        self.weight = self.envs.iter().map(|&e| per_env[e]).collect();
        self
    }

    /// The rows of a group, ready for [`mixer_experts::MixtureOfExperts::rollout_rows`].
    pub fn rows<'a>(&'a self, group: &'a BatchGroup<B>) -> Rows<'a, B> {
        Rows { env_of_row: &group.env_of_row, x0: group.x0.clone(), times: &group.times, rate: Some(&self.rate) }
    }

    /// A `[envs, rows]` averaging matrix for a group: entry `(s, r)` is `1 / rows of env s`
    /// when row `r` belongs to batch environment `s`.
    pub fn averaging(&self, group: &BatchGroup<B>, device: &B::Device) -> Tensor<B, 2> {
        let n = self.envs.len();
        let rows = group.slot_of_row.len();
        let mut counts = vec![0usize; n];
        for g in &self.groups {
            for &s in &g.slot_of_row {
                counts[s] += 1;
            }
        }
        let mut m = vec![0.0; n * rows];
        for (r, &s) in group.slot_of_row.iter().enumerate() {
            m[s * rows + r] = 1.0 / counts[s] as f64;
        }
        tensor2(&m, [n, rows], device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::TestBackend;
    use mixer_core::{Seeds, TimeGrid};
    use ndarray::Array4;

    fn data() -> Dataset {
        let x = Array4::from_shape_fn((3, 2, 4, 1), |(e, j, k, _)| (100 * e + 10 * j + k) as f64);
        // env 2's grid is env 0's at half the spacing; env 1's is uneven
        let t = TimeGrid::PerEnv(vec![vec![0.0, 1.0, 2.0, 3.0], vec![0.0, 2.0, 4.0, 7.0], vec![0.0, 0.5, 1.0, 1.5]]);
        Dataset::new(x, t, None).unwrap()
    }

    #[test]
    fn groups_by_normalised_grid_and_windows() {
        let device = Default::default();
        let b = Batch::<TestBackend>::new(&data(), &[2, 1, 0], Window { start: 1, len: 3 }, None, &device);
        assert_eq!(b.groups.len(), 2);
        assert_eq!(b.rate, vec![1.0, 2.0, 0.5]);
        let g = &b.groups[0];
        assert_eq!(g.times, vec![0.0, 1.0, 2.0]);
        assert_eq!(g.env_of_row, vec![2, 2, 0, 0]);
        assert_eq!(g.slot_of_row, vec![0, 0, 2, 2]);
        let x0: Vec<f64> = g.x0.clone().into_data().to_vec().unwrap();
        assert_eq!(x0, vec![201.0, 211.0, 1.0, 11.0]);
        let tgt: Vec<f64> = g.target.clone().into_data().to_vec().unwrap();
        assert_eq!(&tgt[..3], &[201.0, 202.0, 203.0]);
        assert_eq!(b.groups[1].times, vec![0.0, 1.0, 2.5]);
        assert_eq!(b.groups[1].env_of_row, vec![1, 1]);
        let avg: Vec<f64> = b.averaging(g, &device).into_data().to_vec().unwrap();
        assert_eq!(avg, vec![0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.5]);
        assert_eq!(b.weight, vec![1.0; 3]);
        assert_eq!(b.weighted(&[10.0, 20.0, 30.0]).weight, vec![30.0, 20.0, 10.0], "weights follow the batch's order");
    }

    #[test]
    fn random_windows_respect_fraction() {
        let mut rng = Seeds::new(3).stream("window");
        for _ in 0..200 {
            let w = Window::random(20, 0.6, &mut rng);
            assert!(w.len >= 12 && w.start + w.len <= 20);
        }
        assert_eq!(Window::random(1, 0.6, &mut rng), Window { start: 0, len: 1 });
    }
}
