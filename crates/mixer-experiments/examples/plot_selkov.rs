//! Generates the Sel'kov dataset and draws its overview figure.
//!
//! `cargo run -p mixer-experiments --example plot_selkov -- /tmp/selkov.png`

use mixer_data::{DatasetSpec, GenerateOptions, generate};

fn main() -> Result<(), mixer_experiments::ExperimentError> {
    let out = std::env::args().nth(1).unwrap_or_else(|| "selkov.png".into());
    let spec = DatasetSpec::builtin("selkov")?;
    let data = generate(&spec, &GenerateOptions::new(0), &indicatif::ProgressBar::hidden())?;
    let state = spec.members[0].spec().state.clone();
    let path = mixer_experiments::plot::plot_dataset(out.as_ref(), "Sel'kov (train)", &data.train, &state, &[])?;
    println!("wrote {}", path.display());
    Ok(())
}
