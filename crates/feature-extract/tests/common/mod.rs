//! Helpers shared by the integration tests: raw f32 files exchanged with the reference
//! Python, the fixture corpus and RAVDESS file lists.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The tiny fixture corpus (generated on first use, shared by all crates' tests).
pub fn fixture() -> PathBuf {
    xtask::fixture::ensure(xtask::fixture::Size::Tiny, 1).expect("fixture corpus")
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
