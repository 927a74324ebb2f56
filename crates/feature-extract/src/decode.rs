//! Decoding WAV, FLAC and AAC-in-MP4 (`.m4a`, VoxCeleb2's format) with symphonia, and NIST
//! SPHERE (16-bit PCM, mu-law, a-law) with data-manifest's reader; downmixing to mono (or
//! taking the one channel an utterance is) and resampling with rubato.
//!
//! Samples come back as `f32` in the **int16 range** (`-32768.0..=32767.0` for 16-bit input),
//! the scale Kaldi's features and the int16 audio cache expect. For MP4 files the encoder's
//! priming samples (the edit list's `media_time`) are skipped and the trailing padding is cut at
//! the track's duration, so sample `n` is the sample ffmpeg decodes at the same position.

use std::io::Cursor;
use std::path::Path;

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};
use serde::{Deserialize, Serialize};
use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;

use data_manifest::probe::{mp4_timing, sphere};

use crate::error::{Error, Result};

/// Scale from symphonia's `[-1, 1)` floats to the int16 range.
const INT16_SCALE: f32 = 32768.0;

/// Mono audio at its sample rate, in the int16 range.
#[derive(Debug, Clone, PartialEq)]
pub struct Audio {
    /// Mono samples in the int16 range.
    pub samples: Vec<f32>,
    /// Samples per second.
    pub sample_rate: u32,
}

impl Audio {
    /// Length in seconds.
    pub fn duration_seconds(&self) -> f64 {
        self.samples.len() as f64 / f64::from(self.sample_rate.max(1))
    }
}

/// How several channels become one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Downmix {
    /// The mean of all channels (speech recorded in stereo).
    #[default]
    Mean,
    /// The first channel only, as Kaldi's recipes take multi-microphone RIRs (averaging
    /// microphones would smear the direct path).
    First,
}

/// Decodes `path` to mono at `target_rate` (int16 range), resampling when the file's rate
/// differs. Channels are averaged.
pub fn load_mono(path: &Path, target_rate: u32) -> Result<Vec<f32>> {
    load(path, target_rate, Downmix::Mean)
}

/// [`load_mono`] with the channel handling chosen.
pub fn load(path: &Path, target_rate: u32, downmix: Downmix) -> Result<Vec<f32>> {
    load_channel(path, target_rate, downmix, None)
}

/// [`load`] of one channel alone when `channel` is given (an utterance that is one channel
/// of a file whose channels are separate recordings, the manifest's `channel` column).
pub fn load_channel(
    path: &Path,
    target_rate: u32,
    downmix: Downmix,
    channel: Option<u16>,
) -> Result<Vec<f32>> {
    let audio = decode_channel(path, downmix, channel)?;
    resample(&audio.samples, audio.sample_rate, target_rate)
}

/// Decodes `path` to mono at its own sample rate (int16 range). Channels are averaged.
pub fn decode_mono(path: &Path) -> Result<Audio> {
    decode(path, Downmix::Mean)
}

/// Decodes `path` to one channel at its own sample rate (int16 range).
pub fn decode(path: &Path, downmix: Downmix) -> Result<Audio> {
    decode_channel(path, downmix, None)
}

/// [`decode`] of channel `channel` (0-based) alone when given.
pub fn decode_channel(path: &Path, downmix: Downmix, channel: Option<u16>) -> Result<Audio> {
    let (interleaved, channels, sample_rate) = decode_interleaved(path)?;
    if let Some(c) = channel.map(usize::from) {
        if c >= channels {
            return Err(Error::invalid(
                path,
                format!("channel {c} requested, but the file has {channels}"),
            ));
        }
        return Ok(Audio {
            samples: interleaved
                .iter()
                .skip(c)
                .step_by(channels)
                .copied()
                .collect(),
            sample_rate,
        });
    }
    let samples = match (channels, downmix) {
        (1, _) => interleaved,
        (_, Downmix::First) => interleaved.iter().step_by(channels).copied().collect(),
        (_, Downmix::Mean) => {
            let scale = 1.0 / channels as f32;
            interleaved
                .chunks_exact(channels)
                .map(|frame| frame.iter().sum::<f32>() * scale)
                .collect()
        }
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
    if sphere::is_sphere(&bytes) {
        let (samples, header) =
            sphere::decode(&bytes).map_err(|e| invalid(format!("NIST SPHERE: {e}")))?;
        let samples = samples.into_iter().map(f32::from).collect();
        return Ok((samples, usize::from(header.channels), header.sample_rate));
    }
    // Encoder delay and track length of MP4 files, which symphonia does not apply.
    let container_timing = if mp4_timing::is_mp4(&bytes) {
        let timing = mp4_timing::read(&mut Cursor::new(&bytes))
            .map_err(|e| invalid(format!("MP4 container: {e}")))?;
        Some(timing)
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
    if let Some(timing) = container_timing {
        let skip = (timing.priming_at(sample_rate) as usize * channels).min(interleaved.len());
        interleaved.drain(..skip);
        interleaved.truncate(timing.playable_at(sample_rate) as usize * channels);
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
    fn downmix_averages_or_takes_the_first_channel() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stereo.wav");
        // A 16-bit stereo WAV: left 1000, right -200.
        let frames = 100u32;
        let mut wav = Vec::new();
        wav.extend_from_slice(b"RIFF");
        wav.extend_from_slice(&(36 + frames * 4).to_le_bytes());
        wav.extend_from_slice(b"WAVEfmt ");
        for v in [16u32, 0x0002_0001, 8000, 32000] {
            wav.extend_from_slice(&v.to_le_bytes());
        }
        wav.extend_from_slice(&0x0010_0004u32.to_le_bytes());
        wav.extend_from_slice(b"data");
        wav.extend_from_slice(&(frames * 4).to_le_bytes());
        for _ in 0..frames {
            wav.extend_from_slice(&1000i16.to_le_bytes());
            wav.extend_from_slice(&(-200i16).to_le_bytes());
        }
        std::fs::write(&path, wav).unwrap();
        assert_eq!(
            decode(&path, Downmix::Mean).unwrap().samples,
            vec![400.0; 100]
        );
        let first = decode(&path, Downmix::First).unwrap();
        assert_eq!((first.samples[7], first.sample_rate), (1000.0, 8000));
    }

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
