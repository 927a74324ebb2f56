//! Temporal pooling: utterance statistics from frame-level features of any length.

use tch::nn::{self, Module, ModuleT};
use tch::{Kind, Tensor};

use super::layers::{Conv1dBlock, batch_norm1d};

/// Floor of the variance before the square root, for the gradient's sake on silent input.
const VARIANCE_FLOOR: f64 = 1e-5;

/// Mean and standard deviation over the last (time) axis: `[B, C, T] -> [B, 2C]`.
pub fn mean_std(x: &Tensor) -> Tensor {
    let mean = x.mean_dim(-1, false, Kind::Float);
    let var = (x * x).mean_dim(-1, false, Kind::Float) - &mean * &mean;
    Tensor::cat(&[mean, var.clamp_min(VARIANCE_FLOOR).sqrt()], 1)
}

/// Attentive statistics pooling with global context (ECAPA-TDNN): a channel- and
/// frame-dependent attention, computed from each frame together with the utterance mean and
/// standard deviation, weights the mean and standard deviation. `[B, C, T] -> [B, 2C]`.
#[derive(Debug)]
pub struct AttentiveStatsPooling {
    tdnn: Conv1dBlock,
    attention: nn::Conv1D,
}

impl AttentiveStatsPooling {
    pub fn new(vs: &nn::Path, channels: i64, bottleneck: i64) -> Self {
        AttentiveStatsPooling {
            tdnn: Conv1dBlock::new(&(vs / "tdnn"), 3 * channels, bottleneck, 1, 1),
            attention: nn::conv1d(
                vs / "attention",
                bottleneck,
                channels,
                1,
                Default::default(),
            ),
        }
    }
}

impl ModuleT for AttentiveStatsPooling {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        // expand_as, not the frame count: a TorchScript trace stays length-generic.
        let stats = mean_std(x);
        let chunks = stats.chunk(2, 1);
        let context = Tensor::cat(
            &[
                x.shallow_clone(),
                chunks[0].unsqueeze(2).expand_as(x),
                chunks[1].unsqueeze(2).expand_as(x),
            ],
            1,
        );
        let scores = self
            .attention
            .forward(&self.tdnn.forward_t(&context, train).tanh());
        let weights = scores.softmax(2, Kind::Float);
        let mean = (x * &weights).sum_dim_intlist(2, false, Kind::Float);
        let var = (x * x * &weights).sum_dim_intlist(2, false, Kind::Float) - &mean * &mean;
        Tensor::cat(&[mean, var.clamp_min(VARIANCE_FLOOR).sqrt()], 1)
    }
}

/// Batch norm over pooled statistics (used by ECAPA before its embedding layer).
pub fn pooled_norm(vs: &nn::Path, dim: i64) -> nn::BatchNorm {
    batch_norm1d(vs, dim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_std_matches_direct_computation() {
        let x = Tensor::from_slice(&[1.0f32, 3.0, 2.0, 2.0]).view([1, 2, 2]);
        let s: Vec<f32> = mean_std(&x).view([-1]).try_into().unwrap();
        assert_eq!(s[0], 2.0);
        assert_eq!(s[1], 2.0);
        assert!((s[2] - 1.0).abs() < 1e-6);
        assert!((s[3] - VARIANCE_FLOOR.sqrt() as f32).abs() < 1e-6);
    }

    #[test]
    fn attentive_pooling_is_length_agnostic() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let pool = AttentiveStatsPooling::new(&vs.root(), 8, 4);
        for frames in [5, 37] {
            let y = pool.forward_t(
                &Tensor::randn([3, 8, frames], (Kind::Float, tch::Device::Cpu)),
                false,
            );
            assert_eq!(y.size(), vec![3, 16]);
        }
    }
}
