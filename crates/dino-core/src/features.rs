//! Frame features of waveform batches on the training device: the Kaldi fbank of
//! feature-extract (as tensor operations, so it runs on the GPU when the batch is there)
//! followed by mean normalisation.

use feature_extract::fbank::FbankOptions;
use feature_extract::fbank_tch::TchFbank;
use feature_extract::normalize::{StmnOptions, cmn_tch, stmn_tch};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::error::{Error, Result};

/// Mean normalisation of the features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Normalization {
    None,
    /// Per-utterance (per-crop) mean subtraction.
    Cmn,
    /// hyperion's sliding-window short-time mean normalisation.
    Stmn(StmnOptions),
}

/// Features as the encoder sees them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeatureConfig {
    pub fbank: FbankOptions,
    pub normalization: Normalization,
}

impl Default for FeatureConfig {
    fn default() -> Self {
        FeatureConfig {
            fbank: FbankOptions::default(),
            normalization: Normalization::Stmn(StmnOptions::default()),
        }
    }
}

/// The feature transform on one device.
pub struct FeaturePipeline {
    fbank: TchFbank,
    normalization: Normalization,
    device: Device,
}

impl FeaturePipeline {
    pub fn new(config: &FeatureConfig, device: Device) -> Result<Self> {
        let fbank = TchFbank::new(&config.fbank, device)
            .map_err(|e| Error::Config(format!("fbank: {e}")))?;
        Ok(FeaturePipeline {
            fbank,
            normalization: config.normalization.clone(),
            device,
        })
    }

    pub fn sample_rate(&self) -> u32 {
        self.fbank.options().sample_rate
    }

    /// The device the features are computed on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Normalised features `[B, frames, bins]` on the device of waveforms `[B, T]` (int16
    /// scale) given as a flat host buffer.
    pub fn forward(&self, waveforms: &[f32], batch: usize) -> Tensor {
        let len = (waveforms.len() / batch.max(1)) as i64;
        let x = Tensor::from_slice(waveforms)
            .view([batch as i64, len])
            .to_device(self.device);
        self.of(&x)
    }

    /// Normalised features of waveforms `[B, T]` (int16 scale) already on the device, without
    /// dither (extraction).
    pub fn of(&self, x: &Tensor) -> Tensor {
        self.normalized(self.fbank.forward(x))
    }

    /// [`FeaturePipeline::of`] with the configured dither drawn from the stream of `key`
    /// (training: [`dither_key`] makes it a function of the run's seed and position).
    pub fn of_training(&self, x: &Tensor, key: u64) -> Tensor {
        self.normalized(self.fbank.forward_dithered(x, key))
    }

    fn normalized(&self, feats: Tensor) -> Tensor {
        match &self.normalization {
            Normalization::None => feats,
            Normalization::Cmn => cmn_tch(&feats),
            Normalization::Stmn(options) => stmn_tch(&feats, options),
        }
    }
}

/// The dither stream of one batch of views in training: a function of the run's seed, the
/// step, the rank, the micro-batch and the view, so a resumed run draws what an
/// uninterrupted one would have, and concurrent runs draw independently.
pub fn dither_key(seed: u64, step: usize, rank: usize, micro: usize, view: &str) -> u64 {
    let name = format!("dither/step-{step}/rank-{rank}/micro-{micro}/{view}");
    stage_kit::rng::stream_seed(seed, &name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalised_features_have_zero_mean_per_crop() {
        let config = FeatureConfig {
            normalization: Normalization::Cmn,
            ..Default::default()
        };
        let pipeline = FeaturePipeline::new(&config, Device::Cpu).unwrap();
        let wave: Vec<f32> = (0..2 * 8000)
            .map(|i| 3000.0 * ((i as f32) * 0.05).sin() + (i % 7) as f32)
            .collect();
        let feats = pipeline.forward(&wave, 2);
        assert_eq!(feats.size(), vec![2, 48, 80]);
        let mean = feats
            .mean_dim(1, false, tch::Kind::Float)
            .abs()
            .max()
            .double_value(&[]);
        assert!(mean < 1e-4, "{mean}");
        let toml = "normalization = { type = \"stmn\", left_context = 10, right_context = 10 }";
        let c: FeatureConfig = toml::from_str(toml).unwrap();
        assert_eq!(
            c.normalization,
            Normalization::Stmn(StmnOptions {
                left_context: 10,
                right_context: 10
            })
        );
    }

    #[test]
    fn dither_only_in_training_and_a_function_of_its_key() {
        let mut config = FeatureConfig::default();
        config.fbank.dither = 1.0;
        let pipeline = FeaturePipeline::new(&config, Device::Cpu).unwrap();
        let x = Tensor::from_slice(&(0..16000).map(|i| (i % 50) as f32).collect::<Vec<_>>())
            .view([1, 16000]);
        assert!(
            pipeline.of(&x).equal(&pipeline.of(&x)),
            "extraction is dithered"
        );
        let key = dither_key(1, 5, 0, 0, "global");
        let a = pipeline.of_training(&x, key);
        assert!(a.equal(&pipeline.of_training(&x, key)));
        assert!(!a.equal(&pipeline.of(&x)));
        for other in [
            dither_key(2, 5, 0, 0, "global"),
            dither_key(1, 6, 0, 0, "global"),
            dither_key(1, 5, 1, 0, "global"),
            dither_key(1, 5, 0, 1, "global"),
            dither_key(1, 5, 0, 0, "local"),
        ] {
            assert!(!a.equal(&pipeline.of_training(&x, other)));
        }
    }
}
