//! `cargo bench -p downstream-eval --bench score`: cosine scoring of a VoxCeleb1-H-sized
//! trial list (550,894 trials) over VoxCeleb1-sized synthetic embeddings (1251 speakers x
//! 120 utterances, 256-dim), beside a vectorised numpy reference run on the same files in
//! the same process run. Also times metrics, AS-norm statistics and the whole `sv` stage.

use std::time::Instant;

use data_manifest::{Trial, TrialList};
use downstream_eval::inputs::EmbeddingFile;
use downstream_eval::sv::detection::Roc;
use downstream_eval::sv::preprocess::Preprocess;
use downstream_eval::sv::scoring::{IndexedTrials, cosine_scores};
use downstream_eval::sv::{self, SvConfig, SvInputs, asnorm};
use feature_extract::Embeddings;
use ndarray::Array2;
use rand::Rng;
use rayon::prelude::*;
use stage_kit::reference::run_python;
use stage_kit::rng::stream;

const SPEAKERS: usize = 1251;
const PER_SPEAKER: usize = 120;
const DIM: usize = 256;
const TRIALS: usize = 550_894;
const COHORT: usize = 5994;
const TOP_N: usize = 300;
const REPEATS: usize = 3;

/// The numpy reference: the same steps (normalise once, gather, row-wise dot in chunks),
/// then sklearn's ROC for the metrics and numpy for the AS-norm statistics. Prints JSON.
const REFERENCE_PY: &str = r#"
import json, sys, time
import h5py, numpy as np, pyarrow.parquet as pq
from sklearn.metrics import roc_curve

emb_path, trials_path, cohort_path, scores_path, repeats, top = sys.argv[1:7]
repeats, top = int(repeats), int(top)
t = time.perf_counter()
with h5py.File(emb_path, "r") as f:
    ids = [s.decode() for s in f["utt_id"][()]]
    x = f["embeddings"][()]
with h5py.File(cohort_path, "r") as f:
    cohort = f["embeddings"][()]
trials = pq.read_table(trials_path).to_pydict()
load = time.perf_counter() - t

def score():
    index = {u: i for i, u in enumerate(ids)}
    e = np.fromiter((index[u] for u in trials["enroll"]), dtype=np.int64)
    t_ = np.fromiter((index[u] for u in trials["test"]), dtype=np.int64)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    out = np.empty(len(e), dtype=np.float32)
    for s in range(0, len(e), 100_000):
        out[s:s + 100_000] = np.einsum("ij,ij->i", unit[e[s:s + 100_000]], unit[t_[s:s + 100_000]])
    return out

best = float("inf")
for _ in range(repeats):
    t = time.perf_counter()
    scores = score()
    best = min(best, time.perf_counter() - t)

labels = np.asarray(trials["target"], dtype=int)
t = time.perf_counter()
fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
fnr = 1 - tpr
fnr_, fpr_ = fnr[::-1], fpr[::-1]
d = fnr_ - fpr_
x1 = np.flatnonzero(d >= 0)[0]
x2 = x1 - 1
eer = fnr_[x1] + d[x1] / (d[x1] - d[x2]) * (fnr_[x2] - fnr_[x1])
dcf = [np.min((p * fnr + (1 - p) * fpr) / min(p, 1 - p)) for p in (0.01, 0.05)]
metrics = time.perf_counter() - t

t = time.perf_counter()
unit = x / np.linalg.norm(x, axis=1, keepdims=True)
coh = cohort / np.linalg.norm(cohort, axis=1, keepdims=True)
means, stds = [], []
for s in range(0, len(unit), 4096):
    block = unit[s:s + 4096] @ coh.T
    topk = -np.partition(-block, top - 1, axis=1)[:, :top]
    means.append(topk.mean(axis=1)); stds.append(topk.std(axis=1))
asnorm = time.perf_counter() - t

ours = np.loadtxt(scores_path, usecols=2, dtype=np.float64)
print(json.dumps({
    "load_s": load, "score_s": best, "metrics_s": metrics, "asnorm_stats_s": asnorm,
    "max_abs_diff": float(np.max(np.abs(ours - scores))), "min_dcf_0.01": float(dcf[0]),
}))
"#;

fn normal(rng: &mut impl Rng) -> f32 {
    let u: f64 = rng.gen_range(f64::EPSILON..1.0);
    let v: f64 = rng.r#gen();
    ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
}

/// Speaker centres plus noise, one random stream per speaker.
fn synthetic(prefix: &str, speakers: usize, per_speaker: usize) -> Embeddings {
    let rows: Vec<(String, Vec<f32>)> = (0..speakers)
        .into_par_iter()
        .flat_map_iter(|s| {
            let mut rng = stream(7, &format!("bench {prefix} {s}"));
            let centre: Vec<f32> = (0..DIM).map(|_| normal(&mut rng)).collect();
            (0..per_speaker)
                .map(|u| {
                    let v = centre.iter().map(|c| c + 2.0 * normal(&mut rng)).collect();
                    (format!("{prefix}{s:05}/video/{u:05}"), v)
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let mut vectors = Array2::zeros((rows.len(), DIM));
    for (i, (_, v)) in rows.iter().enumerate() {
        vectors
            .row_mut(i)
            .assign(&ndarray::ArrayView1::from(v.as_slice()));
    }
    Embeddings {
        utt_ids: rows.into_iter().map(|(id, _)| id).collect(),
        vectors,
        description: r#"{"producer":"score bench"}"#.into(),
    }
}

/// Half target trials (same speaker, different utterances), half non-target.
fn trial_list(e: &Embeddings) -> TrialList {
    let mut rng = stream(7, "bench trials");
    let trials = (0..TRIALS)
        .map(|i| {
            let s = rng.gen_range(0..SPEAKERS);
            let a = rng.gen_range(0..PER_SPEAKER);
            let target = i % 2 == 0;
            let (t_spk, t_utt) = if target {
                (s, (a + rng.gen_range(1..PER_SPEAKER)) % PER_SPEAKER)
            } else {
                (
                    (s + rng.gen_range(1..SPEAKERS)) % SPEAKERS,
                    rng.gen_range(0..PER_SPEAKER),
                )
            };
            Trial {
                enroll: e.utt_ids[s * PER_SPEAKER + a].clone(),
                test: e.utt_ids[t_spk * PER_SPEAKER + t_utt].clone(),
                target,
            }
        })
        .collect();
    TrialList { trials }
}

fn best_of<T>(repeats: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut value = None;
    for _ in 0..repeats {
        let t = Instant::now();
        value = Some(f());
        best = best.min(t.elapsed().as_secs_f64());
    }
    (best, value.expect("at least one repeat"))
}

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = |name: &str| dir.path().join(name);
    let t = Instant::now();
    let embeddings = synthetic("id1", SPEAKERS, PER_SPEAKER);
    let cohort = synthetic("id0", COHORT, 1);
    let trials = trial_list(&embeddings);
    embeddings.write(&path("embeddings.h5"))?;
    cohort.write(&path("cohort.h5"))?;
    trials.write(&path("trials.parquet"))?;
    eprintln!(
        "synthetic data: {} utterances x {DIM}, {} trials, {COHORT}-vector cohort ({:.1} s)",
        embeddings.utt_ids.len(),
        trials.trials.len(),
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let file = EmbeddingFile::read(&path("embeddings.h5"))?;
    let list = TrialList::read(&path("trials.parquet"))?;
    let load = t.elapsed().as_secs_f64();
    let (score, (indexed, scores)) = best_of(REPEATS, || {
        let indexed = IndexedTrials::new(&list, &file, "trials").expect("all utterances");
        let unit = Preprocess::default().unit_rows(file.embeddings.vectors.view(), &indexed.rows);
        let scores = cosine_scores(unit.view(), &indexed.pairs);
        (indexed, scores)
    });
    // Where the scoring time goes.
    let (index_time, _) = best_of(REPEATS, || {
        IndexedTrials::new(&list, &file, "trials").expect("all utterances")
    });
    let (normalise_time, unit) = best_of(REPEATS, || {
        Preprocess::default().unit_rows(file.embeddings.vectors.view(), &indexed.rows)
    });
    let (dot_time, _) = best_of(REPEATS, || cosine_scores(unit.view(), &indexed.pairs));
    let (metrics, min_dcf) = best_of(REPEATS, || {
        let roc = Roc::new(&scores, &indexed.targets).expect("both classes");
        let _ = (roc.eer_rocch(), roc.eer_interpolated());
        [0.01, 0.05].map(|p| roc.min_dcf(p, 1.0, 1.0).min_dcf)
    });
    let (asnorm_stats, _) = best_of(1, || {
        let unit = Preprocess::default().unit_all(file.embeddings.vectors.view());
        let cohort_unit = Preprocess::default().unit_all(cohort.vectors.view());
        asnorm::cohort_stats(unit.view(), cohort_unit.view(), TOP_N)
    });
    let inputs = SvInputs {
        embeddings: Some(path("embeddings.h5")),
        scores: None,
        trials: path("trials.parquet"),
        mean_embeddings: None,
        cohort_embeddings: None,
        plda: None,
    };
    let (stage, report) = best_of(1, || sv::run(&inputs, &SvConfig::default(), &path("out")));
    report?;

    let reference: serde_json::Value = serde_json::from_str(&run_python(
        REFERENCE_PY,
        &[
            path("embeddings.h5"),
            path("trials.parquet"),
            path("cohort.h5"),
            path("out/scores.txt"),
            REPEATS.to_string().into(),
            TOP_N.to_string().into(),
        ],
    )?)?;
    let r = |key: &str| reference[key].as_f64().expect("numeric");
    let threads = rayon::current_num_threads();
    println!(
        "score bench: {TRIALS} trials, {} utterances x {DIM}, {threads} threads",
        file.embeddings.utt_ids.len()
    );
    println!(
        "{:<44} {:>10} {:>10} {:>8}",
        "step", "rust (s)", "numpy (s)", "speed-up"
    );
    for (step, ours, theirs) in [
        ("read embeddings.h5 + trials.parquet", load, r("load_s")),
        (
            "cosine scoring (index, normalise, dot)",
            score,
            r("score_s"),
        ),
        ("ROC, EER and 2 minDCF", metrics, r("metrics_s")),
        (
            "AS-norm stats, all utts vs 5994, top 300",
            asnorm_stats,
            r("asnorm_stats_s"),
        ),
    ] {
        println!(
            "{step:<44} {ours:>10.3} {theirs:>10.3} {:>7.1}x",
            theirs / ours
        );
    }
    println!(
        "  of which: resolve trials {index_time:.3} s, normalise {normalise_time:.3} s, \
         dot products {dot_time:.3} s"
    );
    println!(
        "{:<44} {stage:>10.3}",
        "whole `sv` stage (read, score, metrics, write)"
    );
    println!(
        "scores agree with numpy to {:.2e}; minDCF(0.01) {:.4} (rust) vs {:.4} (sklearn)",
        r("max_abs_diff"),
        min_dcf[0],
        r("min_dcf_0.01")
    );
    Ok(())
}
