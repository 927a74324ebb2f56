//! Errors of downstream evaluation; every variant names the file (or the fold) it concerns.

use std::path::PathBuf;

/// Why an evaluation failed.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Embeddings(#[from] feature_extract::Error),
    #[error(transparent)]
    Manifest(#[from] data_manifest::ManifestError),
    #[error(transparent)]
    File(#[from] stage_kit::FileError),
    #[error(transparent)]
    Device(#[from] feature_extract::device::UnavailableDevice),
    /// Utterances that an input needs but the embeddings file does not hold.
    #[error(
        "{}: no embedding for {count} utterance(s) of {needed_by}: {shown}",
        embeddings.display()
    )]
    MissingEmbeddings {
        embeddings: PathBuf,
        needed_by: String,
        count: usize,
        /// The first few missing ids, comma-separated.
        shown: String,
    },
    #[error(
        "{}: embeddings of dimension {found}, but {} has dimension {expected}",
        path.display(),
        reference.display()
    )]
    DimensionMismatch {
        path: PathBuf,
        found: usize,
        reference: PathBuf,
        expected: usize,
    },
    /// A class that occurs in the labels has no training example in a fold.
    #[error("{context}: class {class:?} has no training example")]
    EmptyClass { context: String, class: String },
    /// The input is readable but unusable for this evaluation.
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("{}: drawing failed: {message}", path.display())]
    Plot { path: PathBuf, message: String },
    #[error("{context}: libtorch: {source}")]
    Torch {
        context: String,
        source: tch::TchError,
    },
}

impl EvalError {
    /// A readable but unusable input, with what is wrong with it.
    pub fn invalid(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        EvalError::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }

    /// Missing-utterance error listing at most ten ids.
    pub fn missing(embeddings: impl Into<PathBuf>, needed_by: &str, missing: &[&str]) -> Self {
        EvalError::MissingEmbeddings {
            embeddings: embeddings.into(),
            needed_by: needed_by.to_owned(),
            count: missing.len(),
            shown: shorten_list(missing, 10),
        }
    }

    /// Wraps a libtorch error with what was being done.
    pub fn torch(context: impl Into<String>) -> impl FnOnce(tch::TchError) -> Self {
        let context = context.into();
        move |source| EvalError::Torch { context, source }
    }
}

/// `a, b, c, ...`: the first `max` items, with an ellipsis when some were left out.
pub fn shorten_list(items: &[&str], max: usize) -> String {
    let mut text = items[..items.len().min(max)].join(", ");
    if items.len() > max {
        text.push_str(", ...");
    }
    text
}

/// Result of the evaluation library.
pub type Result<T> = std::result::Result<T, EvalError>;
