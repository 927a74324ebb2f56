//! The `dino-core` subcommands that apply a trained model (`bundle`, `embed-audio`,
//! `verify`, `score`, `export`), flattened into the binary's command list.

use std::path::PathBuf;

use clap::{ArgGroup, Subcommand};
use stage_kit::DeviceSpec;

use crate::apply::embed_audio::{self, EmbedAudioRequest, EmbedOptions};
use crate::apply::export::{self, ExportRequest};
use crate::apply::model_file::{self, BundleRequest};
use crate::apply::score::{self, ScoreRequest, Utterances};
use crate::apply::verify::{self, VerifyRequest};
use crate::embed::EmbedConfig;

/// Commands on a trained model.
#[derive(Subcommand)]
pub enum ApplyCommand {
    /// Write a self-contained model file: a checkpoint's encoder with the training audio
    /// cache's decoding/VAD options, the training-set embedding mean and provenance.
    Bundle {
        /// pretrain's or finetune's model.safetensors.
        #[arg(long)]
        checkpoint: PathBuf,
        /// The audio cache the model was trained on.
        #[arg(long)]
        audio_cache: PathBuf,
        /// The training set's embeddings by this checkpoint (`dino-core embed`).
        #[arg(long)]
        mean_embeddings: PathBuf,
        /// Pipeline name recorded in the provenance.
        #[arg(long)]
        pipeline: Option<String>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Embed audio files, folders (recursively) and list files (`path` or `utt_id path`
    /// lines) with a model: Parquet, .npy (+ .index.tsv) or embeddings.h5 by the extension
    /// of --out; rejected files and reasons in <out>.rejects.parquet.
    EmbedAudio {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Audio files, folders, list files (.txt, .lst, .list, .scp).
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Rejects table [default: <out>.rejects.parquet].
        #[arg(long)]
        rejects: Option<PathBuf>,
        #[command(flatten)]
        run: RunArgs,
        /// Embedding options (TOML with `dino-core embed`'s keys).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Write the headline numbers here.
        #[arg(long)]
        summary_json: Option<PathBuf>,
    },
    /// Same speaker? Cosine score of two recordings and a decision from an eval-sv
    /// calibration.json (or --threshold).
    Verify {
        #[arg(long)]
        model: PathBuf,
        a: PathBuf,
        b: PathBuf,
        /// calibration.json written by `downstream-eval sv` for this model.
        #[arg(long)]
        calibration: Option<PathBuf>,
        /// Accept raw scores above this instead.
        #[arg(long, value_parser = stage_kit::config::finite)]
        threshold: Option<f64>,
        /// Print the verdict as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Score a Kaldi/VoxCeleb trial list into a Kaldi score file (`enroll test score`).
    #[command(group(ArgGroup::new("source").required(true).args(["embeddings", "audio_root"])))]
    Score {
        #[arg(long)]
        model: PathBuf,
        /// Trial list: `label enroll test` or `enroll test` lines.
        #[arg(long)]
        trials: PathBuf,
        /// embeddings.h5 holding the trial list's utterances.
        #[arg(long)]
        embeddings: Option<PathBuf>,
        /// Folder the trial list's names are relative to (embedded on the fly).
        #[arg(long)]
        audio_root: Option<PathBuf>,
        /// Follow this calibration.json's scoring (length normalisation).
        #[arg(long)]
        calibration: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        run: RunArgs,
        /// Embedding options (TOML with `dino-core embed`'s keys).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Export the encoder (features in, embedding out) as TorchScript for PyTorch.
    Export {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

/// Options of the commands that embed audio.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Decoding threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Energy VAD on/off instead of the model's recorded choice.
    #[arg(long)]
    vad: Option<bool>,
    /// auto, cpu, cuda, cuda:N.
    #[arg(long)]
    device: Option<DeviceSpec>,
}

impl RunArgs {
    fn options(&self, model: PathBuf, config: EmbedConfig) -> EmbedOptions {
        EmbedOptions {
            model,
            threads: self.threads,
            vad: self.vad,
            embed: EmbedConfig {
                device: self.device.unwrap_or(config.device),
                ..config
            },
        }
    }
}

/// Runs one of the commands.
pub fn run(command: ApplyCommand) -> anyhow::Result<()> {
    match command {
        ApplyCommand::Bundle {
            checkpoint,
            audio_cache,
            mean_embeddings,
            pipeline,
            out,
        } => {
            let application = model_file::bundle(&BundleRequest {
                checkpoint,
                audio_cache,
                mean_embeddings,
                pipeline,
                out: out.clone(),
            })?;
            tracing::info!(
                "model file {} (VAD {}, mean of {} embeddings of {})",
                out.display(),
                if application.audio.vad { "on" } else { "off" },
                application.mean.count,
                application.mean.source
            );
        }
        ApplyCommand::EmbedAudio {
            model,
            out,
            inputs,
            rejects,
            run,
            config,
            summary_json,
        } => {
            let config: EmbedConfig = stage_kit::config::read_or_default(config.as_deref())?;
            let options = run.options(model.clone(), config);
            let report = embed_audio::run(&EmbedAudioRequest {
                model,
                inputs,
                out,
                rejects,
                threads: options.threads,
                vad: options.vad,
                embed: options.embed,
            })?;
            tracing::info!(
                "{} of {} utterances embedded ({} rejected, see {}) in {}, {:.1} utterances/s",
                report.embedded,
                report.utterances,
                report.rejected,
                report.rejects.display(),
                report.out.display(),
                report.utterances_per_second
            );
            if let Some(path) = summary_json {
                stage_kit::write_bytes_atomically(
                    &path,
                    serde_json::to_string_pretty(&report)?.as_bytes(),
                )?;
            }
        }
        ApplyCommand::Verify {
            model,
            a,
            b,
            calibration,
            threshold,
            json,
            run,
        } => {
            let verdict = verify::run(&VerifyRequest {
                model,
                a,
                b,
                calibration,
                threshold,
                threads: run.threads,
                vad: run.vad,
                device: run.device.unwrap_or_default(),
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&verdict)?);
            } else {
                print!("{verdict}");
            }
        }
        ApplyCommand::Score {
            model,
            trials,
            embeddings,
            audio_root,
            calibration,
            out,
            run,
            config,
        } => {
            let config: EmbedConfig = stage_kit::config::read_or_default(config.as_deref())?;
            let utterances = match (embeddings, audio_root) {
                (Some(path), _) => Utterances::Embeddings(path),
                (None, Some(root)) => Utterances::Audio(root),
                (None, None) => unreachable!("clap requires one source"),
            };
            let n = score::run(&ScoreRequest {
                embed: run.options(model.clone(), config),
                model,
                trials,
                utterances,
                out: out.clone(),
                calibration,
            })?;
            tracing::info!("{n} trial scores written to {}", out.display());
        }
        ApplyCommand::Export { model, out } => {
            let report = export::run(&ExportRequest { model, out })?;
            tracing::info!(
                "TorchScript encoder in {}: checked at {:?} frames, max difference {:.2e}",
                report.out.display(),
                report.checked_frames,
                report.max_abs_difference
            );
        }
    }
    Ok(())
}
