//! Reading and writing one split as `.npz` in the published layout.

use std::path::Path;

use mixer_core::{Dataset, TimeGrid, write_atomic_with};
use ndarray::{Array1, Array2, ArrayD, Ix4, IxDyn};
use ndarray_npy::NpzWriter;

use crate::DataError;
use crate::npy::Npz;

fn npz_err(path: &Path, key: &str, e: impl std::fmt::Display) -> DataError {
    DataError::Npz { path: path.to_path_buf(), key: key.to_string(), reason: e.to_string() }
}

/// Reads a split file: `X` `[envs, trajs, steps, dim]` with `t` `[steps]` (or `[envs, steps]`),
/// or `X` `[families, envs, trajs, steps, dim]` with `t` `[families, steps]` (or `[steps]`), which
/// is flattened to `[families * envs, ...]` with family labels and per-environment grids.
pub fn read_npz(path: &Path) -> Result<Dataset, DataError> {
    let npz = Npz::open(path)?;
    let x = npz.array(path, "X", |v: f32| f64::from(v), "float64 or float32")?;
    let t = npz.array(path, "t", |v: f32| f64::from(v), "float64 or float32")?;
    let rank_err = |key: &str, expected: &str, found: usize| DataError::WrongRank {
        path: path.to_path_buf(),
        key: key.to_string(),
        expected: expected.to_string(),
        found,
    };
    let bad = |source: mixer_core::Error| DataError::BadData { path: path.to_path_buf(), source };
    let (x, groups) = match x.ndim() {
        4 => (x, None),
        5 => {
            let s = x.shape().to_vec();
            let flat =
                x.into_shape_with_order(IxDyn(&[s[0] * s[1], s[2], s[3], s[4]])).map_err(|e| npz_err(path, "X", e))?;
            (flat, Some((s[0], s[1])))
        }
        r => return Err(rank_err("X", "4 ([envs, trajs, steps, dim]) or 5 ([families, envs, trajs, steps, dim])", r)),
    };
    let x = x.into_dimensionality::<Ix4>().map_err(|e| npz_err(path, "X", e))?;
    let envs = x.dim().0;
    let (t, families) = match (t.ndim(), groups) {
        (1, g) => (TimeGrid::Shared(t.iter().copied().collect()), g.map(|(f, e)| labels(f, e))),
        (2, None) => {
            if t.shape()[0] != envs {
                return Err(bad(mixer_core::Error::shape("rows of t (one grid per environment)", envs, t.shape()[0])));
            }
            (TimeGrid::PerEnv(t.outer_iter().map(|r| r.iter().copied().collect()).collect()), None)
        }
        (2, Some((f, e))) => {
            if t.shape()[0] != f {
                return Err(bad(mixer_core::Error::shape("rows of t (one grid per family)", f, t.shape()[0])));
            }
            let grids: Vec<Vec<f64>> = t.outer_iter().map(|r| r.iter().copied().collect()).collect();
            (TimeGrid::PerEnv((0..f * e).map(|k| grids[k / e].clone()).collect()), Some(labels(f, e)))
        }
        (r, _) => return Err(rank_err("t", "1 ([steps]) or 2 ([families or envs, steps])", r)),
    };
    Dataset::new(x, t, families).map_err(bad)
}

fn labels(families: usize, envs: usize) -> Vec<usize> {
    (0..families * envs).map(|k| k / envs).collect()
}

/// Family groups `(families, envs per family)` when labels are contiguous equal-size blocks
/// `0, 0, .., 1, 1, ..` and every family has one grid.
fn family_blocks(data: &Dataset) -> Option<(usize, usize)> {
    let f = data.families.as_ref()?;
    let nf = f.iter().copied().max()? + 1;
    if f.len() % nf != 0 {
        return None;
    }
    let e = f.len() / nf;
    if f.iter().enumerate().any(|(k, &fam)| fam != k / e) {
        return None;
    }
    let same_grid = (0..f.len()).all(|k| data.t.for_env(k) == data.t.for_env((k / e) * e));
    same_grid.then_some((nf, e))
}

/// Writes a split file atomically. Datasets with contiguous, equal-size family blocks are
/// written with the family axis (`X: [families, envs, trajs, steps, dim]`, `t: [families, steps]`);
/// others as `X: [envs, trajs, steps, dim]` with `t: [steps]` or `[envs, steps]`. Returns the
/// stored shape of `X`.
pub fn write_npz(path: &Path, data: &Dataset) -> Result<Vec<usize>, DataError> {
    let (envs, trajs, steps, dim) = data.x.dim();
    let x = data.x.view().into_dyn();
    let (x, t): (ArrayD<f64>, ArrayD<f64>) = match family_blocks(data) {
        Some((f, e)) => {
            let xs = x
                .to_owned()
                .into_shape_with_order(IxDyn(&[f, e, trajs, steps, dim]))
                .map_err(|e| npz_err(path, "X", e))?;
            let grids: Vec<f64> = (0..f).flat_map(|k| data.t.for_env(k * e).to_vec()).collect();
            (xs, Array2::from_shape_vec((f, steps), grids).map_err(|e| npz_err(path, "t", e))?.into_dyn())
        }
        None => {
            let t = match &data.t {
                TimeGrid::Shared(g) => Array1::from(g.clone()).into_dyn(),
                TimeGrid::PerEnv(gs) => {
                    Array2::from_shape_vec((envs, steps), gs.concat()).map_err(|e| npz_err(path, "t", e))?.into_dyn()
                }
            };
            (x.to_owned(), t)
        }
    };
    let shape = x.shape().to_vec();
    write_atomic_with(path, |f| {
        let mut npz = NpzWriter::new(f);
        npz.add_array("X", &x).map_err(std::io::Error::other)?;
        npz.add_array("t", &t).map_err(std::io::Error::other)?;
        npz.finish().map_err(std::io::Error::other)?;
        Ok(())
    })?;
    Ok(shape)
}
