//! `mixer generate`: write the four splits and the manifest of a system or collection.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use mixer_data::{
    DatasetSpec, GenerateOptions, HEAT_REGIONS, HEAT_REGIONS_DESCRIPTION, HeatRegionsSpec, builtin_names, generate,
    generate_heat_regions, generate_heat_regions_grown, read_region_map,
};

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
    /// heat-regions only: settings profile, quick (48 / 8 / 8 runs) or paper (1000 / 20 / 20).
    #[arg(long)]
    profile: Option<String>,
    /// heat-regions only: region map (.npy of int labels) instead of one grown from the seed.
    #[arg(long)]
    regions: Option<PathBuf>,
    /// heat-regions only: cells per side (default: the map's, else the profile's 64).
    #[arg(long)]
    size: Option<usize>,
    /// heat-regions only: runs in each of train, val and test (default: the profile's).
    #[arg(long)]
    runs: Option<usize>,
    /// heat-regions only: frames per run, the initial field included (default: 101).
    #[arg(long)]
    frames: Option<usize>,
}

impl GenerateArgs {
    /// Whether any heat-regions-only setting was given.
    fn has_field_settings(&self) -> bool {
        self.profile.is_some()
            || self.regions.is_some()
            || self.size.is_some()
            || self.runs.is_some()
            || self.frames.is_some()
    }
}

/// Runs `mixer generate`.
pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    if args.list {
        for name in builtin_names() {
            let spec = DatasetSpec::builtin(name)?;
            println!("{name:<16} {}", spec.description);
        }
        println!("{HEAT_REGIONS:<16} {HEAT_REGIONS_DESCRIPTION}");
        return Ok(());
    }
    if args.system.as_deref() == Some(HEAT_REGIONS) {
        let out = args.out.clone().context("--out DIR is required")?;
        return generate_heat(&args, &out);
    }
    if args.has_field_settings() {
        anyhow::bail!("--profile, --regions, --size, --runs and --frames apply to --system {HEAT_REGIONS} only");
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

/// `mixer generate --system heat-regions`: the three field splits, the region map and fields.toml.
fn generate_heat(args: &GenerateArgs, out: &Path) -> anyhow::Result<()> {
    let mut spec = HeatRegionsSpec::profile(args.profile.as_deref().unwrap_or("quick"))?;
    let map = match &args.regions {
        Some(path) => {
            Some(read_region_map(path).with_context(|| format!("reading the region map {}", path.display()))?)
        }
        None => None,
    };
    spec.size = args.size.or(map.as_ref().map(|m| m.nrows())).unwrap_or(spec.size);
    if let Some(runs) = args.runs {
        (spec.train_runs, spec.val_runs, spec.test_runs) = (runs, runs, runs);
    }
    spec.frames = args.frames.unwrap_or(spec.frames);
    let start = std::time::Instant::now();
    let data = match (&map, &args.regions) {
        (Some(map), Some(path)) => generate_heat_regions(&spec, map, args.seed).map(|mut d| {
            d.manifest.region_source = Some(path.display().to_string());
            d
        }),
        _ => generate_heat_regions_grown(&spec, args.seed),
    }
    .with_context(|| format!("generating {HEAT_REGIONS}"))?;
    let generated = start.elapsed();
    data.write(out).with_context(|| format!("writing {}", out.display()))?;
    println!(
        "wrote {HEAT_REGIONS} to {} (generated in {:.2} s, written in {:.2} s)",
        out.display(),
        generated.as_secs_f64(),
        (start.elapsed() - generated).as_secs_f64()
    );
    for (name, set) in data.splits() {
        println!("  {name:<6} fields {:?}", set.fields.shape());
    }
    if let Some(m) = &data.regions {
        let source = data.manifest.region_source.as_deref().unwrap_or("supplied");
        println!("  regions {:?} ({source}), cells per region {:?}", m.dim(), data.manifest.region_cells);
    }
    Ok(())
}
