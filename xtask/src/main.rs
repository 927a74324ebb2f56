//! `cargo xtask <command>`: see `cargo xtask --help`.

use std::path::PathBuf;
use std::process::Command;

use clap::{Parser, Subcommand};
use xtask::{bench, command, device_check, fixture, pipeline, setup, slurm_local, workspace};

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
    /// Setup, then formatting, lints and the whole test suite (release profile, so that the
    /// end-to-end tests' pipeline binaries come from the same build): what CI runs.
    Test,
    /// Run a benchmark (probe, features, score, kmeans, cluster, train, loader); prints ratios to references.
    Bench { name: String },
    /// Build the GPU-machine bundle (target/device-bundle) and run its checks here, or with
    /// --dry-run only build it and list the checks.
    DeviceCheck {
        #[arg(long)]
        dry_run: bool,
    },
    /// Run a pipeline (pipelines/NAME.toml or a path): every stage that is not up to date.
    Pipeline(PipelineArgs),
    /// Show each stage of a pipeline: state, wall time, metrics or why it would rerun.
    Status {
        name: String,
        /// Corpus roots, NAME=PATH (as for `pipeline`).
        #[arg(long = "corpus", value_parser = corpus_root)]
        corpora: Vec<(String, PathBuf)>,
        #[arg(long)]
        run_dir: Option<PathBuf>,
        /// Changes to the pipeline file (as for `pipeline`).
        #[arg(long = "set", value_name = "SECTION.KEY=VALUE", value_parser = pipeline::Setting::parse)]
        settings: Vec<pipeline::Setting>,
        /// Pseudo-label rounds to show [default: the pipeline's, or more when the run folder
        /// holds the stages of more (a run with --rounds N)].
        #[arg(long)]
        rounds: Option<usize>,
    },
    /// A one-node Slurm cluster on this machine (127.0.0.1 only) for the Slurm executor.
    SlurmLocal {
        #[arg(value_enum)]
        action: SlurmAction,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SlurmAction {
    /// Install slurm-wlm and munge if missing (root), write the configuration, start the
    /// daemons, wait for the node to be idle.
    Start,
    /// Stop the daemons started by `start`, by pid.
    Stop,
    /// Show the daemons and `sinfo`.
    Status,
}

#[derive(clap::Args)]
struct PipelineArgs {
    /// Pipeline name (`fixture`, `ravdess`, `voxceleb`) or a TOML file.
    name: String,
    /// Print the plan (each stage, run or skip, and why) without running anything.
    #[arg(long)]
    dry_run: bool,
    /// Run only this stage (its inputs must be up to date).
    #[arg(long, conflicts_with = "from")]
    only: Option<String>,
    /// Rerun this stage and everything downstream of it.
    #[arg(long)]
    from: Option<String>,
    /// Rerun every stage.
    #[arg(long)]
    force: bool,
    /// Pseudo-labelling rounds (overrides the pipeline's).
    #[arg(long)]
    rounds: Option<usize>,
    /// Ranks per training stage on this machine (overrides `[pipeline] nproc_per_node`;
    /// how a stage runs, not what it computes: no stage reruns for it).
    #[arg(long, value_name = "N")]
    nproc_per_node: Option<usize>,
    /// Corpus roots, NAME=PATH; otherwise the pipeline's environment variables and defaults.
    #[arg(long = "corpus", value_parser = corpus_root)]
    corpora: Vec<(String, PathBuf)>,
    /// Change a key of the pipeline file, e.g. `--set cluster.method=plda` (TOML values; a
    /// bare word is a string); repeatable. The stages it changes rerun.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE", value_parser = pipeline::Setting::parse)]
    settings: Vec<pipeline::Setting>,
    /// Run folder (default: runs/<pipeline>).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Fail unless DINO's EER is below the no-learning baseline's on every trial list.
    #[arg(long)]
    require_improvement: bool,
    /// Where stages run: child processes here, or Slurm jobs (resources from `[slurm]`).
    #[arg(long, value_enum, default_value = "local")]
    executor: pipeline::Executor,
    /// Slurm: submit the whole pipeline and return; `status` or the next run records it.
    #[arg(long, requires = "executor")]
    submit_and_exit: bool,
}

fn corpus_root(value: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = value
        .split_once('=')
        .ok_or_else(|| format!("{value:?}: expected NAME=PATH"))?;
    Ok((name.to_owned(), PathBuf::from(path)))
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
            command::run(Command::new(&cargo).current_dir(&root).args([
                "test",
                "--workspace",
                "--release",
            ]))?;
        }
        Task::Bench { name } => bench::run(&name)?,
        Task::DeviceCheck { dry_run } => device_check::run(dry_run)?,
        Task::Pipeline(args) => {
            pipeline::run(&pipeline::Options {
                name: args.name,
                dry_run: args.dry_run,
                only: args.only,
                from: args.from,
                force: args.force,
                rounds: args.rounds,
                nproc_per_node: args.nproc_per_node,
                corpora: args.corpora.into_iter().collect(),
                settings: args.settings,
                run_dir: args.run_dir,
                require_improvement: args.require_improvement,
                executor: args.executor,
                submit_and_exit: args.submit_and_exit,
            })?;
        }
        Task::Status {
            name,
            corpora,
            run_dir,
            settings,
            rounds,
        } => pipeline::status(
            &name,
            run_dir,
            rounds,
            &corpora.into_iter().collect(),
            &settings,
        )?,
        Task::SlurmLocal { action } => match action {
            SlurmAction::Start => slurm_local::start()?,
            SlurmAction::Stop => slurm_local::stop()?,
            SlurmAction::Status => slurm_local::status()?,
        },
    }
    Ok(())
}
