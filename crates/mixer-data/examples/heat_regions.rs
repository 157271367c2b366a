//! Generates the heat-regions field dataset (Dryden & Hoefler, 2022) into a folder, reads it back
//! and prints the timings.
//!
//! `cargo run --release -p mixer-data --example heat_regions -- /tmp/heat [quick|paper] [seed]`

use std::time::Instant;

use mixer_data::{HeatRegionsSpec, generate_heat_regions_grown, load_field_dir, region_cells};

fn main() -> Result<(), mixer_data::DataError> {
    let mut args = std::env::args().skip(1);
    let out = args.next().unwrap_or_else(|| "heat-data".into());
    let profile = args.next().unwrap_or_else(|| "quick".into());
    let seed = args.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let spec = HeatRegionsSpec::profile(&profile)?;
    let start = Instant::now();
    let data = generate_heat_regions_grown(&spec, seed)?;
    let generated = start.elapsed().as_secs_f64();
    let start = Instant::now();
    data.write(std::path::Path::new(&out))?;
    let written = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let back = load_field_dir(std::path::Path::new(&out))?;
    let read = start.elapsed().as_secs_f64();
    let cells = back.regions.as_ref().map(region_cells).unwrap_or_default();
    println!("wrote {out} ({profile}, seed {seed}): train {:?}, cells per region {cells:?}", back.train.fields.dim());
    println!("generated in {generated:.2} s, written in {written:.2} s, read back in {read:.2} s");
    Ok(())
}
