//! `downstream-eval`: speaker verification and emotion recognition on frozen embeddings.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use downstream_eval::emotion::classifier::ClassifierKind;
use downstream_eval::emotion::folds::FoldSource;
use downstream_eval::emotion::{self, EmotionConfig, EmotionInputs};
use downstream_eval::sv::{self, SvConfig, SvInputs};
use serde::de::DeserializeOwned;

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
    /// Cosine scoring of a trial list: EER, minDCF, DET curve, scores and report.
    Sv {
        /// embeddings.h5 with every utterance of the trial list.
        #[arg(long)]
        embeddings: PathBuf,
        /// trials.parquet.
        #[arg(long)]
        trials: PathBuf,
        /// Output folder (scores.txt, det.svg, det.png, report.json, report.md).
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
        /// TOML file with SvConfig keys (length_norm, asnorm_top, p_targets, c_miss, c_fa);
        /// flags override it.
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
        /// TOML file with EmotionConfig keys (folds, classifier, class_weight,
        /// selection_metric, inner_folds, seed, [logistic], [mlp]); flags override it.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    stage_kit::logging::init(cli.log_json.as_deref())?;
    match cli.command {
        Command::Sv {
            embeddings,
            trials,
            out_dir,
            mean_embeddings,
            length_norm,
            cohort_embeddings,
            asnorm_top,
            config,
        } => {
            let mut config: SvConfig = read_config(config.as_deref())?;
            config.length_norm |= length_norm;
            if let Some(top) = asnorm_top {
                config.asnorm_top = top;
            }
            let inputs = SvInputs {
                embeddings,
                trials,
                mean_embeddings,
                cohort_embeddings,
            };
            sv::run(&inputs, &config, &out_dir)?;
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
            let mut config: EmotionConfig = read_config(config.as_deref())?;
            config.folds = folds.unwrap_or(config.folds);
            config.classifier = classifier.unwrap_or(config.classifier);
            config.seed = seed.unwrap_or(config.seed);
            let inputs = EmotionInputs {
                embeddings,
                manifest,
            };
            emotion::run(&inputs, &config, &out_dir)?;
        }
    }
    Ok(())
}

/// The config in a TOML file, or the defaults without one.
fn read_config<T: DeserializeOwned + Default>(path: Option<&Path>) -> anyhow::Result<T> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("{}: invalid config", path.display()))
}
