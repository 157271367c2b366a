//! `cargo xtask reproduce`: runs the plan in-process and writes the report.

use std::path::PathBuf;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use mixer_experiments::{Plan, Report, reproduce, summary_cell};

use crate::flags::ReproduceArgs;

/// Runs `cargo xtask reproduce`.
pub fn run(args: ReproduceArgs) -> anyhow::Result<()> {
    let mut plan = Plan::new(args.profile, &args.out)?.only(args.only.as_deref())?;
    plan.root = workspace_root();
    plan.seed = args.seed;
    plan.device = args.device;
    plan.progress = true;
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("{msg:>16} [{elapsed_precise}] {wide_bar} {pos}/{len} solves")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    let progress = |name: &str| {
        let bar = bars.add(ProgressBar::new(0));
        bar.set_style(style.clone());
        bar.set_message(name.to_string());
        bar
    };
    let mut report = reproduce(&plan, &progress)?;
    // Keep the experiments of an earlier report that this run did not cover (`--only`).
    match Report::read(&args.out) {
        Ok(earlier) => report = report.merged_with(earlier),
        Err(e) if args.out.join("report.json").exists() => eprintln!("earlier report.json not merged: {e}"),
        Err(_) => {}
    }
    let report = report.with_comparisons()?;
    let path = report.write(&args.out)?;
    for d in &report.datasets {
        println!("{:<16} {:>6.1} s  {}", d.name, d.seconds, d.dir.display());
    }
    if !report.experiments.is_empty() {
        println!("scores: mean ± std (median) over environments");
    }
    for e in &report.experiments {
        for r in &e.runs {
            let x = &r.metrics;
            let purity = x.routing.purity.map_or_else(String::new, |p| format!("  purity {p:.3}"));
            let env = x.in_domain.rel_l2_env.as_ref().map_or_else(|| "–".to_string(), summary_cell);
            println!(
                "{:<16} {:<10} {:<14} in-domain mse {}  rel_l2 {}  rel_l2_env {env}  adapt mse {}{purity}",
                e.name,
                r.source,
                r.variant.label(),
                summary_cell(&x.in_domain.mse),
                summary_cell(&x.in_domain.rel_l2),
                summary_cell(&x.adaptation.bulk.mse)
            );
        }
    }
    for e in &report.pde_experiments {
        for r in &e.runs {
            let z = &r.zero_shot;
            let accuracy = z.best_router_accuracy().map_or_else(String::new, |a| format!("  router accuracy {a:.3}"));
            println!(
                "{:<16} {:<14} zero-shot rel_l2 1-step {:.4}  rollout {:.4}{accuracy}",
                e.name,
                r.variant.name(),
                z.mean_one_step(),
                z.mean_rollout()
            );
        }
    }
    for e in &report.continual_experiments {
        for r in &e.runs {
            let m = &r.metrics;
            let show = |v: Option<f64>| v.map_or_else(|| "–".to_string(), |v| format!("{v:.1}"));
            println!(
                "{:<16} {:<10} {:<10} average final reward {}  average forgetting {}",
                e.name,
                m.system,
                r.method.name(),
                show(m.average_final_reward),
                show(m.average_forgetting)
            );
        }
    }
    for e in &report.sequence_experiments {
        for r in &e.runs {
            let m = &r.metrics;
            println!(
                "{:<16} {:<14} context k-means NMI {:.3} accuracy {:.3}  routing NMI {:.3} accuracy {:.3}",
                e.name, r.variant, m.cluster_nmi, m.cluster_accuracy, m.routing_nmi, m.routing_accuracy
            );
        }
    }
    for e in &report.scaling_experiments {
        for p in &e.points {
            let show = |v: Option<f64>| v.map_or_else(|| "–".to_string(), |v| format!("{v:.3}"));
            println!(
                "{:<16} {:<16} {:>2} families x {:>3} environments  {:.3} s / outer step  purity {}  NMI {}",
                e.name,
                p.sweep,
                p.families,
                p.environments,
                p.seconds_per_outer_step,
                show(p.purity),
                show(p.nmi)
            );
        }
    }
    println!("wrote {}", path.display());
    Ok(())
}

/// The workspace root (published-data paths in experiment files are relative to it).
fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}
