//! Speaker verification against references computed in this test run: EER (ROCCH and
//! interpolated) and minDCF by numpy / scikit-learn on the same scores, and the scores
//! themselves (mean subtraction, length norm, AS-norm) by numpy from the same files.

mod common;

use std::fmt::Write as _;
use std::path::Path;

use common::{normal, read_json, run_cli, run_ok, write_embeddings, write_trials};
use downstream_eval::sv::detection::Roc;
use ndarray::Array2;
use rand::Rng;
use stage_kit::reference::run_python;
use stage_kit::rng::stream;
use stage_kit::{metrics, run_folder};

/// Reference metrics of a `label score` file. The ROCCH EER is the largest minimum Bayes
/// error over priors, max_w min_k (w P_miss(k) + (1 - w) P_fa(k)), found by golden-section
/// search (the function is concave in w); the interpolated EER is wespeaker's
/// `compute_eer` on wespeaker's per-trial error rates when the scores have no ties, and on
/// scikit-learn's ROC (one point per distinct threshold) otherwise.
const METRICS_PY: &str = r#"
import json, sys
import numpy as np
from sklearn.metrics import roc_curve

data = np.loadtxt(sys.argv[1], ndmin=2)
labels, scores = data[:, 0].astype(int), data[:, 1]
fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
fnr = 1.0 - tpr

def rocch_eer(p_fa, p_miss):
    h = lambda w: np.min(w * p_miss + (1.0 - w) * p_fa)
    lo, hi, g = 0.0, 1.0, (np.sqrt(5.0) - 1.0) / 2.0
    for _ in range(200):
        a, b = hi - g * (hi - lo), lo + g * (hi - lo)
        if h(a) < h(b):
            lo = a
        else:
            hi = b
    return h((lo + hi) / 2.0)

def crossing(fnr, fpr):
    d = fnr - fpr
    x1 = np.flatnonzero(d >= 0)[0]
    x2 = np.flatnonzero(d < 0)[-1]
    a = (fnr[x1] - fpr[x1]) / (fpr[x2] - fpr[x1] - (fnr[x2] - fnr[x1]))
    return fnr[x1] + a * (fnr[x2] - fnr[x1])

if len(np.unique(scores)) == len(scores):
    order = np.argsort(scores)
    l = labels[order]
    w_fnr = np.cumsum(l == 1) / np.sum(l == 1)
    w_fpr = 1.0 - np.cumsum(l == 0) / np.sum(l == 0)
    interpolated = crossing(w_fnr, w_fpr)
else:
    interpolated = crossing(fnr[::-1], fpr[::-1])

out = {"eer": rocch_eer(fpr, fnr), "eer_interpolated": interpolated, "ties": bool(len(np.unique(scores)) < len(scores))}
for p in (0.01, 0.05):
    out["min_dcf_%g" % p] = float(np.min((p * fnr + (1 - p) * fpr) / min(p, 1 - p)))
print(json.dumps(out))
"#;

fn reference_metrics(labels_scores: &Path) -> serde_json::Value {
    serde_json::from_str(&run_python(METRICS_PY, &[labels_scores]).unwrap()).unwrap()
}

fn assert_close(ours: f64, reference: &serde_json::Value, what: &str) {
    let reference = reference.as_f64().unwrap();
    assert!(
        (ours - reference).abs() < 1e-6,
        "{what}: ours {ours}, reference {reference}"
    );
}

#[test]
fn eer_and_min_dcf_match_numpy_and_scikit_learn() {
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = stream(11, "sv-metrics-test");
    for (case, quantum) in [("continuous", None), ("tied", Some(0.25f32))] {
        let mut scores = Vec::new();
        let mut targets = Vec::new();
        for i in 0..3000 {
            let target = i % 3 == 0;
            let mut s = (normal(&mut rng) + if target { 2.0 } else { 0.0 }) as f32;
            if let Some(q) = quantum {
                s = (s / q).round() * q;
            }
            scores.push(s);
            targets.push(target);
        }
        let path = dir.path().join(format!("{case}.txt"));
        let mut text = String::new();
        for (s, t) in scores.iter().zip(&targets) {
            writeln!(text, "{} {s}", u8::from(*t)).unwrap();
        }
        std::fs::write(&path, text).unwrap();

        let reference = reference_metrics(&path);
        assert_eq!(
            reference["ties"].as_bool().unwrap(),
            quantum.is_some(),
            "{case}"
        );
        let roc = Roc::new(&scores, &targets).unwrap();
        eprintln!(
            "{case}: EER {} / {} (ours) vs {} / {} (reference)",
            roc.eer_rocch(),
            roc.eer_interpolated(),
            reference["eer"],
            reference["eer_interpolated"]
        );
        assert_close(roc.eer_rocch(), &reference["eer"], case);
        assert_close(roc.eer_interpolated(), &reference["eer_interpolated"], case);
        for p in [0.01, 0.05] {
            let ours = roc.min_dcf(p, 1.0, 1.0).min_dcf;
            assert_close(ours, &reference[format!("min_dcf_{p}")], case);
        }
    }
}

/// Scores of the files the CLI read, computed by numpy: length norm, centring on the mean of
/// the length-normalised training set, cosine, and AS-norm over the top N cohort scores.
const SCORES_PY: &str = r#"
import sys
import h5py, numpy as np, pyarrow.parquet as pq

def load(path):
    with h5py.File(path, "r") as f:
        ids = [s.decode() if isinstance(s, bytes) else s for s in f["utt_id"][()]]
        return dict(zip(ids, f["embeddings"][()].astype(np.float64)))

def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)

emb, train, cohort = load(sys.argv[1]), load(sys.argv[2]), load(sys.argv[3])
trials = pq.read_table(sys.argv[4]).to_pydict()
top = int(sys.argv[5])
mean = unit(np.stack(list(train.values()))).mean(axis=0)
prep = lambda x: unit(unit(x) - mean)
coh = prep(np.stack(list(cohort.values())))

def stats(x):
    s = np.sort(coh @ x)[::-1][:top]
    return s.mean(), s.std()

for e, t in zip(trials["enroll"], trials["test"]):
    a, b = prep(emb[e]), prep(emb[t])
    s = float(a @ b)
    (me, se), (mt, st) = stats(a), stats(b)
    print(e, t, s, 0.5 * ((s - me) / se + (s - mt) / st))
"#;

/// Synthetic speakers: a shared offset (which centring removes), a speaker direction and
/// per-utterance noise.
fn speaker_embeddings(
    rng: &mut impl Rng,
    prefix: &str,
    speakers: usize,
    per_speaker: usize,
    offset: &[f64],
) -> (Vec<String>, Array2<f32>) {
    let dim = offset.len();
    let mut ids = Vec::new();
    let mut vectors = Array2::zeros((speakers * per_speaker, dim));
    for s in 0..speakers {
        let centre: Vec<f64> = (0..dim).map(|_| normal(rng)).collect();
        for u in 0..per_speaker {
            let row = s * per_speaker + u;
            ids.push(format!("{prefix}{s:03}/sess/{u:05}"));
            for d in 0..dim {
                vectors[[row, d]] = (offset[d] + centre[d] + 0.9 * normal(rng)) as f32;
            }
        }
    }
    (ids, vectors)
}

#[test]
fn cli_scores_match_numpy_with_centring_length_norm_and_asnorm() {
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut rng = stream(5, "sv-cli-test");
    let offset: Vec<f64> = (0..24).map(|_| 2.0 * normal(&mut rng)).collect();
    let (ids, vectors) = speaker_embeddings(&mut rng, "id1", 20, 6, &offset);
    let (train_ids, train) = speaker_embeddings(&mut rng, "id0", 30, 4, &offset);
    let (cohort_ids, cohort) = speaker_embeddings(&mut rng, "co", 40, 1, &offset);
    write_embeddings(&d.join("emb.h5"), ids.clone(), vectors);
    write_embeddings(&d.join("train.h5"), train_ids, train);
    write_embeddings(&d.join("cohort.h5"), cohort_ids, cohort);
    let mut trials = Vec::new();
    for (i, a) in ids.iter().enumerate() {
        for b in &ids[i + 1..] {
            let target = a[..6] == b[..6];
            if target || rng.gen_bool(0.1) {
                trials.push((a.clone(), b.clone(), target));
            }
        }
    }
    write_trials(&d.join("trials.parquet"), &trials);

    let s = |p: &str| d.join(p).display().to_string();
    let out = d.join("out");
    run_ok(&[
        "sv",
        "--embeddings",
        &s("emb.h5"),
        "--trials",
        &s("trials.parquet"),
        "--out-dir",
        &out.display().to_string(),
        "--mean-embeddings",
        &s("train.h5"),
        "--length-norm",
        "--cohort-embeddings",
        &s("cohort.h5"),
        "--asnorm-top",
        "10",
    ]);

    let reference = run_python(
        SCORES_PY,
        &[
            s("emb.h5"),
            s("train.h5"),
            s("cohort.h5"),
            s("trials.parquet"),
            "10".into(),
        ],
    )
    .unwrap();
    let ours = std::fs::read_to_string(out.join("scores.txt")).unwrap();
    assert_eq!(ours.lines().count(), trials.len());
    let mut labelled = String::new();
    for ((line, reference), trial) in ours.lines().zip(reference.lines()).zip(&trials) {
        let ours: Vec<&str> = line.split(' ').collect();
        let theirs: Vec<&str> = reference.split(' ').collect();
        assert_eq!(ours[..2], [trial.0.as_str(), trial.1.as_str()]);
        assert_eq!(ours[..2], theirs[..2]);
        let (a, b): (f64, f64) = (ours[2].parse().unwrap(), theirs[3].parse().unwrap());
        assert!((a - b).abs() < 1e-4, "{line} vs {reference}");
        writeln!(labelled, "{} {}", u8::from(trial.2), ours[2]).unwrap();
    }

    // Headline metrics of the report against scikit-learn / numpy on the written scores.
    let labelled_path = d.join("labelled.txt");
    std::fs::write(&labelled_path, labelled).unwrap();
    let reference = reference_metrics(&labelled_path);
    let report = read_json(&out.join(run_folder::REPORT));
    // The report's keys are the ones the runner reads (stage_kit::metrics).
    let keys = [
        metrics::EER.to_owned(),
        metrics::EER_INTERPOLATED.to_owned(),
        metrics::min_dcf(0.01),
        metrics::min_dcf(0.05),
    ];
    for key in &keys {
        let key = key.as_str();
        assert_close(report[key].as_f64().unwrap(), &reference[key], key);
    }
    assert_eq!(report["num_trials"], trials.len());
    assert_eq!(report["asnorm"]["top_n"], 10);
    assert!(report["without_asnorm"]["eer"].as_f64().unwrap() < 0.5);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("| metric | cosine | AS-norm |"), "{md}");
    let png = std::fs::read(out.join("det.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let svg = std::fs::read_to_string(out.join("det.svg")).unwrap();
    assert!(svg.contains("False alarm probability (%)"));
}

#[test]
fn bad_inputs_fail_with_the_reason() {
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = |p: &str| d.join(p).display().to_string();
    let ids: Vec<String> = ["a/1", "a/2", "b/1"].map(String::from).into();
    write_embeddings(&d.join("emb.h5"), ids, Array2::from_elem((3, 4), 1.0));
    write_embeddings(&d.join("wide.h5"), vec!["x".into()], Array2::ones((1, 5)));
    let mut bad = Array2::from_elem((1, 4), 1.0);
    bad[[0, 2]] = f32::NAN;
    write_embeddings(&d.join("nan.h5"), vec!["a/9".into()], bad);
    let trial = |e: &str, t: &str, target| (e.to_owned(), t.to_owned(), target);
    write_trials(
        &d.join("missing.parquet"),
        &[
            trial("a/1", "a/2", true),
            trial("a/1", "c/7", false),
            trial("d/1", "c/7", false),
        ],
    );
    write_trials(
        &d.join("ok.parquet"),
        &[trial("a/1", "a/2", true), trial("a/1", "b/1", false)],
    );

    let failure = |args: &[&str]| {
        let out = run_cli(args);
        assert!(!out.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let out_dir = s("out");
    let base = ["sv", "--out-dir", &out_dir];
    let err = failure(
        &[
            &base[..],
            &[
                "--embeddings",
                &s("emb.h5"),
                "--trials",
                &s("missing.parquet"),
            ],
        ]
        .concat(),
    );
    assert!(err.contains("no embedding for 2 utterance(s) of"), "{err}");
    assert!(err.contains("c/7, d/1"), "{err}");

    let ok = ["--embeddings", &s("emb.h5"), "--trials", &s("ok.parquet")];
    let err = failure(&[&base[..], &ok, &["--mean-embeddings", &s("wide.h5")]].concat());
    assert!(err.contains("embeddings of dimension 5, but"), "{err}");
    let err = failure(&[&base[..], &ok, &["--cohort-embeddings", &s("nan.h5")]].concat());
    assert!(
        err.contains("1 embedding(s) contain NaN or infinity: a/9"),
        "{err}"
    );
    assert!(!Path::new(&out_dir).join("report.json").exists());
}

/// Prior-weighted logistic regression by scikit-learn on `label score` lines: weights
/// prior / N_t and (1 - prior) / N_n, no penalty to speak of; the LLR offset is the intercept
/// less logit(prior).
const CALIBRATION_PY: &str = r#"
import json, sys
import numpy as np
from sklearn.linear_model import LogisticRegression

data = np.loadtxt(sys.argv[1], ndmin=2)
labels, scores = data[:, 0].astype(int), data[:, 1:2]
prior = float(sys.argv[2])
weights = np.where(labels == 1, prior / labels.sum(), (1 - prior) / (labels == 0).sum())
model = LogisticRegression(C=1e12, tol=1e-12, max_iter=10000)
model.fit(scores, labels, sample_weight=weights * len(labels))
offset = model.intercept_[0] - np.log(prior / (1 - prior))
print(json.dumps({"slope": float(model.coef_[0, 0]), "offset": float(offset)}))
"#;

#[test]
fn a_score_file_gives_the_same_report_and_the_calibration_matches_scikit_learn() {
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut rng = stream(3, "sv-score-file-test");
    let offset: Vec<f64> = (0..16).map(|_| normal(&mut rng)).collect();
    let (ids, vectors) = speaker_embeddings(&mut rng, "id1", 15, 5, &offset);
    write_embeddings(&d.join("emb.h5"), ids.clone(), vectors);
    let mut trials = Vec::new();
    for (i, a) in ids.iter().enumerate() {
        for b in &ids[i + 1..] {
            trials.push((a.clone(), b.clone(), a[..6] == b[..6]));
        }
    }
    write_trials(&d.join("trials.parquet"), &trials);
    let s = |p: &str| d.join(p).display().to_string();
    let sv = |input: &str, file: &str, out: &str| {
        run_ok(&[
            "sv",
            input,
            &s(file),
            "--trials",
            &s("trials.parquet"),
            "--out-dir",
            &s(out),
        ])
    };
    sv("--embeddings", "emb.h5", "from-embeddings");
    // Scores from "another system": our scores with audio extensions on the names, shuffled.
    let text = std::fs::read_to_string(d.join("from-embeddings/scores.txt")).unwrap();
    let mut lines: Vec<String> = text
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            format!("{}.wav {}.wav {}", f[0], f[1], f[2])
        })
        .collect();
    lines.reverse();
    std::fs::write(d.join("external.txt"), lines.join("\n")).unwrap();
    sv("--scores", "external.txt", "from-scores");
    let a = read_json(&d.join("from-embeddings/report.json"));
    let b = read_json(&d.join("from-scores/report.json"));
    for key in [
        "eer",
        "eer_interpolated",
        "min_dcf_0.01",
        "min_dcf_0.05",
        "num_trials",
    ] {
        assert_eq!(a[key], b[key], "{key}");
    }
    assert!(b["scoring"].as_str().unwrap().contains("external.txt"));

    let calibration = read_json(&d.join("from-embeddings/calibration.json"));
    assert_eq!(calibration["evaluation_set"], "trials.parquet");
    assert_eq!(calibration["eer"], a["eer"]);
    let mut labelled = String::new();
    for (line, trial) in text.lines().zip(&trials) {
        writeln!(
            labelled,
            "{} {}",
            u8::from(trial.2),
            line.split(' ').nth(2).unwrap()
        )
        .unwrap();
    }
    std::fs::write(d.join("labelled.txt"), labelled).unwrap();
    let reference: serde_json::Value = serde_json::from_str(
        &run_python(CALIBRATION_PY, &[s("labelled.txt"), "0.5".into()]).unwrap(),
    )
    .unwrap();
    for key in ["slope", "offset"] {
        let (ours, theirs) = (
            calibration["llr"][key].as_f64().unwrap(),
            reference[key].as_f64().unwrap(),
        );
        assert!(
            (ours - theirs).abs() < 1e-3 * theirs.abs().max(1.0),
            "{key}: ours {ours}, scikit-learn {theirs}"
        );
    }
    // Accepting above the EER threshold misses about as many targets as it admits impostors.
    let threshold = calibration["eer_threshold"].as_f64().unwrap();
    let scores: Vec<(f64, bool)> = text
        .lines()
        .zip(&trials)
        .map(|(l, t)| (l.split(' ').nth(2).unwrap().parse().unwrap(), t.2))
        .collect();
    let rate = |target: bool, accepted: bool| {
        let of: Vec<_> = scores.iter().filter(|s| s.1 == target).collect();
        of.iter().filter(|s| (s.0 > threshold) == accepted).count() as f64 / of.len() as f64
    };
    let (miss, fa) = (rate(true, false), rate(false, true));
    assert!((miss - fa).abs() < 0.05, "miss {miss}, false alarm {fa}");
}
