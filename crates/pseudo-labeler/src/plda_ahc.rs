//! PLDA-based agglomerative merging, the step the authors' `ssl.v1` recipe runs after
//! cosine merging: a simplified PLDA is trained on the cosine clusters of moderate size
//! (`ssl.v1`: 8 to 50 members; smaller ones are unreliable, larger ones likely impure),
//! clusters are merged while two of them have a same-speaker log-likelihood ratio above a
//! threshold (the by-the-book multi-vector PLDA LLR of the two member sets), and every
//! member gets its posterior for its cluster against all the others (equal priors), which
//! the clean-up compares with a minimum. The PLDA is `downstream-eval`'s back-end. Further
//! passes (an option) retrain the PLDA on the merged clusters and merge again.
//!
//! Merging goes in rounds of reciprocal best pairs as the cosine merge does: the best pair
//! overall is always reciprocal, so merging stops exactly when no pair is above the
//! threshold; each round scores every pair once, streaming (no K x K matrix is kept).

use downstream_eval::plda::{Classes, PldaModel, Scorer};
use ndarray::{Array1, Array2, ArrayView2, Axis};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Settings of PLDA-AHC (`[cluster.plda]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PldaAhcConfig {
    /// Cosine clusters with fewer members do not train the PLDA.
    pub min_train_size: usize,
    /// Cosine clusters with more members do not train the PLDA.
    pub max_train_size: usize,
    /// The PLDA's speaker-factor dimension (clamped to the data dimension).
    pub y_dim: usize,
    /// EM iterations.
    pub iterations: usize,
    /// Merge while the best pair's log-likelihood ratio exceeds this (natural-log scale;
    /// 0 is the Bayes decision at equal priors).
    pub threshold: f64,
    /// Members whose posterior for their own cluster is lower are dropped.
    pub min_posterior: f64,
    /// Training-and-merging passes: each after the first retrains the PLDA on the clusters
    /// the previous one merged, so that it sees more of each speaker's variability (`ssl.v1`
    /// runs one).
    pub passes: usize,
}

impl Default for PldaAhcConfig {
    fn default() -> Self {
        PldaAhcConfig {
            min_train_size: 8,
            max_train_size: 50,
            y_dim: 100,
            iterations: 10,
            threshold: 0.0,
            min_posterior: 0.9,
            passes: 1,
        }
    }
}

/// What PLDA-AHC did, for the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PldaAhcSummary {
    /// Cosine clusters (and their members) that trained the PLDA.
    pub training_clusters: usize,
    pub training_utterances: usize,
    /// PLDA dimension after preprocessing, and speaker-factor dimension.
    pub dim: usize,
    pub y_dim: usize,
    pub threshold: f64,
    pub clusters_before: usize,
    pub clusters_after: usize,
    /// Passes run (a pass that would merge nothing ends them) and merging rounds in all.
    pub passes: usize,
    pub rounds: usize,
    /// Members whose own-cluster posterior is below `min_posterior`.
    pub low_posterior: usize,
}

/// Clusters after PLDA-AHC.
#[derive(Debug, Clone)]
pub struct PldaMerged {
    /// Final cluster (0..clusters_after) of every point.
    pub labels: Vec<u32>,
    /// Posterior of every point for its own cluster.
    pub posterior: Vec<f64>,
    pub summary: PldaAhcSummary,
}

/// A cluster's PLDA sufficient statistics: size and summed projections.
#[derive(Debug, Clone)]
struct Stats {
    n: f64,
    eta: Array1<f64>,
}

/// Trains the PLDA on the moderate-size clusters of `labels` (a cluster per point, dense
/// 0..), merges the clusters on PLDA scores and computes each point's posterior; with
/// `passes` above 1, retrains on the merged clusters and merges again while that merges.
pub fn plda_ahc(
    points: ArrayView2<f32>,
    labels: &[u32],
    config: &PldaAhcConfig,
) -> Result<PldaMerged> {
    let clusters_before = labels.iter().max().map_or(0, |&m| m as usize + 1);
    let mut last = pass(points, labels, config)?;
    let mut rounds = last.rounds;
    let mut passes = 1;
    while passes < config.passes && last.rounds > 0 {
        match pass(points, &last.labels, config) {
            Ok(next) => {
                rounds += next.rounds;
                last = next;
                passes += 1;
            }
            Err(e) => {
                tracing::warn!("PLDA-AHC pass {} not run: {e}", passes + 1);
                break;
            }
        }
    }
    let posterior = posteriors(&last.scorer, last.eta.view(), &last.labels, &last.stats);
    let low_posterior = posterior
        .iter()
        .filter(|&&p| p < config.min_posterior)
        .count();
    Ok(PldaMerged {
        posterior,
        summary: PldaAhcSummary {
            training_clusters: last.training_clusters,
            training_utterances: last.training_utterances,
            dim: last.dim,
            y_dim: last.scorer.y_dim(),
            threshold: config.threshold,
            clusters_before,
            clusters_after: last.stats.len(),
            passes,
            rounds,
            low_posterior,
        },
        labels: last.labels,
    })
}

/// One PLDA training and merging pass.
struct Pass {
    /// Merged cluster of every point, dense 0..
    labels: Vec<u32>,
    scorer: Scorer,
    /// PLDA projection of every point.
    eta: Array2<f64>,
    /// Statistics of every merged cluster.
    stats: Vec<Stats>,
    training_clusters: usize,
    training_utterances: usize,
    dim: usize,
    rounds: usize,
}

fn pass(points: ArrayView2<f32>, labels: &[u32], config: &PldaAhcConfig) -> Result<Pass> {
    let clusters = labels.iter().max().map_or(0, |&m| m as usize + 1);
    let mut sizes = vec![0usize; clusters];
    for &l in labels {
        sizes[l as usize] += 1;
    }
    let trains = |c: usize| (config.min_train_size..=config.max_train_size).contains(&sizes[c]);
    let rows: Vec<usize> = (0..labels.len())
        .filter(|&i| trains(labels[i] as usize))
        .collect();
    let training_clusters = (0..clusters).filter(|&c| trains(c)).count();
    let dim = points.ncols();
    if training_clusters < 2 || rows.len() <= training_clusters + dim {
        return Err(Error::Plda(format!(
            "{} clusters with {} to {} members ({} utterances): too few to train a \
             {dim}-dimensional PLDA (lower min_train_size, or cluster more utterances)",
            training_clusters,
            config.min_train_size,
            config.max_train_size,
            rows.len()
        )));
    }
    let train_labels: Vec<u32> = rows.iter().map(|&i| labels[i]).collect();
    let x = points.select(Axis(0), &rows).mapv(f64::from);
    let plda_config = downstream_eval::plda::PldaConfig {
        y_dim: config.y_dim,
        iterations: config.iterations,
        ..Default::default()
    };
    let model = PldaModel::fit(
        x.view(),
        &Classes::new(&train_labels),
        &plda_config,
        "clusters".to_owned(),
    )
    .map_err(|e| Error::Plda(e.to_string()))?;
    let (scorer, eta) = model
        .project(points)
        .map_err(|e| Error::Plda(e.to_string()))?;

    let mut groups: Vec<(Stats, Vec<u32>)> = (0..clusters)
        .filter(|&c| sizes[c] > 0)
        .map(|c| {
            let stats = Stats {
                n: 0.0,
                eta: Array1::zeros(eta.ncols()),
            };
            (stats, vec![c as u32])
        })
        .collect();
    let mut slot = vec![usize::MAX; clusters];
    for (g, (_, members)) in groups.iter().enumerate() {
        slot[members[0] as usize] = g;
    }
    for (row, &l) in eta.rows().into_iter().zip(labels) {
        let stats = &mut groups[slot[l as usize]].0;
        stats.n += 1.0;
        stats.eta += &row;
    }
    let mut rounds = 0;
    while groups.len() >= 2 {
        let pairs = reciprocal_pairs(&scorer, &groups, config.threshold);
        if pairs.is_empty() {
            break;
        }
        groups = merge_pairs(groups, &pairs);
        rounds += 1;
        tracing::debug!(round = rounds, clusters = groups.len(), "PLDA-AHC round");
    }

    let mut final_of = vec![0u32; clusters];
    for (g, (_, members)) in groups.iter().enumerate() {
        for &c in members {
            final_of[c as usize] = g as u32;
        }
    }
    Ok(Pass {
        labels: labels.iter().map(|&l| final_of[l as usize]).collect(),
        scorer,
        eta,
        stats: groups.into_iter().map(|(s, _)| s).collect(),
        training_clusters,
        training_utterances: rows.len(),
        dim: model.preprocess.output_dim(),
        rounds,
    })
}

/// Pairs `(a, b)`, `a < b`, of groups that are each other's best PLDA match above
/// `threshold`.
fn reciprocal_pairs(
    scorer: &Scorer,
    groups: &[(Stats, Vec<u32>)],
    threshold: f64,
) -> Vec<(usize, usize)> {
    let best: Vec<Option<(usize, f64)>> = (0..groups.len())
        .into_par_iter()
        .map(|a| {
            let sa = &groups[a].0;
            (0..groups.len())
                .filter(|&b| b != a)
                .map(|b| {
                    let sb = &groups[b].0;
                    (b, scorer.set_llr(sa.n, sa.eta.view(), sb.n, sb.eta.view()))
                })
                .max_by(|x, y| x.1.total_cmp(&y.1).then(y.0.cmp(&x.0)))
        })
        .collect();
    best.iter()
        .enumerate()
        .filter_map(|(a, b)| {
            let (b, llr) = (*b)?;
            let reciprocal = best[b].is_some_and(|(back, _)| back == a);
            (a < b && reciprocal && llr > threshold).then_some((a, b))
        })
        .collect()
}

/// Joins each pair's second group into its first; the survivors keep their order.
fn merge_pairs(groups: Vec<(Stats, Vec<u32>)>, pairs: &[(usize, usize)]) -> Vec<(Stats, Vec<u32>)> {
    let mut into = vec![None; groups.len()];
    for &(a, b) in pairs {
        into[b] = Some(a);
    }
    let mut slots: Vec<Option<(Stats, Vec<u32>)>> = groups.into_iter().map(Some).collect();
    for (b, a) in into.iter().enumerate() {
        if let Some(a) = *a {
            let (stats, members) = slots[b].take().expect("a group merges once per round");
            let target = slots[a].as_mut().expect("merge targets are not absorbed");
            target.0.n += stats.n;
            target.0.eta += &stats.eta;
            target.1.extend(members);
        }
    }
    slots.into_iter().flatten().collect()
}

/// Posterior of every point for its own cluster: softmax over clusters of the LLR that
/// the point shares the cluster's speaker (its own cluster without the point itself).
fn posteriors(scorer: &Scorer, eta: ArrayView2<f64>, labels: &[u32], stats: &[Stats]) -> Vec<f64> {
    eta.axis_iter(Axis(0))
        .into_par_iter()
        .zip(labels.par_iter())
        .map(|(x, &own)| {
            let llrs: Vec<f64> = stats
                .iter()
                .enumerate()
                .map(|(c, s)| {
                    if c == own as usize {
                        let rest = &s.eta - &x;
                        scorer.set_llr(1.0, x, s.n - 1.0, rest.view())
                    } else {
                        scorer.set_llr(1.0, x, s.n, s.eta.view())
                    }
                })
                .collect();
            let top = llrs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let total: f64 = llrs.iter().map(|l| (l - top).exp()).sum();
            (llrs[own as usize] - top).exp() / total
        })
        .collect()
}

/// Unit mean direction of every cluster of `labels` over the unit-length `points`.
pub fn unit_centroids(points: ArrayView2<f32>, labels: &[u32], clusters: usize) -> Array2<f32> {
    let mut sums = Array2::<f32>::zeros((clusters, points.ncols()));
    for (row, &l) in points.rows().into_iter().zip(labels) {
        let mut s = sums.row_mut(l as usize);
        s += &row;
    }
    for mut row in sums.rows_mut() {
        let norm = row.dot(&row).sqrt();
        if norm > 0.0 {
            row /= norm;
        }
    }
    sums
}
