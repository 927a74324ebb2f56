//! Errors of process groups, rendezvous and the launcher.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The rendezvous variables are present but unusable.
    #[error("rendezvous: {0}")]
    Variables(String),
    /// Joining the group failed (a rank did not come, the store was unreachable).
    #[error(
        "rank {rank} of {world_size} could not join the process group at {addr}:{port} within {timeout:?} \
         (were all ranks started, e.g. under srun or torchrun?): {message}"
    )]
    Join {
        rank: usize,
        world_size: usize,
        addr: String,
        port: u16,
        timeout: Duration,
        message: String,
    },
    /// A collective failed: a peer died, hung past the timeout, or shapes disagreed.
    #[error("rank {rank} of {world_size}: {op} failed{peer}: {message}")]
    Collective {
        rank: usize,
        world_size: usize,
        op: &'static str,
        /// Which rank was lost, where that can be told.
        peer: String,
        message: String,
    },
    /// A tensor the collectives cannot take as it is.
    #[error("{op}: {message}")]
    Tensor { op: &'static str, message: String },
    /// Starting or watching local ranks failed.
    #[error("launcher: {0}")]
    Launch(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
