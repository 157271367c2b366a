//! The heat-regions benchmark (Dryden & Hoefler, "Spatial Mixture-of-Experts", NeurIPS 2022):
//! 2-D heat diffusion on a square grid whose diffusivity depends on a region map, an explicit
//! 5-point update with zero values outside the grid, runs started from noise plus unit sources.

use mixer_core::{Rng, Seeds};
use ndarray::{Array2, Array5, ArrayView2, ArrayViewMut4, Axis};
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use crate::DataError;
use crate::field::{FieldDir, FieldManifest, FieldParameter, FieldSet, SplitRuns, check_region_map, region_cells};

/// The system's name (`mixer generate --system heat-regions`).
pub const HEAT_REGIONS: &str = "heat-regions";

/// One line saying what the heat-regions benchmark is.
pub const HEAT_REGIONS_DESCRIPTION: &str =
    "2-D heat diffusion, diffusivity by region, explicit 5-point update, zero outside (Dryden & Hoefler, 2022)";

/// Cells per seed of a grown map (the typical patch size).
const CELLS_PER_SEED: usize = 16;

/// Settings of the heat-regions benchmark (serde, deny_unknown_fields, all fields defaulted).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeatRegionsSpec {
    /// Cells per side of the square grid.
    pub size: usize,
    /// Diffusivity of each region (`[regions]`); the explicit update is stable up to 0.25.
    pub diffusivity: Vec<f64>,
    /// Frames per run: the initial field plus `frames - 1` updates.
    pub frames: usize,
    /// Training runs.
    pub train_runs: usize,
    /// Validation runs.
    pub val_runs: usize,
    /// Test runs.
    pub test_runs: usize,
    /// Unit heat sources per region and run, drawn uniformly from `sources.0..=sources.1`.
    pub sources: (usize, usize),
    /// Initial noise is uniform in `[0, noise]`.
    pub noise: f64,
}

impl Default for HeatRegionsSpec {
    fn default() -> Self {
        Self::paper()
    }
}

impl HeatRegionsSpec {
    /// The published settings: 64 x 64, 101 frames, 1000 / 20 / 20 runs.
    pub fn paper() -> Self {
        Self {
            size: 64,
            diffusivity: vec![0.0025, 0.025, 0.25],
            frames: 101,
            train_runs: 1000,
            val_runs: 20,
            test_runs: 20,
            sources: (1, 3),
            noise: 0.1,
        }
    }

    /// The published grid and physics with fewer runs: 48 / 8 / 8.
    pub fn quick() -> Self {
        Self { train_runs: 48, val_runs: 8, test_runs: 8, ..Self::paper() }
    }

    /// The settings of profile `name` (`quick` or `paper`).
    pub fn profile(name: &str) -> Result<Self, DataError> {
        match name {
            "quick" => Ok(Self::quick()),
            "paper" => Ok(Self::paper()),
            other => Err(DataError::spec(HEAT_REGIONS, "profile", format!("`{other}` is not quick or paper"))),
        }
    }

    /// Checks every setting.
    pub fn check(&self) -> Result<(), DataError> {
        let err = |field: &str, reason: String| Err(DataError::spec(HEAT_REGIONS, field, reason));
        if self.size < 3 {
            return Err(DataError::GridTooSmall { rows: self.size, cols: self.size });
        }
        if self.frames < 2 {
            return Err(DataError::TooFewFrames { frames: self.frames });
        }
        if self.diffusivity.is_empty() {
            return err("diffusivity", "needs one value per region".into());
        }
        if let Some(d) = self.diffusivity.iter().find(|d| !(0.0..=0.25).contains(*d)) {
            return err("diffusivity", format!("{d} is outside [0, 0.25], where the explicit update is stable"));
        }
        for (field, runs) in
            [("train_runs", self.train_runs), ("val_runs", self.val_runs), ("test_runs", self.test_runs)]
        {
            if runs == 0 {
                return err(field, "needs at least one run".into());
            }
        }
        if self.sources.0 > self.sources.1 {
            return err("sources", format!("lower bound {} exceeds upper bound {}", self.sources.0, self.sources.1));
        }
        if !(self.noise.is_finite() && self.noise >= 0.0) {
            return err("noise", format!("must be finite and non-negative, got {}", self.noise));
        }
        Ok(())
    }
}

/// A `size x size` map of `regions` regions grown from random seed cells by neighbour-biased draws.
///
/// One seed per 16 cells (the same number per region, at least one each); then a random
/// unlabelled cell next to labelled ones repeatedly takes a region with weight the square of
/// how strongly its neighbours hold it (4-neighbours count 2, diagonal ones 1). Every region is
/// non-empty; `regions` is clamped to `1..=size * size`.
pub fn grow_region_map(size: usize, regions: usize, rng: &mut Rng) -> Array2<usize> {
    let cells = size * size;
    if cells == 0 {
        return Array2::zeros((size, size));
    }
    let regions = regions.clamp(1, cells);
    const UNSET: usize = usize::MAX;
    let mut label = vec![UNSET; cells];
    let per_region = (cells / (regions * CELLS_PER_SEED)).max(1);
    for (k, c) in rand::seq::index::sample(rng, cells, regions * per_region).into_iter().enumerate() {
        label[c] = k % regions;
    }
    let neighbours4 = |c: usize| {
        let (i, j) = (c / size, c % size);
        [
            (i > 0).then(|| c - size),
            (i + 1 < size).then(|| c + size),
            (j > 0).then(|| c - 1),
            (j + 1 < size).then(|| c + 1),
        ]
    };
    let mut frontier = Vec::new();
    let mut queued = vec![false; cells];
    let push_neighbours = |c: usize, label: &[usize], frontier: &mut Vec<usize>, queued: &mut [bool]| {
        for n in neighbours4(c).into_iter().flatten() {
            if label[n] == UNSET && !queued[n] {
                queued[n] = true;
                frontier.push(n);
            }
        }
    };
    for c in 0..cells {
        if label[c] != UNSET {
            push_neighbours(c, &label, &mut frontier, &mut queued);
        }
    }
    let mut weight = vec![0.0f64; regions];
    while !frontier.is_empty() {
        let c = frontier.swap_remove(rng.random_range(0..frontier.len()));
        weight.iter_mut().for_each(|w| *w = 0.0);
        let (i, j) = ((c / size) as isize, (c % size) as isize);
        for di in -1isize..=1 {
            for dj in -1isize..=1 {
                let (a, b) = (i + di, j + dj);
                if (di, dj) == (0, 0) || a < 0 || b < 0 || a >= size as isize || b >= size as isize {
                    continue;
                }
                let l = label[a as usize * size + b as usize];
                if l != UNSET {
                    weight[l] += if di == 0 || dj == 0 { 2.0 } else { 1.0 };
                }
            }
        }
        weight.iter_mut().for_each(|w| *w *= *w);
        let total: f64 = weight.iter().sum();
        let mut draw = rng.random::<f64>() * total;
        let mut pick = weight.iter().rposition(|w| *w > 0.0).unwrap_or(0);
        for (r, w) in weight.iter().enumerate() {
            if *w > 0.0 && draw < *w {
                pick = r;
                break;
            }
            draw -= w;
        }
        label[c] = pick;
        push_neighbours(c, &label, &mut frontier, &mut queued);
    }
    Array2::from_shape_vec((size, size), label).unwrap_or_else(|_| Array2::zeros((size, size)))
}

/// The map grown for `spec` and `seed` (stream `heat-regions/map`, one region per diffusivity).
pub fn heat_regions_map(spec: &HeatRegionsSpec, seed: u64) -> Array2<usize> {
    grow_region_map(spec.size, spec.diffusivity.len(), &mut Seeds::new(seed).stream("heat-regions/map"))
}

/// One explicit update `u' = u + D (u_up + u_down + u_left + u_right - 4 u)`, zero outside the
/// grid.
///
/// # Panics
/// When `u` and `diffusivity_map` differ in shape.
pub fn heat_step(u: ArrayView2<f64>, diffusivity_map: ArrayView2<f64>) -> Array2<f64> {
    assert_eq!(u.dim(), diffusivity_map.dim(), "heat_step: the field and the diffusivity map differ in shape");
    let (h, w) = u.dim();
    let us: Vec<f64> = u.iter().copied().collect();
    let ds: Vec<f64> = diffusivity_map.iter().copied().collect();
    let mut out = vec![0.0; h * w];
    step_into(&us, &ds, h, w, &mut out);
    Array2::from_shape_vec((h, w), out).unwrap_or_else(|_| Array2::zeros((h, w)))
}

/// [`heat_step`] on row-major buffers of an `h x w` grid.
fn step_into(u: &[f64], d: &[f64], h: usize, w: usize, out: &mut [f64]) {
    for i in 0..h {
        let row = &u[i * w..(i + 1) * w];
        let up = (i > 0).then(|| &u[(i - 1) * w..i * w]);
        let down = (i + 1 < h).then(|| &u[(i + 1) * w..(i + 2) * w]);
        let (drow, orow) = (&d[i * w..(i + 1) * w], &mut out[i * w..(i + 1) * w]);
        for j in 0..w {
            let c = row[j];
            let mut s = up.map_or(0.0, |r| r[j]) + down.map_or(0.0, |r| r[j]);
            if j > 0 {
                s += row[j - 1];
            }
            if j + 1 < w {
                s += row[j + 1];
            }
            orow[j] = c + drow[j] * (s - 4.0 * c);
        }
    }
}

/// Simulates one run into `out` (`[frames, H, W, 1]`).
fn simulate_run(spec: &HeatRegionsSpec, d: &[f64], cells: &[Vec<usize>], rng: &mut Rng, mut out: ArrayViewMut4<f32>) {
    let n = spec.size;
    let mut u: Vec<f64> = (0..n * n).map(|_| spec.noise * rng.random::<f64>()).collect();
    for region in cells.iter().filter(|c| !c.is_empty()) {
        let count = rng.random_range(spec.sources.0..=spec.sources.1).min(region.len());
        for k in rand::seq::index::sample(rng, region.len(), count) {
            u[region[k]] = 1.0;
        }
    }
    let mut next = vec![0.0; n * n];
    for f in 0..spec.frames {
        let mut frame = out.index_axis_mut(Axis(0), f);
        for (dst, src) in frame.iter_mut().zip(&u) {
            *dst = *src as f32;
        }
        if f + 1 < spec.frames {
            step_into(&u, d, n, n, &mut next);
            std::mem::swap(&mut u, &mut next);
        }
    }
}

/// Simulates the runs of one split on all cores; run `r` draws from stream
/// `heat-regions/<split>/<r>`, so results do not depend on the thread count.
fn simulate_split(
    spec: &HeatRegionsSpec,
    d: &[f64],
    cells: &[Vec<usize>],
    seeds: &Seeds,
    split: &str,
    runs: usize,
) -> FieldSet {
    let n = spec.size;
    let mut fields = Array5::<f32>::zeros((runs, spec.frames, n, n, 1));
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get()).clamp(1, runs.max(1));
    let mut views: Vec<(usize, ArrayViewMut4<f32>)> = fields.outer_iter_mut().enumerate().collect();
    let chunk = runs.div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for part in views.chunks_mut(chunk) {
            scope.spawn(move || {
                for (r, view) in part.iter_mut() {
                    let mut rng = seeds.stream(&format!("{HEAT_REGIONS}/{split}/{r}"));
                    simulate_run(spec, d, cells, &mut rng, view.view_mut());
                }
            });
        }
    });
    FieldSet { fields, dt: 1.0 }
}

/// Generates the three splits of the benchmark on the region map `regions` (`[size, size]`,
/// region `r` diffusing with `spec.diffusivity[r]`); same spec, map and seed, same values. The
/// manifest records the map's source as `supplied` (callers name the file or the growth seed).
pub fn generate_heat_regions(
    spec: &HeatRegionsSpec,
    regions: &Array2<usize>,
    seed: u64,
) -> Result<FieldDir, DataError> {
    spec.check()?;
    check_region_map(regions, [spec.size, spec.size], &spec.diffusivity)?;
    let d: Vec<f64> = regions.iter().map(|&r| spec.diffusivity[r]).collect();
    let counts = region_cells(regions);
    let mut cells: Vec<Vec<usize>> = counts.iter().map(|&c| Vec::with_capacity(c)).collect();
    for (c, &r) in regions.iter().enumerate() {
        cells[r].push(c);
    }
    let seeds = Seeds::new(seed);
    let _span = tracing::info_span!("heat-regions", seed).entered();
    let split = |name: &str, runs: usize| {
        tracing::info!(split = name, runs, "generating split");
        simulate_split(spec, &d, &cells, &seeds, name, runs)
    };
    let (train, val, test) =
        (split("train", spec.train_runs), split("val", spec.val_runs), split("test", spec.test_runs));
    let manifest = FieldManifest {
        name: HEAT_REGIONS.to_string(),
        description: HEAT_REGIONS_DESCRIPTION.to_string(),
        grid: [spec.size, spec.size],
        channels: 1,
        frames: spec.frames,
        dt: 1.0,
        seed,
        runs: SplitRuns { train: spec.train_runs, val: spec.val_runs, test: spec.test_runs },
        diffusivity: spec.diffusivity.clone(),
        parameters: vec![
            FieldParameter { name: "noise".into(), values: vec![spec.noise] },
            FieldParameter { name: "sources".into(), values: vec![spec.sources.0 as f64, spec.sources.1 as f64] },
        ],
        region_source: Some("supplied".into()),
        region_cells: counts,
    };
    Ok(FieldDir { name: HEAT_REGIONS.to_string(), train, val, test, regions: Some(regions.clone()), manifest })
}

/// [`generate_heat_regions`] on the map grown by [`heat_regions_map`]; the manifest records
/// `grown (seed N)`.
pub fn generate_heat_regions_grown(spec: &HeatRegionsSpec, seed: u64) -> Result<FieldDir, DataError> {
    spec.check()?;
    let map = heat_regions_map(spec, seed);
    let mut dir = generate_heat_regions(spec, &map, seed)?;
    dir.manifest.region_source = Some(format!("grown (seed {seed})"));
    Ok(dir)
}
