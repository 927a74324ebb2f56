//! Downstream evaluation of frozen utterance embeddings: speaker verification (cosine or
//! PLDA scoring, AS-norm, EER / minDCF, DET curves) and emotion recognition (classifiers on
//! standardised embeddings with speaker-independent folds), each ending in a report; and
//! baseline embeddings without learning (fbank statistics) to compare against.

pub mod baseline;
pub mod emotion;
pub mod error;
pub mod inputs;
pub mod plda;
pub mod plot;
pub mod report;
pub mod sv;

pub use error::{EvalError, Result};
pub use inputs::EmbeddingFile;
