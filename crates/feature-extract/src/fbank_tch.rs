//! The Kaldi fbank of [`crate::fbank`] as batched tensor operations (tch), for features
//! computed on the fly during training on whatever device the waveforms are on.
//!
//! Input `[B, T]` (int16 range, equal lengths; the caller pads or crops), output
//! `[B, frames, dim]`. Computes in float32 by default, like torchaudio; [`TchFbank::with_kind`]
//! selects float64, which matches the Rust transform to ~1e-5 even in near-empty bands where
//! float32 rounding dominates.

use ndarray::Array2;
use tch::{Device, Kind, Tensor};

use crate::error::Result;
use crate::fbank::{FLOAT_EPSILON, FbankOptions, FrameGeometry, mel_filters, mel_matrix, window};

/// Filterbank constants (window, mel matrix) held on a device.
pub struct TchFbank {
    opts: FbankOptions,
    geometry: FrameGeometry,
    kind: Kind,
    /// Window and mel matrix in float64, the masters of the copies in `kind`.
    window64: Tensor,
    mel_t64: Tensor,
    window: Tensor,
    /// `[padded_size / 2 + 1, bins]`, transposed for the matmul.
    mel_t: Tensor,
}

impl TchFbank {
    /// Prepares the transform on `device` (float32).
    pub fn new(opts: &FbankOptions, device: Device) -> Result<Self> {
        // The Rust plan validates the options the same way.
        crate::fbank::Fbank::new(opts)?;
        let geometry = FrameGeometry::new(opts);
        let w = window(opts.window_type, geometry.window_size);
        let mel = mel_matrix(
            &mel_filters(opts, geometry.padded_size)?,
            geometry.padded_size,
        );
        let window64 = Tensor::from_slice(&w).to_device(device);
        let mel_t64 = array_to_tensor(&mel).to_device(device).tr().contiguous();
        Ok(TchFbank {
            opts: opts.clone(),
            geometry,
            kind: Kind::Double,
            window: window64.shallow_clone(),
            mel_t: mel_t64.shallow_clone(),
            window64,
            mel_t64,
        }
        .with_kind(Kind::Float))
    }

    /// Computes in `kind` (`Kind::Float` or `Kind::Double`).
    pub fn with_kind(mut self, kind: Kind) -> Self {
        self.kind = kind;
        self.window = self.window64.to_kind(kind);
        self.mel_t = self.mel_t64.to_kind(kind);
        self
    }

    /// The options the transform was planned for.
    pub fn options(&self) -> &FbankOptions {
        &self.opts
    }

    /// Frames produced from `samples` samples.
    pub fn num_frames(&self, samples: usize) -> usize {
        self.geometry.num_frames(samples)
    }

    /// Features `[B, frames, dim]` (float32) of waveforms `[B, T]`, without dither: what
    /// extraction computes, the same every time.
    pub fn forward(&self, waveforms: &Tensor) -> Tensor {
        self.compute(waveforms, None)
    }

    /// [`TchFbank::forward`] with the configured dither, drawn from the counter-based stream
    /// `key` ([`crate::counter_noise`]): training's features, reproducible from the key.
    pub fn forward_dithered(&self, waveforms: &Tensor, key: u64) -> Tensor {
        self.compute(waveforms, Some(key))
    }

    fn compute(&self, waveforms: &Tensor, dither_key: Option<u64>) -> Tensor {
        let device = waveforms.device();
        let (window, mel_t) = (self.window.to_device(device), self.mel_t.to_device(device));
        let g = self.geometry;
        let x = waveforms.to_kind(self.kind);
        let (batch, len) = x.size2().expect("waveforms must be [B, T]");
        let frames = g.num_frames(len as usize) as i64;
        let dim = self.opts.num_mel_bins as i64 + i64::from(self.opts.use_energy);
        if frames == 0 {
            return Tensor::zeros([batch, 0, dim], (Kind::Float, device));
        }
        let signal = if g.snip_edges {
            x
        } else {
            let pad = g.edge_padding() as i64;
            let reversed = x.flip([1]);
            if pad > 0 {
                let left = x.narrow(1, 0, pad.min(len)).flip([1]);
                Tensor::cat(&[left, x, reversed], 1)
            } else {
                let skip = (-pad).min(len);
                Tensor::cat(&[x.narrow(1, skip, len - skip), reversed], 1)
            }
        };
        let mut f = signal
            .unfold(1, g.window_size as i64, g.window_shift as i64)
            .narrow(1, 0, frames);
        if let Some(key) = dither_key.filter(|_| self.opts.dither != 0.0) {
            let noise = crate::counter_noise::normal(&f.size(), key, device);
            f = &f + noise.to_kind(self.kind) * self.opts.dither;
        }
        if self.opts.remove_dc_offset {
            f = &f - f.mean_dim(-1, true, self.kind);
        }
        let log_energy = |frames: &Tensor| {
            let e = frames
                .square()
                .sum_dim_intlist(-1, false, self.kind)
                .clamp_min(FLOAT_EPSILON)
                .log();
            if self.opts.energy_floor > 0.0 {
                e.clamp_min(self.opts.energy_floor.ln())
            } else {
                e
            }
        };
        let mut energy = (self.opts.use_energy && self.opts.raw_energy).then(|| log_energy(&f));
        if self.opts.preemphasis != 0.0 {
            let w = g.window_size as i64;
            let previous = Tensor::cat(&[f.narrow(2, 0, 1), f.narrow(2, 0, w - 1)], 2);
            f = &f - previous * self.opts.preemphasis;
        }
        f *= &window;
        if self.opts.use_energy && !self.opts.raw_energy {
            energy = Some(log_energy(&f));
        }
        let spectrum = f.fft_rfft(g.padded_size as i64, -1, "backward").abs();
        let spectrum = if self.opts.use_power {
            spectrum.square()
        } else {
            spectrum
        };
        let mut mel = spectrum.matmul(&mel_t);
        if self.opts.use_log_fbank {
            mel = mel.clamp_min(FLOAT_EPSILON).log();
        }
        if let Some(e) = energy {
            mel = Tensor::cat(&[e.unsqueeze(-1), mel], 2);
        }
        mel.to_kind(Kind::Float)
    }
}

fn array_to_tensor(a: &Array2<f64>) -> Tensor {
    let data: Vec<f64> = a.iter().copied().collect();
    Tensor::from_slice(&data).view([a.nrows() as i64, a.ncols() as i64])
}
