//! Speaker pseudo-labels from utterance embeddings, the clustering half of the iterative
//! pseudo-labelling rounds (DINO embeddings -> clusters -> supervised fine-tuning -> ...):
//! length normalisation and PCA, k-means at VoxCeleb scale, agglomerative merging of the
//! k-means centroids, and clean-up of unreliable members and tiny clusters.

pub mod cleanup;
pub mod config;
pub mod error;
pub mod kmeans;
pub mod merge;
pub mod metrics;
pub mod nearest;
pub mod pca;
pub mod pipeline;
pub mod preprocess;
pub mod report;
pub mod synthetic;

pub use config::ClusterConfig;
pub use error::{Error, Result};
pub use pipeline::{StagePaths, pseudo_label, run};
pub use report::ClusterReport;
