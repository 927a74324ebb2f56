//! End to end on the tiny fixture corpus: stand-in speaker embeddings (second-order MFCC
//! statistics, computed with torchaudio's Kaldi MFCC, since no trained model exists at this
//! point of the pipeline) go through the `pseudo-labeler cluster` binary with a manifest of
//! true speakers; the test checks the files and that the clusters follow the speakers.

use std::path::Path;
use std::process::Command;

use data_manifest::{PseudoLabels, Utterance, UtteranceManifest};
use feature_extract::Embeddings;
use ndarray::Array2;
use serde::Deserialize;

/// For every utterance of `wav/<speaker>/<session>/*.wav`: downmix, resample to 16 kHz,
/// 30 Kaldi MFCCs, frames above the mean c0 (a crude energy VAD), mean removal, and the
/// upper triangle of the covariance (465 values), each value standardised over the corpus.
const MFCC_STATS: &str = r#"
import glob, json, os, sys
import numpy as np, torch
from scipy.io import wavfile
from torchaudio.compliance import kaldi
import torchaudio.functional as AF
root, out = sys.argv[1], sys.argv[2]
files = sorted(glob.glob(os.path.join(root, "wav", "*", "*", "*.wav")))
rows, utts = [], []
upper = np.triu_indices(30)
for f in files:
    rate, audio = wavfile.read(f)
    channels = 1 if audio.ndim == 1 else audio.shape[1]
    samples = audio.shape[0]
    audio = audio.astype(np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    wave = torch.from_numpy(audio)[None]
    if rate != 16000:
        wave = AF.resample(wave, rate, 16000)
    m = kaldi.mfcc(wave, num_ceps=30, num_mel_bins=40, sample_frequency=16000, dither=0.0)
    m = m[m[:, 0] > m[:, 0].mean()]
    m = m - m.mean(0)
    rows.append((m.T @ m / len(m)).numpy()[upper])
    rel = os.path.relpath(f, root)
    _, speaker, session, name = rel.split(os.sep)
    utts.append({"utt_id": f"{speaker}/{session}/{name[:-4]}", "path": rel, "speaker": speaker,
                 "session": session, "sample_rate": int(rate), "channels": int(channels),
                 "num_samples": int(samples)})
x = np.array(rows)
x = (x - x.mean(0)) / (x.std(0) + 1e-9)
x.astype("<f4").tofile(out)
print(json.dumps({"dim": x.shape[1], "utterances": utts}))
"#;

#[derive(Deserialize)]
struct Made {
    dim: usize,
    utterances: Vec<Made1>,
}

#[derive(Deserialize)]
struct Made1 {
    utt_id: String,
    path: String,
    speaker: String,
    session: String,
    sample_rate: u32,
    channels: u16,
    num_samples: u64,
}

/// Writes embeddings.h5 and utterances.parquet for the fixture into `dir`.
fn make_inputs(fixture: &Path, dir: &Path) -> usize {
    let raw = dir.join("embeddings.f32");
    let out = stage_kit::reference::run_python(
        MFCC_STATS,
        &[fixture.display().to_string(), raw.display().to_string()],
    )
    .expect("MFCC statistics through torchaudio");
    let made: Made = serde_json::from_str(&out).unwrap();
    let values: Vec<f32> = std::fs::read(&raw)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let n = made.utterances.len();
    Embeddings {
        utt_ids: made.utterances.iter().map(|u| u.utt_id.clone()).collect(),
        vectors: Array2::from_shape_vec((n, made.dim), values).unwrap(),
        description: r#"{"model":"mfcc-covariance","note":"stand-in embeddings for tests"}"#
            .to_owned(),
    }
    .write(&dir.join("embeddings.h5"))
    .unwrap();
    UtteranceManifest {
        corpus_root: fixture.to_path_buf(),
        utterances: made
            .utterances
            .into_iter()
            .map(|u| Utterance {
                utt_id: u.utt_id,
                path: u.path,
                corpus: "fixture".to_owned(),
                speaker: Some(u.speaker.clone()),
                session: Some(u.session),
                num_samples: u.num_samples,
                sample_rate: u.sample_rate,
                channels: u.channels,
                codec: "pcm_s16le".to_owned(),
                split: if u.speaker.starts_with("id0") {
                    "train"
                } else {
                    "test"
                }
                .to_owned(),
                emotion: None,
                fold: None,
                channel: None,
            })
            .collect(),
    }
    .write(&dir.join("utterances.parquet"))
    .unwrap();
    n
}

fn cluster(dir: &Path, out: &str, extra: &[&str]) -> serde_json::Value {
    let status = Command::new(env!("CARGO_BIN_EXE_pseudo-labeler"))
        .arg("cluster")
        .arg("--embeddings")
        .arg(dir.join("embeddings.h5"))
        .arg("--out-dir")
        .arg(dir.join(out))
        .arg("--manifest")
        .arg(dir.join("utterances.parquet"))
        .args(["--device", "cpu", "--seed", "7"])
        .args(extra)
        .status()
        .expect("running pseudo-labeler");
    assert!(status.success(), "pseudo-labeler cluster failed: {status}");
    let text = std::fs::read_to_string(dir.join(out).join("cluster_report.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn clusters_follow_speakers_on_the_fixture() {
    let fixture = fixture_corpus::ensure(fixture_corpus::Size::Tiny, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let n = make_inputs(&fixture, dir.path());
    assert_eq!(
        n,
        fixture_corpus::read_summary(&fixture).unwrap().utterances
    );

    let report = cluster(dir.path(), "batched", &[]);
    let labels = PseudoLabels::read(&dir.path().join("batched/pseudo_labels.parquet")).unwrap();
    assert_eq!(labels.labels.len(), n);
    let d = &report["diagnostics"];
    let (nmi, purity) = (
        d["assigned"]["nmi"].as_f64().unwrap(),
        d["assigned"]["purity"].as_f64().unwrap(),
    );
    eprintln!(
        "fixture, batched: k = {}, {} clusters after merging, {} after clean-up, kept {:.3}; \
         NMI k-means {:.4}, final {:.4} (ARI {:.4}, purity {:.4}), kept {:.4} (purity {:.4})",
        report["kmeans"]["k"],
        report["merge"]["clusters_after"],
        report["cleanup"]["clusters_after"],
        report["cleanup"]["kept_share"].as_f64().unwrap(),
        d["kmeans"]["nmi"].as_f64().unwrap(),
        nmi,
        d["assigned"]["ari"].as_f64().unwrap(),
        purity,
        d["kept"]["nmi"].as_f64().unwrap(),
        d["kept"]["purity"].as_f64().unwrap(),
    );
    assert_eq!(report["kmeans"]["k"], n / 4);
    assert_eq!(d["utterances_with_speaker"], n);
    let sessions = &d["kmeans_sessions"];
    eprintln!(
        "fixture, batched: k-means NMI against sessions {}",
        sessions["nmi"]
    );
    assert_eq!(
        sessions["utterances"], n,
        "every fixture utterance has a session"
    );
    // Speakers with 3 channel-distinct sessions each: hand-made statistics cluster partly by
    // session; the thresholds leave room for that while ruling out chance (NMI ~0.5 at
    // this many clusters).
    assert!(nmi > 0.7, "NMI {nmi}");
    assert!(purity > 0.6, "purity {purity}");
    let kept_clusters: std::collections::BTreeSet<i64> = labels
        .labels
        .iter()
        .filter(|l| l.kept)
        .map(|l| l.cluster)
        .collect();
    let after = report["cleanup"]["clusters_after"].as_u64().unwrap() as i64;
    assert_eq!(kept_clusters, (0..after).collect());

    // The reference backend through a config file gives a comparable clustering.
    std::fs::write(
        dir.path().join("cluster.toml"),
        "backend = \"linfa\"\ninit = \"kmeans++\"\nrestarts = 2\n",
    )
    .unwrap();
    let config = dir.path().join("cluster.toml").display().to_string();
    let linfa = cluster(dir.path(), "linfa", &["--config", &config]);
    assert_eq!(linfa["kmeans"]["backend"], "linfa");
    assert_eq!(linfa["config"]["init"], "kmeans++");
    let linfa_nmi = linfa["diagnostics"]["assigned"]["nmi"].as_f64().unwrap();
    eprintln!("fixture, linfa + k-means++: NMI {linfa_nmi:.4}");
    assert!(linfa_nmi > 0.7, "NMI {linfa_nmi}");
}
