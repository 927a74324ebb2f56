//! Emotion recognition against references computed in this test run: micro-F1, macro-F1
//! and UAR by scikit-learn on the very predictions the CLI wrote, the logistic regression
//! against scikit-learn's, and the errors for empty classes and missing embeddings.

mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use common::{normal, read_json, run_cli, run_ok, write_embeddings};
use data_manifest::{Utterance, UtteranceManifest};
use downstream_eval::emotion::lbfgs::Lbfgs;
use downstream_eval::emotion::logistic::LogisticRegression;
use downstream_eval::emotion::metrics::ConfusionMatrix;
use ndarray::Array2;
use rand::Rng;
use stage_kit::reference::run_python;
use stage_kit::rng::stream;
use stage_kit::{metrics, run_folder};

const CLASSES: [&str; 4] = ["ang", "hap", "neu", "sad"];

fn utterance(
    id: &str,
    speaker: &str,
    emotion: Option<&str>,
    fold: Option<&str>,
    split: &str,
) -> Utterance {
    Utterance {
        utt_id: id.to_owned(),
        path: format!("{id}.wav"),
        corpus: "synthetic".into(),
        speaker: Some(speaker.to_owned()),
        session: None,
        num_samples: 16000,
        sample_rate: 16000,
        channels: 1,
        codec: "pcm_s16le".into(),
        split: split.to_owned(),
        emotion: emotion.map(str::to_owned),
        fold: fold.map(str::to_owned),
        channel: None,
    }
}

/// 8 speakers x 4 emotions x 10 utterances: emotion centre + speaker offset + noise, in 16
/// dimensions; folds are speaker pairs. Returns (manifest path, embeddings path).
fn synthetic_corpus(dir: &Path) -> (PathBuf, PathBuf) {
    let mut rng = stream(3, "emotion-test-corpus");
    let dim = 16;
    let centres: Vec<Vec<f64>> = (0..CLASSES.len())
        .map(|_| (0..dim).map(|_| normal(&mut rng)).collect())
        .collect();
    let mut utterances = Vec::new();
    let mut vectors = Vec::new();
    for s in 0..8 {
        let speaker = format!("spk{s}");
        let offset: Vec<f64> = (0..dim).map(|_| normal(&mut rng)).collect();
        for (c, class) in CLASSES.iter().enumerate() {
            for u in 0..10 {
                let id = format!("{speaker}/{class}/{u}");
                let fold = (s / 2 + 1).to_string();
                utterances.push(utterance(&id, &speaker, Some(class), Some(&fold), "train"));
                vectors
                    .extend((0..dim).map(|d| {
                        (0.9 * centres[c][d] + offset[d] + 1.1 * normal(&mut rng)) as f32
                    }));
            }
        }
    }
    // An unlabelled utterance, which is left out.
    utterances.push(utterance("spk0/none/0", "spk0", None, Some("1"), "train"));
    vectors.extend(std::iter::repeat_n(0.0f32, dim));
    let ids = utterances.iter().map(|u| u.utt_id.clone()).collect();
    let manifest = dir.join("utterances.parquet");
    UtteranceManifest {
        corpus_root: dir.to_path_buf(),
        utterances,
    }
    .write(&manifest)
    .unwrap();
    let embeddings = dir.join("embeddings.h5");
    write_embeddings(
        &embeddings,
        ids,
        Array2::from_shape_vec((8 * 40 + 1, dim), vectors).unwrap(),
    );
    (manifest, embeddings)
}

/// Runs `downstream-eval emotion` on the synthetic corpus with extra flags.
fn run_emotion(manifest: &Path, embeddings: &Path, out: &Path, extra: &[&str]) {
    let paths = [embeddings, manifest, out].map(|p| p.display().to_string());
    let mut args = vec![
        "emotion",
        "--embeddings",
        &paths[0],
        "--manifest",
        &paths[1],
        "--out-dir",
        &paths[2],
    ];
    args.extend(extra);
    run_ok(&args);
}

/// scikit-learn's metrics on a predictions CSV, per fold and pooled.
const METRICS_PY: &str = r#"
import csv, json, sys
from collections import defaultdict
from sklearn.metrics import f1_score, balanced_accuracy_score

rows = list(csv.DictReader(open(sys.argv[1])))
by_fold = defaultdict(lambda: ([], []))
for r in rows:
    by_fold[r["fold"]][0].append(r["emotion"])
    by_fold[r["fold"]][1].append(r["predicted"])
def scores(t, p):
    return {"micro_f1": f1_score(t, p, average="micro"), "macro_f1": f1_score(t, p, average="macro", zero_division=0),
            "uar": balanced_accuracy_score(t, p)}
out = {"pooled": scores([r["emotion"] for r in rows], [r["predicted"] for r in rows])}
out["folds"] = {f: scores(t, p) for f, (t, p) in by_fold.items()}
print(json.dumps(out))
"#;

fn assert_close(ours: &serde_json::Value, theirs: &serde_json::Value, what: &str) {
    let (a, b) = (ours.as_f64().unwrap(), theirs.as_f64().unwrap());
    assert!((a - b).abs() < 1e-6, "{what}: ours {a}, scikit-learn {b}");
}

#[test]
fn cli_metrics_match_scikit_learn_on_the_written_predictions() {
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let (manifest, embeddings) = synthetic_corpus(dir.path());
    let out = dir.path().join("out");
    run_emotion(&manifest, &embeddings, &out, &["--seed", "4"]);
    let report = read_json(&out.join(run_folder::REPORT));
    let reference: serde_json::Value =
        serde_json::from_str(&run_python(METRICS_PY, &[out.join("predictions.csv")]).unwrap())
            .unwrap();
    // The report's keys are the ones the runner reads (stage_kit::metrics).
    for key in [metrics::MICRO_F1, metrics::MACRO_F1, metrics::UAR] {
        assert_close(&report[key], &reference["pooled"][key], key);
        for fold in report["folds"].as_array().unwrap() {
            let name = fold["fold"].as_str().unwrap();
            assert_close(
                &fold[key],
                &reference["folds"][name][key],
                &format!("fold {name} {key}"),
            );
        }
    }
    assert_eq!(report["num_evaluated"], 320);
    assert_eq!(report["num_unlabelled"], 1);
    assert_eq!(report["folds"].as_array().unwrap().len(), 4);
    let micro = report["micro_f1"].as_f64().unwrap();
    assert!(
        micro > 0.6,
        "synthetic emotions are separable: micro-F1 {micro}"
    );
    let confusion_total: u64 = report["confusion"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()))
        .sum();
    assert_eq!(confusion_total, 320);
    let png = std::fs::read(out.join("confusion.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("| true \\ predicted | ang | hap | neu | sad |"),
        "{md}"
    );
}

#[test]
fn official_split_trains_on_train_chooses_on_development_and_tests_on_test() {
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let (manifest, embeddings) = synthetic_corpus(dir.path());
    // Speakers 0-4 train, 5 development, 6-7 test; the fold column is ignored.
    let mut m = UtteranceManifest::read(&manifest).unwrap();
    for u in &mut m.utterances {
        let speaker: usize = u.speaker.as_deref().unwrap()[3..].parse().unwrap();
        u.split = match speaker {
            0..=4 => "train",
            5 => "development",
            _ => "test",
        }
        .to_owned();
    }
    m.write(&manifest).unwrap();
    let out = dir.path().join("out");
    run_emotion(&manifest, &embeddings, &out, &["--folds", "split"]);
    let report = read_json(&out.join("report.json"));
    let folds = report["folds"].as_array().unwrap();
    assert_eq!(folds.len(), 1);
    assert_eq!(folds[0]["fold"], "test");
    assert_eq!(folds[0]["num_train"], 5 * 40);
    assert_eq!(folds[0]["num_test"], 2 * 40);
    assert_eq!(
        folds[0]["selection"].as_array().unwrap().len(),
        5,
        "one score per C"
    );
    assert_eq!(report["num_evaluated"], 80);
    assert_eq!(report["micro_f1"], folds[0]["micro_f1"]);
}

#[test]
fn mlp_classifier_runs_end_to_end() {
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let (manifest, embeddings) = synthetic_corpus(dir.path());
    let out = dir.path().join("out");
    let config = dir.path().join("emotion.toml");
    std::fs::write(
        &config,
        "inner_folds = 2\n[mlp]\nepochs = 30\nhidden = 32\nweight_decay_grid = [0.01]\n",
    )
    .unwrap();
    let config = config.display().to_string();
    run_emotion(
        &manifest,
        &embeddings,
        &out,
        &["--classifier", "mlp", "--config", &config],
    );
    let report = read_json(&out.join("report.json"));
    assert_eq!(report["config"]["classifier"], "mlp");
    assert_eq!(report["folds"][0]["hyperparameter"], "weight_decay");
    let micro = report["micro_f1"].as_f64().unwrap();
    assert!(micro > 0.5, "micro-F1 {micro}");
}

/// Fits scikit-learn's LogisticRegression on the same data and prints its probabilities.
const LOGISTIC_PY: &str = r#"
import sys
import numpy as np
from sklearn.linear_model import LogisticRegression

data = np.loadtxt(sys.argv[1], ndmin=2)
c = float(sys.argv[2])
y, x = data[:, 0].astype(int), data[:, 1:]
model = LogisticRegression(C=c, class_weight="balanced", tol=1e-12, max_iter=100000).fit(x, y)
np.savetxt(sys.stdout, model.predict_proba(x), fmt="%.12f")
"#;

#[test]
fn logistic_regression_matches_scikit_learn() {
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = stream(8, "logistic-test");
    let (n, dim, k) = (150, 5, 3);
    let mut x = Array2::<f64>::zeros((n, dim));
    let mut y = Vec::new();
    let mut text = String::new();
    for i in 0..n {
        // Unbalanced classes: 0 twice as frequent as the others.
        let c = [0, 0, 1, 2][rng.gen_range(0..4)];
        y.push(c);
        write!(text, "{c}").unwrap();
        for d in 0..dim {
            x[[i, d]] = normal(&mut rng) + if d == c { 1.5 } else { 0.0 };
            write!(text, " {:.17e}", x[[i, d]]).unwrap();
        }
        text.push('\n');
    }
    let path = dir.path().join("data.txt");
    std::fs::write(&path, text).unwrap();
    let counts: Vec<usize> = (0..k)
        .map(|c| y.iter().filter(|&&v| v == c).count())
        .collect();
    let weights: Vec<f64> = y
        .iter()
        .map(|&c| n as f64 / (k * counts[c]) as f64)
        .collect();
    let lbfgs = Lbfgs {
        memory: 10,
        max_iterations: 5000,
        gradient_tolerance: 1e-10,
    };
    for c in [0.05, 1.0] {
        let ours = LogisticRegression::fit(x.view(), &y, &weights, k, c, &lbfgs, None);
        assert!(ours.converged);
        let ours = ours.predict_proba(x.view());
        let theirs = run_python(LOGISTIC_PY, &[path.display().to_string(), c.to_string()]).unwrap();
        let mut largest = 0f64;
        for (i, line) in theirs.lines().enumerate() {
            for (j, v) in line.split_whitespace().enumerate() {
                largest = largest.max((ours[[i, j]] - v.parse::<f64>().unwrap()).abs());
            }
        }
        eprintln!("C = {c}: largest probability difference to scikit-learn {largest:.2e}");
        assert!(largest < 1e-6, "C = {c}: {largest}");
    }
}

/// scikit-learn's metrics on `truth predicted` lines over a fixed label set.
const CONFUSION_PY: &str = r#"
import json, sys
import numpy as np
from sklearn.metrics import f1_score, balanced_accuracy_score
d = np.loadtxt(sys.argv[1], dtype=int, ndmin=2)
t, p = d[:, 0], d[:, 1]
print(json.dumps({"micro_f1": f1_score(t, p, average="micro"), "macro_f1": f1_score(t, p, average="macro", zero_division=0),
                  "uar": balanced_accuracy_score(t, p)}))
"#;

#[test]
fn confusion_metrics_match_scikit_learn_with_absent_classes() {
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = stream(9, "confusion-test");
    // Class 5 never occurs; class 4 is only ever predicted.
    let truth: Vec<usize> = (0..400).map(|_| rng.gen_range(0..4)).collect();
    let predicted: Vec<usize> = truth
        .iter()
        .map(|&t| {
            if rng.gen_bool(0.6) {
                t
            } else {
                rng.gen_range(0..5)
            }
        })
        .collect();
    let path = dir.path().join("pairs.txt");
    let text: String = truth
        .iter()
        .zip(&predicted)
        .map(|(t, p)| format!("{t} {p}\n"))
        .collect();
    std::fs::write(&path, text).unwrap();
    let reference: serde_json::Value =
        serde_json::from_str(&run_python(CONFUSION_PY, &[&path]).unwrap()).unwrap();
    let ours = serde_json::to_value(ConfusionMatrix::new(6, &truth, &predicted).scores()).unwrap();
    for key in ["micro_f1", "macro_f1", "uar"] {
        assert_close(&ours[key], &reference[key], key);
    }
}

#[test]
fn empty_classes_and_missing_embeddings_are_named() {
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ids: Vec<String> = (0..7).map(|i| format!("u{i}")).collect();
    let mut rng = stream(1, "x");
    write_embeddings(
        &d.join("emb.h5"),
        ids.clone(),
        Array2::from_shape_fn((7, 3), |_| normal(&mut rng) as f32),
    );
    // "sad" occurs only in fold 3, so fold 1's selection split that holds out fold 3
    // trains without it.
    let rows = [
        ("u0", "ang", "1"),
        ("u1", "hap", "1"),
        ("u2", "ang", "2"),
        ("u3", "hap", "2"),
        ("u4", "sad", "3"),
        ("u5", "hap", "3"),
        ("u6", "ang", "3"),
    ];
    let utterances = rows
        .iter()
        .map(|(id, e, f)| utterance(id, id, Some(e), Some(f), "train"))
        .collect();
    let manifest = d.join("m.parquet");
    UtteranceManifest {
        corpus_root: d.to_path_buf(),
        utterances,
    }
    .write(&manifest)
    .unwrap();
    let args = |emb: &str| {
        vec![
            "emotion".to_owned(),
            "--embeddings".into(),
            d.join(emb).display().to_string(),
            "--manifest".into(),
            manifest.display().to_string(),
            "--out-dir".into(),
            d.join("out").display().to_string(),
        ]
    };
    let stderr = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run_cli(&args);
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = stderr(args("emb.h5"));
    assert!(
        err.contains(
            "fold 1, selection split holding out 3: training part: class \"sad\" has no training example"
        ),
        "{err}"
    );

    write_embeddings(&d.join("few.h5"), ids[..4].to_vec(), Array2::zeros((4, 3)));
    let err = stderr(args("few.h5"));
    assert!(err.contains("no embedding for 3 utterance(s) of"), "{err}");
    assert!(err.contains("u4, u5, u6"), "{err}");
}
