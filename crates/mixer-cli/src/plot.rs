//! `mixer plot`: trajectories and phase portraits per family of a dataset folder.

use std::path::PathBuf;

use clap::Args;
use mixer_core::Split;
use mixer_data::load_split;

/// Arguments of `mixer plot`.
#[derive(Args, Debug)]
pub struct PlotArgs {
    /// Dataset folder (published layout).
    dir: PathBuf,
    /// Output PNG file.
    #[arg(long)]
    out: PathBuf,
    /// Split to draw: train, test, adapt_train or adapt_test.
    #[arg(long, default_value = "train")]
    split: String,
}

/// Runs `mixer plot`.
pub fn run(args: PlotArgs) -> anyhow::Result<()> {
    let split = Split::ALL
        .into_iter()
        .find(|s| s.stem() == args.split)
        .ok_or_else(|| anyhow::anyhow!("unknown split `{}`: use train, test, adapt_train or adapt_test", args.split))?;
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
