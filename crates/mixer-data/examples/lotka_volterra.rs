//! Generates the Lotka–Volterra dataset of the MixER paper (Nzoyem et al., 2025), §6 into a folder and reads it back.
//!
//! `cargo run -p mixer-data --example lotka_volterra -- /tmp/lv`

use mixer_data::{DatasetSpec, GenerateOptions, generate, load_dir};

fn main() -> Result<(), mixer_data::DataError> {
    let out = std::env::args().nth(1).unwrap_or_else(|| "lv-data".into());
    let spec = DatasetSpec::builtin("lotka-volterra")?;
    let data = generate(&spec, &GenerateOptions::new(42), &indicatif::ProgressBar::hidden())?;
    data.write(std::path::Path::new(&out))?;
    let back = load_dir(std::path::Path::new(&out))?;
    println!("wrote {out}: train {:?}, adapt_test {:?}", back.train.x.dim(), back.adapt_test.x.dim());
    Ok(())
}
