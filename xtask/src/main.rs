//! `cargo xtask <command>`: see `cargo xtask --help`.

use std::path::PathBuf;
use std::process::Command;

use clap::{Parser, Subcommand};
use xtask::{bench, command, fixture, setup, workspace};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Developer tasks of the speech-dino workspace"
)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Provision libtorch 2.11, system libraries and the Python reference tools (idempotent).
    Setup {
        /// Reinstall the Python packages even if they look current.
        #[arg(long)]
        force: bool,
    },
    /// Generate the synthetic fixture corpus.
    Fixture {
        #[arg(long, value_enum, default_value = "tiny")]
        size: fixture::Size,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output folder (default: target/fixture/<size>-seed<seed>).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Setup, then formatting, lints and the whole test suite: what CI runs.
    Test,
    /// Run a benchmark (probe, features, score, kmeans, train); prints ratios to references.
    Bench { name: String },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Task::Setup { force } => {
            setup::run(force)?;
        }
        Task::Fixture { size, seed, out } => {
            let out = out.unwrap_or_else(|| fixture::default_dir(size, seed));
            let started = std::time::Instant::now();
            let summary = fixture::generate(&out, size, seed)?;
            println!(
                "fixture {} ({:?}, seed {seed}): {} utterances, {:.2} h of speech, {} trials, {} emotion files, {} augmentation files ({:.1} s)",
                out.display(),
                size,
                summary.utterances,
                summary.speech_hours,
                summary.trials,
                summary.emotion_files,
                summary.augmentation_files,
                started.elapsed().as_secs_f64()
            );
        }
        Task::Test => {
            setup::ensure()?;
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let root = workspace::root();
            command::run(
                Command::new(&cargo)
                    .current_dir(&root)
                    .args(["fmt", "--all", "--check"]),
            )?;
            command::run(Command::new(&cargo).current_dir(&root).args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))?;
            command::run(
                Command::new(&cargo)
                    .current_dir(&root)
                    .args(["test", "--workspace"]),
            )?;
        }
        Task::Bench { name } => bench::run(&name)?,
    }
    Ok(())
}
