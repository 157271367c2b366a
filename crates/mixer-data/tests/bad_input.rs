//! Every kind of bad input is a clear, specific error.

use std::path::Path;

use mixer_core::{Error, Split};
use mixer_data::{DataError, DatasetSpec, builtin_text, load_dir, load_split, read_npz};
use ndarray::{ArrayD, IxDyn};
use ndarray_npy::NpzWriter;

fn write(path: &Path, arrays: &[(&str, ArrayD<f64>)]) {
    let mut npz = NpzWriter::new(std::fs::File::create(path).unwrap());
    for (k, a) in arrays {
        npz.add_array(*k, a).unwrap();
    }
    npz.finish().unwrap();
}

fn x(shape: &[usize]) -> ArrayD<f64> {
    ArrayD::from_shape_fn(IxDyn(shape), |i: IxDyn| (0..shape.len()).map(|k| i[k]).sum::<usize>() as f64)
}

fn t(n: usize) -> ArrayD<f64> {
    ArrayD::from_shape_fn(IxDyn(&[n]), |i| i[0] as f64 * 0.5)
}

#[test]
fn missing_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("train.npz");
    write(&p, &[("X", x(&[2, 3, 4, 2]))]);
    match read_npz(&p) {
        Err(DataError::MissingKey { key, .. }) => assert_eq!(key, "t"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn wrong_rank_is_reported_with_the_rank() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("train.npz");
    write(&p, &[("X", x(&[3, 4, 2])), ("t", t(4))]);
    assert!(matches!(read_npz(&p), Err(DataError::WrongRank { found: 3, .. })));
    write(&p, &[("X", x(&[2, 3, 4, 2])), ("t", x(&[1, 2, 4]))]);
    assert!(matches!(read_npz(&p), Err(DataError::WrongRank { found: 3, .. })));
}

#[test]
fn nan_is_located() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("train.npz");
    let mut a = x(&[2, 3, 4, 2]);
    a[[1, 0, 2, 1]] = f64::NAN;
    write(&p, &[("X", a), ("t", t(4))]);
    match read_npz(&p) {
        Err(DataError::BadData { source: Error::NonFiniteData { index, .. }, .. }) => assert_eq!(index, 24 + 5),
        other => panic!("{other:?}"),
    }
}

#[test]
fn mismatched_time_grid_length_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("train.npz");
    write(&p, &[("X", x(&[2, 3, 4, 2])), ("t", t(5))]);
    assert!(matches!(read_npz(&p), Err(DataError::BadData { source: Error::ShapeMismatch { .. }, .. })));
    // family layout: one grid per family
    write(&p, &[("X", x(&[2, 3, 1, 4, 2])), ("t", x(&[3, 4]))]);
    assert!(matches!(read_npz(&p), Err(DataError::BadData { source: Error::ShapeMismatch { .. }, .. })));
}

#[test]
fn non_increasing_time_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("train.npz");
    let mut tt = t(4);
    tt[[2]] = 0.5;
    write(&p, &[("X", x(&[2, 3, 4, 2])), ("t", tt)]);
    assert!(matches!(read_npz(&p), Err(DataError::BadData { source: Error::InvalidConfig { .. }, .. })));
}

#[test]
fn family_layout_is_flattened_with_labels() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("train.npz");
    let tt = ArrayD::from_shape_fn(IxDyn(&[2, 4]), |i| (i[0] + 1) as f64 * i[1] as f64);
    write(&p, &[("X", x(&[2, 3, 1, 4, 2])), ("t", tt)]);
    let d = read_npz(&p).unwrap();
    assert_eq!(d.x.dim(), (6, 1, 4, 2));
    assert_eq!(d.families, Some(vec![0, 0, 0, 1, 1, 1]));
    assert_eq!(d.t.for_env(4), &[0.0, 2.0, 4.0, 6.0]);
    assert_eq!(d.x[[4, 0, 3, 1]], (1 + 1 + 3 + 1) as f64);
}

#[test]
fn missing_split_names_folder_and_files() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("train.npz"), &[("X", x(&[2, 3, 4, 2])), ("t", t(4))]);
    write(&dir.path().join("test.npz"), &[("X", x(&[2, 3, 4, 2])), ("t", t(4))]);
    write(&dir.path().join("ood_train.npz"), &[("X", x(&[1, 1, 4, 2])), ("t", t(4))]);
    assert_eq!(load_split(dir.path(), Split::AdaptTrain).unwrap().num_envs(), 1);
    let e = load_dir(dir.path()).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, DataError::MissingSplit { .. }), "{msg}");
    assert!(
        msg.contains("adapt_test.npz")
            && msg.contains("ood_test.npz")
            && msg.contains(&dir.path().display().to_string()),
        "{msg}"
    );
}

#[test]
fn bad_system_file_fields_are_named() {
    let lv = builtin_text("lotka-volterra").unwrap();
    let cases = [
        ("rhs = [\"a*x - b*x*y\", \"d*x*y - g*y\"]", "rhs = [\"a*x\"]", "rhs"),
        ("horizon = 10.0", "horizon = -1.0", "horizon"),
        ("points = 20", "points = 1", "points"),
        ("high = [2.0, 2.0]", "high = [2.0]", "initial"),
        ("{ name = \"b\", value = 0.75 }", "{ name = \"a\", value = 0.75 }", "state/parameters"),
        ("{ name = \"d\", values = [0.5", "{ name = \"zz\", values = [0.5", "environments.train"),
    ];
    for (from, to, field) in cases {
        assert!(lv.contains(from), "{from}");
        match DatasetSpec::from_toml(&lv.replacen(from, to, 1)) {
            Err(DataError::BadSpec { field: f, .. }) => assert_eq!(f, field, "{to}"),
            other => panic!("{to}: {other:?}"),
        }
    }
    // a missing required field and an unknown field are TOML errors naming the field
    let e = DatasetSpec::from_toml(&lv.replacen("horizon = 10.0", "", 1)).unwrap_err().to_string();
    assert!(e.contains("horizon"), "{e}");
    let e = DatasetSpec::from_toml(&lv.replacen("points = 20", "points = 20\npoint = 3", 1)).unwrap_err().to_string();
    assert!(e.contains("point"), "{e}");
}
