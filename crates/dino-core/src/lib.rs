//! DINO for speech: encoders, the self-distillation head and loss, the multi-crop loader,
//! the trainer, checkpoints and embedding extraction, on libtorch through tch.

// The networks and their objectives.

/// Additive angular margin softmax with sub-centres, the fine-tuning classifier.
pub mod aam;
/// Speaker encoders (LResNet34, ECAPA-TDNN): frame features to an utterance embedding.
pub mod encoder;
/// DINO's projection head onto K prototypes.
pub mod head;
/// The DINO loss: teacher centring and sharpening, cross-entropy over views.
pub mod loss;
/// Student and teacher networks (encoder + head); the teacher is the student's EMA.
pub mod model;

// Training.

/// Gradient accumulation over micro-batches.
pub mod accumulation;
/// Checkpoint files: a training state with its configuration and position; epoch models.
pub mod checkpoint;
/// The training curves (loss, collapse monitor, validation) as a figure.
pub mod curves;
/// Data parallelism over c10d: parameter broadcast, bucketed gradient all-reduce.
pub mod distributed;
/// Supervised fine-tuning on pseudo-labels.
pub mod finetune;
/// The step log and the collapse monitor.
pub mod monitor;
/// Optimisers with checkpointable state (Adam, SGD), loss scaling.
pub mod optim;
/// DINO pretraining: its configuration and steps.
pub mod pretrain;
/// Per-step schedules (learning rate, weight decay, teacher momentum and temperature).
pub mod schedule;
/// The loop pretraining and fine-tuning share: epochs, batches, checkpoints, resume.
pub mod training;
/// Validation of the epoch models during training (EER/minDCF or micro-F1).
pub mod validation;

// The data a step consumes.

/// Multi-crop views of utterances from an audio cache, with augmentation.
pub mod crops;
/// Fbank and mean normalisation of waveform batches on the training device.
pub mod features;
/// Worker threads that prepare batches ahead of the consumer.
pub mod prefetch;

// Using a trained model.

/// Applying a trained model: self-contained model files, embedding audio files, verification,
/// trial-list scoring, TorchScript export.
pub mod apply;
/// Embedding extraction of a manifest into `embeddings.h5`.
pub mod embed;
/// Which model of a run goes downstream: last, best-validation or an average of epochs.
pub mod model_selection;

/// Error type of the library.
pub mod error;
/// What libtorch this process runs on (`dino-core doctor`).
pub mod runtime;

pub use error::{Error, Result};
