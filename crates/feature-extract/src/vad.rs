//! Energy voice activity detection with Kaldi `compute-vad` semantics, and trimming of the
//! unvoiced samples.
//!
//! A frame is voiced when at least `proportion_threshold` of the frames within
//! `frames_context` of it (clipped at the edges) have a log energy above
//! `energy_threshold + energy_mean_scale * mean(log energy)`. The log energy is Kaldi's raw
//! frame energy (after DC removal, before pre-emphasis) with the fbank's framing and dither
//! and no energy floor, as `compute-mfcc-feats` computes the C0 that `compute-vad` reads.

use serde::{Deserialize, Serialize};

use crate::fbank::{Fbank, FbankOptions, FrameGeometry};

/// Kaldi's `compute-vad` options, with the defaults of the VoxCeleb recipes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VadOptions {
    pub energy_threshold: f32,
    pub energy_mean_scale: f32,
    pub frames_context: usize,
    pub proportion_threshold: f32,
}

impl Default for VadOptions {
    fn default() -> Self {
        VadOptions {
            energy_threshold: 5.5,
            energy_mean_scale: 0.5,
            frames_context: 2,
            proportion_threshold: 0.12,
        }
    }
}

/// Voiced/unvoiced decision per frame from per-frame log energies.
pub fn decide(log_energy: &[f32], opts: &VadOptions) -> Vec<bool> {
    let t_max = log_energy.len();
    if t_max == 0 {
        return Vec::new();
    }
    let mean = log_energy.iter().map(|&e| f64::from(e)).sum::<f64>() / t_max as f64;
    let threshold = opts.energy_threshold + opts.energy_mean_scale * mean as f32;
    let above: Vec<bool> = log_energy.iter().map(|&e| e > threshold).collect();
    (0..t_max)
        .map(|t| {
            let lo = t.saturating_sub(opts.frames_context);
            let hi = (t + opts.frames_context + 1).min(t_max);
            let num = above[lo..hi].iter().filter(|&&a| a).count();
            num as f32 >= (hi - lo) as f32 * opts.proportion_threshold
        })
        .collect()
}

/// Frame decisions for audio (int16 range) framed as `fbank` frames it.
pub fn frame_decisions(samples: &[f32], fbank: &FbankOptions, opts: &VadOptions) -> Vec<bool> {
    let energy_opts = FbankOptions {
        energy_floor: 0.0,
        ..fbank.clone()
    };
    let plan = Fbank::new(&energy_opts).expect("options validated by the caller's Fbank");
    decide(&plan.log_energy(samples), opts)
}

/// The samples of voiced frames: sample `n` belongs to frame `n / shift` (the last frame keeps
/// the tail), so consecutive voiced frames give back contiguous audio.
pub fn trim(samples: &[f32], decisions: &[bool], geometry: &FrameGeometry) -> Vec<f32> {
    if decisions.is_empty() {
        return Vec::new();
    }
    let shift = geometry.window_shift;
    let last = decisions.len() - 1;
    samples
        .iter()
        .enumerate()
        .filter(|(n, _)| decisions[(n / shift).min(last)])
        .map(|(_, &s)| s)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_and_proportion_follow_kaldi() {
        // Mean 2.0 -> threshold 6.5; one loud frame among silence.
        let mut e = vec![0.0f32; 10];
        e[5] = 20.0;
        let d = decide(&e, &VadOptions::default());
        // With 5 frames of context, 1 loud of 5 = 0.2 >= 0.12: frames 3..=7 are voiced.
        let voiced: Vec<usize> = (0..10).filter(|&t| d[t]).collect();
        assert_eq!(voiced, vec![3, 4, 5, 6, 7]);
        let strict = VadOptions {
            proportion_threshold: 0.5,
            ..Default::default()
        };
        assert!(decide(&e, &strict).iter().all(|&v| !v));
        let no_context = VadOptions {
            frames_context: 0,
            ..Default::default()
        };
        assert_eq!(decide(&e, &no_context).iter().filter(|&&v| v).count(), 1);
        assert!(decide(&[], &strict).is_empty());
    }

    #[test]
    fn trimming_keeps_the_samples_of_voiced_frames() {
        let g = FrameGeometry::new(&FbankOptions::default());
        let samples: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        // Frames of 160 samples: 0..160, 160..320, ... the 4th frame keeps the tail.
        let kept = trim(&samples, &[false, true, false, true], &g);
        assert_eq!(kept.len(), 160 + (1000 - 480));
        assert_eq!(kept[0], 160.0);
        assert_eq!(kept[160], 480.0);
    }
}
