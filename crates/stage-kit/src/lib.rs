//! Building blocks shared by the stage binaries (`data-manifest`, `feature-extract`,
//! `dino-core`, `pseudo-labeler`, `downstream-eval`). Stages talk to each other only through
//! files; this crate holds the conventions those files and processes follow.

pub mod atomic;
pub mod config;
pub mod cpu_time;
pub mod device;
pub mod digest;
pub mod downstream;
pub mod how_it_runs;
pub mod logging;
pub mod metrics;
pub mod progress;
pub mod reference;
pub mod rng;
pub mod run_folder;
pub mod shard;
pub mod stdout;
pub mod timings;

pub use atomic::{FileError, write_atomically, write_bytes_atomically};
pub use device::DeviceSpec;
pub use downstream::{CheckpointRule, Representation};
pub use shard::Shard;
