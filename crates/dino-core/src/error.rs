//! Errors of training, checkpointing and embedding extraction.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    File(#[from] stage_kit::FileError),
    #[error("{}: {message}", path.display())]
    Checkpoint { path: PathBuf, message: String },
    #[error("{context}: {source}")]
    Torch {
        context: String,
        source: tch::TchError,
    },
    #[error(transparent)]
    Features(#[from] feature_extract::Error),
    #[error(transparent)]
    Manifest(#[from] data_manifest::ManifestError),
    #[error(transparent)]
    Eval(#[from] downstream_eval::EvalError),
    #[error(transparent)]
    Device(#[from] feature_extract::device::UnavailableDevice),
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Arguments that do not fit together (the message says which).
    #[error("invalid arguments: {0}")]
    Usage(String),
    /// The training loss stopped being a finite number.
    #[error("the loss became {loss} at step {step}; lower the learning rate")]
    Diverged { step: usize, loss: f64 },
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Joining the process group or a collective failed (a rank died, hung or never came).
    #[error("data-parallel training: {0}")]
    Distributed(String),
    /// Inputs that do not fit together or cannot be used (the message names the files).
    #[error("bad input: {0}")]
    Input(String),
    /// The collapse monitor stopped the run (`[pretrain.monitor] stop_on_collapse`).
    #[error(
        "training stopped at step {step}: {what} since step {since} ({patience} steps, \
         [pretrain.monitor] patience); no checkpoint was written since it began, so the \
         newest one on disk is from before it"
    )]
    Collapsed {
        step: usize,
        since: usize,
        what: &'static str,
        patience: usize,
    },
    /// A loader job that panicked, with the utterances it was reading.
    #[error("reading {utterances}: {source}")]
    Loader {
        utterances: String,
        source: crate::prefetch::JobPanicked,
    },
}

impl Error {
    pub fn checkpoint(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.into(),
            message: message.into(),
        }
    }

    /// A panicked loader job over the utterances `utt_ids` (the first few are named).
    pub fn loader<'a>(
        source: crate::prefetch::JobPanicked,
        utt_ids: impl ExactSizeIterator<Item = &'a str>,
    ) -> Self {
        let count = utt_ids.len();
        let mut named: Vec<&str> = utt_ids.take(5).collect();
        named.dedup();
        let more = if count > named.len() { ", ..." } else { "" };
        Error::Loader {
            utterances: format!("{count} crop(s) of {}{more}", named.join(", ")),
            source,
        }
    }

    /// Wraps a libtorch error with what was being done.
    pub fn torch(context: impl Into<String>) -> impl FnOnce(tch::TchError) -> Self {
        let context = context.into();
        move |source| Error::Torch { context, source }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
