//! The heat-regions benchmark and field dataset folders: the stencil against hand-computed
//! values, heat lost through the boundary, shapes, determinism, bounds, region maps, the npz round
//! trip, every bad input, and reaction–diffusion datasets reshaped to fields.

use std::path::Path;

use indicatif::ProgressBar;
use mixer_core::{Dataset, Seeds, TimeGrid};
use mixer_data::{
    DataError, DatasetSpec, FieldDir, FieldSet, GenerateOptions, HeatRegionsSpec, builtin_system,
    field_set_from_grid_dataset, generate, generate_heat_regions, generate_heat_regions_grown, grow_region_map,
    heat_step, is_field_dir, load_field_dir, read_region_map, region_cells, write_field_npz,
};
use ndarray::{Array2, Array4, Array5, array};

/// A small spec: 8 x 8 grid, 6 frames, 3 / 2 / 2 runs.
fn tiny() -> HeatRegionsSpec {
    HeatRegionsSpec { size: 8, frames: 6, train_runs: 3, val_runs: 2, test_runs: 2, ..HeatRegionsSpec::quick() }
}

/// Share of 4-neighbour pairs of cells that lie in the same region.
fn same_region_pairs(map: &Array2<usize>) -> f64 {
    let (h, w) = map.dim();
    let (mut same, mut all) = (0usize, 0usize);
    for i in 0..h {
        for j in 0..w {
            for (a, b) in [(i + 1, j), (i, j + 1)] {
                if a < h && b < w {
                    all += 1;
                    same += usize::from(map[[i, j]] == map[[a, b]]);
                }
            }
        }
    }
    same as f64 / all as f64
}

#[test]
fn heat_step_matches_hand_computed_values() {
    // a unit spike, D = 0.1 everywhere: centre 1 + 0.1 (0 - 4) = 0.6, edge midpoints 0.1, corners 0
    let u = array![[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]];
    let d = Array2::from_elem((3, 3), 0.1);
    let next = heat_step(u.view(), d.view());
    let want = array![[0.0, 0.1, 0.0], [0.1, 0.6, 0.1], [0.0, 0.1, 0.0]];
    for (a, b) in next.iter().zip(&want) {
        assert!((a - b).abs() < 1e-15, "{next:?}");
    }
    // non-uniform D: (0,0): 1 + 0.1 (2 + 4 - 4) = 1.2; (1,1): 5 + 0.2 (2 + 4 + 6 + 8 - 20) = 5;
    // (2,2): 9 + 0.25 (6 + 8 - 36) = 3.5; cells with D = 0 keep their values
    let u = array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]];
    let d = array![[0.1, 0.0, 0.0], [0.0, 0.2, 0.0], [0.0, 0.0, 0.25]];
    let next = heat_step(u.view(), d.view());
    let want = array![[1.2, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 3.5]];
    for (a, b) in next.iter().zip(&want) {
        assert!((a - b).abs() < 1e-14, "{next:?}");
    }
}

#[test]
fn heat_lost_equals_the_flux_through_the_zero_boundary() {
    let mut rng = Seeds::new(3).stream("field");
    let u = Array2::from_shape_fn((7, 5), |_| rand::Rng::random::<f64>(&mut rng));
    let dd = 0.2;
    let next = heat_step(u.view(), Array2::from_elem((7, 5), dd).view());
    // each cell loses D u per side that faces the outside (where the value is zero)
    let outside =
        |i: usize, j: usize| usize::from(i == 0) + usize::from(i == 6) + usize::from(j == 0) + usize::from(j == 4);
    let flux: f64 = u.indexed_iter().map(|((i, j), v)| dd * v * outside(i, j) as f64).sum();
    let change = next.sum() - u.sum();
    assert!((change + flux).abs() < 1e-12, "change {change}, boundary flux {flux}");
    // an interior point follows the formula
    let (i, j) = (3, 2);
    let lap = u[[i - 1, j]] + u[[i + 1, j]] + u[[i, j - 1]] + u[[i, j + 1]] - 4.0 * u[[i, j]];
    assert!((next[[i, j]] - (u[[i, j]] + dd * lap)).abs() < 1e-15);
    // and a non-square, non-contiguous view gives the same values as the owned array
    let t = u.t().to_owned();
    let next_t = heat_step(u.t(), Array2::from_elem((5, 7), dd).view());
    assert_eq!(next_t, heat_step(t.view(), Array2::from_elem((5, 7), dd).view()));
    // (the transpose sums the neighbours in another order: equal to rounding)
    assert!(next_t.iter().zip(next.t()).all(|(a, b)| (a - b).abs() < 1e-15));
}

#[test]
fn generated_shapes_manifest_and_bounds() {
    let spec = tiny();
    let d = generate_heat_regions_grown(&spec, 5).unwrap();
    assert_eq!(d.train.fields.dim(), (3, 6, 8, 8, 1));
    assert_eq!(d.val.fields.dim(), (2, 6, 8, 8, 1));
    assert_eq!(d.test.fields.dim(), (2, 6, 8, 8, 1));
    assert_eq!((d.test.runs(), d.test.frames(), d.test.grid(), d.test.channels()), (2, 6, (8, 8), 1));
    assert_eq!(d.train.dt, 1.0);
    let m = &d.manifest;
    assert_eq!((m.name.as_str(), m.grid, m.channels, m.frames, m.seed), ("heat-regions", [8, 8], 1, 6, 5));
    assert_eq!((m.runs.train, m.runs.val, m.runs.test), (3, 2, 2));
    assert_eq!(m.region_source.as_deref(), Some("grown (seed 5)"));
    assert_eq!(m.region_cells.iter().sum::<usize>(), 64);
    assert_eq!(m.region_cells, region_cells(d.regions.as_ref().unwrap()));
    // the first frame is noise in [0, 0.1] plus 1..=3 unit sources per region; later frames
    // follow the explicit update exactly (in f64, stored as f32)
    let map = d.regions.as_ref().unwrap();
    let dmap = map.mapv(|r| spec.diffusivity[r]);
    for (_, set) in d.splits() {
        for run in set.fields.outer_iter() {
            let first = run.index_axis(ndarray::Axis(0), 0);
            for (r, &cells) in region_cells(map).iter().enumerate() {
                let ones = first.indexed_iter().filter(|((i, j, _), v)| map[[*i, *j]] == r && **v == 1.0).count();
                assert!((1..=3.min(cells)).contains(&ones), "region {r}: {ones} sources");
            }
            assert!(first.iter().all(|v| *v == 1.0 || (0.0..=0.1).contains(v)));
            let u0 = first.index_axis(ndarray::Axis(2), 0).mapv(f64::from);
            let u1 = heat_step(u0.view(), dmap.view());
            let stored = run.index_axis(ndarray::Axis(0), 1).index_axis(ndarray::Axis(2), 0).to_owned();
            // frame 0 is stored from f64 values that are not all f32-exact, so compare loosely
            for (a, b) in stored.iter().zip(&u1) {
                assert!((f64::from(*a) - b).abs() < 1e-6);
            }
        }
    }
}

#[test]
fn same_seed_same_fields_other_seed_other_fields() {
    let spec = tiny();
    let a = generate_heat_regions_grown(&spec, 11).unwrap();
    let b = generate_heat_regions_grown(&spec, 11).unwrap();
    let c = generate_heat_regions_grown(&spec, 12).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.train.fields, c.train.fields);
    assert_ne!(a.regions, c.regions);
    // with the map held fixed, only the seed changes the runs
    let map = a.regions.clone().unwrap();
    let x = generate_heat_regions(&spec, &map, 1).unwrap();
    let y = generate_heat_regions(&spec, &map, 2).unwrap();
    assert_eq!(x.regions, y.regions);
    assert_ne!(x.test.fields, y.test.fields);
    assert_eq!(x.manifest.region_source.as_deref(), Some("supplied"));
}

#[test]
fn quick_profile_is_finite_and_bounded() {
    let spec = HeatRegionsSpec::quick();
    assert_eq!((spec.size, spec.frames, spec.train_runs, spec.val_runs, spec.test_runs), (64, 101, 48, 8, 8));
    let paper = HeatRegionsSpec::paper();
    assert_eq!((paper.size, paper.frames, paper.train_runs, paper.val_runs, paper.test_runs), (64, 101, 1000, 20, 20));
    assert_eq!(paper.diffusivity, vec![0.0025, 0.025, 0.25]);
    assert_eq!(HeatRegionsSpec::default(), paper);
    let d = generate_heat_regions_grown(&spec, 0).unwrap();
    assert_eq!(d.train.fields.dim(), (48, 101, 64, 64, 1));
    for (name, set) in d.splits() {
        for (k, v) in set.fields.iter().enumerate() {
            assert!(v.is_finite() && (0.0..=1.1).contains(v), "{name}: value {v} at flat index {k}");
        }
        // the update with D(x) per cell is not conservative across region borders (the total can
        // grow), but with D <= 1/4 every new value is a convex mix of old ones and zero, so the
        // largest value never grows
        for run in set.fields.outer_iter() {
            let peaks: Vec<f32> = run.outer_iter().map(|f| f.iter().copied().fold(0.0, f32::max)).collect();
            assert!(peaks.windows(2).all(|w| w[1] <= w[0]), "{name}: {peaks:?}");
        }
    }
}

#[test]
fn grown_maps_fill_every_region_in_patches() {
    for seed in 0..8 {
        let mut rng = Seeds::new(seed).stream("map");
        let map = grow_region_map(64, 3, &mut rng);
        let cells = region_cells(&map);
        assert_eq!(cells.len(), 3, "seed {seed}");
        assert!(cells.iter().all(|c| *c > 4096 / 5), "seed {seed}: unbalanced {cells:?}");
        let same = same_region_pairs(&map);
        assert!(same > 0.7, "seed {seed}: only {same:.3} of neighbour pairs share a region");
        let mut rng = Seeds::new(seed).stream("map");
        assert_eq!(map, grow_region_map(64, 3, &mut rng), "seed {seed}: not deterministic");
    }
    // small and odd cases: every region still present
    let mut rng = Seeds::new(1).stream("map");
    assert_eq!(region_cells(&grow_region_map(3, 9, &mut rng)), vec![1; 9]);
    assert_eq!(region_cells(&grow_region_map(5, 1, &mut rng)), vec![25]);
}

#[test]
fn published_map_reads_and_drives_the_generator() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/heat-regions/mask.npy");
    if !path.is_file() {
        println!("skipping: {} is not there", path.display());
        return;
    }
    let map = read_region_map(&path).unwrap();
    assert_eq!(map.dim(), (64, 64));
    assert_eq!(region_cells(&map), vec![1449, 1212, 1435]);
    let published = same_region_pairs(&map);
    let mut rng = Seeds::new(0).stream("map");
    let grown = same_region_pairs(&grow_region_map(64, 3, &mut rng));
    println!("share of neighbour pairs in one region: published {published:.3}, grown {grown:.3}");
    // the published map is patchy but noisier than grown ones (0.608 of pairs; 1/3 if random)
    assert!(published > 0.5 && grown > 0.7);
    let spec = HeatRegionsSpec { train_runs: 2, val_runs: 1, test_runs: 1, frames: 3, ..HeatRegionsSpec::quick() };
    let d = generate_heat_regions(&spec, &map, 0).unwrap();
    assert_eq!(d.manifest.region_cells, vec![1449, 1212, 1435]);
}

#[test]
fn folder_round_trip_is_bit_exact() {
    let d = generate_heat_regions_grown(&tiny(), 4).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("heat");
    assert!(!is_field_dir(&out));
    d.write(&out).unwrap();
    assert!(is_field_dir(&out));
    for f in ["train.npz", "val.npz", "test.npz", "regions.npy", "fields.toml"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let back = load_field_dir(&out).unwrap();
    for ((_, a), (_, b)) in d.splits().into_iter().zip(back.splits()) {
        assert_eq!(a.fields.dim(), b.fields.dim());
        assert!(a.fields.iter().zip(&b.fields).all(|(x, y)| x.to_bits() == y.to_bits()));
        assert_eq!(a.dt.to_bits(), b.dt.to_bits());
    }
    assert_eq!(back.regions, d.regions);
    assert_eq!(back.manifest, d.manifest);
    assert_eq!(back, d);
    // the region map is stored as int64 and reads back through the public reader
    assert_eq!(read_region_map(&out.join("regions.npy")).unwrap(), d.regions.clone().unwrap());
    // writing again without a map removes the stale map file
    let plain = FieldDir { regions: None, ..d.clone() };
    plain.write(&out).unwrap();
    assert!(!out.join("regions.npy").exists());
    let back = load_field_dir(&out).unwrap();
    assert_eq!((back.regions, back.manifest.region_source), (None, None));
}

#[test]
fn region_map_shape_and_count_errors() {
    let spec = tiny();
    match generate_heat_regions(&spec, &Array2::zeros((8, 7)), 0) {
        Err(DataError::RegionShape { grid, found }) => assert_eq!((grid, found), ([8, 8], [8, 7])),
        other => panic!("{other:?}"),
    }
    let mut map = Array2::zeros((8, 8));
    map[[2, 3]] = 4;
    match generate_heat_regions(&spec, &map, 0) {
        Err(e @ DataError::TooManyRegions { .. }) => {
            assert!(matches!(e, DataError::TooManyRegions { regions: 5, values: 3 }));
            assert_eq!(e.to_string(), "region map has 5 regions but only 3 diffusivity values are given");
        }
        other => panic!("{other:?}"),
    }
    // a folder whose map disagrees with its grid does not load
    let d = generate_heat_regions_grown(&spec, 0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    d.write(dir.path()).unwrap();
    mixer_data::write_region_map(&dir.path().join("regions.npy"), &Array2::zeros((4, 4))).unwrap();
    assert!(matches!(load_field_dir(dir.path()), Err(DataError::RegionShape { .. })));
    // and a folder cannot be written with one
    let bad = FieldDir { regions: Some(Array2::zeros((4, 4))), ..d };
    assert!(matches!(bad.write(&dir.path().join("x")), Err(DataError::RegionShape { .. })));
}

#[test]
fn region_map_files_accept_int_types_and_reject_others() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.npy");
    let want = Array2::from_shape_fn((4, 5), |(i, j)| (i + j) % 3);
    ndarray_npy::write_npy(&p, &want.mapv(|v| v as i32)).unwrap();
    assert_eq!(read_region_map(&p).unwrap(), want);
    ndarray_npy::write_npy(&p, &want.mapv(|v| v as u8)).unwrap();
    assert_eq!(read_region_map(&p).unwrap(), want);
    ndarray_npy::write_npy(&p, &want.mapv(|v| v as i64)).unwrap();
    assert_eq!(read_region_map(&p).unwrap(), want);
    ndarray_npy::write_npy(&p, &want.mapv(|v| v as f64)).unwrap();
    assert!(matches!(read_region_map(&p), Err(DataError::Npz { .. })));
    let mut neg = want.mapv(|v| v as i64);
    neg[[1, 2]] = -1;
    ndarray_npy::write_npy(&p, &neg).unwrap();
    match read_region_map(&p) {
        Err(DataError::BadRegionLabel { label, index, .. }) => assert_eq!((label, index), (-1, 7)),
        other => panic!("{other:?}"),
    }
    ndarray_npy::write_npy(&p, &ndarray::Array1::<i64>::zeros(4)).unwrap();
    assert!(matches!(read_region_map(&p), Err(DataError::WrongRank { found: 1, .. })));
    assert!(matches!(read_region_map(&dir.path().join("none.npy")), Err(DataError::MissingFile { .. })));
}

#[test]
fn non_finite_values_are_located_on_load() {
    let d = generate_heat_regions_grown(&tiny(), 0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    d.write(dir.path()).unwrap();
    let mut bad = d.val.clone();
    bad.fields[[1, 4, 2, 3, 0]] = f32::NAN;
    write_field_npz(&dir.path().join("val.npz"), &bad).unwrap();
    match load_field_dir(dir.path()) {
        Err(e @ DataError::NonFiniteField { .. }) => {
            let DataError::NonFiniteField { run, frame, index, .. } = &e else { unreachable!() };
            assert_eq!((*run, *frame, *index), (1, 4, 6 * 64 + 4 * 64 + 2 * 8 + 3));
            assert!(e.to_string().contains("val.npz"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn small_grids_and_single_frames_are_rejected() {
    let spec = HeatRegionsSpec { size: 2, ..tiny() };
    assert!(matches!(spec.check(), Err(DataError::GridTooSmall { rows: 2, cols: 2 })));
    assert!(matches!(generate_heat_regions_grown(&spec, 0), Err(DataError::GridTooSmall { .. })));
    let spec = HeatRegionsSpec { frames: 1, ..tiny() };
    assert!(matches!(spec.check(), Err(DataError::TooFewFrames { frames: 1 })));
    let set = FieldSet { fields: Array5::zeros((1, 3, 8, 2, 1)), dt: 1.0 };
    assert!(matches!(set.check("x"), Err(DataError::GridTooSmall { rows: 8, cols: 2 })));
    // a stored split with one frame does not load
    let d = generate_heat_regions_grown(&tiny(), 0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    d.write(dir.path()).unwrap();
    let one = FieldSet { fields: d.test.fields.slice(ndarray::s![.., ..1, .., .., ..]).to_owned(), dt: 1.0 };
    write_field_npz(&dir.path().join("test.npz"), &one).unwrap();
    assert!(matches!(load_field_dir(dir.path()), Err(DataError::TooFewFrames { frames: 1 })));
    // other bad settings are named
    for (bad, field) in [
        (HeatRegionsSpec { diffusivity: vec![0.3], ..tiny() }, "diffusivity"),
        (HeatRegionsSpec { diffusivity: vec![], ..tiny() }, "diffusivity"),
        (HeatRegionsSpec { sources: (3, 1), ..tiny() }, "sources"),
        (HeatRegionsSpec { noise: f64::NAN, ..tiny() }, "noise"),
        (HeatRegionsSpec { val_runs: 0, ..tiny() }, "val_runs"),
    ] {
        match bad.check() {
            Err(DataError::BadSpec { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
}

#[test]
fn missing_files_are_named() {
    let d = generate_heat_regions_grown(&tiny(), 0).unwrap();
    for (file, what) in [("val.npz", "split `val`"), ("regions.npy", "region map"), ("fields.toml", "field manifest")] {
        let dir = tempfile::tempdir().unwrap();
        d.write(dir.path()).unwrap();
        std::fs::remove_file(dir.path().join(file)).unwrap();
        match load_field_dir(dir.path()) {
            Err(e @ DataError::MissingFile { .. }) => {
                let DataError::MissingFile { path, what: w } = &e else { unreachable!() };
                assert_eq!((path.file_name().unwrap().to_str().unwrap(), w.as_str()), (file, what));
                assert!(e.to_string().ends_with(&format!("missing {what}")), "{e}");
            }
            other => panic!("{file}: {other:?}"),
        }
    }
}

#[test]
fn spec_toml_defaults_and_unknown_fields() {
    let spec: HeatRegionsSpec = toml::from_str("train_runs = 5\nsources = [2, 2]").unwrap();
    assert_eq!(spec, HeatRegionsSpec { train_runs: 5, sources: (2, 2), ..HeatRegionsSpec::paper() });
    assert!(toml::from_str::<HeatRegionsSpec>("sizes = 3").is_err());
    assert_eq!(HeatRegionsSpec::profile("quick").unwrap(), HeatRegionsSpec::quick());
    assert!(HeatRegionsSpec::profile("huge").is_err());
}

#[test]
fn grid_dataset_reshapes_species_major_state_into_channels() {
    let system = builtin_system("gray-scott").unwrap();
    let spec = system.spec().clone();
    let n = spec.grid.as_ref().unwrap().size;
    let cells = n * n;
    // state entry d = s * cells + i * n + j holds 1000 s + 10 i + j / 100 + environment and trajectory
    let x = Array4::from_shape_fn((2, 3, 4, 2 * cells), |(e, t, k, d)| {
        let (s, c) = (d / cells, d % cells);
        (1000 * s + 10 * (c / n)) as f64 + (c % n) as f64 / 100.0 + 1e5 * e as f64 + 1e4 * t as f64 + k as f64 / 8.0
    });
    let data = Dataset::new(x, TimeGrid::Shared(vec![0.0, 0.5, 1.0, 1.5]), None).unwrap();
    let set = field_set_from_grid_dataset(&spec, &data).unwrap();
    assert_eq!(set.fields.dim(), (6, 4, n, n, 2));
    assert_eq!(set.dt, 0.5);
    let (e, t, k, i, j, s) = (1, 2, 3, 5, 7, 1);
    let want = (1000 * s + 10 * i) as f64 + j as f64 / 100.0 + 1e5 * e as f64 + 1e4 * t as f64 + k as f64 / 8.0;
    assert_eq!(set.fields[[e * 3 + t, k, i, j, s]], want as f32);
    // uneven time grids and systems without a grid are refused
    let uneven = Dataset::new(data.x.clone(), TimeGrid::Shared(vec![0.0, 0.5, 1.5, 2.0]), None).unwrap();
    assert!(field_set_from_grid_dataset(&spec, &uneven).is_err());
    let lv = builtin_system("lotka-volterra").unwrap();
    assert!(matches!(field_set_from_grid_dataset(lv.spec(), &data), Err(DataError::BadSpec { .. })));
}

#[test]
fn generated_reaction_diffusion_data_become_fields() {
    for name in ["gray-scott", "brusselator"] {
        let text = mixer_data::builtin_text(name)
            .unwrap()
            .replace("size = 16", "size = 4")
            .replace("points = 20", "points = 4");
        let spec = DatasetSpec::from_toml(&text).unwrap();
        let data = generate(&spec, &GenerateOptions::new(0), &ProgressBar::hidden()).unwrap();
        let system = spec.members[0].spec();
        let set = field_set_from_grid_dataset(system, &data.train).unwrap();
        let (envs, trajs, steps, _) = data.train.x.dim();
        assert_eq!(set.fields.dim(), (envs * trajs, steps, 4, 4, 2));
        // channel s of the first frame holds the uniform draws of species s
        let mixer_data::InitialRule::Uniform { low, high } = &system.initial else { panic!("{name}: uniform rule") };
        for s in 0..2 {
            let first = set.fields.slice(ndarray::s![.., 0, .., .., s]);
            assert!(first.iter().all(|v| (low[s] as f32..=high[s] as f32).contains(v)), "{name}: species {s}");
        }
    }
}
