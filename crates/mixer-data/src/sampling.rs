//! Time subsampling and random training windows.

use mixer_core::{Dataset, Error, Rng, TimeGrid};
use ndarray::{Axis, s};
use rand::Rng as _;

use crate::DataError;

/// Keeps every `k`-th time point (`0, k, 2k, ..`) of every trajectory.
pub fn subsample(data: &Dataset, k: usize) -> Result<Dataset, DataError> {
    if k == 0 {
        return Err(Error::config("subsample", "keep every k-th point needs k >= 1").into());
    }
    let idx: Vec<usize> = (0..data.num_steps()).step_by(k).collect();
    let pick = |g: &[f64]| idx.iter().map(|&i| g[i]).collect::<Vec<f64>>();
    let t = match &data.t {
        TimeGrid::Shared(g) => TimeGrid::Shared(pick(g)),
        TimeGrid::PerEnv(gs) => TimeGrid::PerEnv(gs.iter().map(|g| pick(g)).collect()),
    };
    Ok(Dataset::new(data.x.select(Axis(2), &idx), t, data.families.clone())?)
}

/// A contiguous range of time steps `[start, start + len)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// First step.
    pub start: usize,
    /// Number of steps.
    pub len: usize,
}

impl Window {
    /// The whole trajectory.
    pub fn full(steps: usize) -> Self {
        Self { start: 0, len: steps }
    }

    /// A random window of at least `fraction` of `steps` points and at least 2 (length uniform
    /// between that and `steps`, start uniform among the positions that fit).
    pub fn random(steps: usize, fraction: f64, rng: &mut Rng) -> Self {
        let min_len = ((fraction * steps as f64).ceil() as usize).clamp(2.min(steps), steps);
        let len = rng.random_range(min_len..=steps);
        let start = rng.random_range(0..=steps - len);
        Self { start, len }
    }

    /// Windows of `len` points (at least 2, at most `steps`) that cover `steps` points, each
    /// starting where the previous one ends; the last one ends at the last point (it may
    /// overlap its neighbour).
    pub fn segments(steps: usize, len: usize) -> Vec<Self> {
        let len = len.clamp(2.min(steps), steps);
        let stride = (len - 1).max(1);
        let mut starts: Vec<usize> = (0..).map(|i| i * stride).take_while(|s| s + len <= steps).collect();
        if starts.last().is_none_or(|&s| s + len < steps) {
            starts.push(steps - len);
        }
        starts.into_iter().map(|start| Self { start, len }).collect()
    }
}

/// [`Window::random`] with its arguments checked: `min_fraction` in (0, 1], at least 2 steps.
pub fn random_window(steps: usize, min_fraction: f64, rng: &mut Rng) -> Result<Window, DataError> {
    if !(min_fraction > 0.0 && min_fraction <= 1.0) {
        return Err(Error::config("min_fraction", format!("must be in (0, 1], got {min_fraction}")).into());
    }
    if steps < 2 {
        return Err(Error::config("steps", format!("a window needs at least 2 time points, got {steps}")).into());
    }
    Ok(Window::random(steps, min_fraction, rng))
}

/// The steps `window` of every trajectory (times keep their absolute values).
pub fn crop(data: &Dataset, window: Window) -> Result<Dataset, DataError> {
    let end = window.start + window.len;
    if window.len == 0 || end > data.num_steps() {
        return Err(Error::shape("window end (steps)", data.num_steps(), end).into());
    }
    let cut = |g: &[f64]| g[window.start..end].to_vec();
    let t = match &data.t {
        TimeGrid::Shared(g) => TimeGrid::Shared(cut(g)),
        TimeGrid::PerEnv(gs) => TimeGrid::PerEnv(gs.iter().map(|g| cut(g)).collect()),
    };
    Ok(Dataset::new(data.x.slice(s![.., .., window.start..end, ..]).to_owned(), t, data.families.clone())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mixer_core::Seeds;
    use ndarray::Array4;

    fn ramp() -> Dataset {
        let x = Array4::from_shape_fn((2, 1, 10, 1), |(e, _, k, _)| (e * 100 + k) as f64);
        Dataset::new(x, TimeGrid::Shared((0..10).map(|k| k as f64 * 0.5).collect()), None).unwrap()
    }

    #[test]
    fn subsample_keeps_every_kth_point() {
        let d = subsample(&ramp(), 3).unwrap();
        assert_eq!(d.num_steps(), 4);
        assert_eq!(d.t.for_env(0), &[0.0, 1.5, 3.0, 4.5]);
        assert_eq!(d.x[[1, 0, 3, 0]], 109.0);
        assert!(subsample(&ramp(), 0).is_err());
    }

    #[test]
    fn windows_cover_at_least_the_fraction_and_fit() {
        let mut rng = Seeds::new(3).stream("windows");
        let mut lens = std::collections::BTreeSet::new();
        for _ in 0..500 {
            let w = random_window(20, 0.6, &mut rng).unwrap();
            assert!(w.len >= 12 && w.start + w.len <= 20, "{w:?}");
            lens.insert(w.len);
        }
        assert_eq!(lens.len(), 9, "all lengths 12..=20 occur: {lens:?}");
        let c = crop(&ramp(), Window { start: 2, len: 5 }).unwrap();
        assert_eq!(c.t.for_env(0), &[1.0, 1.5, 2.0, 2.5, 3.0]);
        assert_eq!(c.x[[1, 0, 0, 0]], 102.0);
        assert!(crop(&ramp(), Window { start: 8, len: 5 }).is_err());
        assert!(random_window(20, 0.0, &mut rng).is_err());
    }
}
