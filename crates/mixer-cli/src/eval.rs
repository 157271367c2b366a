//! `mixer eval`: in-domain and adaptation metrics of a trained run, written to metrics.json.

use std::path::PathBuf;

use clap::Args;

use mixer_experiments::{BackendJob, DeviceChoice, RunData, eval_run, read_run_config, summary_cell};

/// Arguments of `mixer eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A trained run folder.
    #[arg(long)]
    run: PathBuf,
    /// Data folder (test for in-domain, adapt_train / adapt_test for adaptation).
    #[arg(long)]
    data: PathBuf,
    /// Device: cpu, flex, ndarray or cuda.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    /// Field runs: steps of the scored free-running rollout.
    #[arg(long, default_value_t = 100)]
    rollout_steps: usize,
}

struct Job {
    data: RunData,
    args: EvalArgs,
}

impl BackendJob for Job {
    type Output = anyhow::Result<()>;

    fn run<B: mixer_experiments::AutodiffBackend>(self, device: B::Device, label: &str) -> Self::Output {
        let m = eval_run::<B>(&self.args.run, &self.data, &device, label)?;
        let rows = [
            ("in-domain", &m.in_domain),
            ("adapt (bulk)", &m.adaptation.bulk),
            ("adapt (seq.)", &m.adaptation.sequential),
        ];
        println!("{:<14} {:<11} mean ± std (median) over environments", "split", "metric");
        for (name, r) in rows {
            let scores = [("mse", Some(&r.mse)), ("rel_l2", Some(&r.rel_l2)), ("rel_l2_env", r.rel_l2_env.as_ref())];
            for (i, (metric, s)) in scores.into_iter().enumerate() {
                let split = if i == 0 { name } else { "" };
                let cell = s.map_or_else(|| "–".to_string(), summary_cell);
                println!("{split:<14} {metric:<11} {cell}");
            }
            if let Some(lt) = &r.long_term {
                for (metric, s) in [("D_stsp", &lt.dstsp), ("D_H", &lt.hellinger), ("MASE", &lt.mase)] {
                    println!("{:<14} {metric:<11} {}", "", summary_cell(s));
                }
            }
        }
        if let (Some(p), Some(n)) = (m.routing.purity, m.routing.nmi) {
            println!("routing        purity {p:.3}   nmi {n:.3}");
        }
        println!("routing        assignment {:?}", m.routing.assignment);
        println!("metrics written to {}", self.args.run.join("metrics.json").display());
        Ok(())
    }
}

/// Runs `mixer eval`.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    if mixer_train::is_field_run(&args.run) {
        return crate::field::eval(args.run, &args.data, args.rollout_steps, args.device);
    }
    let config = read_run_config(&args.run)?;
    let data = RunData::load(&args.data, config.data.subsample)?;
    let device = args.device;
    mixer_experiments::dispatch(device, Job { data, args })?
}
