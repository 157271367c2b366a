//! Checkpoints: model, optimiser states, router state and trainer state, written to a fresh
//! folder that is renamed into place, with a `latest.json` pointer written last.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::record::{BinFileRecorder, DoublePrecisionSettings, Recorder};
use burn::tensor::backend::Backend;
use burn_store::{ModuleSnapshot, SafetensorsStore};
use serde::{Deserialize, Serialize};

use mixer_core::Error;

use crate::{read_json, write_atomic, write_json};

/// The recorder of optimiser states and of module weights written before safetensors (f64, so
/// resumes are exact on f64 backends).
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

/// Saves a module's parameters as `<dir>/<name>.safetensors` (atomically): one tensor per
/// parameter, named by its path in the module (`moe.experts.0.layers.1.weight`), in the
/// backend's float type, readable by any safetensors reader (Python: `safetensors.numpy.load_file`);
/// and as burn's record `<dir>/<name>.bin`, which keeps the parameter ids that saved optimiser
/// states refer to, so that a resumed run continues exactly.
pub fn save_module<B: Backend, M: Module<B>>(module: &M, dir: &Path, name: &str) -> Result<(), Error> {
    let path = dir.join(format!("{name}.{WEIGHTS_EXT}"));
    let mut store = SafetensorsStore::from_bytes(None).metadata("writer", "mixer");
    module.save_into(&mut store).map_err(|e| store_error(&path, e))?;
    let bytes = store.get_bytes().map_err(|e| store_error(&path, e))?;
    write_atomic(&path, &bytes)?;
    module.clone().save_file(dir.join(name), &RunRecorder::new()).map_err(|e| recorder_error(dir, name, e))
}

/// File extension of module weights.
pub const WEIGHTS_EXT: &str = "safetensors";

/// Loads `<dir>/<name>.bin` (parameter ids included, for exact resumes) or, where only the
/// export is there, `<dir>/<name>.safetensors` into a module of the same structure. A file whose
/// tensors differ from the module's parameters in names or shapes (a checkpoint of another
/// architecture) is an error that names the first difference.
pub fn load_module<B: Backend, M: Module<B>>(
    mut module: M,
    dir: &Path,
    name: &str,
    device: &B::Device,
) -> Result<M, Error> {
    let path = dir.join(format!("{name}.{WEIGHTS_EXT}"));
    if dir.join(format!("{name}.bin")).is_file() {
        return load_record_module(module, dir, name, device);
    }
    if !path.is_file() {
        let reason = "no weights here; the run folder is incomplete (train it again, or resume it)";
        return Err(Error::io(&path, std::io::Error::new(std::io::ErrorKind::NotFound, reason)));
    }
    let mut store = SafetensorsStore::from_file(&path).validate(false).allow_partial(true);
    let result = module.load_from(&mut store).map_err(|e| store_error(&path, e))?;
    let mismatch = match (result.errors.first(), result.missing.first(), result.unused.first()) {
        (Some(e), _, _) => Some(format!("{e:?}")),
        (None, Some((tensor, _)), _) => Some(format!("the model's parameter `{tensor}` is not in the file")),
        (None, None, Some(tensor)) => Some(format!("tensor `{tensor}` is not a parameter of the model")),
        (None, None, None) => None,
    };
    if let Some(first) = mismatch {
        let reason = format!(
            "checkpoint of another architecture: {first} ({} mismatched, {} missing, {} unused tensors)",
            result.errors.len(),
            result.missing.len(),
            result.unused.len()
        );
        return Err(Error::io(&path, std::io::Error::other(reason)));
    }
    Ok(module)
}

/// Loads burn's binary record `<dir>/<name>.bin`, refusing a record whose parameter shapes differ from the module's, which burn's loader would
/// take silently.
fn load_record_module<B: Backend, M: Module<B>>(
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

fn store_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::io(path, std::io::Error::other(e.to_string()))
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

#[cfg(test)]
mod tests {
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::Tensor;

    use super::*;
    use crate::tests::TestBackend as B;

    #[derive(Module, Debug)]
    struct Net<B: Backend> {
        encoder: Linear<B>,
        head: Linear<B>,
    }

    fn net(hidden: usize) -> Net<B> {
        let device = Default::default();
        Net { encoder: LinearConfig::new(3, hidden).init(&device), head: LinearConfig::new(hidden, 2).init(&device) }
    }

    fn values(t: Tensor<B, 2>) -> Vec<f64> {
        t.into_data().to_vec().unwrap()
    }

    /// The header of a safetensors file, read by hand: name -> (dtype, shape, byte range).
    fn header(path: &Path) -> serde_json::Map<String, serde_json::Value> {
        let bytes = std::fs::read(path).unwrap();
        let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        serde_json::from_slice(&bytes[8..8 + len]).unwrap()
    }

    #[test]
    fn weights_round_trip_as_named_safetensors() {
        let dir = tempfile::tempdir().unwrap();
        let a = net(4);
        save_module(&a, dir.path(), "model").unwrap();
        let path = dir.path().join("model.safetensors");
        let h = header(&path);
        let entry = &h["encoder.weight"];
        assert_eq!((entry["dtype"].as_str(), entry["shape"].clone()), (Some("F64"), serde_json::json!([3, 4])));
        assert_eq!(h["head.bias"]["shape"], serde_json::json!([2]));
        assert_eq!(h["__metadata__"]["writer"], "mixer");
        // The bytes at the recorded offsets are the parameter's values, little-endian, row-major.
        let bytes = std::fs::read(&path).unwrap();
        let start = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let range = entry["data_offsets"].as_array().unwrap();
        let (lo, hi) = (range[0].as_u64().unwrap() as usize, range[1].as_u64().unwrap() as usize);
        let stored: Vec<f64> =
            bytes[start + lo..start + hi].chunks(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(stored, values(a.encoder.weight.val()));
        std::fs::remove_file(dir.path().join("model.bin")).unwrap();
        let b = load_module(net(4), dir.path(), "model", &Default::default()).unwrap();
        assert_eq!(values(b.encoder.weight.val()), values(a.encoder.weight.val()));
        assert_eq!(values(b.head.weight.val()), values(a.head.weight.val()));
    }

    #[test]
    fn another_architecture_or_a_missing_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        save_module(&net(4), dir.path(), "model").unwrap();
        std::fs::remove_file(dir.path().join("model.bin")).unwrap();
        let err = load_module(net(5), dir.path(), "model", &Default::default()).unwrap_err().to_string();
        assert!(err.contains("checkpoint of another architecture") && err.contains("encoder"), "{err}");
        let err = load_module(net(4), dir.path(), "absent", &Default::default()).unwrap_err().to_string();
        assert!(err.contains("absent.safetensors") && err.contains("no weights here"), "{err}");
    }

    #[test]
    fn burn_records_load_with_their_shapes_checked() {
        let dir = tempfile::tempdir().unwrap();
        let a = net(4);
        // Read before cloning: a lazily initialised parameter cloned unread would draw twice.
        let before = values(a.encoder.weight.val());
        a.clone().save_file(dir.path().join("model"), &RunRecorder::new()).unwrap();
        let b = load_module(net(4), dir.path(), "model", &Default::default()).unwrap();
        assert_eq!(values(b.encoder.weight.val()), before);
        let err = load_module(net(5), dir.path(), "model", &Default::default()).unwrap_err().to_string();
        assert!(err.contains("model.bin") && err.contains("another architecture"), "{err}");
    }

    #[test]
    fn python_reads_the_weights_when_it_can() {
        let probe = std::process::Command::new("python3").args(["-c", "import safetensors.numpy"]).output();
        if !probe.is_ok_and(|o| o.status.success()) {
            eprintln!("skipped: python3 with the `safetensors` and `numpy` packages is not available");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let a = net(4);
        save_module(&a, dir.path(), "model").unwrap();
        let script = "import sys; from safetensors.numpy import load_file; \
                      w = load_file(sys.argv[1]); print(repr(float(w['encoder.weight'].sum())), w['head.weight'].shape)";
        let path = dir.path().join("model.safetensors");
        let out = std::process::Command::new("python3").args(["-c", script]).arg(&path).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let sum: f64 = values(a.encoder.weight.val()).iter().sum();
        let (got, shape) = text.trim().split_once(' ').unwrap_or_else(|| panic!("python said {text:?}"));
        assert!((got.parse::<f64>().unwrap() - sum).abs() < 1e-12, "{got} vs {sum}");
        assert_eq!(shape, "(4, 2)");
    }
}
