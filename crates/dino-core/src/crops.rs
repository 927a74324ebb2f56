//! Multi-crop views of utterances from an audio cache: `global_crops` crops of
//! `global_seconds` (the whole utterance, repeated to length, when it is shorter) and
//! `local_crops` crops of `local_seconds`, each cut at a random place and augmented
//! independently. Every random choice of an item comes from a stream keyed by the seed, the
//! epoch and the item's position in that epoch, so a resumed run draws the same crops.

use std::path::Path;

use feature_extract::augment::{Augmenter, Draw};
use feature_extract::cache::AudioCache;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::error::Result;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CropConfig {
    /// Global views (the teacher sees these).
    pub global_crops: usize,
    pub global_seconds: f64,
    /// Local views (student only).
    pub local_crops: usize,
    pub local_seconds: f64,
}

impl CropConfig {
    /// Why these crops cannot be cut, if they cannot: no global view, or a view of 0 s or
    /// of a length that is not a number (the message names the key).
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.global_crops == 0 {
            return Err("global_crops = 0: the teacher needs at least one global view".into());
        }
        for (key, count, seconds) in [
            ("global_seconds", self.global_crops, self.global_seconds),
            ("local_seconds", self.local_crops, self.local_seconds),
        ] {
            if count > 0 && !(seconds.is_finite() && seconds > 0.0) {
                return Err(format!(
                    "{key} = {seconds}: must be a finite number of seconds > 0"
                ));
            }
        }
        Ok(())
    }
}

impl Default for CropConfig {
    fn default() -> Self {
        CropConfig {
            global_crops: 2,
            global_seconds: 4.0,
            local_crops: 4,
            local_seconds: 2.0,
        }
    }
}

/// Waveform crops (int16 scale) of one batch, view-major: crop `v * batch + i` is view `v`
/// of item `i`, so that a batch of one view is a contiguous block.
#[derive(Debug, Clone, PartialEq)]
pub struct CropBatch {
    pub batch: usize,
    /// Cache indices of the items, in batch order.
    pub items: Vec<usize>,
    pub globals: Vec<f32>,
    pub global_len: usize,
    pub locals: Vec<f32>,
    pub local_len: usize,
    /// With augmentation on the device: the draws of the global and local crops, in crop
    /// order, to apply there (`feature_extract::augment_tch`); empty otherwise.
    pub global_draws: Vec<Draw>,
    pub local_draws: Vec<Draw>,
}

impl CropBatch {
    /// Number of crops (all views of all items).
    pub fn count(&self) -> usize {
        self.globals.len() / self.global_len.max(1) + self.locals.len() / self.local_len.max(1)
    }
}

/// Cuts and augments crops.
pub struct CropSampler {
    cache: AudioCache,
    augmenter: Option<Augmenter>,
    config: CropConfig,
    seed: u64,
    augment_on_device: bool,
}

impl CropSampler {
    pub fn new(
        cache: AudioCache,
        augmenter: Option<Augmenter>,
        config: CropConfig,
        seed: u64,
    ) -> Self {
        CropSampler {
            cache,
            augmenter,
            config,
            seed,
            augment_on_device: false,
        }
    }

    /// Only draws the augmentation (and reads the noise) for each crop, leaving the
    /// filtering and mixing to the training device: the same random streams, so the same
    /// augmented crops as on the CPU.
    pub fn with_augmentation_on_device(mut self, on_device: bool) -> Self {
        self.augment_on_device = on_device;
        self
    }

    pub fn cache(&self) -> &AudioCache {
        &self.cache
    }

    /// The augmenter, when crops are augmented on the CPU.
    pub fn augmenter(&self) -> Option<&Augmenter> {
        self.augmenter.as_ref()
    }

    /// The crops `[n, len]` of a [`CropBatch`] buffer on `device`; with augmentation on the
    /// device, reverberated and mixed there by their `draws` (the batch's, in crop order).
    pub fn to_device(&self, crops: &[f32], n: usize, draws: &[Draw], device: Device) -> Tensor {
        let len = (crops.len() / n.max(1)) as i64;
        let x = Tensor::from_slice(crops)
            .view([n as i64, len])
            .to_device(device);
        match &self.augmenter {
            Some(augmenter) if self.augment_on_device && !draws.is_empty() => {
                feature_extract::augment_tch::apply_draws(augmenter, &x, draws)
            }
            _ => x,
        }
    }

    /// Crop length in samples for a duration.
    pub fn samples(&self, seconds: f64) -> usize {
        (seconds * f64::from(self.cache.sample_rate())).round() as usize
    }

    /// The crops of the items `(position in the epoch, cache index)` of one batch.
    pub fn batch(&self, epoch: usize, items: &[(usize, usize)]) -> Result<CropBatch> {
        let (gl, ll) = (
            self.samples(self.config.global_seconds),
            self.samples(self.config.local_seconds),
        );
        let b = items.len();
        let mut globals = vec![0.0; self.config.global_crops * b * gl];
        let mut locals = vec![0.0; self.config.local_crops * b * ll];
        let drawn = self.augment_on_device && self.augmenter.is_some();
        let none = || Draw {
            rir: None,
            noise: None,
        };
        let mut global_draws: Vec<Draw> = Vec::new();
        let mut local_draws: Vec<Draw> = Vec::new();
        if drawn {
            global_draws.resize_with(self.config.global_crops * b, none);
            local_draws.resize_with(self.config.local_crops * b, none);
        }
        for (i, &(position, index)) in items.iter().enumerate() {
            let mut rng =
                stage_kit::rng::stream(self.seed, &format!("crops/epoch{epoch}/item{position}"));
            for v in 0..self.config.global_crops {
                let slot = v * b + i;
                let draw = self.view(index, &mut globals[slot * gl..(slot + 1) * gl], &mut rng)?;
                if let Some(draw) = draw {
                    global_draws[slot] = draw;
                }
            }
            for v in 0..self.config.local_crops {
                let slot = v * b + i;
                let draw = self.view(index, &mut locals[slot * ll..(slot + 1) * ll], &mut rng)?;
                if let Some(draw) = draw {
                    local_draws[slot] = draw;
                }
            }
        }
        Ok(CropBatch {
            batch: b,
            items: items.iter().map(|&(_, index)| index).collect(),
            globals,
            global_len: gl,
            locals,
            local_len: ll,
            global_draws,
            local_draws,
        })
    }

    /// Fills `out` with one crop of cache entry `index`, augmented, or with augmentation on
    /// the device returns its draw instead.
    pub fn view(
        &self,
        index: usize,
        out: &mut [f32],
        rng: &mut ChaCha8Rng,
    ) -> Result<Option<Draw>> {
        let len = out.len();
        let available = self.cache.entries()[index].length as usize;
        let samples = if available > len {
            let start = rng.gen_range(0..=available - len);
            self.cache.read(index, start, len)?
        } else {
            self.cache.read_all(index)?
        };
        if samples.is_empty() {
            out.fill(0.0);
        } else {
            for (o, s) in out.iter_mut().zip(samples.iter().cycle()) {
                *o = f32::from(*s);
            }
        }
        match &self.augmenter {
            Some(augmenter) if self.augment_on_device => Ok(Some(augmenter.draw(len, rng)?)),
            Some(augmenter) => {
                augmenter.apply(out, rng)?;
                Ok(None)
            }
            None => Ok(None),
        }
    }
}

/// Opens the augmenter when noise or RIR caches are given.
pub fn open_augmenter(
    noise: Option<&Path>,
    rirs: Option<&Path>,
    config: &feature_extract::augment::AugmentConfig,
) -> Result<Option<Augmenter>> {
    if noise.is_none() && rirs.is_none() {
        return Ok(None);
    }
    Ok(Some(Augmenter::open(noise, rirs, config)?))
}
