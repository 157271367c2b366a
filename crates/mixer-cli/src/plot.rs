//! `mixer plot`: trajectories and phase portraits per family of a dataset folder, or the region
//! map and frames of one run of a field dataset folder.

use std::path::{Path, PathBuf};

use clap::Args;
use mixer_core::Split;
use mixer_data::{FIELD_SPLITS, is_field_dir, load_field_dir, load_split};

/// Arguments of `mixer plot`.
#[derive(Args, Debug)]
pub struct PlotArgs {
    /// Dataset folder (published layout) or field dataset folder (fields.toml).
    dir: PathBuf,
    /// Output PNG file.
    #[arg(long)]
    out: PathBuf,
    /// Split to draw: train, test, adapt_train or adapt_test (default train); for field folders
    /// train, val or test (default test).
    #[arg(long)]
    split: Option<String>,
    /// Field folders: the run to draw.
    #[arg(long, default_value_t = 0)]
    run: usize,
}

/// Runs `mixer plot`.
pub fn run(args: PlotArgs) -> anyhow::Result<()> {
    if is_field_dir(&args.dir) {
        return plot_fields(&args.dir, &args.out, args.split.as_deref().unwrap_or("test"), args.run);
    }
    let name = args.split.as_deref().unwrap_or("train");
    let split = Split::ALL
        .into_iter()
        .find(|s| s.stem() == name)
        .ok_or_else(|| anyhow::anyhow!("unknown split `{name}`: use train, test, adapt_train or adapt_test"))?;
    let data = load_split(&args.dir, split)?;
    let manifest_path = args.dir.join(mixer_data::MANIFEST_FILE);
    let manifest = if manifest_path.is_file() { Some(mixer_data::Manifest::read(&manifest_path)?) } else { None };
    let (title, state, families) = match &manifest {
        Some(m) => (
            format!("{} ({})", m.system, split.stem()),
            m.families.first().map(|f| f.state.clone()).unwrap_or_default(),
            m.families.iter().map(|f| f.name.clone()).collect(),
        ),
        None => (format!("{} ({})", args.dir.display(), split.stem()), Vec::new(), Vec::new()),
    };
    let path = mixer_experiments::plot::plot_dataset(&args.out, &title, &data, &state, &families)?;
    println!("wrote {}", path.display());
    Ok(())
}

/// Draws the region map and five frames of run `run` of split `split` of a field folder.
fn plot_fields(dir: &Path, out: &Path, split: &str, run: usize) -> anyhow::Result<()> {
    let d = load_field_dir(dir)?;
    let set =
        d.split(split).ok_or_else(|| anyhow::anyhow!("unknown split `{split}`: use {}", FIELD_SPLITS.join(", ")))?;
    let title = format!("{} ({split}, run {run})", d.name);
    let path = mixer_experiments::plot::plot_fields(out, &title, set, run, d.regions.as_ref())?;
    println!("wrote {}", path.display());
    Ok(())
}
