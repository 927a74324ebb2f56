//! The few MP4 boxes that decide which decoded AAC samples are real audio: the edit list
//! (`elst`, whose `media_time` is the encoder's priming delay) and the track's duration
//! (`mdhd`, which ends before the last frame's padding). symphonia's MP4 reader does not apply
//! them; ffmpeg does, so reading them here keeps our samples aligned with ffmpeg's.

/// Timing of the first audio track, in its media timescale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioTiming {
    /// Ticks per second of `media_time` and `duration` (`mdhd` timescale).
    pub timescale: u32,
    /// Decoded samples to drop at the start (edit list `media_time`; 0 without an edit list).
    pub media_time: u64,
    /// Length of the media (`mdhd` duration), priming included.
    pub duration: u64,
}

impl AudioTiming {
    /// Priming samples at `sample_rate`.
    pub fn priming_frames(&self, sample_rate: u32) -> u64 {
        rescale(self.media_time, self.timescale, sample_rate)
    }

    /// Playable samples at `sample_rate` (duration less priming), when the duration is known.
    pub fn playable_frames(&self, sample_rate: u32) -> Option<u64> {
        (self.duration > 0).then(|| {
            rescale(self.duration, self.timescale, sample_rate)
                .saturating_sub(self.priming_frames(sample_rate))
        })
    }
}

fn rescale(ticks: u64, timescale: u32, rate: u32) -> u64 {
    if timescale == rate || timescale == 0 {
        ticks
    } else {
        ((u128::from(ticks) * u128::from(rate) + u128::from(timescale) / 2) / u128::from(timescale))
            as u64
    }
}

/// Whether the bytes start like an ISO base media file (`ftyp` box).
pub fn is_mp4(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && &bytes[4..8] == b"ftyp"
}

/// Timing of the first sound track (`hdlr` type `soun`).
pub fn audio_timing(bytes: &[u8]) -> Result<AudioTiming, String> {
    let moov = boxes(bytes)
        .find(|b| matches!(b, Ok((kind, _)) if kind == b"moov"))
        .ok_or("no moov box")??
        .1;
    for item in boxes(moov) {
        let (kind, trak) = item?;
        if &kind != b"trak" {
            continue;
        }
        let mdia = child(trak, b"mdia")?.ok_or("trak without mdia")?;
        let hdlr = child(mdia, b"hdlr")?.ok_or("mdia without hdlr")?;
        if hdlr.get(8..12) != Some(b"soun".as_slice()) {
            continue;
        }
        let (timescale, duration) = parse_mdhd(child(mdia, b"mdhd")?.ok_or("mdia without mdhd")?)?;
        let media_time = match child(trak, b"edts")? {
            Some(edts) => match child(edts, b"elst")? {
                Some(elst) => first_media_time(elst)?,
                None => 0,
            },
            None => 0,
        };
        return Ok(AudioTiming {
            timescale,
            media_time,
            duration,
        });
    }
    Err("no sound track".into())
}

/// The first child box of `kind`.
fn child<'a>(parent: &'a [u8], kind: &[u8; 4]) -> Result<Option<&'a [u8]>, String> {
    for item in boxes(parent) {
        let (k, body) = item?;
        if &k == kind {
            return Ok(Some(body));
        }
    }
    Ok(None)
}

/// Iterates the boxes of a container body: (type, body).
fn boxes(mut data: &[u8]) -> impl Iterator<Item = Result<([u8; 4], &[u8]), String>> {
    std::iter::from_fn(move || {
        if data.len() < 8 {
            return None;
        }
        let size32 = u32::from_be_bytes(data[0..4].try_into().unwrap()) as u64;
        let kind: [u8; 4] = data[4..8].try_into().unwrap();
        let (header, size) = match size32 {
            0 => (8, data.len() as u64),
            1 if data.len() >= 16 => (16, u64::from_be_bytes(data[8..16].try_into().unwrap())),
            1 => return Some(Err("truncated 64-bit box size".into())),
            n => (8, n),
        };
        if size < header as u64 || size > data.len() as u64 {
            data = &[];
            return Some(Err(format!(
                "box {:?} of size {size} overruns its container",
                String::from_utf8_lossy(&kind)
            )));
        }
        let body = &data[header..size as usize];
        data = &data[size as usize..];
        Some(Ok((kind, body)))
    })
}

fn be_u32(b: &[u8], at: usize) -> Result<u32, String> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes(s.try_into().unwrap()))
        .ok_or_else(|| "truncated box".into())
}

fn be_u64(b: &[u8], at: usize) -> Result<u64, String> {
    b.get(at..at + 8)
        .map(|s| u64::from_be_bytes(s.try_into().unwrap()))
        .ok_or_else(|| "truncated box".into())
}

/// (timescale, duration) of a media header.
fn parse_mdhd(b: &[u8]) -> Result<(u32, u64), String> {
    match b.first() {
        Some(0) => Ok((be_u32(b, 12)?, u64::from(be_u32(b, 16)?))),
        Some(1) => Ok((be_u32(b, 20)?, be_u64(b, 24)?)),
        _ => Err("unknown mdhd version".into()),
    }
}

/// `media_time` of the first non-empty edit (empty edits have `media_time` -1).
fn first_media_time(b: &[u8]) -> Result<u64, String> {
    let version = *b.first().ok_or("empty elst")?;
    let entries = be_u32(b, 4)? as usize;
    let (entry_size, time_at) = match version {
        0 => (12, 4),
        1 => (20, 8),
        _ => return Err("unknown elst version".into()),
    };
    for i in 0..entries {
        let at = 8 + i * entry_size + time_at;
        let media_time = match version {
            0 => i64::from(be_u32(b, at)? as i32),
            _ => be_u64(b, at)? as i64,
        };
        if media_time >= 0 {
            return Ok(media_time as u64);
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mp4_box(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn reads_priming_and_duration_of_the_sound_track() {
        let mut mdhd = vec![0u8; 24];
        mdhd[12..16].copy_from_slice(&16000u32.to_be_bytes());
        mdhd[16..20].copy_from_slice(&53877u32.to_be_bytes());
        let mut hdlr = vec![0u8; 24];
        hdlr[8..12].copy_from_slice(b"soun");
        let mut elst = vec![0u8; 8];
        elst[4..8].copy_from_slice(&2u32.to_be_bytes());
        // An empty edit (media_time -1), then the real one.
        for (dur, time) in [(100u32, -1i32), (3304, 1024)] {
            elst.extend_from_slice(&dur.to_be_bytes());
            elst.extend_from_slice(&time.to_be_bytes());
            elst.extend_from_slice(&0x0001_0000u32.to_be_bytes());
        }
        let mdia = [mp4_box(b"mdhd", &mdhd), mp4_box(b"hdlr", &hdlr)].concat();
        let trak = [
            mp4_box(b"edts", &mp4_box(b"elst", &elst)),
            mp4_box(b"mdia", &mdia),
        ]
        .concat();
        let file = [
            mp4_box(b"ftyp", b"M4A \0\0\0\0"),
            mp4_box(b"moov", &mp4_box(b"trak", &trak)),
        ]
        .concat();
        assert!(is_mp4(&file));
        let timing = audio_timing(&file).unwrap();
        assert_eq!(timing.media_time, 1024);
        assert_eq!(timing.priming_frames(16000), 1024);
        assert_eq!(timing.playable_frames(16000), Some(52853));
        assert_eq!(timing.priming_frames(8000), 512);
        assert!(audio_timing(&file[..file.len() - 3]).is_err());
    }
}
