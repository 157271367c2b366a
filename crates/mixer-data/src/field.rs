//! Gridded field datasets: trajectories of fields on an `H x W` grid, `[runs, frames, H, W,
//! channels]` per split (`train`, `val`, `test`), an optional region map and `fields.toml`.

use std::path::Path;

use mixer_core::Dataset;
use ndarray::{Array0, Array2, Array5, ArrayD, Ix2, Ix5};
use ndarray_npy::{NpzWriter, WriteNpyExt};
use serde::{Deserialize, Serialize};

use crate::DataError;
use crate::npy::{NpyError, Npz, array_from_npy};
use crate::spec::SystemSpec;
use mixer_core::write_atomic_with;

/// The manifest file name inside a field dataset folder.
pub const FIELD_MANIFEST_FILE: &str = "fields.toml";
/// The region map file name inside a field dataset folder.
pub const REGIONS_FILE: &str = "regions.npy";
/// The splits of a field dataset folder, in order.
pub const FIELD_SPLITS: [&str; 3] = ["train", "val", "test"];

/// Gridded trajectories `[runs, frames, H, W, channels]`, f32, with the time between frames.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldSet {
    /// The fields, `[runs, frames, H, W, channels]`.
    pub fields: Array5<f32>,
    /// Time between consecutive frames.
    pub dt: f64,
}

impl FieldSet {
    /// Number of trajectories.
    pub fn runs(&self) -> usize {
        self.fields.dim().0
    }

    /// Frames per trajectory (the initial field included).
    pub fn frames(&self) -> usize {
        self.fields.dim().1
    }

    /// Grid size `(H, W)`.
    pub fn grid(&self) -> (usize, usize) {
        let (_, _, h, w, _) = self.fields.dim();
        (h, w)
    }

    /// Values per grid cell.
    pub fn channels(&self) -> usize {
        self.fields.dim().4
    }

    /// Checks frames (at least 2), grid (at least 3 x 3), `dt` (positive) and finiteness; `what`
    /// names the set in errors.
    pub fn check(&self, what: &str) -> Result<(), DataError> {
        let (rows, cols) = self.grid();
        if rows < 3 || cols < 3 {
            return Err(DataError::GridTooSmall { rows, cols });
        }
        if self.frames() < 2 {
            return Err(DataError::TooFewFrames { frames: self.frames() });
        }
        if !(self.dt.is_finite() && self.dt > 0.0) {
            return Err(mixer_core::Error::config("dt", format!("{what}: must be positive, got {}", self.dt)).into());
        }
        if let Some(index) = self.fields.iter().position(|v| !v.is_finite()) {
            let per_frame = rows * cols * self.channels();
            let per_run = per_frame * self.frames();
            return Err(DataError::NonFiniteField {
                what: what.to_string(),
                run: index / per_run,
                frame: (index % per_run) / per_frame,
                index,
            });
        }
        Ok(())
    }
}

/// Runs per split of a field dataset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitRuns {
    /// Training runs.
    pub train: usize,
    /// Validation runs.
    pub val: usize,
    /// Test runs.
    pub test: usize,
}

/// A named setting of the system that made a field dataset (one value, or one per environment).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldParameter {
    /// Setting name.
    pub name: String,
    /// Its value(s).
    pub values: Vec<f64>,
}

/// `fields.toml`: what a field dataset folder holds and how it was made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldManifest {
    /// Dataset (system) name.
    pub name: String,
    /// One line saying what it is.
    #[serde(default)]
    pub description: String,
    /// Grid `[H, W]`.
    pub grid: [usize; 2],
    /// Values per grid cell.
    pub channels: usize,
    /// Frames per run (the initial field included).
    pub frames: usize,
    /// Time between frames.
    pub dt: f64,
    /// Seed of the random draws.
    pub seed: u64,
    /// Runs per split.
    pub runs: SplitRuns,
    /// Diffusivity of each region (`[regions]`; empty when the system has none).
    #[serde(default)]
    pub diffusivity: Vec<f64>,
    /// Other settings of the system (noise level, source counts, reaction parameters).
    #[serde(default)]
    pub parameters: Vec<FieldParameter>,
    /// Where the region map came from: `grown (seed N)` or the `.npy` path; absent without a map.
    #[serde(default)]
    pub region_source: Option<String>,
    /// Cells of each region of the map (`[regions]`; empty without a map).
    #[serde(default)]
    pub region_cells: Vec<usize>,
}

impl FieldManifest {
    /// Reads `fields.toml`.
    pub fn read(path: &Path) -> Result<Self, DataError> {
        if !path.is_file() {
            return Err(DataError::MissingFile { path: path.to_path_buf(), what: "field manifest".into() });
        }
        crate::manifest::read_toml(path)
    }

    /// Writes the manifest atomically (temporary file in the same folder, then rename).
    pub fn write(&self, path: &Path) -> Result<(), DataError> {
        crate::manifest::write_toml(path, self)
    }

    /// The value of setting `name` for each run of split `split`, when the generator recorded one
    /// (parameter `<split>.<name>`, e.g. `train.viscosity`).
    pub fn run_values(&self, split: &str, name: &str) -> Option<&[f64]> {
        let key = format!("{split}.{name}");
        self.parameters.iter().find(|p| p.name == key).map(|p| p.values.as_slice())
    }
}

/// The parameter `<split>.<name>` holding `values[r % values.len()]` for each of `runs` runs.
pub(crate) fn per_run_parameter(split: &str, name: &str, values: &[f64], runs: usize) -> FieldParameter {
    let values = (0..runs).map(|r| values.get(r % values.len().max(1)).copied().unwrap_or(f64::NAN)).collect();
    FieldParameter { name: format!("{split}.{name}"), values }
}

/// Internal steps per recorded frame: the fewest whose step is at most `time_step`.
pub(crate) fn substeps(record_dt: f64, time_step: f64) -> usize {
    ((record_dt / time_step) * (1.0 - 1e-12)).ceil().max(1.0) as usize
}

/// Checks shared by the PDE generators' specs: `fields` finite and positive, `non_negative`
/// finite and non-negative, at least two frames, a recording interval that is a sane number of
/// internal steps, and at least one run in every split.
pub(crate) fn check_pde_spec(
    system: &str,
    frames: usize,
    (record_dt, time_step): (f64, f64),
    positive: &[(&str, f64)],
    non_negative: &[(&str, f64)],
    runs: [usize; 3],
) -> Result<(), DataError> {
    let err = |field: &str, reason: String| Err(DataError::spec(system, field, reason));
    if frames < 2 {
        return Err(DataError::TooFewFrames { frames });
    }
    for &(field, v) in [("record_dt", record_dt), ("time_step", time_step)].iter().chain(positive) {
        if !(v.is_finite() && v > 0.0) {
            return err(field, format!("{v} is not positive"));
        }
    }
    if record_dt / time_step > 1e9 {
        return err("time_step", format!("{time_step} is too small for record_dt {record_dt}"));
    }
    for &(field, v) in non_negative {
        if !(v.is_finite() && v >= 0.0) {
            return err(field, format!("{v} is not finite and non-negative"));
        }
    }
    for (field, n) in ["train_runs", "val_runs", "test_runs"].into_iter().zip(runs) {
        if n == 0 {
            return err(field, "needs at least one run".to_string());
        }
    }
    Ok(())
}

/// Checks that `values` of setting `field` of `system` are at least one, each finite and, with
/// `positive`, above zero.
pub(crate) fn check_values(system: &str, field: &str, values: &[f64], positive: bool) -> Result<(), DataError> {
    if values.is_empty() {
        return Err(DataError::spec(system, field, "needs at least one value"));
    }
    match values.iter().find(|v| !(v.is_finite() && (!positive || **v > 0.0))) {
        Some(v) if positive => Err(DataError::spec(system, field, format!("{v} is not positive"))),
        Some(v) => Err(DataError::spec(system, field, format!("{v} is not finite"))),
        None => Ok(()),
    }
}

/// Checks that a spectral solver's grid `size` is a power of two of at least 4.
pub(crate) fn check_fft_size(system: &str, size: usize) -> Result<(), DataError> {
    if size < 4 || !size.is_power_of_two() {
        let reason = format!("{size} is not a power of two of at least 4 (the FFT needs one)");
        return Err(DataError::spec(system, "size", reason));
    }
    Ok(())
}

/// The settings of profile `name` of `system`: `quick()` or `paper()`.
pub(crate) fn pick_profile<T>(system: &str, name: &str, quick: fn() -> T, paper: fn() -> T) -> Result<T, DataError> {
    match name {
        "quick" => Ok(quick()),
        "paper" => Ok(paper()),
        other => Err(DataError::spec(system, "profile", format!("`{other}` is not quick or paper"))),
    }
}

/// A generated PDE dataset (no region map) from its splits: `parameters` hold the dataset's
/// settings, `per_run = (name, values)` the setting that cycles over the runs of every split.
pub(crate) fn pde_dir(
    (system, description): (&str, &str),
    seed: u64,
    mut parameters: Vec<FieldParameter>,
    (name, values): (&str, &[f64]),
    [train, val, test]: [FieldSet; 3],
) -> FieldDir {
    for (split, set) in [("train", &train), ("val", &val), ("test", &test)] {
        parameters.push(per_run_parameter(split, name, values, set.runs()));
    }
    let (h, w) = train.grid();
    let manifest = FieldManifest {
        name: system.to_string(),
        description: description.to_string(),
        grid: [h, w],
        channels: train.channels(),
        frames: train.frames(),
        dt: train.dt,
        seed,
        runs: SplitRuns { train: train.runs(), val: val.runs(), test: test.runs() },
        diffusivity: Vec::new(),
        parameters,
        region_source: None,
        region_cells: Vec::new(),
    };
    FieldDir { name: system.to_string(), train, val, test, regions: None, manifest }
}

/// Largest magnitude a generated field value may reach before a run counts as blown up.
pub(crate) const BLOWUP_BOUND: f64 = 1e6;

/// Checks one recorded frame of run `run` of split `split` of system `system` at time `t`: an
/// error naming `fix` (the setting to change) when a value is non-finite or beyond
/// [`BLOWUP_BOUND`].
pub(crate) fn check_frame<'a>(
    system: &str,
    split: &str,
    run: usize,
    t: f64,
    fix: &str,
    values: impl IntoIterator<Item = &'a f64>,
) -> Result<(), DataError> {
    let worst = values.into_iter().fold(0.0f64, |m, v| if v.is_finite() { m.max(v.abs()) } else { f64::INFINITY });
    if worst > BLOWUP_BOUND {
        return Err(DataError::spec(
            system,
            fix,
            format!(
                "run {run} of split `{split}` blew up at t = {t} (largest magnitude {worst:e}, bound {BLOWUP_BOUND:e}); \
                 lower `{fix}`"
            ),
        ));
    }
    Ok(())
}

/// Fills `[runs, frames, H, W, channels]` by calling `simulate(r, run_view)` for each run on all
/// cores (contiguous blocks of runs per thread, so the values do not depend on the thread count);
/// returns the error of the lowest failing run, and ticks `progress` once per run.
pub(crate) fn simulate_runs<F>(
    runs: usize,
    frames: usize,
    (h, w): (usize, usize),
    channels: usize,
    progress: &indicatif::ProgressBar,
    simulate: F,
) -> Result<Array5<f32>, DataError>
where
    F: Fn(usize, ndarray::ArrayViewMut4<f32>) -> Result<(), DataError> + Sync,
{
    let mut fields = Array5::<f32>::zeros((runs, frames, h, w, channels));
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get()).clamp(1, runs.max(1));
    let chunk = runs.div_ceil(threads).max(1);
    let mut views: Vec<(usize, ndarray::ArrayViewMut4<f32>)> = fields.outer_iter_mut().enumerate().collect();
    let failed = std::sync::atomic::AtomicBool::new(false);
    let errors: Vec<Option<(usize, DataError)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = views
            .chunks_mut(chunk)
            .map(|part| {
                let (simulate, failed) = (&simulate, &failed);
                scope.spawn(move || {
                    for (r, view) in part.iter_mut() {
                        if failed.load(std::sync::atomic::Ordering::Relaxed) {
                            return None;
                        }
                        if let Err(e) = simulate(*r, view.view_mut()) {
                            failed.store(true, std::sync::atomic::Ordering::Relaxed);
                            return Some((*r, e));
                        }
                        progress.inc(1);
                    }
                    None
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    });
    match errors.into_iter().flatten().min_by_key(|(r, _)| *r) {
        Some((_, e)) => Err(e),
        None => Ok(fields),
    }
}

/// A field dataset folder: train / val / test field sets, an optional region map, a manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldDir {
    /// Dataset (system) name.
    pub name: String,
    /// Training runs.
    pub train: FieldSet,
    /// Validation runs.
    pub val: FieldSet,
    /// Test runs.
    pub test: FieldSet,
    /// Region of each grid cell, `[H, W]`, when the system has regions.
    pub regions: Option<Array2<usize>>,
    /// `fields.toml`.
    pub manifest: FieldManifest,
}

impl FieldDir {
    /// The three splits with their names, in the order of [`FIELD_SPLITS`].
    pub fn splits(&self) -> [(&'static str, &FieldSet); 3] {
        [("train", &self.train), ("val", &self.val), ("test", &self.test)]
    }

    /// The split called `name` (`train`, `val` or `test`).
    pub fn split(&self, name: &str) -> Option<&FieldSet> {
        self.splits().into_iter().find(|(n, _)| *n == name).map(|(_, s)| s)
    }

    /// Checks every split, that the splits agree on grid, frames, channels and `dt`, and the
    /// region map against the grid and the manifest's diffusivities.
    pub fn check(&self) -> Result<(), DataError> {
        for (name, set) in self.splits() {
            set.check(&format!("{} split `{name}`", self.name))?;
            let (t, s) = (&self.train, set);
            if (s.grid(), s.frames(), s.channels()) != (t.grid(), t.frames(), t.channels()) {
                return Err(mixer_core::Error::shape(
                    format!("split `{name}` (grid, frames, channels) against `train`"),
                    (t.grid(), t.frames(), t.channels()),
                    (s.grid(), s.frames(), s.channels()),
                )
                .into());
            }
            if s.dt != t.dt {
                return Err(
                    mixer_core::Error::config("dt", format!("split `{name}` has {}, train {}", s.dt, t.dt)).into()
                );
            }
        }
        if let Some(map) = &self.regions {
            let (h, w) = self.train.grid();
            check_region_map(map, [h, w], &self.manifest.diffusivity)?;
        }
        Ok(())
    }

    /// Checks the folder ([`FieldDir::check`]), then writes `train.npz`, `val.npz`, `test.npz`,
    /// `regions.npy` (when there is a map; a stale one is removed otherwise) and `fields.toml`
    /// into `dir`, each atomically and the manifest last; the manifest's grid, frames, channels,
    /// `dt`, runs and region cells are refreshed from the data.
    pub fn write(&self, dir: &Path) -> Result<(), DataError> {
        self.check()?;
        std::fs::create_dir_all(dir).map_err(|e| mixer_core::Error::io(dir, e))?;
        for (name, set) in self.splits() {
            write_field_npz(&dir.join(format!("{name}.npz")), set)?;
        }
        let regions_path = dir.join(REGIONS_FILE);
        match &self.regions {
            Some(map) => write_region_map(&regions_path, map)?,
            None if regions_path.exists() => {
                std::fs::remove_file(&regions_path).map_err(|e| mixer_core::Error::io(&regions_path, e))?
            }
            None => {}
        }
        let (h, w) = self.train.grid();
        let manifest = FieldManifest {
            name: self.name.clone(),
            grid: [h, w],
            channels: self.train.channels(),
            frames: self.train.frames(),
            dt: self.train.dt,
            runs: SplitRuns { train: self.train.runs(), val: self.val.runs(), test: self.test.runs() },
            region_cells: self.regions.as_ref().map(region_cells).unwrap_or_default(),
            region_source: self
                .regions
                .as_ref()
                .map(|_| self.manifest.region_source.clone().unwrap_or_else(|| "supplied".into())),
            ..self.manifest.clone()
        };
        manifest.write(&dir.join(FIELD_MANIFEST_FILE))
    }
}

/// Whether `dir` is a field dataset folder (it holds `fields.toml`).
pub fn is_field_dir(dir: &Path) -> bool {
    dir.join(FIELD_MANIFEST_FILE).is_file()
}

/// Reads a field dataset folder: `fields.toml`, the three split files and `regions.npy` (when
/// present, and required when the manifest names a region source); checks it as
/// [`FieldDir::check`] does.
pub fn load_field_dir(dir: &Path) -> Result<FieldDir, DataError> {
    let manifest = FieldManifest::read(&dir.join(FIELD_MANIFEST_FILE))?;
    let mut sets = Vec::with_capacity(3);
    for name in FIELD_SPLITS {
        let path = dir.join(format!("{name}.npz"));
        if !path.is_file() {
            return Err(DataError::MissingFile { path, what: format!("split `{name}`") });
        }
        sets.push(read_field_npz(&path)?);
    }
    let regions_path = dir.join(REGIONS_FILE);
    let regions = if regions_path.is_file() {
        Some(read_region_map(&regions_path)?)
    } else if manifest.region_source.is_some() {
        return Err(DataError::MissingFile { path: regions_path, what: "region map".into() });
    } else {
        None
    };
    let mut it = sets.into_iter();
    let mut next = || it.next().ok_or_else(|| mixer_core::Error::config("splits", "three splits expected"));
    let out = FieldDir { name: manifest.name.clone(), train: next()?, val: next()?, test: next()?, regions, manifest };
    out.check()?;
    let (h, w) = out.train.grid();
    let (m, t) = (&out.manifest, &out.train);
    if (m.grid, m.frames, m.channels) != ([h, w], t.frames(), t.channels()) {
        return Err(mixer_core::Error::shape(
            format!("{FIELD_MANIFEST_FILE} (grid, frames, channels) against the split files"),
            (m.grid, m.frames, m.channels),
            ([h, w], t.frames(), t.channels()),
        )
        .into());
    }
    Ok(out)
}

fn npz_err(path: &Path, key: &str, reason: impl std::fmt::Display) -> DataError {
    DataError::Npz { path: path.to_path_buf(), key: key.to_string(), reason: reason.to_string() }
}

/// Writes one split file: `fields` float32 `[runs, frames, H, W, C]` and `dt` (a float64 scalar).
pub fn write_field_npz(path: &Path, set: &FieldSet) -> Result<(), DataError> {
    let dt = Array0::from_elem((), set.dt);
    write_atomic_with(path, |f| {
        let mut npz = NpzWriter::new(f);
        npz.add_array("fields", &set.fields).map_err(std::io::Error::other)?;
        npz.add_array("dt", &dt).map_err(std::io::Error::other)?;
        npz.finish().map_err(std::io::Error::other)?;
        Ok(())
    })
    .map_err(Into::into)
}

/// Reads one split file written by [`write_field_npz`] (float64 `fields` are narrowed to f32)
/// and checks it ([`FieldSet::check`]).
pub fn read_field_npz(path: &Path) -> Result<FieldSet, DataError> {
    let npz = Npz::open(path)?;
    let fields: ArrayD<f32> = npz.array(path, "fields", |v: f64| v as f32, "float32 or float64")?;
    if fields.ndim() != 5 {
        return Err(DataError::WrongRank {
            path: path.to_path_buf(),
            key: "fields".into(),
            expected: "5 ([runs, frames, H, W, channels])".into(),
            found: fields.ndim(),
        });
    }
    let fields = fields.into_dimensionality::<Ix5>().map_err(|e| npz_err(path, "fields", e))?;
    let dt: Vec<f64> = npz.array(path, "dt", |v: f32| f64::from(v), "float64 or float32")?.iter().copied().collect();
    let [dt] = dt[..] else {
        return Err(npz_err(path, "dt", format!("expected one value, found {}", dt.len())));
    };
    let set = FieldSet { fields, dt };
    set.check(&path.display().to_string())?;
    Ok(set)
}

/// Cells of each region, `[largest label + 1]`.
pub fn region_cells(map: &Array2<usize>) -> Vec<usize> {
    let n = map.iter().copied().max().map_or(0, |m| m + 1);
    let mut counts = vec![0; n];
    for &r in map {
        counts[r] += 1;
    }
    counts
}

/// Checks a region map against a grid `[H, W]`, that it labels no more regions than it has cells
/// and, when `diffusivity` is not empty, that every label has a diffusivity value.
pub fn check_region_map(map: &Array2<usize>, grid: [usize; 2], diffusivity: &[f64]) -> Result<(), DataError> {
    let (h, w) = map.dim();
    if [h, w] != grid {
        return Err(DataError::RegionShape { grid, found: [h, w] });
    }
    let regions = map.iter().copied().max().map_or(0, |m| m + 1);
    if regions > map.len() {
        let reason = format!("the map labels {regions} regions but has only {} cells", map.len());
        return Err(mixer_core::Error::config("regions", reason).into());
    }
    if !diffusivity.is_empty() && regions > diffusivity.len() {
        return Err(DataError::TooManyRegions { regions, values: diffusivity.len() });
    }
    Ok(())
}

/// Reads a region map `.npy` file: a 2-D array of int64, int32 or uint8 labels in `0..cells`.
pub fn read_region_map(path: &Path) -> Result<Array2<usize>, DataError> {
    if !path.is_file() {
        return Err(DataError::MissingFile { path: path.to_path_buf(), what: "region map".into() });
    }
    let bytes = std::fs::read(path).map_err(|e| mixer_core::Error::io(path, e))?;
    let labels: ArrayD<i64> = match array_from_npy::<i64>(&bytes) {
        Err(NpyError::WrongType) => match array_from_npy::<i32>(&bytes) {
            Err(NpyError::WrongType) => array_from_npy::<u8>(&bytes).map(|a| a.mapv(i64::from)),
            other => other.map(|a| a.mapv(i64::from)),
        },
        other => other,
    }
    .map_err(|e| match e {
        NpyError::WrongType => npz_err(path, "regions", "expected int64, int32 or uint8 labels"),
        NpyError::Bad(reason) => npz_err(path, "regions", reason),
    })?;
    if labels.ndim() != 2 {
        return Err(DataError::WrongRank {
            path: path.to_path_buf(),
            key: "regions".into(),
            expected: "2 ([H, W])".into(),
            found: labels.ndim(),
        });
    }
    let cells = labels.len() as i64;
    if let Some((index, &label)) = labels.iter().enumerate().find(|(_, v)| **v < 0 || **v >= cells) {
        return Err(DataError::BadRegionLabel { path: path.to_path_buf(), label, index });
    }
    let labels = labels.into_dimensionality::<Ix2>().map_err(|e| npz_err(path, "regions", e))?;
    Ok(labels.mapv(|v| v as usize))
}

/// Writes a region map as int64 `.npy`, atomically.
pub fn write_region_map(path: &Path, map: &Array2<usize>) -> Result<(), DataError> {
    let labels = map.mapv(|v| v as i64);
    write_atomic_with(path, |f| labels.write_npy(f).map_err(std::io::Error::other)).map_err(Into::into)
}

/// Reshapes a generated dataset of a reaction–diffusion system (`spec.grid` set) into a field
/// set: run `env * trajs + traj`, channel = species, `dt` from the shared uniform time grid.
pub fn field_set_from_grid_dataset(spec: &SystemSpec, data: &Dataset) -> Result<FieldSet, DataError> {
    let Some(grid) = &spec.grid else {
        return Err(DataError::spec(&spec.name, "grid", "not a reaction–diffusion system (no grid)"));
    };
    let (envs, trajs, steps, dim) = data.x.dim();
    let (n, species) = (grid.size, spec.state.len());
    if dim != spec.dim() {
        return Err(mixer_core::Error::shape(format!("state size of `{}`", spec.name), spec.dim(), dim).into());
    }
    if steps < 2 {
        return Err(DataError::TooFewFrames { frames: steps });
    }
    let t0 = data.t.for_env(0);
    let dt = t0[1] - t0[0];
    for e in 0..envs {
        let t = data.t.for_env(e);
        let uniform = t.windows(2).all(|p| ((p[1] - p[0]) - dt).abs() <= 1e-9 * dt.abs().max(1.0));
        if t != t0 || !uniform {
            return Err(mixer_core::Error::config(
                "t",
                format!("`{}`: field sets need one evenly spaced time grid for every environment", spec.name),
            )
            .into());
        }
    }
    let cells = n * n;
    let fields = Array5::from_shape_fn((envs * trajs, steps, n, n, species), |(r, k, i, j, s)| {
        data.x[[r / trajs, r % trajs, k, s * cells + i * n + j]] as f32
    });
    let set = FieldSet { fields, dt };
    set.check(&spec.name)?;
    Ok(set)
}
