//! Data folders in the published layout: the four splits plus an optional `dataset.toml`.

use std::path::{Path, PathBuf};

use ndarray::{Axis, s};

use mixer_core::{Dataset, Error, Split, TimeGrid};

use crate::{DataError, Generated, Manifest, read_npz, write_npz};

/// The four splits of a data folder.
#[derive(Clone, Debug)]
pub struct DatasetDir {
    /// Meta-training split.
    pub train: Dataset,
    /// In-domain test split.
    pub test: Dataset,
    /// Adaptation fitting split.
    pub adapt_train: Dataset,
    /// Adaptation test split.
    pub adapt_test: Dataset,
    /// The manifest, when the folder has one.
    pub manifest: Option<Manifest>,
}

/// File names accepted for a split, in order of preference.
pub fn candidates(split: Split) -> &'static [&'static str] {
    match split {
        Split::Train => &["train.npz", "train_data.npz"],
        Split::Test => &["test.npz", "test_data.npz"],
        Split::AdaptTrain => &["adapt_train.npz", "ood_train.npz", "adapt_data.npz", "adapt_train_data.npz"],
        Split::AdaptTest => &["adapt_test.npz", "ood_test.npz", "adapt_data_test.npz", "adapt_test_data.npz"],
    }
}

/// Path of a split in a folder, trying every accepted spelling.
pub fn split_path(dir: &Path, split: Split) -> Result<PathBuf, DataError> {
    candidates(split).iter().map(|n| dir.join(n)).find(|p| p.exists()).ok_or_else(|| DataError::MissingSplit {
        dir: dir.to_path_buf(),
        split: split.stem().to_string(),
        tried: candidates(split).iter().map(|s| s.to_string()).collect(),
    })
}

/// Reads one split of a folder.
pub fn load_split(dir: &Path, split: Split) -> Result<Dataset, DataError> {
    read_npz(&split_path(dir, split)?)
}

/// Reads all four splits (and the manifest if present) and checks they agree in dimension.
pub fn load_dir(dir: &Path) -> Result<DatasetDir, DataError> {
    let train = load_split(dir, Split::Train)?;
    let test = load_split(dir, Split::Test)?;
    let adapt_train = load_split(dir, Split::AdaptTrain)?;
    let adapt_test = load_split(dir, Split::AdaptTest)?;
    for (name, d) in [("test", &test), ("adapt_train", &adapt_train), ("adapt_test", &adapt_test)] {
        if d.dim() != train.dim() {
            return Err(Error::shape(format!("state dimension of {name} (train has {})", train.dim()), train.dim(), d.dim()).into());
        }
    }
    if test.num_envs() != train.num_envs() {
        return Err(Error::shape("environments of test (same as train)", train.num_envs(), test.num_envs()).into());
    }
    if adapt_test.num_envs() != adapt_train.num_envs() {
        return Err(Error::shape("environments of adapt_test (same as adapt_train)", adapt_train.num_envs(), adapt_test.num_envs()).into());
    }
    let mpath = dir.join("dataset.toml");
    let manifest = if mpath.exists() {
        let text = std::fs::read_to_string(&mpath).map_err(|e| Error::io(&mpath, e))?;
        Some(toml::from_str(&text).map_err(|e| DataError::Npz { path: mpath.clone(), reason: e.to_string() })?)
    } else {
        None
    };
    Ok(DatasetDir { train, test, adapt_train, adapt_test, manifest })
}

/// Writes generated splits and the manifest into `dir` (each file written beside and renamed).
pub fn save_dir(dir: &Path, generated: &Generated) -> Result<(), DataError> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for (split, data) in &generated.splits {
        write_npz(&dir.join(format!("{}.npz", split.stem())), data)?;
    }
    let text = toml::to_string(&generated.manifest)
        .map_err(|e| DataError::Npz { path: dir.join("dataset.toml"), reason: e.to_string() })?;
    let tmp = dir.join(".dataset.toml.partial");
    std::fs::write(&tmp, text).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, dir.join("dataset.toml")).map_err(|e| Error::io(dir.join("dataset.toml"), e))?;
    Ok(())
}

/// Keeps every `k`-th time point (`k = 1` keeps all).
pub fn subsample(data: &Dataset, k: usize) -> Result<Dataset, DataError> {
    if k == 0 {
        return Err(Error::config("subsample", "must be at least 1").into());
    }
    let x = data.x.slice(s![.., .., ..;k, ..]).to_owned();
    let pick = |g: &[f64]| g.iter().step_by(k).copied().collect::<Vec<_>>();
    let t = match &data.t {
        TimeGrid::Shared(g) => TimeGrid::Shared(pick(g)),
        TimeGrid::PerEnv(gs) => TimeGrid::PerEnv(gs.iter().map(|g| pick(g)).collect()),
    };
    debug_assert_eq!(x.len_of(Axis(2)), t.for_env(0).len());
    Ok(Dataset::new(x, t, data.families.clone())?)
}
