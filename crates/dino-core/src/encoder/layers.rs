//! Small building blocks shared by the encoders.

use tch::Tensor;
use tch::nn::{self, Module, ModuleT};

/// Batch norm over `[B, C]` or `[B, C, T]` with PyTorch's initialisation (weight 1, bias 0).
pub fn batch_norm1d(vs: &nn::Path, dim: i64) -> nn::BatchNorm {
    nn::batch_norm1d(vs, dim, bn_config())
}

/// Batch norm over `[B, C, H, W]` with PyTorch's initialisation.
pub fn batch_norm2d(vs: &nn::Path, dim: i64) -> nn::BatchNorm {
    nn::batch_norm2d(vs, dim, bn_config())
}

fn bn_config() -> nn::BatchNormConfig {
    nn::BatchNormConfig {
        ws_init: nn::Init::Const(1.0),
        ..Default::default()
    }
}

/// TDNN block as in ECAPA-TDNN: 1-D convolution, ReLU, batch norm.
#[derive(Debug)]
pub struct Conv1dBlock {
    conv: nn::Conv1D,
    bn: nn::BatchNorm,
}

impl Conv1dBlock {
    pub fn new(vs: &nn::Path, input: i64, output: i64, kernel: i64, dilation: i64) -> Self {
        let config = nn::ConvConfig {
            padding: dilation * (kernel - 1) / 2,
            dilation,
            ..Default::default()
        };
        Conv1dBlock {
            conv: nn::conv1d(vs / "conv", input, output, kernel, config),
            bn: batch_norm1d(&(vs / "bn"), output),
        }
    }
}

impl ModuleT for Conv1dBlock {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.bn.forward_t(&self.conv.forward(x).relu(), train)
    }
}
