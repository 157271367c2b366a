//! Project automation: `cargo xtask reproduce | bench`.

mod bench;
mod flags;
mod reproduce;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,diffsol=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match flags::Xtask::parse().command {
        flags::Command::Reproduce(args) => reproduce::run(args),
        flags::Command::Bench(args) => bench::run(args),
    }
}
