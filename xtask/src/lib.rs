//! Developer tasks behind `cargo xtask`: provisioning libtorch and the Python references,
//! generating the synthetic fixture corpus, running the checks.

pub mod bench;
pub mod command;
pub mod device_check;
pub mod fixture;
pub mod pipeline;
pub mod setup;
pub mod slurm_local;
pub mod workspace;
