//! The `mixer` binary end to end on a small Lotka–Volterra run, and its errors on bad input.

use std::path::Path;
use std::process::{Command, Output};

const EXPERIMENT: &str = r#"
name = "tiny"
description = "two outer steps of MixER on Lotka-Volterra"
metric = "mse"
seed = 3
variants = ["mixer"]

[data]
system = "lotka-volterra"

[run.model]
experts = 3
context_dim = 6
expert = { kind = "geps", width = 8, depth = 3 }

[run.router]
kind = "kmeans-ls"
max_kmeans = 20
tol = 1e-4
init = "KMeansPlusPlus"
empty = "Reseed"
clusters = "Experts"
matching = "Greedy"
ls_noise = 1e-4

[run.train]
outer_steps = 2
context_steps = 1
model_steps = 1
lr_model = 1e-3
lr_context = 1e-3
lr_drop_factor = 0.4
lr_drop_at = [0.5]
proximal_beta = 10.0
subset_size = 3
self_reweight = true
gate_update_every = 1
checkpoint_every = 1
context_l1 = 0.0
window_fraction = 0.6
optimizer = { beta_1 = 0.9, beta_2 = 0.999, epsilon = 1e-16 }
solver = { method = "rk4", substeps = 1 }

[run.adapt]
steps = 2
lr = 1e-3
init = "zeros"

[run.data]
subsample = 1
"#;

fn mixer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mixer")).args(args).output().expect("the mixer binary runs")
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

#[test]
fn generate_train_adapt_eval_write_metrics_and_plots() {
    let dir = tempfile::tempdir().unwrap();
    let (data, run, config) = (dir.path().join("lv"), dir.path().join("run"), dir.path().join("tiny.toml"));
    std::fs::write(&config, EXPERIMENT).unwrap();
    let out = mixer(&["generate", "--system", "lotka-volterra", "--out", path(&data), "--seed", "1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = mixer(&["train", "--config", path(&config), "--data", path(&data), "--out", path(&run)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("trained 2 outer steps"));
    let out = mixer(&["adapt", "--run", path(&run), "--data", path(&data), "--mode", "sequential"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(run.join("adapted-sequential.json").is_file());
    let out = mixer(&["eval", "--run", path(&run), "--data", path(&data)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap()).unwrap();
    for key in [
        "/in_domain/mse/mean",
        "/in_domain/rel_l2/mean",
        "/adaptation/bulk/mse/mean",
        "/adaptation/sequential/rel_l2/mean",
    ] {
        assert!(m.pointer(key).and_then(|v| v.as_f64()).is_some_and(f64::is_finite), "{key}");
    }
    assert_eq!(m.pointer("/routing/assignment").and_then(|v| v.as_array()).map(Vec::len), Some(9));
    assert_eq!(m.pointer("/timing/outer_steps").and_then(|v| v.as_u64()), Some(2));
    assert!(m.pointer("/routing/gate_updates").and_then(|v| v.as_u64()).is_some_and(|n| n > 0));
    let agreement = m.pointer("/routing/gate_agreement").and_then(|v| v.as_f64());
    assert!(agreement.is_some_and(|a| (0.0..=1.0).contains(&a)), "{agreement:?}");
    let contexts: Vec<Vec<f64>> =
        serde_json::from_str(&std::fs::read_to_string(run.join("contexts.json")).unwrap()).unwrap();
    assert!(contexts.len() == 9 && contexts.iter().all(|c| c.len() == 6 && c.iter().all(|v| v.is_finite())));
    for f in ["gate.png", "contexts.png", "trajectories.png", "adaptation.png", "loss.png"] {
        assert!(run.join(f).is_file(), "{f}");
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (data, config) = (dir.path().join("lv"), dir.path().join("tiny.toml"));
    assert!(mixer(&["generate", "--system", "lotka-volterra", "--out", path(&data)]).status.success());
    let fails_with = |text: &str, args: &[&str], want: &str| {
        std::fs::write(&config, text).unwrap();
        let out = mixer(args);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success() && err.contains(want), "expected `{want}` in: {err}");
    };
    let run = dir.path().join("r");
    let train = ["train", "--config", path(&config), "--data", path(&data), "--out", path(&run)];
    fails_with(&EXPERIMENT.replace("experts = 3", "experts = 12"), &train, "experts");
    fails_with(&EXPERIMENT.replace("context_dim = 6", "context_dim = 7"), &train, "divisible");
    std::fs::remove_file(data.join("test.npz")).unwrap();
    fails_with(EXPERIMENT, &train, "test");
}

#[test]
fn log_lines_to_a_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("lv");
    let out = Command::new(env!("CARGO_BIN_EXE_mixer"))
        .args(["generate", "--system", "lotka-volterra", "--out", path(&data)])
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .output()
        .expect("the mixer binary runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("generating split"), "info lines reach stderr: {err}");
    assert!(!err.contains("\x1b["), "ANSI escape codes in piped stderr: {err:?}");
}

#[test]
fn heat_regions_generate_inspect_plot() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("heat");
    let gen_args = ["generate", "--system", "heat-regions", "--runs", "2", "--frames", "7"];
    let out = mixer(&[&gen_args[..], &["--size", "12", "--out", path(&data), "--seed", "3"]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for f in ["train.npz", "val.npz", "test.npz", "regions.npy", "fields.toml"] {
        assert!(data.join(f).is_file(), "{f}");
    }
    let out = mixer(&["inspect", path(&data)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("grid 12x12, 1 channel(s), 7 frames"), "{text}");
    assert!(text.contains("train  fields [runs 2, frames 7, H 12, W 12, C 1]"), "{text}");
    assert!(text.contains("regions 3 (grown (seed 3))"), "{text}");
    let cells: usize = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("region "))
        .map(|l| l.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap())
        .sum();
    assert_eq!(cells, 144, "{text}");
    assert!(text.contains("diffusivity 0.25"), "{text}");
    let png = dir.path().join("heat.png");
    let out = mixer(&["plot", path(&data), "--out", path(&png)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::metadata(&png).unwrap().len() > 1000);
    // a supplied map must match the grid; heat-regions settings are refused for other systems
    let map = data.join("regions.npy");
    let out = mixer(
        &[&gen_args[..], &["--size", "10", "--regions", path(&map), "--out", path(&dir.path().join("x"))]].concat(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("region map is [12, 12] cells but the grid is [10, 10]"), "{err}");
    let out = mixer(&["generate", "--system", "lotka-volterra", "--runs", "2", "--out", path(&dir.path().join("y"))]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("heat-regions only"));
    let out = mixer(&["generate", "--list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("heat-regions"));
    // train a baseline of the shipped field experiment on the folder, then score it
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../../experiments/heat_regions.toml");
    let run = dir.path().join("run");
    let out = mixer(&["train", "--config", config, "--data", path(&data), "--out", path(&run), "--variant", "cnn"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("trained cnn for 150 steps"), "{text}");
    let out = mixer(&["eval", "--run", path(&run), "--data", path(&data), "--rollout-steps", "4"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("model          cnn") && text.contains("rollout MSE") && !text.contains("gate "), "{text}");
    for f in ["metrics.json", "maps.png", "rollout.png"] {
        assert!(run.join(f).is_file(), "{f}");
    }
    let out = mixer(&["train", "--config", config, "--data", path(&data), "--out", path(&run), "--variant", "unet"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field model `unet`"));
}

/// Two pendulum tasks, HyperCRL and fine-tuning, every size tiny.
const CONTINUAL: &str = r#"
kind = "continual"
name = "tiny-continual"
description = "two pendulum tasks"
seed = 5
systems = ["pendulum-swingup"]
tasks = 2
methods = ["hypercrl", "finetune"]

[run]
beta = 0.05
lr = 1e-3
grad_clip = 5.0
batch = 8
capacity = 200
random_episodes = 1
planned_episodes = 1
episode_steps = 6
train_steps = 3
heldout = 12
eval_episodes = 1
coreset = 10
ewc_lambda = 100.0
ewc_samples = 8

[run.model]
hidden = [8]
activation = "tanh"
embedding = 4
hypernet_hidden = [8]
chunk_embedding = 1

[run.cem]
horizon = 3
particles = 8
elites = 2
iterations = 2
initial_std = 0.5
alpha = 0.1
warm_start = true
"#;

#[test]
fn a_continual_experiment_trains_from_the_command_line_without_data() {
    let dir = tempfile::tempdir().unwrap();
    let (config, out) = (dir.path().join("c.toml"), dir.path().join("runs"));
    std::fs::write(&config, CONTINUAL).unwrap();
    let train = ["train", "--config", path(&config), "--out", path(&out)];
    let first = mixer(&train);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let report = std::fs::read_to_string(out.join("REPORT.md")).unwrap();
    assert!(report.contains("| hypercrl |") && report.contains("| finetune |"), "{report}");
    for m in ["hypercrl", "finetune"] {
        assert!(out.join("pendulum-swingup").join(m).join("metrics.json").is_file(), "{m}");
    }
    // a second call finds the finished runs and reports the same scores
    assert!(mixer(&train).status.success());
    assert_eq!(std::fs::read_to_string(out.join("REPORT.md")).unwrap(), report);
    // ODE experiments still need a data folder; continual ones take no variant
    std::fs::write(&config, EXPERIMENT).unwrap();
    let err = String::from_utf8_lossy(&mixer(&train).stderr).to_string();
    assert!(err.contains("--data"), "{err}");
    std::fs::write(&config, CONTINUAL).unwrap();
    let err = String::from_utf8_lossy(&mixer(&[&train[..], &["--variant", "x"]].concat()).stderr).to_string();
    assert!(err.contains("every method"), "{err}");
}

const SCALING: &str = r#"
kind = "scaling"
extends = "odebench10"
name = "tiny-scaling"
variants = ["mixer"]

[[sweeps]]
name = "pairs"
collection = "odebench-2d"
families = [2]
environments = [3, 5]

[profile.quick.run.train]
outer_steps = 2
context_steps = 1
model_steps = 1
checkpoint_every = 1

[profile.quick.run.model]
expert = { kind = "geps", width = 8, depth = 2 }
"#;

#[test]
fn a_scaling_experiment_trains_every_point_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let (config, out) = (dir.path().join("s.toml"), dir.path().join("runs"));
    std::fs::write(&config, SCALING).unwrap();
    let train = ["train", "--config", path(&config), "--out", path(&out)];
    let first = mixer(&train);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let report = std::fs::read_to_string(out.join("REPORT.md")).unwrap();
    assert!(report.contains("| 2 | 3 | 2 |") && report.contains("| 2 | 5 | 2 |"), "{report}");
    for point in ["2x3", "2x5"] {
        assert!(out.join("pairs").join(point).join("point.json").is_file(), "{point}");
    }
    assert!(out.join("figures").join("tiny-scaling-environments.png").is_file());
    let err = String::from_utf8_lossy(&mixer(&[&train[..], &["--variant", "x"]].concat()).stderr).to_string();
    assert!(err.contains("every point"), "{err}");
}
