//! Fits the MixER gate on synthetic clustered contexts and prints the routing.
//!
//! Four families of environments, 8 each, with 8-dimensional contexts around four centres; expert `j`
//! has a low loss on family `(j + 1) % 4`. Both presets are run: the published `reference` (Uniform(±1e-3)
//! start, skip on an empty cluster) and the `recommended` one (k-means++, reseed, min(K, E) clusters).
//!
//! Run with `cargo run -p mixer-routers --example kmeans_gate`.

use mixer_core::{GateUpdate, Seeds};
use mixer_routers::{KMeansLeastSquares, KMeansLsParams, RouterError};
use ndarray::Array2;
use rand::Rng as _;
use rand_distr::StandardNormal;

const FAMILIES: usize = 4;
const PER_FAMILY: usize = 8;
const DIM: usize = 8;

fn main() -> Result<(), RouterError> {
    let seeds = Seeds::new(2025);
    let mut data_rng = seeds.stream("data");
    let envs = FAMILIES * PER_FAMILY;
    let centres = Array2::from_shape_fn((FAMILIES, DIM), |_| 2.0 * data_rng.sample::<f64, _>(StandardNormal));
    let family: Vec<usize> = (0..envs).map(|e| e / PER_FAMILY).collect();
    let contexts = Array2::from_shape_fn((envs, DIM), |(e, d)| {
        centres[[family[e], d]] + 0.1 * data_rng.sample::<f64, _>(StandardNormal)
    });
    let losses = Array2::from_shape_fn((envs, FAMILIES), |(e, j)| {
        let base = if (j + 1) % FAMILIES == family[e] { 0.05 } else { 1.0 };
        base + 0.1 * data_rng.random::<f64>()
    });

    for (name, params) in [
        ("reference", KMeansLsParams::reference(FAMILIES, DIM)),
        ("recommended", KMeansLsParams::recommended(FAMILIES, DIM)),
    ] {
        let mut rng = seeds.stream(name);
        let mut gate = KMeansLeastSquares::new(params.check_against(envs)?, &mut rng);
        let outcome = gate.update(&contexts, &losses, &mut rng)?;
        let routed = gate.assignment(&contexts)?;
        let correct = (0..envs).filter(|&e| (routed[e] + 1) % FAMILIES == family[e]).count();
        println!("== {name} preset: {outcome:?}");
        match outcome {
            GateUpdate::Updated => println!(
                "   K-means iterations {:?}, cluster -> expert {:?}",
                gate.stats().last_iterations,
                gate.stats().last_cluster_experts
            ),
            _ => println!("   gate unchanged (random start); skips so far: {}", gate.stats().skips()),
        }
        for f in 0..FAMILIES {
            let experts: Vec<usize> = (0..envs).filter(|&e| family[e] == f).map(|e| routed[e]).collect();
            println!("   family {f} (best expert {}): routed to {experts:?}", (f + FAMILIES - 1) % FAMILIES);
        }
        println!("   environments routed to their best expert: {correct}/{envs}");
    }
    Ok(())
}
