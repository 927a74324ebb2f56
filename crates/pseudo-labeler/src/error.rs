//! Errors of the pseudo-labeler; those about a file name it.

use std::path::PathBuf;

/// What can go wrong while clustering embeddings into pseudo-labels.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Embeddings(#[from] feature_extract::Error),
    #[error(transparent)]
    Manifest(#[from] data_manifest::ManifestError),
    #[error(transparent)]
    File(#[from] stage_kit::FileError),
    /// A configuration value out of range or a TOML file that does not parse.
    #[error("{}invalid clustering configuration: {message}", path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default())]
    Config {
        path: Option<PathBuf>,
        message: String,
    },
    /// The embeddings cannot be clustered as asked (too many rejects, too few utterances).
    #[error("{path}: {message}")]
    Input { path: PathBuf, message: String },
    /// A device was asked for that this process cannot use.
    #[error(transparent)]
    Device(#[from] feature_extract::device::UnavailableDevice),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("linfa k-means: {0}")]
    Linfa(String),
    #[error("PCA: eigendecomposition of the covariance failed: {0}")]
    Pca(String),
    #[error("PLDA-AHC: {0}")]
    Plda(String),
}

/// Result of the pseudo-labeler library.
pub type Result<T> = std::result::Result<T, Error>;
