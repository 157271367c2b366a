//! End-to-end checks of the training loop on two small families with known dynamics.

use burn::backend::{Autodiff, NdArray};
use mixer_core::{ContextModel, Dataset, Seeds, TimeGrid};
use mixer_experts::ExpertConfig;
use mixer_ode::{FnSystem, ReferenceMethod, ReferenceSolver, SolverConfig};
use mixer_routers::{ClusterCount, EmptyCluster, KMeansInit, Matching, Refit};
use mixer_train::{
    AdaBeliefConfig, AdaptConfig, AdaptMode, ContextStart, DataOptions, KMeansSettings, LossScale, MixerModel,
    ModelConfig, Reseat, RouterConfig, RunConfig, Segments, SubsetRule, TrainConfig, TrainError, Trainer, adapt,
    assignment, evaluate, reseat_moves,
};
use ndarray::Array4;

type B = Autodiff<NdArray<f64>>;

/// Model initialisation seeds the backend's global RNG (`Backend::seed`), so tests that build
/// trainers take this lock: run concurrently, their draws would interleave.
static BACKEND_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Rotations `x' = w y, y' = -w x` (family 0) and decays `x' = -a x, y' = -a y` (family 1).
fn data(trajs: usize, params: &[(usize, f64)]) -> Dataset {
    let times: Vec<f64> = (0..10).map(|k| 0.2 * k as f64).collect();
    let solver = ReferenceSolver::new(ReferenceMethod::Tsit45, 1e-9, 1e-11);
    let mut x = Array4::zeros((params.len(), trajs, times.len(), 2));
    for (e, &(fam, p)) in params.iter().enumerate() {
        let sys = FnSystem::new(2, move |_t, s: &[f64], d: &mut [f64]| {
            if fam == 0 {
                d[0] = p * s[1];
                d[1] = -p * s[0];
            } else {
                d[0] = -p * s[0];
                d[1] = -p * s[1];
            }
        });
        for j in 0..trajs {
            let y0 = [1.0 + 0.3 * j as f64, -0.5 + 0.2 * j as f64];
            let sol = solver.solve(&sys, &y0, &times).unwrap();
            for k in 0..times.len() {
                x[[e, j, k, 0]] = sol[2 * k];
                x[[e, j, k, 1]] = sol[2 * k + 1];
            }
        }
    }
    let fams = params.iter().map(|p| p.0).collect();
    Dataset::new(x, TimeGrid::Shared(times), Some(fams)).unwrap()
}

fn train_params() -> Vec<(usize, f64)> {
    vec![(0, 1.0), (0, 1.1), (0, 1.2), (1, 0.5), (1, 0.6), (1, 0.7)]
}

fn config(outer: usize) -> RunConfig {
    RunConfig {
        model: ModelConfig {
            experts: 2,
            context_dim: 4,
            expert: ExpertConfig::Geps { width: 16, depth: 2 },
            rollout: Default::default(),
        },
        router: RouterConfig::KmeansLs(KMeansSettings {
            max_kmeans: 20,
            tol: 1e-4,
            init: KMeansInit::KMeansPlusPlus,
            empty: EmptyCluster::Reseed,
            clusters: ClusterCount::Experts,
            matching: Matching::Greedy,
            ls_noise: 1e-4,
            restarts: 2,
        }),
        train: TrainConfig {
            outer_steps: outer,
            context_steps: 4,
            model_steps: 4,
            lr_model: 1e-2,
            lr_context: 1e-2,
            lr_drop_factor: 0.4,
            lr_drop_at: vec![1.0 / 3.0, 2.0 / 3.0],
            proximal_beta: 10.0,
            subset_size: 4,
            subsets: SubsetRule::Nearest,
            loss_scale: LossScale::Absolute,
            self_reweight: true,
            gate_update_every: 2,
            gate_loss_trajs: None,
            checkpoint_every: 3,
            context_l1: 1e-3,
            window_fraction: 0.6,
            segments: None,
            reseat: None,
            context_pool: 0,
            optimizer: AdaBeliefConfig::paper(),
            solver: SolverConfig::Rk4 { substeps: 1 },
        },
        adapt: AdaptConfig { steps: 20, lr: 1e-2, init: ContextStart::Zeros },
        data: DataOptions { subsample: 1 },
    }
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("mixer-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn contexts(t: &Trainer<B>) -> Vec<f64> {
    mixer_core::host::to_vec(t.model.contexts.contexts())
}

#[test]
fn trains_checkpoints_and_resumes_deterministically() {
    let _serial = BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let device = Default::default();
    let train = data(2, &train_params());
    let straight = tmp("straight");
    let mut a = Trainer::<B>::new(config(6), train.clone(), Seeds::new(7), &straight, true, &device)
        .unwrap()
        .with_progress(false);
    a.run().unwrap();
    let first = a.state.history.first().unwrap().model_loss;
    let last = a.state.history.last().unwrap().model_loss;
    assert!(last < first, "model loss went from {first} to {last}");
    assert!(a.state.gate_updates + a.state.skipped_gate_updates > 0, "gate refits happen");
    assert!(straight.join("best").join("model.safetensors").exists());
    assert!(straight.join("checkpoints").join("step-000006").join("state.json").exists());
    let leftovers: Vec<_> = std::fs::read_dir(straight.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "no partial checkpoints left: {leftovers:?}");

    // stop after 3 outer steps, resume in a new trainer, finish: same result as straight through
    let split = tmp("split");
    let mut b =
        Trainer::<B>::new(config(6), train.clone(), Seeds::new(7), &split, true, &device).unwrap().with_progress(false);
    b.run_until(3).unwrap();
    assert_eq!(b.state.outer_done, 3);
    drop(b);
    let mut c =
        Trainer::<B>::new(config(6), train.clone(), Seeds::new(7), &split, true, &device).unwrap().with_progress(false);
    assert_eq!(c.state.outer_done, 3, "resumed from the checkpoint");
    c.run().unwrap();
    let (ca, cc) = (contexts(&a), contexts(&c));
    let diff = ca.iter().zip(&cc).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    assert!(diff < 1e-12, "resumed run differs by {diff}");

    // a different config in the same folder is refused
    let mut other = config(6);
    other.train.lr_model = 5e-3;
    assert!(Trainer::<B>::new(other, train.clone(), Seeds::new(7), &split, true, &device).is_err());

    // adaptation fits contexts of new environments and improves on zero contexts
    let new = data(1, &[(0, 1.05), (1, 0.55)]);
    let zero = mixer_core::host::tensor2::<NdArray<f64>>(&[0.0; 8], [2, 4], &device);
    let integ = SolverConfig::Rk4 { substeps: 1 }.build::<NdArray<f64>>().unwrap();
    let valid = burn::module::AutodiffModule::valid(&a.model);
    let (before, _) = evaluate(&valid.theta, integ.as_ref(), zero, &new).unwrap();
    let fitted = adapt(&a.model, &a.config, &new, AdaptMode::Bulk, &Seeds::new(7), &device).unwrap();
    let (after, _) = evaluate(&valid.theta, integ.as_ref(), fitted, &new).unwrap();
    assert!(after.mse.mean < before.mse.mean, "adaptation: {} -> {}", before.mse.mean, after.mse.mean);
    let seq = adapt(&a.model, &a.config, &new, AdaptMode::Sequential, &Seeds::new(7), &device).unwrap();
    assert_eq!(seq.dims(), [2, 4]);
    for d in [straight, split] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn bad_configs_are_clear_errors() {
    let device = Default::default();
    let train = data(1, &train_params()[..1]);
    let dir = tmp("bad");
    let err = Trainer::<B>::new(config(1), train.clone(), Seeds::new(1), &dir, false, &device).err().unwrap();
    assert!(err.to_string().contains("2 experts but only 1 training environments"), "{err}");
    let mut c = config(1);
    c.model.context_dim = 5;
    let err = c.validate().unwrap_err();
    assert!(
        matches!(err, TrainError::Core(mixer_core::Error::InvalidConfig { .. }))
            && err.to_string().contains("divisible")
    );
    let mut c = config(1);
    c.train.window_fraction = 0.0;
    assert!(c.validate().is_err());
    let mut c = config(1);
    c.train.segments = Some(Segments { points: 1, full_at: 0.5 });
    assert!(c.validate().unwrap_err().to_string().contains("train.segments"));
    c.train.segments = Some(Segments { points: 3, full_at: 0.0 });
    assert!(c.validate().is_err());
    let mut c = config(1);
    c.train.reseat = Some(Reseat { every: 0, gain: 0.5 });
    assert!(c.validate().unwrap_err().to_string().contains("train.reseat"));
    c.train.reseat = Some(Reseat { every: 5, gain: 1.5 });
    assert!(c.validate().is_err());
    let mut c = config(1);
    c.train.solver = SolverConfig::Rk4 { substeps: 0 };
    assert!(c.validate().is_err());
    // router settings are checked against the model: noisy top-2 with its load loss needs 3 experts
    let mut c = config(1);
    c.router = RouterConfig::default_for("noisy-top-k").unwrap();
    assert!(c.validate().unwrap_err().to_string().contains("top_k = 2 with 2 experts"));
    let err = serde_json::from_str::<RouterConfig>(r#"{"kind": "k-means"}"#).unwrap_err().to_string();
    assert!(err.contains("k-means") && err.contains("shared-routed"), "{err}");
    let err = serde_json::from_str::<RouterConfig>(r#"{"kind": "switch", "capacity": 1.0}"#).unwrap_err();
    assert!(err.to_string().contains("capacity"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn registered_routers_train_and_advance_their_schedules() {
    let _serial = BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let device = Default::default();
    let train = data(1, &train_params());
    let routers = [
        r#"{"kind": "switch"}"#,
        r#"{"kind": "gshard"}"#,
        r#"{"kind": "bias-balance", "rate": 0.01}"#,
        r#"{"kind": "shared-routed", "top_k": 1, "shared": 1, "decay": 0.9}"#,
    ];
    for json in routers {
        let mut c = config(1);
        c.router = serde_json::from_str(json).unwrap();
        let dir = tmp("kinds");
        let mut t =
            Trainer::<B>::new(c, train.clone(), Seeds::new(2), &dir, false, &device).unwrap().with_progress(false);
        t.run().unwrap();
        assert!(t.state.history.iter().all(|h| h.model_loss.is_finite()), "{json}");
        if let Some(state) = t.model.theta.gate.refit_state().and_then(|s| s.get("temperature").cloned()) {
            // one outer step of four model steps: T = 2 * 0.9^4
            let expected = 2.0 * 0.9f64.powi(4);
            assert!((state.as_f64().unwrap() - expected).abs() < 1e-12, "{json}: temperature {state}");
        }
        std::fs::remove_dir_all(dir).ok();
    }
}

#[test]
fn units_beyond_an_experts_capacity_are_counted_as_dropped() {
    let _serial = BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let device = Default::default();
    let train = data(1, &train_params());
    // 6 environments, 2 experts, one outer step of 4 model steps: 24 units; capacity 0.5 keeps
    // ceil(0.5 * 6 / 2) = 2 units per expert, so 2 to 4 of the 6 are dropped at every step
    for (json, dropped) in [(r#"{"kind": "switch"}"#, 0..=0), (r#"{"kind": "switch", "capacity_factor": 0.5}"#, 8..=16)]
    {
        let mut c = config(1);
        c.router = serde_json::from_str(json).unwrap();
        let dir = tmp("dropped");
        let mut t =
            Trainer::<B>::new(c, train.clone(), Seeds::new(2), &dir, false, &device).unwrap().with_progress(false);
        t.run().unwrap();
        assert_eq!(t.state.routed_units, 24, "{json}");
        assert!(dropped.contains(&t.state.dropped_units), "{json}: {} dropped", t.state.dropped_units);
        assert_eq!(t.state.dropped_share(), Some(t.state.dropped_units as f64 / 24.0));
        std::fs::remove_dir_all(dir).ok();
    }
}

/// `MixerModel` as checkpoints stored it before the router registry: the gradient gate, if any,
/// was the only gate with parameters.
#[derive(burn::module::Module, Debug)]
struct LegacyTheta<B: burn::tensor::backend::Backend> {
    moe: mixer_experts::MixtureOfExperts<B, mixer_experts::AnyExpert<B>>,
    gate: Option<mixer_routers::GradientGate<B>>,
}

#[derive(burn::module::Module, Debug)]
struct LegacyModel<B: burn::tensor::backend::Backend> {
    contexts: mixer_hyper::ContextTable<B>,
    theta: LegacyTheta<B>,
}

#[test]
fn checkpoints_written_before_the_router_registry_still_load() {
    let _serial = BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let device = Default::default();
    for kind in ["kmeans-ls", "gradient"] {
        let mut c = config(1);
        if kind == "gradient" {
            c.router = RouterConfig::default_for(kind).unwrap();
        }
        let mut old = MixerModel::<B>::init(&c, 6, 2, &Seeds::new(1), &device).unwrap();
        if old.theta.gate.wants_feedback() {
            // a refit, so that the K-means state is not the initial one
            let contexts = ndarray::Array2::from_shape_fn((6, 4), |(e, j)| (e / 3) as f64 * 2.0 - 1.0 + 0.1 * j as f64);
            let losses = ndarray::Array2::from_shape_fn((6, 2), |(e, k)| if e / 3 == k { 0.1 } else { 1.0 });
            let feedback = mixer_core::RouterFeedback { features: contexts, expert_losses: losses, step: 0 };
            old.theta.gate.refit(&feedback, &mut Seeds::new(2).stream("refit")).unwrap();
        }
        let gate = match &old.theta.gate {
            mixer_routers::Gate::Gradient(g) => Some(g.clone()),
            _ => None,
        };
        let legacy =
            LegacyModel { contexts: old.contexts.clone(), theta: LegacyTheta { moe: old.theta.moe.clone(), gate } };
        let dir = tmp(&format!("legacy-{kind}"));
        std::fs::create_dir_all(&dir).unwrap();
        mixer_train::checkpoint::save_module(&legacy, &dir, "model").unwrap();
        let state = old.theta.gate.state().state.unwrap_or(serde_json::Value::Null);
        std::fs::write(dir.join("router.json"), serde_json::json!({ "kmeans": state }).to_string()).unwrap();

        let fresh = MixerModel::<B>::init(&c, 6, 2, &Seeds::new(9), &device).unwrap();
        let loaded = fresh.load_checkpoint(&dir, &device).unwrap();
        assert_eq!(loaded.theta.gate.state(), old.theta.gate.state(), "{kind}");
        let contexts = mixer_core::host::tensor2::<B>(
            &(0..24).map(|i| (i as f64 * 0.37).sin()).collect::<Vec<_>>(),
            [6, 4],
            &device,
        );
        let route = |m: &MixerModel<B>| {
            let r =
                mixer_train::route(&m.theta, contexts.clone(), mixer_core::Mode::Eval, &mut Seeds::new(0).stream("r"))
                    .unwrap();
            (r.indices, mixer_core::host::to_vec(r.weights))
        };
        assert_eq!(route(&loaded), route(&old), "{kind}: routing changed through the legacy checkpoint");
        std::fs::remove_dir_all(dir).ok();
    }
}

/// Mean squared deviation of every trajectory from its own time average: the error of the best
/// constant prediction, which a model that learned no dynamics cannot beat.
fn temporal_variance(data: &Dataset) -> f64 {
    let (envs, trajs, steps, dim) = data.x.dim();
    let mut total = 0.0;
    for e in 0..envs {
        for j in 0..trajs {
            for d in 0..dim {
                let mean = (0..steps).map(|k| data.x[[e, j, k, d]]).sum::<f64>() / steps as f64;
                total += (0..steps).map(|k| (data.x[[e, j, k, d]] - mean).powi(2)).sum::<f64>();
            }
        }
    }
    total / (envs * trajs * steps * dim) as f64
}

#[test]
fn training_learns_dynamics_not_a_constant() {
    // regression guard: a few hundred steps on two families must fit the trajectories far better
    // than any constant (a model that decays to a fixed point scores about 1 here)
    let _serial = BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let device = Default::default();
    let train = data(2, &train_params());
    let mut c = config(40);
    // the quick profile's training: per-expert subsets, multiple shooting, overlap matching
    c.train.subsets = SubsetRule::PerExpert;
    c.train.subset_size = 3;
    c.train.segments = Some(Segments { points: 3, full_at: 0.5 });
    if let RouterConfig::KmeansLs(k) = &mut c.router {
        k.matching = Matching::Overlap;
    }
    c.train.checkpoint_every = 40;
    let dir = tmp("learns");
    let mut t = Trainer::<B>::new(c, train.clone(), Seeds::new(3), &dir, false, &device).unwrap().with_progress(false);
    t.run().unwrap();
    let valid = burn::module::AutodiffModule::valid(&t.model);
    let integ = SolverConfig::Rk4 { substeps: 1 }.build::<NdArray<f64>>().unwrap();
    let (report, _) = evaluate(&valid.theta, integ.as_ref(), valid.contexts.contexts(), &train).unwrap();
    let ratio = report.mse.mean / temporal_variance(&train);
    assert!(ratio < 0.05, "in-domain MSE is {ratio:.3} of the trajectories' temporal variance");

    // a stray (a rotation given a decay's context) is re-seated on its family's expert, alone
    let valid = burn::module::AutodiffModule::valid(&t.model);
    let mut ctx = mixer_core::host::to_array2(valid.contexts.contexts());
    let decay = ctx.row(3).to_owned();
    ctx.row_mut(0).assign(&decay);
    let flat: Vec<f64> = ctx.iter().copied().collect();
    let stray = mixer_core::host::tensor2::<NdArray<f64>>(&flat, [6, 4], &device);
    let routed = assignment(&valid.theta, stray.clone()).unwrap();
    assert_eq!(routed[0], routed[3], "the stray sits on the decays' expert");
    let reseat = Reseat { every: 1, gain: 0.5 };
    let mut rng = Seeds::new(3).stream("reseat");
    let moves = reseat_moves(&valid.theta, integ.as_ref(), stray, &train, None, &reseat, &mut rng).unwrap();
    assert_eq!(moves.iter().map(|m| m.0).collect::<Vec<_>>(), vec![0], "only the stray moves");
    let moved = mixer_core::host::tensor2::<NdArray<f64>>(&moves[0].1, [1, 4], &device);
    assert_eq!(assignment(&valid.theta, moved).unwrap()[0], routed[1], "onto the rotations' expert");

    // new environments start from the trained context that fits them best: one of their family
    let new_params = [(0, 1.05), (1, 0.65)];
    let new = data(1, &new_params);
    let mut c = t.config.clone();
    c.adapt = AdaptConfig { steps: 0, lr: 1e-2, init: ContextStart::BestFit };
    let start = adapt(&t.model, &c, &new, AdaptMode::Bulk, &Seeds::new(3), &device).unwrap();
    let start: Vec<f64> = start.into_data().to_vec().unwrap();
    let trained = contexts(&t);
    let params = train_params();
    for (i, row) in start.chunks(4).enumerate() {
        let from = trained.chunks(4).position(|r| r == row).expect("a trained context, unchanged");
        assert_eq!(params[from].0, new_params[i].0, "new environment {i} starts from environment {from}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
