//! `.npz` files in the published layout: `X: [envs, trajs, steps, dim]` (or with a leading family
//! axis) and `t: [steps]` (or `[families, steps]`).

use std::fs::File;
use std::path::Path;

use ndarray::{Array2, Array5, ArrayD, Axis, Ix1, Ix2};
use ndarray_npy::{NpzReader, NpzWriter};

use mixer_core::{Dataset, Error, TimeGrid};

use crate::DataError;

fn npz_err(path: &Path, e: impl std::fmt::Display) -> DataError {
    DataError::Npz { path: path.to_path_buf(), reason: e.to_string() }
}

/// Reads one split; a family axis becomes per-environment family labels and time grids.
pub fn read_npz(path: &Path) -> Result<Dataset, DataError> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut npz = NpzReader::new(file).map_err(|e| npz_err(path, e))?;
    let names = npz.names().map_err(|e| npz_err(path, e))?;
    let has = |k: &str| names.iter().any(|n| n == k || n == &format!("{k}.npy"));
    for key in ["X", "t"] {
        if !has(key) {
            return Err(npz_err(path, format!("missing array `{key}` (found {names:?})")));
        }
    }
    let x: ArrayD<f64> = npz.by_name("X").map_err(|e| npz_err(path, format!("`X`: {e}")))?;
    let t: ArrayD<f64> = npz.by_name("t").map_err(|e| npz_err(path, format!("`t`: {e}")))?;
    let bad_rank = |what: &str, shape: &[usize]| {
        npz_err(path, format!("{what} has shape {shape:?}; expected X [envs, trajs, steps, dim] with t [steps], or X [families, envs, trajs, steps, dim] with t [families, steps]"))
    };
    match (x.ndim(), t.ndim()) {
        (4, 1) => {
            let x = x.into_dimensionality().map_err(|e| npz_err(path, e))?;
            let t = t.into_dimensionality::<Ix1>().map_err(|e| npz_err(path, e))?.to_vec();
            Dataset::new(x, TimeGrid::Shared(t), None).map_err(|e| located(path, e))
        }
        (5, 2) => {
            let x: Array5<f64> = x.into_dimensionality().map_err(|e| npz_err(path, e))?;
            let t: Array2<f64> = t.into_dimensionality::<Ix2>().map_err(|e| npz_err(path, e))?;
            let (f, e, n, s, d) = x.dim();
            if t.nrows() != f {
                return Err(npz_err(path, format!("t has {} grids for {f} families", t.nrows())));
            }
            let flat = x.into_shape_with_order((f * e, n, s, d)).map_err(|e| npz_err(path, e))?;
            let grids = (0..f * e).map(|i| t.row(i / e).to_vec()).collect();
            let families = (0..f * e).map(|i| i / e).collect();
            Dataset::new(flat, TimeGrid::PerEnv(grids), Some(families)).map_err(|e| located(path, e))
        }
        (4 | 5, _) => Err(bad_rank("t", t.shape())),
        _ => Err(bad_rank("X", x.shape())),
    }
}

fn located(path: &Path, e: Error) -> DataError {
    DataError::Npz { path: path.to_path_buf(), reason: e.to_string() }
}

/// Writes one split; datasets with family labels (equal-sized, contiguous families sharing a grid
/// each) are written with a family axis.
pub fn write_npz(path: &Path, data: &Dataset) -> Result<(), DataError> {
    let tmp = path.with_extension("npz.partial");
    let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let mut npz = NpzWriter::new_compressed(file);
    match (&data.families, &data.t) {
        (Some(fams), TimeGrid::PerEnv(grids)) => {
            let f = fams.iter().max().map_or(0, |m| m + 1);
            let e = data.num_envs() / f.max(1);
            if f * e != data.num_envs() || fams.iter().enumerate().any(|(i, &fi)| fi != i / e.max(1)) {
                return Err(npz_err(path, "families must be contiguous and of equal size to write a family axis"));
            }
            let (_, n, s, d) = data.x.dim();
            let x: Array5<f64> = data.x.clone().into_shape_with_order((f, e, n, s, d)).map_err(|e| npz_err(path, e))?;
            let mut t = Array2::<f64>::zeros((f, s));
            for (i, mut row) in t.axis_iter_mut(Axis(0)).enumerate() {
                row.assign(&ndarray::ArrayView1::from(&grids[i * e]));
            }
            npz.add_array("X", &x).map_err(|e| npz_err(path, e))?;
            npz.add_array("t", &t).map_err(|e| npz_err(path, e))?;
        }
        (_, TimeGrid::Shared(t)) => {
            npz.add_array("X", &data.x).map_err(|e| npz_err(path, e))?;
            npz.add_array("t", &ndarray::Array1::from(t.clone())).map_err(|e| npz_err(path, e))?;
        }
        (None, TimeGrid::PerEnv(_)) => return Err(npz_err(path, "per-environment grids need family labels")),
    }
    npz.finish().map_err(|e| npz_err(path, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    Ok(())
}

