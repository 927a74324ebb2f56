//! Waveform augmentation as in hyperion's `ReverbNoiseAug` (the recipe DESIGN.md §4 follows):
//! with probability `rir_prob`, reverberation by FFT convolution with a room impulse response
//! normalised to its direct path (`h / h[argmax |h|]`) and aligned on it; then, with
//! probability `noise_prob`, additive noise of a category drawn by weight (MUSAN noise
//! 0-18 dB, music 3-18 dB, babble 3-18 dB of 3-7 summed speech files) at an SNR drawn
//! uniformly from the category's range.
//!
//! Noises and RIRs come from audio caches (`prepare` on MUSAN/RIR manifests) whose `group` is
//! the category. RIRs are held in memory; noise crops are read from the cache on demand (one
//! hyperslab read per source). Every random choice comes from the caller's generator, so a
//! generator state determines the result; an [`Augmenter`] is shared by loader threads.

use std::path::Path;
use std::sync::Mutex;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use realfft::RealFftPlanner;
use serde::{Deserialize, Serialize};

use crate::cache::AudioCache;
use crate::error::{Error, Result};

/// One additive-noise category: cache group, draw weight, SNR range and sources summed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoiseCategory {
    /// `group` of the noise cache entries (the MUSAN manifest's `split`).
    pub group: String,
    /// Relative frequency of this category among noise draws.
    pub weight: f64,
    /// Lowest SNR drawn (dB).
    pub min_snr_db: f64,
    /// Highest SNR drawn (dB).
    pub max_snr_db: f64,
    /// Files summed into one noise (babble: 3 to 7).
    #[serde(default = "one")]
    pub min_sources: usize,
    /// Most files summed into one noise.
    #[serde(default = "one")]
    pub max_sources: usize,
}

fn one() -> usize {
    1
}

/// One RIR category: cache group and draw weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RirCategory {
    /// `group` of the RIR cache entries (the RIR manifest's `split`).
    pub group: String,
    /// Relative frequency of this category among RIR draws.
    pub weight: f64,
}

/// Augmentation options; defaults are DESIGN.md §4 (hyperion `dinossl.v1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentConfig {
    /// Probability of additive noise.
    pub noise_prob: f64,
    /// Noise categories drawn by weight.
    pub noise: Vec<NoiseCategory>,
    /// Probability of reverberation (applied before the noise).
    pub rir_prob: f64,
    /// RIR categories drawn by weight.
    pub rir: Vec<RirCategory>,
    /// Reverberate and mix on the training device (`augment_tch`, the same draws): the
    /// loader then only reads, crops and draws, which keeps a GPU fed with fewer CPU cores.
    pub on_device: bool,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        let noise = |group: &str, min_snr_db, sources: (usize, usize)| NoiseCategory {
            group: group.to_owned(),
            weight: 1.0,
            min_snr_db,
            max_snr_db: 18.0,
            min_sources: sources.0,
            max_sources: sources.1,
        };
        let rir = |group: &str| RirCategory {
            group: group.to_owned(),
            weight: 1.0,
        };
        AugmentConfig {
            noise_prob: 0.7,
            noise: vec![
                noise("noise", 0.0, (1, 1)),
                noise("music", 3.0, (1, 1)),
                noise("speech", 3.0, (3, 7)),
            ],
            rir_prob: 0.45,
            rir: vec![rir("smallroom"), rir("mediumroom"), rir("real")],
            on_device: false,
        }
    }
}

impl AugmentConfig {
    /// Why these options cannot augment, if they cannot: probabilities outside [0, 1], empty
    /// source or SNR ranges, weights that are negative or not finite, or a probability above
    /// zero whose categories all weigh zero (nothing could be drawn).
    pub fn check(&self) -> std::result::Result<(), String> {
        for (what, p) in [("noise_prob", self.noise_prob), ("rir_prob", self.rir_prob)] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{what} {p} outside [0, 1]"));
            }
        }
        for c in &self.noise {
            let snr_ok = c.min_snr_db.is_finite() && c.max_snr_db.is_finite();
            if c.min_sources == 0
                || c.min_sources > c.max_sources
                || !snr_ok
                || c.min_snr_db > c.max_snr_db
            {
                return Err(format!(
                    "noise category {:?}: empty source or SNR range",
                    c.group
                ));
            }
        }
        let noise = self.noise.iter().map(|c| (c.group.as_str(), c.weight));
        let rir = self.rir.iter().map(|c| (c.group.as_str(), c.weight));
        check_weights("noise", self.noise_prob, noise)?;
        check_weights("rir", self.rir_prob, rir)
    }
}

/// Weights of one kind of category: finite, not negative, and not all zero when `prob` > 0.
fn check_weights<'a>(
    kind: &str,
    prob: f64,
    weights: impl Iterator<Item = (&'a str, f64)>,
) -> std::result::Result<(), String> {
    let mut total = 0.0;
    for (group, weight) in weights {
        if !weight.is_finite() || weight < 0.0 {
            return Err(format!(
                "{kind} category {group:?}: weight {weight} is not a finite number >= 0"
            ));
        }
        total += weight;
    }
    if prob > 0.0 && total <= 0.0 {
        return Err(format!(
            "{kind}_prob is {prob} but no {kind} category has a positive weight"
        ));
    }
    Ok(())
}

/// What [`Augmenter::apply`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// RIR category and cache entry used.
    pub rir: Option<(String, usize)>,
    /// Noise category, target SNR (dB) and cache entries summed.
    pub noise: Option<(String, f64, Vec<usize>)>,
}

/// The random choices of one augmentation ([`Augmenter::draw`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Draw {
    /// RIR category (config order) and position among its RIRs ([`Augmenter::rir_taps`]).
    pub rir: Option<(usize, usize)>,
    /// The additive noise, when drawn.
    pub noise: Option<NoiseDraw>,
}

/// Drawn additive noise: category, SNR, sources, and their sum cut to the crop's length.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseDraw {
    /// Noise category (config order).
    pub category: usize,
    /// Target SNR (dB).
    pub snr_db: f64,
    /// Noise cache entries summed.
    pub entries: Vec<usize>,
    /// The summed noise, as long as the crop.
    pub signal: Vec<f32>,
}

/// Normalised RIR: `h / h[d]` with `d = argmax |h|`, and `d`.
struct Rir {
    taps: Vec<f32>,
    direct: usize,
}

impl Rir {
    fn new(h: &[f32]) -> Option<Self> {
        let (direct, &peak) = h
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))?;
        (peak != 0.0).then(|| Rir {
            taps: h.iter().map(|v| v / peak).collect(),
            direct,
        })
    }
}

/// Noise and RIR sets, ready to augment from several threads.
pub struct Augmenter {
    config: AugmentConfig,
    noise: Option<AudioCache>,
    /// Entries of the noise cache per noise category (config order).
    noise_members: Vec<Vec<usize>>,
    /// RIRs per RIR category (config order), with their cache entry.
    rirs: Vec<Vec<(usize, Rir)>>,
    planner: Mutex<RealFftPlanner<f32>>,
}

impl Augmenter {
    /// Opens the noise cache and loads the RIRs; every category with a positive weight must
    /// have entries (named in the error otherwise).
    pub fn open(
        noise_cache: Option<&Path>,
        rir_cache: Option<&Path>,
        config: &AugmentConfig,
    ) -> Result<Self> {
        let context = noise_cache.or(rir_cache).unwrap_or(Path::new("augment"));
        config
            .check()
            .map_err(|message| Error::invalid(context, message))?;
        let noise = noise_cache.map(AudioCache::open).transpose()?;
        let noise_members = match &noise {
            Some(cache) => members(cache, config.noise.iter().map(|c| (&c.group, c.weight)))?,
            None if config.noise_prob > 0.0 => {
                return Err(Error::invalid(
                    context,
                    "noise_prob > 0 needs a noise cache",
                ));
            }
            None => Vec::new(),
        };
        let rirs = match rir_cache {
            Some(path) => {
                let cache = AudioCache::open(path)?;
                members(&cache, config.rir.iter().map(|c| (&c.group, c.weight)))?
                    .into_iter()
                    .map(|entries| {
                        let mut rirs = Vec::new();
                        for &i in &entries {
                            let h: Vec<f32> =
                                cache.read_all(i)?.iter().map(|&s| f32::from(s)).collect();
                            if let Some(rir) = Rir::new(&h) {
                                rirs.push((i, rir));
                            }
                        }
                        Ok((entries.len(), rirs))
                    })
                    .collect::<Result<Vec<_>>>()?
                    .into_iter()
                    .zip(&config.rir)
                    .map(|((entries, rirs), c)| {
                        if rirs.is_empty() && c.weight > 0.0 && config.rir_prob > 0.0 {
                            return Err(Error::invalid(
                                path,
                                format!(
                                    "RIR category {:?}: all {entries} response(s) are zero",
                                    c.group
                                ),
                            ));
                        }
                        Ok(rirs)
                    })
                    .collect::<Result<Vec<_>>>()?
            }
            None if config.rir_prob > 0.0 => {
                return Err(Error::invalid(context, "rir_prob > 0 needs an RIR cache"));
            }
            None => Vec::new(),
        };
        Ok(Augmenter {
            config: config.clone(),
            noise,
            noise_members,
            rirs,
            planner: Mutex::new(RealFftPlanner::new()),
        })
    }

    /// The options in force.
    pub fn config(&self) -> &AugmentConfig {
        &self.config
    }

    /// The noise cache (for its read statistics), when noise is configured.
    pub fn noise_cache(&self) -> Option<&AudioCache> {
        self.noise.as_ref()
    }

    /// Augments `x` in place (any scale; noise is scaled to the drawn SNR).
    pub fn apply(&self, x: &mut [f32], rng: &mut ChaCha8Rng) -> Result<Applied> {
        let draw = self.draw(x.len(), rng)?;
        Ok(self.apply_draw(x, &draw))
    }

    /// The random choices of one augmentation of a crop of `len` samples, with the noise
    /// read and summed: all the CPU work of [`Augmenter::apply`] but the filtering and
    /// mixing, which [`Augmenter::apply_draw`] or the batched tch path
    /// ([`crate::augment_tch`]) do.
    pub fn draw(&self, len: usize, rng: &mut ChaCha8Rng) -> Result<Draw> {
        let mut draw = Draw {
            rir: None,
            noise: None,
        };
        if len == 0 {
            return Ok(draw);
        }
        if rng.gen_bool(self.config.rir_prob) {
            let c = pick_weighted(rng, self.config.rir.iter().map(|c| c.weight));
            draw.rir = Some((c, rng.gen_range(0..self.rirs[c].len())));
        }
        if rng.gen_bool(self.config.noise_prob) {
            let c = pick_weighted(rng, self.config.noise.iter().map(|c| c.weight));
            let cat = &self.config.noise[c];
            let sources = rng.gen_range(cat.min_sources..=cat.max_sources);
            let snr_db = rng.gen_range(cat.min_snr_db..=cat.max_snr_db);
            let cache = self.noise.as_ref().expect("checked at open");
            let mut signal = vec![0.0f32; len];
            let mut entries = Vec::with_capacity(sources);
            for _ in 0..sources {
                let members = &self.noise_members[c];
                let entry = members[rng.gen_range(0..members.len())];
                add_crop(cache, entry, &mut signal, rng)?;
                entries.push(entry);
            }
            draw.noise = Some(NoiseDraw {
                category: c,
                snr_db,
                entries,
                signal,
            });
        }
        Ok(draw)
    }

    /// Applies a [`Draw`] made for `x`: reverberation, then the noise at the drawn SNR.
    pub fn apply_draw(&self, x: &mut [f32], draw: &Draw) -> Applied {
        let mut applied = Applied {
            rir: None,
            noise: None,
        };
        if let Some((c, i)) = draw.rir {
            let (entry, rir) = &self.rirs[c][i];
            let y = self.reverberate(x, rir);
            x.copy_from_slice(&y);
            applied.rir = Some((self.config.rir[c].group.clone(), *entry));
        }
        if let Some(noise) = &draw.noise {
            let (px, pn) = (power(x), power(&noise.signal));
            if px > 0.0 && pn > 0.0 {
                let scale = (px / (pn * 10f64.powf(noise.snr_db / 10.0))).sqrt() as f32;
                for (v, n) in x.iter_mut().zip(&noise.signal) {
                    *v += scale * n;
                }
            }
            applied.noise = Some((
                self.config.noise[noise.category].group.clone(),
                noise.snr_db,
                noise.entries.clone(),
            ));
        }
        applied
    }

    /// The normalised taps of RIR `i` of category `c` (as drawn) and their direct path.
    pub fn rir_taps(&self, c: usize, i: usize) -> (&[f32], usize) {
        let rir = &self.rirs[c][i].1;
        (&rir.taps, rir.direct)
    }

    /// `x` convolved with the RIR, samples `d .. d + len(x)` (aligned on the direct path).
    fn reverberate(&self, x: &[f32], rir: &Rir) -> Vec<f32> {
        let n = (x.len() + rir.taps.len() - 1).next_power_of_two();
        let (forward, inverse) = {
            let mut planner = self.planner.lock().expect("planner lock");
            (planner.plan_fft_forward(n), planner.plan_fft_inverse(n))
        };
        let spectrum = |signal: &[f32]| {
            let mut buf = forward.make_input_vec();
            buf[..signal.len()].copy_from_slice(signal);
            let mut out = forward.make_output_vec();
            forward
                .process(&mut buf, &mut out)
                .expect("buffers sized by the plan");
            out
        };
        let (sx, sh) = (spectrum(x), spectrum(&rir.taps));
        let mut product: Vec<_> = sx.iter().zip(&sh).map(|(a, b)| a * b).collect();
        let mut y = inverse.make_output_vec();
        inverse
            .process(&mut product, &mut y)
            .expect("buffers sized by the plan");
        let scale = 1.0 / n as f32;
        y[rir.direct..rir.direct + x.len()]
            .iter()
            .map(|v| v * scale)
            .collect()
    }
}

/// Cache entries of each `(group, weight)`; groups with positive weight must be non-empty.
fn members<'a>(
    cache: &AudioCache,
    groups: impl Iterator<Item = (&'a String, f64)>,
) -> Result<Vec<Vec<usize>>> {
    groups
        .map(|(group, weight)| {
            let entries: Vec<usize> = cache
                .entries()
                .iter()
                .enumerate()
                .filter(|(_, e)| &e.group == group && e.length > 0)
                .map(|(i, _)| i)
                .collect();
            if entries.is_empty() && weight > 0.0 {
                let mut known: Vec<&str> =
                    cache.entries().iter().map(|e| e.group.as_str()).collect();
                known.sort_unstable();
                known.dedup();
                return Err(Error::invalid(
                    cache.path(),
                    format!("no entries of group {group:?} (groups present: {known:?})"),
                ));
            }
            Ok(entries)
        })
        .collect()
}

/// Index drawn with probability proportional to its weight.
fn pick_weighted(rng: &mut ChaCha8Rng, weights: impl Iterator<Item = f64> + Clone) -> usize {
    let total: f64 = weights.clone().sum();
    let mut u = rng.gen_range(0.0..total);
    let mut last = 0;
    for (i, w) in weights.enumerate() {
        if w > 0.0 {
            last = i;
            if u < w {
                return i;
            }
            u -= w;
        }
    }
    last
}

/// Adds a random crop of entry `entry` (looped when shorter than `out`) to `out`.
fn add_crop(cache: &AudioCache, entry: usize, out: &mut [f32], rng: &mut ChaCha8Rng) -> Result<()> {
    let len = cache.entries()[entry].length as usize;
    if len >= out.len() {
        let start = rng.gen_range(0..=len - out.len());
        let crop = cache.read(entry, start, out.len())?;
        for (o, s) in out.iter_mut().zip(crop) {
            *o += f32::from(s);
        }
    } else {
        let all = cache.read_all(entry)?;
        let start = rng.gen_range(0..len);
        for (i, o) in out.iter_mut().enumerate() {
            *o += f32::from(all[(start + i) % len]);
        }
    }
    Ok(())
}

fn power(x: &[f32]) -> f64 {
    x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / x.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rir_is_normalised_on_its_direct_path() {
        let rir = Rir::new(&[0.0, 0.1, -2.0, 0.5]).unwrap();
        assert_eq!(rir.direct, 2);
        assert_eq!(rir.taps, vec![-0.0, -0.05, 1.0, -0.25]);
        assert!(Rir::new(&[0.0; 4]).is_none());
    }

    #[test]
    fn weights_that_cannot_be_drawn_are_refused() {
        let zero = |mut c: AugmentConfig| {
            c.noise.iter_mut().for_each(|n| n.weight = 0.0);
            c
        };
        let err = zero(AugmentConfig::default()).check().unwrap_err();
        assert!(
            err.contains("noise_prob is 0.7 but no noise category"),
            "{err}"
        );
        let off = AugmentConfig {
            noise_prob: 0.0,
            ..AugmentConfig::default()
        };
        assert!(zero(off).check().is_ok());
        let mut nan = AugmentConfig::default();
        nan.rir[1].weight = f64::NAN;
        let err = nan.check().unwrap_err();
        assert!(err.contains("\"mediumroom\": weight NaN"), "{err}");
        let mut negative = AugmentConfig::default();
        negative.noise[0].weight = -1.0;
        assert!(negative.check().is_err());
        // Open refuses them before touching any cache.
        let err = Augmenter::open(None, None, &zero(AugmentConfig::default()))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("no noise category has a positive weight"),
            "{err}"
        );
    }

    #[test]
    fn weighted_choice_skips_zero_weights() {
        let mut rng = stage_kit::rng::stream(1, "test");
        let picks: Vec<usize> = (0..200)
            .map(|_| pick_weighted(&mut rng, [0.0, 1.0, 3.0].into_iter()))
            .collect();
        assert!(picks.iter().all(|&p| p != 0));
        let threes = picks.iter().filter(|&&p| p == 2).count();
        assert!(threes > 120 && threes < 180, "{threes}");
    }
}
