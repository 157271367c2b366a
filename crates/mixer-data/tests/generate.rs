//! Generated datasets: shapes of the MixER paper, determinism, round trip through the folder layout.

use indicatif::ProgressBar;
use mixer_core::{Split, TimeGrid};
use mixer_data::{DatasetSpec, GenerateOptions, generate, load_dir};

#[test]
fn lotka_volterra_shapes_determinism_and_round_trip() {
    let spec = DatasetSpec::builtin("lotka-volterra").unwrap();
    let d = generate(&spec, &GenerateOptions::new(7), &ProgressBar::hidden()).unwrap();
    assert_eq!(d.train.x.dim(), (9, 4, 20, 2));
    assert_eq!(d.test.x.dim(), (9, 32, 20, 2));
    assert_eq!(d.adapt_train.x.dim(), (4, 1, 20, 2));
    assert_eq!(d.adapt_test.x.dim(), (4, 32, 20, 2));
    let TimeGrid::Shared(t) = &d.train.t else { panic!("LV has one shared grid") };
    assert_eq!(t.len(), 20);
    assert!((t[19] - 9.5).abs() < 1e-12);
    // initial states are the U(1, 2)^2 draws
    assert!(d.test.x.slice(ndarray::s![.., .., 0, ..]).iter().all(|v| (1.0..=2.0).contains(v)));
    // Lotka–Volterra conserves V = d x - g ln x + b y - a ln y along each trajectory.
    let m = d.manifest.as_ref().unwrap();
    for (e, env) in m.split("train").unwrap().environments.iter().enumerate() {
        let [a, b, dd, g] = env.parameters[..] else { panic!() };
        let v = |k: usize| {
            let (x, y) = (d.train.x[[e, 0, k, 0]], d.train.x[[e, 0, k, 1]]);
            dd * x - g * x.ln() + b * y - a * y.ln()
        };
        let drift = (0..20).map(|k| (v(k) - v(0)).abs()).fold(0.0, f64::max);
        assert!(drift < 1e-7, "env {e}: invariant drifts by {drift:e}");
    }

    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    d.write(&a).unwrap();
    generate(&spec, &GenerateOptions { threads: 1, ..GenerateOptions::new(7) }, &ProgressBar::hidden())
        .unwrap()
        .write(&b)
        .unwrap();
    for f in ["train.npz", "test.npz", "adapt_train.npz", "adapt_test.npz", "dataset.toml"] {
        assert_eq!(std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap(), "{f} differs between runs");
    }
    let other = generate(&spec, &GenerateOptions::new(8), &ProgressBar::hidden()).unwrap();
    assert_ne!(other.train.x, d.train.x, "another seed draws other initial states");

    let back = load_dir(&a).unwrap();
    assert_eq!(back.train, d.train);
    assert_eq!(back.adapt_test, d.adapt_test);
    let man = back.manifest.unwrap();
    assert_eq!(man.split("adapt_train").unwrap().shape, vec![4, 1, 20, 2]);
    assert_eq!(man.split("adapt_train").unwrap().environments[3].parameters, vec![0.5, 1.125, 1.125, 0.5]);
    assert_eq!(man.rtol, 1e-8);
}

#[test]
fn odebench_2d_has_the_published_shapes() {
    let spec = DatasetSpec::builtin("odebench-2d").unwrap();
    let start = std::time::Instant::now();
    let d = generate(&spec, &GenerateOptions::new(0), &ProgressBar::hidden()).unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(d.train.x.dim(), (160, 4, 100, 2));
    assert_eq!(d.adapt_test.x.dim(), (40, 32, 100, 2));
    assert_eq!(d.train.families.as_ref().unwrap()[17], 1);
    // the reference initial conditions lead the train split
    assert_eq!(d.train.x[[0, 0, 0, 0]], 0.4);
    assert_eq!(d.train.x[[0, 1, 0, 1]], 0.2);
    assert!((d.train.t.for_env(16)[99] - 8.0 * 0.99).abs() < 1e-12);
    let dir = tempfile::tempdir().unwrap();
    d.write(dir.path()).unwrap();
    let m = load_dir(dir.path()).unwrap().manifest.unwrap();
    assert_eq!(m.split("train").unwrap().shape, vec![10, 16, 4, 100, 2]);
    assert_eq!(m.split("test").unwrap().shape, vec![10, 16, 32, 100, 2]);
    assert_eq!(m.split("adapt_train").unwrap().shape, vec![10, 4, 1, 100, 2]);
    assert_eq!(m.split("adapt_test").unwrap().shape, vec![10, 4, 32, 100, 2]);
    assert_eq!(m.families.len(), 10);
    let t = mixer_data::load_split(dir.path(), Split::Train).unwrap();
    assert_eq!(t.families, d.train.families);
    eprintln!("odebench-2d generated in {secs:.1} s");
}

#[test]
fn observation_noise_reaches_the_training_splits_only_at_its_level() {
    let text = mixer_data::builtin_text("lorenz63-chaotic").unwrap();
    let noisy = DatasetSpec::from_toml(text).unwrap();
    let clean = DatasetSpec::from_toml(&text.replace("noise = 0.05", "noise = 0.0")).unwrap();
    let options = GenerateOptions::new(3);
    let (a, b) = (
        generate(&noisy, &options, &ProgressBar::hidden()).unwrap(),
        generate(&clean, &options, &ProgressBar::hidden()).unwrap(),
    );
    assert_eq!(a.train.x.dim(), (4, 4, 100, 3));
    assert_eq!((a.test.x.clone(), a.adapt_test.x.clone()), (b.test.x.clone(), b.adapt_test.x.clone()));
    // Residual spread over clean spread, pooled over every series of the training split: 0.05.
    let (mut ratio, mut count) = (0.0, 0.0);
    for e in 0..4 {
        for n in 0..4 {
            for d in 0..3 {
                let series = b.train.x.slice(ndarray::s![e, n, .., d]);
                let residual = &a.train.x.slice(ndarray::s![e, n, .., d]) - &series;
                let std = |v: ndarray::ArrayView1<f64>| v.std(0.0);
                ratio += std(residual.view()) / std(series);
                count += 1.0;
            }
        }
    }
    assert!((ratio / count - 0.05).abs() < 0.005, "noise level {}", ratio / count);
    assert_ne!(a.adapt_train.x, b.adapt_train.x);
    let err = DatasetSpec::from_toml(&text.replace("noise = 0.05", "noise = -1.0")).unwrap_err().to_string();
    assert!(err.contains("noise") && err.contains("finite number >= 0"), "{err}");
}
