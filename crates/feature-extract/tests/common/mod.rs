//! Helpers shared by the integration tests: raw f32 files exchanged with the reference
//! Python, the fixture corpus and RAVDESS file lists.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use data_manifest::{Utterance, UtteranceManifest};
use feature_extract::decode;
use feature_extract::fbank::{FbankOptions, WindowType};

/// The tiny fixture corpus (generated on first use, shared by all crates' tests).
pub fn fixture() -> PathBuf {
    fixture_corpus::ensure(fixture_corpus::Size::Tiny, 1).expect("fixture corpus")
}

/// Sorted files with extension `ext` under `dir`.
pub fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == ext) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

pub fn write_f32(path: &Path, values: &[f32]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

pub fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Every combination of bins x window x snip_edges x rate x high frequency, then the other
/// options one at a time on top of the defaults (both snip_edges settings).
pub fn option_grid() -> Vec<FbankOptions> {
    let mut grid = Vec::new();
    for rate in [16000u32, 8000] {
        for bins in [80usize, 64] {
            for window_type in [WindowType::Povey, WindowType::Hamming, WindowType::Hanning] {
                for snip_edges in [true, false] {
                    let nyquist = f64::from(rate) / 2.0;
                    for high_freq in [0.0, nyquist - 400.0, -400.0] {
                        grid.push(FbankOptions {
                            sample_rate: rate,
                            num_mel_bins: bins,
                            window_type,
                            snip_edges,
                            high_freq,
                            ..Default::default()
                        });
                    }
                }
            }
        }
    }
    let d = FbankOptions::default;
    let singles = [
        FbankOptions {
            remove_dc_offset: false,
            ..d()
        },
        FbankOptions {
            preemphasis: 0.0,
            ..d()
        },
        FbankOptions {
            low_freq: 0.0,
            ..d()
        },
        FbankOptions {
            low_freq: 300.0,
            high_freq: 3400.0,
            ..d()
        },
        FbankOptions {
            use_energy: true,
            ..d()
        },
        FbankOptions {
            use_energy: true,
            energy_floor: 0.0,
            ..d()
        },
        FbankOptions {
            use_energy: true,
            raw_energy: false,
            ..d()
        },
        FbankOptions {
            window_type: WindowType::Rectangular,
            ..d()
        },
        FbankOptions {
            window_type: WindowType::Blackman,
            ..d()
        },
        FbankOptions {
            round_to_power_of_two: false,
            ..d()
        },
        FbankOptions {
            use_power: false,
            ..d()
        },
        FbankOptions {
            num_mel_bins: 40,
            frame_length_ms: 20.0,
            frame_shift_ms: 5.0,
            ..d()
        },
    ];
    for o in singles {
        for snip_edges in [true, false] {
            grid.push(FbankOptions {
                snip_edges,
                ..o.clone()
            });
        }
    }
    grid
}

/// Test signals at 16 kHz: fixture utterances (one with an 8 kHz original, one stereo when
/// there is one) and RAVDESS speech when it is present.
pub fn signals() -> Vec<(String, Vec<f32>)> {
    let fixture = fixture();
    let wavs = files(&fixture.join("wav"), "wav");
    let mut picked: Vec<PathBuf> = wavs.iter().take(2).cloned().collect();
    for want_rate in [8000u32, 44100] {
        if let Some(p) = wavs
            .iter()
            .find(|p| decode::decode_interleaved(p).is_ok_and(|(_, _, rate)| rate == want_rate))
        {
            picked.push(p.clone());
        }
    }
    if let Some(root) = stage_kit::reference::ravdess_root() {
        picked.push(root.join("flac16k/Actor_01/03-01-05-02-01-01-01.flac"));
        picked.push(root.join("flac16k/Actor_12/03-01-01-01-02-02-12.flac"));
    }
    picked
        .iter()
        .map(|p| {
            (
                p.display().to_string(),
                decode::load_mono(p, 16000).unwrap(),
            )
        })
        .collect()
}

/// Writes `utterances.parquet` into `dir` for `files` (path, split) under `root`; ids are the
/// relative paths without extension.
pub fn write_manifest(dir: &Path, root: &Path, files: &[(PathBuf, String)]) -> PathBuf {
    let utterances = files
        .iter()
        .map(|(p, split)| {
            let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_owned();
            let (num_samples, channels, sample_rate) = match decode::decode_interleaved(p) {
                Ok((x, channels, rate)) => ((x.len() / channels) as u64, channels as u16, rate),
                Err(_) => (0, 1, 16000),
            };
            Utterance {
                utt_id: rel
                    .rsplit_once('.')
                    .map_or(rel.as_str(), |(id, _)| id)
                    .to_owned(),
                path: rel.clone(),
                corpus: "fixture".into(),
                speaker: None,
                session: None,
                num_samples,
                sample_rate,
                channels,
                codec: "pcm_s16le".into(),
                split: split.clone(),
                emotion: None,
                fold: None,
                channel: None,
            }
        })
        .collect();
    let path = dir.join("utterances.parquet");
    UtteranceManifest {
        corpus_root: root.to_path_buf(),
        utterances,
    }
    .write(&path)
    .unwrap();
    path
}
