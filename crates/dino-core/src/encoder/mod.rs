//! Speaker encoders: frame-level features `[B, T, F]` to an utterance embedding `[B, D]`.

mod ecapa;
mod layers;
mod pooling;
mod resnet;

use serde::{Deserialize, Serialize};
use tch::Tensor;
use tch::nn::{self, ModuleT};

pub use ecapa::{Ecapa, EcapaConfig};
pub use layers::{batch_norm1d, batch_norm2d};
pub use pooling::mean_std;
pub use resnet::{ResNet, ResNetConfig};

/// Which encoder, with its hyper-parameters (`type = "resnet"` or `type = "ecapa"` in TOML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum EncoderConfig {
    ResNet(ResNetConfig),
    Ecapa(EcapaConfig),
}

impl Default for EncoderConfig {
    fn default() -> Self {
        EncoderConfig::ResNet(ResNetConfig::default())
    }
}

impl EncoderConfig {
    /// Why these hyper-parameters cannot build an encoder, if they cannot (names the key).
    pub fn check(&self) -> Result<(), String> {
        match self {
            EncoderConfig::ResNet(c) => c.check(),
            EncoderConfig::Ecapa(c) => c.check(),
        }
    }

    /// Named configurations: the published models and tiny variants for CPU tests.
    pub fn preset(name: &str) -> Option<Self> {
        let resnet = |base_channels, blocks| {
            EncoderConfig::ResNet(ResNetConfig {
                base_channels,
                blocks,
                ..Default::default()
            })
        };
        let ecapa = |channels, mfa_channels| {
            EncoderConfig::Ecapa(EcapaConfig {
                channels,
                mfa_channels,
                ..Default::default()
            })
        };
        Some(match name {
            "lresnet34" => resnet(16, [3, 4, 6, 3]),
            "resnet34" => resnet(32, [3, 4, 6, 3]),
            "resnet34-64" => resnet(64, [3, 4, 6, 3]),
            "tiny-resnet" => EncoderConfig::ResNet(ResNetConfig {
                base_channels: 8,
                blocks: [1, 1, 1, 1],
                embedding_dim: 128,
                ..Default::default()
            }),
            "ecapa-512" => ecapa(512, 1536),
            "ecapa-1024" => ecapa(1024, 1536),
            "tiny-ecapa" => EncoderConfig::Ecapa(EcapaConfig {
                channels: 32,
                scale: 4,
                se_bottleneck: 16,
                attention_bottleneck: 16,
                mfa_channels: 96,
                embedding_dim: 64,
                ..Default::default()
            }),
            _ => return None,
        })
    }

    /// Names accepted by [`EncoderConfig::preset`].
    pub const PRESETS: [&'static str; 7] = [
        "lresnet34",
        "resnet34",
        "resnet34-64",
        "tiny-resnet",
        "ecapa-512",
        "ecapa-1024",
        "tiny-ecapa",
    ];

    pub fn embedding_dim(&self) -> i64 {
        match self {
            EncoderConfig::ResNet(c) => c.embedding_dim,
            EncoderConfig::Ecapa(c) => c.embedding_dim,
        }
    }

    pub fn feat_dim(&self) -> i64 {
        match self {
            EncoderConfig::ResNet(c) => c.feat_dim,
            EncoderConfig::Ecapa(c) => c.feat_dim,
        }
    }
}

/// A built encoder.
#[derive(Debug)]
pub enum Encoder {
    ResNet(Box<ResNet>),
    Ecapa(Box<Ecapa>),
}

impl Encoder {
    pub fn new(vs: &nn::Path, config: &EncoderConfig) -> Self {
        match config {
            EncoderConfig::ResNet(c) => Encoder::ResNet(Box::new(ResNet::new(vs, c))),
            EncoderConfig::Ecapa(c) => Encoder::Ecapa(Box::new(Ecapa::new(vs, c))),
        }
    }
}

/// What an encoder computes for a batch: the pooled statistics over time and the embedding
/// layer's output on them.
pub struct Layers {
    /// `[B, P]`: the input of the embedding layer.
    pub pooled: Tensor,
    /// `[B, D]`: the utterance embedding.
    pub embedding: Tensor,
}

impl Encoder {
    /// The pooled statistics and the embedding of `feats`.
    pub fn layers(&self, feats: &Tensor, train: bool) -> Layers {
        match self {
            Encoder::ResNet(m) => m.layers(feats, train),
            Encoder::Ecapa(m) => m.layers(feats, train),
        }
    }
}

impl ModuleT for Encoder {
    fn forward_t(&self, feats: &Tensor, train: bool) -> Tensor {
        match self {
            Encoder::ResNet(m) => m.forward_t(feats, train),
            Encoder::Ecapa(m) => m.forward_t(feats, train),
        }
    }
}

/// Number of trainable parameters in a var store.
pub fn parameter_count(vs: &nn::VarStore) -> i64 {
    vs.trainable_variables()
        .iter()
        .map(Tensor::numel)
        .sum::<usize>() as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn count(name: &str) -> i64 {
        let vs = nn::VarStore::new(Device::Cpu);
        let _ = Encoder::new(&vs.root(), &EncoderConfig::preset(name).unwrap());
        parameter_count(&vs)
    }

    fn assert_close(name: &str, published: f64, tolerance: f64) {
        let n = count(name) as f64;
        assert!(
            (n / published - 1.0).abs() < tolerance,
            "{name}: {n} parameters, published {published}"
        );
    }

    #[test]
    fn parameter_counts_match_published_figures() {
        // ECAPA-TDNN paper (Desplanques et al., 2020), Table 1: 6.2 M (C=512), 14.7 M (C=1024).
        assert_close("ecapa-512", 6.2e6, 0.03);
        assert_close("ecapa-1024", 14.7e6, 0.03);
        // wespeaker ResNet34 (32 base channels, 256-dim embedding): 6.63 M.
        assert_close("resnet34", 6.63e6, 0.03);
        assert!(count("lresnet34") < count("resnet34") / 3);
        assert!(count("tiny-resnet") < 300_000 && count("tiny-ecapa") < 300_000);
    }

    #[test]
    fn every_preset_embeds_variable_length_input() {
        for name in ["tiny-resnet", "tiny-ecapa"] {
            let config = EncoderConfig::preset(name).unwrap();
            let vs = nn::VarStore::new(Device::Cpu);
            let encoder = Encoder::new(&vs.root(), &config);
            for frames in [57, 200] {
                let x = Tensor::randn([2, frames, config.feat_dim()], (Kind::Float, Device::Cpu));
                let y = encoder.forward_t(&x, true);
                assert_eq!(y.size(), vec![2, config.embedding_dim()], "{name}");
            }
        }
    }

    #[test]
    fn config_reads_from_toml_with_defaults_and_rejects_unknown_keys() {
        let c: EncoderConfig = toml::from_str("type = \"ecapa\"\nchannels = 1024").unwrap();
        assert_eq!(c, EncoderConfig::preset("ecapa-1024").unwrap());
        let err = toml::from_str::<EncoderConfig>("type = \"resnet\"\nchanels = 3")
            .unwrap_err()
            .to_string();
        assert!(err.contains("chanels"), "{err}");
    }
}
