//! Every reader answers malformed input with an error, never a panic: seeded mutations of a
//! dataset folder (split `.npz` bytes, `.npy` headers, `dataset.toml`), a field folder
//! (`fields.toml`, field `.npz`, `regions.npy`), system files and `.ts` series files. `MIXER_FUZZ_CASES` sets the
//! cases per reader (default 120); a failure names the case's seed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use mixer_core::{Dataset, TimeGrid};
use mixer_data::mutate::{flip_bits, mutate_npy_header, mutate_npz_header, mutate_toml, truncate};
use mixer_data::{
    ControlSpec, DatasetDir, DatasetSpec, EnvInfo, FamilyInfo, FieldDir, FieldManifest, FieldSet, MANIFEST_FILE,
    Manifest, SplitInfo, SplitRuns, builtin_text, load_dir, load_field_dir,
};
use mixer_ode::ReferenceMethod;
use ndarray::{Array2, Array4, Array5};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn cases() -> u64 {
    std::env::var("MIXER_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(120)
}

/// Runs `case(seed)` (true when the input was rejected) for every seed, failing with the seed of
/// the first panic, or when fewer than `min_rejected` of the inputs were rejected (mutations
/// that never break the input would test nothing).
fn never_panics(what: &str, min_rejected: f64, mut case: impl FnMut(u64) -> bool) {
    let (mut errors, n) = (0, cases());
    for seed in 0..n {
        match catch_unwind(AssertUnwindSafe(|| case(seed))) {
            Ok(is_err) => errors += usize::from(is_err),
            Err(_) => panic!("{what}: case {seed} panicked (replay with this seed)"),
        }
    }
    assert!(errors as f64 >= min_rejected * n as f64, "{what}: only {errors} of {n} mutated inputs were rejected");
}

/// A small two-family dataset folder with a consistent manifest.
fn write_dataset(dir: &Path) {
    let (envs, trajs, steps, dim) = (6, 2, 5, 2);
    let families: Vec<usize> = (0..envs).map(|e| e / 3).collect();
    let split = |offset: f64| {
        let x = Array4::from_shape_fn((envs, trajs, steps, dim), |(e, n, k, d)| offset + (e + n + k * d) as f64 * 0.1);
        let t =
            TimeGrid::PerEnv((0..envs).map(|e| (0..steps).map(|k| k as f64 * (1.0 + e as f64)).collect()).collect());
        Dataset::new(x, t, Some(families.clone())).unwrap()
    };
    let family = |name: &str, parameters: &[&str]| FamilyInfo {
        name: name.into(),
        state: vec!["x".into(), "y".into()],
        parameters: parameters.iter().map(|p| p.to_string()).collect(),
        horizon: 4.0,
        solver: Some(ReferenceMethod::Tsit45),
    };
    let environments: Vec<EnvInfo> = families
        .iter()
        .map(|&f| EnvInfo { family: f, parameters: if f == 0 { vec![1.0] } else { vec![0.5, 2.0] } })
        .collect();
    let splits = ["train", "test", "adapt_train", "adapt_test"]
        .map(|s| SplitInfo {
            split: s.into(),
            file: format!("{s}.npz"),
            shape: vec![],
            environments: environments.clone(),
        })
        .to_vec();
    let manifest = Manifest {
        system: "two-families".into(),
        description: "fuzz fixture".into(),
        seed: 1,
        rtol: 1e-8,
        atol: 1e-10,
        keep_every: 1,
        families: vec![family("a", &["c0"]), family("b", &["c0", "c1"])],
        splits,
    };
    let d = DatasetDir {
        train: split(0.0),
        test: split(1.0),
        adapt_train: split(2.0),
        adapt_test: split(3.0),
        manifest: Some(manifest),
    };
    d.write(dir).unwrap();
}

/// A small field folder with a region map.
fn write_fields(dir: &Path) {
    let set = |runs: usize| FieldSet {
        fields: Array5::from_shape_fn((runs, 3, 4, 4, 1), |(r, k, i, j, _)| (r + k + i * j) as f32 * 0.1),
        dt: 0.5,
    };
    let manifest = FieldManifest {
        name: "fixture".into(),
        description: String::new(),
        grid: [4, 4],
        channels: 1,
        frames: 3,
        dt: 0.5,
        seed: 0,
        runs: SplitRuns { train: 2, val: 1, test: 1 },
        diffusivity: vec![1.0, 2.0],
        parameters: vec![],
        region_source: None,
        region_cells: vec![],
    };
    let regions = Some(Array2::from_shape_fn((4, 4), |(i, _)| usize::from(i >= 2)));
    let d = FieldDir { name: "fixture".into(), train: set(2), val: set(1), test: set(1), regions, manifest };
    d.write(dir).unwrap();
}

/// Applies one random mutation to one random file of `files` inside `dir`.
fn mutate_one(dir: &Path, files: &[&str], rng: &mut ChaCha8Rng) {
    let name = files[rng.random_range(0..files.len())];
    let path = dir.join(name);
    let mut bytes = std::fs::read(&path).unwrap();
    if name.ends_with(".toml") {
        bytes = mutate_toml(&String::from_utf8_lossy(&bytes), rng).into_bytes();
    } else {
        match rng.random_range(0..4) {
            0 => flip_bits(&mut bytes, rng),
            1 => truncate(&mut bytes, rng),
            _ if name.ends_with(".npz") => bytes = mutate_npz_header(&bytes, rng).unwrap_or_default(),
            _ => mutate_npy_header(&mut bytes, rng),
        }
    }
    std::fs::write(&path, bytes).unwrap();
}

#[test]
fn dataset_folders_never_panic() {
    let clean = tempfile::tempdir().unwrap();
    write_dataset(clean.path());
    let loaded = load_dir(clean.path()).unwrap();
    assert_eq!(loaded.train.num_envs(), 6);
    let files = [MANIFEST_FILE, MANIFEST_FILE, "train.npz", "test.npz", "adapt_train.npz", "adapt_test.npz"];
    never_panics("dataset folder", 0.5, |seed| {
        let dir = tempfile::tempdir().unwrap();
        for f in &files[1..] {
            std::fs::copy(clean.path().join(f), dir.path().join(f)).unwrap();
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        mutate_one(dir.path(), &files, &mut rng);
        match load_dir(dir.path()) {
            Ok(d) => {
                // What `mixer inspect` relies on: every environment's family is listed.
                let m = d.manifest.expect("the manifest is still there");
                assert!(m.splits.iter().flat_map(|s| &s.environments).all(|e| e.family < m.families.len()));
                false
            }
            Err(e) => !e.to_string().is_empty(),
        }
    });
}

#[test]
fn manifest_naming_a_missing_family_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path());
    let path = dir.path().join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&path).unwrap().replacen("family = 1", "family = 10", 1);
    std::fs::write(&path, text).unwrap();
    let err = load_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("family 10 but the manifest lists 2 families"), "{err}");
}

#[test]
fn manifest_disagreeing_with_the_arrays_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path());
    let path = dir.path().join(MANIFEST_FILE);
    let mut m = Manifest::read(&path).unwrap();
    m.splits[1].environments.pop();
    m.write(&path).unwrap();
    let err = load_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("split `test` lists 5 environments but its file holds 6"), "{err}");
    m.splits[1].environments.push(EnvInfo { family: 0, parameters: vec![1.0] });
    m.families[0].state.push("z".into());
    m.write(&path).unwrap();
    let err = load_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("family `a` has 3 state variables but the file's state size is 2"), "{err}");
}

#[test]
fn field_folders_never_panic() {
    let clean = tempfile::tempdir().unwrap();
    write_fields(clean.path());
    assert_eq!(load_field_dir(clean.path()).unwrap().train.runs(), 2);
    let files = ["fields.toml", "train.npz", "val.npz", "test.npz", "regions.npy"];
    never_panics("field folder", 0.5, |seed| {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            std::fs::copy(clean.path().join(f), dir.path().join(f)).unwrap();
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        mutate_one(dir.path(), &files, &mut rng);
        match load_field_dir(dir.path()) {
            Ok(d) => {
                let cells = d.regions.as_ref().map(mixer_data::region_cells).unwrap_or_default();
                assert!(cells.len() <= 16);
                false
            }
            Err(e) => !e.to_string().is_empty(),
        }
    });
}

#[test]
fn region_label_beyond_the_cells_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    write_fields(dir.path());
    let map = Array2::from_shape_fn((4, 4), |(i, j)| if (i, j) == (3, 3) { 1 << 40 } else { 0 });
    mixer_data::write_region_map(&dir.path().join("regions.npy"), &map).unwrap();
    let err = load_field_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("region label 1099511627776 at flat index 15"), "{err}");
}

#[test]
fn system_files_never_panic() {
    let texts: Vec<&str> = ["lotka-volterra", "selkov", "odebench-2d", "gray-scott"]
        .iter()
        .map(|n| builtin_text(n).unwrap_or_else(|| panic!("{n} is shipped")))
        .collect();
    never_panics("system file", 0.25, |seed| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let text = mutate_toml(texts[seed as usize % texts.len()], &mut rng);
        DatasetSpec::from_toml(&text).is_err()
    });
}

#[test]
fn control_files_never_panic() {
    let texts = [
        include_str!("../systems/control/pendulum-swingup.toml"),
        include_str!("../systems/control/cartpole-swingup.toml"),
    ];
    never_panics("control system file", 0.25, |seed| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let text = mutate_toml(texts[seed as usize % texts.len()], &mut rng);
        ControlSpec::from_toml(&text).and_then(mixer_data::ControlSystem::from_spec).is_err()
    });
}

#[test]
fn time_series_files_never_panic() {
    let text = "@problemName Tiny\n@timeStamps false\n@classLabel true 0 1\n@data\n1,2,3,4:0.5,0.5,0.5,1:1\n\
                4,5,6,7:1,2,3,4:0\n2,2,2,2:0,0,0,1:1\n";
    assert_eq!(mixer_data::parse_ts(text, Path::new("tiny.ts")).unwrap().values.dim(), (3, 4, 2));
    never_panics("time-series file", 0.25, |seed| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut bytes = text.as_bytes().to_vec();
        if rng.random_bool(0.5) {
            flip_bits(&mut bytes, &mut rng)
        } else {
            truncate(&mut bytes, &mut rng)
        }
        mixer_data::parse_ts(&String::from_utf8_lossy(&bytes), Path::new("tiny.ts")).is_err()
    });
}
