//! `mixer inspect`: splits, shapes, environments and parameters of a dataset folder.

use std::path::PathBuf;

use clap::Args;
use mixer_core::{Split, TimeGrid};
use mixer_data::load_dir;

/// Arguments of `mixer inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Dataset folder (published layout).
    dir: PathBuf,
    /// Print every environment's parameters (default: the first 20 per split).
    #[arg(long)]
    all: bool,
}

/// Runs `mixer inspect`.
pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    let d = load_dir(&args.dir)?;
    println!("{}", args.dir.display());
    if let Some(m) = &d.manifest {
        println!("system {} — {}", m.system, m.description);
        println!("seed {}, rtol {:e}, atol {:e}, suggested keep_every {}", m.seed, m.rtol, m.atol, m.keep_every);
        for (i, f) in m.families.iter().enumerate() {
            println!(
                "family {i}: {} state [{}] parameters [{}] horizon {} solver {:?}",
                f.name,
                f.state.join(", "),
                f.parameters.join(", "),
                f.horizon,
                f.solver
            );
        }
    } else {
        println!("(no dataset.toml)");
    }
    for split in Split::ALL {
        let ds = d.split(split);
        let (e, n, k, dim) = ds.x.dim();
        let grid = match &ds.t {
            TimeGrid::Shared(t) => format!("t shared [{}, {}]", t[0], t[k - 1]),
            TimeGrid::PerEnv(ts) => {
                let hi = ts.iter().map(|t| t[k - 1]).fold(f64::NEG_INFINITY, f64::max);
                format!("t per environment, last time up to {hi}")
            }
        };
        let fams = ds.families.as_ref().map(|f| f.iter().max().map_or(0, |m| m + 1));
        println!(
            "\n{:<12} X [envs {e}, trajs {n}, steps {k}, dim {dim}]{} {grid}",
            split.stem(),
            fams.map(|f| format!(" in {f} families")).unwrap_or_default()
        );
        if let Some(info) = d.manifest.as_ref().and_then(|m| m.split(split.stem())) {
            let limit = if args.all { usize::MAX } else { 20 };
            for (i, env) in info.environments.iter().enumerate().take(limit) {
                let names = d.manifest.as_ref().map(|m| &m.families[env.family].parameters);
                let params: Vec<String> = env
                    .parameters
                    .iter()
                    .enumerate()
                    .map(|(j, v)| match names.and_then(|n| n.get(j)) {
                        Some(n) => format!("{n}={v:.6}"),
                        None => format!("{v:.6}"),
                    })
                    .collect();
                println!("  env {i:>3} family {:>2}: {}", env.family, params.join(" "));
            }
            if info.environments.len() > limit {
                println!("  ... {} more (--all)", info.environments.len() - limit);
            }
        }
    }
    Ok(())
}
