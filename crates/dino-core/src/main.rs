//! `dino-core`: DINO pretraining, embedding extraction and pseudo-label fine-tuning.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use dino_core::apply::cli::ApplyCommand;
use dino_core::embed::{self, EmbedConfig};
use dino_core::encoder::{Encoder, EncoderConfig, parameter_count};
use dino_core::finetune::{self, FinetuneConfig, FinetunePaths};
use dino_core::model_selection::{self, Rule};
use dino_core::pretrain::{self, PretrainConfig, PretrainPaths, StopAt};
use dino_core::runtime::RuntimeReport;
use dino_core::validation::ValidationSet;
use stage_kit::DeviceSpec;

#[derive(Parser)]
#[command(
    name = "dino-core",
    version,
    about = "DINO self-supervised speech embeddings on libtorch"
)]
struct Cli {
    /// Also write the log as JSON lines to this file.
    #[arg(long, global = true)]
    log_json: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// What pretraining and fine-tuning take alike.
#[derive(Args)]
struct TrainingArgs {
    /// Configuration (TOML); without one, the defaults (the paper's recipe).
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    audio_cache: PathBuf,
    /// MUSAN-like noise cache (augmentation).
    #[arg(long)]
    noise_cache: Option<PathBuf>,
    /// Room impulse response cache (augmentation).
    #[arg(long)]
    rir_cache: Option<PathBuf>,
    #[arg(long)]
    out_dir: PathBuf,
    /// Continue from the newest checkpoint in OUT_DIR/checkpoints.
    #[arg(long)]
    resume: bool,
    /// Override the configuration's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Override the configuration's device (auto, cpu, cuda, cuda:N).
    #[arg(long)]
    device: Option<DeviceSpec>,
    /// Stop after this many steps (a checkpoint is written there); for time-boxed runs.
    #[arg(long)]
    stop_after: Option<usize>,
    #[command(flatten)]
    parallel: ParallelArgs,
    #[command(flatten)]
    validation: ValidationArgs,
}

/// The validation set of `[validation]` (see `dino_core::validation`).
#[derive(Args)]
struct ValidationArgs {
    /// Manifest of the validation utterances (with emotion labels and folds when there is
    /// no trial list).
    #[arg(long, requires = "validation_cache")]
    validation_manifest: Option<PathBuf>,
    /// Audio cache holding the validation utterances.
    #[arg(long, requires = "validation_manifest")]
    validation_cache: Option<PathBuf>,
    /// Trial list (`trials.parquet`) scored with EER and minDCF; without one, micro-F1 on
    /// the manifest's emotion folds.
    #[arg(long, requires = "validation_manifest")]
    validation_trials: Option<PathBuf>,
}

impl ValidationArgs {
    fn set(self) -> Option<ValidationSet> {
        Some(ValidationSet {
            manifest: self.validation_manifest?,
            audio_cache: self.validation_cache?,
            trials: self.validation_trials,
        })
    }
}

/// How many processes share the work (never part of a stage's identity).
#[derive(Args)]
struct ParallelArgs {
    /// Start N ranks on this machine (torchrun's standalone mode), each on its share of the
    /// global batch; ignored when rendezvous variables (torchrun's, Slurm's) are already set.
    #[arg(long, value_name = "N")]
    nproc_per_node: Option<usize>,
    /// Seconds a rank waits for the others, to join and in each collective, before failing.
    #[arg(long, value_name = "SECONDS", default_value_t = 1800.0)]
    dist_timeout: f64,
}

/// The option the launcher removes from its ranks' arguments.
const NPROC_OPTION: &str = "--nproc-per-node";

/// The configurations `check-config` knows, by the subcommand that reads them.
#[derive(Clone, Copy, ValueEnum)]
enum ConfigKind {
    Pretrain,
    Finetune,
    Embed,
}

#[derive(Subcommand)]
enum Command {
    /// Print the libtorch version, thread counts, and CUDA availability with device names.
    Doctor,
    /// Check a configuration file without running anything: unknown or ill-typed keys and
    /// values that cannot work are errors naming the key (the pipeline runner calls this
    /// when it plans).
    CheckConfig {
        /// The subcommand the configuration is for.
        kind: ConfigKind,
        /// The TOML file.
        config: PathBuf,
    },
    /// Print the parameter count of each encoder preset (or of a configuration file's encoder).
    Describe {
        /// A pretraining configuration whose `model.encoder` to describe.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Self-supervised DINO pretraining on the utterances of a manifest.
    Pretrain {
        #[arg(long)]
        manifest: PathBuf,
        #[command(flatten)]
        run: TrainingArgs,
    },
    /// Supervised fine-tuning (AAM-softmax) of a checkpoint's encoder on kept pseudo-labels.
    Finetune {
        /// Checkpoint whose encoder to start from (DINO's model.safetensors or a previous round's).
        #[arg(long)]
        init: PathBuf,
        #[arg(long)]
        pseudo_labels: PathBuf,
        #[command(flatten)]
        run: TrainingArgs,
    },
    /// Embeddings of every utterance of a manifest with a checkpoint's encoder.
    Embed {
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long)]
        manifest: PathBuf,
        #[arg(long)]
        audio_cache: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        device: Option<DeviceSpec>,
        /// Override the configuration's representation (the layer written).
        #[arg(long)]
        representation: Option<stage_kit::Representation>,
        /// Write the headline numbers here.
        #[arg(long)]
        summary_json: Option<PathBuf>,
        /// Embed only this shard's batches (`i/N`) into `--out`; `merge-embeddings` joins
        /// the N files into the unsharded one.
        #[arg(long, default_value_t = stage_kit::Shard::WHOLE)]
        shard: stage_kit::Shard,
        /// Start N local ranks, each embedding shard `rank/N` into a part beside `--out`,
        /// then join the parts into `--out` (under torchrun or srun, each rank writes its
        /// part, for `merge-embeddings`).
        #[arg(long, value_name = "N")]
        nproc_per_node: Option<usize>,
    },
    /// Writes the model of a training run that a rule picks: `last`, `best-validation` (the
    /// epoch model that validated best) or `average:N` (the mean of the last N epoch models).
    SelectModel {
        /// The training run's output folder.
        #[arg(long)]
        run: PathBuf,
        /// The rule; without one, the `checkpoint` of the embedding configuration.
        #[arg(long)]
        rule: Option<Rule>,
        /// Embedding configuration (TOML) whose `checkpoint` names the rule.
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        /// Write what was selected (rule, source files, validation) here.
        #[arg(long)]
        summary_json: Option<PathBuf>,
    },
    /// Joins the embeddings files of `embed --shard i/N` into one, in manifest order.
    MergeEmbeddings {
        #[arg(long)]
        manifest: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// The shard files.
        #[arg(required = true)]
        shards: Vec<PathBuf>,
    },
    #[command(flatten)]
    Apply(ApplyCommand),
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    stage_kit::logging::init(cli.log_json.as_deref())?;
    if let Some(parallel) = cli.command.parallel() {
        if let Some(code) = launch_ranks(parallel)? {
            return Ok(ExitCode::from(code.clamp(0, 255) as u8));
        }
        dino_core::distributed::set_timeout(Duration::from_secs_f64(parallel.dist_timeout));
    }
    match cli.command {
        Command::Doctor => print!("{}", RuntimeReport::collect()),
        Command::CheckConfig { kind, config } => {
            let path = Some(config.as_path());
            match kind {
                ConfigKind::Pretrain => {
                    stage_kit::config::read_or_default::<PretrainConfig>(path)?.check()?
                }
                ConfigKind::Finetune => {
                    stage_kit::config::read_or_default::<FinetuneConfig>(path)?.check()?
                }
                ConfigKind::Embed => {
                    stage_kit::config::read_or_default::<EmbedConfig>(path)?.check()?
                }
            }
        }
        Command::Describe { config } => describe(config.as_deref())?,
        Command::Apply(command) => dino_core::apply::cli::run(command)?,
        Command::Pretrain { manifest, run } => {
            let mut config: PretrainConfig =
                stage_kit::config::read_or_default(run.config.as_deref())?;
            config.seed = run.seed.unwrap_or(config.seed);
            config.device = run.device.unwrap_or(config.device);
            let paths = PretrainPaths {
                manifest,
                audio_cache: run.audio_cache,
                noise_cache: run.noise_cache,
                rir_cache: run.rir_cache,
                out_dir: run.out_dir,
                validation: run.validation.set(),
            };
            let stop = StopAt {
                step: run.stop_after,
            };
            match pretrain::run(&config, &paths, run.resume, stop)? {
                Some(report) => tracing::info!(
                    "pretraining done: {} steps, final loss {:.4}, data wait {:.1} %, {:.0} s",
                    report.steps,
                    report.final_loss,
                    100.0 * report.mean_data_wait_share,
                    report.wall_seconds
                ),
                None => {
                    tracing::info!("pretraining stopped early; rerun with --resume to continue")
                }
            }
        }
        Command::Finetune {
            init,
            pseudo_labels,
            run,
        } => {
            let mut config: FinetuneConfig =
                stage_kit::config::read_or_default(run.config.as_deref())?;
            config.seed = run.seed.unwrap_or(config.seed);
            config.device = run.device.unwrap_or(config.device);
            let paths = FinetunePaths {
                init,
                pseudo_labels,
                audio_cache: run.audio_cache,
                noise_cache: run.noise_cache,
                rir_cache: run.rir_cache,
                out_dir: run.out_dir,
                validation: run.validation.set(),
            };
            match finetune::run(&config, &paths, run.resume, run.stop_after)? {
                Some(report) => tracing::info!(
                    "fine-tuning done: {} steps over {} classes, final loss {:.4}, accuracy {:.1} %, {:.0} s",
                    report.steps,
                    report.classes,
                    report.final_loss,
                    100.0 * report.final_accuracy,
                    report.wall_seconds
                ),
                None => {
                    tracing::info!("fine-tuning stopped early; rerun with --resume to continue")
                }
            }
        }
        Command::Embed {
            checkpoint,
            manifest,
            audio_cache,
            out,
            config,
            device,
            representation,
            summary_json,
            shard,
            nproc_per_node,
        } => {
            let rendezvous = process_group::Rendezvous::from_env()?;
            let (shard, out) = if rendezvous.source != process_group::rendezvous::Source::Single {
                let shard = stage_kit::Shard {
                    index: rendezvous.rank,
                    count: rendezvous.world_size,
                };
                (shard, shard_part(&out, shard))
            } else if let Some(n) = nproc_per_node.filter(|&n| n > 1) {
                return embed_ranks(n, &manifest, &out);
            } else {
                (shard, out)
            };
            let mut config: EmbedConfig = stage_kit::config::read_or_default(config.as_deref())?;
            config.device = device.unwrap_or(config.device);
            config.representation = representation.unwrap_or(config.representation);
            if shard.count > 1 {
                // A rank's GPU is cuda:LOCAL_RANK under `auto` and `cuda`.
                config.device = match dino_core::distributed::device(config.device)? {
                    tch::Device::Cuda(i) => DeviceSpec::Cuda(Some(i)),
                    _ => config.device,
                };
            }
            let report =
                embed::run_shard(&checkpoint, &manifest, &audio_cache, &out, &config, shard)?;
            tracing::info!(
                "{} embeddings of dimension {} ({:.2} h of audio, {:.0}x real time) in {}",
                report.utterances,
                report.dim,
                report.audio_hours,
                report.speed,
                out.display()
            );
            if let Some(path) = summary_json {
                stage_kit::write_bytes_atomically(
                    &path,
                    serde_json::to_string_pretty(&report)?.as_bytes(),
                )?;
            }
        }
        Command::SelectModel {
            run,
            rule,
            config,
            out,
            summary_json,
        } => {
            let config: EmbedConfig = stage_kit::config::read_or_default(config.as_deref())?;
            let selected = model_selection::select(&run, rule.unwrap_or(config.checkpoint), &out)?;
            if let Some(path) = summary_json {
                stage_kit::write_bytes_atomically(
                    &path,
                    serde_json::to_string_pretty(&selected)?.as_bytes(),
                )?;
            }
        }
        Command::MergeEmbeddings {
            manifest,
            out,
            shards,
        } => {
            let n = embed::merge_shards(&manifest, &shards, &out)?;
            tracing::info!(
                "{n} embeddings from {} shard(s) in {}",
                shards.len(),
                out.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

impl Command {
    /// The parallelism options of the commands that have them.
    fn parallel(&self) -> Option<&ParallelArgs> {
        match self {
            Command::Pretrain { run, .. } | Command::Finetune { run, .. } => Some(&run.parallel),
            Command::Doctor
            | Command::Describe { .. }
            | Command::Embed { .. }
            | Command::CheckConfig { .. }
            | Command::Apply(_)
            | Command::SelectModel { .. }
            | Command::MergeEmbeddings { .. } => None,
        }
    }
}

/// With `--nproc-per-node N` (N > 1) outside a rendezvous, runs this command as N local ranks
/// and returns the launch's exit code; `None` when this process is to do the work itself.
fn launch_ranks(parallel: &ParallelArgs) -> anyhow::Result<Option<i32>> {
    let Some(nproc) = parallel.nproc_per_node else {
        return Ok(None);
    };
    if nproc == 0 {
        anyhow::bail!("{NPROC_OPTION} must be at least 1");
    }
    let rendezvous = process_group::Rendezvous::from_env()?;
    if rendezvous.source != process_group::rendezvous::Source::Single {
        tracing::info!(
            "rank {} of {} from {:?} variables: {NPROC_OPTION} {nproc} is not used",
            rendezvous.rank,
            rendezvous.world_size,
            rendezvous.source
        );
        return Ok(None);
    }
    if nproc == 1 {
        return Ok(None);
    }
    let launch = process_group::launch::Launch {
        program: std::env::current_exe()?,
        args: process_group::launch::without_option(std::env::args_os().skip(1), NPROC_OPTION),
        nproc,
    };
    Ok(Some(process_group::launch::run(&launch)?))
}

/// Where rank `shard.index` of `embed --nproc-per-node` (or torchrun) writes its part of `out`.
fn shard_part(out: &Path, shard: stage_kit::Shard) -> PathBuf {
    out.with_extension(format!("part-{}-of-{}.h5", shard.index, shard.count))
}

/// `embed --nproc-per-node N`: N local ranks each embed their shard, then the parts are
/// joined into `out` in manifest order and removed.
fn embed_ranks(nproc: usize, manifest: &Path, out: &Path) -> anyhow::Result<ExitCode> {
    let launch = process_group::launch::Launch {
        program: std::env::current_exe()?,
        args: process_group::launch::without_option(std::env::args_os().skip(1), NPROC_OPTION),
        nproc,
    };
    let code = process_group::launch::run(&launch)?;
    if code != 0 {
        return Ok(ExitCode::from(code.clamp(1, 255) as u8));
    }
    let parts: Vec<PathBuf> = (0..nproc)
        .map(|index| {
            shard_part(
                out,
                stage_kit::Shard {
                    index,
                    count: nproc,
                },
            )
        })
        .collect();
    let n = embed::merge_shards(manifest, &parts, out)?;
    for part in &parts {
        std::fs::remove_file(part)?;
    }
    tracing::info!("{n} embeddings from {nproc} ranks in {}", out.display());
    Ok(ExitCode::SUCCESS)
}

fn describe(config: Option<&Path>) -> anyhow::Result<()> {
    let count = |encoder: &EncoderConfig| {
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let _ = Encoder::new(&vs.root(), encoder);
        parameter_count(&vs)
    };
    match config {
        Some(path) => {
            let config: PretrainConfig = stage_kit::config::read_or_default(Some(path))?;
            println!(
                "{}: {} parameters",
                path.display(),
                count(&config.model.encoder)
            );
        }
        None => {
            for name in EncoderConfig::PRESETS {
                let encoder = EncoderConfig::preset(name).expect("listed preset");
                println!(
                    "{name:<12} {:>11} parameters, {}-dim embedding",
                    count(&encoder),
                    encoder.embedding_dim()
                );
            }
        }
    }
    Ok(())
}
