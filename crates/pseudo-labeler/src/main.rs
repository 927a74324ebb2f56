//! `pseudo-labeler`: clusters utterance embeddings into speaker pseudo-labels.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use pseudo_labeler::config::{Backend, Init};
use pseudo_labeler::{ClusterConfig, StagePaths};
use stage_kit::DeviceSpec;

#[derive(Parser)]
#[command(
    name = "pseudo-labeler",
    version,
    about = "Speaker pseudo-labels from utterance embeddings"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Cluster embeddings.h5 into pseudo_labels.parquet and cluster_report.json.
    Cluster(ClusterArgs),
    /// Check a cluster configuration file without running anything: unknown or ill-typed
    /// keys and values out of range are errors naming the key (the pipeline runner calls
    /// this when it plans).
    CheckConfig {
        /// The subcommand the configuration is for (cluster).
        #[arg(value_parser = ["cluster"])]
        kind: String,
        /// The TOML file.
        config: PathBuf,
    },
}

#[derive(Args)]
struct ClusterArgs {
    /// embeddings.h5 written by `dino-core embed`.
    #[arg(long)]
    embeddings: PathBuf,
    /// Folder for pseudo_labels.parquet and cluster_report.json.
    #[arg(long)]
    out_dir: PathBuf,
    /// Utterance manifest with true speakers: only for NMI/ARI/purity in the report.
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// TOML file with the clustering table (defaults for every absent key).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Number of k-means clusters (overrides the config).
    #[arg(long, conflicts_with = "k_fraction")]
    k: Option<usize>,
    /// Number of k-means clusters as a fraction of the utterances (overrides the config).
    #[arg(long)]
    k_fraction: Option<f64>,
    #[arg(long, value_enum)]
    backend: Option<Backend>,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long)]
    device: Option<DeviceSpec>,
    #[arg(long, value_enum)]
    init: Option<Init>,
    /// Seed of every random stream (overrides the config).
    #[arg(long)]
    seed: Option<u64>,
    /// Also write the log as JSON lines to this file.
    #[arg(long)]
    log_json: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Cluster(args) => cluster(args),
        Command::CheckConfig { config, .. } => ClusterConfig::from_file(&config)
            .map(drop)
            .map_err(|e| anyhow::anyhow!("[cluster] {e}")),
    }
}

fn cluster(args: ClusterArgs) -> anyhow::Result<()> {
    stage_kit::logging::init(args.log_json.as_deref())?;
    let mut config = match &args.config {
        Some(path) => ClusterConfig::from_file(path)?,
        None => ClusterConfig::default(),
    };
    if let Some(k) = args.k {
        config.k = Some(k);
    }
    if let Some(fraction) = args.k_fraction {
        config.k = None;
        config.k_fraction = fraction;
    }
    config.backend = args.backend.unwrap_or(config.backend);
    config.device = args.device.unwrap_or(config.device);
    config.init = args.init.unwrap_or(config.init);
    config.seed = args.seed.unwrap_or(config.seed);
    let paths = StagePaths {
        embeddings: args.embeddings,
        manifest: args.manifest,
        out_dir: args.out_dir,
    };
    let report = pseudo_labeler::run(&paths, &config).with_context(|| {
        format!(
            "clustering {} into {}",
            paths.embeddings.display(),
            paths.out_dir.display()
        )
    })?;
    println!(
        "{} utterances -> {} clusters ({} after clean-up), {:.1} % kept{}",
        report.input.utterances,
        report.merge.clusters_after,
        report.cleanup.clusters_after,
        100.0 * report.cleanup.kept_share,
        report
            .diagnostics
            .as_ref()
            .map(|d| format!(
                "; against true speakers: NMI {:.4}, ARI {:.4}, purity {:.4}",
                d.assigned.nmi, d.assigned.ari, d.assigned.purity
            ))
            .unwrap_or_default()
    );
    Ok(())
}
