//! The PLDA back-end against an independent numpy implementation run in this test: the same
//! preprocessing chain (centring, optional LDA, ZCA whitening, length norm), simplified PLDA
//! EM written out class by class with explicit inverses, and trial scores from the joint
//! Gaussian of the two vectors (not the factorised form the Rust side uses); AS-norm on top.

mod common;

use std::path::Path;

use common::{normal, read_json, run_ok, write_embeddings, write_trials};
use data_manifest::{Utterance, UtteranceManifest};
use downstream_eval::plda::PldaModel;
use ndarray::Array2;
use rand::Rng;
use stage_kit::reference::run_python;
use stage_kit::rng::stream;

const PLDA_PY: &str = r#"
import json, sys
import numpy as np

d = json.load(open(sys.argv[1]))
x = np.array(d["train"], dtype=np.float64)
labels = np.array(d["labels"])
ev = np.array(d["eval"], dtype=np.float64)
cohort = np.array(d["cohort"], dtype=np.float64)
pairs = np.array(d["pairs"])
y_dim, iters, lda_dim, top = d["y_dim"], d["iterations"], d["lda_dim"], d["top"]
classes = sorted(set(labels.tolist()))

def sym_pow(m, p):
    w, u = np.linalg.eigh((m + m.T) / 2)
    return (u * w ** p) @ u.T

mean = x.mean(0)
xc = x - mean
proj = np.eye(x.shape[1])
if lda_dim is not None:
    means = {c: xc[labels == c].mean(0) for c in classes}
    sw = sum((xc[labels == c] - means[c]).T @ (xc[labels == c] - means[c]) for c in classes) / len(x)
    sb = sum((labels == c).sum() * np.outer(means[c], means[c]) for c in classes) / len(x)
    wi = sym_pow(sw, -0.5)
    w, u = np.linalg.eigh(wi @ sb @ wi)
    proj = u[:, np.argsort(-w)[:lda_dim]].T @ wi
p = xc @ proj.T
proj = sym_pow(p.T @ p / len(p), -0.5) @ proj

def prep(v):
    z = (v - mean) @ proj.T
    return z * np.sqrt(z.shape[1]) / np.linalg.norm(z, axis=1, keepdims=True)

z = prep(x)
dim = z.shape[1]
mu = z.mean(0)
zc = z - mu
ms = np.array([zc[labels == c].mean(0) for c in classes])
ns = np.array([(labels == c).sum() for c in classes])
fs = ms * ns[:, None]
sb0 = np.cov(ms.T, bias=True)
w, u = np.linalg.eigh(sb0)
order = np.argsort(-w)[:y_dim]
V = u[:, order] * np.sqrt(np.maximum(w[order], 0))
Sw = sum((zc[labels == c] - m).T @ (zc[labels == c] - m) for c, m in zip(classes, ms)) / len(z)
S = zc.T @ zc
for _ in range(iters):
    W = np.linalg.inv(Sw)
    R = np.zeros((y_dim, y_dim)); Ryy = np.zeros((y_dim, y_dim)); C = np.zeros((dim, y_dim))
    for n, f in zip(ns, fs):
        cov = np.linalg.inv(np.eye(y_dim) + n * V.T @ W @ V)
        y = cov @ V.T @ W @ f
        eyy = cov + np.outer(y, y)
        R += n * eyy; Ryy += eyy; C += np.outer(f, y)
    V = C @ np.linalg.inv(R)
    Sw = (S - V @ C.T) / len(z)
    Sw = (Sw + Sw.T) / 2
    V = V @ np.linalg.cholesky(Ryy / len(classes))
B = V @ V.T
T = B + Sw

def logdet(m):
    return np.linalg.slogdet(m)[1]

joint = np.block([[T, B], [B, T]])
ji, ti = np.linalg.inv(joint), np.linalg.inv(T)
const = -0.5 * logdet(joint) + logdet(T)
def llr(a, b):
    ab = np.concatenate([a, b], axis=1)
    return (-0.5 * np.einsum("ij,jk,ik->i", ab, ji, ab)
            + 0.5 * np.einsum("ij,jk,ik->i", a, ti, a)
            + 0.5 * np.einsum("ij,jk,ik->i", b, ti, b) + const)

e = prep(ev) - mu
co = prep(cohort) - mu
scores = llr(e[pairs[:, 0]], e[pairs[:, 1]])
# AS-norm: top-N cohort scores of every evaluation vector.
cs = np.array([llr(np.repeat(v[None], len(co), 0), co) for v in e])
top_scores = -np.sort(-cs, axis=1)[:, :top]
m, s = top_scores.mean(1), top_scores.std(1)
a, b = pairs[:, 0], pairs[:, 1]
asnorm = 0.5 * ((scores - m[a]) / s[a] + (scores - m[b]) / s[b])
print(json.dumps({"between": B.tolist(), "within": Sw.tolist(), "scores": scores.tolist(),
                  "asnorm": asnorm.tolist()}))
"#;

/// Vectors of `speakers` x `per` utterances: speaker means in a 6-dimensional subspace
/// with unequal scales, within-speaker noise with a different anisotropic shape, an offset.
fn speakers(
    rng: &mut impl Rng,
    speakers: usize,
    per: usize,
    first: usize,
) -> (Vec<String>, Vec<String>, Array2<f32>) {
    let dim = 10;
    let mut x = Array2::zeros((speakers * per, dim));
    let (mut ids, mut labels) = (Vec::new(), Vec::new());
    for s in 0..speakers {
        let y: Vec<f64> = (0..6)
            .map(|k| (1.5 - 0.2 * k as f64) * normal(rng))
            .collect();
        for j in 0..per {
            let row = s * per + j;
            for d in 0..dim {
                let within = (0.4 + 0.15 * d as f64) * normal(rng);
                let between = if d < 6 { y[d] } else { 0.3 * y[d - 6] };
                x[[row, d]] = (3.0 + between + within) as f32;
            }
            ids.push(format!("spk{:03}/utt{j:02}", first + s));
            labels.push(format!("spk{:03}", first + s));
        }
    }
    (ids, labels, x)
}

fn manifest(path: &Path, ids: &[String], labels: &[String]) {
    UtteranceManifest {
        corpus_root: "/corpus".into(),
        utterances: ids
            .iter()
            .zip(labels)
            .map(|(id, spk)| Utterance {
                utt_id: id.clone(),
                path: format!("{id}.wav"),
                corpus: "synthetic".into(),
                speaker: Some(spk.clone()),
                session: None,
                num_samples: 16000,
                sample_rate: 16000,
                channels: 1,
                codec: "pcm_s16le".into(),
                channel: None,
                split: "train".into(),
                emotion: None,
                fold: None,
            })
            .collect(),
    }
    .write(path)
    .unwrap();
}

fn rows(x: &Array2<f32>) -> Vec<Vec<f64>> {
    x.rows()
        .into_iter()
        .map(|r| r.iter().map(|&v| f64::from(v)).collect())
        .collect()
}

fn matrix(v: &serde_json::Value) -> Array2<f64> {
    let rows: Vec<Vec<f64>> = serde_json::from_value(v.clone()).unwrap();
    let n = rows.len();
    Array2::from_shape_vec((n, rows[0].len()), rows.into_iter().flatten().collect()).unwrap()
}

fn scores_of(path: &Path) -> Vec<f64> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn plda_training_and_scoring_match_numpy() {
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut rng = stream(3, "plda-golden");
    let (train_ids, train_labels, train) = speakers(&mut rng, 60, 8, 0);
    let (eval_ids, _, eval) = speakers(&mut rng, 8, 5, 100);
    write_embeddings(&d.join("train.h5"), train_ids.clone(), train.clone());
    manifest(&d.join("train.parquet"), &train_ids, &train_labels);
    // Eval and cohort utterances in one file: the first 40 rows are scored, the rest
    // (30 training utterances) form the cohort.
    let cohort = train.slice(ndarray::s![..30, ..]).to_owned();
    let mut all_ids = eval_ids.clone();
    all_ids.extend(train_ids[..30].iter().cloned());
    write_embeddings(&d.join("eval.h5"), eval_ids.clone(), eval.clone());
    write_embeddings(
        &d.join("cohort.h5"),
        train_ids[..30].to_vec(),
        cohort.clone(),
    );
    let mut trials = Vec::new();
    let mut pairs = Vec::new();
    for a in 0..eval_ids.len() {
        for b in (a + 1..eval_ids.len()).step_by(3) {
            trials.push((eval_ids[a].clone(), eval_ids[b].clone(), a / 5 == b / 5));
            pairs.push([a, b]);
        }
    }
    write_trials(&d.join("trials.parquet"), &trials);

    for (case, lda_dim) in [("plain", None), ("lda", Some(7usize))] {
        let config = d.join(format!("{case}.toml"));
        let lda_line = lda_dim
            .map(|k| format!("lda_dim = {k}\n"))
            .unwrap_or_default();
        std::fs::write(&config, format!("y_dim = 5\niterations = 6\n{lda_line}")).unwrap();
        let model_path = d.join(format!("{case}.plda.json"));
        let s = |p: &Path| p.display().to_string();
        run_ok(&[
            "plda-train",
            "--embeddings",
            &s(&d.join("train.h5")),
            "--manifest",
            &s(&d.join("train.parquet")),
            "--out",
            &s(&model_path),
            "--config",
            &s(&config),
        ]);
        let out = d.join(format!("{case}-sv"));
        run_ok(&[
            "sv",
            "--embeddings",
            &s(&d.join("eval.h5")),
            "--trials",
            &s(&d.join("trials.parquet")),
            "--out-dir",
            &s(&out),
            "--backend",
            "plda",
            "--plda",
            &s(&model_path),
            "--cohort-embeddings",
            &s(&d.join("cohort.h5")),
            "--asnorm-top",
            "10",
        ]);

        let payload = serde_json::json!({
            "train": rows(&train), "labels": train_labels, "eval": rows(&eval),
            "cohort": rows(&cohort), "pairs": pairs, "y_dim": 5, "iterations": 6,
            "lda_dim": lda_dim, "top": 10,
        });
        let input = d.join(format!("{case}.json"));
        std::fs::write(&input, payload.to_string()).unwrap();
        let reference: serde_json::Value =
            serde_json::from_str(&run_python(PLDA_PY, &[&input]).unwrap()).unwrap();

        let model = PldaModel::read(&model_path).unwrap();
        if lda_dim.is_none() {
            // The LDA axes' signs are arbitrary, so covariances are compared without LDA.
            for (ours, theirs, what) in [
                (
                    model.plda.between(),
                    matrix(&reference["between"]),
                    "between",
                ),
                (
                    model.plda.within.clone(),
                    matrix(&reference["within"]),
                    "within",
                ),
            ] {
                let worst = (&ours - &theirs).iter().fold(0f64, |m, v| m.max(v.abs()));
                assert!(
                    worst < 1e-4,
                    "{case} {what}: max difference {worst}\n{ours}\n{theirs}"
                );
            }
        }
        // The AS-norm report keeps the plain PLDA scores' metrics; scores.txt has AS-norm.
        let report = read_json(&out.join("report.json"));
        assert_eq!(report["config"]["backend"], "plda");
        let ours = scores_of(&out.join("scores.txt"));
        let theirs: Vec<f64> = serde_json::from_value(reference["asnorm"].clone()).unwrap();
        let worst = ours
            .iter()
            .zip(&theirs)
            .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            worst < 1e-3,
            "{case}: AS-norm scores differ by up to {worst}"
        );

        let plain_out = d.join(format!("{case}-sv-plain"));
        run_ok(&[
            "sv",
            "--embeddings",
            &s(&d.join("eval.h5")),
            "--trials",
            &s(&d.join("trials.parquet")),
            "--out-dir",
            &s(&plain_out),
            "--backend",
            "plda",
            "--plda",
            &s(&model_path),
        ]);
        let ours = scores_of(&plain_out.join("scores.txt"));
        let theirs: Vec<f64> = serde_json::from_value(reference["scores"].clone()).unwrap();
        assert_eq!(ours.len(), theirs.len());
        let worst = ours
            .iter()
            .zip(&theirs)
            .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
        eprintln!(
            "{case}: {} trials, scores within {worst:e} of numpy",
            ours.len()
        );
        assert!(worst < 1e-4, "{case}: PLDA scores differ by up to {worst}");
        let eer = read_json(&plain_out.join("report.json"))["eer"]
            .as_f64()
            .unwrap();
        assert!(eer < 0.2, "{case}: PLDA EER {eer} on separable speakers");
    }
}

#[test]
fn plda_needs_a_model_and_refuses_a_wrong_dimension() {
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut rng = stream(4, "plda-errors");
    let (ids, labels, x) = speakers(&mut rng, 30, 6, 0);
    write_embeddings(&d.join("e.h5"), ids.clone(), x.clone());
    manifest(&d.join("m.parquet"), &ids, &labels);
    write_trials(
        &d.join("t.parquet"),
        &[
            (ids[0].clone(), ids[1].clone(), true),
            (ids[0].clone(), ids[9].clone(), false),
        ],
    );
    let s = |p: &Path| p.display().to_string();
    let out = common::run_cli(&[
        "sv",
        "--embeddings",
        &s(&d.join("e.h5")),
        "--trials",
        &s(&d.join("t.parquet")),
        "--out-dir",
        &s(&d.join("o")),
        "--backend",
        "plda",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a model file"));

    let small = x.slice(ndarray::s![.., ..4]).to_owned();
    write_embeddings(&d.join("small.h5"), ids.clone(), small);
    run_ok(&[
        "plda-train",
        "--embeddings",
        &s(&d.join("small.h5")),
        "--manifest",
        &s(&d.join("m.parquet")),
        "--out",
        &s(&d.join("small.json")),
    ]);
    let out = common::run_cli(&[
        "sv",
        "--embeddings",
        &s(&d.join("e.h5")),
        "--trials",
        &s(&d.join("t.parquet")),
        "--out-dir",
        &s(&d.join("o")),
        "--backend",
        "plda",
        "--plda",
        &s(&d.join("small.json")),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("PLDA model for 4-dimensional embeddings"),
        "{err}"
    );
}
