//! Draws the context map of synthetic contexts: ten families of sixteen environments, routed to
//! ten experts, with the upper right of both panels full of points (where legends used to sit).
//!
//! `cargo run -p mixer-experiments --example context_map -- /tmp/contexts.png`

fn main() -> Result<(), mixer_experiments::ExperimentError> {
    let out = std::env::args().nth(1).unwrap_or_else(|| "contexts.png".into());
    let (families, per_family) = (10, 16);
    let contexts: Vec<Vec<f64>> = (0..families * per_family)
        .map(|i| {
            let (f, j) = ((i / per_family) as f64, (i % per_family) as f64);
            vec![f + 0.05 * j, 0.5 * f + 0.1 * (j * 0.7).sin(), 0.02 * j]
        })
        .collect();
    let family: Vec<usize> = (0..contexts.len()).map(|i| i / per_family).collect();
    let experts: Vec<usize> = family.iter().map(|f| (f + 3) % families).collect();
    let adapted: Vec<Vec<f64>> =
        contexts.iter().step_by(per_family).map(|c| c.iter().map(|v| v + 0.2).collect()).collect();
    let path = mixer_experiments::plot::plot_contexts(out.as_ref(), &contexts, Some(&family), &experts, &adapted)?;
    println!("wrote {}", path.display());
    Ok(())
}
