//! Dataset folders: the four split files plus `dataset.toml`.

use std::path::Path;

use mixer_core::{Dataset, Split};

use crate::DataError;
use crate::io::{read_npz, write_npz};
use crate::manifest::{MANIFEST_FILE, Manifest};

/// The four splits of a dataset folder and its manifest when present.
#[derive(Clone, Debug)]
pub struct DatasetDir {
    /// Meta-training trajectories.
    pub train: Dataset,
    /// Training environments, new initial conditions.
    pub test: Dataset,
    /// Adaptation environments, few trajectories each.
    pub adapt_train: Dataset,
    /// Adaptation environments, new initial conditions.
    pub adapt_test: Dataset,
    /// `dataset.toml`, when the folder has one.
    pub manifest: Option<Manifest>,
}

impl DatasetDir {
    /// The dataset of one split.
    pub fn split(&self, split: Split) -> &Dataset {
        match split {
            Split::Train => &self.train,
            Split::Test => &self.test,
            Split::AdaptTrain => &self.adapt_train,
            Split::AdaptTest => &self.adapt_test,
        }
    }

    /// Writes the four `<split>.npz` files and (when present) `dataset.toml` into `dir`, each
    /// atomically; the manifest's recorded shapes are refreshed from what was written.
    pub fn write(&self, dir: &Path) -> Result<(), DataError> {
        std::fs::create_dir_all(dir).map_err(|e| mixer_core::Error::io(dir, e))?;
        let mut manifest = self.manifest.clone();
        for split in Split::ALL {
            let file = format!("{}.npz", split.stem());
            let shape = write_npz(&dir.join(&file), self.split(split))?;
            if let Some(m) = manifest.as_mut()
                && let Some(s) = m.splits.iter_mut().find(|s| s.split == split.stem())
            {
                s.shape = shape;
                s.file = file;
            }
        }
        if let Some(m) = manifest {
            m.write(&dir.join(MANIFEST_FILE))?;
        }
        Ok(())
    }
}

/// File names accepted for a split, in the order they are tried.
pub fn split_file_names(split: Split) -> &'static [&'static str] {
    match split {
        Split::Train => &["train.npz", "train_data.npz"],
        Split::Test => &["test.npz", "test_data.npz"],
        Split::AdaptTrain => &["adapt_train.npz", "ood_train.npz", "adapt_train_data.npz", "ood_train_data.npz"],
        Split::AdaptTest => &["adapt_test.npz", "ood_test.npz", "adapt_test_data.npz", "ood_test_data.npz"],
    }
}

/// Reads one split of a folder in the published layout.
pub fn load_split(dir: &Path, split: Split) -> Result<Dataset, DataError> {
    let names = split_file_names(split);
    match names.iter().map(|n| dir.join(n)).find(|p| p.is_file()) {
        Some(path) => read_npz(&path),
        None => Err(DataError::MissingSplit {
            dir: dir.to_path_buf(),
            split: split.stem().to_string(),
            looked_for: names.join(", "),
        }),
    }
}

/// Reads all four splits and `dataset.toml` (if present) of a folder; a manifest that disagrees
/// with itself or with the arrays is an error.
pub fn load_dir(dir: &Path) -> Result<DatasetDir, DataError> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let manifest = if manifest_path.is_file() { Some(Manifest::read(&manifest_path)?) } else { None };
    let d = DatasetDir {
        train: load_split(dir, Split::Train)?,
        test: load_split(dir, Split::Test)?,
        adapt_train: load_split(dir, Split::AdaptTrain)?,
        adapt_test: load_split(dir, Split::AdaptTest)?,
        manifest,
    };
    if let Some(m) = &d.manifest {
        for split in Split::ALL {
            m.check_split(split, d.split(split))
                .map_err(|reason| DataError::Manifest { path: manifest_path.clone(), reason })?;
        }
    }
    Ok(d)
}
