//! Baseline (fbank statistics) embeddings: against numpy on the cached fbank, the three
//! feature sources agreeing, speaker verification on the fixture trials, and emotion
//! recognition on RAVDESS with actor-disjoint folds. Manifests, trial lists and folds come
//! from data-manifest (scanners, `trial_lists`, `folds`), as the pipeline makes them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{read_json, run_ok, write_trials};
use data_manifest::folds::{FoldUnit, assign_folds};
use data_manifest::scan::{FixturePart, Layout, ScanOptions, scan};
use data_manifest::{UtteranceManifest, trial_lists};
use feature_extract::Embeddings;
use feature_extract::prepare::{PrepareConfig, PrepareRequest, prepare};
use stage_kit::Shard;
use stage_kit::reference::{ravdess_root, run_python};

/// Scans a corpus with a data-manifest layout; only second copies of an utterance (RAVDESS
/// ships a few in other formats) may be left out.
fn scanned(layout: Layout, root: &Path) -> UtteranceManifest {
    let outcome = scan(&layout, root, &ScanOptions::default()).unwrap();
    for reject in &outcome.rejects.rejects {
        assert!(reject.reason.starts_with("duplicate"), "{reject:?}");
    }
    outcome.manifest
}

/// Writes the utterances of `manifest` that `keep` selects.
fn subset(
    manifest: &UtteranceManifest,
    keep: impl Fn(&data_manifest::Utterance) -> bool,
    out: PathBuf,
) -> PathBuf {
    UtteranceManifest {
        corpus_root: manifest.corpus_root.clone(),
        utterances: manifest
            .utterances
            .iter()
            .filter(|u| keep(u))
            .cloned()
            .collect(),
    }
    .write(&out)
    .unwrap();
    out
}

/// numpy's per-utterance mean and std of a cached fbank, against our embeddings file.
const CHECK_PY: &str = r#"
import sys
import h5py, numpy as np
with h5py.File(sys.argv[1], "r") as f:
    data, ids = f["data"], [s.decode() for s in f["utt_id"][()]]
    offsets, lengths = f["offset"][()], f["length"][()]
    ref = {u: data[o:o + n].astype(np.float64) for u, o, n in zip(ids, offsets, lengths)}
with h5py.File(sys.argv[2], "r") as f:
    emb = dict(zip([s.decode() for s in f["utt_id"][()]], f["embeddings"][()]))
worst = 0.0
for u, frames in ref.items():
    expected = np.concatenate([frames.mean(axis=0), frames.std(axis=0)])
    worst = max(worst, float(np.max(np.abs(emb[u] - expected) / (1 + np.abs(expected)))))
print(len(ref), worst)
"#;

/// A disk that fills while embeddings are written (here a file-size limit one KiB short of
/// the whole file: HDF5 writes part of its metadata only at flush and close) fails the
/// command by name and leaves nothing under the final name or a partial one.
fn full_disk_leaves_no_file(d: &Path, manifest: &Path, fbank: &Path) {
    let whole = std::fs::metadata(d.join("from_fbank.h5")).unwrap().len();
    let out = d.join("limited.h5");
    let run = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f {}; exec \"$0\" \"$@\"",
            (whole - 1) / 1024
        ))
        .arg(env!("CARGO_BIN_EXE_downstream-eval"))
        .args(["baseline", "--manifest"])
        .arg(manifest)
        .arg("--fbank-cache")
        .arg(fbank)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "a short write passed: {stderr}");
    assert!(
        stderr.contains("limited.h5") && stderr.contains("File too large"),
        "{stderr}"
    );
    let left: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("limited"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn baseline_sources_agree_with_numpy_and_verify_fixture_speakers() {
    let _serial = common::serial();
    let root = fixture_corpus::ensure(fixture_corpus::Size::Tiny, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = |p: &Path| p.display().to_string();

    // Caches of the first held-out speaker's utterances, by feature-extract.
    let speech = scanned(Layout::Fixture(FixturePart::Speech), &root);
    let small = subset(
        &speech,
        |u| u.speaker.as_deref() == Some("id10001"),
        d.join("small.parquet"),
    );
    prepare(&PrepareRequest {
        manifest: small.clone(),
        audio_out: Some(d.join("audio.h5")),
        fbank_out: Some(d.join("fbank.h5")),
        shard: Shard::WHOLE,
        threads: 0,
        config: PrepareConfig::default(),
    })
    .unwrap();
    for (flag, source, out) in [
        ("--fbank-cache", d.join("fbank.h5"), "from_fbank.h5"),
        ("--audio-cache", d.join("audio.h5"), "from_audio.h5"),
    ] {
        run_ok(&[
            "baseline",
            "--manifest",
            &s(&small),
            flag,
            &s(&source),
            "--out",
            &s(&d.join(out)),
        ]);
    }
    run_ok(&[
        "baseline",
        "--manifest",
        &s(&small),
        "--decode",
        "--out",
        &s(&d.join("decoded.h5")),
    ]);
    full_disk_leaves_no_file(d, &small, &d.join("fbank.h5"));
    let checked = run_python(CHECK_PY, &[d.join("fbank.h5"), d.join("from_fbank.h5")]).unwrap();
    let (count, worst) = checked.trim().split_once(' ').unwrap();
    let fixture = fixture_corpus::read_summary(&root).unwrap();
    let per_speaker =
        fixture.utterances / (fixture.train_speakers.len() + fixture.test_speakers.len());
    assert_eq!(count, per_speaker.to_string());
    assert!(
        worst.parse::<f64>().unwrap() < 1e-6,
        "numpy vs ours: {worst}"
    );
    let read = |name: &str| Embeddings::read(&d.join(name)).unwrap();
    let (fbank, audio, decoded) = (
        read("from_fbank.h5"),
        read("from_audio.h5"),
        read("decoded.h5"),
    );
    assert_eq!(fbank.dim(), 160);
    assert_eq!(fbank.utt_ids, audio.utt_ids);
    assert_eq!(
        fbank.vectors, audio.vectors,
        "the fbank cache is the fbank of the audio cache"
    );
    // Decoding skips the cache's int16 rounding of resampled audio: close, not identical.
    let gap = (&decoded.vectors - &fbank.vectors)
        .mapv(f32::abs)
        .fold(0f32, |m, &v| m.max(v));
    assert!(gap < 0.05, "decoded vs cached: {gap}");

    // Speaker verification on the fixture trials with baseline embeddings.
    let all = subset(&speech, |_| true, d.join("all.parquet"));
    let train = subset(&speech, |u| u.split == "train", d.join("train.parquet"));
    run_ok(&[
        "baseline",
        "--manifest",
        &s(&all),
        "--decode",
        "--out",
        &s(&d.join("all.h5")),
    ]);
    run_ok(&[
        "baseline",
        "--manifest",
        &s(&train),
        "--decode",
        "--out",
        &s(&d.join("train.h5")),
    ]);
    let trials = trial_lists::read_text(&root.join("trials.txt")).unwrap();
    trials.write(&d.join("trials.parquet")).unwrap();
    let sv = |trials: &Path, name: &str, extra: &[&str]| {
        let out = d.join(name);
        let mut args = vec![
            "sv",
            "--out-dir",
            out.to_str().unwrap(),
            "--trials",
            trials.to_str().unwrap(),
        ];
        let embeddings = s(&d.join("all.h5"));
        args.extend(["--embeddings", &embeddings]);
        args.extend(extra);
        run_ok(&args);
        let report = read_json(&out.join("report.json"));
        eprintln!(
            "baseline embeddings, {name}: {} trials, EER {:.2} % (interpolated {:.2} %), minDCF(0.01) {:.4}, \
             minDCF(0.05) {:.4}",
            report["num_trials"],
            100.0 * report["eer"].as_f64().unwrap(),
            100.0 * report["eer_interpolated"].as_f64().unwrap(),
            report["min_dcf_0.01"].as_f64().unwrap(),
            report["min_dcf_0.05"].as_f64().unwrap()
        );
        report["eer"].as_f64().unwrap()
    };
    // The fixture's list pairs different sessions (channels) only: fbank statistics follow
    // the channel more than the voice, so the baseline is close to chance there.
    let official = sv(&d.join("trials.parquet"), "fixture trials, cosine", &[]);
    let train_h5 = s(&d.join("train.h5"));
    sv(
        &d.join("trials.parquet"),
        "fixture trials, training mean subtracted",
        &["--mean-embeddings", &train_h5],
    );
    assert!(official > 0.0 && official < 0.5, "EER {official}");
    // Within a session the same statistics do tell speakers apart.
    let held_out: Vec<String> = Embeddings::read(&d.join("all.h5"))
        .unwrap()
        .utt_ids
        .into_iter()
        .filter(|id| id.starts_with("id1"))
        .collect();
    let (mut targets, mut nontargets) = (Vec::new(), Vec::new());
    for (i, a) in held_out.iter().enumerate() {
        for b in &held_out[i + 1..] {
            let (pa, pb): (Vec<&str>, Vec<&str>) = (a.split('/').collect(), b.split('/').collect());
            if pa[0] == pb[0] && pa[1] == pb[1] {
                targets.push((a.clone(), b.clone(), true));
            } else if pa[0] != pb[0] {
                nontargets.push((a.clone(), b.clone(), false));
            }
        }
    }
    let step = nontargets.len() / targets.len();
    targets.extend(nontargets.into_iter().step_by(step));
    write_trials(&d.join("same_session.parquet"), &targets);
    let same_session = sv(
        &d.join("same_session.parquet"),
        "same-session targets, cosine",
        &[],
    );
    assert!(same_session < 0.3, "same-session EER {same_session}");
}

#[test]
fn ravdess_emotion_with_baseline_embeddings_and_actor_disjoint_folds() {
    let _serial = common::serial();
    let Some(root) = ravdess_root() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = |p: &Path| p.display().to_string();
    // The 16 kHz FLACs: the scanner keeps the first path of each utterance id, and
    // `flac16k/` sorts before the few duplicated originals.
    let mut ravdess = scanned(Layout::Ravdess, &root);
    assert!(
        ravdess
            .utterances
            .iter()
            .all(|u| u.path.starts_with("flac16k/"))
    );
    assign_folds(&mut ravdess, FoldUnit::Speaker, 6, 0).unwrap();
    let manifest = subset(&ravdess, |_| true, d.join("ravdess.parquet"));
    run_ok(&[
        "baseline",
        "--manifest",
        &s(&manifest),
        "--decode",
        "--out",
        &s(&d.join("emb.h5")),
    ]);
    let out = d.join("emotion");
    run_ok(&[
        "emotion",
        "--embeddings",
        &s(&d.join("emb.h5")),
        "--manifest",
        &s(&manifest),
        "--out-dir",
        &s(&out),
    ]);
    let report = read_json(&out.join("report.json"));
    eprintln!(
        "{}",
        std::fs::read_to_string(out.join("report.md")).unwrap()
    );
    assert_eq!(report["num_evaluated"], 1440);
    assert_eq!(report["folds"].as_array().unwrap().len(), 6);
    let micro = report["micro_f1"].as_f64().unwrap();
    // Chance is 1/8 (the majority class holds 192 / 1440 = 13.3 %).
    assert!(micro > 0.2, "micro-F1 {micro}");
}
