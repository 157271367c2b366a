//! Lotka–Volterra with both kinds of solver: burn's adaptive Tsit5 on a batch of tensors and
//! diffsol's Tsit45 in f64, then the largest difference between them.
//!
//! `cargo run -p mixer-ode --example solve_lotka_volterra`

use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};
use mixer_core::{FnField, Integrator};
use mixer_ode::{FnSystem, ReferenceMethod, ReferenceSolver, Tsit5};

type B = NdArray<f64>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // x' = a x - b x y,  y' = d x y - g y
    let (a, b, d, g) = (0.5, 0.75, 1.0, 0.5);
    let starts = [[1.2, 1.7], [0.8, 0.6], [2.0, 1.0]];
    let times: Vec<f64> = (0..=40).map(|k| 0.5 * k as f64).collect();

    // burn: all initial states in one batch, [3, 2] -> [3, 41, 2]
    let field = FnField::new(2, move |_t, s: Tensor<B, 2>| {
        let n = s.dims()[0];
        let (x, y) = (s.clone().slice([0..n, 0..1]), s.slice([0..n, 1..2]));
        let xy = x.clone() * y.clone();
        Tensor::cat(vec![x.mul_scalar(a) - xy.clone().mul_scalar(b), xy.mul_scalar(d) - y.mul_scalar(g)], 1)
    });
    let device = Default::default();
    let y0 = Tensor::<B, 2>::from_data(TensorData::new(starts.concat(), [starts.len(), 2]), &device);
    let ours: Vec<f64> = Tsit5::new(1e-8, 1e-10).integrate(&field, y0, &times)?.into_data().to_vec()?;

    // diffsol: one f64 solve per initial state, [41, 2] each
    let system = FnSystem::new(2, move |_t, s: &[f64], ds: &mut [f64]| {
        ds[0] = a * s[0] - b * s[0] * s[1];
        ds[1] = d * s[0] * s[1] - g * s[1];
    });
    let reference = ReferenceSolver::new(ReferenceMethod::Tsit45, 1e-10, 1e-12);
    let mut max_diff = 0.0f64;
    for (r, start) in starts.iter().enumerate() {
        let exact = reference.solve(&system, start, &times)?;
        let row = &ours[r * times.len() * 2..(r + 1) * times.len() * 2];
        let diff = row.iter().zip(&exact).map(|(p, q)| (p - q).abs()).fold(0.0, f64::max);
        let end = &exact[exact.len() - 2..];
        println!(
            "start ({:.1}, {:.1}): state at t = {} is ({:.6}, {:.6}); max |burn - diffsol| = {diff:.2e}",
            start[0],
            start[1],
            times[times.len() - 1],
            end[0],
            end[1]
        );
        max_diff = max_diff.max(diff);
    }
    println!("max difference over {} trajectories and {} times: {max_diff:.2e}", starts.len(), times.len());
    Ok(())
}
