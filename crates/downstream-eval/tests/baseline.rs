//! Baseline (fbank statistics) embeddings: against numpy on the cached fbank, the three
//! feature sources agreeing, speaker verification on the fixture trials, and emotion
//! recognition on RAVDESS with actor-disjoint folds.
//!
//! The manifests are built here from the corpus layouts by small local helpers (the
//! data-manifest scanners live on another branch); `num_samples` is left 0 because nothing
//! here reads it.

mod common;

use std::path::{Path, PathBuf};

use common::{read_json, run_ok, write_trials};
use data_manifest::{Utterance, UtteranceManifest};
use feature_extract::Embeddings;
use feature_extract::prepare::{PrepareConfig, PrepareRequest, prepare};
use stage_kit::Shard;
use stage_kit::reference::{ravdess_root, run_python};

fn utterance(
    utt_id: String,
    path: String,
    speaker: &str,
    emotion: Option<String>,
    fold: Option<String>,
) -> Utterance {
    Utterance {
        utt_id,
        path,
        corpus: "test".into(),
        speaker: Some(speaker.to_owned()),
        session: None,
        num_samples: 0,
        sample_rate: 16000,
        channels: 1,
        codec: String::new(),
        split: "train".into(),
        emotion,
        fold,
    }
}

/// Files under `dir` with extension `ext`, sorted.
fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == ext) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The fixture's VoxCeleb-style utterances (`wav/<spk>/<session>/<n>.wav`, id without
/// `.wav`), optionally only those of speakers starting with `prefix`.
fn fixture_manifest(root: &Path, prefix: &str, out: &Path) -> PathBuf {
    let utterances = files(&root.join("wav"), "wav")
        .into_iter()
        .map(|p| p.strip_prefix(root).unwrap().to_string_lossy().into_owned())
        .filter(|rel| rel.starts_with(&format!("wav/{prefix}")))
        .map(|rel| {
            let id = rel
                .trim_start_matches("wav/")
                .trim_end_matches(".wav")
                .to_owned();
            let speaker = id.split('/').next().unwrap().to_owned();
            utterance(id, rel, &speaker, None, None)
        })
        .collect();
    UtteranceManifest {
        corpus_root: root.to_path_buf(),
        utterances,
    }
    .write(out)
    .unwrap();
    out.to_path_buf()
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

#[test]
fn baseline_sources_agree_with_numpy_and_verify_fixture_speakers() {
    let root = xtask::fixture::ensure(xtask::fixture::Size::Tiny, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = |p: &Path| p.display().to_string();

    // Caches of the first held-out speaker's utterances, by feature-extract.
    let small = fixture_manifest(&root, "id10001", &d.join("small.parquet"));
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
    let checked = run_python(CHECK_PY, &[d.join("fbank.h5"), d.join("from_fbank.h5")]).unwrap();
    let (count, worst) = checked.trim().split_once(' ').unwrap();
    assert_eq!(count, "15");
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
    let all = fixture_manifest(&root, "", &d.join("all.parquet"));
    let train = fixture_manifest(&root, "id0", &d.join("train.parquet"));
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
    let trials: Vec<(String, String, bool)> = std::fs::read_to_string(root.join("trials.txt"))
        .unwrap()
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (
                f[1].trim_end_matches(".wav").to_owned(),
                f[2].trim_end_matches(".wav").to_owned(),
                f[0] == "1",
            )
        })
        .collect();
    write_trials(&d.join("trials.parquet"), &trials);
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

/// RAVDESS emotion names by the file name's third field.
const RAVDESS_EMOTIONS: [&str; 8] = [
    "neutral",
    "calm",
    "happy",
    "sad",
    "angry",
    "fearful",
    "disgust",
    "surprised",
];

/// `flac16k/Actor_NN/03-01-EE-II-SS-RR-AA.flac`: emotion from EE, speaker from AA, and six
/// actor-disjoint folds of four consecutive actors (two female, two male).
fn ravdess_manifest(root: &Path, out: &Path) -> PathBuf {
    let utterances = files(&root.join("flac16k"), "flac")
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            let fields: Vec<u32> = stem.split('-').map(|f| f.parse().unwrap()).collect();
            let (emotion, actor) = (fields[2] as usize, fields[6]);
            utterance(
                stem,
                rel,
                &format!("actor{actor:02}"),
                Some(RAVDESS_EMOTIONS[emotion - 1].to_owned()),
                Some(((actor - 1) / 4 + 1).to_string()),
            )
        })
        .collect();
    UtteranceManifest {
        corpus_root: root.to_path_buf(),
        utterances,
    }
    .write(out)
    .unwrap();
    out.to_path_buf()
}

#[test]
fn ravdess_emotion_with_baseline_embeddings_and_actor_disjoint_folds() {
    let Some(root) = ravdess_root() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = |p: &Path| p.display().to_string();
    let manifest = ravdess_manifest(&root, &d.join("ravdess.parquet"));
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
