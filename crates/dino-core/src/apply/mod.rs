//! The end-user surface of a trained model: a self-contained model file, embeddings of any
//! audio files, verification of two recordings, scoring of trial lists, and export to
//! TorchScript for PyTorch users.

pub mod cli;
pub mod embed_audio;
pub mod embedding_formats;
pub mod export;
pub mod model_file;
pub mod score;
pub mod verify;
