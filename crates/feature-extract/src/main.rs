//! `feature-extract`: decode, resample, VAD, fbank and augmentation into HDF5 caches.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use feature_extract::Embeddings;

#[derive(Parser)]
#[command(
    name = "feature-extract",
    version,
    about = "Speech features and HDF5 caches"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Summarise an embeddings file.
    ShowEmbeddings { path: PathBuf },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::ShowEmbeddings { path } => {
            let e = Embeddings::read(&path)?;
            println!(
                "{} embeddings of dimension {} ({})",
                e.utt_ids.len(),
                e.dim(),
                e.description
            );
        }
    }
    Ok(())
}
