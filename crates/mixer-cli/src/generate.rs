//! `mixer generate`: write the four splits and the manifest of a system or collection.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use mixer_data::{DatasetSpec, GenerateOptions, builtin_names, generate};

/// Arguments of `mixer generate`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Built-in system or collection (e.g. lotka-volterra, odebench-2d); `--list` shows all.
    #[arg(long, conflicts_with = "spec", required_unless_present_any = ["spec", "list"])]
    system: Option<String>,
    /// A system or collection file (TOML).
    #[arg(long)]
    spec: Option<PathBuf>,
    /// Output folder.
    #[arg(long, required_unless_present = "list")]
    out: Option<PathBuf>,
    /// Seed of the initial-condition draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Relative tolerance of the reference solves.
    #[arg(long, default_value_t = 1e-8)]
    rtol: f64,
    /// List the built-in systems and collections.
    #[arg(long)]
    list: bool,
}

/// Runs `mixer generate`.
pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    if args.list {
        for name in builtin_names() {
            let spec = DatasetSpec::builtin(name)?;
            println!("{name:<16} {}", spec.description);
        }
        return Ok(());
    }
    let spec = match (&args.system, &args.spec) {
        (Some(name), _) => DatasetSpec::builtin(name)?,
        (None, Some(path)) => DatasetSpec::from_file(path)?,
        (None, None) => anyhow::bail!("give --system NAME or --spec FILE"),
    };
    let out = args.out.context("--out DIR is required")?;
    let options = GenerateOptions { rtol: args.rtol, ..GenerateOptions::new(args.seed) };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} solves (eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(spec.name.clone());
    let data = generate(&spec, &options, &bar).with_context(|| format!("generating {}", spec.name))?;
    data.write(&out).with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {} to {}", spec.name, out.display());
    if let Some(m) = &data.manifest {
        for s in &m.splits {
            println!("  {:<12} X {:?}", s.file, s.shape);
        }
    }
    Ok(())
}
