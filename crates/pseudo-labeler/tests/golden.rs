//! NMI, ARI, purity and PCA against scikit-learn, computed in the same test run.

use ndarray::Array2;
use pseudo_labeler::metrics::agreement;
use pseudo_labeler::pca::Pca;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

const METRICS: &str = r#"
import json, sys
import numpy as np
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix
out = []
for case in json.loads(sys.argv[1]):
    t, c = case["truth"], case["clusters"]
    m = contingency_matrix(t, c)
    out.append({
        "nmi": normalized_mutual_info_score(t, c),
        "ari": adjusted_rand_score(t, c),
        "purity": float(m.max(axis=0).sum() / m.sum()),
    })
print(json.dumps(out))
"#;

#[derive(Deserialize)]
struct Scores {
    nmi: f64,
    ari: f64,
    purity: f64,
}

#[test]
fn nmi_ari_and_purity_match_scikit_learn() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let n = 600;
    let truth: Vec<u32> = (0..n).map(|_| rng.gen_range(0..12)).collect();
    let noisy: Vec<u32> = truth
        .iter()
        .map(|&t| {
            if rng.gen_bool(0.2) {
                rng.gen_range(0..12)
            } else {
                t
            }
        })
        .collect();
    // Each class split in three clusters: high purity, lower NMI and ARI.
    let split: Vec<u32> = truth.iter().map(|&t| t * 3 + rng.gen_range(0..3)).collect();
    let unrelated: Vec<u32> = (0..n).map(|_| rng.gen_range(0..30)).collect();
    let merged: Vec<u32> = truth.iter().map(|&t| t / 4).collect();
    let single = vec![0u32; n];
    let cases = [noisy, split, unrelated, merged, single];

    let payload: Vec<serde_json::Value> = cases
        .iter()
        .map(|c| serde_json::json!({"truth": truth, "clusters": c}))
        .collect();
    let out =
        stage_kit::reference::run_python(METRICS, &[serde_json::to_string(&payload).unwrap()])
            .expect("scikit-learn reference");
    let expected: Vec<Scores> = serde_json::from_str(&out).unwrap();
    for (i, (clusters, e)) in cases.iter().zip(&expected).enumerate() {
        let a = agreement(&truth, clusters);
        assert!(
            (a.nmi - e.nmi).abs() < 1e-10,
            "case {i}: NMI {} vs {}",
            a.nmi,
            e.nmi
        );
        assert!(
            (a.ari - e.ari).abs() < 1e-10,
            "case {i}: ARI {} vs {}",
            a.ari,
            e.ari
        );
        assert!(
            (a.purity - e.purity).abs() < 1e-12,
            "case {i}: purity {} vs {}",
            a.purity,
            e.purity
        );
    }
}

const PCA: &str = r#"
import json, sys
import numpy as np
from sklearn.decomposition import PCA
path, n, d, share = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
x = np.fromfile(path, dtype="<f4").reshape(n, d).astype(np.float64)
full = PCA().fit(x)
kept = PCA(n_components=share, svd_solver="full").fit(x)
print(json.dumps({
    "ratios": full.explained_variance_ratio_.tolist(),
    "kept": int(kept.n_components_),
    "components": kept.components_.tolist(),
    "projected": kept.transform(x)[:20].tolist(),
    "mean": kept.mean_.tolist(),
}))
"#;

#[derive(Deserialize)]
struct SklearnPca {
    ratios: Vec<f64>,
    kept: usize,
    components: Vec<Vec<f64>>,
    projected: Vec<Vec<f64>>,
    mean: Vec<f64>,
}

#[test]
fn pca_matches_scikit_learn() {
    // Correlated data with decaying variances and an offset.
    let (n, d) = (500, 16);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let latent = pseudo_labeler::synthetic::gaussian(n, d, &mut rng);
    let mixing = pseudo_labeler::synthetic::gaussian(d, d, &mut rng);
    let scales: Vec<f32> = (0..d).map(|j| 0.7f32.powi(j as i32)).collect();
    let x = Array2::from_shape_fn((n, d), |(i, j)| latent[[i, j]] * scales[j]).dot(&mixing) + 0.5;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.f32");
    let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&path, bytes).unwrap();
    let share = 0.95;
    let out = stage_kit::reference::run_python(
        PCA,
        &[
            path.display().to_string(),
            n.to_string(),
            d.to_string(),
            share.to_string(),
        ],
    )
    .expect("scikit-learn reference");
    let sk: SklearnPca = serde_json::from_str(&out).unwrap();

    let pca = Pca::fit(x.view(), share).unwrap();
    assert_eq!(pca.kept(), sk.kept);
    assert!(
        sk.kept > 1 && sk.kept < d,
        "the share should cut somewhere inside"
    );
    for (a, b) in pca.explained_variance_ratio.iter().zip(&sk.ratios) {
        assert!((a - b).abs() < 1e-9, "{a} vs {b}");
    }
    for (a, b) in pca.mean.iter().zip(&sk.mean) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
    let projected = pca.transform(x.view());
    for (axis, sk_axis) in sk.components.iter().enumerate() {
        // Eigenvectors are defined up to sign: align ours with scikit-learn's.
        let ours = pca.components.column(axis);
        let dot: f64 = ours.iter().zip(sk_axis).map(|(a, b)| a * b).sum();
        assert!(
            (dot.abs() - 1.0).abs() < 1e-8,
            "axis {axis}: |dot| = {}",
            dot.abs()
        );
        let sign = dot.signum();
        for (row, sk_row) in sk.projected.iter().enumerate() {
            let (a, b) = (f64::from(projected[[row, axis]]) * sign, sk_row[axis]);
            assert!(
                (a - b).abs() < 1e-4 * (1.0 + b.abs()),
                "row {row}, axis {axis}: {a} vs {b}"
            );
        }
    }
}
