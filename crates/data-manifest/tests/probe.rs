//! Header probing against references: Python's `wave` module for WAV, PyAV (FFmpeg) for AAC
//! in M4A and FLAC, and the bad inputs a corpus contains in practice.

mod common;

use std::path::{Path, PathBuf};

use data_manifest::probe::{ProbeError, probe};

/// Prints `frames rate channels` of every WAV given, as Python's `wave` module reads them.
const WAVE_HEADERS: &str = r#"
import sys, wave
for path in sys.argv[1:]:
    with wave.open(path) as w:
        print(w.getnframes(), w.getframerate(), w.getnchannels())
"#;

/// Prints the number of samples per channel PyAV (libavcodec) decodes from each file.
const DECODED_SAMPLES: &str = r#"
import sys, av
for path in sys.argv[1:]:
    with av.open(path) as c:
        print(sum(f.samples for f in c.decode(audio=0)))
"#;

fn python_lines(script: &str, files: &[PathBuf]) -> Vec<String> {
    stage_kit::reference::run_python(script, files)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn wav_headers_match_python_wave_on_the_fixture() {
    let root = common::fixture();
    let mut files = Vec::new();
    for part in ["wav", "emotion", "musan", "rirs"] {
        files.extend(walk_wavs(&root.join(part)));
    }
    files.sort();
    let expected = python_lines(WAVE_HEADERS, &files);
    assert_eq!(expected.len(), files.len());
    let mut rates = std::collections::BTreeSet::new();
    for (file, line) in files.iter().zip(&expected) {
        let info = probe(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(
            format!(
                "{} {} {}",
                info.num_samples, info.sample_rate, info.channels
            ),
            *line,
            "{}",
            file.display()
        );
        assert_eq!(info.codec, "pcm_s16le");
        rates.insert((info.sample_rate, info.channels));
    }
    // The fixture mixes rates and channel counts; make sure the comparison saw them.
    assert!(rates.len() >= 4, "{rates:?}");
}

fn walk_wavs(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .filter(|p| p.extension().is_some_and(|e| e == "wav"))
        .collect()
}

/// The sample count of AAC in M4A excludes the encoder's priming samples and the padding of
/// the last frame: it equals the number of samples that went into the encoder. libavcodec
/// (PyAV) drops the priming but decodes the padded last frame whole, so it may give up to one
/// AAC frame (1024 samples) more, never fewer.
#[test]
fn m4a_length_excludes_priming_and_padding() {
    let dir = tempfile::tempdir().unwrap();
    let specs: Vec<(PathBuf, u64, u32, u16)> = [
        (1_000, 16_000, 1),
        (16_000, 16_000, 1),
        (16_001, 16_000, 1),
        (52_853, 16_000, 1),
        (44_100, 44_100, 2),
        (100_000, 48_000, 1),
    ]
    .iter()
    .map(|&(n, rate, ch)| (dir.path().join(format!("{n}-{rate}-{ch}.m4a")), n, rate, ch))
    .collect();
    let borrowed: Vec<(&Path, u64, u32, u16)> = specs
        .iter()
        .map(|(p, n, r, c)| (p.as_path(), *n, *r, *c))
        .collect();
    common::encode_m4a(&borrowed);
    let files: Vec<PathBuf> = specs.iter().map(|s| s.0.clone()).collect();
    let decoded = python_lines(DECODED_SAMPLES, &files);
    for ((path, n, rate, channels), decoded) in specs.iter().zip(decoded) {
        let info = probe(path).unwrap();
        assert_eq!(
            (
                info.num_samples,
                info.sample_rate,
                info.channels,
                info.codec.as_str()
            ),
            (*n, *rate, *channels, "aac"),
            "{}",
            path.display()
        );
        let decoded: u64 = decoded.parse().unwrap();
        assert!(
            decoded >= *n && decoded < n + 1024,
            "{}: PyAV decodes {decoded}, probe says {n}",
            path.display()
        );
    }
}

/// RAVDESS ships 24 utterances both as 16 kHz FLAC and as AAC in M4A made from them: the
/// probed lengths agree exactly, and FLAC lengths agree with what PyAV decodes.
#[test]
fn ravdess_m4a_and_flac_lengths_agree() {
    let Some(root) = stage_kit::reference::ravdess_root() else {
        return;
    };
    let mut m4a: Vec<PathBuf> = std::fs::read_dir(root.join("m4a"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    m4a.sort();
    assert_eq!(m4a.len(), 24);
    let flac: Vec<PathBuf> = m4a
        .iter()
        .map(|p| {
            let stem = p.file_stem().unwrap().to_str().unwrap();
            let actor = &stem[stem.len() - 2..];
            root.join(format!("flac16k/Actor_{actor}/{stem}.flac"))
        })
        .collect();
    let decoded = python_lines(DECODED_SAMPLES, &flac);
    for ((m, f), decoded) in m4a.iter().zip(&flac).zip(decoded) {
        let (a, b) = (probe(m).unwrap(), probe(f).unwrap());
        assert_eq!(a.num_samples, b.num_samples, "{}", m.display());
        assert_eq!((a.codec.as_str(), b.codec.as_str()), ("aac", "flac"));
        assert_eq!(b.num_samples.to_string(), decoded, "{}", f.display());
    }
}

fn truncated_copy(src: &Path, dest: &Path, keep: u64) {
    let bytes = std::fs::read(src).unwrap();
    std::fs::write(dest, &bytes[..keep as usize]).unwrap();
}

#[test]
fn bad_inputs_are_rejected_with_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let wav = common::fixture_wav(0);
    let len = std::fs::metadata(&wav).unwrap().len();

    truncated_copy(&wav, &d.join("truncated.wav"), len / 2);
    std::fs::write(d.join("empty.wav"), b"").unwrap();
    std::fs::write(d.join("text.wav"), "this is not audio\n").unwrap();
    truncated_copy(&wav, &d.join("header-only.wav"), 20);
    let mut zero = std::fs::read(&wav).unwrap();
    zero.truncate(44);
    zero[40..44].copy_from_slice(&0u32.to_le_bytes());
    zero[4..8].copy_from_slice(&36u32.to_le_bytes());
    std::fs::write(d.join("zero.wav"), zero).unwrap();
    let m4a = d.join("whole.m4a");
    common::encode_m4a(&[(&m4a, 32_000, 16_000, 1)]);
    let m4a_len = std::fs::metadata(&m4a).unwrap().len();
    truncated_copy(&m4a, &d.join("truncated.m4a"), m4a_len * 2 / 3);

    let category = |name: &str| probe(&d.join(name)).unwrap_err();
    assert!(matches!(
        category("truncated.wav"),
        ProbeError::Truncated(_)
    ));
    assert!(matches!(category("empty.wav"), ProbeError::Empty));
    assert!(matches!(category("text.wav"), ProbeError::NotAudio(_)));
    assert!(matches!(
        category("header-only.wav"),
        ProbeError::Truncated(_)
    ));
    assert!(matches!(category("zero.wav"), ProbeError::ZeroLength));
    assert!(matches!(
        category("truncated.m4a"),
        ProbeError::Truncated(_)
    ));
    let reason = category("truncated.wav").to_string();
    assert!(
        reason.starts_with("truncated: the header declares"),
        "{reason}"
    );
    assert!(probe(&d.join("missing.wav")).is_err_and(|e| e.category() == "unreadable"));
}
