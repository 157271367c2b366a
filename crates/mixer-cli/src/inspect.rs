//! `mixer inspect`: splits, shapes, environments and parameters of a dataset folder, or the
//! splits, grid and regions of a field dataset folder.

use std::path::{Path, PathBuf};

use clap::Args;
use mixer_core::{Split, TimeGrid};
use mixer_data::{is_field_dir, load_dir, load_field_dir, region_cells};

/// Arguments of `mixer inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Dataset folder (published layout) or field dataset folder (fields.toml).
    dir: PathBuf,
    /// Print every environment's parameters (default: the first 20 per split).
    #[arg(long)]
    all: bool,
}

/// Runs `mixer inspect`.
pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    if is_field_dir(&args.dir) {
        return inspect_fields(&args.dir);
    }
    let d = load_dir(&args.dir)?;
    println!("{}", args.dir.display());
    if let Some(m) = &d.manifest {
        println!("system {} — {}", m.system, m.description);
        println!("seed {}, rtol {:e}, atol {:e}, suggested keep_every {}", m.seed, m.rtol, m.atol, m.keep_every);
        for (i, f) in m.families.iter().enumerate() {
            println!(
                "family {i}: {} state [{}] parameters [{}] horizon {} solver {}",
                f.name,
                f.state.join(", "),
                f.parameters.join(", "),
                f.horizon,
                f.solver.map_or("none (closed form)".to_string(), |m| format!("{m:?}"))
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

/// Prints a field dataset folder: settings, each split's shape and value range, the regions.
fn inspect_fields(dir: &Path) -> anyhow::Result<()> {
    let d = load_field_dir(dir)?;
    let m = &d.manifest;
    println!("{}", dir.display());
    println!("fields {} — {}", m.name, m.description);
    let (h, w) = d.train.grid();
    println!(
        "grid {h}x{w}, {} channel(s), {} frames, dt {}, seed {}",
        d.train.channels(),
        d.train.frames(),
        d.train.dt,
        m.seed
    );
    for p in &m.parameters {
        let values: Vec<String> = p.values.iter().map(|v| format!("{v}")).collect();
        println!("parameter {} = {}", p.name, values.join(", "));
    }
    for (name, set) in d.splits() {
        let (lo, hi) = set.fields.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
        let (r, k, hh, ww, c) = set.fields.dim();
        println!("{name:<6} fields [runs {r}, frames {k}, H {hh}, W {ww}, C {c}] values in [{lo:.4}, {hi:.4}]");
    }
    match &d.regions {
        Some(map) => {
            let cells = region_cells(map);
            let source = m.region_source.as_deref().unwrap_or("supplied");
            println!("regions {} ({source})", cells.len());
            for (r, n) in cells.iter().enumerate() {
                let share = 100.0 * *n as f64 / map.len() as f64;
                match m.diffusivity.get(r) {
                    Some(dr) => println!("  region {r}: {n} cells ({share:.1} %), diffusivity {dr}"),
                    None => println!("  region {r}: {n} cells ({share:.1} %)"),
                }
            }
        }
        None => println!("regions none"),
    }
    Ok(())
}
