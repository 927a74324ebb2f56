//! DINO for speech: encoders, the self-distillation head and loss, the multi-crop loader,
//! the trainer, checkpoints and embedding extraction, on libtorch through tch.

pub mod aam;
pub mod accumulation;
/// Applying a trained model: self-contained model files, embedding audio files, verification,
/// trial-list scoring, TorchScript export.
pub mod apply;
pub mod checkpoint;
pub mod crops;
pub mod distributed;
pub mod embed;
pub mod encoder;
pub mod error;
pub mod features;
pub mod finetune;
pub mod head;
pub mod loss;
pub mod model;
pub mod monitor;
pub mod optim;
pub mod prefetch;
pub mod pretrain;
pub mod runtime;
pub mod schedule;
pub mod training;

pub use error::{Error, Result};
