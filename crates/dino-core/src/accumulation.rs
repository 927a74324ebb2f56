//! Gradient accumulation: a step's (per-rank) batch processed as `count` micro-batches whose
//! losses are each divided by `count` and back-propagated into the same gradients, which are
//! averaged over the ranks once, after the last micro-batch (as DDP's `no_sync` on the
//! others). The optimiser then steps on the gradient of the whole global batch, so the
//! recipe's batch and learning-rate schedule hold with less memory per rank.

use tch::Tensor;

use crate::distributed::GradSync;
use crate::error::Result;
use crate::optim::{LossScaler, Optimizer};

/// Back-propagates the loss of micro-batch `micro` (from 0) of `count`: the first clears the
/// gradients, the last averages them over the ranks. With `mixed` the loss is scaled first.
pub fn backward_micro(
    optimizer: &Optimizer,
    scaler: &LossScaler,
    grads: &GradSync,
    loss: &Tensor,
    mixed: bool,
    (micro, count): (usize, usize),
) -> Result<()> {
    if micro == 0 {
        optimizer.zero_grad();
    }
    let scale = if mixed { scaler.scale } else { 1.0 };
    grads.backward(&(loss * (scale / count as f64)), micro + 1 == count)
}

/// After the last micro-batch: unscales (with `mixed`) and clips the gradients; returns
/// their norm and whether the step must be skipped (overflow).
pub fn finish(
    optimizer: &Optimizer,
    scaler: &mut LossScaler,
    mixed: bool,
    clip: Option<f64>,
) -> (f64, bool) {
    let skipped = mixed && !scaler.unscale(optimizer);
    let norm = match clip {
        Some(max) => optimizer.clip_grad_norm(max),
        None => optimizer.grad_norm(),
    };
    (norm, skipped)
}
