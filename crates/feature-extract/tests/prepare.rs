//! `feature-extract prepare` end to end on the fixture corpus: caches readable by h5py,
//! rejects reported, a run killed midway and resumed equal to an uninterrupted one, and
//! shards merged equal to the whole.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use data_manifest::RejectList;
use feature_extract::cache::{AudioCache, FbankCache};
use feature_extract::fbank::{Fbank, FbankOptions};

const BIN: &str = env!("CARGO_BIN_EXE_feature-extract");

/// A manifest of `count` fixture utterances plus one missing file.
fn manifest(dir: &Path, count: usize) -> PathBuf {
    let root = common::fixture();
    let mut files: Vec<(PathBuf, String)> = common::files(&root.join("wav"), "wav")
        .into_iter()
        .take(count)
        .map(|p| (p, "train".to_owned()))
        .collect();
    files.insert(3, (root.join("wav/missing.wav"), "train".to_owned()));
    common::write_manifest(dir, &root, &files)
}

fn prepare_cmd(manifest: &Path, out: &Path, extra: &[&str]) -> Command {
    let config = out.join("prepare.toml");
    std::fs::create_dir_all(out).unwrap();
    std::fs::write(&config, "part_size = 4\n[fbank]\nnum_mel_bins = 64\n").unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("prepare")
        .arg("--manifest")
        .arg(manifest)
        .arg("--audio-out")
        .arg(out.join("audio.h5"))
        .arg("--fbank-out")
        .arg(out.join("fbank.h5"))
        .arg("--config")
        .arg(&config)
        .args(["--vad", "--threads", "2", "--max-reject-fraction", "0.1"])
        .args(extra);
    cmd
}

fn run(mut cmd: Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every utterance of both caches, by id: (group, samples, frames).
fn contents(dir: &Path) -> Vec<(String, String, Vec<i16>, Vec<f32>)> {
    let audio = AudioCache::open(&dir.join("audio.h5")).unwrap();
    let fbank = FbankCache::open(&dir.join("fbank.h5")).unwrap();
    let mut out: Vec<_> = audio
        .entries()
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let j = fbank.position(&e.utt_id).unwrap();
            (
                e.utt_id.clone(),
                e.group.clone(),
                audio.read_all(i).unwrap(),
                fbank.read_all(j).unwrap().into_raw_vec_and_offset().0,
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn prepare_resumes_after_a_kill_shards_merge_and_h5py_reads_the_caches() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(dir.path(), 60);

    // Uninterrupted run.
    let whole = dir.path().join("whole");
    let mut cmd = prepare_cmd(&manifest, &whole, &[]);
    cmd.arg("--rejects")
        .arg(whole.join("rejects.parquet"))
        .arg("--summary-json")
        .arg(whole.join("summary.json"));
    run(cmd);
    let rejects = RejectList::read(&whole.join("rejects.parquet")).unwrap();
    assert_eq!(rejects.rejects.len(), 1);
    assert_eq!(rejects.rejects[0].path, "wav/missing.wav");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(whole.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["written"], 60);
    assert_eq!(summary["rejected"], 1);
    assert!(summary["kept_hours"].as_f64().unwrap() < summary["input_hours"].as_f64().unwrap());
    assert!(!whole.join("audio.h5.parts").exists());
    let reference = contents(&whole);
    assert_eq!(reference.len(), 60);

    // The fbank cache holds the fbank of the audio cache.
    let opts = FbankOptions {
        num_mel_bins: 64,
        ..Default::default()
    };
    let (_, _, samples, frames) = &reference[5];
    let x: Vec<f32> = samples.iter().map(|&s| f32::from(s)).collect();
    assert_eq!(
        Fbank::new(&opts)
            .unwrap()
            .compute(&x)
            .into_raw_vec_and_offset()
            .0,
        *frames
    );

    // Killed once a few parts are on disk, then resumed.
    let resumed = dir.path().join("resumed");
    let mut child = prepare_cmd(&manifest, &resumed, &[]).spawn().unwrap();
    let parts = resumed.join("audio.h5.parts");
    let started = Instant::now();
    let count_parts = || {
        std::fs::read_dir(&parts)
            .map(|d| {
                d.filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .ends_with(".fbank.h5")
                })
                .count()
            })
            .unwrap_or(0)
    };
    while count_parts() < 3 && started.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let done = count_parts();
    assert!(
        (3..15).contains(&done) && !resumed.join("audio.h5").exists(),
        "{done} parts at the kill"
    );
    run(prepare_cmd(&manifest, &resumed, &[]));
    assert_eq!(contents(&resumed), reference);

    // Two shards merged hold the same utterances.
    for i in 0..2 {
        let shard = format!("{i}/2");
        run(prepare_cmd(
            &manifest,
            &dir.path().join(format!("shard{i}")),
            &["--shard", &shard],
        ));
    }
    let merged = dir.path().join("merged");
    std::fs::create_dir_all(&merged).unwrap();
    for name in ["audio.h5", "fbank.h5"] {
        let mut cmd = Command::new(BIN);
        cmd.arg("merge")
            .arg("--output")
            .arg(merged.join(name))
            .arg(dir.path().join("shard0").join(name))
            .arg(dir.path().join("shard1").join(name));
        run(cmd);
    }
    assert_eq!(contents(&merged), reference);

    // h5py reads the packed, contiguous layout (schema 2).
    let script = r#"
import sys, h5py, numpy as np
a = h5py.File(sys.argv[1], "r"); f = h5py.File(sys.argv[2], "r")
ids = [s.decode() if isinstance(s, bytes) else s for s in a["utt_id"][:]]
i = ids.index(sys.argv[3])
o, n = int(a["offset"][i]), int(a["length"][i])
x = a["data"][o:o + n, 0]
fi = [s.decode() if isinstance(s, bytes) else s for s in f["utt_id"][:]].index(sys.argv[3])
fo, fn = int(f["offset"][fi]), int(f["length"][fi])
print(a.attrs["schema"], a.attrs["sample_rate"], len(ids), n, int(x.astype(np.int64).sum()),
      f["data"].shape[1], fn, f["data"].compression, a["data"].chunks,
      a["data"].id.get_offset() is not None)
"#;
    let (id, _, samples, frames) = &reference[7];
    let out = stage_kit::reference::run_python(
        script,
        &[
            whole.join("audio.h5").display().to_string(),
            whole.join("fbank.h5").display().to_string(),
            id.clone(),
        ],
    )
    .unwrap();
    let sum: i64 = samples.iter().map(|&s| i64::from(s)).sum();
    assert_eq!(
        out.trim(),
        format!(
            "audio-cache/2 16000 60 {} {sum} 64 {} None None True",
            samples.len(),
            frames.len() / 64
        )
    );
}

#[test]
fn a_corrupt_flac_is_rejected_and_a_failed_bound_leaves_no_cache() {
    let Some(ravdess) = stage_kit::reference::ravdess_root() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("corpus");
    std::fs::create_dir_all(&root).unwrap();
    let source = ravdess.join("flac16k/Actor_01/03-01-05-02-01-01-01.flac");
    let (good, bad) = (root.join("good.flac"), root.join("bad.flac"));
    std::fs::copy(&source, &good).unwrap();
    std::fs::copy(&source, &bad).unwrap();
    let files = [
        (good, "train".to_owned()),
        (bad.clone(), "train".to_owned()),
    ];
    let manifest = common::write_manifest(dir.path(), &root, &files);
    // 2,000 bytes of junk in the middle: the decoder skips the frames it cannot read.
    let mut bytes = std::fs::read(&bad).unwrap();
    let middle = bytes.len() / 2;
    for (i, b) in bytes[middle..middle + 2000].iter_mut().enumerate() {
        *b = (i * 7919 % 251) as u8;
    }
    std::fs::write(&bad, bytes).unwrap();

    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    // Left by a run killed while merging (pid 0 is never a live process).
    let stale = out.join(".audio.h5.partial-0-1");
    std::fs::write(&stale, b"half a cache").unwrap();
    let output = Command::new(BIN)
        .arg("prepare")
        .arg("--manifest")
        .arg(&manifest)
        .arg("--audio-out")
        .arg(out.join("audio.h5"))
        .arg("--rejects")
        .arg(out.join("rejects.parquet"))
        .args(["--threads", "1", "--max-reject-fraction", "0.1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("1 of 2 utterances rejected"), "{stderr}");
    assert!(
        !out.join("audio.h5").exists(),
        "a cache above the reject bound"
    );
    assert!(
        !stale.exists(),
        "the stale partial file of a killed run is still there"
    );
    let rejects = RejectList::read(&out.join("rejects.parquet"))
        .unwrap()
        .rejects;
    assert_eq!(rejects.len(), 1);
    assert_eq!(rejects[0].path, "bad.flac");
    assert!(
        rejects[0].reason.contains("where the manifest says")
            && rejects[0].reason.contains("corrupt or truncated"),
        "{}",
        rejects[0].reason
    );
}
