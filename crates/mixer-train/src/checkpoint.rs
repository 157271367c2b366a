//! Checkpoints: model, optimiser states, router state and trainer state, written to a fresh
//! folder that is renamed into place, with a `latest.json` pointer written last.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::record::{BinFileRecorder, DoublePrecisionSettings, Recorder};
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use mixer_core::Error;

use crate::{read_json, write_json};

/// The recorder used for every binary file of a run (f64, so resumes are exact on f64 backends).
pub type RunRecorder = BinFileRecorder<DoublePrecisionSettings>;

/// Points at the newest complete checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Latest {
    /// Outer steps completed in that checkpoint.
    pub outer_done: usize,
    /// Folder name under `checkpoints/`.
    pub dir: String,
}

/// Folder holding the checkpoints of a run.
pub fn checkpoints_dir(run: &Path) -> PathBuf {
    run.join("checkpoints")
}

/// The newest checkpoint folder of a run, if any.
pub fn latest(run: &Path) -> Result<Option<(Latest, PathBuf)>, Error> {
    let pointer = checkpoints_dir(run).join("latest.json");
    if !pointer.exists() {
        return Ok(None);
    }
    let l: Latest = read_json(&pointer)?;
    let dir = checkpoints_dir(run).join(&l.dir);
    Ok(Some((l, dir)))
}

/// Creates the run folder `run` and writes `config` as `<run>/<file>`, or, when the folder holds
/// a config already, checks that it is `config` with only its step budget changed
/// (`with_steps_of(on_disk)` gives the one on disk with this config's budget): a run resumes
/// under its own config.
pub fn claim_run<C>(run: &Path, file: &str, config: &C, with_steps_of: impl Fn(C) -> C) -> Result<(), Error>
where
    C: Serialize + serde::de::DeserializeOwned + PartialEq,
{
    std::fs::create_dir_all(run).map_err(|e| Error::io(run, e))?;
    let path = run.join(file);
    if read_json::<C>(&path).is_ok_and(|on_disk| with_steps_of(on_disk) != *config) {
        let reason = format!("{} holds a run of another config; use a new --out folder", run.display());
        return Err(Error::config("config", reason));
    }
    write_json(&path, config)
}

/// Saves a module as `<dir>/<name>.bin`.
pub fn save_module<B: Backend, M: Module<B>>(module: &M, dir: &Path, name: &str) -> Result<(), Error> {
    module.clone().save_file(dir.join(name), &RunRecorder::new()).map_err(|e| recorder_error(dir, name, e))
}

/// Loads `<dir>/<name>.bin` into a module of the same structure; a record whose parameter
/// shapes differ from the module's (a checkpoint of another architecture, which burn's loader
/// would take silently) is an error.
pub fn load_module<B: Backend, M: Module<B>>(
    module: M,
    dir: &Path,
    name: &str,
    device: &B::Device,
) -> Result<M, Error> {
    let expected = param_shapes(&module);
    let loaded =
        module.load_file(dir.join(name), &RunRecorder::new(), device).map_err(|e| recorder_error(dir, name, e))?;
    let found = param_shapes(&loaded);
    if found != expected {
        let first = expected.iter().zip(&found).position(|(a, b)| a != b).unwrap_or(expected.len().min(found.len()));
        let reason = format!(
            "checkpoint of another architecture: parameter {first} has shape {:?}, the model expects {:?} ({} parameters against {})",
            found.get(first),
            expected.get(first),
            found.len(),
            expected.len()
        );
        return Err(Error::io(dir.join(format!("{name}.bin")), std::io::Error::other(reason)));
    }
    Ok(loaded)
}

/// The shape of every float parameter of a module, in visiting order.
fn param_shapes<B: Backend, M: Module<B>>(module: &M) -> Vec<Vec<usize>> {
    struct Shapes(Vec<Vec<usize>>);
    impl<B: Backend> burn::module::ModuleVisitor<B> for Shapes {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<burn::tensor::Tensor<B, D>>) {
            self.0.push(param.dims().to_vec());
        }
    }
    let mut shapes = Shapes(vec![]);
    module.visit(&mut shapes);
    shapes.0
}

/// Saves any burn record (optimiser state) as `<dir>/<name>.bin`.
pub fn save_record<B: Backend, R: burn::record::Record<B>>(record: R, dir: &Path, name: &str) -> Result<(), Error> {
    Recorder::<B>::record(&RunRecorder::new(), record, dir.join(name)).map_err(|e| recorder_error(dir, name, e))
}

/// Loads a record written by [`save_record`].
pub fn load_record<B: Backend, R: burn::record::Record<B>>(
    dir: &Path,
    name: &str,
    device: &B::Device,
) -> Result<R, Error> {
    Recorder::<B>::load(&RunRecorder::new(), dir.join(name), device).map_err(|e| recorder_error(dir, name, e))
}

fn recorder_error(dir: &Path, name: &str, e: burn::record::RecorderError) -> Error {
    Error::io(dir.join(format!("{name}.bin")), std::io::Error::other(e.to_string()))
}

/// Publishes a checkpoint folder written at `staging`: renames it to `step-<outer>`, points
/// `latest.json` at it, and removes older step folders.
pub fn publish(run: &Path, staging: &Path, outer_done: usize) -> Result<PathBuf, Error> {
    let root = checkpoints_dir(run);
    let name = format!("step-{outer_done:06}");
    let target = root.join(&name);
    if target.exists() {
        std::fs::remove_dir_all(&target).map_err(|e| Error::io(&target, e))?;
    }
    std::fs::rename(staging, &target).map_err(|e| Error::io(&target, e))?;
    write_json(&root.join("latest.json"), &Latest { outer_done, dir: name.clone() })?;
    for entry in std::fs::read_dir(&root).map_err(|e| Error::io(&root, e))? {
        let entry = entry.map_err(|e| Error::io(&root, e))?;
        let n = entry.file_name().to_string_lossy().into_owned();
        if n.starts_with("step-") && n != name {
            std::fs::remove_dir_all(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
        }
    }
    Ok(target)
}

/// A fresh staging folder for a checkpoint being written.
pub fn staging(run: &Path, label: &str) -> Result<PathBuf, Error> {
    let dir = checkpoints_dir(run).join(format!(".{label}.partial"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    Ok(dir)
}

/// Replaces `<run>/best` with a copy of the checkpoint folder `from`.
pub fn publish_best(run: &Path, from: &Path) -> Result<(), Error> {
    let staging = staging(run, "best")?;
    for entry in std::fs::read_dir(from).map_err(|e| Error::io(from, e))? {
        let entry = entry.map_err(|e| Error::io(from, e))?;
        let to = staging.join(entry.file_name());
        std::fs::copy(entry.path(), &to).map_err(|e| Error::io(&to, e))?;
    }
    let best = run.join("best");
    let old = run.join(".best.old");
    if best.exists() {
        std::fs::rename(&best, &old).map_err(|e| Error::io(&best, e))?;
    }
    std::fs::rename(&staging, &best).map_err(|e| Error::io(&best, e))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
    }
    Ok(())
}
