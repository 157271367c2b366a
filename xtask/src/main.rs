//! Project automation: `cargo xtask reproduce | bench`.

mod bench;
mod flags;
mod reproduce;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    mixer_experiments::flush_subnormals_in_process();
    mixer_experiments::init_logging("info,diffsol=warn");
    match flags::Xtask::parse().command {
        flags::Command::Reproduce(args) => reproduce::run(args),
        flags::Command::Bench(args) => bench::run(args),
    }
}
