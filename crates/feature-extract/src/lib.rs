//! Features: decoding, Kaldi-exact filterbanks, voice activity detection, normalisation,
//! augmentation, and the HDF5 stores (audio/fbank caches, embeddings) shared by the stages.

pub mod augment;
pub mod cache;
pub mod decode;
pub mod embeddings;
pub mod error;
pub mod fbank;
pub mod fbank_tch;
pub mod mp4;
pub mod normalize;
pub mod prepare;
pub mod vad;

pub use embeddings::Embeddings;
pub use error::{Error, Result};
