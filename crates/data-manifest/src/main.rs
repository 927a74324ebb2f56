//! `data-manifest`: corpus scanners, trial lists and manifest utilities.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use data_manifest::UtteranceManifest;

#[derive(Parser)]
#[command(name = "data-manifest", version, about = "Corpus manifests as Parquet")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the first rows of an utterance manifest.
    Show {
        manifest: PathBuf,
        #[arg(long, default_value_t = 10)]
        rows: usize,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Show { manifest, rows } => {
            let m = UtteranceManifest::read(&manifest)?;
            println!(
                "{} utterances, corpus root {}",
                m.utterances.len(),
                m.corpus_root.display()
            );
            for u in m.utterances.iter().take(rows) {
                println!("{u:?}");
            }
        }
    }
    Ok(())
}
