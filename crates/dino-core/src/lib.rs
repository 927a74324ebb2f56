//! DINO for speech: encoders, the self-distillation head and loss, the multi-crop loader,
//! the trainer, checkpoints and embedding extraction, on libtorch through tch.

pub mod runtime;
