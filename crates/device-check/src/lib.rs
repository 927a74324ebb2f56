//! The device check: the CUDA paths of the toolkit against their CPU counterparts, and the
//! VoxCeleb-sized timings (pretraining step, k-means and merge), in one binary that
//! `cargo xtask device-check` bundles for a GPU machine without cargo. Every comparison also
//! runs here on CPU tensors (the crate's tests), through the same code.

/// CUDA (or CPU-tensor) paths against the Rust CPU ones: fbank, STMN, encoders, augmentation,
/// k-means assignment and merge.
pub mod compare;
/// The list of checks, their results, the table and the JSON summary.
pub mod summary;
/// Training runs on generated audio (fp16 with the loss scaler, resume, the timed recipe step)
/// and the cluster stage at VoxCeleb size.
pub mod timing;

pub use summary::{CHECKS, Row, Summary};
