//! Developer tasks behind `cargo xtask`: provisioning libtorch and the Python references,
//! generating the synthetic fixture corpus, running the checks.

pub mod bench;
pub mod command;
pub mod device_check;
/// The fixture corpus generator (its own crate, which stage crates test with).
pub use fixture_corpus as fixture;
pub mod pipeline;
pub mod setup;
pub mod slurm_local;
pub mod workspace;
