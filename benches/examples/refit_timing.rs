//! The expert-loss matrix of a MixER gate refit, three ways in one process: the tensor path
//! (burn-flex, f32), and the fused host path (frozen experts, host RK4, f32) on a rayon pool
//! of one and of two threads. 10 GEPS experts (width 64, depth 3, context slices of 4) on 160
//! environments of 1 trajectory of 20 points, 10 families of horizons as in ODEBench-10 (one
//! normalised grid, per-environment time rates), RK4 with one step per interval.
//!
//! `cargo run --release -p mixer-benches --example refit_timing -- [reps]` (default 5).

use burn::backend::Flex;
use burn::tensor::{Distribution, Tensor};
use mixer_benches::median_seconds_with;
use mixer_core::{Dataset, TimeGrid};
use mixer_experts::{AnyExpert, ExpertConfig, MixtureOfExperts};
use mixer_ode::Rk4;
use mixer_train::{fused_expert_loss_matrix, generic_expert_loss_matrix};
use ndarray::{Array2, Array4};

type B = Flex;

const EXPERTS: usize = 10;
const ENVS: usize = 160;
const STEPS: usize = 20;

/// 160 environments, one damped-oscillation trajectory each; family `e % 10` has horizon
/// `4 + 16 * family / 9`.
fn dataset() -> Dataset {
    let horizon = |e: usize| 4.0 + 16.0 * (e % 10) as f64 / 9.0;
    let x = Array4::from_shape_fn((ENVS, 1, STEPS, 2), |(e, _, k, i)| {
        let t = horizon(e) * k as f64 / (STEPS - 1) as f64;
        let phase = 0.1 * e as f64 + 1.5 * i as f64;
        (-0.05 * t).exp() * (t + phase).cos()
    });
    let grids = (0..ENVS).map(|e| (0..STEPS).map(|k| horizon(e) * k as f64 / (STEPS - 1) as f64).collect()).collect();
    Dataset::new(x, TimeGrid::PerEnv(grids), None).expect("valid dataset")
}

fn max_rel_diff(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs() / y.abs().max(1e-12)).fold(0.0, f64::max)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let reps: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(5);
    let device = Default::default();
    let data = dataset();
    let config = ExpertConfig::Geps { width: 64, depth: 3 };
    let experts = (0..EXPERTS)
        .map(|k| {
            <B as burn::tensor::backend::Backend>::seed(&device, k as u64);
            config.init::<B>(2, 4, &device)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let moe = MixtureOfExperts::<B, AnyExpert<B>>::new(experts);
    let contexts = Tensor::<B, 2>::random([ENVS, 4 * EXPERTS], Distribution::Uniform(-0.5, 0.5), &device);
    let rk4 = Rk4 { substeps: 1 };

    let (generic_s, generic) = median_seconds_with(reps, || {
        generic_expert_loss_matrix(&moe, &rk4, contexts.clone(), &data, None).expect("generic path")
    });
    let fused = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("rayon pool");
        median_seconds_with(reps, || {
            pool.install(|| fused_expert_loss_matrix(&moe, &rk4, contexts.clone(), &data, None))
                .expect("fused path")
                .expect("GEPS experts on burn-flex have a fused path")
        })
    };
    let (one_s, one) = fused(1);
    let (two_s, two) = fused(2);

    println!("expert-loss matrix, {EXPERTS} GEPS experts (64 x 3, c = 4), {ENVS} envs x 1 traj x {STEPS} points, RK4");
    println!("median of {reps} runs after one warm-up");
    println!("generic (burn-flex f32)   {:9.2} ms", generic_s * 1e3);
    println!("fused, 1 thread (f32)     {:9.2} ms   {:6.1}x faster", one_s * 1e3, generic_s / one_s);
    println!("fused, 2 threads (f32)    {:9.2} ms   {:6.1}x faster", two_s * 1e3, generic_s / two_s);
    println!("fused 1 vs 2 threads bitwise equal: {}", one.iter().zip(&two).all(|(a, b)| a.to_bits() == b.to_bits()));
    println!("largest relative difference, fused vs generic (f32): {:.2e}", max_rel_diff(&one, &generic));
    Ok(())
}
