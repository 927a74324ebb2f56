//! Speaker pseudo-labels from utterance embeddings, the clustering half of the iterative
//! pseudo-labelling rounds (DINO embeddings -> clusters -> supervised fine-tuning -> ...):
//! length normalisation and PCA, k-means at VoxCeleb scale, agglomerative merging of the
//! k-means centroids (by cosine, then optionally by PLDA scores), and clean-up of
//! unreliable members and tiny clusters.

/// Dropping unreliable members and tiny clusters; final cluster numbering.
pub mod cleanup;
/// The clustering recipe (`ClusterConfig`), embeddable in a pipeline TOML.
pub mod config;
/// Error type of the library.
pub mod error;
/// k-means: the shared iteration loop, initialisation, and the two backends.
pub mod kmeans;
/// Agglomerative merging of k-means clusters by centroid cosine similarity.
pub mod merge;
/// NMI, ARI and purity against true speakers (diagnostics only).
pub mod metrics;
/// Blocked-GEMM nearest-centroid search on the CPU (ndarray + rayon) or libtorch.
pub mod nearest;
/// PCA keeping a share of the variance.
pub mod pca;
/// The `cluster` stage end to end, in memory and on files.
pub mod pipeline;
/// PLDA-based merging of the cosine clusters and member posteriors (`ssl.v1`).
pub mod plda_ahc;
/// Screening of unusable embeddings and length normalisation.
pub mod preprocess;
/// `cluster_report.json`.
pub mod report;
/// Gaussian blobs with planted clusters, for tests and benchmarks.
pub mod synthetic;

pub use config::ClusterConfig;
pub use error::{Error, Result};
pub use pipeline::{StagePaths, pseudo_label, run};
pub use report::ClusterReport;
