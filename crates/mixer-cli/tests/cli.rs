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
