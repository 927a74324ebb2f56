//! `feature-extract`: decode, resample, VAD, fbank and augmentation into HDF5 caches.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use data_manifest::UtteranceManifest;
use feature_extract::Embeddings;
use feature_extract::cache::{self, AudioCache, FbankCache, FbankDtype};
use feature_extract::decode::Downmix;
use feature_extract::prepare::{self, PrepareConfig, PrepareRequest};
use stage_kit::Shard;

#[derive(Parser)]
#[command(
    name = "feature-extract",
    version,
    about = "Speech features and HDF5 caches"
)]
struct Cli {
    /// Also write the log as JSON lines to this file.
    #[arg(long, global = true)]
    log_json: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Decode a manifest's audio into a packed audio cache and/or fbank cache (resumable).
    Prepare {
        /// utterances.parquet to read.
        #[arg(long)]
        manifest: PathBuf,
        /// Audio cache to write (int16 at --sample-rate).
        #[arg(long)]
        audio_out: Option<PathBuf>,
        /// Fbank cache to write.
        #[arg(long)]
        fbank_out: Option<PathBuf>,
        /// Drop unvoiced frames (Kaldi energy VAD) before caching: `--vad` or `--vad true` turns
        /// it on, `--vad false` off, whatever the config says [default: the config's, off].
        #[arg(long, num_args = 0..=1, default_missing_value = "true")]
        vad: Option<bool>,
        /// How multi-channel files become mono: mean, or first (multi-microphone RIRs)
        /// [default: the config's, mean].
        #[arg(long, value_parser = parse_downmix)]
        downmix: Option<Downmix>,
        /// Sample rate of the caches [default: the config's, 16000].
        #[arg(long)]
        sample_rate: Option<u32>,
        /// Storage type of the fbank cache [default: the config's, f32].
        #[arg(long, value_parser = parse_dtype)]
        fbank_dtype: Option<FbankDtype>,
        /// Part of the manifest to do, i/N (utterances i, i+N, ...).
        #[arg(long, default_value = "0/1")]
        shard: Shard,
        /// Worker threads (0: one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Fail when more than this share of the utterances is rejected.
        #[arg(long, default_value_t = 0.01, value_parser = stage_kit::config::fraction)]
        max_reject_fraction: f64,
        /// Write the rejected files and reasons here (Parquet).
        #[arg(long)]
        rejects: Option<PathBuf>,
        /// TOML config: sample_rate, downmix, vad, part_size, fbank_dtype, [fbank],
        /// [vad_options].
        #[arg(long)]
        config: Option<PathBuf>,
        /// Write counts, throughput and the resolved config here (JSON).
        #[arg(long)]
        summary_json: Option<PathBuf>,
    },
    /// Check a prepare configuration file without running anything: unknown or ill-typed
    /// keys and values that cannot work are errors naming the key (the pipeline runner calls
    /// this when it plans).
    CheckConfig {
        /// The subcommand the configuration is for (prepare).
        #[arg(value_parser = ["prepare"])]
        kind: String,
        /// The TOML file.
        config: PathBuf,
    },
    /// Concatenate caches (the shards of a prepare run) into one.
    Merge {
        /// The merged cache.
        #[arg(long)]
        output: PathBuf,
        /// Order the utterances as this manifest (the one the shards were prepared from):
        /// the merged cache then equals the unsharded run's.
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// Caches to concatenate, in order.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
    },
    /// Summarise an audio or fbank cache.
    ShowCache { path: PathBuf },
    /// Summarise an embeddings file.
    ShowEmbeddings { path: PathBuf },
}

fn parse_downmix(s: &str) -> Result<Downmix, String> {
    match s {
        "mean" => Ok(Downmix::Mean),
        "first" => Ok(Downmix::First),
        _ => Err(format!("{s:?}: expected mean or first")),
    }
}

fn parse_dtype(s: &str) -> Result<FbankDtype, String> {
    match s {
        "f32" => Ok(FbankDtype::F32),
        "f16" => Ok(FbankDtype::F16),
        _ => Err(format!("{s:?}: expected f32 or f16")),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    stage_kit::logging::init(cli.log_json.as_deref())?;
    match cli.command {
        Command::Prepare {
            manifest,
            audio_out,
            fbank_out,
            vad,
            downmix,
            sample_rate,
            fbank_dtype,
            shard,
            threads,
            max_reject_fraction,
            rejects,
            config,
            summary_json,
        } => {
            let mut cfg: PrepareConfig = stage_kit::config::read_or_default(config.as_deref())?;
            cfg.vad = vad.unwrap_or(cfg.vad);
            cfg.downmix = downmix.unwrap_or(cfg.downmix);
            if let Some(rate) = sample_rate {
                cfg.sample_rate = rate;
            }
            if let Some(dtype) = fbank_dtype {
                cfg.fbank_dtype = dtype;
            }
            if audio_out.is_none() && fbank_out.is_none() {
                bail!("nothing to write: give --audio-out and/or --fbank-out");
            }
            let request = PrepareRequest {
                manifest,
                audio_out,
                fbank_out,
                shard,
                threads,
                config: cfg,
            };
            let summary = prepare::prepare(&request).context("prepare")?;
            tracing::info!(
                "{} of {} utterances cached, {} rejected; {:.2} h in, {:.2} h kept; {:.2} h of audio per minute",
                summary.written,
                summary.utterances,
                summary.rejected,
                summary.input_hours,
                summary.kept_hours,
                summary.hours_per_minute
            );
            if let Some(path) = &rejects {
                prepare::write_rejects(&summary, path)?;
            }
            if let Some(path) = &summary_json {
                stage_kit::write_bytes_atomically(
                    path,
                    serde_json::to_string_pretty(&summary)?.as_bytes(),
                )?;
            }
            for r in summary.rejects.iter().take(20) {
                tracing::warn!("rejected {}: {}", r.path, r.reason);
            }
            let outputs: Vec<&Path> = [&request.audio_out, &request.fbank_out]
                .into_iter()
                .flatten()
                .map(PathBuf::as_path)
                .collect();
            prepare::refuse_above_reject_bound(&summary, max_reject_fraction, &outputs)?;
        }
        Command::CheckConfig { config, .. } => {
            stage_kit::config::read_or_default::<PrepareConfig>(Some(&config))?.check()?;
        }
        Command::Merge {
            output,
            manifest,
            inputs,
        } => {
            let folder = output.parent().filter(|p| !p.as_os_str().is_empty());
            stage_kit::atomic::remove_stale_partials(folder.unwrap_or(Path::new(".")))?;
            match manifest {
                Some(manifest) => {
                    let ids: Vec<String> = UtteranceManifest::read(&manifest)?
                        .utterances
                        .into_iter()
                        .map(|u| u.utt_id)
                        .collect();
                    cache::merge_in_order(&inputs, &output, &ids)
                }
                None => cache::merge(&inputs, &output),
            }
            .with_context(|| format!("merging into {}", output.display()))?;
            tracing::info!("merged {} caches into {}", inputs.len(), output.display());
        }
        Command::ShowCache { path } => {
            if let Ok(c) = AudioCache::open(&path) {
                let samples: u64 = c.entries().iter().map(|e| e.length).sum();
                stage_kit::stdout::print(&format!(
                    "audio cache: {} utterances, {:.2} h at {} Hz, {} rejects\nconfig: {}",
                    c.len(),
                    samples as f64 / f64::from(c.sample_rate()) / 3600.0,
                    c.sample_rate(),
                    c.rejects().len(),
                    c.config()
                ))?;
            } else {
                let c = FbankCache::open(&path)?;
                let frames: u64 = c.entries().iter().map(|e| e.length).sum();
                stage_kit::stdout::print(&format!(
                    "fbank cache: {} utterances, {frames} frames of {} ({:?}), {} rejects\nconfig: {}",
                    c.len(),
                    c.dim(),
                    c.dtype(),
                    c.rejects().len(),
                    c.config()
                ))?;
            }
        }
        Command::ShowEmbeddings { path } => {
            let e = Embeddings::read(&path)?;
            stage_kit::stdout::print(&format!(
                "{} embeddings of dimension {} ({})",
                e.utt_ids.len(),
                e.dim(),
                e.description
            ))?;
        }
    }
    Ok(())
}
