//! Helpers shared by the integration tests: synthetic corpus trees built from the fixture's
//! WAV files, AAC/M4A files encoded by the provisioned PyAV, and the CLI.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

/// The shared tiny fixture corpus.
pub fn fixture() -> PathBuf {
    fixture_corpus::ensure(fixture_corpus::Size::Tiny, 1).expect("fixture corpus")
}

/// The `n`-th WAV of the fixture's speech part (sorted), to copy into synthetic trees.
pub fn fixture_wav(n: usize) -> PathBuf {
    let root = fixture().join("wav");
    let mut files: Vec<PathBuf> = walk(&root)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "wav"))
        .collect();
    files.sort();
    files[n % files.len()].clone()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Copies fixture WAVs to each `rel` path under `root` (a different source per file).
pub fn place_wavs(root: &Path, rels: &[&str]) {
    for (i, rel) in rels.iter().enumerate() {
        let dest = root.join(rel);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(fixture_wav(i), dest).unwrap();
    }
}

/// A temporary corpus folder with fixture WAVs at `rels`.
pub fn wav_tree(rels: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    place_wavs(dir.path(), rels);
    dir
}

/// Writes a text file, creating folders.
pub fn write_text(root: &Path, rel: &str, text: &str) {
    let dest = root.join(rel);
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::write(dest, text).unwrap();
}

/// Encodes AAC/M4A files with PyAV (FFmpeg's native AAC encoder, MP4 muxer): one per
/// `(path, samples, rate, channels)`; a sine sweep of exactly `samples` samples per channel.
pub const ENCODE_M4A: &str = r#"
import sys, av, numpy as np
for spec in sys.argv[1:]:
    path, n, rate, channels = spec.split(',')
    n, rate, channels = int(n), int(rate), int(channels)
    t = np.arange(n) / rate
    x = (0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t)).astype(np.float32)
    with av.open(path, 'w', format='mp4') as out:
        stream = out.add_stream('aac', rate=rate, layout='mono' if channels == 1 else 'stereo')
        for i in range(0, n, 1024):
            chunk = np.ascontiguousarray(np.tile(x[i:i + 1024], (channels, 1)))
            frame = av.AudioFrame.from_ndarray(chunk, format='fltp', layout=stream.layout.name)
            frame.sample_rate = rate
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
"#;

pub fn encode_m4a(files: &[(&Path, u64, u32, u16)]) {
    for (path, ..) in files {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    }
    let args: Vec<String> = files
        .iter()
        .map(|(p, n, r, c)| format!("{},{n},{r},{c}", p.display()))
        .collect();
    stage_kit::reference::run_python(ENCODE_M4A, &args).expect("PyAV encodes M4A");
}

/// Runs the `data-manifest` binary.
pub fn cli(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_data-manifest"))
        .args(args)
        .output()
        .expect("data-manifest runs")
}

/// Runs the binary and fails the test with its output unless it succeeds; returns stdout.
pub fn cli_ok(args: &[&str]) -> String {
    let out = cli(args);
    assert!(
        out.status.success(),
        "data-manifest {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `p` as a `&str`.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
