//! ECAPA-TDNN (Desplanques et al., 2020): a 1-D convolutional stem, three SE-Res2Net blocks
//! with growing dilation, multi-layer feature aggregation of their outputs, attentive
//! statistics pooling with global context, and a 192-dimensional embedding.

use serde::{Deserialize, Serialize};
use tch::nn::{self, Module, ModuleT};
use tch::{Kind, Tensor};

use super::Layers;
use super::layers::{Conv1dBlock, batch_norm1d};
use super::pooling::{AttentiveStatsPooling, pooled_norm};

/// ECAPA-TDNN hyper-parameters; the defaults are the paper's C = 512 model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EcapaConfig {
    /// Channels C of the stem and the SE-Res2Net blocks.
    pub channels: i64,
    /// Res2Net scale (number of channel groups).
    pub scale: i64,
    /// Dilations of the three SE-Res2Net blocks.
    pub dilations: Vec<i64>,
    /// Bottleneck of the squeeze-excitation units.
    pub se_bottleneck: i64,
    /// Bottleneck of the attention in the pooling layer.
    pub attention_bottleneck: i64,
    /// Channels of the multi-layer feature aggregation (1536 in the paper).
    pub mfa_channels: i64,
    pub feat_dim: i64,
    pub embedding_dim: i64,
}

impl EcapaConfig {
    /// Why these hyper-parameters cannot build the network, if they cannot (names the key).
    pub fn check(&self) -> Result<(), String> {
        let mut sizes = vec![
            ("channels", self.channels),
            ("scale", self.scale),
            ("se_bottleneck", self.se_bottleneck),
            ("attention_bottleneck", self.attention_bottleneck),
            ("mfa_channels", self.mfa_channels),
            ("feat_dim", self.feat_dim),
            ("embedding_dim", self.embedding_dim),
            ("dilations.len()", self.dilations.len() as i64),
        ];
        sizes.extend(self.dilations.iter().map(|&d| ("dilations[_]", d)));
        stage_kit::config::at_least_one(&sizes)?;
        if self.channels % self.scale != 0 {
            return Err(format!(
                "channels = {}: must be a multiple of scale = {} (Res2Net splits the channels \
                 into scale groups)",
                self.channels, self.scale
            ));
        }
        Ok(())
    }
}

impl Default for EcapaConfig {
    fn default() -> Self {
        EcapaConfig {
            channels: 512,
            scale: 8,
            dilations: vec![2, 3, 4],
            se_bottleneck: 128,
            attention_bottleneck: 128,
            mfa_channels: 1536,
            feat_dim: 80,
            embedding_dim: 192,
        }
    }
}

/// Squeeze-excitation over time: channels rescaled by a gate computed from their means.
#[derive(Debug)]
struct SqueezeExcitation {
    squeeze: nn::Conv1D,
    excite: nn::Conv1D,
}

impl SqueezeExcitation {
    fn new(vs: &nn::Path, channels: i64, bottleneck: i64) -> Self {
        SqueezeExcitation {
            squeeze: nn::conv1d(vs / "squeeze", channels, bottleneck, 1, Default::default()),
            excite: nn::conv1d(vs / "excite", bottleneck, channels, 1, Default::default()),
        }
    }
}

impl Module for SqueezeExcitation {
    fn forward(&self, x: &Tensor) -> Tensor {
        let s = x.mean_dim(2, true, Kind::Float);
        let gate = self
            .excite
            .forward(&self.squeeze.forward(&s).relu())
            .sigmoid();
        x * gate
    }
}

/// Res2Net convolution: channel groups where each group's convolution also sees the
/// previous group's output, widening the receptive field inside one layer.
#[derive(Debug)]
struct Res2Conv {
    convs: Vec<Conv1dBlock>,
    scale: i64,
}

impl Res2Conv {
    fn new(vs: &nn::Path, channels: i64, scale: i64, dilation: i64) -> Self {
        let width = channels / scale;
        let convs = (0..scale - 1)
            .map(|i| Conv1dBlock::new(&(vs / i), width, width, 3, dilation))
            .collect();
        Res2Conv { convs, scale }
    }
}

impl ModuleT for Res2Conv {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let groups = x.chunk(self.scale, 1);
        let mut outputs = vec![groups[0].shallow_clone()];
        let mut previous: Option<Tensor> = None;
        for (conv, group) in self.convs.iter().zip(&groups[1..]) {
            let input = match &previous {
                Some(p) => group + p,
                None => group.shallow_clone(),
            };
            let y = conv.forward_t(&input, train);
            outputs.push(y.shallow_clone());
            previous = Some(y);
        }
        Tensor::cat(&outputs, 1)
    }
}

#[derive(Debug)]
struct SeRes2Block {
    pre: Conv1dBlock,
    res2: Res2Conv,
    post: Conv1dBlock,
    se: SqueezeExcitation,
}

impl SeRes2Block {
    fn new(vs: &nn::Path, config: &EcapaConfig, dilation: i64) -> Self {
        let c = config.channels;
        SeRes2Block {
            pre: Conv1dBlock::new(&(vs / "pre"), c, c, 1, 1),
            res2: Res2Conv::new(&(vs / "res2"), c, config.scale, dilation),
            post: Conv1dBlock::new(&(vs / "post"), c, c, 1, 1),
            se: SqueezeExcitation::new(&(vs / "se"), c, config.se_bottleneck),
        }
    }
}

impl ModuleT for SeRes2Block {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let y = self.pre.forward_t(x, train);
        let y = self.res2.forward_t(&y, train);
        let y = self.post.forward_t(&y, train);
        self.se.forward(&y) + x
    }
}

/// The encoder: `[B, T, F]` features to `[B, embedding_dim]`.
#[derive(Debug)]
pub struct Ecapa {
    stem: Conv1dBlock,
    blocks: Vec<SeRes2Block>,
    aggregation: Conv1dBlock,
    pooling: AttentiveStatsPooling,
    pooling_bn: nn::BatchNorm,
    embedding: nn::Linear,
    embedding_bn: nn::BatchNorm,
}

impl Ecapa {
    pub fn new(vs: &nn::Path, config: &EcapaConfig) -> Self {
        let blocks: Vec<SeRes2Block> = config
            .dilations
            .iter()
            .enumerate()
            .map(|(i, &d)| SeRes2Block::new(&(vs / format!("block{}", i + 1)), config, d))
            .collect();
        let aggregated = config.channels * blocks.len() as i64;
        let m = config.mfa_channels;
        Ecapa {
            stem: Conv1dBlock::new(&(vs / "stem"), config.feat_dim, config.channels, 5, 1),
            blocks,
            aggregation: Conv1dBlock::new(&(vs / "aggregation"), aggregated, m, 1, 1),
            pooling: AttentiveStatsPooling::new(&(vs / "pooling"), m, config.attention_bottleneck),
            pooling_bn: pooled_norm(&(vs / "pooling_bn"), 2 * m),
            embedding: nn::linear(
                vs / "embedding",
                2 * m,
                config.embedding_dim,
                Default::default(),
            ),
            embedding_bn: batch_norm1d(&(vs / "embedding_bn"), config.embedding_dim),
        }
    }
}

impl ModuleT for Ecapa {
    fn forward_t(&self, feats: &Tensor, train: bool) -> Tensor {
        self.layers(feats, train).embedding
    }
}

impl Ecapa {
    /// The (normalised) attentive statistics and the embedding computed from them.
    pub fn layers(&self, feats: &Tensor, train: bool) -> Layers {
        let mut x = self.stem.forward_t(&feats.transpose(1, 2), train);
        let mut outputs = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            x = block.forward_t(&x, train);
            outputs.push(x.shallow_clone());
        }
        let aggregated = self.aggregation.forward_t(&Tensor::cat(&outputs, 1), train);
        let pooled = self
            .pooling_bn
            .forward_t(&self.pooling.forward_t(&aggregated, train), train);
        let embedding = self
            .embedding_bn
            .forward_t(&self.embedding.forward(&pooled), train);
        Layers { pooled, embedding }
    }
}
