//! ResNet speaker encoders on 2-D time-frequency input (hyperion's LResNet34 and the wider
//! ResNet34 of wespeaker): basic residual blocks, a 3x3 stride-1 stem without max-pooling,
//! frequency and time downsampled by 8 over four stages, mean+std pooling over time of the
//! flattened channel x frequency map, and an affine embedding layer.

use serde::{Deserialize, Serialize};
use tch::Tensor;
use tch::nn::{self, Module, ModuleT};

use super::Layers;
use super::layers::{batch_norm1d, batch_norm2d};
use super::pooling::mean_std;

/// ResNet hyper-parameters. The defaults are LResNet34, the paper's encoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResNetConfig {
    /// Basic blocks per stage ([3, 4, 6, 3] is ResNet34).
    pub blocks: [usize; 4],
    /// Channels of the first stage (doubled at each later stage): 16 is LResNet34.
    pub base_channels: i64,
    /// Input feature bins (fbank mel bins).
    pub feat_dim: i64,
    pub embedding_dim: i64,
    /// Batch norm after the embedding layer.
    pub embedding_bn: bool,
}

impl ResNetConfig {
    /// Why these hyper-parameters cannot build the network, if they cannot (names the key).
    pub fn check(&self) -> Result<(), String> {
        let mut sizes = vec![
            ("base_channels", self.base_channels),
            ("feat_dim", self.feat_dim),
            ("embedding_dim", self.embedding_dim),
        ];
        sizes.extend(self.blocks.iter().map(|&b| ("blocks[_]", b as i64)));
        stage_kit::config::at_least_one(&sizes)
    }
}

impl Default for ResNetConfig {
    fn default() -> Self {
        ResNetConfig {
            blocks: [3, 4, 6, 3],
            base_channels: 16,
            feat_dim: 80,
            embedding_dim: 256,
            embedding_bn: true,
        }
    }
}

#[derive(Debug)]
struct BasicBlock {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    conv2: nn::Conv2D,
    bn2: nn::BatchNorm,
    shortcut: Option<(nn::Conv2D, nn::BatchNorm)>,
}

fn conv3x3(vs: nn::Path, input: i64, output: i64, stride: i64) -> nn::Conv2D {
    nn::conv2d(
        vs,
        input,
        output,
        3,
        nn::ConvConfig {
            stride,
            padding: 1,
            bias: false,
            ..Default::default()
        },
    )
}

impl BasicBlock {
    fn new(vs: &nn::Path, input: i64, output: i64, stride: i64) -> Self {
        let shortcut = (stride != 1 || input != output).then(|| {
            let config = nn::ConvConfig {
                stride,
                bias: false,
                ..Default::default()
            };
            (
                nn::conv2d(vs / "shortcut_conv", input, output, 1, config),
                batch_norm2d(&(vs / "shortcut_bn"), output),
            )
        });
        BasicBlock {
            conv1: conv3x3(vs / "conv1", input, output, stride),
            bn1: batch_norm2d(&(vs / "bn1"), output),
            conv2: conv3x3(vs / "conv2", output, output, 1),
            bn2: batch_norm2d(&(vs / "bn2"), output),
            shortcut,
        }
    }
}

impl ModuleT for BasicBlock {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let y = self.bn1.forward_t(&self.conv1.forward(x), train).relu();
        let y = self.bn2.forward_t(&self.conv2.forward(&y), train);
        let identity = match &self.shortcut {
            Some((conv, bn)) => bn.forward_t(&conv.forward(x), train),
            None => x.shallow_clone(),
        };
        (y + identity).relu()
    }
}

/// The encoder: `[B, T, F]` features to `[B, embedding_dim]`.
#[derive(Debug)]
pub struct ResNet {
    stem: nn::Conv2D,
    stem_bn: nn::BatchNorm,
    blocks: Vec<BasicBlock>,
    embedding: nn::Linear,
    embedding_bn: Option<nn::BatchNorm>,
}

impl ResNet {
    pub fn new(vs: &nn::Path, config: &ResNetConfig) -> Self {
        let c = config.base_channels;
        let mut blocks = Vec::new();
        let mut input = c;
        for (stage, &count) in config.blocks.iter().enumerate() {
            let output = c << stage;
            for i in 0..count {
                let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                blocks.push(BasicBlock::new(
                    &(vs / format!("stage{}", stage + 1) / i),
                    input,
                    output,
                    stride,
                ));
                input = output;
            }
        }
        // Frequency after three stride-2 stages (PyTorch's ceil for odd sizes).
        let freq = (0..3).fold(config.feat_dim, |f, _| (f + 1) / 2);
        let pooled = 2 * input * freq;
        ResNet {
            stem: conv3x3(vs / "stem", 1, c, 1),
            stem_bn: batch_norm2d(&(vs / "stem_bn"), c),
            blocks,
            embedding: nn::linear(
                vs / "embedding",
                pooled,
                config.embedding_dim,
                Default::default(),
            ),
            embedding_bn: config
                .embedding_bn
                .then(|| batch_norm1d(&(vs / "embedding_bn"), config.embedding_dim)),
        }
    }
}

impl ModuleT for ResNet {
    fn forward_t(&self, feats: &Tensor, train: bool) -> Tensor {
        self.layers(feats, train).embedding
    }
}

impl ResNet {
    /// The pooled statistics and the embedding computed from them.
    pub fn layers(&self, feats: &Tensor, train: bool) -> Layers {
        let x = feats.transpose(1, 2).unsqueeze(1);
        let mut x = self.stem_bn.forward_t(&self.stem.forward(&x), train).relu();
        for block in &self.blocks {
            x = block.forward_t(&x, train);
        }
        // Channels x frequency flattened without reading the sizes, so that a TorchScript
        // trace stays length-generic.
        let pooled = mean_std(&x.flatten(1, 2));
        let embedding = self.embedding.forward(&pooled);
        let embedding = match &self.embedding_bn {
            Some(bn) => bn.forward_t(&embedding, train),
            None => embedding,
        };
        Layers { pooled, embedding }
    }
}
