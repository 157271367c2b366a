//! Continual model-based control (HyperCRL): the hypernetwork dynamics model fits a linear
//! controlled system, its output regulariser keeps a past task's generated weights, fine-tuning
//! forgets where HyperCRL does not, a resumed run repeats an uninterrupted one, and bad settings
//! are refused.

use burn::backend::{Autodiff, NdArray};
use burn::tensor::Tensor;
use mixer_core::host::to_vec;
use mixer_data::ControlSystem;
use mixer_hyper::Activation;
use mixer_train::{
    CemSettings, ContinualMethod, ContinualSettings, ContinualTask, DynamicsShape, run_continual, run_continual_until,
    system_tasks,
};

type B = Autodiff<NdArray<f64>>;

/// One training at a time: burn-autodiff's graph bookkeeping is shared by the threads of a
/// process, and concurrent backward passes have been seen to drop another test's gradients.
static AUTODIFF: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    AUTODIFF.lock().unwrap_or_else(|e| e.into_inner())
}

/// `x' = a x + b u` with reward `-x^2`; the second task flips both signs.
const LINEAR: &str = r#"
name = "linear"
state = ["x", "v"]
action = ["u"]
parameters = [{ name = "a", value = -1.0 }, { name = "b", value = 1.0 }]
rhs = ["a*x + b*u", "-0.5*v + a*u"]
reward = "-x^2"
action_bounds = [{ low = -1.0, high = 1.0 }]
initial = { state = [0.0, 0.0], noise = [1.0, 1.0] }
dt = 0.1
substeps = 2
episode_steps = 20
tasks = [{ name = "decay" }, { name = "flipped", set = { a = 1.0, b = -1.0 } }]
"#;

fn linear_tasks() -> Vec<ContinualTask> {
    system_tasks(&ControlSystem::from_toml(LINEAR).unwrap(), 2).unwrap()
}

fn settings(method: ContinualMethod) -> ContinualSettings {
    ContinualSettings {
        method,
        model: DynamicsShape {
            hidden: vec![16],
            activation: Activation::Tanh,
            embedding: 10,
            hypernet_hidden: vec![16],
            chunk_size: None,
            chunk_embedding: 2,
        },
        beta: 0.05,
        plastic_embeddings: false,
        lr: 3e-3,
        grad_clip: Some(5.0),
        batch: 32,
        capacity: 400,
        random_episodes: 10,
        planned_episodes: 0,
        train_steps: 600,
        episode_steps: None,
        heldout: 100,
        eval_episodes: 0,
        coreset: 40,
        ewc_lambda: 1000.0,
        ewc_samples: 32,
        cem: CemSettings { horizon: 4, particles: 30, elites: 5, iterations: 2, ..CemSettings::default() },
    }
}

/// The variance of the held-out state changes of the first task (the scale of the MSEs).
fn delta_variance() -> f64 {
    let task = &linear_tasks()[0];
    let b = mixer_train::random_transitions(task, 200, 20, &mut mixer_core::Seeds::new(9).stream("v")).unwrap();
    let (_, d) = b.all_rows();
    let m = d.iter().sum::<f64>() / d.len() as f64;
    d.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / d.len() as f64
}

#[test]
fn the_hypernetwork_model_fits_a_linear_system() {
    let _serial = serial();
    let tasks = linear_tasks();
    let s = ContinualSettings { train_steps: 1500, batch: 64, ..settings(ContinualMethod::Hypercrl) };
    let run = run_continual::<B>(&s, &tasks[..1], 1, None, &Default::default()).unwrap();
    let mse = run.state.report.mse[0][0];
    let var = delta_variance();
    println!("linear fit: held-out MSE {mse:.3e}, delta variance {var:.3e}, ratio {:.3e}", mse / var);
    assert!(mse < 1e-2 * var, "held-out MSE {mse:.3e} against a delta variance {var:.3e}");
}

/// Squared distance between the weights generated for task 0 by two models.
fn task0_shift(a: &mixer_hyper::TaskDynamics<NdArray<f64>>, b: &mixer_hyper::TaskDynamics<NdArray<f64>>) -> f64 {
    let w = |m: &mixer_hyper::TaskDynamics<NdArray<f64>>| -> Tensor<NdArray<f64>, 2> {
        m.generate(m.embedding_rows(&[0], true).unwrap()).unwrap()
    };
    to_vec((w(a) - w(b)).square().sum())[0]
}

#[test]
fn the_regulariser_keeps_task_one_weights_and_finetuning_forgets() {
    let _serial = serial();
    let tasks = linear_tasks();
    let device = Default::default();
    let hyper = settings(ContinualMethod::Hypercrl);
    let snapshot = run_continual::<B>(&hyper, &tasks[..1], 1, None, &device).unwrap();
    let kept = run_continual::<B>(&hyper, &tasks, 1, None, &device).unwrap();
    let free = run_continual::<B>(&ContinualSettings { beta: 0.0, ..hyper.clone() }, &tasks, 1, None, &device).unwrap();
    let (with, without) = (task0_shift(&kept.model, &snapshot.model), task0_shift(&free.model, &snapshot.model));
    let norm =
        to_vec(snapshot.model.generate(snapshot.model.embedding_rows(&[0], true).unwrap()).unwrap().square().sum())[0];
    println!("task-0 weight shift: beta 0.05 {with:.3e}, beta 0 {without:.3e} (|h*|^2 = {norm:.3e})");
    assert!(with < 1e-2 * norm, "regularised shift {with:.3e} against |h*|^2 {norm:.3e}");
    assert!(without > 10.0 * with, "unregularised shift {without:.3e} against {with:.3e}");
    let finetune = run_continual::<B>(&settings(ContinualMethod::Finetune), &tasks, 1, None, &device).unwrap();
    let (h, f, fr) = (&kept.state.report, &finetune.state.report, &free.state.report);
    println!(
        "task-0 held-out MSE after task 1: hypercrl {:.3e}, beta 0 {:.3e}, finetune {:.3e}; before: {:.3e} / {:.3e}",
        h.mse[1][0], fr.mse[1][0], f.mse[1][0], h.mse[0][0], f.mse[0][0]
    );
    assert!(f.mse[1][0] > 20.0 * h.mse[1][0], "finetune {:.3e} against hypercrl {:.3e}", f.mse[1][0], h.mse[1][0]);
    assert!(h.mse[1][0] < 3.0 * h.mse[0][0].max(1e-6), "hypercrl keeps task 0: {:?}", h.mse);
    assert!(h.mse[1][1] < 1e-2 * delta_variance(), "and learns task 1: {:?}", h.mse);
}

#[test]
fn every_baseline_runs_and_keeps_what_it_needs() {
    let _serial = serial();
    let tasks = linear_tasks();
    let device = Default::default();
    let finetune = run_continual::<B>(&settings(ContinualMethod::Finetune), &tasks, 2, None, &device).unwrap();
    let forgotten = finetune.state.report.mse[1][0];
    for method in [ContinualMethod::Multitask, ContinualMethod::Coreset, ContinualMethod::Ewc] {
        let run = run_continual::<B>(&settings(method), &tasks, 2, None, &device).unwrap();
        let r = &run.state.report;
        println!("{}: mse {:?} (finetune on task 0 after task 1: {forgotten:.3e})", method.name(), r.mse);
        assert_eq!((r.mse.len(), r.mse[1].len(), r.parameters.len()), (2, 2, 2));
        assert!(r.mse.iter().flatten().all(|v| v.is_finite()));
        let (kept, anchors) = (run.state.kept.len(), run.state.anchors.len());
        match method {
            ContinualMethod::Multitask => assert_eq!((kept, run.state.kept[0].len()), (2, 200)),
            ContinualMethod::Coreset => assert_eq!((kept, run.state.kept[0].len()), (2, 40)),
            _ => assert_eq!((kept, anchors, run.state.anchors[0].fisher.len()), (0, 2, (3 * 16 + 16) + (16 * 2 + 2))),
        }
        // the multitask upper bound remembers task 0; replay and EWC forget less than fine-tuning
        // (a shared network without a task input cannot fit both signs of the flipped task)
        let bound = if method == ContinualMethod::Multitask { 0.01 } else { 0.5 };
        assert!(r.mse[1][0] < bound * forgotten, "{:?} against {forgotten:.3e}", r.mse);
    }
}

#[test]
fn a_resumed_run_repeats_an_uninterrupted_one() {
    let _serial = serial();
    let tasks = linear_tasks();
    let device = Default::default();
    let s = ContinualSettings {
        train_steps: 60,
        planned_episodes: 1,
        eval_episodes: 1,
        episode_steps: Some(8),
        ..settings(ContinualMethod::Hypercrl)
    };
    let dir = tempfile::tempdir().unwrap();
    let straight = run_continual::<B>(&s, &tasks, 4, Some(&dir.path().join("a")), &device).unwrap();
    let first = run_continual_until::<B>(&s, &tasks, 4, Some(&dir.path().join("b")), 1, &device).unwrap();
    assert_eq!(first.state.done, 1);
    let resumed = run_continual::<B>(&s, &tasks, 4, Some(&dir.path().join("b")), &device).unwrap();
    let (a, b) = (&straight.state.report, &resumed.state.report);
    assert_eq!((a.reward.clone(), a.mse.clone()), (b.reward.clone(), b.mse.clone()), "same digits");
    assert_eq!((a.planned_returns.clone(), a.train_mse.clone()), (b.planned_returns.clone(), b.train_mse.clone()));
    assert_eq!((a.reward.len(), a.reward[1].len(), a.planned_returns[0].len()), (2, 2, 1));
    let other = ContinualSettings { beta: 0.5, ..s };
    let err = run_continual::<B>(&other, &tasks, 4, Some(&dir.path().join("b")), &device).unwrap_err();
    assert!(err.to_string().contains("another config"), "{err}");
}

#[test]
fn bad_settings_and_sequences_are_clear_errors() {
    let tasks = linear_tasks();
    let device = Default::default();
    let err = |s: ContinualSettings, tasks: &[ContinualTask]| {
        run_continual::<B>(&s, tasks, 0, None, &device).unwrap_err().to_string()
    };
    let ok = settings(ContinualMethod::Hypercrl);
    assert!(err(ContinualSettings { beta: -0.1, ..ok.clone() }, &tasks).contains("beta"));
    let horizon0 = CemSettings { horizon: 0, ..ok.cem.clone() };
    assert!(err(ContinualSettings { cem: horizon0, ..ok.clone() }, &tasks).contains("horizon"));
    assert!(err(ContinualSettings { capacity: 0, ..ok.clone() }, &tasks).contains("capacity"));
    assert!(err(ContinualSettings { lr: 0.0, ..ok.clone() }, &tasks).contains("lr"));
    let coreset = ContinualSettings { coreset: 0, ..settings(ContinualMethod::Coreset) };
    assert!(err(coreset, &tasks).contains("coreset"));
    let cartpole = ControlSystem::builtin("cartpole-swingup").unwrap();
    let mut mixed = tasks.clone();
    mixed.push(system_tasks(&cartpole, 1).unwrap().remove(0));
    let e = err(ok.clone(), &mixed);
    assert!(e.contains("[2, 1]") && e.contains("[4, 1]"), "{e}");
    assert!(err(ok, &[]).contains("at least one task"));
}
