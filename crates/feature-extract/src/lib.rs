//! Features: decoding, Kaldi-exact filterbanks, voice activity detection, normalisation,
//! augmentation, and the HDF5 stores (audio/fbank caches, embeddings) shared by the stages.

/// Waveform augmentation (MUSAN noise categories, RIR reverberation) from caches.
pub mod augment;
/// The same reverberation and noise mixing as batched tch operations (on the GPU in training).
pub mod augment_tch;
/// Packed HDF5 audio and fbank caches: schema, index, readers, writer, merge.
pub mod cache;
/// Gaussian noise keyed by a seed and each element's index, on any device (resumable dither).
pub mod counter_noise;
/// WAV/FLAC/AAC-in-MP4 decoding to mono, resampling.
pub mod decode;
/// Resolving the stages' configured device to a libtorch device.
pub mod device;
/// `embeddings.h5`, the contract between embedding extraction and its consumers.
pub mod embeddings;
pub mod error;
/// Kaldi log mel filterbanks in Rust (torchaudio-exact).
pub mod fbank;
/// The same filterbanks as batched tch operations on any device.
pub mod fbank_tch;
/// HDF5 files opened and created so that child processes never inherit them (or their lock).
pub mod h5file;
/// CMN and hyperion's sliding-window STMN (Rust and tch).
pub mod normalize;
/// The `prepare` stage: manifests into resumable, sharded caches.
pub mod prepare;
/// The read path of the caches: lock-free positional reads of contiguous `/data` (schema 2),
/// HDF5 reads behind one lock for schema 1, and their cost.
pub mod rows;
/// Generated speech, noise and RIR caches for benchmarks and device checks.
pub mod synthetic;
/// Kaldi `compute-vad` energy VAD and trimming.
pub mod vad;

pub use embeddings::Embeddings;
pub use error::{Error, Result};
