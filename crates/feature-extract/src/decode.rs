//! Decoding WAV, FLAC and AAC-in-MP4 (`.m4a`, VoxCeleb2's format) with symphonia, downmixing
//! to mono and resampling with rubato.
//!
//! Samples come back as `f32` in the **int16 range** (`-32768.0..=32767.0` for 16-bit input),
//! the scale Kaldi's features and the int16 audio cache expect. For MP4 files the encoder's
//! priming samples (the edit list's `media_time`) are skipped and the trailing padding is cut at
//! the track's duration, so sample `n` is the sample ffmpeg decodes at the same position.

use std::io::Cursor;
use std::path::Path;

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};
use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;

use crate::error::{Error, Result};
use crate::mp4;

/// Scale from symphonia's `[-1, 1)` floats to the int16 range.
const INT16_SCALE: f32 = 32768.0;

/// Mono audio at its sample rate, in the int16 range.
#[derive(Debug, Clone, PartialEq)]
pub struct Audio {
    pub samples: Vec<f32>,
    pub sample_rate: u32,
}

impl Audio {
    pub fn duration_seconds(&self) -> f64 {
        self.samples.len() as f64 / f64::from(self.sample_rate.max(1))
    }
}

/// Decodes `path` to mono at `target_rate` (int16 range), resampling when the file's rate
/// differs.
pub fn load_mono(path: &Path, target_rate: u32) -> Result<Vec<f32>> {
    let audio = decode_mono(path)?;
    resample(&audio.samples, audio.sample_rate, target_rate)
}

/// Decodes `path` to mono at its own sample rate (int16 range). Channels are averaged.
pub fn decode_mono(path: &Path) -> Result<Audio> {
    let (interleaved, channels, sample_rate) = decode_interleaved(path)?;
    let samples = if channels == 1 {
        interleaved
    } else {
        let scale = 1.0 / channels as f32;
        interleaved
            .chunks_exact(channels)
            .map(|frame| frame.iter().sum::<f32>() * scale)
            .collect()
    };
    Ok(Audio {
        samples,
        sample_rate,
    })
}

/// Decodes every channel: interleaved samples (int16 range), channel count, sample rate.
pub fn decode_interleaved(path: &Path) -> Result<(Vec<f32>, usize, u32)> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let invalid = |message: String| Error::invalid(path, message);
    // Encoder delay and track length of MP4 files, which symphonia does not apply.
    let mp4_timing = if mp4::is_mp4(&bytes) {
        Some(mp4::audio_timing(&bytes).map_err(|m| invalid(format!("MP4 container: {m}")))?)
    } else {
        None
    };

    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    let source = MediaSourceStream::new(Box::new(Cursor::new(bytes)), Default::default());
    let mut format = symphonia::default::get_probe()
        .probe(
            &hint,
            source,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(|e| invalid(format!("unrecognised audio format: {e}")))?;
    let track = format
        .default_track(TrackType::Audio)
        .ok_or_else(|| invalid("no audio track".into()))?;
    let track_id = track.id;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or_else(|| invalid("audio track without codec parameters".into()))?
        .clone();
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .map_err(|e| invalid(format!("unsupported codec: {e}")))?;

    let mut interleaved: Vec<f32> = Vec::new();
    let mut packet_buf: Vec<f32> = Vec::new();
    let mut channels = 0usize;
    let mut sample_rate = params.sample_rate.unwrap_or(0);
    loop {
        let packet = match format.next_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) => break,
            Err(e) => return Err(invalid(format!("reading packets: {e}"))),
        };
        if packet.track_id != track_id {
            continue;
        }
        let decoded = decoder.decode(&packet).map_err(|e| {
            invalid(format!(
                "decoding the packet at timestamp {}: {e}",
                packet.pts.get()
            ))
        })?;
        let spec = decoded.spec();
        channels = spec.channels().count();
        sample_rate = spec.rate();
        decoded.copy_to_vec_interleaved(&mut packet_buf);
        interleaved.extend(packet_buf.iter().map(|s| s * INT16_SCALE));
    }
    if channels == 0 || sample_rate == 0 {
        return Err(invalid("no audio decoded".into()));
    }
    if let Some(timing) = mp4_timing {
        let skip = (timing.priming_frames(sample_rate) as usize * channels).min(interleaved.len());
        interleaved.drain(..skip);
        if let Some(frames) = timing.playable_frames(sample_rate) {
            interleaved.truncate(frames as usize * channels);
        }
    }
    Ok((interleaved, channels, sample_rate))
}

/// Resamples mono audio from `from` Hz to `to` Hz with rubato's FFT resampler (its delay
/// trimmed, so the output is time-aligned); the output has `ceil(len * to / from)` samples.
pub fn resample(samples: &[f32], from: u32, to: u32) -> Result<Vec<f32>> {
    if from == to || samples.is_empty() {
        return Ok(samples.to_vec());
    }
    let fail = |e: String| Error::Options(format!("resampling {from} Hz to {to} Hz: {e}"));
    let mut resampler = Fft::<f32>::new(from as usize, to as usize, 1024, 1, FixedSync::Input)
        .map_err(|e| fail(e.to_string()))?;
    let input =
        InterleavedSlice::new(samples, 1, samples.len()).map_err(|e| fail(e.to_string()))?;
    let output = resampler
        .process_all(&input, samples.len(), None)
        .map_err(|e| fail(e.to_string()))?;
    Ok(output.take_data())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resampling_keeps_a_tone_and_its_timing() {
        let tone = |rate: u32, n: usize| -> Vec<f32> {
            (0..n)
                .map(|i| {
                    1000.0 * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / rate as f32).sin()
                })
                .collect()
        };
        let input = tone(48000, 48000);
        let output = resample(&input, 48000, 16000).unwrap();
        assert_eq!(output.len(), 16000);
        let expected = tone(16000, 16000);
        let err: f32 = output[200..15800]
            .iter()
            .zip(&expected[200..15800])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(err < 1.0, "max error {err} of a 1000-amplitude tone");
    }
}
