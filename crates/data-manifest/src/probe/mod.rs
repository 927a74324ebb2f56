//! Header probing: sample count, sample rate, channels and codec of an audio file, read from
//! its container (no decoding), and checked against the file itself so that a manifest never
//! promises audio a file does not hold.
//!
//! A file is accepted when symphonia recognises its container, its first audio track has a
//! codec symphonia can decode, its header declares a sample rate, a channel count and a
//! non-zero length, and the file holds all the data the header promises (WAV, FLAC: the last
//! packet can be read; MP4: no box extends past the end), so a file cut short is caught
//! without decoding it. For AAC in MP4/M4A the length excludes the encoder's priming samples
//! and the last frame's padding ([`mp4_timing`]). NIST SPHERE files are read by [`sphere`].

pub mod mp4_timing;
pub mod sphere;

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use symphonia::core::codecs::CodecParameters;
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, SeekMode, SeekTo, TrackType};
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::units::Timestamp;

/// What a file's header says about its audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioInfo {
    /// Samples per channel (for AAC: without priming and padding).
    pub num_samples: u64,
    pub sample_rate: u32,
    pub channels: u16,
    /// Codec short name as symphonia (and ffmpeg) call it: `pcm_s16le`, `flac`, `aac`, ...
    pub codec: String,
    /// The channels are separate recordings (a two-channel NIST SPHERE telephone call holds
    /// one side each), so each becomes its own utterance.
    pub separate_channels: bool,
}

/// Why a file was rejected. The `Display` text is `<category>: <details>`, the form that
/// `rejects.parquet` stores and the scan summary groups by.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("unreadable: {0}")]
    Unreadable(io::Error),
    #[error("empty: the file has 0 bytes")]
    Empty,
    #[error("not audio: {0}")]
    NotAudio(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("corrupt: {0}")]
    Corrupt(String),
    #[error("truncated: {0}")]
    Truncated(String),
    #[error("zero-length: the header declares 0 samples")]
    ZeroLength,
}

impl ProbeError {
    /// The category alone (`truncated`, `empty`, ...), for counting rejects by reason.
    pub fn category(&self) -> &'static str {
        match self {
            ProbeError::Unreadable(_) => "unreadable",
            ProbeError::Empty => "empty",
            ProbeError::NotAudio(_) => "not audio",
            ProbeError::Unsupported(_) => "unsupported",
            ProbeError::Corrupt(_) => "corrupt",
            ProbeError::Truncated(_) => "truncated",
            ProbeError::ZeroLength => "zero-length",
        }
    }
}

/// The category of a reject reason written by [`ProbeError`] or a scanner (`<category>: ...`).
pub fn reason_category(reason: &str) -> &str {
    reason
        .split_once(':')
        .map_or(reason, |(category, _)| category)
}

/// Probes one file.
pub fn probe(path: &Path) -> Result<AudioInfo, ProbeError> {
    let file = File::open(path).map_err(ProbeError::Unreadable)?;
    let len = file.metadata().map_err(ProbeError::Unreadable)?.len();
    if len == 0 {
        return Err(ProbeError::Empty);
    }
    let mut timing_file = file.try_clone().map_err(ProbeError::Unreadable)?;
    let container = sniff(&mut timing_file).map_err(ProbeError::Unreadable)?;
    if container == Some(Container::Sphere) {
        return probe_sphere(&mut timing_file, len);
    }
    let stream = MediaSourceStream::new(Box::new(file), MediaSourceStreamOptions::default());
    let mut hint = Hint::new();
    if let Some(extension) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(extension);
    }
    let mut format = symphonia::default::get_probe()
        .probe(
            &hint,
            stream,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(|e| match e {
            SymphoniaError::IoError(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                ProbeError::Truncated("the file ends inside its header".to_owned())
            }
            SymphoniaError::IoError(e) => ProbeError::Unreadable(e),
            SymphoniaError::Unsupported(what) => match container {
                None => ProbeError::NotAudio(
                    "no known audio container (WAV, FLAC, MP4/M4A, NIST SPHERE)".to_owned(),
                ),
                // An MP4 whose moov box is missing is most often one cut short.
                Some(Container::Mp4) => match mp4_length(&mut timing_file, 1) {
                    Err(e) => e,
                    Ok(_) => {
                        ProbeError::Unsupported(format!("MP4 file symphonia rejects ({what})"))
                    }
                },
                Some(c) => {
                    ProbeError::Unsupported(format!("{c:?} file symphonia rejects ({what})"))
                }
            },
            other => ProbeError::Corrupt(format!("unreadable header ({other})")),
        })?;
    let track = format
        .default_track(TrackType::Audio)
        .ok_or_else(|| ProbeError::Unsupported("no audio track with a known codec".to_owned()))?
        .clone();
    let Some(CodecParameters::Audio(params)) = &track.codec_params else {
        return Err(ProbeError::Unsupported(
            "no audio codec parameters".to_owned(),
        ));
    };
    let codec = symphonia::default::get_codecs()
        .get_audio_decoder(params.codec)
        .map(|d| d.codec.info.short_name.to_owned())
        .ok_or_else(|| {
            ProbeError::Unsupported(format!("codec {} has no decoder here", params.codec))
        })?;
    let sample_rate = params
        .sample_rate
        .filter(|&r| r > 0)
        .ok_or_else(|| ProbeError::Corrupt("no sample rate in the header".to_owned()))?;
    let channels = params
        .channels
        .as_ref()
        .map(|c| c.count())
        .filter(|&c| c > 0)
        .ok_or_else(|| ProbeError::Corrupt("no channel count in the header".to_owned()))?;
    let channels =
        u16::try_from(channels).map_err(|_| ProbeError::Corrupt(format!("{channels} channels")))?;
    let coded_frames = track.num_frames.ok_or_else(|| {
        ProbeError::Unsupported("the header does not declare the length".to_owned())
    })?;
    // MP4: the walk over the top-level boxes that reads the edit list also finds a file cut
    // short (its mdat box extends past the end), so no packet needs reading.
    let is_mp4 = format.format_info().short_name == "isomp4";
    let num_samples = if is_mp4 {
        mp4_length(&mut timing_file, sample_rate)?
    } else {
        coded_frames
    };
    if num_samples == 0 || coded_frames == 0 {
        return Err(ProbeError::ZeroLength);
    }
    if !is_mp4 {
        check_last_packet(format.as_mut(), track.id, track.start_ts, coded_frames)?;
    }
    Ok(AudioInfo {
        num_samples,
        sample_rate,
        channels,
        codec,
        separate_channels: false,
    })
}

/// A container recognised by its first bytes, to tell a damaged audio file from a file that
/// is not audio at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Container {
    Wav,
    Flac,
    Mp4,
    Sphere,
}

/// Recognises the container from the first 12 bytes (and rewinds the file).
fn sniff(file: &mut File) -> io::Result<Option<Container>> {
    let mut head = [0u8; 12];
    let n = file.read(&mut head)?;
    file.seek(SeekFrom::Start(0))?;
    let head = &head[..n];
    Ok(
        if head.starts_with(b"RIFF") && head.get(8..12) == Some(b"WAVE") {
            Some(Container::Wav)
        } else if head.starts_with(b"fLaC") {
            Some(Container::Flac)
        } else if mp4_timing::is_mp4(head) {
            Some(Container::Mp4)
        } else if sphere::is_sphere(head) {
            Some(Container::Sphere)
        } else {
            None
        },
    )
}

/// A SPHERE file's header, checked against the file's length.
fn probe_sphere(file: &mut File, len: u64) -> Result<AudioInfo, ProbeError> {
    let mut head = Vec::new();
    file.by_ref()
        .take(64 * 1024)
        .read_to_end(&mut head)
        .map_err(ProbeError::Unreadable)?;
    let header = sphere::parse_header(&head)?;
    sphere::check_length(&header, len)?;
    Ok(AudioInfo {
        num_samples: header.sample_count,
        sample_rate: header.sample_rate,
        channels: header.channels,
        codec: header.coding.codec_name().to_owned(),
        separate_channels: header.channels > 1,
    })
}

/// Playable samples of an MP4 file's audio track, at `sample_rate`.
fn mp4_length(file: &mut File, sample_rate: u32) -> Result<u64, ProbeError> {
    use mp4_timing::Mp4TimingError;
    let timing = mp4_timing::read(file).map_err(|e| match e {
        Mp4TimingError::Io(e) => ProbeError::Unreadable(e),
        e @ Mp4TimingError::Truncated { .. } => ProbeError::Truncated(e.to_string()),
        Mp4TimingError::Malformed(m) => ProbeError::Corrupt(m),
    })?;
    Ok(timing.playable_at(sample_rate))
}

/// Seeks to the last frame the header declares and reads its packet: a file cut short fails
/// here with an unexpected end of file.
fn check_last_packet(
    format: &mut dyn FormatReader,
    track_id: u32,
    start: Timestamp,
    frames: u64,
) -> Result<(), ProbeError> {
    let last = Timestamp::new(start.get().saturating_add(frames as i64 - 1));
    let truncated = |e: &io::Error| {
        ProbeError::Truncated(format!(
            "the header declares {frames} frames but the data ends early ({e})"
        ))
    };
    let corrupt = |what: &str, e: SymphoniaError| {
        ProbeError::Corrupt(format!("cannot {what} the last of {frames} frames ({e})"))
    };
    match format.seek(SeekMode::Accurate, SeekTo::Timestamp { ts: last, track_id }) {
        Ok(_) => {}
        Err(SymphoniaError::IoError(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(truncated(&e));
        }
        Err(e) => return Err(corrupt("seek to", e)),
    }
    loop {
        match format.next_packet() {
            Ok(Some(packet)) if packet.track_id == track_id => return Ok(()),
            Ok(Some(_)) => continue,
            Ok(None) => {
                return Err(ProbeError::Truncated(format!(
                    "the header declares {frames} frames but the data ends before the last"
                )));
            }
            Err(SymphoniaError::IoError(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(truncated(&e));
            }
            Err(e) => return Err(corrupt("read", e)),
        }
    }
}
