//! `downstream-eval`: speaker verification and emotion recognition on frozen embeddings.

use std::path::PathBuf;

use anyhow::bail;
use clap::{ArgGroup, Parser, Subcommand};
use downstream_eval::baseline::{self, BaselineConfig, FeatureSource};
use downstream_eval::emotion::classifier::ClassifierKind;
use downstream_eval::emotion::folds::FoldSource;
use downstream_eval::emotion::{self, EmotionConfig, EmotionInputs};
use downstream_eval::plda::{self, PldaConfig, train::LabelSource};
use downstream_eval::sv::{self, Backend, SvConfig, SvInputs};

#[derive(Parser)]
#[command(
    name = "downstream-eval",
    version,
    about = "Speaker verification and emotion recognition on frozen utterance embeddings"
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
    /// Cosine or PLDA scoring of a trial list: EER, minDCF, DET curve, scores and report.
    #[command(group(ArgGroup::new("input").required(true).args(["embeddings", "scores"])))]
    Sv {
        /// embeddings.h5 with every utterance of the trial list.
        #[arg(long)]
        embeddings: Option<PathBuf>,
        /// Kaldi-form score file (`enroll test score` lines) of the trial list, from any
        /// system, instead of embeddings.
        #[arg(long, conflicts_with_all = ["mean_embeddings", "cohort_embeddings", "length_norm"])]
        scores: Option<PathBuf>,
        /// trials.parquet.
        #[arg(long)]
        trials: PathBuf,
        /// Output folder (scores.txt, det.svg, det.png, report.json, report.md,
        /// calibration.json).
        #[arg(long)]
        out_dir: PathBuf,
        /// Subtract the mean of these embeddings (a training set) before scoring.
        #[arg(long)]
        mean_embeddings: Option<PathBuf>,
        /// Length-normalise embeddings before the mean is estimated and subtracted.
        #[arg(long)]
        length_norm: bool,
        /// Apply AS-norm with this cohort.
        #[arg(long)]
        cohort_embeddings: Option<PathBuf>,
        /// AS-norm: number of highest cohort scores per utterance [default: 300].
        #[arg(long)]
        asnorm_top: Option<usize>,
        /// Scoring back-end [default: cosine].
        #[arg(long, value_enum)]
        backend: Option<Backend>,
        /// PLDA model file (from `plda-train`), for `--backend plda`.
        #[arg(long)]
        plda: Option<PathBuf>,
        /// TOML file with SvConfig keys (backend, length_norm, asnorm_top, p_targets, c_miss,
        /// c_fa); flags override it.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Train a PLDA back-end (centring, optional LDA, whitening, length norm, SPLDA by EM)
    /// on embeddings labelled by a manifest's speakers or by pseudo-labels.
    #[command(group(ArgGroup::new("labels").required(true).args(["manifest", "pseudo_labels"])))]
    PldaTrain {
        /// embeddings.h5 of the training utterances.
        #[arg(long)]
        embeddings: PathBuf,
        /// utterances.parquet whose `speaker` column labels the embeddings.
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// pseudo_labels.parquet whose kept clusters label the embeddings.
        #[arg(long)]
        pseudo_labels: Option<PathBuf>,
        /// The model file to write (JSON).
        #[arg(long)]
        out: PathBuf,
        /// TOML file with PldaConfig keys (lda_dim, y_dim, iterations, length_norm,
        /// min_class_size).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Emotion classifier on frozen embeddings, evaluated on speaker-independent folds.
    Emotion {
        /// embeddings.h5 with every labelled utterance of the manifest.
        #[arg(long)]
        embeddings: PathBuf,
        /// utterances.parquet with `emotion` labels and a `fold` or `split` column.
        #[arg(long)]
        manifest: PathBuf,
        /// Output folder (predictions.csv, confusion.svg/png, report.json, report.md).
        #[arg(long)]
        out_dir: PathBuf,
        /// Outer folds: leave-one-out over the `fold` column, or the official `split`
        /// (train / development / test) [default: fold].
        #[arg(long, value_enum)]
        folds: Option<FoldSource>,
        /// Classifier [default: logistic].
        #[arg(long, value_enum)]
        classifier: Option<ClassifierKind>,
        /// Seed of every random stream (inner splits, MLP) [default: 0].
        #[arg(long)]
        seed: Option<u64>,
        /// TOML file with EmotionConfig keys (folds, classifier, class_weight, split_names,
        /// selection_metric, inner_folds, seed, [logistic], [mlp]); flags override it.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Check a configuration file without running anything: unknown or ill-typed keys and
    /// values that cannot work are errors naming the key (the pipeline runner calls this
    /// when it plans).
    CheckConfig {
        /// The subcommand the configuration is for.
        #[arg(value_parser = ["sv", "emotion"])]
        kind: String,
        /// The TOML file.
        config: PathBuf,
    },
    /// Baseline embeddings without learning: per-bin mean and std of fbank frames.
    #[command(group(ArgGroup::new("source").required(true).args(["fbank_cache", "audio_cache", "decode"])))]
    Baseline {
        /// utterances.parquet: every utterance gets an embedding (or a reject).
        #[arg(long)]
        manifest: PathBuf,
        /// Take the features from this fbank cache (feature-extract prepare).
        #[arg(long)]
        fbank_cache: Option<PathBuf>,
        /// Compute the fbank from this audio cache (feature-extract prepare).
        #[arg(long)]
        audio_cache: Option<PathBuf>,
        /// Decode the manifest's audio files and compute the fbank.
        #[arg(long)]
        decode: bool,
        /// The embeddings file to write.
        #[arg(long)]
        out: PathBuf,
        /// Write rejected utterances and reasons here (Parquet).
        #[arg(long)]
        rejects: Option<PathBuf>,
        /// Fail when more than this share of the utterances is rejected [default: 0.01].
        #[arg(long, value_parser = stage_kit::config::fraction)]
        max_reject_fraction: Option<f64>,
        /// TOML file with BaselineConfig keys (sample_rate, max_reject_fraction, [fbank]).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    stage_kit::logging::init(cli.log_json.as_deref())?;
    match cli.command {
        Command::CheckConfig { kind, config } => {
            let path = Some(config.as_path());
            if kind == "sv" {
                let config: SvConfig = stage_kit::config::read_or_default(path)?;
                config.check().map_err(anyhow::Error::msg)?;
            } else {
                let config: EmotionConfig = stage_kit::config::read_or_default(path)?;
                config.check().map_err(anyhow::Error::msg)?;
            }
        }
        Command::Sv {
            embeddings,
            scores,
            trials,
            out_dir,
            mean_embeddings,
            length_norm,
            cohort_embeddings,
            asnorm_top,
            backend,
            plda,
            config,
        } => {
            let mut config: SvConfig = stage_kit::config::read_or_default(config.as_deref())?;
            config.length_norm |= length_norm;
            config.backend = backend.unwrap_or(config.backend);
            if let Some(top) = asnorm_top {
                config.asnorm_top = top;
            }
            let inputs = SvInputs {
                embeddings,
                scores,
                trials,
                mean_embeddings,
                cohort_embeddings,
                plda,
            };
            sv::run(&inputs, &config, &out_dir)?;
        }
        Command::PldaTrain {
            embeddings,
            manifest,
            pseudo_labels,
            out,
            config,
        } => {
            let config: PldaConfig = stage_kit::config::read_or_default(config.as_deref())?;
            let labels = match (manifest, pseudo_labels) {
                (Some(path), _) => LabelSource::Manifest(path),
                (None, Some(path)) => LabelSource::PseudoLabels(path),
                (None, None) => unreachable!("clap requires one label source"),
            };
            plda::train::run(&embeddings, &labels, &config, &out)?;
        }
        Command::Emotion {
            embeddings,
            manifest,
            out_dir,
            folds,
            classifier,
            seed,
            config,
        } => {
            let mut config: EmotionConfig = stage_kit::config::read_or_default(config.as_deref())?;
            config.folds = folds.unwrap_or(config.folds);
            config.classifier = classifier.unwrap_or(config.classifier);
            config.seed = seed.unwrap_or(config.seed);
            let inputs = EmotionInputs {
                embeddings,
                manifest,
            };
            emotion::run(&inputs, &config, &out_dir)?;
        }
        Command::Baseline {
            manifest,
            fbank_cache,
            audio_cache,
            decode: _,
            out,
            rejects,
            max_reject_fraction,
            config,
        } => {
            let mut config: BaselineConfig = stage_kit::config::read_or_default(config.as_deref())?;
            config.max_reject_fraction = max_reject_fraction.unwrap_or(config.max_reject_fraction);
            let source = match (fbank_cache, audio_cache) {
                (Some(path), _) => FeatureSource::FbankCache(path),
                (None, Some(path)) => FeatureSource::AudioCache(path),
                (None, None) => FeatureSource::Decode,
            };
            let summary = baseline::run(&manifest, &source, &config, &out)?;
            for r in summary.rejects.iter().take(20) {
                tracing::warn!("rejected {}: {}", r.path, r.reason);
            }
            if let Some(path) = &rejects {
                summary.write_rejects(path)?;
            }
            tracing::info!(
                "{} baseline embeddings of dimension {} written to {}, {} rejected",
                summary.written,
                summary.dim,
                out.display(),
                summary.rejects.len()
            );
            if summary.reject_fraction() > config.max_reject_fraction {
                bail!(
                    "{} of {} utterances rejected ({:.1} %), above the maximum share {}",
                    summary.rejects.len(),
                    summary.rejects.len() + summary.written,
                    100.0 * summary.reject_fraction(),
                    config.max_reject_fraction
                );
            }
        }
    }
    Ok(())
}
