//! Kaldi log mel filterbanks (`compute-fbank-feats`), numerically the same as
//! `torchaudio.compliance.kaldi.fbank` for the same options: framing (snip_edges true/false),
//! dither, DC removal, pre-emphasis, povey/hamming/hanning/rectangular/blackman windows,
//! zero-padding to a power of two, power spectrum, triangular mel filters on the Kaldi mel
//! scale (`1127 ln(1 + f/700)`), log with a float32-epsilon floor, optional log energy first.
//!
//! Input is mono audio in the int16 range. The transform runs in f64 and returns f32; it is
//! deterministic (dither draws from a caller's generator, or a fixed one in [`compute`]).

use std::f64::consts::PI;
use std::sync::Arc;

use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use realfft::{RealFftPlanner, RealToComplex};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// torch.finfo(torch.float32).eps: the floor of energies before the log, as torchaudio.
pub const FLOAT_EPSILON: f64 = f32::EPSILON as f64;

/// Analysis window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowType {
    /// Hann window to the power 0.85 (Kaldi's default).
    Povey,
    Hamming,
    Hanning,
    Rectangular,
    Blackman,
}

/// Options of the Kaldi fbank; defaults are DESIGN.md's (80 bins, 25/10 ms, povey, 16 kHz).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FbankOptions {
    pub sample_rate: u32,
    pub num_mel_bins: usize,
    pub frame_length_ms: f64,
    pub frame_shift_ms: f64,
    pub window_type: WindowType,
    /// Pre-emphasis coefficient (0 disables).
    pub preemphasis: f64,
    pub remove_dc_offset: bool,
    /// Lowest filter edge in Hz.
    pub low_freq: f64,
    /// Highest filter edge in Hz; 0 or negative counts back from the Nyquist frequency.
    pub high_freq: f64,
    /// Only frames that fit entirely in the signal (true), or centred frames with reflected
    /// edges, one per shift (false).
    pub snip_edges: bool,
    /// Prepend the frame's log energy as column 0.
    pub use_energy: bool,
    /// Energy measured before pre-emphasis and windowing (Kaldi's default).
    pub raw_energy: bool,
    /// Floor of the energy (linear); 0 disables.
    pub energy_floor: f64,
    /// Gaussian dither standard deviation, in int16 units (0 disables).
    pub dither: f64,
    pub round_to_power_of_two: bool,
    /// Power spectrum (true) or magnitude.
    pub use_power: bool,
    /// Log filterbank energies (true) or linear.
    pub use_log_fbank: bool,
}

impl Default for FbankOptions {
    fn default() -> Self {
        FbankOptions {
            sample_rate: 16000,
            num_mel_bins: 80,
            frame_length_ms: 25.0,
            frame_shift_ms: 10.0,
            window_type: WindowType::Povey,
            preemphasis: 0.97,
            remove_dc_offset: true,
            low_freq: 20.0,
            high_freq: 0.0,
            snip_edges: true,
            use_energy: false,
            raw_energy: true,
            energy_floor: 1.0,
            dither: 0.0,
            round_to_power_of_two: true,
            use_power: true,
            use_log_fbank: true,
        }
    }
}

/// Frame sizes in samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameGeometry {
    pub window_size: usize,
    pub window_shift: usize,
    /// FFT length (window size, rounded up to a power of two when asked).
    pub padded_size: usize,
    pub snip_edges: bool,
}

impl FrameGeometry {
    pub fn new(opts: &FbankOptions) -> Self {
        // int(), as torchaudio: truncation of the millisecond products.
        let rate = f64::from(opts.sample_rate);
        let window_size = (rate * opts.frame_length_ms * 0.001) as usize;
        let window_shift = (rate * opts.frame_shift_ms * 0.001) as usize;
        let padded_size = if opts.round_to_power_of_two {
            window_size.next_power_of_two()
        } else {
            window_size
        };
        FrameGeometry {
            window_size,
            window_shift,
            padded_size,
            snip_edges: opts.snip_edges,
        }
    }

    /// Frames produced from `n` samples.
    pub fn num_frames(&self, n: usize) -> usize {
        if self.snip_edges {
            if n < self.window_size {
                0
            } else {
                1 + (n - self.window_size) / self.window_shift
            }
        } else {
            (n + self.window_shift / 2) / self.window_shift
        }
    }

    /// Samples left of the signal that snip_edges=false frames reach into (reflected), or,
    /// when negative, samples skipped at the start.
    pub fn edge_padding(&self) -> isize {
        (self.window_size / 2) as isize - (self.window_shift / 2) as isize
    }

    /// The signal the frames are cut from: the samples themselves with snip_edges, else
    /// the samples with Kaldi's reflected edges (frame `i` starts at `i * window_shift`).
    pub fn framed_signal(&self, samples: &[f32]) -> Vec<f32> {
        if self.snip_edges {
            return samples.to_vec();
        }
        let pad = self.edge_padding();
        let reversed = samples.iter().rev();
        if pad > 0 {
            let pad = (pad as usize).min(samples.len());
            samples[..pad]
                .iter()
                .rev()
                .chain(samples)
                .chain(reversed)
                .copied()
                .collect()
        } else {
            let skip = ((-pad) as usize).min(samples.len());
            samples[skip..].iter().chain(reversed).copied().collect()
        }
    }
}

/// The analysis window of `size` samples (symmetric, as Kaldi and torchaudio).
pub fn window(kind: WindowType, size: usize) -> Vec<f64> {
    let denom = (size.max(2) - 1) as f64;
    let a = 2.0 * PI / denom;
    (0..size)
        .map(|i| {
            let i = i as f64;
            let hann = 0.5 - 0.5 * (a * i).cos();
            match kind {
                WindowType::Hanning => hann,
                WindowType::Povey => hann.powf(0.85),
                WindowType::Hamming => 0.54 - 0.46 * (a * i).cos(),
                WindowType::Rectangular => 1.0,
                WindowType::Blackman => 0.42 - 0.5 * (a * i).cos() + 0.08 * (2.0 * a * i).cos(),
            }
        })
        .collect()
}

/// Kaldi's mel scale.
pub fn mel_scale(hz: f64) -> f64 {
    1127.0 * (1.0 + hz / 700.0).ln()
}

/// One triangular filter: weights of FFT bins `first..first + weights.len()`.
#[derive(Debug, Clone, PartialEq)]
pub struct MelFilter {
    pub first: usize,
    pub weights: Vec<f64>,
}

/// The triangular mel filters over the `padded_size / 2 + 1` FFT bins (the Nyquist bin always
/// has weight 0, as in Kaldi).
pub fn mel_filters(opts: &FbankOptions, padded_size: usize) -> Result<Vec<MelFilter>> {
    let rate = f64::from(opts.sample_rate);
    let nyquist = 0.5 * rate;
    let high = if opts.high_freq <= 0.0 {
        opts.high_freq + nyquist
    } else {
        opts.high_freq
    };
    if !((0.0..nyquist).contains(&opts.low_freq) && high > 0.0 && high <= nyquist) {
        return Err(Error::Options(format!(
            "fbank: frequencies out of range: low {} Hz, high {} Hz (resolved {high} Hz), Nyquist {nyquist} Hz",
            opts.low_freq, opts.high_freq
        )));
    }
    if opts.low_freq >= high {
        return Err(Error::Options(format!(
            "fbank: low frequency {} Hz is not below the high frequency {high} Hz",
            opts.low_freq
        )));
    }
    let bin_width = rate / padded_size as f64;
    let mel_low = mel_scale(opts.low_freq);
    let mel_delta = (mel_scale(high) - mel_low) / (opts.num_mel_bins + 1) as f64;
    let fft_bins = padded_size / 2;
    let mels: Vec<f64> = (0..fft_bins)
        .map(|k| mel_scale(bin_width * k as f64))
        .collect();
    Ok((0..opts.num_mel_bins)
        .map(|m| {
            let left = mel_low + m as f64 * mel_delta;
            let center = mel_low + (m + 1) as f64 * mel_delta;
            let right = mel_low + (m + 2) as f64 * mel_delta;
            let weight = |mel: f64| {
                let up = (mel - left) / (center - left);
                let down = (right - mel) / (right - center);
                up.min(down).max(0.0)
            };
            let first = mels.iter().position(|&mel| weight(mel) > 0.0).unwrap_or(0);
            let end = mels[first..]
                .iter()
                .position(|&mel| weight(mel) <= 0.0)
                .map_or(fft_bins, |p| first + p);
            MelFilter {
                first,
                weights: mels[first..end].iter().map(|&mel| weight(mel)).collect(),
            }
        })
        .collect())
}

/// Dense `[num_mel_bins, padded_size / 2 + 1]` matrix of [`mel_filters`].
pub fn mel_matrix(filters: &[MelFilter], padded_size: usize) -> Array2<f64> {
    let mut m = Array2::zeros((filters.len(), padded_size / 2 + 1));
    for (row, f) in filters.iter().enumerate() {
        for (k, &w) in f.weights.iter().enumerate() {
            m[[row, f.first + k]] = w;
        }
    }
    m
}

/// A planned fbank: window, filters and FFT prepared once; shareable between threads.
pub struct Fbank {
    opts: FbankOptions,
    geometry: FrameGeometry,
    window: Vec<f64>,
    filters: Vec<MelFilter>,
    fft: Arc<dyn RealToComplex<f64>>,
}

impl Fbank {
    /// Checks the options and prepares the transform.
    pub fn new(opts: &FbankOptions) -> Result<Self> {
        let geometry = FrameGeometry::new(opts);
        if geometry.window_size < 2 || geometry.window_shift == 0 {
            return Err(Error::Options(format!(
                "fbank: a frame of {} samples with a shift of {} at {} Hz is too short",
                geometry.window_size, geometry.window_shift, opts.sample_rate
            )));
        }
        if opts.num_mel_bins < 3 {
            return Err(Error::Options(format!(
                "fbank: at least 3 mel bins are needed, got {}",
                opts.num_mel_bins
            )));
        }
        let filters = mel_filters(opts, geometry.padded_size)?;
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(geometry.padded_size);
        Ok(Fbank {
            opts: opts.clone(),
            geometry,
            window: window(opts.window_type, geometry.window_size),
            filters,
            fft,
        })
    }

    pub fn options(&self) -> &FbankOptions {
        &self.opts
    }

    pub fn geometry(&self) -> FrameGeometry {
        self.geometry
    }

    /// Feature dimension (mel bins, plus one with energy).
    pub fn dim(&self) -> usize {
        self.opts.num_mel_bins + usize::from(self.opts.use_energy)
    }

    /// Features `[frames, dim]`; dither, when configured, draws from `rng`.
    pub fn compute_with_rng(&self, samples: &[f32], rng: &mut impl Rng) -> Array2<f32> {
        let g = self.geometry;
        let frames = g.num_frames(samples.len());
        let signal = g.framed_signal(samples);
        let mut out = Array2::zeros((frames, self.dim()));
        let mut frame = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut power = vec![0.0f64; spectrum.len()];
        let bins_at = usize::from(self.opts.use_energy);
        for (t, mut row) in out.rows_mut().into_iter().enumerate() {
            let start = t * g.window_shift;
            let energy = self.prepare_frame(
                &signal[start..start + g.window_size],
                &mut frame,
                Some(&mut *rng),
            );
            self.fft
                .process_with_scratch(&mut frame, &mut spectrum, &mut scratch)
                .expect("FFT buffers sized by the plan");
            for (p, c) in power.iter_mut().zip(&spectrum) {
                let p2 = c.norm_sqr();
                *p = if self.opts.use_power { p2 } else { p2.sqrt() };
            }
            if let Some(energy) = energy {
                row[0] = energy as f32;
            }
            for (m, filter) in self.filters.iter().enumerate() {
                let e: f64 = filter
                    .weights
                    .iter()
                    .zip(&power[filter.first..])
                    .map(|(w, p)| w * p)
                    .sum();
                row[bins_at + m] = if self.opts.use_log_fbank {
                    e.max(FLOAT_EPSILON).ln() as f32
                } else {
                    e as f32
                };
            }
        }
        out
    }

    /// Features `[frames, dim]`; dither (if any) from a fixed-seed generator.
    pub fn compute(&self, samples: &[f32]) -> Array2<f32> {
        self.compute_with_rng(samples, &mut ChaCha8Rng::seed_from_u64(0))
    }

    /// Raw log energy of every frame (after dither and DC removal, before pre-emphasis and
    /// windowing, floored like the energy column): the input of energy VAD.
    pub fn log_energy(&self, samples: &[f32]) -> Vec<f32> {
        let g = self.geometry;
        let signal = g.framed_signal(samples);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut buf = Vec::with_capacity(g.window_size);
        (0..g.num_frames(samples.len()))
            .map(|t| {
                let start = t * g.window_shift;
                buf.clear();
                buf.extend(
                    signal[start..start + g.window_size]
                        .iter()
                        .map(|&s| f64::from(s)),
                );
                self.dither_and_center(&mut buf, &mut rng);
                self.floored_log_energy(buf.iter().map(|x| x * x).sum()) as f32
            })
            .collect()
    }

    fn dither_and_center(&self, frame: &mut [f64], rng: &mut impl Rng) {
        if self.opts.dither != 0.0 {
            for x in frame.iter_mut() {
                *x += self.opts.dither * standard_normal(rng);
            }
        }
        if self.opts.remove_dc_offset {
            let mean = frame.iter().sum::<f64>() / frame.len() as f64;
            frame.iter_mut().for_each(|x| *x -= mean);
        }
    }

    fn floored_log_energy(&self, energy: f64) -> f64 {
        let log_energy = energy.max(FLOAT_EPSILON).ln();
        if self.opts.energy_floor > 0.0 {
            log_energy.max(self.opts.energy_floor.ln())
        } else {
            log_energy
        }
    }

    /// Fills the zero-padded FFT input from one frame of samples; returns the log energy
    /// when the options ask for it.
    fn prepare_frame(
        &self,
        samples: &[f32],
        frame: &mut [f64],
        rng: Option<&mut impl Rng>,
    ) -> Option<f64> {
        let n = samples.len();
        let (x, padding) = frame.split_at_mut(n);
        for (d, &s) in x.iter_mut().zip(samples) {
            *d = f64::from(s);
        }
        padding.fill(0.0);
        if let Some(rng) = rng {
            self.dither_and_center(x, rng);
        }
        let mut energy = (self.opts.use_energy && self.opts.raw_energy)
            .then(|| self.floored_log_energy(x.iter().map(|v| v * v).sum()));
        let c = self.opts.preemphasis;
        if c != 0.0 {
            for i in (1..n).rev() {
                x[i] -= c * x[i - 1];
            }
            x[0] -= c * x[0];
        }
        for (v, w) in x.iter_mut().zip(&self.window) {
            *v *= w;
        }
        if self.opts.use_energy && !self.opts.raw_energy {
            energy = Some(self.floored_log_energy(x.iter().map(|v| v * v).sum()));
        }
        energy
    }
}

/// A standard normal draw (Box-Muller), for dither.
fn standard_normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = 1.0 - rng.r#gen::<f64>();
    let u2: f64 = rng.r#gen::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos()
}

/// Features of `samples` (int16 range) with `opts`; see [`Fbank`] to reuse the plan.
pub fn compute(samples: &[f32], opts: &FbankOptions) -> Result<Array2<f32>> {
    Ok(Fbank::new(opts)?.compute(samples))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_counts_follow_kaldi() {
        let g = FrameGeometry::new(&FbankOptions::default());
        assert_eq!(
            (g.window_size, g.window_shift, g.padded_size),
            (400, 160, 512)
        );
        assert_eq!(g.num_frames(399), 0);
        assert_eq!(g.num_frames(400), 1);
        assert_eq!(g.num_frames(16000), 98);
        let g = FrameGeometry::new(&FbankOptions {
            snip_edges: false,
            ..Default::default()
        });
        assert_eq!(g.num_frames(16000), 100);
        assert_eq!(g.num_frames(16079), 100);
        assert_eq!(g.num_frames(16080), 101);
        // Reflection: 120 samples mirrored on the left, the whole signal on the right.
        let x: Vec<f32> = (0..500).map(|i| i as f32).collect();
        let s = g.framed_signal(&x);
        assert_eq!(s.len(), 120 + 500 + 500);
        assert_eq!(&s[..3], &[119.0, 118.0, 117.0]);
        assert_eq!(s[119], 0.0);
        assert_eq!(s[120], 0.0);
        assert_eq!(s[620], 499.0);
    }

    #[test]
    fn filters_are_triangles_that_overlap_their_neighbours() {
        let opts = FbankOptions::default();
        let filters = mel_filters(&opts, 512).unwrap();
        assert_eq!(filters.len(), 80);
        for pair in filters.windows(2) {
            assert!(pair[1].first >= pair[0].first);
        }
        for f in &filters {
            let peak = f.weights.iter().cloned().fold(0.0, f64::max);
            assert!(peak > 0.3 && peak <= 1.0, "{peak}");
        }
        assert!(
            mel_filters(
                &FbankOptions {
                    high_freq: 9000.0,
                    ..opts
                },
                512
            )
            .is_err()
        );
    }

    #[test]
    fn silence_is_floored_and_a_tone_peaks_in_its_band() {
        let fbank = Fbank::new(&FbankOptions::default()).unwrap();
        let silent = fbank.compute(&vec![0.0; 1600]);
        assert_eq!(silent.dim(), (8, 80));
        assert!(
            silent
                .iter()
                .all(|&v| (v - FLOAT_EPSILON.ln() as f32).abs() < 1e-6)
        );
        let tone: Vec<f32> = (0..16000)
            .map(|i| 8000.0 * (2.0 * PI * 1000.0 * i as f64 / 16000.0).sin() as f32)
            .collect();
        let feats = fbank.compute(&tone);
        let row = feats.row(50);
        let best = (0..80).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
        let filters = mel_filters(fbank.options(), 512).unwrap();
        let center_bin = 1000.0 / (16000.0 / 512.0);
        let f = &filters[best];
        assert!((f.first as f64) < center_bin && center_bin < (f.first + f.weights.len()) as f64);
    }

    #[test]
    fn dither_is_reproducible_from_the_generator() {
        let opts = FbankOptions {
            dither: 1.0,
            ..Default::default()
        };
        let fbank = Fbank::new(&opts).unwrap();
        let silence = vec![0.0f32; 4000];
        let a = fbank.compute_with_rng(&silence, &mut ChaCha8Rng::seed_from_u64(5));
        let b = fbank.compute_with_rng(&silence, &mut ChaCha8Rng::seed_from_u64(5));
        let c = fbank.compute_with_rng(&silence, &mut ChaCha8Rng::seed_from_u64(6));
        assert_eq!(a, b);
        assert_ne!(a, c);
        // Unit-variance noise lifts digital silence well above the epsilon floor.
        let floor = FLOAT_EPSILON.ln() as f32;
        assert!(a.iter().all(|&v| v > floor + 5.0));
    }

    #[test]
    fn options_round_trip_through_toml_and_reject_unknown_keys() {
        let opts = FbankOptions {
            num_mel_bins: 64,
            window_type: WindowType::Hamming,
            ..Default::default()
        };
        let text = toml::to_string(&opts).unwrap();
        assert_eq!(toml::from_str::<FbankOptions>(&text).unwrap(), opts);
        assert!(toml::from_str::<FbankOptions>("num_bins = 3").is_err());
        let partial: FbankOptions = toml::from_str("window_type = \"hanning\"").unwrap();
        assert_eq!(partial.num_mel_bins, 80);
    }
}
