//! The playable part of the audio track of an MP4/M4A file, which symphonia 0.6 does not
//! give: its isomp4 reader counts and decodes every sample in the sample table (`stts`),
//! including the AAC encoder's priming samples at the start and the padding of the last
//! frame, because it ignores edit lists. Decoders that honour the container (ffmpeg,
//! Apple's) drop them. This is the one rule for both sides: the probe's `num_samples` and
//! the decoder's trimming (`feature_extract::decode`), so manifests and caches agree.
//!
//! The priming is iTunes' encoder delay when the file has gapless metadata, else the media
//! time of the first non-empty edit, else 0. The length is taken, in order of preference, from
//! 1. iTunes gapless metadata (`moov/udta/meta/ilst/----` named `iTunSMPB`): the original
//!    sample count, exact;
//! 2. the edit list (`edts/elst`): the media time of a non-empty edit is the priming (1024
//!    for ffmpeg's encoder, 2112 for Apple's) and its segment duration bounds the end (see
//!    [`edited_length`] for the rounding of that duration);
//! 3. the sample table alone, when the file has neither.
//!
//! The same walk over the top-level boxes finds files cut short: a box that claims to extend
//! past the end of the file.

use std::io::{self, Read, Seek, SeekFrom};

/// Largest `moov` box read into memory (the sample tables of a 10-hour file fit easily).
const MAX_MOOV_BYTES: u64 = 256 << 20;

/// What the container says about the length of its first audio track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mp4Timing {
    /// Decoded samples before the audio starts (encoder priming), in the media timescale.
    pub priming: u64,
    /// Playable samples, in units of the track's media timescale.
    pub playable: u64,
    /// Media timescale of the track (`mdhd`); usually the sample rate.
    pub timescale: u32,
}

impl Mp4Timing {
    /// Priming samples at `sample_rate`: what a decoder drops from the start.
    pub fn priming_at(&self, sample_rate: u32) -> u64 {
        rescale(self.priming, self.timescale, sample_rate)
    }

    /// Playable samples at `sample_rate`: the length after dropping the priming.
    pub fn playable_at(&self, sample_rate: u32) -> u64 {
        rescale(self.playable, self.timescale, sample_rate)
    }
}

/// `ticks` of `timescale` at `rate`, rounded to the nearest sample.
fn rescale(ticks: u64, timescale: u32, rate: u32) -> u64 {
    if timescale == rate {
        return ticks;
    }
    let scaled =
        (u128::from(ticks) * u128::from(rate) + u128::from(timescale) / 2) / u128::from(timescale);
    u64::try_from(scaled).unwrap_or(u64::MAX)
}

/// Why the timing could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Mp4TimingError {
    #[error("{0}")]
    Io(#[from] io::Error),
    /// A box extends past the end of the file.
    #[error("box '{name}' at byte {offset} declares {size} bytes but the file ends at byte {len}")]
    Truncated {
        name: String,
        offset: u64,
        size: u64,
        len: u64,
    },
    #[error("{0}")]
    Malformed(String),
}

/// Whether the bytes start like an ISO base media file (an `ftyp` box).
pub fn is_mp4(head: &[u8]) -> bool {
    head.get(4..8) == Some(b"ftyp")
}

/// Reads the timing of the first audio (`soun`) track of an MP4 file (open, or in memory).
pub fn read(file: &mut (impl Read + Seek)) -> Result<Mp4Timing, Mp4TimingError> {
    let moov = read_moov(file)?;
    let mvhd_timescale = find(&moov, b"mvhd")
        .map(|b| full_box_timescale(b, 12, 20))
        .transpose()?
        .ok_or_else(|| malformed("moov has no mvhd"))?;
    let trak = children(&moov)
        .filter(|(name, _)| name == b"trak")
        .map(|(_, body)| body)
        .find(|trak| is_audio_track(trak))
        .ok_or_else(|| malformed("no audio track (no trak with a 'soun' handler)"))?;
    let mdia = find(trak, b"mdia").ok_or_else(|| malformed("trak has no mdia"))?;
    let media_timescale = find(mdia, b"mdhd")
        .map(|b| full_box_timescale(b, 12, 20))
        .transpose()?
        .ok_or_else(|| malformed("mdia has no mdhd"))?;
    let stts = path(mdia, &[b"minf", b"stbl", b"stts"])
        .ok_or_else(|| malformed("audio track has no stts"))?;
    let coded = stts_total(stts)?;

    let edits = match find(trak, b"edts").and_then(|e| find(e, b"elst")) {
        Some(elst) => parse_elst(elst)?,
        None => Vec::new(),
    };
    let edit_priming = edits
        .iter()
        .find(|e| e.media_time >= 0)
        .map_or(0, |e| e.media_time as u64);
    if let Some(gapless) = itunes_gapless(&moov)? {
        return Ok(Mp4Timing {
            priming: gapless.priming,
            playable: gapless.original.min(coded),
            timescale: media_timescale,
        });
    }
    Ok(Mp4Timing {
        priming: edit_priming,
        playable: edited_length(&edits, coded, mvhd_timescale, media_timescale),
        timescale: media_timescale,
    })
}

fn malformed(message: &str) -> Mp4TimingError {
    Mp4TimingError::Malformed(message.to_owned())
}

/// Walks the top-level boxes, checking that each fits in the file, and returns the body of
/// `moov`.
fn read_moov(file: &mut (impl Read + Seek)) -> Result<Vec<u8>, Mp4TimingError> {
    let len = file.seek(SeekFrom::End(0))?;
    let mut offset = 0u64;
    let mut moov = None;
    while offset + 8 <= len {
        file.seek(SeekFrom::Start(offset))?;
        let mut header = [0u8; 16];
        file.read_exact(&mut header[..8])?;
        let name = [header[4], header[5], header[6], header[7]];
        let (size, header_len) = match u32::from_be_bytes(header[..4].try_into().expect("4")) {
            0 => (len - offset, 8),
            1 => {
                file.read_exact(&mut header[8..16])?;
                (u64::from_be_bytes(header[8..16].try_into().expect("8")), 16)
            }
            size => (u64::from(size), 8),
        };
        if size < header_len {
            return Err(malformed(&format!(
                "box '{}' at byte {offset} has an invalid size {size}",
                String::from_utf8_lossy(&name)
            )));
        }
        if offset + size > len {
            return Err(Mp4TimingError::Truncated {
                name: String::from_utf8_lossy(&name).into_owned(),
                offset,
                size,
                len,
            });
        }
        if &name == b"moov" {
            let body_len = size - header_len;
            if body_len > MAX_MOOV_BYTES {
                return Err(malformed(&format!(
                    "moov box of {body_len} bytes is too large"
                )));
            }
            let mut body = vec![0u8; body_len as usize];
            file.read_exact(&mut body)?;
            moov = Some(body);
        }
        offset += size;
    }
    moov.ok_or_else(|| malformed("no moov box"))
}

/// The (name, body) of each box in `data`; stops at the first box that does not fit.
fn children(data: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.len() < 8 {
            return None;
        }
        let size32 = u32::from_be_bytes(rest[..4].try_into().expect("4"));
        let name: [u8; 4] = rest[4..8].try_into().expect("4");
        let (size, header) = match size32 {
            0 => (rest.len(), 8),
            1 if rest.len() >= 16 => (
                usize::try_from(u64::from_be_bytes(rest[8..16].try_into().expect("8"))).ok()?,
                16,
            ),
            1 => return None,
            n => (n as usize, 8),
        };
        if size < header || size > rest.len() {
            return None;
        }
        let body = &rest[header..size];
        rest = &rest[size..];
        Some((name, body))
    })
}

fn find<'a>(data: &'a [u8], name: &[u8; 4]) -> Option<&'a [u8]> {
    children(data).find(|(n, _)| n == name).map(|(_, b)| b)
}

fn path<'a>(data: &'a [u8], names: &[&[u8; 4]]) -> Option<&'a [u8]> {
    names.iter().try_fold(data, |body, name| find(body, name))
}

fn be_u32(data: &[u8], at: usize) -> Result<u32, Mp4TimingError> {
    data.get(at..at + 4)
        .map(|b| u32::from_be_bytes(b.try_into().expect("4")))
        .ok_or_else(|| malformed("box shorter than its fields"))
}

fn be_u64(data: &[u8], at: usize) -> Result<u64, Mp4TimingError> {
    data.get(at..at + 8)
        .map(|b| u64::from_be_bytes(b.try_into().expect("8")))
        .ok_or_else(|| malformed("box shorter than its fields"))
}

/// The timescale of `mvhd`/`mdhd`: after version/flags and two times of 4 (version 0) or 8
/// (version 1) bytes each.
fn full_box_timescale(body: &[u8], v0_at: usize, v1_at: usize) -> Result<u32, Mp4TimingError> {
    let version = *body.first().ok_or_else(|| malformed("empty header box"))?;
    let timescale = be_u32(body, if version == 1 { v1_at } else { v0_at })?;
    if timescale == 0 {
        return Err(malformed("timescale is 0"));
    }
    Ok(timescale)
}

fn is_audio_track(trak: &[u8]) -> bool {
    path(trak, &[b"mdia", b"hdlr"]).is_some_and(|hdlr| hdlr.get(8..12) == Some(b"soun"))
}

/// Sum of the sample durations in a time-to-sample table.
fn stts_total(body: &[u8]) -> Result<u64, Mp4TimingError> {
    let entries = be_u32(body, 4)? as usize;
    (0..entries).try_fold(0u64, |total, i| {
        let count = u64::from(be_u32(body, 8 + 8 * i)?);
        let delta = u64::from(be_u32(body, 12 + 8 * i)?);
        Ok(total.saturating_add(count * delta))
    })
}

/// One edit: how long it plays (movie timescale) and where in the media it starts (media
/// timescale; -1 for an empty edit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Edit {
    segment_duration: u64,
    media_time: i64,
}

fn parse_elst(body: &[u8]) -> Result<Vec<Edit>, Mp4TimingError> {
    let version = *body.first().ok_or_else(|| malformed("empty elst"))?;
    let entries = be_u32(body, 4)? as usize;
    let entry_len = if version == 1 { 20 } else { 12 };
    (0..entries)
        .map(|i| {
            let at = 8 + entry_len * i;
            Ok(if version == 1 {
                Edit {
                    segment_duration: be_u64(body, at)?,
                    media_time: be_u64(body, at + 8)? as i64,
                }
            } else {
                Edit {
                    segment_duration: u64::from(be_u32(body, at)?),
                    media_time: i64::from(be_u32(body, at + 4)? as i32),
                }
            })
        })
        .collect()
}

/// Samples the edits play out of `coded` samples. Each non-empty edit plays what the media
/// holds after its start, bounded by its segment duration. The segment duration is in the
/// movie timescale, often milliseconds (ffmpeg), so it is only known to one movie tick: when
/// the media's own end is within a tick of it, the media's end is the exact length (ffmpeg
/// writes the last sample's true duration into `stts`); otherwise the segment cuts the
/// padding off (Apple's encoder keeps whole frames in `stts`).
fn edited_length(edits: &[Edit], coded: u64, movie_timescale: u32, media_timescale: u32) -> u64 {
    let played: Vec<&Edit> = edits.iter().filter(|e| e.media_time >= 0).collect();
    if played.is_empty() {
        return coded;
    }
    let tick = u64::from(media_timescale.div_ceil(movie_timescale));
    played
        .iter()
        .map(|edit| {
            let available = coded.saturating_sub(edit.media_time as u64);
            let duration = (u128::from(edit.segment_duration) * u128::from(media_timescale))
                .div_ceil(u128::from(movie_timescale));
            let duration = u64::try_from(duration).unwrap_or(u64::MAX);
            // A zero segment duration means "to the end of the media" in fragmented files.
            if duration == 0 || available.abs_diff(duration) <= tick {
                available
            } else {
                available.min(duration)
            }
        })
        .sum::<u64>()
        .min(coded)
}

/// iTunes gapless metadata (`iTunSMPB`): encoder delay and original sample count.
struct Gapless {
    priming: u64,
    original: u64,
}

/// The gapless metadata of the file, when it has a usable one (a non-zero sample count).
fn itunes_gapless(moov: &[u8]) -> Result<Option<Gapless>, Mp4TimingError> {
    let Some(meta) = path(moov, &[b"udta", b"meta"]) else {
        return Ok(None);
    };
    // ISO `meta` is a full box (4 bytes of version and flags before its children);
    // QuickTime's is not.
    let meta = if meta.get(4..8) == Some(b"hdlr") {
        meta
    } else {
        meta.get(4..).unwrap_or_default()
    };
    let Some(ilst) = find(meta, b"ilst") else {
        return Ok(None);
    };
    for (_, item) in children(ilst).filter(|(name, _)| name == b"----") {
        let name = find(item, b"name").and_then(|n| n.get(4..));
        if name != Some(b"iTunSMPB") {
            continue;
        }
        let data = find(item, b"data")
            .and_then(|d| d.get(8..))
            .ok_or_else(|| malformed("iTunSMPB without data"))?;
        let text = String::from_utf8_lossy(data);
        let fields: Vec<&str> = text.split_whitespace().collect();
        let hex = |i: usize| {
            fields
                .get(i)
                .and_then(|f| u64::from_str_radix(f, 16).ok())
                .ok_or_else(|| malformed(&format!("unreadable iTunSMPB {:?}", text.trim())))
        };
        let (priming, original) = (hex(1)?, hex(3)?);
        return Ok((original > 0).then_some(Gapless { priming, original }));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ffmpeg_style_edit_trims_priming_and_padding() {
        // ffmpeg's AAC encoder: 1024 priming samples, stts total = priming + real samples,
        // segment duration in a 1000 Hz movie timescale (rounded).
        let edits = [Edit {
            segment_duration: 670,
            media_time: 1024,
        }];
        assert_eq!(edited_length(&edits, 11732, 1000, 16000), 10708);
        // 100000 samples at 48 kHz: 2083.33 ms written as 2083, below the true end.
        let edits = [Edit {
            segment_duration: 2083,
            media_time: 1024,
        }];
        assert_eq!(edited_length(&edits, 101_024, 1000, 48000), 100_000);
    }

    #[test]
    fn apple_style_edit_bounds_the_end() {
        // 2112 priming, whole frames in stts, exact segment duration in the media timescale.
        let edits = [Edit {
            segment_duration: 44100,
            media_time: 2112,
        }];
        assert_eq!(edited_length(&edits, 47 * 1024, 44100, 44100), 44100);
    }

    #[test]
    fn empty_edits_are_skipped_and_no_edit_keeps_everything() {
        let edits = [
            Edit {
                segment_duration: 500,
                media_time: -1,
            },
            Edit {
                segment_duration: 0,
                media_time: 1024,
            },
        ];
        assert_eq!(edited_length(&edits, 5000, 1000, 16000), 3976);
        assert_eq!(edited_length(&[], 5000, 1000, 16000), 5000);
    }

    fn mp4_box(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(body);
        out
    }

    /// An M4A with one 16 kHz sound track of `frames` AAC frames, an edit list that starts at
    /// `media_time` and plays `played` samples, and optionally iTunes gapless metadata.
    fn m4a(frames: u32, media_time: i32, played: u32, smpb: Option<&str>) -> Vec<u8> {
        let mut header = vec![0u8; 20];
        header[12..16].copy_from_slice(&16000u32.to_be_bytes());
        let mut hdlr = vec![0u8; 24];
        hdlr[8..12].copy_from_slice(b"soun");
        let mut stts = vec![0u8; 8];
        stts[4..8].copy_from_slice(&1u32.to_be_bytes());
        stts.extend_from_slice(&frames.to_be_bytes());
        stts.extend_from_slice(&1024u32.to_be_bytes());
        let mut elst = vec![0u8; 8];
        elst[4..8].copy_from_slice(&2u32.to_be_bytes());
        // An empty edit (media_time -1), then the real one.
        for (duration, time) in [(100u32, -1i32), (played, media_time)] {
            elst.extend_from_slice(&duration.to_be_bytes());
            elst.extend_from_slice(&time.to_be_bytes());
            elst.extend_from_slice(&0x0001_0000u32.to_be_bytes());
        }
        let stbl = mp4_box(b"stbl", &mp4_box(b"stts", &stts));
        let mdia = [
            mp4_box(b"mdhd", &header),
            mp4_box(b"hdlr", &hdlr),
            mp4_box(b"minf", &stbl),
        ]
        .concat();
        let trak = [
            mp4_box(b"edts", &mp4_box(b"elst", &elst)),
            mp4_box(b"mdia", &mdia),
        ]
        .concat();
        let mut moov = [mp4_box(b"mvhd", &header), mp4_box(b"trak", &trak)].concat();
        if let Some(smpb) = smpb {
            let item = [
                mp4_box(b"name", &[&[0u8; 4][..], b"iTunSMPB"].concat()),
                mp4_box(b"data", &[&[0u8; 8][..], smpb.as_bytes()].concat()),
            ]
            .concat();
            let ilst = mp4_box(b"ilst", &mp4_box(b"----", &item));
            let meta = mp4_box(b"meta", &[&[0u8; 4][..], &ilst].concat());
            moov.extend(mp4_box(b"udta", &meta));
        }
        [mp4_box(b"ftyp", b"M4A \0\0\0\0"), mp4_box(b"moov", &moov)].concat()
    }

    #[test]
    fn priming_and_length_come_from_the_edit_list_or_the_gapless_metadata() {
        let file = m4a(52, 1024, 52_000, None);
        assert!(is_mp4(&file));
        let timing = read(&mut io::Cursor::new(&file)).unwrap();
        assert_eq!((timing.priming, timing.playable), (1024, 52_000));
        assert_eq!(
            (timing.priming_at(8000), timing.playable_at(8000)),
            (512, 26_000)
        );
        // Gapless metadata wins: Apple's 2112 priming and the original sample count.
        let smpb = " 00000000 00000840 000001C0 000000000000CB20 00000000";
        let timing = read(&mut io::Cursor::new(m4a(52, 1024, 52_000, Some(smpb)))).unwrap();
        assert_eq!((timing.priming, timing.playable), (2112, 52_000));
        assert!(read(&mut io::Cursor::new(&file[..file.len() - 3])).is_err());
    }

    #[test]
    fn boxes_are_walked_and_bounded() {
        let mut data = Vec::new();
        for (name, body) in [(b"abcd", &b"xy"[..]), (b"efgh", &b""[..])] {
            data.extend_from_slice(&(8 + body.len() as u32).to_be_bytes());
            data.extend_from_slice(name);
            data.extend_from_slice(body);
        }
        let names: Vec<[u8; 4]> = children(&data).map(|(n, _)| n).collect();
        assert_eq!(names, vec![*b"abcd", *b"efgh"]);
        assert_eq!(find(&data, b"abcd"), Some(&b"xy"[..]));
        // A box claiming more than there is ends the walk.
        data[3] = 200;
        assert_eq!(children(&data).count(), 0);
    }
}
