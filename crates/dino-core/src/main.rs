//! `dino-core`: DINO pretraining, embedding extraction and fine-tuning stages.

use clap::{Parser, Subcommand};
use dino_core::runtime::RuntimeReport;

#[derive(Parser)]
#[command(
    name = "dino-core",
    version,
    about = "DINO self-supervised speech embeddings on libtorch"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the libtorch version, thread counts, and CUDA availability with device names.
    Doctor,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Doctor => print!("{}", RuntimeReport::collect()),
    }
    Ok(())
}
