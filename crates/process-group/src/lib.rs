//! Data parallelism on libtorch's own c10d, the engine under PyTorch DDP: a C++ shim over
//! `ProcessGroupGloo` (and `ProcessGroupNCCL` with the `nccl` feature) and libtorch's
//! `TCPStore`, built with `cc` against the libtorch that tch links.
//!
//! - [`rendezvous`]: a rank's place in the world from torchrun's or Slurm's variables.
//! - [`group`]: [`ProcessGroup`], in-place collectives on tch tensors, blocking or started
//!   as a [`Work`] to overlap several.
//! - [`grad_hooks`]: [`GradHooks`], a callback when autograd has a parameter's gradient.
//! - [`launch`]: starting N local ranks (torchrun's standalone mode).
//! - [`departure`]: when each rank left its group, by which the launcher names the first
//!   to fail.

pub mod departure;
pub mod error;
mod ffi;
pub mod grad_hooks;
pub mod group;
pub mod launch;
pub mod rendezvous;

pub use error::{Error, Result};
pub use grad_hooks::GradHooks;
pub use group::{Backend, ProcessGroup, Work};
pub use rendezvous::Rendezvous;
