use super::*;

#[test]
fn the_continual_experiment_resolves_its_profiles() {
    let quick = ContinualExperiment::builtin("continual-control", Profile::Quick).unwrap();
    assert_eq!((quick.systems.clone(), quick.tasks), (vec!["pendulum-swingup".to_string()], 5));
    assert_eq!(quick.methods, ContinualMethod::ALL.to_vec());
    assert_eq!((quick.run.cem.horizon, quick.run.cem.particles, quick.run.lr), (20, 100, 1e-3));
    assert_eq!((quick.run.model.hidden.clone(), quick.run.model.embedding), (vec![32, 32], 10));
    assert_eq!(quick.settings(ContinualMethod::Ewc).method, ContinualMethod::Ewc);
    let paper = ContinualExperiment::builtin("continual-control", Profile::Paper).unwrap();
    assert_eq!(paper.systems.len(), 3);
    assert_eq!((paper.run.cem.horizon, paper.run.cem.particles, paper.run.lr), (25, 500, 1e-4));
    assert_eq!(
        (paper.run.model.hidden.clone(), paper.run.model.hypernet_hidden.clone()),
        (vec![200, 200], vec![50, 50])
    );
    assert!(ContinualExperiment::is_continual_text(BUILTIN_CONTINUAL_EXPERIMENTS[0].1));
    assert!(!ContinualExperiment::is_continual_text(crate::BUILTIN_EXPERIMENTS[0].1));
}

#[test]
fn bad_continual_experiments_are_clear_errors() {
    let text = BUILTIN_CONTINUAL_EXPERIMENTS[0].1;
    let err = |t: &str| ContinualExperiment::parse(t, Profile::Quick).unwrap_err().to_string();
    assert!(err(&text.replace("\"ewc\"]", "\"replay\"]")).contains("replay"));
    assert!(err(&text.replace("beta = 0.05", "beta = -1.0")).contains("beta"));
    assert!(err(&text.replace("horizon = 20", "horizon = 0")).contains("horizon"));
    assert!(err(&text.replace("tasks = 5", "tasks = 9")).contains("tasks"));
    assert!(err(&text.replace("capacity = 2000", "capacity = 0")).contains("capacity"));
    assert!(err(&text.replace("kind = \"continual\"", "kind = \"field\"")).contains("kind = \"continual\""));
}

#[test]
fn a_continual_experiment_runs_draws_and_reports() {
    let _serial = crate::serial_training();
    let mut e = ContinualExperiment::builtin("continual-control", Profile::Quick).unwrap();
    e.tasks = 2;
    e.methods = vec![ContinualMethod::Hypercrl, ContinualMethod::Finetune];
    e.run.train_steps = 5;
    e.run.planned_episodes = 1;
    e.run.random_episodes = 1;
    e.run.episode_steps = Some(6);
    e.run.heldout = 12;
    e.run.cem.horizon = 3;
    e.run.cem.particles = 12;
    e.run.cem.elites = 3;
    let dir = tempfile::tempdir().unwrap();
    type B = burn::backend::Autodiff<burn::backend::NdArray<f64>>;
    let job = ContinualJob { experiment: &e, runs_dir: dir.path().to_path_buf() };
    let record = job.run::<B>(Default::default(), "cpu (test)").unwrap();
    assert_eq!(record.runs.len(), 2);
    let hyper = &record.runs[0];
    assert_eq!((hyper.metrics.report.reward.len(), hyper.metrics.report.reward[1].len()), (2, 2));
    assert!(hyper.metrics.average_final_reward.is_some_and(f64::is_finite));
    assert_eq!(hyper.metrics.forgetting.len(), 2);
    for f in ["metrics.json", "reward.png", "mse.png", "config.json"] {
        assert!(hyper.dir.join(f).is_file(), "{f}");
    }
    // the hypernetwork grows by one embedding of 10 numbers per task; fine-tuning not at all
    let (p, q) = (&hyper.metrics.report.parameters, &record.runs[1].metrics.report.parameters);
    assert_eq!((p[1] - p[0], q[1] - q[0]), (10, 0));
    let again = ContinualJob { experiment: &e, runs_dir: dir.path().to_path_buf() }.run::<B>(Default::default(), "x");
    assert_eq!(again.unwrap(), record, "metrics.json is read back");
    let md = continual_markdown(&record, |p| p.display().to_string());
    assert!(md.contains("#### pendulum-swingup") && md.contains("| hypercrl |") && md.contains("| finetune |"), "{md}");
    assert!(md.contains(&format!("hypercrl {}, {}", p[0], p[1])), "{md}");
}
