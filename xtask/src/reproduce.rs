//! `cargo xtask reproduce`: runs the plan in-process and writes the report.

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use mixer_experiments::{Plan, reproduce};

use crate::flags::ReproduceArgs;

/// Runs `cargo xtask reproduce`.
pub fn run(args: ReproduceArgs) -> anyhow::Result<()> {
    let plan = Plan::new(args.profile, &args.out).only(args.only.as_deref())?;
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("{msg:>16} [{elapsed_precise}] {wide_bar} {pos}/{len} solves")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    let progress = |name: &str| {
        let bar = bars.add(ProgressBar::new(0));
        bar.set_style(style.clone());
        bar.set_message(name.to_string());
        bar
    };
    let report = reproduce(&plan, &progress)?;
    let path = report.write_markdown(&args.out)?;
    for d in &report.datasets {
        println!("{:<16} {:>6.1} s  {}", d.name, d.seconds, d.dir.display());
    }
    println!("wrote {}", path.display());
    Ok(())
}
