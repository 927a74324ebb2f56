//! NIST SPHERE files (`NIST_1A` header), the format of TIMIT, Switchboard, Fisher and the
//! NIST SRE sets: the header, and the samples of the codings found there (16-bit PCM in
//! either byte order, 8-bit mu-law and a-law; one or more interleaved channels).
//! Shorten-compressed files (`sample_coding` `...,embedded-shorten-...`) are refused with
//! that reason: decompress them with `sph2pipe` first.
//!
//! Header: `NIST_1A\n`, the header size in bytes on the second line (usually 1024), then one
//! `name -type value` field per line (`-i` integer, `-r` real, `-sN` string of N bytes) up to
//! `end_head`; the samples follow the header.

use super::ProbeError;

/// The magic first line.
const MAGIC: &[u8] = b"NIST_1A";

/// Whether `head` (a file's first bytes) starts a SPHERE file.
pub fn is_sphere(head: &[u8]) -> bool {
    head.starts_with(MAGIC) && matches!(head.get(MAGIC.len()), Some(b'\n' | b'\r' | b' '))
}

/// How the samples are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Pcm16 { big_endian: bool },
    MuLaw,
    ALaw,
}

impl Coding {
    fn bytes_per_sample(self) -> usize {
        match self {
            Coding::Pcm16 { .. } => 2,
            Coding::MuLaw | Coding::ALaw => 1,
        }
    }

    /// The codec's name as ffmpeg calls it (the manifest's `codec`).
    pub fn codec_name(self) -> &'static str {
        match self {
            Coding::Pcm16 { big_endian: false } => "pcm_s16le",
            Coding::Pcm16 { big_endian: true } => "pcm_s16be",
            Coding::MuLaw => "pcm_mulaw",
            Coding::ALaw => "pcm_alaw",
        }
    }
}

/// What a SPHERE header declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Bytes before the first sample.
    pub header_bytes: usize,
    /// Samples per channel.
    pub sample_count: u64,
    pub sample_rate: u32,
    pub channels: u16,
    pub coding: Coding,
}

impl Header {
    /// Bytes of sample data the header promises.
    pub fn data_bytes(&self) -> u64 {
        self.sample_count * u64::from(self.channels) * self.coding.bytes_per_sample() as u64
    }
}

/// Parses the header at the start of `bytes` (which must hold at least the header).
pub fn parse_header(bytes: &[u8]) -> Result<Header, ProbeError> {
    let corrupt = |m: String| ProbeError::Corrupt(format!("SPHERE header: {m}"));
    if !is_sphere(bytes) {
        return Err(ProbeError::NotAudio("no NIST_1A header".to_owned()));
    }
    let mut lines = bytes.split(|&b| b == b'\n');
    lines.next();
    let size_line = lines
        .next()
        .ok_or_else(|| ProbeError::Truncated("the file ends inside its header".to_owned()))?;
    let header_bytes: usize = std::str::from_utf8(size_line)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| {
            corrupt(format!(
                "header size {:?}",
                String::from_utf8_lossy(size_line)
            ))
        })?;
    if !(16..=1 << 20).contains(&header_bytes) {
        return Err(corrupt(format!("implausible header size {header_bytes}")));
    }
    if bytes.len() < header_bytes {
        return Err(ProbeError::Truncated(format!(
            "the file ends inside its {header_bytes}-byte header"
        )));
    }
    let text = String::from_utf8_lossy(&bytes[..header_bytes]);
    let mut fields = std::collections::HashMap::new();
    let mut ended = false;
    for line in text.lines().skip(2) {
        let line = line.trim();
        if line == "end_head" {
            ended = true;
            break;
        }
        let mut parts = line.splitn(3, ' ');
        if let (Some(name), Some(kind), Some(value)) = (parts.next(), parts.next(), parts.next()) {
            let value = match kind
                .strip_prefix("-s")
                .and_then(|n| n.parse::<usize>().ok())
            {
                Some(n) => value.get(..n).unwrap_or(value),
                None => value,
            };
            fields.insert(name.to_owned(), value.trim().to_owned());
        }
    }
    if !ended {
        return Err(corrupt("no end_head line".to_owned()));
    }
    let number = |name: &str| -> Result<Option<u64>, ProbeError> {
        fields
            .get(name)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| corrupt(format!("{name} {v:?} is not a whole number")))
            })
            .transpose()
    };
    let coding_field = fields
        .get("sample_coding")
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_else(|| "pcm".to_owned());
    if coding_field.contains("shorten") || coding_field.contains("wavpack") {
        return Err(ProbeError::Unsupported(format!(
            "shorten/wavpack-compressed SPHERE (sample_coding {coding_field}); decompress it \
             with sph2pipe first"
        )));
    }
    let n_bytes = number("sample_n_bytes")?;
    let coding = match (coding_field.as_str(), n_bytes) {
        ("pcm", Some(2) | None) => {
            let order = fields
                .get("sample_byte_format")
                .map_or("01", String::as_str);
            match order {
                "01" => Coding::Pcm16 { big_endian: false },
                "10" => Coding::Pcm16 { big_endian: true },
                other => return Err(corrupt(format!("sample_byte_format {other:?}"))),
            }
        }
        ("ulaw" | "mu-law" | "mulaw", Some(1) | None) => Coding::MuLaw,
        ("alaw" | "a-law", Some(1) | None) => Coding::ALaw,
        (coding, bytes) => {
            return Err(ProbeError::Unsupported(format!(
                "SPHERE sample_coding {coding} with {} byte(s) per sample (16-bit PCM, mu-law \
                 and a-law are read)",
                bytes.map_or("?".to_owned(), |b| b.to_string())
            )));
        }
    };
    let sample_rate = number("sample_rate")?
        .filter(|&r| r > 0)
        .ok_or_else(|| corrupt("no sample_rate".to_owned()))?;
    let channels = number("channel_count")?.unwrap_or(1);
    if channels == 0 || channels > 64 {
        return Err(corrupt(format!("channel_count {channels}")));
    }
    let frame_bytes = channels * coding.bytes_per_sample() as u64;
    let sample_count = match number("sample_count")? {
        Some(n) => n,
        None => (bytes.len() - header_bytes) as u64 / frame_bytes,
    };
    if sample_count == 0 {
        return Err(ProbeError::ZeroLength);
    }
    Ok(Header {
        header_bytes,
        sample_count,
        sample_rate: u32::try_from(sample_rate)
            .map_err(|_| corrupt(format!("sample_rate {sample_rate}")))?,
        channels: channels as u16,
        coding,
    })
}

/// Checks that a file of `file_len` bytes holds the data its header promises.
pub fn check_length(header: &Header, file_len: u64) -> Result<(), ProbeError> {
    let needed = header.header_bytes as u64 + header.data_bytes();
    if file_len < needed {
        return Err(ProbeError::Truncated(format!(
            "the header declares {} samples x {} channel(s) ({needed} bytes) but the file has {file_len}",
            header.sample_count, header.channels
        )));
    }
    Ok(())
}

/// The samples of a whole SPHERE file, interleaved, as 16-bit values, with the header.
pub fn decode(bytes: &[u8]) -> Result<(Vec<i16>, Header), ProbeError> {
    let header = parse_header(bytes)?;
    check_length(&header, bytes.len() as u64)?;
    let data = &bytes[header.header_bytes..][..header.data_bytes() as usize];
    let samples = match header.coding {
        Coding::Pcm16 { big_endian } => data
            .chunks_exact(2)
            .map(|b| {
                let pair = [b[0], b[1]];
                if big_endian {
                    i16::from_be_bytes(pair)
                } else {
                    i16::from_le_bytes(pair)
                }
            })
            .collect(),
        Coding::MuLaw => data.iter().map(|&b| mulaw_to_linear(b)).collect(),
        Coding::ALaw => data.iter().map(|&b| alaw_to_linear(b)).collect(),
    };
    Ok((samples, header))
}

/// G.711 mu-law byte to a 16-bit sample (range -32124..=32124).
pub fn mulaw_to_linear(byte: u8) -> i16 {
    let u = !byte;
    let exponent = (u >> 4) & 0x07;
    let magnitude = ((i32::from(u & 0x0f) << 3) + 0x84) << exponent;
    let value = magnitude - 0x84;
    (if u & 0x80 != 0 { -value } else { value }) as i16
}

/// G.711 a-law byte to a 16-bit sample (range -32256..=32256).
pub fn alaw_to_linear(byte: u8) -> i16 {
    let a = byte ^ 0x55;
    let exponent = (a >> 4) & 0x07;
    let mantissa = i32::from(a & 0x0f);
    let magnitude = match exponent {
        0 => (mantissa << 4) + 8,
        e => ((mantissa << 4) + 0x108) << (e - 1),
    };
    (if a & 0x80 != 0 { magnitude } else { -magnitude }) as i16
}

/// A `NIST_1A` file: a 1024-byte header of `fields` (a value that parses as an integer is
/// written `-i`, any other as a string) then `data`, for tests and generated test corpora.
pub fn write(fields: &[(&str, &str)], data: &[u8]) -> Vec<u8> {
    let mut header = String::from("NIST_1A\n   1024\n");
    for (name, value) in fields {
        if value.parse::<i64>().is_ok() {
            header += &format!("{name} -i {value}\n");
        } else {
            header += &format!("{name} -s{} {value}\n", value.len());
        }
    }
    header += "end_head\n";
    let mut bytes = header.into_bytes();
    bytes.resize(1024, b' ');
    bytes.extend_from_slice(data);
    bytes
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn pcm_in_both_byte_orders_and_two_channels() {
        let values: [i16; 4] = [1, -2, 30000, -32768];
        let le: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let be: Vec<u8> = values.iter().flat_map(|v| v.to_be_bytes()).collect();
        for (order, data) in [("01", le), ("10", be)] {
            let file = write(
                &[
                    ("sample_count", "2"),
                    ("sample_rate", "8000"),
                    ("channel_count", "2"),
                    ("sample_n_bytes", "2"),
                    ("sample_byte_format", order),
                    ("sample_coding", "pcm"),
                ],
                &data,
            );
            let (samples, header) = decode(&file).unwrap();
            assert_eq!(samples, values, "{order}");
            assert_eq!((header.channels, header.sample_rate), (2, 8000));
            assert_eq!(header.sample_count, 2);
        }
    }

    #[test]
    fn g711_tables_hit_the_known_values() {
        // Silence, extremes and a mid-range code of each law (ITU-T G.711 tables).
        assert_eq!(mulaw_to_linear(0xff), 0);
        assert_eq!(mulaw_to_linear(0x7f), 0);
        assert_eq!(mulaw_to_linear(0x80), 32124);
        assert_eq!(mulaw_to_linear(0x00), -32124);
        assert_eq!(mulaw_to_linear(0xf0), 120);
        assert_eq!(alaw_to_linear(0xd5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xaa), 32256);
        assert_eq!(alaw_to_linear(0x2a), -32256);
        // Both laws are odd-symmetric and monotone within a sign.
        let mu: Vec<i16> = (0..=255u8).map(mulaw_to_linear).collect();
        assert!(
            mu[128..].windows(2).all(|w| w[0] > w[1]),
            "positive half decreasing"
        );
    }

    #[test]
    fn shorten_truncation_and_garbage_are_refused_with_the_reason() {
        let shorten = write(
            &[
                ("sample_count", "100"),
                ("sample_rate", "8000"),
                ("sample_coding", "ulaw,embedded-shorten-v2.00"),
            ],
            &[0u8; 10],
        );
        let err = parse_header(&shorten).unwrap_err().to_string();
        assert!(err.starts_with("unsupported: shorten"), "{err}");
        assert!(err.contains("sph2pipe"), "{err}");
        let short = write(
            &[
                ("sample_count", "100"),
                ("sample_rate", "8000"),
                ("sample_coding", "ulaw"),
            ],
            &[0u8; 10],
        );
        let err = decode(&short).unwrap_err().to_string();
        assert!(err.starts_with("truncated:"), "{err}");
        let mut no_end = write(&[("sample_rate", "8000")], &[0u8; 4]);
        no_end[16..1024].fill(b' ');
        let err = parse_header(&no_end).unwrap_err().to_string();
        assert!(err.contains("no end_head"), "{err}");
        assert!(!is_sphere(b"RIFF....WAVE"));
    }
}
