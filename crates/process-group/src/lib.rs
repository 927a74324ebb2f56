//! Data parallelism on libtorch's own c10d, the engine under PyTorch DDP: a C++ shim over
//! `ProcessGroupGloo` (and `ProcessGroupNCCL` with the `nccl` feature) and libtorch's
//! `TCPStore`, built with `cc` against the libtorch that tch links.
//!
//! - [`rendezvous`]: a rank's place in the world from torchrun's or Slurm's variables.
//! - [`group`]: [`ProcessGroup`], in-place collectives on tch tensors.
//! - [`launch`]: starting N local ranks (torchrun's standalone mode).

pub mod error;
mod ffi;
pub mod group;
pub mod launch;
pub mod rendezvous;

pub use error::{Error, Result};
pub use group::{Backend, ProcessGroup};
pub use rendezvous::Rendezvous;
