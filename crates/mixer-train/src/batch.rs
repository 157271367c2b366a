//! Training and evaluation batches: the rows (trajectories) of chosen environments, grouped by
//! time grid so that each group is integrated over one grid.
//!
//! Grids are compared up to an affine map: an environment's window `t_0, t_1, ...` is stored as
//! `s_k = (t_k - t_0) / h` with its rate `h = t_1 - t_0`, and environments whose `s` grids agree
//! share one rollout ([`mixer_experts::Rows`]: experts are autonomous, so integrating
//! `dx/ds = h f(x)` is exact). ODE families with different horizons but the same number of
//! points then cost one rollout instead of one per family.

use burn::tensor::{Tensor, TensorData, backend::Backend};

use mixer_core::host::tensor2;
use mixer_core::{Dataset, Rng};
pub use mixer_data::Window;
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
    /// Environment whose context each row's field is expanded about (see [`Batch::pooled`]),
    /// `[rows]`; `None`: every row reads its own context only.
    pub anchor_of_row: Option<Vec<usize>>,
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

/// The rate `h = t_1 - t_0` of a grid that normalises it to `s_k = (t_k - t_0) / h` (1 for one point).
fn rate_of(t: &[f64]) -> f64 {
    if t.len() > 1 { t[1] - t[0] } else { 1.0 }
}

/// A batch slot (environment position) and the first time index of one of its windows.
type SlotStart = (usize, usize);

/// Whether two normalised grids agree to rounding.
fn same_grid(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-9 * x.abs().max(1.0))
}

impl<B: Backend> Batch<B> {
    /// Rows of `envs` (every trajectory, or the first `max_trajs`) over `window`.
    pub fn new(data: &Dataset, envs: &[usize], window: Window, max_trajs: Option<usize>, device: &B::Device) -> Self {
        Self::over_windows(data, envs, &[window], max_trajs, device)
    }

    /// Rows of `envs` (every trajectory, or the first `max_trajs`) over each of `windows` of
    /// one length: one row per environment, trajectory and window, so that the windows of
    /// [`Window::segments`] become rows integrated side by side (multiple shooting).
    ///
    /// An environment's rate is taken from its first window; its other windows are normalised
    /// by the same rate, so that only windows on an equally spaced stretch share a grid.
    pub fn over_windows(
        data: &Dataset,
        envs: &[usize],
        windows: &[Window],
        max_trajs: Option<usize>,
        device: &B::Device,
    ) -> Self {
        let len = windows.first().map_or(0, |w| w.len);
        assert!(windows.iter().all(|w| w.len == len), "windows of one batch have one length");
        let trajs = max_trajs.map_or(data.num_trajs(), |m| m.min(data.num_trajs()));
        let dim = data.dim();
        // group (batch slot, window start) pairs by normalised grids, keeping first-seen order
        let mut rate = vec![1.0; data.num_envs()];
        let mut grids: Vec<(Vec<f64>, Vec<SlotStart>)> = Vec::new();
        for (slot, &e) in envs.iter().enumerate() {
            let t = data.t.for_env(e);
            let h = rate_of(&t[windows[0].start..windows[0].start + len]);
            rate[e] = h;
            for w in windows {
                let s: Vec<f64> = t[w.start..w.start + len].iter().map(|&v| (v - t[w.start]) / h).collect();
                match grids.iter_mut().find(|(g, _)| same_grid(g, &s)) {
                    Some((_, members)) => members.push((slot, w.start)),
                    None => grids.push((s, vec![(slot, w.start)])),
                }
            }
        }
        let groups = grids
            .into_iter()
            .map(|(times, members)| {
                let rows = members.len() * trajs;
                let mut x0 = Vec::with_capacity(rows * dim);
                let mut target = Vec::with_capacity(rows * len * dim);
                let (mut env_of_row, mut slot_of_row) = (Vec::with_capacity(rows), Vec::with_capacity(rows));
                for &(slot, start) in &members {
                    let env = data.env(envs[slot]);
                    for j in 0..trajs {
                        for k in start..start + len {
                            for d in 0..dim {
                                target.push(env[[j, k, d]]);
                            }
                        }
                        x0.extend((0..dim).map(|d| env[[j, start, d]]));
                        env_of_row.push(envs[slot]);
                        slot_of_row.push(slot);
                    }
                }
                let target = tensor2::<B>(&target, [rows, len * dim], device).reshape([rows, len, dim]);
                let x0 = tensor2(&x0, [rows, dim], device);
                BatchGroup { env_of_row, slot_of_row, x0, target, times, anchor_of_row: None }
            })
            .collect();
        Batch { envs: envs.to_vec(), groups, rate, weight: vec![1.0; envs.len()] }
    }

    /// The batch with loss weights taken from `per_env`, indexed by dataset environment.
    pub fn weighted(mut self, per_env: &[f64]) -> Self {
        self.weight = self.envs.iter().map(|&e| per_env[e]).collect();
        self
    }

    /// The batch with a context pool (Neural Context Flows, Nzoyem et al. 2024): each
    /// environment draws `pool` distinct environments of the batch (itself possible; all of
    /// them when the batch is smaller), and each of its rows is repeated once per pool member,
    /// its field expanded about that member's context. Every copy counts alike in the
    /// environment's loss, so the loss averages over the pool. `pool = 0` leaves the batch as
    /// it is and draws nothing.
    pub fn pooled(mut self, pool: usize, rng: &mut Rng) -> Self {
        if pool == 0 {
            return self;
        }
        let n = self.envs.len();
        let members: Vec<Vec<usize>> = (0..n)
            .map(|_| rand::seq::index::sample(rng, n, pool.min(n)).into_iter().map(|s| self.envs[s]).collect())
            .collect();
        for g in &mut self.groups {
            let mut keep = Vec::new();
            let (mut env_of_row, mut slot_of_row, mut anchor_of_row) = (Vec::new(), Vec::new(), Vec::new());
            for (r, &slot) in g.slot_of_row.iter().enumerate() {
                for &anchor in &members[slot] {
                    keep.push(r);
                    env_of_row.push(g.env_of_row[r]);
                    slot_of_row.push(slot);
                    anchor_of_row.push(anchor);
                }
            }
            let device = g.x0.device();
            let idx =
                Tensor::from_data(TensorData::new(keep.iter().map(|&r| r as i64).collect(), [keep.len()]), &device);
            g.x0 = g.x0.clone().select(0, idx.clone());
            g.target = g.target.clone().select(0, idx);
            (g.env_of_row, g.slot_of_row, g.anchor_of_row) = (env_of_row, slot_of_row, Some(anchor_of_row));
        }
        self
    }

    /// The rows of a group, ready for [`mixer_experts::MixtureOfExperts::rollout_rows`].
    pub fn rows<'a>(&'a self, group: &'a BatchGroup<B>) -> Rows<'a, B> {
        Rows {
            env_of_row: &group.env_of_row,
            x0: group.x0.clone(),
            times: &group.times,
            rate: Some(&self.rate),
            anchor_of_row: group.anchor_of_row.as_deref(),
        }
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
    fn a_pool_repeats_rows_once_per_member() {
        let device = Default::default();
        let b = Batch::<TestBackend>::new(&data(), &[0, 2], Window::full(4), Some(2), &device);
        let mut rng = Seeds::new(4).stream("pool");
        assert_eq!(b.clone().pooled(0, &mut rng).groups[0].anchor_of_row, None);
        let p = b.clone().pooled(2, &mut rng);
        let g = &p.groups[0];
        assert_eq!(g.env_of_row, vec![0, 0, 0, 0, 2, 2, 2, 2]);
        let anchors = g.anchor_of_row.clone().unwrap();
        // two distinct members of the batch per environment, the same for each of its rows
        for e in 0..2 {
            let a = &anchors[4 * e..4 * e + 4];
            assert!(a[0] != a[1] && a[..2] == a[2..] && a.iter().all(|x| [0, 2].contains(x)), "{a:?}");
        }
        let x0: Vec<f64> = g.x0.clone().into_data().to_vec().unwrap();
        assert_eq!(x0, vec![0.0, 0.0, 10.0, 10.0, 200.0, 200.0, 210.0, 210.0]);
        assert_eq!(g.target.dims(), [8, 4, 1]);
        // every copy weighs alike: the loss of an environment averages over its pool
        let avg: Vec<f64> = p.averaging(g, &device).into_data().to_vec().unwrap();
        assert_eq!(&avg[..8], &[0.25, 0.25, 0.25, 0.25, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(p.rows(g).anchor_of_row, Some(&anchors[..]));
        let big = b.pooled(5, &mut rng);
        assert_eq!(big.groups[0].env_of_row.len(), 8, "a pool is at most the batch");
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

    #[test]
    fn segments_cover_the_trajectory_end_to_start() {
        let starts = |steps, len| Window::segments(steps, len).iter().map(|w| w.start).collect::<Vec<_>>();
        assert_eq!(starts(20, 5), vec![0, 4, 8, 12, 15], "the last segment ends at the last point");
        assert_eq!(starts(17, 5), vec![0, 4, 8, 12]);
        assert_eq!(starts(20, 20), vec![0]);
        assert_eq!(starts(20, 40), vec![0], "longer than the trajectory: one whole window");
        assert_eq!(starts(4, 1), vec![0, 1, 2], "at least two points");
        assert!(Window::segments(20, 5).iter().all(|w| w.len == 5));
    }

    #[test]
    fn segment_rows_start_from_their_own_observations() {
        let device = Default::default();
        let windows = Window::segments(4, 2);
        let b = Batch::<TestBackend>::over_windows(&data(), &[0, 2, 1], &windows, Some(1), &device);
        // the evenly spaced segments share one grid; env 1's last one (t = 4, 7 at rate 2) does not
        assert_eq!(b.groups.len(), 2);
        assert_eq!(b.groups[0].times, vec![0.0, 1.0]);
        assert_eq!(b.groups[0].env_of_row, vec![0, 0, 0, 2, 2, 2, 1, 1]);
        let x0: Vec<f64> = b.groups[0].x0.clone().into_data().to_vec().unwrap();
        assert_eq!(x0, vec![0.0, 1.0, 2.0, 200.0, 201.0, 202.0, 100.0, 101.0]);
        let tgt: Vec<f64> = b.groups[0].target.clone().into_data().to_vec().unwrap();
        assert_eq!(&tgt[..6], &[0.0, 1.0, 1.0, 2.0, 2.0, 3.0]);
        assert_eq!(b.rate, vec![1.0, 2.0, 0.5]);
        assert_eq!((b.groups[1].times.clone(), b.groups[1].env_of_row.clone()), (vec![0.0, 1.5], vec![1]));
        // every row of an environment counts once in its average
        let avg: Vec<f64> = b.averaging(&b.groups[1], &device).into_data().to_vec().unwrap();
        assert_eq!(avg, vec![0.0, 0.0, 1.0 / 3.0]);
    }
}
